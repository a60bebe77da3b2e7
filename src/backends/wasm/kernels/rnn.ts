// f32 LSTM, GRU and RNN code generator: per (direction, batch group) task, each time step's gates x·Wᵀ + h·Rᵀ + b with
// SIMD dots (or the GEMM micro-kernel), then the cell.
import { call, type Local, ModuleBuilder, OP, SIMD } from '../../../codegen/wasm/builder.js';
import type { KernelSource } from '../kernel.js';
import { emitDots4, emitLoadLanes, emitPrepRow, emitStoreLanes } from './attention.js';
import { ActTemps, emitActivation, emitMicro, packBHost, packedBSize } from './gemm.js';

export interface LstmParams {
  /**
   * 'gru': ONNX GRU (gates z, r, h; only Y and Y_h; no C0, peepholes or input_forget); 'rnn': ONNX RNN with tanh (one
   * gate). Default 'lstm'.
   */
  kind?: 'lstm' | 'gru' | 'rnn';
  /** GRU: h·Rhᵀ before r scales it (1, PyTorch's and Keras's form) or after (0, the ONNX default: r ⊙ h first). */
  linearBeforeReset?: boolean;
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
  /**
   * Threads sharing one recurrence (a unit: direction × batch group). Above 1, each time step's hidden units split
   * into this many slices, one task each: a task claims its slice of a step with compare-exchange, then waits for the
   * step's other slices, taking any still unclaimed after a short spin, so a thread alone runs them all and late
   * threads never stall it. 1 (default): a unit is one task and never synchronises. Above 1 requires xproj.
   */
  chunks?: number;
  /**
   * R comes as GEMM B panels per direction (rnnPackedR), and each step's h·Rᵀ for the task's rows runs on the GEMM
   * micro-kernel, which also adds the input projections and bias. Requires xproj, H % 8 == 0 and unsliced tasks.
   */
  packedR?: boolean;
  relaxed: boolean;
}

/** Panel width of a packed R. */
const RNR = 8;

/** Rᵀ of every direction as GEMM B panels (K = H, N = gates*H, nr 8), the layout the packedR kernel reads. */
export function rnnPackedR(r: Float32Array, p: LstmParams): Float32Array {
  const N = gatesOf(p) * p.H, size = packedBSize(p.H, N, RNR);
  const out = new Float32Array(p.dirs * size);
  for (let d = 0; d < p.dirs; d++) packBHost(r, d * N * p.H, p.H, N, 1, p.H, RNR, out, d * size);
  return out;
}

const pad4 = (n: number) => Math.ceil(n / 4) * 4;

/** Gate blocks of W and R: LSTM 4, GRU 3, RNN 1. */
export const gatesOf = (p: LstmParams): number => (p.kind === 'gru' ? 3 : p.kind === 'rnn' ? 1 : 4);
/** GRU with r applied to h before its product with Rh (needs r of every unit first: no slices, no packed R). */
const resetFirst = (p: LstmParams) => p.kind === 'gru' && p.linearBeforeReset === false;

const chunksOfUnit = (p: LstmParams) => Math.max(1, p.chunks ?? 1);
const unitsOf = (p: LstmParams) => p.dirs * Math.ceil(p.B / p.rowsPerTask);

export function lstmTasks(p: LstmParams): number {
  return unitsOf(p) * chunksOfUnit(p);
}

/**
 * Scratch of a unit: summed bias, gates, h in dot layout (two buffers when slices share it: a step reads one and
 * writes the other), h, c, x rows in dot layout. Units with slices also have a control block (a done counter and one
 * claim word per slice, each on its own cache line), all units' blocks first, zeroed before each launch.
 */
function scratchLayout(p: LstmParams) {
  const HP = pad4(p.H), IP = pad4(p.I), bg = p.rowsPerTask, chunks = chunksOfUnit(p);
  const bias = 0, gates = bias + 4 * HP, hprep = gates + bg * 4 * HP, hplain = hprep + (chunks > 1 ? 2 : 1) * bg * HP;
  const cst = hplain + bg * HP, xprep = cst + bg * HP, rh = xprep + bg * IP, rhprep = rh + bg * HP;
  const unit = Math.ceil((rhprep + bg * HP) * 4 / 64) * 64;
  const ctrlPerUnit = chunks > 1 ? 64 * (1 + chunks) : 0;
  const ctrl = unitsOf(p) * ctrlPerUnit;
  return {
    HP, IP, bias: bias * 4, gates: gates * 4, hprep: hprep * 4, hBuf: bg * HP * 4, hplain: hplain * 4, cst: cst * 4,
    xprep: xprep * 4, rh: rh * 4, rhprep: rhprep * 4, unit, ctrlPerUnit, ctrl, bytes: ctrl + unitsOf(p) * unit,
  };
}

