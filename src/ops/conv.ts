// Reference kernels: convolutions (Conv, ConvTranspose, ConvInteger, QLinearConv, DeformConv, CausalConvWithState).
import { InputError, UnsupportedError } from '../errors.js';
import { isFloat, sizeOf, type Tensor } from '../tensor.js';
import { registerOp, type KernelContext } from './registry.js';
import { alloc, allocData, fromNumbers, input, numbers, optInput } from './util.js';
import { asF64, gemmTiled, qRange, requantize, whereOf } from './matmul.js';

type Num = ArrayLike<number>;

interface ConvGeom {
  N: number; C: number; M: number; group: number;
  /** spatial sizes padded to 3 dims (leading 1s) */
  inS: number[]; kS: number[]; outS: number[];
  strides: number[]; dils: number[]; padB: number[];
  /** spatial dims of the real output (length = rank - 2) */
  outSpatial: number[];
}

function pad3(v: number[], fill: number): number[] {
  const r = v.slice();
  while (r.length < 3) r.unshift(fill);
  return r;
}

function checkFloat(t: Tensor, ctx: KernelContext): void {
  if (!isFloat(t.type)) throw new UnsupportedError(`${ctx.node.opType} on ${t.type} is not supported`, whereOf(ctx));
}

/** Window attributes must have one entry per spatial dim (two for pads), strides and dilations ≥ 1, pads ≥ 0. */
export function checkWindow(sp: number, a: { kS: readonly number[]; strides: readonly number[]; dils: readonly number[]; pads?: readonly number[] }, ctx: KernelContext): void {
  const bad = (name: string, v: readonly number[], want: string) =>
    new InputError(`${name} [${v.join(',')}] is invalid: ${want} for ${sp} spatial dims`, whereOf(ctx), 'the model is malformed');
  if (a.kS.length !== sp || a.kS.some((k) => !(k >= 1))) throw bad('kernel_shape', a.kS, `${sp} values ≥ 1`);
  if (a.strides.length !== sp || a.strides.some((x) => !(x >= 1))) throw bad('strides', a.strides, `${sp} values ≥ 1`);
  if (a.dils.length !== sp || a.dils.some((x) => !(x >= 1))) throw bad('dilations', a.dils, `${sp} values ≥ 1`);
  if (a.pads && (a.pads.length !== 2 * sp || a.pads.some((x) => !(x >= 0)))) throw bad('pads', a.pads, `${2 * sp} values ≥ 0`);
}

/** Output size and pads of a convolution (Conv / ConvInteger / QLinearConv / DeformConv). */
function convGeometry(x: Tensor, w: Tensor, ctx: KernelContext): ConvGeom {
  const r = x.dims.length;
  if (r < 3) throw new InputError(`${ctx.node.opType} input must have rank >= 3, got [${x.dims.join(',')}]`, whereOf(ctx));
  const sp = r - 2;
  if (sp > 3) throw new UnsupportedError(`${ctx.node.opType} with ${sp} spatial dims is not supported`, whereOf(ctx));
  if (w.dims.length !== r) throw new InputError(`weight rank ${w.dims.length} differs from input rank ${r}`, whereOf(ctx));
  const N = x.dims[0], C = x.dims[1], M = w.dims[0];
  const group = ctx.attr.int('group', 1);
  if (group < 1 || C % group !== 0 || M % group !== 0 || w.dims[1] * group !== C) {
    throw new InputError(`channels do not agree: input C=${C}, weight [${w.dims.join(',')}], group=${group}`, whereOf(ctx));
  }
  const inS = x.dims.slice(2) as number[];
  const kS = ctx.attr.ints('kernel_shape', w.dims.slice(2) as number[]);
  for (let i = 0; i < sp; i++) {
    if (kS[i] !== w.dims[2 + i]) throw new InputError(`kernel_shape [${kS.join(',')}] disagrees with weight [${w.dims.join(',')}]`, whereOf(ctx));
  }
  const strides = ctx.attr.ints('strides', new Array(sp).fill(1));
  const dils = ctx.attr.ints('dilations', new Array(sp).fill(1));
  const autoPad = ctx.attr.string('auto_pad', 'NOTSET');
  const padsAttr = ctx.attr.ints('pads', new Array(2 * sp).fill(0));
  checkWindow(sp, { kS, strides, dils, pads: padsAttr }, ctx);
  const pads = resolveAutoPad(autoPad, inS, kS, strides, dils, padsAttr);
  if (!pads) throw new InputError(`unknown auto_pad '${autoPad}'`, whereOf(ctx));
  const outS: number[] = [];
  for (let i = 0; i < sp; i++) {
    const eff = (kS[i] - 1) * dils[i] + 1;
    const o = Math.floor((inS[i] + pads[i] + pads[i + sp] - eff) / strides[i]) + 1;
    if (o < 0) throw new InputError(`kernel larger than padded input along spatial axis ${i}`, whereOf(ctx));
    outS.push(Math.max(o, 0));
  }
  return {
    N, C, M, group, inS: pad3(inS, 1), kS: pad3(kS, 1), outS: pad3(outS, 1),
    strides: pad3(strides, 1), dils: pad3(dils, 1), padB: pad3(pads.slice(0, sp), 0), outSpatial: outS,
  };
}

