// Probe one ONNX model with float inputs: webjit wasm vs onnxruntime-web wasm vs onnxruntime-node (2 threads each),
// median of warm runs (engines interleaved in rounds), output checked against onnxruntime-node. Needs `npm run build`.
//   node bench/probe.mjs MODEL DIMS[;DIMS…] [RUNS]      e.g. node bench/probe.mjs bench/probe-models/gru.onnx 1,100,64 50
import * as fs from 'node:fs';
import { InferenceSession } from '../dist/src/session.js';
import { Tensor } from '../dist/src/tensor.js';
import { ortWebWasm, ortNode } from '../dist/src/bench/engines.js';

const [file, dimsArg, runsArg = '30'] = process.argv.slice(2);
if (!file || !dimsArg) { console.error('usage: node bench/probe.mjs MODEL DIMS[;DIMS…] [RUNS]'); process.exit(2); }
const bytes = new Uint8Array(fs.readFileSync(file));
const s = await InferenceSession.create(bytes, { backend: 'wasm', threads: 2 });
let seed = 1;
const rnd = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
const feeds = {};
s.inputNames.forEach((name, i) => {
  const dims = dimsArg.split(';')[i].split(',').map(Number);
  feeds[name] = new Tensor('float32', Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, rnd), dims);
});
// Engines interleaved: ROUNDS blocks of runs each, so a slow phase of this shared machine hits all of them alike.
const ROUNDS = 5;
const web = await ortWebWasm(2).create(bytes);
const nat = await ortNode(2).create(bytes);
const engines = [(f) => s.run(f), (f) => web.run(f), (f) => nat.run(f)];
for (const run of engines) for (let i = 0; i < 3; i++) await run(feeds);
const times = engines.map(() => []);
const per = Math.max(1, Math.ceil(Number(runsArg) / ROUNDS));
// Idle pools of the other engines spin a while after their last run, taking cores: let them fall asleep first.
const settle = () => new Promise((resolve) => setTimeout(resolve, 150));
for (let r = 0; r < ROUNDS; r++) {
  for (let e = 0; e < engines.length; e++) {
    await settle();
    for (let i = 0; i < 2; i++) await engines[e](feeds);
    for (let i = 0; i < per; i++) { const t0 = performance.now(); await engines[e](feeds); times[e].push(performance.now() - t0); }
  }
}
const [w, ow, on] = times.map((t) => { t.sort((x, y) => x - y); return t[t.length >> 1]; });
const a = await s.run(feeds), b = await nat.run(feeds);
let err = 0, max = 0;
for (const k of Object.keys(b)) {
  const x = a[k].data, y = b[k].data;
  for (let i = 0; i < y.length; i++) { err = Math.max(err, Math.abs(x[i] - y[i])); max = Math.max(max, Math.abs(y[i])); }
}
const st = s.stats;
console.log(`${file}: webjit ${w.toFixed(2)} ms, onnxruntime-web ${ow.toFixed(2)} ms (${(ow / w).toFixed(2)}×), onnxruntime-node ${on.toFixed(2)} ms; ` +
  `max|err|/max|ref| ${(err / (max || 1)).toExponential(1)}; fallback nodes ${st.fallbackNodes} ${JSON.stringify([...st.fallbackOps])}`);
process.exit(0);
