// Fused attention: the pass on real models (outputs unchanged), and the Wasm kernel against the unfused reference graph.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GraphExecutor } from '../src/backends/reference/executor.js';
import { WasmGraphRunner } from '../src/backends/wasm/executor.js';
import { WasmRuntime } from '../src/backends/wasm/runtime.js';
import { slicesPerUnit } from '../src/backends/wasm/ops/rnn.js';
import { fuseAttention } from '../src/graph/fuse_attention.js';
import type { Attribute, Graph, Model, Node } from '../src/graph/ir.js';
import { optimizeGraph } from '../src/graph/passes.js';
import { loadModel } from '../src/onnx/load.js';
import { Tensor, type Value } from '../src/tensor.js';
import { fixture, OCR_REC, randomFloat, randomInt64, relErr, rng } from './helpers.js';

const node = (opType: string, inputs: string[], outputs: string[], attrs: Attribute[] = []): Node =>
  ({ name: outputs[0], opType, domain: '', inputs, outputs, attrs: new Map(attrs.map((a) => [a.name, a])) });

interface Case {
  B: number; H: number; Sq: number; Skv: number; D: number; Dv?: number;
  /** K's layout: [B,H,S,D] transposed by [0,1,3,2]; [B,S,H,D] by [0,2,3,1]; or Kᵀ [B,H,D,S] given directly. */
  k: 'bhsd' | 'bshd' | 'kt';
  scale?: { op: 'Mul' | 'Div'; on: 'scores' | 'q' };
  mask?: 'pad' | 'causal' | 'full';
  /** Softmax axis attribute (default: none, i.e. -1 at opset 17). */
  axis?: number;
  /** Value of the masked entries ('pad': -10000, 'causal': -1e9 unless given). */
  maskFill?: number;
  /** 'pad' only: V rows of masked keys set to 1e36, so a masked key's softmax weight must be exactly 0 as in the reference. */
  hugeMaskedV?: boolean;
}

function build(c: Case): { model: Model; feeds: Map<string, Value> } {
  const { B, H, Sq, Skv, D } = c;
  const Dv = c.Dv ?? D;
  const nodes: Node[] = [];
  const inits = new Map<string, Tensor>();
  const seed = B * 1000 + H * 100 + Sq * 10 + Skv + D;
  const feeds = new Map<string, Value>();
  const kDims = c.k === 'bhsd' ? [B, H, Skv, D] : c.k === 'bshd' ? [B, Skv, H, D] : [B, H, D, Skv];
  feeds.set('q', randomFloat([B, H, Sq, D], seed + 1, -2, 2));
  feeds.set('k', randomFloat(kDims, seed + 2, -2, 2));
  feeds.set('v', randomFloat([B, H, Skv, Dv], seed + 3));
  let kt = 'k';
  if (c.k !== 'kt') {
    nodes.push(node('Transpose', ['k'], ['kt'], [{ name: 'perm', type: 'ints', value: c.k === 'bhsd' ? [0, 1, 3, 2] : [0, 2, 3, 1] }]));
    kt = 'kt';
  }
  let q = 'q';
  const sc = c.scale;
  const cval = sc ? (sc.op === 'Div' ? Math.sqrt(D) : 1 / Math.sqrt(D)) : 1;
  if (sc) inits.set('c', new Tensor('float32', new Float32Array([cval]), []));
  if (sc?.on === 'q') { nodes.push(node(sc.op, ['q', 'c'], ['qs'])); q = 'qs'; }
  nodes.push(node('MatMul', [q, kt], ['s0']));
  let s = 's0';
  if (sc?.on === 'scores') { nodes.push(node(sc.op, [s, 'c'], ['s1'])); s = 's1'; }
  if (c.mask) {
    const r = rng(seed + 4);
    let md: number[], mv: Float32Array;
    if (c.mask === 'pad') {
      md = [B, 1, 1, Skv];
      mv = new Float32Array(B * Skv);
      for (let b = 0; b < B; b++) { const len = Math.max(1, Math.round(Skv * (0.5 + 0.5 * r()))); for (let j = len; j < Skv; j++) mv[b * Skv + j] = c.maskFill ?? -10000; }
      if (c.hugeMaskedV) {
        const v = feeds.get('v') as Tensor, vd = v.data as Float32Array, Dv = v.dims[3];
        for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let j = 0; j < Skv; j++) {
          if (mv[b * Skv + j] < -1000) vd.fill(1e36, ((b * H + h) * Skv + j) * Dv, ((b * H + h) * Skv + j + 1) * Dv);
        }
      }
    } else if (c.mask === 'causal') {
      md = [1, 1, Sq, Skv];
      mv = new Float32Array(Sq * Skv);
      for (let i = 0; i < Sq; i++) for (let j = 0; j < Skv; j++) if (j > i + Skv - Sq) mv[i * Skv + j] = c.maskFill ?? -1e9;
    } else {
      md = [B, H, Sq, Skv];
      mv = new Float32Array(B * H * Sq * Skv).map(() => 3 * r() - 1.5);
    }
    feeds.set('mask', new Tensor('float32', mv, md));
    nodes.push(node('Add', ['mask', s], ['s2']));
    s = 's2';
  }
  nodes.push(node('Softmax', [s], ['p'], c.axis === undefined ? [] : [{ name: 'axis', type: 'int', value: c.axis }]));
  nodes.push(node('MatMul', ['p', 'v'], ['y']));
  const graph: Graph = {
    name: 'attention', nodes, initializers: inits, valueInfo: new Map(),
    inputs: [...feeds.keys()].map((name) => ({ name, type: null })), outputs: [{ name: 'y', type: null }],
  };
  return { model: { irVersion: 8, producer: 'test', opsets: new Map([['', 17]]), graph, functions: new Map(), metadata: new Map() }, feeds };
}

