// Same-process A/B of the Wasm LLM runtime: this checkout's build against another build's (e.g. a worktree of an
// earlier commit built with `npx tsc -p . --outDir dist` and node_modules linked), forward passes of T tokens
// interleaved, medians. Relaxed SIMD is switched on so that int8 activations can run.
//   git worktree add /tmp/base COMMIT && (cd /tmp/base && ln -s "$PWD/node_modules" . && npx tsc -p . --outDir dist)
//   node bench/wasm-llm-ab.mjs --base /tmp/base [--model test/fixtures/lm/target.q4.safetensors] [--threads 2] [--T 1,2,4,32] [--last]
import v8 from 'node:v8';
import path from 'node:path';
import { parseArgs } from 'node:util';
v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
const { values: a } = parseArgs({ options: {
  base: { type: 'string' }, model: { type: 'string', default: 'test/fixtures/lm/target.q4.safetensors' },
  threads: { type: 'string', default: '2' }, T: { type: 'string', default: '1,2,3,4' }, last: { type: 'boolean', default: false },
  reps: { type: 'string', default: '25' },
} });
const B = await import('../dist/src/llm/index.js');
const { median } = await import('../dist/src/util/stats.js');
const runners = [];
if (a.base) {
  const A = await import(path.resolve(a.base, 'dist/src/llm/index.js'));
  runners.push(['base', await A.createLlm(await A.loadLlm(a.model), { backend: 'wasm', threads: Number(a.threads) })]);
}
runners.push(['int16 x', await B.createLlm(await B.loadLlm(a.model), { backend: 'wasm', threads: Number(a.threads) })]);
const i8 = await B.createLlm(await B.loadLlm(a.model), { backend: 'wasm', threads: Number(a.threads), activations: 'int8' });
if (i8.activations === 'int8') runners.push(['int8 x', i8]);
const ids = Array.from({ length: 32 }, (_, i) => (i * 37 + 11) % 8000 + 2);
for (const [, r] of runners) await r.forward(ids);
const Ts = a.T.split(',').map(Number), res = new Map();
for (let rep = 0; rep < Number(a.reps); rep++) for (const n of Ts) for (const [k, r] of runners) {
  const t0 = performance.now();
  for (let j = 0; j < 8; j++) { await r.forward(ids.slice(0, n), n > 1 && !a.last); r.truncate(32); }
  const key = `${k} T${n}`;
  if (!res.has(key)) res.set(key, []);
  res.get(key).push((performance.now() - t0) / 8);
}
console.log(`${a.model}, ${a.threads} threads, ms a forward (median of ${a.reps}), ${a.last ? 'last-position' : 'all-position'} logits`);
for (const n of Ts) console.log(`T${n}: ` + runners.map(([k]) => `${k} ${median(res.get(`${k} T${n}`)).toFixed(3)}`).join('  '));
process.exit(0);
