// Reference kernels: signal family (DFT, STFT, window functions, MelWeightMatrix).
import { InputError, UnsupportedError } from '../errors.js';
import { dtypeFromOnnx, isFloat, type DType, type Tensor, type Value } from '../tensor.js';
import { registerOp, type KernelContext } from './registry.js';
import { fromNumbers, input, numbers, optInput, stridesOf } from './util.js';

const FLOATS: ReadonlySet<DType> = new Set<DType>(['float32', 'float16', 'bfloat16', 'float64']);

function where(ctx: KernelContext) {
  return { node: ctx.node.name, op: ctx.node.opType };
}

function requireFloat(t: Tensor, what: string, ctx: KernelContext): void {
  if (!FLOATS.has(t.type)) throw new UnsupportedError(`${what} of type ${t.type} is not supported (float types only)`, where(ctx));
}

function scalarInt(t: Tensor, what: string, ctx: KernelContext): number {
  if (t.size !== 1) throw new InputError(`${what} must be a scalar, got shape [${t.dims.join(',')}]`, where(ctx));
  const v = numbers(t)[0];
  if (!Number.isFinite(v)) throw new InputError(`${what} must be finite, got ${v}`, where(ctx));
  return Math.trunc(v);
}

// --- 1-D complex transform -----------------------------------------------------------------------

/**
 * A reusable complex DFT of length n (forward: e^{-2πijk/n}; inverse: e^{+2πijk/n}, unnormalized).
 * Radix-2 FFT for powers of two, a direct O(n²) sum with a twiddle table otherwise.
 */
class Dft {
  private readonly cos: Float64Array;
  private readonly sin: Float64Array;
  private readonly pow2: boolean;
  private readonly rev?: Uint32Array;
  private readonly tr: Float64Array;
  private readonly ti: Float64Array;

  constructor(readonly n: number) {
    this.cos = new Float64Array(n);
    this.sin = new Float64Array(n);
    for (let k = 0; k < n; k++) { const a = (2 * Math.PI * k) / n; this.cos[k] = Math.cos(a); this.sin[k] = Math.sin(a); }
    this.pow2 = n > 1 && (n & (n - 1)) === 0;
    if (this.pow2) {
      const bits = Math.log2(n);
      this.rev = new Uint32Array(n);
      for (let i = 0; i < n; i++) {
        let r = 0;
        for (let b = 0; b < bits; b++) if (i & (1 << b)) r |= 1 << (bits - 1 - b);
        this.rev[i] = r;
      }
    }
    this.tr = new Float64Array(n);
    this.ti = new Float64Array(n);
  }

  /** Transforms re/im (length n) in place. */
  run(re: Float64Array, im: Float64Array, inverse: boolean): void {
    const n = this.n;
    const sgn = inverse ? 1 : -1;
    const { cos, sin, tr, ti } = this;
    if (this.pow2) {
      const rev = this.rev!;
      for (let i = 0; i < n; i++) { tr[i] = re[rev[i]]; ti[i] = im[rev[i]]; }
      for (let size = 2; size <= n; size <<= 1) {
        const half = size >> 1, step = n / size;
        for (let s = 0; s < n; s += size) {
          for (let k = 0; k < half; k++) {
            const wr = cos[k * step], wi = sgn * sin[k * step];
            const a = s + k, b = a + half;
            const xr = tr[b] * wr - ti[b] * wi, xi = tr[b] * wi + ti[b] * wr;
            tr[b] = tr[a] - xr; ti[b] = ti[a] - xi;
            tr[a] += xr; ti[a] += xi;
          }
        }
      }
    } else {
      for (let k = 0; k < n; k++) {
        let sr = 0, si = 0, idx = 0;
        for (let j = 0; j < n; j++) {
          const wr = cos[idx], wi = sgn * sin[idx];
          sr += re[j] * wr - im[j] * wi;
          si += re[j] * wi + im[j] * wr;
          idx += k; if (idx >= n) idx -= n;
        }
        tr[k] = sr; ti[k] = si;
      }
    }
    re.set(tr); im.set(ti);
  }
}

// --- float32 mixed-radix FFT ----------------------------------------------------------------------

