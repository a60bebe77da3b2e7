// Cold start in a fresh process: load the engine, create a session and run once, per model and engine, each in its
// own Node process (nothing compiled or loaded before). Medians over --procs processes. Needs `npm run build`.
//   node bench/coldstart.mjs [--procs 3] [--filter REGEX] [--threads 2]
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const opt = (name, def) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : def; };
const threads = Number(opt('--threads', '2'));

if (args[0] === '--one') {
  // Child: one engine, one model; prints {importMs, createMs, firstMs}.
  const [, engineName, modelName] = args;
  const t0 = performance.now();
  const { webjitEngine, ortWebWasm, ortNode } = await import('../dist/src/bench/engines.js');
  const { modelCases } = await import('../dist/src/bench/models.js');
  const engine = { webjit: () => webjitEngine('wasm', threads), 'onnxruntime-web': () => ortWebWasm(threads), 'onnxruntime-node': () => ortNode(threads) }[engineName]();
  const m = modelCases().find((c) => c.name === modelName);
  const feeds = m.feeds();
  const fs = await import('node:fs');
  const bytes = new Uint8Array(fs.readFileSync(m.file));
  const t1 = performance.now();
  const s = await engine.create(bytes);
  const t2 = performance.now();
  await s.run(feeds);
  const t3 = performance.now();
  console.log(JSON.stringify({ importMs: t1 - t0, createMs: t2 - t1, firstMs: t3 - t2 }));
  process.exit(0);
}

const procs = Number(opt('--procs', '3'));
const filter = new RegExp(opt('--filter', '.'));
const { modelCases } = await import('../dist/src/bench/models.js');
const self = fileURLToPath(import.meta.url);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const engines = ['webjit', 'onnxruntime-web', 'onnxruntime-node'];
const rows = [];
console.log(`cold start in a fresh process (create + first run, ms; median of ${procs} processes, ${threads} threads)`);
console.log(`${'model'.padEnd(46)}${engines.map((e) => e.padStart(18)).join('')}   webjit vs onnxruntime-web`);
for (const m of modelCases().filter((c) => filter.test(c.name))) {
  const cold = {};
  for (const e of engines) {
    const xs = [];
    for (let p = 0; p < procs; p++) {
      const out = execFileSync(process.execPath, [self, '--one', e, m.name, '--threads', String(threads)], { encoding: 'utf8' });
      const r = JSON.parse(out.trim().split('\n').pop());
      xs.push(r.createMs + r.firstMs);
    }
    cold[e] = median(xs);
  }
  rows.push({ model: m.name, ...cold });
  console.log(`${m.name.padEnd(46)}${engines.map((e) => cold[e].toFixed(1).padStart(18)).join('')}   ${(cold['onnxruntime-web'] / cold.webjit).toFixed(2)}×`);
}
const gm = Math.exp(rows.reduce((a, r) => a + Math.log(r['onnxruntime-web'] / r.webjit), 0) / rows.length);
console.log(`geometric mean: webjit's cold start is ${gm.toFixed(2)}× faster than onnxruntime-web's`);
