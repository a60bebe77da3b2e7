// WebGPU data-movement kernels against the reference kernels: exact equality at realistic and ragged shapes, every dtype.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GpuGraphRunner } from '../src/backends/webgpu/executor.js';
import { acquireGpu } from '../src/backends/webgpu/device.js';
import { runNode } from '../src/backends/reference/executor.js';
import { UnsupportedError } from '../src/errors.js';
import type { Graph, Node } from '../src/graph/ir.js';
import { Tensor, type DType, type Value } from '../src/tensor.js';
import { mulberry32 } from '../src/util/random.js';
import { attrsOf, runOneNodeGpu, type AttrVal, type In } from './webgpu-one-node.js';

function same(got: Tensor, want: Tensor): string | null {
  if (got.type !== want.type) return `dtype ${got.type} vs ${want.type}`;
  if (got.dims.join() !== want.dims.join()) return `dims [${got.dims}] vs [${want.dims}]`;
  const a = got.data as ArrayLike<unknown>, b = want.data as ArrayLike<unknown>;
  if (a.length !== b.length) return `length ${a.length} vs ${b.length}`;
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) return `element ${i}: ${String(a[i])} vs ${String(b[i])}`;
  }
  return null;
}

/** One node on the GPU (no fallback) and on the reference: it must have run on the GPU, with exactly equal outputs. */
async function check(what: string, opType: string, ins: (In | undefined)[], attrs: Record<string, AttrVal> = {}, nOut = 1, opset = 17): Promise<void> {
  const { got, want, gpuNodes } = await runOneNodeGpu(opType, ins, attrs, nOut, opset);
  assert.ok(gpuNodes >= 1, `${what}: did not run on the GPU`);
  for (let k = 0; k < nOut; k++) {
    const d = same(got[k], want[k]);
    assert.equal(d, null, `${what}: output ${k} differs: ${d}`);
  }
}

/** The node has no GPU plan (the executor would fall back): with fallback off, it is an UnsupportedError. */
async function unsupported(what: string, opType: string, ins: (In | undefined)[], attrs: Record<string, AttrVal> = {}, opset = 17): Promise<void> {
  await assert.rejects(runOneNodeGpu(opType, ins, attrs, 1, opset), UnsupportedError, what);
}

/** A chain of nodes (for ops whose small integer inputs must come from the GPU to run there); outputs of the last node. */
async function checkChain(what: string, nodes: Node[], feeds: Map<string, Tensor>, minGpu: number, opset = 17): Promise<void> {
  const last = nodes[nodes.length - 1];
  const graph: Graph = {
    name: 'g', nodes, valueInfo: new Map(), initializers: new Map(),
    inputs: [...feeds.keys()].map((name) => ({ name, type: null })), outputs: last.outputs.map((name) => ({ name, type: null })),
  };
  const env = { opsets: new Map([['', opset]]), functions: new Map() };
  const runner = new GpuGraphRunner(graph, env, await acquireGpu(), { fallback: false });
  try {
    const got = (await runner.run(new Map(feeds))) as Tensor[];
    const vals = new Map<string, Value>(feeds);
    for (const n of nodes) {
      const outs = runNode(n, n.inputs.map((x) => (x ? vals.get(x) : undefined)), env, () => undefined);
      n.outputs.forEach((o, k) => vals.set(o, outs[k]));
    }
    assert.ok(runner.stats.gpuNodes >= minGpu, `${what}: ${runner.stats.gpuNodes} GPU nodes, expected ${minGpu}`);
    last.outputs.forEach((o, k) => {
      const d = same(got[k], vals.get(o) as Tensor);
      assert.equal(d, null, `${what}: output ${k} differs: ${d}`);
    });
  } finally {
    runner.dispose();
  }
}

const node = (opType: string, inputs: string[], outputs: string[], attrs: Record<string, AttrVal> = {}): Node =>
  ({ name: outputs[0], opType, domain: '', attrs: attrsOf(attrs), inputs, outputs });

