// Just-in-time tuning of a model's kernels on the user's device (the idea of nn-JIT.web, arXiv 2309.08978): for each
// distinct kernel the model ran (a TuneSite), take the candidates its search space keeps after pruning by the
// device's limits, verify each one against the reference backend, time the survivors on this device, keep the
// fastest and remember it in the tuning cache.
//
// Verification, before a candidate can be chosen: fresh random inputs (never all zeros) at the real shape and at a
// ragged one (sizes that are no multiple of any tile), every output poisoned with NaN before the kernel runs, the
// result compared with the reference backend at a tolerance set by dtype; a NaN/Inf where the reference has none (or
// the reverse) rejects. Timing: a warm-up, then the median of repeats with the input sets rotated, each candidate
// interleaved with the default and judged by the ratio where the target can; the winner is timed again before it
// may replace the default.
import { runNode } from '../backends/reference/executor.js';
import { DTYPES, isFloat, sizeOf, Tensor, type DType, type TypedArray, type Value } from '../tensor.js';
import { mulberry32 } from '../util/random.js';
import { graphOfNode, type In } from './one_node.js';
import type { TuneCache, TuneEntry } from './cache.js';
import { paramsKey, type Family, type Params, type SiteRecord, type TuneHooks, type TuneOptions, type TuneSite } from './site.js';

/** What the tuner needs from a backend: a runner for a one-node graph, forced to some parameters. */
export interface TuneTarget {
  backend: 'wasm' | 'webgpu';
  /** Device identity for the cache: adapter or CPU model, thread count, features, generator version. */
  device: string;
  /** f16 weights (WebGPU precision 'f16'): verification tolerates f16 rounding. */
  f16?: boolean;
  runner(graph: ReturnType<typeof graphOfNode>['graph'], env: ReturnType<typeof graphOfNode>['env'], opts: TuneOptions): TuneRunner;
  /** Median ms of a run of each of these runners (its own), timed together so that they are comparable. */
  timeTogether?(runners: TuneRunner[], feedSets: Map<string, Value>[], maxMs: number): Promise<number[]>;
  /**
   * Starts compiling the kernels a run of the graph with these feeds needs, without waiting (WebGPU: compiles run in
   * parallel on Dawn's workers). Never rejects: what fails shows when the kernel is verified or timed.
   */
  prepare?(graph: ReturnType<typeof graphOfNode>['graph'], env: ReturnType<typeof graphOfNode>['env'], opts: TuneOptions, feeds: Map<string, Value>): Promise<void>;
}

export interface TuneRunner {
  run(feeds: Map<string, Value>): Promise<Value[]>;
  /** Median ms of one run over repeats, the feed sets rotated. */
  time(feedSets: Map<string, Value>[], maxMs: number): Promise<number>;
  /** Ms of one warm run on these feeds, their upload and the read-back not counted (Wasm: feeds kept resident). */
  timedRun?(feeds: Map<string, Value>): Promise<number>;
  dispose(): void;
}

/** A distinct kernel of the model: one site and the number of nodes that share its signature. */
export interface SiteUse { record: SiteRecord; nodes: Set<string> }

export interface TuneProgress {
  /** Kernels finished and to do. */
  done: number;
  total: number;
  family: Family;
  sig: string;
  /** The best end-to-end kernel speedup found so far (1 = none). */
  bestSpeedup: number;
}

export interface TuneRow {
  family: Family;
  sig: string;
  /** Nodes of the model that run this kernel. */
  nodes: number;
  /** Search space before and after pruning. */
  before: number;
  after: number;
  tried: number;
  rejected: number;
  /** Why each rejected candidate failed, by its parameters (paramsKey). */
  rejections: Record<string, string>;
  defaultMs: number;
  tunedMs: number;
  params: Params;
  /** True when the winner is not the default. */
  changed: boolean;
  /** Rows of the real-shape output verified against the reference, where a large case was checked on sampled rows. */
  sampledRows?: number;
  /** The kernel's default parameters. */
  defaultParams: Params;
}

