// WGSL math the built-ins lack or get wrong at the edges (tanh of large |x|, pow of negative bases, erf), emitted only
// when a kernel calls them. The erf polynomials are the Wasm backend's, so both backends round alike.
import { ERFC_LARGE, ERF_SMALL } from '../../backends/wasm/kernels/math.js';
import { f32Lit } from '../../backends/webgpu/kernel.js';

const horner = (t: string, c: readonly number[]) => {
  let r = f32Lit(c[c.length - 1]);
  for (let i = c.length - 2; i >= 0; i--) r = `fma(${r}, ${t}, ${f32Lit(c[i])})`;
  return r;
};

const FNS: Record<string, { deps?: string[]; code: string }> = {
  // A parameter is not a constant expression, so the bit patterns of ±Inf and NaN pass WGSL's const-evaluation rules.
  wj_f32bits: { code: 'fn wj_f32bits(u: u32) -> f32 { return bitcast<f32>(u); }' },
  wj_nan: { deps: ['wj_f32bits'], code: 'fn wj_nan() -> f32 { return wj_f32bits(0x7fc00000u); }' },
  wj_inf: { deps: ['wj_f32bits'], code: 'fn wj_inf() -> f32 { return wj_f32bits(0x7f800000u); }' },
  wj_sigmoid: { code: 'fn wj_sigmoid(x: f32) -> f32 { let e = exp(-abs(x)); let r = 1.0 / (1.0 + e); return select(r, e * r, x < 0.0); }' },
  wj_tanh: {
    code: `fn wj_tanh(x: f32) -> f32 {
  let ax = abs(x);
  if (ax < 0.625) { let z = x * x; return fma(${horner('z', [-3.33332819422e-1, 1.33314422036e-1, -5.37397155531e-2, 2.06390887954e-2, -5.70498872745e-3])} * z, x, x); }
  let e = exp(min(2.0 * ax, 88.0));
  return sign(x) * (1.0 - 2.0 / (e + 1.0));
}`,
  },
  wj_erfc_large: {
    code: `fn wj_erfc_large(ax: f32) -> f32 {
  let xc = min(ax, 20.0);
  let w = 1.0 / xc;
  let s = w * w;
  let q = ${horner('(2.0 * s - 1.0)', ERFC_LARGE)} * w;
  return exp(-xc * xc) * q;
}`,
  },
  wj_erf_small: { code: `fn wj_erf_small(ax: f32) -> f32 { let u = ax * ax; return ${horner('(2.0 * u - 1.0)', ERF_SMALL)} * ax; }` },
  wj_erf: {
    deps: ['wj_erfc_large', 'wj_erf_small'],
    code: 'fn wj_erf(x: f32) -> f32 { let ax = abs(x); let r = select(1.0 - wj_erfc_large(ax), wj_erf_small(ax), ax < 1.0); return select(r, -r, x < 0.0); }',
  },
  wj_one_plus_erf: {
    deps: ['wj_erfc_large', 'wj_erf_small'],
    code: `fn wj_one_plus_erf(x: f32) -> f32 {
  let ax = abs(x);
  if (ax < 1.0) { let e = wj_erf_small(ax); return 1.0 + select(e, -e, x < 0.0); }
  let ec = wj_erfc_large(ax);
  return select(2.0 - ec, ec, x < 0.0);
}`,
  },
  wj_gelu: { deps: ['wj_one_plus_erf'], code: 'fn wj_gelu(x: f32) -> f32 { return 0.5 * x * wj_one_plus_erf(x * 0.70710678118654752); }' },
  wj_gelu_tanh: { deps: ['wj_tanh'], code: 'fn wj_gelu_tanh(x: f32) -> f32 { return 0.5 * x * (1.0 + wj_tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }' },
  wj_pow: {
    deps: ['wj_nan', 'wj_inf'],
    code: `fn wj_pow(x: f32, y: f32) -> f32 {
  if (y == 0.0) { return 1.0; }
  if (x != x || y != y) { return wj_nan(); }
  let ax = abs(x);
  var r: f32;
  if (ax == 0.0) { r = select(0.0, wj_inf(), y < 0.0); } else { r = exp2(y * log2(ax)); }
  if (x < 0.0 || (x == 0.0 && (bitcast<u32>(x) & 0x80000000u) != 0u)) {
    if (floor(y) != y) { return select(wj_nan(), r, x == 0.0); }
    if (fract(y * 0.5) != 0.0) { r = -r; }
  }
  return r;
}`,
  },
  wj_softplus: { code: 'fn wj_softplus(x: f32) -> f32 { return max(x, 0.0) + log(1.0 + exp(-abs(x))); }' },
  wj_elu: { code: 'fn wj_elu(x: f32, a: f32) -> f32 { return select(x, a * (exp(x) - 1.0), x < 0.0); }' },
};

/** The WGSL functions named wj_* that `code` calls and does not define, with their dependencies, in definition order. */
export function mathPrelude(code: string): string {
  const out: string[] = [];
  const seen = new Set<string>();
  for (const m of code.matchAll(/\bfn (wj_[a-z0-9_]+)\(/g)) seen.add(m[1]);
  const add = (name: string) => {
    if (seen.has(name)) return;
    seen.add(name);
    for (const d of FNS[name].deps ?? []) add(d);
    out.push(FNS[name].code);
  };
  for (const m of code.matchAll(/\b(wj_[a-z0-9_]+)\(/g)) if (FNS[m[1]]) add(m[1]);
  return out.join('\n');
}

/** WGSL expression of an activation applied to `x` (f32): the FusedMatMul / FusedConv epilogue names. */
export function activationExpr(act: string, x: string, alpha = 0, beta = 0): string | null {
  switch (act) {
    case 'none': return x;
    case 'relu': return `max(${x}, 0.0)`;
    case 'sigmoid': return `wj_sigmoid(${x})`;
    case 'tanh': return `wj_tanh(${x})`;
    case 'gelu': return `wj_gelu(${x})`;
    case 'gelu_tanh': return `wj_gelu_tanh(${x})`;
    case 'silu': return `(${x} * wj_sigmoid(${x}))`;
    case 'leakyrelu': return `select(${x}, ${x} * ${f32Lit(alpha)}, ${x} < 0.0)`;
    case 'clip': return `clamp(${x}, ${f32Lit(alpha)}, ${f32Lit(beta)})`;
    case 'hardsigmoid': return `clamp(${x} * ${f32Lit(alpha)} + ${f32Lit(beta)}, 0.0, 1.0)`;
    case 'hardswish': return `(${x} * clamp(${x} * ${f32Lit(1 / 6)} + 0.5, 0.0, 1.0))`;
    default: return null;
  }
}