let seed = 1;
function rand(dtype: DType, dims: number[]): Tensor {
  const n = dims.reduce((a, b) => a * b, 1);
  const r = mulberry32(seed++);
  switch (dtype) {
    case 'float32': return new Tensor('float32', Float32Array.from({ length: n }, () => r() * 2 - 1), dims);
    // int64 lives on the GPU as i32: values within its range round-trip exactly.
    case 'int64': return new Tensor('int64', BigInt64Array.from({ length: n }, () => BigInt(Math.floor(r() * 4e9) - 2e9)), dims);
    case 'int32': return new Tensor('int32', Int32Array.from({ length: n }, () => Math.floor(r() * 4e9) - 2e9), dims);
    case 'bool': return new Tensor('bool', Uint8Array.from({ length: n }, () => (r() < 0.5 ? 1 : 0)), dims);
    // Finite float16 bit patterns of both signs.
    case 'float16': return new Tensor('float16', Uint16Array.from({ length: n }, () => (Math.floor(r() * 0x7c00) | (r() < 0.5 ? 0x8000 : 0))), dims);
    default: throw new Error(dtype);
  }
}
const i64 = (v: number[], constant = true): In => ({ t: new Tensor('int64', BigInt64Array.from(v, BigInt), [v.length]), constant });
const i64s = (v: number, constant = true): In => ({ t: new Tensor('int64', BigInt64Array.of(BigInt(v)), []), constant });
const idx = (dims: number[], lo: number, hi: number, dtype: 'int64' | 'int32' = 'int64'): Tensor => {
  const r = mulberry32(seed++);
  const n = dims.reduce((a, b) => a * b, 1);
  const v = Array.from({ length: n }, () => lo + Math.floor(r() * (hi - lo)));
  return dtype === 'int64' ? new Tensor('int64', BigInt64Array.from(v, BigInt), dims) : new Tensor('int32', Int32Array.from(v), dims);
};

/**
 * Dtypes per test: integer and bool inputs reach the GPU only above the executor's CPU limit for small integer tensors
 * (16384 elements), so shapes used with them are larger than that.
 */
async function dtypes(): Promise<DType[]> {
  const gpu = await acquireGpu();
  return gpu.caps.f16 ? ['float32', 'int64', 'bool', 'float16'] : ['float32', 'int64', 'bool'];
}

test('Transpose: transformer heads, inner swaps (tiled), ragged and high-rank perms', { timeout: 120_000 }, async () => {
  for (const dt of await dtypes()) {
    await check(`${dt} heads`, 'Transpose', [{ t: rand(dt, [1, 128, 12, 64]) }], { perm: [0, 2, 1, 3] });
    await check(`${dt} K^T`, 'Transpose', [{ t: rand(dt, [1, 12, 128, 64]) }], { perm: [0, 1, 3, 2] });
    await check(`${dt} ragged 2-D`, 'Transpose', [{ t: rand(dt, [257, 131]) }], { perm: [1, 0] });
    await check(`${dt} NCHW→NHWC`, 'Transpose', [{ t: rand(dt, [1, 3, 80, 90]) }], { perm: [0, 2, 3, 1] });
  }
  const cases: [number[], number[] | undefined][] = [
    [[3, 5, 7, 9], undefined], [[2, 3, 4, 5, 6, 7], [5, 3, 1, 0, 2, 4]], [[1, 1, 9], [2, 1, 0]], [[1, 40, 3, 8, 15], [2, 0, 3, 1, 4]],
    [[33, 9, 47], [2, 1, 0]], [[5], [0]], [[], []], [[4, 0, 3], [2, 0, 1]], [[2, 70, 40], [0, 2, 1]],
  ];
  for (const [dims, perm] of cases) await check(`float32 [${dims}] perm ${perm}`, 'Transpose', [{ t: rand('float32', dims) }], perm ? { perm } : {});
  const r = mulberry32(77);
  for (let c = 0; c < 12; c++) {
    const dims = Array.from({ length: 2 + Math.floor(r() * 4) }, () => 1 + Math.floor(r() * 40 / (1 + c % 3)));
    const perm = dims.map((_, i) => i).sort(() => r() - 0.5);
    await check(`random [${dims}] perm ${perm}`, 'Transpose', [{ t: rand('float32', dims) }], { perm });
  }
});

