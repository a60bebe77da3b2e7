// Prints line coverage by source area from a c8 json-summary (default bench/results/fuzz-coverage/coverage-summary.json).
import * as fs from 'node:fs';
const file = process.argv[2] ?? 'bench/results/fuzz-coverage/coverage-summary.json';
const j = JSON.parse(fs.readFileSync(file, 'utf8'));
const by = {};
for (const [f, v] of Object.entries(j)) {
  if (f === 'total') continue;
  const rel = f.replace(/.*\/src\//, 'src/');
  const parts = rel.split('/');
  const area = parts.length > 3 && (parts[1] === 'backends' || parts[1] === 'codegen') ? parts.slice(0, 3).join('/') : parts.length > 2 ? parts.slice(0, 2).join('/') : 'src (session, tensor, errors)';
  by[area] ??= { c: 0, t: 0 };
  by[area].c += v.lines.covered;
  by[area].t += v.lines.total;
}
console.log('| area | lines | covered |\n| --- | --- | --- |');
for (const [a, v] of Object.entries(by).sort()) console.log(`| ${a} | ${v.t} | ${(100 * v.c / v.t).toFixed(1)}% |`);
console.log(`| all of src | ${j.total.lines.total} | ${j.total.lines.pct}% |`);
