#!/usr/bin/env python3
"""Exports the generated test models with random weights: a BERT-style encoder and a GPT-2-style
decoder with past key/value inputs (Hugging Face layout). Needs PyTorch and onnx (Debian:
python3-torch python3-onnx). Usage: make_fixtures.py OUTDIR [--size small|base]"""
import argparse, math, os
import torch
import torch.nn as nn
import torch.nn.functional as F


class EncoderLayer(nn.Module):
    def __init__(s, d, h, ff):
        super().__init__()
        s.h = h
        s.qkv = nn.Linear(d, 3 * d)
        s.o = nn.Linear(d, d)
        s.ln1 = nn.LayerNorm(d, eps=1e-12)
        s.ff1 = nn.Linear(d, ff)
        s.ff2 = nn.Linear(ff, d)
        s.ln2 = nn.LayerNorm(d, eps=1e-12)

    def forward(s, x, bias):
        b, t, d = x.shape
        q, k, v = s.qkv(x).split(d, dim=-1)
        sh = lambda z: z.view(b, t, s.h, d // s.h).transpose(1, 2)
        q, k, v = sh(q), sh(k), sh(v)
        a = (q @ k.transpose(-1, -2)) / math.sqrt(d // s.h) + bias
        y = (a.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
        x = s.ln1(x + s.o(y))
        return s.ln2(x + s.ff2(F.gelu(s.ff1(x))))


class Encoder(nn.Module):
    """BERT-style: token + position + type embeddings, post-LN blocks, GELU MLP, padding mask."""
    def __init__(s, vocab, d, h, layers, ff, maxpos):
        super().__init__()
        s.tok = nn.Embedding(vocab, d)
        s.pos = nn.Embedding(maxpos, d)
        s.typ = nn.Embedding(2, d)
        s.ln = nn.LayerNorm(d, eps=1e-12)
        s.layers = nn.ModuleList([EncoderLayer(d, h, ff) for _ in range(layers)])

    def forward(s, input_ids, attention_mask, token_type_ids):
        t = input_ids.shape[1]
        pos = torch.arange(t, device=input_ids.device).unsqueeze(0)
        x = s.ln(s.tok(input_ids) + s.pos(pos) + s.typ(token_type_ids))
        bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        for l in s.layers:
            x = l(x, bias)
        return x


class DecoderLayer(nn.Module):
    def __init__(s, d, h):
        super().__init__()
        s.h = h
        s.ln1 = nn.LayerNorm(d)
        s.qkv = nn.Linear(d, 3 * d)
        s.o = nn.Linear(d, d)
        s.ln2 = nn.LayerNorm(d)
        s.fc = nn.Linear(d, 4 * d)
        s.proj = nn.Linear(4 * d, d)

    def forward(s, x, pk, pv, mask):
        b, t, d = x.shape
        q, k, v = s.qkv(s.ln1(x)).split(d, dim=-1)
        sh = lambda z: z.view(b, t, s.h, d // s.h).transpose(1, 2)
        q, k, v = sh(q), sh(k), sh(v)
        k = torch.cat([pk, k], dim=2)
        v = torch.cat([pv, v], dim=2)
        a = (q @ k.transpose(-1, -2)) / math.sqrt(d // s.h) + mask
        y = (a.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
        x = x + s.o(y)
        x = x + s.proj(F.gelu(s.fc(s.ln2(x)), approximate='tanh'))
        return x, k, v


class Decoder(nn.Module):
    """GPT-2-style: pre-LN blocks, tanh-GELU MLP, causal mask over past + new tokens, tied LM head."""
    def __init__(s, vocab, d, h, layers, maxpos):
        super().__init__()
        s.tok = nn.Embedding(vocab, d)
        s.pos = nn.Embedding(maxpos, d)
        s.layers = nn.ModuleList([DecoderLayer(d, h) for _ in range(layers)])
        s.lnf = nn.LayerNorm(d)

    def forward(s, input_ids, *past):
        b, t = input_ids.shape
        p = past[0].shape[2]
        pos = torch.arange(p, p + t, device=input_ids.device).unsqueeze(0)
        x = s.tok(input_ids) + s.pos(pos)
        i = torch.arange(t).unsqueeze(1) + p
        j = torch.arange(p + t).unsqueeze(0)
        mask = ((j > i).to(torch.float32) * -1e9)[None, None]
        presents = []
        for n, l in enumerate(s.layers):
            x, k, v = l(x, past[2 * n], past[2 * n + 1], mask)
            presents += [k, v]
        logits = s.lnf(x) @ s.tok.weight.t()
        return (logits, *presents)


SIZES = {
    'small': dict(enc=dict(vocab=1000, d=128, h=4, layers=2, ff=512, maxpos=256),
                  dec=dict(vocab=1000, d=128, h=4, layers=2, maxpos=256)),
    'base': dict(enc=dict(vocab=30522, d=768, h=12, layers=12, ff=3072, maxpos=512),
                 dec=dict(vocab=50257, d=768, h=12, layers=12, maxpos=1024)),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('out')
    ap.add_argument('--size', default='small', choices=SIZES)
    ap.add_argument('--opset', type=int, default=17)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    # Newer PyTorch exports through dynamo by default, which rejects dynamic_axes and the past list: the TorchScript
    # exporter, as on Debian's PyTorch.
    import inspect
    kw = {'dynamo': False} if 'dynamo' in inspect.signature(torch.onnx.export).parameters else {}
    torch.manual_seed(0)
    cfg = SIZES[a.size]
    enc = Encoder(**cfg['enc']).eval()
    for p in enc.parameters():  # BERT-like init scale so activations stay O(1)
        nn.init.normal_(p, std=0.05) if p.dim() > 1 else None
    ids = torch.randint(0, cfg['enc']['vocab'], (1, 16))
    torch.onnx.export(enc, (ids, torch.ones_like(ids), torch.zeros_like(ids)),
                      os.path.join(a.out, f'encoder-{a.size}.onnx'), opset_version=a.opset, **kw,
                      input_names=['input_ids', 'attention_mask', 'token_type_ids'], output_names=['last_hidden_state'],
                      dynamic_axes={n: {0: 'batch', 1: 'sequence'} for n in ['input_ids', 'attention_mask', 'token_type_ids', 'last_hidden_state']})
    dc = cfg['dec']
    dec = Decoder(**dc).eval()
    for p in dec.parameters():
        nn.init.normal_(p, std=0.05) if p.dim() > 1 else None
    L, H, hd = dc['layers'], dc['h'], dc['d'] // dc['h']
    ids = torch.randint(0, dc['vocab'], (1, 4))
    past = [torch.randn(1, H, 3, hd) for _ in range(2 * L)]
    pnames = [f'past_key_values.{i // 2}.{"key" if i % 2 == 0 else "value"}' for i in range(2 * L)]
    onames = ['logits'] + [n.replace('past_key_values', 'present') for n in pnames]
    dyn = {'input_ids': {0: 'batch', 1: 'sequence'}, 'logits': {0: 'batch', 1: 'sequence'}}
    for n in pnames: dyn[n] = {0: 'batch', 2: 'past_sequence'}
    for n in onames[1:]: dyn[n] = {0: 'batch', 2: 'total_sequence'}
    torch.onnx.export(dec, (ids, *past), os.path.join(a.out, f'decoder-{a.size}.onnx'), opset_version=a.opset, **kw,
                      input_names=['input_ids'] + pnames, output_names=onames, dynamic_axes=dyn)
    # The encoder again with its weights in an external data file (tests the external-data loader).
    import onnx
    m = onnx.load(os.path.join(a.out, f'encoder-{a.size}.onnx'))
    onnx.save_model(m, os.path.join(a.out, f'encoder-{a.size}-external.onnx'), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=f'encoder-{a.size}-external.data', size_threshold=1024)
    print('wrote', a.out)


if __name__ == '__main__':
    main()
