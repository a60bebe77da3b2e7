// The LayerNorm fusion pass: PyTorch's decomposition (opsets before 17) becomes one LayerNormalization that computes
// the same values; look-alike patterns that are not a LayerNorm stay as they are.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GraphExecutor } from '../src/backends/reference/executor.js';
import { WasmGraphRunner } from '../src/backends/wasm/executor.js';
import { WasmRuntime } from '../src/backends/wasm/runtime.js';
import { fuseLayerNorm } from '../src/graph/fuse_norm.js';
import type { Attribute, Graph, Model, Node } from '../src/graph/ir.js';
import { Tensor } from '../src/tensor.js';
import { randomFloat, relErr } from './helpers.js';

interface LnCase {
  dims: (number | string)[];
  /** ReduceMean axes. */
  axes: number[];
  sq?: 'pow' | 'mul';
  gamma?: number[];
  beta?: boolean;
  /** Axes as an input (opset 18) instead of an attribute. */
  axesInput?: boolean;
  /** What breaks the pattern (the pass must leave the graph alone). */
  spoil?: 'extra-consumer' | 'swapped-sub' | 'keepdims0' | 'leading-axis' | 'eps-tensor' | 'pow3';
}

function lnModel(c: LnCase): Model {
  const nodes: Node[] = [];
  const init = new Map<string, Tensor>();
  const attr = (name: string, type: Attribute['type'], value: Attribute['value']): Attribute => ({ name, type, value });
  const node = (opType: string, inputs: string[], out: string, attrs: Attribute[] = []) =>
    nodes.push({ name: out, opType, domain: '', inputs, outputs: [out], attrs: new Map(attrs.map((a) => [a.name, a])) });
  const mean = (x: string, out: string) => {
    const attrs = [attr('keepdims', 'int', c.spoil === 'keepdims0' && out === 'm' ? 0 : 1)];
    if (c.axesInput) { init.set(`${out}_axes`, new Tensor('int64', BigInt64Array.from(c.axes, BigInt), [c.axes.length])); node('ReduceMean', [x, `${out}_axes`], out, attrs); }
    else node('ReduceMean', [x], out, [...attrs, attr('axes', 'ints', c.axes)]);
  };
  mean('x', 'm');
  node('Sub', c.spoil === 'swapped-sub' ? ['m', 'x'] : ['x', 'm'], 'd');
  init.set('two', new Tensor('float32', new Float32Array([c.spoil === 'pow3' ? 3 : 2]), []));
  if (c.sq === 'mul') node('Mul', ['d', 'd'], 'sq'); else node('Pow', ['d', 'two'], 'sq');
  mean('sq', 'v');
  init.set('eps', c.spoil === 'eps-tensor' ? new Tensor('float32', new Float32Array(8).fill(1e-5), [1, 8]) : new Tensor('float32', new Float32Array([1e-5]), []));
  node('Add', ['v', 'eps'], 've');
  node('Sqrt', ['ve'], 's');
  node('Div', ['d', 's'], 'n');
  let out = 'n';
  if (c.gamma) { init.set('g', randomFloat(c.gamma, 7)); node('Mul', ['g', out], 'y'); out = 'y'; }
  if (c.gamma && c.beta) { init.set('b', randomFloat(c.gamma, 8)); node('Add', [out, 'b'], 'z'); out = 'z'; }
  const outputs = [{ name: out, type: null }];
  if (c.spoil === 'extra-consumer') { node('Neg', ['d'], 'dn'); outputs.push({ name: 'dn', type: null }); }
  const graph: Graph = {
    name: 'ln', nodes, initializers: init, valueInfo: new Map(), outputs,
    inputs: [{ name: 'x', type: { kind: 'tensor', dtype: 'float32', shape: c.dims } }],
  };
  return { graph, opsets: new Map([['', c.axesInput ? 18 : 14]]), functions: new Map() } as unknown as Model;
}

const cases: [string, LnCase, boolean][] = [
  ['BERT-style: last axis, Pow, γ and β', { dims: [2, 7, 48], axes: [-1], gamma: [48], beta: true }, true],
  ['symbolic leading dims, axes as input (opset 18)', { dims: ['batch', 'seq', 32], axes: [-1], gamma: [32], beta: true, axesInput: true }, true],
  ['unknown rank: γ gives the normalised dims', { dims: [], axes: [-1], gamma: [16], beta: true }, true],
  ['two trailing axes, Mul(d, d), γ only', { dims: [3, 5, 4, 6], axes: [2, 3], sq: 'mul', gamma: [1, 4, 6] }, true],
  ['no affine', { dims: [4, 20], axes: [-1] }, true],
  ['d read elsewhere', { dims: [2, 8], axes: [-1], gamma: [8], spoil: 'extra-consumer' }, false],
  ['Sub(m, x)', { dims: [2, 8], axes: [-1], spoil: 'swapped-sub' }, false],
  ['keepdims 0 (broadcasts along the other axis)', { dims: [8, 8], axes: [-1], spoil: 'keepdims0' }, false],
  ['leading axis', { dims: [6, 8], axes: [0], spoil: 'leading-axis' }, false],
  ['ε not a scalar', { dims: [2, 8], axes: [-1], spoil: 'eps-tensor' }, false],
  ['cube, not square', { dims: [2, 8], axes: [-1], spoil: 'pow3' }, false],
];

test('decomposed LayerNorms fuse into LayerNormalization with the same values; look-alikes stay', { timeout: 60_000 }, async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    for (const [name, c, fuses] of cases) {
      const concrete = c.dims.length ? c.dims.map((d) => (typeof d === 'number' ? d : 3)) : [2, 3, c.gamma![0]];
      const x = randomFloat(concrete, 11, -3, 3);
      const ref = lnModel(c);
      const want = new GraphExecutor(ref.graph, ref).run(new Map([['x', x]])) as Tensor[];
      const m = lnModel(c);
      if (!c.dims.length) m.graph.inputs[0].type = { kind: 'tensor', dtype: 'float32', shape: null } as never;
      const n = fuseLayerNorm(m);
      assert.equal(n, fuses ? 1 : 0, `${name}: fused ${n}`);
      if (!fuses) continue;
      assert.deepEqual(m.graph.nodes.map((q) => q.opType), ['LayerNormalization'], name);
      const env = { opsets: m.opsets, functions: m.functions };
      const ref2 = new GraphExecutor(m.graph, env).run(new Map([['x', x]])) as Tensor[];
      assert.ok(relErr(ref2[0], want[0]) <= 1e-5, `${name}: reference LayerNormalization differs by ${relErr(ref2[0], want[0])}`);
      const runner = new WasmGraphRunner(m.graph, env, rt, { fallback: false });
      try {
        const got = (await runner.run(new Map([['x', x]]))) as Tensor[];
        assert.ok(relErr(got[0], want[0]) <= 1e-5, `${name}: Wasm LayerNormalization differs by ${relErr(got[0], want[0])}`);
      } finally {
        runner.dispose();
      }
    }
  } finally {
    await rt.dispose();
  }
});
