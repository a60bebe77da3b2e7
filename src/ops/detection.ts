// Reference kernels: vision ops (RoiAlign, NonMaxSuppression, GridSample, AffineGrid) and Dropout.
import { InputError, UnsupportedError } from '../errors.js';
import { isFloat, sizeOf, Tensor } from '../tensor.js';
import { registerOp, type KernelContext } from './registry.js';
import { alloc, clone, fromNumbers, input, numbers, optInput } from './util.js';

function whereOf(ctx: KernelContext) {
  return { node: ctx.node.name, op: ctx.node.opType };
}

function checkFloat(t: Tensor, ctx: KernelContext): void {
  if (!isFloat(t.type)) throw new UnsupportedError(`${ctx.node.opType} on ${t.type} is not supported`, whereOf(ctx));
}

// --- RoiAlign ----------------------------------------------------------------------------------

registerOp('RoiAlign', (inputs, ctx) => {
  const x = input(inputs, 0, ctx), rois = input(inputs, 1, ctx), bidx = input(inputs, 2, ctx);
  checkFloat(x, ctx);
  if (x.dims.length !== 4) throw new InputError(`RoiAlign input must be [N,C,H,W], got [${x.dims.join(',')}]`, whereOf(ctx));
  if (rois.dims.length !== 2 || rois.dims[1] !== 4) throw new InputError(`rois must be [num_rois, 4], got [${rois.dims.join(',')}]`, whereOf(ctx));
  const R = rois.dims[0];
  if (bidx.size !== R) throw new InputError(`batch_indices has ${bidx.size} elements, expected ${R}`, whereOf(ctx));
  const defMode = ctx.opset >= 16 ? 'half_pixel' : 'output_half_pixel';
  const ctm = ctx.attr.string('coordinate_transformation_mode', defMode);
  const mode = ctx.attr.string('mode', 'avg');
  if (mode !== 'avg' && mode !== 'max') throw new InputError(`unknown mode '${mode}'`, whereOf(ctx));
  const oH = ctx.attr.int('output_height', 1), oW = ctx.attr.int('output_width', 1);
  const sr = ctx.attr.int('sampling_ratio', 0);
  const scale = ctx.attr.float('spatial_scale', 1);
  const halfPixel = ctm === 'half_pixel';
  const [N, C, H, W] = x.dims;
  const X = numbers(x), Rv = numbers(rois), B = numbers(bidx);
  const out = new Float64Array(R * C * oH * oW);
  for (let r = 0; r < R; r++) {
    const bi = B[r];
    if (!Number.isInteger(bi) || bi < 0 || bi >= N) throw new InputError(`batch index ${bi} of roi ${r} is out of range`, whereOf(ctx));
    const off = halfPixel ? 0.5 : 0;
    const sw = Rv[r * 4] * scale - off, sh = Rv[r * 4 + 1] * scale - off;
    const ew = Rv[r * 4 + 2] * scale - off, eh = Rv[r * 4 + 3] * scale - off;
    let rw = ew - sw, rh = eh - sh;
    if (!halfPixel) { rw = Math.max(rw, 1); rh = Math.max(rh, 1); }
    const bh = rh / oH, bw = rw / oW;
    const gh = sr > 0 ? sr : Math.ceil(rh / oH), gw = sr > 0 ? sr : Math.ceil(rw / oW);
    const count = Math.max(gh * gw, 1);
    // precomputed sample positions/weights for all bins (shared by channels)
    const nS = oH * oW * gh * gw;
    const pos = new Int32Array(nS * 4), wt = new Float64Array(nS * 4);
    let q = 0;
    for (let ph = 0; ph < oH; ph++) for (let pw = 0; pw < oW; pw++) for (let iy = 0; iy < gh; iy++) {
      const yy = sh + ph * bh + (iy + 0.5) * bh / gh;
      for (let ix = 0; ix < gw; ix++, q++) {
        let y = yy;
        let xx = sw + pw * bw + (ix + 0.5) * bw / gw;
        if (y < -1 || y > H || xx < -1 || xx > W) continue; // weights stay 0
        if (y < 0) y = 0;
        if (xx < 0) xx = 0;
        let yl = Math.trunc(y), xl = Math.trunc(xx), yh: number, xh: number;
        if (yl >= H - 1) { yh = yl = H - 1; y = yl; } else yh = yl + 1;
        if (xl >= W - 1) { xh = xl = W - 1; xx = xl; } else xh = xl + 1;
        const ly = y - yl, lx = xx - xl, hy = 1 - ly, hx = 1 - lx;
        pos[4 * q] = yl * W + xl; pos[4 * q + 1] = yl * W + xh; pos[4 * q + 2] = yh * W + xl; pos[4 * q + 3] = yh * W + xh;
        wt[4 * q] = hy * hx; wt[4 * q + 1] = hy * lx; wt[4 * q + 2] = ly * hx; wt[4 * q + 3] = ly * lx;
      }
    }
    const per = gh * gw;
    for (let c = 0; c < C; c++) {
      const xb = (bi * C + c) * H * W;
      const ob = (r * C + c) * oH * oW;
      for (let b = 0; b < oH * oW; b++) {
        let v = 0;
        if (mode === 'avg') {
          for (let s = b * per; s < (b + 1) * per; s++) {
            v += wt[4 * s] * X[xb + pos[4 * s]] + wt[4 * s + 1] * X[xb + pos[4 * s + 1]] +
              wt[4 * s + 2] * X[xb + pos[4 * s + 2]] + wt[4 * s + 3] * X[xb + pos[4 * s + 3]];
          }
          v /= count;
        } else {
          let first = true;
          for (let s = b * per; s < (b + 1) * per; s++) {
            const m = Math.max(wt[4 * s] * X[xb + pos[4 * s]], wt[4 * s + 1] * X[xb + pos[4 * s + 1]],
              wt[4 * s + 2] * X[xb + pos[4 * s + 2]], wt[4 * s + 3] * X[xb + pos[4 * s + 3]]);
            if (first || m > v) { v = m; first = false; }
          }
        }
        out[ob + b] = v;
      }
    }
  }
  return [fromNumbers(x.type, [R, C, oH, oW], out)];
});

