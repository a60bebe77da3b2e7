// Reference kernels: elementwise family (unary math, activations, broadcasting binary/variadic ops, Where, Clip).
//
// Two drivers do all the work: `unary` (one input, same shape) and `bcast2` (numpy broadcasting of two
// inputs, with fast paths for equal shapes and scalar operands). Each has a number path (float16/bfloat16
// computed via float32, ints <= 32 bits in JS numbers, stored through the typed array so they wrap) and a
// BigInt path for int64/uint64. Each op is a short spec over them.
import { InputError, UnsupportedError, type ErrorWhere } from '../errors.js';
import { isBig, isEncodedFloat, isFloat, isInt, sizeOf, Tensor, type DType, type TypedArray, type Value } from '../tensor.js';
import { registerOp, type KernelContext } from './registry.js';
import { allocData, broadcastShape, broadcastWalk, FLOAT_CODECS, fromNumbers, input, numbers, optInput, type Walk } from './util.js';

// --- dtype sets ---------------------------------------------------------------------------------

const FLOATS: DType[] = ['float32', 'float64', 'float16', 'bfloat16'];
const SINTS: DType[] = ['int8', 'int16', 'int32', 'int64'];
const UINTS: DType[] = ['uint8', 'uint16', 'uint32', 'uint64'];
const T_FLOAT: ReadonlySet<DType> = new Set(FLOATS);
const T_NUM: ReadonlySet<DType> = new Set([...FLOATS, ...SINTS, ...UINTS]);
const T_SIGNED: ReadonlySet<DType> = new Set([...FLOATS, ...SINTS]);
const T_INT: ReadonlySet<DType> = new Set([...SINTS, ...UINTS]);
const T_UINT: ReadonlySet<DType> = new Set(UINTS);
const T_BOOL: ReadonlySet<DType> = new Set<DType>(['bool']);
const T_NUM_BOOL: ReadonlySet<DType> = new Set<DType>([...T_NUM, 'bool']);
const T_ISNAN: ReadonlySet<DType> = new Set<DType>([...FLOATS, 'float8e4m3fn', 'float8e4m3fnuz', 'float8e5m2', 'float8e5m2fnuz']);

const where = (ctx: KernelContext): ErrorWhere => ({ node: ctx.node.name, op: ctx.node.opType });

function checkType(ctx: KernelContext, t: Tensor, allowed: ReadonlySet<DType>, what = 'input'): void {
  if (!allowed.has(t.type) || (isEncodedFloat(t.type) && !FLOAT_CODECS[t.type])) {
    throw new UnsupportedError(`${ctx.node.opType} does not support ${what} of type ${t.type}`, where(ctx));
  }
}

function sameType(ctx: KernelContext, a: Tensor, b: Tensor): void {
  if (a.type !== b.type) {
    throw new InputError(`inputs must have the same type, got ${a.type} and ${b.type}`, where(ctx));
  }
}

// The number path computes on two array types only (so its loops stay monomorphic): Float32Array for
// float32 and the encoded floats (decoded by numbers()), Float64Array for float64 and every integer type.
type F = Float32Array | Float64Array;

/** An input's values in a compute array (no copy for float32/float64). */
function view(t: Tensor): F {
  const v = numbers(t);
  if (v instanceof Float32Array || v instanceof Float64Array) return v;
  return new Float64Array(v);
}

/** Compute array for an output of `dt`. */
function workArray(dt: DType, n: number): F {
  if (dt === 'float32' || isEncodedFloat(dt)) return allocData('float32', n) as Float32Array;
  return allocData('float64', n) as Float64Array;
}

/** Stores a compute array as `dt`: encoded floats are rounded/encoded, ints wrap, bool from 0/1. */
function finish(dt: DType, dims: readonly number[], arr: F): Tensor {
  if (dt === 'float32' || dt === 'float64') return new Tensor(dt, arr, dims);
  if (isEncodedFloat(dt)) return fromNumbers(dt, dims, arr);
  const out = allocData(dt, arr.length) as Float64Array;
  out.set(arr);
  return new Tensor(dt, out, dims);
}

/** Float32 value of an attribute default (attributes are stored as float32). */
const f32 = Math.fround;

// --- drivers ------------------------------------------------------------------------------------

interface Out<R> { [i: number]: R; readonly length: number }

/**
 * A broadcast walk: the output shape with its unit dims dropped and adjacent dims merged wherever every
 * operand is contiguous (or broadcast) across them, and each operand's element stride per merged dim.
 * The innermost stride of an operand is 0 (broadcast) or 1.
 */
