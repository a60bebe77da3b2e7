// f32 LSTM and GRU code generator: per (direction, batch group) task, each time step's gates x·Wᵀ + h·Rᵀ + b with SIMD
// dots, then the cell.
import { type Local, ModuleBuilder, OP, SIMD } from '../../../codegen/wasm/builder.js';
import type { KernelSource } from '../kernel.js';
import { emitDots4, emitLoadLanes, emitPrepRow, emitStoreLanes } from './attention.js';
import { ActTemps, emitActivation } from './gemm.js';

export interface LstmParams {
  /** 'gru': ONNX GRU with linear_before_reset = 1 (gates z, r, h; only Y and Y_h; no C0, peepholes or input_forget). */
  kind?: 'lstm' | 'gru';
  T: number;
  B: number;
  I: number;
  H: number;
  dirs: 1 | 2;
  /** 'reverse' runs direction 0 backwards; bidirectional runs direction 1 backwards. */
  reverse: boolean;
  layout: 0 | 1;
  hasBias: boolean;
  hasH0: boolean;
  hasC0: boolean;
  hasP: boolean;
  /** Clip bound of the gate pre-activations (Infinity: none). */
  clip: number;
  inputForget: boolean;
  /** Batch rows per task. */
  rowsPerTask: number;
  /**
   * X·Wᵀ for all steps is precomputed (a GEMM before the launch): the X argument then points at XW [dirs][rows of X]
   * [gates*H] and a step reads its input projections instead of computing them. Requires H % 4 == 0.
   */
  xproj?: boolean;
  relaxed: boolean;
}

const pad4 = (n: number) => Math.ceil(n / 4) * 4;

export function lstmTasks(p: LstmParams): number {
  return p.dirs * Math.ceil(p.B / p.rowsPerTask);
}

/** Scratch floats per task: summed bias, gates, h in dot layout, h, c, x rows in dot layout. */
function scratchLayout(p: LstmParams) {
  const HP = pad4(p.H), IP = pad4(p.I), bg = p.rowsPerTask;
  const bias = 0, gates = bias + 4 * HP, hprep = gates + bg * 4 * HP, hplain = hprep + bg * HP, cst = hplain + bg * HP, xprep = cst + bg * HP;
  const total = Math.ceil((xprep + bg * IP) * 4 / 64) * 64;
  return { HP, IP, bias: bias * 4, gates: gates * 4, hprep: hprep * 4, hplain: hplain * 4, cst: cst * 4, xprep: xprep * 4, bytes: total };
}

export function lstmScratchPerTask(p: LstmParams): number {
  return scratchLayout(p).bytes;
}

/** A kernel `run(X, W, R, Bias, H0, C0, P, Y, Yh, Yc, scratch, t0, t1)`; absent inputs are 0, outputs must all exist. */
export function genLstm(p: LstmParams): KernelSource {
  const key = `${p.kind ?? 'lstm'}:${p.T}x${p.B}x${p.I}x${p.H}:d${p.dirs}${p.reverse ? 'r' : ''}:l${p.layout}:` +
    `${+p.hasBias}${+p.hasH0}${+p.hasC0}${+p.hasP}:c${p.clip}:${p.inputForget ? 'if' : ''}:g${p.rowsPerTask}:${p.relaxed ? 'R' : ''}${p.xproj ? ':xp' : ''}`;
  return { key, bytes: () => buildLstm(p) };
}