test('Concat: NCHW channels, KV cache, empty parts, more inputs than storage bindings', { timeout: 60_000 }, async () => {
  for (const dt of await dtypes()) {
    await check(`${dt} channels`, 'Concat', [{ t: rand(dt, [1, 32, 24, 24]) }, { t: rand(dt, [1, 16, 24, 24]) }, { t: rand(dt, [1, 8, 24, 24]) }], { axis: 1 });
    await check(`${dt} KV`, 'Concat', [{ t: rand(dt, [1, 12, 37, 64]) }, { t: rand(dt, [1, 12, 1, 64]) }], { axis: -2 });
  }
  await check('axis -1 with an empty part', 'Concat', [{ t: rand('float32', [4, 33]) }, { t: rand('float32', [4, 0]) }, { t: rand('float32', [4, 7]) }], { axis: -1 });
  await check('axis 0', 'Concat', [{ t: rand('float32', [3, 5]) }, { t: rand('float32', [1, 5]) }], { axis: 0 });
  await check('only one non-empty', 'Concat', [{ t: rand('float32', [0, 5]) }, { t: rand('float32', [3, 5]) }], { axis: 0 });
  await check('all empty', 'Concat', [{ t: rand('float32', [2, 0]) }, { t: rand('float32', [2, 0]) }], { axis: 1 });
  await check('constant + feed', 'Concat', [{ t: rand('float32', [2, 3, 5]), constant: true }, { t: rand('float32', [2, 4, 5]) }], { axis: 1 });
  const many = Array.from({ length: 20 }, (_, k) => ({ t: rand('float32', [2, 1 + (k % 4), 3]) }));
  await check('20 inputs', 'Concat', many, { axis: 1 });
});

test('Split: attribute, constant and graph-computed sizes, num_outputs, many outputs', { timeout: 60_000 }, async () => {
  for (const dt of await dtypes()) {
    await check(`${dt} qkv`, 'Split', [{ t: rand(dt, [1, 64, 3 * 128]) }], { axis: -1, split: [128, 128, 128] }, 3, 11);
    await check(`${dt} channels`, 'Split', [{ t: rand(dt, [1, 48, 20, 20]) }, i64([16, 0, 32])], { axis: 1 }, 3, 13);
  }
  await check('sizes as a graph value', 'Split', [{ t: rand('float32', [6, 9]) }, i64([2, 3, 4], false)], { axis: -1 }, 3, 13);
  await check('uneven num_outputs', 'Split', [{ t: rand('float32', [7, 5]) }], { axis: 0, num_outputs: 3 }, 3, 18);
  await check('equal default', 'Split', [{ t: rand('float32', [8, 3]) }], {}, 2, 13);
  await check('one output', 'Split', [{ t: rand('float32', [8, 3]) }], { axis: 1 }, 1, 13);
  await check('20 outputs', 'Split', [{ t: rand('float32', [3, 40, 2]) }], { axis: 1 }, 20, 13);
});

