#!/usr/bin/env python3
"""Peers of `webjit bench` that live in Python: onnxruntime's native CPU build (the oracle and a peer where
onnxruntime-node is not installed, as on the GPU machine) and PyTorch on CUDA (the physical reference of the op suite).
Speaks JSON lines on stdin/stdout; tensors travel as .npy files. Each engine times its own runs, so the pipe never
counts. Requests: {"cmd": "create", "engine": "ort"|"torch"|"torch-resident", "model": PATH, "threads": N},
{"cmd": "run", "id": I, "feeds": {NAME: PATH}, "out": DIR}, {"cmd": "time", "id": I, "feeds": {...}, "warmupMs", "minRuns",
"minMs"}, {"cmd": "release", "id": I}, {"cmd": "probe"}."""
import json, os, sys, time
import numpy as np

sessions = {}


def probe():
    have = {}
    try:
        import onnxruntime
        have['ort'] = onnxruntime.__version__
    except Exception:
        pass
    try:
        import torch
        if torch.cuda.is_available():
            have['torch'] = f'{torch.__version__} on {torch.cuda.get_device_name(0)}'
        elif os.environ.get('WEBJIT_PEER_TORCH_CPU'):  # to test this file on a machine with no GPU
            have['torch'] = f'{torch.__version__} on the CPU'
    except Exception:
        pass
    return have


class Ort:
    def __init__(s, model, threads):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        s.s = ort.InferenceSession(model, so, providers=['CPUExecutionProvider'])
        s.names = [o.name for o in s.s.get_outputs()]

    def prepare(s, feeds):
        return feeds

    def __call__(s, feeds):
        return dict(zip(s.names, s.s.run(None, feeds)))


class Torch:
    """The op suite's graphs (single ops and short chains) interpreted with PyTorch ops on CUDA, f32, TF32 off."""

    def __init__(s, model, resident):
        import onnx, torch
        from onnx import numpy_helper
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        s.torch, s.resident = torch, resident
        s.dev = 'cuda' if torch.cuda.is_available() else 'cpu'
        sync = torch.cuda.synchronize if s.dev == 'cuda' else (lambda: None)
        s.sync = sync
        m = onnx.load(model)
        g = m.graph
        s.consts = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()).to(s.dev) for t in g.initializer}
        s.nodes = [(n.op_type, list(n.input), list(n.output), {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}) for n in g.node]
        s.outputs = [o.name for o in g.output]
        for op, *_ in s.nodes:
            if op not in OPS:
                raise RuntimeError(f'the PyTorch peer has no {op}')

    def prepare(s, feeds):
        # Resident: inputs go to the GPU once, outside the timed runs.
        return {k: s.torch.from_numpy(v).to(s.dev) for k, v in feeds.items()} if s.resident else feeds

    def __call__(s, feeds):
        torch = s.torch
        with torch.no_grad():
            env = dict(s.consts)
            for k, v in feeds.items():
                env[k] = v if isinstance(v, torch.Tensor) else torch.from_numpy(v).to(s.dev)
            for op, ins, outs, at in s.nodes:
                env[outs[0]] = OPS[op](torch, [env[i] if i else None for i in ins], at)
            if s.resident:
                s.sync()
                return {k: env[k] for k in s.outputs}
            return {k: env[k].cpu().numpy() for k in s.outputs}


def _conv(torch, x, a):
    p = a.get('pads', [0, 0, 0, 0])
    y = torch.nn.functional.pad(x[0], (p[1], p[3], p[0], p[2])) if p[0] != p[2] or p[1] != p[3] else x[0]
    pad = (p[0], p[1]) if p[0] == p[2] and p[1] == p[3] else 0
    return torch.nn.functional.conv2d(y, x[1], x[2] if len(x) > 2 else None, stride=tuple(a.get('strides', [1, 1])), padding=pad,
                                      dilation=tuple(a.get('dilations', [1, 1])), groups=a.get('group', 1))


def _ln(torch, x, a):
    ax = a.get('axis', -1)
    shape = x[0].shape[ax:] if ax != -1 else x[0].shape[-1:]
    return torch.nn.functional.layer_norm(x[0], shape, x[1], x[2] if len(x) > 2 else None, eps=a.get('epsilon', 1e-5))


OPS = {
    'MatMul': lambda torch, x, a: torch.matmul(x[0], x[1]),
    'Add': lambda torch, x, a: x[0] + x[1],
    'Mul': lambda torch, x, a: x[0] * x[1],
    'Div': lambda torch, x, a: x[0] / x[1],
    'Erf': lambda torch, x, a: torch.erf(x[0]),
    'Softmax': lambda torch, x, a: torch.softmax(x[0], dim=a.get('axis', -1)),
    'Conv': _conv,
    'LayerNormalization': _ln,
    'ReduceSum': lambda torch, x, a: torch.sum(x[0], dim=tuple(int(i) for i in x[1].tolist()), keepdim=bool(a.get('keepdims', 1))),
    'Transpose': lambda torch, x, a: x[0].permute(*a['perm']).contiguous(),
    'Gather': lambda torch, x, a: torch.index_select(x[0], a.get('axis', 0), x[1].reshape(-1)).reshape(*x[1].shape, *x[0].shape[1:]),
}


def timed(f, *args):
    t = time.perf_counter()
    r = f(*args)
    return r, (time.perf_counter() - t) * 1e3


def handle(req):
    cmd = req['cmd']
    if cmd == 'probe':
        return {'have': probe()}
    if cmd == 'create':
        e = req['engine']
        make = (lambda: Ort(req['model'], req.get('threads', 1))) if e == 'ort' else (lambda: Torch(req['model'], e == 'torch-resident'))
        s, ms = timed(make)
        i = len(sessions) + 1
        sessions[i] = s
        return {'id': i, 'createMs': ms}
    s = sessions[req['id']]
    if cmd == 'release':
        del sessions[req['id']]
        return {}
    feeds = s.prepare({k: np.load(p) for k, p in req['feeds'].items()})
    if cmd == 'run':
        out, ms = timed(s, feeds)
        paths = {}
        for j, (k, v) in enumerate(out.items()):
            paths[k] = os.path.join(req['out'], f'out{j}.npy')
            np.save(paths[k], v.cpu().numpy() if hasattr(v, 'cpu') else np.asarray(v))
        return {'outputs': paths, 'ms': ms}
    if cmd == 'time':
        t0 = time.perf_counter()
        while (time.perf_counter() - t0) * 1e3 < req['warmupMs']:
            s(feeds)
        times = []
        r0 = time.perf_counter()
        while len(times) < req['minRuns'] or (time.perf_counter() - r0) * 1e3 < req['minMs']:
            times.append(timed(s, feeds)[1])
            if len(times) >= 200:
                break
        return {'times': times}
    raise ValueError(f'unknown command {cmd}')


for line in sys.stdin:
    try:
        reply = handle(json.loads(line))
    except Exception as e:  # the engine's failure is the bench's row, not the peer's end
        reply = {'error': f'{type(e).__name__}: {e}'}
    sys.stdout.write(json.dumps(reply) + '\n')
    sys.stdout.flush()