function step(w: Walk, ctr: number[], off: number[]): void {
  const { shape, strides } = w;
  for (let d = shape.length - 2; d >= 0; d--) {
    ctr[d]++;
    for (let k = 0; k < off.length; k++) off[k] += strides[k][d];
    if (ctr[d] < shape[d]) return;
    for (let k = 0; k < off.length; k++) off[k] -= strides[k][d] * shape[d];
    ctr[d] = 0;
  }
}

/** out[i] = f(a[ia], b[ib]) with numpy broadcasting of a (aDims) and b (bDims) to outDims. */
function bcast2<A, B, R>(
  a: ArrayLike<A>, aDims: readonly number[], b: ArrayLike<B>, bDims: readonly number[],
  out: Out<R>, outDims: readonly number[], f: (x: A, y: B) => R,
): void {
  const n = out.length;
  if (n === 0) return;
  const na = a.length, nb = b.length;
  if (na === n && nb === n) {
    for (let i = 0; i < n; i++) out[i] = f(a[i], b[i]);
  } else if (na === n && nb === 1) {
    const y = b[0];
    for (let i = 0; i < n; i++) out[i] = f(a[i], y);
  } else if (na === 1 && nb === n) {
    const x = a[0];
    for (let i = 0; i < n; i++) out[i] = f(x, b[i]);
  } else {
    const w = broadcastWalk(outDims, [aDims, bDims]);
    const inner = w.shape[w.shape.length - 1];
    const sa = w.strides[0][w.shape.length - 1], sb = w.strides[1][w.shape.length - 1];
    const ctr = new Array<number>(w.shape.length).fill(0);
    const off = [0, 0];
    for (let o = 0; o < n; o += inner) {
      const oa = off[0], ob = off[1];
      if (sa && sb) for (let j = 0; j < inner; j++) out[o + j] = f(a[oa + j], b[ob + j]);
      else if (sa) { const y = b[ob]; for (let j = 0; j < inner; j++) out[o + j] = f(a[oa + j], y); }
      else if (sb) { const x = a[oa]; for (let j = 0; j < inner; j++) out[o + j] = f(x, b[ob + j]); }
      else { const v = f(a[oa], b[ob]); for (let j = 0; j < inner; j++) out[o + j] = v; }
      step(w, ctr, off);
    }
  }
}

/** bcast2 for the number path (a separate copy so its array accesses stay monomorphic). */
function bcastNum(a: F, aDims: readonly number[], b: F, bDims: readonly number[], out: F, outDims: readonly number[],
  f: (x: number, y: number) => number): void {
  const n = out.length;
  if (n === 0) return;
  const na = a.length, nb = b.length;
  if (na === n && nb === n) {
    for (let i = 0; i < n; i++) out[i] = f(a[i], b[i]);
  } else if (na === n && nb === 1) {
    const y = b[0];
    for (let i = 0; i < n; i++) out[i] = f(a[i], y);
  } else if (na === 1 && nb === n) {
    const x = a[0];
    for (let i = 0; i < n; i++) out[i] = f(x, b[i]);
  } else {
    const w = broadcastWalk(outDims, [aDims, bDims]);
    const inner = w.shape[w.shape.length - 1];
    const sa = w.strides[0][w.shape.length - 1], sb = w.strides[1][w.shape.length - 1];
    const ctr = new Array<number>(w.shape.length).fill(0);
    const off = [0, 0];
    for (let o = 0; o < n; o += inner) {
      const oa = off[0], ob = off[1];
      if (sa && sb) for (let j = 0; j < inner; j++) out[o + j] = f(a[oa + j], b[ob + j]);
      else if (sa) { const y = b[ob]; for (let j = 0; j < inner; j++) out[o + j] = f(a[oa + j], y); }
      else if (sb) { const x = a[oa]; for (let j = 0; j < inner; j++) out[o + j] = f(x, b[ob + j]); }
      else { const v = f(a[oa], b[ob]); for (let j = 0; j < inner; j++) out[o + j] = v; }
      step(w, ctr, off);
    }
  }
}

type NumFn1 = (x: number) => number;
type BigFn1 = (x: bigint) => bigint;
type NumFn2 = (x: number, y: number) => number;
type BigFn2 = (x: bigint, y: bigint) => bigint;
type BigCmp2 = (x: bigint, y: bigint) => number;

