// Conv passes: per-channel affine nodes after a Conv fold into its weights, and Conv → activation chains become
// webjit.FusedConv. The rewritten graph on the Wasm backend (no fallback) matches the original on the reference
// backend (1e-5 of max|ref|), and chains that must not fold or fuse are left alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Attribute, Dim, Graph, Model, Node } from '../src/graph/ir.js';
import { GraphExecutor } from '../src/backends/reference/executor.js';
import { WasmGraphRunner } from '../src/backends/wasm/executor.js';
import { WasmRuntime } from '../src/backends/wasm/runtime.js';
import { foldConvAffine, fuseConv, fuseConvActivation } from '../src/graph/fuse_conv.js';
import { sizeOf, Tensor, type Value } from '../src/tensor.js';
import { relErr, rng } from './helpers.js';

type A = number | number[] | string;
const attr = (name: string, value: A): Attribute =>
  ({ name, value, type: typeof value === 'string' ? 'string' : Array.isArray(value) ? 'ints' : Number.isInteger(value) ? 'int' : 'float' });

let uid = 0;
function node(op: string, inputs: string[], outputs: string[], attrs: Record<string, A> = {}): Node {
  return { name: `${op}_${uid++}`, opType: op, domain: '', inputs, outputs, attrs: new Map(Object.entries(attrs).map(([k, v]) => [k, attr(k, v)])) };
}

function model(nodes: Node[], xDims: Dim[], outputs: string[], inits: Record<string, Tensor>, opset = 17): Model {
  const g: Graph = {
    name: 'g', nodes, initializers: new Map(Object.entries(inits)), valueInfo: new Map(),
    inputs: [{ name: 'x', type: { kind: 'tensor' as const, dtype: 'float32' as const, shape: xDims } }],
    outputs: outputs.map((name) => ({ name, type: null })),
  };
  return { irVersion: 8, producer: '', opsets: new Map([['', opset]]), graph: g, functions: new Map(), metadata: new Map() };
}

const random = rng(11);
function rand(dims: number[], lo = -1, hi = 1): Tensor {
  return new Tensor('float32', Float32Array.from({ length: sizeOf(dims) }, () => lo + (hi - lo) * random()), dims);
}
const scalar = (v: number) => new Tensor('float32', new Float32Array([v]), []);

function copy(m: Model): Model {
  return { ...m, opsets: new Map(m.opsets), graph: { ...m.graph, nodes: m.graph.nodes.map((n) => ({ ...n })), initializers: new Map(m.graph.initializers), valueInfo: new Map() } };
}

type Chain = (y: string, add: (n: Node) => void, c: (v: number | Tensor) => string) => string;

interface Case {
  label: string;
  x: number[];
  w: number[];
  attrs?: Record<string, A>;
  bias?: boolean;
  chain: Chain;
  /** Expected node types after both passes. */
  expect: string[];
  activation?: string;
}

async function check(rt: WasmRuntime, k: Case): Promise<void> {
  const inits: Record<string, Tensor> = { W: rand(k.w, -0.4, 0.4) };
  if (k.bias) inits.B = rand([k.w[0]]);
  let nc = 0;
  const c = (v: number | Tensor) => { const name = `c${nc++}`; inits[name] = typeof v === 'number' ? scalar(v) : v; return name; };
  const nodes: Node[] = [node('Conv', ['x', 'W', ...(k.bias ? ['B'] : [])], ['y'], { pads: k.w.length === 4 ? [1, 1, 1, 1] : [1, 1], ...k.attrs })];
  const out = k.chain('y', (n) => nodes.push(n), c);
  const m = model(nodes, k.x, [out], inits);
  const fused = copy(m);
  fuseConv(fused);
  assert.deepEqual(fused.graph.nodes.map((n) => n.opType), k.expect, `${k.label}: nodes after the passes`);
  if (k.activation) assert.equal(fused.graph.nodes.find((n) => n.opType === 'FusedConv')?.attrs.get('activation')?.value, k.activation, k.label);
  const feeds = new Map<string, Value>([['x', rand(k.x, -2, 2)]]);
  const env = (mm: Model) => ({ opsets: mm.opsets, functions: mm.functions });
  const want = new GraphExecutor(m.graph, env(m)).run(feeds);
  const ref = new GraphExecutor(fused.graph, env(fused)).run(feeds);
  assert.ok(relErr(ref[0] as Tensor, want[0] as Tensor) <= 1e-5, `${k.label}: reference on the rewritten graph`);
  const runner = new WasmGraphRunner(fused.graph, env(fused), rt, { fallback: false });
  try {
    const got = await runner.run(feeds);
    const e = relErr(got[0] as Tensor, want[0] as Tensor);
    assert.ok(e <= 1e-5, `${k.label}: Wasm relative error ${e}`);
  } finally {
    runner.dispose();
  }
}

const bn = (C: number): Chain => (y, add, c) => {
  const s = c(rand([C], 0.5, 1.5)), b = c(rand([C])), mean = c(rand([C])), v = c(rand([C], 0.1, 2));
  add(node('BatchNormalization', [y, s, b, mean, v], ['bn'], { epsilon: 1e-3 }));
  return 'bn';
};
const unary = (op: string, attrs: Record<string, A> = {}): Chain => (y, add) => { add(node(op, [y], [`${op}_out`], attrs)); return `${op}_out`; };
const then = (...chains: Chain[]): Chain => (y, add, c) => chains.reduce((v, ch) => ch(v, add, c), y);

