#!/usr/bin/env python3
"""Trains webjit's small Llama-style model pair (issue 8): a ~20M-parameter target and a ~3M-parameter draft.

    python3 train_lm.py --corpus CORPUS_DIR --out OUT_DIR [--minutes 4] [--draft-minutes 1.5]

CORPUS_DIR holds train.txt and valid.txt from scripts/make_corpus.sh (documents separated by form feed lines), or
their .xz forms. The script
  1. trains a byte-level BPE tokenizer (vocab 8192, <s> = BOS, </s> = EOS, <s> prepended by the post-processor),
  2. trains the target and then the draft (bf16 autocast on CUDA, AdamW, cosine decay, a wall-clock budget each),
     and prints held-out perplexity (valid.txt, 512-token windows),
  3. exports each to ONNX with a KV cache in the Hugging Face layout (opset 17, TorchScript exporter) and checks that
     onnxruntime's greedy generation with the cache equals PyTorch's (full recompute) token for token,
  4. writes OUT/tokenizer.json, OUT/tokenizer_config.json, OUT/{target,draft}/config.json (LlamaConfig fields) and
     f16 safetensors with Hugging Face Llama parameter names, split into files of at most 15 MB. The ONNX files go to
     OUT/onnx/ unless --no-onnx-out (they are f32 and too large for the device tool to bring back).
"""
import argparse
import json
import lzma
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {
    # hidden, layers, heads, intermediate (SwiGLU); head_dim = hidden / heads = 64
    'target': dict(hidden_size=384, num_hidden_layers=10, num_attention_heads=6, intermediate_size=1024),
    'draft': dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=512),
}
VOCAB = 8192
CONTEXT = 512
ROPE_THETA = 10000.0
EPS = 1e-5


# ---------------------------------------------------------------------------------------------------------- model
class RMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS)
        return self.weight * x.to(dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, self.heads = cfg['hidden_size'], cfg['num_attention_heads']
        self.head_dim = d // self.heads
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x, cos, sin, past=None):
        b, s, _ = x.shape
        q, k, v = (p(x).view(b, s, self.heads, self.head_dim).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        present = None
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
            present = (k, v)
        if past is None and hasattr(F, 'scaled_dot_product_attention'):  # training: fused kernel (torch >= 2.0)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # with a cache: explicit causal mask over past + new positions (exports to plain ONNX ops)
            total = k.shape[2]
            q_pos = torch.arange(s, device=x.device) + (total - s)
            mask = torch.arange(total, device=x.device)[None, :] <= q_pos[:, None]
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            out = scores.softmax(-1) @ v
        return self.o_proj(out.transpose(1, 2).reshape(b, s, -1)), present


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, f = cfg['hidden_size'], cfg['intermediate_size']
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg, dropout):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg['hidden_size'])
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg['hidden_size'])
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, cos, sin, past=None):
        a, present = self.self_attn(self.input_layernorm(x), cos, sin, past)
        x = x + self.drop(a)
        x = x + self.drop(self.mlp(self.post_attention_layernorm(x)))
        return x, present


