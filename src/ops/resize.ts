// Reference kernels: Resize (opsets 10..19), Upsample, Col2Im.
// Nearest mode moves element storage (any dtype); linear/cubic run separable 1-D passes in float64.
import { InputError, UnsupportedError } from '../errors.js';
import { isFloat, isInt, sizeOf, type DType, type Tensor } from '../tensor.js';
import { registerOp, type KernelContext } from './registry.js';
import { fromNumbers, input, numbers, optInput, stridesOf } from './util.js';
import { encodeScalar, intList, tableIndex, take, where } from './shape.js';

interface ResizeOpts {
  mode: string; // nearest | linear | cubic
  coord: string;
  nearestMode: string; // round_prefer_floor | round_prefer_ceil | floor | ceil | simple
  cubicA: number;
  excludeOutside: boolean;
  extrapolation: number;
  antialias: boolean;
}

/** Source coordinate of output position x along one axis (NaN marks "extrapolate"). */
export function sourceCoord(x: number, scale: number, inLen: number, outLen: number, roiS: number, roiE: number, coord: string): number {
  const outW = scale * inLen;
  switch (coord) {
    case 'half_pixel': return (x + 0.5) / scale - 0.5;
    case 'asymmetric': return x / scale;
    case 'align_corners': return outW === 1 ? 0 : (x * (inLen - 1)) / (outW - 1);
    case 'pytorch_half_pixel': return outW === 1 ? -0.5 : (x + 0.5) / scale - 0.5;
    case 'tf_half_pixel_for_nn': return (x + 0.5) / scale;
    case 'half_pixel_symmetric': {
      const adj = outLen / outW;
      const center = inLen / 2;
      return center * (1 - adj) + (x + 0.5) / scale - 0.5;
    }
    case 'tf_crop_and_resize': {
      let xo = outW === 1 ? ((roiE - roiS) * (inLen - 1)) / 2 : (x * (roiE - roiS) * (inLen - 1)) / (outW - 1);
      xo += roiS * (inLen - 1);
      return xo < 0 || xo > inLen - 1 ? NaN : xo;
    }
  }
  throw new UnsupportedError(`coordinate_transformation_mode '${coord}' is not supported`);
}

export function nearestIndex(xo: number, mode: string, downsample: boolean): number {
  if (Number.isInteger(xo)) return xo;
  const f = Math.floor(xo);
  const r = xo - f;
  switch (mode) {
    case 'round_prefer_floor': return r <= 0.5 ? f : f + 1;
    case 'round_prefer_ceil': return r < 0.5 ? f : f + 1;
    case 'floor': return f;
    case 'ceil': return f + 1;
    case 'simple': return downsample ? Math.ceil(xo) : Math.trunc(xo);
  }
  throw new UnsupportedError(`nearest_mode '${mode}' is not supported`);
}

function cubicKernel(x: number, A: number): number {
  x = Math.abs(x);
  if (x <= 1) return ((A + 2) * x - (A + 3)) * x * x + 1;
  if (x < 2) return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
  return 0;
}

/** Taps (input index, weight) of every output position along one axis; idx -1 = extrapolate. */
function axisTaps(inLen: number, outLen: number, scale: number, roiS: number, roiE: number, o: ResizeOpts) {
  let start: number, T: number;
  const sc = Math.min(scale, 1);
  if (o.mode === 'linear') {
    start = o.antialias ? Math.floor(-1 / sc) + 1 : 0;
    T = 2 - 2 * start;
  } else {
    start = o.antialias ? Math.floor(-2 / sc) + 1 : -1;
    T = 2 - 2 * start;
  }
  const idx = new Int32Array(outLen * T);
  const w = new Float64Array(outLen * T);
  for (let p = 0; p < outLen; p++) {
    const xo = sourceCoord(p, scale, inLen, outLen, roiS, roiE, o.coord);
    if (Number.isNaN(xo)) { idx.fill(-1, p * T, p * T + T); continue; }
    const base = Number.isInteger(xo) ? xo - 1 : Math.floor(xo);
    const ratio = xo - base;
    let sum = 0;
    for (let t = 0; t < T; t++) {
      const off = start + t;
      let c: number;
      if (o.mode === 'linear') {
        c = o.antialias ? Math.min(Math.max(1 - Math.abs((off - ratio) * sc), 0), 1) : off === 0 ? 1 - ratio : ratio;
      } else {
        c = o.antialias ? cubicKernel(sc * (off - ratio), o.cubicA) : cubicKernel(off - ratio, o.cubicA);
      }
      const i = base + off;
      if (o.excludeOutside && (i < 0 || i >= inLen)) c = 0;
      idx[p * T + t] = Math.min(Math.max(i, 0), inLen - 1);
      w[p * T + t] = c;
      sum += c;
    }
    if (o.antialias || o.excludeOutside) {
      if (sum !== 0) for (let t = 0; t < T; t++) w[p * T + t] /= sum;
    }
  }
  return { idx, w, T };
}

