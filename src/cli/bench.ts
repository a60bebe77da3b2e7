// `webjit bench`: models (and later ops) on webjit and its peers; a table with ratios, JSON on request.
import * as fs from 'node:fs';
import { ortNode, ortWebWasm, webjitEngine, type Engine } from '../bench/engines.js';
import { measure, modelCases, type Measurement } from '../bench/models.js';

export interface BenchArgs {
  suite: 'cpu' | 'gpu';
  only?: string;
  threads: number;
  json?: string;
  filter?: string;
  quick?: boolean;
  /** Repeat the whole suite this many times, engines interleaved; report the median of each figure. */
  rounds: number;
}

export async function benchCommand(a: BenchArgs): Promise<number> {
  if (a.suite !== 'cpu') { console.error('only --suite cpu is implemented so far'); return 2; }
  const cases = modelCases().filter((c) => !a.filter || new RegExp(a.filter, 'i').test(c.name));
  const engines: Engine[] = [webjitEngine('wasm', a.threads), ortWebWasm(a.threads), ortNode(a.threads)];
  const opts = a.quick ? { warmupMs: 200, minRuns: 3, minMs: 300 } : { warmupMs: 1000, minRuns: 10, minMs: 2000 };
  const all: Measurement[] = [];
  const oracles = new Map<string, Record<string, import('../tensor.js').Tensor>>();
  for (const c of cases) {
    // The oracle: onnxruntime-node's output on the same feeds.
    const oracleSession = await ortNode(1).create(new Uint8Array(fs.readFileSync(c.file)));
    oracles.set(c.name, await oracleSession.run(c.feeds()));
    await oracleSession.release();
  }
  for (let r = 0; r < a.rounds; r++) {
    for (const c of cases) {
      for (const e of engines) {
        process.stderr.write(`round ${r + 1}/${a.rounds}: ${c.name} on ${e.name}…\n`);
        all.push(await measure(e, c, oracles.get(c.name)!, opts));
      }
    }
  }
  const rows = a.rounds > 1 ? medianRows(all) : all;
  printTable(rows, engines[0].name, engines[1].name, engines[2].name);
  if (a.json) fs.writeFileSync(a.json, JSON.stringify({ date: new Date().toISOString(), suite: a.suite, threads: a.threads, rounds: a.rounds, rows, all }, null, 1));
  return 0;
}

/** One row per (model, engine): the median over rounds of each time; the worst check. */
function medianRows(all: Measurement[]): Measurement[] {
  const groups = new Map<string, Measurement[]>();
  for (const m of all) {
    const k = `${m.model}\u0000${m.engine}`;
    groups.set(k, [...(groups.get(k) ?? []), m]);
  }
  const med = (xs: number[]) => { const s = [...xs].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
  return [...groups.values()].map((ms) => {
    const ok = ms.filter((m) => !m.error);
    if (ok.length < ms.length) return ms.find((m) => m.error)!;
    return {
      ...ms[0], createMs: med(ok.map((m) => m.createMs)), firstMs: med(ok.map((m) => m.firstMs)), medianMs: med(ok.map((m) => m.medianMs)),
      minMs: Math.min(...ok.map((m) => m.minMs)), maxMs: Math.max(...ok.map((m) => m.maxMs)), runs: ok.reduce((n, m) => n + m.runs, 0),
      relErr: ok.some((m) => m.relErr === null) ? null : Math.max(...ok.map((m) => m.relErr!)),
    };
  });
}

function printTable(rows: Measurement[], ours: string, peer: string, native: string): void {
  const fmt = (x: number) => (Number.isFinite(x) ? x.toFixed(x < 10 ? 2 : 1) : '—');
  console.log(`${'model'.padEnd(46)}${'engine'.padEnd(26)}${'create'.padStart(9)}${'first'.padStart(9)}${'median'.padStart(9)}${'min'.padStart(9)}${'max'.padStart(9)}  check`);
  const models = [...new Set(rows.map((r) => r.model))];
  const ratios: number[] = [];
  for (const m of models) {
    for (const r of rows.filter((x) => x.model === m)) {
      const check = r.error ? `ERROR ${r.error.slice(0, 60)}` : r.relErr === null ? '' : r.relErr <= 1e-4 ? `ok ${r.relErr.toExponential(1)}` : `WRONG ${r.relErr.toExponential(1)}`;
      console.log(`${m.padEnd(46)}${r.engine.padEnd(26)}${fmt(r.createMs).padStart(9)}${fmt(r.firstMs).padStart(9)}${fmt(r.medianMs).padStart(9)}${fmt(r.minMs).padStart(9)}${fmt(r.maxMs).padStart(9)}  ${check}`);
    }
    const w = rows.find((x) => x.model === m && x.engine === ours), p = rows.find((x) => x.model === m && x.engine === peer), n = rows.find((x) => x.model === m && x.engine === native);
    if (w && p && !w.error && !p.error && w.relErr !== null && w.relErr <= 1e-4) {
      const r = p.medianMs / w.medianMs;
      ratios.push(r);
      console.log(`${''.padEnd(46)}→ webjit is ${r.toFixed(2)}× ${peer}, ${n && !n.error ? (n.medianMs / w.medianMs).toFixed(2) : '—'}× ${native}; cold start ${((p.createMs + p.firstMs) / (w.createMs + w.firstMs)).toFixed(2)}×`);
    }
  }
  if (ratios.length) console.log(`geometric mean speedup over ${peer}: ${Math.exp(ratios.reduce((s, r) => s + Math.log(r), 0) / ratios.length).toFixed(2)}× over ${ratios.length} models`);
}
