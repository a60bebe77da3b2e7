// WebGPU MatMul, Gemm and webjit.FusedMatMul (f32): the shapes pick the register-tiled GEMM or, for a few rows
// (decode), the skinny one; bias, activation and residual run in the store.
import type { Node } from '../../../graph/ir.js';
import { sizeOf } from '../../../tensor.js';
import { tryBroadcastShape } from '../../../ops/util.js';
import { Float16Array } from '@petamoriken/float16';
import { type MatmulEpilogue, type MatmulSpec, type MatmulTile, skinnyMatmul, splitKReduce, splitKValid, tiledMatmul, tileValid } from '../../../codegen/wgsl/matmul.js';
import { grid, registerGpuOp, type Binding, type GpuDerivation, type GpuOpPlan, type GpuPlanContext, type GpuValueDesc } from '../kernel.js';
import { enumerate, raggedSize, spaceSize, withDefault, type Params, type TuneSite } from '../../../tune/site.js';
import { FMA_ASSIGN, dropBarrier, f16Accumulate, faultOf, replaceAll, replaceFirst, withoutFault } from '../faults.js';
import { np2 } from '../sites.js';
import { envInt, envVar } from '../../../util/node.js';
import { SPLIT_CFG, type SplitPasses, type SplitTile, splitAHalves, splitAKernel, splitASize, splitBDims, splitBKernel, splitBParams, splitBWorkgroups, splitDefault, splitDims, splitExponent, splitMatmul, splitValid } from '../../../codegen/wgsl/matmul_tc.js';

const ACTIVATIONS: ReadonlySet<string> = new Set(['none', 'relu', 'sigmoid', 'tanh', 'gelu', 'gelu_tanh', 'silu']);
const SKINNY_MAX_M = 16;

/**
 * Default tiles by problem size (the tuner, issue 5, searches around these). From the sweeps on an H200
 * (bench/results/gpu/h200-sweep*.txt): 64×64×8 with 8×4 per thread is within a few % of the best tile from BERT's
 * GEMMs at batch 8 to 4096³ (38.6 TFLOP/s, 0.76× cuBLAS); with few workgroups (BERT at batch 1) smaller tiles win by
 * filling more SMs. The first tile that gives 128 workgroups (else 64): at BERT-base b1 on the H100 the tuner's winner
 * for M = 128, N = 3072 (16×64, 384 workgroups, 1.35× the 96 of 64×64), and the whole model's GPU time 3.36 → 2.68 ms
 * against a threshold of 64 (bench/results/gpu/h100-matmul-minwg.txt); b8 unchanged. WEBJIT_MATMUL_MINWG overrides it.
 */
const MIN_WGS = envInt('WEBJIT_MATMUL_MINWG', 128);

export function defaultTile(M: number, N: number, batch: number, ctx: GpuPlanContext): MatmulTile {
  // Large products (≥ 512 workgroups of 128×128): A row-major with unrolled k, 41.7 TFLOP/s at 4096³ on the H100
  // against 38.9 for 64×64×8 (bench/results/gpu/h100-sweep-ar.txt).
  const big: MatmulTile = { BM: 128, BN: 128, BK: 16, TM: 8, TN: 8, unroll: true, aRows: true };
  if (Math.ceil(M / 128) * Math.ceil(N / 128) * batch >= 512 && tileValid(big, ctx.caps.maxInvocations, ctx.caps.maxWorkgroupStorage)) return big;
  const cands: MatmulTile[] = [
    { BM: 64, BN: 64, BK: 8, TM: 8, TN: 4 },
    { BM: 16, BN: 64, BK: 16, TM: 4, TN: 4 },
    { BM: 32, BN: 32, BK: 16, TM: 4, TN: 4 },
  ];
  const ok = cands.filter((t) => tileValid(t, ctx.caps.maxInvocations, ctx.caps.maxWorkgroupStorage));
  const wgs = (t: MatmulTile) => Math.ceil(M / t.BM) * Math.ceil(N / t.BN) * batch;
  // The first tile that gives the device MIN_WGS workgroups, else the first with 64.
  for (const t of ok) if (wgs(t) >= MIN_WGS) return t;
  for (const t of ok) if (wgs(t) >= 64) return t;
  return ok[ok.length - 1];
}

/** WEBJIT_MATMUL_TILE=BM,BN,BK,TM,TN forces a tile (device experiments). */
function forcedTile(): MatmulTile | null {
  const env = envVar('WEBJIT_MATMUL_TILE');
  if (!env) return null;
  const [BM, BN, BK, TM, TN] = env.split(',').map(Number);
  return { BM, BN, BK, TM, TN };
}

