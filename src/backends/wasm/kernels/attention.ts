// f32 attention code generator: per (batch, query-row block) task, SIMD scores, a stable softmax and the weighted sum of V.
import { call, type FunctionBuilder, type Local, ModuleBuilder, OP, SIMD } from '../../../codegen/wasm/builder.js';
import type { KernelSource } from '../kernel.js';
import { ActTemps, emitExp, emitMicro } from './gemm.js';
import type { Fault } from '../../../tune/site.js';
import { emitF16Round } from '../tune.js';

/**
 * Element strides of the operands. Batch strides are per output batch dim (0 where the operand broadcasts);
 * Q's, V's and O's innermost dim has stride 1.
 */
export interface AttentionParams {
  batch: number[];
  Sq: number;
  Skv: number;
  D: number;
  Dv: number;
  q: { b: number[]; row: number };
  /** K element (key j, d) at key*j + d*d (d 1: contiguous head dim, the fast path). */
  k: { b: number[]; key: number; d: number };
  v: { b: number[]; key: number };
  /** Additive mask: row stride (0 or its row length), key stride 0 or 1. */
  mask?: { b: number[]; row: number; key: 0 | 1 };
  o: { b: number[]; row: number };
  scale: number;
  /** Query rows per unit of work (the score block kept in scratch is rows x Skv). */
  rows: number;
  unitsPerTask: number;
  relaxed: boolean;
  /** A deliberate bug for the tuner's rejection test (see FAULTS in buildAttention); never set by a search space. */
  fault?: Fault;
}

// --- shared SIMD helpers (the LSTM kernel uses them too) -----------------------------------------

const lanesToBytes = (lanes: number[]) => lanes.flatMap((l) => [4 * l, 4 * l + 1, 4 * l + 2, 4 * l + 3]);

/** Pushes [Σa, Σb, Σc, Σd] of four v128 locals. */
export function emitReduce4(f: FunctionBuilder, a: Local, b: Local, c: Local, d: Local, t: Local): void {
  f.get(a); f.get(b); f.i8x16_shuffle(lanesToBytes([0, 1, 4, 5]));
  f.get(a); f.get(b); f.i8x16_shuffle(lanesToBytes([2, 3, 6, 7]));
  f.simd(SIMD.f32x4_add); f.set(t); // [a0+a2, a1+a3, b0+b2, b1+b3]
  f.get(c); f.get(d); f.i8x16_shuffle(lanesToBytes([0, 1, 4, 5]));
  f.get(c); f.get(d); f.i8x16_shuffle(lanesToBytes([2, 3, 6, 7]));
  f.simd(SIMD.f32x4_add); f.set(a); // a is free now: [c0+c2, c1+c3, d0+d2, d1+d3]
  f.get(t); f.get(a); f.i8x16_shuffle(lanesToBytes([0, 2, 4, 6]));
  f.get(t); f.get(a); f.i8x16_shuffle(lanesToBytes([1, 3, 5, 7]));
  f.simd(SIMD.f32x4_add);
}

/** Pushes the horizontal max (op f32x4_max) or sum (f32x4_add) of a v128 local as an f32. */
export function emitHorizontal(f: FunctionBuilder, v: Local, op: number): void {
  f.get(v); f.get(v); f.get(v); f.i8x16_shuffle(lanesToBytes([2, 3, 0, 1])); f.simd(op); f.set(v);
  f.get(v); f.get(v); f.get(v); f.i8x16_shuffle(lanesToBytes([1, 0, 3, 2])); f.simd(op);
  f.f32x4_extract_lane(0);
}

/** acc += a * b (relaxed madd where allowed). Leaves nothing on the stack. */
export function emitFma(f: FunctionBuilder, acc: Local, a: () => void, b: () => void, relaxed: boolean): void {
  if (relaxed) { a(); b(); f.get(acc); f.simd(SIMD.f32x4_relaxed_madd); }
  else { f.get(acc); a(); b(); f.simd(SIMD.f32x4_mul); f.simd(SIMD.f32x4_add); }
  f.set(acc);
}

/**
 * The "chunk layout" of a length-D vector, in which dot products run without reading past a row: chunks of 4
 * elements, the last one (when D % 4) ending at D-1 with its already-covered lanes zeroed; D < 4 pads with zeros.
 */
