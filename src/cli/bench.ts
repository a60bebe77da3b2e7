// `webjit bench`: the op suite and the model suite on webjit and its peers; a table with ratios, JSON and a
// self-contained HTML report on request. Every engine's output is checked against onnxruntime-node first.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { hasOrtNode, ortNode, ortWebGpu, ortWebWasm, RESIDENT, webjitEngine, webjitResident, type Engine } from '../bench/engines.js';
import { installGpuForPeers } from '../bench/gpu_env.js';
import { BASE_MODELS_DIR, measure, modelBytes, modelCases, type Measurement, type ModelCase } from '../bench/models.js';
import { opCases, opModel, tfjsOpEngine, type OpCase } from '../bench/ops.js';
import { PythonPeer, pythonExe } from '../bench/python_peer.js';
import { type BenchReport, type BenchRow, renderHtml } from '../bench/report.js';
import type { Tensor } from '../tensor.js';
import { median } from '../util/stats.js';

export interface BenchArgs {
  suite: 'cpu' | 'gpu';
  /** 'ops', 'models' or both (undefined). */
  only?: string;
  /** Threads of the CPU engines (default: 2 on the CPU suite, every core for the GPU suite's native CPU peer). */
  threads?: number;
  json?: string;
  html?: string;
  filter?: string;
  quick?: boolean;
  /** Repeat each suite this many times, engines interleaved; report the median of each figure. */
  rounds: number;
}

const WEBJIT = 'webjit';
const ROOT_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), import.meta.url.endsWith('.ts') ? '../..' : '../../..');

type Timing = { warmupMs: number; minRuns: number; minMs: number };

/** What a suite runs: its engines per case, the oracle, the tolerance of the check, the device it describes. */
interface Suite {
  ops(c: OpCase): Engine[];
  models(c: ModelCase): Engine[];
  oracle: Engine;
  /** max|err| / max|ref| a correct output stays within. */
  tolerance: number;
  device: string;
  threads: number;
  /** Base-size models: one round of a few runs (a CPU run takes about a second). */
  heavyOnce: boolean;
  opTiming: Timing;
  modelTiming: Timing;
  notes: string[];
  close(): void;
}

function cpuSuite(a: BenchArgs): Suite {
  const threads = a.threads ?? 2;
  return {
    ops: (c) => [webjitEngine('wasm', threads), ortWebWasm(threads), ortNode(threads), tfjsOpEngine(c)],
    models: () => [webjitEngine('wasm', threads), ortWebWasm(threads), ortNode(threads)],
    oracle: ortNode(1), tolerance: 1e-4, device: cpuName(), threads, heavyOnce: true,
    opTiming: a.quick ? { warmupMs: 100, minRuns: 3, minMs: 150 } : { warmupMs: 300, minRuns: 10, minMs: 600 },
    modelTiming: a.quick ? { warmupMs: 200, minRuns: 3, minMs: 300 } : { warmupMs: 1000, minRuns: 10, minMs: 2000 },
    notes: ['TensorFlow.js wasm runs one thread: its threaded build needs browser workers.'],
    close: () => undefined,
  };
}

/**
 * The GPU suite: webjit webgpu (host tensors in and out, and device-resident), onnxruntime-web webgpu and
 * TensorFlow.js webgpu on one Dawn instance; onnxruntime's native CPU build as the oracle and as what the CPU does
 * (onnxruntime-node, or its Python build where the node package is not carried); PyTorch on CUDA for the op suite
 * where Python has it (the GPU machine).
 */
