// Helpers shared by reference kernels: dtype decoding/encoding, broadcasting, strides, checks.
import { getFloat16 } from '@petamoriken/float16';
import { ExecutionError, InputError, ResourceLimitError } from '../errors.js';
import { DTYPES, isBig, sizeOf, Tensor, type DType, type TypedArray, type Value } from '../tensor.js';
import type { KernelContext } from './registry.js';

// --- float16 / bfloat16 ------------------------------------------------------------------------

let F16_TABLE: Float32Array | undefined;
function f16Table(): Float32Array {
  if (!F16_TABLE) {
    F16_TABLE = new Float32Array(65536);
    const dv = new DataView(new ArrayBuffer(2));
    for (let i = 0; i < 65536; i++) {
      dv.setUint16(0, i, true);
      F16_TABLE[i] = getFloat16(dv, 0, true);
    }
  }
  return F16_TABLE;
}

export function f16ToF32(bits: number): number {
  return f16Table()[bits & 0xffff];
}

const cvF32 = new Float32Array(1);
const cvU32 = new Uint32Array(cvF32.buffer);
/** float → float16 bits, round to nearest even (bit arithmetic: this runs per element). */
export function f32ToF16(x: number): number {
  cvF32[0] = x;
  const u = cvU32[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  // Rounding to float32 first (cvF32) and then to f16 double-rounds only in ties that cannot occur
  // for values that were float32 already; float64 inputs are rounded to float32 first by design.
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let m = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && (m & 1))) m++;
    return sign | m;
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h++;
  return sign | h;
}