test('Slice: constant and graph-computed bounds, negative steps and axes, clamping, empty, opset 1', { timeout: 60_000 }, async () => {
  for (const dt of await dtypes()) {
    await check(`${dt} channel slab`, 'Slice', [{ t: rand(dt, [1, 96, 20, 20]) }, i64([32]), i64([64]), i64([1])], {}, 1, 13);
    await check(`${dt} reversed, step 2`, 'Slice', [{ t: rand(dt, [1, 96, 20, 20]) }, i64([-1, 0]), i64([-1000, 20]), i64([1, 3]), i64([-2, 3])], {}, 1, 13);
  }
  const x = () => ({ t: rand('float32', [20, 10, 5]) });
  await check('basic', 'Slice', [x(), i64([0, 0, 3]), i64([20, 10, 4])], {}, 1, 13);
  await check('graph-computed', 'Slice', [x(), i64([1, 2], false), i64([-1, 9], false), i64([0, -1], false)], {}, 1, 13);
  await check('neg steps', 'Slice', [x(), i64([20, 10, 4]), i64([0, 0, 1]), i64([0, 1, 2]), i64([-1, -3, -2])], {}, 1, 13);
  await check('neg axes, out of bounds', 'Slice', [x(), i64([-100, 2]), i64([1000, -1]), i64([-1, -2])], {}, 1, 13);
  await check('empty', 'Slice', [x(), i64([5]), i64([2]), i64([1])], {}, 1, 13);
  await check('whole (a view)', 'Slice', [x(), i64([0]), i64([1000]), i64([0])], {}, 1, 13);
  await check('seq position', 'Slice', [{ t: rand('float32', [1, 77, 768]) }, i64([-1]), i64([2 ** 62]), i64([1])], {}, 1, 13);
  const r = mulberry32(78);
  for (let c = 0; c < 12; c++) {
    const dims = Array.from({ length: 1 + Math.floor(r() * 4) }, () => 1 + Math.floor(r() * 12));
    const axes = dims.map((_, i) => i).filter(() => r() < 0.7);
    const pick = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo));
    const starts = axes.map((a) => pick(-dims[a] - 2, dims[a] + 2)), ends = axes.map((a) => pick(-dims[a] - 2, dims[a] + 2));
    const steps = axes.map(() => (r() < 0.5 ? -1 : 1) * pick(1, 4));
    await check(`random [${dims}] ${starts}:${ends}:${steps} axes ${axes}`, 'Slice',
      [{ t: rand('float32', dims) }, i64(starts), i64(ends), i64(axes.map((a) => (r() < 0.5 ? a - dims.length : a))), i64(steps)], {}, 1, 13);
  }
  await check('opset 9 attributes', 'Slice', [x()], { starts: [1, -4], ends: [100, -1], axes: [0, 2] }, 1, 9);
});

test('Gather: embedding lookup, any axis, negative indices, scalar index', { timeout: 60_000 }, async () => {
  const table = rand('float32', [30522, 768]);
  await check('embedding [30522,768] by [8,128]', 'Gather', [{ t: table, constant: true }, { t: idx([8, 128], 0, 30522) }], {});
  await check('embedding, negative ids, int32', 'Gather', [{ t: table, constant: true }, { t: idx([2, 16], -30522, 30522, 'int32') }], {});
  for (const dt of await dtypes()) {
    await check(`${dt} axis 1`, 'Gather', [{ t: rand(dt, [4, 50, 100]) }, { t: idx([3, 7], -50, 50) }], { axis: 1 });
    await check(`${dt} axis -1`, 'Gather', [{ t: rand(dt, [40, 30, 20]) }, { t: idx([5], -20, 20) }], { axis: -1 });
  }
  await check('scalar index (CLS token)', 'Gather', [{ t: rand('float32', [2, 128, 64]) }, i64s(0)], { axis: 1 });
  await check('scalar negative feed', 'Gather', [{ t: rand('float32', [2, 128, 64]) }, i64s(-1, false)], { axis: 1 });
  await check('empty indices', 'Gather', [{ t: rand('float32', [6, 4]) }, { t: idx([0], 0, 6) }], {});
  await unsupported('out-of-range constant index', 'Gather', [{ t: rand('float32', [6, 4]) }, i64([1, 6])], {});
});

