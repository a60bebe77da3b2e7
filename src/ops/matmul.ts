// Reference kernels: matrix products (MatMul, Gemm, MatMulInteger, QLinearMatMul, Einsum, Det).
import { InputError, UnsupportedError } from '../errors.js';
import { isBig, isFloat, sizeOf, Tensor, type DType } from '../tensor.js';
import { registerOp, type KernelContext } from './registry.js';
import { alloc, broadcastShape, fromNumbers, input, numbers, optInput, stridesOf } from './util.js';

type Num = ArrayLike<number>;

// --- shared helpers (exported for the conv module of the same family) ---------------------------

export function whereOf(ctx: KernelContext) {
  return { node: ctx.node.name, op: ctx.node.opType };
}

/** Round half to even (numpy rint / ONNX quantization rounding). */
export function rintEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** Saturation range of an integer quantized dtype. */
export function qRange(t: DType, ctx: KernelContext): [number, number] {
  switch (t) {
    case 'int8': return [-128, 127];
    case 'uint8': return [0, 255];
    case 'int16': return [-32768, 32767];
    case 'uint16': return [0, 65535];
    case 'int4': return [-8, 7];
    case 'uint4': return [0, 15];
    case 'int32': return [-2147483648, 2147483647];
    default: throw new UnsupportedError(`quantized type ${t} is not supported`, whereOf(ctx));
  }
}

/** Values of an optional zero-point tensor (default 0) as numbers. */
export function zeroPoints(t: Tensor | undefined): Num {
  return t ? numbers(t) : new Float64Array(1);
}

/**
 * C[cOff + i*N + j] += sum_k A[aOff + i*K + k] * Bt[bOff + j*K + k]: A row-major [M,K], B given transposed as
 * Bt [N,K] (both contiguous along k), C a Float64Array accumulator. 4x4 register tiles over (i, j).
 */
export function gemmTiled(A: Num, aOff: number, Bt: Num, bOff: number, C: Float64Array, cOff: number,
  M: number, K: number, N: number): void {
  const M4 = M - (M % 4), N4 = N - (N % 4);
  for (let i = 0; i < M4; i += 4) {
    const a0 = aOff + i * K, a1 = a0 + K, a2 = a1 + K, a3 = a2 + K;
    for (let j = 0; j < N4; j += 4) {
      const b0 = bOff + j * K, b1 = b0 + K, b2 = b1 + K, b3 = b2 + K;
      let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
      let c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
      for (let k = 0; k < K; k++) {
        const x0 = A[a0 + k], x1 = A[a1 + k], x2 = A[a2 + k], x3 = A[a3 + k];
        const y0 = Bt[b0 + k], y1 = Bt[b1 + k], y2 = Bt[b2 + k], y3 = Bt[b3 + k];
        c00 += x0 * y0; c01 += x0 * y1; c02 += x0 * y2; c03 += x0 * y3;
        c10 += x1 * y0; c11 += x1 * y1; c12 += x1 * y2; c13 += x1 * y3;
        c20 += x2 * y0; c21 += x2 * y1; c22 += x2 * y2; c23 += x2 * y3;
        c30 += x3 * y0; c31 += x3 * y1; c32 += x3 * y2; c33 += x3 * y3;
      }
      let o = cOff + i * N + j;
      C[o] += c00; C[o + 1] += c01; C[o + 2] += c02; C[o + 3] += c03; o += N;
      C[o] += c10; C[o + 1] += c11; C[o + 2] += c12; C[o + 3] += c13; o += N;
      C[o] += c20; C[o + 1] += c21; C[o + 2] += c22; C[o + 3] += c23; o += N;
      C[o] += c30; C[o + 1] += c31; C[o + 2] += c32; C[o + 3] += c33;
    }
    for (let j = N4; j < N; j++) {
      const b0 = bOff + j * K;
      let c0 = 0, c1 = 0, c2 = 0, c3 = 0;
      for (let k = 0; k < K; k++) {
        const y = Bt[b0 + k];
        c0 += A[a0 + k] * y; c1 += A[a1 + k] * y; c2 += A[a2 + k] * y; c3 += A[a3 + k] * y;
      }
      const o = cOff + i * N + j;
      C[o] += c0; C[o + N] += c1; C[o + 2 * N] += c2; C[o + 3 * N] += c3;
    }
  }
  for (let i = M4; i < M; i++) {
    const a0 = aOff + i * K;
    for (let j = 0; j < N; j++) {
      const b0 = bOff + j * K;
      let c = 0;
      for (let k = 0; k < K; k++) c += A[a0 + k] * Bt[b0 + k];
      C[cOff + i * N + j] += c;
    }
  }
}