const bfF32 = new Float32Array(1);
const bfU32 = new Uint32Array(bfF32.buffer);
export function bf16ToF32(bits: number): number {
  bfU32[0] = (bits & 0xffff) << 16;
  return bfF32[0];
}
export function f32ToBf16(x: number): number {
  bfF32[0] = x;
  const u = bfU32[0];
  if (Number.isNaN(x)) return 0x7fc0;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Decoders/encoders for dtypes stored in an encoding (f16, bf16; f8/f4 registered by the cast module). */
export const FLOAT_CODECS: Partial<Record<DType, { decode: (bits: number) => number; encode: (x: number) => number }>> = {
  float16: { decode: f16ToF32, encode: f32ToF16 },
  bfloat16: { decode: bf16ToF32, encode: f32ToBf16 },
};

// --- numeric access ----------------------------------------------------------------------------

/**
 * The tensor's values as JS numbers: float32/float64 and ints ≤ 32 bits as their own array (no copy),
 * f16/bf16/f8 decoded to Float32Array, int64/uint64 converted to Float64Array (exact below 2^53).
 */
export function numbers(t: Tensor): Float32Array | Float64Array | Int8Array | Int16Array | Int32Array | Uint8Array | Uint16Array | Uint32Array {
  const codec = FLOAT_CODECS[t.type];
  if (codec) {
    const src = t.data as Uint8Array | Uint16Array;
    const out = new Float32Array(src.length);
    if (t.type === 'float16') { const tab = f16Table(); for (let i = 0; i < src.length; i++) out[i] = tab[src[i]]; }
    else for (let i = 0; i < src.length; i++) out[i] = codec.decode(src[i]);
    return out;
  }
  if (t.type === 'string') throw new InputError('expected a numeric tensor, got strings');
  if (isBig(t.type)) return Float64Array.from(t.data as BigInt64Array, Number);
  return t.data as Float32Array;
}

/** The tensor's values as a plain number[] (for small index/shape tensors). */
export function toIntList(t: Tensor): number[] {
  return Array.from(numbers(t));
}

/** Builds a tensor of `dtype` from JS numbers, rounding/encoding as the dtype requires. */
export function fromNumbers(dtype: DType, dims: readonly number[], values: ArrayLike<number>): Tensor {
  const n = sizeOf(dims);
  const codec = FLOAT_CODECS[dtype];
  const out = DTYPES[dtype].make(n) as TypedArray;
  if (codec) {
    const o = out as Uint16Array;
    for (let i = 0; i < n; i++) o[i] = codec.encode(values[i]);
  } else if (isBig(dtype)) {
    const o = out as BigInt64Array;
    const signed = dtype === 'int64';
    for (let i = 0; i < n; i++) {
      const v = values[i];
      o[i] = Number.isFinite(v) ? (signed ? BigInt.asIntN(64, BigInt(Math.trunc(v))) : BigInt.asUintN(64, BigInt(Math.trunc(v)))) : 0n;
    }
  } else if (dtype === 'bool') {
    const o = out as Uint8Array;
    for (let i = 0; i < n; i++) o[i] = values[i] ? 1 : 0;
  } else {
    (out as Float32Array).set(values as ArrayLike<number>);
  }
  return new Tensor(dtype, out, dims);
}

/** Allocates an output of `dtype` and `dims`, refusing absurd sizes with a typed error. */
export function alloc(dtype: DType, dims: readonly number[]): Tensor {
  return new Tensor(dtype, allocData(dtype, sizeOf(dims)), dims);
}

/** Largest tensor the reference backend will allocate (elements). */
export const MAX_ELEMENTS = 2 ** 29;

export function allocData(dtype: DType, n: number): TypedArray | string[] {
  if (!Number.isSafeInteger(n) || n < 0) throw new ExecutionError(`invalid element count ${n}`);
  if (n > MAX_ELEMENTS) throw new ResourceLimitError(`a tensor of ${n} elements exceeds the limit of ${MAX_ELEMENTS}`);
  return DTYPES[dtype].make(n);
}

export function scalarOf(t: Tensor): number {
  if (t.size < 1) throw new InputError('expected a scalar, got an empty tensor');
  return numbers(t)[0];
}

// --- shapes ------------------------------------------------------------------------------------

export function stridesOf(dims: readonly number[]): number[] {
  const s = new Array<number>(dims.length);
  let acc = 1;
  for (let i = dims.length - 1; i >= 0; i--) { s[i] = acc; acc *= dims[i]; }
  return s;
}

export function broadcastShape(...shapes: (readonly number[])[]): number[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out = new Array<number>(rank).fill(1);
  for (const s of shapes) {
    for (let i = 0; i < s.length; i++) {
      const o = rank - s.length + i;
      const d = s[i];
      if (out[o] === 1) out[o] = d;
      else if (d !== 1 && d !== out[o]) {
        throw new InputError(`shapes [${shapes.map((x) => x.join(',')).join('] and [')}] cannot be broadcast`);
      }
    }
  }
  return out;
}

/** Numpy broadcast of two shapes, or null where they do not broadcast (for planners that decline instead of throwing). */
export function tryBroadcastShape(a: readonly number[], b: readonly number[]): number[] | null {
  const n = Math.max(a.length, b.length), out: number[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1, y = b[b.length - n + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) return null;
    out.push(x === 1 ? y : x);
  }
  return out;
}

/**
 * For an input of `dims` broadcast to `outDims`, the input offset of every output element
 * (an index map; computed without per-element allocation).
 */
export function broadcastIndex(dims: readonly number[], outDims: readonly number[]): Int32Array {
  const n = sizeOf(outDims);
  const idx = new Int32Array(n);
  const rank = outDims.length;
  const inStr = stridesOf(dims);
  const st = new Array<number>(rank).fill(0);
  for (let i = 0; i < dims.length; i++) st[rank - dims.length + i] = dims[i] === 1 ? 0 : inStr[i];
  const ctr = new Array<number>(rank).fill(0);
  let off = 0;
  for (let i = 0; i < n; i++) {
    idx[i] = off;
    for (let d = rank - 1; d >= 0; d--) {
      ctr[d]++;
      off += st[d];
      if (ctr[d] < outDims[d]) break;
      off -= st[d] * ctr[d];
      ctr[d] = 0;
    }
  }
  return idx;
}

/** A broadcast walk: the output's dims (unit dims dropped, neighbours merged) and each operand's stride per dim. */
export interface Walk { shape: number[]; strides: number[][] }

/**
 * The output dims with unit dims dropped and neighbours merged where every operand is contiguous or broadcast
 * across both, and each operand's element stride per merged dim (operands already broadcastable to outDims).
 */
export function broadcastWalk(outDims: readonly number[], operands: readonly (readonly number[])[]): Walk {
  const r = outDims.length;
  const shape: number[] = [];
  const strides: number[][] = operands.map(() => []);
  const acc = operands.map(() => 1);
  for (let d = r - 1; d >= 0; d--) {
    const n = outDims[d];
    if (n === 1) continue;
    const st = operands.map((dims, k) => {
      const i = dims.length - r + d;
      const dim = i >= 0 ? dims[i] : 1;
      if (dim === 1) return 0;
      const s = acc[k];
      acc[k] *= dim;
      return s;
    });
    const last = shape.length - 1;
    const merge = last >= 0 && st.every((s, k) => {
      const p = strides[k][last];
      return s === 0 ? p === 0 : p !== 0 && s === p * shape[last];
    });
    if (merge) shape[last] *= n;
    else { shape.push(n); st.forEach((s, k) => strides[k].push(s)); }
  }
  if (shape.length === 0) { shape.push(1); strides.forEach((s) => s.push(0)); }
  shape.reverse();
  strides.forEach((s) => s.reverse());
  return { shape, strides };
}

/** Advances the outer odometer of a walk (all dims but the innermost); returns the new offsets in `off`. */

export function normAxis(axis: number, rank: number, ctx?: KernelContext): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= Math.max(rank, 1)) {
    throw new InputError(`axis ${axis} is out of range for rank ${rank}`, ctx ? { node: ctx.node.name, op: ctx.node.opType } : {});
  }
  return a;
}

/** Whether `p` is a permutation of 0..r-1 (the fast backends' test before planning a Transpose or a permuted view). */
export function isPermutation(p: readonly number[], r: number): boolean {
  return p.length === r && new Set(p).size === r && p.every((a) => Number.isInteger(a) && a >= 0 && a < r);
}

/** A permutation of 0..r-1 that keeps the last axis last (rows stay contiguous): the Transposes attention folds. */
export function keepsLastAxis(p: readonly number[], r: number): boolean {
  return isPermutation(p, r) && p[r - 1] === r - 1;
}

/** The i-th input as a tensor (typed error if missing or not a tensor). */
export function input(inputs: (Value | undefined)[], i: number, ctx: KernelContext): Tensor {
  const v = inputs[i];
  if (v instanceof Tensor) return v;
  throw new InputError(v === undefined ? `input ${i} is required` : `input ${i} must be a tensor`,
    { node: ctx.node.name, op: ctx.node.opType, input: ctx.node.inputs[i] });
}

/** The i-th input if present and non-empty-named, else undefined. */
export function optInput(inputs: (Value | undefined)[], i: number): Tensor | undefined {
  const v = inputs[i];
  return v instanceof Tensor ? v : undefined;
}

/** Copies `t` into a fresh tensor (kernels must not alias inputs they were not asked to alias). */
export function clone(t: Tensor): Tensor {
  const d = t.data;
  return new Tensor(t.type, Array.isArray(d) ? [...d] : (d.slice() as TypedArray), t.dims);
}
