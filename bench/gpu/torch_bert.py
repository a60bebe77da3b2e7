# PyTorch eager reference for the GPU model bench: the encoder of scripts/make_fixtures.py at base size, exported to ONNX
# for the Node engines (same weights), then timed in eager f32 with TF32 off; writes its output for comparison.
import sys, os, time, torch
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'scripts'))
import make_fixtures as mf
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
out = sys.argv[1]
cfg = mf.SIZES['base']['enc']
torch.manual_seed(0)
enc = mf.Encoder(**cfg).eval()
for p in enc.parameters():  # the fixtures' init scale, so activations stay O(1)
    torch.nn.init.normal_(p, std=0.05) if p.dim() > 1 else None
ids = torch.zeros(1, 8, dtype=torch.long)
path = os.path.join(out, 'encoder-base.onnx')
import inspect
kw = {'dynamo': False} if 'dynamo' in inspect.signature(torch.onnx.export).parameters else {}
torch.onnx.export(enc, (ids, torch.ones_like(ids), torch.zeros_like(ids)), path, opset_version=17, **kw,
                  input_names=['input_ids', 'attention_mask', 'token_type_ids'], output_names=['last_hidden_state'],
                  dynamic_axes={k: {0: 'batch', 1: 'sequence'} for k in ['input_ids', 'attention_mask', 'token_type_ids', 'last_hidden_state']})
# The same weights in f16 (every float tensor, compute included) for onnxruntime-web's f16 run: the like-for-like peer
# of webjit's precision 'f16'. Exported from the GPU (half LayerNorm and GELU run there).
import copy
enc16 = copy.deepcopy(enc).half().cuda().eval()
torch.onnx.export(enc16, (ids.cuda(), torch.ones_like(ids).cuda(), torch.zeros_like(ids).cuda()), os.path.join(out, 'encoder-base-f16.onnx'),
                  opset_version=17, **kw, input_names=['input_ids', 'attention_mask', 'token_type_ids'], output_names=['last_hidden_state'],
                  dynamic_axes={k: {0: 'batch', 1: 'sequence'} for k in ['input_ids', 'attention_mask', 'token_type_ids', 'last_hidden_state']})
enc = enc.cuda()

def warm(ids, mask, typ, tf32, model=None):
    """Median ms of 20 warm runs (after 5) and the last output, with TF32 on or off for the matmuls."""
    model = enc if model is None else model
    torch.backends.cuda.matmul.allow_tf32 = tf32
    with torch.no_grad():
        for _ in range(5): y = model(ids, mask, typ)
        torch.cuda.synchronize()
        ts = []
        for _ in range(20):
            t0 = time.perf_counter(); y = model(ids, mask, typ); torch.cuda.synchronize(); ts.append((time.perf_counter() - t0) * 1e3)
    torch.backends.cuda.matmul.allow_tf32 = False
    ts.sort()
    return ts[len(ts)//2], y

for b, s in [(1, 128), (8, 128)]:
    n = b * s
    i = torch.arange(n).reshape(b, s)
    ids = ((i * 7919 + 13) % 30000).cuda()
    mask = ((i % s) < s - 3).long().cuda()
    typ = torch.zeros_like(ids)
    ms, y = warm(ids, mask, typ, False)
    y.float().cpu().numpy().tofile(f'{path}.b{b}s{s}.f32')
    print(f'BERT b{b} s{s} torch eager f32 (TF32 off): warm {ms:.2f} ms')
    # The same with TF32 on (PyTorch's float32 matmul precision 'high'), and its error against the f32 output.
    ms2, y2 = warm(ids, mask, typ, True)
    err = ((y2 - y).abs().max() / y.abs().max()).item()
    print(f'BERT b{b} s{s} torch eager TF32: warm {ms2:.2f} ms, error vs f32 {err:.1e} of max|y|')
    ms3, y3 = warm(ids, mask, typ, False, enc16)
    err = ((y3.float() - y).abs().max() / y.abs().max()).item()
    print(f'BERT b{b} s{s} torch eager f16: warm {ms3:.2f} ms, error vs f32 {err:.1e} of max|y|')