// --- NonMaxSuppression -------------------------------------------------------------------------

registerOp('NonMaxSuppression', (inputs, ctx) => {
  const boxes = input(inputs, 0, ctx), scores = input(inputs, 1, ctx);
  const mob = optInput(inputs, 2), iouT = optInput(inputs, 3), scT = optInput(inputs, 4);
  const cpb = ctx.attr.int('center_point_box', 0);
  if (boxes.dims.length !== 3 || boxes.dims[2] !== 4) throw new InputError(`boxes must be [batch, n, 4], got [${boxes.dims.join(',')}]`, whereOf(ctx));
  if (scores.dims.length !== 3 || scores.dims[0] !== boxes.dims[0] || scores.dims[2] !== boxes.dims[1]) {
    throw new InputError(`scores shape [${scores.dims.join(',')}] does not match boxes [${boxes.dims.join(',')}]`, whereOf(ctx));
  }
  const [NB, NBox] = boxes.dims;
  const NC = scores.dims[1];
  const maxOut = mob && mob.size > 0 ? numbers(mob)[0] : 0;
  const iouThr = iouT && iouT.size > 0 ? numbers(iouT)[0] : 0;
  const hasSc = !!scT && scT.size > 0;
  const scThr = hasSc ? numbers(scT!)[0] : 0;
  const Bx = numbers(boxes), S = numbers(scores);
  const sel: number[] = [];
  if (maxOut > 0) {
    const y1 = new Float64Array(NBox), x1 = new Float64Array(NBox), y2 = new Float64Array(NBox), x2 = new Float64Array(NBox);
    const area = new Float64Array(NBox);
    const order: number[] = [];
    const chosen: number[] = [];
    for (let b = 0; b < NB; b++) {
      for (let i = 0; i < NBox; i++) {
        const o = (b * NBox + i) * 4;
        if (cpb === 0) {
          y1[i] = Math.min(Bx[o], Bx[o + 2]); y2[i] = Math.max(Bx[o], Bx[o + 2]);
          x1[i] = Math.min(Bx[o + 1], Bx[o + 3]); x2[i] = Math.max(Bx[o + 1], Bx[o + 3]);
        } else {
          const xc = Bx[o], yc = Bx[o + 1], w = Bx[o + 2], h = Bx[o + 3];
          x1[i] = xc - w / 2; x2[i] = xc + w / 2; y1[i] = yc - h / 2; y2[i] = yc + h / 2;
        }
        area[i] = (y2[i] - y1[i]) * (x2[i] - x1[i]);
      }
      for (let c = 0; c < NC; c++) {
        const sb = (b * NC + c) * NBox;
        order.length = 0;
        for (let i = 0; i < NBox; i++) if (!hasSc || S[sb + i] > scThr) order.push(i);
        order.sort((p, q) => (S[sb + q] - S[sb + p]) || (p - q));
        chosen.length = 0;
        for (const i of order) {
          if (chosen.length >= maxOut) break;
          let keep = true;
          for (const j of chosen) {
            const ih = Math.min(y2[i], y2[j]) - Math.max(y1[i], y1[j]);
            const iw = Math.min(x2[i], x2[j]) - Math.max(x1[i], x1[j]);
            if (ih <= 0 || iw <= 0 || area[i] <= 0 || area[j] <= 0) continue;
            const inter = ih * iw;
            const iou = inter / (area[i] + area[j] - inter);
            if (iou > iouThr) { keep = false; break; }
          }
          if (keep) { chosen.push(i); sel.push(b, c, i); }
        }
      }
    }
  }
  return [fromNumbers('int64', [sel.length / 3, 3], sel)];
});