export interface Chunk {
  /** First element of the 4 lanes the other operand loads. */
  start: number;
  /** Lanes [0, zeroLanes) are zero in the prepared operand (covered by the previous chunk). */
  zeroLanes: number;
  /** Lanes [valid, 4) do not exist (D < 4): both operands hold zero there. */
  valid: number;
}

export function chunksOf(D: number): Chunk[] {
  const out: Chunk[] = [];
  if (D < 4) { if (D > 0) out.push({ start: 0, zeroLanes: 0, valid: D }); return out; }
  const full = Math.floor(D / 4);
  for (let c = 0; c < full; c++) out.push({ start: 4 * c, zeroLanes: 0, valid: 4 });
  const rem = D % 4;
  if (rem) out.push({ start: D - 4, zeroLanes: 4 - rem, valid: 4 });
  return out;
}

const laneMask = (on: (l: number) => boolean) => new Uint8Array(new Int32Array([0, 1, 2, 3].map((l) => (on(l) ? -1 : 0))).buffer);

/** Pushes 4 lanes from ptr + offBytes + lane*strideBytes, lanes >= n as 0 (never reading them). */
export function emitLoadLanes(f: FunctionBuilder, ptr: Local, offBytes: number, n: number, strideBytes: number): void {
  if (n === 4 && strideBytes === 4) { f.get(ptr); f.v128_load(offBytes, 0); return; }
  if (strideBytes === 0) { f.get(ptr); f.v128_load32_splat(offBytes); return; }
  f.f32x4_const(0);
  for (let l = 0; l < n; l++) { f.get(ptr); f.f32_load(offBytes + l * strideBytes); f.f32x4_replace_lane(l); }
}

/** Stores lanes [0, n) of v at ptr + offBytes (contiguous). */
export function emitStoreLanes(f: FunctionBuilder, ptr: Local, offBytes: number, n: number, v: Local): void {
  if (n === 4) { f.get(ptr); f.get(v); f.v128_store(offBytes, 0); return; }
  for (let l = 0; l < n; l++) { f.get(ptr); f.get(v); f.f32x4_extract_lane(l); f.f32_store(offBytes + l * 4); }
}

/** Copies a contiguous length-D row at src into chunk layout at dst (4*ceil(D/4) floats), times `scale`. */
export function emitPrepRow(f: FunctionBuilder, src: Local, srcOff: number, dst: Local, dstOff: number, D: number, scale = 1): void {
  chunksOf(D).forEach((c, i) => {
    f.get(dst);
    emitLoadLanes(f, src, srcOff + c.start * 4, c.valid, 4);
    if (c.zeroLanes) { f.v128_const(laneMask((l) => l >= c.zeroLanes)); f.simd(SIMD.v128_and); }
    if (scale !== 1) { f.f32x4_const(scale); f.simd(SIMD.f32x4_mul); }
    f.v128_store(dstOff + i * 16, 0);
  });
}

const dotTemps = new WeakMap<FunctionBuilder, { aCur: Local; kCur: Local; n: Local }>();

/** Chunks per iteration when the dot products loop instead of unrolling fully (long rows). */
const DOT_UNROLL = 8;
const MAX_UNROLLED_CHUNKS = 16;

/**
 * Dot products of `rows` prepared rows (chunk layout at a + aOff + r*aRowBytes) with 4 "key" rows (key k's element d
 * at kp + keyOff[k] + d*dBytes), each left reduced as a v128 of 4 results in out[r].
 */
