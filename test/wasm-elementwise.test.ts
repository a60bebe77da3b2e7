// Wasm elementwise, fused-elementwise, reduction and normalization kernels against the reference kernels, on fresh
// random inputs at realistic and ragged shapes (multi-task launches included).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Attribute, Graph, Model, Node } from '../src/graph/ir.js';
import { GraphExecutor } from '../src/backends/reference/executor.js';
import { WasmGraphRunner } from '../src/backends/wasm/executor.js';
import { WasmRuntime } from '../src/backends/wasm/runtime.js';
import { fuseElementwise } from '../src/graph/fuse.js';
import { sizeOf, Tensor, type DType, type Value } from '../src/tensor.js';

type A = number | number[] | string;
const attr = (name: string, value: A): Attribute => ({
  name, value,
  type: typeof value === 'string' ? 'string' : Array.isArray(value) ? 'ints' : Number.isInteger(value) && !['alpha', 'beta', 'epsilon', 'min', 'max'].includes(name) ? 'int' : 'float',
});

function node(op: string, inputs: string[], outputs: string[], attrs: Record<string, A> = {}): Node {
  return { name: `${op}_${outputs[0]}`, opType: op, domain: '', inputs, outputs, attrs: new Map(Object.entries(attrs).map(([k, v]) => [k, attr(k, v)])) };
}

function model(nodes: Node[], inputs: string[], outputs: string[], inits: Record<string, Tensor> = {}, opset = 17): Model {
  const g: Graph = {
    name: 'g', nodes, initializers: new Map(Object.entries(inits)), valueInfo: new Map(),
    inputs: inputs.map((name) => ({ name, type: { kind: 'tensor' as const, dtype: 'float32' as const, shape: null } })), outputs: outputs.map((name) => ({ name, type: null })),
  };
  return { irVersion: 8, producer: '', opsets: new Map([['', opset]]), graph: g, functions: new Map(), metadata: new Map() };
}

function rand(dims: number[], dtype: DType = 'float32', lo = -3, hi = 3): Tensor {
  const n = sizeOf(dims);
  if (dtype === 'float32') return new Tensor('float32', Float32Array.from({ length: n }, () => lo + (hi - lo) * Math.random()), dims);
  if (dtype === 'int32') return new Tensor('int32', Int32Array.from({ length: n }, () => Math.floor(lo + (hi - lo) * Math.random())), dims);
  if (dtype === 'int64') return new Tensor('int64', BigInt64Array.from({ length: n }, () => BigInt(Math.floor(lo + (hi - lo) * Math.random()))), dims);
  if (dtype === 'uint8') return new Tensor('uint8', Uint8Array.from({ length: n }, () => Math.floor(256 * Math.random())), dims);
  return new Tensor('bool', Uint8Array.from({ length: n }, () => (Math.random() < 0.5 ? 1 : 0)), dims);
}

function compare(got: Value, want: Value, what: string, minScale = 1e-30): void {
  assert.ok(got instanceof Tensor && want instanceof Tensor, what);
  assert.equal(got.type, want.type, `${what}: dtype`);
  assert.deepEqual(got.dims, want.dims, `${what}: dims`);
  const g = Array.from(got.data as ArrayLike<number | bigint>, Number), w = Array.from(want.data as ArrayLike<number | bigint>, Number);
  let scale = minScale;
  for (const x of w) if (Number.isFinite(x)) scale = Math.max(scale, Math.abs(x));
  for (let i = 0; i < w.length; i++) {
    if (Number.isNaN(w[i]) || !Number.isFinite(w[i])) { assert.ok(Object.is(g[i], w[i]) || (Number.isNaN(g[i]) && Number.isNaN(w[i])), `${what}[${i}]: ${g[i]} vs ${w[i]}`); continue; }
    assert.ok(Math.abs(g[i] - w[i]) <= 1e-5 * scale, `${what}[${i}]: ${g[i]} vs ${w[i]} (scale ${scale})`);
  }
}