/** Copies v into a Float64Array (no copy when it already is one). */
export function asF64(v: Num): Float64Array {
  return v instanceof Float64Array ? v : Float64Array.from(v);
}

/** Transposes each of `batch` row-major [rows, cols] matrices into a Float64Array of [cols, rows] matrices. */
export function transposeBatched(v: Num, batch: number, rows: number, cols: number): Float64Array {
  const o = new Float64Array(batch * rows * cols);
  const sz = rows * cols;
  for (let b = 0; b < batch; b++) {
    const base = b * sz;
    for (let i = 0; i < rows; i++) {
      const ri = base + i * cols;
      for (let j = 0; j < cols; j++) o[base + j * rows + i] = v[ri + j];
    }
  }
  return o;
}

/** Same as gemmAcc with int32 wrap-around arithmetic (exact int32/uint32 semantics). */
function gemmAccI32(A: Num, aOff: number, B: Num, bOff: number, C: Int32Array, cOff: number,
  M: number, K: number, N: number): void {
  for (let i = 0; i < M; i++) {
    const ci = cOff + i * N;
    const ai = aOff + i * K;
    for (let k = 0; k < K; k++) {
      const a = A[ai + k] | 0;
      if (a === 0) continue;
      const bk = bOff + k * N;
      for (let j = 0; j < N; j++) C[ci + j] = (C[ci + j] + Math.imul(a, B[bk + j] | 0)) | 0;
    }
  }
}

function gemmAccBig(A: BigInt64Array | BigUint64Array, aOff: number, B: BigInt64Array | BigUint64Array, bOff: number,
  C: bigint[], cOff: number, M: number, K: number, N: number): void {
  for (let i = 0; i < M; i++) {
    for (let k = 0; k < K; k++) {
      const a = A[aOff + i * K + k];
      if (a === 0n) continue;
      const bk = bOff + k * N;
      for (let j = 0; j < N; j++) C[cOff + i * N + j] += a * B[bk + j];
    }
  }
}

function maxAbs(v: Num): number {
  let m = 0;
  for (let i = 0; i < v.length; i++) { const a = Math.abs(v[i]); if (a > m) m = a; }
  return m;
}

interface BatchPlan {
  outDims: number[];
  batch: number;
  aOffs: Int32Array;
  bOffs: Int32Array;
  M: number; K: number; N: number;
}

/** Shapes for numpy-style matmul of dims a and b (1-D operands promoted and the extra dim dropped). */
function planMatMul(aDims: readonly number[], bDims: readonly number[], ctx: KernelContext): BatchPlan {
  if (aDims.length === 0 || bDims.length === 0) throw new InputError('MatMul operands must have rank >= 1', whereOf(ctx));
  const a = aDims.length === 1 ? [1, aDims[0]] : [...aDims];
  const b = bDims.length === 1 ? [bDims[0], 1] : [...bDims];
  const M = a[a.length - 2], K = a[a.length - 1], K2 = b[b.length - 2], N = b[b.length - 1];
  if (K !== K2) {
    throw new InputError(`MatMul inner dimensions differ: [${aDims.join(',')}] x [${bDims.join(',')}]`, whereOf(ctx));
  }
  const aB = a.slice(0, -2), bB = b.slice(0, -2);
  const bs = broadcastShape(aB, bB);
  const batch = sizeOf(bs);
  const aOffs = batchOffsets(aB, bs, M * K);
  const bOffs = batchOffsets(bB, bs, K * N);
  const outDims = [...bs];
  if (aDims.length !== 1) outDims.push(M);
  if (bDims.length !== 1) outDims.push(N);
  return { outDims, batch, aOffs, bOffs, M, K, N };
}