export function emitDots4(f: FunctionBuilder, s: {
  rows: number; a: Local; aOff?: number; aRowBytes: number; kp: Local; keyOff: number[]; dBytes: number; D: number;
  acc: Local[][]; av: Local[]; kv: Local; tmp: Local; out: Local[]; relaxed: boolean;
}): void {
  const { rows, aRowBytes, keyOff, dBytes, D, acc, av, kv, relaxed } = s;
  for (let r = 0; r < rows; r++) for (let k = 0; k < 4; k++) { f.f32x4_const(0); f.set(acc[r][k]); }
  const chunks = chunksOf(D);
  const step = (c: Chunk, a: Local, aOff: number, kp: Local, kOff: number) => {
    for (let r = 0; r < rows; r++) { f.get(a); f.v128_load(aOff + r * aRowBytes, 0); f.set(av[r]); }
    for (let k = 0; k < 4; k++) {
      emitLoadLanes(f, kp, keyOff[k] + kOff, c.valid, dBytes);
      f.set(kv);
      for (let r = 0; r < rows; r++) emitFma(f, acc[r][k], () => f.get(av[r]), () => f.get(kv), relaxed);
    }
  };
  const iters = chunks.length > MAX_UNROLLED_CHUNKS ? Math.floor(Math.floor(D / 4) / DOT_UNROLL) : 0;
  if (iters > 0) {
    let t = dotTemps.get(f);
    if (!t) { t = { aCur: f.local('i32'), kCur: f.local('i32'), n: f.local('i32') }; dotTemps.set(f, t); }
    const { aCur, kCur, n } = t;
    f.get(s.a); if (s.aOff) { f.i32(s.aOff); f.op(OP.i32_add); } f.set(aCur);
    f.get(s.kp); f.set(kCur);
    f.for_(n, () => f.i32(0), () => f.i32(iters), 1, () => {
      for (let u = 0; u < DOT_UNROLL; u++) step(chunks[u], aCur, u * 16, kCur, u * 4 * dBytes);
      f.get(aCur); f.i32(DOT_UNROLL * 16); f.op(OP.i32_add); f.set(aCur);
      f.get(kCur); f.i32(DOT_UNROLL * 4 * dBytes); f.op(OP.i32_add); f.set(kCur);
    });
    const done = iters * DOT_UNROLL;
    for (let i = done; i < chunks.length; i++) step(chunks[i], aCur, (i - done) * 16, kCur, (chunks[i].start - 4 * done) * dBytes);
  } else {
    chunks.forEach((c, i) => step(c, s.a, (s.aOff ?? 0) + i * 16, s.kp, c.start * dBytes));
  }
  for (let r = 0; r < rows; r++) { emitReduce4(f, acc[r][0], acc[r][1], acc[r][2], acc[r][3], s.tmp); f.set(s.out[r]); }
}

// --- the attention kernel --------------------------------------------------------------------------

/** Units of work (batch x query-row blocks) and tasks of a launch. */
export function attentionUnits(p: AttentionParams): number {
  return p.batch.reduce((a, b) => a * b, 1) * Math.ceil(p.Sq / p.rows);
}

export function attentionTasks(p: AttentionParams): number {
  return Math.ceil(attentionUnits(p) / p.unitsPerTask);
}

const pad4 = (n: number) => Math.ceil(n / 4) * 4;

/**
 * Softmax terms exp(x - max) with x - max below this are taken as 0: at most e^-64 ~ 1.6e-28 of the row sum each,
 * far under f32 resolution, and the surviving ones times any |V| > 1e-10 stay normal floats.
 */
const SOFTMAX_FLUSH = -64;

const pad8 = (n: number) => Math.ceil(n / 8) * 8;

/** Scratch bytes per task: the score block, the prepared (scaled) Q rows and Kᵀ of the current K. */
export function attentionScratchPerTask(p: AttentionParams): number {
  return Math.ceil((p.rows * pad8(p.Skv) + p.rows * pad4(p.D) + p.D * pad8(p.Skv)) * 4 / 64) * 64;
}

const stridesKey = (s: { b: number[] } & Record<string, number | number[]>) =>
  Object.entries(s).map(([k, v]) => `${k}${Array.isArray(v) ? v.join(',') : v}`).join('/');

/** A kernel `run(Q, K, V, M, O, scratch, t0, t1)`: pointers are byte offsets, M may be 0 without a mask. */
export function genAttention(p: AttentionParams): KernelSource {
  const key = `attn:${p.batch.join(',')}:${p.Sq}x${p.Skv}x${p.D}x${p.Dv}:q${stridesKey(p.q)}:k${stridesKey(p.k)}:v${stridesKey(p.v)}:` +
    `m${p.mask ? stridesKey(p.mask) : '-'}:o${stridesKey(p.o)}:s${p.scale}:r${p.rows}:u${p.unitsPerTask}:${p.relaxed ? 'R' : ''}` +
    (p.fault ? `:F${p.fault}` : '');
  return { key, bytes: () => buildAttention(p) };
}