const envOf = (m: Model) => ({ opsets: m.opsets, functions: m.functions });

async function checkCase(rt: WasmRuntime, c: Case): Promise<void> {
  const ref = build(c);
  const want = new GraphExecutor(ref.model.graph, envOf(ref.model)).run(ref.feeds)[0] as Tensor;
  const fused = build(c);
  assert.equal(fuseAttention(fused.model).fused, 1, `not fused: ${JSON.stringify(c)}`);
  assert.equal(fused.model.graph.nodes.length, 1);
  // The reference kernel of the fused node replays the original ops: bit for bit the same.
  const replay = new GraphExecutor(fused.model.graph, envOf(fused.model)).run(fused.feeds)[0] as Tensor;
  assert.equal(relErr(replay, want), 0, `reference replay differs: ${JSON.stringify(c)}`);
  const runner = new WasmGraphRunner(fused.model.graph, envOf(fused.model), rt, { fallback: false });
  try {
    const got = (await runner.run(fused.feeds))[0] as Tensor;
    const err = relErr(got, want);
    if (process.env.ATTN_VERBOSE) console.log(JSON.stringify(c), err);
    assert.ok(err <= 1e-5, `${JSON.stringify(c)}: rel err ${err}`);
    assert.equal(runner.stats.fallbackNodes, 0);
  } finally {
    runner.dispose();
  }
}

test('fused Wasm attention matches the unfused reference on the real models\' shapes', async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    // encoder-small: K from [B,S,H,D] by perm [0,2,3,1], Div by sqrt(d), padding mask [B,1,1,S].
    await checkCase(rt, { B: 2, H: 4, Sq: 16, Skv: 16, D: 32, k: 'bshd', scale: { op: 'Div', on: 'scores' }, mask: 'pad' });
    // decoder-small: prefill and a decode step against the KV cache, causal mask [1,1,S,T].
    await checkCase(rt, { B: 1, H: 4, Sq: 8, Skv: 8, D: 32, k: 'bhsd', scale: { op: 'Div', on: 'scores' }, mask: 'causal' });
    await checkCase(rt, { B: 1, H: 4, Sq: 1, Skv: 9, D: 32, k: 'bhsd', scale: { op: 'Div', on: 'scores' }, mask: 'causal' });
    // PP-OCRv4 rec: Q scaled first, head size 15, softmax axis 3, no mask.
    await checkCase(rt, { B: 1, H: 8, Sq: 40, Skv: 40, D: 15, k: 'bhsd', scale: { op: 'Mul', on: 'q' }, axis: 3 });
  } finally {
    await rt.dispose();
  }
});

