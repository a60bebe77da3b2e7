// Reference kernels: LayerNormalization, RMSNormalization, GroupNormalization, InstanceNormalization,
// BatchNormalization, LRN, MeanVarianceNormalization, LpNormalization.
import { InputError, UnsupportedError } from '../errors.js';
import { dtypeFromOnnx, isFloat, sizeOf, type Tensor, type Value } from '../tensor.js';
import { registerOp, type KernelContext } from './registry.js';
import { broadcastIndex, input, normAxis, numbers, optInput } from './util.js';
import { encodeResult, forEachRun, splitAxis } from './reduce.js';

const where = (ctx: KernelContext) => ({ node: ctx.node.name, op: ctx.node.opType });

function requireFloat(t: Tensor, ctx: KernelContext, what = 'input'): void {
  if (!isFloat(t.type)) throw new UnsupportedError(`${ctx.node.opType} does not support ${t.type} ${what}`, where(ctx));
}

/** Number of outputs the node actually asks for (trailing empty names dropped). */
function wantedOutputs(ctx: KernelContext): number {
  let n = ctx.node.outputs.length;
  while (n > 0 && !ctx.node.outputs[n - 1]) n--;
  return n;
}

/**
 * How a parameter tensor (scale/bias) broadcast against X of `xdims` is indexed for the trailing `inner`
 * elements of each row: 'scalar' (one value), 'row' (index j within the row), or a full index map over X.
 */
function paramMap(p: Tensor, xdims: readonly number[], inner: number, ctx: KernelContext, name: string): Int32Array | 'scalar' | 'row' {
  if (p.size === 1) return 'scalar';
  // Same element count as the trailing block: p's dims (minus leading 1s) must equal X's trailing dims.
  const pd = [...p.dims];
  while (pd.length > 0 && pd[0] === 1) pd.shift();
  if (p.size === inner && pd.length <= xdims.length && pd.every((d, i) => d === xdims[xdims.length - pd.length + i])) return 'row';
  try {
    if (p.dims.length > xdims.length) throw new InputError('rank too high');
    return broadcastIndex(p.dims, xdims);
  } catch {
    throw new InputError(`${name} of shape [${p.dims.join(',')}] does not broadcast to the input shape [${xdims.join(',')}]`, where(ctx));
  }
}

function paramAt(pv: ArrayLike<number>, map: Int32Array | 'scalar' | 'row', flat: number, j: number): number {
  return map === 'scalar' ? pv[0] : map === 'row' ? pv[j] : pv[map[flat]];
}

// --- LayerNormalization / RMSNormalization ------------------------------------------------------

function rowNorm(rms: boolean) {
  return (inputs: (Value | undefined)[], ctx: KernelContext): Value[] => {
    const x = input(inputs, 0, ctx);
    const scale = input(inputs, 1, ctx);
    const bias = rms ? undefined : optInput(inputs, 2);
    requireFloat(x, ctx);
    const rank = x.dims.length;
    const axis = normAxis(ctx.attr.int('axis', -1), rank, ctx);
    const eps = ctx.attr.float('epsilon', 1e-5);
    const stash = dtypeFromOnnx(ctx.attr.int('stash_type', 1), where(ctx));
    if (!isFloat(stash)) throw new UnsupportedError(`stash_type ${stash} is not a float type`, where(ctx));
    let outer = 1, inner = 1;
    for (let i = 0; i < rank; i++) if (i < axis) outer *= x.dims[i]; else inner *= x.dims[i];
    const sMap = paramMap(scale, x.dims, inner, ctx, 'Scale');
    const bMap = bias ? paramMap(bias, x.dims, inner, ctx, 'B') : 'scalar';
    const xv = numbers(x), sv = numbers(scale);
    const bv = bias ? numbers(bias) : new Float64Array(1);
    const y = new Float64Array(x.size);
    const meanOut = new Float64Array(outer), invOut = new Float64Array(outer);
    for (let r = 0; r < outer; r++) {
      const base = r * inner;
      let mean = 0;
      if (!rms) {
        for (let j = 0; j < inner; j++) mean += xv[base + j];
        mean /= inner;
      }
      let v = 0;
      for (let j = 0; j < inner; j++) { const d = xv[base + j] - mean; v += d * d; }
      v /= inner;
      const inv = 1 / Math.sqrt(v + eps);
      meanOut[r] = mean;
      invOut[r] = inv;
      for (let j = 0; j < inner; j++) {
        const f = base + j;
        y[f] = (xv[f] - mean) * inv * paramAt(sv, sMap, f, j) + paramAt(bv, bMap, f, j);
      }
    }
    const yT = encodeResult(x.type, x.dims, y);
    if (rms || wantedOutputs(ctx) <= 1) return [yT];
    const statDims = x.dims.map((d, i) => (i < axis ? d : 1));
    return [yT, encodeResult(stash, statDims, meanOut), encodeResult(stash, statDims, invOut)];
  };
}

