// Reference kernels: indexing (Gather*, Scatter*, TensorScatter, OneHot, Compress, NonZero, Unique).
// Element storage is copied directly, so every dtype (strings, bool, int64) works for pure data movement.
import { InputError, UnsupportedError } from '../errors.js';
import { isBig, isEncodedFloat, sizeOf, Tensor, type DType, type TensorData } from '../tensor.js';
import { registerOp, type KernelContext } from './registry.js';
import { fromNumbers, input, numbers, optInput, stridesOf } from './util.js';
import { copyRange, intList, newStore, tableIndex, where, type Store } from './shape.js';

function normAx(axis: number, rank: number, ctx: KernelContext, what = 'axis'): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) throw new InputError(`${what} ${axis} is out of range for rank ${rank}`, where(ctx));
  return a;
}

/** Index values of an int32/int64 tensor as numbers. */
function indexValues(t: Tensor, ctx: KernelContext, i: number): ArrayLike<number> {
  if (t.type !== 'int32' && t.type !== 'int64') throw new InputError(`indices must be int32 or int64, got ${t.type}`, where(ctx, i));
  return t.type === 'int64' ? Float64Array.from(t.data as BigInt64Array, Number) : (t.data as Int32Array);
}

/** Normalizes a possibly negative index against `dim`, or throws an InputError naming it. */
function normIndex(k: number, dim: number, ctx: KernelContext, inp: number, axis: number): number {
  const v = k < 0 ? k + dim : k;
  if (!(v >= 0 && v < dim)) {
    throw new InputError(`index ${k} is out of range for axis ${axis} of dimension ${dim}`, where(ctx, inp));
  }
  return v;
}

// --- Gather / GatherElements / GatherND ----------------------------------------------------------

registerOp('Gather', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const ind = input(inputs, 1, ctx);
  const r = x.dims.length;
  const axis = normAx(ctx.attr.int('axis', 0), r, ctx);
  const iv = indexValues(ind, ctx, 1);
  const D = x.dims[axis];
  const outer = sizeOf(x.dims.slice(0, axis));
  const inner = sizeOf(x.dims.slice(axis + 1));
  const nI = iv.length;
  const outDims = [...x.dims.slice(0, axis), ...ind.dims, ...x.dims.slice(axis + 1)];
  const ks = new Int32Array(nI);
  for (let j = 0; j < nI; j++) ks[j] = normIndex(iv[j], D, ctx, 1, axis);
  const out = newStore(x.type, sizeOf(outDims));
  const o_ = out as Store, s_ = x.data as Store;
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < nI; j++) {
      const dst = (o * nI + j) * inner, src = (o * D + ks[j]) * inner;
      if (inner === 1) o_[dst] = s_[src];
      else copyRange(out, dst, x.data, src, inner);
    }
  }
  return [new Tensor(x.type, out, outDims)];
});

/** For each position of `idxDims`, the data offset with the `axis` coordinate zeroed. */
function baseOffsets(idxDims: readonly number[], dataDims: readonly number[], axis: number): Int32Array {
  const st = stridesOf(dataDims);
  const tables = idxDims.map((d, a) => {
    const tab = new Int32Array(d);
    if (a !== axis) for (let o = 0; o < d; o++) tab[o] = o * st[a];
    return tab;
  });
  return tableIndex(idxDims, tables);
}

function checkElementsShapes(x: Tensor, ind: Tensor, ctx: KernelContext, axis: number): void {
  if (ind.dims.length !== x.dims.length) throw new InputError(`indices have rank ${ind.dims.length}, data has rank ${x.dims.length}`, where(ctx, 1));
  for (let a = 0; a < x.dims.length; a++) {
    if (a !== axis && ind.dims[a] > x.dims[a]) throw new InputError(`indices shape [${ind.dims}] exceeds data shape [${x.dims}] on axis ${a}`, where(ctx, 1));
  }
}

registerOp('GatherElements', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const ind = input(inputs, 1, ctx);
  const r = x.dims.length;
  const axis = normAx(ctx.attr.int('axis', 0), r, ctx);
  checkElementsShapes(x, ind, ctx, axis);
  const iv = indexValues(ind, ctx, 1);
  const base = baseOffsets(ind.dims, x.dims, axis);
  const D = x.dims[axis], s = stridesOf(x.dims)[axis];
  const n = ind.size;
  const out = newStore(x.type, n) as Store;
  const src = x.data as Store;
  for (let i = 0; i < n; i++) out[i] = src[base[i] + normIndex(iv[i], D, ctx, 1, axis) * s];
  return [new Tensor(x.type, out as TensorData, ind.dims)];
});