/** Runs `m` on the Wasm backend (no fallback) and on the reference executor (optionally on `refModel`), and compares. */
/**
 * Runs `m` on the Wasm backend (no fallback) and on the reference executor (optionally on `refModel`), and compares.
 * With `sumScale`, errors are measured against the same graph run on |x| (the scale of a sum's rounding error:
 * a sum with cancellation can be far smaller than the terms whose rounding it carries).
 */
async function check(rt: WasmRuntime, m: Model, feeds: Record<string, Tensor>, what: string, refModel: Model = m, sumScale = false): Promise<void> {
  const env = { opsets: m.opsets, functions: m.functions };
  const f = new Map<string, Value>(Object.entries(feeds));
  const ref = new GraphExecutor(refModel.graph, { opsets: refModel.opsets, functions: refModel.functions });
  const want = ref.run(f);
  let minScale = 1e-30;
  if (sumScale) {
    const abs = new Map<string, Value>([...f].map(([k, v]) => [k, v instanceof Tensor && v.type === 'float32' ? new Tensor('float32', (v.data as Float32Array).map(Math.abs), v.dims) : v]));
    for (const x of (ref.run(abs)[0] as Tensor).data as Float32Array) minScale = Math.max(minScale, Math.abs(x));
  }
  const runner = new WasmGraphRunner(m.graph, env, rt, { fallback: false });
  try {
    const got = await runner.run(f);
    want.forEach((w, k) => compare(got[k], w, `${what} out${k}`, minScale));
    // A second run reuses the plans and kernels.
    const again = await runner.run(f);
    compare(again[0], want[0], `${what} (second run)`, minScale);
  } finally {
    runner.dispose();
  }
}

const SHAPES: [number[], number[]][] = [
  [[2, 3, 37, 53], [2, 3, 37, 53]], // equal, ragged
  [[2, 3, 37, 53], []], // scalar
  [[2, 3, 37, 53], [53]], // row vector
  [[2, 3, 37, 53], [2, 3, 37, 1]], // column vector
  [[3, 1, 53], [7, 1]], // outer product-like, general strides
  [[1, 3, 5, 5], [3, 1, 1]], // per-channel
  [[64, 1031], [1031]], // multi-task rows
  [[3, 50003], [3, 1]], // column-split tasks
];

test('binary f32 ops with broadcasting match the reference', async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    for (const op of ['Add', 'Sub', 'Mul', 'Div', 'Max', 'Min', 'Pow']) {
      for (const [a, b] of SHAPES) {
        const xa = op === 'Pow' ? rand(a, 'float32', 0.1, 3) : rand(a);
        const xb = op === 'Div' ? rand(b, 'float32', 0.5, 3) : rand(b);
        await check(rt, model([node(op, ['a', 'b'], ['y'])], ['a', 'b'], ['y']), { a: xa, b: xb }, `${op} [${a}] [${b}]`);
        await check(rt, model([node(op, ['b', 'a'], ['y'])], ['a', 'b'], ['y']), { a: op === 'Pow' ? rand(a) : xa, b: op === 'Pow' ? rand(b, 'float32', 0.1, 3) : xb }, `${op} [${b}] [${a}]`);
      }
    }
    // Pow with constant exponents (fast paths and the general one) and negative bases.
    for (const e of [2, 3, 0.5, -1, -0.5, 4, 1.7, -2]) {
      const base = e === 0.5 || e === -0.5 || e === 1.7 ? rand([5, 333], 'float32', 0.01, 4) : rand([5, 333]);
      await check(rt, model([node('Pow', ['a', 'e'], ['y'])], ['a'], ['y'], { e: new Tensor('float32', new Float32Array([e]), []) }),
        { a: base }, `Pow x^${e}`);
    }
  } finally { await rt.dispose(); }
});