registerOp('LayerNormalization', rowNorm(false));
registerOp('RMSNormalization', rowNorm(true));

// --- GroupNormalization / InstanceNormalization -------------------------------------------------

/** Normalizes each of `groups` contiguous blocks of `block` elements; scale/bias indexed per channel. */
function normalizeBlocks(
  xv: ArrayLike<number>, y: Float64Array, nBlocks: number, block: number, eps: number,
  chanOf: (blockIdx: number, k: number) => number, sv: ArrayLike<number>, bv: ArrayLike<number>,
): void {
  for (let b = 0; b < nBlocks; b++) {
    const base = b * block;
    let mean = 0;
    for (let k = 0; k < block; k++) mean += xv[base + k];
    mean /= block;
    let v = 0;
    for (let k = 0; k < block; k++) { const d = xv[base + k] - mean; v += d * d; }
    v /= block;
    const inv = 1 / Math.sqrt(v + eps);
    for (let k = 0; k < block; k++) {
      const c = chanOf(b, k);
      y[base + k] = (xv[base + k] - mean) * inv * sv[c] + bv[c];
    }
  }
}

registerOp('GroupNormalization', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const scale = input(inputs, 1, ctx);
  const bias = input(inputs, 2, ctx);
  requireFloat(x, ctx);
  if (x.dims.length < 2) throw new InputError(`input must have rank >= 2, got [${x.dims.join(',')}]`, where(ctx));
  const G = ctx.attr.int('num_groups');
  const eps = ctx.attr.float('epsilon', 1e-5);
  const [N, C] = x.dims;
  if (G <= 0 || C % G !== 0) throw new InputError(`num_groups ${G} does not divide the ${C} channels`, where(ctx));
  const spatial = sizeOf(x.dims.slice(2));
  const cpg = C / G;
  // Opset 21: scale/bias per channel (C); opset 18: per group (num_groups).
  let perChannel: boolean;
  if (scale.size === C && bias.size === C) perChannel = true;
  else if (scale.size === G && bias.size === G) perChannel = false;
  else throw new InputError(`scale [${scale.dims.join(',')}] and bias [${bias.dims.join(',')}] must have ${C} (channels) or ${G} (groups) elements`, where(ctx));
  const y = new Float64Array(x.size);
  const block = cpg * spatial;
  normalizeBlocks(numbers(x), y, N * G, block, eps,
    perChannel ? (b, k) => (b % G) * cpg + ((k / spatial) | 0) : (b) => b % G,
    numbers(scale), numbers(bias));
  return [encodeResult(x.type, x.dims, y)];
});

registerOp('InstanceNormalization', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const scale = input(inputs, 1, ctx);
  const bias = input(inputs, 2, ctx);
  requireFloat(x, ctx);
  if (x.dims.length < 2) throw new InputError(`input must have rank >= 2, got [${x.dims.join(',')}]`, where(ctx));
  const eps = ctx.attr.float('epsilon', 1e-5);
  const [N, C] = x.dims;
  if (scale.size !== C || bias.size !== C) {
    throw new InputError(`scale [${scale.dims.join(',')}] and B [${bias.dims.join(',')}] must have ${C} elements`, where(ctx));
  }
  const spatial = sizeOf(x.dims.slice(2));
  const y = new Float64Array(x.size);
  normalizeBlocks(numbers(x), y, N * C, spatial, eps, (b) => b % C, numbers(scale), numbers(bias));
  return [encodeResult(x.type, x.dims, y)];
});

