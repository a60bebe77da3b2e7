// The Wasm module of one decoder step (any T tokens at any cache length): every layer's kernels in one launch, the
// threads taking work items phase by phase and waiting for each phase's last item (no thread waits for another to
// arrive, so a launch never hangs on a worker that came late or not at all). Model sizes are constants; T, the cache
// length and the buffers are runtime values, so the module is compiled once per model shape.
import { call, type FunctionBuilder, type Local, ModuleBuilder, OP, SIMD } from '../codegen/wasm/builder.js';
import { ActTemps, emitActivation } from '../backends/wasm/kernels/gemm.js';
import { emitHorizontal, emitReduce4 } from '../backends/wasm/kernels/attention.js';
import type { KernelSource } from '../backends/wasm/kernel.js';
import { fmtKey, type MatFmt, Q_INTERLEAVE } from './wasm_pack.js';

/** SIMD opcodes the builder's table lacks. */
const X = {
  i16x8_splat: 0x10, i16x8_shr_u: 0x8d, i16x8_narrow_i32x4_s: 0x85,
  i16x8_extend_low_i8x16_u: 0x89, i32x4_extend_low_i16x8_u: 0xa9,
  i32x4_extract_lane: 0x1b, i32x4_lt_s: 0x39, i32x4_dot_i16x8_s: 0xba,
  store64_lane: 0x5b, load64_lane: 0x57, load64_zero: 0x5d, i8x16_narrow_i16x8_s: 0x65, i16x8_add: 0x8e, i32x4_extadd_pairwise_i16x8_s: 0x7e,
  /** Relaxed SIMD: i16 lane m = a[2m]·b[2m] + a[2m+1]·b[2m+1], a signed, b in 0 … 127 (deterministic there). */
  i16x8_relaxed_dot_i8x16_i7x16_s: 0x112,
} as const;

/** Row blocks (of 4 rows) per tile: the unit of work a matmul item covers. */
export const TILE_BLOCKS = 4;
/**
 * Rows of T per pass over a tile's weights (larger T loops; the remainder runs a narrower variant). int8 x: 2 (this
 * CPU, one thread, 4 tokens: two passes of 2 2.9 ms, one pass of 4 3.3-4.2 ms; its per-token work is 4 instructions
 * a load, its accumulators and x quads then spill).
 */
const trMax = (m: MatSpec) => (m.act === 'i8' ? 2 : 4);
/** Items a matmul phase is cut into when T is small (each then covers several tiles: fewer atomic claims). */
const SMALL_T_ITEMS = 24;
/** Spins of a phase wait after which the kernel traps rather than hang (a bug, never a slow thread). */
const MAX_SPINS = 1 << 30;
/**
 * Spins before a waiting thread sleeps (memory.atomic.wait32, where the thread may block): on a loaded machine the
 * thread it waits for may be descheduled, and spinning would take the core it needs.
 */
const SPINS_BEFORE_SLEEP = 2048;
/** How long one sleep lasts at most (ns), and how many sleeps of one wait mean a hang. */
const SLEEP_NS = 200_000n;
const MAX_SLEEPS = 50_000;
/**
 * Up to this many tokens, each thread normalises and quantizes the activations a matmul reads into its own buffer
 * (a few µs, done twice) instead of a phase of T items that the other threads would wait for.
 */
export const SMALL_T = 4;
/**
 * Bytes per activation in the int16 layout: each k pair (2 codes) is stored 4 times over, as the dot products take it
 * (a plain load with a constant offset, where a broadcast from 4 bytes costs a shuffle or an address register).
 */
export const X_BYTES = 8;
/**
 * Bytes per activation in the int8 layout (x of a 4-bit matrix with `int8` set): per 8 k, the quads (x0, x4, x1, x5)
 * and (x2, x6, x3, x7), each stored 4 times over: the order of the low and high nibbles of 4 rows' codes in the q4
 * weight layout, so one relaxed dot product per nibble half takes 4 rows × 4 k.
 */
export const X8_BYTES = 4;
/** Bytes per activation group: its scale and its code sum, each 4 times over (vector loads, as X_BYTES). */
export const META_BYTES = 32;
/** i8x16.shuffle lanes broadcasting 32-bit lane p (V8 emits one pshufd). */
const lane32Splat = (p: number) => Array.from({ length: 16 }, (_, i) => 4 * p + (i & 3));
/**
 * Bytes per phase in the control block: the claim counter, and on its own cache line the done counter (+64), the
 * sleepers count (+68) and, per participant below WAIT_SLOTS, its spins and sleeps in the wait (+96 + 8t).
 */
export const PHASE_BYTES = 128;
export const WAIT_SLOTS = 4;

export interface LlmKernelSpec {
  D: number; H: number; KVH: number; hd: number; F: number; vocab: number; layers: number;
  /** KV cache positions (the row stride of the caches and the rope table). */
  cap: number;
  eps: number;
  /** Most tokens per launch. */
  tmax: number;
  qkv: MatFmt; o: MatFmt; gu: MatFmt; down: MatFmt; head: MatFmt;
  /**
   * The inputs of 4-bit matrices as int8 codes (per group, as the int16 ones), multiplied by relaxed SIMD's
   * i16x8.relaxed_dot_i8x16_i7x16_s (the module then needs relaxed SIMD). Other matrices keep int16 codes.
   */
  int8?: boolean;
  /**
   * q, k and v biases (Qwen2), added to the fused projection's outputs before the rotation: packed after its codes
   * (packRows' bias: f32x4 per row block), at a constant offset from its W.
   */
  qkvBias?: boolean;
  /**
   * Per-head RMSNorm of q and k before the rotation (Qwen3): the fused projection stores q and k unrotated, then a
   * phase of T·(H + KVH) items normalizes each head in place, scales it by its weights and rotates it. The weights
   * (qkNormRows: q's, then k's, f32x4 per rotary pair block) follow the projection's codes and biases, at a constant
   * offset from its W (qkNormOffset).
   */
  qkNorm?: boolean;
}

/** Slots (i32) of the pointer table the kernel reads: globals, then LAYER_SLOTS per layer. */
export const G_SLOT = { x: 0, hf: 1, xq: 2, xm: 3, qb: 4, att: 5, g: 6, logits: 7, rope: 8, ctl: 9, norm: 10, headW: 11, headS: 12, headZ: 13, priv: 14 } as const;
export const L_SLOT = { attnNorm: 0, qkvW: 1, qkvS: 2, qkvZ: 3, oW: 4, oS: 5, oZ: 6, mlpNorm: 7, guW: 8, guS: 9, guZ: 10, dW: 11, dS: 12, dZ: 13, kc: 14, vc: 15 } as const;
export const GLOBAL_SLOTS = 16, LAYER_SLOTS = 16;

/** Each thread's buffers for the small-T prologues: normed rows (f32), int16 codes, group scales and sums. */
export function privateLayout(s: LlmKernelSpec): { hf: number; xq: number; xm: number; bytes: number } {
  const groups = (f: MatFmt, K: number) => (f.kind === 'q' ? K / f.group : 0);
  const maxK = Math.max(s.D, s.H * s.hd, s.F);
  const maxG = Math.max(groups(s.qkv, s.D), groups(s.o, s.H * s.hd), groups(s.gu, s.D), groups(s.down, s.F), groups(s.head, s.D), 1);
  const up = (n: number) => Math.ceil(n / 64) * 64;
  const hf = 0, xq = up(SMALL_T * s.D * 4), xm = xq + up(SMALL_T * maxK * X_BYTES);
  return { hf, xq, xm, bytes: xm + up(SMALL_T * maxG * META_BYTES) };
}

/** Row blocks of each fused matrix (before padding to tiles). */
export function matrixBlocks(s: LlmKernelSpec) {
  return { qkv: (s.H * s.hd + 2 * s.KVH * s.hd) / 4, o: s.D / 4, gu: s.F / 2, down: s.D / 4, head: Math.ceil(s.vocab / 4) };
}
export const tilesOf = (blocks: number) => Math.ceil(blocks / TILE_BLOCKS);

/** Phases of one launch: the control block holds this many PHASE_BYTES entries. */
export function phaseCount(s: LlmKernelSpec): number {
  return s.layers * (7 + (s.qkNorm ? 1 : 0) + (s.o.kind === 'q' ? 1 : 0) + (s.down.kind === 'q' ? 1 : 0)) + 2;
}

const groupOf = (f: MatFmt) => (f.kind === 'q' ? f.group : 0);

/** Bytes of the fused q/k/v projection's codes (padding tiles included): where its biases start, past W. */
function qkvCodeBytes(s: LlmKernelSpec): number {
  const rows = tilesOf(matrixBlocks(s).qkv) * TILE_BLOCKS * 4;
  return s.qkv.kind === 'q' ? (rows * s.D * s.qkv.bits) / 8 : rows * s.D * 4;
}

/** Where the q/k norm weights start past the fused projection's W: after its codes and, with them, its biases. */
export function qkNormOffset(s: LlmKernelSpec): number {
  return qkvCodeBytes(s) + (s.qkvBias ? tilesOf(matrixBlocks(s).qkv) * TILE_BLOCKS * 16 : 0);
}