interface UnarySpec {
  types: ReadonlySet<DType>;
  /** Per-element function for the number path (built once per call: read attributes here). */
  num: (ctx: KernelContext, dt: DType) => NumFn1;
  /** Exact int64/uint64 function; without it, int64 inputs go through numbers (exact below 2^53). */
  big?: (ctx: KernelContext, dt: DType) => BigFn1;
  out?: DType;
}

function unary(x: Tensor, ctx: KernelContext, spec: UnarySpec): Tensor {
  checkType(ctx, x, spec.types);
  const outT = spec.out ?? x.type;
  const n = x.size;
  if (isBig(x.type)) {
    if (spec.big && isBig(outT)) {
      const f = spec.big(ctx, x.type);
      const src = x.data as BigInt64Array;
      const out = allocData(outT, n) as BigInt64Array;
      for (let i = 0; i < n; i++) out[i] = f(src[i]);
      return new Tensor(outT, out, x.dims);
    }
    const f = spec.num(ctx, x.type);
    const v = numbers(x);
    const tmp = new Float64Array(n);
    for (let i = 0; i < n; i++) tmp[i] = f(v[i]);
    return fromNumbers(outT, x.dims, tmp);
  }
  const f = spec.num(ctx, x.type);
  const v = view(x);
  const out = workArray(outT, n);
  for (let i = 0; i < n; i++) out[i] = f(v[i]);
  return finish(outT, x.dims, out);
}

interface BinarySpec {
  types: ReadonlySet<DType>;
  num: (ctx: KernelContext, dt: DType) => NumFn2;
  big?: (ctx: KernelContext, dt: DType) => BigFn2;
  /** For bool-output ops (comparisons) on int64/uint64. */
  bigCmp?: (ctx: KernelContext, dt: DType) => BigCmp2;
  bool?: boolean;
}

/** Output shape of a binary op; honours the pre-opset-7 `broadcast`/`axis` attributes. */
function binaryDims(ctx: KernelContext, a: Tensor, b: Tensor): { bDims: readonly number[]; dims: number[] } {
  let bDims = b.dims;
  if (ctx.opset < 7 && ctx.attr.has('broadcast') && ctx.attr.int('broadcast', 0) === 1 && ctx.attr.has('axis')) {
    let axis = ctx.attr.int('axis');
    if (axis < 0) axis += a.dims.length;
    const trail = a.dims.length - axis - b.dims.length;
    if (axis < 0 || trail < 0) throw new InputError(`axis ${ctx.attr.int('axis')} does not fit shapes [${a.dims}] and [${b.dims}]`, where(ctx));
    bDims = [...b.dims, ...new Array<number>(trail).fill(1)];
  }
  return { bDims, dims: broadcastShape(a.dims, bDims) };
}

function binary(a: Tensor, b: Tensor, ctx: KernelContext, spec: BinarySpec): Tensor {
  sameType(ctx, a, b);
  checkType(ctx, a, spec.types);
  const outT: DType = spec.bool ? 'bool' : a.type;
  const { bDims, dims } = binaryDims(ctx, a, b);
  const n = sizeOf(dims);
  if (isBig(a.type)) {
    const xa = a.data as BigInt64Array, xb = b.data as BigInt64Array;
    if (spec.bool && spec.bigCmp) {
      const out = allocData('bool', n) as Uint8Array;
      bcast2(xa, a.dims, xb, bDims, out, dims, spec.bigCmp(ctx, a.type));
      return new Tensor('bool', out, dims);
    }
    if (!spec.bool && spec.big) {
      const out = allocData(outT, n) as BigInt64Array;
      bcast2(xa, a.dims, xb, bDims, out, dims, spec.big(ctx, a.type));
      return new Tensor(outT, out, dims);
    }
    throw new UnsupportedError(`${ctx.node.opType} is not implemented for ${a.type}`, where(ctx));
  }
  const out = workArray(outT, n);
  bcastNum(view(a), a.dims, view(b), bDims, out, dims, spec.num(ctx, a.type));
  return finish(outT, dims, out);
}