/** For batch dims `dims` broadcast to `outDims`, the element offset of each batch's matrix. */
function batchOffsets(dims: readonly number[], outDims: readonly number[], matSize: number): Int32Array {
  const n = sizeOf(outDims);
  const res = new Int32Array(n);
  const rank = outDims.length;
  const st = new Array<number>(rank).fill(0);
  const inStr = stridesOf(dims);
  for (let i = 0; i < dims.length; i++) st[rank - dims.length + i] = dims[i] === 1 ? 0 : inStr[i] * matSize;
  const ctr = new Array<number>(rank).fill(0);
  let off = 0;
  for (let i = 0; i < n; i++) {
    res[i] = off;
    for (let d = rank - 1; d >= 0; d--) {
      ctr[d]++; off += st[d];
      if (ctr[d] < outDims[d]) break;
      off -= st[d] * ctr[d]; ctr[d] = 0;
    }
  }
  return res;
}

/** Numeric batched matmul in float64 (the values given as number arrays). */
function matmulF64(A: Num, B: Num, p: BatchPlan): Float64Array {
  const { M, K, N } = p;
  const out = new Float64Array(p.batch * M * N);
  if (out.length === 0 || K === 0) return out;
  const Af = asF64(A);
  const Bt = transposeBatched(B, B.length / (K * N), K, N);
  for (let t = 0; t < p.batch; t++) gemmTiled(Af, p.aOffs[t], Bt, p.bOffs[t], out, t * M * N, M, K, N);
  return out;
}

function matmulTyped(a: Tensor, b: Tensor, p: BatchPlan, outType: DType, ctx: KernelContext): Tensor {
  const { M, K, N } = p;
  const t = a.type;
  if (t === 'int32' || t === 'uint32') {
    const out = new Int32Array(p.batch * M * N);
    const A = a.data as Int32Array, B = b.data as Int32Array;
    for (let q = 0; q < p.batch; q++) gemmAccI32(A, p.aOffs[q], B, p.bOffs[q], out, q * M * N, M, K, N);
    const res = alloc(outType, p.outDims);
    (res.data as Int32Array | Uint32Array).set(t === 'uint32' ? new Uint32Array(out.buffer) : out);
    return res;
  }
  if (isBig(t)) {
    const A = numbers(a), B = numbers(b);
    if (maxAbs(A) * maxAbs(B) * K < 2 ** 53) return fromNumbers(outType, p.outDims, matmulF64(A, B, p));
    const C = new Array<bigint>(p.batch * M * N).fill(0n);
    const Ab = a.data as BigInt64Array, Bb = b.data as BigInt64Array;
    for (let q = 0; q < p.batch; q++) gemmAccBig(Ab, p.aOffs[q], Bb, p.bOffs[q], C, q * M * N, M, K, N);
    const res = alloc(outType, p.outDims);
    const o = res.data as BigInt64Array;
    for (let i = 0; i < C.length; i++) o[i] = t === 'int64' ? BigInt.asIntN(64, C[i]) : BigInt.asUintN(64, C[i]);
    return res;
  }
  if (!isFloat(t) && t !== 'int8' && t !== 'uint8' && t !== 'int16' && t !== 'uint16') {
    throw new UnsupportedError(`MatMul on ${t} is not supported`, whereOf(ctx));
  }
  const acc = matmulF64(numbers(a), numbers(b), p);
  if (!isFloat(t)) {
    // small ints: wrap like the dtype does
    const res = alloc(outType, p.outDims);
    const o = res.data as Int8Array;
    for (let i = 0; i < acc.length; i++) o[i] = acc[i];
    return res;
  }
  return fromNumbers(outType, p.outDims, acc);
}

registerOp('MatMul', (inputs, ctx) => {
  const a = input(inputs, 0, ctx), b = input(inputs, 1, ctx);
  if (a.type !== b.type) throw new InputError(`MatMul operand types differ: ${a.type} and ${b.type}`, whereOf(ctx));
  const p = planMatMul(a.dims, b.dims, ctx);
  return [matmulTyped(a, b, p, a.type, ctx)];
});

// --- Gemm --------------------------------------------------------------------------------------

