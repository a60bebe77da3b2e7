// Tuning helpers shared by the Wasm op planners: the GEMM tile space (MatMul, Gemm, FusedMatMul and the conv GEMMs),
// ragged shapes, and the f16 rounding the 'f16acc' fault plants.
import type { FunctionBuilder, Local } from '../../codegen/wasm/builder.js';
import { SIMD } from '../../codegen/wasm/builder.js';
import { type Fault, type Params, type SpaceInfo, enumerate, raggedSize, spaceSize, withDefault } from '../../tune/site.js';
import type { GemmTile } from './kernels/gemm.js';

/** The fault a candidate asks for (only the tuner's rejection test sets one; spaces never do). */
export function faultOf(p: Params): Fault | undefined {
  const f = p.fault;
  return f === 'edge' || f === 'barrier' || f === 'epilogue' || f === 'f16acc' ? f : undefined;
}

const num = (p: Params, k: string, d: number): number => (typeof p[k] === 'number' ? (p[k] as number) : d);

/** 'f16acc' fault: rounds the f32 lanes of local v toward zero to f16's 10 mantissa bits (clears the low 13). */
export function emitF16Round(f: FunctionBuilder, v: Local): void {
  f.get(v);
  f.v128_const(new Uint8Array(new Int32Array([-8192, -8192, -8192, -8192]).buffer)); // 0xFFFFE000
  f.simd(SIMD.v128_and);
  f.set(v);
}

/** Ragged input dims by value: every size n > 1 becomes raggedSize(n), so equal sizes stay equal (K of A and B, …). */
export function raggedByValue(dims: number[][], keep: (input: number, axis: number) => boolean = () => false): number[][] {
  return dims.map((d, i) => d.map((n, a) => (keep(i, a) ? n : raggedSize(n))));
}

// --- the GEMM tile space ---------------------------------------------------------------------------

/** SIMD registers of the file (x86-64 XMM; V8 keeps one for itself, the budget counts 16). */
export const SIMD_REGS = 16;
/** Register tiles using fewer leave the multiply-add units idle (12 of 16 keeps the space at dozens). */
export const MIN_REGS = 12;
/** L1 data cache (bytes): one B panel and one A strip of a K block stay in it across the row block. */
export const L1_BYTES = 32 * 1024;
/** The share of L2 the A block (mb x kb) of a task may take while its B panels stream past. */
export const L2_A_BYTES = 128 * 1024;

/** Registers a tile of mr rows x nr columns keeps live: accumulators, one splat of A per row, one B vector per 4 columns. */
export const tileRegs = (mr: number, nr: number): number => mr * (nr / 4) + mr + nr / 4;

export const GEMM_AXES = {
  mr: [1, 2, 3, 4, 5, 6],
  nr: [4, 8, 12, 16, 20, 24],
  kb: [128, 256, 512, 1024],
  /**
   * Target rows per task block (mb = the multiple of mr at or above it, at most M rounded up to mr). Not searched:
   * `split` sets the task granularity, and 64 rows of any K block that fits L1 stay in L2.
   */
  mb: [64],
  /** Tasks per thread the panel split aims at (dynamic balancing; irrelevant on one thread). */
  split: [2, 8, 32],
  unroll: [1, 2],
  relaxed: [false, true],
} as const;

/** The GemmTile (and relaxed flag) of parameters, for an M x N x K product over `batch` matrices. */
export function gemmTileOf(p: Params, M: number, N: number, K: number, batch: number, threads: number): { tile: GemmTile; relaxed: boolean } {
  const mr = num(p, 'mr', 4), nr = num(p, 'nr', 8);
  const kb = Math.max(1, Math.min(num(p, 'kb', K), Math.max(K, 1)));
  const mbRows = num(p, 'mb', 64);
  const mb = Math.min(Math.ceil(Math.max(M, 1) / mr) * mr, mr * Math.ceil(mbRows / mr));
  const nP = Math.ceil(N / nr), nRB = Math.ceil(M / mb);
  // A task's group of B panels stays in L2 (~512 KiB of it) while consecutive tasks walk the row blocks.
  const l2Panels = Math.max(1, Math.floor((512 * 1024) / (Math.max(1, K) * nr * 4)));
  const want = threads > 1 ? threads * num(p, 'split', 8) : 1;
  const ppt = Math.max(1, Math.min(nP, l2Panels, Math.ceil((nP * nRB * batch) / want)));
  const unroll = num(p, 'unroll', 2);
  return { tile: { mr, nr, mb, kb, unroll, barrier: unroll > 1, panelsPerTask: ppt }, relaxed: p.relaxed === true };
}

/** chooseGemmTile's choice as parameters (mb as the row target that reproduces it, kb as chosen). */
export function gemmDefaultParams(M: number, N: number, K: number, relaxed: boolean): Params {
  let mr = relaxed ? 3 : 4, nr = relaxed ? 12 : 8;
  if (M === 1) { mr = 1; nr = N > 8 ? 16 : 8; }
  else if (M === 2) { mr = 2; nr = N > 8 ? 16 : 8; }
  else if (M === 3) { mr = 3; nr = N > 8 ? 12 : 8; }
  return { mr, nr, kb: K <= 1024 ? Math.max(K, 1) : 512, mb: 64, split: 8, unroll: 2, relaxed };
}

/**
 * The pruned GEMM space: register tiles that fit the register file and use most of it, K blocks whose B panel and A
 * strip fit L1 and A blocks that fit the L2 share, no K block or row block larger than the problem, and the split
 * only when there are threads to split for (and enough tasks for them).
 */
export function gemmSpace(M: number, N: number, K: number, batch: number, threads: number, relaxedAvail: boolean, def: Params): SpaceInfo {
  const axes: Record<string, readonly (number | boolean)[]> = { ...GEMM_AXES, relaxed: relaxedAvail ? [false, true] : [false] };
  const before = spaceSize(GEMM_AXES);
  const Mr = (mr: number) => Math.ceil(Math.max(M, 1) / mr) * mr;
  const cands = enumerate(axes, (p) => {
    const mr = p.mr as number, nr = p.nr as number, kb = p.kb as number, mbRows = p.mb as number;
    const regs = tileRegs(mr, nr);
    if (regs > SIMD_REGS || regs < MIN_REGS) return false;
    // A K block at least the whole K: only the smallest such stands for "no K blocking".
    if (kb > K && !(kb === GEMM_AXES.kb.find((x) => x >= K))) return false;
    const kbE = Math.min(kb, K);
    if ((mr + nr) * kbE * 4 > L1_BYTES) return false;
    const mb = Math.min(Mr(mr), mr * Math.ceil(mbRows / mr));
    if (mb * kbE * 4 > L2_A_BYTES) return false;
    if (threads <= 1 && p.split !== GEMM_AXES.split[1]) return false;
    if (threads > 1) {
      const { tile } = gemmTileOf(p, M, N, K, batch, threads);
      const tasks = batch * Math.ceil(M / tile.mb) * Math.ceil(Math.ceil(N / nr) / tile.panelsPerTask);
      if (tasks < threads && p.split !== GEMM_AXES.split[1]) return false;
    }
    // Unrolling beyond the K block's length does nothing.
    if ((p.unroll as number) > kbE) return false;
    return true;
  });
  return { candidates: withDefault(def, cands), before };
}
