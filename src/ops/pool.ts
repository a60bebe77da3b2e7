// Reference kernels: pooling (AveragePool, MaxPool, LpPool, Global*Pool, MaxUnpool, MaxRoiPool).
import { InputError, UnsupportedError } from '../errors.js';
import { isFloat, sizeOf, type DType, type Tensor } from '../tensor.js';
import { registerOp, type KernelContext } from './registry.js';
import { alloc, fromNumbers, input, numbers, optInput } from './util.js';
import { checkWindow, resolveAutoPad } from './conv.js';

type Num = ArrayLike<number>;

function whereOf(ctx: KernelContext) {
  return { node: ctx.node.name, op: ctx.node.opType };
}

function pad3(v: number[], fill: number): number[] {
  const r = v.slice();
  while (r.length < 3) r.unshift(fill);
  return r;
}

interface PoolGeom {
  N: number; C: number;
  inS: number[]; kS: number[]; outS: number[]; strides: number[]; dils: number[]; padB: number[]; padE: number[];
  outSpatial: number[];
}

function poolGeometry(x: Tensor, ctx: KernelContext, allowCeil: boolean): PoolGeom {
  const r = x.dims.length;
  if (r < 3) throw new InputError(`${ctx.node.opType} input must have rank >= 3, got [${x.dims.join(',')}]`, whereOf(ctx));
  const sp = r - 2;
  if (sp > 3) throw new UnsupportedError(`${ctx.node.opType} with ${sp} spatial dims is not supported`, whereOf(ctx));
  const inS = x.dims.slice(2) as number[];
  const kS = ctx.attr.ints('kernel_shape');
  if (kS.length !== sp) throw new InputError(`kernel_shape [${kS.join(',')}] does not match input rank ${r}`, whereOf(ctx));
  const strides = ctx.attr.ints('strides', new Array(sp).fill(1));
  const dils = ctx.attr.ints('dilations', new Array(sp).fill(1));
  let pads = ctx.attr.ints('pads', new Array(2 * sp).fill(0));
  checkWindow(sp, { kS, strides, dils, pads }, ctx);
  const autoPad = ctx.attr.string('auto_pad', 'NOTSET');
  const ceil = allowCeil ? ctx.attr.int('ceil_mode', 0) : 0;
  const shaped = poolOutputShape(inS, kS, strides, dils, pads, autoPad, ceil !== 0);
  if (!shaped) throw new InputError(`unknown auto_pad '${autoPad}'`, whereOf(ctx));
  const outS = shaped.outS;
  pads = shaped.pads;
  for (const o of outS) if (o < 0) throw new InputError(`pooling window larger than the padded input`, whereOf(ctx));
  return {
    N: x.dims[0], C: x.dims[1], inS: pad3(inS, 1), kS: pad3(kS, 1), outS: pad3(outS, 1),
    strides: pad3(strides, 1), dils: pad3(dils, 1), padB: pad3(pads.slice(0, sp), 0), padE: pad3(pads.slice(sp), 0),
    outSpatial: outS,
  };
}

/** Valid kernel index range along one axis for window start `st`: k with st + k*d in [0, n). */
function kLo(st: number, d: number): number { return st >= 0 ? 0 : Math.ceil(-st / d); }
function kHi(st: number, d: number, k: number, n: number): number {
  const h = Math.floor((n - 1 - st) / d) + 1;
  return h < k ? h : k;
}
/** Count of kernel positions inside [lo, hi) along one axis. */
function countIn(st: number, d: number, k: number, lo: number, hi: number): number {
  const a = st >= lo ? 0 : Math.ceil((lo - st) / d);
  const b = Math.min(k, Math.floor((hi - 1 - st) / d) + 1);
  return b > a ? b - a : 0;
}

type PoolKind = 'avg' | 'max' | 'lp';