/** Shared by GatherND / ScatterND: data offsets of every index tuple, and the slice size. */
function ndOffsets(x: Tensor, ind: Tensor, batchDims: number, ctx: KernelContext): { offs: Int32Array; slice: number; k: number } {
  const q = ind.dims.length, r = x.dims.length;
  if (q < 1) throw new InputError('indices must have rank >= 1', where(ctx, 1));
  const k = ind.dims[q - 1];
  if (k + batchDims > r) throw new InputError(`index tuples of length ${k} exceed data rank ${r}`, where(ctx, 1));
  for (let a = 0; a < batchDims; a++) {
    if (ind.dims[a] !== x.dims[a]) throw new InputError(`batch dimension ${a} differs: indices ${ind.dims[a]}, data ${x.dims[a]}`, where(ctx, 1));
  }
  const iv = indexValues(ind, ctx, 1);
  const st = stridesOf(x.dims);
  const slice = sizeOf(x.dims.slice(batchDims + k));
  const nT = k === 0 ? sizeOf(ind.dims.slice(0, q - 1)) : iv.length / k;
  const B = sizeOf(x.dims.slice(0, batchDims));
  const perBatch = B === 0 ? 0 : nT / B;
  const batchStride = batchDims > 0 ? st[batchDims - 1] : 0;
  const offs = new Int32Array(nT);
  for (let t = 0; t < nT; t++) {
    const b = perBatch === 0 ? 0 : Math.floor(t / perBatch);
    let off = b * batchStride;
    for (let j = 0; j < k; j++) {
      const ax = batchDims + j;
      off += normIndex(iv[t * k + j], x.dims[ax], ctx, 1, ax) * st[ax];
    }
    offs[t] = off;
  }
  return { offs, slice, k };
}

registerOp('GatherND', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const ind = input(inputs, 1, ctx);
  const b = ctx.opset >= 12 ? ctx.attr.int('batch_dims', 0) : 0;
  const q = ind.dims.length;
  if (b < 0 || b >= Math.min(q, x.dims.length + 1)) throw new InputError(`batch_dims ${b} is out of range`, where(ctx));
  const { offs, slice, k } = ndOffsets(x, ind, b, ctx);
  const outDims = [...ind.dims.slice(0, q - 1), ...x.dims.slice(b + k)];
  const out = newStore(x.type, sizeOf(outDims));
  for (let t = 0; t < offs.length; t++) copyRange(out, t * slice, x.data, offs[t], slice);
  return [new Tensor(x.type, out, outDims)];
});

// --- Scatter family ------------------------------------------------------------------------------

type Combine = (a: any, b: any) => any; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Element combiner for a reduction on storage values of `type` (encoded floats are pre-decoded). */
function combiner(type: DType, red: string, ctx: KernelContext): Combine | null {
  if (red === 'none') return null;
  if (type === 'string') throw new UnsupportedError(`reduction '${red}' on strings is not supported`, where(ctx));
  if (type === 'bool') {
    if (red === 'add' || red === 'max') return (a: number, b: number) => (a | b);
    if (red === 'mul' || red === 'min') return (a: number, b: number) => (a & b);
  }
  if (isBig(type)) {
    switch (red) {
      case 'add': return (a: bigint, b: bigint) => a + b;
      case 'mul': return (a: bigint, b: bigint) => a * b;
      case 'max': return (a: bigint, b: bigint) => (b > a ? b : a);
      case 'min': return (a: bigint, b: bigint) => (b < a ? b : a);
    }
  }
  const maxF = (a: number, b: number) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : b > a ? b : a);
  const minF = (a: number, b: number) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : b < a ? b : a);
  switch (red) {
    case 'add': return (a: number, b: number) => a + b;
    case 'mul':
      if (type === 'int32') return (a: number, b: number) => Math.imul(a, b);
      if (type === 'uint32') return (a: number, b: number) => Math.imul(a, b) >>> 0;
      return (a: number, b: number) => a * b;
    case 'max': return maxF;
    case 'min': return minF;
  }
  throw new UnsupportedError(`reduction '${red}' is not supported`, where(ctx));
}