/** Valid output index range [lo, hi) for kernel offset k along one axis. */
function validRange(k: number, inSize: number, outSize: number, s: number, d: number, p: number): [number, number] {
  // i = o*s - p + k*d in [0, inSize)
  const base = k * d - p;
  let lo = base >= 0 ? 0 : Math.ceil(-base / s);
  let hi = Math.floor((inSize - 1 - base) / s) + 1;
  if (lo < 0) lo = 0;
  if (hi > outSize) hi = outSize;
  if (hi < lo) hi = lo;
  return [lo, hi];
}

/**
 * Direct convolution, accumulated into `out` [N, M, oD, oH, oW] (float64). wAt(m) gives, for output channel m,
 * an offset into W; W holds [M, C/group, kD, kH, kW].
 */
function convCore(X: Num, W: Num, g: ConvGeom, out: Float64Array): void {
  const { N, C, M, group, inS, kS, outS, strides, dils, padB } = g;
  const [iD, iH, iW] = inS, [kD, kH, kW] = kS, [oD, oH, oW] = outS;
  const [sD, sH, sW] = strides, [dD, dH, dW] = dils, [pD, pH, pW] = padB;
  const Cg = C / group, Mg = M / group;
  const inPlane = iD * iH * iW, outPlane = oD * oH * oW, kSize = kD * kH * kW;
  const rD = new Int32Array(2 * kD), rH = new Int32Array(2 * kH), rW = new Int32Array(2 * kW);
  for (let k = 0; k < kD; k++) { const [a, b] = validRange(k, iD, oD, sD, dD, pD); rD[2 * k] = a; rD[2 * k + 1] = b; }
  for (let k = 0; k < kH; k++) { const [a, b] = validRange(k, iH, oH, sH, dH, pH); rH[2 * k] = a; rH[2 * k + 1] = b; }
  for (let k = 0; k < kW; k++) { const [a, b] = validRange(k, iW, oW, sW, dW, pW); rW[2 * k] = a; rW[2 * k + 1] = b; }
  const R = Cg * kSize;
  if (outPlane * R <= 1 << 24 && N * M * outPlane > 0) {
    // im2col (one row of R taps per output pixel) + register-tiled GEMM
    const Wf = asF64(W);
    const colT = new Float64Array(outPlane * R);
    for (let n = 0; n < N; n++) {
      for (let grp = 0; grp < group; grp++) {
        colT.fill(0);
        for (let cl = 0; cl < Cg; cl++) {
          const xb = (n * C + grp * Cg + cl) * inPlane;
          for (let kd = 0; kd < kD; kd++) {
            const d0 = rD[2 * kd], d1 = rD[2 * kd + 1];
            for (let kh = 0; kh < kH; kh++) {
              const h0 = rH[2 * kh], h1 = rH[2 * kh + 1];
              for (let kw = 0; kw < kW; kw++) {
                const r = cl * kSize + (kd * kH + kh) * kW + kw;
                const w0 = rW[2 * kw], w1 = rW[2 * kw + 1];
                for (let od = d0; od < d1; od++) {
                  const id = od * sD - pD + kd * dD;
                  for (let oh = h0; oh < h1; oh++) {
                    const ih = oh * sH - pH + kh * dH;
                    const prow = ((od * oH + oh) * oW) * R + r;
                    const xrow = xb + (id * iH + ih) * iW - pW + kw * dW;
                    for (let ow = w0; ow < w1; ow++) colT[prow + ow * R] = X[xrow + ow * sW];
                  }
                }
              }
            }
          }
        }
        gemmTiled(Wf, grp * Mg * R, colT, 0, out, (n * M + grp * Mg) * outPlane, Mg, R, outPlane);
      }
    }
    return;
  }
  for (let n = 0; n < N; n++) {
    for (let m = 0; m < M; m++) {
      const grp = Math.floor(m / Mg);
      const ob = (n * M + m) * outPlane;
      for (let cl = 0; cl < Cg; cl++) {
        const c = grp * Cg + cl;
        const xb = (n * C + c) * inPlane;
        const wb = (m * Cg + cl) * kSize;
        for (let kd = 0; kd < kD; kd++) {
          const d0 = rD[2 * kd], d1 = rD[2 * kd + 1];
          for (let kh = 0; kh < kH; kh++) {
            const h0 = rH[2 * kh], h1 = rH[2 * kh + 1];
            for (let kw = 0; kw < kW; kw++) {
              const wv = W[wb + (kd * kH + kh) * kW + kw];
              if (wv === 0) continue;
              const w0 = rW[2 * kw], w1 = rW[2 * kw + 1];
              if (w0 >= w1) continue;
              for (let od = d0; od < d1; od++) {
                const id = od * sD - pD + kd * dD;
                for (let oh = h0; oh < h1; oh++) {
                  const ih = oh * sH - pH + kh * dH;
                  const orow = ob + (od * oH + oh) * oW;
                  const xrow = xb + (id * iH + ih) * iW - pW + kw * dW;
                  for (let ow = w0; ow < w1; ow++) out[orow + ow] += wv * X[xrow + ow * sW];
                }
              }
            }
          }
        }
      }
    }
  }
}