export function llmKernel(s: LlmKernelSpec): KernelSource {
  const key = `llm:${s.D},${s.H},${s.KVH},${s.hd},${s.F},${s.vocab},${s.layers},${s.cap},${s.eps},${s.tmax}:` +
    [s.qkv, s.o, s.gu, s.down, s.head].map(fmtKey).join(',') + (s.int8 ? ':i8' : '') + (s.qkvBias ? ':bias' : '') + (s.qkNorm ? ':qknorm' : '');
  return { key, bytes: () => buildLlm(s), wholeRange: true };
}

type Epilogue = 'rope' | 'residual' | 'silu' | 'store';

/** The codes a quantized matrix's input is stored as (int8 only for 4-bit codes, which fit relaxed SIMD's i7 operand). */
type Act = 'i16' | 'i8';
const actOf = (s: LlmKernelSpec, f: MatFmt): Act => (s.int8 && f.kind === 'q' && f.bits === 4 ? 'i8' : 'i16');
const xBytes = (a: Act) => (a === 'i8' ? X8_BYTES : X_BYTES);

interface MatSpec { name: string; fmt: MatFmt; K: number; blocks: number; ep: Epilogue; act: Act }

const add = (f: FunctionBuilder) => f.op(OP.i32_add);
const mul = (f: FunctionBuilder) => f.op(OP.i32_mul);
const simdMem = (f: FunctionBuilder, op: number, align: number, offset: number) => { f.code.u8(0xfd).u32(op).u32(align).u32(offset >>> 0); };
/** Threads-proposal opcodes (0xfe prefix) the builder lacks. */
const ATOMIC = { notify: 0x00, wait32: 0x01, rmwSub: 0x25 } as const;
const atomicOp = (f: FunctionBuilder, op: number, offset: number) => { f.code.u8(0xfe).u32(op).u32(2).u32(offset >>> 0); };
const store64Lane = (f: FunctionBuilder, offset: number, lane: number) => { simdMem(f, X.store64_lane, 0, offset); f.code.u8(lane); };
/**
 * Ends a basic block with a branch never taken (ptr + c is never 0 for a valid pointer; a different c each time, as
 * identical conditions would be folded into the first). TurboFan schedules a block's loads first and its pure
 * arithmetic as late as possible, so an unrolled body without these keeps every step's loads live at once and spills
 * most of them; the accumulators stored on the dead path pin each step's arithmetic before its branch.
 */
let barrierId = 0;
const barrier = (f: FunctionBuilder, ptr: Local, live: Local[]) => {
  barrierId = (barrierId % 4096) + 1;
  f.get(ptr); f.i32(barrierId * 4); add(f); f.op(OP.i32_eqz);
  f.if_(() => { for (const v of live) { f.get(ptr); f.get(v); f.v128_store(0, 0); } f.unreachable(); });
};

