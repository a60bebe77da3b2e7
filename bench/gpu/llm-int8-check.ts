// H100 check (session 13): the small-T int8 kernels against the one-token decode kernels on the trained target, and
// greedy speculative decoding on the GPU against plain greedy decoding, with f32 and int8 activations.
// Usage: node llm-int8-check.mjs (run from the repository root: reads test/fixtures/lm)
import fs from 'node:fs';
import { LlmCausalLM } from '../../src/generate/causal_lm.js';
import { TextGenerator } from '../../src/generate/generate.js';
import { argmax } from '../../src/generate/sampler.js';
import { TextTokenizer } from '../../src/generate/tokenizer.js';
import { loadLlm } from '../../src/llm/model_io.js';
import { WebGpuLlm } from '../../src/llm/webgpu.js';

const F = 'test/fixtures/lm';
const [tw, dw, tok] = await Promise.all([loadLlm(`${F}/target.q4.safetensors`), loadLlm(`${F}/draft.q4.safetensors`), TextTokenizer.fromFile(`${F}/tokenizer.json`)]);
const text = tok.encode(fs.readFileSync(`${F}/valid-sample.txt`, 'utf8'), { addSpecialTokens: true });
const prompt = text.slice(0, 32), V = tw.config.vocab;
for (const activations of ['f32', 'int8'] as const) {
  const a = await WebGpuLlm.create(tw, { capacity: 512, activations }), b = await WebGpuLlm.create(tw, { capacity: 512, activations });
  for (const T of [2, 4, 5, 16]) {
    a.truncate(0); b.truncate(0);
    await a.forward(prompt); await b.forward(prompt);
    const next = text.slice(32, 32 + T);
    const all = await a.forward(next, true);
    let worst = 0, same = 0;
    for (let t = 0; t < T; t++) {
      const one = await b.forward([next[t]]);
      let mx = 0, rng = 0;
      for (let i = 0; i < V; i++) { mx = Math.max(mx, Math.abs(one[i] - all[t * V + i])); rng = Math.max(rng, Math.abs(one[i])); }
      worst = Math.max(worst, mx / rng);
      if (argmax(all.subarray(t * V, (t + 1) * V)) === argmax(one)) same++;
    }
    console.log(`${activations} T=${T}: small-T vs one-token logits max rel diff ${worst.toExponential(2)}, argmax same ${same}/${T}`);
  }
  await a.release(); await b.release();
  const plain = new TextGenerator(new LlmCausalLM(await WebGpuLlm.create(tw, { capacity: 512, activations })));
  const pg = plain.generate(prompt, { maxTokens: 128 }); await pg.all();
  const gen = new TextGenerator(new LlmCausalLM(await WebGpuLlm.create(tw, { capacity: 512, activations })), undefined,
    { draft: new LlmCausalLM(await WebGpuLlm.create(dw, { capacity: 512, activations })), draftTokens: 3 });
  for (let r = 0; r < 2; r++) {
    const g = gen.generate(prompt, { maxTokens: 128 }); await g.all();
    console.log(`${activations} speculative vs plain greedy: first mismatch ${pg.ids.findIndex((x, i) => x !== g.ids[i])} (-1: none); ${JSON.stringify(g.stats!.speculative)}`);
  }
  await plain.release(); await gen.release();
}
process.exit(0);