const fr = Math.fround;

/** cos/sin of 2π·m/N with exact symmetry reduction (so quarter turns give exact 0/±1). */
function sincos2pi(m: number, N: number, out: Float64Array, at: number): void {
  m %= N;
  if (2 * m > N) { sincos2pi(N - m, N, out, at); out[at + 1] = -out[at + 1]; return; }
  if (4 * m > N) { sincos2pi(N - 2 * m, 2 * N, out, at); out[at] = -out[at]; return; }
  if (8 * m > N) {
    sincos2pi(N - 4 * m, 4 * N, out, at);
    const c = out[at]; out[at] = out[at + 1]; out[at + 1] = c; return;
  }
  const a = (2 * Math.PI * m) / N;
  out[at] = Math.cos(a); out[at + 1] = Math.sin(a);
}

/**
 * Complex FFT evaluated in float32 arithmetic with the factorization, butterflies and twiddles of
 * the mixed-radix FFTPACK-style algorithm NumPy uses (radices 4, 2, 3, 5), so float32 results carry
 * the same rounding as the ONNX reference outputs. Lengths with other factors are not handled here.
 */
class Fft32 {
  private readonly facts: { ip: number; twr: Float64Array; twi: Float64Array }[] = [];
  private readonly sr: Float64Array;
  private readonly si: Float64Array;

  static factorize(n: number): number[] | undefined {
    if (n < 2) return undefined;
    const f: number[] = [];
    let len = n;
    if (len % 8 === 0) return undefined; // radix-8 pass not emulated
    while (len % 4 === 0) { f.push(4); len /= 4; }
    if (len % 2 === 0) { len /= 2; f.push(2); const t = f[0]; f[0] = f[f.length - 1]; f[f.length - 1] = t; }
    for (let d = 3; d * d <= len; d += 2) while (len % d === 0) { f.push(d); len /= d; }
    if (len > 1) f.push(len);
    return f.every((x) => x <= 5) ? f : undefined;
  }

  constructor(readonly n: number, factors: number[]) {
    const tmp = new Float64Array(2);
    let l1 = 1;
    for (const ip of factors) {
      const ido = n / (l1 * ip);
      const m = (ip - 1) * Math.max(ido - 1, 0);
      const twr = new Float64Array(m), twi = new Float64Array(m);
      for (let j = 1; j < ip; j++)
        for (let i = 1; i < ido; i++) {
          sincos2pi(j * l1 * i, n, tmp, 0);
          twr[(j - 1) * (ido - 1) + i - 1] = fr(tmp[0]);
          twi[(j - 1) * (ido - 1) + i - 1] = fr(tmp[1]);
        }
      this.facts.push({ ip, twr, twi });
      l1 *= ip;
    }
    this.sr = new Float64Array(n);
    this.si = new Float64Array(n);
  }

  /** In place on re/im (float32 values); fct scales the result (applied in float32). */
  run(re: Float64Array, im: Float64Array, fwd: boolean, fct: number): void {
    const n = this.n;
    for (let i = 0; i < n; i++) { re[i] = fr(re[i]); im[i] = fr(im[i]); }
    let ar = re, ai = im, br = this.sr, bi = this.si;
    let l1 = 1;
    for (const { ip, twr, twi } of this.facts) {
      const ido = n / (l1 * ip);
      if (ip === 2) pass2(ido, l1, ar, ai, br, bi, twr, twi, fwd);
      else if (ip === 3) pass3(ido, l1, ar, ai, br, bi, twr, twi, fwd);
      else if (ip === 4) pass4(ido, l1, ar, ai, br, bi, twr, twi, fwd);
      else pass5(ido, l1, ar, ai, br, bi, twr, twi, fwd);
      const tr = ar, ti = ai; ar = br; ai = bi; br = tr; bi = ti;
      l1 *= ip;
    }
    const f32 = fr(fct);
    if (ar !== re) {
      for (let i = 0; i < n; i++) { re[i] = f32 !== 1 ? fr(ar[i] * f32) : ar[i]; im[i] = f32 !== 1 ? fr(ai[i] * f32) : ai[i]; }
    } else if (f32 !== 1) {
      for (let i = 0; i < n; i++) { re[i] = fr(re[i] * f32); im[i] = fr(im[i] * f32); }
    }
  }
}