test('fused Wasm attention on ragged shapes (sequence 1..128, heads 1..12, head sizes 16..64)', { timeout: 300_000 }, async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    const seqs = [1, 7, 33, 128];
    const heads = [1, 3, 12];
    const dims = [16, 20, 64];
    let n = 0;
    for (const S of seqs) for (const H of heads) for (const D of dims) {
      const k = (['bhsd', 'bshd', 'kt'] as const)[n % 3];
      const mask = ([undefined, 'pad', 'causal', 'full'] as const)[n % 4];
      const scale = n % 5 === 4 ? undefined : { op: n % 2 ? 'Div' as const : 'Mul' as const, on: n % 3 === 1 ? 'q' as const : 'scores' as const };
      const Sq = mask === 'causal' ? Math.max(1, S >> (n % 3)) : S;
      await checkCase(rt, { B: 1 + (n % 2), H, Sq, Skv: S, D, Dv: n % 4 === 3 ? D + 4 : D, k, scale, mask });
      n++;
    }
    // Odd sizes: head size below one vector, V width not a multiple of 4, query blocks with a ragged tail.
    await checkCase(rt, { B: 1, H: 2, Sq: 9, Skv: 5, D: 3, Dv: 2, k: 'bhsd', scale: { op: 'Div', on: 'scores' }, mask: 'full' });
    await checkCase(rt, { B: 2, H: 1, Sq: 17, Skv: 3, D: 7, Dv: 13, k: 'kt', mask: 'pad' });
    // Long heads: the dot products loop instead of unrolling.
    await checkCase(rt, { B: 1, H: 2, Sq: 10, Skv: 21, D: 150, Dv: 36, k: 'bshd', scale: { op: 'Div', on: 'scores' }, mask: 'full' });
  } finally {
    await rt.dispose();
  }
});

test('fused Wasm attention: masked softmax terms are exactly 0 (no saturated exp; no denormal products with V)', async () => {
  // emitExp saturates near exp(-87) ~ 1.6e-38 for very negative inputs; a masked key's weight must still be 0, or its
  // products with V are denormals (a ~15x slowdown of the decoder's causal attention) and a large V leaks through.
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    for (const maskFill of [-10000, -1e9, -3.4028234663852886e38, -Infinity]) {
      await checkCase(rt, { B: 2, H: 4, Sq: 33, Skv: 37, D: 32, k: 'bhsd', scale: { op: 'Div', on: 'scores' }, mask: 'pad', maskFill, hugeMaskedV: true });
      await checkCase(rt, { B: 1, H: 2, Sq: 1, Skv: 128, D: 32, k: 'bshd', scale: { op: 'Div', on: 'scores' }, mask: 'pad', maskFill, hugeMaskedV: true });
    }
    // The decoder's shape: causal mask [1,1,S,S] filled with finfo(float32).min, K from the KV cache as [B,H,S,D].
    await checkCase(rt, { B: 1, H: 4, Sq: 128, Skv: 128, D: 32, k: 'bhsd', scale: { op: 'Div', on: 'scores' }, mask: 'causal', maskFill: -3.4028234663852886e38 });
    await checkCase(rt, { B: 1, H: 4, Sq: 1, Skv: 128, D: 32, k: 'bhsd', scale: { op: 'Div', on: 'scores' }, mask: 'causal', maskFill: -Infinity });
  } finally {
    await rt.dispose();
  }
});

/** Loads and optimizes a model twice, fusing attention in the second copy; returns how many chains were fused. */
async function pair(file: string): Promise<{ plain: Model; fused: Model; count: number }> {
  const plain = await loadModel(file);
  optimizeGraph(plain);
  const fused = await loadModel(file);
  optimizeGraph(fused);
  const count = fuseAttention(fused).fused;
  return { plain, fused, count };
}

function sameOutputs(a: Model, b: Model, feeds: Map<string, Value>): Tensor[] {
  const x = new GraphExecutor(a.graph, envOf(a)).run(feeds) as Tensor[];
  const y = new GraphExecutor(b.graph, envOf(b)).run(feeds) as Tensor[];
  x.forEach((t, i) => {
    const err = relErr(y[i], t);
    assert.ok(err <= 1e-5, `output ${a.graph.outputs[i].name}: rel err ${err}`);
  });
  return x;
}