/** Scratch bytes of a launch; its first `ctrlBytes` must be zero when the kernel starts. */
export function lstmScratch(p: LstmParams): { bytes: number; ctrlBytes: number } {
  const L = scratchLayout(p);
  return { bytes: L.bytes, ctrlBytes: L.ctrl };
}

/** Spins between attempts to take a waited-for slice that no thread has claimed yet. */
const STEAL_SPINS = 256;
/** Spins after which a wait is a bug (a thread died holding a slice): trap instead of hanging. */
const MAX_SPINS = 1 << 29;

/**
 * A kernel `run(X, W, R, Bias, H0, C0, P, Y, Yh, Yc, scratch, t0, t1)`; absent inputs are 0, outputs must all exist.
 * Sliced kernels (chunks > 1) expect [t0, t1) to be all the tasks a thread runs at once (wholeRange).
 */
export function genLstm(p: LstmParams): KernelSource {
  const key = `${p.kind ?? 'lstm'}:${p.T}x${p.B}x${p.I}x${p.H}:d${p.dirs}${p.reverse ? 'r' : ''}:l${p.layout}:` +
    `${+p.hasBias}${+p.hasH0}${+p.hasC0}${+p.hasP}:c${p.clip}:${p.inputForget ? 'if' : ''}:g${p.rowsPerTask}:` +
    `${p.relaxed ? 'R' : ''}${p.xproj ? ':xp' : ''}:k${chunksOfUnit(p)}${p.packedR ? ':pr' : ''}${resetFirst(p) ? ':r0' : ''}`;
  return { key, bytes: () => buildLstm(p), wholeRange: chunksOfUnit(p) > 1 };
}