test('GatherElements, GatherND and ScatterND', { timeout: 60_000 }, async () => {
  for (const dt of await dtypes()) {
    await check(`${dt} GatherElements axis 1`, 'GatherElements', [{ t: rand(dt, [30, 40, 20]) }, { t: idx([30, 25, 20], -40, 40) }], { axis: 1 });
    await check(`${dt} GatherND k=2`, 'GatherND', [{ t: rand(dt, [20, 30, 40]) }, { t: idx([5, 6, 2], 0, 20) }], {});
    await check(`${dt} ScatterND rows`, 'ScatterND', [{ t: rand(dt, [64, 300]) }, { t: new Tensor('int64', BigInt64Array.of(3n, -1n, 10n), [3, 1]), constant: true }, { t: rand(dt, [3, 300]) }], {});
  }
  await check('GatherElements axis 0, smaller index dims', 'GatherElements', [{ t: rand('float32', [7, 5, 3]) }, { t: idx([4, 2, 3], -7, 7) }], { axis: 0 });
  await check('GatherElements axis -1', 'GatherElements', [{ t: rand('float32', [6, 9]) }, { t: idx([6, 12], 0, 9) }], { axis: -1 });
  await check('GatherND full tuples', 'GatherND', [{ t: rand('float32', [4, 5, 6]) }, { t: idx([7, 3], -4, 4) }], {});
  await check('GatherND batch_dims 1', 'GatherND', [{ t: rand('float32', [3, 8, 5]) }, { t: idx([3, 4, 1], -8, 8) }], { batch_dims: 1 });
  await check('GatherND batch_dims 1, k=0 rows', 'GatherND', [{ t: rand('float32', [3, 8, 5]) }, { t: idx([3, 2, 2], 0, 5) }], { batch_dims: 1 });
  await check('ScatterND elements, indices a feed', 'ScatterND',
    [{ t: rand('float32', [4, 5, 6]) }, { t: new Tensor('int64', BigInt64Array.of(0n, 1n, 2n, 3n, -1n, -1n), [3, 2]) }, { t: rand('float32', [3, 6]) }], {});
  await check('ScatterND KV cache write', 'ScatterND',
    [{ t: rand('float32', [1, 4, 16, 8]) }, { t: new Tensor('int64', BigInt64Array.of(0n, 0n, 0n, 1n, 0n, 2n, 0n, 3n), [1, 4, 2]), constant: true }, { t: rand('float32', [1, 4, 16, 8]) }], {});
  await unsupported('ScatterND duplicate constant indices', 'ScatterND',
    [{ t: rand('float32', [4, 3]) }, { t: new Tensor('int64', BigInt64Array.of(1n, 1n), [2, 1]), constant: true }, { t: rand('float32', [2, 3]) }], {});
  await unsupported('ScatterND reduction add', 'ScatterND',
    [{ t: rand('float32', [4, 3]) }, { t: new Tensor('int64', BigInt64Array.of(1n), [1, 1]), constant: true }, { t: rand('float32', [1, 3]) }], { reduction: 'add' }, 18);
});

test('Expand and Tile', { timeout: 60_000 }, async () => {
  for (const dt of await dtypes()) {
    await check(`${dt} mask expand`, 'Expand', [{ t: rand(dt, [2, 1, 128, 128]) }, i64([2, 12, 128, 128])], {});
    await check(`${dt} tile`, 'Tile', [{ t: rand(dt, [3, 80, 80]) }, i64([2, 1, 3])], {});
  }
  await check('expand rank up, middle broadcast', 'Expand', [{ t: rand('float32', [3, 1]) }, i64([2, 3, 4])], {});
  await check('expand shape smaller than input', 'Expand', [{ t: rand('float32', [2, 3, 4]) }, i64([1, 4], false)], {});
  await check('expand same shape (a view)', 'Expand', [{ t: rand('float32', [2, 3, 4]) }, i64([2, 3, 4])], {});
  await check('expand to empty', 'Expand', [{ t: rand('float32', [3, 1]) }, i64([0, 3, 4])], {});
  await check('tile reps from the graph', 'Tile', [{ t: rand('float32', [2, 3, 4]) }, i64([1, 3, 2], false)], {});
  await check('tile zero reps', 'Tile', [{ t: rand('float32', [2, 3]) }, i64([0, 3])], {});
});