/** Max/Min/Sum/Mean: folds a binary function over 1..N broadcast inputs. */
function variadic(inputs: (Value | undefined)[], ctx: KernelContext, spec: BinarySpec, mean = false): Tensor {
  if (inputs.length === 0) throw new InputError(`${ctx.node.opType} needs at least one input`, where(ctx));
  const ts = inputs.map((_, i) => input(inputs, i, ctx));
  const dt = ts[0].type;
  for (const t of ts) sameType(ctx, ts[0], t);
  checkType(ctx, ts[0], spec.types);
  let dims: readonly number[] = ts[0].dims;
  if (isBig(dt)) {
    if (!spec.big) throw new UnsupportedError(`${ctx.node.opType} is not implemented for ${dt}`, where(ctx));
    const f = spec.big(ctx, dt);
    let acc = ts[0].data as BigInt64Array;
    for (let k = 1; k < ts.length; k++) {
      const od = broadcastShape(dims, ts[k].dims);
      const out = allocData(dt, sizeOf(od)) as BigInt64Array;
      bcast2(acc, dims, ts[k].data as BigInt64Array, ts[k].dims, out, od, f);
      acc = out; dims = od;
    }
    if (ts.length === 1) acc = acc.slice();
    if (mean) {
      const d = BigInt(ts.length);
      for (let i = 0; i < acc.length; i++) acc[i] /= d;
    }
    return new Tensor(dt, acc, dims);
  }
  const f = spec.num(ctx, dt);
  let acc = view(ts[0]);
  for (let k = 1; k < ts.length; k++) {
    const od = broadcastShape(dims, ts[k].dims);
    const out = workArray(dt, sizeOf(od));
    bcastNum(acc, dims, view(ts[k]), ts[k].dims, out, od, f);
    acc = out; dims = od;
  }
  if (ts.length === 1 && acc === ts[0].data) acc = acc.slice();
  if (mean) {
    const d = ts.length;
    if (isFloat(dt)) for (let i = 0; i < acc.length; i++) acc[i] /= d;
    else for (let i = 0; i < acc.length; i++) acc[i] = Math.trunc(acc[i] / d);
  }
  return finish(dt, dims, acc);
}

function defUnary(op: string, spec: UnarySpec): void {
  registerOp(op, (inputs, ctx) => [unary(input(inputs, 0, ctx), ctx, spec)]);
}
function defBinary(op: string, spec: BinarySpec): void {
  registerOp(op, (inputs, ctx) => [binary(input(inputs, 0, ctx), input(inputs, 1, ctx), ctx, spec)]);
}
/** A float-only unary op whose function takes no attributes. */
function defFloat(op: string, f: NumFn1): void {
  defUnary(op, { types: T_FLOAT, num: () => f });
}

// --- scalar math helpers ------------------------------------------------------------------------

const TWO_OVER_SQRT_PI = 1.1283791670955126;

/** Error function, accurate to about 1e-15 relative. */
export function erf(x: number): number {
  if (x !== x) return NaN;
  const ax = Math.abs(x);
  let r: number;
  if (ax >= 6) {
    r = 1;
  } else if (ax < 3) {
    // erf(x) = 2/sqrt(pi) e^{-x^2} sum_n 2^n x^{2n+1} / (1*3*...*(2n+1)) -- all terms positive.
    const x2 = ax * ax;
    let term = ax, sum = ax;
    for (let k = 1; k < 400; k++) {
      term *= (2 * x2) / (2 * k + 1);
      sum += term;
      if (term <= sum * 1e-17) break;
    }
    r = TWO_OVER_SQRT_PI * Math.exp(-x2) * sum;
  } else {
    // erfc(x) = e^{-x^2}/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))), evaluated backwards.
    let t = ax;
    for (let k = 60; k >= 1; k--) t = ax + k / 2 / t;
    r = 1 - (TWO_OVER_SQRT_PI / 2) * Math.exp(-ax * ax) / t;
  }
  return x < 0 ? -r : r;
}

function sigmoid(x: number): number {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}

function softplus(x: number): number {
  return x > 0 ? x + Math.log1p(Math.exp(-x)) : Math.log1p(Math.exp(x));
}

/** Round half to even. */
function roundEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** C pow semantics (JS Math.pow differs for base 1 and base -1 with infinite exponents). */
function powf(a: number, b: number): number {
  if (a === 1 || ((a === -1) && (b === Infinity || b === -Infinity))) return 1;
  return Math.pow(a, b);
}

/** Integer power modulo 2^32 (exponent an integer-valued number). */
function ipow32(base: number, e: number): number {
  if (e < 0) return base === 1 ? 1 : base === -1 ? (e % 2 === 0 ? 1 : -1) : 0;
  let r = 1, b = base | 0;
  while (e > 0) {
    if (e % 2 === 1) r = Math.imul(r, b);
    b = Math.imul(b, b);
    e = Math.floor(e / 2);
  }
  return r;
}