interface MatmulCall {
  spec: MatmulSpec;
  outDims: number[];
  /** Input index per binding: A, B, [bias], [residual]; or a constant binding for B. */
  bindings: Binding[];
  /** B as a model constant laid out [K, N] (for the f16 copy of `precision: 'f16'`). */
  bConst?: { name: string; data: () => Float32Array; key: string };
  /** The op (part of the tuning signature) and its inputs' dims at new M (rows of A), K and N (the ragged case). */
  op: string;
  dimsAt: (inputDims: number[][], M: number, K: number, N: number) => number[][];
  /** Rows of A's matrix, K and N as the inputs give them (before the batch folds into M). */
  mkn: (inputDims: number[][]) => [number, number, number];
}

/** splitExponent per weight array (every plan needs it: 72 scans per BERT-base replan, ~3.5 ms for a 768×3072 weight here). */
const exponents = new WeakMap<Float32Array, Map<SplitPasses, number | null>>();
function exponentOf(b: Float32Array, passes: SplitPasses): number | null {
  let m = exponents.get(b);
  if (!m) { m = new Map(); exponents.set(b, m); }
  if (!m.has(passes)) m.set(passes, splitExponent(b, passes));
  return m.get(passes)!;
}

/**
 * splitB of B [K, N] as a constant derived on the GPU (splitBKernel, the same bits): the f32 weight is uploaded instead
 * of split in JS, which takes ~85 ms per BERT-base weight (seconds per session).
 */
export function splitOnGpu(b: Float32Array, K: number, N: number, passes: SplitPasses, exp: number, maxPerDim: number): GpuDerivation {
  const { Kp, Np } = splitBDims(K, N);
  return { source: b, params: splitBParams(K, N, exp), bytes: (passes === 3 ? 2 : 1) * Kp * Np * 2, code: splitBKernel(passes), groups: grid(splitBWorkgroups(K, N), maxPerDim) };
}

/** IEEE half bit patterns of f32 values (round to nearest even, as the reference's Cast). */
function toF16Bits(src: Float32Array): Uint16Array {
  return new Uint16Array(new Float16Array(src).buffer);
}

/** The skinny kernel's regime: few rows, vec4 columns of B, B not batched. */
function skinnyRegime(spec: MatmulSpec): boolean {
  return spec.M <= SKINNY_MAX_M && spec.N % 4 === 0 && !spec.bBatchStrides.some((x) => x !== 0) && spec.K > 0;
}

const skinnyFits = (spec: MatmulSpec, q: number, sl: number, ctx: GpuPlanContext): boolean =>
  q >= 1 && sl >= 1 && q * sl <= ctx.caps.maxInvocations && sl * spec.M * q * 16 <= ctx.caps.maxWorkgroupStorage &&
  Number.isInteger(q) && Number.isInteger(sl);

/**
 * The skinny kernel's default: few columns per workgroup and many K slices, enough workgroups and loads in flight to
 * stream B from every SM. From the H200 sweep: 16 quads × 64 slices at M = 1 (1744 GB/s), 8 × 64 at M = 4, 8 × 16 at
 * M = 16. Null when the workgroup memory cannot hold even one slice.
 */
function skinnyDefault(spec: MatmulSpec, ctx: GpuPlanContext): { quads: number; slices: number } | null {
  const threads = Math.min(1024, ctx.caps.maxInvocations);
  const quads = Math.min(spec.M === 1 ? 16 : 8, 2 ** Math.ceil(Math.log2(Math.max(1, spec.N / 4))), threads);
  let slices = Math.min(64, Math.max(1, Math.floor(threads / quads)), 2 ** Math.ceil(Math.log2(Math.max(1, spec.K))));
  while (slices > 1 && slices * spec.M * quads * 16 > ctx.caps.maxWorkgroupStorage) slices >>= 1;
  return slices * spec.M * quads * 16 <= ctx.caps.maxWorkgroupStorage ? { quads, slices } : null;
}

const tileOf = (p: Params): MatmulTile => ({
  BM: Number(p.BM), BN: Number(p.BN), BK: Number(p.BK), TM: Number(p.TM), TN: Number(p.TN),
  ...(p.unroll === true ? { unroll: true } : {}), ...(p.aRows === true ? { aRows: true } : {}),
  ...(Number(p.splitK) > 1 ? { splitK: Number(p.splitK) } : {}),
});

/** Workgroups under which the default tile's K is split (see defaultSplitK). */
const SPLITK_WGS = 384;