function addBias(out: Float64Array, B: Num, N: number, M: number, plane: number): void {
  for (let n = 0; n < N; n++) for (let m = 0; m < M; m++) {
    const b = B[m];
    const o = (n * M + m) * plane;
    for (let i = 0; i < plane; i++) out[o + i] += b;
  }
}

registerOp('Conv', (inputs, ctx) => {
  const x = input(inputs, 0, ctx), w = input(inputs, 1, ctx), b = optInput(inputs, 2);
  checkFloat(x, ctx);
  const g = convGeometry(x, w, ctx);
  const outDims = [g.N, g.M, ...g.outSpatial];
  const out = new Float64Array(sizeOf(outDims));
  convCore(numbers(x), numbers(w), g, out);
  if (b) {
    if (b.size !== g.M) throw new InputError(`bias has ${b.size} elements, expected ${g.M}`, whereOf(ctx));
    addBias(out, numbers(b), g.N, g.M, sizeOf(g.outSpatial));
  }
  return [fromNumbers(x.type, outDims, out)];
});

// --- ConvInteger / QLinearConv ----------------------------------------------------------------

function shifted(v: Num, zp: Tensor | undefined, perChannelBlock: number, what: string, ctx: KernelContext): Float64Array {
  const out = new Float64Array(v.length);
  if (!zp || zp.size <= 1) {
    const z = zp && zp.size === 1 ? numbers(zp)[0] : 0;
    for (let i = 0; i < v.length; i++) out[i] = v[i] - z;
    return out;
  }
  const Z = numbers(zp);
  if (perChannelBlock <= 0 || Z.length * perChannelBlock !== v.length) {
    throw new InputError(`${what} zero point of shape [${zp.dims.join(',')}] is not per-tensor or per-output-channel`, whereOf(ctx));
  }
  for (let i = 0; i < v.length; i++) out[i] = v[i] - Z[Math.floor(i / perChannelBlock)];
  return out;
}