/** Writes v·w (bwd) or v·conj(w) (fwd) in float32 to (or, oi)[o]. */
function smul(vr: number, vi: number, wr: number, wi: number, fwd: boolean, or: Float64Array, oi: Float64Array, o: number): void {
  if (fwd) { or[o] = fr(fr(vr * wr) + fr(vi * wi)); oi[o] = fr(fr(vi * wr) - fr(vr * wi)); }
  else { or[o] = fr(fr(vr * wr) - fr(vi * wi)); oi[o] = fr(fr(vr * wi) + fr(vi * wr)); }
}

function pass2(ido: number, l1: number, cr: Float64Array, ci: Float64Array, hr: Float64Array, hi: Float64Array,
  twr: Float64Array, twi: Float64Array, fwd: boolean): void {
  for (let k = 0; k < l1; k++)
    for (let i = 0; i < ido; i++) {
      const c0 = i + ido * (2 * k), c1 = i + ido * (1 + 2 * k);
      const h0 = i + ido * k, h1 = i + ido * (k + l1);
      hr[h0] = fr(cr[c0] + cr[c1]); hi[h0] = fr(ci[c0] + ci[c1]);
      const dr = fr(cr[c0] - cr[c1]), di = fr(ci[c0] - ci[c1]);
      if (i === 0) { hr[h1] = dr; hi[h1] = di; }
      else smul(dr, di, twr[i - 1], twi[i - 1], fwd, hr, hi, h1);
    }
}

function pass3(ido: number, l1: number, cr: Float64Array, ci: Float64Array, hr: Float64Array, hi: Float64Array,
  twr: Float64Array, twi: Float64Array, fwd: boolean): void {
  const tw1r = -0.5, tw1i = (fwd ? -1 : 1) * fr(0.8660254037844386467637231707529362);
  for (let k = 0; k < l1; k++)
    for (let i = 0; i < ido; i++) {
      const cb = i + ido * 3 * k, hb = i + ido * k, hs = ido * l1;
      const t0r = cr[(cb + ido * 0)], t0i = ci[(cb + ido * 0)];
      const t1r = fr(cr[(cb + ido * 1)] + cr[(cb + ido * 2)]), t1i = fr(ci[(cb + ido * 1)] + ci[(cb + ido * 2)]);
      const t2r = fr(cr[(cb + ido * 1)] - cr[(cb + ido * 2)]), t2i = fr(ci[(cb + ido * 1)] - ci[(cb + ido * 2)]);
      hr[(hb + hs * 0)] = fr(t0r + t1r); hi[(hb + hs * 0)] = fr(t0i + t1i);
      const car = fr(t0r + fr(t1r * tw1r)), cai = fr(t0i + fr(t1i * tw1r));
      const cbr = fr(-t2i * tw1i), cbi = fr(t2r * tw1i);
      const pr = fr(car + cbr), pi = fr(cai + cbi), mr = fr(car - cbr), mi = fr(cai - cbi);
      if (i === 0) { hr[(hb + hs * 1)] = pr; hi[(hb + hs * 1)] = pi; hr[(hb + hs * 2)] = mr; hi[(hb + hs * 2)] = mi; }
      else {
        smul(pr, pi, twr[i - 1], twi[i - 1], fwd, hr, hi, (hb + hs * 1));
        smul(mr, mi, twr[ido - 1 + i - 1], twi[ido - 1 + i - 1], fwd, hr, hi, (hb + hs * 2));
      }
    }
}