function resizeCore(x: Tensor, outDims: number[], scales: number[], roi: number[], o: ResizeOpts, ctx: KernelContext): Tensor {
  const r = x.dims.length;
  for (let a = 0; a < r; a++) {
    if (!(outDims[a] >= 0) || !Number.isInteger(outDims[a])) throw new InputError(`output dimension ${outDims[a]} on axis ${a} is invalid`, where(ctx));
    if (x.dims[a] === 0 && outDims[a] > 0) throw new InputError(`cannot resize an empty axis ${a} to ${outDims[a]}`, where(ctx));
  }
  if (o.mode === 'nearest') {
    const st = stridesOf(x.dims);
    const tables: Int32Array[] = [];
    for (let a = 0; a < r; a++) {
      const tab = new Int32Array(outDims[a]);
      const inLen = x.dims[a];
      for (let p = 0; p < outDims[a]; p++) {
        const xo = sourceCoord(p, scales[a], inLen, outDims[a], roi[a], roi[r + a], o.coord);
        if (Number.isNaN(xo)) { tab[p] = -1; continue; }
        const i = nearestIndex(xo, o.nearestMode, scales[a] < 1);
        tab[p] = Math.min(Math.max(i, 0), inLen - 1) * st[a];
      }
      tables.push(tab);
    }
    return take(x, outDims, tableIndex(outDims, tables), encodeScalar(x.type, o.extrapolation));
  }
  if (!isFloat(x.type) && !isInt(x.type)) throw new UnsupportedError(`${o.mode} resize of ${x.type} is not supported`, where(ctx));
  if (o.mode !== 'linear' && o.mode !== 'cubic') throw new UnsupportedError(`mode '${o.mode}' is not supported`, where(ctx));
  let cur = Float64Array.from(numbers(x));
  const curDims = x.dims.slice();
  for (let a = 0; a < r; a++) {
    const inLen = curDims[a], outLen = outDims[a];
    // A pass that maps every output position onto the same input position with weight 1 is skipped.
    const { idx, w, T } = axisTaps(inLen, outLen, scales[a], roi[a], roi[r + a], o);
    if (inLen === outLen) {
      let identity = true;
      for (let p = 0; p < outLen && identity; p++) {
        for (let t = 0; t < T; t++) {
          const wt = w[p * T + t], ii = idx[p * T + t];
          if (ii < 0 || (wt !== 0 && !(ii === p && wt === 1))) { identity = false; break; }
        }
      }
      if (identity) continue;
    }
    const outer = sizeOf(curDims.slice(0, a));
    const inner = sizeOf(curDims.slice(a + 1));
    const next = new Float64Array(outer * outLen * inner);
    for (let ob = 0; ob < outer; ob++) {
      const srcB = ob * inLen * inner;
      for (let p = 0; p < outLen; p++) {
        const dst = (ob * outLen + p) * inner;
        if (idx[p * T] < 0) { next.fill(o.extrapolation, dst, dst + inner); continue; }
        for (let t = 0; t < T; t++) {
          const wt = w[p * T + t];
          if (wt === 0) continue;
          const src = srcB + idx[p * T + t] * inner;
          for (let j = 0; j < inner; j++) next[dst + j] += wt * cur[src + j];
        }
      }
    }
    cur = next;
    curDims[a] = outLen;
  }
  if (isInt(x.type)) {
    const [lo, hi] = intRange(x.type);
    for (let i = 0; i < cur.length; i++) cur[i] = Math.min(Math.max(Math.round(cur[i]), lo), hi);
  }
  return fromNumbers(x.type, outDims, cur);
}