/** Runs a scatter body on a writable copy of data; handles encoded floats via float32. */
function scatterRun(x: Tensor, upd: Tensor, red: string, ctx: KernelContext,
  body: (out: Store, src: Store, f: Combine | null) => void): Tensor {
  if (upd.type !== x.type) throw new InputError(`updates have dtype ${upd.type}, data has ${x.type}`, where(ctx, 2));
  const f = combiner(x.type, red, ctx);
  if (f && isEncodedFloat(x.type)) {
    const out = Float32Array.from(numbers(x));
    body(out as unknown as Store, numbers(upd) as unknown as Store, f);
    return fromNumbers(x.type, x.dims, out);
  }
  const out = newStore(x.type, x.size);
  copyRange(out, 0, x.data, 0, x.size);
  body(out as Store, upd.data as Store, f);
  return new Tensor(x.type, out, x.dims);
}

function scatterElements(inputs: (unknown)[], ctx: KernelContext, red: string): Tensor[] {
  const ins = inputs as Parameters<typeof input>[0];
  const x = input(ins, 0, ctx);
  const ind = input(ins, 1, ctx);
  const upd = input(ins, 2, ctx);
  const r = x.dims.length;
  const axis = normAx(ctx.attr.int('axis', 0), r, ctx);
  checkElementsShapes(x, ind, ctx, axis);
  if (upd.dims.length !== ind.dims.length || upd.dims.some((d, i) => d !== ind.dims[i])) {
    throw new InputError(`updates shape [${upd.dims}] differs from indices shape [${ind.dims}]`, where(ctx, 2));
  }
  const iv = indexValues(ind, ctx, 1);
  const base = baseOffsets(ind.dims, x.dims, axis);
  const D = x.dims[axis], s = stridesOf(x.dims)[axis];
  const n = ind.size;
  const pos = new Int32Array(n);
  for (let i = 0; i < n; i++) pos[i] = base[i] + normIndex(iv[i], D, ctx, 1, axis) * s;
  return [scatterRun(x, upd, red, ctx, (out, src, f) => {
    if (f) for (let i = 0; i < n; i++) out[pos[i]] = f(out[pos[i]], src[i]);
    else for (let i = 0; i < n; i++) out[pos[i]] = src[i];
  })];
}

registerOp('Scatter', (inputs, ctx) => scatterElements(inputs, ctx, 'none'));
registerOp('ScatterElements', (inputs, ctx) =>
  scatterElements(inputs, ctx, ctx.opset >= 16 ? ctx.attr.string('reduction', 'none') : 'none'));

registerOp('ScatterND', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const ind = input(inputs, 1, ctx);
  const upd = input(inputs, 2, ctx);
  const red = ctx.opset >= 16 ? ctx.attr.string('reduction', 'none') : 'none';
  const { offs, slice, k } = ndOffsets(x, ind, 0, ctx);
  const q = ind.dims.length;
  const want = [...ind.dims.slice(0, q - 1), ...x.dims.slice(k)];
  if (upd.dims.length !== want.length || upd.dims.some((d, i) => d !== want[i])) {
    throw new InputError(`updates shape [${upd.dims}] should be [${want}]`, where(ctx, 2));
  }
  return [scatterRun(x, upd, red, ctx, (out, src, f) => {
    for (let t = 0; t < offs.length; t++) {
      const o = offs[t], u = t * slice;
      if (f) for (let j = 0; j < slice; j++) out[o + j] = f(out[o + j], src[u + j]);
      else for (let j = 0; j < slice; j++) out[o + j] = src[u + j];
    }
  })];
});