class Llama(nn.Module):
    """Parameter names follow transformers' LlamaForCausalLM (model.* ; lm_head tied to model.embed_tokens)."""

    def __init__(self, cfg, dropout=0.0):
        super().__init__()
        self.cfg = cfg
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(VOCAB, cfg['hidden_size'])
        self.model.layers = nn.ModuleList(Block(cfg, dropout) for _ in range(cfg['num_hidden_layers']))
        self.model.norm = RMSNorm(cfg['hidden_size'])
        head_dim = cfg['hidden_size'] // cfg['num_attention_heads']
        inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, head_dim, 2).float() / head_dim))
        self.register_buffer('inv_freq', inv_freq, persistent=False)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, input_ids, past=None):
        """past: None (training) or a list of (key, value) per layer, each [batch, heads, past_len, head_dim]."""
        past_len = 0 if past is None else past[0][0].shape[2]
        pos = torch.arange(input_ids.shape[1], device=input_ids.device) + past_len
        freqs = pos[:, None].float() * self.inv_freq[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        x = self.model.embed_tokens(input_ids)
        presents = []
        for i, layer in enumerate(self.model.layers):
            x, present = layer(x, cos, sin, None if past is None else past[i])
            presents.append(present)
        logits = self.model.norm(x) @ self.model.embed_tokens.weight.t()
        return logits, presents


class OnnxWrapper(nn.Module):
    """Flat inputs/outputs for export: input_ids, past k0, v0, k1, v1, ... -> logits, present k0, v0, ..."""

    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, input_ids, *flat_past):
        past = [(flat_past[2 * i], flat_past[2 * i + 1]) for i in range(len(flat_past) // 2)]
        logits, presents = self.m(input_ids, past)
        return (logits, *[t for kv in presents for t in kv])


# ------------------------------------------------------------------------------------------------------------ data
def read_text(corpus, name):
    path = os.path.join(corpus, name)
    if os.path.exists(path + '.xz'):
        return lzma.open(path + '.xz', 'rt', encoding='utf-8').read()
    return open(path, encoding='utf-8').read()


def documents(text):
    return [d.strip() for d in text.split('\f') if d.strip()]


def train_tokenizer(docs):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=['<s>', '</s>', '<pad>'],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(docs, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single='<s> $A', pair='<s> $A <s> $B', special_tokens=[('<s>', 0)])
    assert tok.token_to_id('<s>') == 0 and tok.token_to_id('</s>') == 1
    return tok


def encode(tok, docs):
    """One stream: <s> doc </s> <s> doc </s> ... (the post-processor adds <s>)."""
    ids = []
    for enc in tok.encode_batch(docs):
        ids.extend(enc.ids)
        ids.append(1)
    return torch.tensor(ids, dtype=torch.int32)


# -------------------------------------------------------------------------------------------------------- training
def count_params(model):
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def evaluate(model, data, device, batch=32):
    """Mean next-token cross-entropy over non-overlapping CONTEXT+1 windows of data (the whole held-out stream)."""
    model.eval()
    n = (len(data) - 1) // CONTEXT
    x = data[:n * CONTEXT].view(n, CONTEXT).long()
    y = data[1:n * CONTEXT + 1].view(n, CONTEXT).long()
    total, count = 0.0, 0
    for i in range(0, n, batch):
        xb, yb = x[i:i + batch].to(device), y[i:i + batch].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == 'cuda'):
            logits, _ = model(xb)
        total += F.cross_entropy(logits.float().view(-1, VOCAB), yb.reshape(-1), reduction='sum').item()
        count += yb.numel()
    model.train()
    return total / count


def train(name, model, train_data, valid_data, device, minutes, args):
    model.to(device).train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': args.weight_decay}, {'params': no_decay, 'weight_decay': 0.0}],
                            lr=args.lr[name], betas=(0.9, 0.95), **({'fused': True} if device.type == 'cuda' else {}))
    gen = torch.Generator().manual_seed(args.seed)
    budget, warmup = minutes * 60.0, 100
    tokens_per_step = args.batch * CONTEXT
    step, start, last_log, losses = 0, time.time(), 0.0, []
    while True:
        elapsed = time.time() - start
        if elapsed >= budget or (args.max_steps and step >= args.max_steps):
            break
        # Learning rate follows elapsed time (the budget is wall-clock): linear warmup, cosine decay to 10%.
        frac = elapsed / budget
        lr = args.lr[name] * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g['lr'] = lr
        idx = torch.randint(0, len(train_data) - CONTEXT - 1, (args.batch,), generator=gen)
        chunk = torch.stack([train_data[i:i + CONTEXT + 1] for i in idx.tolist()]).long().to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == 'cuda'):
            logits, _ = model(chunk[:, :-1])
        loss = F.cross_entropy(logits.float().view(-1, VOCAB), chunk[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            losses.append(loss.item())
            losses = losses[-4:]
        if time.time() - last_log > 30 or step == 1:
            last_log = time.time()
            held_out = f'  held-out {evaluate(model, valid_data, device):.3f}' if step > 1 else ''
            print(f'  {name} step {step:6d}  {elapsed:6.1f}s  loss {loss.item():.3f}{held_out}  lr {lr:.2e}', flush=True)
    if device.type == 'cuda':
        torch.cuda.synchronize()
    secs = time.time() - start
    train_loss = sum(losses) / len(losses) if losses else loss.item()
    valid_loss = evaluate(model, valid_data, device)
    tokens = step * tokens_per_step
    print(f'{name}: {step} steps, {tokens / 1e6:.1f}M tokens ({tokens / len(train_data):.1f} epochs) in {secs:.0f}s = '
          f'{tokens / secs / 1e3:.0f}k tokens/s; train loss {train_loss:.3f} (mean of last logged steps); '
          f'held-out loss {valid_loss:.3f}, perplexity {math.exp(valid_loss):.2f}', flush=True)
    return dict(steps=step, tokens=tokens, seconds=secs, train_loss=train_loss, valid_loss=valid_loss,
                valid_perplexity=math.exp(valid_loss))


# ------------------------------------------------------------------------------------------------- export & check
def export_onnx(model, path):
    cfg = model.cfg
    heads, head_dim, layers = cfg['num_attention_heads'], cfg['hidden_size'] // cfg['num_attention_heads'], cfg['num_hidden_layers']
    wrapper = OnnxWrapper(model).eval()
    ids = torch.randint(0, VOCAB, (1, 3))
    past = [torch.randn(1, heads, 5, head_dim) for _ in range(2 * layers)]
    names = [f'past_key_values.{i}.{kv}' for i in range(layers) for kv in ('key', 'value')]
    out_names = [f'present.{i}.{kv}' for i in range(layers) for kv in ('key', 'value')]
    axes = {'input_ids': {0: 'batch', 1: 'sequence'}, 'logits': {0: 'batch', 1: 'sequence'}}
    axes.update({n: {0: 'batch', 2: 'past_sequence'} for n in names})
    axes.update({n: {0: 'batch', 2: 'total_sequence'} for n in out_names})
    kwargs = {}
    import inspect
    if 'dynamo' in inspect.signature(torch.onnx.export).parameters:
        kwargs['dynamo'] = False
    torch.onnx.export(wrapper, (ids, *past), path, input_names=['input_ids', *names], output_names=['logits', *out_names],
                      dynamic_axes=axes, opset_version=17, do_constant_folding=True, **kwargs)
    import onnx
    onnx.checker.check_model(path)


@torch.no_grad()
def greedy_torch(model, prompt, n):
    ids = list(prompt)
    for _ in range(n):
        logits, _ = model(torch.tensor([ids]))
        ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt):]


