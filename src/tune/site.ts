// Tunable sites: the contract between a backend's op planners and the tuner. A planner that has a choice (tile sizes,
// workgroup size, vector width, split-K …) describes it as a TuneSite and asks the plan context to pick; the context
// answers with a tuned winner from the cache, a candidate the tuner forces while verifying or timing it, or the
// site's default. Parameters are plain JSON so winners can be cached, exported and shipped with an app.

export type Family = 'matmul' | 'conv' | 'attention' | 'reduce' | 'elementwise';
export const FAMILIES: readonly Family[] = ['matmul', 'conv', 'attention', 'reduce', 'elementwise'];

/** A kernel's parameters (JSON values only). */
export type Params = Record<string, number | string | boolean>;

/**
 * Deliberate bugs the generators of every family can plant in a candidate, for the test that shows verification
 * rejects them (never produced by a search space):
 * - 'edge': the last row/column/element of a tile edge is not computed (an off-by-one in a bound or a guard);
 * - 'barrier': a synchronisation is missing (WGSL: a workgroupBarrier; Wasm: a join between phases);
 * - 'epilogue': a wrong index in the epilogue (bias, residual or scale read one element off);
 * - 'f16acc': sums accumulated in f16 where f32 is required.
 * A family may map a fault it cannot express literally to the nearest bug it can (documented at its generator).
 */
export type Fault = 'edge' | 'barrier' | 'epilogue' | 'f16acc';
export const FAULTS: readonly Fault[] = ['edge', 'barrier', 'epilogue', 'f16acc'];

export interface SpaceInfo {
  /** Candidates after pruning by the device's limits and the shape; the default is among them. */
  candidates: Params[];
  /** Size of the unpruned space (the product of the parameters' ranges). */
  before: number;
}

export interface TuneSite {
  family: Family;
  /**
   * The kernel's signature: everything its code depends on apart from the parameters (op, dims, dtypes, transposes,
   * epilogue). Equal signatures get the same winner; the cache key adds the device identity.
   */
  sig: string;
  /** The parameters used when nothing better is known (sound on every device). */
  default: Params;
  /** The pruned search space (computed only when the tuner asks). */
  space(): SpaceInfo;
  /**
   * Input dims of a ragged case of the same kernel: sizes that are not multiples of any tile (the same op and
   * attributes; same ranks). Verification runs every candidate there as well as at the real shape.
   */
  ragged(inputDims: number[][]): number[][];
  /**
   * The faults this kernel can plant so that they show at its ragged shape (default: all). A fault that cannot
   * show here (a missing join in a kernel of one phase) would be a correct kernel under a fault's name.
   */
  faults?(): Fault[];
  /**
   * Kernels whose output rows each depend on the same rows of their inputs alone (matmuls: a row of C is a row of A
   * times B): the inputs' dims with R output rows (the output's second-to-last axis, or `outAxis`), and the
   * multiply-adds of the whole case. Large cases are verified on sampled rows, the reference computing those rows only.
   */
  rowsAt?(inputDims: number[][], R: number): { dims: number[][]; macs: number; outAxis?: number } | null;
}

/** How a plan context chooses parameters; the runner records every site it sees (the tuner's work list). */
export interface TuneHooks {
  pick(site: TuneSite): Params;
}

/** Defaults only: what a context without tuning uses. */
export const DEFAULTS_ONLY: TuneHooks = { pick: (s) => s.default };

/** A stable text form of parameters (sorted keys), for plan keys and the cache. */
export function paramsKey(p: Params): string {
  return Object.keys(p).sort().map((k) => `${k}=${String(p[k])}`).join(',');
}

/** The product of the ranges of a space's axes (its size before pruning). */
export function spaceSize(axes: Record<string, readonly unknown[]>): number {
  return Object.values(axes).reduce((n, a) => n * a.length, 1);
}

/** Every combination of the axes' values, kept where `keep` says so. */
export function enumerate(axes: Record<string, readonly (number | string | boolean)[]>, keep: (p: Params) => boolean): Params[] {
  const keys = Object.keys(axes);
  const out: Params[] = [];
  const cur: Params = {};
  const rec = (i: number) => {
    if (i === keys.length) { if (keep(cur)) out.push({ ...cur }); return; }
    for (const v of axes[keys[i]]) { cur[keys[i]] = v; rec(i + 1); }
  };
  rec(0);
  return out;
}

/** The default first, then the other candidates once each. */
export function withDefault(def: Params, cands: Params[]): Params[] {
  const k = paramsKey(def);
  return [def, ...cands.filter((c) => paramsKey(c) !== k)];
}

/** A ragged size near `n`: odd and not a multiple of 4 or 8 (1 stays 1). */
export function raggedSize(n: number): number {
  if (n <= 1) return n;
  if (n <= 4) return n === 4 ? 3 : n;
  let r = Math.max(5, Math.round(n * 0.62));
  while (r % 2 === 0 || r % 4 === 0) r++;
  return r;
}

/** A site as a runner met it: the node and its inputs (constant ones keep their values), for the tuner to rebuild. */
export interface SiteRecord {
  site: TuneSite;
  node: import('../graph/ir.js').Node;
  inputs: ({ dtype: import('../tensor.js').DType; dims: number[]; constant?: import('../tensor.js').Tensor } | undefined)[];
  opset: number;
}

/** Runner options shared by both fast backends. */
export interface TuneOptions {
  /** Chooses each site's parameters (default: the site's default). */
  tune?: TuneHooks;
  /** Called for every site a planner meets. */
  onSite?: (r: SiteRecord) => void;
  /** Fill every output with NaN before its kernel runs (verification: an unwritten element cannot pass). */
  poison?: boolean;
}
