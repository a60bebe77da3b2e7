// SIMD128 f32x4 math for generated kernels: a small value-returning emitter (Vec) and exp, log, tanh, erf, sigmoid,
// expm1, log1p accurate to a few ulp (max relative error about 3e-7 against Math.* on their whole f32 domains).
import type { FunctionBuilder, Local } from '../../../codegen/wasm/builder.js';

/** SIMD opcodes used here and by the elementwise/reduction generators (after the 0xfd prefix). */
export const V = {
  load: 0x00, load32_splat: 0x09, store: 0x0b,
  i32x4_splat: 0x11, f32x4_splat: 0x13,
  i32x4_extract_lane: 0x1b, f32x4_extract_lane: 0x1f,
  i32x4_eq: 0x37, i32x4_ne: 0x38, i32x4_lt_s: 0x39, i32x4_gt_s: 0x3b, i32x4_le_s: 0x3d, i32x4_ge_s: 0x3f,
  f32x4_eq: 0x41, f32x4_ne: 0x42, f32x4_lt: 0x43, f32x4_gt: 0x44, f32x4_le: 0x45, f32x4_ge: 0x46,
  not: 0x4d, and: 0x4e, andnot: 0x4f, or: 0x50, xor: 0x51, bitselect: 0x52, any_true: 0x53,
  load8_lane: 0x54, load32_lane: 0x56, store8_lane: 0x58, store32_lane: 0x5a, load32_zero: 0x5c,
  i8x16_narrow_i16x8_s: 0x65, i8x16_narrow_i16x8_u: 0x66,
  f32x4_ceil: 0x67, f32x4_floor: 0x68, f32x4_trunc: 0x69, f32x4_nearest: 0x6a,
  i16x8_narrow_i32x4_s: 0x85, i16x8_narrow_i32x4_u: 0x86, i16x8_extend_low_i8x16_u: 0x89,
  i32x4_abs: 0xa0, i32x4_neg: 0xa1, i32x4_extend_low_i16x8_u: 0xa9,
  i32x4_shl: 0xab, i32x4_shr_s: 0xac, i32x4_shr_u: 0xad, i32x4_add: 0xae, i32x4_sub: 0xb1, i32x4_mul: 0xb5,
  i32x4_min_s: 0xb6, i32x4_max_s: 0xb8,
  f32x4_abs: 0xe0, f32x4_neg: 0xe1, f32x4_sqrt: 0xe3, f32x4_add: 0xe4, f32x4_sub: 0xe5, f32x4_mul: 0xe6, f32x4_div: 0xe7,
  f32x4_min: 0xe8, f32x4_max: 0xe9, f32x4_pmin: 0xea, f32x4_pmax: 0xeb,
  i32x4_trunc_sat_f32x4_s: 0xf8, f32x4_convert_i32x4_s: 0xfa,
} as const;

/** An operand: a v128 local, an f32 splat constant, or an i32 splat constant. */
export type Arg = Local | number | { i: number };

const i32x4Bytes = (x: number) => new Uint8Array(new Int32Array([x, x, x, x]).buffer);

/** Emits SIMD expressions; every operation stores its result in a fresh v128 local and returns it. */
export class Vec {
  constructor(readonly f: FunctionBuilder) {}

  tmp(): Local { return this.f.local('v128'); }

  push(a: Arg): void {
    if (typeof a === 'number') this.f.f32x4_const(a);
    else if ('i' in a) this.f.v128_const(i32x4Bytes(a.i));
    else this.f.get(a);
  }

  /** Stores the value on top of the stack in a fresh local. */
  save(): Local { const t = this.tmp(); this.f.set(t); return t; }

  op1(code: number, a: Arg): Local { this.push(a); this.f.simd(code); return this.save(); }
  op2(code: number, a: Arg, b: Arg): Local { this.push(a); this.push(b); this.f.simd(code); return this.save(); }