test('Pad: constant (attribute, constant input, graph input), reflect, edge, wrap, crops, axes', { timeout: 60_000 }, async () => {
  for (const dt of await dtypes()) {
    await check(`${dt} NCHW constant`, 'Pad', [{ t: rand(dt, [1, 3, 96, 96]) }, i64([0, 0, 1, 2, 0, 0, 3, 1])], {}, 1, 13);
    await check(`${dt} NCHW reflect`, 'Pad', [{ t: rand(dt, [1, 3, 96, 96]) }, i64([0, 0, 2, 3, 0, 0, 3, 2])], { mode: 'reflect' }, 1, 13);
  }
  const x = () => ({ t: rand('float32', [2, 5, 7]) });
  await check('constant value input', 'Pad', [x(), i64([1, 0, 2, 0, 3, 1]), { t: new Tensor('float32', Float32Array.of(-2.5), []), constant: true }], {}, 1, 13);
  await check('constant value feed, pads a graph value', 'Pad', [x(), i64([1, 0, 2, 0, 3, 1], false), { t: new Tensor('float32', Float32Array.of(7), []) }], {}, 1, 13);
  await check('edge', 'Pad', [x(), i64([0, 3, 4, 1, 2, 5])], { mode: 'edge' }, 1, 13);
  await check('reflect on width 1', 'Pad', [{ t: rand('float32', [2, 1, 4]) }, i64([0, 2, 1, 0, 3, 2])], { mode: 'reflect' }, 1, 13);
  await check('wrap', 'Pad', [x(), i64([1, 6, 0, 0, 8, 3])], { mode: 'wrap' }, 1, 19);
  await check('negative pads crop', 'Pad', [x(), i64([-1, 2, -3, 0, -2, 1])], {}, 1, 13);
  await check('reflect with crop', 'Pad', [x(), i64([0, -1, 2, 0, 2, -3])], { mode: 'reflect' }, 1, 13);
  await check('opset 2 attributes with value', 'Pad', [x()], { pads: [0, 1, 1, 0, 2, 1], value: 1.5 }, 1, 2);
  await check('opset 18 axes', 'Pad', [x(), i64([2, 1, 3, 0]), undefined, i64([-1, 0])], {}, 1, 18);
  await check('to empty', 'Pad', [x(), i64([0, 0, 0, -2, 0, 0])], {}, 1, 13);
});