registerOp('TensorScatter', (inputs, ctx) => {
  const past = input(inputs, 0, ctx);
  const upd = input(inputs, 1, ctx);
  const wiT = optInput(inputs, 2);
  const mode = ctx.attr.string('mode', 'linear');
  if (mode !== 'linear' && mode !== 'circular') throw new UnsupportedError(`mode '${mode}' is not supported`, where(ctx));
  const r = past.dims.length;
  const axis = normAx(ctx.attr.int('axis', -2), r, ctx);
  if (axis === 0) throw new InputError('axis must not be the batch axis 0', where(ctx));
  if (upd.type !== past.type) throw new InputError(`update has dtype ${upd.type}, past_cache has ${past.type}`, where(ctx, 1));
  if (upd.dims.length !== r || upd.dims.some((d, i) => i !== axis && d !== past.dims[i])) {
    throw new InputError(`update shape [${upd.dims}] does not match past_cache shape [${past.dims}] outside axis ${axis}`, where(ctx, 1));
  }
  const B = past.dims[0];
  const M = past.dims[axis], S = upd.dims[axis];
  const wi = wiT ? intList(wiT) : new Array<number>(B).fill(0);
  if (wi.length !== B) throw new InputError(`write_indices has ${wi.length} entries, batch is ${B}`, where(ctx, 2));
  const outer = sizeOf(past.dims.slice(0, axis));
  const inner = sizeOf(past.dims.slice(axis + 1));
  const perB = B === 0 ? 0 : outer / B;
  const out = newStore(past.type, past.size);
  copyRange(out, 0, past.data, 0, past.size);
  for (let b = 0; b < B; b++) {
    const w0 = wi[b];
    if (w0 < 0 || (mode === 'linear' ? w0 + S > M : w0 >= M)) {
      throw new InputError(`write index ${w0} for batch ${b} is out of range for a cache of length ${M} and update of length ${S}`, where(ctx, 2));
    }
  }
  for (let o = 0; o < outer; o++) {
    const b = Math.floor(o / perB);
    for (let j = 0; j < S; j++) {
      const t = mode === 'linear' ? wi[b] + j : (wi[b] + j) % M;
      copyRange(out, (o * M + t) * inner, upd.data, (o * S + j) * inner, inner);
    }
  }
  return [new Tensor(past.type, out, past.dims)];
});

// --- OneHot / Compress / NonZero / Unique --------------------------------------------------------

registerOp('OneHot', (inputs, ctx) => {
  const ind = input(inputs, 0, ctx);
  const depthT = input(inputs, 1, ctx);
  const vals = input(inputs, 2, ctx);
  if (vals.size !== 2) throw new InputError(`values must have 2 elements, has ${vals.size}`, where(ctx, 2));
  if (depthT.size !== 1) throw new InputError('depth must be a scalar', where(ctx, 1));
  const depth = Math.trunc(intList(depthT)[0]);
  if (!(depth >= 0)) throw new InputError(`depth ${depth} must be non-negative`, where(ctx, 1));
  const r = ind.dims.length;
  let axis = ctx.attr.int('axis', -1);
  if (axis < 0) axis += r + 1;
  if (axis < 0 || axis > r) throw new InputError(`axis ${ctx.attr.int('axis', -1)} is out of range for output rank ${r + 1}`, where(ctx));
  const iv = intList(ind);
  const outDims = [...ind.dims.slice(0, axis), depth, ...ind.dims.slice(axis)];
  const outer = sizeOf(ind.dims.slice(0, axis));
  const inner = sizeOf(ind.dims.slice(axis));
  const n = sizeOf(outDims);
  const out = newStore(vals.type, n) as Store;
  const vs = vals.data as Store;
  const off = vs[0], on = vs[1];
  for (let i = 0; i < n; i++) out[i] = off;
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < inner; j++) {
      let k = Math.trunc(iv[o * inner + j]);
      if (k < 0) k += depth;
      if (k >= 0 && k < depth) out[(o * depth + k) * inner + j] = on;
    }
  }
  return [new Tensor(vals.type, out as TensorData, outDims)];
});

registerOp('Compress', (inputs, ctx) => {
  let x = input(inputs, 0, ctx);
  const cond = input(inputs, 1, ctx);
  const c = cond.type === 'bool' ? (cond.data as Uint8Array) : numbers(cond);
  let axis: number;
  if (ctx.attr.has('axis')) axis = normAx(ctx.attr.int('axis'), x.dims.length, ctx);
  else { x = x.reshape([x.size]); axis = 0; }
  const D = x.dims[axis];
  const sel: number[] = [];
  for (let i = 0; i < c.length; i++) {
    if (c[i]) {
      if (i >= D) throw new InputError(`condition selects index ${i}, beyond dimension ${D} of axis ${axis}`, where(ctx, 1));
      sel.push(i);
    }
  }
  const outer = sizeOf(x.dims.slice(0, axis));
  const inner = sizeOf(x.dims.slice(axis + 1));
  const outDims = x.dims.slice();
  outDims[axis] = sel.length;
  const out = newStore(x.type, sizeOf(outDims));
  let p = 0;
  for (let o = 0; o < outer; o++) {
    for (const k of sel) { copyRange(out, p, x.data, (o * D + k) * inner, inner); p += inner; }
  }
  return [new Tensor(x.type, out, outDims)];
});