async function gpuSuite(a: BenchArgs): Promise<Suite> {
  const adapter = await installGpuForPeers();
  const threads = a.threads ?? os.availableParallelism();
  const { peer, have } = await PythonPeer.start(process.env.WEBJIT_PEER_PY ?? path.join(ROOT_DIR, 'bench', 'peer.py'));
  const notes: string[] = [];
  let native: Engine;
  if (hasOrtNode()) native = ortNode(threads);
  else if (have.ort) {
    native = peer.engine('ort', `onnxruntime ${have.ort} native CPU ${threads}t`, threads);
    notes.push(`onnxruntime's native CPU build ran from Python (onnxruntime ${have.ort}): onnxruntime-node is not installed here.`);
  } else throw new Error('the GPU suite needs an oracle: onnxruntime-node (npm install) or Python with onnxruntime');
  const torchName = have.torch?.endsWith('on the CPU') ? 'PyTorch CPU' : 'PyTorch CUDA';
  const torch = have.torch ? [peer.engine('torch', torchName), peer.engine('torch-resident', torchName)] : [];
  if (have.torch) notes.push(`PyTorch ${have.torch}, f32 with TF32 off; "resident" rows keep inputs and outputs on the GPU (webjit through runGpu).`);
  else notes.push('PyTorch with CUDA is not available here: the op suite has no physical reference.');
  return {
    ops: (c) => [webjitEngine('webgpu', threads), webjitResident(), ortWebGpu(), tfjsOpEngine(c, 'webgpu'), native, ...torch],
    models: () => [webjitEngine('webgpu', threads), ortWebGpu(), native],
    // GPU sums run in another order than the CPU's: the bar of issue 4's model checks.
    oracle: native, tolerance: 1e-3, device: adapter, threads, heavyOnce: false,
    opTiming: a.quick ? { warmupMs: 100, minRuns: 3, minMs: 100 } : { warmupMs: 200, minRuns: 10, minMs: 300 },
    modelTiming: a.quick ? { warmupMs: 200, minRuns: 3, minMs: 200 } : { warmupMs: 500, minRuns: 10, minMs: 1000 },
    notes, close: () => peer.close(),
  };
}

export async function benchCommand(a: BenchArgs): Promise<number> {
  if (a.only && a.only !== 'ops' && a.only !== 'models') { console.error(`--only takes ops or models, not '${a.only}'`); return 2; }
  const match = (name: string) => !a.filter || new RegExp(a.filter, 'i').test(name);
  const suite = a.suite === 'gpu' ? await gpuSuite(a) : cpuSuite(a);
  const rows: BenchRow[] = [];
  const all: Measurement[] = [];
  try {
    if (a.only !== 'models') {
      const ops = opCases().filter((c) => match(`${c.category} ${c.name}`));
      const cases = new Map(ops.map((c): [ModelCase, OpCase] => [{ name: c.name, file: '', bytes: () => opModel(c), feeds: c.feeds }, c]));
      const got = await runSuite('ops', suite, [...cases.keys()], (m) => suite.ops(cases.get(m)!), a.rounds, suite.opTiming);
      all.push(...got);
      for (const c of ops) rows.push(...summarise(got.filter((m) => m.model === c.name), suite.tolerance, 'ops', c.category, c.flops, c.bytes));
    }
    if (a.only !== 'ops') {
      if (!a.quick) makeBaseModels();
      const models = modelCases({ gpu: a.suite === 'gpu' }).filter((c) => match(c.name));
      const got = await runSuite('models', suite, models, (c) => suite.models(c), a.rounds, suite.modelTiming);
      all.push(...got);
      for (const c of models) rows.push(...summarise(got.filter((m) => m.model === c.name), suite.tolerance, 'models', 'model'));
    }
  } finally {
    suite.close();
  }

  printTable(rows);
  const report: BenchReport = {
    date: new Date().toISOString(), commit: gitCommit(), device: suite.device, host: cpuName(), node: process.version,
    threads: suite.threads, rounds: a.rounds, suite: a.suite, tolerance: suite.tolerance, notes: suite.notes, rows,
  };
  for (const n of suite.notes) console.log(n);
  if (a.json) fs.writeFileSync(a.json, JSON.stringify({ ...report, all }, null, 1));
  if (a.html) { fs.writeFileSync(a.html, renderHtml(report)); console.log(`report: ${a.html}`); }
  return 0;
}