function buildLlm(s: LlmKernelSpec): Uint8Array {
  barrierId = 0; // the same spec gives the same bytes
  const mod = new ModuleBuilder();
  const { D, H, KVH, hd, F } = s;
  const blocks = matrixBlocks(s);
  const mats: Record<'qkv' | 'o' | 'gu' | 'down' | 'head', MatSpec> = {
    qkv: { name: 'qkv', fmt: s.qkv, K: D, blocks: blocks.qkv, ep: 'rope', act: actOf(s, s.qkv) },
    o: { name: 'o', fmt: s.o, K: H * hd, blocks: blocks.o, ep: 'residual', act: actOf(s, s.o) },
    gu: { name: 'gu', fmt: s.gu, K: D, blocks: blocks.gu, ep: 'silu', act: actOf(s, s.gu) },
    down: { name: 'down', fmt: s.down, K: F, blocks: blocks.down, ep: 'residual', act: actOf(s, s.down) },
    head: { name: 'head', fmt: s.head, K: D, blocks: blocks.head, ep: 'store', act: actOf(s, s.head) },
  };
  const quantFns = new Map<string, FunctionBuilder>();
  const quantFn = (K: number, group: number, act: Act) => {
    const k = `${K}:${group}:${act}`;
    let fn = quantFns.get(k);
    if (!fn) { fn = emitQuantRow(mod, K, group, act); quantFns.set(k, fn); }
    return fn;
  };
  const normFns = new Map<string, FunctionBuilder>();
  const normFn = (group: number, act: Act) => {
    const k = `${group}:${act}`;
    let fn = normFns.get(k);
    if (!fn) { fn = emitNorm(mod, s, group, group ? quantFn(D, group, act) : null, xBytes(act)); normFns.set(k, fn); }
    return fn;
  };
  const mmFns = new Map<string, FunctionBuilder>();
  for (const m of Object.values(mats)) mmFns.set(m.name, emitMatmul(mod, s, m));
  const attnFn = emitAttention(mod, s);
  const qkNormFn = s.qkNorm ? emitQkNorm(mod, s) : null;

  // sleep(ctl, seen): waits for the done counter at ctl+64 to change, SLEEP_NS at most. A function of its own: V8 11
  // (Node 20) clobbers a live local of the function that executes memory.atomic.wait32.
  const sleepFn = mod.func('sleep', ['i32', 'i32']);
  sleepFn.get(sleepFn.param(0)); sleepFn.get(sleepFn.param(1)); sleepFn.i64(SLEEP_NS); atomicOp(sleepFn, ATOMIC.wait32, 64); sleepFn.drop();

  // run(tab, T, p0, rows, canWait, t0, t1)
  const f = mod.func('run', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32']);
  const [tab, T, p0, rows, canWait, t0] = [0, 1, 2, 3, 4, 5].map((i) => f.param(i));
  const g = Object.fromEntries(Object.keys(G_SLOT).map((k) => [k, f.local('i32')])) as Record<keyof typeof G_SLOT, Local>;
  for (const [k, slot] of Object.entries(G_SLOT)) { f.get(tab); f.i32_load(slot * 4); f.set(g[k as keyof typeof G_SLOT]); }
  const lp = f.local('i32'), l = f.local('i32'), ph = f.local('i32'), cb = f.local('i32'), item = f.local('i32');
  const nItems = f.local('i32'), spins = f.local('i32'), sleeps = f.local('i32'), seen = f.local('i32');
  const tpi = f.local('i32'), it = f.local('i32'), itEnd = f.local('i32'), r = f.local('i32');
  // this thread's prologue buffers
  const PL = privateLayout(s);
  const hfP = f.local('i32'), xqP = f.local('i32'), xmP = f.local('i32');
  f.get(g.priv); f.get(t0); f.i32(PL.bytes); mul(f); add(f); f.tee(hfP); f.i32(PL.xq); add(f); f.set(xqP);
  f.get(hfP); f.i32(PL.xm); add(f); f.set(xmP);

  /** Items [0, n) taken by whoever comes first; then wait until all are done (spin, then sleep where allowed). */
  const phase = (pushItems: () => void, body: () => void) => {
    pushItems(); f.set(nItems);
    f.get(g.ctl); f.get(ph); f.i32(PHASE_BYTES); mul(f); add(f); f.set(cb);
    f.block(() => f.loop(() => {
      f.get(cb); f.i32(1); f.i32_atomic_rmw_add(0); f.tee(item);
      f.get(nItems); f.op(OP.i32_ge_s); f.br_if(1);
      body();
      // the last item wakes the sleepers
      f.get(cb); f.i32(1); f.i32_atomic_rmw_add(64); f.i32(1); add(f); f.get(nItems); f.op(OP.i32_eq);
      f.if_(() => {
        f.get(cb); f.i32_atomic_load(68);
        f.if_(() => { f.get(cb); f.i32(0x7fffffff); atomicOp(f, ATOMIC.notify, 64); f.drop(); });
      });
      f.br(0);
    }));
    f.i32(0); f.set(spins); f.i32(0); f.set(sleeps);
    f.block(() => f.loop(() => {
      f.get(cb); f.i32_atomic_load(64); f.tee(seen); f.get(nItems); f.op(OP.i32_ge_s); f.br_if(1);
      f.get(spins); f.i32(1); add(f); f.tee(spins); f.i32(MAX_SPINS); f.op(OP.i32_gt_u); f.if_(() => f.unreachable());
      f.get(canWait); f.get(spins); f.i32(SPINS_BEFORE_SLEEP); f.op(OP.i32_gt_u); f.op(OP.i32_and);
      f.if_(() => {
        f.get(cb); f.i32(1); f.i32_atomic_rmw_add(68); f.drop();
        f.get(cb); f.get(seen); call(f, mod.indexOf(sleepFn));
        f.get(cb); f.i32(1); atomicOp(f, ATOMIC.rmwSub, 68); f.drop();
        f.get(sleeps); f.i32(1); add(f); f.tee(sleeps); f.i32(MAX_SLEEPS); f.op(OP.i32_gt_u); f.if_(() => f.unreachable());
      });
      f.br(0);
    }));
    // this participant's wait in this phase (slots per participant on the done line; read by WasmLlm.waitStats)
    f.get(t0); f.i32(WAIT_SLOTS); f.op(OP.i32_lt_u);
    f.if_(() => {
      f.get(cb); f.get(t0); f.i32(8); mul(f); add(f); f.tee(it); f.get(it); f.i32_load(96); f.get(spins); add(f); f.i32_store(96);
      f.get(it); f.get(it); f.i32_load(100); f.get(sleeps); add(f); f.i32_store(100);
    });
    f.get(ph); f.i32(1); add(f); f.set(ph);
  };
  const layerPtr = (slot: number) => { f.get(lp); f.i32_load(slot * 4); };
  const zero = () => f.i32(0);
  const pushT = (nT: Local) => f.get(nT);

  /** A matmul phase over nT rows of X: items of tpi tiles (several when T is small). */
  const matmulPhase = (m: MatSpec, nT: Local, W: () => void, S: () => void, Z: () => void, Xin: Local, XM: Local,
    o1: () => void, o2: () => void = zero, o3: () => void = zero, o4: () => void = zero) => {
    const tiles = tilesOf(m.blocks);
    const small = Math.max(1, Math.ceil(tiles / SMALL_T_ITEMS));
    f.i32(small); f.i32(1); pushT(nT); f.i32(SMALL_T); f.op(OP.i32_le_s); f.select(); f.set(tpi);
    phase(() => { f.i32(tiles); f.get(tpi); add(f); f.i32(1); f.op(OP.i32_sub); f.get(tpi); f.op(OP.i32_div_u); }, () => {
      f.get(item); f.get(tpi); mul(f); f.set(it);
      f.get(it); f.get(tpi); add(f); f.tee(itEnd); f.i32(tiles); f.get(itEnd); f.i32(tiles); f.op(OP.i32_lt_s); f.select(); f.set(itEnd);
      f.block(() => f.loop(() => {
        f.get(it); f.get(itEnd); f.op(OP.i32_ge_s); f.br_if(1);
        f.get(it); pushT(nT); f.get(p0); W(); S(); Z(); f.get(Xin); f.get(XM); o1(); o2(); o3(); o4();
        call(f, mod.indexOf(mmFns.get(m.name)!));
        f.get(it); f.i32(1); add(f); f.set(it);
        f.br(0);
      }));
    });
  };

  /**
   * The activations a matmul reads, then the matmul: RMSNorm of rows rowBase + t of X (norm) or the int16 codes of a
   * buffer of f32 rows (quant, for a quantized matrix). Up to SMALL_T rows each thread prepares its own copy;
   * beyond, a phase of one item per row prepares the shared buffers.
   */
  type Prep = { kind: 'norm'; weight: () => void; rowBase?: () => void } | { kind: 'quant'; src: Local };
  const prepared = (m: MatSpec, prep: Prep, nT: Local, mm: (Xin: Local, XM: Local) => void) => {
    const K = m.K, group = groupOf(m.fmt);
    if (prep.kind === 'quant' && m.fmt.kind !== 'q') { mm(prep.src, g.xm); return; }
    const prepRow = (row: () => void, hfB: Local, xqB: Local, xmB: Local) => {
      if (prep.kind === 'norm') {
        if (prep.rowBase) { prep.rowBase(); row(); add(f); } else row();
        row(); f.get(g.x); prep.weight(); f.get(hfB); f.get(xqB); f.get(xmB);
        call(f, mod.indexOf(normFn(group, m.act)));
      } else {
        f.get(prep.src); row(); f.i32(K * 4); mul(f); add(f);
        f.get(xqB); row(); f.i32(K * xBytes(m.act)); mul(f); add(f);
        f.get(xmB); row(); f.i32((K / group) * META_BYTES); mul(f); add(f);
        call(f, mod.indexOf(quantFn(K, group, m.act)));
      }
    };
    const xIn = (xqB: Local, hfB: Local) => (m.fmt.kind === 'q' ? xqB : hfB);
    pushT(nT); f.i32(SMALL_T); f.op(OP.i32_le_s);
    f.if_(() => {
      f.for_(r, () => f.i32(0), () => pushT(nT), 1, () => prepRow(() => f.get(r), hfP, xqP, xmP));
      mm(xIn(xqP, hfP), xmP);
    }, () => {
      phase(() => pushT(nT), () => prepRow(() => f.get(item), g.hf, g.xq, g.xm));
      mm(xIn(g.xq, g.hf), g.xm);
    });
  };

  f.i32(0); f.set(ph);
  f.for_(l, () => f.i32(0), () => f.i32(s.layers), 1, () => {
    f.get(tab); f.get(l); f.i32(LAYER_SLOTS * 4); mul(f); add(f); f.i32(GLOBAL_SLOTS * 4); add(f); f.set(lp);
    // attention block
    prepared(mats.qkv, { kind: 'norm', weight: () => layerPtr(L_SLOT.attnNorm) }, T, (Xin, XM) =>
      matmulPhase(mats.qkv, T, () => layerPtr(L_SLOT.qkvW), () => layerPtr(L_SLOT.qkvS), () => layerPtr(L_SLOT.qkvZ), Xin, XM,
        () => f.get(g.qb), () => layerPtr(L_SLOT.kc), () => layerPtr(L_SLOT.vc), () => f.get(g.rope)));
    // Qwen3: each head of q and k normalized, then rotated, in place (the projection stored them unrotated)
    if (qkNormFn) {
      phase(() => { f.get(T); f.i32(H + KVH); mul(f); }, () => {
        f.get(item); f.get(p0); f.get(g.qb); layerPtr(L_SLOT.kc); layerPtr(L_SLOT.qkvW); f.get(g.rope);
        call(f, mod.indexOf(qkNormFn));
      });
    }
    phase(() => { f.get(T); f.i32(H); mul(f); }, () => {
      f.get(item); f.get(p0); f.get(g.qb); layerPtr(L_SLOT.kc); layerPtr(L_SLOT.vc); f.get(g.att);
      call(f, mod.indexOf(attnFn));
    });
    prepared(mats.o, { kind: 'quant', src: g.att }, T, (Xin, XM) =>
      matmulPhase(mats.o, T, () => layerPtr(L_SLOT.oW), () => layerPtr(L_SLOT.oS), () => layerPtr(L_SLOT.oZ), Xin, XM, () => f.get(g.x)));
    // MLP block
    prepared(mats.gu, { kind: 'norm', weight: () => layerPtr(L_SLOT.mlpNorm) }, T, (Xin, XM) =>
      matmulPhase(mats.gu, T, () => layerPtr(L_SLOT.guW), () => layerPtr(L_SLOT.guS), () => layerPtr(L_SLOT.guZ), Xin, XM, () => f.get(g.g)));
    prepared(mats.down, { kind: 'quant', src: g.g }, T, (Xin, XM) =>
      matmulPhase(mats.down, T, () => layerPtr(L_SLOT.dW), () => layerPtr(L_SLOT.dS), () => layerPtr(L_SLOT.dZ), Xin, XM, () => f.get(g.x)));
  });
  // logits of the last `rows` positions
  f.get(rows); f.if_(() => {
    prepared(mats.head, { kind: 'norm', weight: () => f.get(g.norm), rowBase: () => { f.get(T); f.get(rows); f.op(OP.i32_sub); } }, rows, (Xin, XM) =>
      matmulPhase(mats.head, rows, () => f.get(g.headW), () => f.get(g.headS), () => f.get(g.headZ), Xin, XM, () => f.get(g.logits)));
  });
  return mod.build();
}

// --- RMSNorm and activation quantization ------------------------------------------------------------

/**
 * quant(src, dstQ, dstM): one row of K floats to codes per group, with each group's scale (max|x| / qmax, f32) and
 * code sum (i32) at dstM + g*META_BYTES. Codes are round-to-nearest: |x - code*scale| <= scale/2. int16 codes
 * (qmax 32767) go in the int16 layout (X_BYTES each), int8 codes (qmax 127) in the int8 layout (X8_BYTES each).
 */
function emitQuantRow(mod: ModuleBuilder, K: number, group: number, act: Act): FunctionBuilder {
  const qmax = act === 'i8' ? 127 : 32767;
  const f = mod.func(`quant${K}g${group}${act}`, ['i32', 'i32', 'i32']);
  const [src, dq, dm] = [0, 1, 2].map((i) => f.param(i));
  const gi = f.local('i32'), mx = f.local('v128'), inv = f.local('v128'), sum = f.local('v128'), a = f.local('v128'), b = f.local('v128');
  const m = f.local('f32'), c = f.local('i32'), dqc = f.local('i32');
  f.for_(gi, () => f.i32(0), () => f.i32(K / group), 1, () => {
    f.f32x4_const(0); f.set(mx);
    f.for_(c, () => f.i32(0), () => f.i32(group * 4), 16, () => {
      f.get(mx); f.get(src); f.get(c); add(f); f.v128_load(0, 0); f.simd(SIMD.f32x4_abs); f.simd(SIMD.f32x4_max); f.set(mx);
    });
    emitHorizontal(f, mx, SIMD.f32x4_max); f.set(m);
    // scale = m / qmax and its inverse (0 for an all-zero group)
    f.get(dm); f.get(m); f.f32c(qmax); f.op(OP.f32_div); f.simd(SIMD.f32x4_splat); f.v128_store(0, 0);
    f.f32c(qmax); f.get(m); f.op(OP.f32_div); f.f32c(0); f.get(m); f.f32c(0); f.op(OP.f32_gt); f.select();
    f.simd(SIMD.f32x4_splat); f.set(inv);
    f.v128_const(new Uint8Array(16)); f.set(sum);
    f.for_(c, () => f.i32(0), () => f.i32(group * 4), 32, () => {
      f.get(src); f.get(c); add(f); f.v128_load(0, 0); f.get(inv); f.simd(SIMD.f32x4_mul); f.simd(SIMD.f32x4_nearest); f.simd(SIMD.i32x4_trunc_sat_f32x4_s); f.set(a);
      f.get(src); f.get(c); add(f); f.v128_load(16, 0); f.get(inv); f.simd(SIMD.f32x4_mul); f.simd(SIMD.f32x4_nearest); f.simd(SIMD.i32x4_trunc_sat_f32x4_s); f.set(b);
      f.get(sum); f.get(a); f.simd(SIMD.i32x4_add); f.get(b); f.simd(SIMD.i32x4_add); f.set(sum);
      f.get(a); f.get(b); f.simd(X.i16x8_narrow_i32x4_s); f.set(a);
      if (act === 'i16') {
        // 8 codes = 4 k pairs, each stored 4 times over (the broadcast the matmul's dot products take)
        f.get(dq); f.get(c); f.i32(1); f.op(OP.i32_shl); add(f); f.set(dqc);
        for (let q = 0; q < 4; q++) { f.get(dqc); f.get(a); f.get(a); f.i8x16_shuffle(lane32Splat(q)); f.v128_store(q * 16, 0); }
      } else {
        // the 8 codes as bytes (|code| <= 127: no saturation), then the quads (x0, x4, x1, x5) and (x2, x6, x3, x7)
        f.get(a); f.get(a); f.simd(X.i8x16_narrow_i16x8_s); f.set(a);
        f.get(dq); f.get(c); add(f); f.set(dqc);
        f.get(dqc); f.get(a); f.get(a); f.i8x16_shuffle(quadSplat([0, 4, 1, 5])); f.v128_store(0, 0);
        f.get(dqc); f.get(a); f.get(a); f.i8x16_shuffle(quadSplat([2, 6, 3, 7])); f.v128_store(16, 0);
      }
    });
    f.get(dm);
    for (let l = 0; l < 4; l++) { f.get(sum); f.simd(X.i32x4_extract_lane); f.code.u8(l); if (l) add(f); }
    f.simd(SIMD.i32x4_splat); f.v128_store(16, 0);
    f.get(src); f.i32(group * 4); add(f); f.set(src);
    f.get(dq); f.i32(group * xBytes(act)); add(f); f.set(dq);
    f.get(dm); f.i32(META_BYTES); add(f); f.set(dm);
  });
  return f;
}

/** i8x16.shuffle lanes repeating the bytes q (4 of them) 4 times. */
const quadSplat = (q: number[]) => Array.from({ length: 16 }, (_, i) => q[i & 3]);

/** r = splat(1 / sqrt(Σx²/n + eps)) of the n floats at xp (Σx² in f32, vector lanes then across them, as emitNorm's rows). */
function emitInvRms(f: FunctionBuilder, l: { xp: Local; c: Local; acc: Local; v: Local; r: Local }, n: number, eps: number): void {
  const { xp, c, acc, v, r } = l;
  f.f32x4_const(0); f.set(acc);
  f.for_(c, () => f.i32(0), () => f.i32(n * 4), 16, () => {
    f.get(acc); f.get(xp); f.get(c); add(f); f.v128_load(0, 0); f.tee(v); f.get(v); f.simd(SIMD.f32x4_mul); f.simd(SIMD.f32x4_add); f.set(acc);
  });
  f.f32c(1);
  emitHorizontal(f, acc, SIMD.f32x4_add); f.f32c(n); f.op(OP.f32_div); f.f32c(eps); f.op(OP.f32_add); f.op(OP.f32_sqrt);
  f.op(OP.f32_div); f.simd(SIMD.f32x4_splat); f.set(r);
}

/**
 * norm(rowIn, rowOut, X, W, HF, XQ, XM): HF[rowOut] = W ⊙ (X[rowIn] / rms), as the reference rounds it; then, for a
 * quantized consumer, its int16 codes into XQ/XM[rowOut].
 */
function emitNorm(mod: ModuleBuilder, s: LlmKernelSpec, group: number, quant: FunctionBuilder | null, xb: number): FunctionBuilder {
  const { D } = s;
  const f = mod.func(`norm_g${group}_x${xb}`, new Array(7).fill('i32'));
  const [rin, rout, Xp, Wp, HF, XQ, XM] = [0, 1, 2, 3, 4, 5, 6].map((i) => f.param(i));
  const xp = f.local('i32'), hp = f.local('i32'), acc = f.local('v128'), v = f.local('v128'), r = f.local('v128');
  const c = f.local('i32');
  f.get(Xp); f.get(rin); f.i32(D * 4); mul(f); add(f); f.set(xp);
  f.get(HF); f.get(rout); f.i32(D * 4); mul(f); add(f); f.set(hp);
  emitInvRms(f, { xp, c, acc, v, r }, D, s.eps);
  f.for_(c, () => f.i32(0), () => f.i32(D * 4), 16, () => {
    f.get(hp); f.get(c); add(f);
    f.get(Wp); f.get(c); add(f); f.v128_load(0, 0); f.get(xp); f.get(c); add(f); f.v128_load(0, 0); f.get(r); f.simd(SIMD.f32x4_mul); f.simd(SIMD.f32x4_mul);
    f.v128_store(0, 0);
  });
  if (quant) {
    f.get(hp);
    f.get(XQ); f.get(rout); f.i32(D * xb); mul(f); add(f);
    f.get(XM); f.get(rout); f.i32((D / group) * META_BYTES); mul(f); add(f);
    call(f, mod.indexOf(quant));
  }
  return f;
}

// --- matmuls --------------------------------------------------------------------------------------

/** Row blocks a pass of tr rows computes at once (the rest of the tile's blocks follow in turn). */
const blocksPerPass = (fmt: MatFmt, tr: number) => (tr === 1 ? 4 : fmt.kind === 'q' ? (tr === 2 ? 2 : 1) : 2);

/**
 * mm(tile, T, p0, W, S, Z, X, XM, O1, O2, O3, O4): the tile's TILE_BLOCKS row blocks for T rows of X, then the epilogue.
 * Rows go in passes of trMax, the remainder by a narrower pass.
 */
function emitMatmul(mod: ModuleBuilder, s: LlmKernelSpec, m: MatSpec): FunctionBuilder {
  const TR_MAX = trMax(m);
  const passes = Array.from({ length: TR_MAX }, (_, i) => emitPass(mod, s, m, i + 1));
  const f = mod.func(`mm_${m.name}`, new Array(12).fill('i32'));
  const [tile, T, p0, W, S, Z, Xp, XM, O1, O2, O3, O4] = [...Array(12).keys()].map((i) => f.param(i));
  const rb = f.local('i32'), t = f.local('i32');
  f.get(tile); f.i32(TILE_BLOCKS); mul(f); f.set(rb);
  const callPass = (tr: number) => {
    f.get(rb); f.get(t); f.get(W); f.get(S); f.get(Z); f.get(Xp); f.get(XM); f.get(O1); f.get(O2); f.get(O3); f.get(O4); f.get(p0);
    call(f, mod.indexOf(passes[tr - 1]));
  };
  f.i32(0); f.set(t);
  f.block(() => f.loop(() => {
    f.get(t); f.i32(TR_MAX); add(f); f.get(T); f.op(OP.i32_gt_s); f.br_if(1);
    callPass(TR_MAX);
    f.get(t); f.i32(TR_MAX); add(f); f.set(t);
    f.br(0);
  }));
  for (let tr = 1; tr < TR_MAX; tr++) {
    f.get(T); f.get(t); f.op(OP.i32_sub); f.i32(tr); f.op(OP.i32_eq);
    f.if_(() => callPass(tr));
  }
  return f;
}

/** pass(rb0, t0, W, S, Z, X, XM, O1, O2, O3, O4, p0): rows t0 … t0+tr-1 of the tile starting at row block rb0. */
function emitPass(mod: ModuleBuilder, s: LlmKernelSpec, m: MatSpec, tr: number): FunctionBuilder {
  const f = mod.func(`mm_${m.name}_t${tr}`, new Array(12).fill('i32'));
  const P = [...Array(12).keys()].map((i) => f.param(i));
  const [rb0, t0, W, S, Z, Xp, XM] = P;
  const rr = blocksPerPass(m.fmt, tr);
  const vecs = (n: number) => Array.from({ length: tr }, () => Array.from({ length: n }, () => f.local('v128')));
  const ep = new EpilogueEmitter(f, s, m, { t0, W, O1: P[7], O2: P[8], O3: P[9], O4: P[10], p0: P[11] });
  const K = m.K;
  const fmt = m.fmt;
  if (fmt.kind === 'q') {
    // Runs of rr blocks, each in registers. int8 x, or one token: every run within one loop over the groups (the
    // codes of the tile's blocks are interleaved, Q_INTERLEAVE, so this reads one stream); int16 x with several
    // tokens: run after run (4 f32 sums a token and run would spill: this CPU, 2 tokens 2.6 vs 3.3 ms).
    const acc = vecs(rr), facc = vecs(TILE_BLOCKS);
    const q = (runs: number[]) => {
      const p = { rb0, t0, W, S, Z, Xp, XM };
      if (m.act === 'i8') emitQBody8(f, fmt.group, K, tr, rr, runs, p, acc, facc);
      else emitQBody(f, fmt, K, tr, rr, runs, p, acc, facc);
      for (const rbOff of runs) for (let t = 0; t < tr; t++) for (let r = 0; r < rr; r++) ep.emit(t, rbOff + r, facc[t][rbOff + r]);
    };
    const runs = Array.from({ length: TILE_BLOCKS / rr }, (_, i) => i * rr);
    if (m.act === 'i8' || tr === 1) q(runs); else for (const r of runs) q([r]);
    return f;
  }
  const facc = vecs(rr);
  for (let sb = 0; sb < TILE_BLOCKS / rr; sb++) {
    emitFBody(f, K, tr, rr, sb * rr, { rb0, t0, W, Xp }, facc);
    for (let t = 0; t < tr; t++) for (let r = 0; r < rr; r++) ep.emit(t, sb * rr + r, facc[t][r]);
  }
  return f;
}

const i32x4Zero = (f: FunctionBuilder) => f.v128_const(new Uint8Array(16));

/**
 * Integer dot products of the codes with int16 activations, scaled per group into facc[t][block] (f32) for the
 * tile's TILE_BLOCKS blocks, rr blocks at a time.
 */
function emitQBody(f: FunctionBuilder, fmt: { bits: 4 | 8; group: number }, K: number, tr: number, rr: number, runs: number[],
  p: { rb0: Local; t0: Local; W: Local; S: Local; Z: Local; Xp: Local; XM: Local }, acc: Local[][], facc: Local[][]): void {
  const { bits, group } = fmt, G = K / group;
  const rbBytes = (K * bits) / 2, gBytes = (group * bits) / 2;
  const kPerLoad = bits === 4 ? 8 : 4, loads = group / kPerLoad, pairs = kPerLoad / 2;
  const wp = f.local('i32'), sp = f.local('i32'), zp = f.local('i32'), xp = f.local('i32'), mp = f.local('i32'), gi = f.local('i32');
  const mask = f.local('v128'), w = f.local('v128'), pv = f.local('v128'), s4 = f.local('v128'), z4 = f.local('v128');
  f.i32(bits === 4 ? 0x0f : 0xff); f.simd(X.i16x8_splat); f.set(mask);
  const at = qPointers(f, p, { rbBytes, G, gBytes }, { wp, sp, zp });
  f.get(p.t0); f.i32(K * X_BYTES); mul(f); f.get(p.Xp); add(f); f.set(xp);
  f.get(p.t0); f.i32(G * META_BYTES); mul(f); f.get(p.XM); add(f); f.set(mp);
  for (const rbOff of runs) for (let t = 0; t < tr; t++) for (let r = 0; r < rr; r++) { f.f32x4_const(0); f.set(facc[t][rbOff + r]); }
  // One row: its x pair vectors of a load step stay in registers for all rr blocks.
  const shareX = tr === 1 && rr > 1;
  const xs = shareX ? Array.from({ length: pairs }, () => f.local('v128')) : [];
  f.for_(gi, () => f.i32(0), () => f.i32(G), 1, () => eachRun(runs, (rbOff) => {
    for (let t = 0; t < tr; t++) for (let r = 0; r < rr; r++) { i32x4Zero(f); f.set(acc[t][r]); }
    for (let li = 0; li < loads; li++) {
      if (shareX) for (let j = 0; j < pairs; j++) { f.get(xp); f.v128_load(((li * kPerLoad) / 2 + j) * 16, 0); f.set(xs[j]); }
      for (let r = 0; r < rr; r++) {
        f.get(wp); f.v128_load(at.w(rbOff + r, li), 0); f.set(w);
        for (let j = 0; j < pairs; j++) {
          // pair vector j: field j of each i16 lane
          f.get(w);
          if (j) { f.i32(j * bits); f.simd(X.i16x8_shr_u); }
          if (j < pairs - 1) { f.get(mask); f.simd(SIMD.v128_and); }
          f.set(pv);
          const pair = (li * kPerLoad) / 2 + j;
          for (let t = 0; t < tr; t++) {
            f.get(acc[t][r]); f.get(pv);
            if (shareX) f.get(xs[j]); else { f.get(xp); f.v128_load(t * K * X_BYTES + pair * 16, 0); }
            f.simd(X.i32x4_dot_i16x8_s); f.simd(SIMD.i32x4_add); f.set(acc[t][r]);
          }
        }
        barrier(f, wp, [...acc.flat(), ...xs]);
      }
    }
    scaleGroup(f, G, tr, rr, rbOff, at, { sp, zp, mp, s4, z4 }, acc, facc);
  }, () => {
    at.next();
    f.get(xp); f.i32(group * X_BYTES); add(f); f.set(xp);
    f.get(mp); f.i32(META_BYTES); add(f); f.set(mp);
  }));
}

/** body(first block) for each run of blocks, then the step to the next group. */
function eachRun(runs: number[], body: (rbOff: number) => void, step: () => void): void {
  for (const rbOff of runs) body(rbOff);
  step();
}

/**
 * Where a tile's row blocks keep their codes, scales and zero points (the Q_INTERLEAVE layout of wasm_pack): sets wp,
 * sp and zp to the tile's group 0 and gives the constant offsets of block j of the tile and load li from them; next()
 * steps the three to the next group.
 */
function qPointers(f: FunctionBuilder, p: { rb0: Local; W: Local; S: Local; Z: Local }, m: { rbBytes: number; G: number; gBytes: number },
  l: { wp: Local; sp: Local; zp: Local }) {
  const I = Q_INTERLEAVE, { rbBytes, G, gBytes } = m;
  const run = (j: number) => j - (j % I), inRun = (j: number) => j % I;
  f.get(p.rb0); f.i32(rbBytes); mul(f); f.get(p.W); add(f); f.set(l.wp);
  f.get(p.rb0); f.i32(G * 16); mul(f); f.get(p.S); add(f); f.set(l.sp);
  f.get(p.rb0); f.i32(G * 4); mul(f); f.get(p.Z); add(f); f.set(l.zp);
  return {
    w: (j: number, li: number) => run(j) * rbBytes + li * I * 16 + inRun(j) * 16,
    s: (j: number) => run(j) * G * 16 + inRun(j) * 16,
    z: (j: number) => run(j) * G * 4 + inRun(j) * 4,
    next: () => {
      f.get(l.wp); f.i32(I * gBytes); add(f); f.set(l.wp);
      f.get(l.sp); f.i32(I * 16); add(f); f.set(l.sp);
      f.get(l.zp); f.i32(I * 4); add(f); f.set(l.zp);
    },
  };
}

/**
 * A group's integer sums of blocks rbOff … rbOff+rr-1 into facc: facc += f32(acc - zero·Σcodes) · scale · xscale, per
 * token and row block.
 */
function scaleGroup(f: FunctionBuilder, G: number, tr: number, rr: number, rbOff: number, at: { s: (j: number) => number; z: (j: number) => number },
  l: { sp: Local; zp: Local; mp: Local; s4: Local; z4: Local }, acc: Local[][], facc: Local[][]): void {
  const { sp, zp, mp, s4, z4 } = l;
  for (let r = 0; r < rr; r++) {
    f.get(sp); f.v128_load(at.s(rbOff + r), 0); f.set(s4);
    f.get(zp); f.i32_load(at.z(rbOff + r)); f.simd(SIMD.i32x4_splat); f.simd(X.i16x8_extend_low_i8x16_u); f.simd(X.i32x4_extend_low_i16x8_u); f.set(z4);
    for (let t = 0; t < tr; t++) {
      f.get(facc[t][rbOff + r]);
      f.get(acc[t][r]); f.get(z4); f.get(mp); f.v128_load(t * G * META_BYTES + 16, 0); f.simd(SIMD.i32x4_mul); f.simd(SIMD.i32x4_sub);
      f.simd(SIMD.f32x4_convert_i32x4_s); f.get(s4); f.simd(SIMD.f32x4_mul);
      f.get(mp); f.v128_load(t * G * META_BYTES, 0); f.simd(SIMD.f32x4_mul);
      f.simd(SIMD.f32x4_add); f.set(facc[t][rbOff + r]);
    }
  }
}

/** Relaxed dot products added in i16 before widening: each adds at most 2 · 15 · 127, so 8 stay below 2^15. */
const I16_SUMS = 8;

/**
 * 4-bit codes with int8 x (relaxed SIMD). A 16-byte load holds 4 rows × 8 k; its low nibbles (v128.and) and high
 * nibbles (i16x8.shr_u and the same mask: V8 lowers i8x16.shr_u to 5 instructions) are each 4 rows × 4 k, multiplied
 * with x's matching quad by i16x8.relaxed_dot_i8x16_i7x16_s (the codes, 0 … 15, are its 7-bit operand: exact on every
 * engine). Up to I16_SUMS products add in i16 lanes, which i32x4.extadd_pairwise_i16x8_s then sums per row. The
 * integer sums are exact, as the int16 path's.
 */
function emitQBody8(f: FunctionBuilder, group: number, K: number, tr: number, rr: number, runs: number[],
  p: { rb0: Local; t0: Local; W: Local; S: Local; Z: Local; Xp: Local; XM: Local }, acc: Local[][], facc: Local[][]): void {
  const G = K / group, rbBytes = K * 2, gBytes = group * 2, loads = group / 8, perChunk = I16_SUMS / 2;
  const wp = f.local('i32'), sp = f.local('i32'), zp = f.local('i32'), xp = f.local('i32'), mp = f.local('i32'), gi = f.local('i32');
  const mask = f.local('v128'), w = f.local('v128'), lo = f.local('v128'), hi = f.local('v128'), s4 = f.local('v128'), z4 = f.local('v128');
  const a16 = Array.from({ length: tr }, () => Array.from({ length: rr }, () => f.local('v128')));
  // Several row blocks: each token's two x quads of a load step stay in registers for all of them.
  const xs = rr > 1 ? Array.from({ length: 2 * tr }, () => f.local('v128')) : [];
  const pushX = (t: number, li: number, half: number) => {
    if (xs.length) f.get(xs[2 * t + half]); else { f.get(xp); f.v128_load(t * K * X8_BYTES + li * 32 + half * 16, 0); }
  };
  f.v128_const(new Uint8Array(16).fill(0x0f)); f.set(mask);
  const at = qPointers(f, p, { rbBytes, G, gBytes }, { wp, sp, zp });
  f.get(p.t0); f.i32(K * X8_BYTES); mul(f); f.get(p.Xp); add(f); f.set(xp);
  f.get(p.t0); f.i32(G * META_BYTES); mul(f); f.get(p.XM); add(f); f.set(mp);
  for (const rbOff of runs) for (let t = 0; t < tr; t++) for (let r = 0; r < rr; r++) { f.f32x4_const(0); f.set(facc[t][rbOff + r]); }
  f.for_(gi, () => f.i32(0), () => f.i32(G), 1, () => eachRun(runs, (rbOff) => {
    for (let li = 0; li < loads; li++) {
      const first = li % perChunk === 0;
      for (let t = 0; t < xs.length / 2; t++) for (let h = 0; h < 2; h++) { f.get(xp); f.v128_load(t * K * X8_BYTES + li * 32 + h * 16, 0); f.set(xs[2 * t + h]); }
      for (let r = 0; r < rr; r++) {
        f.get(wp); f.v128_load(at.w(rbOff + r, li), 0); f.tee(w); f.get(mask); f.simd(SIMD.v128_and); f.set(lo);
        f.get(w); f.i32(4); f.simd(X.i16x8_shr_u); f.get(mask); f.simd(SIMD.v128_and); f.set(hi);
        for (let t = 0; t < tr; t++) {
          pushX(t, li, 0); f.get(lo); f.simd(X.i16x8_relaxed_dot_i8x16_i7x16_s);
          pushX(t, li, 1); f.get(hi); f.simd(X.i16x8_relaxed_dot_i8x16_i7x16_s);
          f.simd(X.i16x8_add);
          if (!first) { f.get(a16[t][r]); f.simd(X.i16x8_add); }
          f.set(a16[t][r]);
        }
        barrier(f, wp, [...a16.flat(), ...acc.flat(), ...xs]);
      }
      if ((li + 1) % perChunk === 0 || li === loads - 1) {
        // widen the chunk's i16 sums into the group's i32 sums (the first chunk sets them)
        for (let t = 0; t < tr; t++) for (let r = 0; r < rr; r++) {
          f.get(a16[t][r]); f.simd(X.i32x4_extadd_pairwise_i16x8_s);
          if (li >= perChunk) { f.get(acc[t][r]); f.simd(SIMD.i32x4_add); }
          f.set(acc[t][r]);
        }
      }
    }
    scaleGroup(f, G, tr, rr, rbOff, at, { sp, zp, mp, s4, z4 }, acc, facc);
  }, () => {
    at.next();
    f.get(xp); f.i32(group * X8_BYTES); add(f); f.set(xp);
    f.get(mp); f.i32(META_BYTES); add(f); f.set(mp);
  }));
}

/**
 * f32 weights: facc[t][r] = Σ_k W[block r][k] * x[t][k] (4 rows per vector). x is read 4 k at a time and broadcast by
 * lane shuffles (a load32_splat per k would need an address register each).
 */
function emitFBody(f: FunctionBuilder, K: number, tr: number, rr: number, rbOff: number,
  p: { rb0: Local; t0: Local; W: Local; Xp: Local }, facc: Local[][]): void {
  const U = 4;
  const wp = f.local('i32'), xp = f.local('i32'), ki = f.local('i32'), xs = f.local('v128');
  const w = Array.from({ length: rr }, () => f.local('v128'));
  const xv = Array.from({ length: tr }, () => f.local('v128'));
  f.get(p.rb0); if (rbOff) { f.i32(rbOff); add(f); } f.i32(K * 16); mul(f); f.get(p.W); add(f); f.set(wp);
  f.get(p.t0); f.i32(K * 4); mul(f); f.get(p.Xp); add(f); f.set(xp);
  for (let t = 0; t < tr; t++) for (let r = 0; r < rr; r++) { f.f32x4_const(0); f.set(facc[t][r]); }
  /** k step u of a block of 4: x[t][k] is lane u of xv[t] (loadX) or a splat load (the ragged tail). */
  const step = (u: number, fromVector: boolean) => {
    for (let r = 0; r < rr; r++) { f.get(wp); f.v128_load(r * K * 16 + u * 16, 0); f.set(w[r]); }
    for (let t = 0; t < tr; t++) {
      if (fromVector) { f.get(xv[t]); f.get(xv[t]); f.i8x16_shuffle(lane32Splat(u)); }
      else { f.get(xp); f.v128_load32_splat(t * K * 4 + u * 4); }
      f.set(xs);
      for (let r = 0; r < rr; r++) {
        f.get(facc[t][r]); f.get(w[r]); f.get(xs); f.simd(SIMD.f32x4_mul); f.simd(SIMD.f32x4_add); f.set(facc[t][r]);
      }
    }
    barrier(f, wp, facc.flat());
  };
  const iters = Math.floor(K / U);
  if (iters) {
    f.for_(ki, () => f.i32(0), () => f.i32(iters), 1, () => {
      for (let t = 0; t < tr; t++) { f.get(xp); f.v128_load(t * K * 4, 0); f.set(xv[t]); }
      for (let u = 0; u < U; u++) step(u, true);
      f.get(wp); f.i32(U * 16); add(f); f.set(wp);
      f.get(xp); f.i32(U * 4); add(f); f.set(xp);
    });
  }
  for (let u = 0; u < K % U; u++) step(u, false);
}

/** Writes a result vector (4 rows of one row block for one token) where its matrix's consumer wants it. */
class EpilogueEmitter {
  private readonly addr: Local;
  private readonly rb: Local;
  private readonly tmp: Local;
  private readonly tmp2: Local;
  private readonly temps?: ActTemps;
  constructor(private readonly f: FunctionBuilder, private readonly s: LlmKernelSpec, private readonly m: MatSpec,
    private readonly p: { t0: Local; W: Local; O1: Local; O2: Local; O3: Local; O4: Local; p0: Local }) {
    this.addr = f.local('i32'); this.rb = f.local('i32'); this.tmp = f.local('i32');
    this.tmp2 = f.local('v128');
    if (m.ep === 'silu') this.temps = new ActTemps(f);
  }

  /** Pushes the absolute token row t0 + t. */
  private row(t: number): void { const f = this.f; f.get(this.p.t0); if (t) { f.i32(t); add(f); } }

  emit(t: number, rbOff: number, v: Local): void {
    const { f, s, m, p } = this;
    // rb = rb0 + rbOff (rb0 is the pass's first parameter)
    f.get(f.param(0)); if (rbOff) { f.i32(rbOff); add(f); } f.set(this.rb);
    const padded = tilesOf(m.blocks) * TILE_BLOCKS !== m.blocks;
    const guarded = (limit: number, body: () => void) => {
      if (!padded) { body(); return; }
      f.get(this.rb); f.i32(limit); f.op(OP.i32_lt_s); f.if_(body);
    };
    switch (m.ep) {
      case 'residual':
        guarded(m.blocks, () => {
          this.row(t); f.i32(s.D * 4); mul(f); f.get(this.rb); f.i32(16); mul(f); add(f); f.get(p.O1); add(f); f.tee(this.addr);
          f.get(this.addr); f.v128_load(0, 0); f.get(v); f.simd(SIMD.f32x4_add); f.v128_store(0, 0);
        });
        return;
      case 'store': {
        const Np = tilesOf(m.blocks) * TILE_BLOCKS * 4;
        this.row(t); f.i32(Np * 4); mul(f); f.get(this.rb); f.i32(16); mul(f); add(f); f.get(p.O1); add(f);
        f.get(v); f.v128_store(0, 0);
        return;
      }
      case 'silu':
        // rb 2b is gate block b, rb 2b+1 its up block: the gate waits in G until its up arrives (same pass or the next)
        guarded(m.blocks, () => {
          this.row(t); f.i32(s.F * 4); mul(f); f.get(this.rb); f.i32(1); f.op(OP.i32_shr_u); f.i32(16); mul(f); add(f); f.get(p.O1); add(f); f.set(this.addr);
          if (rbOff % 2 === 0) { f.get(this.addr); f.get(v); f.v128_store(0, 0); return; }
          f.get(this.addr); f.v128_load(0, 0); f.set(this.tmp2);
          emitActivation(f, 'silu', this.tmp2, this.temps!);
          f.get(this.addr); f.get(this.tmp2); f.get(v); f.simd(SIMD.f32x4_mul); f.v128_store(0, 0);
        });
        return;
      case 'rope':
        this.rope(t, v);
        return;
    }
  }

  /**
   * q and k blocks: rotate (rotary pairs i, i+1 | i+half, i+half+1 in one vector) and store to Q / the K cache; v
   * blocks to the V cache. With biases, v first gets its block's (the f32x4 at W + rb·16 past the matrix's codes).
   */
  private rope(t: number, v: Local): void {
    const { f, s, m, p } = this;
    const { H, KVH, hd, cap } = s;
    const qB = (H * hd) / 4, kB = (KVH * hd) / 4, bph = hd / 4;
    if (s.qkvBias) {
      f.get(this.rb); f.i32(16); mul(f); f.get(p.W); add(f); f.v128_load(qkvCodeBytes(s), 0); f.get(v); f.simd(SIMD.f32x4_add); f.set(v);
    }
    const pos = this.tmp;
    this.row(t); f.get(p.p0); add(f); f.set(pos);
    /**
     * Rotates v into tmp2 with the table row at ROPE + (pos*bph + block%bph)*32 (C, then S), then stores at dst. With
     * q/k norms, v as it is (the norm phase rotates it).
     */
    const ropeAt = (partOff: number, dst: (head: () => void, i: () => void) => void) => {
      const bl = () => { f.get(this.rb); if (partOff) { f.i32(partOff); f.op(OP.i32_sub); } };
      if (s.qkNorm) { f.get(v); f.set(this.tmp2); } else {
        f.get(v);
        f.get(pos); f.i32(bph); mul(f); bl(); f.i32(bph); f.op(OP.i32_rem_u); add(f); f.i32(32); mul(f);
        f.get(p.O4); add(f); f.tee(this.addr); f.v128_load(0, 0); f.simd(SIMD.f32x4_mul);
        f.get(v); f.get(v); f.i8x16_shuffle(SWAP64);
        f.get(this.addr); f.v128_load(16, 0); f.simd(SIMD.f32x4_mul); f.simd(SIMD.f32x4_add); f.set(this.tmp2);
      }
      dst(() => { bl(); f.i32(bph); f.op(OP.i32_div_u); }, () => { bl(); f.i32(bph); f.op(OP.i32_rem_u); f.i32(2); mul(f); });
      f.get(this.addr); f.get(this.tmp2); store64Lane(f, 0, 0);
      f.get(this.addr); f.get(this.tmp2); store64Lane(f, (hd / 2) * 4, 1);
    };
    f.get(this.rb); f.i32(qB); f.op(OP.i32_lt_s);
    f.if_(() => {
      // Q[row][head][i]
      ropeAt(0, (head, i) => {
        this.row(t); f.i32(H * hd); mul(f); head(); f.i32(hd); mul(f); add(f); i(); add(f); f.i32(4); mul(f); f.get(p.O1); add(f); f.set(this.addr);
      });
    }, () => {
      f.get(this.rb); f.i32(qB + kB); f.op(OP.i32_lt_s);
      f.if_(() => {
        // K cache[j][pos][i]
        ropeAt(qB, (head, i) => {
          head(); f.i32(cap); mul(f); f.get(pos); add(f); f.i32(hd); mul(f); i(); add(f); f.i32(4); mul(f); f.get(p.O2); add(f); f.set(this.addr);
        });
      }, () => {
        f.get(this.rb); f.i32(qB + 2 * kB); f.op(OP.i32_lt_s);
        f.if_(() => {
          // V cache[j][pos][d0 % hd], d0 = (rb - qB - kB)*4 over all kv heads, j = d0 / hd
          f.get(this.rb); f.i32(qB + kB); f.op(OP.i32_sub); f.i32(4); mul(f); f.set(this.addr);
          f.get(this.addr); f.i32(hd); f.op(OP.i32_div_u); f.i32(cap); mul(f); f.get(pos); add(f); f.i32(hd); mul(f);
          f.get(this.addr); f.i32(hd); f.op(OP.i32_rem_u); add(f); f.i32(4); mul(f); f.get(p.O3); add(f);
          f.get(v); f.v128_store(0, 0);
        });
      });
    });
  }
}

/** i8x16.shuffle lanes swapping the 64-bit halves: (a, a+1 | d, d+1) to (d, d+1 | a, a+1). */
const SWAP64 = [8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7];

// --- q/k norms (Qwen3) ----------------------------------------------------------------------------

/**
 * qknorm(item, p0, QB, KC, NW, ROPE): token t = item / (H+KVH), head j = item % (H+KVH): q head j (row QB[t][j]) or,
 * j >= H, kv head j-H of the K cache at position p0+t. Its hd values x (as the fused projection stored them, in
 * order) become w ⊙ (x / rms) as the reference rounds it (Σx² in f32), w q's or k's weights at NW + qkNormOffset,
 * then rotated by the table row of p0+t, in place: rotary pair block b (dims 2b, 2b+1 | half+2b, half+2b+1) is one
 * vector, as in the projection's epilogue; the weights are laid out alike (qkNormRows).
 */
function emitQkNorm(mod: ModuleBuilder, s: LlmKernelSpec): FunctionBuilder {
  const { H, KVH, hd, cap } = s;
  const half = hd / 2, bph = hd / 4;
  const f = mod.func('qknorm', new Array(6).fill('i32'));
  const [item, p0, QB, KC, NW, ROPE] = [0, 1, 2, 3, 4, 5].map((i) => f.param(i));
  const t = f.local('i32'), j = f.local('i32'), pos = f.local('i32'), xp = f.local('i32'), wp = f.local('i32'), rp = f.local('i32');
  const c = f.local('i32'), acc = f.local('v128'), v = f.local('v128'), r = f.local('v128');
  f.get(item); f.i32(H + KVH); f.op(OP.i32_div_u); f.set(t);
  f.get(item); f.i32(H + KVH); f.op(OP.i32_rem_u); f.set(j);
  f.get(p0); f.get(t); add(f); f.set(pos);
  f.get(pos); f.i32(bph * 32); mul(f); f.get(ROPE); add(f); f.set(rp);
  f.get(NW); f.i32(qkNormOffset(s)); add(f); f.set(wp);
  f.get(j); f.i32(H); f.op(OP.i32_lt_u);
  f.if_(() => {
    f.get(t); f.i32(H); mul(f); f.get(j); add(f); f.i32(hd * 4); mul(f); f.get(QB); add(f); f.set(xp);
  }, () => {
    f.get(j); f.i32(H); f.op(OP.i32_sub); f.i32(cap); mul(f); f.get(pos); add(f); f.i32(hd * 4); mul(f); f.get(KC); add(f); f.set(xp);
    f.get(wp); f.i32(hd * 4); add(f); f.set(wp);
  });
  emitInvRms(f, { xp, c, acc, v, r }, hd, s.eps);
  f.for_(c, () => f.i32(0), () => f.i32(bph), 1, () => {
    // v = w ⊙ (x · r) of dims (i, i+1 | i+half, i+half+1), i = 2c
    f.get(xp); simdMem(f, X.load64_zero, 0, 0); f.set(v);
    f.get(xp); f.get(v); simdMem(f, X.load64_lane, 0, half * 4); f.code.u8(1);
    f.get(r); f.simd(SIMD.f32x4_mul); f.get(wp); f.v128_load(0, 0); f.simd(SIMD.f32x4_mul); f.set(v);
    // rotated: v·C + swap(v)·S
    f.get(v); f.get(rp); f.v128_load(0, 0); f.simd(SIMD.f32x4_mul);
    f.get(v); f.get(v); f.i8x16_shuffle(SWAP64); f.get(rp); f.v128_load(16, 0); f.simd(SIMD.f32x4_mul); f.simd(SIMD.f32x4_add); f.set(v);
    f.get(xp); f.get(v); store64Lane(f, 0, 0);
    f.get(xp); f.get(v); store64Lane(f, half * 4, 1);
    f.get(xp); f.i32(8); add(f); f.set(xp);
    f.get(wp); f.i32(16); add(f); f.set(wp);
    f.get(rp); f.i32(32); add(f); f.set(rp);
  });
  return f;
}

// --- attention ------------------------------------------------------------------------------------

/**
 * Softmax terms are taken relative to a reference max that is raised only when a block's max exceeds it by more than
 * this (e^8 ~ 3e3 bounds the terms): the output row and the sum are then rescaled, far less often than every block.
 * The final division makes the result the softmax of the reference up to rounding.
 */
const LAZY_MAX = 8;

/**
 * attn(item, p0, QB, KC, VC, OUT): token t = item / H, head h = item % H over cache positions 0 … p0+t (causal), in
 * blocks of 4 keys with an online softmax (a running reference max and sum; the output row accumulates in place).
 */
function emitAttention(mod: ModuleBuilder, s: LlmKernelSpec): FunctionBuilder {
  const { H, KVH, hd, cap } = s;
  const rep = H / KVH, C = hd / 4, scale = 1 / Math.sqrt(hd);
  const f = mod.func('attn', new Array(6).fill('i32'));
  const [item, p0, QB, KC, VC, OUT] = [0, 1, 2, 3, 4, 5].map((i) => f.param(i));
  const t = f.local('i32'), h = f.local('i32'), n = f.local('i32'), qp = f.local('i32'), kp = f.local('i32'), vp = f.local('i32');
  const op = f.local('i32'), s0 = f.local('i32');
  const mref = f.local('f32'), lsum = f.local('f32'), bm = f.local('f32');
  const a = [0, 1, 2, 3].map(() => f.local('v128'));
  const qv = f.local('v128'), sc = f.local('v128'), tmpv = f.local('v128'), valid = f.local('v128'), pv = f.local('v128');
  const pk = [0, 1, 2, 3].map(() => f.local('v128'));
  const ex = new ExpNonPositive(f);
  // V8 materializes a v128.const at every use (3 instructions): the loop's constants live in locals
  const iota = f.local('v128'), negInf = f.local('v128'), scaleV = f.local('v128');
  f.v128_const(new Uint8Array(new Int32Array([0, 1, 2, 3]).buffer)); f.set(iota);
  f.f32x4_const(-Infinity); f.set(negInf);
  f.f32x4_const(scale); f.set(scaleV);
  f.get(item); f.i32(H); f.op(OP.i32_div_u); f.set(t);
  f.get(item); f.i32(H); f.op(OP.i32_rem_u); f.set(h);
  f.get(p0); f.get(t); add(f); f.i32(1); add(f); f.set(n);
  f.get(QB); f.get(item); f.i32(hd * 4); mul(f); add(f); f.set(qp);
  f.get(h); f.i32(rep); f.op(OP.i32_div_u); f.i32(cap * hd * 4); mul(f); f.tee(kp); f.get(VC); add(f); f.set(vp);
  f.get(kp); f.get(KC); add(f); f.set(kp);
  f.get(OUT); f.get(item); f.i32(hd * 4); mul(f); add(f); f.set(op);
  for (let c = 0; c < C; c++) { f.get(op); f.f32x4_const(0); f.v128_store(c * 16, 0); }
  f.f32c(-Infinity); f.set(mref); f.f32c(0); f.set(lsum);
  f.i32(0); f.set(s0);
  f.block(() => f.loop(() => {
    // scores of keys s0 … s0+3
    for (let k = 0; k < 4; k++) { f.f32x4_const(0); f.set(a[k]); }
    for (let c = 0; c < C; c++) {
      f.get(qp); f.v128_load(c * 16, 0); f.set(qv);
      for (let k = 0; k < 4; k++) {
        f.get(a[k]); f.get(qv); f.get(kp); f.v128_load(k * hd * 4 + c * 16, 0); f.simd(SIMD.f32x4_mul); f.simd(SIMD.f32x4_add); f.set(a[k]);
      }
      if (c % 2 === 1 && c < C - 1) barrier(f, kp, a);
    }
    emitReduce4(f, a[0], a[1], a[2], a[3], tmpv); f.get(scaleV); f.simd(SIMD.f32x4_mul); f.set(sc);
    // keys at or past n: -inf
    f.get(iota); f.get(n); f.get(s0); f.op(OP.i32_sub); f.simd(SIMD.i32x4_splat); f.simd(X.i32x4_lt_s); f.set(valid);
    f.get(sc); f.get(negInf); f.get(valid); f.simd(SIMD.v128_bitselect); f.tee(sc); f.set(pv);
    emitHorizontal(f, pv, SIMD.f32x4_pmax); f.tee(bm);
    // a new reference max: rescale what has accumulated by exp(mref - bm)
    f.get(mref); f.f32c(LAZY_MAX); f.op(OP.f32_add); f.op(OP.f32_gt);
    f.if_(() => {
      f.get(mref); f.get(bm); f.op(OP.f32_sub); f.simd(SIMD.f32x4_splat); f.set(pv);
      ex.emit(pv); f.set(pv);
      f.get(lsum); f.get(pv); f.f32x4_extract_lane(0); f.op(OP.f32_mul); f.set(lsum);
      for (let c = 0; c < C; c++) { f.get(op); f.get(op); f.v128_load(c * 16, 0); f.get(pv); f.simd(SIMD.f32x4_mul); f.v128_store(c * 16, 0); }
      f.get(bm); f.set(mref);
    });
    // p = exp(sc - mref), masked lanes exactly 0
    f.get(sc); f.get(mref); f.simd(SIMD.f32x4_splat); f.simd(SIMD.f32x4_sub); f.set(pv);
    ex.emit(pv); f.get(valid); f.simd(SIMD.v128_and); f.set(pv);
    f.get(lsum); f.get(pv); f.set(tmpv); emitHorizontal(f, tmpv, SIMD.f32x4_add); f.op(OP.f32_add); f.set(lsum);
    for (let k = 0; k < 4; k++) { f.get(pv); f.get(pv); f.i8x16_shuffle(Array.from({ length: 16 }, (_, i) => 4 * k + (i & 3))); f.set(pk[k]); }
    for (let c = 0; c < C; c++) {
      f.get(op);
      f.get(op); f.v128_load(c * 16, 0);
      for (let k = 0; k < 4; k++) { f.get(pk[k]); f.get(vp); f.v128_load(k * hd * 4 + c * 16, 0); f.simd(SIMD.f32x4_mul); f.simd(SIMD.f32x4_add); }
      f.v128_store(c * 16, 0);
    }
    f.get(kp); f.i32(4 * hd * 4); add(f); f.set(kp);
    f.get(vp); f.i32(4 * hd * 4); add(f); f.set(vp);
    f.get(s0); f.i32(4); add(f); f.tee(s0); f.get(n); f.op(OP.i32_lt_s); f.br_if(0);
  }));
  // out /= l
  f.f32c(1); f.get(lsum); f.op(OP.f32_div); f.simd(SIMD.f32x4_splat); f.set(pv);
  for (let c = 0; c < C; c++) { f.get(op); f.get(op); f.v128_load(c * 16, 0); f.get(pv); f.simd(SIMD.f32x4_mul); f.v128_store(c * 16, 0); }
  return f;
}

/**
 * exp(x) for x <= 0 (x below -87 gives ~1e-38, -inf included), Cephes' range reduction and polynomial (~1 ulp) with
 * n = round(x log2 e) by the 1.5*2^23 magic-number addition, whose low bits then give 2^n: no floor and no saturating
 * conversion (V8 lowers i32x4.trunc_sat_f32x4_s to six instructions). Its constants live in locals.
 */
class ExpNonPositive {
  private readonly c: Local[];
  private readonly r: Local;
  private readonly y: Local;
  private static readonly MAGIC = 12582912;
  private static readonly CONSTS = [-87, Math.LOG2E, ExpNonPositive.MAGIC, 0.693359375, -2.12194440e-4,
    1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1, 1];
  constructor(private readonly f: FunctionBuilder) {
    this.c = ExpNonPositive.CONSTS.map((v) => { const l = f.local('v128'); f.f32x4_const(v); f.set(l); return l; });
    this.r = f.local('v128'); this.y = f.local('v128');
    // 127 - bits(MAGIC) as an i32 vector, appended
    const bias = f.local('v128');
    f.v128_const(new Uint8Array(new Int32Array(4).fill(127 - 0x4b400000).buffer)); f.set(bias);
    this.c.push(bias);
  }

  /** Pushes exp(x) of the v128 in local x (x is overwritten). */
  emit(x: Local): void {
    const { f, c, r, y } = this;
    const [lo, log2e, magic, ln2hi, ln2lo, p0, p1, p2, p3, p4, p5, one, bias] = c;
    f.get(lo); f.get(x); f.simd(SIMD.f32x4_pmax); f.set(x);
    f.get(x); f.get(log2e); f.simd(SIMD.f32x4_mul); f.get(magic); f.simd(SIMD.f32x4_add); f.set(y);
    // r = x - n ln2 (hi and lo parts), n = y - magic
    f.get(y); f.get(magic); f.simd(SIMD.f32x4_sub); f.set(r);
    f.get(x); f.get(r); f.get(ln2hi); f.simd(SIMD.f32x4_mul); f.simd(SIMD.f32x4_sub);
    f.get(r); f.get(ln2lo); f.simd(SIMD.f32x4_mul); f.simd(SIMD.f32x4_sub); f.set(r);
    f.get(p0);
    for (const k of [p1, p2, p3, p4, p5]) { f.get(r); f.simd(SIMD.f32x4_mul); f.get(k); f.simd(SIMD.f32x4_add); }
    f.get(r); f.simd(SIMD.f32x4_mul); f.get(r); f.simd(SIMD.f32x4_mul); f.get(r); f.simd(SIMD.f32x4_add); f.get(one); f.simd(SIMD.f32x4_add);
    // * 2^n: (bits(y) - bits(magic) + 127) << 23
    f.get(y); f.get(bias); f.simd(SIMD.i32x4_add); f.i32(23); f.simd(SIMD.i32x4_shl);
    f.simd(SIMD.f32x4_mul);
  }
}