registerOp('ConvInteger', (inputs, ctx) => {
  const x = input(inputs, 0, ctx), w = input(inputs, 1, ctx);
  const xzp = optInput(inputs, 2), wzp = optInput(inputs, 3);
  const g = convGeometry(x, w, ctx);
  if (xzp && xzp.size > 1) throw new UnsupportedError('ConvInteger with a per-channel x_zero_point is not supported', whereOf(ctx));
  const X = shifted(numbers(x), xzp, 0, 'x', ctx);
  const W = shifted(numbers(w), wzp, w.size / g.M, 'w', ctx);
  const outDims = [g.N, g.M, ...g.outSpatial];
  const out = new Float64Array(sizeOf(outDims));
  convCore(X, W, g, out);
  const res = alloc('int32', outDims);
  (res.data as Int32Array).set(out);
  return [res];
});

registerOp('QLinearConv', (inputs, ctx) => {
  const x = input(inputs, 0, ctx), xs = input(inputs, 1, ctx), xzp = optInput(inputs, 2);
  const w = input(inputs, 3, ctx), ws = input(inputs, 4, ctx), wzp = optInput(inputs, 5);
  const ys = input(inputs, 6, ctx), yzp = optInput(inputs, 7), b = optInput(inputs, 8);
  const outType = yzp ? yzp.type : x.type;
  qRange(outType, ctx);
  const g = convGeometry(x, w, ctx);
  if (xzp && xzp.size > 1) throw new UnsupportedError('QLinearConv with a per-channel x_zero_point is not supported', whereOf(ctx));
  const X = shifted(numbers(x), xzp, 0, 'x', ctx);
  const W = shifted(numbers(w), wzp, w.size / g.M, 'w', ctx);
  const outDims = [g.N, g.M, ...g.outSpatial];
  const out = new Float64Array(sizeOf(outDims));
  convCore(X, W, g, out);
  const plane = sizeOf(g.outSpatial);
  if (b) {
    if (b.size !== g.M) throw new InputError(`bias has ${b.size} elements, expected ${g.M}`, whereOf(ctx));
    addBias(out, numbers(b), g.N, g.M, plane);
  }
  const XS = numbers(xs), WS = numbers(ws), YS = numbers(ys);
  if (XS.length !== 1 || YS.length !== 1) throw new UnsupportedError('per-channel x_scale / y_scale is not supported', whereOf(ctx));
  if (WS.length !== 1 && WS.length !== g.M) throw new InputError(`w_scale has ${WS.length} elements, expected 1 or ${g.M}`, whereOf(ctx));
  if (yzp && yzp.size !== 1) throw new UnsupportedError('per-channel y_zero_point is not supported', whereOf(ctx));
  const sc = new Float64Array(WS.length);
  for (let i = 0; i < WS.length; i++) sc[i] = Math.fround(Math.fround(XS[0] * WS[i]) / YS[0]);
  return [requantize(out, sc, WS.length, plane, yzp, outType, outDims, ctx)];
});

// --- ConvTranspose -----------------------------------------------------------------------------

