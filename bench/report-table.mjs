#!/usr/bin/env node
// Markdown tables of a `webjit bench --json` report, for the README: one column per engine (median ms; WRONG or n/a
// where the check failed), then webjit's ratios. Usage: node bench/report-table.mjs REPORT.json [ops|models]
import fs from 'node:fs';

const [file, only] = process.argv.slice(2);
const r = JSON.parse(fs.readFileSync(file, 'utf8'));
const fmt = (x) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x >= 1 ? x.toFixed(2) : x.toFixed(3));
const short = (e) => e.replace(/onnxruntime [\d.]+ native CPU/, 'onnxruntime CPU').replace('TensorFlow.js', 'TF.js');
console.log(`${r.suite.toUpperCase()} suite, commit \`${r.commit}\`, ${r.date.slice(0, 10)}, ${r.device}; medians of ${r.rounds} round(s), ms\n`);
for (const suite of ['ops', 'models']) {
  if (only && only !== suite) continue;
  const rows = r.rows.filter((x) => x.suite === suite);
  if (!rows.length) continue;
  const engines = [...new Set(rows.map((x) => x.engine))];
  const ours = engines.filter((e) => e.startsWith('webjit'));
  const head = [suite === 'ops' ? 'op' : 'model', ...engines.map(short), ...ours.flatMap((e) => (e.endsWith(' resident') ? ['resident: vs best'] : ['vs best web', 'vs best']))];
  console.log(`| ${head.join(' | ')} |`);
  console.log(`|${head.map(() => ' --- ').join('|')}|`);
  const logs = ours.map(() => ({ web: [], best: [] }));
  for (const name of [...new Set(rows.map((x) => x.name))]) {
    const cells = [name];
    for (const e of engines) {
      const x = rows.find((y) => y.name === name && y.engine === e);
      cells.push(!x ? '' : x.check === 'ok' ? fmt(x.medianMs) : x.check === 'wrong' ? `WRONG (${x.relErr.toExponential(0)})` : 'n/a');
    }
    ours.forEach((e, i) => {
      const w = rows.find((y) => y.name === name && y.engine === e);
      const web = w?.vsWeb ? `**${w.vsWeb.ratio.toFixed(2)}×**` : '';
      const best = w?.vsBest ? `${w.vsBest.ratio.toFixed(2)}×` : '';
      if (w?.vsWeb) logs[i].web.push(Math.log(w.vsWeb.ratio));
      if (w?.vsBest) logs[i].best.push(Math.log(w.vsBest.ratio));
      cells.push(...(e.endsWith(' resident') ? [best] : [web, best]));
    });
    console.log(`| ${cells.join(' | ')} |`);
  }
  const gm = (xs) => (xs.length ? `${Math.exp(xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(2)}×` : '');
  const tail = [`geometric mean`, ...engines.map(() => ''), ...ours.flatMap((e, i) => (e.endsWith(' resident') ? [gm(logs[i].best)] : [`**${gm(logs[i].web)}**`, gm(logs[i].best)]))];
  console.log(`| ${tail.join(' | ')} |\n`);
}
