// Wasm data-movement kernels (any dtype by byte width) against the reference kernels at realistic and ragged shapes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WasmGraphRunner } from '../src/backends/wasm/executor.js';
import { WasmRuntime } from '../src/backends/wasm/runtime.js';
import type { Graph, Node } from '../src/graph/ir.js';
import { Tensor, type DType } from '../src/tensor.js';
import { randomFloat, relErr, rng } from './helpers.js';
import { runOneNode, type AttrVal, type In } from './wasm-one-node.js';

function same(got: Tensor, want: Tensor): boolean {
  if (got.type !== want.type || got.dims.join() !== want.dims.join()) return false;
  const a = got.data as ArrayLike<unknown>, b = want.data as ArrayLike<unknown>;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) return false;
  return true;
}

/** Runs one node on the Wasm backend (no fallback) and on the reference kernels; asserts exact equality. */
async function check(rt: WasmRuntime, what: string, opType: string, ins: (In | undefined)[], attrs: Record<string, AttrVal> = {}, nOut = 1, opset = 17): Promise<void> {
  const { got, want } = await runOneNode(rt, opType, ins, attrs, nOut, opset);
  for (let k = 0; k < nOut; k++) {
    const g = got[k], w = want[k];
    assert.ok(same(g, w), `${what}: output ${k} differs (${g.type}[${g.dims}] vs ${w.type}[${w.dims}], rel ${g.type === 'float32' ? relErr(g, w) : '-'})`);
  }
}

let seed = 100;
function rand(dtype: DType, dims: number[]): Tensor {
  const n = dims.reduce((a, b) => a * b, 1);
  const r = rng(seed++);
  switch (dtype) {
    case 'float32': return randomFloat(dims, seed++);
    case 'int64': return new Tensor('int64', BigInt64Array.from({ length: n }, () => BigInt(Math.floor(r() * 2e9) - 1e9) * 7n), dims);
    case 'int32': return new Tensor('int32', Int32Array.from({ length: n }, () => Math.floor(r() * 2e9) - 1e9), dims);
    case 'uint8': return new Tensor('uint8', Uint8Array.from({ length: n }, () => Math.floor(r() * 256)), dims);
    case 'bool': return new Tensor('bool', Uint8Array.from({ length: n }, () => (r() < 0.5 ? 1 : 0)), dims);
    case 'float16': return new Tensor('float16', Uint16Array.from({ length: n }, () => Math.floor(r() * 0x7bff)), dims);
    default: throw new Error(dtype);
  }
}
const i64 = (v: number[]) => ({ t: new Tensor('int64', BigInt64Array.from(v, BigInt), [v.length]), constant: true });
const DT: DType[] = ['float32', 'int64', 'uint8', 'float16'];

test('Transpose: general perms, 2-D and last-two-dims, every width', { timeout: 60_000 }, async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    const cases: [number[], number[] | undefined][] = [
      [[1, 120, 40], [0, 2, 1]], [[1, 40, 3, 8, 15], [2, 0, 3, 1, 4]], [[1, 8, 40, 15], [0, 1, 3, 2]], [[1, 8, 40, 15], [0, 2, 1, 3]],
      [[257, 131], [1, 0]], [[3, 5, 7, 9], undefined], [[2, 3, 4, 5, 6, 7], [5, 3, 1, 0, 2, 4]], [[1, 1, 9], [2, 1, 0]],
    ];
    for (const dt of DT) for (const [dims, perm] of cases) {
      await check(rt, `Transpose ${dt} [${dims}] perm ${perm}`, 'Transpose', [{ t: rand(dt, dims) }], perm ? { perm } : {});
    }
  } finally { await rt.dispose(); }
});