function runPool(x: Tensor, g: PoolGeom, kind: PoolKind, countPad: boolean, p: number,
  indices: Float64Array | undefined, storageOrder: number): Float64Array {
  const X = numbers(x);
  const { N, C, inS, kS, outS, strides, dils, padB, padE } = g;
  const [iD, iH, iW] = inS, [kD, kH, kW] = kS, [oD, oH, oW] = outS;
  const [sD, sH, sW] = strides, [dD, dH, dW] = dils, [pD, pH, pW] = padB;
  const inPlane = iD * iH * iW, outPlane = oD * oH * oW;
  const out = new Float64Array(N * C * outPlane);
  for (let nc = 0; nc < N * C; nc++) {
    const xb = nc * inPlane;
    let oi = nc * outPlane;
    for (let od = 0; od < oD; od++) {
      const sd = od * sD - pD;
      const d0 = kLo(sd, dD), d1 = kHi(sd, dD, kD, iD);
      for (let oh = 0; oh < oH; oh++) {
        const sh = oh * sH - pH;
        const h0 = kLo(sh, dH), h1 = kHi(sh, dH, kH, iH);
        for (let ow = 0; ow < oW; ow++, oi++) {
          const sw = ow * sW - pW;
          const w0 = kLo(sw, dW), w1 = kHi(sw, dW, kW, iW);
          if (kind === 'max') {
            let best = -Infinity, bi = -1, any = false;
            for (let a = d0; a < d1; a++) {
              const id = sd + a * dD;
              for (let b = h0; b < h1; b++) {
                const ih = sh + b * dH;
                const row = xb + (id * iH + ih) * iW;
                for (let c = w0; c < w1; c++) {
                  const iw = sw + c * dW;
                  const v = X[row + iw];
                  if (!any || v > best) {
                    best = v; any = true;
                    if (indices) bi = storageOrder === 0 ? (id * iH + ih) * iW + iw : (iw * iH + ih) * iD + id;
                  }
                }
              }
            }
            out[oi] = any ? best : -Infinity;
            if (indices) indices[oi] = bi < 0 ? 0 : xb + bi;
          } else {
            let s = 0;
            for (let a = d0; a < d1; a++) {
              const id = sd + a * dD;
              for (let b = h0; b < h1; b++) {
                const row = xb + (id * iH + sh + b * dH) * iW + sw;
                if (kind === 'avg') for (let c = w0; c < w1; c++) s += X[row + c * dW];
                else if (p === 2) for (let c = w0; c < w1; c++) { const v = X[row + c * dW]; s += v * v; }
                else if (p === 1) for (let c = w0; c < w1; c++) s += Math.abs(X[row + c * dW]);
                else for (let c = w0; c < w1; c++) s += Math.abs(X[row + c * dW]) ** p;
              }
            }
            if (kind === 'avg') {
              let cnt: number;
              if (countPad) {
                cnt = countIn(sd, dD, kD, -pD, iD + padE[0]) * countIn(sh, dH, kH, -pH, iH + padE[1]) *
                  countIn(sw, dW, kW, -pW, iW + padE[2]);
              } else {
                cnt = (d1 - d0) * (h1 - h0) * (w1 - w0);
              }
              out[oi] = cnt > 0 ? s / cnt : NaN;
            } else {
              out[oi] = p === 2 ? Math.sqrt(s) : p === 1 ? s : s ** (1 / p);
            }
          }
        }
      }
    }
  }
  return out;
}

function checkFloat(t: Tensor, ctx: KernelContext): void {
  if (!isFloat(t.type)) throw new UnsupportedError(`${ctx.node.opType} on ${t.type} is not supported`, whereOf(ctx));
}

function toType(type: DType, dims: number[], v: Float64Array): Tensor {
  if (isFloat(type)) return fromNumbers(type, dims, v);
  const res = alloc(type, dims);
  (res.data as Int8Array).set(v);
  return res;
}

registerOp('AveragePool', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  checkFloat(x, ctx);
  const g = poolGeometry(x, ctx, true);
  const out = runPool(x, g, 'avg', ctx.attr.int('count_include_pad', 0) !== 0, 1, undefined, 0);
  return [fromNumbers(x.type, [g.N, g.C, ...g.outSpatial], out)];
});

registerOp('LpPool', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  checkFloat(x, ctx);
  const g = poolGeometry(x, ctx, true);
  const p = ctx.attr.has('p') && ctx.attr.raw('p')!.type === 'float' ? ctx.attr.float('p') : ctx.attr.int('p', 2);
  const out = runPool(x, g, 'lp', false, p, undefined, 0);
  return [fromNumbers(x.type, [g.N, g.C, ...g.outSpatial], out)];
});

registerOp('MaxPool', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const t = x.type;
  if (!isFloat(t) && t !== 'int8' && t !== 'uint8') {
    throw new UnsupportedError(`MaxPool on ${t} is not supported`, whereOf(ctx));
  }
  const g = poolGeometry(x, ctx, true);
  const storageOrder = ctx.attr.int('storage_order', 0);
  const wantIdx = ctx.node.outputs.length > 1 && ctx.node.outputs[1] !== '';
  const dims = [g.N, g.C, ...g.outSpatial];
  const idx = wantIdx ? new Float64Array(sizeOf(dims)) : undefined;
  const out = runPool(x, g, 'max', false, 0, idx, storageOrder);
  const res: Tensor[] = [toType(t, dims, out)];
  if (idx) res.push(fromNumbers('int64', dims, idx));
  return res;
});

// --- global pools ------------------------------------------------------------------------------

