// Reference kernels: NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss.
import { InputError, UnsupportedError } from '../errors.js';
import { isFloat, sizeOf, type Tensor, type Value } from '../tensor.js';
import { registerOp, type KernelContext } from './registry.js';
import { input, numbers, optInput } from './util.js';
import { encodeResult, softmaxLines } from './reduce.js';

const where = (ctx: KernelContext) => ({ node: ctx.node.name, op: ctx.node.opType });

/**
 * Gathers -logp[n, target[n,d], d] * w(target) for input (N, C, d1..dk) given as a float64-able array, and
 * applies the reduction. Ignored targets contribute 0 with weight 0; mean = sum(w*l) / sum(w).
 */
function nllCore(
  logp: ArrayLike<number>, x: Tensor, target: Tensor, weight: Tensor | undefined, ctx: KernelContext,
): Tensor {
  if (!isFloat(x.type)) throw new UnsupportedError(`${ctx.node.opType} does not support ${x.type} input`, where(ctx));
  if (target.type !== 'int32' && target.type !== 'int64') {
    throw new InputError(`target must be int32 or int64, got ${target.type}`, where(ctx));
  }
  const reduction = ctx.attr.string('reduction', 'mean');
  if (reduction !== 'none' && reduction !== 'sum' && reduction !== 'mean') {
    throw new UnsupportedError(`reduction '${reduction}' is not one of none, sum, mean`, where(ctx));
  }
  const hasIgnore = ctx.attr.has('ignore_index');
  const ignore = ctx.attr.int('ignore_index', 0);
  if (x.dims.length < 2) throw new InputError(`input must have shape (N, C, ...), got [${x.dims.join(',')}]`, where(ctx));
  const N = x.dims[0], C = x.dims[1];
  const D = sizeOf(x.dims.slice(2));
  const tdims = target.dims;
  if (tdims.length !== x.dims.length - 1 || tdims[0] !== N || tdims.some((d, i) => i > 0 && d !== x.dims[i + 1])) {
    throw new InputError(`target shape [${tdims.join(',')}] does not match input shape [${x.dims.join(',')}]`, where(ctx));
  }
  if (weight && weight.size !== C) {
    throw new InputError(`weight of shape [${weight.dims.join(',')}] must have ${C} elements`, where(ctx));
  }
  const tv = numbers(target);
  const wv = weight ? numbers(weight) : undefined;
  const loss = new Float64Array(N * D);
  let wsum = 0, lsum = 0;
  for (let n = 0; n < N; n++) {
    for (let d = 0; d < D; d++) {
      const i = n * D + d;
      const t = tv[i];
      if (hasIgnore && t === ignore) continue;
      if (t < 0 || t >= C) throw new InputError(`target value ${t} at ${i} is out of range [0, ${C})`, where(ctx));
      const w = wv ? wv[t] : 1;
      const l = -logp[(n * C + t) * D + d] * w;
      loss[i] = l;
      lsum += l;
      wsum += w;
    }
  }
  if (reduction === 'none') return encodeResult(x.type, tdims, loss);
  const r = new Float64Array(1);
  r[0] = reduction === 'sum' ? lsum : lsum / wsum;
  return encodeResult(x.type, [], r);
}

registerOp('NegativeLogLikelihoodLoss', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const target = input(inputs, 1, ctx);
  const weight = optInput(inputs, 2);
  return [nllCore(numbers(x), x, target, weight, ctx)];
});

registerOp('SoftmaxCrossEntropyLoss', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const labels = input(inputs, 1, ctx);
  const weight = optInput(inputs, 2);
  if (!isFloat(x.type)) throw new UnsupportedError(`${ctx.node.opType} does not support ${x.type} scores`, where(ctx));
  if (x.dims.length < 2) throw new InputError(`scores must have shape (N, C, ...), got [${x.dims.join(',')}]`, where(ctx));
  const N = x.dims[0], C = x.dims[1];
  const D = sizeOf(x.dims.slice(2));
  const logp = new Float64Array(x.size);
  softmaxLines('logsoftmax', numbers(x), logp, N, C, D);
  const outs: Value[] = [nllCore(logp, x, labels, weight, ctx)];
  if (ctx.node.outputs.length > 1 && ctx.node.outputs[1]) outs.push(encodeResult(x.type, x.dims, logp));
  return outs;
});
