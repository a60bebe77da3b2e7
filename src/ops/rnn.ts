// Reference kernels: recurrent family (RNN, GRU, LSTM).
import { InputError, UnsupportedError } from '../errors.js';
import { type DType, type Tensor, type Value } from '../tensor.js';
import { registerOp, type KernelContext } from './registry.js';
import { fromNumbers, input, numbers, optInput } from './util.js';

type Kind = 'RNN' | 'GRU' | 'LSTM';

const FLOATS: ReadonlySet<DType> = new Set<DType>(['float32', 'float16', 'bfloat16', 'float64']);

function where(ctx: KernelContext) {
  return { node: ctx.node.name, op: ctx.node.opType };
}

// Activation functions, by code (no closures per element).
const enum Act { Relu, Tanh, Sigmoid, Affine, LeakyRelu, ThresholdedRelu, ScaledTanh, HardSigmoid, Elu, Softsign, Softplus }

interface ActSpec { code: Act; alpha: number; beta: number }

const ACT_NAMES: Record<string, { code: Act; alpha?: number; beta?: number }> = {
  relu: { code: Act.Relu },
  tanh: { code: Act.Tanh },
  sigmoid: { code: Act.Sigmoid },
  affine: { code: Act.Affine, alpha: 1, beta: 0 },
  leakyrelu: { code: Act.LeakyRelu, alpha: 0.01 },
  thresholdedrelu: { code: Act.ThresholdedRelu, alpha: 1 },
  scaledtanh: { code: Act.ScaledTanh, alpha: 1, beta: 1 },
  hardsigmoid: { code: Act.HardSigmoid, alpha: 0.2, beta: 0.5 },
  elu: { code: Act.Elu, alpha: 1 },
  softsign: { code: Act.Softsign },
  softplus: { code: Act.Softplus },
};

function applyAct(a: ActSpec, x: number): number {
  switch (a.code) {
    case Act.Relu: return x > 0 ? x : 0;
    case Act.Tanh: return Math.tanh(x);
    case Act.Sigmoid: return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
    case Act.Affine: return a.alpha * x + a.beta;
    case Act.LeakyRelu: return x >= 0 ? x : a.alpha * x;
    case Act.ThresholdedRelu: return x > a.alpha ? x : 0;
    case Act.ScaledTanh: return a.alpha * Math.tanh(a.beta * x);
    case Act.HardSigmoid: return Math.max(0, Math.min(1, a.alpha * x + a.beta));
    case Act.Elu: return x >= 0 ? x : a.alpha * (Math.exp(x) - 1);
    case Act.Softsign: return x / (1 + Math.abs(x));
    case Act.Softplus: return x > 30 ? x : Math.log1p(Math.exp(x));
  }
}

/** Activation specs for every direction (perDir per direction), alpha/beta consumed in order by functions that take them. */
function readActivations(ctx: KernelContext, kind: Kind, numDir: number): ActSpec[] {
  const defaults = kind === 'RNN' ? ['Tanh'] : kind === 'GRU' ? ['Sigmoid', 'Tanh'] : ['Sigmoid', 'Tanh', 'Tanh'];
  const perDir = defaults.length;
  let names = ctx.attr.strings('activations', []);
  if (names.length === 0) names = numDir === 2 ? [...defaults, ...defaults] : defaults;
  else if (names.length === perDir && numDir === 2) names = [...names, ...names];
  if (names.length !== perDir * numDir) {
    throw new InputError(`activations must list ${perDir * numDir} functions, got ${names.length}`, where(ctx));
  }
  const alphas = ctx.attr.floats('activation_alpha', []);
  const betas = ctx.attr.floats('activation_beta', []);
  let ai = 0, bi = 0;
  return names.map((n) => {
    const d = ACT_NAMES[n.toLowerCase()];
    if (!d) throw new UnsupportedError(`activation function '${n}' is not supported`, where(ctx));
    let alpha = 0, beta = 0;
    if (d.alpha !== undefined) alpha = ai < alphas.length ? alphas[ai++] : d.alpha;
    if (d.beta !== undefined) beta = bi < betas.length ? betas[bi++] : d.beta;
    return { code: d.code, alpha, beta };
  });
}

