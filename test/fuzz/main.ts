// The fuzzer on demand: `npm run fuzz -- --cases 1000000 [--first N] [--backends reference,wasm] [--jobs N] [--json FILE]`.
// Prints progress every 10,000 cases and a summary; exits 1 on any crash or hang (each one listed with its case
// number, which reproduces it: the mutants are a pure function of the case number).
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { fuzz, fuzzCorpus, type FuzzReport } from './harness.js';

const { values } = parseArgs({
  options: {
    cases: { type: 'string', default: '100000' }, first: { type: 'string', default: '0' }, backends: { type: 'string', default: 'reference,wasm' },
    jobs: { type: 'string' }, json: { type: 'string' }, 'no-run': { type: 'boolean', default: false },
  },
});
const cases = Number(values.cases), first = Number(values.first);
const files = fuzzCorpus();
const t0 = performance.now();
const line = (r: FuzzReport) => `${r.cases} cases: ${r.ok} worked (${r.ran} ran to the end), ${r.typed} typed errors (${r.runTyped} at run), `
  + `${r.crashes.length} crashes, ${r.hangs.length} hangs; peak RSS ${Math.round(process.resourceUsage().maxRSS / 1024)} MiB; ${((performance.now() - t0) / 1000).toFixed(0)} s`;
console.log(`fuzzing ${cases} cases from case ${first} over ${files.length} seed models, backends ${values.backends}`);
const rep = await fuzz(files, cases, {
  first, backends: values.backends!.split(','), run: !values['no-run'], jobs: values.jobs ? Number(values.jobs) : undefined,
  progress: (r) => { if (r.cases % 10_000 === 0) console.log(line(r)); },
});
console.log(line(rep));
console.log(`by mutation: ${JSON.stringify(rep.byKind)}\nby backend: ${JSON.stringify(rep.byBackend)}`);
for (const c of [...rep.crashes, ...rep.hangs.map((h) => ({ ...h, message: 'hang' }))].slice(0, 20)) {
  console.log(`case ${c.c} (${c.kind}, ${c.file}): ${'message' in c ? c.message.split('\n').slice(0, 3).join(' | ') : ''}`);
}
if (values.json) {
  fs.writeFileSync(values.json, JSON.stringify({ date: new Date().toISOString(), first, files: files.length, seconds: (performance.now() - t0) / 1000, ...rep }, null, 1));
}
process.exit(rep.crashes.length || rep.hangs.length ? 1 : 0);