export interface TuneReport {
  device: string;
  rows: TuneRow[];
  /** Wall time of the whole tuning, ms. */
  ms: number;
  /** Candidates rejected by verification, over all kernels. */
  rejected: number;
  /** Kernels left untuned when the budget ran out. */
  skipped: number;
  /**
   * Where the time went (ms): the defaults' first timings; starting candidates' compiles (planning, their weights'
   * uploads); candidates' runs for verification (waiting for their compiles included); the reference's outputs;
   * candidates' timings.
   */
  phases?: { prepare: number; compile: number; verify: number; reference: number; timing: number };
  /**
   * The whole model with the tuned kernels against its defaults (GPU ms per run, alternating rounds), where the session
   * checked it: `kept` false when the tuned model was not faster and the defaults were put back.
   */
  model?: { defaultMs: number; tunedMs: number; kept: boolean };
}

export interface TuneRunOptions {
  /** Wall-clock budget for the whole tuning (default 30 000 ms). */
  budgetMs?: number;
  onProgress?: (p: TuneProgress) => void;
  /** Only these families. */
  families?: Family[];
  /** At most this many candidates per kernel (default 32). */
  maxCandidates?: number;
  /** Extra candidates to try after the space's (tests: deliberately wrong ones). */
  extra?: (site: TuneSite) => Params[];
  /** Kernels already in the cache are tuned again (default false). */
  force?: boolean;
  /** A winner must beat the default by this factor to replace it (noise margin; default 0.97). */
  margin?: number;
  /** Seed of the random inputs. */
  seed?: number;
  /** Checked between candidates: true stops tuning (the session was released). */
  stop?: () => boolean;
  /** Cases past this many multiply-adds are verified on sampled rows (default SAMPLE_MACS; tests lower it). */
  sampleMacs?: number;
  /**
   * The tuned model is kept when its time is below the defaults' times this: default 0.99 on WebGPU (GPU timestamps),
   * 0.97 on Wasm (wall times of a shared CPU, where pairs of identical runs differ by 1–3%).
   */
  keepBelow?: number;
}

/** Relative tolerance of verification: f32 kernels, and f16 storage of weights. */
const TOL_F32 = 1e-4;
const TOL_F16 = 4e-3;

/** Random inputs of the node at `dims`: floats in [-1, 1) and never all zero; integer constants keep their values. */
function inputsAt(rec: SiteRecord, dims: number[][], rnd: () => number): (In | undefined)[] {
  return rec.inputs.map((d, k) => {
    if (!d) return undefined;
    const same = dims[k].length === d.dims.length && dims[k].every((x, i) => x === d.dims[i]);
    // Integer constants (axes, shapes, indices) and constants whose dims do not change keep their real values.
    if (d.constant && same && (!isFloat(d.dtype) || sizeOf(d.dims) <= 16)) return { t: d.constant, constant: true };
    return { t: randomTensor(d.dtype, dims[k], rnd), constant: !!d.constant };
  });
}

function randomTensor(dtype: DType, dims: number[], rnd: () => number): Tensor {
  const n = sizeOf(dims);
  const data = DTYPES[dtype].make(n) as TypedArray;
  if (dtype === 'float32' || dtype === 'float64') {
    for (let i = 0; i < n; i++) (data as Float32Array)[i] = rnd() * 2 - 1;
  } else if (dtype === 'int64') {
    for (let i = 0; i < n; i++) (data as BigInt64Array)[i] = BigInt(i === 0 ? 1 : Math.floor(rnd() * 2));
  } else if (dtype === 'bool' || isFloat(dtype)) {
    // Masks (1 keeps a position; the first is always kept); encoded floats as small integers' bit patterns are
    // not needed by any tunable family.
    for (let i = 0; i < n; i++) (data as Uint8Array)[i] = i === 0 ? 1 : Math.floor(rnd() * 2);
  } else {
    for (let i = 0; i < n; i++) (data as Int32Array)[i] = i === 0 ? 1 : Math.floor(rnd() * 2);
  }
  return new Tensor(dtype, data, dims);
}

