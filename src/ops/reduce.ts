// Reference kernels: reductions (Reduce*), ArgMax/ArgMin, Softmax/LogSoftmax/Hardmax, CumSum/CumProd, TopK.
import { InputError, UnsupportedError } from '../errors.js';
import { DTYPES, isBig, isFloat, isInt, sizeOf, Tensor, type DType, type TypedArray, type Value } from '../tensor.js';
import { registerOp, type KernelContext } from './registry.js';
import { alloc, clone, fromNumbers, input, normAxis, numbers, optInput, toIntList } from './util.js';

const where = (ctx: KernelContext) => ({ node: ctx.node.name, op: ctx.node.opType });

// --- shared helpers (also used by normalization.ts / loss.ts) -----------------------------------

/**
 * Visits the input of `dims` in flat order as runs of contiguous elements. For each run `cb(inOff, outOff,
 * len, outStep)`: input elements inOff..inOff+len-1 map to output elements outOff + k*outStep (outStep is 0
 * when the innermost run is reduced, 1 otherwise). The output is indexed densely over the non-reduced axes.
 */
export function forEachRun(
  dims: readonly number[], reduced: readonly boolean[],
  cb: (inOff: number, outOff: number, len: number, outStep: number) => void,
): void {
  const sizes: number[] = [];
  const red: boolean[] = [];
  for (let i = 0; i < dims.length; i++) {
    const d = dims[i];
    if (d === 0) return;
    if (d === 1) continue;
    const r = reduced[i];
    if (sizes.length > 0 && red[red.length - 1] === r) sizes[sizes.length - 1] *= d;
    else { sizes.push(d); red.push(r); }
  }
  const m = sizes.length;
  if (m === 0) { cb(0, 0, 1, 0); return; }
  const ost = new Array<number>(m);
  let acc = 1;
  for (let i = m - 1; i >= 0; i--) {
    if (red[i]) ost[i] = 0;
    else { ost[i] = acc; acc *= sizes[i]; }
  }
  const len = sizes[m - 1];
  const step = red[m - 1] ? 0 : 1;
  const outer = m - 1;
  const ctr = new Array<number>(outer).fill(0);
  const runs = sizeOf(sizes) / len;
  let outOff = 0;
  for (let r = 0, inOff = 0; r < runs; r++, inOff += len) {
    cb(inOff, outOff, len, step);
    for (let d = outer - 1; d >= 0; d--) {
      ctr[d]++;
      outOff += ost[d];
      if (ctr[d] < sizes[d]) break;
      outOff -= ost[d] * sizes[d];
      ctr[d] = 0;
    }
  }
}

/** Splits dims at `axis` into (outer, len, inner). */
export function splitAxis(dims: readonly number[], axis: number): [number, number, number] {
  let outer = 1, inner = 1;
  for (let i = 0; i < axis; i++) outer *= dims[i];
  for (let i = axis + 1; i < dims.length; i++) inner *= dims[i];
  return [outer, dims.length === 0 ? 1 : dims[axis], inner];
}

/** Encodes float64 results as a tensor of dtype (rounds/encodes narrow floats, wraps/truncates ints). */
export function encodeResult(dtype: DType, dims: readonly number[], values: Float64Array): Tensor {
  if (dtype === 'float64') return new Tensor(dtype, values, dims);
  return fromNumbers(dtype, dims, values);
}

function requireNumeric(t: Tensor, ctx: KernelContext, allowBool = false): void {
  if (t.type === 'string' || t.type === 'complex64' || t.type === 'complex128' || (t.type === 'bool' && !allowBool)) {
    throw new UnsupportedError(`${ctx.node.opType} does not support ${t.type} tensors`, where(ctx));
  }
}

function requireFloat(t: Tensor, ctx: KernelContext): void {
  if (!isFloat(t.type)) throw new UnsupportedError(`${ctx.node.opType} does not support ${t.type} tensors`, where(ctx));
}

// --- Reduce* -----------------------------------------------------------------------------------

