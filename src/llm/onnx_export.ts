// Writes an LLM (dense or quantized) as an ONNX decoder with a KV cache in the Hugging Face layout (input_ids and
// past_key_values.{i}.{key,value} in; logits and present.{i}.{key,value} out), made of standard ops, with quantized
// matrices as onnxruntime's com.microsoft MatMulNBits (whose layout webjit's format shares). It is how the peers
// (onnxruntime-web, onnxruntime-node) run exactly the model webjit runs: the oracle for greedy equality, and the
// benchmark's same-model comparison.
import { Tensor } from '../tensor.js';
import { writeModel, type WNode } from '../bench/onnx_writer.js';
import { ropeTables } from './reference.js';
import type { LlmWeights, Matrix } from './types.js';

export function exportOnnx(w: LlmWeights): Uint8Array {
  const c = w.config, D = c.hidden, H = c.heads, KVH = c.kvHeads, hd = c.headDim, V = c.vocab;
  const nodes: WNode[] = [];
  const init: Record<string, Tensor> = {};
  let uid = 0;
  const fresh = (p: string) => `${p}_${uid++}`;
  const node = (op: string, inputs: string[], attrs?: WNode['attrs'], domain?: string, out = fresh(op)): string => {
    nodes.push({ op, inputs, outputs: [out], attrs, domain, name: out });
    return out;
  };
  const constF = (name: string, v: number[] | Float32Array, dims: number[]) => { init[name] = new Tensor('float32', Float32Array.from(v), dims); return name; };
  const constI = (name: string, v: number[], dims = [v.length]) => { init[name] = new Tensor('int64', BigInt64Array.from(v.map(BigInt)), dims); return name; };

  // Rotary tables in the rotate_half layout ([cos | cos], [sin | sin]) and the rotate_half permutation as a matrix.
  const half = hd / 2, P = c.maxPositions;
  const { cos, sin } = ropeTables(c, P);
  const cosT = new Float32Array(P * hd), sinT = new Float32Array(P * hd);
  for (let p = 0; p < P; p++) for (let i = 0; i < half; i++) {
    cosT[p * hd + i] = cosT[p * hd + i + half] = cos[p * half + i];
    sinT[p * hd + i] = sinT[p * hd + i + half] = sin[p * half + i];
  }
  constF('rope_cos', cosT, [P, hd]); constF('rope_sin', sinT, [P, hd]);
  const R = new Float32Array(hd * hd); // x @ R = cat(-x2, x1)
  for (let i = 0; i < half; i++) { R[(i + half) * hd + i] = -1; R[i * hd + i + half] = 1; }
  constF('rope_rot', R, [hd, hd]);
  constF('one', [1], []); constF('two', [2], []); constF('eps', [c.rmsEps], []); constF('scale', [1 / Math.sqrt(hd)], []);
  constF('neg_big', [-3.4028234663852886e38], []);
  constI('i0', [0], []); constI('i1', [1], []); constI('ax0', [0]); constI('ax1', [1]);
  constI('qshape', [1, -1, H, hd]); constI('kvshape', [1, -1, KVH, hd]); constI('oshape', [1, -1, H * hd]);
  if (KVH !== H) constI('headsshape', [1, H, -1, hd]);

  // Positions: past_len … past_len+seq−1, their rotary rows, and the causal mask [seq, past+seq].
  const pastLen = node('Shape', ['past_key_values.0.key'], { start: 2, end: 3 });
  const seqLen = node('Shape', ['input_ids'], { start: 1, end: 2 });
  const total = node('Add', [pastLen, seqLen]);
  const p0 = node('Squeeze', [pastLen, 'ax0']), tot = node('Squeeze', [total, 'ax0']);
  const pos = node('Range', [p0, tot, 'i1']);
  const unsq = (x: string, axes: string) => node('Unsqueeze', [x, axes]);
  const cosRows = unsq(unsq(node('Gather', ['rope_cos', pos], { axis: 0 }), 'ax0'), 'ax0'); // [1,1,seq,hd]
  const sinRows = unsq(unsq(node('Gather', ['rope_sin', pos], { axis: 0 }), 'ax0'), 'ax0');
  const kpos = unsq(node('Range', ['i0', tot, 'i1']), 'ax0'); // [1,total]
  const qpos = unsq(pos, 'ax1'); // [seq,1]
  const allowed = node('LessOrEqual', [kpos, qpos]); // [seq,total]

  /** RMSNorm over the last axis (the hidden size, or a head's headDim for Qwen3's q/k norms). */
  const rms = (x: string, weight: Float32Array, name: string) => {
    const ms = node('ReduceMean', [node('Pow', [x, 'two'])], { axes: [-1], keepdims: 1 });
    const inv = node('Div', ['one', node('Sqrt', [node('Add', [ms, 'eps'])])]);
    return node('Mul', [constF(name, weight, [weight.length]), node('Mul', [x, inv])]);
  };
  const linear = (x: string, m: Matrix, name: string) => {
    if (m.kind === 'f32') {
      const t = new Float32Array(m.K * m.N); // MatMul's B is [K, N]
      for (let n = 0; n < m.N; n++) for (let k = 0; k < m.K; k++) t[k * m.N + n] = m.data[n * m.K + k];
      return node('MatMul', [x, constF(name, t, [m.K, m.N])]);
    }
    const groups = m.K / m.group;
    init[`${name}.qweight`] = new Tensor('uint8', m.data, [m.N, groups, (m.group * m.bits) / 8]);
    init[`${name}.scales`] = new Tensor('float32', m.scales, [m.N * groups]);
    init[`${name}.zeros`] = new Tensor('uint8', m.zeros, [m.zeros.length]);
    return node('MatMulNBits', [x, `${name}.qweight`, `${name}.scales`, `${name}.zeros`],
      { K: m.K, N: m.N, bits: m.bits, block_size: m.group }, 'com.microsoft');
  };
  const rope = (x: string) => node('Add', [node('Mul', [x, cosRows]), node('Mul', [node('MatMul', [x, 'rope_rot']), sinRows])]);
  const repeatKv = (x: string) => {
    if (KVH === H) return x;
    const u = unsq(x, constI(fresh('ax2'), [2]));
    return node('Reshape', [node('Concat', new Array(H / KVH).fill(u), { axis: 2 }), 'headsshape']);
  };

  init.embed = new Tensor('float32', w.embed, [V, D]);
  let x = node('Gather', ['embed', 'input_ids'], { axis: 0 }); // [1,seq,D]
  const outputs: { name: string; dtype: 'float32'; dims: (number | string)[] }[] = [];
  w.layers.forEach((L, l) => {
    const p = `layers.${l}`;
    const h = rms(x, L.attnNorm, `${p}.attn_norm`);
    // Qwen2: the projections' biases are added before the heads are split (and before the rotation).
    const proj = (m: Matrix, nm: 'q' | 'k' | 'v') => {
      const y = linear(h, m, `${p}.${nm}`), b = L.qkvBias?.[nm];
      return b ? node('Add', [y, constF(`${p}.${nm}.bias`, b, [b.length])]) : y;
    };
    // Qwen3: each head of q and k RMS-normalized ([1, seq, heads, headDim] over headDim) before the rotation.
    const heads = (nm: 'q' | 'k' | 'v', shape: string) => {
      const split = node('Reshape', [proj(L[nm], nm), shape]), nw = nm !== 'v' ? L.qkNorm?.[nm] : undefined;
      return node('Transpose', [nw ? rms(split, nw, `${p}.${nm}_norm`) : split], { perm: [0, 2, 1, 3] });
    };
    const q = rope(heads('q', 'qshape'));
    const k = rope(heads('k', 'kvshape'));
    const v = heads('v', 'kvshape');
    const pk = node('Concat', [`past_key_values.${l}.key`, k], { axis: 2 }, undefined, `present.${l}.key`);
    const pv = node('Concat', [`past_key_values.${l}.value`, v], { axis: 2 }, undefined, `present.${l}.value`);
    outputs.push({ name: pk, dtype: 'float32', dims: [1, KVH, 'total', hd] }, { name: pv, dtype: 'float32', dims: [1, KVH, 'total', hd] });
    const scores = node('Mul', [node('MatMul', [q, node('Transpose', [repeatKv(pk)], { perm: [0, 1, 3, 2] })]), 'scale']);
    const probs = node('Softmax', [node('Where', [allowed, scores, 'neg_big'])], { axis: -1 });
    const att = node('Reshape', [node('Transpose', [node('MatMul', [probs, repeatKv(pv)])], { perm: [0, 2, 1, 3] }), 'oshape']);
    x = node('Add', [x, linear(att, L.o, `${p}.o`)]);
    const h2 = rms(x, L.mlpNorm, `${p}.mlp_norm`);
    const g = linear(h2, L.gate, `${p}.gate`);
    const act = node('Mul', [node('Mul', [g, node('Sigmoid', [g])]), linear(h2, L.up, `${p}.up`)]);
    x = node('Add', [x, linear(act, L.down, `${p}.down`)]);
  });
  const logits = linear(rms(x, w.norm, 'final_norm'), w.lmHead, 'lm_head');
  nodes.push({ op: 'Identity', inputs: [logits], outputs: ['logits'], name: 'logits' });
  const inputs = [{ name: 'input_ids', dtype: 'int64' as const, dims: [1, 'seq'] as (number | string)[] }];
  for (let l = 0; l < c.layers; l++) for (const kind of ['key', 'value']) inputs.push({ name: `past_key_values.${l}.${kind}`, dtype: 'float32' as never, dims: [1, KVH, 'past', hd] });
  return writeModel({
    nodes, inputs, initializers: init, opset: 17, domains: { 'com.microsoft': 1 },
    outputs: [{ name: 'logits', dtype: 'float32', dims: [1, 'seq', V] }, ...outputs],
  });
}