test('fuseAttention on encoder-small: 2 chains fused, outputs unchanged', async () => {
  const { plain, fused, count } = await pair(fixture('encoder-small.onnx'));
  assert.equal(count, 2);
  assert.equal(fused.graph.nodes.filter((n) => n.opType === 'Softmax').length, 0);
  const mask = new BigInt64Array(2 * 16).fill(1n);
  for (let j = 11; j < 16; j++) mask[16 + j] = 0n;
  const feeds = new Map<string, Value>([
    ['input_ids', randomInt64([2, 16], 3, 1000)],
    ['attention_mask', new Tensor('int64', mask, [2, 16])],
    ['token_type_ids', randomInt64([2, 16], 4, 2)],
  ]);
  const want = sameOutputs(plain, fused, feeds);
  // And on the Wasm backend (other ops may fall back).
  const rt = await WasmRuntime.create({ threads: 2 });
  const runner = new WasmGraphRunner(fused.graph, envOf(fused), rt);
  try {
    const got = (await runner.run(feeds)) as Tensor[];
    assert.ok(relErr(got[0], want[0]) <= 1e-4, `wasm rel err ${relErr(got[0], want[0])}`);
    assert.ok(!runner.stats.fallbackOps.has('FusedAttention'));
  } finally {
    runner.dispose();
    await rt.dispose();
  }
});

test('fuseAttention on decoder-small: 2 chains fused, prefill and decode step unchanged', async () => {
  const { plain, fused, count } = await pair(fixture('decoder-small.onnx'));
  assert.equal(count, 2);
  const empty = () => new Tensor('float32', new Float32Array(0), [1, 4, 0, 32]);
  const pre = new Map<string, Value>([['input_ids', randomInt64([1, 8], 11, 1000)]]);
  for (let l = 0; l < 2; l++) { pre.set(`past_key_values.${l}.key`, empty()); pre.set(`past_key_values.${l}.value`, empty()); }
  const out = sameOutputs(plain, fused, pre);
  const names = plain.graph.outputs.map((o) => o.name);
  const step = new Map<string, Value>([['input_ids', randomInt64([1, 1], 12, 1000)]]);
  for (let l = 0; l < 2; l++) {
    step.set(`past_key_values.${l}.key`, out[names.indexOf(`present.${l}.key`)]);
    step.set(`past_key_values.${l}.value`, out[names.indexOf(`present.${l}.value`)]);
  }
  sameOutputs(plain, fused, step);
});

test('fuseAttention on PP-OCRv4 rec: its 2 transformer blocks fused, output unchanged', { timeout: 300_000 }, async () => {
  const { plain, fused, count } = await pair(OCR_REC);
  assert.equal(count, 2);
  sameOutputs(plain, fused, new Map([[plain.graph.inputs[0].name, randomFloat([1, 3, 48, 320], 5, 0, 1)]]));
});

test('fuseAttention leaves chains alone whose intermediates have other readers', () => {
  const { model } = build({ B: 1, H: 2, Sq: 4, Skv: 4, D: 8, k: 'bhsd', scale: { op: 'Div', on: 'scores' } });
  model.graph.outputs.push({ name: 'p', type: null });
  assert.equal(fuseAttention(model).fused, 0);
  const b = build({ B: 1, H: 2, Sq: 4, Skv: 4, D: 8, k: 'bhsd' });
  b.model.graph.nodes.push(node('Relu', ['s0'], ['r']));
  b.model.graph.outputs.push({ name: 'r', type: null });
  assert.equal(fuseAttention(b.model).fused, 0);
  // A Transpose read elsewhere stays; the fused node takes its output as Kᵀ.
  const c = build({ B: 1, H: 2, Sq: 4, Skv: 4, D: 8, k: 'bhsd' });
  c.model.graph.outputs.push({ name: 'kt', type: null });
  assert.equal(fuseAttention(c.model).fused, 1);
  const f = c.model.graph.nodes.find((n) => n.opType === 'FusedAttention')!;
  assert.equal(f.inputs[1], 'kt');
  assert.equal(f.attrs.get('transpose_k')?.value, 0);
});