def greedy_ort(path, cfg, prompt, n):
    import numpy as np
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    heads, head_dim = cfg['num_attention_heads'], cfg['hidden_size'] // cfg['num_attention_heads']
    past = {f'past_key_values.{i}.{kv}': np.zeros((1, heads, 0, head_dim), np.float32)
            for i in range(cfg['num_hidden_layers']) for kv in ('key', 'value')}
    feed, out = np.array([prompt], dtype=np.int64), []
    names = [o.name for o in sess.get_outputs()]
    for _ in range(n):
        res = dict(zip(names, sess.run(None, {'input_ids': feed, **past})))
        nxt = int(res['logits'][0, -1].argmax())
        out.append(nxt)
        past = {k: res[k.replace('past_key_values', 'present')] for k in past}
        feed = np.array([[nxt]], dtype=np.int64)
    return out


def save_weights(model, folder, name, stats, max_bytes=15_000_000):
    from safetensors.torch import save_file
    os.makedirs(folder, exist_ok=True)
    state = {k: v.detach().to('cpu', torch.float16).contiguous() for k, v in model.state_dict().items()}
    shards, cur, size = [], {}, 0
    for k, v in state.items():
        nbytes = v.numel() * 2
        if cur and size + nbytes > max_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[k] = v
        size += nbytes
    shards.append(cur)
    for i, shard in enumerate(shards):
        fname = 'model.safetensors' if len(shards) == 1 else f'model-{i + 1:05d}-of-{len(shards):05d}.safetensors'
        save_file(shard, os.path.join(folder, fname), metadata={'format': 'pt'})
    cfg = model.cfg
    config = dict(architectures=['LlamaForCausalLM'], model_type='llama', vocab_size=VOCAB,
                  hidden_size=cfg['hidden_size'], intermediate_size=cfg['intermediate_size'],
                  num_hidden_layers=cfg['num_hidden_layers'], num_attention_heads=cfg['num_attention_heads'],
                  num_key_value_heads=cfg['num_attention_heads'], hidden_act='silu', max_position_embeddings=CONTEXT,
                  rms_norm_eps=EPS, rope_theta=ROPE_THETA, tie_word_embeddings=True, attention_bias=False,
                  mlp_bias=False, bos_token_id=0, eos_token_id=1, pad_token_id=2, torch_dtype='float16',
                  webjit=dict(name=name, parameters=count_params(model), **stats))
    with open(os.path.join(folder, 'config.json'), 'w') as f:
        json.dump(config, f, indent=1)