/** Integer power modulo 2^64 (signed). */
function ipow64(base: bigint, e: bigint): bigint {
  if (e < 0n) return base === 1n ? 1n : base === -1n ? (e % 2n === 0n ? 1n : -1n) : 0n;
  let r = 1n, b = base;
  while (e > 0n) {
    if (e & 1n) r = BigInt.asIntN(64, r * b);
    b = BigInt.asIntN(64, b * b);
    e >>= 1n;
  }
  return r;
}

const INT64_MIN = -(2n ** 63n);

// --- unary math ---------------------------------------------------------------------------------

defFloat('Acos', Math.acos);
defFloat('Acosh', Math.acosh);
defFloat('Asin', Math.asin);
defFloat('Asinh', Math.asinh);
defFloat('Atan', Math.atan);
defFloat('Atanh', Math.atanh);
defFloat('Cos', Math.cos);
defFloat('Cosh', Math.cosh);
defFloat('Sin', Math.sin);
defFloat('Sinh', Math.sinh);
defFloat('Tan', Math.tan);
defFloat('Tanh', Math.tanh);
defFloat('Exp', Math.exp);
defFloat('Log', Math.log);
defFloat('Sqrt', Math.sqrt);
defFloat('Reciprocal', (x) => 1 / x);
defFloat('Ceil', Math.ceil);
defFloat('Floor', Math.floor);
defFloat('Round', roundEven);
defFloat('Sigmoid', sigmoid);
defFloat('Softplus', softplus);
defFloat('Softsign', (x) => x / (1 + Math.abs(x)));
defFloat('Mish', (x) => x * Math.tanh(softplus(x)));
defUnary('Erf', { types: T_NUM, num: () => erf });

defUnary('Abs', { types: T_NUM, num: () => Math.abs, big: () => (x) => (x < 0n ? -x : x) });
defUnary('Neg', { types: T_SIGNED, num: () => (x) => -x, big: () => (x) => -x });
defUnary('Sign', { types: T_NUM, num: () => Math.sign, big: () => (x) => (x > 0n ? 1n : x < 0n ? -1n : 0n) });
defUnary('Relu', { types: T_SIGNED, num: () => (x) => (x > 0 ? x : x !== x ? x : 0), big: () => (x) => (x > 0n ? x : 0n) });
defUnary('Not', { types: T_BOOL, num: () => (x) => (x ? 0 : 1) });
defUnary('BitwiseNot', { types: T_INT, num: () => (x) => ~x, big: () => (x) => ~x });

defUnary('IsNaN', { types: T_ISNAN, out: 'bool', num: () => (x) => (x !== x ? 1 : 0) });
defUnary('IsInf', {
  types: T_ISNAN, out: 'bool',
  num: (ctx) => {
    const neg = ctx.attr.int('detect_negative', 1) !== 0, pos = ctx.attr.int('detect_positive', 1) !== 0;
    return (x) => ((x === Infinity && pos) || (x === -Infinity && neg) ? 1 : 0);
  },
});

// --- activations with attributes ----------------------------------------------------------------