// --- GridSample --------------------------------------------------------------------------------

function reflect(x: number, lo: number, hi: number): number {
  const rng = hi - lo;
  if (x < lo) {
    const dx = lo - x;
    const n = Math.trunc(dx / rng);
    const r = dx - n * rng;
    return n % 2 === 0 ? lo + r : hi - r;
  }
  if (x > hi) {
    const dx = x - hi;
    const n = Math.trunc(dx / rng);
    const r = dx - n * rng;
    return n % 2 === 0 ? hi - r : lo + r;
  }
  return x;
}

function cubicCoeffs(t: number, out: Float64Array, o: number): void {
  const A = -0.75;
  const x = Math.abs(t);
  out[o] = ((A * (x + 1) - 5 * A) * (x + 1) + 8 * A) * (x + 1) - 4 * A;
  out[o + 1] = ((A + 2) * x - (A + 3)) * x * x + 1;
  out[o + 2] = ((A + 2) * (1 - x) - (A + 3)) * (1 - x) * (1 - x) + 1;
  out[o + 3] = ((A * (2 - x) - 5 * A) * (2 - x) + 8 * A) * (2 - x) - 4 * A;
}

registerOp('GridSample', (inputs, ctx) => {
  const x = input(inputs, 0, ctx), grid = input(inputs, 1, ctx);
  checkFloat(x, ctx);
  let mode = ctx.attr.string('mode', ctx.opset >= 20 ? 'linear' : 'bilinear');
  if (mode === 'bilinear') mode = 'linear';
  if (mode === 'bicubic') mode = 'cubic';
  if (mode !== 'linear' && mode !== 'nearest' && mode !== 'cubic') throw new InputError(`unknown mode '${mode}'`, whereOf(ctx));
  const padMode = ctx.attr.string('padding_mode', 'zeros');
  if (padMode !== 'zeros' && padMode !== 'border' && padMode !== 'reflection') {
    throw new InputError(`unknown padding_mode '${padMode}'`, whereOf(ctx));
  }
  const align = ctx.attr.int('align_corners', 0) !== 0;
  const r = x.dims.length;
  const nd = r - 2;
  if (nd < 1 || nd > 3) throw new UnsupportedError(`GridSample with ${nd} spatial dims is not supported`, whereOf(ctx));
  if (grid.dims.length !== r || grid.dims[0] !== x.dims[0] || grid.dims[r - 1] !== nd) {
    throw new InputError(`grid shape [${grid.dims.join(',')}] does not match input [${x.dims.join(',')}]`, whereOf(ctx));
  }
  const N = x.dims[0], C = x.dims[1];
  const sp = x.dims.slice(2) as number[];
  const outSp = grid.dims.slice(1, -1) as number[];
  const P = sizeOf(outSp), inPlane = sizeOf(sp);
  const X = numbers(x), G = numbers(grid);
  const out = new Float64Array(N * C * P);
  const spStr = new Int32Array(nd);
  { let a = 1; for (let i = nd - 1; i >= 0; i--) { spStr[i] = a; a *= sp[i]; } }
  const lo = new Float64Array(nd), hi = new Float64Array(nd);
  for (let i = 0; i < nd; i++) { lo[i] = align ? 0 : -0.5; hi[i] = align ? sp[i] - 1 : sp[i] - 0.5; }
  const K = mode === 'nearest' ? 1 : mode === 'linear' ? 2 : 4;
  const combos = K ** nd;
  const idx = new Int32Array(nd * K); // per dim: K indices (after padding), -1 = zero
  const wts = new Float64Array(nd * K);
  const coord = new Float64Array(nd);
  const fetchIdx = (i: number, d: number): number => {
    const n = sp[d];
    if (i >= 0 && i < n) return i;
    if (padMode === 'zeros') return -1;
    if (padMode === 'border') return i < 0 ? 0 : n - 1;
    return Math.trunc(reflect(i, lo[d], hi[d]));
  };
  for (let n = 0; n < N; n++) {
    for (let p = 0; p < P; p++) {
      const gb = (n * P + p) * nd;
      for (let d = 0; d < nd; d++) {
        const g = G[gb + (nd - 1 - d)];
        const len = sp[d];
        let v = align ? (g + 1) / 2 * (len - 1) : ((g + 1) * len - 1) / 2;
        if (mode === 'nearest') {
          // round half to even (the conformance data uses numpy rint for 2-D and 3-D alike)
          const f = Math.floor(v), fr = v - f;
          v = fr > 0.5 ? f + 1 : fr < 0.5 ? f : (f % 2 === 0 ? f : f + 1);
        }
        if (v < lo[d] || v > hi[d]) {
          if (padMode === 'border') v = v < 0 ? 0 : v > len - 1 ? len - 1 : v;
          else if (padMode === 'reflection') v = reflect(v, lo[d], hi[d]);
        }
        coord[d] = v;
        if (mode === 'nearest') {
          idx[d] = fetchIdx(Math.trunc(v), d);
          wts[d] = 1;
        } else if (mode === 'linear') {
          const f = Math.floor(v), t = v - f;
          idx[d * 2] = fetchIdx(f, d); idx[d * 2 + 1] = fetchIdx(f + 1, d);
          wts[d * 2] = 1 - t; wts[d * 2 + 1] = t;
        } else {
          const f = Math.floor(v), t = v - f;
          for (let k = 0; k < 4; k++) idx[d * 4 + k] = fetchIdx(f - 1 + k, d);
          cubicCoeffs(t, wts, d * 4);
        }
      }
      for (let c = 0; c < C; c++) {
        const xb = (n * C + c) * inPlane;
        let acc = 0;
        for (let cb = 0; cb < combos; cb++) {
          let rem = cb, off = 0, w = 1, zero = false;
          for (let d = nd - 1; d >= 0; d--) {
            const k = rem % K;
            rem = (rem - k) / K;
            const i = idx[d * K + k];
            if (i < 0) { zero = true; break; }
            off += i * spStr[d];
            w *= wts[d * K + k];
          }
          if (!zero) acc += w * X[xb + off];
        }
        out[(n * C + c) * P + p] = acc;
      }
    }
  }
  return [fromNumbers(x.type, [N, C, ...outSp], out)];
});