test('unary f32 ops and activations match the reference', async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    const cases: [string, Record<string, A>, number, number][] = [
      ['Neg', {}, -5, 5], ['Abs', {}, -5, 5], ['Sqrt', {}, 0, 100], ['Reciprocal', {}, 0.1, 9], ['Exp', {}, -80, 80],
      ['Log', {}, 1e-6, 1e6], ['Tanh', {}, -12, 12], ['Erf', {}, -5, 5], ['Sigmoid', {}, -30, 30], ['Relu', {}, -5, 5],
      ['LeakyRelu', { alpha: 0.1 }, -5, 5], ['Elu', { alpha: 0.7 }, -5, 5], ['HardSigmoid', { alpha: 0.3, beta: 0.4 }, -5, 5],
      ['HardSwish', {}, -6, 6], ['Softplus', {}, -30, 30], ['Gelu', {}, -8, 8], ['Gelu', { approximate: 'tanh' }, -8, 8],
      ['Clip', { min: -1.5, max: 2 }, -5, 5], ['Floor', {}, -5, 5], ['Ceil', {}, -5, 5],
    ];
    for (const [op, attrs, lo, hi] of cases) {
      for (const dims of [[7], [2, 3, 37, 53], [64, 1031]]) {
        const opset = op === 'Clip' ? 6 : op === 'Gelu' ? 20 : 17;
        await check(rt, model([node(op, ['x'], ['y'], attrs)], ['x'], ['y'], {}, opset), { x: rand(dims, 'float32', lo, hi) }, `${op} [${dims}]`);
      }
    }
    // Clip with bounds from (non-constant) inputs and from constants; one bound only.
    const x = rand([9, 123], 'float32', -5, 5);
    const s = (v: number) => new Tensor('float32', new Float32Array([v]), []);
    await check(rt, model([node('Clip', ['x', 'lo', 'hi'], ['y'])], ['x', 'lo', 'hi'], ['y']), { x, lo: s(-1), hi: s(0.5) }, 'Clip inputs');
    await check(rt, model([node('Clip', ['x', '', 'hi'], ['y'])], ['x'], ['y'], { hi: s(0.25) }), { x }, 'Clip max only');
  } finally { await rt.dispose(); }
});

test('comparisons, Where, Not, Cast and integer arithmetic match the reference', async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    for (const op of ['Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual']) {
      for (const dt of ['float32', 'int32', 'int64'] as DType[]) {
        await check(rt, model([node(op, ['a', 'b'], ['y'])], ['a', 'b'], ['y']), { a: rand([5, 77], dt, -3, 3), b: rand([77], dt, -3, 3) }, `${op} ${dt}`);
      }
    }
    await check(rt, model([node('Equal', ['a', 'b'], ['y'])], ['a', 'b'], ['y']), { a: rand([5, 77], 'bool'), b: rand([5, 77], 'bool') }, 'Equal bool');
    await check(rt, model([node('Not', ['a'], ['y'])], ['a'], ['y']), { a: rand([3, 101], 'bool') }, 'Not');
    for (const dt of ['float32', 'int32', 'int64', 'bool'] as DType[]) {
      await check(rt, model([node('Where', ['c', 'a', 'b'], ['y'])], ['c', 'a', 'b'], ['y']),
        { c: rand([4, 1, 67], 'bool'), a: rand([4, 9, 67], dt), b: rand([67], dt) }, `Where ${dt}`);
    }
    const codes: Record<string, number> = { float32: 1, uint8: 2, int32: 6, int64: 7, bool: 9 };
    for (const from of Object.keys(codes) as DType[]) {
      for (const to of Object.keys(codes)) {
        const x = from === 'float32' ? new Tensor('float32', Float32Array.from({ length: 3 * 211 }, (_, i) => (i % 7 === 0 ? [NaN, Infinity, -Infinity, 3e9, -3e9, 255.9, -0.5][i % 49 / 7] : (Math.random() - 0.5) * 600)), [3, 211]) : rand([3, 211], from, -300, 300);
        await check(rt, model([node('Cast', ['x'], ['y'], { to: codes[to] })], ['x'], ['y']), { x }, `Cast ${from} → ${to}`);
      }
    }
    const i64 = (v: bigint[]) => new Tensor('int64', BigInt64Array.from(v), [v.length]);
    await check(rt, model([node('Div', ['a', 'b'], ['y'])], ['a', 'b'], ['y']),
      { a: i64([7n, -7n, 7n, -(2n ** 63n), 5n, 0n, 9n]), b: i64([2n, 2n, 0n, -1n, -1n, 3n, -4n]) }, 'Div int64 edge cases');
    for (const op of ['Add', 'Sub', 'Mul', 'Div']) {
      for (const dt of (op === 'Div' ? ['int64'] : ['int32', 'int64']) as DType[]) {
        await check(rt, model([node(op, ['a', 'b'], ['y'])], ['a', 'b'], ['y']), { a: rand([6, 45], dt, -1000, 1000), b: rand([45], dt, -1000, 1000) }, `${op} ${dt}`);
      }
    }
  } finally { await rt.dispose(); }
});

