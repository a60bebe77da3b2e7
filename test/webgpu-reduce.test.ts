// WebGPU reductions and normalizations against the reference kernels: every Reduce*, ArgMax/ArgMin, Softmax/LogSoftmax,
// Layer/RMS/Instance/BatchNormalization, on ragged and long rows, both with subgroup reductions and without.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { reduceConfig } from '../src/backends/webgpu/ops/reduce.js';
import { Tensor } from '../src/tensor.js';
import { randomFloat, rng } from './helpers.js';
import { relErr, runOneNodeGpu, type AttrVal, type In } from './webgpu-one-node.js';

const f = (dims: number[], seed: number, lo = -1, hi = 1): In => ({ t: randomFloat(dims, seed, lo, hi) });
const i64 = (v: number[]): In => ({ t: new Tensor('int64', BigInt64Array.from(v, BigInt), [v.length]), constant: true });
/** Integer-valued data with many ties (ArgMax's tie rules). */
function ties(dims: number[], seed: number, levels: number, dtype: 'float32' | 'int32' | 'int64' = 'float32'): In {
  const r = rng(seed);
  const n = dims.reduce((a, b) => a * b, 1);
  const v = Array.from({ length: n }, () => Math.floor(r() * levels) - (levels >> 1));
  if (dtype === 'int64') return { t: new Tensor('int64', BigInt64Array.from(v, BigInt), dims) };
  if (dtype === 'int32') return { t: new Tensor('int32', Int32Array.from(v), dims) };
  return { t: new Tensor('float32', Float32Array.from(v), dims) };
}

async function check(op: string, ins: (In | undefined)[], attrs: Record<string, AttrVal> = {}, o: { opset?: number; nOut?: number; tol?: number } = {}): Promise<void> {
  const { got, want, gpuNodes } = await runOneNodeGpu(op, ins, attrs, o.nOut ?? 1, o.opset ?? 18);
  const what = `${op} [${ins.map((x) => (x ? x.t.dims.join('x') : '-')).join(', ')}] ${JSON.stringify(attrs)} opset ${o.opset ?? 18} subgroups ${reduceConfig.subgroups}`;
  assert.ok(gpuNodes >= 1, `${what}: not run on the GPU`);
  assert.equal(got.length, want.length);
  want.forEach((w, k) => {
    assert.equal(got[k].type, w.type, `${what}: output ${k} dtype`);
    assert.deepEqual(got[k].dims, w.dims, `${what}: output ${k} dims`);
    const err = relErr(got[k], w);
    const tol = w.type === 'float32' ? (o.tol ?? 1e-4) : 0;
    assert.ok(err <= tol, `${what}: output ${k} rel err ${err}`);
  });
}

test('WebGPU ReduceSum/Mean over any axes: rows, columns, several levels, split long rows, keepdims, noop', { timeout: 120_000 }, async () => {
  // Innermost axis: vectorised (1024), ragged (4099), long (9000), one element, a scalar.
  await check('ReduceSum', [f([6, 5, 1024], 1), i64([2])], {}, { opset: 13 });
  await check('ReduceSum', [f([5, 4099], 2), i64([-1])], { keepdims: 0 }, { opset: 13 });
  await check('ReduceMean', [f([3, 9000], 3), i64([1])]);
  await check('ReduceSum', [f([1], 4), i64([0])], {}, { opset: 13 });
  await check('ReduceSum', [{ t: new Tensor('float32', Float32Array.of(2.5), []) }], {}, { opset: 13 });
  // Non-innermost axes: threads walk the contiguous dim (and split a long column over workgroups).
  await check('ReduceSum', [f([3, 1000, 7], 5), i64([1])], {}, { opset: 13 });
  await check('ReduceMean', [f([2, 64, 13, 13], 6), i64([0, 2])]);
  await check('ReduceMean', [f([20000, 3], 7), i64([0])], { keepdims: 0 });
  // Several reduced levels with a kept one between; the global mean of an image and long rows, split over workgroups.
  await check('ReduceSum', [f([4, 6, 10], 8), i64([0, 2])], {}, { opset: 13 });
  await check('ReduceMean', [f([1, 3, 224, 224], 9), i64([1, 2, 3])]);
  await check('ReduceSum', [f([150001], 10)], {}, { opset: 13 });
  // Axes from the older attribute; none given (all); noop_with_empty_axes; axes computed in the graph (a feed).
  await check('ReduceMean', [f([3, 5, 7], 12)], { axes: [1, 2] }, { opset: 13 });
  await check('ReduceMean', [f([3, 5, 7], 13)], { keepdims: 0 }, { opset: 13 });
  await check('ReduceSum', [f([3, 5, 7], 14), i64([])], { noop_with_empty_axes: 1 }, { opset: 13 });
  await check('ReduceSum', [f([8, 33, 5], 15), { t: new Tensor('int64', BigInt64Array.of(-2n), [1]) }], {}, { opset: 13 });
});

