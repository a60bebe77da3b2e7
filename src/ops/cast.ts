// Reference kernels: Cast, CastLike, BitCast; float8 / float4 / e8m0 encoders and decoders (registered
// into FLOAT_CODECS so numbers()/fromNumbers() handle those dtypes everywhere).
import { InputError } from '../errors.js';
import { dtypeFromOnnx, DTYPES, isBig, isFloat, Tensor, type DType, type TypedArray } from '../tensor.js';
import { registerOp, unsupported, type KernelContext } from './registry.js';
import { allocData, FLOAT_CODECS, input, numbers } from './util.js';

// --- small floats (float8 e4m3fn / e4m3fnuz / e5m2 / e5m2fnuz, float4 e2m1) ----------------------

type SmallKind = 'fn' | 'fnuz' | 'ieee' | 'finite';

interface SmallFloat {
  /** Decoded value of every code (2^bits entries). */
  readonly table: Float32Array;
  /** Positive finite values by code, 0..maxCode (ascending). */
  readonly pos: Float64Array;
  readonly maxCode: number;
  readonly max: number;
  /** Values >= this (or == and maxCode odd) overflow the format under round-to-nearest-even. */
  readonly overflowAt: number;
  readonly signBit: number;
  readonly nanCode: number;
  readonly kind: SmallKind;
}

function makeSmallFloat(expBits: number, mantBits: number, bias: number, kind: SmallKind): SmallFloat {
  const bits = 1 + expBits + mantBits;
  const n = 1 << bits;
  const signBit = 1 << (bits - 1);
  const emax = (1 << expBits) - 1;
  const table = new Float32Array(n);
  for (let c = 0; c < n; c++) {
    const neg = (c & signBit) !== 0;
    const e = (c >> mantBits) & emax;
    const f = c & ((1 << mantBits) - 1);
    let v = e === 0 ? f * 2 ** (1 - bias - mantBits) : (1 + f / (1 << mantBits)) * 2 ** (e - bias);
    if (kind === 'fn' && (c & (signBit - 1)) === signBit - 1) v = NaN;
    else if (kind === 'fnuz' && c === signBit) v = NaN;
    else if (kind === 'ieee' && e === emax) v = f === 0 ? Infinity : NaN;
    table[c] = neg ? -v : v;
  }
  let maxCode: number;
  if (kind === 'fn') maxCode = signBit - 2;
  else if (kind === 'ieee') maxCode = (emax << mantBits) - 1;
  else maxCode = signBit - 1;
  const pos = new Float64Array(maxCode + 1);
  for (let c = 0; c <= maxCode; c++) pos[c] = table[c];
  const max = pos[maxCode];
  const ulpMax = max - pos[maxCode - 1];
  let nanCode: number;
  if (kind === 'fn') nanCode = signBit - 1;
  else if (kind === 'fnuz') nanCode = signBit;
  else if (kind === 'ieee') nanCode = (emax << mantBits) | (1 << (mantBits - 1));
  else nanCode = signBit; // float4e2m1 has no NaN; ml_dtypes yields -0
  return { table, pos, maxCode, max, overflowAt: max + ulpMax / 2, signBit, nanCode, kind };
}

const E4M3FN = makeSmallFloat(4, 3, 7, 'fn');
const E4M3FNUZ = makeSmallFloat(4, 3, 8, 'fnuz');
const E5M2 = makeSmallFloat(5, 2, 15, 'ieee');
const E5M2FNUZ = makeSmallFloat(5, 2, 16, 'fnuz');
const E2M1 = makeSmallFloat(2, 1, 1, 'finite');