test('fuseElementwise groups chains into one FusedElementwise node that matches the unfused graph', async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    const c = (v: number) => new Tensor('float32', new Float32Array([v]), []);
    const build = () => model([
      // HardSwish as PP-OCR writes it: x * clip(x + 3, 0, 6) / 6, then a GELU (erf form) of the result plus a bias.
      node('Add', ['x', 'three'], ['t1']), node('Clip', ['t1', 'zero', 'six'], ['t2']), node('Mul', ['x', 't2'], ['t3']), node('Div', ['t3', 'six'], ['h']),
      node('Add', ['h', 'bias'], ['u']), node('Div', ['u', 'sqrt2'], ['v']), node('Erf', ['v'], ['w']), node('Add', ['w', 'one'], ['w1']),
      node('Mul', ['u', 'w1'], ['w2']), node('Mul', ['w2', 'half'], ['y']),
      // A branch whose intermediate is also a graph output stays unfused at that point.
      node('Sigmoid', ['x'], ['s']), node('Mul', ['s', 'x'], ['z']), node('Tanh', ['z'], ['z2']),
    ], ['x', 'bias'], ['y', 'z', 'z2'], { three: c(3), zero: c(0), six: c(6), sqrt2: c(Math.SQRT2), one: c(1), half: c(0.5) });
    const m = build();
    const stats = fuseElementwise(m);
    assert.equal(m.graph.nodes.filter((n) => n.opType === 'FusedElementwise').length, stats.groups);
    // u feeds Div and Mul: the HardSwish+bias group ends at u; the GELU tail is another group.
    assert.ok(stats.groups >= 3, `groups ${stats.groups}`);
    assert.ok(m.graph.nodes.length <= 5, m.graph.nodes.map((n) => n.opType).join(','));
    for (const dims of [[1, 16, 48, 80], [2, 3, 7, 13]]) {
      const feeds = { x: rand(dims, 'float32', -6, 6), bias: rand([dims[1], 1, 1]) };
      await check(rt, m, feeds, `fused [${dims}]`, build());
    }
    // The reference backend runs the fused node through its sub-graph.
    const feeds = new Map<string, Value>([['x', rand([2, 3, 4, 5])], ['bias', rand([3, 1, 1])]]);
    const a = new GraphExecutor(m.graph, { opsets: m.opsets, functions: m.functions }).run(feeds);
    const ref = build();
    const b = new GraphExecutor(ref.graph, { opsets: ref.opsets, functions: ref.functions }).run(feeds);
    a.forEach((t, k) => compare(t, b[k], `reference fused out${k}`));
  } finally { await rt.dispose(); }
});

