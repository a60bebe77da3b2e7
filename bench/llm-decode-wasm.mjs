// Decode speed of webjit's Wasm LLM runtime (f32, q8, q4 RTN group 32) against onnxruntime-web's Wasm backend on the
// same model's ONNX export, in one process, batch 1: a 32-token prompt, then greedy decoding; rounds alternate the
// engines and the table shows medians and each engine's ratio to onnxruntime-web.
// With --multi, a second table: the cost of one forward of T tokens after a 64-token cache (speculative verification,
// chunked prefill) against T single steps, and against onnxruntime-web running the same T tokens.
// Usage: npm run build && node bench/llm-decode-wasm.mjs [--model target|draft] [--tokens 128] [--rounds 5] [--threads 2]
//        [--engines f32,q8,q4,ort] [--multi] (needs the trained models of issue 8 under .lm/: WEBJIT_LM_DIR, default /work/main/.lm)
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { loadLlm, createLlm, quantizeRtn, bytesPerToken } from '../dist/src/llm/index.js';
import { TextTokenizer } from '../dist/src/generate/tokenizer.js';

const arg = (k, d) => { const i = process.argv.indexOf(`--${k}`); return i > 0 ? process.argv[i + 1] : d; };
const LM = process.env.WEBJIT_LM_DIR ?? '/work/main/.lm';
const model = arg('model', 'target'), N = +arg('tokens', 128), ROUNDS = +arg('rounds', 5), THREADS = +arg('threads', 2);
const ENGINES = arg('engines', 'f32,q8,q4,ort').split(',');
const PROMPT_LEN = 32;

const tok = await TextTokenizer.fromFile(path.join(LM, 'out/tokenizer.json'));
const text = 'The kernel schedules each process in turn, and when a process waits for input the scheduler picks another one that is ready to run, so that the processor is never idle while there is work to do.';
const prompt = tok.encode(text).slice(0, PROMPT_LEN);
if (prompt.length < PROMPT_LEN) throw new Error('prompt too short');
const argmax = (a, off, n) => { let b = 0; for (let i = 1; i < n; i++) if (a[off + i] > a[off + b]) b = i; return b; };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const f32 = await loadLlm(path.join(LM, 'out', model));
const V = f32.config.vocab;
const engines = [];
for (const e of ENGINES) {
  if (e === 'ort') { engines.push(await ortEngine()); continue; }
  const w = e === 'f32' ? f32 : quantizeRtn(f32, { bits: e === 'q8' ? 8 : 4, group: 32 });
  const r = await createLlm(w, { backend: 'wasm', threads: THREADS });
  engines.push({
    /** Median ms of forward(T tokens) after a cache of `past` positions. */
    async multi(T, past, reps) {
      const ms = [];
      for (let i = 0; i < reps; i++) {
        r.truncate(0);
        await r.forward(Array.from({ length: past }, (_, j) => prompt[j % PROMPT_LEN]));
        const ids = Array.from({ length: T }, (_, j) => prompt[(j * 7) % PROMPT_LEN]);
        await r.forward(ids, true); // warm: the timed run repeats it from the same cache
        r.truncate(past);
        const t0 = performance.now();
        await r.forward(ids, true);
        ms.push(performance.now() - t0);
      }
      return ms;
    },
    name: `webjit wasm ${e}`, mb: bytesPerToken(w) / 1e6,
    async run(n) {
      r.truncate(0);
      const t0 = performance.now();
      let lg = await r.forward(prompt);
      const t1 = performance.now();
      const toks = [argmax(lg, 0, V)], steps = [];
      for (let i = 0; i < n; i++) {
        const a = performance.now();
        lg = await r.forward([toks[toks.length - 1]]); toks.push(argmax(lg, 0, V));
        steps.push(performance.now() - a);
      }
      return { prefillMs: t1 - t0, decodeMs: performance.now() - t1, toks, steps };
    },
  });
}

async function ortEngine() {
  const require = createRequire(import.meta.url);
  const ort = require('onnxruntime-web');
  ort.env.wasm.numThreads = THREADS;
  const s = await ort.InferenceSession.create(path.join(LM, 'x/onnx', `${model}.onnx`), { executionProviders: ['wasm'] });
  const c = f32.config;
  const empty = () => {
    const p = {};
    for (let l = 0; l < c.layers; l++) for (const kv of ['key', 'value']) p[`past_key_values.${l}.${kv}`] = new ort.Tensor('float32', new Float32Array(0), [1, c.kvHeads, 0, c.headDim]);
    return p;
  };
  return {
    async multi(T, past, reps) {
      const ms = [];
      for (let i = 0; i < reps; i++) {
        let p = empty();
        const run = async (ids) => {
          const r = await s.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, ids.length]), ...p });
          const next = {};
          for (let l = 0; l < c.layers; l++) for (const kv of ['key', 'value']) next[`past_key_values.${l}.${kv}`] = r[`present.${l}.${kv}`];
          return next;
        };
        p = await run(Array.from({ length: past }, (_, j) => prompt[j % PROMPT_LEN]));
        const ids = Array.from({ length: T }, (_, j) => prompt[(j * 7) % PROMPT_LEN]);
        await run(ids); // warm: the timed run repeats it from the same past
        const t0 = performance.now();
        await run(ids);
        ms.push(performance.now() - t0);
      }
      return ms;
    },
    name: `onnxruntime-web wasm ${THREADS}t`, mb: (c.vocab * c.hidden + (bytesPerToken(f32) - c.hidden * 4)) / 1e6,
    async run(n) {
      let past = empty();
      const step = async (ids) => {
        const r = await s.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, ids.length]), ...past });
        past = {};
        for (let l = 0; l < c.layers; l++) for (const kv of ['key', 'value']) past[`past_key_values.${l}.${kv}`] = r[`present.${l}.${kv}`];
        return argmax(r.logits.data, r.logits.data.length - V, V);
      };
      const t0 = performance.now();
      const toks = [await step(prompt)], steps = [];
      const t1 = performance.now();
      for (let i = 0; i < n; i++) { const a = performance.now(); toks.push(await step([toks[toks.length - 1]])); steps.push(performance.now() - a); }
      return { prefillMs: t1 - t0, decodeMs: performance.now() - t1, toks, steps };
    },
  };
}

