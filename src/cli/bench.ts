// `webjit bench`: the op suite and the model suite on webjit and its peers; a table with ratios, JSON and a
// self-contained HTML report on request. Every engine's output is checked against onnxruntime-node first.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ortNode, ortWebWasm, webjitEngine, type Engine } from '../bench/engines.js';
import { BASE_MODELS_DIR, measure, modelBytes, modelCases, type Measurement, type ModelCase } from '../bench/models.js';
import { opCases, opModel, tfjsOpEngine, type OpCase } from '../bench/ops.js';
import { type BenchReport, type BenchRow, renderHtml } from '../bench/report.js';
import type { Tensor } from '../tensor.js';

export interface BenchArgs {
  suite: 'cpu' | 'gpu';
  /** 'ops', 'models' or both (undefined). */
  only?: string;
  threads: number;
  json?: string;
  html?: string;
  filter?: string;
  quick?: boolean;
  /** Repeat each suite this many times, engines interleaved; report the median of each figure. */
  rounds: number;
}

const WEBJIT = 'webjit';
const ROOT_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), import.meta.url.endsWith('.ts') ? '../..' : '../../..');

export async function benchCommand(a: BenchArgs): Promise<number> {
  if (a.suite !== 'cpu') {
    console.error('--suite gpu is not part of this command yet: the GPU suite runs on the GPU machine through bench/gpu/run-all.sh ' +
      '(see "Performance (GPU, WebGPU backend)" in the README); use --suite cpu here');
    return 2;
  }
  if (a.only && a.only !== 'ops' && a.only !== 'models') { console.error(`--only takes ops or models, not '${a.only}'`); return 2; }
  const match = (name: string) => !a.filter || new RegExp(a.filter, 'i').test(name);
  const rows: BenchRow[] = [];
  const all: Measurement[] = [];

  if (a.only !== 'models') {
    const ops = opCases().filter((c) => match(`${c.category} ${c.name}`));
    const opts = a.quick ? { warmupMs: 100, minRuns: 3, minMs: 150 } : { warmupMs: 300, minRuns: 10, minMs: 600 };
    const cases = ops.map((c): [OpCase, ModelCase] => [c, { name: c.name, file: '', bytes: () => opModel(c), feeds: c.feeds }]);
    const engines = (c: OpCase): Engine[] => [webjitEngine('wasm', a.threads), ortWebWasm(a.threads), ortNode(a.threads), tfjsOpEngine(c)];
    const got = await runSuite('ops', cases.map(([, m]) => m), (m) => engines(cases.find(([, x]) => x === m)![0]), a.rounds, opts);
    all.push(...got);
    for (const [c] of cases) rows.push(...summarise(got.filter((m) => m.model === c.name), 'ops', c.category, c.flops, c.bytes));
  }
  if (a.only !== 'ops') {
    if (!a.quick) makeBaseModels();
    const models = modelCases().filter((c) => match(c.name));
    const opts = a.quick ? { warmupMs: 200, minRuns: 3, minMs: 300 } : { warmupMs: 1000, minRuns: 10, minMs: 2000 };
    const got = await runSuite('models', models, () => [webjitEngine('wasm', a.threads), ortWebWasm(a.threads), ortNode(a.threads)], a.rounds, opts);
    all.push(...got);
    for (const c of models) rows.push(...summarise(got.filter((m) => m.model === c.name), 'models', 'model'));
  }

  printTable(rows);
  const report: BenchReport = {
    date: new Date().toISOString(), commit: gitCommit(), device: cpuName(), node: process.version, threads: a.threads, rounds: a.rounds,
    suite: a.suite, rows,
  };
  if (a.json) fs.writeFileSync(a.json, JSON.stringify({ ...report, all }, null, 1));
  if (a.html) { fs.writeFileSync(a.html, renderHtml(report)); console.log(`report: ${a.html}`); }
  return 0;
}