defUnary('Celu', {
  types: T_FLOAT,
  num: (ctx) => {
    const alpha = ctx.attr.float('alpha', 1);
    return (x) => Math.max(0, x) + Math.min(0, alpha * Math.expm1(x / alpha));
  },
});
defUnary('Elu', {
  types: T_FLOAT,
  num: (ctx) => {
    const alpha = ctx.attr.float('alpha', 1);
    return (x) => (x < 0 ? alpha * Math.expm1(x) : x);
  },
});
defUnary('Selu', {
  types: T_FLOAT,
  num: (ctx) => {
    const alpha = ctx.attr.float('alpha', f32(1.67326319217681884765625));
    const gamma = ctx.attr.float('gamma', f32(1.05070102214813232421875));
    return (x) => (x > 0 ? gamma * x : gamma * alpha * Math.expm1(x));
  },
});
defUnary('LeakyRelu', {
  types: T_FLOAT,
  num: (ctx) => {
    const alpha = ctx.attr.float('alpha', f32(0.01));
    return (x) => (x < 0 ? alpha * x : x);
  },
});
defUnary('ThresholdedRelu', {
  types: T_FLOAT,
  num: (ctx) => {
    const alpha = ctx.attr.float('alpha', 1);
    return (x) => (x > alpha ? x : 0);
  },
});
defUnary('HardSigmoid', {
  types: T_FLOAT,
  num: (ctx) => {
    const alpha = ctx.attr.float('alpha', f32(0.2)), beta = ctx.attr.float('beta', 0.5);
    return (x) => Math.max(0, Math.min(1, alpha * x + beta));
  },
});
defUnary('HardSwish', { types: T_FLOAT, num: () => (x) => x * Math.max(0, Math.min(1, x / 6 + 0.5)) });
defUnary('Shrink', {
  types: T_NUM,
  num: (ctx) => {
    const bias = ctx.attr.float('bias', 0), lambd = ctx.attr.float('lambd', 0.5);
    return (x) => (x < -lambd ? x + bias : x > lambd ? x - bias : 0);
  },
});
defUnary('Swish', {
  types: T_FLOAT,
  num: (ctx) => {
    const alpha = ctx.attr.float('alpha', 1);
    return (x) => x * sigmoid(alpha * x);
  },
});
defUnary('Gelu', {
  types: T_FLOAT,
  num: (ctx) => {
    const approx = ctx.attr.string('approximate', 'none');
    if (approx === 'tanh') {
      const c = Math.sqrt(2 / Math.PI);
      return (x) => 0.5 * x * (1 + Math.tanh(c * (x + 0.044715 * x * x * x)));
    }
    if (approx !== 'none') throw new UnsupportedError(`Gelu approximate='${approx}' is not supported`, where(ctx));
    return (x) => 0.5 * x * (1 + erf(x * Math.SQRT1_2));
  },
});

// --- binary arithmetic --------------------------------------------------------------------------

defBinary('Add', { types: T_NUM, num: () => (x, y) => x + y, big: () => (x, y) => x + y });
defBinary('Sub', { types: T_NUM, num: () => (x, y) => x - y, big: () => (x, y) => x - y });
defBinary('Mul', {
  types: T_NUM,
  num: (_ctx, dt) => (isFloat(dt) ? (x, y) => x * y : Math.imul),
  big: () => (x, y) => x * y,
});
defBinary('Div', {
  types: T_NUM,
  num: (_ctx, dt) => (isFloat(dt) ? (x, y) => x / y : (x, y) => (y === 0 ? 0 : Math.trunc(x / y))),
  big: () => (x, y) => (y === 0n ? 0n : x / y),
});
defBinary('Mod', {
  types: T_NUM,
  num: (ctx, dt) => {
    const fmod = ctx.attr.int('fmod', 0) !== 0;
    const int = !isFloat(dt);
    if (fmod) return int ? (x, y) => (y === 0 ? 0 : x % y) : (x, y) => x % y;
    return (x, y) => {
      if (int && y === 0) return 0;
      const r = x % y;
      return r !== 0 && (r < 0) !== (y < 0) ? r + y : r;
    };
  },
  big: (ctx) => {
    const fmod = ctx.attr.int('fmod', 0) !== 0;
    return (x, y) => {
      if (y === 0n) return 0n;
      const r = x % y;
      return !fmod && r !== 0n && (r < 0n) !== (y < 0n) ? r + y : r;
    };
  },
});
const preluSpec: BinarySpec = {
  types: T_NUM,
  num: () => (x, s) => (x < 0 ? s * x : x),
  big: () => (x, s) => (x < 0n ? s * x : x),
};
registerOp('PRelu', (inputs, ctx) => {
  const x = input(inputs, 0, ctx), slope = input(inputs, 1, ctx);
  const y = binary(x, slope, ctx, preluSpec);
  if (y.dims.length !== x.dims.length || y.dims.some((d, i) => d !== x.dims[i])) {
    throw new InputError(`slope of shape [${slope.dims}] does not broadcast to X of shape [${x.dims}]`, where(ctx));
  }
  return [y];
});

defBinary('SwiGLU', {
  types: T_FLOAT,
  num: (ctx) => {
    const alpha = ctx.attr.float('alpha', 1);
    return (a, b) => a * sigmoid(alpha * a) * b;
  },
});