registerOp('Gemm', (inputs, ctx) => {
  const a = input(inputs, 0, ctx), b = input(inputs, 1, ctx);
  const c = optInput(inputs, 2);
  const transA = ctx.attr.int('transA', 0), transB = ctx.attr.int('transB', 0);
  const alpha = ctx.attr.float('alpha', 1), beta = ctx.attr.float('beta', 1);
  if (a.dims.length !== 2 || b.dims.length !== 2) {
    throw new InputError(`Gemm needs 2-D A and B, got [${a.dims.join(',')}] and [${b.dims.join(',')}]`, whereOf(ctx));
  }
  const t = a.type;
  if (isBig(t)) {
    // exactness guard for the float64 path
  } else if (!isFloat(t) && t !== 'int32' && t !== 'uint32') {
    throw new UnsupportedError(`Gemm on ${t} is not supported`, whereOf(ctx));
  }
  const M = transA ? a.dims[1] : a.dims[0], K = transA ? a.dims[0] : a.dims[1];
  const K2 = transB ? b.dims[1] : b.dims[0], N = transB ? b.dims[0] : b.dims[1];
  if (K !== K2) throw new InputError(`Gemm inner dimensions differ (${K} vs ${K2})`, whereOf(ctx));
  let A: Num = numbers(a), B: Num = numbers(b);
  if (!isFloat(t) && maxAbs(A) * maxAbs(B) * K * Math.abs(alpha) >= 2 ** 53) {
    throw new UnsupportedError(`Gemm on ${t} with values this large is not supported (inexact)`, whereOf(ctx));
  }
  A = transA ? transposeBatched(A, 1, a.dims[0], a.dims[1]) : asF64(A);
  B = transB ? asF64(B) : transposeBatched(B, 1, b.dims[0], b.dims[1]);
  const acc = new Float64Array(M * N);
  gemmTiled(A, 0, B, 0, acc, 0, M, K, N);
  if (alpha !== 1) for (let i = 0; i < acc.length; i++) acc[i] *= alpha;
  if (c && beta !== 0 && c.size > 0) {
    const cd = c.dims;
    if (cd.length > 2) throw new InputError(`Gemm C has rank ${cd.length} > 2`, whereOf(ctx));
    const cm = cd.length === 2 ? cd[0] : 1, cn = cd.length >= 1 ? cd[cd.length - 1] : 1;
    if ((cm !== 1 && cm !== M) || (cn !== 1 && cn !== N)) {
      throw new InputError(`Gemm C of shape [${cd.join(',')}] does not broadcast to [${M},${N}]`, whereOf(ctx));
    }
    const C = numbers(c);
    const sm = cm === 1 ? 0 : cn, sn = cn === 1 ? 0 : 1;
    for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) acc[i * N + j] += beta * C[i * sm + j * sn];
  }
  if (!isFloat(t)) {
    if (t === 'int32' || t === 'uint32') {
      const res = alloc(t, [M, N]);
      const o = res.data as Int32Array;
      for (let i = 0; i < acc.length; i++) o[i] = Math.trunc(acc[i]);
      return [res];
    }
  }
  return [fromNumbers(t, [M, N], acc)];
});

// --- MatMulInteger / QLinearMatMul ----------------------------------------------------------------

/** (values - zero point) where the zero point is a scalar, or per row (axis -2) / per column (axis -1). */
function subZeroPoint(v: Num, dims: readonly number[], zp: Tensor | undefined, perRow: boolean, ctx: KernelContext,
  what: string): Float64Array {
  const out = new Float64Array(v.length);
  if (!zp || zp.size === 1) {
    const z = zp ? numbers(zp)[0] : 0;
    for (let i = 0; i < v.length; i++) out[i] = v[i] - z;
    return out;
  }
  const Z = numbers(zp);
  const r = dims.length;
  const rows = r >= 2 ? dims[r - 2] : 1, cols = dims[r - 1];
  const len = perRow ? rows : cols;
  if (Z.length === len) {
    for (let i = 0; i < v.length; i++) {
      const rc = perRow ? Math.floor(i / cols) % rows : i % cols;
      out[i] = v[i] - Z[rc];
    }
    return out;
  }
  if (Z.length * rows * cols === v.length) {
    // a zero point per matrix row/col over batch dims: [..., rows, 1] or [..., 1, cols]
    throw new UnsupportedError(`${what} zero point of shape [${zp.dims.join(',')}] is not supported`, whereOf(ctx));
  }
  throw new InputError(`${what} zero point of shape [${zp.dims.join(',')}] does not match [${dims.join(',')}]`, whereOf(ctx));
}