// Warm-up (tier-up of both engines' code), then rounds in rotating order.
for (const e of engines) await e.run(16);
const res = new Map(engines.map((e) => [e.name, []]));
for (let r = 0; r < ROUNDS; r++) {
  for (let i = 0; i < engines.length; i++) {
    const e = engines[(i + r) % engines.length];
    await sleep(50); // let the other engine's idle threads stop spinning
    const o = await e.run(N);
    res.get(e.name).push({ ...o, tps: (N * 1000) / o.decodeMs });
    e.last = o.toks;
  }
}
const med = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
const pct = (a, q) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(q * (s.length - 1))]; };
const ort = engines.find((e) => e.name.startsWith('onnxruntime'));
const stats = (e) => {
  const o = res.get(e.name), tps = o.map((x) => x.tps), steps = o.flatMap((x) => x.steps);
  return { o, tps, med: med(tps), p10: pct(steps, 0.1) };
};
const ortS = ort ? stats(ort) : null;
const load = (await import('node:os')).loadavg()[0];
console.log(`${model}: ${f32.config.layers} layers, hidden ${f32.config.hidden}, vocab ${V}; prompt ${PROMPT_LEN}, ${N} greedy tokens, ${THREADS} threads, ${ROUNDS} rounds; load average ${load.toFixed(1)}`);
console.log('decode tok/s: median of rounds [min–max]; p10 ms: 10th percentile of single-step times (less disturbed by other processes)');
console.log('engine                    | MB/token | decode tok/s          | vs ort | p10 ms/token | vs ort | prefill ms | greedy = ort');
for (const e of engines) {
  const x = stats(e);
  const same = ort ? e.last.findIndex((t, i) => t !== ort.last[i]) : -1;
  console.log(`${e.name.padEnd(25)} | ${e.mb.toFixed(1).padStart(8)} | ${`${x.med.toFixed(1).padStart(6)} [${Math.min(...x.tps).toFixed(0)}–${Math.max(...x.tps).toFixed(0)}]`.padEnd(21)} | ` +
    `${ortS ? (x.med / ortS.med).toFixed(2).padStart(5) + 'x' : '     -'} | ${x.p10.toFixed(2).padStart(12)} | ${ortS ? (ortS.p10 / x.p10).toFixed(2).padStart(5) + 'x' : '     -'} | ` +
    `${med(x.o.map((r) => r.prefillMs)).toFixed(1).padStart(10)} | ${same < 0 ? 'all' : `first ${same}`}`);
}
if (process.argv.includes('--multi')) {
  const Ts = [1, 2, 4, 8, 16, 64], PAST = 64, REPS = Math.max(5, ROUNDS);
  const rows = new Map(engines.map((e) => [e.name, new Map()]));
  for (const T of Ts) {
    for (let rep = 0; rep < REPS; rep++) {
      for (const e of engines) { await sleep(20); const [ms] = await e.multi(T, PAST, 1); (rows.get(e.name).get(T) ?? rows.get(e.name).set(T, []).get(T)).push(ms); }
    }
  }
  console.log(`\nforward(T tokens) after ${PAST} cached (a second, warm run from the same cache), ${THREADS} threads, median of ${REPS}: ms (ms per token; forward(T) / forward(1))`);
  console.log('engine'.padEnd(26) + Ts.map((T) => `| T=${T}`.padEnd(24)).join(''));
  for (const e of engines) {
    const m = (T) => med(rows.get(e.name).get(T));
    console.log(e.name.padEnd(26) + Ts.map((T) => `| ${m(T).toFixed(1)} (${(m(T) / T).toFixed(2)}; ${(m(T) / m(1)).toFixed(1)}x)`.padEnd(24)).join(''));
  }
  if (ort) {
    console.log('vs onnxruntime-web (its ms / ours)'.padEnd(26) + '');
    for (const e of engines) {
      if (e === ort) continue;
      console.log(e.name.padEnd(26) + Ts.map((T) => `| ${(med(rows.get(ort.name).get(T)) / med(rows.get(e.name).get(T))).toFixed(2)}x`.padEnd(24)).join(''));
    }
  }
}
process.exit(0);