// --- LSTM ------------------------------------------------------------------------------------------

interface LstmCase {
  T: number; B: number; I: number; H: number;
  direction?: 'forward' | 'reverse' | 'bidirectional';
  layout?: 0 | 1;
  bias?: boolean; init?: boolean; peep?: boolean; clip?: number; inputForget?: boolean;
  outputs?: number;
  /** GRU (linear_before_reset = 1 unless lbr0) instead of LSTM. */
  gru?: boolean;
  lbr0?: boolean;
  /** RNN (tanh) instead of LSTM. */
  rnn?: boolean;
  /** R drawn from ±0.5·rScale (long RNNs with large R are chaotic: rounding differences grow without bound). */
  rScale?: number;
  /** W as a model constant: the input projections then run as one GEMM before the recurrence (when H % 4 == 0). */
  constW?: boolean;
  /** R as a model constant too: with several batch rows per task, h·Rᵀ then runs on the GEMM micro-kernel. */
  constR?: boolean;
  /** Runs to check (a node's first run is on one thread; later ones share the recurrence between threads). */
  runs?: number;
}

async function checkLstm(rt: WasmRuntime, c: LstmCase): Promise<void> {
  const dirs = c.direction === 'bidirectional' ? 2 : 1;
  const { T, B, I, H } = c;
  const layout = c.layout ?? 0;
  const seed = T * 7 + B * 11 + I * 13 + H * 17 + dirs;
  const feeds = new Map<string, Value>();
  const inputs = ['x', 'w', 'r', '', '', '', '', ''];
  const G = c.rnn ? 1 : c.gru ? 3 : 4;
  feeds.set('x', randomFloat(layout === 0 ? [T, B, I] : [B, T, I], seed, -2, 2));
  const w = randomFloat([dirs, G * H, I], seed + 1, -0.5, 0.5);
  const initializers = new Map<string, Tensor>();
  if (c.constW) initializers.set('w', w); else feeds.set('w', w);
  const r = randomFloat([dirs, G * H, H], seed + 2, -0.5 * (c.rScale ?? 1), 0.5 * (c.rScale ?? 1));
  if (c.constR) initializers.set('r', r); else feeds.set('r', r);
  if (c.bias) { feeds.set('b', randomFloat([dirs, 2 * G * H], seed + 3)); inputs[3] = 'b'; }
  const st = layout === 0 ? [dirs, B, H] : [B, dirs, H];
  if (c.init) {
    feeds.set('h0', randomFloat(st, seed + 4)); inputs[5] = 'h0';
    if (!c.gru && !c.rnn) { feeds.set('c0', randomFloat(st, seed + 5, -3, 3)); inputs[6] = 'c0'; }
  }
  if (c.peep) { feeds.set('p', randomFloat([dirs, 3 * H], seed + 6)); inputs[7] = 'p'; }
  while (inputs[inputs.length - 1] === '') inputs.pop();
  const attrs: Attribute[] = [{ name: 'hidden_size', type: 'int', value: H }];
  if (c.direction) attrs.push({ name: 'direction', type: 'string', value: c.direction });
  if (layout) attrs.push({ name: 'layout', type: 'int', value: layout });
  if (c.clip !== undefined) attrs.push({ name: 'clip', type: 'float', value: c.clip });
  if (c.inputForget) attrs.push({ name: 'input_forget', type: 'int', value: 1 });
  if (c.gru && !c.lbr0) attrs.push({ name: 'linear_before_reset', type: 'int', value: 1 });
  const outs = ['y', 'yh', 'yc'].slice(0, c.outputs ?? (c.gru || c.rnn ? 2 : 3));
  const graph: Graph = {
    name: 'lstm', nodes: [node(c.rnn ? 'RNN' : c.gru ? 'GRU' : 'LSTM', inputs, outs, attrs)], initializers, valueInfo: new Map(),
    inputs: [...feeds.keys()].map((name) => ({ name, type: null })), outputs: outs.map((name) => ({ name, type: null })),
  };
  const env = { opsets: new Map([['', 14]]), functions: new Map() };
  const want = new GraphExecutor(graph, env).run(feeds) as Tensor[];
  const runner = new WasmGraphRunner(graph, env, rt, { fallback: false });
  try {
    for (let run = 0; run < (c.runs ?? 1); run++) {
      const got = (await runner.run(feeds)) as Tensor[];
      want.forEach((w, i) => {
        const err = relErr(got[i], w);
        if (process.env.ATTN_VERBOSE) console.log(JSON.stringify(c), run, outs[i], err);
        assert.ok(err <= 1e-5, `${JSON.stringify(c)} run ${run} output ${outs[i]}: rel err ${err}`);
      });
    }
  } finally {
    runner.dispose();
  }
}