// --- AffineGrid --------------------------------------------------------------------------------

registerOp('AffineGrid', (inputs, ctx) => {
  const theta = input(inputs, 0, ctx), size = input(inputs, 1, ctx);
  checkFloat(theta, ctx);
  const align = ctx.attr.int('align_corners', 0) !== 0;
  const sz = Array.from(numbers(size));
  const N = sz[0];
  const nd = sz.length - 2;
  if (nd !== 2 && nd !== 3) throw new InputError(`size must have 4 or 5 elements, got ${sz.length}`, whereOf(ctx));
  if (theta.dims.length !== 3 || theta.dims[0] !== N || theta.dims[1] !== nd || theta.dims[2] !== nd + 1) {
    throw new InputError(`theta shape [${theta.dims.join(',')}] must be [${N},${nd},${nd + 1}]`, whereOf(ctx));
  }
  const T = numbers(theta);
  const sp = sz.slice(2); // D,H,W or H,W
  const base = (i: number, len: number) => {
    if (align) return len <= 1 ? 0 : -1 + (2 * i) / (len - 1);
    return (2 * i + 1) / len - 1;
  };
  const P = sizeOf(sp);
  const out = new Float64Array(N * P * nd);
  const c = new Float64Array(nd + 1);
  const sp3 = nd === 2 ? [1, sp[0], sp[1]] : sp;
  for (let n = 0; n < N; n++) {
    const tb = n * nd * (nd + 1);
    let p = 0;
    for (let d = 0; d < sp3[0]; d++) for (let h = 0; h < sp3[1]; h++) for (let w = 0; w < sp3[2]; w++, p++) {
      // homogeneous coordinate (x, y[, z], 1)
      c[0] = base(w, sp3[2]); c[1] = base(h, sp3[1]);
      if (nd === 3) c[2] = base(d, sp3[0]);
      c[nd] = 1;
      for (let r = 0; r < nd; r++) {
        let s = 0;
        for (let k = 0; k <= nd; k++) s += T[tb + r * (nd + 1) + k] * c[k];
        out[(n * P + p) * nd + r] = s;
      }
    }
  }
  return [fromNumbers(theta.type, [N, ...sp, nd], out)];
});