function buildAttention(p: AttentionParams): Uint8Array {
  const { Sq, Skv, D, Dv, rows: R, relaxed } = p;
  // FAULTS (the tuner's rejection test):
  // - edge: the softmax of a ragged key count drops the last key (lane bound Skv%4 - 1 in the last vector);
  // - barrier: Kᵀ is made once per task, not again when a unit moves to another head: the score phase does not wait
  //   for the transposition of its own K (the planner runs the whole launch as one task so the stale Kᵀ is read);
  // - epilogue: the weighted sum of V reads V one key off;
  // - f16acc: the softmax row sums and the P·V accumulators are rounded to f16 precision at every step.
  const fault = p.fault;
  const mod = new ModuleBuilder();
  const f = mod.func('run', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32']);
  const [Q, K, V, M, O, S, t0, t1] = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => f.param(i));
  const add = () => f.op(OP.i32_add), mul = () => f.op(OP.i32_mul);
  const nRB = Math.ceil(Sq / R), units = attentionUnits(p);
  const tailRows = Sq - (nRB - 1) * R;
  // P rows are padded to whole 8-key blocks; Kᵀ has the same row length.
  const SkvP = pad8(Skv), DP = pad4(D);
  const perTask = attentionScratchPerTask(p);
  const t = f.local('i32'), u = f.local('i32'), uEnd = f.local('i32'), bi = f.local('i32'), rb = f.local('i32');
  const qB = f.local('i32'), kB = f.local('i32'), vB = f.local('i32'), mB = f.local('i32'), oB = f.local('i32');
  const P = f.local('i32'), QS = f.local('i32'), KT = f.local('i32'), lastK = f.local('i32');
  const kp = f.local('i32'), mp = f.local('i32'), j = f.local('i32'), pp = f.local('i32'), vp = f.local('i32');
  const src = f.local('i32'), dst = f.local('i32'), dd = f.local('i32');
  const mx = f.local('v128');
  const inv: Local[] = []; for (let r = 0; r < R; r++) inv.push(f.local('f32'));
  const nzEnd: Local[] = []; for (let r = 0; r < R; r++) nzEnd.push(f.local('i32'));
  const jEnd = f.local('i32');
  const mrow = f.local('v128'), sum = f.local('v128'), e = f.local('v128');
  const temps = new ActTemps(f);
  // Accumulators of a 4-row x 8-column block (scores, then outputs), and operands.
  const pacc = [0, 1, 2, 3].map(() => [f.local('v128'), f.local('v128')]);
  const vv = [f.local('v128'), f.local('v128')], ps = f.local('v128');

  const batchOffset = (strides: number[]) => {
    f.i32(0);
    let inner = 1;
    for (let d = p.batch.length - 1; d >= 0; d--) {
      const dim = p.batch[d];
      if (strides[d] && dim > 1) {
        f.get(bi); if (inner > 1) { f.i32(inner); f.op(OP.i32_div_u); }
        if (d > 0) { f.i32(dim); f.op(OP.i32_rem_u); }
        f.i32(strides[d] * 4); mul(); add();
      }
      inner *= dim;
    }
  };

  const kBytes = p.k.key * 4, dBytes = p.k.d * 4;
  const mask = p.mask;
  /** Kᵀ as GEMM panels: per block of 8 keys, D rows of 8 (key k, dim d at (k>>3)*D*32 + d*32 + (k&7)*4). */
  const panel = D * 32;
  /** Head dims unrolled in straight code; longer heads loop over blocks of 4. */
  const UNROLL_D = 128;
  /** body(dOff, qOff, kOff) for every head dim d: a runtime loop (dd = 0, 4, …) adds dd to both pointers. */
  const overD = (body: (d: number) => void, ptrs: { local: Local; step: number }[]) => {
    if (D <= UNROLL_D) { for (let d = 0; d < D; d++) body(d); return; }
    const d4 = Math.floor(D / 4) * 4;
    const saved = ptrs.map(() => f.local('i32'));
    ptrs.forEach((q, i) => { f.get(q.local); f.set(saved[i]); });
    f.for_(dd, () => f.i32(0), () => f.i32(d4), 4, () => {
      for (let k = 0; k < 4; k++) body(k);
      for (const q of ptrs) { f.get(q.local); f.i32(4 * q.step); add(); f.set(q.local); }
    });
    for (let d = d4; d < D; d++) body(d - d4);
    ptrs.forEach((q, i) => { f.get(saved[i]); f.set(q.local); });
  };

  /** Kᵀ of the K at kB into KT (row d: keys 0 … SkvP-1; the padding repeats the last key), unless it is there already. */
  const transposeK = () => {
    if (fault === 'barrier') { f.get(lastK); f.i32(-1); f.op(OP.i32_eq); } else { f.get(kB); f.get(lastK); f.op(OP.i32_ne); }
    f.if_(() => {
      f.get(kB); f.set(lastK);
      const column = (srcKey: () => void, dstKey: () => void) => {
        f.get(kB); srcKey(); f.i32(kBytes); mul(); add(); f.set(src);
        f.get(KT); dstKey(); f.i32(3); f.op(OP.i32_shr_u); f.i32(panel); mul(); add(); dstKey(); f.i32(7); f.op(OP.i32_and); f.i32(4); mul(); add(); f.set(dst);
        overD((d) => { f.get(dst); f.get(src); f.f32_load(d * dBytes); f.f32_store(d * 32); },
          [{ local: src, step: dBytes }, { local: dst, step: 32 }]);
      };
      f.for_(j, () => f.i32(0), () => f.i32(Skv), 1, () => column(() => f.get(j), () => f.get(j)));
      for (let k = Skv; k < SkvP; k++) column(() => f.i32(Skv - 1), () => f.i32(k));
    });
  };

  // Scores: the GEMM micro-kernel (4 rows x 8 keys of Q·Kᵀ over D, loads split from the multiply-adds) writes P.
  const micros = new Map<number, number>();
  const microFor = (rows: number): number => {
    let idx = micros.get(rows);
    if (idx === undefined) {
      const mf = mod.func(`m${rows}`, ['i32', 'i32', 'i32', 'i32', 'i32']);
      emitMicro(mf, { rows, cols: 8, klen: D, phase: 'only', nr: 8, unroll: 2, barrier: true, sAm: DP, sAk: 1, ldc: SkvP, relaxed, ep: {} });
      idx = mod.indexOf(mf);
      micros.set(rows, idx);
    }
    return idx;
  };
  /** Q·Kᵀ of rows r0 … r0+nr-1 for the 8 keys from column j (their Kᵀ panel at kp), into P. */
  const scoreBlock = (r0: number, nr: number) => {
    const idx = microFor(nr);
    f.get(QS); if (r0) { f.i32(r0 * DP * 4); add(); }
    f.get(kp);
    f.get(P); f.i32(r0 * SkvP * 4); add(); f.get(j); f.i32(4); mul(); add();
    f.i32(0); f.i32(0);
    call(f, idx);
  };

  /** Column chunks of V/O: up to 8 columns (2 vectors) each; a ragged end overlaps the previous chunk. */
  const colChunks: { off: number; nv: number; lanes: number }[] = [];
  if (Dv < 4) colChunks.push({ off: 0, nv: 1, lanes: Dv });
  else {
    let c = 0;
    for (; c + 8 <= Dv; c += 8) colChunks.push({ off: c, nv: 2, lanes: 4 });
    if (c + 4 <= Dv) { colChunks.push({ off: c, nv: 1, lanes: 4 }); c += 4; }
    if (c < Dv) colChunks.push({ off: Dv - 4, nv: 1, lanes: 4 });
  }

  const unit = (rows: number) => {
    // Q rows times the scale, contiguous.
    for (let r = 0; r < rows; r++) {
      if (D % 4 === 0) emitPrepRow(f, qB, r * p.q.row * 4, QS, r * DP * 4, D, p.scale);
      else {
        overD((d) => {
          f.get(QS); f.get(qB); f.f32_load((r * p.q.row + d) * 4); if (p.scale !== 1) { f.f32c(p.scale); f.op(OP.f32_mul); }
          f.f32_store((r * DP + d) * 4);
        }, [{ local: qB, step: 4 }, { local: QS, step: 4 }]);
      }
    }
    transposeK();
    // Scores, 8 keys at a time; keys past Skv in the last block repeat the last key.
    const blocks = () => { for (let r0 = 0; r0 < rows; r0 += 4) scoreBlock(r0, Math.min(4, rows - r0)); };
    f.get(KT); f.set(kp);
    f.for_(j, () => f.i32(0), () => f.i32(SkvP), 8, () => {
      blocks();
      f.get(kp); f.i32(panel); add(); f.set(kp);
    });
    // Softmax numerators in place, and 1/sum per row.
    for (let r = 0; r < rows; r++) {
      // Scores plus the mask, and their row max (over whole vectors: the padding repeats the last key).
      f.get(P); f.set(pp);
      f.f32x4_const(-Infinity); f.set(mx);
      const full4 = Math.floor(Skv / 4) * 4;
      const maskVec = (keys: number[]) => {
        if (!mask) return;
        if (mask.key === 0) { f.get(mB); f.v128_load32_splat(r * mask.row * 4); }
        else if (keys.length === 0) { f.get(mp); f.v128_load(r * mask.row * 4, 0); }
        else { f.f32x4_const(0); keys.forEach((k, l) => { f.get(mB); f.f32_load((r * mask.row + k) * 4); f.f32x4_replace_lane(l); }); }
        f.simd(SIMD.f32x4_add);
      };
      const vec = (keys: number[]) => {
        f.get(pp); f.get(pp); f.v128_load(r * SkvP * 4, 0); maskVec(keys); f.tee(e); f.v128_store(r * SkvP * 4, 0);
        f.get(mx); f.get(e); f.simd(SIMD.f32x4_max); f.set(mx);
        f.get(pp); f.i32(16); add(); f.set(pp);
        if (mask && mask.key) { f.get(mp); f.i32(16); add(); f.set(mp); }
      };
      f.get(mB); f.set(mp);
      if (full4 > 0) f.for_(j, () => f.i32(0), () => f.i32(full4), 4, () => vec([]));
      for (let c = full4; c < SkvP; c += 4) vec([0, 1, 2, 3].map((l) => Math.min(c + l, Skv - 1)));
      emitHorizontal(f, mx, SIMD.f32x4_max); f.simd(SIMD.f32x4_splat); f.set(mrow);
      f.f32x4_const(0); f.set(sum);
      // Vectors whose scores all sit FLUSH below the max (masked keys: a causal mask's future, padding) skip the exp;
      // nzEnd[r] ends the keys with a non-zero weight, where the weighted sum of V stops.
      const body = (last: boolean) => {
        f.get(pp); f.v128_load(r * SkvP * 4, 0); f.get(mrow); f.simd(SIMD.f32x4_sub); f.tee(e);
        f.f32x4_const(SOFTMAX_FLUSH); f.simd(SIMD.f32x4_ge); f.simd(SIMD.v128_any_true);
        f.if_(() => {
          emitExp(f, e, temps);
          // Flush to exactly 0 where x - max < FLUSH: emitExp saturates at exp(-87) ~ 1e-38 there, and a masked score
          // (-1e4, -1e9, finfo.min, -inf) would then make every product with V a denormal, which x86 runs ~100x slower.
          f.get(e); f.f32x4_const(SOFTMAX_FLUSH); f.simd(SIMD.f32x4_ge); f.simd(SIMD.v128_and);
          if (last) { f.v128_const(laneMask((l) => l < Skv % 4 - (fault === 'edge' ? 1 : 0))); f.simd(SIMD.v128_and); }
          f.set(e);
          f.get(pp); f.get(e); f.v128_store(r * SkvP * 4, 0);
          f.get(sum); f.get(e); f.simd(SIMD.f32x4_add); f.set(sum);
          if (fault === 'f16acc') emitF16Round(f, sum);
          if (last) f.i32(Skv); else { f.get(j); f.i32(4); add(); }
          f.set(nzEnd[r]);
        }, () => { f.get(pp); f.f32x4_const(0); f.v128_store(r * SkvP * 4, 0); });
      };
      if (full4 > 0) {
        f.get(P); f.set(pp);
        f.for_(j, () => f.i32(0), () => f.i32(full4), 4, () => { body(false); f.get(pp); f.i32(16); add(); f.set(pp); });
      }
      if (Skv % 4) { f.get(P); f.i32(full4 * 4); add(); f.set(pp); body(true); }
      f.f32c(1); emitHorizontal(f, sum, SIMD.f32x4_add); f.op(OP.f32_div); f.set(inv[r]);
    }
    // O[r, cols] = inv[r] * Σ_j P[r][j] V[j, cols], 4 rows x 8 columns at a time.
    for (let r0 = 0; r0 < rows; r0 += 4) {
      const nr = Math.min(4, rows - r0);
      // Keys up to the last non-zero weight of these rows.
      f.get(nzEnd[r0]); f.set(jEnd);
      for (let r = 1; r < nr; r++) { f.get(nzEnd[r0 + r]); f.get(jEnd); f.get(nzEnd[r0 + r]); f.get(jEnd); f.op(OP.i32_gt_s); f.select(); f.set(jEnd); }
      for (const cc of colChunks) {
        for (let r = 0; r < nr; r++) for (let c = 0; c < cc.nv; c++) { f.f32x4_const(0); f.set(pacc[r][c]); }
        f.get(P); f.i32(r0 * SkvP * 4); add(); f.set(pp);
        f.get(vB); if (fault === 'epilogue') { f.i32(p.v.key * 4); add(); } f.set(vp);
        f.for_(j, () => f.i32(0), () => f.get(jEnd), 1, () => {
          for (let c = 0; c < cc.nv; c++) { emitLoadLanes(f, vp, (cc.off + 4 * c) * 4, cc.lanes, 4); f.set(vv[c]); }
          for (let r = 0; r < nr; r++) {
            f.get(pp); f.v128_load32_splat(r * SkvP * 4); f.set(ps);
            for (let c = 0; c < cc.nv; c++) {
              emitFma(f, pacc[r][c], () => f.get(ps), () => f.get(vv[c]), relaxed);
              if (fault === 'f16acc') emitF16Round(f, pacc[r][c]);
            }
          }
          f.get(pp); f.i32(4); add(); f.set(pp);
          f.get(vp); f.i32(p.v.key * 4); add(); f.set(vp);
        });
        for (let r = 0; r < nr; r++) {
          for (let c = 0; c < cc.nv; c++) {
            f.get(pacc[r][c]); f.get(inv[r0 + r]); f.simd(SIMD.f32x4_splat); f.simd(SIMD.f32x4_mul); f.set(pacc[r][c]);
            emitStoreLanes(f, oB, ((r0 + r) * p.o.row + cc.off + 4 * c) * 4, cc.lanes, pacc[r][c]);
          }
        }
      }
    }
  };

  const upt = p.unitsPerTask;
  f.for_(t, () => f.get(t0), () => f.get(t1), 1, () => {
    f.get(S); f.get(t); f.i32(perTask); mul(); add(); f.tee(P); f.i32(R * SkvP * 4); add(); f.tee(QS);
    f.i32(R * DP * 4); add(); f.set(KT);
    f.i32(-1); f.set(lastK);
    f.get(t); f.i32(upt); mul(); f.tee(u); f.i32(upt); add(); f.tee(uEnd);
    f.i32(units); f.get(uEnd); f.i32(units); f.op(OP.i32_lt_s); f.select(); f.set(uEnd);
    f.block(() => f.loop(() => {
      f.get(u); f.get(uEnd); f.op(OP.i32_ge_s); f.br_if(1);
      f.get(u); f.i32(nRB); f.op(OP.i32_div_u); f.set(bi);
      f.get(u); f.i32(nRB); f.op(OP.i32_rem_u); f.set(rb);
      const base = (ptr: Local, strides: number[], rowStride: number, dst: Local) => {
        f.get(ptr); batchOffset(strides); add();
        if (rowStride) { f.get(rb); f.i32(R * rowStride * 4); mul(); add(); }
        f.set(dst);
      };
      base(Q, p.q.b, p.q.row, qB);
      base(K, p.k.b, 0, kB);
      base(V, p.v.b, 0, vB);
      if (mask) base(M, mask.b, mask.row, mB); else { f.i32(0); f.set(mB); }
      base(O, p.o.b, p.o.row, oB);
      if (tailRows !== R) {
        f.get(rb); f.i32(nRB - 1); f.op(OP.i32_eq);
        f.if_(() => unit(tailRows), () => unit(R));
      } else unit(R);
      f.get(u); f.i32(1); add(); f.set(u);
      f.br(0);
    }));
  });
  return mod.build();
}