  add(a: Arg, b: Arg): Local { return this.op2(V.f32x4_add, a, b); }
  sub(a: Arg, b: Arg): Local { return this.op2(V.f32x4_sub, a, b); }
  mul(a: Arg, b: Arg): Local { return this.op2(V.f32x4_mul, a, b); }
  div(a: Arg, b: Arg): Local { return this.op2(V.f32x4_div, a, b); }
  min(a: Arg, b: Arg): Local { return this.op2(V.f32x4_min, a, b); }
  max(a: Arg, b: Arg): Local { return this.op2(V.f32x4_max, a, b); }
  /** b < a ? b : a (NaN in a passes through). */
  pmin(a: Arg, b: Arg): Local { return this.op2(V.f32x4_pmin, a, b); }
  /** a < b ? b : a (NaN in a passes through). */
  pmax(a: Arg, b: Arg): Local { return this.op2(V.f32x4_pmax, a, b); }
  abs(a: Arg): Local { return this.op1(V.f32x4_abs, a); }
  neg(a: Arg): Local { return this.op1(V.f32x4_neg, a); }
  sqrt(a: Arg): Local { return this.op1(V.f32x4_sqrt, a); }
  nearest(a: Arg): Local { return this.op1(V.f32x4_nearest, a); }
  eq(a: Arg, b: Arg): Local { return this.op2(V.f32x4_eq, a, b); }
  ne(a: Arg, b: Arg): Local { return this.op2(V.f32x4_ne, a, b); }
  lt(a: Arg, b: Arg): Local { return this.op2(V.f32x4_lt, a, b); }
  gt(a: Arg, b: Arg): Local { return this.op2(V.f32x4_gt, a, b); }
  le(a: Arg, b: Arg): Local { return this.op2(V.f32x4_le, a, b); }
  ge(a: Arg, b: Arg): Local { return this.op2(V.f32x4_ge, a, b); }
  and(a: Arg, b: Arg): Local { return this.op2(V.and, a, b); }
  or(a: Arg, b: Arg): Local { return this.op2(V.or, a, b); }
  xor(a: Arg, b: Arg): Local { return this.op2(V.xor, a, b); }
  /** a & ~b */
  andnot(a: Arg, b: Arg): Local { return this.op2(V.andnot, a, b); }
  not(a: Arg): Local { return this.op1(V.not, a); }
  /** m ? a : b, lane bits (m is a mask of all-ones/all-zeros lanes). */
  sel(m: Arg, a: Arg, b: Arg): Local { this.push(a); this.push(b); this.push(m); this.f.simd(V.bitselect); return this.save(); }
  iadd(a: Arg, b: Arg): Local { return this.op2(V.i32x4_add, a, b); }
  isub(a: Arg, b: Arg): Local { return this.op2(V.i32x4_sub, a, b); }
  ishl(a: Arg, n: number): Local { this.push(a); this.f.i32(n); this.f.simd(V.i32x4_shl); return this.save(); }
  ishr(a: Arg, n: number): Local { this.push(a); this.f.i32(n); this.f.simd(V.i32x4_shr_s); return this.save(); }
  /** f32 lanes → i32 lanes (truncating, saturating; NaN → 0). */
  toInt(a: Arg): Local { return this.op1(V.i32x4_trunc_sat_f32x4_s, a); }
  toF32(a: Arg): Local { return this.op1(V.f32x4_convert_i32x4_s, a); }

  /** Horner: c[n-1] t^(n-1) + ... + c[0]. */
  poly(t: Arg, c: readonly number[]): Local {
    let r: Arg = c[c.length - 1];
    for (let i = c.length - 2; i >= 0; i--) r = this.add(this.mul(r, t), c[i]);
    return r as Local;
  }

  copySign(mag: Arg, sign: Arg): Local { return this.or(this.and(mag, { i: 0x7fffffff }), this.and(sign, { i: -0x80000000 })); }
}

const F = Math.fround;