registerOp('NonZero', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const n = x.size;
  const nz = new Uint8Array(n);
  let cnt = 0;
  if (x.type === 'string') {
    const d = x.data as string[];
    for (let i = 0; i < n; i++) if (d[i] !== '') { nz[i] = 1; cnt++; }
  } else if (isBig(x.type)) {
    const d = x.data as BigInt64Array;
    for (let i = 0; i < n; i++) if (d[i] !== 0n) { nz[i] = 1; cnt++; }
  } else {
    const d = numbers(x);
    for (let i = 0; i < n; i++) if (d[i] !== 0) { nz[i] = 1; cnt++; }
  }
  const dims = x.dims.length === 0 ? [1] : x.dims;
  const r = dims.length;
  const st = stridesOf(dims);
  const out = new BigInt64Array(r * cnt);
  let p = 0;
  for (let i = 0; i < n; i++) {
    if (!nz[i]) continue;
    let rem = i;
    for (let a = 0; a < r; a++) {
      const q = Math.floor(rem / st[a]);
      rem -= q * st[a];
      out[a * cnt + p] = BigInt(q);
    }
    p++;
  }
  return [new Tensor('int64', out, [r, cnt])];
});

registerOp('Unique', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const sorted = ctx.attr.int('sorted', 1) !== 0;
  let axis = -1;
  if (ctx.attr.has('axis')) axis = normAx(ctx.attr.int('axis'), x.dims.length, ctx);
  const dims = axis < 0 ? [x.size] : x.dims;
  const ax = axis < 0 ? 0 : axis;
  const D = dims[ax];
  const outer = sizeOf(dims.slice(0, ax));
  const inner = sizeOf(dims.slice(ax + 1));
  const vals: Store = x.type === 'string' || isBig(x.type) ? (x.data as Store) : (numbers(x) as unknown as Store);
  const rowLen = D * inner;
  // Lexicographic comparison of slices s1, s2 along the axis (in C order of the remaining dims).
  const cmp = (s1: number, s2: number): number => {
    for (let o = 0; o < outer; o++) {
      const b = o * rowLen;
      for (let j = 0; j < inner; j++) {
        const a = vals[b + s1 * inner + j] as number, c = vals[b + s2 * inner + j] as number;
        if (a < c) return -1;
        if (a > c) return 1;
      }
    }
    return 0;
  };
  const order = Array.from({ length: D }, (_, i) => i);
  order.sort((a, b) => cmp(a, b) || a - b);
  // Group equal slices: group id per slice, first occurrence and count per group (in sorted order).
  const groupOf = new Int32Array(D);
  const first: number[] = [];
  const counts: number[] = [];
  for (let i = 0; i < D; i++) {
    const s = order[i];
    if (i > 0 && cmp(order[i - 1], s) === 0) {
      const g = first.length - 1;
      groupOf[s] = g;
      counts[g]++;
    } else {
      groupOf[s] = first.length;
      first.push(s);
      counts.push(1);
    }
  }
  const U = first.length;
  // Output order of groups: sorted, or by first occurrence.
  const gOrder = Array.from({ length: U }, (_, i) => i);
  if (!sorted) gOrder.sort((a, b) => first[a] - first[b]);
  const rank = new Int32Array(U);
  for (let i = 0; i < U; i++) rank[gOrder[i]] = i;
  const outDims = dims.slice();
  outDims[ax] = U;
  const y = newStore(x.type, sizeOf(outDims));
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < U; i++) {
      copyRange(y, (o * U + i) * inner, x.data, (o * D + first[gOrder[i]]) * inner, inner);
    }
  }
  const idxOut = new BigInt64Array(U), cntOut = new BigInt64Array(U), inv = new BigInt64Array(D);
  for (let i = 0; i < U; i++) { idxOut[i] = BigInt(first[gOrder[i]]); cntOut[i] = BigInt(counts[gOrder[i]]); }
  for (let s = 0; s < D; s++) inv[s] = BigInt(rank[groupOf[s]]);
  return [
    new Tensor(x.type, y, outDims),
    new Tensor('int64', idxOut, [U]),
    new Tensor('int64', inv, [D]),
    new Tensor('int64', cntOut, [U]),
  ];
});