/** Encodes `x` into the small float format, rounding to nearest even; saturating or not. */
function encodeSmall(F: SmallFloat, x: number, saturate: boolean): number {
  if (x !== x) return F.nanCode;
  const neg = x < 0 || (x === 0 && 1 / x < 0);
  const a = neg ? -x : x;
  const sign = neg ? F.signBit : 0;
  if (a > F.max) {
    const overflow = a > F.overflowAt || (a === F.overflowAt && (F.maxCode & 1) === 1);
    if (!overflow || saturate || F.kind === 'finite') return F.maxCode | sign;
    if (F.kind === 'ieee') return (F.maxCode + 1) | sign; // infinity
    if (F.kind === 'fn') return F.nanCode | sign;
    return F.nanCode;
  }
  const pos = F.pos;
  // binary search: largest k with pos[k] <= a
  let lo = 0;
  let hi = F.maxCode;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (pos[mid] <= a) lo = mid;
    else hi = mid - 1;
  }
  let code = lo;
  if (pos[lo] !== a && lo < F.maxCode) {
    const half = (pos[lo] + pos[lo + 1]) / 2;
    if (a > half || (a === half && (lo & 1) === 1)) code = lo + 1;
  }
  if (F.kind === 'fnuz' && code === 0) return 0;
  return code | sign;
}

// --- float8e8m0 ----------------------------------------------------------------------------------

const e8F32 = new Float32Array(1);
const e8U32 = new Uint32Array(e8F32.buffer);

export type E8M0Round = 'up' | 'down' | 'nearest';

/** Encodes `x` to float8e8m0 (exponent only, sign ignored) as the ONNX reference does. */
export function encodeE8M0(x: number, saturate = true, round: E8M0Round = 'up'): number {
  e8F32[0] = x;
  const u = e8U32[0];
  let e = (u >>> 23) & 0xff;
  if (e === 0xff) return 0xff;
  let up = false;
  if (round === 'up') up = (u & 0x7fffff) !== 0;
  else if (round === 'nearest') {
    const g = (u & 0x400000) !== 0;
    const r = (u & 0x200000) !== 0;
    const s = (u & 0x1fffff) !== 0;
    up = g && (r || s || e > 0);
  }
  if (up && !(saturate && e === 0xfe)) e++;
  return e & 0xff;
}

export function decodeE8M0(bits: number): number {
  const b = bits & 0xff;
  return b === 0xff ? NaN : 2 ** (b - 127);
}

// --- codec registration --------------------------------------------------------------------------

function smallCodec(F: SmallFloat) {
  const table = F.table;
  const mask = table.length - 1;
  return { decode: (bits: number) => table[bits & mask], encode: (x: number) => encodeSmall(F, x, true) };
}

FLOAT_CODECS.float8e4m3fn = smallCodec(E4M3FN);
FLOAT_CODECS.float8e4m3fnuz = smallCodec(E4M3FNUZ);
FLOAT_CODECS.float8e5m2 = smallCodec(E5M2);
FLOAT_CODECS.float8e5m2fnuz = smallCodec(E5M2FNUZ);
FLOAT_CODECS.float4e2m1 = smallCodec(E2M1);
FLOAT_CODECS.float8e8m0 = { decode: decodeE8M0, encode: (x: number) => encodeE8M0(x, true, 'up') };

function smallFormat(t: DType): SmallFloat | undefined {
  switch (t) {
    case 'float8e4m3fn': return E4M3FN;
    case 'float8e4m3fnuz': return E4M3FNUZ;
    case 'float8e5m2': return E5M2;
    case 'float8e5m2fnuz': return E5M2FNUZ;
    case 'float4e2m1': return E2M1;
    default: return undefined;
  }
}

/**
 * An encoder for the encoded-float dtype `t` (f16, bf16, f8*, f4, e8m0) honouring `saturate`
 * (float8 only) and `round` (e8m0 only).
 */
export function floatEncoder(t: DType, saturate = true, round: E8M0Round = 'up'): (x: number) => number {
  const F = smallFormat(t);
  if (F) return (x: number) => encodeSmall(F, x, saturate);
  if (t === 'float8e8m0') return (x: number) => encodeE8M0(x, saturate, round);
  const codec = FLOAT_CODECS[t];
  if (!codec) throw new InputError(`dtype ${t} is not an encoded float type`);
  return codec.encode;
}

// --- number <-> string ---------------------------------------------------------------------------

function roundTripF32(s: string, v: number): boolean { return Math.fround(Number(s)) === v; }