registerOp('MatMulInteger', (inputs, ctx) => {
  const a = input(inputs, 0, ctx), b = input(inputs, 1, ctx);
  const azp = optInput(inputs, 2), bzp = optInput(inputs, 3);
  const p = planMatMul(a.dims, b.dims, ctx);
  const A = subZeroPoint(numbers(a), a.dims, azp, true, ctx, 'a');
  const B = subZeroPoint(numbers(b), b.dims, bzp, false, ctx, 'b');
  const acc = matmulF64(A, B, p);
  const res = alloc('int32', p.outDims);
  const o = res.data as Int32Array;
  for (let i = 0; i < acc.length; i++) o[i] = acc[i];
  return [res];
});

/** Quantizes float64 values with per-tensor or per-axis scales into the dtype of yzp. */
export function requantize(acc: Float64Array, scale: Num, scaleAxisLen: number, scaleStride: number,
  yzpT: Tensor | undefined, outType: DType, dims: readonly number[], ctx: KernelContext): Tensor {
  const [lo, hi] = qRange(outType, ctx);
  const res = alloc(outType, dims);
  const o = res.data as Int8Array;
  const Z = yzpT ? numbers(yzpT) : new Float64Array(1);
  const perZ = Z.length > 1;
  for (let i = 0; i < acc.length; i++) {
    const ch = scaleAxisLen > 1 ? Math.floor(i / scaleStride) % scaleAxisLen : 0;
    const s = scale[scale.length > 1 ? ch : 0];
    let q = rintEven(acc[i] * s) + (perZ ? Z[ch] : Z[0]);
    if (q < lo) q = lo; else if (q > hi) q = hi;
    o[i] = q;
  }
  return res;
}

registerOp('QLinearMatMul', (inputs, ctx) => {
  const a = input(inputs, 0, ctx), as = input(inputs, 1, ctx), azp = optInput(inputs, 2);
  const b = input(inputs, 3, ctx), bs = input(inputs, 4, ctx), bzp = optInput(inputs, 5);
  const ys = input(inputs, 6, ctx), yzp = optInput(inputs, 7);
  const outType = yzp ? yzp.type : 'uint8';
  if (!isFloat(a.type) && !['int8', 'uint8'].includes(a.type)) unsupportedType(a.type, ctx);
  if (isFloat(a.type) || isFloat(outType)) {
    throw new UnsupportedError(`QLinearMatMul with float8 inputs is not supported`, whereOf(ctx));
  }
  const p = planMatMul(a.dims, b.dims, ctx);
  const A = subZeroPoint(numbers(a), a.dims, azp, true, ctx, 'a');
  const B = subZeroPoint(numbers(b), b.dims, bzp, false, ctx, 'b');
  const acc = matmulF64(A, B, p);
  const AS = numbers(as), BS = numbers(bs), YS = numbers(ys);
  if (AS.length !== 1 || YS.length !== 1) {
    throw new UnsupportedError('QLinearMatMul with per-row a_scale or per-axis y_scale is not supported', whereOf(ctx));
  }
  // scale per output column when b_scale is per column
  const sc = new Float64Array(BS.length);
  for (let i = 0; i < BS.length; i++) sc[i] = Math.fround(Math.fround(AS[0] * BS[i]) / YS[0]);
  const N = p.N;
  if (BS.length !== 1 && BS.length !== N) throw new InputError(`b_scale of length ${BS.length} does not match N=${N}`, whereOf(ctx));
  if (yzp && yzp.size !== 1) throw new UnsupportedError('QLinearMatMul with per-axis y_zero_point is not supported', whereOf(ctx));
  return [requantize(acc, sc, BS.length, 1, yzp, outType, p.outDims, ctx)];
});

function unsupportedType(t: DType, ctx: KernelContext): never {
  throw new UnsupportedError(`${ctx.node.opType} on ${t} is not supported`, whereOf(ctx));
}