type ReduceKind = 'sum' | 'mean' | 'sumsq' | 'l1' | 'l2' | 'prod' | 'max' | 'min' | 'logsum' | 'logsumexp';

const INT_RANGE: Partial<Record<DType, [number, number]>> = {
  int8: [-128, 127], int16: [-32768, 32767], int32: [-2147483648, 2147483647],
  uint8: [0, 255], uint16: [0, 65535], uint32: [0, 4294967295], bool: [0, 1],
  int4: [-8, 7], uint4: [0, 15], int2: [-2, 1], uint2: [0, 3],
};

/** Axes to reduce, or null for "none given". */
function reduceAxes(inputs: (Value | undefined)[], ctx: KernelContext, inputFrom: number): number[] | null {
  if (ctx.opset < inputFrom) {
    if (!ctx.attr.has('axes')) return null;
    const a = ctx.attr.ints('axes');
    return a.length === 0 ? null : a;
  }
  const t = optInput(inputs, 1);
  if (!t || t.size === 0) return null;
  if (t.type !== 'int64' && t.type !== 'int32') throw new InputError(`axes must be int64, got ${t.type}`, where(ctx));
  return toIntList(t);
}

function reduceKernel(kind: ReduceKind, inputFrom: number) {
  return (inputs: (Value | undefined)[], ctx: KernelContext): Value[] => {
    const x = input(inputs, 0, ctx);
    requireNumeric(x, ctx, kind === 'max' || kind === 'min');
    const keepdims = ctx.attr.int('keepdims', 1) !== 0;
    const noop = ctx.opset >= inputFrom && ctx.attr.int('noop_with_empty_axes', 0) !== 0;
    const axes = reduceAxes(inputs, ctx, inputFrom);
    const rank = x.dims.length;
    if (axes === null && noop) return [clone(x)];
    const reduced = new Array<boolean>(rank).fill(axes === null);
    if (axes !== null) {
      for (const a of axes) {
        const n = normAxis(a, rank, ctx);
        if (rank === 0) continue;
        if (reduced[n]) throw new InputError(`axis ${a} is listed twice in axes [${axes.join(',')}]`, where(ctx));
        reduced[n] = true;
      }
    }
    const outDims: number[] = [];
    let count = 1;
    for (let i = 0; i < rank; i++) {
      if (reduced[i]) { count *= x.dims[i]; if (keepdims) outDims.push(1); }
      else outDims.push(x.dims[i]);
    }
    const outN = sizeOf(outDims);
    const dt = x.type;

    // Exact 64-bit integer path.
    if (isBig(dt) && kind !== 'l2' && kind !== 'logsum' && kind !== 'logsumexp') {
      return [reduceBig(kind, x, reduced, outDims, outN, count)];
    }

    const xv = numbers(x);
    const acc = new Float64Array(outN);
    const intLike = !isFloat(dt);
    let init = 0;
    if (kind === 'prod') init = 1;
    else if (kind === 'max' || kind === 'logsumexp') init = intLike && kind === 'max' ? (INT_RANGE[dt]?.[0] ?? -Infinity) : -Infinity;
    else if (kind === 'min') init = intLike ? (INT_RANGE[dt]?.[1] ?? Infinity) : Infinity;
    if (init !== 0) acc.fill(init);

    const intProd = kind === 'prod' && intLike;
    forEachRun(x.dims, reduced, (i0, o, len, step) => {
      const end = i0 + len;
      switch (kind) {
        case 'sum': case 'mean': case 'logsum':
          if (step === 0) { let s = acc[o]; for (let i = i0; i < end; i++) s += xv[i]; acc[o] = s; }
          else for (let i = i0; i < end; i++, o++) acc[o] += xv[i];
          break;
        case 'sumsq': case 'l2':
          if (step === 0) { let s = acc[o]; for (let i = i0; i < end; i++) { const v = xv[i]; s += v * v; } acc[o] = s; }
          else for (let i = i0; i < end; i++, o++) { const v = xv[i]; acc[o] += v * v; }
          break;
        case 'l1':
          if (step === 0) { let s = acc[o]; for (let i = i0; i < end; i++) s += Math.abs(xv[i]); acc[o] = s; }
          else for (let i = i0; i < end; i++, o++) acc[o] += Math.abs(xv[i]);
          break;
        case 'prod':
          if (intProd) {
            if (step === 0) { let s = acc[o]; for (let i = i0; i < end; i++) s = Math.imul(s, xv[i]); acc[o] = s; }
            else for (let i = i0; i < end; i++, o++) acc[o] = Math.imul(acc[o], xv[i]);
          } else if (step === 0) { let s = acc[o]; for (let i = i0; i < end; i++) s *= xv[i]; acc[o] = s; }
          else for (let i = i0; i < end; i++, o++) acc[o] *= xv[i];
          break;
        case 'max': case 'logsumexp':
          if (step === 0) { let s = acc[o]; for (let i = i0; i < end; i++) { const v = xv[i]; if (v > s || v !== v) s = v; } acc[o] = s; }
          else for (let i = i0; i < end; i++, o++) { const v = xv[i]; if (v > acc[o] || v !== v) acc[o] = v; }
          break;
        case 'min':
          if (step === 0) { let s = acc[o]; for (let i = i0; i < end; i++) { const v = xv[i]; if (v < s || v !== v) s = v; } acc[o] = s; }
          else for (let i = i0; i < end; i++, o++) { const v = xv[i]; if (v < acc[o] || v !== v) acc[o] = v; }
          break;
      }
    });

    if (kind === 'logsumexp') {
      // Second pass: sum of exp(x - max), shifted by the per-output maximum.
      const mx = acc;
      const sum = new Float64Array(outN);
      forEachRun(x.dims, reduced, (i0, o, len, step) => {
        const end = i0 + len;
        if (step === 0) {
          const m = Number.isFinite(mx[o]) ? mx[o] : 0;
          let s = sum[o];
          for (let i = i0; i < end; i++) s += Math.exp(xv[i] - m);
          sum[o] = s;
        } else {
          for (let i = i0; i < end; i++, o++) sum[o] += Math.exp(xv[i] - (Number.isFinite(mx[o]) ? mx[o] : 0));
        }
      });
      for (let o = 0; o < outN; o++) {
        const m = mx[o];
        acc[o] = Number.isFinite(m) ? Math.log(sum[o]) + m : (count === 0 ? -Infinity : Math.log(sum[o]));
      }
    } else if (kind === 'mean') {
      for (let o = 0; o < outN; o++) acc[o] = acc[o] / count;
    } else if (kind === 'l2') {
      for (let o = 0; o < outN; o++) acc[o] = Math.sqrt(acc[o]);
    } else if (kind === 'logsum') {
      for (let o = 0; o < outN; o++) acc[o] = Math.log(acc[o]);
    }
    if (intLike && (kind === 'mean' || kind === 'l2' || kind === 'logsum' || kind === 'logsumexp')) {
      for (let o = 0; o < outN; o++) { const v = acc[o]; acc[o] = Number.isFinite(v) ? Math.trunc(v) : 0; }
    }
    if (dt === 'float32' || (intLike && !isBig(dt) && dt !== 'bool')) {
      const out = alloc(dt, outDims);
      (out.data as Float32Array).set(acc);
      return [out];
    }
    return [encodeResult(dt, outDims, acc)];
  };
}