/** Every case on every engine, `rounds` times (engines interleaved per case); the oracle is onnxruntime-node. */
async function runSuite(label: string, cases: ModelCase[], engines: (c: ModelCase) => Engine[], rounds: number,
  opts: { warmupMs: number; minRuns: number; minMs: number }): Promise<Measurement[]> {
  const oracles = new Map<string, Record<string, Tensor> | null>();
  for (const c of cases) {
    try {
      const s = await ortNode(1).create(modelBytes(c));
      oracles.set(c.name, await s.run(c.feeds()));
      await s.release();
    } catch {
      oracles.set(c.name, null);
    }
  }
  const out: Measurement[] = [];
  for (let r = 0; r < rounds; r++) {
    for (const c of cases) {
      // Base-size models: one round of a few runs (each run takes about a second on the CPU).
      if (c.heavy && r > 0) continue;
      // The model's bytes once per case and round, for all engines (base-size files are ~0.5 GB).
      const bytes = modelBytes(c);
      const once: ModelCase = { ...c, bytes: () => bytes };
      for (const e of engines(c)) {
        process.stderr.write(`${label} round ${r + 1}/${rounds}: ${c.name} on ${e.name}…\n`);
        // Idle pools of the previous engine spin a while after its last run: let them sleep first.
        await new Promise((resolve) => setTimeout(resolve, 50));
        out.push(await measure(e, once, oracles.get(c.name) ?? null, c.heavy ? { warmupMs: 0, minRuns: 3, minMs: 0 } : opts));
      }
    }
  }
  return out;
}

const median = (xs: number[]) => { const s = [...xs].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };

/** One row per engine of a case: medians over rounds, the worst check, throughput and the ratios of webjit. */
function summarise(ms: Measurement[], suite: 'ops' | 'models', category: string, flops?: number, bytes?: number): BenchRow[] {
  const byEngine = new Map<string, Measurement[]>();
  for (const m of ms) byEngine.set(m.engine, [...(byEngine.get(m.engine) ?? []), m]);
  const rows: BenchRow[] = [];
  for (const [engine, list] of byEngine) {
    const ok = list.filter((m) => !m.error);
    const err = list.find((m) => m.error)?.error;
    const check = err ? 'error' : ok.some((m) => m.relErr === null) ? 'unchecked' : Math.max(...ok.map((m) => m.relErr!)) <= 1e-4 ? 'ok' : 'wrong';
    const med = err ? NaN : median(ok.map((m) => m.medianMs));
    rows.push({
      suite, category, name: list[0].model, engine, check, error: err,
      relErr: err ? null : Math.max(...ok.map((m) => m.relErr ?? 0)),
      createMs: err ? NaN : median(ok.map((m) => m.createMs)), firstMs: err ? NaN : median(ok.map((m) => m.firstMs)),
      medianMs: med, minMs: err ? NaN : Math.min(...ok.map((m) => m.minMs)), maxMs: err ? NaN : Math.max(...ok.map((m) => m.maxMs)),
      gflops: flops && check === 'ok' ? flops / med / 1e6 : undefined,
      gbs: bytes && check === 'ok' ? bytes / med / 1e6 : undefined,
    });
  }
  // Ratios: a peer's median over webjit's (above 1: webjit is faster), against the best correct peer and the best
  // web peer (onnxruntime-web, TensorFlow.js) measured in the same run.
  const w = rows.find((r) => r.engine.startsWith(WEBJIT));
  const peers = rows.filter((r) => !r.engine.startsWith(WEBJIT) && r.check === 'ok');
  if (w && w.check === 'ok' && peers.length) {
    const best = peers.reduce((x, y) => (y.medianMs < x.medianMs ? y : x));
    w.vsBest = { engine: best.engine, ratio: best.medianMs / w.medianMs };
    const web = peers.filter((r) => !r.engine.includes('onnxruntime-node'));
    if (web.length) {
      const bw = web.reduce((x, y) => (y.medianMs < x.medianMs ? y : x));
      w.vsWeb = { engine: bw.engine, ratio: bw.medianMs / w.medianMs };
    }
  }
  return rows;
}

