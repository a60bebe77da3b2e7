// Conv and pooling kernel generators (f32, NCHW): register-blocked conv GEMM, im2col, narrow (channel-vector) conv, direct depthwise, pools.
import { type FunctionBuilder, type Local, ModuleBuilder, OP, SIMD, call } from '../../../codegen/wasm/builder.js';
import type { KernelSource } from '../kernel.js';
import { ActTemps, emitExp } from './gemm.js';

/** Activation fused into a conv's store (the lead's fusion pass picks it). */
export type ConvActivation =
  | { kind: 'none' }
  | { kind: 'relu' }
  | { kind: 'clip'; min: number; max: number }
  /** x * clip(x + 3, 0, 6) / 6 */
  | { kind: 'hardswish' }
  /** max(0, min(1, alpha * x + beta)) */
  | { kind: 'hardsigmoid'; alpha: number; beta: number }
  | { kind: 'sigmoid' };

export const NO_ACT: ConvActivation = { kind: 'none' };

export function actKey(a: ConvActivation): string {
  if (a.kind === 'clip') return `clip${a.min},${a.max}`;
  if (a.kind === 'hardsigmoid') return `hsig${a.alpha},${a.beta}`;
  return a.kind;
}

const splat = (f: FunctionBuilder, x: number) => f.f32x4_const(x);

/** Replaces the v128 in local v by act(v). */
export function emitConvAct(f: FunctionBuilder, a: ConvActivation, v: Local, t: ActTemps | undefined): void {
  switch (a.kind) {
    case 'none': return;
    case 'relu': f.get(v); splat(f, 0); f.simd(SIMD.f32x4_pmax); f.set(v); return;
    case 'clip':
      f.get(v); splat(f, a.min); f.simd(SIMD.f32x4_pmax); splat(f, a.max); f.simd(SIMD.f32x4_pmin); f.set(v); return;
    case 'hardswish':
      f.get(v); f.get(v); splat(f, 3); f.simd(SIMD.f32x4_add); splat(f, 0); f.simd(SIMD.f32x4_pmax); splat(f, 6); f.simd(SIMD.f32x4_pmin);
      f.simd(SIMD.f32x4_mul); splat(f, 6); f.simd(SIMD.f32x4_div); f.set(v); return;
    case 'hardsigmoid':
      f.get(v); splat(f, a.alpha); f.simd(SIMD.f32x4_mul); splat(f, a.beta); f.simd(SIMD.f32x4_add);
      splat(f, 0); f.simd(SIMD.f32x4_pmax); splat(f, 1); f.simd(SIMD.f32x4_pmin); f.set(v); return;
    case 'sigmoid':
      f.get(v); f.simd(SIMD.f32x4_neg); f.set(t!.c); emitExp(f, t!.c, t!); f.set(t!.c);
      splat(f, 1); splat(f, 1); f.get(t!.c); f.simd(SIMD.f32x4_add); f.simd(SIMD.f32x4_div); f.set(v); return;
  }
}

const needsTemps = (a: ConvActivation) => a.kind === 'sigmoid';

/** Emits `a*b + c` (operands already pushed in the order a, b, c when relaxed; c, a, b otherwise). */
function fma(f: FunctionBuilder, relaxed: boolean): void {
  if (relaxed) f.simd(SIMD.f32x4_relaxed_madd);
  else { f.simd(SIMD.f32x4_mul); f.simd(SIMD.f32x4_add); }
}

// i32 helpers
const add = (f: FunctionBuilder) => f.op(OP.i32_add);
const mul = (f: FunctionBuilder) => f.op(OP.i32_mul);
/** Pushes min(local a-expression, c): the expression is pushed by `push`. */
function minConst(f: FunctionBuilder, push: () => void, c: number, tmp: Local): void {
  push(); f.tee(tmp); f.i32(c); f.get(tmp); f.i32(c); f.op(OP.i32_lt_s); f.select();
}

// --- conv GEMM: C[M x P] = act(A[M x K] · B[K x P] + bias[m]) -----------------------------------

export interface ConvGemmParams {
  M: number; K: number; P: number;
  /** Row strides in elements: A (weights), B (input rows or im2col), C (output). */
  lda: number; ldb: number; ldc: number;
  /** Outer batch (e.g. [N, group]) with per-dim element strides of each operand. */
  batch: { dims: number[]; a: number[]; b: number[]; c: number[]; bias: number[] };
  mr: number; nr: number; mb: number; ppt: number; unroll: number;
  bias: boolean; act: ConvActivation; relaxed: boolean;
  /** A is packed by packConvA (tiles of mr rows, k-major): lda is then ignored. */
  packedA?: boolean;
}

/** Packs W [group][Mg][K] into per-group tiles of mr rows (zero rows pad the last), element (k, i) at k*mr + i. */
export function packConvA(w: Float32Array, group: number, Mg: number, K: number, mr: number): Float32Array {
  const tiles = Math.ceil(Mg / mr);
  const out = new Float32Array(group * tiles * mr * K);
  for (let g = 0; g < group; g++) for (let t = 0; t < tiles; t++) {
    const base = (g * tiles + t) * mr * K;
    for (let i = 0; i < mr; i++) {
      const m = t * mr + i;
      if (m >= Mg) break;
      const src = (g * Mg + m) * K;
      for (let k = 0; k < K; k++) out[base + k * mr + i] = w[src + k];
    }
  }
  return out;
}

export function convGemmTasks(p: ConvGemmParams): number {
  const nb = p.batch.dims.reduce((a, b) => a * b, 1);
  return nb * Math.ceil(p.M / p.mb) * Math.ceil(Math.ceil(p.P / p.nr) / p.ppt);
}

/** Picks the register tile and task split of a conv GEMM. */
export function convGemmTile(M: number, K: number, P: number, batch: number, threads: number): Pick<ConvGemmParams, 'mr' | 'nr' | 'mb' | 'ppt' | 'unroll'> {
  // 4x12 (12 accumulators + 3 B vectors + 1 A splat = 16 registers) measured best of 4x8/6x8/8x8/4x16 on x86 / V8.
  const mr = Math.min(M, 4);
  const nr = P >= 12 ? 12 : P > 4 ? 8 : 4;
  const mb = Math.min(Math.ceil(M / mr) * mr, mr * 16);
  const nP = Math.ceil(P / nr), nRB = Math.ceil(M / mb);
  let ppt = nP;
  if (threads > 1) {
    const want = threads * 6;
    ppt = Math.max(1, Math.floor((nP * nRB * batch) / want));
    // keep each task a sizeable amount of work
    while (ppt < nP && 2 * Math.min(M, mb) * ppt * nr * K < 1 << 17) ppt *= 2;
    ppt = Math.min(ppt, nP);
  }
  return { mr, nr, mb, ppt, unroll: 4 };
}

export function genConvGemm(p: ConvGemmParams): KernelSource {
  const b = p.batch;
  const key = `convgemm:${p.M}x${p.K}x${p.P}:${p.lda},${p.ldb},${p.ldc}:B${b.dims}/${b.a}/${b.b}/${b.c}/${b.bias}:` +
    `t${p.mr},${p.nr},${p.mb},${p.ppt},${p.unroll}:${p.packedA ? 'P' : ''}:${p.bias ? 'b' : ''}:${actKey(p.act)}:${p.relaxed ? 'R' : ''}`;
  return { key, bytes: () => buildConvGemm(p) };
}