/** Every case on every engine, `rounds` times (engines interleaved per case); outputs checked against the suite's oracle. */
async function runSuite(label: string, suite: Suite, cases: ModelCase[], engines: (c: ModelCase) => Engine[], rounds: number, opts: Timing): Promise<Measurement[]> {
  const oracles = new Map<string, Record<string, Tensor> | null>();
  for (const c of cases) {
    try {
      const s = await suite.oracle.create(modelBytes(c));
      oracles.set(c.name, await s.run(c.feeds()));
      await s.release();
    } catch {
      oracles.set(c.name, null);
    }
  }
  const out: Measurement[] = [];
  for (let r = 0; r < rounds; r++) {
    for (const c of cases) {
      if (c.heavy && suite.heavyOnce && r > 0) continue;
      // The model's bytes once per case and round, for all engines (base-size files are ~0.5 GB).
      const bytes = modelBytes(c);
      const once: ModelCase = { ...c, bytes: () => bytes };
      for (const e of engines(c)) {
        process.stderr.write(`${label} round ${r + 1}/${rounds}: ${c.name} on ${e.name}…\n`);
        // Idle pools of the previous engine spin a while after its last run: let them sleep first.
        await new Promise((resolve) => setTimeout(resolve, 50));
        out.push(await measure(e, once, oracles.get(c.name) ?? null, c.heavy && suite.heavyOnce ? { warmupMs: 0, minRuns: 3, minMs: 0 } : opts));
      }
    }
  }
  return out;
}

const isWeb = (engine: string) => engine.startsWith('onnxruntime-web') || engine.startsWith('TensorFlow.js');

/**
 * One row per engine of a case: medians over rounds, the worst check, throughput and the ratios of webjit. Resident
 * engines (inputs and outputs left on the device) are compared only with each other, the rest only with the rest.
 */