test('WebGPU ReduceMax/Min/Prod/L1/L2/SumSquare/LogSum/LogSumExp, and integer reductions', { timeout: 120_000 }, async () => {
  await check('ReduceMax', [f([7, 777], 20), i64([1])]);
  await check('ReduceMin', [f([7, 777], 21), i64([0])], { keepdims: 0 });
  await check('ReduceMin', [f([12, 1, 129], 23)], { axes: [0, 2] }, { opset: 13 });
  await check('ReduceProd', [f([9, 60], 24, 0.9, 1.1), i64([1])]);
  await check('ReduceL1', [f([5, 301], 26), i64([1])]);
  await check('ReduceL2', [f([5, 64, 6], 27), i64([1])]);
  await check('ReduceSumSquare', [f([4, 4, 4, 44], 28), i64([1, 3])]);
  await check('ReduceLogSum', [f([10, 333], 29, 0.1, 2), i64([1])]);
  await check('ReduceLogSumExp', [f([10, 333], 30, -20, 20), i64([1])]);
  await check('ReduceLogSumExp', [f([40, 17], 31, -5, 5), i64([0])]);
  // Integers (int64 as the GPU stores it, i32): sums, extremes, int32 products; above the CPU shape-arithmetic size.
  await check('ReduceSum', [ties([20, 1001], 33, 1000, 'int64'), i64([1])], {}, { opset: 13 });
  await check('ReduceMax', [ties([2001, 11], 34, 100000, 'int32'), i64([0])]);
  await check('ReduceMin', [ties([9, 2049], 35, 100000, 'int64'), i64([1])]);
  await check('ReduceProd', [ties([17000, 3], 36, 5, 'int32'), i64([1])]);
});

test('WebGPU ArgMax/ArgMin: any axis, keepdims, first and last of ties, integer inputs', { timeout: 120_000 }, async () => {
  await check('ArgMin', [f([13, 1001], 41)], { axis: -1, keepdims: 0 });
  await check('ArgMax', [f([6, 300, 5], 42)], { axis: 1 });
  await check('ArgMax', [f([2, 6000], 44)], { axis: 1 });
  for (const last of [0, 1]) {
    await check('ArgMax', [ties([20, 516], 45, 7)], { axis: 1, select_last_index: last });
    await check('ArgMin', [ties([50, 9, 4], 47, 3)], { axis: 0, select_last_index: last });
    await check('ArgMin', [ties([3, 9000], 48, 9, 'int64')], { axis: 1, select_last_index: last });
  }
  await check('ArgMax', [ties([17000, 2], 49, 1000, 'int32')], { axis: 0, keepdims: 0 });
});