// Bitwise / logical
defBinary('BitwiseAnd', { types: T_INT, num: () => (x, y) => x & y, big: () => (x, y) => x & y });
defBinary('BitwiseOr', { types: T_INT, num: () => (x, y) => x | y, big: () => (x, y) => x | y });
defBinary('BitwiseXor', { types: T_INT, num: () => (x, y) => x ^ y, big: () => (x, y) => x ^ y });
defBinary('And', { types: T_BOOL, num: () => (x, y) => x & y });
defBinary('Or', { types: T_BOOL, num: () => (x, y) => x | y });
defBinary('Xor', { types: T_BOOL, num: () => (x, y) => x ^ y });
defBinary('BitShift', {
  types: T_UINT,
  num: (ctx, dt) => {
    const left = bitShiftLeft(ctx);
    const bits = dt === 'uint8' ? 8 : dt === 'uint16' ? 16 : 32;
    return left ? (x, y) => (y >= bits ? 0 : x << y) : (x, y) => (y >= bits ? 0 : x >>> y);
  },
  big: (ctx) => (bitShiftLeft(ctx) ? (x, y) => (y >= 64n ? 0n : x << y) : (x, y) => x >> y),
});
function bitShiftLeft(ctx: KernelContext): boolean {
  const d = ctx.attr.string('direction');
  if (d !== 'LEFT' && d !== 'RIGHT') throw new InputError(`BitShift direction must be LEFT or RIGHT, got '${d}'`, where(ctx));
  return d === 'LEFT';
}

// Comparisons (bool output)
const cmp = (num: NumFn2, big: BigCmp2, types: ReadonlySet<DType> = T_NUM): BinarySpec =>
  ({ types, bool: true, num: () => num, bigCmp: () => big });
defBinary('Greater', cmp((x, y) => (x > y ? 1 : 0), (x, y) => (x > y ? 1 : 0)));
defBinary('GreaterOrEqual', cmp((x, y) => (x >= y ? 1 : 0), (x, y) => (x >= y ? 1 : 0)));
defBinary('Less', cmp((x, y) => (x < y ? 1 : 0), (x, y) => (x < y ? 1 : 0)));
defBinary('LessOrEqual', cmp((x, y) => (x <= y ? 1 : 0), (x, y) => (x <= y ? 1 : 0)));
const equalSpec = cmp((x, y) => (x === y ? 1 : 0), (x, y) => (x === y ? 1 : 0), T_NUM_BOOL);
registerOp('Equal', (inputs, ctx) => {
  const a = input(inputs, 0, ctx), b = input(inputs, 1, ctx);
  if (a.type === 'string' && b.type === 'string') {
    const { bDims, dims } = binaryDims(ctx, a, b);
    const out = allocData('bool', sizeOf(dims)) as Uint8Array;
    bcast2(a.data as string[], a.dims, b.data as string[], bDims, out, dims, (x, y) => (x === y ? 1 : 0));
    return [new Tensor('bool', out, dims)];
  }
  return [binary(a, b, ctx, equalSpec)];
});

// Pow: result has X's dtype; the exponent may be any numeric dtype.
registerOp('Pow', (inputs, ctx) => {
  const x = input(inputs, 0, ctx), y = input(inputs, 1, ctx);
  checkType(ctx, x, new Set<DType>([...FLOATS, 'int32', 'int64']), 'base');
  checkType(ctx, y, T_NUM, 'exponent');
  const { bDims, dims } = binaryDims(ctx, x, y);
  const n = sizeOf(dims);
  const yInt = isInt(y.type);
  if (x.type === 'int64') {
    const out = allocData('int64', n) as BigInt64Array;
    const xs = x.data as BigInt64Array;
    if (isBig(y.type)) {
      bcast2(xs, x.dims, y.data as BigInt64Array, bDims, out, dims, ipow64);
    } else if (yInt) {
      bcast2(xs, x.dims, numbers(y), bDims, out, dims, (a, b) => ipow64(a, BigInt(b)));
    } else {
      bcast2(xs, x.dims, numbers(y), bDims, out, dims, (a, b) => {
        const r = powf(Number(a), b);
        return Number.isFinite(r) && Math.abs(r) < 2 ** 63 ? BigInt(Math.trunc(r)) : INT64_MIN;
      });
    }
    return [new Tensor('int64', out, dims)];
  }
  const ys = view(y);
  const out = workArray(x.type, n);
  const f: NumFn2 = x.type === 'int32'
    ? (yInt ? ipow32 : (a, b) => Math.trunc(powf(a, b)))
    : powf;
  bcastNum(view(x), x.dims, ys, bDims, out, dims, f);
  return [finish(x.type, dims, out)];
});

// --- variadic -----------------------------------------------------------------------------------

