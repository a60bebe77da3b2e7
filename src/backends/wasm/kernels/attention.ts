// f32 attention code generator: per (batch, query-row block) task, SIMD scores, a stable softmax and the weighted sum of V.
import { type FunctionBuilder, type Local, ModuleBuilder, OP, SIMD } from '../../../codegen/wasm/builder.js';
import type { KernelSource } from '../kernel.js';
import { ActTemps, emitExp } from './gemm.js';

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

/** Scratch bytes per task: the score block and the prepared Q rows. */
export function attentionScratchPerTask(p: AttentionParams): number {
  return Math.ceil((p.rows * pad4(p.Skv) + p.rows * pad4(p.D)) * 4 / 64) * 64;
}

const stridesKey = (s: { b: number[] } & Record<string, number | number[]>) =>
  Object.entries(s).map(([k, v]) => `${k}${Array.isArray(v) ? v.join(',') : v}`).join('/');

/** A kernel `run(Q, K, V, M, O, scratch, t0, t1)`: pointers are byte offsets, M may be 0 without a mask. */
export function genAttention(p: AttentionParams): KernelSource {
  const key = `attn:${p.batch.join(',')}:${p.Sq}x${p.Skv}x${p.D}x${p.Dv}:q${stridesKey(p.q)}:k${stridesKey(p.k)}:v${stridesKey(p.v)}:` +
    `m${p.mask ? stridesKey(p.mask) : '-'}:o${stridesKey(p.o)}:s${p.scale}:r${p.rows}:u${p.unitsPerTask}:${p.relaxed ? 'R' : ''}`;
  return { key, bytes: () => buildAttention(p) };
}