function intRange(t: DType): [number, number] {
  switch (t) {
    case 'int8': return [-128, 127];
    case 'uint8': return [0, 255];
    case 'int16': return [-32768, 32767];
    case 'uint16': return [0, 65535];
    case 'int32': return [-(2 ** 31), 2 ** 31 - 1];
    case 'uint32': return [0, 2 ** 32 - 1];
    case 'int4': return [-8, 7];
    case 'uint4': return [0, 15];
    case 'int2': return [-2, 1];
    case 'uint2': return [0, 3];
    default: return [-(2 ** 63), 2 ** 64];
  }
}

registerOp('Resize', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const r = x.dims.length;
  const at = ctx.attr;
  const o: ResizeOpts = {
    mode: at.string('mode', 'nearest'),
    coord: 'asymmetric',
    nearestMode: 'simple',
    cubicA: at.float('cubic_coeff_a', -0.75),
    excludeOutside: at.int('exclude_outside', 0) !== 0,
    extrapolation: at.float('extrapolation_value', 0),
    antialias: ctx.opset >= 18 && at.int('antialias', 0) !== 0,
  };
  let scalesT: Tensor | undefined, sizesT: Tensor | undefined, roiT: Tensor | undefined;
  if (ctx.opset < 11) {
    scalesT = input(inputs, 1, ctx);
    if (o.mode !== 'nearest' && o.mode !== 'linear') throw new UnsupportedError(`mode '${o.mode}' is not supported in opset 10`, where(ctx));
  } else {
    o.coord = at.string('coordinate_transformation_mode', 'half_pixel');
    o.nearestMode = at.string('nearest_mode', 'round_prefer_floor');
    roiT = optInput(inputs, 1);
    scalesT = optInput(inputs, 2);
    sizesT = optInput(inputs, 3);
    if (scalesT && scalesT.size === 0) scalesT = undefined;
    if (sizesT && sizesT.size === 0) sizesT = undefined;
  }
  if (o.mode === 'nearest' && o.antialias) o.antialias = false;
  const axes = ctx.opset >= 18 && at.has('axes')
    ? at.ints('axes').map((a) => {
      const b = a < 0 ? a + r : a;
      if (b < 0 || b >= r) throw new InputError(`axes entry ${a} is out of range for rank ${r}`, where(ctx));
      return b;
    })
    : x.dims.map((_, i) => i);
  const k = axes.length;
  const scales = new Array<number>(r).fill(1);
  const outDims = x.dims.slice();
  if (scalesT && sizesT) throw new InputError('only one of scales and sizes may be given', where(ctx));
  if (scalesT) {
    const s = Array.from(numbers(scalesT));
    if (s.length !== k) throw new InputError(`scales has ${s.length} entries, expected ${k}`, where(ctx, ctx.opset < 11 ? 1 : 2));
    for (let i = 0; i < k; i++) {
      if (!(s[i] > 0)) throw new InputError(`scale ${s[i]} must be positive`, where(ctx, 2));
      scales[axes[i]] = s[i];
      outDims[axes[i]] = Math.floor(s[i] * x.dims[axes[i]]);
    }
  } else if (sizesT) {
    const sz = intList(sizesT);
    if (sz.length !== k) throw new InputError(`sizes has ${sz.length} entries, expected ${k}`, where(ctx, 3));
    const policy = ctx.opset >= 18 ? at.string('keep_aspect_ratio_policy', 'stretch') : 'stretch';
    if (policy === 'stretch') {
      for (let i = 0; i < k; i++) { outDims[axes[i]] = sz[i]; scales[axes[i]] = sz[i] / x.dims[axes[i]]; }
    } else {
      if (policy !== 'not_larger' && policy !== 'not_smaller') throw new UnsupportedError(`keep_aspect_ratio_policy '${policy}' is not supported`, where(ctx));
      let sc = policy === 'not_larger' ? Infinity : -Infinity;
      for (let i = 0; i < k; i++) {
        const v = sz[i] / x.dims[axes[i]];
        sc = policy === 'not_larger' ? Math.min(sc, v) : Math.max(sc, v);
      }
      for (let i = 0; i < k; i++) { scales[axes[i]] = sc; outDims[axes[i]] = Math.floor(sc * x.dims[axes[i]] + 0.5); }
    }
  } else {
    throw new InputError('one of scales and sizes is required', where(ctx));
  }
  const roi = [...new Array<number>(r).fill(0), ...new Array<number>(r).fill(1)];
  if (o.coord === 'tf_crop_and_resize') {
    if (!roiT || roiT.size === 0) throw new InputError('roi is required for tf_crop_and_resize', where(ctx, 1));
    const rv = Array.from(numbers(roiT));
    if (rv.length !== 2 * k) throw new InputError(`roi has ${rv.length} entries, expected ${2 * k}`, where(ctx, 1));
    for (let i = 0; i < k; i++) { roi[axes[i]] = rv[i]; roi[r + axes[i]] = rv[k + i]; }
  }
  return [resizeCore(x, outDims, scales, roi, o, ctx)];
});