/** Why `got` is not `want` within tolerance, or null when it is. */
export function mismatch(got: Value[], want: Value[], tol: number): string | null {
  if (got.length !== want.length) return `${got.length} outputs, the reference has ${want.length}`;
  for (let o = 0; o < want.length; o++) {
    const g = got[o], w = want[o];
    if (!(g instanceof Tensor) || !(w instanceof Tensor)) continue;
    if (g.dims.join() !== w.dims.join()) return `output ${o} dims [${g.dims}] vs [${w.dims}]`;
    const a = g.data as ArrayLike<number | bigint>, b = w.data as ArrayLike<number | bigint>;
    let maxRef = 0, maxDiff = 0, at = -1;
    for (let i = 0; i < b.length; i++) {
      const y = Number(b[i]);
      if (Number.isFinite(y)) maxRef = Math.max(maxRef, Math.abs(y));
    }
    const bound = isFloat(w.type) ? tol * Math.max(1, maxRef) : 0;
    for (let i = 0; i < b.length; i++) {
      const x = Number(a[i]), y = Number(b[i]);
      if (Number.isFinite(x) !== Number.isFinite(y) || (!Number.isFinite(y) && !Object.is(x, y) && !(Number.isNaN(x) && Number.isNaN(y)))) {
        return `output ${o}[${i}] is ${x}, the reference ${y}`;
      }
      const d = Math.abs(x - y);
      if (d > maxDiff) { maxDiff = d; at = i; }
    }
    if (maxDiff > bound) return `output ${o}[${at}] differs by ${maxDiff.toExponential(2)} (bound ${bound.toExponential(2)})`;
  }
  return null;
}

/**
 * A shape's inputs; the reference output is computed when first needed (at BERT sizes it takes seconds in JS). A
 * large matmul-like case (TuneSite.rowsAt) is checked on `rows` of its output: the reference computes just those rows
 * from the same rows of the inputs (`axes`: each input's row axis, or null where the input has none).
 */
interface Case {
  graph: ReturnType<typeof graphOfNode>; ins: (In | undefined)[]; ref?: Value[]; rows?: number[]; axes?: (number | null)[];
  /** The row axes' leading (batch) dims fold into the rows (matmuls whose other inputs have no batch): rows index that. */
  fold?: boolean;
  /** The output's row axis when it is not the second-to-last (TuneSite.rowsAt's outAxis). */
  outAxis?: number;
}

/** Cases past this many multiply-adds are verified on sampled rows (a BERT-base b8 GEMM is 2.4e9: ~4 s in JS whole). */
export const SAMPLE_MACS = 1 << 25;
/** The rows checked: the first and last tiles' rows (where edges and guards are) and a spread of random ones. */
const EDGE_ROWS = 8, RANDOM_ROWS = 16;
/** Candidates whose kernels compile ahead of the one being verified. */
const PREPARE_AHEAD = 6;

/** Rows `rows` of `t` along `axis`; with `fold`, of its dims up to `axis` folded into one. */
function pickRows(t: Tensor, axis: number, rows: number[], fold = false): Tensor {
  if (!fold) return takeRows(t, axis, rows);
  return takeRows(new Tensor(t.type, t.data, [sizeOf(t.dims.slice(0, axis + 1)), ...t.dims.slice(axis + 1)]), 0, rows);
}

/** Rows `rows` of `t` along `axis` (every index of the other axes). */
function takeRows(t: Tensor, axis: number, rows: number[]): Tensor {
  const dims = [...t.dims];
  const inner = sizeOf(dims.slice(axis + 1)), outer = sizeOf(dims.slice(0, axis)), n = dims[axis];
  const src = t.data as TypedArray;
  const out = DTYPES[t.type].make(outer * rows.length * inner) as TypedArray;
  for (let o = 0; o < outer; o++) {
    rows.forEach((r, k) => (out as Float32Array).set((src as Float32Array).subarray((o * n + r) * inner, (o * n + r + 1) * inner), (o * rows.length + k) * inner));
  }
  dims[axis] = rows.length;
  return new Tensor(t.type, out, dims);
}

function forced(family: Family, p: Params): TuneHooks {
  return { pick: (s) => (s.family === family ? p : s.default) };
}

export class Tuner {
  private phases = { prepare: 0, compile: 0, verify: 0, reference: 0, timing: 0 };
  constructor(readonly target: TuneTarget, readonly cache: TuneCache) {}