/** exp(x + lo), where lo is a small correction (|lo| < 2^-10 |x| or so) added after range reduction. */
export function vexp(v: Vec, x: Arg, lo?: Arg): Local {
  // Range [-104, 89] covers every finite f32 result, denormals included; NaN passes through pmax/pmin.
  const xc = v.pmin(v.pmax(x, -104), 89);
  const n = v.nearest(v.mul(xc, F(Math.LOG2E)));
  let r = v.sub(v.sub(xc, v.mul(n, 0.693359375)), v.mul(n, -2.12194440e-4));
  if (lo !== undefined) r = v.add(r, lo);
  const p = v.poly(r, [5.0000001201e-1, 1.6666665459e-1, 4.1665795894e-2, 8.3334519073e-3, 1.3981999507e-3, 1.9875691500e-4]);
  const y = v.add(v.add(v.mul(v.mul(p, r), r), r), 1);
  // 2^n as two normal factors so that overflow and gradual underflow round once, at the last multiply.
  const ni = v.toInt(n);
  const n1 = v.ishr(ni, 1), n2 = v.isub(ni, n1);
  const s1 = v.ishl(v.iadd(n1, { i: 127 }), 23), s2 = v.ishl(v.iadd(n2, { i: 127 }), 23);
  return v.mul(v.mul(y, s1), s2);
}

/** Natural log (Cephes logf polynomial; exact special cases: log(0) = -inf, log(<0) = NaN, log(inf) = inf). */
export function vlog(v: Vec, x: Arg): Local {
  const den = v.lt(x, 1.17549435e-38);
  const xs = v.sel(den, v.mul(x, 8388608), x);
  let e = v.isub(v.ishr(xs, 23), v.sel(den, { i: 127 + 23 }, { i: 127 }));
  let m = v.or(v.and(xs, { i: 0x7fffff }), { i: 0x3f800000 });
  const big = v.gt(m, F(Math.SQRT2));
  m = v.sel(big, v.mul(m, 0.5), m);
  e = v.isub(e, big); // mask lanes are -1
  const ef = v.toF32(e);
  const f = v.sub(m, 1);
  const z = v.mul(f, f);
  const P = [3.3333331174e-1, -2.4999993993e-1, 2.0000714765e-1, -1.6668057665e-1, 1.4249322787e-1,
    -1.2420140846e-1, 1.1676998740e-1, -1.1514610310e-1, 7.0376836292e-2];
  let y = v.mul(v.mul(v.poly(f, P), f), z);
  y = v.add(y, v.mul(ef, -2.12194440e-4));
  y = v.sub(y, v.mul(z, 0.5));
  let r = v.add(v.add(f, y), v.mul(ef, 0.693359375));
  r = v.sel(v.eq(x, Infinity), Infinity, r);
  r = v.sel(v.eq(x, 0), -Infinity, r);
  r = v.sel(v.lt(x, 0), NaN, r);
  return v.sel(v.ne(x, x), x, r);
}

/** log(1 + u) for u >= -1 (Goldberg's correction keeps small u exact). */
export function vlog1p(v: Vec, u: Arg): Local {
  const w = v.add(u, 1);
  const d = v.sub(w, 1);
  const r = v.mul(vlog(v, w), v.div(u, d));
  // w == 1: log1p(u) ≈ u; w == inf: inf.
  return v.sel(v.eq(d, 0), u, v.sel(v.eq(w, Infinity), w, r));
}

/** exp(x) - 1, accurate near 0. */
export function vexpm1(v: Vec, x: Arg): Local {
  // |x| < 0.35: Taylor to x^9/9!; elsewhere exp(x) - 1 loses at most a bit.
  const c = [1, 1 / 2, 1 / 6, 1 / 24, 1 / 120, 1 / 720, 1 / 5040, 1 / 40320, 1 / 362880].map(F);
  const small = v.mul(v.poly(x, c), x);
  const big = v.sub(vexp(v, x), 1);
  return v.sel(v.lt(v.abs(x), 0.35), small, big);
}