function buildConvGemm(p: ConvGemmParams): Uint8Array {
  const { M, P, ldc, mr, nr, mb, ppt } = p;
  const mod = new ModuleBuilder();
  const micros = new Map<string, FunctionBuilder>();
  const microFor = (rows: number, cols: number) => {
    const k = `${rows},${cols}`;
    let m = micros.get(k);
    if (!m) {
      m = mod.func(`m${micros.size}`, ['i32', 'i32', 'i32', 'i32']);
      emitGemmMicro(m, p, rows, cols);
      micros.set(k, m);
    }
    return m;
  };
  const f = mod.func('run', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32']);
  const [A, B, Cp, bias, t0, t1] = [0, 1, 2, 3, 4, 5].map((i) => f.param(i));
  const nP = Math.ceil(P / nr), fullP = Math.floor(P / nr), colTail = P % nr;
  const nRB = Math.ceil(M / mb), nG = Math.ceil(nP / ppt);
  const fullM = Math.floor(M / mr) * mr, rowTail = M % mr;
  const t = f.local('i32'), bi = f.local('i32'), rb = f.local('i32'), g = f.local('i32'), tmp = f.local('i32');
  const aB = f.local('i32'), bB = f.local('i32'), cB = f.local('i32'), zB = f.local('i32');
  const m = f.local('i32'), mEnd = f.local('i32'), pn = f.local('i32'), pEnd = f.local('i32'), pl = f.local('i32');

  const callMicro = (rows: number, cols: number) => {
    const mf = microFor(rows, cols);
    f.get(aB); f.get(m); f.i32((p.packedA ? p.K : p.lda) * 4); mul(f); add(f);
    f.get(bB); f.get(pn); f.i32(nr * 4); mul(f); add(f);
    f.get(cB); f.get(m); f.i32(ldc * 4); mul(f); add(f); f.get(pn); f.i32(nr * 4); mul(f); add(f);
    f.get(zB); f.get(m); f.i32(4); mul(f); add(f);
    call(f, mod.indexOf(mf));
  };
  const strips = (cols: number) => {
    f.for_(m, () => { f.get(rb); f.i32(mb); mul(f); }, () => f.get(mEnd), mr, () => callMicro(mr, cols));
    if (rowTail) {
      f.get(rb); f.i32(nRB - 1); f.op(OP.i32_eq);
      f.if_(() => { f.i32(fullM); f.set(m); callMicro(rowTail, cols); });
    }
  };
  const batchOff = (strides: number[]) => {
    f.i32(0);
    let inner = 1;
    for (let d = p.batch.dims.length - 1; d >= 0; d--) {
      const dim = p.batch.dims[d];
      if (strides[d] && dim > 1) {
        f.get(bi); if (inner > 1) { f.i32(inner); f.op(OP.i32_div_u); }
        f.i32(dim); f.op(OP.i32_rem_u); f.i32(strides[d] * 4); mul(f); add(f);
      }
      inner *= dim;
    }
  };
  const perBatch = nRB * nG;
  f.for_(t, () => f.get(t0), () => f.get(t1), 1, () => {
    f.get(t); f.i32(perBatch); f.op(OP.i32_div_u); f.set(bi);
    f.get(t); f.i32(perBatch); f.op(OP.i32_rem_u); f.tee(g); f.i32(nRB); f.op(OP.i32_rem_u); f.set(rb);
    f.get(g); f.i32(nRB); f.op(OP.i32_div_u); f.set(g);
    f.get(A); batchOff(p.batch.a); add(f); f.set(aB);
    f.get(B); batchOff(p.batch.b); add(f); f.set(bB);
    f.get(Cp); batchOff(p.batch.c); add(f); f.set(cB);
    f.get(bias); batchOff(p.batch.bias); add(f); f.set(zB);
    minConst(f, () => { f.get(rb); f.i32(mb); mul(f); f.i32(mb); add(f); }, fullM, tmp); f.set(mEnd);
    minConst(f, () => { f.get(g); f.i32(ppt); mul(f); f.i32(ppt); add(f); }, fullP, tmp); f.set(pEnd);
    f.for_(pl, () => { f.get(g); f.i32(ppt); mul(f); }, () => f.get(pEnd), 1, () => { f.get(pl); f.set(pn); strips(nr); });
    if (colTail) {
      f.get(g); f.i32(nG - 1); f.op(OP.i32_eq);
      f.if_(() => { f.i32(fullP); f.set(pn); strips(colTail); });
    }
  });
  return mod.build();
}

/** micro(pa, pb, pc, pbias): rows x cols outputs over the whole K. */
function emitGemmMicro(f: FunctionBuilder, p: ConvGemmParams, rows: number, cols: number): void {
  const { K, lda, ldb, ldc, relaxed } = p;
  const u = Math.max(1, p.unroll);
  const [pa, pb, pc, pz] = [0, 1, 2, 3].map((i) => f.param(i));
  const nv = Math.ceil(cols / 4);
  const lanes = (j: number) => Math.min(4, cols - 4 * j);
  const acc: Local[][] = [];
  for (let i = 0; i < rows; i++) { acc.push([]); for (let j = 0; j < nv; j++) acc[i].push(f.local('v128')); }
  const bv: Local[] = []; for (let j = 0; j < nv; j++) bv.push(f.local('v128'));
  const av = f.local('v128');
  const loadLanes = (ptr: Local, off: number, n: number) => {
    if (n === 4) { f.get(ptr); f.v128_load(off, 0); return; }
    f.f32x4_const(0);
    for (let l = 0; l < n; l++) { f.get(ptr); f.f32_load(off + l * 4); f.f32x4_replace_lane(l); }
  };
  for (let i = 0; i < rows; i++) {
    if (p.bias) { f.get(pz); f.v128_load32_splat(i * 4); } else f.f32x4_const(0);
    f.set(acc[i][0]);
    for (let j = 1; j < nv; j++) { f.get(acc[i][0]); f.set(acc[i][j]); }
  }
  const step = (kk: number) => {
    for (let j = 0; j < nv; j++) { loadLanes(pb, (kk * ldb + j * 4) * 4, lanes(j)); f.set(bv[j]); }
    for (let i = 0; i < rows; i++) {
      f.get(pa); f.v128_load32_splat((p.packedA ? kk * p.mr + i : i * lda + kk) * 4); f.set(av);
      for (let j = 0; j < nv; j++) {
        if (relaxed) { f.get(av); f.get(bv[j]); f.get(acc[i][j]); } else { f.get(acc[i][j]); f.get(av); f.get(bv[j]); }
        fma(f, relaxed); f.set(acc[i][j]);
      }
    }
  };
  const iters = Math.floor(K / u), rem = K - iters * u;
  if (iters >= 1) {
    const pe = f.local('i32');
    f.get(pb); f.i32(iters * u * ldb * 4); add(f); f.set(pe);
    f.loop(() => {
      for (let kk = 0; kk < u; kk++) step(kk);
      f.get(pa); f.i32(u * (p.packedA ? p.mr : 1) * 4); add(f); f.set(pa);
      f.get(pb); f.i32(u * ldb * 4); add(f); f.tee(pb);
      f.get(pe); f.op(OP.i32_ne); f.br_if(0);
    });
  }
  for (let kk = 0; kk < rem; kk++) step(kk);
  const tmp = needsTemps(p.act) ? new ActTemps(f) : undefined;
  for (let i = 0; i < rows; i++) for (let j = 0; j < nv; j++) {
    const v = acc[i][j];
    emitConvAct(f, p.act, v, tmp);
    const off = (i * ldc + j * 4) * 4, n = lanes(j);
    if (n === 4) { f.get(pc); f.get(v); f.v128_store(off, 0); }
    else for (let l = 0; l < n; l++) { f.get(pc); f.get(v); f.f32x4_extract_lane(l); f.f32_store(off + l * 4); }
  }
}

// --- im2col --------------------------------------------------------------------------------------

/** 2-D geometry (1-D convs and pools use H = 1). */
export interface Geom2 {
  iH: number; iW: number; kH: number; kW: number; oH: number; oW: number;
  sH: number; sW: number; pH: number; pW: number; dH: number; dW: number;
}

export const geomKey = (g: Geom2) => `${g.iH}x${g.iW}:k${g.kH}x${g.kW}:o${g.oH}x${g.oW}:s${g.sH},${g.sW}:p${g.pH},${g.pW}:d${g.dH},${g.dW}`;

/** Pushes lo = first o with 0 <= o*s + b (b a local), i.e. b >= 0 ? 0 : ceil(-b / s). */
function emitLo(f: FunctionBuilder, b: Local, s: number): void {
  f.i32(0); f.i32(0); f.get(b); f.op(OP.i32_sub); f.i32(s - 1); add(f); f.i32(s); f.op(OP.i32_div_s);
  f.get(b); f.i32(0); f.op(OP.i32_ge_s); f.select();
}

/** Pushes hi = min(o, 1 + floor((n - 1 - b) / s)), or 0 when n - 1 - b < 0. */
function emitHi(f: FunctionBuilder, b: Local, s: number, n: number, o: number, tmp: Local): void {
  // v = n - 1 - b
  f.i32(n - 1); f.get(b); f.op(OP.i32_sub); f.tee(tmp);
  f.i32(s); f.op(OP.i32_div_s); f.i32(1); add(f);
  f.i32(0); f.get(tmp); f.i32(0); f.op(OP.i32_ge_s); f.select();
  f.tee(tmp); f.i32(o); f.get(tmp); f.i32(o); f.op(OP.i32_lt_s); f.select();
}

/**
 * `run(X, col, t0, t1)`: unfolds C channels of X [C, iH, iW] into col [C*kH*kW, oH*oW] (zeros where the window
 * leaves the input). Tasks are chunks of `cpt` channels.
 */
export function genIm2col(C: number, g: Geom2, cpt: number): KernelSource {
  return { key: `im2col:${C}:${geomKey(g)}:${cpt}`, bytes: () => buildIm2col(C, g, cpt) };
}

export function im2colTasks(C: number, cpt: number): number { return Math.ceil(C / cpt); }

function buildIm2col(C: number, g: Geom2, cpt: number): Uint8Array {
  const { iH, iW, kH, kW, oH, oW, sH, sW, pH, pW, dH, dW } = g;
  const P = oH * oW;
  const mod = new ModuleBuilder();
  const f = mod.func('run', ['i32', 'i32', 'i32', 'i32']);
  const [X, COL, t0, t1] = [0, 1, 2, 3].map((i) => f.param(i));
  const c = f.local('i32'), cEnd = f.local('i32'), kh = f.local('i32'), kw = f.local('i32'), tmp = f.local('i32');
  const bH = f.local('i32'), bW = f.local('i32'), h0 = f.local('i32'), h1 = f.local('i32'), w0 = f.local('i32'), w1 = f.local('i32');
  const oh = f.local('i32'), ow = f.local('i32'), d = f.local('i32'), s = f.local('i32'), xc = f.local('i32');
  const zeroRun = (from: () => void, to: () => void) => {
    f.for_(ow, from, to, 1, () => { f.get(d); f.f32c(0); f.f32_store(); f.get(d); f.i32(4); add(f); f.set(d); });
  };
  f.get(t0); f.i32(cpt); mul(f); f.set(c);
  minConst(f, () => { f.get(t1); f.i32(cpt); mul(f); }, C, tmp); f.set(cEnd);
  // d walks col contiguously: rows (c, kh, kw) of P floats.
  f.get(COL); f.get(c); f.i32(kH * kW * P * 4); mul(f); add(f); f.set(d);
  f.block(() => {
    f.get(c); f.get(cEnd); f.op(OP.i32_ge_s); f.br_if(0);
    f.loop(() => {
      f.get(X); f.get(c); f.i32(iH * iW * 4); mul(f); add(f); f.set(xc);
      f.for_(kh, () => f.i32(0), () => f.i32(kH), 1, () => {
        f.get(kh); f.i32(dH); mul(f); f.i32(pH); f.op(OP.i32_sub); f.set(bH);
        emitLo(f, bH, sH); f.set(h0);
        emitHi(f, bH, sH, iH, oH, tmp); f.set(h1);
        // h0 = min(h0, h1)
        f.get(h0); f.get(h1); f.get(h0); f.get(h1); f.op(OP.i32_lt_s); f.select(); f.set(h0);
        f.for_(kw, () => f.i32(0), () => f.i32(kW), 1, () => {
          f.get(kw); f.i32(dW); mul(f); f.i32(pW); f.op(OP.i32_sub); f.set(bW);
          emitLo(f, bW, sW); f.set(w0);
          emitHi(f, bW, sW, iW, oW, tmp); f.set(w1);
          f.get(w0); f.get(w1); f.get(w0); f.get(w1); f.op(OP.i32_lt_s); f.select(); f.set(w0);
          zeroRun(() => f.i32(0), () => { f.get(h0); f.i32(oW); mul(f); });
          f.for_(oh, () => f.get(h0), () => f.get(h1), 1, () => {
            zeroRun(() => f.i32(0), () => f.get(w0));
            // s = xc + ((oh*sH + bH)*iW + w0*sW + bW)*4
            f.get(xc); f.get(oh); f.i32(sH); mul(f); f.get(bH); add(f); f.i32(iW); mul(f);
            f.get(w0); f.i32(sW); mul(f); add(f); f.get(bW); add(f); f.i32(4); mul(f); add(f); f.set(s);
            f.get(w0); f.set(ow);
            if (sW === 1) {
              f.block(() => f.loop(() => {
                f.get(ow); f.i32(4); add(f); f.get(w1); f.op(OP.i32_gt_s); f.br_if(1);
                f.get(d); f.get(s); f.v128_load(0, 0); f.v128_store(0, 0);
                f.get(d); f.i32(16); add(f); f.set(d); f.get(s); f.i32(16); add(f); f.set(s);
                f.get(ow); f.i32(4); add(f); f.set(ow); f.br(0);
              }));
            }
            f.block(() => f.loop(() => {
              f.get(ow); f.get(w1); f.op(OP.i32_ge_s); f.br_if(1);
              f.get(d); f.get(s); f.f32_load(); f.f32_store();
              f.get(d); f.i32(4); add(f); f.set(d); f.get(s); f.i32(sW * 4); add(f); f.set(s);
              f.get(ow); f.i32(1); add(f); f.set(ow); f.br(0);
            }));
            zeroRun(() => f.get(w1), () => f.i32(oW));
          });
          zeroRun(() => { f.get(h1); f.i32(oW); mul(f); }, () => f.i32(P));
        });
      });
      f.get(c); f.i32(1); add(f); f.tee(c); f.get(cEnd); f.op(OP.i32_lt_s); f.br_if(0);
    });
  });
  return mod.build();
}

// --- narrow conv: few output positions, vectors across output channels ---------------------------

/**
 * Conv whose output plane is tiny (P = oH*oW a handful, e.g. an STFT-like Conv1d or a conv on a few frames):
 * the GEMM's vectors along P would be mostly empty, so here a vector holds 4 output channels instead.
 * Weights are packed once (packConvNarrow) into tiles of `mt` channels, k-major, and stream through
 * exactly once; each input value is splatted and used for the whole tile. Taps that fall in the padding
 * are skipped at generation time, so no im2col and no bounds checks.
 */
export interface ConvNarrowParams {
  N: number; C: number; M: number; g: Geom2;
  /** Channels per tile (multiple of 4). */
  mt: number;
  /** Units (batch × tile) per task. */
  upt: number;
  bias: boolean; act: ConvActivation; relaxed: boolean;
}

/** Largest kernel (taps per channel) whose taps are unrolled with padding resolved at generation time. */
const NARROW_UNROLL = 16;

/** Whether the narrow kernel covers this geometry: unrolled taps, or a 1-row kernel whose taps are all in range. */
export function narrowSupported(g: Geom2): boolean {
  if (g.kH * g.kW <= NARROW_UNROLL) return true;
  if (g.kH !== 1) return false;
  for (let oh = 0; oh < g.oH; oh++) {
    const ih = oh * g.sH - g.pH;
    if (ih < 0 || ih >= g.iH) return false;
  }
  for (let ow = 0; ow < g.oW; ow++) {
    const lo = ow * g.sW - g.pW, hi = lo + (g.kW - 1) * g.dW;
    if (lo < 0 || hi >= g.iW) return false;
  }
  return true;
}

/** Channels per tile for P output positions: P*nv accumulators + P splats + 1 weight vector within 16 registers. */
export function narrowTile(P: number, M: number): number {
  const nv = Math.max(1, Math.min(8, Math.floor((15 - P) / P), Math.ceil(M / 4)));
  return nv * 4;
}

export const narrowUnits = (p: ConvNarrowParams) => p.N * Math.ceil(p.M / p.mt);
export const narrowTasks = (p: ConvNarrowParams) => Math.ceil(narrowUnits(p) / p.upt);

/** W [M][C*KK] → tiles of mt channels: element (tile, c*KK + kk, j) at (tile*R + r)*mt + j (zero past M). */
export function packConvNarrow(w: Float32Array, M: number, R: number, mt: number): Float32Array {
  const tiles = Math.ceil(M / mt);
  const out = new Float32Array(tiles * R * mt);
  for (let m = 0; m < M; m++) {
    const t = Math.floor(m / mt), j = m % mt;
    for (let r = 0; r < R; r++) out[(t * R + r) * mt + j] = w[m * R + r];
  }
  return out;
}

/** bias [M] → tiles*mt floats, zero past M. */
export function packBiasNarrow(b: Float32Array, M: number, mt: number): Float32Array {
  const out = new Float32Array(Math.ceil(M / mt) * mt);
  out.set(b.subarray(0, M));
  return out;
}

/** A kernel `run(X, Wpacked, Bpacked, Y, t0, t1)`. */
export function genConvNarrow(p: ConvNarrowParams): KernelSource {
  return {
    key: `convnarrow:${p.N},${p.C},${p.M}:${geomKey(p.g)}:t${p.mt},${p.upt}:${p.bias ? 'b' : ''}:${actKey(p.act)}:${p.relaxed ? 'R' : ''}`,
    bytes: () => buildConvNarrow(p),
  };
}

function buildConvNarrow(p: ConvNarrowParams): Uint8Array {
  const { N, C, M, g, mt, relaxed, act } = p;
  const { iH, iW, kH, kW, oH, oW, sH, sW, pH, pW, dH, dW } = g;
  const KK = kH * kW, R = C * KK, P = oH * oW, plane = iH * iW;
  const tiles = Math.ceil(M / mt), units = N * tiles;
  const mod = new ModuleBuilder();

  // tile(x, w, b, y, channels): one tile of `channels` valid output channels (x: batch row, w/b: the tile's packed weights/bias).
  const tileFn = (channels: number) => {
    const nv = Math.ceil(channels / 4);
    const f = mod.func(`tile${channels}`, ['i32', 'i32', 'i32', 'i32']);
    const [x, w, b, y] = [0, 1, 2, 3].map((i) => f.param(i));
    const wEnd = f.local('i32'), xk = f.local('i32'), wk = f.local('i32'), kEnd = f.local('i32');
    const acc: Local[][] = [];
    for (let q = 0; q < P; q++) { acc.push([]); for (let v = 0; v < nv; v++) acc[q].push(f.local('v128')); }
    const xs: Local[] = []; for (let q = 0; q < P; q++) xs.push(f.local('v128'));
    const wv = f.local('v128');
    const tmpA = needsTemps(act) ? new ActTemps(f) : undefined;
    for (let v = 0; v < nv; v++) {
      if (p.bias) { f.get(b); f.v128_load(v * 16, 0); } else f.f32x4_const(0);
      f.set(acc[0][v]);
      for (let q = 1; q < P; q++) { f.get(acc[0][v]); f.set(acc[q][v]); }
    }
    // One tap: xs[q] = x at byte offsets offs[q] from `base` (null: padding), then acc[q][v] += w[v] * xs[q].
    const tap = (base: Local, offs: (number | null)[], wBase: Local, wOff: number) => {
      const live = offs.map((o, q) => (o === null ? -1 : q)).filter((q) => q >= 0);
      if (live.length === 0) return;
      for (const q of live) { f.get(base); f.v128_load32_splat(offs[q]!); f.set(xs[q]); }
      for (let v = 0; v < nv; v++) {
        f.get(wBase); f.v128_load(wOff + v * 16, 0); f.set(wv);
        for (const q of live) {
          if (relaxed) { f.get(wv); f.get(xs[q]); f.get(acc[q][v]); } else { f.get(acc[q][v]); f.get(wv); f.get(xs[q]); }
          fma(f, relaxed); f.set(acc[q][v]);
        }
      }
    };
    f.get(w); f.i32(R * mt * 4); add(f); f.set(wEnd);
    f.get(x); f.set(xk);
    f.get(w); f.set(wk);
    f.block(() => f.loop(() => {
      if (KK <= NARROW_UNROLL) {
        for (let kh = 0; kh < kH; kh++) for (let kw = 0; kw < kW; kw++) {
          const offs: (number | null)[] = [];
          for (let oh = 0; oh < oH; oh++) for (let ow = 0; ow < oW; ow++) {
            const ih = oh * sH - pH + kh * dH, iw = ow * sW - pW + kw * dW;
            offs.push(ih >= 0 && ih < iH && iw >= 0 && iw < iW ? (ih * iW + iw) * 4 : null);
          }
          tap(xk, offs, wk, (kh * kW + kw) * mt * 4);
        }
        f.get(wk); f.i32(KK * mt * 4); add(f); f.set(wk);
        f.get(xk); f.i32(plane * 4); add(f); f.set(xk);
      } else {
        // kH = 1 and every tap in range (narrowSupported): a runtime loop over the taps of this channel.
        const offs: number[] = [];
        for (let oh = 0; oh < oH; oh++) for (let ow = 0; ow < oW; ow++) offs.push(((oh * sH - pH) * iW + ow * sW - pW) * 4);
        const xc = f.local('i32');
        f.get(xk); f.set(xc);
        f.get(wk); f.i32(KK * mt * 4); add(f); f.set(kEnd);
        f.loop(() => {
          tap(xk, offs, wk, 0);
          f.get(xk); f.i32(dW * 4); add(f); f.set(xk);
          f.get(wk); f.i32(mt * 4); add(f); f.tee(wk); f.get(kEnd); f.op(OP.i32_lt_u); f.br_if(0);
        });
        f.get(xc); f.i32(plane * 4); add(f); f.set(xk);
      }
      f.get(wk); f.get(wEnd); f.op(OP.i32_lt_u); f.br_if(0);
    }));
    // Activation, then out[m*P + q] for the valid channels.
    for (let q = 0; q < P; q++) for (let v = 0; v < nv; v++) {
      emitConvAct(f, act, acc[q][v], tmpA);
      const lanes = Math.min(4, channels - v * 4);
      if (P === 1 && lanes === 4) { f.get(y); f.get(acc[q][v]); f.v128_store(v * 16, 0); continue; }
      for (let l = 0; l < lanes; l++) { f.get(y); f.get(acc[q][v]); f.f32x4_extract_lane(l); f.f32_store(((v * 4 + l) * P + q) * 4); }
    }
    return f;
  };
  const full = tileFn(mt);
  const lastCh = M - (tiles - 1) * mt;
  const last = lastCh === mt ? full : tileFn(lastCh);

  const f = mod.func('run', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32']);
  const [X, W, B, Y, t0, t1] = [0, 1, 2, 3, 4, 5].map((i) => f.param(i));
  const u = f.local('i32'), uEnd = f.local('i32'), tmp = f.local('i32'), n = f.local('i32'), t = f.local('i32');
  f.get(t0); f.i32(p.upt); mul(f); f.set(u);
  minConst(f, () => { f.get(t1); f.i32(p.upt); mul(f); }, units, tmp); f.set(uEnd);
  f.block(() => {
    f.get(u); f.get(uEnd); f.op(OP.i32_ge_s); f.br_if(0);
    f.loop(() => {
      f.get(u); f.i32(tiles); f.op(OP.i32_div_u); f.set(n);
      f.get(u); f.i32(tiles); f.op(OP.i32_rem_u); f.set(t);
      const args = () => {
        f.get(X); f.get(n); f.i32(C * plane * 4); mul(f); add(f);
        f.get(W); f.get(t); f.i32(R * mt * 4); mul(f); add(f);
        f.get(B); f.get(t); f.i32(mt * 4); mul(f); add(f);
        f.get(Y); f.get(n); f.i32(M * P * 4); mul(f); add(f); f.get(t); f.i32(mt * P * 4); mul(f); add(f);
      };
      if (last === full) { args(); call(f, mod.indexOf(full)); }
      else {
        f.get(t); f.i32(tiles - 1); f.op(OP.i32_eq);
        f.if_(() => { args(); call(f, mod.indexOf(last)); }, () => { args(); call(f, mod.indexOf(full)); });
      }
      f.get(u); f.i32(1); add(f); f.tee(u); f.get(uEnd); f.op(OP.i32_lt_s); f.br_if(0);
    });
  });
  return mod.build();
}

// --- depthwise ----------------------------------------------------------------------------------

export interface DepthwiseParams {
  /** Planes N*C; channel = plane % C. */
  planes: number; C: number; g: Geom2; bias: boolean; act: ConvActivation; relaxed: boolean;
  /** Planes per task. */
  ppt: number;
  /** Run on a zero-padded copy of each plane in per-task scratch (small planes, where borders are a large share). */
  padded?: boolean;
}

/** Shuffle taking lanes 0 and 2 of each of two f32x4 (the even elements of 8 consecutive floats). */
const EVEN_LANES = [0, 2, 4, 6].flatMap((l) => [4 * l, 4 * l + 1, 4 * l + 2, 4 * l + 3]);

/**
 * Pushes 4 floats at ptr + off + l*sW*4 (l = 0..3): one load at stride 1, two loads and an even-lane shuffle at
 * stride 2 (reading one float past the last lane), lane loads otherwise.
 */
function emitStridedLoad(f: FunctionBuilder, ptr: Local, off: number, sW: number): void {
  if (sW === 1) { f.get(ptr); f.v128_load(off, 0); }
  else if (sW === 2) { f.get(ptr); f.v128_load(off, 0); f.get(ptr); f.v128_load(off + 16, 0); f.i8x16_shuffle(EVEN_LANES); }
  else {
    f.get(ptr); f.v128_load32_splat(off);
    for (let l = 1; l < 4; l++) { f.get(ptr); f.f32_load(off + l * sW * 4); f.f32x4_replace_lane(l); }
  }
}

/** Size of the zero-padded plane of the padded depthwise variant: rows, row length (floats), bytes per task slot. */
export function depthwisePadding(g: Geom2): { Hp: number; Wp: number; slotBytes: number } {
  const oWv = Math.ceil(g.oW / 4) * 4;
  const Wp = Math.max(g.pW + g.iW, (oWv - 1) * g.sW + (g.kW - 1) * g.dW + 1 + (g.sW === 2 ? 1 : 0)) + 1;
  const Hp = Math.max(g.pH + g.iH, (g.oH - 1) * g.sH + (g.kH - 1) * g.dH + 1);
  return { Hp, Wp, slotBytes: Math.ceil((Hp * Wp * 4) / 64) * 64 };
}

export function depthwiseTasks(p: DepthwiseParams): number { return Math.ceil(p.planes / p.ppt); }

export function genDepthwise(p: DepthwiseParams): KernelSource {
  return {
    key: `dw:${p.planes},${p.C}:${geomKey(p.g)}:${p.bias ? 'b' : ''}:${actKey(p.act)}:${p.relaxed ? 'R' : ''}:${p.ppt}:${p.padded ? 'P' : ''}`,
    bytes: () => (p.padded ? buildDepthwisePadded(p) : buildDepthwise(p)),
  };
}

/** The range [lo, hi) of outputs o whose whole window o*s - p + k*d (k < kSize) lies in [0, n - extra). */
function interior(n: number, k: number, s: number, pad: number, d: number, o: number, extra = 0): [number, number] {
  const lo = Math.min(o, Math.ceil(pad / s));
  const hi = Math.max(lo, Math.min(o, Math.floor((n - 1 - extra + pad - (k - 1) * d) / s) + 1));
  return [lo, hi];
}

function buildDepthwise(p: DepthwiseParams): Uint8Array {
  const { planes, C, g, relaxed, act } = p;
  const { iH, iW, kH, kW, oH, oW, sH, sW, pH, pW, dH, dW } = g;
  const KK = kH * kW;
  const mod = new ModuleBuilder();

  // px(xp, wp, yp, oh, ow, bias): one output with every tap bounds-checked (borders).
  const px = mod.func('px', ['i32', 'i32', 'i32', 'i32', 'i32', 'f32']);
  {
    const f = px;
    const [xp, wp, yp, oh, ow, bz] = [0, 1, 2, 3, 4, 5].map((i) => f.param(i));
    const ih = f.local('i32'), iw = f.local('i32'), acc = f.local('f32');
    f.get(bz); f.set(acc);
    for (let kh = 0; kh < kH; kh++) {
      f.get(oh); f.i32(sH); mul(f); f.i32(kh * dH - pH); add(f); f.tee(ih); f.i32(iH); f.op(OP.i32_lt_u);
      f.if_(() => {
        for (let kw = 0; kw < kW; kw++) {
          f.get(ow); f.i32(sW); mul(f); f.i32(kw * dW - pW); add(f); f.tee(iw); f.i32(iW); f.op(OP.i32_lt_u);
          f.if_(() => {
            f.get(acc);
            f.get(xp); f.get(ih); f.i32(iW); mul(f); f.get(iw); add(f); f.i32(4); mul(f); add(f); f.f32_load();
            f.get(wp); f.f32_load((kh * kW + kw) * 4);
            f.op(OP.f32_mul); f.op(OP.f32_add); f.set(acc);
          });
        }
      });
    }
    // activation on a scalar: through a vector
    const v = f.local('v128');
    f.get(acc); f.simd(SIMD.f32x4_splat); f.set(v);
    emitConvAct(f, act, v, needsTemps(act) ? new ActTemps(f) : undefined);
    f.get(yp); f.get(oh); f.i32(oW); mul(f); f.get(ow); add(f); f.i32(4); mul(f); add(f);
    f.get(v); f.f32x4_extract_lane(0); f.f32_store();
  }

  const f = mod.func('run', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32']);
  const [X, W, Bz, Y, t0, t1] = [0, 1, 2, 3, 5, 6].map((i) => f.param(i));
  const q = f.local('i32'), qEnd = f.local('i32'), tmp = f.local('i32');
  const xp = f.local('i32'), wp = f.local('i32'), yp = f.local('i32'), oh = f.local('i32'), ow = f.local('i32');
  const xr = f.local('i32'), yr = f.local('i32'), bzs = f.local('f32'), bzv = f.local('v128');
  const acc = f.local('v128');
  const wv: Local[] = []; for (let k = 0; k < KK; k++) wv.push(f.local('v128'));
  const tmpA = needsTemps(act) ? new ActTemps(f) : undefined;
  const [ohLo, ohHi] = interior(iH, kH, sH, pH, dH, oH);
  const extra = sW === 2 ? 1 : 0;
  const [owLo, owHiRaw] = interior(iW, kW, sW, pW, dW, oW, extra);
  const nVec = Math.floor((owHiRaw - owLo) / 4);
  const owVecEnd = owLo + 4 * nVec;
  const callPx = () => { f.get(xp); f.get(wp); f.get(yp); f.get(oh); f.get(ow); f.get(bzs); call(f, mod.indexOf(px)); };
  const pxRange = (from: number, to: number) => { if (to > from) f.for_(ow, () => f.i32(from), () => f.i32(to), 1, callPx); };
  const slowRows = (from: number, to: number) => {
    if (to > from) f.for_(oh, () => f.i32(from), () => f.i32(to), 1, () => pxRange(0, oW));
  };

  f.get(t0); f.i32(p.ppt); mul(f); f.set(q);
  minConst(f, () => { f.get(t1); f.i32(p.ppt); mul(f); }, planes, tmp); f.set(qEnd);
  f.block(() => {
    f.get(q); f.get(qEnd); f.op(OP.i32_ge_s); f.br_if(0);
    f.loop(() => {
      f.get(X); f.get(q); f.i32(iH * iW * 4); mul(f); add(f); f.set(xp);
      f.get(Y); f.get(q); f.i32(oH * oW * 4); mul(f); add(f); f.set(yp);
      f.get(W); f.get(q); f.i32(C); f.op(OP.i32_rem_u); f.tee(tmp); f.i32(KK * 4); mul(f); add(f); f.set(wp);
      if (p.bias) { f.get(Bz); f.get(tmp); f.i32(4); mul(f); add(f); f.f32_load(); } else f.f32c(0);
      f.tee(bzs); f.simd(SIMD.f32x4_splat); f.set(bzv);
      for (let k = 0; k < KK; k++) { f.get(wp); f.v128_load32_splat(k * 4); f.set(wv[k]); }
      slowRows(0, ohLo);
      if (ohHi > ohLo) {
        f.for_(oh, () => f.i32(ohLo), () => f.i32(ohHi), 1, () => {
          pxRange(0, owLo);
          if (nVec > 0) {
            // xr = xp + ((oh*sH - pH)*iW + owLo*sW - pW)*4; yr = yp + (oh*oW + owLo)*4
            f.get(xp); f.get(oh); f.i32(sH * iW * 4); mul(f); add(f); f.i32(((-pH) * iW + owLo * sW - pW) * 4); add(f); f.set(xr);
            f.get(yp); f.get(oh); f.i32(oW * 4); mul(f); add(f); f.i32(owLo * 4); add(f); f.set(yr);
            f.for_(ow, () => f.i32(0), () => f.i32(nVec), 1, () => {
              f.get(bzv); f.set(acc);
              for (let kh = 0; kh < kH; kh++) for (let kw = 0; kw < kW; kw++) {
                const off = (kh * dH * iW + kw * dW) * 4;
                if (relaxed) { /* a, b, c */ } else f.get(acc);
                emitStridedLoad(f, xr, off, sW);
                f.get(wv[kh * kW + kw]);
                if (relaxed) { f.get(acc); }
                fma(f, relaxed); f.set(acc);
              }
              emitConvAct(f, act, acc, tmpA);
              f.get(yr); f.get(acc); f.v128_store(0, 0);
              f.get(xr); f.i32(4 * sW * 4); add(f); f.set(xr);
              f.get(yr); f.i32(16); add(f); f.set(yr);
            });
          }
          pxRange(owVecEnd, oW);
        });
      }
      slowRows(ohHi, oH);
      f.get(q); f.i32(1); add(f); f.tee(q); f.get(qEnd); f.op(OP.i32_lt_s); f.br_if(0);
    });
  });
  return mod.build();
}

/** The depthwise kernel over a zero-padded copy of each plane: every output goes through the vector path. */
function buildDepthwisePadded(p: DepthwiseParams): Uint8Array {
  const { planes, C, g, relaxed, act } = p;
  const { iH, iW, kH, kW, oH, oW, sH, sW, pH, pW, dH, dW } = g;
  const { Hp, Wp, slotBytes } = depthwisePadding(g);
  const KK = kH * kW;
  const mod = new ModuleBuilder();
  const f = mod.func('run', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32']);
  const [X, W, Bz, Y, S, t0, t1] = [0, 1, 2, 3, 4, 5, 6].map((i) => f.param(i));
  const q = f.local('i32'), qEnd = f.local('i32'), tmp = f.local('i32'), slot = f.local('i32');
  const xp = f.local('i32'), wp = f.local('i32'), yr = f.local('i32'), oh = f.local('i32'), ow = f.local('i32');
  const xr = f.local('i32'), d = f.local('i32'), s = f.local('i32'), e = f.local('i32'), ih = f.local('i32');
  const bzv = f.local('v128'), acc = f.local('v128');
  const wv: Local[] = []; for (let k = 0; k < KK; k++) wv.push(f.local('v128'));
  const tmpA = needsTemps(act) ? new ActTemps(f) : undefined;
  const nFull = Math.floor(oW / 4), tail = oW % 4;
  // slot = S + t0*slotBytes, zeroed once: the plane copies below overwrite only the interior.
  f.get(S); f.get(t0); f.i32(slotBytes); mul(f); add(f); f.tee(slot); f.set(d);
  f.get(slot); f.i32(Math.floor((Hp * Wp) / 4) * 16); add(f); f.set(e);
  f.block(() => f.loop(() => {
    f.get(d); f.get(e); f.op(OP.i32_ge_u); f.br_if(1);
    f.get(d); f.f32x4_const(0); f.v128_store(0, 0); f.get(d); f.i32(16); add(f); f.set(d); f.br(0);
  }));
  for (let r = 0; r < (Hp * Wp) % 4; r++) { f.get(d); f.f32c(0); f.f32_store(r * 4); }
  f.get(t0); f.i32(p.ppt); mul(f); f.set(q);
  minConst(f, () => { f.get(t1); f.i32(p.ppt); mul(f); }, planes, tmp); f.set(qEnd);
  // Pushes the input vector of output lanes 0..3 at byte offset `off` from xr.
  const loadIn = (off: number) => emitStridedLoad(f, xr, off, sW);
  // One output vector at xr (padded input) → yr; `lanes` < 4 stores only those lanes.
  const vec = (lanes: number) => {
    f.get(bzv); f.set(acc);
    for (let kh = 0; kh < kH; kh++) for (let kw = 0; kw < kW; kw++) {
      const off = (kh * dH * Wp + kw * dW) * 4;
      if (!relaxed) f.get(acc);
      loadIn(off);
      f.get(wv[kh * kW + kw]);
      if (relaxed) f.get(acc);
      fma(f, relaxed); f.set(acc);
    }
    emitConvAct(f, act, acc, tmpA);
    if (lanes === 4) { f.get(yr); f.get(acc); f.v128_store(0, 0); }
    else for (let l = 0; l < lanes; l++) { f.get(yr); f.get(acc); f.f32x4_extract_lane(l); f.f32_store(l * 4); }
  };
  // Two output vectors, rows oh and oh+1 (at yr and yr + oW*4): independent accumulator chains, and each input vector
  // the two windows share (sH = 1) is loaded once.
  const acc1 = f.local('v128'), xin = f.local('v128');
  const vec2 = (lanes: number) => {
    f.get(bzv); f.set(acc); f.get(bzv); f.set(acc1);
    const uses = new Map<number, [Local, Local][]>();
    for (let r = 0; r < 2; r++) for (let kh = 0; kh < kH; kh++) for (let kw = 0; kw < kW; kw++) {
      const off = ((r * sH + kh * dH) * Wp + kw * dW) * 4;
      const u = uses.get(off) ?? [];
      u.push([r ? acc1 : acc, wv[kh * kW + kw]]);
      uses.set(off, u);
    }
    for (const off of [...uses.keys()].sort((a, b) => a - b)) {
      const u = uses.get(off)!;
      if (u.length > 1) { loadIn(off); f.set(xin); }
      for (const [a, w] of u) {
        if (!relaxed) f.get(a);
        if (u.length > 1) f.get(xin); else loadIn(off);
        f.get(w);
        if (relaxed) f.get(a);
        fma(f, relaxed); f.set(a);
      }
    }
    for (const [a, o] of [[acc, 0], [acc1, oW * 4]] as [Local, number][]) {
      emitConvAct(f, act, a, tmpA);
      if (lanes === 4) { f.get(yr); f.get(a); f.v128_store(o, 0); }
      else for (let l = 0; l < lanes; l++) { f.get(yr); f.get(a); f.f32x4_extract_lane(l); f.f32_store(o + l * 4); }
    }
  };
  f.block(() => {
    f.get(q); f.get(qEnd); f.op(OP.i32_ge_s); f.br_if(0);
    f.loop(() => {
      f.get(X); f.get(q); f.i32(iH * iW * 4); mul(f); add(f); f.set(xp);
      f.get(W); f.get(q); f.i32(C); f.op(OP.i32_rem_u); f.tee(tmp); f.i32(KK * 4); mul(f); add(f); f.set(wp);
      if (p.bias) { f.get(Bz); f.get(tmp); f.i32(4); mul(f); add(f); f.v128_load32_splat(0); } else f.f32x4_const(0);
      f.set(bzv);
      for (let k = 0; k < KK; k++) { f.get(wp); f.v128_load32_splat(k * 4); f.set(wv[k]); }
      // copy the plane into the slot interior
      f.for_(ih, () => f.i32(0), () => f.i32(iH), 1, () => {
        f.get(slot); f.get(ih); f.i32(Wp * 4); mul(f); add(f); f.i32((pH * Wp + pW) * 4); add(f); f.set(d);
        f.get(xp); f.get(ih); f.i32(iW * 4); mul(f); add(f); f.set(s);
        for (let c = 0; c + 4 <= iW; c += 4) { f.get(d); f.get(s); f.v128_load(c * 4, 0); f.v128_store(c * 4, 0); }
        for (let c = Math.floor(iW / 4) * 4; c < iW; c++) { f.get(d); f.get(s); f.f32_load(c * 4); f.f32_store(c * 4); }
      });
      f.get(Y); f.get(q); f.i32(oH * oW * 4); mul(f); add(f); f.set(yr);
      const pairs = Math.floor(oH / 2);
      if (pairs > 0) {
        f.for_(oh, () => f.i32(0), () => f.i32(pairs), 1, () => {
          f.get(slot); f.get(oh); f.i32(2 * sH * Wp * 4); mul(f); add(f); f.set(xr);
          if (nFull > 0) {
            f.for_(ow, () => f.i32(0), () => f.i32(nFull), 1, () => {
              vec2(4);
              f.get(xr); f.i32(4 * sW * 4); add(f); f.set(xr);
              f.get(yr); f.i32(16); add(f); f.set(yr);
            });
          }
          if (tail) { vec2(tail); f.get(yr); f.i32(tail * 4); add(f); f.set(yr); }
          f.get(yr); f.i32(oW * 4); add(f); f.set(yr);
        });
      }
      if (oH % 2) {
        f.get(slot); f.i32((oH - 1) * sH * Wp * 4); add(f); f.set(xr);
        if (nFull > 0) {
          f.for_(ow, () => f.i32(0), () => f.i32(nFull), 1, () => {
            vec(4);
            f.get(xr); f.i32(4 * sW * 4); add(f); f.set(xr);
            f.get(yr); f.i32(16); add(f); f.set(yr);
          });
        }
        if (tail) vec(tail);
      }
      f.get(q); f.i32(1); add(f); f.tee(q); f.get(qEnd); f.op(OP.i32_lt_s); f.br_if(0);
    });
  });
  return mod.build();
}

// --- pooling ------------------------------------------------------------------------------------

export interface PoolParams {
  kind: 'max' | 'avg';
  planes: number; g: Geom2;
  /** Average pool: count the padded region (pads at the end of H and W given here) instead of the valid taps. */
  countPad: boolean; padEH: number; padEW: number;
  ppt: number;
}


export function genPool(p: PoolParams): KernelSource {
  return { key: `pool:${p.kind}:${p.planes}:${geomKey(p.g)}:${p.countPad ? `cp${p.padEH},${p.padEW}` : ''}:${p.ppt}`, bytes: () => buildPool(p) };
}

function buildPool(p: PoolParams): Uint8Array {
  const { iH, iW, kH, kW, oH, oW, sH, sW, pH, pW, dH, dW } = p.g;
  const mod = new ModuleBuilder();
  const f = mod.func('run', ['i32', 'i32', 'i32', 'i32']);
  const [X, Y, t0, t1] = [0, 1, 2, 3].map((i) => f.param(i));
  const q = f.local('i32'), qEnd = f.local('i32'), tmp = f.local('i32'), xp = f.local('i32'), yp = f.local('i32');
  const oh = f.local('i32'), ow = f.local('i32'), kh = f.local('i32'), kw = f.local('i32'), ih = f.local('i32'), iw = f.local('i32');
  const cnt = f.local('i32'), cntH = f.local('i32'), cntW = f.local('i32'), any = f.local('i32'), hOk = f.local('i32');
  const acc = f.local('f32'), v = f.local('f32'), xr = f.local('i32'), vacc = f.local('v128'), vv = f.local('v128');
  const max = p.kind === 'max';
  f.get(t0); f.i32(p.ppt); mul(f); f.set(q);
  minConst(f, () => { f.get(t1); f.i32(p.ppt); mul(f); }, p.planes, tmp); f.set(qEnd);
  // in padded range: -pad <= i < n + padE
  const inPadded = (i: Local, pad: number, n: number) => { f.get(i); f.i32(pad); add(f); f.i32(n + pad); f.op(OP.i32_lt_u); };
  f.block(() => {
    f.get(q); f.get(qEnd); f.op(OP.i32_ge_s); f.br_if(0);
    f.loop(() => {
      f.get(X); f.get(q); f.i32(iH * iW * 4); mul(f); add(f); f.set(xp);
      f.get(Y); f.get(q); f.i32(oH * oW * 4); mul(f); add(f); f.set(yp);
      /** The output at (oh, ow), any window: taps checked against the input (and the padding count). */
      const scalarOut = () => {
          f.f32c(max ? -Infinity : 0); f.set(acc); f.i32(0); f.set(cnt); f.i32(0); f.set(any);
          f.i32(0); f.set(cntH); f.i32(0); f.set(cntW);
          f.for_(kh, () => f.i32(0), () => f.i32(kH), 1, () => {
            f.get(oh); f.i32(sH); mul(f); f.get(kh); f.i32(dH); mul(f); add(f); f.i32(pH); f.op(OP.i32_sub); f.tee(ih);
            f.i32(iH); f.op(OP.i32_lt_u); f.set(hOk);
            if (p.countPad) { f.get(cntH); inPadded(ih, pH, iH + p.padEH); add(f); f.set(cntH); }
            f.for_(kw, () => f.i32(0), () => f.i32(kW), 1, () => {
              f.get(ow); f.i32(sW); mul(f); f.get(kw); f.i32(dW); mul(f); add(f); f.i32(pW); f.op(OP.i32_sub); f.tee(iw);
              f.i32(iW); f.op(OP.i32_lt_u); f.get(hOk); f.op(OP.i32_and);
              f.if_(() => {
                f.get(xp); f.get(ih); f.i32(iW); mul(f); f.get(iw); add(f); f.i32(4); mul(f); add(f); f.f32_load(); f.set(v);
                if (max) {
                  // first valid tap, or a greater one (NaN in the first tap stays, as the reference does)
                  f.get(v); f.get(acc); f.get(any); f.op(OP.i32_eqz); f.get(v); f.get(acc); f.op(OP.f32_gt); f.op(OP.i32_or); f.select(); f.set(acc);
                  f.i32(1); f.set(any);
                } else {
                  f.get(acc); f.get(v); f.op(OP.f32_add); f.set(acc);
                  f.get(cnt); f.i32(1); add(f); f.set(cnt);
                }
              });
            });
          });
          if (!max && p.countPad) {
            f.for_(kw, () => f.i32(0), () => f.i32(kW), 1, () => {
              f.get(ow); f.i32(sW); mul(f); f.get(kw); f.i32(dW); mul(f); add(f); f.i32(pW); f.op(OP.i32_sub); f.set(iw);
              f.get(cntW); inPadded(iw, pW, iW + p.padEW); add(f); f.set(cntW);
            });
            f.get(cntH); f.get(cntW); mul(f); f.set(cnt);
          }
          f.get(yp); f.get(oh); f.i32(oW); mul(f); f.get(ow); add(f); f.i32(4); mul(f); add(f);
          if (max) f.get(acc);
          else { f.get(acc); f.get(cnt); f.op(OP.f32_convert_i32_s); f.op(OP.f32_div); }
          f.f32_store();
      };
      /**
       * Outputs ow … ow+3 of an interior row, all of whose taps lie inside the input: SIMD over the 4 outputs, taps
       * unrolled. Max uses pmax (acc < v ? v : acc): the first tap's NaN stays and later NaNs are skipped, as above.
       */
      const vectorOut = () => {
        f.get(xp); f.get(oh); f.i32(sH * iW * 4); mul(f); add(f); f.get(ow); f.i32(sW * 4); mul(f); add(f); f.i32(pH * iW * 4 + pW * 4); f.op(OP.i32_sub); f.set(xr);
        let first = true;
        for (let y = 0; y < kH; y++) {
          for (let x = 0; x < kW; x++) {
            const off = (y * dH * iW + x * dW) * 4;
            emitStridedLoad(f, xr, off, sW);
            if (first) { f.set(vacc); first = false; continue; }
            f.set(vv);
            if (max) { f.get(vacc); f.get(vv); f.simd(SIMD.f32x4_pmax); } else { f.get(vacc); f.get(vv); f.simd(SIMD.f32x4_add); }
            f.set(vacc);
          }
        }
        f.get(yp); f.get(oh); f.i32(oW); mul(f); f.get(ow); add(f); f.i32(4); mul(f); add(f);
        f.get(vacc); if (!max) { f.f32x4_const(kH * kW); f.simd(SIMD.f32x4_div); }
        f.v128_store(0, 0);
      };
      // Interior: every tap inside the input (the average then divides by kH*kW either way).
      const lo = (pad: number, st: number) => Math.ceil(pad / st);
      const hi = (n: number, pad: number, k: number, d: number, st: number, o: number) => Math.min(o, Math.floor((n - 1 + pad - (k - 1) * d) / st) + 1);
      const ohLo = Math.min(oH, lo(pH, sH)), ohHi = Math.max(ohLo, hi(iH, pH, kH, dH, sH, oH));
      const owLo = Math.min(oW, lo(pW, sW)), owHi = Math.max(owLo, hi(iW, pW, kW, dW, sW, oW));
      // SIMD needs 4 interior outputs; a stride-2 pair of vectors reads 4 floats past the last tap, inside the row.
      const vecEnd = owLo + Math.floor((owHi - owLo) / 4) * 4;
      const vecOk = kH * kW <= 64 && vecEnd > owLo && (sW !== 2 || (vecEnd - 1) * sW - pW + (kW - 1) * dW + 4 < iW);
      f.for_(oh, () => f.i32(0), () => f.i32(oH), 1, () => {
        const scalarRange = (from: () => void, to: () => void) => f.for_(ow, from, to, 1, scalarOut);
        if (!vecOk) { scalarRange(() => f.i32(0), () => f.i32(oW)); return; }
        f.get(oh); f.i32(ohLo); f.op(OP.i32_ge_s); f.get(oh); f.i32(ohHi); f.op(OP.i32_lt_s); f.op(OP.i32_and);
        f.if_(() => {
          scalarRange(() => f.i32(0), () => f.i32(owLo));
          f.for_(ow, () => f.i32(owLo), () => f.i32(vecEnd), 4, vectorOut);
          scalarRange(() => f.i32(vecEnd), () => f.i32(oW));
        }, () => scalarRange(() => f.i32(0), () => f.i32(oW)));
      });
      f.get(q); f.i32(1); add(f); f.tee(q); f.get(qEnd); f.op(OP.i32_lt_s); f.br_if(0);
    });
  });
  return mod.build();
}

/** `run(X, Y, t0, t1)`: Y[q] = mean or max over plane q of `size` floats; tasks are chunks of `ppt` planes. */
export function genGlobalPool(kind: 'max' | 'avg', planes: number, size: number, ppt: number): KernelSource {
  return { key: `gpool:${kind}:${planes}:${size}:${ppt}`, bytes: () => buildGlobalPool(kind, planes, size, ppt) };
}

function buildGlobalPool(kind: 'max' | 'avg', planes: number, size: number, ppt: number): Uint8Array {
  const mod = new ModuleBuilder();
  const f = mod.func('run', ['i32', 'i32', 'i32', 'i32']);
  const [X, Y, t0, t1] = [0, 1, 2, 3].map((i) => f.param(i));
  const q = f.local('i32'), qEnd = f.local('i32'), tmp = f.local('i32'), xp = f.local('i32'), xe = f.local('i32');
  const a0 = f.local('v128'), a1 = f.local('v128'), s = f.local('f32');
  const max = kind === 'max';
  const vop = max ? SIMD.f32x4_max : SIMD.f32x4_add;
  const nv8 = Math.floor(size / 8), rest = size - nv8 * 8;
  f.get(t0); f.i32(ppt); mul(f); f.set(q);
  minConst(f, () => { f.get(t1); f.i32(ppt); mul(f); }, planes, tmp); f.set(qEnd);
  f.block(() => {
    f.get(q); f.get(qEnd); f.op(OP.i32_ge_s); f.br_if(0);
    f.loop(() => {
      f.get(X); f.get(q); f.i32(size * 4); mul(f); add(f); f.set(xp);
      f.f32x4_const(max ? -Infinity : 0); f.tee(a0); f.set(a1);
      if (nv8 > 0) {
        f.get(xp); f.i32(nv8 * 32); add(f); f.set(xe);
        f.loop(() => {
          f.get(a0); f.get(xp); f.v128_load(0, 0); f.simd(vop); f.set(a0);
          f.get(a1); f.get(xp); f.v128_load(16, 0); f.simd(vop); f.set(a1);
          f.get(xp); f.i32(32); add(f); f.tee(xp); f.get(xe); f.op(OP.i32_ne); f.br_if(0);
        });
      }
      f.get(a0); f.get(a1); f.simd(vop); f.set(a0);
      f.get(a0); f.f32x4_extract_lane(0);
      for (let l = 1; l < 4; l++) { f.get(a0); f.f32x4_extract_lane(l); f.op(max ? OP.f32_max : OP.f32_add); }
      f.set(s);
      for (let r = 0; r < rest; r++) { f.get(s); f.get(xp); f.f32_load(r * 4); f.op(max ? OP.f32_max : OP.f32_add); f.set(s); }
      f.get(Y); f.get(q); f.i32(4); mul(f); add(f);
      f.get(s); if (!max) { f.f32c(size); f.op(OP.f32_div); }
      f.f32_store();
      f.get(q); f.i32(1); add(f); f.tee(q); f.get(qEnd); f.op(OP.i32_lt_s); f.br_if(0);
    });
  });
  return mod.build();
}

// --- col2im (ConvTranspose) ------------------------------------------------------------------------

/** Geometry of a 2-D transposed convolution (1-D as H = 1): input H x W, kernel, output oH x oW. */
export interface Col2imParams {
  /** Output planes (N * M). */
  planes: number;
  H: number; W: number; kH: number; kW: number; oH: number; oW: number;
  sH: number; sW: number; pH: number; pW: number; dH: number; dW: number;
  /** Output channels per batch item (the bias index is plane % M). */
  M: number;
  bias: boolean;
  /** Output rows per task. */
  rpt: number;
}

export function col2imTasks(p: Col2imParams): number {
  return Math.ceil((p.planes * p.oH) / p.rpt);
}

/**
 * `run(COL, BIAS, Y, t0, t1)`: Y[plane][oy][ox] = bias + Σ over kernel taps of COL[plane*kk + ky*kW + kx][iy*W + ix]
 * with oy = iy*sH - pH + ky*dH, ox = ix*sW - pW + kx*dW: the scatter of a transposed convolution, done as a gather
 * by output row so that tasks never write the same element.
 */
export function genCol2im(p: Col2imParams): KernelSource {
  return { key: `col2im:${JSON.stringify(p)}`, bytes: () => buildCol2im(p) };
}

function buildCol2im(p: Col2imParams): Uint8Array {
  const mod = new ModuleBuilder();
  const f = mod.func('run', ['i32', 'i32', 'i32', 'i32', 'i32']);
  const [COL, BIAS, Y, t0, t1] = [0, 1, 2, 3, 4].map((i) => f.param(i));
  const r = f.local('i32'), rEnd = f.local('i32'), tmp = f.local('i32'), plane = f.local('i32'), oy = f.local('i32');
  const yrow = f.local('i32'), yp = f.local('i32'), ye = f.local('i32'), cp = f.local('i32'), t = f.local('i32');
  const bv = f.local('f32'), bvec = f.local('v128');
  const HW = p.H * p.W, kk = p.kH * p.kW;
  const total = p.planes * p.oH;
  f.get(t0); f.i32(p.rpt); mul(f); f.set(r);
  minConst(f, () => { f.get(t1); f.i32(p.rpt); mul(f); }, total, tmp); f.set(rEnd);
  f.block(() => {
    f.get(r); f.get(rEnd); f.op(OP.i32_ge_s); f.br_if(0);
    f.loop(() => {
      f.get(r); f.i32(p.oH); f.op(OP.i32_div_u); f.set(plane);
      f.get(r); f.i32(p.oH); f.op(OP.i32_rem_u); f.set(oy);
      f.get(Y); f.get(r); f.i32(p.oW * 4); mul(f); add(f); f.set(yrow);
      // The row starts as the bias (or zero).
      if (p.bias) { f.get(BIAS); f.get(plane); f.i32(p.M); f.op(OP.i32_rem_u); f.i32(4); mul(f); add(f); f.f32_load(); }
      else f.f32c(0);
      f.tee(bv);
      f.simd(SIMD.f32x4_splat); f.set(bvec);
      const nv = Math.floor(p.oW / 4);
      f.get(yrow); f.set(yp);
      if (nv > 0) {
        f.get(yrow); f.i32(nv * 16); add(f); f.set(ye);
        f.loop(() => {
          f.get(yp); f.get(bvec); f.v128_store(0, 0);
          f.get(yp); f.i32(16); add(f); f.tee(yp); f.get(ye); f.op(OP.i32_ne); f.br_if(0);
        });
      }
      for (let j = 0; j < p.oW - nv * 4; j++) { f.get(yp); f.get(bv); f.f32_store(j * 4); }
      for (let ky = 0; ky < p.kH; ky++) {
        // iy = (oy + pH - ky*dH) / sH when that divides and lands inside the input.
        f.get(oy); f.i32(p.pH - ky * p.dH); add(f); f.set(t);
        f.block(() => {
          f.get(t); f.i32(0); f.op(OP.i32_lt_s); f.br_if(0);
          if (p.sH > 1) { f.get(t); f.i32(p.sH); f.op(OP.i32_rem_u); f.br_if(0); f.get(t); f.i32(p.sH); f.op(OP.i32_div_u); f.set(t); }
          f.get(t); f.i32(p.H); f.op(OP.i32_ge_s); f.br_if(0);
          for (let kx = 0; kx < p.kW; kx++) {
            // ix ranges over ox = ix*sW - pW + kx*dW in [0, oW).
            const base = kx * p.dW - p.pW;
            const ix0 = Math.max(0, base >= 0 ? 0 : Math.ceil(-base / p.sW));
            const ix1 = Math.min(p.W, Math.floor((p.oW - 1 - base) / p.sW) + 1);
            if (ix1 <= ix0) continue;
            // cp = COL + ((plane*kk + ky*kW + kx)*HW + iy*W + ix0)*4; yp = yrow + (ix0*sW + base)*4
            f.get(COL); f.get(plane); f.i32(kk * HW * 4); mul(f); add(f); f.get(t); f.i32(p.W * 4); mul(f); add(f);
            f.i32(((ky * p.kW + kx) * HW + ix0) * 4); add(f); f.set(cp);
            f.get(yrow); f.i32((ix0 * p.sW + base) * 4); add(f); f.set(yp);
            const n = ix1 - ix0;
            if (p.sW === 1 && n >= 4) {
              const nv4 = Math.floor(n / 4);
              f.get(cp); f.i32(nv4 * 16); add(f); f.set(ye);
              f.loop(() => {
                f.get(yp); f.get(yp); f.v128_load(0, 0); f.get(cp); f.v128_load(0, 0); f.simd(SIMD.f32x4_add); f.v128_store(0, 0);
                f.get(yp); f.i32(16); add(f); f.set(yp);
                f.get(cp); f.i32(16); add(f); f.tee(cp); f.get(ye); f.op(OP.i32_ne); f.br_if(0);
              });
              for (let j = 0; j < n - nv4 * 4; j++) { f.get(yp); f.get(yp); f.f32_load(j * 4); f.get(cp); f.f32_load(j * 4); f.op(OP.f32_add); f.f32_store(j * 4); }
            } else {
              f.get(cp); f.i32(n * 4); add(f); f.set(ye);
              f.loop(() => {
                f.get(yp); f.get(yp); f.f32_load(); f.get(cp); f.f32_load(); f.op(OP.f32_add); f.f32_store();
                f.get(yp); f.i32(p.sW * 4); add(f); f.set(yp);
                f.get(cp); f.i32(4); add(f); f.tee(cp); f.get(ye); f.op(OP.i32_ne); f.br_if(0);
              });
            }
          }
        });
      }
      f.get(r); f.i32(1); add(f); f.tee(r); f.get(rEnd); f.op(OP.i32_lt_s); f.br_if(0);
    });
  });
  return mod.build();
}

// --- im2col straight into GEMM B panels -------------------------------------------------------------

/**
 * The unfolded input COL [C*kH*kW, oH*oW] of X [C, iH, iW], written directly in the packed-B layout of
 * kernels/gemm.ts (panels of nr output positions, each R = C*kH*kW rows of nr floats; zeros outside the input and past
 * P). Where a panel's nr positions lie in one output row and, for a tap, inside the input, a row of the panel is nr
 * contiguous floats of X (stride 1): vector copies.
 */
/**
 * Adds `unfold(X, PK, j0, j1)` to `mod` (returns its index): the packed unfolded input above, panels j0 ≤ j < j1 of the packed unfolded input, panel j
 * at PK + j*R*nr*4 (PK may be offset so that a range of panels lands in a small buffer: the address arithmetic wraps).
 */
export function emitIm2colPacked(mod: ModuleBuilder, C: number, g: Geom2, nr: number): number {
  const { iH, iW, kH, kW, oH, oW, sH, sW, pH, pW, dH, dW } = g;
  const P = oH * oW, KK = kH * kW, R = C * KK, inPlane = iH * iW;
  const f = mod.func('unfold', ['i32', 'i32', 'i32', 'i32']);
  const [X, PK, j0, j1] = [0, 1, 2, 3].map((i) => f.param(i));
  const j = f.local('i32'), jEnd = f.local('i32'), p0 = f.local('i32');
  const oy0 = f.local('i32'), ox0 = f.local('i32'), d = f.local('i32'), s = f.local('i32'), de = f.local('i32');
  const iy = f.local('i32'), ix = f.local('i32'), fast = f.local('i32');
  const oyL = Array.from({ length: nr }, () => f.local('i32')), oxL = Array.from({ length: nr }, () => f.local('i32'));
  const offL = Array.from({ length: nr }, () => f.local('i32'));
  const nv = nr / 4;
  f.get(j0); f.set(j); f.get(j1); f.set(jEnd);
  f.block(() => {
    f.get(j); f.get(jEnd); f.op(OP.i32_ge_s); f.br_if(0);
    f.loop(() => {
      f.get(j); f.i32(nr); mul(f); f.tee(p0);
      f.i32(oW); f.op(OP.i32_div_u); f.set(oy0);
      f.get(p0); f.i32(oW); f.op(OP.i32_rem_u); f.set(ox0);
      // Lane l is output position p0 + l: (oy, ox) by stepping along the row; positions past P get oy = oH (invalid).
      for (let l = 0; l < nr; l++) {
        if (l === 0) { f.get(oy0); f.set(oyL[0]); f.get(ox0); f.set(oxL[0]); continue; }
        f.get(oxL[l - 1]); f.i32(1); add(f); f.set(oxL[l]); f.get(oyL[l - 1]); f.set(oyL[l]);
        f.get(oxL[l]); f.i32(oW); f.op(OP.i32_ge_s);
        f.if_(() => { f.i32(0); f.set(oxL[l]); f.get(oyL[l]); f.i32(1); add(f); f.set(oyL[l]); });
      }
      // One row of the panel: all nr positions in one output row and not past P.
      f.get(ox0); f.i32(oW - nr); f.op(OP.i32_le_s); f.get(p0); f.i32(P - nr); f.op(OP.i32_le_s); f.op(OP.i32_and); f.set(fast);
      for (let ky = 0; ky < kH; ky++) {
        for (let kx = 0; kx < kW; kx++) {
          const tap = ky * kW + kx;
          // d = PK + (j*R + tap)*nr*4: row `tap` of channel 0 in panel j; rows of channel c are KK*nr floats apart.
          f.get(PK); f.get(j); f.i32(R * nr * 4); mul(f); add(f); f.i32(tap * nr * 4); add(f); f.set(d);
          f.get(d); f.i32(R * nr * 4); add(f); f.set(de);
          const general = () => {
            for (let l = 0; l < nr; l++) {
              // off_l = byte offset in a channel plane, or -1 outside the input.
              f.get(oyL[l]); f.i32(sH); mul(f); f.i32(ky * dH - pH); add(f); f.set(iy);
              f.get(oxL[l]); f.i32(sW); mul(f); f.i32(kx * dW - pW); add(f); f.set(ix);
              f.get(iy); f.i32(iW); mul(f); f.get(ix); add(f); f.i32(4); mul(f);
              f.i32(-1);
              f.get(iy); f.i32(iH); f.op(OP.i32_lt_u); f.get(ix); f.i32(iW); f.op(OP.i32_lt_u); f.op(OP.i32_and);
              f.get(oyL[l]); f.i32(oH); f.op(OP.i32_lt_u); f.op(OP.i32_and);
              f.select(); f.set(offL[l]);
            }
            f.get(X); f.set(s);
            f.loop(() => {
              for (let l = 0; l < nr; l++) {
                f.get(d);
                f.get(s); f.get(offL[l]); add(f); f.f32_load(); f.f32c(0);
                // The load address is in bounds either way (X + off or X - 1 + ...); select zero when off is -1.
                f.get(offL[l]); f.i32(0); f.op(OP.i32_ge_s); f.select();
                f.f32_store(l * 4);
              }
              f.get(s); f.i32(inPlane * 4); add(f); f.set(s);
              f.get(d); f.i32(KK * nr * 4); add(f); f.tee(d); f.get(de); f.op(OP.i32_ne); f.br_if(0);
            });
          };
          if (sW === 1 || sW === 2) {
            // Fast: the row is inside the input for this tap: iy in range and ix0 .. ix0+(nr-1)*sW in range (stride 2
            // reads one float past the last tap and keeps the even ones).
            const span = sW === 1 ? nr : 2 * nr;
            f.get(oy0); f.i32(sH); mul(f); f.i32(ky * dH - pH); add(f); f.set(iy);
            f.get(ox0); f.i32(sW); mul(f); f.i32(kx * dW - pW); add(f); f.set(ix);
            f.get(fast);
            f.get(iy); f.i32(iH); f.op(OP.i32_lt_u); f.op(OP.i32_and);
            f.get(ix); f.i32(0); f.op(OP.i32_ge_s); f.op(OP.i32_and);
            f.get(ix); f.i32(iW - span); f.op(OP.i32_le_s); f.op(OP.i32_and);
            f.if_(() => {
              f.get(X); f.get(iy); f.i32(iW); mul(f); f.get(ix); add(f); f.i32(4); mul(f); add(f); f.set(s);
              f.loop(() => {
                for (let v = 0; v < nv; v++) {
                  f.get(d);
                  emitStridedLoad(f, s, v * 16 * sW, sW);
                  f.v128_store(v * 16, 0);
                }
                f.get(s); f.i32(inPlane * 4); add(f); f.set(s);
                f.get(d); f.i32(KK * nr * 4); add(f); f.tee(d); f.get(de); f.op(OP.i32_ne); f.br_if(0);
              });
            }, general);
          } else general();
        }
      }
      f.get(j); f.i32(1); add(f); f.tee(j); f.get(jEnd); f.op(OP.i32_lt_s); f.br_if(0);
    });
  });
  return mod.indexOf(f);
}