test('Wasm LSTM matches the reference: Silero VAD shape, bidirectional, batchwise, ragged sizes', { timeout: 120_000 }, async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    // Silero VAD's decoder: one step, batch 1, 128 in, 128 hidden, with state and bias.
    await checkLstm(rt, { T: 1, B: 1, I: 128, H: 128, bias: true, init: true });
    await checkLstm(rt, { T: 16, B: 2, I: 64, H: 128, bias: true, init: true });
    await checkLstm(rt, { T: 9, B: 3, I: 20, H: 32, direction: 'bidirectional', bias: true, init: true });
    await checkLstm(rt, { T: 7, B: 5, I: 13, H: 11, direction: 'bidirectional', layout: 1, bias: true, init: true, peep: true });
    await checkLstm(rt, { T: 5, B: 9, I: 3, H: 6, direction: 'reverse', peep: true, clip: 0.7 });
    await checkLstm(rt, { T: 4, B: 1, I: 8, H: 2, inputForget: true, init: true, outputs: 1 });
    await checkLstm(rt, { T: 33, B: 1, I: 40, H: 64, direction: 'bidirectional', bias: true, outputs: 2 });
    await checkLstm(rt, { T: 3, B: 6, I: 150, H: 70, bias: true, init: true, peep: true });
    // Constant W: input projections as a GEMM first.
    await checkLstm(rt, { T: 20, B: 1, I: 40, H: 64, direction: 'bidirectional', bias: true, constW: true, outputs: 1 });
    await checkLstm(rt, { T: 6, B: 3, I: 10, H: 8, layout: 1, bias: true, init: true, peep: true, constW: true });
  } finally {
    await rt.dispose();
  }
});

test('Wasm GRU (linear_before_reset = 1, as PyTorch exports it) matches the reference', { timeout: 120_000 }, async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    await checkLstm(rt, { gru: true, T: 12, B: 1, I: 64, H: 128, bias: true, constW: true });
    await checkLstm(rt, { gru: true, T: 12, B: 1, I: 64, H: 128, bias: true, init: true });
    await checkLstm(rt, { gru: true, T: 9, B: 3, I: 20, H: 32, direction: 'bidirectional', bias: true, init: true, constW: true });
    await checkLstm(rt, { gru: true, T: 7, B: 5, I: 13, H: 11, direction: 'bidirectional', layout: 1, bias: true, init: true });
    await checkLstm(rt, { gru: true, T: 5, B: 2, I: 3, H: 6, direction: 'reverse', clip: 0.7, outputs: 1 });
    await checkLstm(rt, { gru: true, T: 6, B: 4, I: 8, H: 16, layout: 1, init: true, constW: true });
  } finally {
    await rt.dispose();
  }
});

test('Wasm GRU with linear_before_reset = 0 (the ONNX default) and RNN match the reference', { timeout: 120_000 }, async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    await checkLstm(rt, { gru: true, lbr0: true, T: 12, B: 1, I: 64, H: 128, bias: true, constW: true, runs: 2 });
    await checkLstm(rt, { gru: true, lbr0: true, T: 9, B: 3, I: 20, H: 32, direction: 'bidirectional', bias: true, init: true, constW: true, constR: true, runs: 2 });
    await checkLstm(rt, { gru: true, lbr0: true, T: 7, B: 5, I: 13, H: 11, direction: 'bidirectional', layout: 1, bias: true, init: true });
    await checkLstm(rt, { gru: true, lbr0: true, T: 5, B: 2, I: 3, H: 6, direction: 'reverse', clip: 0.7, outputs: 1 });
    await checkLstm(rt, { rnn: true, T: 40, B: 1, I: 16, H: 128, bias: true, init: true, constW: true, rScale: 0.1, runs: 3 });
    await checkLstm(rt, { rnn: true, T: 8, B: 4, I: 10, H: 16, direction: 'bidirectional', bias: true, constW: true, constR: true, runs: 2 });
    await checkLstm(rt, { rnn: true, T: 6, B: 3, I: 5, H: 7, layout: 1, init: true, clip: 0.9 });
  } finally {
    await rt.dispose();
  }
});