test('Concat and Split along every axis', { timeout: 60_000 }, async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    for (const dt of DT) {
      await check(rt, `Concat ${dt} axis 1`, 'Concat', [{ t: rand(dt, [2, 3, 17]) }, { t: rand(dt, [2, 5, 17]) }, { t: rand(dt, [2, 1, 17]) }], { axis: 1 });
      await check(rt, `Concat ${dt} axis -1`, 'Concat', [{ t: rand(dt, [4, 33]) }, { t: rand(dt, [4, 0]) }, { t: rand(dt, [4, 7]) }], { axis: -1 });
      await check(rt, `Concat ${dt} axis 0 KV`, 'Concat', [{ t: rand(dt, [1, 4, 37, 16]) }, { t: rand(dt, [1, 4, 1, 16]) }], { axis: 2 });
      await check(rt, `Split ${dt} attr (opset 11)`, 'Split', [{ t: rand(dt, [3, 384, 5]) }], { axis: 1, split: [128, 128, 128] }, 3, 11);
      await check(rt, `Split ${dt} constant input`, 'Split', [{ t: rand(dt, [6, 9]) }, i64([2, 3, 4])], { axis: -1 }, 3, 13);
      await check(rt, `Split ${dt} uneven num_outputs`, 'Split', [{ t: rand(dt, [7, 5]) }], { axis: 0, num_outputs: 3 }, 3, 18);
      await check(rt, `Split ${dt} equal default`, 'Split', [{ t: rand(dt, [8, 3]) }], {}, 2, 13);
    }
  } finally { await rt.dispose(); }
});

test('Slice with constant starts/ends/axes/steps, negative steps, and the opset-1 attributes', { timeout: 60_000 }, async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    for (const dt of DT) {
      const x = () => ({ t: rand(dt, [20, 10, 5]) });
      await check(rt, `Slice ${dt} basic`, 'Slice', [x(), i64([0, 0, 3]), i64([20, 10, 4])], {}, 1, 13);
      await check(rt, `Slice ${dt} neg steps`, 'Slice', [x(), i64([20, 10, 4]), i64([0, 0, 1]), i64([0, 1, 2]), i64([-1, -3, -2])], {}, 1, 13);
      await check(rt, `Slice ${dt} neg axes, out of bounds`, 'Slice', [x(), i64([-100, 2]), i64([1000, -1]), i64([-1, -2])], {}, 1, 13);
      await check(rt, `Slice ${dt} step 3`, 'Slice', [x(), i64([1]), i64([19]), i64([0]), i64([3])], {}, 1, 13);
      await check(rt, `Slice ${dt} empty`, 'Slice', [x(), i64([5]), i64([5]), i64([0])], {}, 1, 13);
      await check(rt, `Slice ${dt} opset 1 attrs`, 'Slice', [x()], { starts: [0, 1], ends: [1, 1000], axes: [0, 2] }, 1, 1);
    }
    await check(rt, 'Slice OCR qkv', 'Slice', [{ t: rand('float32', [3, 1, 8, 40, 15]) }], { axes: [0], starts: [1], ends: [2] }, 1, 9);
  } finally { await rt.dispose(); }
});

test('Gather: axes, int32/int64 indices, negative indices; out of range is an error, not a write', { timeout: 60_000 }, async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    const idx64 = (v: number[], dims = [v.length], constant = false) => ({ t: new Tensor('int64', BigInt64Array.from(v, BigInt), dims), constant });
    const idx32 = (v: number[], dims = [v.length]) => ({ t: new Tensor('int32', Int32Array.from(v), dims) });
    // embedding lookup
    await check(rt, 'Gather embeddings', 'Gather', [{ t: rand('float32', [1000, 128]), constant: true }, idx64([1, 999, 0, 5, 5, -1, 17, 300], [1, 8])]);
    for (const dt of DT) {
      await check(rt, `Gather ${dt} axis 1`, 'Gather', [{ t: rand(dt, [3, 11, 7]) }, idx32([0, -11, 10, 4, 4, -2], [2, 3])], { axis: 1 });
      await check(rt, `Gather ${dt} axis -1 scalar index`, 'Gather', [{ t: rand(dt, [4, 9]) }, { t: new Tensor('int64', BigInt64Array.of(-3n), []) }], { axis: -1 });
      await check(rt, `Gather ${dt} constant indices`, 'Gather', [{ t: rand(dt, [6, 5]) }, idx64([5, 0, -6], [3], true)], { axis: 0 });
    }
    // Out of range at run time: an error, and nothing written outside the output.
    for (const bad of [[0, 7], [-8], [1n << 40n]]) {
      const node: Node = { name: 'g', opType: 'Gather', domain: '', inputs: ['x', 'i'], outputs: ['y'], attrs: new Map() };
      const graph: Graph = { name: 'g', nodes: [node], valueInfo: new Map(), initializers: new Map(), inputs: [{ name: 'x', type: null }, { name: 'i', type: null }], outputs: [{ name: 'y', type: null }] };
      const env = { opsets: new Map([['', 17]]), functions: new Map() };
      const runner = new WasmGraphRunner(graph, env, rt, { fallback: false });
      const iv = new Tensor('int64', BigInt64Array.from(bad as (number | bigint)[], (v) => BigInt(v)), [bad.length]);
      await assert.rejects(runner.run(new Map([['x', rand('float32', [7, 64])], ['i', iv]])), `index ${bad} must be rejected`);
      runner.dispose();
    }
  } finally { await rt.dispose(); }
});

