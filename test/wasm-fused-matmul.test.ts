// MatMul epilogue fusion: the fuseMatMul pass finds bias/activation/residual chains, and webjit.FusedMatMul on the Wasm
// backend matches the unfused graph on the reference backend (1e-5 of max|ref|), on one-node graphs and on real models.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Attribute, Dim, Graph, Model, Node } from '../src/graph/ir.js';
import { GraphExecutor } from '../src/backends/reference/executor.js';
import { WasmGraphRunner } from '../src/backends/wasm/executor.js';
import { WasmRuntime } from '../src/backends/wasm/runtime.js';
import { fuseMatMul } from '../src/graph/fuse_matmul.js';
import { fuseAttention } from '../src/graph/fuse_attention.js';
import { fuseElementwise } from '../src/graph/fuse.js';
import { optimizeGraph } from '../src/graph/passes.js';
import { loadModel } from '../src/onnx/load.js';
import { recInput } from '../src/apps/ocr.js';
import { sizeOf, Tensor, type Value } from '../src/tensor.js';
import { fixture, OCR_REC, randomInt64, relErr } from './helpers.js';
import * as fs from 'node:fs';
import { PNG } from 'pngjs';

type A = number | string;
const attr = (name: string, value: A): Attribute => ({ name, value, type: typeof value === 'string' ? 'string' : 'int' });

let uid = 0;
function node(op: string, inputs: string[], outputs: string[], attrs: Record<string, A> = {}): Node {
  return { name: `${op}_${uid++}`, opType: op, domain: '', inputs, outputs, attrs: new Map(Object.entries(attrs).map(([k, v]) => [k, attr(k, v)])) };
}

function model(nodes: Node[], inputs: Record<string, Dim[]>, outputs: string[], inits: Record<string, Tensor>, opset = 17): Model {
  const g: Graph = {
    name: 'g', nodes, initializers: new Map(Object.entries(inits)), valueInfo: new Map(),
    inputs: Object.entries(inputs).map(([name, shape]) => ({ name, type: { kind: 'tensor' as const, dtype: 'float32' as const, shape } })),
    outputs: outputs.map((name) => ({ name, type: null })),
  };
  return { irVersion: 8, producer: '', opsets: new Map([['', opset]]), graph: g, functions: new Map(), metadata: new Map() };
}

function rand(dims: number[], lo = -1, hi = 1): Tensor {
  return new Tensor('float32', Float32Array.from({ length: sizeOf(dims) }, () => lo + (hi - lo) * Math.random()), dims);
}
const scalar = (v: number) => new Tensor('float32', new Float32Array([v]), []);

/** Deep enough copy of a model that a pass on it leaves the original's node list alone. */
function copy(m: Model): Model {
  return { ...m, opsets: new Map(m.opsets), graph: { ...m.graph, nodes: [...m.graph.nodes], valueInfo: new Map() } };
}

function close(got: Value, want: Value, what: string, tol = 1e-5): number {
  assert.ok(got instanceof Tensor && want instanceof Tensor, what);
  const e = relErr(got, want);
  assert.ok(e <= tol, `${what}: relative error ${e}`);
  return e;
}

/**
 * Builds MatMul(x, W) → Add(bias) → activation chain → [residual], runs the pass, and compares the fused graph on the
 * Wasm backend (no fallback) with the unfused one on the reference backend.
 */