/** Plans made with a K split (tests check that the split path ran). */
export const matmulPlanned = { splitK: 0 };

/**
 * The K split of the default tile: where its workgroups number under 384 (about 3 per SM of an H100), the fewest
 * parts (2 or 4) that reach 384, each part at least 512 deep. Measured on the H100 (h100-matmul-splitk.txt): BERT-base
 * f32 GPU time b8 7.17 → 6.40 ms (ff2, K = 3072, in 2 parts), b1 2.67 → 1.87 (4 parts). WEBJIT_MATMUL_SPLITK: '0'
 * turns it off, a number forces that many parts (device experiments).
 */
function defaultSplitK(spec: MatmulSpec, t: MatmulTile): number {
  const env = envVar('WEBJIT_MATMUL_SPLITK');
  if (env === '0') return 1;
  const wgs = Math.ceil(spec.M / t.BM) * Math.ceil(spec.N / t.BN);
  const forced = env && env !== 'auto' ? Number(env) : 0;
  if (!forced && wgs >= SPLITK_WGS) return 1;
  const want = forced || ([2, 4].find((S) => wgs * S >= SPLITK_WGS) ?? 4);
  for (let S = want; S > 1; S >>= 1) if (spec.K / S >= 512 && splitKValid(spec, t, S)) return S;
  return 1;
}

/** Tile axes of the search (the lead adds the codegen's newer MatmulTile fields here). */
const TILE_AXES = { kind: ['tiled'], BM: [16, 32, 64, 128], BN: [16, 32, 64, 128], BK: [8, 16, 32], TM: [4, 8], TN: [4, 8] };
const SKINNY_AXES = { kind: ['skinny'], quads: [4, 8, 16, 32], slices: [4, 8, 16, 32, 64, 128] };
/** f32 registers a thread may hold for its accumulators and operands (TM·TN + TM + TN). */
const MAX_TILE_REGS = 128;
/** Threads per workgroup worth trying, the most workgroup memory a tile may take (more limits occupancy), the widest aspect. */
const TILE_THREADS = [64, 256];
const TILE_SHARED = 16384;
const TILE_ASPECT = 4;

/**
 * Rows under which matmulPrecision 'high' keeps the f32 kernels. BERT-base on the H100 (h100-high-crossover.txt), GPU
 * time f32 / 'high': b1 (M = 128) 1.88 / 2.37 ms, b2 2.92 / 2.77, b4 4.24 / 3.62, b8 6.45 / 5.15 (the f32 GEMMs with
 * split K and small-M tiles overtook the three tensor-core products at one sequence).
 */
const HIGH_MIN_M = 256;

/**
 * Tensor-core GEMMs (matmul_tc.ts): 3 products on split halves for matmulPrecision 'high' (from HIGH_MIN_M rows), 1 on
 * halves for precision 'f16'; 0 when this device or node cannot take them (no 16×16×16 f16→f32 subgroup matrices, no fixed subgroup size, a
 * software driver, B not a constant matrix).
 */
function tcPasses(call: MatmulCall, spec: MatmulSpec, ctx: GpuPlanContext): SplitPasses | 0 {
  const c = ctx.caps;
  const want = ctx.f16 ? 1 : ctx.matmulPrecision === 'high' ? 3 : 0;
  if (!want || !call.bConst || spec.batchDims.length !== 0 || c.software || !c.subgroupSize || !c.f16) return 0;
  // 'high' under HIGH_MIN_M rows: the f32 kernels (exact f32, and faster there) instead of three tensor-core products.
  if (want === 3 && spec.M < HIGH_MIN_M) return 0;
  const has = c.subgroupMatrix.some((m) => m.M === SPLIT_CFG.M && m.N === SPLIT_CFG.N && m.K === SPLIT_CFG.K && m.componentType === 'f16' && m.resultComponentType === 'f32');
  return has ? want : 0;
}

const splitOf = (p: Params): SplitTile => ({ fm: Number(p.fm), fn: Number(p.fn), sm: Number(p.sm), sn: Number(p.sn), kSteps: Number(p.kSteps) });
const TC_TILES: [number, number, number, number][] = [[2, 4, 4, 2], [2, 2, 2, 4], [2, 2, 4, 2], [2, 2, 2, 2], [4, 4, 2, 2], [2, 1, 2, 4], [1, 2, 4, 2], [1, 1, 2, 4], [1, 1, 4, 2], [1, 1, 2, 2]];