test('Expand, Tile, Pad (constant, edge, reflect, wrap), ConstantOfShape, Shape, Size', { timeout: 60_000 }, async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    for (const dt of DT) {
      await check(rt, `Expand ${dt}`, 'Expand', [{ t: rand(dt, [3, 1, 5]) }, i64([2, 3, 4, 5])]);
      await check(rt, `Expand ${dt} mask`, 'Expand', [{ t: rand(dt, [1, 1, 1, 64]) }, i64([1, 12, 64, 1])]);
      await check(rt, `Tile ${dt}`, 'Tile', [{ t: rand(dt, [2, 3, 5]) }, i64([3, 1, 2])]);
      await check(rt, `Pad ${dt} opset 2 attrs`, 'Pad', [{ t: rand(dt, [3, 7, 9]) }], { pads: [0, 1, 2, 1, 0, 3], value: 1.5 }, 1, 2);
      await check(rt, `Pad ${dt} crop`, 'Pad', [{ t: rand(dt, [3, 7, 9]) }, i64([1, -2, 0, 0, -1, 5])], {}, 1, 13);
    }
    await check(rt, 'Pad f32 with value', 'Pad', [{ t: rand('float32', [1, 64, 37]) }, i64([0, 0, 3, 0, 0, 4]), { t: new Tensor('float32', Float32Array.of(-1.5), []), constant: true }], {}, 1, 13);
    await check(rt, 'Pad f32 axes', 'Pad', [{ t: rand('float32', [2, 5, 6]) }, i64([1, 2, 3, 4]), { t: new Tensor('float32', Float32Array.of(2), []), constant: true }, i64([-1, 0])], {}, 1, 18);
    await check(rt, 'Pad int64 with value', 'Pad', [{ t: rand('int64', [4, 5]) }, i64([1, 1, 1, 1]), { t: new Tensor('int64', BigInt64Array.of(-9n), []), constant: true }], {}, 1, 13);
    await check(rt, 'ConstantOfShape default', 'ConstantOfShape', [i64([3, 1, 37])]);
    await check(rt, 'ConstantOfShape int64', 'ConstantOfShape', [i64([5, 7])], { value: new Tensor('int64', BigInt64Array.of(-3n), [1]) });
    await check(rt, 'ConstantOfShape f32', 'ConstantOfShape', [i64([1000])], { value: new Tensor('float32', Float32Array.of(0.25), [1]) });
    await check(rt, 'ConstantOfShape bool', 'ConstantOfShape', [i64([3, 3])], { value: new Tensor('bool', Uint8Array.of(1), [1]) });
    await check(rt, 'Shape', 'Shape', [{ t: rand('float32', [1, 120, 1, 40]) }]);
    await check(rt, 'Shape start/end', 'Shape', [{ t: rand('int64', [2, 3, 4]) }], { start: -2, end: 3 }, 1, 15);
    await check(rt, 'Size', 'Size', [{ t: rand('float32', [3, 1, 7]) }]);
    await check(rt, 'Size of an empty tensor', 'Size', [{ t: rand('int64', [2, 0, 3]) }]);
    // edge / reflect / wrap: Silero's STFT padding and ragged shapes, pads past the axis length (reflect folds again)
    await check(rt, 'Pad reflect (Silero [1,512] +64)', 'Pad', [{ t: rand('float32', [1, 512]) }, i64([0, 0, 0, 64])], { mode: 'reflect' }, 1, 13);
    for (const mode of ['reflect', 'edge', 'wrap']) {
      for (const dt of ['float32', 'int64', 'uint8', 'float16'] as const) {
        await check(rt, `Pad ${mode} ${dt}`, 'Pad', [{ t: rand(dt, [3, 5, 6]) }, i64([1, 0, 2, 2, 3, 1])], { mode }, 1, 19);
      }
      await check(rt, `Pad ${mode} long pads`, 'Pad', [{ t: rand('float32', [2, 3]) }, i64([0, 7, 0, 9])], { mode }, 1, 19);
      await check(rt, `Pad ${mode} crop and pad`, 'Pad', [{ t: rand('float32', [4, 9]) }, i64([-1, 3, 2, -2])], { mode }, 1, 19);
      await check(rt, `Pad ${mode} axes`, 'Pad', [{ t: rand('float32', [2, 5, 6]) }, i64([1, 2, 3, 4]), undefined, i64([-1, 1])], { mode }, 1, 19);
    }
    await check(rt, 'Pad reflect length-1 axis', 'Pad', [{ t: rand('float32', [1, 4]) }, i64([2, 1, 1, 0])], { mode: 'reflect' }, 1, 13);
  } finally { await rt.dispose(); }
});