test('reductions over any axes match the reference', async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    const axesSets = [[-1], [0], [1], [2], [0, 2], [1, 3], [0, 1, 2, 3], [2, 3], [1, 2]];
    for (const op of ['ReduceSum', 'ReduceMean', 'ReduceMax', 'ReduceMin']) {
      for (const dims of [[4, 6, 5, 7], [2, 33, 9, 70]]) {
        for (const axes of axesSets) {
          for (const keepdims of [0, 1]) {
            const ax = new Tensor('int64', BigInt64Array.from(axes, BigInt), [axes.length]);
            const m = model([node(op, ['x', 'axes'], ['y'], { keepdims })], ['x'], ['y'], { axes: ax }, 18);
            await check(rt, m, { x: rand(dims) }, `${op} [${dims}] axes ${axes} k${keepdims}`, m, op === 'ReduceSum' || op === 'ReduceMean');
          }
        }
      }
      const sums = op === 'ReduceSum' || op === 'ReduceMean';
      const all = model([node(op, ['x'], ['y'], { keepdims: 0 })], ['x'], ['y'], {}, 18);
      await check(rt, all, { x: rand([3, 1000]) }, `${op} all`, all, sums);
      const rows = model([node(op, ['x'], ['y'], { axes: [1] })], ['x'], ['y'], {}, 11);
      await check(rt, rows, { x: rand([300, 767]) }, `${op} opset 11 rows`, rows, sums);
    }
  } finally { await rt.dispose(); }
});

test('Softmax, LogSoftmax and normalizations match the reference', async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    for (const op of ['Softmax', 'LogSoftmax']) {
      for (const dims of [[4, 37, 129], [2, 12, 77, 77], [3, 1000]]) {
        await check(rt, model([node(op, ['x'], ['y'])], ['x'], ['y'], {}, 13), { x: rand(dims, 'float32', -20, 20) }, `${op} [${dims}]`);
      }
      await check(rt, model([node(op, ['x'], ['y'], { axis: 1 })], ['x'], ['y'], {}, 11), { x: rand([3, 4, 5]) }, `${op} opset 11`);
    }
    for (const [dims, axis] of [[[2, 13, 768], -1], [[3, 7, 33], 1], [[5, 130], -1]] as [number[], number][]) {
      const inner = sizeOf(dims.slice(axis < 0 ? dims.length + axis : axis));
      const pd = dims.slice(axis < 0 ? dims.length + axis : axis);
      void inner;
      const inits = { s: rand(pd), b: rand(pd) };
      await check(rt, model([node('LayerNormalization', ['x', 's', 'b'], ['y', 'mean', 'inv'], { axis })], ['x'], ['y', 'mean', 'inv'], inits, 17),
        { x: rand(dims, 'float32', -4, 6) }, `LayerNorm [${dims}] axis ${axis}`);
      await check(rt, model([node('LayerNormalization', ['x', 's'], ['y'], { axis, epsilon: 1e-3 })], ['x', 's'], ['y'], {}, 17),
        { x: rand(dims), s: inits.s }, `LayerNorm no bias [${dims}]`);
      await check(rt, model([node('RMSNormalization', ['x', 's'], ['y'], { axis })], ['x'], ['y'], { s: inits.s }, 23),
        { x: rand(dims) }, `RMSNorm [${dims}]`);
    }
    for (const dims of [[2, 5, 7, 9], [1, 32, 1000]]) {
      const C = dims[1];
      await check(rt, model([node('InstanceNormalization', ['x', 's', 'b'], ['y'])], ['x'], ['y'], { s: rand([C]), b: rand([C]) }),
        { x: rand(dims, 'float32', -2, 5) }, `InstanceNorm [${dims}]`);
      await check(rt, model([node('BatchNormalization', ['x', 's', 'b', 'm', 'v'], ['y'])], ['x'], ['y'],
        { s: rand([C]), b: rand([C]), m: rand([C]), v: rand([C], 'float32', 0.1, 3) }),
      { x: rand(dims) }, `BatchNorm [${dims}]`);
    }
  } finally { await rt.dispose(); }
});