function reduceBig(kind: ReduceKind, x: Tensor, reduced: boolean[], outDims: number[], outN: number, count: number): Tensor {
  const signed = x.type === 'int64';
  const xv = x.data as BigInt64Array;
  const out = alloc(x.type, outDims);
  const acc = out.data as BigInt64Array;
  if (kind === 'prod') acc.fill(1n);
  else if (kind === 'max') acc.fill(signed ? -(1n << 63n) : 0n);
  else if (kind === 'min') acc.fill(signed ? (1n << 63n) - 1n : (1n << 64n) - 1n);
  forEachRun(x.dims, reduced, (i0, o, len, step) => {
    const end = i0 + len;
    for (let i = i0; i < end; i++) {
      const v = xv[i];
      switch (kind) {
        case 'sum': case 'mean': acc[o] += v; break;
        case 'sumsq': acc[o] += v * v; break;
        case 'l1': acc[o] += v < 0n ? -v : v; break;
        case 'prod': acc[o] *= v; break;
        case 'max': if (v > acc[o]) acc[o] = v; break;
        case 'min': if (v < acc[o]) acc[o] = v; break;
        default: break;
      }
      o += step;
    }
  });
  if (kind === 'mean') {
    const c = BigInt(count);
    for (let o = 0; o < outN; o++) acc[o] = count === 0 ? 0n : acc[o] / c;
  }
  return out;
}