// --- Dropout -----------------------------------------------------------------------------------

/** numpy RandomState (MT19937, legacy integer seeding) uniform [0, 1) doubles. */
class NumpyMT {
  private mt = new Uint32Array(624);
  private i = 624;
  constructor(seed: number) {
    const mt = this.mt;
    mt[0] = seed >>> 0;
    for (let k = 1; k < 624; k++) {
      const prev = mt[k - 1] ^ (mt[k - 1] >>> 30);
      mt[k] = (Math.imul(1812433253, prev) + k) >>> 0;
    }
  }
  private next32(): number {
    const mt = this.mt;
    if (this.i >= 624) {
      for (let k = 0; k < 624; k++) {
        const y = (mt[k] & 0x80000000) | (mt[(k + 1) % 624] & 0x7fffffff);
        mt[k] = mt[(k + 397) % 624] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
      }
      this.i = 0;
    }
    let y = mt[this.i++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }
  random(): number {
    const a = this.next32() >>> 5, b = this.next32() >>> 6;
    return (a * 67108864 + b) / 9007199254740992;
  }
}

registerOp('Dropout', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const wantMask = ctx.node.outputs.length > 1 && ctx.node.outputs[1] !== '';
  let ratio = 0.5, training = false;
  if (ctx.opset >= 12) {
    const r = optInput(inputs, 1), t = optInput(inputs, 2);
    if (r && r.size > 0) ratio = numbers(r)[0];
    if (t && t.size > 0) training = numbers(t)[0] !== 0;
  } else {
    ratio = ctx.attr.float('ratio', 0.5);
  }
  const maskType = ctx.opset >= 10 ? 'bool' : x.type;
  if (!training || ratio === 0) {
    const outs: Tensor[] = [clone(x)];
    if (wantMask) outs.push(fromNumbers(maskType, x.dims, new Float64Array(x.size).fill(1)));
    return outs;
  }
  checkFloat(x, ctx);
  if (ratio < 0 || ratio >= 1) throw new InputError(`dropout ratio ${ratio} must be in [0, 1)`, whereOf(ctx));
  const seed = ctx.attr.has('seed') ? ctx.attr.int('seed') : Math.floor(Math.random() * 2 ** 32);
  const rng = new NumpyMT(seed);
  const X = numbers(x);
  const scale = 1 / (1 - ratio);
  const y = new Float64Array(x.size);
  const mask = alloc('bool', x.dims);
  const M = mask.data as Uint8Array;
  for (let i = 0; i < X.length; i++) {
    const keep = rng.random() >= ratio;
    M[i] = keep ? 1 : 0;
    y[i] = keep ? X[i] * scale : 0;
  }
  const outs: Tensor[] = [fromNumbers(x.type, x.dims, y)];
  if (wantMask) outs.push(mask);
  return outs;
});