function recurrent(kind: Kind, inputs: (Value | undefined)[], ctx: KernelContext): Value[] {
  const X = input(inputs, 0, ctx);
  const W = input(inputs, 1, ctx);
  const R = input(inputs, 2, ctx);
  const Bt = optInput(inputs, 3);
  const seqLensT = optInput(inputs, 4);
  const initH = optInput(inputs, 5);
  const initC = kind === 'LSTM' ? optInput(inputs, 6) : undefined;
  const Pt = kind === 'LSTM' ? optInput(inputs, 7) : undefined;
  if (!FLOATS.has(X.type)) throw new UnsupportedError(`X of type ${X.type} is not supported`, where(ctx));
  const G = kind === 'RNN' ? 1 : kind === 'GRU' ? 3 : 4;
  const layout = ctx.attr.int('layout', 0);
  const direction = ctx.attr.string('direction', 'forward');
  if (direction !== 'forward' && direction !== 'reverse' && direction !== 'bidirectional') {
    throw new InputError(`unknown direction '${direction}'`, where(ctx));
  }
  const numDir = direction === 'bidirectional' ? 2 : 1;
  if (X.dims.length !== 3) throw new InputError(`X must be 3D, got [${X.dims.join(',')}]`, where(ctx));
  const [seqLen, batch, inSize] = layout === 0 ? X.dims : [X.dims[1], X.dims[0], X.dims[2]];
  if (W.dims.length !== 3 || R.dims.length !== 3) throw new InputError('W and R must be 3D', where(ctx));
  const hidden = ctx.attr.int('hidden_size', R.dims[2]);
  const GH = G * hidden;
  if (W.dims[0] !== numDir || W.dims[1] !== GH || W.dims[2] !== inSize) {
    throw new InputError(`W shape [${W.dims.join(',')}] must be [${numDir},${GH},${inSize}]`, where(ctx));
  }
  if (R.dims[0] !== numDir || R.dims[1] !== GH || R.dims[2] !== hidden) {
    throw new InputError(`R shape [${R.dims.join(',')}] must be [${numDir},${GH},${hidden}]`, where(ctx));
  }
  if (Bt && (Bt.dims.length !== 2 || Bt.dims[0] !== numDir || Bt.dims[1] !== 2 * GH)) {
    throw new InputError(`B shape [${Bt.dims.join(',')}] must be [${numDir},${2 * GH}]`, where(ctx));
  }
  const stateDims = layout === 0 ? [numDir, batch, hidden] : [batch, numDir, hidden];
  const checkState = (t: Tensor | undefined, name: string) => {
    if (t && t.dims.join(',') !== stateDims.join(',')) {
      throw new InputError(`${name} shape [${t.dims.join(',')}] must be [${stateDims.join(',')}]`, where(ctx));
    }
  };
  checkState(initH, 'initial_h');
  checkState(initC, 'initial_c');
  if (Pt && (Pt.dims.length !== 2 || Pt.dims[0] !== numDir || Pt.dims[1] !== 3 * hidden)) {
    throw new InputError(`P shape [${Pt.dims.join(',')}] must be [${numDir},${3 * hidden}]`, where(ctx));
  }
  const acts = readActivations(ctx, kind, numDir);
  const clip = ctx.attr.has('clip') ? ctx.attr.float('clip') : Infinity;
  const linearBeforeReset = kind === 'GRU' && ctx.attr.int('linear_before_reset', 0) !== 0;
  const inputForget = kind === 'LSTM' && ctx.attr.int('input_forget', 0) !== 0;

  const xv = numbers(X), wv = numbers(W), rv = numbers(R);
  const bv = Bt ? numbers(Bt) : undefined;
  const pv = Pt ? numbers(Pt) : undefined;
  const hv0 = initH ? numbers(initH) : undefined;
  const cv0 = initC ? numbers(initC) : undefined;
  const lens = new Int32Array(batch).fill(seqLen);
  if (seqLensT) {
    if (seqLensT.size !== batch) throw new InputError(`sequence_lens must have ${batch} elements`, where(ctx));
    const l = numbers(seqLensT);
    for (let b = 0; b < batch; b++) {
      if (!(l[b] >= 0 && l[b] <= seqLen)) throw new InputError(`sequence_lens[${b}] = ${l[b]} is out of range [0, ${seqLen}]`, where(ctx));
      lens[b] = l[b];
    }
  }

  // Outputs in layout 0 ([seq, dir, batch, hidden] / [dir, batch, hidden]); transposed at the end for layout 1.
  const Y = new Float64Array(seqLen * numDir * batch * hidden);
  const Yh = new Float64Array(numDir * batch * hidden);
  const Yc = new Float64Array(numDir * batch * hidden);
  const gates = new Float64Array(GH);
  const h = new Float64Array(hidden);
  const c = new Float64Array(hidden);
  const hNew = new Float64Array(hidden);
  const rh = new Float64Array(hidden);
  const na = acts.length / numDir;
  const xAt = layout === 0 ? (t: number, b: number) => (t * batch + b) * inSize : (t: number, b: number) => (b * seqLen + t) * inSize;
  const stAt = layout === 0 ? (d: number, b: number) => (d * batch + b) * hidden : (d: number, b: number) => (b * numDir + d) * hidden;
  const cl = (x: number) => (x > clip ? clip : x < -clip ? -clip : x);

  for (let d = 0; d < numDir; d++) {
    const reverse = direction === 'reverse' || d === 1;
    const f = acts[d * na], g = acts[d * na + 1], hAct = acts[d * na + 2];
    const wBase = d * GH * inSize, rBase = d * GH * hidden, bBase = d * 2 * GH, pBase = d * 3 * hidden;
    for (let b = 0; b < batch; b++) {
      const so = stAt(d, b);
      for (let j = 0; j < hidden; j++) { h[j] = hv0 ? hv0[so + j] : 0; c[j] = cv0 ? cv0[so + j] : 0; }
      const L = lens[b];
      for (let step = 0; step < L; step++) {
        const t = reverse ? L - 1 - step : step;
        const xo = xAt(t, b);
        // gates = x·Wᵀ + Wb (+ h·Rᵀ + Rb, except GRU's hidden gate which is handled below)
        for (let r = 0; r < GH; r++) {
          let s = bv ? bv[bBase + r] : 0;
          const wo = wBase + r * inSize;
          for (let k = 0; k < inSize; k++) s += xv[xo + k] * wv[wo + k];
          gates[r] = s;
        }
        const recRows = kind === 'GRU' ? 2 * hidden : GH;
        for (let r = 0; r < recRows; r++) {
          let s = bv ? bv[bBase + GH + r] : 0;
          const ro = rBase + r * hidden;
          for (let k = 0; k < hidden; k++) s += h[k] * rv[ro + k];
          gates[r] += s;
        }
        if (kind === 'RNN') {
          for (let j = 0; j < hidden; j++) hNew[j] = applyAct(f, cl(gates[j]));
        } else if (kind === 'GRU') {
          // z = gates[0..H), r = gates[H..2H), h̃ = gates[2H..3H)
          for (let j = 0; j < hidden; j++) {
            gates[j] = applyAct(f, cl(gates[j]));
            gates[hidden + j] = applyAct(f, cl(gates[hidden + j]));
          }
          const hr = rBase + 2 * hidden * hidden;
          const rb = bv ? bBase + GH + 2 * hidden : -1;
          if (linearBeforeReset) {
            for (let j = 0; j < hidden; j++) {
              let s = rb >= 0 ? bv![rb + j] : 0;
              const ro = hr + j * hidden;
              for (let k = 0; k < hidden; k++) s += h[k] * rv[ro + k];
              gates[2 * hidden + j] += gates[hidden + j] * s;
            }
          } else {
            for (let k = 0; k < hidden; k++) rh[k] = gates[hidden + k] * h[k];
            for (let j = 0; j < hidden; j++) {
              let s = rb >= 0 ? bv![rb + j] : 0;
              const ro = hr + j * hidden;
              for (let k = 0; k < hidden; k++) s += rh[k] * rv[ro + k];
              gates[2 * hidden + j] += s;
            }
          }
          for (let j = 0; j < hidden; j++) {
            const z = gates[j];
            const ht = applyAct(g, cl(gates[2 * hidden + j]));
            hNew[j] = (1 - z) * ht + z * h[j];
          }
        } else {
          // LSTM gate order i, o, f, c; peepholes P = [Pi, Po, Pf].
          for (let j = 0; j < hidden; j++) {
            let gi = gates[j], go = gates[hidden + j], gf = gates[2 * hidden + j];
            const gc = gates[3 * hidden + j];
            if (pv) { gi += pv[pBase + j] * c[j]; gf += pv[pBase + 2 * hidden + j] * c[j]; }
            const it = applyAct(f, cl(gi));
            const ft = inputForget ? 1 - it : applyAct(f, cl(gf));
            const ct = applyAct(g, cl(gc));
            const cNew = ft * c[j] + it * ct;
            if (pv) go += pv[pBase + hidden + j] * cNew;
            const ot = applyAct(f, cl(go));
            c[j] = cNew;
            hNew[j] = ot * applyAct(hAct, cNew);
          }
        }
        h.set(hNew);
        Y.set(h, ((t * numDir + d) * batch + b) * hidden);
      }
      Yh.set(h, (d * batch + b) * hidden);
      Yc.set(c, (d * batch + b) * hidden);
    }
  }

  const outs: Value[] = [];
  const nOut = ctx.node.outputs.length;
  if (layout === 0) {
    outs.push(fromNumbers(X.type, [seqLen, numDir, batch, hidden], Y));
    if (nOut > 1) outs.push(fromNumbers(X.type, [numDir, batch, hidden], Yh));
    if (nOut > 2 && kind === 'LSTM') outs.push(fromNumbers(X.type, [numDir, batch, hidden], Yc));
  } else {
    const Y1 = new Float64Array(Y.length);
    for (let t = 0; t < seqLen; t++)
      for (let d = 0; d < numDir; d++)
        for (let b = 0; b < batch; b++)
          Y1.set(Y.subarray(((t * numDir + d) * batch + b) * hidden, ((t * numDir + d) * batch + b + 1) * hidden),
            ((b * seqLen + t) * numDir + d) * hidden);
    const st1 = (S: Float64Array) => {
      const o = new Float64Array(S.length);
      for (let d = 0; d < numDir; d++)
        for (let b = 0; b < batch; b++)
          o.set(S.subarray((d * batch + b) * hidden, (d * batch + b + 1) * hidden), (b * numDir + d) * hidden);
      return o;
    };
    outs.push(fromNumbers(X.type, [batch, seqLen, numDir, hidden], Y1));
    if (nOut > 1) outs.push(fromNumbers(X.type, [batch, numDir, hidden], st1(Yh)));
    if (nOut > 2 && kind === 'LSTM') outs.push(fromNumbers(X.type, [batch, numDir, hidden], st1(Yc)));
  }
  return outs;
}

registerOp('RNN', (inputs, ctx) => recurrent('RNN', inputs, ctx));
registerOp('GRU', (inputs, ctx) => recurrent('GRU', inputs, ctx));
registerOp('LSTM', (inputs, ctx) => recurrent('LSTM', inputs, ctx));