async function check(rt: WasmRuntime, label: string, xDims: number[], N: number,
  act: Act, opts: { residual?: boolean; opset?: number; expect: string; biasDims?: number[] }): Promise<void> {
  const K = xDims[xDims.length - 1];
  const nodes: Node[] = [];
  const inits: Record<string, Tensor> = { W: rand([K, N], -0.3, 0.3), bias: rand(opts.biasDims ?? [N]) };
  let nc = 0;
  const c = (v: number) => { const name = `c${nc++}`; inits[name] = scalar(v); return name; };
  nodes.push(node('MatMul', ['x', 'W'], ['mm']));
  nodes.push(node('Add', ['mm', 'bias'], ['y']));
  let out = act('y', (n) => nodes.push(n), c);
  const outDims = [...xDims.slice(0, -1), N];
  const inputs: Record<string, Dim[]> = { x: xDims };
  if (opts.residual) { inputs.r = outDims; nodes.push(node('Add', ['r', out], ['z'])); out = 'z'; }
  const m = model(nodes, inputs, [out], inits, opts.opset ?? 17);
  const fused = copy(m);
  const st = fuseMatMul(fused);
  assert.equal(st.fused, 1, `${label}: fused`);
  assert.equal(fused.graph.nodes.length, 1, `${label}: one node left`);
  const fn = fused.graph.nodes[0];
  assert.equal(fn.opType, 'FusedMatMul');
  assert.equal(fn.attrs.get('activation')?.value, opts.expect, label);
  assert.equal(fn.inputs.length, opts.residual ? 4 : 3);
  const feeds = new Map<string, Value>([['x', rand(xDims, -2, 2)]]);
  if (opts.residual) feeds.set('r', rand(outDims, -2, 2));
  const env = (mm: Model) => ({ opsets: mm.opsets, functions: mm.functions });
  const want = new GraphExecutor(m.graph, env(m)).run(feeds);
  // The fused node's reference kernel replays the original nodes.
  const ref = new GraphExecutor(fused.graph, env(fused)).run(feeds);
  assert.deepEqual(Array.from((ref[0] as Tensor).data as Float32Array), Array.from((want[0] as Tensor).data as Float32Array), `${label}: reference replay`);
  const runner = new WasmGraphRunner(fused.graph, env(fused), rt, { fallback: false });
  try {
    const got = await runner.run(feeds);
    close(got[0], want[0], `${label} x[${xDims}] N=${N}`);
    assert.equal(runner.stats.fallbackNodes, 0);
  } finally {
    runner.dispose();
  }
}

type Act = (x: string, add: (n: Node) => void, c: (v: number) => string) => string;

const unaryAct = (op: string, attrs: Record<string, A> = {}) => (x: string, add: (n: Node) => void) => { add(node(op, [x], ['act'], attrs)); return 'act'; };

/** PyTorch's exact GELU: x * 0.5 * (1 + erf(x / sqrt 2)) as Div, Erf, Add, Mul, Mul. */
const erfGelu = (x: string, add: (n: Node) => void, c: (v: number) => string) => {
  add(node('Div', [x, c(Math.fround(Math.SQRT2))], ['g0']));
  add(node('Erf', ['g0'], ['g1']));
  add(node('Add', ['g1', c(1)], ['g2']));
  add(node('Mul', [x, 'g2'], ['g3']));
  add(node('Mul', ['g3', c(0.5)], ['g4']));
  return 'g4';
};

/** GPT-2's tanh GELU: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))), x^3 as Pow or Mul(x, Mul(x, x)). */
const tanhGelu = (pow: boolean) => (x: string, add: (n: Node) => void, c: (v: number) => string) => {
  if (pow) add(node('Pow', [x, c(3)], ['t1']));
  else { add(node('Mul', [x, x], ['t0'])); add(node('Mul', [x, 't0'], ['t1'])); }
  add(node('Mul', [c(0.044715), 't1'], ['t2']));
  add(node('Add', [x, 't2'], ['t3']));
  add(node('Mul', [c(Math.sqrt(2 / Math.PI)), 't3'], ['t4']));
  add(node('Tanh', ['t4'], ['t5']));
  add(node('Add', [c(1), 't5'], ['t6']));
  if (pow) { add(node('Mul', [x, c(0.5)], ['h'])); add(node('Mul', ['h', 't6'], ['t8'])); }
  else { add(node('Mul', [x, 't6'], ['t7'])); add(node('Mul', [c(0.5), 't7'], ['t8'])); }
  return 't8';
};

/** Paddle's swish: x * sigmoid(x * 1). */
const swish = (x: string, add: (n: Node) => void, c: (v: number) => string) => {
  add(node('Mul', [x, c(1)], ['s0']));
  add(node('Sigmoid', ['s0'], ['s1']));
  add(node('Mul', [x, 's1'], ['s2']));
  return 's2';
};

