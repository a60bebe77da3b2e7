// Cost of one wasm LLM forward of T = 1…8 tokens after 64 cached, relative to T = 1 (speculative verification on the CPU).
// Usage: node --experimental-wasm-relaxed-simd --import tsx bench/wasm-llm-tcost.ts [model.safetensors]   Env: THREADS (2), REPS (40), ACT=int8
import { loadLlm, WasmLlm } from '../src/llm/index.js';
const path = process.argv[2] ?? 'test/fixtures/lm/target.q4.safetensors';
const w = await loadLlm(path);
const llm = await WasmLlm.create(w, { threads: Number(process.env.THREADS ?? 2), capacity: 512, activations: process.env.ACT === 'int8' ? 'int8' : undefined });
const prompt = Array.from({ length: 64 }, (_, i) => (i * 37) % 8000 + 2);
await llm.forward(prompt);
const reps = Number(process.env.REPS ?? 40);
const res: Record<number, number[]> = {};
for (let round = 0; round < 5; round++) for (let T = 1; T <= 8; T++) {
  const ids = Array.from({ length: T }, (_, i) => i + 5);
  const t0 = performance.now();
  for (let r = 0; r < reps; r++) { await llm.forward(ids, true); llm.truncate(64); }
  (res[T] ??= []).push((performance.now() - t0) / reps);
}
const med = (a: number[]) => a.sort((x, y) => x - y)[a.length >> 1];
const m1 = med(res[1]);
for (let T = 1; T <= 8; T++) console.log(`T=${T} ${med(res[T]).toFixed(3)} ms  ratio ${(med(res[T]) / m1).toFixed(2)}`);
await llm.release();
process.exit(0);