registerOp('ReduceSum', reduceKernel('sum', 13));
registerOp('ReduceMean', reduceKernel('mean', 18));
registerOp('ReduceSumSquare', reduceKernel('sumsq', 18));
registerOp('ReduceL1', reduceKernel('l1', 18));
registerOp('ReduceL2', reduceKernel('l2', 18));
registerOp('ReduceProd', reduceKernel('prod', 18));
registerOp('ReduceMax', reduceKernel('max', 18));
registerOp('ReduceMin', reduceKernel('min', 18));
registerOp('ReduceLogSum', reduceKernel('logsum', 18));
registerOp('ReduceLogSumExp', reduceKernel('logsumexp', 18));

// --- ArgMax / ArgMin ---------------------------------------------------------------------------

function argKernel(isMax: boolean) {
  return (inputs: (Value | undefined)[], ctx: KernelContext): Value[] => {
    const x = input(inputs, 0, ctx);
    requireNumeric(x, ctx);
    const rank = x.dims.length;
    const axis = normAxis(ctx.attr.int('axis', 0), rank, ctx);
    const keepdims = ctx.attr.int('keepdims', 1) !== 0;
    const last = ctx.attr.int('select_last_index', 0) !== 0;
    const [outer, len, inner] = splitAxis(x.dims, axis);
    const outDims = rank === 0 ? [] : x.dims.map((d, i) => (i === axis ? 1 : d)).filter((_, i) => keepdims || i !== axis);
    const out = alloc('int64', outDims);
    const res = out.data as BigInt64Array;
    if (len === 0 && outer * inner > 0) throw new InputError(`cannot take ${ctx.node.opType} over an empty axis ${axis}`, where(ctx));
    // bigint storage is compared directly (relational operators work on bigint); no NaN there.
    const xv = (isBig(x.type) ? x.data : numbers(x)) as unknown as Float64Array;
    for (let o = 0; o < outer; o++) {
      for (let j = 0; j < inner; j++) {
        const base = o * len * inner + j;
        let best = xv[base], bi = 0;
        for (let k = 1; k < len; k++) {
          const v = xv[base + k * inner];
          let take: boolean;
          if (isMax) take = last ? (v >= best || v !== v) : (v > best || (v !== v && best === best));
          else take = last ? (v <= best || v !== v) : (v < best || (v !== v && best === best));
          if (take) { best = v; bi = k; }
        }
        res[o * inner + j] = BigInt(bi);
      }
    }
    return [out];
  };
}

registerOp('ArgMax', argKernel(true));
registerOp('ArgMin', argKernel(false));

// --- Softmax / LogSoftmax / Hardmax ------------------------------------------------------------

type SoftKind = 'softmax' | 'logsoftmax' | 'hardmax';