test('FusedMatMul: every epilogue at realistic and ragged shapes', { timeout: 120_000 }, async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    const none: Act = (x) => x;
    const cases: [string, Act, string, number?][] = [
      ['bias', none, 'none'], ['relu', unaryAct('Relu'), 'relu'], ['sigmoid', unaryAct('Sigmoid'), 'sigmoid'],
      ['tanh', unaryAct('Tanh'), 'tanh'], ['erf gelu', erfGelu, 'gelu'], ['tanh gelu (Mul)', tanhGelu(false), 'gelu_tanh'],
      ['tanh gelu (Pow)', tanhGelu(true), 'gelu_tanh'], ['swish', swish, 'silu'],
      ['Gelu op', unaryAct('Gelu'), 'gelu', 20], ['Gelu tanh op', unaryAct('Gelu', { approximate: 'tanh' }), 'gelu_tanh', 20],
    ];
    const shapes: [number[], number][] = [[[1, 128, 128], 512], [[1, 37, 120], 240], [[5, 13], 19], [[1, 1, 128], 384], [[2, 3, 7, 40], 6]];
    for (const [label, act, expect, opset] of cases) {
      for (const [xd, N] of shapes) {
        for (const residual of [false, true]) await check(rt, label, xd, N, act, { residual, expect, opset });
      }
    }
    // A 1-D A, a [1, 1, N] bias, and a scalar-broadcast bias.
    await check(rt, '1-D A', [64], 33, erfGelu, { expect: 'gelu' });
    await check(rt, '[1,1,N] bias', [1, 9, 24], 20, none, { expect: 'none', biasDims: [1, 1, 20], residual: true });
    await check(rt, 'scalar bias', [3, 24], 17, unaryAct('Relu'), { expect: 'relu', biasDims: [1] });
  } finally {
    await rt.dispose();
  }
});

test('fuseMatMul leaves chains alone whose intermediates are read elsewhere or are graph outputs', () => {
  const W = rand([8, 4]), bias = rand([4]);
  const base = () => [node('MatMul', ['x', 'W'], ['mm']), node('Add', ['mm', 'bias'], ['y'])];
  // The product is also a graph output: nothing fuses.
  let m = model(base(), { x: [2, 8] }, ['y', 'mm'], { W, bias });
  assert.equal(fuseMatMul(m).fused, 0);
  // The biased value is read by a second node: the chain stops at the bias (the Relu stays outside).
  m = model([...base(), node('Relu', ['y'], ['r']), node('Neg', ['y'], ['n'])], { x: [2, 8] }, ['r', 'n'], { W, bias });
  assert.equal(fuseMatMul(m).fused, 1);
  assert.deepEqual(m.graph.nodes.map((n) => n.opType), ['FusedMatMul', 'Relu', 'Neg']);
  assert.equal(m.graph.nodes[0].attrs.get('activation')?.value, 'none');
  // A non-constant B or a bias along another axis does not fuse.
  m = model(base(), { x: [2, 8], W: [8, 4] }, ['y'], { bias });
  assert.equal(fuseMatMul(m).fused, 0);
  m = model(base(), { x: [2, 8] }, ['y'], { W, bias: rand([2, 1]) });
  assert.equal(fuseMatMul(m).fused, 0);
  // A residual that broadcasts (not the output's shape) stays a separate Add.
  m = model([...base(), node('Add', ['y', 'r'], ['z'])], { x: [2, 8], r: [3, 2, 4] }, ['z'], { W, bias });
  fuseMatMul(m);
  assert.deepEqual(m.graph.nodes.map((n) => n.opType), ['FusedMatMul', 'Add']);
  // GELU with the wrong constant: only the bias fuses.
  const c = { W, bias, k: scalar(1.5), one: scalar(1), half: scalar(0.5) };
  m = model([...base(), node('Div', ['y', 'k'], ['g0']), node('Erf', ['g0'], ['g1']), node('Add', ['g1', 'one'], ['g2']),
    node('Mul', ['y', 'g2'], ['g3']), node('Mul', ['g3', 'half'], ['g4'])], { x: [2, 8] }, ['g4'], c);
  assert.equal(fuseMatMul(m).fused, 1);
  assert.equal(m.graph.nodes[0].attrs.get('activation')?.value, 'none');
  assert.equal(m.graph.nodes.length, 6);
});