function pass4(ido: number, l1: number, cr: Float64Array, ci: Float64Array, hr: Float64Array, hi: Float64Array,
  twr: Float64Array, twi: Float64Array, fwd: boolean): void {
  for (let k = 0; k < l1; k++)
    for (let i = 0; i < ido; i++) {
      const cb = i + ido * 4 * k, hb = i + ido * k, hs = ido * l1;
      const t2r = fr(cr[(cb + ido * 0)] + cr[(cb + ido * 2)]), t2i = fr(ci[(cb + ido * 0)] + ci[(cb + ido * 2)]);
      const t1r = fr(cr[(cb + ido * 0)] - cr[(cb + ido * 2)]), t1i = fr(ci[(cb + ido * 0)] - ci[(cb + ido * 2)]);
      const t3r = fr(cr[(cb + ido * 1)] + cr[(cb + ido * 3)]), t3i = fr(ci[(cb + ido * 1)] + ci[(cb + ido * 3)]);
      let t4r = fr(cr[(cb + ido * 1)] - cr[(cb + ido * 3)]), t4i = fr(ci[(cb + ido * 1)] - ci[(cb + ido * 3)]);
      // ROTX90
      if (fwd) { const t = -t4r; t4r = t4i; t4i = t; } else { const t = t4r; t4r = -t4i; t4i = t; }
      const ar0 = fr(t2r + t3r), ai0 = fr(t2i + t3i), ar2 = fr(t2r - t3r), ai2 = fr(t2i - t3i);
      const ar1 = fr(t1r + t4r), ai1 = fr(t1i + t4i), ar3 = fr(t1r - t4r), ai3 = fr(t1i - t4i);
      hr[(hb + hs * 0)] = ar0; hi[(hb + hs * 0)] = ai0;
      if (i === 0) {
        hr[(hb + hs * 1)] = ar1; hi[(hb + hs * 1)] = ai1; hr[(hb + hs * 2)] = ar2; hi[(hb + hs * 2)] = ai2; hr[(hb + hs * 3)] = ar3; hi[(hb + hs * 3)] = ai3;
      } else {
        const s = ido - 1;
        smul(ar1, ai1, twr[i - 1], twi[i - 1], fwd, hr, hi, (hb + hs * 1));
        smul(ar2, ai2, twr[s + i - 1], twi[s + i - 1], fwd, hr, hi, (hb + hs * 2));
        smul(ar3, ai3, twr[2 * s + i - 1], twi[2 * s + i - 1], fwd, hr, hi, (hb + hs * 3));
      }
    }
}

function pass5(ido: number, l1: number, cr: Float64Array, ci: Float64Array, hr: Float64Array, hi: Float64Array,
  twr: Float64Array, twi: Float64Array, fwd: boolean): void {
  const sg = fwd ? -1 : 1;
  const tw1r = fr(0.3090169943749474241022934171828191), tw1i = sg * fr(0.9510565162951535721164393333793821);
  const tw2r = fr(-0.8090169943749474241022934171828191), tw2i = sg * fr(0.5877852522924731291687059546390728);
  const s = ido - 1;
  for (let k = 0; k < l1; k++)
    for (let i = 0; i < ido; i++) {
      const cb = i + ido * 5 * k, hb = i + ido * k, hs = ido * l1;
      const t0r = cr[(cb + ido * 0)], t0i = ci[(cb + ido * 0)];
      const t1r = fr(cr[(cb + ido * 1)] + cr[(cb + ido * 4)]), t1i = fr(ci[(cb + ido * 1)] + ci[(cb + ido * 4)]);
      const t4r = fr(cr[(cb + ido * 1)] - cr[(cb + ido * 4)]), t4i = fr(ci[(cb + ido * 1)] - ci[(cb + ido * 4)]);
      const t2r = fr(cr[(cb + ido * 2)] + cr[(cb + ido * 3)]), t2i = fr(ci[(cb + ido * 2)] + ci[(cb + ido * 3)]);
      const t3r = fr(cr[(cb + ido * 2)] - cr[(cb + ido * 3)]), t3i = fr(ci[(cb + ido * 2)] - ci[(cb + ido * 3)]);
      hr[(hb + hs * 0)] = fr(fr(t0r + t1r) + t2r); hi[(hb + hs * 0)] = fr(fr(t0i + t1i) + t2i);
      for (let step = 0; step < 2; step++) {
        const u1 = step === 0 ? 1 : 2, u2 = step === 0 ? 4 : 3;
        const twar = step === 0 ? tw1r : tw2r, twbr = step === 0 ? tw2r : tw1r;
        const twai = step === 0 ? tw1i : tw2i, twbi = step === 0 ? tw2i : -tw1i;
        const car = fr(fr(t0r + fr(twar * t1r)) + fr(twbr * t2r));
        const cai = fr(fr(t0i + fr(twar * t1i)) + fr(twbr * t2i));
        const cbi = fr(fr(twai * t4r) + fr(twbi * t3r));
        const cbr = -fr(fr(twai * t4i) + fr(twbi * t3i));
        const pr = fr(car + cbr), pi = fr(cai + cbi), mr = fr(car - cbr), mi = fr(cai - cbi);
        if (i === 0) { hr[(hb + hs * u1)] = pr; hi[(hb + hs * u1)] = pi; hr[(hb + hs * u2)] = mr; hi[(hb + hs * u2)] = mi; }
        else {
          smul(pr, pi, twr[(u1 - 1) * s + i - 1], twi[(u1 - 1) * s + i - 1], fwd, hr, hi, (hb + hs * u1));
          smul(mr, mi, twr[(u2 - 1) * s + i - 1], twi[(u2 - 1) * s + i - 1], fwd, hr, hi, (hb + hs * u2));
        }
      }
    }
}