/** ConvTranspose's pads and output spatial size from its attributes (output_shape and auto_pad resolve the pads). */
export function convTransposeShape(inS: number[], kS: number[], a: {
  strides: number[]; dils: number[]; outPad: number[]; autoPad: string; outShape?: number[]; pads?: number[];
}): { pads: number[]; outS: number[] } {
  const sp = inS.length;
  const { strides, dils, outPad, autoPad } = a;
  let outShape = a.outShape;
  if (outShape && outShape.length === sp + 2) outShape = outShape.slice(2);
  let pads = a.pads;
  if (autoPad === 'VALID') pads = new Array(2 * sp).fill(0);
  if (!pads && autoPad !== 'SAME_UPPER' && autoPad !== 'SAME_LOWER' && !outShape) pads = new Array(2 * sp).fill(0);
  const full = (i: number) => strides[i] * (inS[i] - 1) + outPad[i] + (kS[i] - 1) * dils[i] + 1;
  let outS: number[];
  if (!pads) {
    const target = outShape ?? inS.map((v, i) => v * strides[i]);
    pads = new Array(2 * sp).fill(0);
    for (let i = 0; i < sp; i++) {
      const total = full(i) - target[i];
      const half = Math.floor(total / 2);
      if (autoPad === 'SAME_UPPER') { pads[i] = half; pads[i + sp] = total - half; }
      else { pads[i] = total - half; pads[i + sp] = half; }
    }
    outS = target.slice();
  } else {
    const p = pads;
    outS = outShape ? outShape.slice() : inS.map((_, i) => full(i) - p[i] - p[i + sp]);
  }
  return { pads, outS };
}