function printTable(rows: BenchRow[]): void {
  const fmt = (x: number | undefined, d = 2) => (x !== undefined && Number.isFinite(x) ? x.toFixed(x < 10 ? d : 1) : '—');
  for (const suite of ['ops', 'models'] as const) {
    const rs = rows.filter((r) => r.suite === suite);
    if (!rs.length) continue;
    console.log(`\n${suite === 'ops' ? 'op suite' : 'model suite'} (medians over rounds, ms)`);
    const models = suite === 'models';
    console.log(`${'case'.padEnd(48)}${'engine'.padEnd(26)}${'median'.padStart(9)}${'min'.padStart(9)}${'max'.padStart(9)}` +
      `${(models ? 'create' : 'GFLOP/s').padStart(9)}${(models ? 'first' : 'GB/s').padStart(models ? 9 : 7)}  check`);
    const names = [...new Set(rs.map((r) => r.name))];
    const webRatios: number[] = [], bestRatios: number[] = [];
    for (const n of names) {
      for (const r of rs.filter((x) => x.name === n)) {
        const check = r.check === 'error' ? `n/a: ${(r.error ?? '').slice(0, 50)}` : r.check === 'wrong' ? `WRONG ${r.relErr?.toExponential(1)}` : r.check === 'ok' ? `ok ${r.relErr?.toExponential(1)}` : r.check;
        const extra = models ? `${fmt(r.createMs, 1).padStart(9)}${fmt(r.firstMs, 1).padStart(9)}` : `${fmt(r.gflops, 1).padStart(9)}${fmt(r.gbs, 1).padStart(7)}`;
        console.log(`${n.slice(0, 47).padEnd(48)}${r.engine.padEnd(26)}${fmt(r.medianMs).padStart(9)}${fmt(r.minMs).padStart(9)}${fmt(r.maxMs).padStart(9)}${extra}  ${check}`);
      }
      const w = rs.find((x) => x.name === n && x.vsBest);
      if (w) {
        bestRatios.push(w.vsBest!.ratio);
        if (w.vsWeb) webRatios.push(w.vsWeb.ratio);
        const web = rs.find((x) => x.name === n && x.engine.startsWith('onnxruntime-web'));
        const cold = models && web && web.check === 'ok' ? `; cold start ${((web.createMs + web.firstMs) / (w.createMs + w.firstMs)).toFixed(2)}× onnxruntime-web's` : '';
        console.log(`${''.padEnd(48)}→ webjit ${w.vsWeb ? `${w.vsWeb.ratio.toFixed(2)}× the best web peer (${w.vsWeb.engine}), ` : ''}${w.vsBest!.ratio.toFixed(2)}× the best peer (${w.vsBest!.engine})${cold}`);
      }
    }
    const gm = (xs: number[]) => Math.exp(xs.reduce((s, x) => s + Math.log(x), 0) / xs.length);
    if (webRatios.length) console.log(`geometric mean: ${gm(webRatios).toFixed(2)}× the best web peer over ${webRatios.length} cases; ${gm(bestRatios).toFixed(2)}× the best peer including native`);
  }
}

/**
 * The base-size encoder and decoder (random weights; ~1 GB, not in git) for the model suite, made once with Debian's
 * python3-torch and python3-onnx when they are installed; otherwise the suite runs without them and says so.
 */
function makeBaseModels(): void {
  if (fs.existsSync(path.join(BASE_MODELS_DIR, 'encoder-base.onnx')) && fs.existsSync(path.join(BASE_MODELS_DIR, 'decoder-base.onnx'))) return;
  const script = path.join(ROOT_DIR, 'scripts', 'make_fixtures.py');
  try {
    process.stderr.write(`making the base-size models in ${BASE_MODELS_DIR} (scripts/make_fixtures.py --size base)…\n`);
    execFileSync('/usr/bin/python3', [script, BASE_MODELS_DIR, '--size', 'base'], { stdio: ['ignore', 'ignore', 'pipe'] });
    for (const f of ['encoder-base-external.onnx', 'encoder-base-external.data']) fs.rmSync(path.join(BASE_MODELS_DIR, f), { force: true });
  } catch {
    process.stderr.write('could not make the base-size models (needs python3-torch and python3-onnx): the model suite runs without them\n');
  }
}

function gitCommit(): string {
  try { return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim(); } catch { return 'unknown'; }
}

function cpuName(): string {
  const c = os.cpus();
  return `${c[0]?.model ?? 'unknown CPU'}, ${c.length} logical cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB`;
}