# ------------------------------------------------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--corpus', help='folder with train.txt and valid.txt (for training)')
    ap.add_argument('--export-from', metavar='DIR', help='no training: load DIR/{tokenizer.json,target,draft} (what a '
                    'training run wrote), export both to OUT/onnx and check the ONNX greedy output against PyTorch')
    ap.add_argument('--out', required=True)
    ap.add_argument('--minutes', type=float, default=4.0, help='wall-clock training budget of the target')
    ap.add_argument('--draft-minutes', type=float, default=1.5, help='wall-clock training budget of the draft')
    ap.add_argument('--max-steps', type=int, default=0, help='stop each model after this many steps (0: no limit)')
    ap.add_argument('--batch', type=int, default=64, help='sequences of 512 tokens per step')
    ap.add_argument('--target-lr', type=float, default=1.5e-3)
    ap.add_argument('--draft-lr', type=float, default=3e-3)
    ap.add_argument('--weight-decay', type=float, default=0.1)
    ap.add_argument('--dropout', type=float, default=0.1)
    ap.add_argument('--seed', type=int, default=1234)
    ap.add_argument('--scale', type=float, default=1.0, help='shrink both configs (smoke tests on a CPU)')
    ap.add_argument('--no-onnx-out', action='store_true', help='export the ONNX files to a temporary folder instead')
    args = ap.parse_args()
    args.lr = {'target': args.target_lr, 'draft': args.draft_lr}
    if args.export_from:
        return export_from(args.export_from, args.out)
    if not args.corpus:
        ap.error('--corpus is required for training (or --export-from DIR to re-export trained weights)')

    torch.manual_seed(args.seed)
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if device.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True
        print('device:', torch.cuda.get_device_name(), 'torch', torch.__version__, flush=True)
    os.makedirs(args.out, exist_ok=True)

    t0 = time.time()
    train_docs = documents(read_text(args.corpus, 'train.txt'))
    valid_docs = documents(read_text(args.corpus, 'valid.txt'))
    tok = train_tokenizer(train_docs)
    tok.save(os.path.join(args.out, 'tokenizer.json'))
    with open(os.path.join(args.out, 'tokenizer_config.json'), 'w') as f:
        json.dump({'bos_token': '<s>', 'eos_token': '</s>', 'pad_token': '<pad>', 'model_max_length': CONTEXT}, f, indent=1)
    train_data, valid_data = encode(tok, train_docs), encode(tok, valid_docs)
    chars = sum(map(len, train_docs))
    print(f'tokenizer: vocab {tok.get_vocab_size()}; train {len(train_docs)} docs, {chars / 1e6:.1f}M chars -> '
          f'{len(train_data) / 1e6:.2f}M tokens ({chars / len(train_data):.2f} chars/token); valid {len(valid_docs)} docs, '
          f'{len(valid_data) / 1e6:.3f}M tokens; {time.time() - t0:.0f}s', flush=True)

    onnx_dir = os.path.join(args.out, 'onnx')
    if args.no_onnx_out:
        import tempfile
        onnx_dir = tempfile.mkdtemp()
    os.makedirs(onnx_dir, exist_ok=True)
    prompt_text = 'The Debian project'
    prompt = tok.encode(prompt_text).ids
    summary = {}
    for name, minutes in (('target', args.minutes), ('draft', args.draft_minutes)):
        cfg = dict(CONFIGS[name])
        if args.scale != 1.0:
            heads = max(1, round(cfg['num_attention_heads'] * args.scale))
            cfg.update(hidden_size=heads * 16, num_attention_heads=heads, num_hidden_layers=2,
                       intermediate_size=max(32, int(cfg['intermediate_size'] * args.scale)))
        torch.manual_seed(args.seed)
        model = Llama(cfg, dropout=args.dropout)
        print(f'{name}: {count_params(model):,} parameters ({cfg})', flush=True)
        stats = train(name, model, train_data, valid_data, device, minutes, args)

        model = model.float().cpu().eval()
        path = os.path.join(onnx_dir, f'{name}.onnx')
        export_onnx(model, path)
        ref = greedy_torch(model, prompt, 32)
        got = greedy_ort(path, cfg, prompt, 32)
        stats['onnx_greedy_matches'] = ref == got
        print(f'{name}: ONNX ({os.path.getsize(path) / 1e6:.1f} MB) greedy with KV cache vs PyTorch: '
              f'{"MATCH" if ref == got else "MISMATCH"} over 32 tokens', flush=True)
        if ref != got:
            print('  torch:', ref, '\n  ort:  ', got)
        print(f'  sample: {prompt_text!r} -> {tok.decode(ref)!r}', flush=True)
        save_weights(model, os.path.join(args.out, name), name, stats)
        summary[name] = dict(parameters=count_params(model), **stats)
    print(json.dumps(summary, indent=1))
    print(f'total {time.time() - t0:.0f}s')


