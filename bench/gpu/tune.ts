// Whole-model tuning, measured: a model's warm latency with default kernels, tuning within a budget (per-kernel
// table), the latency after; then what a warm tuning cache adds to session creation. Works on either fast backend:
// node tune.mjs BACKEND MODEL B S BUDGET_MS   (BERT-style inputs [B, S]; WEBJIT_TUNE_CACHE picks the cache file)
import fs from 'node:fs';
import { create, globals } from 'webgpu';
import { InferenceSession, Tensor } from '../../src/index.js';
import { formatReport, kernelsChanged } from '../../src/tune/report.js';
import { loadCache } from '../../src/tune/cache.js';
import type { Family } from '../../src/tune/site.js';
import { gpuRunnerOf } from '../../src/bench/gpu_env.js';
import { median } from '../../src/util/stats.js';

Object.assign(globalThis, globals);
(globalThis as { navigator?: unknown }).navigator = { gpu: create(['enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia']) };

const [backend, model, bs, ss, budget] = process.argv.slice(2);
const B = Number(bs), S = Number(ss), RUNS = Number(process.env.RUNS ?? 50);
const n = B * S;
const feeds = {
  input_ids: new Tensor('int64', BigInt64Array.from({ length: n }, (_, i) => BigInt((i * 7919 + 13) % 1000)), [B, S]),
  attention_mask: new Tensor('int64', BigInt64Array.from({ length: n }, (_, i) => (i % S < S - 3 ? 1n : 0n)), [B, S]),
  token_type_ids: new Tensor('int64', new BigInt64Array(n), [B, S]),
};
async function warm(s: InferenceSession): Promise<number> {
  for (let i = 0; i < 3; i++) await s.run(feeds);
  const ts: number[] = [];
  for (let i = 0; i < Math.ceil(RUNS / 5); i++) { const t = performance.now(); await s.run(feeds); ts.push(performance.now() - t); }
  return median(ts);
}
// WEBJIT_PRECISION: high (matmulPrecision 'high', tensor-core GEMMs) or f16 (precision 'f16'); default f32.
const prec = process.env.WEBJIT_PRECISION;
const opts = { backend: backend as 'wasm' | 'webgpu', threads: 2, ...(prec === 'high' ? { matmulPrecision: 'high' as const } : prec === 'f16' ? { precision: 'f16' as const } : {}) };
/** WebGPU: the GPU's own time for a run (its dispatches replayed in one pass), without the host's share of the wall time. */
async function gpuMs(x: InferenceSession): Promise<number | undefined> {
  const g = gpuRunnerOf(x);
  return g ? median(await g.runner.timeRuns([g.feeds(feeds)], 20, 5)) : undefined;
}
const s = await InferenceSession.create(model, { ...opts, tuning: 'cache' });
const ref = await s.run(feeds);
const t0 = performance.now();
// WEBJIT_TUNE_FAMILIES=attention,…: only those kernel families (a long budget on one family: what its space holds).
const families = process.env.WEBJIT_TUNE_FAMILIES?.split(',') as Family[] | undefined;
const report = await s.tune({ budgetMs: Number(budget), force: true, families });
const tuneMs = performance.now() - t0;
// Default kernels (a session with tuning 'off') against the tuned session, warmed alike, in alternating rounds.
const base = await InferenceSession.create(model, { ...opts, tuning: 'off' });
for (const x of [base, s]) await warm(x);
const bs_: number[] = [], as_: number[] = [];
for (let r = 0; r < 5; r++) { bs_.push(await warm(base)); as_.push(await warm(s)); }
const before = median(bs_), after = median(as_);
const gpuBefore = await gpuMs(base), gpuAfter = await gpuMs(s);
await base.release();
const out = await s.run(feeds);
let md = 0, mx = 0;
const a = out.last_hidden_state.data as Float32Array, r = ref.last_hidden_state.data as Float32Array;
for (let i = 0; i < a.length; i++) { md = Math.max(md, Math.abs(a[i] - r[i])); mx = Math.max(mx, Math.abs(r[i])); }
console.log(formatReport(report));
if (report.phases) console.log(`tuning time by phase (ms): ${Object.entries(report.phases).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', ')}`);
const same = kernelsChanged(report) ? '' : ' [no tuned kernel kept: the same kernels, so the difference is noise]';
console.log(`${backend} ${model.split('/').pop()} b${B} s${S}: warm ${before.toFixed(3)} ms default → ${after.toFixed(3)} ms tuned (alternating rounds) (${(before / after).toFixed(2)}×)${same}; tuning ${(tuneMs / 1000).toFixed(2)} s (budget ${(Number(budget) / 1000).toFixed(0)} s); tuned vs default outputs ${(md / mx).toExponential(1)}`);
if (gpuBefore && gpuAfter) console.log(`GPU time of a run: ${gpuBefore.toFixed(3)} ms default → ${gpuAfter.toFixed(3)} ms tuned (${(gpuBefore / gpuAfter).toFixed(2)}×)`);
await s.release();

// Creation with a warm cache (the file read and parsed as a new process would) against tuning 'off'.
const bytes = new Uint8Array(fs.readFileSync(model));
const createMs = async (tuning: 'off' | 'cache') => {
  const ts: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t = performance.now();
    const x = await InferenceSession.create(bytes, { ...opts, tuning });
    await x.run(feeds);
    ts.push(performance.now() - t);
    await x.release();
  }
  return median(ts);
};
const tl = performance.now();
const loaded = await loadCache();
const loadMs = performance.now() - tl;
const off = await createMs('off'), cached = await createMs('cache');
console.log(`create + first run: tuning off ${off.toFixed(1)} ms, warm cache ${cached.toFixed(1)} ms (+${(cached - off).toFixed(1)} ms); loading the cache file (${loaded.size} entries) ${loadMs.toFixed(1)} ms`);
