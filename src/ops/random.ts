// Reference kernels: random numbers (RandomUniform/Normal[Like], Multinomial, Bernoulli).
// Values are random by nature: only dtype/shape are reproducible across engines. With a `seed` attribute
// the output is deterministic within webjit (each run restarts the generator from the seed).
import { InputError } from '../errors.js';
import { dtypeFromOnnx, isFloat, sizeOf, Tensor, type DType } from '../tensor.js';
import { registerOp, type KernelContext } from './registry.js';
import { allocData, fromNumbers, input, numbers } from './util.js';

const where = (ctx: KernelContext) => ({ node: ctx.node.name, op: ctx.node.opType });

/** xoshiro128** seeded through splitmix32; next() gives a uniform double in [0, 1). */
class Rng {
  private a: number; private b: number; private c: number; private d: number;
  constructor(seed: number) {
    let s = seed >>> 0;
    const mix = () => {
      s = (s + 0x9e3779b9) | 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = mix(); this.b = mix(); this.c = mix(); this.d = mix();
    if ((this.a | this.b | this.c | this.d) === 0) this.a = 1;
  }
  private u32(): number {
    const r = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a; this.d ^= this.b; this.b ^= this.c; this.a ^= this.d;
    this.c ^= t; this.d = rotl(this.d, 11);
    return r;
  }
  next(): number {
    // 53 random bits.
    return ((this.u32() >>> 5) * 67108864 + (this.u32() >>> 6)) / 9007199254740992;
  }
  normal(): number {
    // Box-Muller (one value per call; keeps no per-element state).
    let u = this.next();
    while (u === 0) u = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }
}
const rotl = (x: number, k: number) => (x << k) | (x >>> (32 - k));

function rngFor(ctx: KernelContext): Rng {
  if (ctx.attr.has('seed')) {
    const s = ctx.attr.float('seed');
    // Mix the float's bits so that nearby seeds give unrelated streams.
    const f = new Float32Array([s]);
    return new Rng(new Uint32Array(f.buffer)[0] ^ 0x5bd1e995);
  }
  return new Rng((Math.random() * 2 ** 32) >>> 0);
}

function floatDtype(code: number | undefined, dflt: DType, ctx: KernelContext): DType {
  const dt = code === undefined ? dflt : dtypeFromOnnx(code, where(ctx));
  if (dt !== 'float32' && dt !== 'float64' && dt !== 'float16' && dt !== 'bfloat16') {
    throw new InputError(`dtype ${dt} is not allowed; the output must be float16, bfloat16, float or double`, where(ctx));
  }
  return dt;
}

function fill(dtype: DType, dims: readonly number[], rng: Rng, normal: boolean, p0: number, p1: number): Tensor {
  const n = sizeOf(dims);
  allocData(dtype, n); // size check
  const v = new Float64Array(n);
  if (normal) for (let i = 0; i < n; i++) v[i] = p0 + p1 * rng.normal();
  else for (let i = 0; i < n; i++) v[i] = p0 + (p1 - p0) * rng.next();
  return fromNumbers(dtype, dims, v);
}

function shapeAttr(ctx: KernelContext): number[] {
  const s = ctx.attr.ints('shape');
  for (const d of s) if (!Number.isInteger(d) || d < 0) throw new InputError(`shape [${s.join(',')}] has an invalid dimension`, where(ctx));
  return s;
}

const optDtype = (ctx: KernelContext) => (ctx.attr.has('dtype') ? ctx.attr.int('dtype') : undefined);

registerOp('RandomUniform', (_inputs, ctx) => {
  const dt = floatDtype(optDtype(ctx), 'float32', ctx);
  return [fill(dt, shapeAttr(ctx), rngFor(ctx), false, ctx.attr.float('low', 0), ctx.attr.float('high', 1))];
});

registerOp('RandomNormal', (_inputs, ctx) => {
  const dt = floatDtype(optDtype(ctx), 'float32', ctx);
  return [fill(dt, shapeAttr(ctx), rngFor(ctx), true, ctx.attr.float('mean', 0), ctx.attr.float('scale', 1))];
});

registerOp('RandomUniformLike', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const dt = floatDtype(optDtype(ctx), x.type, ctx);
  return [fill(dt, x.dims, rngFor(ctx), false, ctx.attr.float('low', 0), ctx.attr.float('high', 1))];
});

registerOp('RandomNormalLike', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const dt = floatDtype(optDtype(ctx), x.type, ctx);
  return [fill(dt, x.dims, rngFor(ctx), true, ctx.attr.float('mean', 0), ctx.attr.float('scale', 1))];
});

registerOp('Multinomial', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  if (!isFloat(x.type)) throw new InputError(`input must be a float tensor, got ${x.type}`, where(ctx));
  if (x.dims.length !== 2) throw new InputError(`input must be [batch_size, class_size], got [${x.dims.join(',')}]`, where(ctx));
  const dt = dtypeFromOnnx(ctx.attr.int('dtype', 6), where(ctx));
  if (dt !== 'int32' && dt !== 'int64') throw new InputError(`dtype ${dt} must be int32 or int64`, where(ctx));
  const samples = ctx.attr.int('sample_size', 1);
  if (samples < 0) throw new InputError(`sample_size ${samples} must not be negative`, where(ctx));
  const [B, C] = x.dims;
  const logits = numbers(x);
  const rng = rngFor(ctx);
  const cdf = new Float64Array(C);
  const out = new Float64Array(B * samples);
  for (let b = 0; b < B; b++) {
    let mx = -Infinity;
    for (let c = 0; c < C; c++) if (logits[b * C + c] > mx) mx = logits[b * C + c];
    let acc = 0;
    for (let c = 0; c < C; c++) { acc += Math.exp(logits[b * C + c] - mx); cdf[c] = acc; }
    for (let s = 0; s < samples; s++) {
      const u = rng.next() * acc;
      let lo = 0, hi = C - 1;
      while (lo < hi) { const mid = (lo + hi) >> 1; if (cdf[mid] > u) hi = mid; else lo = mid + 1; }
      out[b * samples + s] = C ? lo : 0;
    }
  }
  return [fromNumbers(dt, [B, samples], out)];
});

registerOp('Bernoulli', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  if (!isFloat(x.type)) throw new InputError(`input must be a float tensor, got ${x.type}`, where(ctx));
  const dt = ctx.attr.has('dtype') ? dtypeFromOnnx(ctx.attr.int('dtype'), where(ctx)) : x.type;
  if (dt === 'string') throw new InputError('dtype must not be string', where(ctx));
  const p = numbers(x);
  const rng = rngFor(ctx);
  const out = new Float64Array(p.length);
  for (let i = 0; i < p.length; i++) {
    if (!(p[i] >= 0 && p[i] <= 1)) throw new InputError(`probability ${p[i]} at ${i} is outside [0, 1]`, where(ctx));
    out[i] = rng.next() < p[i] ? 1 : 0;
  }
  return [fromNumbers(dt, x.dims, out)];
});