function globalPool(inputs: Parameters<Parameters<typeof registerOp>[1]>[0], ctx: KernelContext, kind: PoolKind): Tensor[] {
  const x = input(inputs, 0, ctx);
  checkFloat(x, ctx);
  if (x.dims.length < 2) throw new InputError(`${ctx.node.opType} input must have rank >= 2`, whereOf(ctx));
  const N = x.dims[0], C = x.dims[1];
  const plane = sizeOf(x.dims.slice(2));
  const p = kind === 'lp' ? (ctx.attr.has('p') && ctx.attr.raw('p')!.type === 'float' ? ctx.attr.float('p') : ctx.attr.int('p', 2)) : 0;
  const X = numbers(x);
  const out = new Float64Array(N * C);
  for (let i = 0; i < N * C; i++) {
    const b = i * plane;
    if (kind === 'max') {
      let m = -Infinity;
      for (let j = 0; j < plane; j++) { const v = X[b + j]; if (v > m || Number.isNaN(v)) m = v; }
      out[i] = m;
    } else if (kind === 'avg') {
      let s = 0;
      for (let j = 0; j < plane; j++) s += X[b + j];
      out[i] = s / plane;
    } else {
      let s = 0;
      for (let j = 0; j < plane; j++) s += Math.abs(X[b + j]) ** p;
      out[i] = s ** (1 / p);
    }
  }
  const dims = [N, C, ...x.dims.slice(2).map(() => 1)];
  return [fromNumbers(x.type, dims, out)];
}

registerOp('GlobalAveragePool', (inputs, ctx) => globalPool(inputs, ctx, 'avg'));
registerOp('GlobalMaxPool', (inputs, ctx) => globalPool(inputs, ctx, 'max'));
registerOp('GlobalLpPool', (inputs, ctx) => globalPool(inputs, ctx, 'lp'));

// --- MaxUnpool ---------------------------------------------------------------------------------

registerOp('MaxUnpool', (inputs, ctx) => {
  const x = input(inputs, 0, ctx), ind = input(inputs, 1, ctx), os = optInput(inputs, 2);
  const r = x.dims.length;
  if (r < 3) throw new InputError(`MaxUnpool input must have rank >= 3`, whereOf(ctx));
  const sp = r - 2;
  const kS = ctx.attr.ints('kernel_shape');
  const strides = ctx.attr.ints('strides', new Array(sp).fill(1));
  const pads = ctx.attr.ints('pads', new Array(2 * sp).fill(0));
  checkWindow(sp, { kS, strides, dils: new Array(sp).fill(1), pads }, ctx);
  const defDims = [x.dims[0], x.dims[1]];
  for (let i = 0; i < sp; i++) defDims.push((x.dims[2 + i] - 1) * strides[i] + kS[i] - pads[i] - pads[i + sp]);
  let dims = defDims;
  if (os) {
    dims = Array.from(numbers(os));
    if (dims.length !== r) throw new InputError(`output_shape has ${dims.length} elements, expected ${r}`, whereOf(ctx));
    if (dims[0] !== defDims[0] || dims[1] !== defDims[1]) {
      throw new InputError(`output_shape [${dims.join(',')}] has other batch/channel sizes than X`, whereOf(ctx));
    }
  }
  const res = alloc(x.type, dims);
  const total = res.size;
  const Iraw = numbers(ind);
  // indices address the default (inferred) shape; map them into the requested output shape
  let I: Num = Iraw;
  if (dims !== defDims && dims.some((d, i) => d !== defDims[i])) {
    const defTotal = sizeOf(defDims);
    const defSp = defDims.slice(2), outSp = dims.slice(2);
    const defPlane = sizeOf(defSp), outPlane = sizeOf(outSp);
    const m = new Float64Array(Iraw.length);
    for (let i = 0; i < Iraw.length; i++) {
      let k = Iraw[i];
      if (k < 0 || k >= defTotal || !Number.isInteger(k)) throw new InputError(`index ${k} is out of range [0, ${defTotal})`, whereOf(ctx));
      const nc = Math.floor(k / defPlane);
      k -= nc * defPlane;
      let o = 0, mul = 1, ok = true;
      for (let d = sp - 1; d >= 0; d--) {
        const c = k % defSp[d];
        k = (k - c) / defSp[d];
        if (c >= outSp[d]) ok = false;
        o += c * mul;
        mul *= outSp[d];
      }
      m[i] = ok ? nc * outPlane + o : -1;
    }
    I = m;
  }
  if (isFloat(x.type) && x.type !== 'float32' && x.type !== 'float64') {
    const o = res.data as Uint16Array, src = x.data as Uint16Array;
    for (let i = 0; i < I.length; i++) {
      const k = I[i];
      if (k < 0 || k >= total || !Number.isInteger(k)) throw new InputError(`index ${k} is out of range [0, ${total})`, whereOf(ctx));
      o[k] = src[i];
    }
  } else {
    const o = res.data as Float32Array, src = x.data as Float32Array;
    for (let i = 0; i < I.length; i++) {
      const k = I[i];
      if (k < 0 || k >= total || !Number.isInteger(k)) throw new InputError(`index ${k} is out of range [0, ${total})`, whereOf(ctx));
      o[k] = src[i];
    }
  }
  return [res];
});