/** Formats a float as numpy's str() does (shortest round-trip digits), with ONNX's NaN/INF spelling. */
function formatFloat(v: number, kind: 'f64' | 'f32' | DType): string {
  if (v !== v) return 'NaN';
  if (v === Infinity) return 'INF';
  if (v === -Infinity) return '-INF';
  if (v === 0) return 1 / v < 0 ? '-0.0' : '0.0';
  let exp: string;
  if (kind === 'f64') exp = v.toExponential();
  else {
    const enc = kind === 'f32' ? undefined : FLOAT_CODECS[kind as DType];
    exp = v.toExponential(16);
    for (let p = 0; p <= 16; p++) {
      const s = v.toExponential(p);
      const ok = enc ? enc.decode(enc.encode(Number(s))) === v : roundTripF32(s, v);
      if (ok) { exp = s; break; }
    }
  }
  // exp looks like "-1.2345e+3"
  const neg = exp.startsWith('-');
  const body = neg ? exp.slice(1) : exp;
  const ei = body.indexOf('e');
  const mant = body.slice(0, ei);
  const e = Number(body.slice(ei + 1));
  const digits = mant.replace('.', '');
  const a = Math.abs(v);
  let out: string;
  if (a >= 1e-4 && a < 1e16) {
    if (e >= 0) {
      const intPart = digits.length > e + 1 ? digits.slice(0, e + 1) : digits + '0'.repeat(e + 1 - digits.length);
      const frac = digits.length > e + 1 ? digits.slice(e + 1) : '0';
      out = `${intPart}.${frac}`;
    } else {
      out = `0.${'0'.repeat(-e - 1)}${digits}`;
    }
  } else {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    const ae = Math.abs(e);
    out = `${m}e${e < 0 ? '-' : '+'}${ae < 10 ? '0' : ''}${ae}`;
  }
  return neg ? '-' + out : out;
}

/** Parses a string as ONNX Cast does: decimal/scientific, case-insensitive (+/-)INF and NaN. */
function parseNumber(s: string): number {
  const t = s.trim();
  const u = t.toUpperCase();
  if (u === 'INF' || u === '+INF' || u === 'INFINITY' || u === '+INFINITY') return Infinity;
  if (u === '-INF' || u === '-INFINITY') return -Infinity;
  if (u === 'NAN' || u === '+NAN' || u === '-NAN') return NaN;
  if (u === 'TRUE') return 1;
  if (u === 'FALSE') return 0;
  if (t === '') return NaN;
  return Number(t);
}

const INT_RE = /^\s*[+-]?\d+\s*$/;

// --- float -> integer (numpy astype semantics on x86-64) ----------------------------------------

const TWO31 = 2 ** 31;
const TWO63 = 2 ** 63;
const TWO64 = 2 ** 64;
const INT64_MIN = -(2n ** 63n);

function subByteWrap(t: DType, v: number): number {
  // v is an int32 (already wrapped)
  switch (t) {
    case 'int4': return ((v & 15) ^ 8) - 8;
    case 'uint4': return v & 15;
    case 'int2': return ((v & 3) ^ 2) - 2;
    case 'uint2': return v & 3;
    default: return v;
  }
}

const isSubByteInt = (t: DType) => t === 'int4' || t === 'uint4' || t === 'int2' || t === 'uint2';

/** float -> int of at most 32 bits; returns a number the target array wraps correctly. */
function floatToSmallInt(t: DType, v: number): number {
  const x = Math.trunc(v);
  if (t === 'int32') return x !== x || x < -TWO31 || x >= TWO31 ? -TWO31 : x;
  if (x !== x || x <= -TWO63 || x >= TWO63) return 0;
  if (isSubByteInt(t)) return subByteWrap(t, x | 0); // ToInt32 is exact modulo 2^32
  return x; // Int8Array/Uint16Array/... assignment wraps modulo 2^n
}

function floatToBig(t: DType, v: number): bigint {
  const x = Math.trunc(v);
  if (t === 'int64') return x !== x || x < -TWO63 || x >= TWO63 ? INT64_MIN : BigInt(x);
  if (x !== x || x < -TWO63 || x >= TWO64) return 1n << 63n;
  return BigInt.asUintN(64, BigInt(x));
}

// --- Cast ------------------------------------------------------------------------------------------