  /** Verifies a candidate on a case; returns the reason it is wrong, or null. */
  async verify(family: Family, p: Params, c: Case): Promise<string | null> {
    const r = this.target.runner(c.graph.graph, c.graph.env, { tune: forced(family, p), poison: true });
    try {
      const t0 = performance.now();
      const got = await r.run(c.graph.feeds);
      const t1 = performance.now();
      this.phases.verify += t1 - t0;
      // The reference (computed once per case) is timed by itself.
      const reference = <T>(f: () => T): T => { const t = performance.now(); try { return f(); } finally { this.phases.reference += performance.now() - t; } };
      const tol = this.target.f16 ? TOL_F16 : TOL_F32;
      if (c.rows) {
        const rows = c.rows;
        c.ref ??= reference(() => runNode(c.graph.node, c.ins.map((x, k) => x && (c.axes![k] === null ? x.t : pickRows(x.t, c.axes![k]!, rows, c.fold))), c.graph.env, () => undefined));
        // Every element outside the sampled rows must still have been written (the output was poisoned with NaN): the
        // inputs are finite, and so is every output row the reference computed.
        for (const [o, g] of got.entries()) {
          const w = c.ref[o];
          if (!(g instanceof Tensor) || !(w instanceof Tensor) || !isFloat(g.type)) continue;
          if (!Array.from(w.data as Float32Array).every(Number.isFinite)) continue;
          const bad = (g.data as Float32Array).findIndex((x) => !Number.isFinite(x));
          if (bad >= 0) return `output ${o}[${bad}] is ${(g.data as Float32Array)[bad]} (inputs and the sampled reference rows are finite)`;
        }
        return mismatch(got.map((g) => (g instanceof Tensor ? pickRows(g, c.outAxis ?? g.dims.length - 2, rows, c.fold) : g)), c.ref, tol);
      }
      c.ref ??= reference(() => runNode(c.graph.node, c.ins.map((x) => x?.t), c.graph.env, () => undefined));
      return mismatch(got, c.ref, tol);
    } catch (e) {
      return `failed: ${(e as Error).message.slice(0, 200)}`;
    } finally {
      r.dispose();
    }
  }

  private makeCase(rec: SiteRecord, dims: number[][], rnd: () => number, sampleMacs = SAMPLE_MACS): Case {
    const ins = inputsAt(rec, dims, rnd);
    const c: Case = { graph: graphOfNode(rec.node, ins, rec.node.outputs.length, rec.opset), ins };
    // Sampled rows: each input's row axis is the one axis whose size moves with the output's rows.
    const R = 2 * EDGE_ROWS + RANDOM_ROWS;
    const at = rec.site.rowsAt?.(dims, R);
    if (!at || at.macs <= sampleMacs) return c;
    const axes = dims.map((d, k) => {
      const diff = d.flatMap((n, a) => (n !== at.dims[k][a] ? [a] : []));
      return diff.length === 1 ? diff[0] : diff.length === 0 ? null : -1;
    });
    const rowAxis = axes[0];
    if (rowAxis === null || rowAxis < 0 || axes.some((a) => a === -1)) return c;
    if (axes.some((a, k) => a !== null && dims[k][a] !== dims[0][rowAxis])) return c;
    // Batched rows of a matmul whose weight has no batch: the batches fold into the rows (a GEMM folds them into M,
    // so its tile edges are those of the folded rows), and a few rows are sampled in all, not in every batch.
    const lead = (k: number) => dims[k].slice(0, axes[k]!).join();
    const fold = rowAxis > 0 && axes.every((a, k) => (a === null ? dims[k].length <= 2 : a === dims[k].length - 2 && lead(k) === lead(0)));
    const M = fold ? sizeOf(dims[0].slice(0, rowAxis + 1)) : dims[0][rowAxis];
    if (M <= R) return c;
    const rows = new Set<number>();
    for (let i = 0; i < EDGE_ROWS; i++) { rows.add(i); rows.add(M - 1 - i); }
    while (rows.size < R) rows.add(EDGE_ROWS + Math.floor(rnd() * (M - 2 * EDGE_ROWS)));
    c.rows = [...rows].sort((a, b) => a - b);
    c.axes = axes;
    c.fold = fold;
    c.outAxis = at.outAxis;
    return c;
  }