// --- MaxRoiPool --------------------------------------------------------------------------------

registerOp('MaxRoiPool', (inputs, ctx) => {
  const x = input(inputs, 0, ctx), rois = input(inputs, 1, ctx);
  checkFloat(x, ctx);
  if (x.dims.length !== 4) throw new InputError(`MaxRoiPool input must be [N,C,H,W]`, whereOf(ctx));
  if (rois.dims.length !== 2 || rois.dims[1] !== 5) throw new InputError(`rois must be [num_rois, 5], got [${rois.dims.join(',')}]`, whereOf(ctx));
  const [pH, pW] = ctx.attr.ints('pooled_shape');
  const scale = ctx.attr.float('spatial_scale', 1);
  const [N, C, H, W] = x.dims;
  const R = rois.dims[0];
  const X = numbers(x), Rv: Num = numbers(rois);
  const out = new Float64Array(R * C * pH * pW);
  for (let r = 0; r < R; r++) {
    const bi = Rv[r * 5];
    if (!Number.isInteger(bi) || bi < 0 || bi >= N) throw new InputError(`roi ${r} has batch index ${bi} out of range`, whereOf(ctx));
    const x1 = Math.round(Rv[r * 5 + 1] * scale), y1 = Math.round(Rv[r * 5 + 2] * scale);
    const x2 = Math.round(Rv[r * 5 + 3] * scale), y2 = Math.round(Rv[r * 5 + 4] * scale);
    const rh = Math.max(y2 - y1 + 1, 1), rw = Math.max(x2 - x1 + 1, 1);
    const bh = rh / pH, bw = rw / pW;
    for (let c = 0; c < C; c++) {
      const xb = (bi * C + c) * H * W;
      for (let ph = 0; ph < pH; ph++) {
        const hs = Math.min(Math.max(Math.floor(ph * bh) + y1, 0), H);
        const he = Math.min(Math.max(Math.ceil((ph + 1) * bh) + y1, 0), H);
        for (let pw = 0; pw < pW; pw++) {
          const ws = Math.min(Math.max(Math.floor(pw * bw) + x1, 0), W);
          const we = Math.min(Math.max(Math.ceil((pw + 1) * bw) + x1, 0), W);
          let m = -Infinity;
          const empty = he <= hs || we <= ws;
          for (let h = hs; h < he; h++) for (let w = ws; w < we; w++) { const v = X[xb + h * W + w]; if (v > m) m = v; }
          out[((r * C + c) * pH + ph) * pW + pw] = empty ? 0 : m;
        }
      }
    }
  }
  return [fromNumbers(x.type, [R, C, pH, pW], out)];
});

/**
 * Output spatial dims of a pooling window and the effective pads (auto_pad resolved), shared by the
 * reference kernels and the Wasm backend; null for an unknown auto_pad.
 */
export function poolOutputShape(inS: number[], kS: number[], strides: number[], dils: number[], pads: number[], autoPad: string,
  ceil: boolean): { outS: number[]; pads: number[] } | null {
  const sp = inS.length;
  const outS: number[] = [];
  const resolved = resolveAutoPad(autoPad, inS, kS, strides, dils, pads);
  if (!resolved) return null;
  pads = resolved;
  if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') {
    for (let i = 0; i < sp; i++) outS.push(Math.ceil(inS[i] / strides[i]));
  } else if (autoPad === 'VALID') {
    for (let i = 0; i < sp; i++) outS.push(Math.floor((inS[i] - ((kS[i] - 1) * dils[i] + 1)) / strides[i]) + 1);
  } else if (autoPad === 'NOTSET') {
    for (let i = 0; i < sp; i++) {
      const v = (inS[i] + pads[i] + pads[i + sp] - ((kS[i] - 1) * dils[i] + 1)) / strides[i] + 1;
      let o = ceil ? Math.ceil(v) : Math.floor(v);
      // With ceil_mode, the last window must start inside the input or its left padding.
      if (ceil && (o - 1) * strides[i] >= inS[i] + pads[i]) o--;
      outS.push(o);
    }
  }
  return { outS, pads };
}