export function vsigmoid(v: Vec, x: Arg): Local {
  // e = exp(-|x|) never overflows; x < 0 takes e/(1+e) so that tiny results underflow gradually.
  const e = vexp(v, v.neg(v.abs(x)));
  const r = v.div(1, v.add(e, 1));
  return v.sel(v.lt(x, 0), v.mul(e, r), r);
}

export function vtanh(v: Vec, x: Arg): Local {
  const ax = v.abs(x);
  const z = v.mul(x, x);
  const P = [-3.33332819422e-1, 1.33314422036e-1, -5.37397155531e-2, 2.06390887954e-2, -5.70498872745e-3];
  const small = v.add(v.mul(v.mul(v.poly(z, P), z), x), x);
  const e = vexp(v, v.add(ax, ax));
  const large = v.copySign(v.sub(1, v.div(2, v.add(e, 1))), x);
  return v.sel(v.lt(ax, 0.625), small, large);
}

// erf(x)/x on [0, 1] as a polynomial in t = 2x^2 - 1; erfc(x) e^(x^2) x on [1, inf) as a polynomial in t = 2/x^2 - 1
// (least-squares fits on Chebyshev nodes; relative error 1.5e-7 and 2.5e-7 in f32 arithmetic).
export const ERF_SMALL = [0.9654687643051147, -0.1405360996723175, 0.019852494820952415, -0.002285419963300228,
  0.0002175202389480546, -0.00001766878631315194, 0.0000012261342590136337];
export const ERFC_LARGE = [0.4754642844200134, -0.060281552374362946, 0.0167657770216465, -0.006185648962855339,
  0.0026932854671031237, -0.001305852783843875, 0.0005312187131494284, -0.00022246057051233947, 0.000522520684171468,
  -0.00042260190821252763, -0.00031809473875910044, 0.0002926845627371222, 0.0002275717561133206, -0.00017755874432623386];

/** erf(|x|) for |x| < 1 (lanes with larger |x| hold garbage). */
function erfSmall(v: Vec, ax: Arg): Local {
  const u = v.mul(ax, ax);
  return v.mul(v.poly(v.sub(v.add(u, u), 1), ERF_SMALL), ax);
}

/** erfc(|x|) for |x| >= 1 (lanes with smaller |x| hold garbage): e^(-x^2) with x^2 split exactly. */
function erfcLarge(v: Vec, ax: Arg): Local {
  const xc = v.pmin(ax, 20); // erfc(20) underflows; keeps 1/x^2 and the exp argument finite
  const w = v.div(1, xc);
  const s = v.mul(w, w);
  const q = v.mul(v.poly(v.sub(v.add(s, s), 1), ERFC_LARGE), w);
  const hi = v.and(xc, { i: -4096 }); // 12 significant bits: hi*hi is exact
  const lo = v.mul(v.sub(hi, xc), v.add(hi, xc)); // -(x^2 - hi^2)
  const e = vexp(v, v.neg(v.mul(hi, hi)), lo);
  return v.mul(e, q);
}

export function verf(v: Vec, x: Arg): Local {
  const ax = v.abs(x);
  const r = v.sel(v.lt(ax, 1), erfSmall(v, ax), v.sub(1, erfcLarge(v, ax)));
  // NaN: the compare is false and erfcLarge(NaN) is NaN; copySign keeps it NaN.
  return v.copySign(r, x);
}

/** 1 + erf(x), accurate for negative x too (erfc(-x)): the exact Gelu needs it. */
export function vOnePlusErf(v: Vec, x: Arg): Local {
  const ax = v.abs(x);
  const ec = erfcLarge(v, ax);
  const small = v.add(1, v.copySign(erfSmall(v, ax), x));
  const large = v.sel(v.lt(x, 0), ec, v.sub(2, ec));
  return v.sel(v.lt(ax, 1), small, large);
}
