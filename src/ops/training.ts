// Reference kernels: ai.onnx.preview.training optimizers (Adagrad, Adam, Momentum).
import { InputError } from '../errors.js';
import { Tensor, type Value } from '../tensor.js';
import { registerOp, type KernelContext } from './registry.js';
import { fromNumbers, input, numbers } from './util.js';

const DOMAIN = 'ai.onnx.preview.training';
const where = (ctx: KernelContext) => ({ node: ctx.node.name, op: ctx.node.opType });

function scalar(t: Tensor, what: string, ctx: KernelContext): number {
  if (t.size !== 1) throw new InputError(`${what} must be a scalar, got shape [${t.dims.join(',')}]`, where(ctx));
  return t.type === 'int64' ? Number((t.data as BigInt64Array)[0]) : numbers(t)[0];
}

function floatInput(inputs: (Value | undefined)[], i: number, ctx: KernelContext): Tensor {
  const t = input(inputs, i, ctx);
  if (t.type !== 'float32' && t.type !== 'float64') throw new InputError(`input ${i} must be float32 or float64, got ${t.type}`, where(ctx));
  return t;
}

function sameShape(a: Tensor, b: Tensor, what: string, ctx: KernelContext): void {
  if (a.dims.length !== b.dims.length || a.dims.some((d, i) => d !== b.dims[i])) {
    throw new InputError(`${what}: shapes [${a.dims.join(',')}] and [${b.dims.join(',')}] differ`, where(ctx));
  }
}

/** Splits the variadic tail (after R, T) into `groups` equal groups of tensors. */
function groupsOf(inputs: (Value | undefined)[], groups: number, ctx: KernelContext): Tensor[][] {
  const rest = inputs.length - 2;
  if (rest <= 0 || rest % groups !== 0) {
    throw new InputError(`expected 2 + ${groups}*n inputs, got ${inputs.length}`, where(ctx));
  }
  const n = rest / groups;
  const out: Tensor[][] = [];
  for (let g = 0; g < groups; g++) {
    const row: Tensor[] = [];
    for (let k = 0; k < n; k++) row.push(floatInput(inputs, 2 + g * n + k, ctx));
    out.push(row);
  }
  return out;
}

registerOp('Adagrad', (inputs, ctx) => {
  const r = scalar(input(inputs, 0, ctx), 'R', ctx);
  const t = scalar(input(inputs, 1, ctx), 'T', ctx);
  const decay = ctx.attr.float('decay_factor', 0);
  const eps = ctx.attr.float('epsilon', 0);
  const lambda = ctx.attr.float('norm_coefficient', 0);
  const [xs, gs, hs] = groupsOf(inputs, 3, ctx);
  const rAdj = r / (1 + t * decay);
  const outX: Tensor[] = [], outH: Tensor[] = [];
  for (let k = 0; k < xs.length; k++) {
    sameShape(xs[k], gs[k], 'X and G', ctx);
    sameShape(xs[k], hs[k], 'X and H', ctx);
    const x = numbers(xs[k]), g = numbers(gs[k]), h = numbers(hs[k]);
    const nx = new Float64Array(x.length), nh = new Float64Array(x.length);
    for (let i = 0; i < x.length; i++) {
      const gr = lambda * x[i] + g[i];
      const hn = h[i] + gr * gr;
      nh[i] = hn;
      nx[i] = x[i] - (rAdj * gr) / (Math.sqrt(hn) + eps);
    }
    outX.push(fromNumbers(xs[k].type, xs[k].dims, nx));
    outH.push(fromNumbers(hs[k].type, hs[k].dims, nh));
  }
  return [...outX, ...outH];
}, DOMAIN);

registerOp('Adam', (inputs, ctx) => {
  const r = scalar(input(inputs, 0, ctx), 'R', ctx);
  const t = scalar(input(inputs, 1, ctx), 'T', ctx);
  const alpha = ctx.attr.float('alpha', 0.9);
  const beta = ctx.attr.float('beta', 0.999);
  const eps = ctx.attr.float('epsilon', 0);
  const lambda = ctx.attr.float('norm_coefficient', 0);
  const lambdaPost = ctx.attr.float('norm_coefficient_post', 0);
  const [xs, gs, vs, hs] = groupsOf(inputs, 4, ctx);
  const rAdj = t > 0 ? (r * Math.sqrt(1 - beta ** t)) / (1 - alpha ** t) : r;
  const outX: Tensor[] = [], outV: Tensor[] = [], outH: Tensor[] = [];
  for (let k = 0; k < xs.length; k++) {
    sameShape(xs[k], gs[k], 'X and G', ctx);
    sameShape(xs[k], vs[k], 'X and V', ctx);
    sameShape(xs[k], hs[k], 'X and H', ctx);
    const x = numbers(xs[k]), g = numbers(gs[k]), v = numbers(vs[k]), h = numbers(hs[k]);
    const n = x.length;
    const nx = new Float64Array(n), nv = new Float64Array(n), nh = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const gr = lambda * x[i] + g[i];
      const vn = alpha * v[i] + (1 - alpha) * gr;
      const hn = beta * h[i] + (1 - beta) * gr * gr;
      nv[i] = vn;
      nh[i] = hn;
      nx[i] = (1 - lambdaPost) * (x[i] - rAdj * (vn / (Math.sqrt(hn) + eps)));
    }
    outX.push(fromNumbers(xs[k].type, xs[k].dims, nx));
    outV.push(fromNumbers(vs[k].type, vs[k].dims, nv));
    outH.push(fromNumbers(hs[k].type, hs[k].dims, nh));
  }
  return [...outX, ...outV, ...outH];
}, DOMAIN);

registerOp('Momentum', (inputs, ctx) => {
  const r = scalar(input(inputs, 0, ctx), 'R', ctx);
  const t = scalar(input(inputs, 1, ctx), 'T', ctx);
  const alpha = ctx.attr.float('alpha');
  const beta = ctx.attr.float('beta');
  const lambda = ctx.attr.float('norm_coefficient');
  const mode = ctx.attr.string('mode');
  if (mode !== 'standard' && mode !== 'nesterov') throw new InputError(`mode '${mode}' must be 'standard' or 'nesterov'`, where(ctx));
  const [xs, gs, vs] = groupsOf(inputs, 3, ctx);
  const bAdj = t > 0 ? beta : 1;
  const outX: Tensor[] = [], outV: Tensor[] = [];
  for (let k = 0; k < xs.length; k++) {
    sameShape(xs[k], gs[k], 'X and G', ctx);
    sameShape(xs[k], vs[k], 'X and V', ctx);
    const x = numbers(xs[k]), g = numbers(gs[k]), v = numbers(vs[k]);
    const n = x.length;
    const nx = new Float64Array(n), nv = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const gr = lambda * x[i] + g[i];
      const vn = alpha * v[i] + bAdj * gr;
      nv[i] = vn;
      nx[i] = mode === 'standard' ? x[i] - r * vn : x[i] - r * (gr + alpha * vn);
    }
    outX.push(fromNumbers(xs[k].type, xs[k].dims, nx));
    outV.push(fromNumbers(vs[k].type, vs[k].dims, nv));
  }
  return [...outX, ...outV];
}, DOMAIN);