  /** Tunes the given kernels within the budget, biggest first; winners go into the cache. */
  async tune(uses: SiteUse[], opts: TuneRunOptions = {}): Promise<TuneReport> {
    const t0 = performance.now();
    const budget = opts.budgetMs ?? 30_000;
    const deadline = t0 + budget;
    const margin = opts.margin ?? 0.97;
    const maxCands = opts.maxCandidates ?? 32;
    const rnd = mulberry32(opts.seed ?? 0x5eed);
    const todo = uses.filter((u) => !opts.families || opts.families.includes(u.record.site.family))
      .filter((u) => opts.force || !this.cache.get(this.target.device, u.record.site.family, u.record.site.sig))
      // A kernel whose pruned space is its default alone has nothing to choose.
      .filter((u) => u.record.site.space().candidates.length > 1);
    const rows: TuneRow[] = [];
    let rejectedAll = 0, skipped = 0, best = 1, done = 0;

    // Phase 1: the real-shape case and the default's time of every kernel, to spend the budget where time goes.
    const prepared: { use: SiteUse; real: Case; feedSets: Map<string, Value>[]; defaultMs: number; weight: number }[] = [];
    const cases = todo.map((use) => {
      const realDims = use.record.inputs.map((d) => (d ? d.dims : []));
      const real = this.makeCase(use.record, realDims, rnd, opts.sampleMacs);
      return { use, real, feedSets: [real.graph.feeds, ...[1, 2].map(() => this.makeCase(use.record, realDims, rnd).graph.feeds)] };
    });
    // Every default kernel starts compiling first (in parallel where the target can), then each is timed.
    if (this.target.prepare) {
      const tc = performance.now();
      for (const { use, real } of cases) await this.target.prepare(real.graph.graph, real.graph.env, { tune: forced(use.record.site.family, use.record.site.default) }, real.graph.feeds);
      this.phases.compile += performance.now() - tc;
    }
    for (const { use, real, feedSets } of cases) {
      if (performance.now() > deadline || opts.stop?.()) { skipped++; continue; }
      const { site } = use.record;
      const r = this.target.runner(real.graph.graph, real.graph.env, { tune: forced(site.family, site.default) });
      let defaultMs: number;
      const tp = performance.now();
      // Only to share the budget out (the default is timed again with its candidates): a short measurement.
      try { defaultMs = await r.time(feedSets, 60); } finally { r.dispose(); this.phases.prepare += performance.now() - tp; }
      prepared.push({ use, real, feedSets, defaultMs, weight: defaultMs * use.nodes.size });
    }
    prepared.sort((a, b) => b.weight - a.weight);
    let weightLeft = prepared.reduce((t, p) => t + p.weight, 0);

    // Phase 2: candidates of each kernel, verified then timed; each kernel gets a share of what is left.
    for (const { use, real, feedSets, defaultMs: firstMs, weight } of prepared) {
      const { site } = use.record;
      const now = performance.now();
      if (now > deadline || opts.stop?.()) { skipped++; continue; }
      const share = now + (deadline - now) * (weightLeft > 0 ? weight / weightLeft : 1);
      weightLeft -= weight;
      const space = site.space();
      const cands = [...space.candidates.slice(0, maxCands), ...(opts.extra?.(site) ?? [])];
      const defKey = paramsKey(site.default);
      const ragged = this.makeCase(use.record, site.ragged(use.record.inputs.map((d) => (d ? d.dims : []))), rnd, opts.sampleMacs);
      // The default is timed again now and after the candidates, as warm as they are (clocks ramp, JIT tiers, caches):
      // its best time is the bar, so noise favours keeping the default, never a candidate.
      const timeOf = async (p: Params, maxMs: number): Promise<number> => {
        const r = this.target.runner(real.graph.graph, real.graph.env, { tune: forced(site.family, p) });
        const tt = performance.now();
        try { return await r.time(feedSets, maxMs); } finally { r.dispose(); this.phases.timing += performance.now() - tt; }
      };
      // The next few candidates' kernels (ragged and real shapes) compile in parallel while one is verified and
      // timed: one at a time, compiling took most of a candidate's turn.
      let preparedTo = 0;
      const prepareTo = async (prepare: NonNullable<TuneTarget['prepare']>, end: number) => {
        const t = performance.now();
        for (; preparedTo < Math.min(end, cands.length); preparedTo++) {
          for (const c of [ragged, real]) await prepare(c.graph.graph, c.graph.env, { tune: forced(site.family, cands[preparedTo]), poison: true }, c.graph.feeds);
        }
        this.phases.compile += performance.now() - t;
      };
      const perCandidateMs = Math.max(20, Math.min(200, 10 * firstMs));
      // Where the target times runners together, each candidate is timed with the default and judged by the ratio:
      // on WebGPU in the same submits (one clock state), on Wasm in interleaved runs (the machine's drift).
      const together = this.target.timeTogether?.bind(this.target);
      const defRunner = together ? this.target.runner(real.graph.graph, real.graph.env, { tune: forced(site.family, site.default) }) : null;
      let defaultMs = together ? firstMs : Math.min(firstMs, await timeOf(site.default, perCandidateMs));
      // The fastest candidate other than the default; it replaces the default if it beats it by the margin.
      let win = { params: site.default, ms: Infinity, ratio: Infinity };
      let tried = 0, rejected = 0;
      let lastStart = performance.now(), lastMs = 0;
      const rejections: Record<string, string> = {};
      for (const [i, p] of cands.entries()) {
        // A candidate is not started when the last one took longer than what is left of the share (the first, which
        // waits for compiles and computes the reference, does not count).
        const now = performance.now();
        if ((now + lastMs > share || opts.stop?.()) && tried > 0) break;
        if (tried >= 2) lastMs = now - lastStart;
        lastStart = now;
        tried++;
        if (this.target.prepare) await prepareTo(this.target.prepare.bind(this.target), i + PREPARE_AHEAD);
        const why = (await this.verify(site.family, p, ragged)) ?? (await this.verify(site.family, p, real));
        if (why) {
          rejected++;
          rejections[paramsKey(p)] = why;
          if (paramsKey(p) === defKey) {
            // The default itself is wrong here: nothing is cached, so the kernel keeps running as it always did.
            if (typeof process !== 'undefined') process.emitWarning?.(`webjit tune: the default ${site.family} kernel failed verification (${site.sig}): ${why}`);
          }
          continue;
        }
        if (paramsKey(p) === defKey) continue;
        try {
          if (together && defRunner) {
            const r = this.target.runner(real.graph.graph, real.graph.env, { tune: forced(site.family, p) });
            const tt = performance.now();
            try {
              const [d, ms] = await together([defRunner, r], feedSets, perCandidateMs);
              // The default's time is the one measured with the winner.
              if (ms / d < win.ratio) { win = { params: p, ms, ratio: ms / d }; defaultMs = d; }
            } finally { r.dispose(); this.phases.timing += performance.now() - tt; }
          } else {
            const ms = await timeOf(p, perCandidateMs);
            if (ms < win.ms) win = { params: p, ms, ratio: ms / defaultMs };
          }
        } catch (e) {
          rejected++;
          rejections[paramsKey(p)] = `failed while timed: ${(e as Error).message.slice(0, 200)}`;
          continue;
        }
      }
      // The fastest of many noisy ratios is biased low (the winner's curse): the winner is timed with the default
      // once more, and that measurement alone decides.
      if (together && defRunner && win.params !== site.default && win.ratio < margin && !opts.stop?.()) {
        const r = this.target.runner(real.graph.graph, real.graph.env, { tune: forced(site.family, win.params) });
        const tt = performance.now();
        try {
          const [d, ms] = await together([defRunner, r], feedSets, 2 * perCandidateMs);
          win = { params: win.params, ms, ratio: ms / d };
          defaultMs = d;
        } catch (e) {
          rejections[paramsKey(win.params)] = `failed while timed: ${(e as Error).message.slice(0, 200)}`;
          win = { params: site.default, ms: defaultMs, ratio: 1 };
        } finally { r.dispose(); this.phases.timing += performance.now() - tt; }
      }
      defRunner?.dispose();
      if (win.params === site.default) win = { params: site.default, ms: defaultMs, ratio: 1 };
      if (!together && win.params !== site.default) defaultMs = Math.min(defaultMs, await timeOf(site.default, perCandidateMs));
      // Timed together, the winner's ratio to the default measured with it decides (the default's ms is that one).
      const changed = win.params !== site.default && (together ? win.ratio < margin : win.ms < defaultMs * margin);
      const params = changed ? win.params : site.default;
      const entry: TuneEntry = { params, defaultMs, tunedMs: changed ? win.ms : defaultMs, tried, rejected, at: new Date().toISOString() };
      this.cache.set(this.target.device, site.family, site.sig, entry);
      rejectedAll += rejected;
      rows.push({ family: site.family, sig: site.sig, nodes: use.nodes.size, before: space.before, after: space.candidates.length, tried, rejected, rejections, defaultMs, tunedMs: entry.tunedMs, params, changed, sampledRows: real.rows?.length, defaultParams: site.default });
      best = Math.max(best, defaultMs / entry.tunedMs);
      done++;
      opts.onProgress?.({ done, total: prepared.length, family: site.family, sig: site.sig, bestSpeedup: best });
    }
    return { device: this.target.device, rows, ms: performance.now() - t0, rejected: rejectedAll, skipped, phases: { ...this.phases } };
  }
}

/** The cached winner for a site on this device, else the site's default. */
export function cacheHooks(cache: TuneCache | null, device: string): TuneHooks {
  return { pick: (s) => cache?.get(device, s.family, s.sig)?.params ?? s.default };
}