test('Resize nearest (f32): up and down, modes, sizes and axes', { timeout: 60_000 }, async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    const f32 = (v: number[]) => ({ t: new Tensor('float32', Float32Array.from(v), [v.length]), constant: true });
    const none = { t: new Tensor('float32', new Float32Array(0), [0]), constant: true };
    const x = () => ({ t: rand('float32', [1, 3, 17, 23]) });
    await check(rt, 'Resize up x2', 'Resize', [x(), none, f32([1, 1, 2, 2])], { mode: 'nearest' }, 1, 13);
    await check(rt, 'Resize down 0.6', 'Resize', [x(), none, f32([1, 1, 0.6, 0.6])], { mode: 'nearest' }, 1, 13);
    await check(rt, 'Resize asymmetric floor', 'Resize', [x(), none, f32([1, 1, 1.7, 3])], { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' }, 1, 13);
    await check(rt, 'Resize align_corners ceil sizes', 'Resize', [x(), none, undefined, i64([1, 3, 40, 9])], { mode: 'nearest', coordinate_transformation_mode: 'align_corners', nearest_mode: 'ceil' }, 1, 13);
    await check(rt, 'Resize axes', 'Resize', [x(), none, f32([3, 2])], { mode: 'nearest', axes: [3, 2] }, 1, 18);
    await check(rt, 'Resize opset 10', 'Resize', [x(), f32([1, 1, 2, 3])], { mode: 'nearest' }, 1, 10);
  } finally { await rt.dispose(); }
});

test('Range on int64/int32 runs natively; plans are keyed by the length, so new starts with one length reuse a plan', { timeout: 60_000 }, async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  const graph = (dtype: DType): Graph => ({
    name: 'range', initializers: new Map(), valueInfo: new Map(),
    nodes: [{ name: 'r', opType: 'Range', domain: '', inputs: ['s', 'l', 'd'], outputs: ['y'], attrs: new Map() } as Node],
    inputs: ['s', 'l', 'd'].map((name) => ({ name, type: { kind: 'tensor' as const, dtype, shape: [] } })),
    outputs: [{ name: 'y', type: null }],
  });
  try {
    for (const dtype of ['int64', 'int32'] as const) {
      const runner = new WasmGraphRunner(graph(dtype), { opsets: new Map([['', 17]]), functions: new Map() }, rt, { fallback: false });
      const sc = (v: number) => (dtype === 'int64' ? new Tensor('int64', BigInt64Array.of(BigInt(v)), []) : new Tensor('int32', Int32Array.of(v), []));
      try {
        // A decode loop's positions: Range(past, past + 1, 1), then prefills and negative steps.
        for (const [s, l, d] of [[0, 1, 1], [7, 8, 1], [41, 42, 1], [3, 10, 2], [100, 93, -3], [-5, 5, 1], [5, 5, 1], [2, 12, 3]]) {
          const out = (await runner.run(new Map([['s', sc(s)], ['l', sc(l)], ['d', sc(d)]]))) as Tensor[];
          const want: number[] = [];
          for (let v = s; d > 0 ? v < l : v > l; v += d) want.push(v);
          assert.deepEqual(out[0].dims, [want.length], `${dtype} Range(${s}, ${l}, ${d}) dims`);
          assert.deepEqual(Array.from(out[0].data as ArrayLike<number | bigint>, Number), want, `${dtype} Range(${s}, ${l}, ${d})`);
        }
        assert.equal(runner.stats.fallbackNodes, 0);
      } finally {
        runner.dispose();
      }
    }
  } finally {
    await rt.dispose();
  }
});