registerOp('ConvTranspose', (inputs, ctx) => {
  const x = input(inputs, 0, ctx), w = input(inputs, 1, ctx), b = optInput(inputs, 2);
  checkFloat(x, ctx);
  const r = x.dims.length;
  if (r < 3) throw new InputError(`ConvTranspose input must have rank >= 3, got [${x.dims.join(',')}]`, whereOf(ctx));
  const sp = r - 2;
  if (sp > 3) throw new UnsupportedError(`ConvTranspose with ${sp} spatial dims is not supported`, whereOf(ctx));
  if (w.dims.length !== r) throw new InputError(`weight rank ${w.dims.length} differs from input rank ${r}`, whereOf(ctx));
  const N = x.dims[0], C = x.dims[1];
  const group = ctx.attr.int('group', 1);
  if (w.dims[0] !== C || C % group !== 0) {
    throw new InputError(`channels do not agree: input C=${C}, weight [${w.dims.join(',')}], group=${group}`, whereOf(ctx));
  }
  const Mg = w.dims[1], M = Mg * group, Cg = C / group;
  const inS = x.dims.slice(2) as number[];
  const kS = w.dims.slice(2) as number[];
  const strides = ctx.attr.ints('strides', new Array(sp).fill(1));
  const dils = ctx.attr.ints('dilations', new Array(sp).fill(1));
  checkWindow(sp, { kS, strides, dils, pads: ctx.attr.has('pads') ? ctx.attr.ints('pads') : undefined }, ctx);
  const { pads, outS } = convTransposeShape(inS, kS, {
    strides, dils, outPad: ctx.attr.ints('output_padding', new Array(sp).fill(0)), autoPad: ctx.attr.string('auto_pad', 'NOTSET'),
    outShape: ctx.attr.has('output_shape') ? ctx.attr.ints('output_shape') : undefined,
    pads: ctx.attr.has('pads') ? ctx.attr.ints('pads') : undefined,
  });
  for (const o of outS) if (o < 0) throw new InputError(`negative ConvTranspose output size [${outS.join(',')}]`, whereOf(ctx));
  const outDims = [N, M, ...outS];
  const out = allocData('float64', sizeOf(outDims)) as Float64Array;
  const X = numbers(x), W = numbers(w);
  const [iD, iH, iW] = pad3(inS, 1), [kD, kH, kW] = pad3(kS, 1), [oD, oH, oW] = pad3(outS, 1);
  const [sD, sH, sW] = pad3(strides, 1), [dD, dH, dW] = pad3(dils, 1), [pD, pH, pW] = pad3(pads.slice(0, sp), 0);
  const inPlane = iD * iH * iW, outPlane = oD * oH * oW, kSize = kD * kH * kW;
  // for kernel offset k: valid input index range [lo, hi) with o = i*s - p + k*d in [0, outSize)
  const rng = (k: number, iSz: number, oSz: number, s: number, d: number, p: number, arr: Int32Array) => {
    const base = k * d - p;
    let lo = base >= 0 ? 0 : Math.ceil(-base / s);
    let hi = Math.floor((oSz - 1 - base) / s) + 1;
    if (hi > iSz) hi = iSz;
    if (lo < 0) lo = 0;
    if (hi < lo) hi = lo;
    arr[2 * k] = lo; arr[2 * k + 1] = hi;
  };
  const rD = new Int32Array(2 * kD), rH = new Int32Array(2 * kH), rW = new Int32Array(2 * kW);
  for (let k = 0; k < kD; k++) rng(k, iD, oD, sD, dD, pD, rD);
  for (let k = 0; k < kH; k++) rng(k, iH, oH, sH, dH, pH, rH);
  for (let k = 0; k < kW; k++) rng(k, iW, oW, sW, dW, pW, rW);
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const grp = Math.floor(c / Cg);
      const xb = (n * C + c) * inPlane;
      for (let ml = 0; ml < Mg; ml++) {
        const m = grp * Mg + ml;
        const ob = (n * M + m) * outPlane;
        const wb = (c * Mg + ml) * kSize;
        for (let kd = 0; kd < kD; kd++) {
          for (let kh = 0; kh < kH; kh++) {
            for (let kw = 0; kw < kW; kw++) {
              const wv = W[wb + (kd * kH + kh) * kW + kw];
              if (wv === 0) continue;
              const w0 = rW[2 * kw], w1 = rW[2 * kw + 1];
              if (w0 >= w1) continue;
              for (let id = rD[2 * kd]; id < rD[2 * kd + 1]; id++) {
                const od = id * sD - pD + kd * dD;
                for (let ih = rH[2 * kh]; ih < rH[2 * kh + 1]; ih++) {
                  const oh = ih * sH - pH + kh * dH;
                  const orow = ob + (od * oH + oh) * oW - pW + kw * dW;
                  const xrow = xb + (id * iH + ih) * iW;
                  for (let iw = w0; iw < w1; iw++) out[orow + iw * sW] += wv * X[xrow + iw];
                }
              }
            }
          }
        }
      }
    }
  }
  if (b) {
    if (b.size !== M) throw new InputError(`bias has ${b.size} elements, expected ${M}`, whereOf(ctx));
    addBias(out, numbers(b), N, M, outPlane);
  }
  return [fromNumbers(x.type, outDims, out)];
});

// --- DeformConv --------------------------------------------------------------------------------