// --- Einsum ------------------------------------------------------------------------------------

interface Term { labels: number[] } // label ids; ellipsis dims get ids >= 1000

function parseTerm(s: string, rank: number | undefined, ellRank: number, ctx: KernelContext, what: string): number[] {
  const res: number[] = [];
  let i = 0;
  let sawEll = false;
  while (i < s.length) {
    const ch = s[i];
    if (ch === ' ') { i++; continue; }
    if (ch === '.') {
      if (s.slice(i, i + 3) !== '...' || sawEll) throw new InputError(`bad ellipsis in einsum term '${s}'`, whereOf(ctx));
      sawEll = true;
      for (let e = 0; e < ellRank; e++) res.push(1000 + e);
      i += 3;
      continue;
    }
    if (!/[A-Za-z]/.test(ch)) throw new InputError(`invalid character '${ch}' in einsum equation`, whereOf(ctx));
    res.push(ch.charCodeAt(0));
    i++;
  }
  if (rank !== undefined && res.length !== rank) {
    throw new InputError(`einsum ${what} '${s}' has ${res.length} labels but the operand has rank ${rank}`, whereOf(ctx));
  }
  return res;
}

function countLetters(s: string): number {
  let n = 0;
  for (const ch of s) if (/[A-Za-z]/.test(ch)) n++;
  return n;
}

registerOp('Einsum', (inputs, ctx) => {
  const eq = ctx.attr.string('equation').replace(/\s+/g, '');
  const ops: Tensor[] = [];
  for (let i = 0; i < inputs.length; i++) ops.push(input(inputs, i, ctx));
  const [lhs, rhs] = eq.includes('->') ? eq.split('->') : [eq, undefined];
  const termStrs = lhs.split(',');
  if (termStrs.length !== ops.length) {
    throw new InputError(`einsum equation has ${termStrs.length} operands but ${ops.length} inputs were given`, whereOf(ctx));
  }
  // ellipsis ranks
  let ellRank = 0;
  const ellRanks = termStrs.map((s, i) => {
    if (!s.includes('...')) return 0;
    const r = ops[i].dims.length - countLetters(s);
    if (r < 0) throw new InputError(`einsum term '${s}' has more labels than operand rank ${ops[i].dims.length}`, whereOf(ctx));
    ellRank = Math.max(ellRank, r);
    return r;
  });
  const terms: Term[] = termStrs.map((s, i) => {
    const labs = parseTerm(s, ops[i].dims.length, ellRanks[i], ctx, 'term');
    // right-align this operand's ellipsis with the global ellipsis
    const shift = ellRank - ellRanks[i];
    return { labels: labs.map((l) => (l >= 1000 ? l + shift : l)) };
  });
  // label sizes
  const size = new Map<number, number>();
  terms.forEach((t, i) => t.labels.forEach((l, d) => {
    const n = ops[i].dims[d];
    const prev = size.get(l);
    if (prev === undefined || prev === 1) size.set(l, n);
    else if (n !== prev && !(l >= 1000 && n === 1)) {
      throw new InputError(`einsum label '${l >= 1000 ? '...' : String.fromCharCode(l)}' has sizes ${prev} and ${n}`, whereOf(ctx));
    }
  }));
  let outLabels: number[];
  if (rhs !== undefined) {
    outLabels = parseTerm(rhs, undefined, ellRank, ctx, 'output');
    for (const l of outLabels) if (!size.has(l)) throw new InputError(`einsum output label '${String.fromCharCode(l)}' is not in any input`, whereOf(ctx));
  } else {
    const cnt = new Map<number, number>();
    for (const t of terms) for (const l of t.labels) cnt.set(l, (cnt.get(l) ?? 0) + 1);
    outLabels = [];
    for (let e = 0; e < ellRank; e++) outLabels.push(1000 + e);
    const letters = [...cnt].filter(([l, c]) => l < 1000 && c === 1).map(([l]) => l)
      .sort((x, y) => x - y);
    outLabels.push(...letters);
  }
  const sumLabels = [...size.keys()].filter((l) => !outLabels.includes(l));
  const all = [...outLabels, ...sumLabels];
  const dimsAll = all.map((l) => size.get(l)!);
  const outDims = outLabels.map((l) => size.get(l)!);
  const nOps = ops.length;
  const nL = all.length;
  // strides of each operand along each label (sums for repeated labels; 0 for broadcast)
  const st = new Float64Array(nOps * nL);
  ops.forEach((t, i) => {
    const s = stridesOf(t.dims);
    terms[i].labels.forEach((l, d) => {
      const k = all.indexOf(l);
      if (t.dims[d] !== 1 || size.get(l) === 1) st[i * nL + k] += s[d];
    });
  });
  const dt = ops[0].type;
  for (const t of ops) if (t.type !== dt) throw new InputError('einsum operands must have the same type', whereOf(ctx));
  const vals = ops.map((t) => numbers(t));
  const outN = sizeOf(outDims);
  const acc = new Float64Array(outN);
  const total = sizeOf(dimsAll);
  if (total > 0) {
    const ctr = new Int32Array(nL);
    const offs = new Float64Array(nOps);
    const nOut = outLabels.length;
    const outStr = stridesOf(outDims);
    const last = nL - 1;
    const lastN = nL > 0 ? dimsAll[last] : 1;
    const lastSt = new Float64Array(nOps);
    for (let i = 0; i < nOps; i++) lastSt[i] = nL > 0 ? st[i * nL + last] : 0;
    const lastOutSt = nL > 0 && last < nOut ? outStr[last] : 0;
    let oOff = 0;
    for (let base = 0; base < total; base += lastN) {
      // inner loop over the last label
      for (let j = 0; j < lastN; j++) {
        let p = 1;
        for (let i = 0; i < nOps; i++) p *= vals[i][offs[i] + j * lastSt[i]];
        acc[oOff + j * lastOutSt] += p;
      }
      // advance counters over labels 0..last-1
      for (let d = last - 1; d >= 0; d--) {
        ctr[d]++;
        for (let i = 0; i < nOps; i++) offs[i] += st[i * nL + d];
        if (d < nOut) oOff += outStr[d];
        if (ctr[d] < dimsAll[d]) break;
        for (let i = 0; i < nOps; i++) offs[i] -= st[i * nL + d] * ctr[d];
        if (d < nOut) oOff -= outStr[d] * ctr[d];
        ctr[d] = 0;
      }
    }
  }
  if (!isFloat(dt) && !isBig(dt)) {
    const res = alloc(dt, outDims);
    const o = res.data as Int32Array;
    for (let i = 0; i < outN; i++) o[i] = acc[i];
    return [res];
  }
  return [fromNumbers(dt, outDims, acc)];
});