test('WebGPU Softmax/LogSoftmax: last axis, middle axis, opset < 13 coercion, ragged and long rows', { timeout: 120_000 }, async () => {
  for (const op of ['Softmax', 'LogSoftmax']) {
    await check(op, [f([37, 1001], 50, -5, 5)], {}, { opset: 13 });
    await check(op, [f([2, 50, 9], 52, -5, 5)], { axis: 1 }, { opset: 13 });
    await check(op, [f([3, 4, 5], 53, -5, 5)], { axis: 1 }, { opset: 11 });
    await check(op, [f([1, 50257], 56, -10, 10)], {}, { opset: 13 });
  }
  await check('Softmax', [f([12, 128, 128], 51, -8, 8)], { axis: -1 }, { opset: 13 });
  await check('Softmax', [f([3, 4, 5], 54, -5, 5)], {}, { opset: 11 });
  await check('LogSoftmax', [f([2, 5000], 55, -10, 10)], {}, { opset: 13 });
  await check('Softmax', [f([7, 1], 58)], {}, { opset: 13 });
  // Rows with -inf (masked) entries.
  const x = randomFloat([4, 40], 59, -3, 3);
  const d = x.data as Float32Array;
  for (let i = 0; i < d.length; i += 3) d[i] = -Infinity;
  await check('Softmax', [{ t: x }], {}, { opset: 13 });
});

test('WebGPU LayerNormalization/RMSNormalization/InstanceNormalization/BatchNormalization', { timeout: 120_000 }, async () => {
  // BERT's shape (offset data: the variance must not cancel), ragged rows, long rows, a whole-block axis.
  await check('LayerNormalization', [f([2, 7, 768], 60, 2, 4), f([768], 61), f([768], 62)], { epsilon: 1e-12 });
  await check('LayerNormalization', [f([5, 33], 63), f([33], 64), f([33], 65)], {});
  await check('LayerNormalization', [f([3, 5000], 66), f([5000], 67)], { axis: 1 });
  await check('LayerNormalization', [f([3, 7, 12], 68), f([7, 12], 69), f([1], 70)], { axis: 1 });
  await check('LayerNormalization', [f([2, 3, 8], 74), f([8], 75), f([8], 76)], { axis: -1 }, { nOut: 3 });
  await check('LayerNormalization', [f([9, 1], 77), f([1], 78)], {});
  await check('RMSNormalization', [f([3, 9, 64], 79), f([64], 80)], { epsilon: 1e-6 }, { opset: 23 });
  await check('RMSNormalization', [f([4, 1030], 81), f([1030], 82)], {}, { opset: 23 });
  await check('InstanceNormalization', [f([2, 3, 17, 19], 83), f([3], 84), f([3], 85)], { epsilon: 1e-3 });
  await check('InstanceNormalization', [f([1, 4, 64, 64], 86, 1, 3), f([4], 87), f([4], 88)], {});
  const bn = (dims: number[], s: number): (In | undefined)[] => {
    const C = dims[1] ?? 1;
    return [f(dims, s), f([C], s + 1), f([C], s + 2), f([C], s + 3), f([C], s + 4, 0.1, 2)];
  };
  await check('BatchNormalization', bn([2, 3, 5, 7], 92), { epsilon: 1e-3 }, { opset: 15 });
  await check('BatchNormalization', bn([4, 16, 8, 8], 97), {}, { opset: 15 });
  await check('BatchNormalization', bn([8, 6], 102), {}, { opset: 9 });
});

test('WebGPU reductions through workgroup memory (subgroups off) where kernels would use subgroups', { timeout: 120_000 }, async () => {
  reduceConfig.subgroups = false;
  try {
    await check('ReduceMean', [f([1, 3, 224, 224], 9), i64([1, 2, 3])]);
    await check('ReduceLogSumExp', [f([3, 50000], 32, -5, 5), i64([1])]);
    await check('ArgMax', [ties([20, 516], 45, 7)], { axis: 1, select_last_index: 1 });
    await check('Softmax', [f([37, 1001], 50, -5, 5)], {}, { opset: 13 });
    await check('LogSoftmax', [f([1, 50257], 56, -10, 10)], {}, { opset: 13 });
    await check('LayerNormalization', [f([2, 7, 768], 60, 2, 4), f([768], 61), f([768], 62)], { epsilon: 1e-12 });
    await check('InstanceNormalization', [f([1, 4, 64, 64], 86, 1, 3), f([4], 87), f([4], 88)], {});
  } finally {
    reduceConfig.subgroups = true;
  }
});