def export_from(src, out):
    """Re-exports trained weights (f16 safetensors, as save_weights wrote them) to f32 ONNX with a KV cache, checking
    onnxruntime's greedy output against PyTorch's; runs on a CPU (Debian's torch 1.13 too)."""
    import glob
    from safetensors.torch import load_file
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(src, 'tokenizer.json'))
    prompt = tok.encode('The Debian project').ids
    os.makedirs(os.path.join(out, 'onnx'), exist_ok=True)
    ok = True
    for name in ('target', 'draft'):
        with open(os.path.join(src, name, 'config.json')) as f:
            cfg = json.load(f)
        model = Llama({k: cfg[k] for k in ('hidden_size', 'num_hidden_layers', 'num_attention_heads', 'intermediate_size')}).eval()
        sd = {}
        for part in sorted(glob.glob(os.path.join(src, name, '*.safetensors'))):
            sd.update(load_file(part))
        model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
        path = os.path.join(out, 'onnx', f'{name}.onnx')
        export_onnx(model, path)
        ref, got = greedy_torch(model, prompt, 32), greedy_ort(path, model.cfg, prompt, 32)
        ok &= ref == got
        print(f'{name}: {path} ({os.path.getsize(path) / 1e6:.1f} MB); greedy with KV cache vs PyTorch: '
              f'{"MATCH" if ref == got else "MISMATCH"}; sample {tok.decode(ref)!r}', flush=True)
    return 0 if ok else 1


if __name__ == '__main__':
    raise SystemExit(main())