test('Conv passes: BatchNorm, per-channel Mul/Add fold into the weights; activations fuse; Wasm matches the reference', { timeout: 120_000 }, async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    const C = 12, x = [1, 8, 14, 18], w = [C, 8, 3, 3];
    const cases: Case[] = [
      { label: 'BN', x, w, chain: bn(C), expect: ['Conv'] },
      { label: 'bias + BN + Relu', x, w, bias: true, chain: then(bn(C), unary('Relu')), expect: ['FusedConv'], activation: 'relu' },
      {
        label: 'Mul [1,C,1,1] + Add [C,1,1] + Clip(0,6)', x, w,
        chain: (y, add, c) => {
          add(node('Mul', [c(rand([1, C, 1, 1])), y], ['m']));
          add(node('Add', ['m', c(rand([C, 1, 1]))], ['a']));
          add(node('Clip', ['a', c(0), c(6)], ['clip']));
          return 'clip';
        },
        expect: ['FusedConv'], activation: 'clip',
      },
      { label: 'Sigmoid', x, w, bias: true, chain: unary('Sigmoid'), expect: ['FusedConv'], activation: 'sigmoid' },
      { label: 'HardSigmoid', x, w, bias: true, chain: unary('HardSigmoid', { alpha: 0.25, beta: 0.4 }), expect: ['FusedConv'], activation: 'hardsigmoid' },
      { label: 'HardSwish op', x, w, bias: true, chain: unary('HardSwish'), expect: ['FusedConv'], activation: 'hardswish' },
      {
        label: 'x * HardSigmoid(x)', x, w, bias: true,
        chain: (y, add) => { add(node('HardSigmoid', [y], ['h'], { alpha: 1 / 6, beta: 0.5 })); add(node('Mul', [y, 'h'], ['hs'])); return 'hs'; },
        expect: ['FusedConv'], activation: 'hardswish',
      },
      {
        label: 'x * Clip(x + 3, 0, 6) / 6', x, w, bias: true,
        chain: (y, add, c) => {
          add(node('Add', [y, c(3)], ['p'])); add(node('Clip', ['p', c(0), c(6)], ['q']));
          add(node('Div', ['q', c(6)], ['r'])); add(node('Mul', ['r', y], ['hs']));
          return 'hs';
        },
        expect: ['FusedConv'], activation: 'hardswish',
      },
      {
        label: 'x * Clip(x + 3, 0, 6) then / 6', x, w, bias: true,
        chain: (y, add, c) => {
          add(node('Add', [y, c(3)], ['p'])); add(node('Clip', ['p', c(0), c(6)], ['q']));
          add(node('Mul', [y, 'q'], ['r'])); add(node('Div', ['r', c(6)], ['hs']));
          return 'hs';
        },
        expect: ['FusedConv'], activation: 'hardswish',
      },
      { label: 'strided 1-D, BN then Relu', x: [2, 8, 30], w: [C, 8, 3], attrs: { strides: [2] }, chain: then(bn(C), unary('Relu')), expect: ['FusedConv'] },
      { label: 'depthwise + BN + Relu', x: [1, C, 9, 11], w: [C, 1, 3, 3], attrs: { group: C }, chain: then(bn(C), unary('Relu')), expect: ['FusedConv'] },
      // Must stay: a Mul varying along W is not per channel, and LeakyRelu is not a fused activation.
      {
        label: 'Mul along W stays', x, w,
        chain: (y, add, c) => { add(node('Mul', [y, c(rand([1, 1, 1, 18]))], ['m'])); return 'm'; },
        expect: ['Conv', 'Mul'],
      },
      { label: 'LeakyRelu stays', x, w, bias: true, chain: unary('LeakyRelu'), expect: ['Conv', 'LeakyRelu'] },
    ];
    for (const k of cases) await check(rt, k);
  } finally {
    await rt.dispose();
  }
});

test('Conv passes leave a conv output that is read twice (or is a graph output) alone', () => {
  const inits = { W: rand([4, 3, 3, 3]), s: rand([4]), b: rand([4]), m: rand([4]), v: rand([4], 0.1, 1) };
  const nodes = [
    node('Conv', ['x', 'W'], ['y']),
    node('BatchNormalization', ['y', 's', 'b', 'm', 'v'], ['bn']),
    node('Relu', ['y'], ['r']),
  ];
  const m = model(nodes, [1, 3, 8, 8], ['bn', 'r'], inits);
  assert.equal(foldConvAffine(m).size, 0);
  assert.equal(fuseConvActivation(m).size, 0);
  assert.deepEqual(m.graph.nodes.map((n) => n.opType), ['Conv', 'BatchNormalization', 'Relu']);
  const m2 = model([node('Conv', ['x', 'W'], ['y']), node('Relu', ['y'], ['r'])], [1, 3, 8, 8], ['y', 'r'], { W: inits.W });
  assert.equal(fuseConvActivation(m2).size, 0);
  // Weights shared by two convs are not changed in place: each fold makes new initializers.
  const shared = model([
    node('Conv', ['x', 'W'], ['y1']), node('Mul', ['y1', 'k'], ['o1']), node('Conv', ['x', 'W'], ['o2']),
  ], [1, 3, 8, 8], ['o1', 'o2'], { W: inits.W, k: rand([1, 4, 1, 1]) });
  const before = Float32Array.from(inits.W.data as Float32Array);
  assert.equal(foldConvAffine(shared).get('Mul'), 1);
  assert.deepEqual(Array.from(shared.graph.initializers.get('W')!.data as Float32Array), Array.from(before));
  assert.equal(shared.graph.nodes[1].inputs[1], 'W');
});