// --- Det ---------------------------------------------------------------------------------------

registerOp('Det', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  if (!isFloat(x.type)) unsupportedType(x.type, ctx);
  const r = x.dims.length;
  if (r < 2 || x.dims[r - 1] !== x.dims[r - 2]) {
    throw new InputError(`Det needs [*, M, M] input, got [${x.dims.join(',')}]`, whereOf(ctx));
  }
  const n = x.dims[r - 1];
  const outDims = x.dims.slice(0, -2);
  const batch = sizeOf(outDims);
  const v = numbers(x);
  const out = new Float64Array(batch);
  const m = new Float64Array(n * n);
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < n * n; i++) m[i] = v[b * n * n + i];
    let det = 1;
    for (let c = 0; c < n; c++) {
      let piv = c, best = Math.abs(m[c * n + c]);
      for (let i = c + 1; i < n; i++) { const a = Math.abs(m[i * n + c]); if (a > best) { best = a; piv = i; } }
      if (best === 0) { det = 0; break; }
      if (piv !== c) {
        for (let j = 0; j < n; j++) { const tmp = m[c * n + j]; m[c * n + j] = m[piv * n + j]; m[piv * n + j] = tmp; }
        det = -det;
      }
      const d = m[c * n + c];
      det *= d;
      for (let i = c + 1; i < n; i++) {
        const f = m[i * n + c] / d;
        if (f === 0) continue;
        for (let j = c + 1; j < n; j++) m[i * n + j] -= f * m[c * n + j];
      }
    }
    out[b] = det;
  }
  return [fromNumbers(x.type, outDims, out)];
});