registerOp('DeformConv', (inputs, ctx) => {
  const x = input(inputs, 0, ctx), w = input(inputs, 1, ctx), off = input(inputs, 2, ctx);
  const b = optInput(inputs, 3), mask = optInput(inputs, 4);
  checkFloat(x, ctx);
  if (x.dims.length !== 4) throw new UnsupportedError(`DeformConv is implemented for 2-D only, got input [${x.dims.join(',')}]`, whereOf(ctx));
  const [N, C, H, Wd] = x.dims;
  const M = w.dims[0];
  const group = ctx.attr.int('group', 1);
  const og = ctx.attr.int('offset_group', 1);
  if (w.dims[1] * group !== C || M % group !== 0) {
    throw new InputError(`channels do not agree: input C=${C}, weight [${w.dims.join(',')}], group=${group}`, whereOf(ctx));
  }
  if (C % og !== 0) throw new InputError(`input channels ${C} are not divisible by offset_group ${og}`, whereOf(ctx));
  const [kH, kW] = ctx.attr.ints('kernel_shape', [w.dims[2], w.dims[3]]);
  const [sH, sW] = ctx.attr.ints('strides', [1, 1]);
  const [dH, dW] = ctx.attr.ints('dilations', [1, 1]);
  const pads = ctx.attr.ints('pads', [0, 0, 0, 0]);
  const oH = Math.floor((H + pads[0] + pads[2] - ((kH - 1) * dH + 1)) / sH) + 1;
  const oW = Math.floor((Wd + pads[1] + pads[3] - ((kW - 1) * dW + 1)) / sW) + 1;
  const K = kH * kW;
  if (off.dims.length !== 4 || off.dims[0] !== N || off.dims[1] !== og * 2 * K || off.dims[2] !== oH || off.dims[3] !== oW) {
    throw new InputError(`offset shape [${off.dims.join(',')}] must be [${N},${og * 2 * K},${oH},${oW}]`, whereOf(ctx));
  }
  if (mask && mask.size !== N * og * K * oH * oW) {
    throw new InputError(`mask shape [${mask.dims.join(',')}] must be [${N},${og * K},${oH},${oW}]`, whereOf(ctx));
  }
  const X = numbers(x), Wv = numbers(w), O = numbers(off), Mk = mask ? numbers(mask) : undefined;
  const Cg = C / group, Mg = M / group, Cog = C / og;
  const P = oH * oW;
  // columns: for each (n, c, kernel pos, out pos) the sampled and masked value
  const col = new Float64Array(C * K * P);
  const out = new Float64Array(N * M * P);
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const ogi = Math.floor(c / Cog);
      const xb = (n * C + c) * H * Wd;
      for (let i = 0; i < kH; i++) for (let j = 0; j < kW; j++) {
        const k = i * kW + j;
        const offH = ((n * og + ogi) * K + k) * 2 * P;
        const offW = offH + P;
        const mb = ((n * og + ogi) * K + k) * P;
        const cb = (c * K + k) * P;
        for (let oh = 0; oh < oH; oh++) for (let ow = 0; ow < oW; ow++) {
          const p = oh * oW + ow;
          const y = oh * sH - pads[0] + i * dH + O[offH + p];
          const xx = ow * sW - pads[1] + j * dW + O[offW + p];
          let v = 0;
          const y0 = Math.floor(y), x0 = Math.floor(xx);
          const ly = y - y0, lx = xx - x0;
          if (y0 >= -1 && y0 < H && x0 >= -1 && x0 < Wd) {
            const inY0 = y0 >= 0, inY1 = y0 + 1 < H, inX0 = x0 >= 0, inX1 = x0 + 1 < Wd;
            if (inY0 && inX0) v += (1 - ly) * (1 - lx) * X[xb + y0 * Wd + x0];
            if (inY0 && inX1) v += (1 - ly) * lx * X[xb + y0 * Wd + x0 + 1];
            if (inY1 && inX0) v += ly * (1 - lx) * X[xb + (y0 + 1) * Wd + x0];
            if (inY1 && inX1) v += ly * lx * X[xb + (y0 + 1) * Wd + x0 + 1];
          }
          col[cb + p] = Mk ? v * Mk[mb + p] : v;
        }
      }
    }
    for (let m = 0; m < M; m++) {
      const grp = Math.floor(m / Mg);
      const ob = (n * M + m) * P;
      for (let cl = 0; cl < Cg; cl++) {
        const c = grp * Cg + cl;
        for (let k = 0; k < K; k++) {
          const wv = Wv[(m * Cg + cl) * K + k];
          if (wv === 0) continue;
          const cb = (c * K + k) * P;
          for (let p = 0; p < P; p++) out[ob + p] += wv * col[cb + p];
        }
      }
    }
  }
  if (b) {
    if (b.size !== M) throw new InputError(`bias has ${b.size} elements, expected ${M}`, whereOf(ctx));
    addBias(out, numbers(b), N, M, P);
  }
  return [fromNumbers(x.type, [N, M, oH, oW], out)];
});