test('ConstantOfShape, Range and Trilu with GPU-computed integer inputs', { timeout: 60_000 }, async () => {
  const f = (v: number[]) => new Tensor('float32', Float32Array.from(v), [v.length]);
  const fs = (v: number) => new Tensor('float32', Float32Array.of(v), []);
  const cast = (i: string, o: string) => node('Cast', [i], [o], { to: 7 });
  for (const [value, name] of [
    [new Tensor('int64', BigInt64Array.of(-3n), [1]), 'int64'], [new Tensor('float32', Float32Array.of(0.1), [1]), 'float32'],
    [new Tensor('bool', Uint8Array.of(1), [1]), 'bool'], [undefined, 'default'],
  ] as const) {
    await checkChain(`ConstantOfShape ${name}`, [cast('s', 'shape'), node('ConstantOfShape', ['shape'], ['y'], value ? { value } : {})],
      new Map([['s', f([2, 3, 40])]]), 2);
  }
  await checkChain('ConstantOfShape empty', [cast('s', 'shape'), node('ConstantOfShape', ['shape'], ['y'])], new Map([['s', f([2, 0])]]), 2);
  for (const [s, l, d] of [[0, 128, 1], [5, -7, -3], [3, 3, 1], [-10, 1000, 7]]) {
    await checkChain(`Range ${s}:${l}:${d}`, [cast('s', 'a'), cast('l', 'b'), cast('d', 'c'), node('Range', ['a', 'b', 'c'], ['y'])],
      new Map([['s', fs(s)], ['l', fs(l)], ['d', fs(d)]]), 4);
  }
  // The second run reuses the plan of the same length with other start/delta: they are read on the GPU.
  const nodes = [cast('s', 'a'), cast('l', 'b'), cast('d', 'c'), node('Range', ['a', 'b', 'c'], ['y'])];
  const graph: Graph = { name: 'g', nodes, valueInfo: new Map(), initializers: new Map(), inputs: ['s', 'l', 'd'].map((name) => ({ name, type: null })), outputs: [{ name: 'y', type: null }] };
  const runner = new GpuGraphRunner(graph, { opsets: new Map([['', 17]]), functions: new Map() }, await acquireGpu(), { fallback: false });
  try {
    const a = (await runner.run(new Map([['s', fs(0)], ['l', fs(10)], ['d', fs(1)]]))) as Tensor[];
    const b = (await runner.run(new Map([['s', fs(100)], ['l', fs(120)], ['d', fs(2)]]))) as Tensor[];
    assert.deepEqual(Array.from(a[0].data as BigInt64Array, Number), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual(Array.from(b[0].data as BigInt64Array, Number), [100, 102, 104, 106, 108, 110, 112, 114, 116, 118]);
  } finally {
    runner.dispose();
  }
  for (const dt of await dtypes()) {
    await check(`Trilu ${dt} upper`, 'Trilu', [{ t: rand(dt, [4, 77, 77]) }], {}, 1, 14);
    await check(`Trilu ${dt} lower k=-1`, 'Trilu', [{ t: rand(dt, [4, 77, 77]) }, i64s(-1)], { upper: 0 }, 1, 14);
  }
  await check('Trilu wide, k a feed', 'Trilu', [{ t: rand('float32', [3, 5, 9]) }, i64s(2, false)], { upper: 1 }, 1, 14);
  await check('Trilu tall lower', 'Trilu', [{ t: rand('float32', [9, 4]) }, i64s(1)], { upper: 0 }, 1, 14);
});

test('DepthToSpace, SpaceToDepth and CumSum', { timeout: 60_000 }, async () => {
  for (const dt of await dtypes()) {
    await check(`${dt} DepthToSpace DCR`, 'DepthToSpace', [{ t: rand(dt, [1, 16, 40, 30]) }], { blocksize: 2 });
    await check(`${dt} DepthToSpace CRD`, 'DepthToSpace', [{ t: rand(dt, [2, 18, 20, 30]) }], { blocksize: 3, mode: 'CRD' });
    await check(`${dt} SpaceToDepth`, 'SpaceToDepth', [{ t: rand(dt, [2, 3, 64, 48]) }], { blocksize: 4 });
  }
  const ax = (a: number): In => ({ t: new Tensor('int64', BigInt64Array.of(BigInt(a)), []), constant: true });
  await check('CumSum float axis 1', 'CumSum', [{ t: rand('float32', [4, 300]) }, ax(1)], {});
  await check('CumSum float axis 0 exclusive reverse', 'CumSum', [{ t: rand('float32', [50, 3, 7]) }, ax(0)], { exclusive: 1, reverse: 1 });
  await check('CumSum float axis -2 exclusive', 'CumSum', [{ t: rand('float32', [5, 60, 7]) }, ax(-2)], { exclusive: 1 });
  const mask = new Tensor('int64', BigInt64Array.from({ length: 2 * 10000 }, (_, i) => BigInt(i % 7 === 0 ? 0 : 1)), [2, 10000]);
  await check('CumSum int64 position ids', 'CumSum', [{ t: mask }, ax(-1)], {});
  await check('CumSum int32 reverse', 'CumSum', [{ t: idx([20000, 2], -1000, 1000, 'int32') }, ax(0)], { reverse: 1 });
});
