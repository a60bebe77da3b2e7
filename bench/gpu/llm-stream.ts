// Greedy decoding on the WebGPU LLM runtime, three ways, interleaved over rounds on one runner: one forward and one
// read-back per token (`greedy`), WebGpuLlm.greedyStream with 1–8 steps in flight (what TextGenerator runs), and
// generateGreedy (every step chained on the GPU, ids read back once at the end: the bound with no host in the loop).
// Usage: node llm-stream.mjs [MODEL]   Env: STREAM_TOKENS=128 STREAM_ROUNDS=5 STREAM_DEPTHS=1,2,3,4,8 LLM_ACT=f32|int8;
//   no MODEL: a random q4 model of Llama-7B's shapes
import { acquireGpu } from '../../src/backends/webgpu/device.js';
import { loadLlm } from '../../src/llm/model_io.js';
import { randomQuantLlama } from '../../src/llm/random_model.js';
import { WebGpuLlm } from '../../src/llm/webgpu.js';
import { median } from '../../src/util/stats.js';

const env = (k: string, d: string) => process.env[k] ?? d;
const N = Number(env('STREAM_TOKENS', '128')), rounds = Number(env('STREAM_ROUNDS', '5'));
const depths = env('STREAM_DEPTHS', '1,2,3,4,8').split(',').map(Number);
const act = env('LLM_ACT', 'f32') === 'int8' ? 'int8' : 'f32';
const { caps } = await acquireGpu();
console.log(`adapter: ${caps.name}`);
const w = process.argv[2] ? await loadLlm(process.argv[2]) : randomQuantLlama({ vocab: 32000, hidden: 4096, intermediate: 11008, layers: 32, heads: 32, kvHeads: 32, headDim: 128, maxPositions: 2048, ropeTheta: 10000, rmsEps: 1e-5 }, 4, 32, 1);
const r = await WebGpuLlm.create(w, { capacity: Math.min(512, w.config.maxPositions), activations: act });
console.log(`model ${process.argv[2] ?? 'random 7B q4'}: ${w.config.layers} layers, hidden ${w.config.hidden}; activations ${r.activations}; ${N} tokens after a 32-token prompt`);
const prompt = Array.from({ length: 32 }, (_, i) => (i * 131 + 7) % w.config.vocab);

/** Each way runs the prompt (its argmax is the first token), then N − 1 steps; the rate counts the steps over the whole. */
const ways: Record<string, () => Promise<number[]>> = {
  'one read-back a token': async () => {
    r.truncate(0);
    const ids = [await r.greedy(prompt)];
    while (ids.length < N) ids.push(await r.greedy([ids[ids.length - 1]]));
    return ids;
  },
  ...Object.fromEntries(depths.map((d) => [`greedyStream depth ${d}`, async () => {
    r.truncate(0);
    const ids = [await r.greedy(prompt)];
    const s = r.greedyStream(ids[0], N - 1, d);
    try { while (ids.length < N) ids.push(await s.next()); } finally { await s.close(); }
    return ids;
  }])),
  'generateGreedy (no read-back)': async () => {
    r.truncate(0);
    const ids = [await r.greedy(prompt)];
    return [...ids, ...(await r.generateGreedy([ids[0]], N - 1))];
  },
};
const rates = new Map<string, number[]>();
let ref: number[] | null = null;
for (let round = 0; round < rounds + 1; round++) {
  for (const [name, run] of Object.entries(ways)) {
    const t0 = performance.now();
    const ids = await run();
    const ms = performance.now() - t0;
    if (ref === null) ref = ids;
    else if (ids.length !== ref.length || ids.some((x, i) => x !== ref![i])) throw new Error(`${name}: other tokens than one read-back a token`);
    if (round > 0) { if (!rates.has(name)) rates.set(name, []); rates.get(name)!.push((N - 1) / (ms / 1000)); }
  }
}
const base = median(rates.get('one read-back a token')!);
for (const [name, xs] of rates) console.log(`${name.padEnd(32)} ${median(xs).toFixed(1).padStart(8)} tok/s (${(median(xs) / base).toFixed(2)}x one read-back a token; rounds ${xs.map((x) => x.toFixed(0)).join(' ')})`);
console.log('tokens: identical in every way and round');
process.stdout.write('', () => process.exit(0));
