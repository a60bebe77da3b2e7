// `webjit tune MODEL`: tunes a model's kernels on this device (progress bar), prints per-kernel and end-to-end
// speedups, and leaves the winners in the tuning cache for every later session.
import { SingleBar, Presets } from 'cli-progress';
import { InputError } from '../errors.js';
import { InferenceSession, type BackendName, type Feeds } from '../session.js';
import { mulberry32 } from '../util/random.js';
import { cacheLocation } from '../tune/cache.js';
import type { TuneReport } from '../tune/tuner.js';
import { interleaved, median, medianRatio } from '../util/stats.js';
import { formatReport, kernelsChanged } from '../tune/report.js';
import { parseDims, randomInput } from './run.js';

export interface TuneArgs {
  backend: BackendName;
  threads?: number;
  budget: string;
  dim: string[];
  runs: number;
  force?: boolean;
  json?: string;
  seed: number;
}

/** '30s', '1500ms', '2m' or a number of seconds. */
export function parseBudget(s: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(s.trim());
  if (!m) throw new InputError(`--budget expects e.g. 30s, 1500ms or 2m, got '${s}'`);
  const v = parseFloat(m[1]);
  return m[2] === 'ms' ? v : m[2] === 'm' ? v * 60_000 : v * 1000;
}

async function medianRun(s: InferenceSession, feeds: Feeds, runs: number): Promise<number> {
  const ts: number[] = [];
  for (let i = 0; i < runs; i++) { const t = performance.now(); await s.run(feeds); ts.push(performance.now() - t); }
  return ts.sort((a, b) => a - b)[ts.length >> 1];
}

/**
 * Default kernels against tuned ones, fairly: a session with tuning 'off' and the tuned session, both warmed up,
 * measured in rounds of one median each, the order alternating (machine speed drifts); medians over all rounds, and
 * the speedup as the median of the rounds' ratios.
 */
export async function compareSessions(base: InferenceSession, tuned: InferenceSession, feeds: Feeds, runs: number): Promise<{ before: number; after: number; speedup: number }> {
  for (const s of [base, tuned]) for (let i = 0; i < Math.max(5, runs >> 1); i++) await s.run(feeds);
  const rounds = 9, per = Math.max(1, Math.ceil(runs / rounds));
  const [b, a] = await interleaved([() => medianRun(base, feeds, per), () => medianRun(tuned, feeds, per)], (r) => r < rounds);
  return { before: median(b), after: median(a), speedup: medianRatio(b, a) };
}

export async function tuneCommand(model: string, a: TuneArgs): Promise<number> {
  if (a.backend === 'reference') throw new InputError('the reference backend has nothing to tune', {}, 'use --backend wasm or --backend webgpu');
  const budgetMs = parseBudget(a.budget);
  const session = await InferenceSession.create(model, { backend: a.backend, threads: a.threads, tuning: 'cache' });
  try {
    const dims = parseDims(a.dim);
    // Integer inputs (ids, masks, type ids) are 0 or 1: valid for any vocabulary.
    const rng = mulberry32(a.seed);
    const feeds: Feeds = {};
    for (const vi of session.model.graph.inputs.filter((i) => !session.model.graph.initializers.has(i.name))) feeds[vi.name] = randomInput(vi, dims, rng, 2);
    await session.run(feeds);
    console.error(`${model} on ${a.backend}: tuning with a budget of ${(budgetMs / 1000).toFixed(1)} s`);
    const bar = new SingleBar({ format: 'tuning [{bar}] {value}/{total} kernels | best kernel speedup {best}× | {kernel}', hideCursor: true }, Presets.shades_classic);
    let started = false;
    const report: TuneReport = await session.tune({
      budgetMs, force: a.force, seed: a.seed,
      onProgress: (p) => {
        if (!started) { bar.start(p.total, 0, { best: '1.00', kernel: '' }); started = true; }
        bar.update(p.done, { best: p.bestSpeedup.toFixed(2), kernel: `${p.family} ${p.sig.slice(0, 40)}` });
      },
    });
    if (started) bar.stop();
    const base = await InferenceSession.create(model, { backend: a.backend, threads: a.threads, tuning: 'off' });
    let before: number, after: number, speedup: number;
    try { ({ before, after, speedup } = await compareSessions(base, session, feeds, a.runs)); } finally { await base.release(); }
    console.log(formatReport(report));
    // Identical kernels in both sessions: their difference is noise, not a speedup (this 2-core machine: ±15%).
    const e2e = kernelsChanged(report)
      ? `${before.toFixed(2)} ms → ${after.toFixed(2)} ms (${speedup.toFixed(2)}× by paired rounds)`
      : `no tuned kernel kept, both sessions run the defaults: ${before.toFixed(2)} and ${after.toFixed(2)} ms (the machine's noise)`;
    console.log(`end to end (default and tuned sessions in alternating rounds): ${e2e}, tuning took ${(report.ms / 1000).toFixed(1)} s; ` +
      `cache: ${(await cacheLocation()) ?? 'in memory only (WEBJIT_TUNE_CACHE=off)'}`);
    if (a.json) {
      const fs = await import('node:fs');
      fs.writeFileSync(a.json, JSON.stringify({ model, backend: a.backend, beforeMs: before, afterMs: after, ...report }, null, 1));
    }
    return 0;
  } finally {
    await session.release();
  }
}