registerOp('Upsample', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const r = x.dims.length;
  const scales = ctx.opset < 9 ? ctx.attr.floats('scales') : Array.from(numbers(input(inputs, 1, ctx)));
  if (scales.length !== r) throw new InputError(`scales has ${scales.length} entries, the input has rank ${r}`, where(ctx));
  let mode = ctx.attr.string('mode', 'nearest');
  if (mode === 'bilinear') mode = 'linear';
  if (mode !== 'nearest' && mode !== 'linear') throw new UnsupportedError(`mode '${mode}' is not supported`, where(ctx));
  for (const s of scales) if (!(s > 0)) throw new InputError(`scale ${s} must be positive`, where(ctx));
  const outDims = x.dims.map((d, i) => Math.floor(d * scales[i]));
  const o: ResizeOpts = {
    mode, coord: 'asymmetric', nearestMode: 'simple', cubicA: -0.75, excludeOutside: false, extrapolation: 0, antialias: false,
  };
  const roi = [...new Array<number>(r).fill(0), ...new Array<number>(r).fill(1)];
  return [resizeCore(x, outDims, scales, roi, o, ctx)];
});

registerOp('Col2Im', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const img = intList(input(inputs, 1, ctx));
  const blk = intList(input(inputs, 2, ctx));
  const n = img.length;
  if (blk.length !== n) throw new InputError(`block_shape has ${blk.length} entries, image_shape has ${n}`, where(ctx, 2));
  if (x.dims.length !== 3) throw new InputError(`input must be 3-D [N, C*prod(block), L], has shape [${x.dims}]`, where(ctx, 0));
  const dil = ctx.attr.ints('dilations', new Array<number>(n).fill(1));
  const pads = ctx.attr.ints('pads', new Array<number>(2 * n).fill(0));
  const strides = ctx.attr.ints('strides', new Array<number>(n).fill(1));
  const K = sizeOf(blk);
  const [N, CK, L] = x.dims;
  if (K === 0 || CK % K !== 0) throw new InputError(`input channel dimension ${CK} is not a multiple of prod(block_shape) ${K}`, where(ctx, 0));
  const C = CK / K;
  const grid: number[] = [];
  for (let i = 0; i < n; i++) {
    const g = Math.floor((img[i] + pads[i] + pads[n + i] - (dil[i] * (blk[i] - 1) + 1)) / strides[i]) + 1;
    grid.push(g);
  }
  if (sizeOf(grid) !== L) throw new InputError(`input has ${L} blocks, the image and block shapes give ${sizeOf(grid)}`, where(ctx, 0));
  const src = numbers(x);
  const imgSize = sizeOf(img);
  const out = new Float64Array(N * C * imgSize);
  const imgStr = stridesOf(img);
  const kc = new Int32Array(n), lc = new Int32Array(n);
  for (let kk = 0; kk < K; kk++) {
    let rem = kk;
    for (let i = n - 1; i >= 0; i--) { kc[i] = rem % blk[i]; rem = Math.floor(rem / blk[i]); }
    for (let l = 0; l < L; l++) {
      let rl = l;
      for (let i = n - 1; i >= 0; i--) { lc[i] = rl % grid[i]; rl = Math.floor(rl / grid[i]); }
      let off = 0, ok = true;
      for (let i = 0; i < n; i++) {
        const p = lc[i] * strides[i] - pads[i] + kc[i] * dil[i];
        if (p < 0 || p >= img[i]) { ok = false; break; }
        off += p * imgStr[i];
      }
      if (!ok) continue;
      for (let b = 0; b < N; b++) {
        for (let c = 0; c < C; c++) {
          out[(b * C + c) * imgSize + off] += src[(b * CK + c * K + kk) * L + l];
        }
      }
    }
  }
  return [fromNumbers(x.type, [N, C, ...img], out)];
});