// --- DFT (opsets 17, 19, 20) ---------------------------------------------------------------------

function dft(inputs: (Value | undefined)[], ctx: KernelContext): Value[] {
  const x = input(inputs, 0, ctx);
  requireFloat(x, 'input', ctx);
  const rank = x.dims.length;
  if (rank < 2) throw new InputError(`input must have rank >= 2, got [${x.dims.join(',')}]`, where(ctx));
  const comps = x.dims[rank - 1];
  if (comps !== 1 && comps !== 2) throw new InputError(`the last dimension must be 1 (real) or 2 (complex), got ${comps}`, where(ctx));
  let axis: number;
  if (ctx.opset >= 20) {
    const a = optInput(inputs, 2);
    axis = a ? scalarInt(a, 'axis', ctx) : -2;
  } else {
    axis = ctx.attr.int('axis', 1);
  }
  if (axis < 0) axis += rank;
  if (axis < 0 || axis > rank - 2) throw new InputError(`axis is out of range for input rank ${rank}`, where(ctx));
  const inverse = ctx.attr.int('inverse', 0) !== 0;
  const onesided = ctx.attr.int('onesided', 0) !== 0;
  const inLen = x.dims[axis];
  const lenT = optInput(inputs, 1);
  const irfft = inverse && onesided;
  let n = lenT ? scalarInt(lenT, 'dft_length', ctx) : irfft ? 2 * (inLen - 1) : inLen;
  if (n < 1) throw new InputError(`dft_length must be positive, got ${n}`, where(ctx));
  // Output length along the axis and components.
  const outLen = irfft ? n : onesided ? Math.floor(n / 2) + 1 : n;
  const outComps = irfft ? 1 : 2;
  const outDims = [...x.dims];
  outDims[axis] = outLen;
  outDims[rank - 1] = outComps;
  const xv = numbers(x);
  const inStr = stridesOf(x.dims);
  const outStr = stridesOf(outDims);
  const out = new Float64Array(outDims.reduce((a, b) => a * b, 1));
  const re = new Float64Array(n), im = new Float64Array(n);
  const tf = new Dft(n);
  // complex float32 inputs: transform in float32 arithmetic like the reference (NumPy computes complex64
  // FFTs in single precision, real float32 ones in double) where the length allows.
  const fac = x.type === 'float32' && comps === 2 && !irfft ? Fft32.factorize(n) : undefined;
  const tf32 = fac ? new Fft32(n, fac) : undefined;
  // Iterate over all positions except the transform axis and the last (component) axis.
  const outer = x.dims.slice(0, rank - 1).map((d, i) => (i === axis ? 1 : d));
  const nOuter = outer.reduce((a, b) => a * b, 1);
  const ctr = new Array<number>(rank - 1).fill(0);
  const scale = inverse ? 1 / n : 1;
  for (let o = 0; o < nOuter; o++) {
    let inBase = 0, outBase = 0;
    for (let i = 0; i < rank - 1; i++) { inBase += ctr[i] * inStr[i]; outBase += ctr[i] * outStr[i]; }
    const sa = inStr[axis], so = outStr[axis];
    re.fill(0); im.fill(0);
    if (irfft) {
      // Hermitian extension of the one-sided spectrum.
      const m = Math.min(inLen, Math.floor(n / 2) + 1);
      for (let k = 0; k < m; k++) {
        re[k] = xv[inBase + k * sa];
        im[k] = comps === 2 ? xv[inBase + k * sa + 1] : 0;
      }
      im[0] = 0;
      if (n % 2 === 0 && n / 2 < m) im[n / 2] = 0;
      for (let k = Math.floor(n / 2) + 1; k < n; k++) { re[k] = re[n - k]; im[k] = -im[n - k]; }
    } else {
      const m = Math.min(inLen, n);
      for (let k = 0; k < m; k++) {
        re[k] = xv[inBase + k * sa];
        im[k] = comps === 2 ? xv[inBase + k * sa + 1] : 0;
      }
    }
    let sc = scale;
    if (tf32) { tf32.run(re, im, !inverse, scale); sc = 1; } else tf.run(re, im, inverse);
    for (let k = 0; k < outLen; k++) {
      out[outBase + k * so] = re[k] * sc;
      if (outComps === 2) out[outBase + k * so + 1] = im[k] * sc;
    }
    for (let i = rank - 2; i >= 0; i--) { if (++ctr[i] < outer[i]) break; ctr[i] = 0; }
  }
  return [fromNumbers(x.type, outDims, out)];
}