function buildAttention(p: AttentionParams): Uint8Array {
  const { Sq, Skv, D, Dv, rows: R, relaxed } = p;
  const mod = new ModuleBuilder();
  const f = mod.func('run', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32']);
  const [Q, K, V, M, O, S, t0, t1] = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => f.param(i));
  const add = () => f.op(OP.i32_add), mul = () => f.op(OP.i32_mul);
  const nRB = Math.ceil(Sq / R), units = attentionUnits(p);
  const tailRows = Sq - (nRB - 1) * R;
  const SkvP = pad4(Skv), DP = pad4(D);
  const perTask = attentionScratchPerTask(p);
  const t = f.local('i32'), u = f.local('i32'), uEnd = f.local('i32'), bi = f.local('i32'), rb = f.local('i32');
  const qB = f.local('i32'), kB = f.local('i32'), vB = f.local('i32'), mB = f.local('i32'), oB = f.local('i32');
  const P = f.local('i32'), QS = f.local('i32');
  const kp = f.local('i32'), mp = f.local('i32'), j = f.local('i32'), pp = f.local('i32'), vp = f.local('i32');
  // Vector registers: dot accumulators (2 rows x 4 keys), operands, per-row running max, temporaries.
  const acc = [0, 1].map(() => [0, 1, 2, 3].map(() => f.local('v128')));
  const av = [f.local('v128'), f.local('v128')], kv = f.local('v128'), vtmp = f.local('v128');
  const sv = [f.local('v128'), f.local('v128')];
  const mx: Local[] = []; for (let r = 0; r < R; r++) mx.push(f.local('v128'));
  const inv: Local[] = []; for (let r = 0; r < R; r++) inv.push(f.local('f32'));
  const mrow = f.local('v128'), sum = f.local('v128'), e = f.local('v128');
  const temps = new ActTemps(f);
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

  /** Scores of `rows` rows for the key block at kp (4 keys, key k at offset keyOff[k]), into P at column j. */
  const scoreBlock = (rows: number, keyOff: number[], validKeys: number) => {
    for (let r0 = 0; r0 < rows; r0 += 2) {
      const nr = Math.min(2, rows - r0);
      emitDots4(f, { rows: nr, a: QS, aOff: r0 * DP * 4, aRowBytes: DP * 4, kp, keyOff, dBytes, D, acc, av, kv, tmp: vtmp, out: sv, relaxed });
      for (let i = 0; i < nr; i++) {
        const r = r0 + i;
        if (p.scale !== 1) { f.get(sv[i]); f.f32x4_const(p.scale); f.simd(SIMD.f32x4_mul); f.set(sv[i]); }
        if (mask) {
          f.get(sv[i]);
          if (mask.key === 0) { f.get(mp); f.v128_load32_splat(r * mask.row * 4); }
          else if (validKeys === 4) { f.get(mp); f.v128_load(r * mask.row * 4, 0); }
          else {
            // Ragged key block: invalid lanes repeat the last key.
            f.f32x4_const(0);
            for (let l = 0; l < 4; l++) { f.get(mp); f.f32_load(r * mask.row * 4 + Math.min(l, validKeys - 1) * 4); f.f32x4_replace_lane(l); }
          }
          f.simd(SIMD.f32x4_add); f.set(sv[i]);
        }
        // P[r][j..j+3] = s; mx[r] = max(mx[r], s)
        f.get(P); f.get(j); f.i32(4); mul(); add(); f.get(sv[i]); f.v128_store(r * SkvP * 4, 0);
        f.get(mx[r]); f.get(sv[i]); f.simd(SIMD.f32x4_max); f.set(mx[r]);
      }
    }
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
    // Prepared Q rows.
    for (let r = 0; r < rows; r++) emitPrepRow(f, qB, r * p.q.row * 4, QS, r * DP * 4, D);
    for (let r = 0; r < rows; r++) { f.f32x4_const(-Infinity); f.set(mx[r]); }
    // Scores, 4 keys at a time; the ragged last block repeats the last key (same score, same max).
    const full = Math.floor(Skv / 4) * 4;
    f.get(kB); f.set(kp); f.get(mB); f.set(mp);
    const keyOff = [0, 1, 2, 3].map((k) => k * kBytes);
    if (full > 0) {
      f.for_(j, () => f.i32(0), () => f.i32(full), 4, () => {
        scoreBlock(rows, keyOff, 4);
        f.get(kp); f.i32(4 * kBytes); add(); f.set(kp);
        if (mask && mask.key) { f.get(mp); f.i32(16); add(); f.set(mp); }
      });
    }
    if (Skv % 4) {
      const valid = Skv % 4;
      f.i32(full); f.set(j);
      scoreBlock(rows, [0, 1, 2, 3].map((k) => Math.min(k, valid - 1) * kBytes), valid);
    }
    // Softmax numerators in place, and 1/sum per row.
    for (let r = 0; r < rows; r++) {
      emitHorizontal(f, mx[r], SIMD.f32x4_max); f.simd(SIMD.f32x4_splat); f.set(mrow);
      f.f32x4_const(0); f.set(sum);
      const body = (last: boolean) => {
        f.get(pp); f.v128_load(r * SkvP * 4, 0); f.get(mrow); f.simd(SIMD.f32x4_sub); f.set(e);
        emitExp(f, e, temps);
        // Flush to exactly 0 where x - max < FLUSH: emitExp saturates at exp(-87) ~ 1e-38 there, and a masked score
        // (-1e4, -1e9, finfo.min, -inf) would then make every product with V a denormal, which x86 runs ~100x slower.
        f.get(e); f.f32x4_const(SOFTMAX_FLUSH); f.simd(SIMD.f32x4_ge); f.simd(SIMD.v128_and);
        if (last) { f.v128_const(laneMask((l) => l < Skv % 4)); f.simd(SIMD.v128_and); }
        f.set(e);
        f.get(pp); f.get(e); f.v128_store(r * SkvP * 4, 0);
        f.get(sum); f.get(e); f.simd(SIMD.f32x4_add); f.set(sum);
      };
      if (full > 0) {
        f.get(P); f.set(pp);
        f.for_(j, () => f.i32(0), () => f.i32(full), 4, () => { body(false); f.get(pp); f.i32(16); add(); f.set(pp); });
      }
      if (Skv % 4) { f.get(P); f.i32(full * 4); add(); f.set(pp); body(true); }
      f.f32c(1); emitHorizontal(f, sum, SIMD.f32x4_add); f.op(OP.f32_div); f.set(inv[r]);
    }
    // O[r, cols] = inv[r] * Σ_j P[r][j] V[j, cols], 4 rows x 8 columns at a time.
    for (let r0 = 0; r0 < rows; r0 += 4) {
      const nr = Math.min(4, rows - r0);
      for (const cc of colChunks) {
        for (let r = 0; r < nr; r++) for (let c = 0; c < cc.nv; c++) { f.f32x4_const(0); f.set(pacc[r][c]); }
        f.get(P); f.i32(r0 * SkvP * 4); add(); f.set(pp);
        f.get(vB); f.set(vp);
        f.for_(j, () => f.i32(0), () => f.i32(Skv), 1, () => {
          for (let c = 0; c < cc.nv; c++) { emitLoadLanes(f, vp, (cc.off + 4 * c) * 4, cc.lanes, 4); f.set(vv[c]); }
          for (let r = 0; r < nr; r++) {
            f.get(pp); f.v128_load32_splat(r * SkvP * 4); f.set(ps);
            for (let c = 0; c < cc.nv; c++) emitFma(f, pacc[r][c], () => f.get(ps), () => f.get(vv[c]), relaxed);
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
    f.get(S); f.get(t); f.i32(perTask); mul(); add(); f.tee(P); f.i32(R * SkvP * 4); add(); f.set(QS);
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