/**
 * The matmul site: kind 'tiled' (BM, BN, BK, TM, TN) or, for M ≤ 16, 'skinny' (quads, slices). The default is the
 * planner's choice before tuning (defaultTile, WEBJIT_MATMUL_TILE, the skinny heuristic). Pruned: tiles the device
 * cannot run (tileValid), more than MAX_TILE_REGS registers, threads outside TILE_THREADS, more than TILE_SHARED
 * bytes of workgroup memory, tiles more than TILE_ASPECT times wider than tall (or taller than wide), tiles far past M
 * or N, fewer workgroups than 32 (or than 64×64 tiles would give).
 */
function matmulSite(call: MatmulCall, spec: MatmulSpec, def: Params, ctx: GpuPlanContext, passes: SplitPasses | 0): TuneSite {
  const batch = sizeOf(spec.batchDims);
  const regime = skinnyRegime(spec);
  return {
    family: 'matmul',
    sig: `matmul:${call.op}:${JSON.stringify(spec)}${passes ? `:tc${passes}` : ''}`,
    default: def,
    space: () => {
      const wgs = (t: MatmulTile) => Math.ceil(spec.M / t.BM) * Math.ceil(spec.N / t.BN) * batch;
      const minWgs = Math.min(32, Math.ceil(spec.M / 64) * Math.ceil(spec.N / 64) * batch);
      const tiled = enumerate(TILE_AXES, (p) => {
        const t = tileOf(p);
        const threads = (t.BM / t.TM) * (t.BN / t.TN);
        return tileValid(t, ctx.caps.maxInvocations, ctx.caps.maxWorkgroupStorage) && t.TM * t.TN + t.TM + t.TN <= MAX_TILE_REGS &&
          threads >= TILE_THREADS[0] && threads <= TILE_THREADS[1] && (t.BM + t.BN) * t.BK * 4 <= TILE_SHARED &&
          Math.max(t.BM / t.BN, t.BN / t.BM) <= TILE_ASPECT &&
          t.BM <= Math.max(16, np2(spec.M)) && t.BN <= Math.max(16, np2(spec.N)) && wgs(t) >= minWgs;
      });
      const skinny = regime
        ? enumerate(SKINNY_AXES, (p) => {
          const q = Number(p.quads), sl = Number(p.slices);
          return skinnyFits(spec, q, sl, ctx) && q * sl >= 32 && q <= np2(spec.N / 4) && sl <= np2(spec.K);
        })
        : [];
      // Row-major A with unrolled k (0.81× cuBLAS at 4096³ on the H100) where it paid: 8 rows per thread, K tiles ≥ 16.
      const rows = tiled.filter((p) => Number(p.TM) === 8 && Number(p.BK) >= 16).map((p) => ({ ...p, unroll: true, aRows: true }));
      // Tensor-core tiles where the precision allows them: those the device runs with at least 16 workgroups.
      const tc = !passes ? [] : TC_TILES.flatMap(([fm, fn, sm, sn]) => [2, 4].map((kSteps) => ({ kind: 'tc', fm, fn, sm, sn, kSteps }))).filter((p) => {
        const t = splitOf(p), { BM, BN } = splitDims(t);
        return splitValid(spec, t, passes, ctx.caps.subgroupSize, ctx.caps.maxInvocations, ctx.caps.maxWorkgroupStorage, splitAHalves(passes)) && Math.ceil(spec.M / BM) * Math.ceil(spec.N / BN) >= 16;
      });
      // The default tile with its K split in 2 or 4 (parts at least 256 deep).
      const dt = def.kind === 'tiled' ? tileOf(def) : null;
      const splits = dt ? [2, 4].filter((S) => S !== dt.splitK && spec.K / S >= 256 && splitKValid(spec, dt, S)).map((S) => ({ ...def, splitK: S })) : [];
      return { candidates: withDefault(def, [...tc, ...skinny, ...tiled, ...rows, ...splits]), before: 2 * spaceSize(TILE_AXES) + (regime ? spaceSize(SKINNY_AXES) : 0) + (passes ? 2 * TC_TILES.length : 0) };
    },
    ragged: (dims) => {
      const [M, K, N] = call.mkn(dims);
      // The skinny regime stays skinny: rows stay ≤ 16, N a multiple of 4 (but not of 8).
      const N2 = regime && N % 4 === 0 && N >= 8 ? 4 * raggedSize(N / 4) : raggedSize(N);
      return call.dimsAt(dims, raggedSize(M), raggedSize(K), N2);
    },
    rowsAt: (dims, R) => {
      const [M, K, N] = call.mkn(dims);
      const batch = Math.max(1, sizeOf(dims[0]) / Math.max(1, M * K), sizeOf(dims[1]) / Math.max(1, K * N));
      return { dims: call.dimsAt(dims, R, K, N), macs: batch * M * K * N };
    },
  };
}