/** The Wasm session's passes with fuseMatMul where the lead wires it (after fuseAttention, before fuseElementwise). */
async function prepared(path: string, withPass: boolean): Promise<{ m: Model; stats?: ReturnType<typeof fuseMatMul> }> {
  const m = await loadModel(path);
  optimizeGraph(m);
  fuseAttention(m);
  const stats = withPass ? fuseMatMul(m) : undefined;
  fuseElementwise(m);
  return { m, stats };
}

async function compareModel(rt: WasmRuntime, path: string, feedsList: Record<string, Tensor>[], label: string, expectFused: number): Promise<void> {
  const ref = await loadModel(path);
  optimizeGraph(ref);
  const env = (mm: Model) => ({ opsets: mm.opsets, functions: mm.functions });
  const { m, stats } = await prepared(path, true);
  assert.equal(stats!.fused, expectFused, `${label}: chains fused (${JSON.stringify([...stats!.activations])})`);
  const runner = new WasmGraphRunner(m.graph, env(m), rt, { fallback: true });
  try {
    let worst = 0;
    for (const f of feedsList) {
      const feeds = new Map<string, Value>(Object.entries(f));
      const want = new GraphExecutor(ref.graph, env(ref)).run(feeds);
      const got = await runner.run(feeds);
      ref.graph.outputs.forEach((o, i) => { worst = Math.max(worst, close(got[i], want[i], `${label} ${o.name}`)); });
    }
    console.log(`${label}: ${stats!.fused} chains fused ${JSON.stringify([...stats!.activations])}, ${stats!.residuals} with residual; max relative error ${worst.toExponential(2)}`);
    assert.ok(!runner.stats.fallbackOps.has('FusedMatMul'), `${label}: FusedMatMul fell back`);
  } finally {
    runner.dispose();
  }
}

test('models on Wasm with fused MatMul epilogues match the reference backend', { timeout: 300_000 }, async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    const mask = new BigInt64Array(128).fill(1n);
    mask.fill(0n, 120);
    await compareModel(rt, fixture('encoder-small.onnx'), [{
      input_ids: randomInt64([1, 128], 4, 1000),
      attention_mask: new Tensor('int64', mask, [1, 128]),
      token_type_ids: new Tensor('int64', new BigInt64Array(128), [1, 128]),
    }], 'encoder-small', 8);

    const dec = fixture('decoder-small.onnx');
    const empty = () => new Tensor('float32', new Float32Array(0), [1, 4, 0, 32]);
    const pre: Record<string, Tensor> = { input_ids: randomInt64([1, 24], 21, 1000) };
    for (let l = 0; l < 2; l++) { pre[`past_key_values.${l}.key`] = empty(); pre[`past_key_values.${l}.value`] = empty(); }
    const refM = await loadModel(dec);
    optimizeGraph(refM);
    const outs = new GraphExecutor(refM.graph, { opsets: refM.opsets, functions: refM.functions }).run(new Map(Object.entries(pre)));
    const names = refM.graph.outputs.map((o) => o.name);
    const step: Record<string, Tensor> = { input_ids: randomInt64([1, 1], 22, 1000) };
    for (let l = 0; l < 2; l++) {
      step[`past_key_values.${l}.key`] = outs[names.indexOf(`present.${l}.key`)] as Tensor;
      step[`past_key_values.${l}.value`] = outs[names.indexOf(`present.${l}.value`)] as Tensor;
    }
    await compareModel(rt, dec, [pre, step], 'decoder-small', 8);

    const png = PNG.sync.read(fs.readFileSync(fixture('ocr/hello.png')));
    await compareModel(rt, OCR_REC, [{ x: recInput({ width: png.width, height: png.height, data: png.data }) }], 'PP-OCRv4 rec', 9);
  } finally {
    await rt.dispose();
  }
});