registerOp('DFT', dft);

// --- STFT (opset 17) -----------------------------------------------------------------------------

function stft(inputs: (Value | undefined)[], ctx: KernelContext): Value[] {
  const x = input(inputs, 0, ctx);
  requireFloat(x, 'signal', ctx);
  const step = scalarInt(input(inputs, 1, ctx), 'frame_step', ctx);
  const win = optInput(inputs, 2);
  const flT = optInput(inputs, 3);
  const onesided = ctx.attr.int('onesided', 1) !== 0;
  if (x.dims.length !== 3) throw new InputError(`signal must be [batch, length, 1|2], got [${x.dims.join(',')}]`, where(ctx));
  const [batch, len, comps] = x.dims;
  if (comps !== 1 && comps !== 2) throw new InputError(`signal's last dimension must be 1 or 2, got ${comps}`, where(ctx));
  if (step < 1) throw new InputError(`frame_step must be positive, got ${step}`, where(ctx));
  let fl: number;
  if (flT) fl = scalarInt(flT, 'frame_length', ctx);
  else if (win) fl = win.size;
  else throw new InputError('either window or frame_length must be given', where(ctx));
  if (win) {
    if (win.dims.length !== 1 || win.size !== fl) throw new InputError(`window must have shape [${fl}], got [${win.dims.join(',')}]`, where(ctx));
    requireFloat(win, 'window', ctx);
  }
  if (fl < 1 || fl > len) throw new InputError(`frame_length ${fl} must be in [1, ${len}]`, where(ctx));
  const frames = 1 + Math.floor((len - fl) / step);
  const bins = onesided ? Math.floor(fl / 2) + 1 : fl;
  const wv = win ? numbers(win) : undefined;
  const xv = numbers(x);
  const out = new Float64Array(batch * frames * bins * 2);
  const re = new Float64Array(fl), im = new Float64Array(fl);
  const tf = new Dft(fl);
  for (let b = 0; b < batch; b++)
    for (let f = 0; f < frames; f++) {
      const start = f * step;
      for (let j = 0; j < fl; j++) {
        const w = wv ? wv[j] : 1;
        const src = (b * len + start + j) * comps;
        re[j] = xv[src] * w;
        im[j] = comps === 2 ? xv[src + 1] * w : 0;
      }
      tf.run(re, im, false);
      const dst = (b * frames + f) * bins * 2;
      for (let k = 0; k < bins; k++) { out[dst + 2 * k] = re[k]; out[dst + 2 * k + 1] = im[k]; }
    }
  return [fromNumbers(x.type, [batch, frames, bins, 2], out)];
}

registerOp('STFT', stft);

// --- Window functions (opset 17) -----------------------------------------------------------------