/**
 * Plants a fault (faults.ts) in a matmul kernel: edge, the store of the last row of C is skipped (guard row < M-1; the
 * skinny kernel: its last vec4 of columns); barrier, the barrier between filling the shared tiles and reading them
 * (skinny: before the slices are summed); epilogue, the bias (else residual, else output) index one off; f16acc, the
 * accumulators rounded to f16 after every fma.
 */
function matmulFault(code: string, fault: string, spec: MatmulSpec, skinny: boolean, ctx: GpuPlanContext, tc = false): string {
  if (tc) {
    switch (fault) {
      case 'edge': return replaceAll(code, /let inside = ([^;]+);/g, `let inside = ($1) && r0 + 16u < ${spec.M}u;`, 'tensor-core fragment rows');
      case 'f16acc': return replaceAll(code, /let v = Cs\[([^\]]+)\]/g, 'let v = f32(f16(Cs[$1]))', 'tensor-core sums in f16');
      default: break;
    }
  }
  switch (fault) {
    case 'edge':
      return skinny
        ? replaceFirst(code, new RegExp(`if \\(q < ${spec.N / 4}u\\) \\{(?![\\s\\S]*if \\(q < ${spec.N / 4}u\\))`), `if (q + 1u < ${spec.N / 4}u) {`, 'skinny store guard')
        : replaceAll(code, /\{ let row = (row0 \+ ty \* \d+u \+ \d+u);/g, `{ let row = $1; if (row + 1u >= ${spec.M}u) { return; }`, 'tiled store rows');
    case 'barrier':
      return dropBarrier(code, 0);
    case 'epilogue':
      if (spec.epilogue.bias) return replaceAll(code, /\bbias\[/g, 'bias[1u + ', 'bias index');
      if (spec.epilogue.residual) return replaceAll(code, /\bresid\[/g, 'resid[1u + ', 'residual index');
      return replaceAll(code, /\bC\[/g, 'C[1u + ', 'output index');
    case 'f16acc':
      return f16Accumulate(code, FMA_ASSIGN('acc\\d*(?:\\[\\d+\\])?'), 4, ctx.caps.f16);
    default:
      throw new Error(`unknown fault ${fault}`);
  }
}

function plan(call: MatmulCall, ctx: GpuPlanContext): GpuOpPlan {
  const { outDims } = call;
  let spec = call.spec;
  const outputs = [{ dtype: 'float32' as const, dims: outDims }];
  const batch = sizeOf(spec.batchDims);
  if (sizeOf(outDims) === 0) return { outputs, dispatches: [] };
  const maxDim = ctx.caps.maxWorkgroupsPerDim;
  if (batch > maxDim) throw new RangeError('batch past the workgroup grid');
  const caps = ctx.caps;
  // Tensor cores: B split (or rounded) to halves once; the default tile where the shape takes one.
  let passes = tcPasses(call, spec, ctx);
  let bData: Float32Array | undefined, exp: number | null = null;
  const tcDef = passes ? splitDefault(spec, passes, caps.subgroupSize, caps.maxInvocations, caps.maxWorkgroupStorage) : null;
  if (passes && tcDef) {
    bData = call.bConst!.data();
    exp = exponentOf(bData, passes);
  }
  if (exp === null || !tcDef) passes = 0;
  // precision 'f16' without tensor cores: constant weights are read as f16 (half the bytes; products and sums stay f32).
  const bF16 = ctx.f16 && !!call.bConst && batch === 1;
  if (bF16) spec = { ...spec, bF16: true };
  const sk = skinnyRegime(spec) ? skinnyDefault(spec, ctx) : null;
  const dt = forcedTile() ?? defaultTile(spec.M, spec.N, batch, ctx);
  const dS = defaultSplitK(spec, dt);
  const def: Params = passes ? { kind: 'tc', ...tcDef! } : sk ? { kind: 'skinny', ...sk } : { kind: 'tiled', ...dt, ...(dS > 1 ? { splitK: dS } : {}) };
  const picked = ctx.pick(matmulSite(call, spec, def, ctx, passes));
  const fault = faultOf(picked);
  let p = withoutFault(picked);
  // A candidate forced at a shape it does not fit (another regime, past the device's limits) runs the default.
  const fits = (q: Params) => q.kind === 'tc'
    ? passes > 0 && splitValid(spec, splitOf(q), passes as SplitPasses, caps.subgroupSize, caps.maxInvocations, caps.maxWorkgroupStorage, splitAHalves(passes as SplitPasses)) &&
      Math.ceil(spec.N / splitDims(splitOf(q)).BN) <= maxDim && Math.ceil(spec.M / splitDims(splitOf(q)).BM) <= maxDim
    : q.kind === 'skinny'
      ? skinnyRegime(spec) && skinnyFits(spec, Number(q.quads), Number(q.slices), ctx)
      : q.kind === 'tiled' && tileValid(tileOf(q), caps.maxInvocations, caps.maxWorkgroupStorage) && splitKValid(spec, tileOf(q), tileOf(q).splitK ?? 1) &&
        Math.ceil(spec.N / Number(q.BN)) <= maxDim && Math.ceil(spec.M / Number(q.BM)) <= maxDim;
  if (p !== def && !fits(p)) p = def;
  const mutate = (code: string, skinny: boolean, tc = false) => (fault ? matmulFault(code, fault, spec, skinny, ctx, tc) : code);
  const bindings: Binding[] = [...call.bindings, { output: 0 }];
  const { name, key } = call.bConst ?? { name: '', key: '' };
  if (p.kind === 'tc') {
    const t = splitOf(p), ps = passes as SplitPasses, e = exp!, { BM, BN } = splitDims(t), { M, K, N } = call.spec;
    const data = bData!;
    bindings[1] = { constant: ctx.derivedConstant(name, `tc${ps}:${e}:${key}`, () => splitOnGpu(data, K, N, ps, e, maxDim)) };
    const groups: [number, number, number] = [Math.ceil(N / BN), Math.ceil(M / BM), 1];
    if (splitAHalves(ps)) {
      // A rounded to halves in a scratch buffer first (its f16-range check there), then read 16 bytes at a time.
      const sz = splitASize(M, K, ps);
      const code = splitMatmul(call.spec, t, ps, caps.subgroupSize, 2 ** -e, true);
      bindings[0] = { scratch: 0 };
      return {
        outputs, scratchBytes: [sz.bytes],
        dispatches: [
          { code: splitAKernel(M, K, ps), bindings: [{ input: 0 }, { scratch: 0 }, { fault: true }], groups: grid(sz.workgroups, maxDim) },
          { code: mutate(code, false, true), bindings, groups },
        ],
      };
    }
    bindings.push({ fault: true });
    const code = splitMatmul(call.spec, t, ps, caps.subgroupSize, 2 ** -e);
    return { outputs, dispatches: [{ code: mutate(code, false, true), bindings, groups }] };
  }
  if (bF16) bindings[1] = { constant: ctx.constant(name, `f16:${key}`, () => toF16Bits(call.bConst!.data())) };
  if (p.kind === 'skinny') {
    const quads = Number(p.quads), slices = Number(p.slices);
    return { outputs, dispatches: [{ code: mutate(skinnyMatmul(spec, { quads, slices }), true), bindings, groups: [Math.ceil(spec.N / 4 / quads), 1, batch] }] };
  }
  const t = tileOf(p);
  const gx = Math.ceil(spec.N / t.BN), gy = Math.ceil(spec.M / t.BM);
  if (gx > maxDim || gy > maxDim) throw new RangeError('matmul past the workgroup grid');
  const S = t.splitK ?? 1;
  if (S > 1) {
    matmulPlanned.splitK++;
    // Partial sums of each K part into a scratch, then one pass adds them and applies the epilogue. Faults: a missing
    // barrier and f16 sums in the GEMM; the skipped last row and the epilogue index in the pass that writes C.
    const inGemm = fault === 'barrier' || fault === 'f16acc';
    const red = splitKReduce(spec, S);
    return {
      outputs, scratchBytes: [S * spec.M * spec.N * 4],
      dispatches: [
        { code: inGemm ? mutate(tiledMatmul(spec, t), false) : tiledMatmul(spec, t), bindings: [bindings[0], bindings[1], { scratch: 0 }], groups: [gx, gy, S] },
        {
          code: !fault || inGemm ? red : fault === 'edge' ? replaceFirst(red, `if (i >= ${(spec.M * spec.N) / 4}u)`, `if (i + ${spec.N / 4}u >= ${(spec.M * spec.N) / 4}u)`, 'split-K last row') : mutate(red, false),
          bindings: [{ scratch: 0 }, ...bindings.slice(2)], groups: grid(Math.ceil((spec.M * spec.N) / 4 / 256), maxDim),
        },
      ],
    };
  }
  return { outputs, dispatches: [{ code: mutate(tiledMatmul(spec, t), false), bindings, groups: [gx, gy, batch] }] };
}

/** A [.., M, K] · B [.., K, N] with numpy broadcasting of the batch dims (1-D operands promoted as ONNX says). */
function matmulShapes(ad: number[], bd: number[]): { spec: Omit<MatmulSpec, 'epilogue'>; outDims: number[] } | null {
  if (ad.length === 0 || bd.length === 0) return null;
  const a = ad.length === 1 ? [1, ad[0]] : ad, b = bd.length === 1 ? [bd[0], 1] : bd;
  const M = a[a.length - 2], K = a[a.length - 1], K2 = b[b.length - 2], N = b[b.length - 1];
  if (K !== K2) return null;
  const ab = a.slice(0, -2), bb = b.slice(0, -2);
  const batch = tryBroadcastShape(ab, bb);
  if (!batch) return null;
  let outDims = [...batch, M, N];
  if (ad.length === 1) outDims.splice(outDims.length - 2, 1);
  if (bd.length === 1) outDims = outDims.slice(0, -1);
  // B shared by every batch: the batch folds into M (A is contiguous).
  if (sizeOf(bb) === 1 && ab.length >= bb.length) {
    return { spec: { M: sizeOf(ab) * M, N, K, batchDims: [], aBatchStrides: [], bBatchStrides: [] }, outDims };
  }
  const strides = (dims: number[], mat: number) => {
    const r = batch.length, out = new Array<number>(r).fill(0);
    let s = mat;
    for (let i = dims.length - 1; i >= 0; i--) {
      const o = r - dims.length + i;
      out[o] = dims[i] === 1 ? 0 : s;
      s *= dims[i];
    }
    return out;
  };
  return { spec: { M, N, K, batchDims: batch, aBatchStrides: strides(ab, M * K), bBatchStrides: strides(bb, K * N) }, outDims };
}

/** Rows of A's matrix, K and N of a MatMul-like op whose inputs are A [.., M, K] (or [K]) and B [.., K, N] (or [K]). */
const mknAB = (d: number[][]): [number, number, number] => {
  const [a, b] = d;
  return [a.length === 1 ? 1 : a[a.length - 2], a[a.length - 1], b.length === 1 ? 1 : b[b.length - 1]];
};
const abAt = (a: number[], b: number[], M: number, K: number, N: number): number[][] =>
  [a.length === 1 ? [K] : [...a.slice(0, -2), M, K], b.length === 1 ? [K] : [...b.slice(0, -2), K, N]];
const MATMUL_DIMS = { op: 'MatMul', mkn: mknAB, dimsAt: (d: number[][], M: number, K: number, N: number) => abAt(d[0], d[1], M, K, N) };

const attrNum = (node: Node, name: string, d: number) => { const a = node.attrs.get(name); return a && typeof a.value === 'number' ? a.value : d; };
const f32 = (...xs: (GpuValueDesc | undefined)[]) => xs.every((x) => !x || x.dtype === 'float32');

registerGpuOp('MatMul', (_node, inputs, ctx) => {
  const [a, b] = inputs;
  if (!a || !b || !f32(a, b)) return null;
  const s = matmulShapes(a.dims, b.dims);
  if (!s) return null;
  const bd = b.constant?.data;
  const bc = bd instanceof Float32Array && b.dims.length === 2 ? { name: b.name, data: () => bd, key: b.dims.join('x') } : undefined;
  return plan({ spec: { ...s.spec, epilogue: {} }, outDims: s.outDims, bindings: [{ input: 0 }, { input: 1 }], bConst: bc, ...MATMUL_DIMS }, ctx);
});

registerGpuOp('Gemm', (node, inputs, ctx) => {
  const [a, b, c] = inputs;
  if (!a || !b || !f32(a, b, c) || a.dims.length !== 2 || b.dims.length !== 2) return null;
  if (attrNum(node, 'transA', 0) !== 0) return null;
  const transB = attrNum(node, 'transB', 0) !== 0;
  const alpha = attrNum(node, 'alpha', 1), beta = attrNum(node, 'beta', 1);
  const [M, K] = a.dims;
  const N = transB ? b.dims[0] : b.dims[1];
  if ((transB ? b.dims[1] : b.dims[0]) !== K) return null;
  const bindings: Binding[] = [{ input: 0 }];
  let bConst: MatmulCall['bConst'];
  if (transB) {
    // B as [K, N] once, for constant weights; a computed B^T is rare and falls back.
    const bc = b.constant;
    if (!bc || !(bc.data instanceof Float32Array)) return null;
    const data = bc.data;
    bindings.push({ constant: ctx.constant(b.name, `T:${K}x${N}`, () => transpose(data, N, K)) });
    bConst = { name: b.name, data: () => transpose(data, N, K), key: `T:${K}x${N}` };
  } else {
    bindings.push({ input: 1 });
    const bd = b.constant?.data;
    if (bd instanceof Float32Array) bConst = { name: b.name, data: () => bd, key: `${K}x${N}` };
  }
  const epilogue: MatmulEpilogue = { alpha };
  if (c && beta !== 0 && sizeOf(c.dims) > 0) {
    const cd = c.dims;
    if (cd.length > 2) return null;
    const cm = cd.length === 2 ? cd[0] : 1, cn = cd.length >= 1 ? cd[cd.length - 1] : 1;
    if ((cm !== 1 && cm !== M) || (cn !== 1 && cn !== N)) return null;
    if (cm === M && cn === N && M > 1) Object.assign(epilogue, { residual: true, residualScale: beta });
    else Object.assign(epilogue, { bias: cn === N && N > 1 ? 'n' : cm === M && M > 1 ? 'm' : 'scalar', biasScale: beta });
    bindings.push({ input: 2 });
  }
  const gemmDims = {
    op: `Gemm(transB=${transB})`,
    mkn: (d: number[][]): [number, number, number] => [d[0][0], d[0][1], transB ? d[1][0] : d[1][1]],
    dimsAt: (d: number[][], M2: number, K2: number, N2: number) => {
      const out = [[M2, K2], transB ? [N2, K2] : [K2, N2]];
      const cd = d[2];
      if (cd) out.push(cd.length === 2 ? [cd[0] === 1 ? 1 : M2, cd[1] === 1 ? 1 : N2] : cd.map((x) => (x === 1 ? 1 : N2)));
      return out;
    },
  };
  return plan({ spec: { M, N, K, batchDims: [], aBatchStrides: [], bBatchStrides: [], epilogue }, outDims: [M, N], bindings, bConst, ...gemmDims }, ctx);
});

registerGpuOp('FusedMatMul', (node, inputs, ctx) => {
  if (node.domain !== 'webjit') return null;
  const [a, b, bias, res] = inputs;
  if (!a || !b || !bias || inputs.length > 4 || !f32(a, b, bias, res)) return null;
  const act = node.attrs.get('activation')?.value ?? 'none';
  if (typeof act !== 'string' || !ACTIVATIONS.has(act)) return null;
  if (a.dims.length === 0 || b.dims.length !== 2) return null;
  const s = matmulShapes(a.dims, b.dims);
  if (!s) return null;
  const N = b.dims[1];
  const bd = bias.dims;
  if (bd.length === 0 || bd.slice(0, -1).some((d) => d !== 1)) return null;
  const bLast = bd[bd.length - 1];
  if (bLast !== N && bLast !== 1) return null;
  let outDims = tryBroadcastShape(s.outDims, bd);
  if (!outDims || sizeOf(outDims) !== sizeOf(s.outDims)) return null;
  if (res) {
    const od = tryBroadcastShape(outDims, res.dims);
    if (!od || od.length !== res.dims.length || od.some((d, i) => d !== res.dims[i]) || sizeOf(od) !== sizeOf(s.outDims)) return null;
    outDims = od;
  }
  const epilogue: MatmulEpilogue = { bias: bLast === N && N > 1 ? 'n' : 'scalar', act, residual: !!res };
  const bindings: Binding[] = [{ input: 0 }, { input: 1 }, { input: 2 }, ...(res ? [{ input: 3 }] : [])];
  const bw = b.constant?.data;
  const bConst = bw instanceof Float32Array ? { name: b.name, data: () => bw, key: b.dims.join('x') } : undefined;
  const fusedDims = {
    op: 'FusedMatMul',
    mkn: mknAB,
    dimsAt: (d: number[][], M2: number, K2: number, N2: number) => {
      const out = abAt(d[0], d[1], M2, K2, N2);
      const last = (x: number[]) => x.map((v, i) => (i === x.length - 1 && v !== 1 ? N2 : v));
      out.push(last(d[2]));
      if (d[3]) {
        const r = last(d[3]);
        if (d[0].length >= 2 && r.length >= 2 && r[r.length - 2] !== 1) r[r.length - 2] = M2;
        out.push(r);
      }
      return out;
    },
  };
  return plan({ spec: { ...s.spec, epilogue }, outDims, bindings, bConst, ...fusedDims }, ctx);
});

function transpose(src: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = src[r * cols + c];
  return out;
}