export interface CastOptions { saturate?: boolean; round?: E8M0Round }

/** Casts `x` to `to` with ONNX Cast semantics. */
export function castTensor(x: Tensor, to: DType, opts: CastOptions = {}): Tensor {
  const from = x.type;
  const n = x.size;
  if (from === 'complex64' || from === 'complex128' || to === 'complex64' || to === 'complex128') {
    throw new InputError(`Cast from ${from} to ${to} is not supported`);
  }
  const out = allocData(to, n);
  if (from === to) {
    if (Array.isArray(out)) for (let i = 0; i < n; i++) out[i] = (x.data as string[])[i];
    else (out as Uint8Array).set(x.data as Uint8Array);
    return new Tensor(to, out, x.dims);
  }
  const saturate = opts.saturate ?? true;

  // --- to string
  if (to === 'string') {
    const o = out as string[];
    if (isBig(from)) {
      const s = x.data as BigInt64Array;
      for (let i = 0; i < n; i++) o[i] = s[i].toString();
    } else if (from === 'bool') {
      const s = x.data as Uint8Array;
      for (let i = 0; i < n; i++) o[i] = s[i] ? 'True' : 'False';
    } else {
      const v = numbers(x);
      if (isFloat(from)) {
        const kind = from === 'float64' ? 'f64' : from === 'float32' ? 'f32' : from;
        for (let i = 0; i < n; i++) o[i] = formatFloat(v[i], kind);
      } else {
        for (let i = 0; i < n; i++) o[i] = String(v[i]);
      }
    }
    return new Tensor(to, o, x.dims);
  }

  // --- from string: parse, then cast the float64 values (int64/uint64 integers parsed exactly)
  if (from === 'string') {
    const s = x.data as string[];
    if (isBig(to)) {
      const o = out as BigInt64Array;
      for (let i = 0; i < n; i++) {
        if (INT_RE.test(s[i])) {
          const b = BigInt(s[i].trim());
          o[i] = to === 'int64' ? BigInt.asIntN(64, b) : BigInt.asUintN(64, b);
        } else o[i] = floatToBig(to, parseNumber(s[i]));
      }
      return new Tensor(to, o, x.dims);
    }
    const vals = new Float64Array(n);
    for (let i = 0; i < n; i++) vals[i] = parseNumber(s[i]);
    return castTensor(new Tensor('float64', vals, x.dims), to, opts);
  }

  // --- to int64 / uint64
  if (isBig(to)) {
    const o = out as BigInt64Array;
    const signed = to === 'int64';
    if (isBig(from)) {
      const s = x.data as BigInt64Array;
      for (let i = 0; i < n; i++) o[i] = signed ? BigInt.asIntN(64, s[i]) : BigInt.asUintN(64, s[i]);
    } else if (isFloat(from)) {
      const v = numbers(x);
      for (let i = 0; i < n; i++) o[i] = floatToBig(to, v[i]);
    } else {
      const v = numbers(x);
      for (let i = 0; i < n; i++) o[i] = signed ? BigInt(v[i]) : BigInt.asUintN(64, BigInt(v[i]));
    }
    return new Tensor(to, o, x.dims);
  }

  // --- from int64 / uint64 to anything numeric
  if (isBig(from)) {
    const s = x.data as BigInt64Array;
    if (to === 'bool') {
      const o = out as Uint8Array;
      for (let i = 0; i < n; i++) o[i] = s[i] !== 0n ? 1 : 0;
    } else if (isFloat(to)) {
      const vals = new Float64Array(n);
      for (let i = 0; i < n; i++) vals[i] = Number(s[i]);
      return castTensor(new Tensor('float64', vals, x.dims), to, opts);
    } else {
      const o = out as Int32Array;
      const sub = isSubByteInt(to);
      for (let i = 0; i < n; i++) {
        const w = Number(BigInt.asIntN(32, s[i]));
        o[i] = sub ? subByteWrap(to, w) : w;
      }
    }
    return new Tensor(to, out, x.dims);
  }

  const v = numbers(x);
  const srcFloat = isFloat(from);

  if (to === 'bool') {
    const o = out as Uint8Array;
    for (let i = 0; i < n; i++) o[i] = v[i] !== 0 ? 1 : 0;
  } else if (to === 'float32' || to === 'float64') {
    (out as Float32Array).set(v);
  } else if (isFloat(to)) {
    const enc = floatEncoder(to, saturate, opts.round ?? 'up');
    const o = out as Uint16Array;
    for (let i = 0; i < n; i++) o[i] = enc(v[i]);
  } else {
    // integer targets of at most 32 bits
    const o = out as Int32Array;
    if (srcFloat) {
      for (let i = 0; i < n; i++) o[i] = floatToSmallInt(to, v[i]);
    } else if (isSubByteInt(to)) {
      for (let i = 0; i < n; i++) o[i] = subByteWrap(to, v[i] | 0);
    } else {
      o.set(v as Int32Array);
      // TypedArray.set converts with ToInt8/ToUint8/... (modular), matching numpy's wrapping casts.
    }
  }
  return new Tensor(to, out, x.dims);
}