test('Wasm LSTM and GRU with constant weights and several batch rows run each step on the GEMM micro-kernel', { timeout: 120_000 }, async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    await checkLstm(rt, { gru: true, T: 7, B: 4, I: 12, H: 16, direction: 'bidirectional', bias: true, init: true, constW: true, constR: true, runs: 2 });
    await checkLstm(rt, { gru: true, T: 9, B: 5, I: 20, H: 40, bias: true, constW: true, constR: true, runs: 2 });
    await checkLstm(rt, { gru: true, T: 6, B: 3, I: 8, H: 8, layout: 1, init: true, constW: true, constR: true, outputs: 1, runs: 2 });
    await checkLstm(rt, { T: 8, B: 3, I: 10, H: 24, layout: 1, bias: true, init: true, peep: true, constW: true, constR: true, runs: 2 });
    await checkLstm(rt, { T: 5, B: 6, I: 16, H: 32, direction: 'bidirectional', bias: true, clip: 1.5, constW: true, constR: true, runs: 2 });
    await checkLstm(rt, { T: 4, B: 2, I: 7, H: 16, direction: 'reverse', init: true, constW: true, constR: true, outputs: 3, runs: 2 });
  } finally {
    await rt.dispose();
  }
});

test('Wasm LSTM and GRU share one recurrence between threads (hidden units sliced per step)', { timeout: 120_000 }, async () => {
  // The cases below are sliced (and Silero VAD's one-step LSTM is not).
  const p = (kind: 'gru' | 'lstm' | 'rnn', T: number, H: number, dirs: 1 | 2, threads: number) =>
    slicesPerUnit({ kind, T, B: 1, I: 16, H, dirs, reverse: false, layout: 0, hasBias: true, hasH0: false, hasC0: false, hasP: false,
      clip: Infinity, inputForget: false, rowsPerTask: 1, xproj: true, relaxed: false }, threads);
  assert.deepEqual([p('gru', 40, 128, 1, 2), p('gru', 25, 100, 1, 4), p('lstm', 30, 128, 1, 3), p('lstm', 30, 68, 1, 4)], [2, 3, 3, 2]);
  assert.deepEqual([p('gru', 45, 64, 2, 4), p('gru', 45, 64, 2, 3), p('lstm', 1, 128, 1, 2), p('rnn', 40, 128, 1, 2)], [2, 1, 1, 2]);
  // One direction, batch 1, constant W, H >= 64: each step's hidden units split over the threads. The first run is on
  // one thread (kernels not yet on the workers); the later runs are shared.
  for (const threads of [2, 3, 4]) {
    const rt = await WasmRuntime.create({ threads });
    try {
      await checkLstm(rt, { gru: true, T: 40, B: 1, I: 64, H: 128, bias: true, constW: true, runs: 4 });
      await checkLstm(rt, { gru: true, T: 25, B: 1, I: 24, H: 100, direction: 'reverse', init: true, constW: true, runs: 3 });
      await checkLstm(rt, { T: 30, B: 1, I: 40, H: 128, bias: true, init: true, peep: true, constW: true, runs: 3 });
      await checkLstm(rt, { T: 30, B: 1, I: 12, H: 68, layout: 1, bias: true, init: true, clip: 2, constW: true, outputs: 2, runs: 3 });
      // Two directions on more threads than directions.
      await checkLstm(rt, { gru: true, T: 45, B: 1, I: 16, H: 64, direction: 'bidirectional', bias: true, init: true, constW: true, runs: 3 });
    } finally {
      await rt.dispose();
    }
  }
});
