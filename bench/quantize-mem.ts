// Peak memory of round-to-nearest quantization of a Hugging Face folder: the whole model in f32 then quantizeRtn
// ('whole'), or loadLlm's quantize option ('streamed': each tensor read from its file and quantized when converted).
// Usage: npx tsx bench/quantize-mem.ts DIR make     (a random f16 folder of TinyLlama-like shapes, 1.5 GB in two shards)
//        /usr/bin/time -v npx tsx bench/quantize-mem.ts DIR whole|streamed   (then compare "Maximum resident set size")
import fs from 'node:fs';
import path from 'node:path';
import { encodeLlm, loadLlm } from '../src/llm/model_io.js';
import { quantizeRtn } from '../src/llm/quantize.js';
import { readSafetensors, writeSafetensors } from '../src/llm/safetensors.js';
import { randomLlama } from '../src/llm/random_model.js';

const [dir, mode] = process.argv.slice(2);
if (!dir || !['make', 'whole', 'streamed'].includes(mode)) throw new Error('usage: quantize-mem.ts DIR make|whole|streamed');
if (mode === 'make') {
  fs.mkdirSync(dir, { recursive: true });
  const c = { vocab: 32000, hidden: 2048, intermediate: 5632, layers: 16, heads: 32, kvHeads: 4, headDim: 64, maxPositions: 2048, ropeTheta: 10000, rmsEps: 1e-5 };
  const w = randomLlama(c, 1);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({
    model_type: 'llama', vocab_size: c.vocab, hidden_size: c.hidden, intermediate_size: c.intermediate, num_hidden_layers: c.layers, num_attention_heads: c.heads,
    num_key_value_heads: c.kvHeads, max_position_embeddings: c.maxPositions, rms_norm_eps: c.rmsEps, rope_theta: c.ropeTheta, tie_word_embeddings: true,
  }));
  const all = [...readSafetensors(encodeLlm(w, { f32: false })).tensors];
  const half = all.length >> 1;
  fs.writeFileSync(path.join(dir, 'model-00001-of-00002.safetensors'), writeSafetensors(all.slice(0, half), {}));
  fs.writeFileSync(path.join(dir, 'model-00002-of-00002.safetensors'), writeSafetensors(all.slice(half), {}));
} else {
  const o = { bits: 4 as const, group: 32 };
  const t0 = performance.now();
  const w = mode === 'streamed' ? await loadLlm(dir, { quantize: o }) : quantizeRtn(await loadLlm(dir), o);
  const bytes = encodeLlm(w);
  fs.writeFileSync(path.join(dir, `../quantize-mem.${mode}.safetensors`), bytes);
  console.log(`${mode}: ${(bytes.byteLength / 1e6).toFixed(1)} MB written in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}