/** Applies (log)softmax/hardmax along the middle axis of an (outer, len, inner) view; writes float64. */
export function softmaxLines(kind: SoftKind, xv: ArrayLike<number>, out: Float64Array, outer: number, len: number, inner: number): void {
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < inner; j++) {
      const base = o * len * inner + j;
      const end = base + len * inner;
      let mx = -Infinity, mi = base;
      for (let i = base; i < end; i += inner) {
        const v = xv[i];
        if (v > mx || (v !== v && mx === mx)) { mx = v; mi = i; }
      }
      if (kind === 'hardmax') {
        for (let i = base; i < end; i += inner) out[i] = 0;
        if (len > 0) out[mi] = 1;
        continue;
      }
      let s = 0;
      for (let i = base; i < end; i += inner) s += Math.exp(xv[i] - mx);
      if (kind === 'softmax') {
        for (let i = base; i < end; i += inner) out[i] = Math.exp(xv[i] - mx) / s;
      } else {
        const ls = Math.log(s);
        for (let i = base; i < end; i += inner) out[i] = xv[i] - mx - ls;
      }
    }
  }
}

function softKernel(kind: SoftKind) {
  return (inputs: (Value | undefined)[], ctx: KernelContext): Value[] => {
    const x = input(inputs, 0, ctx);
    requireFloat(x, ctx);
    const rank = x.dims.length;
    let outer: number, len: number, inner: number;
    if (ctx.opset < 13) {
      // Coerced to 2-D at axis: [prod(dims[:axis]), prod(dims[axis:])].
      const a = ctx.attr.int('axis', 1);
      const axis = a < 0 ? a + rank : a;
      if (axis < 0 || axis > rank) throw new InputError(`axis ${a} is out of range for rank ${rank}`, where(ctx));
      outer = 1; len = 1; inner = 1;
      for (let i = 0; i < rank; i++) if (i < axis) outer *= x.dims[i]; else len *= x.dims[i];
    } else {
      const axis = normAxis(ctx.attr.int('axis', -1), rank, ctx);
      [outer, len, inner] = splitAxis(x.dims, axis);
    }
    const out = new Float64Array(x.size);
    softmaxLines(kind, numbers(x), out, outer, len, inner);
    return [encodeResult(x.type, x.dims, out)];
  };
}

registerOp('Softmax', softKernel('softmax'));
registerOp('LogSoftmax', softKernel('logsoftmax'));
registerOp('Hardmax', softKernel('hardmax'));

// --- CumSum / CumProd --------------------------------------------------------------------------

function cumKernel(isProd: boolean) {
  return (inputs: (Value | undefined)[], ctx: KernelContext): Value[] => {
    const x = input(inputs, 0, ctx);
    requireNumeric(x, ctx);
    const axT = input(inputs, 1, ctx);
    if (axT.size !== 1) throw new InputError(`axis must be a scalar, got ${axT.size} elements`, where(ctx));
    const rank = x.dims.length;
    const axis = normAxis(toIntList(axT)[0], rank, ctx);
    const exclusive = ctx.attr.int('exclusive', 0) !== 0;
    const reverse = ctx.attr.int('reverse', 0) !== 0;
    const [outer, len, inner] = splitAxis(x.dims, axis);
    const dt = x.type;
    const intLike = isInt(dt);
    if (isBig(dt)) return [cumBig(x, isProd, outer, len, inner, reverse, exclusive)];
    const xv = numbers(x);
    // Results go through a one-element array of the compute type so each step rounds/wraps like the dtype.
    const narrow = dt === 'float32' || isFloat(dt) && dt !== 'float64' ? new Float32Array(1)
      : (DTYPES[dt].make(1) as Float64Array);
    const res = new Float64Array(x.size);
    for (let o = 0; o < outer; o++) {
      for (let j = 0; j < inner; j++) {
        const base = o * len * inner + j;
        let acc = isProd ? 1 : 0;
        for (let t = 0; t < len; t++) {
          const i = base + (reverse ? len - 1 - t : t) * inner;
          const v = xv[i];
          narrow[0] = isProd ? (intLike ? Math.imul(acc, v) : acc * v) : acc + v;
          if (exclusive) { res[i] = acc; acc = narrow[0]; }
          else { acc = narrow[0]; res[i] = acc; }
        }
      }
    }
    if (intLike || dt === 'float32') {
      const out = alloc(dt, x.dims);
      (out.data as Float32Array).set(res);
      return [out];
    }
    return [encodeResult(dt, x.dims, res)];
  };
}