const maxSpec: BinarySpec = {
  types: T_NUM,
  num: () => (x, y) => (x !== x || x > y ? x : y),
  big: () => (x, y) => (x > y ? x : y),
};
const minSpec: BinarySpec = {
  types: T_NUM,
  num: () => (x, y) => (x !== x || x < y ? x : y),
  big: () => (x, y) => (x < y ? x : y),
};
const sumSpec: BinarySpec = { types: T_NUM, num: () => (x, y) => x + y, big: () => (x, y) => x + y };
registerOp('Max', (inputs, ctx) => [variadic(inputs, ctx, maxSpec)]);
registerOp('Min', (inputs, ctx) => [variadic(inputs, ctx, minSpec)]);
registerOp('Sum', (inputs, ctx) => [variadic(inputs, ctx, sumSpec)]);
registerOp('Mean', (inputs, ctx) => [variadic(inputs, ctx, { ...sumSpec, types: T_FLOAT }, true)]);

// --- Where --------------------------------------------------------------------------------------

registerOp('Where', (inputs, ctx) => {
  const c = input(inputs, 0, ctx), x = input(inputs, 1, ctx), y = input(inputs, 2, ctx);
  if (c.type !== 'bool') throw new InputError(`condition must be bool, got ${c.type}`, where(ctx));
  sameType(ctx, x, y);
  if (x.type === 'complex64' || x.type === 'complex128') {
    throw new UnsupportedError(`Where is not implemented for ${x.type}`, where(ctx));
  }
  const dims = broadcastShape(c.dims, x.dims, y.dims);
  const n = sizeOf(dims);
  const out = allocData(x.type, n) as Out<unknown>;
  const cd = c.data as Uint8Array;
  const xd = x.data as ArrayLike<unknown>, yd = y.data as ArrayLike<unknown>;
  if (cd.length === n && xd.length === n && yd.length === n) {
    for (let i = 0; i < n; i++) out[i] = cd[i] ? xd[i] : yd[i];
  } else if (n > 0) {
    const w = broadcastWalk(dims, [c.dims, x.dims, y.dims]);
    const last = w.shape.length - 1, inner = w.shape[last];
    const sc = w.strides[0][last], sx = w.strides[1][last], sy = w.strides[2][last];
    const ctr = new Array<number>(w.shape.length).fill(0);
    const off = [0, 0, 0];
    for (let o = 0; o < n; o += inner) {
      const oc = off[0], ox = off[1], oy = off[2];
      for (let j = 0; j < inner; j++) out[o + j] = cd[oc + j * sc] ? xd[ox + j * sx] : yd[oy + j * sy];
      step(w, ctr, off);
    }
  }
  return [new Tensor(x.type, out as unknown as TypedArray, dims)];
});

// --- Clip ---------------------------------------------------------------------------------------

const FLT_MAX = 3.4028234663852886e38;

registerOp('Clip', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  checkType(ctx, x, T_NUM);
  const n = x.size;
  if (ctx.opset < 11) {
    const lo = ctx.attr.float('min', -FLT_MAX), hi = ctx.attr.float('max', FLT_MAX);
    return [unary(x, ctx, { types: T_FLOAT, num: () => (v) => clampNum(v, lo, hi) })];
  }
  const bound = (i: number): Tensor | undefined => {
    const t = optInput(inputs, i);
    if (!t || t.size === 0) return undefined;
    if (t.type !== x.type) throw new InputError(`Clip bound ${i === 1 ? 'min' : 'max'} has type ${t.type}, expected ${x.type}`, where(ctx));
    if (t.size !== 1) throw new InputError(`Clip bound ${i === 1 ? 'min' : 'max'} must be a scalar, got shape [${t.dims}]`, where(ctx));
    return t;
  };
  const mn = bound(1), mx = bound(2);
  if (isBig(x.type)) {
    const src = x.data as BigInt64Array;
    const out = allocData(x.type, n) as BigInt64Array;
    const lo = mn ? (mn.data as BigInt64Array)[0] : undefined;
    const hi = mx ? (mx.data as BigInt64Array)[0] : undefined;
    for (let i = 0; i < n; i++) {
      let v = src[i];
      if (lo !== undefined && v < lo) v = lo;
      if (hi !== undefined && v > hi) v = hi;
      out[i] = v;
    }
    return [new Tensor(x.type, out, x.dims)];
  }
  const lo = mn ? numbers(mn)[0] : -Infinity, hi = mx ? numbers(mx)[0] : Infinity;
  return [unary(x, ctx, { types: T_NUM, num: () => (v) => clampNum(v, lo, hi) })];
});

function clampNum(v: number, lo: number, hi: number): number {
  const a = v < lo ? lo : v;
  return a > hi ? hi : a;
}