function readRound(ctx: KernelContext): E8M0Round {
  const r = ctx.attr.string('round_mode', 'up');
  if (r !== 'up' && r !== 'down' && r !== 'nearest') unsupported(ctx, `round_mode '${r}' is not supported`);
  return r;
}

registerOp('Cast', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const to = dtypeFromOnnx(ctx.attr.int('to'), { node: ctx.node.name, op: ctx.node.opType });
  if (to === 'complex64' || to === 'complex128' || x.type === 'complex64' || x.type === 'complex128') {
    unsupported(ctx, `Cast between ${x.type} and ${to} is not implemented`);
  }
  return [castTensor(x, to, { saturate: ctx.attr.int('saturate', 1) !== 0, round: readRound(ctx) })];
});

registerOp('CastLike', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const like = input(inputs, 1, ctx);
  const to = like.type;
  if (to === 'complex64' || to === 'complex128' || x.type === 'complex64' || x.type === 'complex128') {
    unsupported(ctx, `CastLike between ${x.type} and ${to} is not implemented`);
  }
  return [castTensor(x, to, { saturate: ctx.attr.int('saturate', 1) !== 0, round: readRound(ctx) })];
});

// --- BitCast ---------------------------------------------------------------------------------------

/** The bit pattern of every element of a sub-byte tensor (low bits). */
function subBytePattern(t: Tensor): Uint8Array {
  const s = t.data as Uint8Array | Int8Array;
  const mask = DTYPES[t.type].rawBytes === 0.5 ? 15 : 3;
  const o = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) o[i] = s[i] & mask;
  return o;
}

registerOp('BitCast', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const to = dtypeFromOnnx(ctx.attr.int('to'), { node: ctx.node.name, op: ctx.node.opType });
  const where = { node: ctx.node.name, op: ctx.node.opType };
  if (x.type === 'string' || to === 'string') unsupported(ctx, 'BitCast of strings is not defined');
  const fromBytes = DTYPES[x.type].rawBytes;
  const toBytes = DTYPES[to].rawBytes;
  if (fromBytes !== toBytes) {
    throw new InputError(`BitCast needs types of the same size: ${x.type} is ${fromBytes * 8} bits, ${to} is ${toBytes * 8} bits`, where);
  }
  const n = x.size;
  const out = allocData(to, n) as TypedArray;
  if (fromBytes < 1) {
    const pat = subBytePattern(x);
    const o = out as Int8Array;
    const bitsN = fromBytes * 8;
    const signed = to === 'int4' || to === 'int2';
    const half = 1 << (bitsN - 1);
    for (let i = 0; i < n; i++) o[i] = signed ? (pat[i] ^ half) - half : pat[i];
    return [new Tensor(to, out, x.dims)];
  }
  const src = x.data as TypedArray;
  const srcBytes = new Uint8Array(src.buffer, src.byteOffset, n * fromBytes);
  new Uint8Array(out.buffer, out.byteOffset, n * toBytes).set(srcBytes);
  if (to === 'bool') {
    const o = out as Uint8Array;
    for (let i = 0; i < n; i++) o[i] = o[i] !== 0 ? 1 : 0;
  }
  return [new Tensor(to, out, x.dims)];
});