function cumBig(x: Tensor, isProd: boolean, outer: number, len: number, inner: number, reverse: boolean, exclusive: boolean): Tensor {
  const out = alloc(x.type, x.dims);
  const o64 = out.data as BigInt64Array;
  const xv = x.data as BigInt64Array;
  const tmp = (x.type === 'int64' ? new BigInt64Array(1) : new BigUint64Array(1)) as BigInt64Array;
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < inner; j++) {
      const base = o * len * inner + j;
      tmp[0] = isProd ? 1n : 0n;
      for (let t = 0; t < len; t++) {
        const i = base + (reverse ? len - 1 - t : t) * inner;
        if (exclusive) o64[i] = tmp[0];
        tmp[0] = isProd ? tmp[0] * xv[i] : tmp[0] + xv[i];
        if (!exclusive) o64[i] = tmp[0];
      }
    }
  }
  return out;
}

registerOp('CumSum', cumKernel(false));
registerOp('CumProd', cumKernel(true));

// --- TopK --------------------------------------------------------------------------------------

registerOp('TopK', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  requireNumeric(x, ctx);
  const rank = x.dims.length;
  if (rank === 0) throw new InputError('TopK needs an input of rank >= 1', where(ctx));
  const axis = normAxis(ctx.attr.int('axis', -1), rank, ctx);
  let k: number;
  if (ctx.opset < 10) k = ctx.attr.int('k');
  else {
    const kt = input(inputs, 1, ctx);
    if (kt.size !== 1) throw new InputError(`K must hold one value, got ${kt.size}`, where(ctx));
    k = toIntList(kt)[0];
  }
  const largest = ctx.opset < 11 || ctx.attr.int('largest', 1) !== 0;
  const [outer, len, inner] = splitAxis(x.dims, axis);
  if (!Number.isInteger(k) || k < 0 || k > len) {
    throw new InputError(`K=${k} is out of range for axis ${axis} of size ${len}`, where(ctx));
  }
  const outDims = x.dims.map((d, i) => (i === axis ? k : d));
  const vals = alloc(x.type, outDims);
  const idxT = alloc('int64', outDims);
  const vo = vals.data as TypedArray;
  const src = x.data as TypedArray;
  const io = idxT.data as BigInt64Array;
  // Comparison keys: numbers (decoded) or the bigint storage (relational operators work on bigint).
  const xv = (isBig(x.type) ? x.data : numbers(x)) as unknown as Float64Array;
  const line = (isBig(x.type) ? DTYPES[x.type].make(len) : new Float64Array(len)) as Float64Array;
  const order = new Int32Array(len);
  // NaN sorts as the largest value; ties keep the lower index first.
  const cmp = largest
    ? (a: number, b: number) => {
      const va = line[a], vb = line[b];
      if (va !== va) return vb !== vb ? a - b : -1;
      if (vb !== vb) return 1;
      return va > vb ? -1 : va < vb ? 1 : a - b;
    }
    : (a: number, b: number) => {
      const va = line[a], vb = line[b];
      if (va !== va) return vb !== vb ? a - b : 1;
      if (vb !== vb) return -1;
      return va < vb ? -1 : va > vb ? 1 : a - b;
    };
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < inner; j++) {
      const base = o * len * inner + j;
      for (let t = 0; t < len; t++) { line[t] = xv[base + t * inner]; order[t] = t; }
      order.sort(cmp);
      const obase = o * k * inner + j;
      for (let t = 0; t < k; t++) {
        const s = order[t];
        vo[obase + t * inner] = src[base + s * inner];
        io[obase + t * inner] = BigInt(s);
      }
    }
  }
  return [vals, idxT];
});