function summarise(ms: Measurement[], tolerance: number, suite: 'ops' | 'models', category: string, flops?: number, bytes?: number): BenchRow[] {
  const byEngine = new Map<string, Measurement[]>();
  for (const m of ms) byEngine.set(m.engine, [...(byEngine.get(m.engine) ?? []), m]);
  const rows: BenchRow[] = [];
  for (const [engine, list] of byEngine) {
    const ok = list.filter((m) => !m.error);
    const err = list.find((m) => m.error)?.error;
    const check = err ? 'error' : ok.some((m) => m.relErr === null) ? 'unchecked' : Math.max(...ok.map((m) => m.relErr!)) <= tolerance ? 'ok' : 'wrong';
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
  const fastest = (rs: BenchRow[]) => rs.reduce((x, y) => (y.medianMs < x.medianMs ? y : x));
  for (const resident of [false, true]) {
    const same = rows.filter((r) => r.engine.endsWith(RESIDENT) === resident);
    const w = same.find((r) => r.engine.startsWith(WEBJIT));
    const peers = same.filter((r) => !r.engine.startsWith(WEBJIT) && r.check === 'ok');
    if (!w || w.check !== 'ok' || !peers.length) continue;
    const best = fastest(peers);
    w.vsBest = { engine: best.engine, ratio: best.medianMs / w.medianMs };
    const web = peers.filter((r) => isWeb(r.engine));
    if (web.length) {
      const bw = fastest(web);
      w.vsWeb = { engine: bw.engine, ratio: bw.medianMs / w.medianMs };
    }
  }
  return rows;
}

const suiteHasTorch = (rs: BenchRow[]) => rs.some((r) => r.engine.startsWith('PyTorch'));

function printTable(rows: BenchRow[]): void {
  const fmt = (x: number | undefined, d = 2) => (x !== undefined && Number.isFinite(x) ? x.toFixed(x < 10 ? d : 1) : '—');
  for (const suite of ['ops', 'models'] as const) {
    const rs = rows.filter((r) => r.suite === suite);
    if (!rs.length) continue;
    console.log(`\n${suite === 'ops' ? 'op suite' : 'model suite'} (medians over rounds, ms)`);
    const models = suite === 'models';
    console.log(`${'case'.padEnd(48)}${'engine'.padEnd(30)}${'median'.padStart(9)}${'min'.padStart(9)}${'max'.padStart(9)}` +
      `${(models ? 'create' : 'GFLOP/s').padStart(9)}${(models ? 'first' : 'GB/s').padStart(models ? 9 : 7)}  check`);
    const names = [...new Set(rs.map((r) => r.name))];
    // Geometric means per class of webjit row ('' for host tensors, ' resident' for device-resident ones).
    const ratios = new Map<string, { web: number[]; best: number[] }>();
    for (const n of names) {
      for (const r of rs.filter((x) => x.name === n)) {
        const check = r.check === 'error' ? `n/a: ${(r.error ?? '').slice(0, 50)}` : r.check === 'wrong' ? `WRONG ${r.relErr?.toExponential(1)}` : r.check === 'ok' ? `ok ${r.relErr?.toExponential(1)}` : r.check;
        const extra = models ? `${fmt(r.createMs, 1).padStart(9)}${fmt(r.firstMs, 1).padStart(9)}` : `${fmt(r.gflops, 1).padStart(9)}${fmt(r.gbs, 1).padStart(7)}`;
        console.log(`${n.slice(0, 47).padEnd(48)}${r.engine.padEnd(30)}${fmt(r.medianMs).padStart(9)}${fmt(r.minMs).padStart(9)}${fmt(r.maxMs).padStart(9)}${extra}  ${check}`);
      }
      for (const w of rs.filter((x) => x.name === n && x.vsBest)) {
        const cls = w.engine.endsWith(RESIDENT) ? RESIDENT : '';
        const acc = ratios.get(cls) ?? { web: [], best: [] };
        ratios.set(cls, acc);
        acc.best.push(w.vsBest!.ratio);
        if (w.vsWeb) acc.web.push(w.vsWeb.ratio);
        const web = rs.find((x) => x.name === n && x.engine.startsWith('onnxruntime-web'));
        const cold = models && !cls && web && web.check === 'ok' ? `; cold start ${((web.createMs + web.firstMs) / (w.createMs + w.firstMs)).toFixed(2)}× onnxruntime-web's` : '';
        console.log(`${''.padEnd(48)}→ ${w.engine} ${w.vsWeb ? `${w.vsWeb.ratio.toFixed(2)}× the best web peer (${w.vsWeb.engine}), ` : ''}${w.vsBest!.ratio.toFixed(2)}× the best peer (${w.vsBest!.engine})${cold}`);
      }
    }
    const gm = (xs: number[]) => Math.exp(xs.reduce((s, x) => s + Math.log(x), 0) / xs.length);
    for (const [cls, r] of ratios) {
      const what = cls ? 'resident rows: ' : '';
      if (r.web.length) console.log(`geometric mean, ${what}${gm(r.web).toFixed(2)}× the best web peer over ${r.web.length} cases; ${gm(r.best).toFixed(2)}× the best peer including native${r.best.length && suiteHasTorch(rs) ? ' and PyTorch' : ''}`);
      else console.log(`geometric mean, ${what}${gm(r.best).toFixed(2)}× the best peer over ${r.best.length} cases`);
    }
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
    execFileSync(pythonExe(), [script, BASE_MODELS_DIR, '--size', 'base'], { stdio: ['ignore', 'ignore', 'pipe'] });
    for (const f of ['encoder-base-external.onnx', 'encoder-base-external.data']) fs.rmSync(path.join(BASE_MODELS_DIR, f), { force: true });
  } catch {
    process.stderr.write('could not make the base-size models (needs python3-torch and python3-onnx): the model suite runs without them\n');
  }
}

function gitCommit(): string {
  // The GPU machine's copy of the tree is not this checkout's git: bench/gpu/bundle.sh records the commit.
  if (process.env.WEBJIT_COMMIT) return process.env.WEBJIT_COMMIT;
  try { return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim(); } catch { return 'unknown'; }
}

function cpuName(): string {
  const c = os.cpus();
  return `${c[0]?.model ?? 'unknown CPU'}, ${c.length} logical cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB`;
}
