// Decode GEMV shapes compared inside the model (not alone: a matrix-vector product timed in a loop of itself sees other
// caches, clocks and neighbours than in a forward): for each candidate, a WebGPU LLM runner on the same random q4
// weights, GPU time of one decode forward (timestamps, median of 30) and chained greedy tokens/s.
// Usage: node llm-shapes.mjs   Env: LLM_HIDDEN LLM_INTER LLM_LAYERS LLM_HEADS LLM_KV LLM_HEADDIM (default 1.1B shapes)
//        SHAPES="rows,TK,RG,UN,XT;…" (rows per thread; XT 0: x from storage, -1: staged as the default picks)
import { randomQuantLlama } from '../../src/llm/random_model.js';
import type { LlamaConfig } from '../../src/llm/types.js';
import { WebGpuLlm, llmGpuConfig } from '../../src/llm/webgpu.js';
import { mulberry32 } from '../../src/util/random.js';

const env = (k: string, d: number) => (process.env[k] ? Number(process.env[k]) : d);
const cfg: LlamaConfig = {
  vocab: 32000, hidden: env('LLM_HIDDEN', 2048), intermediate: env('LLM_INTER', 5632), layers: env('LLM_LAYERS', 22), heads: env('LLM_HEADS', 32),
  kvHeads: env('LLM_KV', 4), headDim: env('LLM_HEADDIM', 64), maxPositions: 2048, ropeTheta: 10000, rmsEps: 1e-5,
};
const shapes = (process.env.SHAPES ?? '1,32,8,2,-1;2,32,8,2,-1;4,32,8,2,-1;2,32,16,2,-1;4,32,16,2,-1;4,64,8,4,-1;2,64,8,2,-1;1,32,8,2,0;4,32,8,1,0;4,64,8,4,0')
  .split(';').map((s) => s.split(',').map(Number));
const w = randomQuantLlama(cfg, 4, 32, 1);
console.log(`model ${JSON.stringify(cfg)} q4 g32`);
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const rnd = mulberry32(5);
const prompt = Array.from({ length: 16 }, () => Math.floor(rnd() * cfg.vocab));
const rows: string[] = [];
for (const [rows1, TK, RG, UN, XT] of shapes) {
  llmGpuConfig.shape = (role, _units, TB) => {
    if (TB !== 1) return undefined;
    const P = role === 'qkv' || role === 'gateup' ? 2 : 1;
    return { RT: Math.max(1, rows1 / P), TK, RG, UN, ...(XT >= 0 ? { XT } : {}) };
  };
  const r = await WebGpuLlm.create(w, { capacity: 512 });
  await r.generateGreedy(prompt, 32);
  r.truncate(0);
  let t = performance.now();
  await r.generateGreedy(prompt, 129);
  const total = performance.now() - t;
  r.truncate(0);
  t = performance.now();
  await r.forward(prompt);
  const chained = (total - (performance.now() - t)) / 128;
  await r.forward(Array.from({ length: 64 }, (_, i) => (i * 7 + 1) % cfg.vocab));
  r.timing = true;
  const g: number[] = [];
  for (let s = 0; s < 30; s++) { await r.forward([s + 1]); g.push(r.stats.gpuMsLastForward); }
  r.timing = false;
  const gpu = med(g.slice(3));
  const line = `rows ${rows1} TK${TK} RG${RG} UN${UN} ${XT === 0 ? 'x from storage' : 'x staged    '}  GPU ${gpu.toFixed(3)} ms/token  chained ${chained.toFixed(3)} ms/token ${(1000 / chained).toFixed(0)} tok/s  ${(r.weightBytesPerToken / gpu / 1e6).toFixed(0)} GB/s GPU`;
  console.log(line);
  rows.push(line);
  await r.release();
}
process.exit(0);