// --- BatchNormalization ------------------------------------------------------------------------

registerOp('BatchNormalization', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const scale = input(inputs, 1, ctx);
  const bias = input(inputs, 2, ctx);
  const mean = input(inputs, 3, ctx);
  const variance = input(inputs, 4, ctx);
  requireFloat(x, ctx);
  const eps = ctx.attr.float('epsilon', 1e-5);
  const momentum = ctx.attr.float('momentum', 0.9);
  if (ctx.opset < 9 && ctx.attr.int('spatial', 1) === 0 && scale.dims.length > 1) {
    throw new UnsupportedError('BatchNormalization with spatial=0 is not supported', where(ctx));
  }
  let training = false;
  if (ctx.opset >= 14) training = ctx.attr.int('training_mode', 0) !== 0;
  else if (ctx.opset < 7) training = ctx.attr.int('is_test', 0) === 0 && wantedOutputs(ctx) > 1;
  const N = x.dims.length > 0 ? x.dims[0] : 1;
  const C = x.dims.length > 1 ? x.dims[1] : 1;
  const spatial = sizeOf(x.dims.slice(2));
  for (const [t, nm] of [[scale, 'scale'], [bias, 'B'], [mean, 'input_mean'], [variance, 'input_var']] as const) {
    if (t.size !== C) throw new InputError(`${nm} of shape [${t.dims.join(',')}] must have ${C} elements`, where(ctx));
  }
  const xv = numbers(x), sv = numbers(scale), bv = numbers(bias);
  const mv = numbers(mean), vv = numbers(variance);
  if (training) {
    const bMean = new Float64Array(C), bVar = new Float64Array(C);
    const cnt = N * spatial;
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < C; c++) {
        const base = (n * C + c) * spatial;
        let s = 0;
        for (let k = 0; k < spatial; k++) s += xv[base + k];
        bMean[c] += s;
      }
    }
    for (let c = 0; c < C; c++) bMean[c] /= cnt;
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < C; c++) {
        const base = (n * C + c) * spatial, m = bMean[c];
        let s = 0;
        for (let k = 0; k < spatial; k++) { const d = xv[base + k] - m; s += d * d; }
        bVar[c] += s;
      }
    }
    for (let c = 0; c < C; c++) bVar[c] /= cnt;
    const runMean = new Float64Array(C), runVar = new Float64Array(C);
    for (let c = 0; c < C; c++) {
      runMean[c] = mv[c] * momentum + bMean[c] * (1 - momentum);
      runVar[c] = vv[c] * momentum + bVar[c] * (1 - momentum);
    }
    const y = batchNormApply(xv, x.size, N, C, spatial, sv, bv, bMean, bVar, eps);
    const yT = encodeResult(x.type, x.dims, y);
    const outs: Value[] = [yT, encodeResult(mean.type, mean.dims, runMean), encodeResult(variance.type, variance.dims, runVar)];
    if (ctx.opset < 14) {
      outs.push(encodeResult(mean.type, mean.dims, bMean), encodeResult(variance.type, variance.dims, bVar));
    }
    return outs;
  }
  return [encodeResult(x.type, x.dims, batchNormApply(xv, x.size, N, C, spatial, sv, bv, mv, vv, eps))];
});

function batchNormApply(
  xv: ArrayLike<number>, size: number, N: number, C: number, spatial: number,
  sv: ArrayLike<number>, bv: ArrayLike<number>, mv: ArrayLike<number>, vv: ArrayLike<number>, eps: number,
): Float64Array {
  const y = new Float64Array(size);
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const base = (n * C + c) * spatial;
      const a = sv[c] / Math.sqrt(vv[c] + eps), m = mv[c], b = bv[c];
      for (let k = 0; k < spatial; k++) y[base + k] = (xv[base + k] - m) * a + b;
    }
  }
  return y;
}