function buildLstm(p: LstmParams): Uint8Array {
  const { T, B, I, H, dirs, layout, relaxed } = p;
  const L = scratchLayout(p);
  const { HP, IP } = L;
  const chunks = chunksOfUnit(p), coop = chunks > 1;
  if (coop && (!p.xproj || H % 4 !== 0)) throw new Error('sliced LSTM/GRU needs input projections and H % 4 == 0');
  if (p.packedR && (coop || !p.xproj || H % 8 !== 0)) throw new Error('packed-R LSTM/GRU needs input projections, H % 8 == 0 and no slices');
  if (resetFirst(p) && (coop || p.packedR)) throw new Error('GRU with linear_before_reset = 0 runs unsliced on SIMD dots');
  // Hidden units per slice (a multiple of 4).
  const HC = pad4(Math.ceil(H / chunks));
  const bg = p.rowsPerTask, nBG = Math.ceil(B / bg), tailRows = B - (nBG - 1) * bg;
  const mod = new ModuleBuilder();
  const f = mod.func('run', new Array(13).fill('i32'));
  const [X, W, R, Bi, H0, C0, Pp, Y, Yh, Yc, S, t0, t1] = [...Array(13).keys()].map((i) => f.param(i));
  const add = () => f.op(OP.i32_add), mul = () => f.op(OP.i32_mul);
  const t = f.local('i32'), u = f.local('i32'), d = f.local('i32'), g = f.local('i32'), b0 = f.local('i32'), rev = f.local('i32');
  const sp = f.local('i32'), ctl = f.local('i32'), step = f.local('i32'), tt = f.local('i32'), j = f.local('i32');
  const xb = f.local('i32'), xa = f.local('i32'), yb = f.local('i32'), wk = f.local('i32'), rk = f.local('i32');
  const stb = f.local('i32'), gp = f.local('i32'), wd = f.local('i32'), rd = f.local('i32'), pd = f.local('i32'), bd = f.local('i32');
  const c = f.local('i32'), c0 = f.local('i32'), c1 = f.local('i32'), ci = f.local('i32'), spins = f.local('i32');
  const ja = f.local('i32'), jb = f.local('i32'), ho = f.local('i32'), hn = f.local('i32'), rhp = f.local('i32');
  const acc = [0, 1].map(() => [0, 1, 2, 3].map(() => f.local('v128')));
  const av = [f.local('v128'), f.local('v128')], kv = f.local('v128'), tmp = f.local('v128');
  const sx = [f.local('v128'), f.local('v128')], sh = [f.local('v128'), f.local('v128')];
  const vi = f.local('v128'), vo = f.local('v128'), vf = f.local('v128'), vc = f.local('v128'), cOld = f.local('v128'), cNew = f.local('v128');
  const temps = new ActTemps(f);
  const gru = p.kind === 'gru', rnn = p.kind === 'rnn', r0First = resetFirst(p);
  const G4 = gatesOf(p) * H;
  /** Floats between the projections of consecutive batch rows of XW. */
  const xwRow = (layout === 0 ? 1 : T) * G4;
  const micros = new Map<string, number>();
  /** micro(h rows, R panel, gates, bias, XW): rows x 8 gate columns of h·Rᵀ (+ bias, + XW when withRes). */
  const microFor = (rows: number, withRes: boolean): number => {
    const k = `${rows}:${withRes}`;
    let idx = micros.get(k);
    if (idx === undefined) {
      const mf = mod.func(`m${micros.size}`, ['i32', 'i32', 'i32', 'i32', 'i32']);
      emitMicro(mf, {
        rows, cols: RNR, klen: H, phase: 'only', nr: RNR, unroll: 2, barrier: true, sAm: pad4(H), sAk: 1, ldc: 4 * pad4(H), relaxed,
        ep: { bias: p.hasBias, ...(withRes ? { residual: true, residualStrideM: xwRow, residualStrideN: 1 as const } : {}) },
      });
      idx = mod.indexOf(mf);
      micros.set(k, idx);
    }
    return idx;
  };
  /**
   * The 4 gate slots of the scratch: per slot, the gate rows of W and of R it dots with (null: none) and the bias
   * vectors (offsets in the direction's bias, in units of H) it adds. GRU keeps x·Whᵀ and h·Rhᵀ apart (r scales the
   * latter before the sum).
   */
  const slots: { w: number | null; r: number | null; b: number[] }[] = gru
    ? [{ w: 0, r: 0, b: [0, 3] }, { w: 1, r: 1, b: [1, 4] }, { w: null, r: 2, b: [5] }, { w: 2, r: null, b: [2] }]
    : rnn ? [{ w: 0, r: 0, b: [0, 1] }] : [0, 1, 2, 3].map((q) => ({ w: q, r: q, b: [q, 4 + q] }));
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
  /**
   * The slice's hidden units [ja, jb) 4 at a time: full vectors in a runtime loop, then (unsliced, H % 4) the ragged
   * one (n lanes valid).
   */
  const overH = (body: (cOff: () => void, n: number) => void) => {
    if (fullH > 0) f.for_(cb, () => { f.get(ja); f.i32(4); mul(); }, () => { f.get(jb); f.i32(4); mul(); }, 16, () => body(() => f.get(cb), 4));
    if (H % 4) body(() => f.i32(fullH * 4), H % 4);
  };

  const clip = (v: Local) => {
    if (!Number.isFinite(p.clip)) return;
    f.get(v); f.f32x4_const(-p.clip); f.simd(SIMD.f32x4_max); f.f32x4_const(p.clip); f.simd(SIMD.f32x4_min); f.set(v);
  };

  /** h as the dot products read it (hDirect: the state itself; else a prepared copy in chunk layout). */
  const prepH = (rows: number) => {
    if (hDirect) return;
    f.get(sp); f.i32(L.hplain); add(); f.set(gp);
    f.get(sp); f.i32(L.hprep); add(); f.set(wk);
    for (let r = 0; r < rows; r++) emitPrepRow(f, gp, r * HP * 4, wk, r * HP * 4, H);
  };

  /** GRU, linear_before_reset 0: rh = σ(r) ⊙ h of every unit, where the h gate's dot products read it (rhp). */
  const resetH = (rows: number) => {
    for (let r = 0; r < rows; r++) {
      overH((cOff) => {
        f.get(sp); cOff(); add(); f.v128_load(L.gates + (r * 4 + 1) * HP * 4, 0); f.set(vo);
        clip(vo); emitActivation(f, 'sigmoid', vo, temps);
        f.get(sp); cOff(); add();
        f.get(vo); f.get(ho); cOff(); add(); f.v128_load(r * HP * 4, 0); f.simd(SIMD.f32x4_mul);
        f.v128_store(L.rh + r * HP * 4, 0);
      });
    }
    f.get(sp); f.i32(L.rh); add(); f.set(rhp);
    if (hDirect) return;
    f.get(sp); f.i32(L.rhprep); add(); f.set(wk);
    for (let r = 0; r < rows; r++) emitPrepRow(f, rhp, r * HP * 4, wk, r * HP * 4, H);
    f.get(wk); f.set(rhp);
  };

  /** Step 0 of a slice: its summed bias and initial state. */
  const init = (rows: number) => {
    if (p.hasBias) {
      for (let q = 0; q < slots.length; q++) {
        overH((cOff, n) => {
          at(bd, cOff, tp);
          slots[q].b.forEach((o, k) => { emitLoadLanes(f, tp, o * H * 4, n, 4); if (k) f.simd(SIMD.f32x4_add); });
          f.set(vc);
          at(sp, cOff, tp); f.get(tp); f.get(vc); f.v128_store(L.bias + q * HP * 4, 0);
        });
      }
    }
    const state = (has: boolean, src: Local, dst: Local, r: number) => overH((cOff, n) => {
      if (has) { f.get(src); f.get(stb); add(); cOff(); add(); f.set(tp); emitLoadLanes(f, tp, r * stRow * 4, n, 4); } else f.f32x4_const(0);
      f.set(vc);
      at(dst, cOff, tp); f.get(tp); f.get(vc); f.v128_store(r * HP * 4, 0);
    });
    for (let r = 0; r < rows; r++) {
      state(p.hasH0, H0, hn, r);
      if (!gru && !rnn) { f.get(sp); f.i32(L.cst); add(); f.set(gp); state(p.hasC0, C0, gp, r); }
    }
    prepH(rows);
  };

  /** Step s ≥ 1 of a slice: its gates (x·Wᵀ + h·Rᵀ + b) for hidden units [ja, jb), then the cell. */
  const timeStep = (rows: number) => {
    // tt = rev ? T-s : s-1
    f.i32(T); f.get(step); f.op(OP.i32_sub); f.get(step); f.i32(1); f.op(OP.i32_sub); f.get(rev); f.select(); f.set(tt);
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
    if (hDirect) { f.get(ho); f.set(gp); } else { f.get(sp); f.i32(L.hprep); add(); f.set(gp); }
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
        if (useR !== null) emitDots4(f, { rows: nr, a: r0First && q === 2 ? rhp : gp, aOff: r0 * HP * 4, aRowBytes: HP * 4, kp: rk, keyOff: keyOffR, dBytes: 4, D: H, acc, av, kv, tmp, out: sh, relaxed });
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
    if (p.packedR) {
      // gates[rows][0 … G·H) = h·Rᵀ (+ XW + summed bias where the gate has an x part), 8 gate columns per call.
      const xPanels = (gru ? 2 * H : G4) / RNR;
      const panels = (from: number, to: number, withRes: boolean) => {
        const idx = microFor(rows, withRes);
        f.for_(j, () => f.i32(from), () => f.i32(to), 1, () => {
          f.get(gp);
          f.get(rd); f.get(j); f.i32(H * RNR * 4); mul(); add();
          f.get(sp); f.i32(L.gates); add(); f.get(j); f.i32(RNR * 4); mul(); add();
          f.get(sp); f.i32(L.bias); add(); f.get(j); f.i32(RNR * 4); mul(); add();
          if (withRes) { f.get(xa); f.get(j); f.i32(RNR * 4); mul(); add(); } else f.i32(0);
          call(f, idx);
        });
      };
      panels(0, xPanels, true);
      if (gru) panels(xPanels, G4 / RNR, false);
    } else for (const q of r0First ? [0, 1, 3, -1, 2] : slots.map((_, i) => i)) {
      if (q < 0) { resetH(rows); continue; }
      const { w: gw, r: gr } = slots[q];
      if (gw !== null && !p.xproj) { f.get(wd); f.i32(gw * H * I * 4); add(); f.get(ja); f.i32(I * 4); mul(); add(); f.set(wk); }
      if (gr !== null) { f.get(rd); f.i32(gr * H * H * 4); add(); f.get(ja); f.i32(H * 4); mul(); add(); f.set(rk); }
      if (fullH > 0) {
        f.for_(j, () => f.get(ja), () => f.get(jb), 4, () => {
          block(4, q);
          if (gw !== null && !p.xproj) { f.get(wk); f.i32(4 * I * 4); add(); f.set(wk); }
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
        if (rnn) {
          ld(0, vc); clip(vc); emitActivation(f, 'tanh', vc, temps);
        } else if (gru) {
          // z = σ(vi), r = σ(vo), h~ = tanh(vf + r ⊙ vc), h' = h~ + z ⊙ (h - h~); vf = x·Whᵀ + Wbh, vc = h·Rhᵀ + Rbh
          // (linear_before_reset 0: vc = (r ⊙ h)·Rhᵀ + Rbh, r already applied).
          ld(0, vi); if (!r0First) ld(1, vo); ld(2, vc);
          if (p.packedR) {
            // The micro-kernel leaves x·Whᵀ in the projections: XW[row][2H + j] plus the slot's bias.
            f.get(xa); cOff(); add(); f.v128_load(r * xwRow * 4 + 2 * H * 4, 0);
            if (p.hasBias) { f.get(tp); f.v128_load(L.bias + 3 * HP * 4, 0); f.simd(SIMD.f32x4_add); }
            f.set(vf);
          } else ld(3, vf);
          clip(vi); emitActivation(f, 'sigmoid', vi, temps);
          if (r0First) { f.get(vf); f.get(vc); f.simd(SIMD.f32x4_add); f.set(vc); }
          else {
            clip(vo); emitActivation(f, 'sigmoid', vo, temps);
            f.get(vf); f.get(vo); f.get(vc); f.simd(SIMD.f32x4_mul); f.simd(SIMD.f32x4_add); f.set(vc);
          }
          clip(vc); emitActivation(f, 'tanh', vc, temps);
          f.get(ho); cOff(); add(); f.v128_load(r * HP * 4, 0); f.set(cOld);
          f.get(vc); f.get(vi); f.get(cOld); f.get(vc); f.simd(SIMD.f32x4_sub); f.simd(SIMD.f32x4_mul); f.simd(SIMD.f32x4_add); f.set(vc);
        } else {
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
        }
        f.get(hn); cOff(); add(); f.get(vc); f.v128_store(r * HP * 4, 0);
        at(yb, cOff, tp2); emitStoreLanes(f, tp2, r * yRow * 4, n, vc);
        // The last step also writes the final state.
        f.get(step); f.i32(T); f.op(OP.i32_eq);
        f.if_(() => {
          f.get(Yh); f.get(stb); add(); cOff(); add(); f.set(tp2); emitStoreLanes(f, tp2, r * stRow * 4, n, vc);
          if (!gru && !rnn) { f.get(Yc); f.get(stb); add(); cOff(); add(); f.set(tp2); emitStoreLanes(f, tp2, r * stRow * 4, n, cNew); }
        });
      });
    }
    prepH(rows);
  };

  /** Step `step` of slice c. */
  const slice = (rows: number) => {
    if (coop) {
      f.get(c); f.i32(HC); mul(); f.set(ja);
      f.get(ja); f.i32(HC); add(); f.set(jb);
      f.get(jb); f.i32(H); f.get(jb); f.i32(H); f.op(OP.i32_lt_s); f.select(); f.set(jb);
      // Step s reads h from buffer (s+1)&1 and writes buffer s&1.
      f.get(sp); f.i32(L.hprep + L.hBuf); add(); f.get(sp); f.i32(L.hprep); add(); f.get(step); f.i32(1); f.op(OP.i32_and); f.select(); f.set(hn);
      f.get(sp); f.i32(L.hprep); add(); f.get(sp); f.i32(L.hprep + L.hBuf); add(); f.get(step); f.i32(1); f.op(OP.i32_and); f.select(); f.set(ho);
    }
    f.get(step); f.op(OP.i32_eqz);
    f.if_(() => init(rows), () => timeStep(rows));
  };

  /** Claims slice k of the current step: pushes 1 when this thread won it. */
  const claim = (k: () => void) => {
    f.get(ctl); k(); f.i32(64); mul(); add(); f.get(step); f.get(step); f.i32(1); add(); f.i32_atomic_rmw_cmpxchg(64);
    f.get(step); f.op(OP.i32_eq);
  };

  const unit = (rows: number) => {
    if (!coop) {
      f.i32(0); f.set(ja); f.i32(fullH); f.set(jb);
      // One h, updated in place: the state itself or (H % 4) its plain copy.
      f.get(sp); f.i32(hDirect ? L.hprep : L.hplain); add(); f.tee(ho); f.set(hn);
    }
    f.for_(step, () => f.i32(0), () => f.i32(T + 1), 1, () => {
      if (!coop) { slice(rows); return; }
      // Own slices first, then wait for the step's others, taking unclaimed ones now and then.
      f.get(c0); f.set(ci); f.i32(0); f.set(spins);
      f.block(() => f.loop(() => {
        f.i32(-1); f.set(c);
        f.get(ci); f.get(c1); f.op(OP.i32_lt_s);
        f.if_(() => {
          claim(() => f.get(ci));
          f.if_(() => { f.get(ci); f.set(c); });
          f.get(ci); f.i32(1); add(); f.set(ci);
        }, () => {
          f.get(ctl); f.i32_atomic_load(0); f.get(step); f.i32(1); add(); f.i32(chunks); mul(); f.op(OP.i32_ge_s); f.br_if(2);
          f.get(spins); f.i32(1); add(); f.tee(spins); f.i32(MAX_SPINS); f.op(OP.i32_gt_u); f.if_(() => f.unreachable());
          f.get(spins); f.i32(STEAL_SPINS - 1); f.op(OP.i32_and); f.op(OP.i32_eqz);
          f.if_(() => {
            for (let k = 0; k < chunks; k++) {
              f.get(c); f.i32(0); f.op(OP.i32_lt_s);
              f.if_(() => { claim(() => f.i32(k)); f.if_(() => { f.i32(k); f.set(c); }); });
            }
          });
        });
        f.get(c); f.i32(0); f.op(OP.i32_ge_s);
        f.if_(() => { slice(rows); f.get(ctl); f.i32(1); f.i32_atomic_rmw_add(0); f.drop(); });
        f.br(0);
      }));
    });
  };

  // Tasks [t0, t1): unit t / chunks, slices [t % chunks, …) of it.
  f.get(t0); f.set(t);
  f.block(() => f.loop(() => {
    f.get(t); f.get(t1); f.op(OP.i32_ge_s); f.br_if(1);
    f.get(t); f.i32(chunks); f.op(OP.i32_div_u); f.set(u);
    f.get(t); f.get(u); f.i32(chunks); mul(); f.op(OP.i32_sub); f.set(c0);
    // c1 = min(chunks, c0 + t1 - t)
    f.get(c0); f.get(t1); add(); f.get(t); f.op(OP.i32_sub); f.set(c1);
    f.i32(chunks); f.get(c1); f.get(c1); f.i32(chunks); f.op(OP.i32_gt_s); f.select(); f.set(c1);
    f.get(S); f.i32(L.ctrl); add(); f.get(u); f.i32(L.unit); mul(); add(); f.set(sp);
    f.get(S); f.get(u); f.i32(L.ctrlPerUnit); mul(); add(); f.set(ctl);
    f.get(u); f.i32(nBG); f.op(OP.i32_div_u); f.set(d);
    f.get(u); f.i32(nBG); f.op(OP.i32_rem_u); f.tee(g); f.i32(bg); mul(); f.set(b0);
    if (dirs === 2) { f.get(d); f.set(rev); } else { f.i32(p.reverse ? 1 : 0); f.set(rev); }
    f.get(W); f.get(d); f.i32(G4 * I * 4); mul(); add(); f.set(wd);
    f.get(R); f.get(d); f.i32(p.packedR ? packedBSize(H, G4, RNR) * 4 : G4 * H * 4); mul(); add(); f.set(rd);
    f.get(Bi); f.get(d); f.i32(2 * G4 * 4); mul(); add(); f.set(bd);
    f.get(Pp); f.get(d); f.i32(3 * H * 4); mul(); add(); f.set(pd);
    stOff(); f.set(stb);
    if (tailRows !== bg) {
      f.get(g); f.i32(nBG - 1); f.op(OP.i32_eq);
      f.if_(() => unit(tailRows), () => unit(bg));
    } else unit(bg);
    f.get(t); f.get(c1); add(); f.get(c0); f.op(OP.i32_sub); f.set(t);
    f.br(0);
  }));
  return mod.build();
}
