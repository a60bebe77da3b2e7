// The Wasm runtime with and without Qwen3's q/k norm phase on the same weights, interleaved in one process (decode ms a
// token at Qwen3-0.6B widths, 12 layers). Run: node --experimental-wasm-relaxed-simd --import tsx bench/wasm-qknorm-ab.mts
import { randomQuantLlm, llamaConfig } from '../src/llm/random.ts';
import { WasmLlm } from '../src/llm/wasm.ts';
const c = llamaConfig({ hidden: 1024, layers: 12, heads: 16, kvHeads: 8, headDim: 128, intermediate: 3072, vocab: 32000, maxPositions: 512, qkNorm: true });
const w = randomQuantLlm(c, 4);
const plain = { ...w, config: { ...c, qkNorm: undefined }, layers: w.layers.map(({ qkNorm: _n, ...L }) => L) };
for (const act of ['f32', 'int8'] as const) {
  const a = await WasmLlm.create(w, { activations: act, capacity: 512 });
  const b = await WasmLlm.create(plain as never, { activations: act, capacity: 512 });
  const times: Record<string, number[]> = { qk: [], plain: [] };
  for (const r of [a, b]) await r.forward(Array.from({ length: 16 }, (_, i) => i + 5));
  for (let round = 0; round < 6; round++) {
    for (const [name, r] of [['qk', a], ['plain', b]] as const) {
      const t0 = performance.now();
      for (let i = 0; i < 20; i++) await r.forward([(i * 7 + round) % 1000]);
      times[name].push((performance.now() - t0) / 20);
      r.truncate(16);
    }
  }
  const med = (x: number[]) => x.sort((p, q) => p - q)[x.length >> 1];
  console.log(act, a.activations, 'qk', med(times.qk).toFixed(3), 'plain', med(times.plain).toFixed(3), 'ms/token; ratio', (med(times.qk) / med(times.plain)).toFixed(3));
  await a.release(); await b.release();
}