// --- LRN ---------------------------------------------------------------------------------------

registerOp('LRN', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  requireFloat(x, ctx);
  if (x.dims.length < 2) throw new InputError(`input must have rank >= 2, got [${x.dims.join(',')}]`, where(ctx));
  const size = ctx.attr.int('size');
  if (size <= 0) throw new InputError(`size must be positive, got ${size}`, where(ctx));
  const alpha = ctx.attr.float('alpha', 1e-4);
  const beta = ctx.attr.float('beta', 0.75);
  const bias = ctx.attr.float('bias', 1.0);
  const [N, C] = x.dims;
  const spatial = sizeOf(x.dims.slice(2));
  const lo = Math.floor((size - 1) / 2), hi = Math.ceil((size - 1) / 2);
  const xv = numbers(x);
  const y = new Float64Array(x.size);
  const sq = new Float64Array(spatial);
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      sq.fill(0);
      const c0 = Math.max(0, c - lo), c1 = Math.min(C - 1, c + hi);
      for (let cc = c0; cc <= c1; cc++) {
        const b = (n * C + cc) * spatial;
        for (let k = 0; k < spatial; k++) { const v = xv[b + k]; sq[k] += v * v; }
      }
      const base = (n * C + c) * spatial;
      for (let k = 0; k < spatial; k++) y[base + k] = xv[base + k] / Math.pow(bias + (alpha / size) * sq[k], beta);
    }
  }
  return [encodeResult(x.type, x.dims, y)];
});

// --- MeanVarianceNormalization -----------------------------------------------------------------

registerOp('MeanVarianceNormalization', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  requireFloat(x, ctx);
  const rank = x.dims.length;
  const axes = ctx.attr.ints('axes', [0, 2, 3]);
  const reduced = new Array<boolean>(rank).fill(false);
  for (const a of axes) reduced[normAxis(a, rank, ctx)] = true;
  let outN = 1, count = 1;
  for (let i = 0; i < rank; i++) if (reduced[i]) count *= x.dims[i]; else outN *= x.dims[i];
  const xv = numbers(x);
  const mean = new Float64Array(outN), sq = new Float64Array(outN);
  forEachRun(x.dims, reduced, (i0, o, len, step) => {
    for (let i = i0; i < i0 + len; i++, o += step) { const v = xv[i]; mean[o] += v; sq[o] += v * v; }
  });
  // Function body: (X - E[X]) / (sqrt(E[X^2] - E[X]^2) + 1e-9).
  for (let o = 0; o < outN; o++) {
    mean[o] /= count;
    sq[o] = Math.sqrt(sq[o] / count - mean[o] * mean[o]) + 1e-9;
  }
  const y = new Float64Array(x.size);
  forEachRun(x.dims, reduced, (i0, o, len, step) => {
    for (let i = i0; i < i0 + len; i++, o += step) y[i] = (xv[i] - mean[o]) / sq[o];
  });
  return [encodeResult(x.type, x.dims, y)];
});

// --- LpNormalization ---------------------------------------------------------------------------

registerOp('LpNormalization', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  requireFloat(x, ctx);
  const rank = x.dims.length;
  const axis = normAxis(ctx.attr.int('axis', -1), rank, ctx);
  const p = ctx.attr.int('p', 2);
  if (p !== 1 && p !== 2) throw new UnsupportedError(`p must be 1 or 2, got ${p}`, where(ctx));
  const [outer, len, inner] = splitAxis(x.dims, axis);
  const xv = numbers(x);
  const y = new Float64Array(x.size);
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < inner; j++) {
      const base = o * len * inner + j, end = base + len * inner;
      let s = 0;
      for (let i = base; i < end; i += inner) { const v = xv[i]; s += p === 1 ? Math.abs(v) : v * v; }
      // A zero norm leaves the (all-zero) line as zeros, as the ONNX reference does.
      const norm = p === 1 ? s : Math.sqrt(s);
      const d = norm === 0 ? 1 : norm;
      for (let i = base; i < end; i += inner) y[i] = xv[i] / d;
    }
  }
  return [encodeResult(x.type, x.dims, y)];
});