function buildLstm(p: LstmParams): Uint8Array {
  const { T, B, I, H, dirs, layout, relaxed } = p;
  const L = scratchLayout(p);
  const { HP, IP } = L;
  const bg = p.rowsPerTask, nBG = Math.ceil(B / bg), tailRows = B - (nBG - 1) * bg;
  const mod = new ModuleBuilder();
  const f = mod.func('run', new Array(13).fill('i32'));
  const [X, W, R, Bi, H0, C0, Pp, Y, Yh, Yc, S, t0, t1] = [...Array(13).keys()].map((i) => f.param(i));
  const add = () => f.op(OP.i32_add), mul = () => f.op(OP.i32_mul);
  const t = f.local('i32'), d = f.local('i32'), g = f.local('i32'), b0 = f.local('i32'), rev = f.local('i32');
  const sp = f.local('i32'), step = f.local('i32'), tt = f.local('i32'), gate = f.local('i32'), j = f.local('i32');
  const xb = f.local('i32'), xa = f.local('i32'), yb = f.local('i32'), wk = f.local('i32'), rk = f.local('i32');
  const stb = f.local('i32'), gp = f.local('i32'), wd = f.local('i32'), rd = f.local('i32'), pd = f.local('i32'), bd = f.local('i32');
  const acc = [0, 1].map(() => [0, 1, 2, 3].map(() => f.local('v128')));
  const av = [f.local('v128'), f.local('v128')], kv = f.local('v128'), tmp = f.local('v128');
  const sx = [f.local('v128'), f.local('v128')], sh = [f.local('v128'), f.local('v128')];
  const vi = f.local('v128'), vo = f.local('v128'), vf = f.local('v128'), vc = f.local('v128'), cOld = f.local('v128'), cNew = f.local('v128');
  const temps = new ActTemps(f);
  const gru = p.kind === 'gru';
  const G4 = (gru ? 3 : 4) * H;
  /**
   * The 4 gate slots of the scratch: per slot, the gate rows of W and of R it dots with (null: none) and the bias
   * vectors (offsets in the direction's bias, in units of H) it adds. GRU keeps x·Whᵀ and h·Rhᵀ apart (r scales the
   * latter before the sum).
   */
  const slots: { w: number | null; r: number | null; b: number[] }[] = gru
    ? [{ w: 0, r: 0, b: [0, 3] }, { w: 1, r: 1, b: [1, 4] }, { w: 2, r: null, b: [2] }, { w: null, r: 2, b: [5] }]
    : [0, 1, 2, 3].map((q) => ({ w: q, r: q, b: [q, 4 + q] }));
  // Element strides of consecutive batch rows.
  const xRow = layout === 0 ? I : T * I;
  const yRow = layout === 0 ? H : T * dirs * H;
  const stRow = layout === 0 ? H : dirs * H;
  // Offset (elements) of X[t, b0] / Y[t, d, b0] / state[d, b0] from runtime t, d, b0.
  const xOff = () => { if (layout === 0) { f.get(tt); f.i32(B); mul(); f.get(b0); add(); f.i32(I * 4); mul(); } else { f.get(b0); f.i32(T); mul(); f.get(tt); add(); f.i32(I * 4); mul(); } };
  const yOff = () => {
    if (layout === 0) { f.get(tt); f.i32(dirs); mul(); f.get(d); add(); f.i32(B); mul(); f.get(b0); add(); f.i32(H * 4); mul(); }
    else { f.get(b0); f.i32(T); mul(); f.get(tt); add(); f.i32(dirs); mul(); f.get(d); add(); f.i32(H * 4); mul(); }
  };
  const stOff = () => { if (layout === 0) { f.get(d); f.i32(B); mul(); f.get(b0); add(); } else { f.get(b0); f.i32(dirs); mul(); f.get(d); add(); } f.i32(H * 4); mul(); };
  const xDirect = I % 4 === 0;
  const hDirect = H % 4 === 0;
  const fullH = Math.floor(H / 4) * 4;
  const cb = f.local('i32'), tp = f.local('i32'), tp2 = f.local('i32');
  /** dst = base + c*4 (cOff pushes c*4). */
  const at = (base: Local, cOff: () => void, dst: Local) => { f.get(base); cOff(); add(); f.set(dst); };
  /** The hidden units 4 at a time: full vectors in a runtime loop, then the ragged one (n lanes valid). */
  const overH = (body: (cOff: () => void, n: number) => void) => {
    if (fullH > 0) f.for_(cb, () => f.i32(0), () => f.i32(fullH * 4), 16, () => body(() => f.get(cb), 4));
    if (H % 4) body(() => f.i32(fullH * 4), H % 4);
  };

  const clip = (v: Local) => {
    if (!Number.isFinite(p.clip)) return;
    f.get(v); f.f32x4_const(-p.clip); f.simd(SIMD.f32x4_max); f.f32x4_const(p.clip); f.simd(SIMD.f32x4_min); f.set(v);
  };

  const body = (rows: number) => {
    // Summed bias per gate (pad lanes 0), initial state.
    if (p.hasBias) {
      for (let q = 0; q < 4; q++) {
        overH((cOff, n) => {
          at(bd, cOff, tp);
          slots[q].b.forEach((o, k) => { emitLoadLanes(f, tp, o * H * 4, n, 4); if (k) f.simd(SIMD.f32x4_add); });
          f.set(vc);
          at(sp, cOff, tp); f.get(tp); f.get(vc); f.v128_store(L.bias + q * HP * 4, 0);
        });
      }
    }
    stOff(); f.set(stb);
    const init = (has: boolean, src: Local, dst: number, r: number) => overH((cOff, n) => {
      if (has) { f.get(src); f.get(stb); add(); cOff(); add(); f.set(tp); emitLoadLanes(f, tp, r * stRow * 4, n, 4); } else f.f32x4_const(0);
      f.set(vc);
      at(sp, cOff, tp); f.get(tp); f.get(vc); f.v128_store(dst + r * HP * 4, 0);
    });
    for (let r = 0; r < rows; r++) {
      init(p.hasH0, H0, hDirect ? L.hprep : L.hplain, r);
      if (!gru) init(p.hasC0, C0, L.cst, r);
    }
    const prepH = () => {
      if (hDirect) return;
      f.get(sp); f.i32(L.hplain); add(); f.set(gp);
      f.get(sp); f.i32(L.hprep); add(); f.set(wk);
      for (let r = 0; r < rows; r++) emitPrepRow(f, gp, r * HP * 4, wk, r * HP * 4, H);
    };
    prepH();
    f.for_(step, () => f.i32(0), () => f.i32(T), 1, () => {
      // tt = rev ? T-1-step : step
      f.i32(T - 1); f.get(step); f.op(OP.i32_sub); f.get(step); f.get(rev); f.select(); f.set(tt);
      if (p.xproj) {
        // xb = XW of direction d at the row of (tt, b0).
        f.get(X); f.get(d); f.i32(T * B * G4 * 4); mul(); add();
        if (layout === 0) { f.get(tt); f.i32(B); mul(); f.get(b0); add(); } else { f.get(b0); f.i32(T); mul(); f.get(tt); add(); }
        f.i32(G4 * 4); mul(); add(); f.set(xb);
        f.get(xb); f.set(xa);
      } else {
      f.get(X); xOff(); add(); f.set(xb);
      if (xDirect) { f.get(xb); f.set(xa); }
      else {
        f.get(sp); f.i32(L.xprep); add(); f.set(xa);
        for (let r = 0; r < rows; r++) emitPrepRow(f, xb, r * xRow * 4, xa, r * IP * 4, I);
      }
      }
      const aRowX = xDirect ? xRow * 4 : IP * 4;
      f.get(sp); f.i32(L.hprep); add(); f.set(gp);
      // gates[r][gate][j..j+3] = x·W[rows]ᵀ + h·R[rows]ᵀ + bias, 4 gate rows at a time.
      const block = (valid: number, q: number) => {
        const keyOffW = [0, 1, 2, 3].map((k) => Math.min(k, valid - 1) * I * 4);
        const keyOffR = [0, 1, 2, 3].map((k) => Math.min(k, valid - 1) * H * 4);
        const { w: useW, r: useR } = slots[q];
        for (let r0 = 0; r0 < rows; r0 += 2) {
          const nr = Math.min(2, rows - r0);
          if (useW !== null && p.xproj) {
            // The row's projections: XW[row][useW*H + j .. + 4].
            const rowBytes = (layout === 0 ? 1 : T) * G4 * 4;
            for (let i = 0; i < nr; i++) { f.get(xa); f.get(j); f.i32(4); mul(); add(); f.v128_load((r0 + i) * rowBytes + useW * H * 4, 0); f.set(sx[i]); }
          } else if (useW !== null) emitDots4(f, { rows: nr, a: xa, aOff: r0 * aRowX, aRowBytes: aRowX, kp: wk, keyOff: keyOffW, dBytes: 4, D: I, acc, av, kv, tmp, out: sx, relaxed });
          if (useR !== null) emitDots4(f, { rows: nr, a: gp, aOff: r0 * HP * 4, aRowBytes: HP * 4, kp: rk, keyOff: keyOffR, dBytes: 4, D: H, acc, av, kv, tmp, out: sh, relaxed });
          for (let i = 0; i < nr; i++) {
            // address: sp + gates + (r*4*HP + q*HP + j)*4
            f.get(sp); f.get(j); f.i32(4); mul(); add();
            if (useW !== null && useR !== null) { f.get(sx[i]); f.get(sh[i]); f.simd(SIMD.f32x4_add); } else f.get(useW !== null ? sx[i] : sh[i]);
            if (p.hasBias) {
              f.get(sp); f.get(j); f.i32(4); mul(); add(); f.v128_load(L.bias + q * HP * 4, 0);
              f.simd(SIMD.f32x4_add);
            }
            f.v128_store(L.gates + (r0 + i) * 4 * HP * 4 + q * HP * 4, 0);
          }
        }
      };
      for (let q = 0; q < 4; q++) {
        const { w: gw, r: gr } = slots[q];
        if (gw !== null) { f.get(wd); f.i32(gw * H * I * 4); add(); f.set(wk); }
        if (gr !== null) { f.get(rd); f.i32(gr * H * H * 4); add(); f.set(rk); }
        if (fullH > 0) {
          f.for_(j, () => f.i32(0), () => f.i32(fullH), 4, () => {
            block(4, q);
            if (gw !== null) { f.get(wk); f.i32(4 * I * 4); add(); f.set(wk); }
            if (gr !== null) { f.get(rk); f.i32(4 * H * 4); add(); f.set(rk); }
          });
        }
        if (H % 4) { f.i32(fullH); f.set(j); block(H % 4, q); }
      }
      // The cell, 4 hidden units at a time (ONNX gate order i, o, f, c; peepholes Pi, Po, Pf).
      f.get(Y); yOff(); add(); f.set(yb);
      for (let r = 0; r < rows; r++) {
        const gOff = L.gates + r * 4 * HP * 4;
        overH((cOff, n) => {
          at(sp, cOff, tp);
          const ld = (q: number, v: Local) => { f.get(tp); f.v128_load(gOff + q * HP * 4, 0); f.set(v); };
          if (gru) {
            // z = σ(vi), r = σ(vo), h~ = tanh(vf + r ⊙ vc), h' = h~ + z ⊙ (h - h~).
            ld(0, vi); ld(1, vo); ld(2, vf); ld(3, vc);
            clip(vi); emitActivation(f, 'sigmoid', vi, temps);
            clip(vo); emitActivation(f, 'sigmoid', vo, temps);
            f.get(vf); f.get(vo); f.get(vc); f.simd(SIMD.f32x4_mul); f.simd(SIMD.f32x4_add); f.set(vc);
            clip(vc); emitActivation(f, 'tanh', vc, temps);
            f.get(tp); f.v128_load((hDirect ? L.hprep : L.hplain) + r * HP * 4, 0); f.set(cOld);
            f.get(vc); f.get(vi); f.get(cOld); f.get(vc); f.simd(SIMD.f32x4_sub); f.simd(SIMD.f32x4_mul); f.simd(SIMD.f32x4_add); f.set(vc);
            f.get(tp); f.get(vc); f.v128_store((hDirect ? L.hprep : L.hplain) + r * HP * 4, 0);
            at(yb, cOff, tp2); emitStoreLanes(f, tp2, r * yRow * 4, n, vc);
            return;
          }
          ld(0, vi); ld(1, vo); ld(2, vf); ld(3, vc);
          f.get(tp); f.v128_load(L.cst + r * HP * 4, 0); f.set(cOld);
          if (p.hasP) at(pd, cOff, tp2);
          const peep = (v: Local, q: number, cell: Local) => {
            if (!p.hasP) return;
            f.get(v); emitLoadLanes(f, tp2, q * H * 4, n, 4); f.get(cell); f.simd(SIMD.f32x4_mul); f.simd(SIMD.f32x4_add); f.set(v);
          };
          peep(vi, 0, cOld); peep(vf, 2, cOld);
          clip(vi); emitActivation(f, 'sigmoid', vi, temps);
          if (p.inputForget) { f.f32x4_const(1); f.get(vi); f.simd(SIMD.f32x4_sub); f.set(vf); }
          else { clip(vf); emitActivation(f, 'sigmoid', vf, temps); }
          clip(vc); emitActivation(f, 'tanh', vc, temps);
          f.get(vf); f.get(cOld); f.simd(SIMD.f32x4_mul); f.get(vi); f.get(vc); f.simd(SIMD.f32x4_mul); f.simd(SIMD.f32x4_add); f.set(cNew);
          peep(vo, 1, cNew);
          clip(vo); emitActivation(f, 'sigmoid', vo, temps);
          f.get(tp); f.get(cNew); f.v128_store(L.cst + r * HP * 4, 0);
          f.get(cNew); f.set(vc); emitActivation(f, 'tanh', vc, temps);
          f.get(vc); f.get(vo); f.simd(SIMD.f32x4_mul); f.set(vc);
          f.get(tp); f.get(vc); f.v128_store((hDirect ? L.hprep : L.hplain) + r * HP * 4, 0);
          at(yb, cOff, tp2); emitStoreLanes(f, tp2, r * yRow * 4, n, vc);
        });
      }
      prepH();
    });
    // Final state.
    for (const [dst, src] of [[Yh, hDirect ? L.hprep : L.hplain], ...(gru ? [] : [[Yc, L.cst]])] as [Local, number][]) {
      f.get(dst); f.get(stb); add(); f.set(gp);
      for (let r = 0; r < rows; r++) {
        overH((cOff, n) => {
          at(sp, cOff, tp); f.get(tp); f.v128_load(src + r * HP * 4, 0); f.set(vc);
          at(gp, cOff, tp2); emitStoreLanes(f, tp2, r * stRow * 4, n, vc);
        });
      }
    }
  };

  const perTask = L.bytes;
  f.for_(t, () => f.get(t0), () => f.get(t1), 1, () => {
    f.get(S); f.get(t); f.i32(perTask); mul(); add(); f.set(sp);
    f.get(t); f.i32(nBG); f.op(OP.i32_div_u); f.set(d);
    f.get(t); f.i32(nBG); f.op(OP.i32_rem_u); f.tee(g); f.i32(bg); mul(); f.set(b0);
    if (dirs === 2) { f.get(d); f.set(rev); } else { f.i32(p.reverse ? 1 : 0); f.set(rev); }
    f.get(W); f.get(d); f.i32(G4 * I * 4); mul(); add(); f.set(wd);
    f.get(R); f.get(d); f.i32(G4 * H * 4); mul(); add(); f.set(rd);
    f.get(Bi); f.get(d); f.i32(2 * G4 * 4); mul(); add(); f.set(bd);
    f.get(Pp); f.get(d); f.i32(3 * H * 4); mul(); add(); f.set(pd);
    if (tailRows !== bg) {
      f.get(g); f.i32(nBG - 1); f.op(OP.i32_eq);
      f.if_(() => body(tailRows), () => body(bg));
    } else body(bg);
  });
  return mod.build();
}