function outputType(ctx: KernelContext, dflt: number): DType {
  const code = ctx.attr.int('output_datatype', dflt);
  const t = dtypeFromOnnx(code, where(ctx));
  if (t === 'string' || t === 'bool' || t === 'complex64' || t === 'complex128') {
    throw new UnsupportedError(`output_datatype ${t} is not supported`, where(ctx));
  }
  return t;
}

/** Generalized cosine window a0 - a1 cos(2πn/N) + a2 cos(4πn/N). */
function cosineWindow(a0: number, a1: number, a2: number) {
  return (inputs: (Value | undefined)[], ctx: KernelContext): Value[] => {
    const size = scalarInt(input(inputs, 0, ctx), 'size', ctx);
    if (size < 0) throw new InputError(`size must be non-negative, got ${size}`, where(ctx));
    const periodic = ctx.attr.int('periodic', 1) !== 0;
    const dtype = outputType(ctx, 1);
    const N = periodic ? size : size - 1;
    const out = new Float64Array(size);
    for (let i = 0; i < size; i++) {
      const a = (2 * Math.PI * i) / N;
      out[i] = a0 - a1 * Math.cos(a) + a2 * Math.cos(2 * a);
    }
    if (!isFloat(dtype)) for (let i = 0; i < size; i++) out[i] = Math.trunc(out[i]);
    return [fromNumbers(dtype, [size], out)];
  };
}

registerOp('HannWindow', cosineWindow(0.5, 0.5, 0));
registerOp('HammingWindow', cosineWindow(25 / 46, 1 - 25 / 46, 0));
registerOp('BlackmanWindow', cosineWindow(0.42, 0.5, 0.08));

// --- MelWeightMatrix (opset 17) ------------------------------------------------------------------

function melWeightMatrix(inputs: (Value | undefined)[], ctx: KernelContext): Value[] {
  const numMel = scalarInt(input(inputs, 0, ctx), 'num_mel_bins', ctx);
  const dftLen = scalarInt(input(inputs, 1, ctx), 'dft_length', ctx);
  const sampleRate = scalarInt(input(inputs, 2, ctx), 'sample_rate', ctx);
  const lowT = input(inputs, 3, ctx);
  const highT = input(inputs, 4, ctx);
  const low = numbers(lowT)[0], high = numbers(highT)[0];
  if (numMel < 1 || dftLen < 1 || sampleRate < 1) {
    throw new InputError(`num_mel_bins (${numMel}), dft_length (${dftLen}) and sample_rate (${sampleRate}) must be positive`, where(ctx));
  }
  const dtype = outputType(ctx, 1);
  // Mel values in the precision of the edge inputs (float32 unless float64).
  const rnd = lowT.type === 'float64' ? (v: number) => v : Math.fround;
  const lowMel = rnd(2595 * Math.log10(1 + low / 700));
  const highMel = rnd(2595 * Math.log10(1 + high / 700));
  const nBins = Math.floor(dftLen / 2) + 1;
  const melStep = rnd((highMel - lowMel) / (numMel + 2));
  const fb = new Int32Array(numMel + 2);
  for (let i = 0; i < numMel + 2; i++) {
    const mel = i * melStep + lowMel;
    const hz = 700 * (Math.pow(10, mel / 2595) - 1);
    fb[i] = Math.floor(((dftLen + 1) * hz) / sampleRate);
  }
  const out = new Float64Array(nBins * numMel);
  const set = (j: number, i: number, v: number) => {
    if (j < 0 || j >= nBins) throw new InputError(`mel frequency bin ${j} is outside [0, ${nBins}); check the edge frequencies`, where(ctx));
    out[j * numMel + i] = v;
  };
  for (let i = 0; i < numMel; i++) {
    const l = fb[i], c = fb[i + 1], r = fb[i + 2];
    if (c === l) set(c, i, 1);
    else for (let j = l; j <= c; j++) set(j, i, (j - l) / (c - l));
    if (r > c) for (let j = c; j < r; j++) set(j, i, (r - j) / (r - c));
  }
  return [fromNumbers(dtype, [nBins, numMel], out)];
}

registerOp('MelWeightMatrix', melWeightMatrix);