// --- CausalConvWithState -----------------------------------------------------------------------

registerOp('CausalConvWithState', (inputs, ctx) => {
  const x = input(inputs, 0, ctx), w = input(inputs, 1, ctx);
  const b = optInput(inputs, 2), past = optInput(inputs, 3);
  checkFloat(x, ctx);
  const act = ctx.attr.string('activation', 'none').toLowerCase();
  if (act !== 'none' && act !== 'silu' && act !== 'swish') {
    throw new InputError(`unknown activation '${act}'`, whereOf(ctx));
  }
  if (x.dims.length !== 3) throw new InputError(`input must be [batch, channels, length], got [${x.dims.join(',')}]`, whereOf(ctx));
  const [B, C, L] = x.dims;
  if (w.dims.length !== 3 || w.dims[0] !== C || w.dims[1] !== 1) {
    throw new InputError(`weight must be [${C}, 1, k], got [${w.dims.join(',')}]`, whereOf(ctx));
  }
  const K = w.dims[2];
  const S = K - 1;
  if (past && (past.dims.length !== 3 || past.dims[0] !== B || past.dims[1] !== C || past.dims[2] !== S)) {
    throw new InputError(`past_state must be [${B}, ${C}, ${S}], got [${past.dims.join(',')}]`, whereOf(ctx));
  }
  if (b && b.size !== C) throw new InputError(`bias has ${b.size} elements, expected ${C}`, whereOf(ctx));
  const X = numbers(x), W = numbers(w), Bv = b ? numbers(b) : undefined, Pv = past ? numbers(past) : undefined;
  const out = new Float64Array(B * C * L);
  const state = new Float64Array(B * C * S);
  const seq = new Float64Array(S + L);
  for (let n = 0; n < B; n++) for (let c = 0; c < C; c++) {
    const row = n * C + c;
    for (let i = 0; i < S; i++) seq[i] = Pv ? Pv[row * S + i] : 0;
    for (let i = 0; i < L; i++) seq[S + i] = X[row * L + i];
    const wb = c * K;
    const bias = Bv ? Bv[c] : 0;
    for (let t = 0; t < L; t++) {
      let acc = bias;
      for (let k = 0; k < K; k++) acc += W[wb + k] * seq[t + k];
      if (act !== 'none') acc = acc / (1 + Math.exp(-acc));
      out[row * L + t] = acc;
    }
    for (let i = 0; i < S; i++) state[row * S + i] = seq[L + i];
  }
  return [fromNumbers(x.type, [B, C, L], out), fromNumbers(x.type, [B, C, S], state)];
});


/**
 * Explicit begin/end pads for `auto_pad` (ONNX conv and pooling): SAME_* pad so the output has ceil(in/stride)
 * positions (the odd one at the end for SAME_UPPER, at the start for SAME_LOWER), VALID pads nothing, NOTSET keeps
 * `pads`. Null for an unknown auto_pad.
 */
export function resolveAutoPad(autoPad: string, inS: readonly number[], kS: readonly number[], strides: readonly number[],
  dils: readonly number[], pads: number[]): number[] | null {
  const sp = inS.length;
  if (autoPad === 'NOTSET') return pads;
  if (autoPad === 'VALID') return new Array(2 * sp).fill(0);
  if (autoPad !== 'SAME_UPPER' && autoPad !== 'SAME_LOWER') return null;
  const out = new Array<number>(2 * sp).fill(0);
  for (let i = 0; i < sp; i++) {
    const o = Math.ceil(inS[i] / strides[i]);
    const total = Math.max(0, (o - 1) * strides[i] + (kS[i] - 1) * dils[i] + 1 - inS[i]);
    const half = Math.floor(total / 2);
    out[i] = autoPad === 'SAME_UPPER' ? half : total - half;
    out[i + sp] = total - out[i];
  }
  return out;
}
