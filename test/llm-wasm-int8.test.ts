// int8 activations on the Wasm LLM runtime (W4A8 through relaxed SIMD's int8 dot product). Relaxed SIMD is on by
// default in Chrome and behind a flag in Node 20: this file turns the flag on for its own process (node --test runs
// each file in a process of its own) before any runtime exists, so the runtime detects it as Chrome's would.
import v8 from 'node:v8';
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { hasRelaxedSimd } from '../src/backends/wasm/features.js';
import { LlmCausalLM } from '../src/generate/causal_lm.js';
import { TextGenerator } from '../src/generate/generate.js';
import { activationsOf, createLlm } from '../src/llm/index.js';
import { loadLlm } from '../src/llm/model_io.js';
import { quantizeRtn } from '../src/llm/quantize.js';
import { randomLlama as randomQwen } from '../src/llm/random_model.js';
import { ReferenceLlm } from '../src/llm/reference.js';
import type { LlmRunner, LlmWeights } from '../src/llm/types.js';
import { llamaConfig, randomLlama } from './llm-random.js';
import { withoutFeature } from './helpers.js';

v8.setFlagsFromString('--experimental-wasm-relaxed-simd');

const runners: LlmRunner[] = [];
after(async () => { for (const r of runners) await r.release(); });

/** max |a - b| / max |b|. */
function rel(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let e = 0, m = 0;
  for (let i = 0; i < a.length; i++) { e = Math.max(e, Math.abs(a[i] - b[i])); m = Math.max(m, Math.abs(b[i])); }
  return e / m;
}
const argmax = (a: Float32Array, off = 0, n = a.length) => { let b = 0; for (let i = 1; i < n; i++) if (a[off + i] > a[off + b]) b = i; return b; };

async function wasm(w: LlmWeights, activations: 'f32' | 'int8', threads = 2): Promise<LlmRunner & { activations?: string }> {
  const r = await createLlm(w, { backend: 'wasm', threads, activations });
  runners.push(r);
  return r;
}

// Every K (hidden 128, 4 heads of 32, intermediate 256) a multiple of 128: groups of 32, 64 and 128, the last two
// summing 2 and 4 chunks of 8 int8 products in i16 before widening.
const CFG = llamaConfig({ vocab: 301, hidden: 128, intermediate: 256, layers: 2, heads: 4, kvHeads: 2, headDim: 32, maxPositions: 64 });

test('relaxed SIMD is on in this process (the int8 path below is the one tested)', () => {
  assert.equal(hasRelaxedSimd(), true);
});

for (const group of [32, 64, 128]) {
  test(`wasm LLM q4 g${group} with int8 activations: prompt and steps near the reference, the same argmax, small-T equal to one-token bits`, async () => {
    const w = quantizeRtn(randomLlama(CFG, 41 + group), { bits: 4, group });
    const i8 = await wasm(w, 'int8'), i16 = await wasm(w, 'f32');
    assert.equal(i8.activations, 'int8');
    assert.equal(i16.activations, 'f32');
    const ref = new ReferenceLlm(w);
    const V = CFG.vocab;
    const prompt = [5, 17, 250, 3, 99, 140, 7, 300, 0];
    const p8 = await i8.forward(prompt, true), pr = await ref.forward(prompt, true), p16 = await i16.forward(prompt, true);
    const promptErr = rel(p8, pr);
    let agree = 0;
    for (let t = 0; t < prompt.length; t++) if (argmax(p8, t * V, V) === argmax(pr, t * V, V)) agree++;
    let worst = 0, steps = 0, diff = rel(p8, p16);
    let id = argmax(pr, (prompt.length - 1) * V, V);
    for (let s = 0; s < 12; s++) {
      const a = await i8.forward([id]), b = await ref.forward([id]), c = await i16.forward([id]);
      worst = Math.max(worst, rel(a, b));
      diff = Math.max(diff, rel(a, c));
      if (argmax(a) === argmax(b)) steps++;
      id = argmax(b);
    }
    console.log(`q4 g${group} int8 x: prompt error ${promptErr.toExponential(2)}, worst step ${worst.toExponential(2)}, argmax ${agree}/${prompt.length} and ${steps}/12, int8 vs int16 ${diff.toExponential(2)}`);
    // x rounded to 8 bits per group: ~1e-2 of the logits' range (int16 x: within 1e-3).
    assert.ok(promptErr <= 3e-2, `prompt error ${promptErr}`);
    assert.ok(worst <= 3e-2, `worst step error ${worst}`);
    assert.ok(agree >= prompt.length - 1 && steps >= 11, `argmax agrees at ${agree}/${prompt.length} prompt positions and ${steps}/12 steps`);
    // The int8 path was taken (int16 x would agree with the reference to 1e-3 and differ from it).
    assert.ok(diff > 1e-5, `int8 logits equal the int16 ones (${diff})`);
    // The prompt one token at a time (one-token passes; the prompt ran 2-token passes, chunks of 4+ rows through
    // the shared quantization phase): the same bits, which is what greedy speculative decoding rests on.
    const one = await wasm(w, 'int8', 1);
    for (let t = 0; t < prompt.length; t++) {
      const row = await one.forward([prompt[t]]);
      assert.deepEqual(Array.from(row), Array.from(p8.subarray(t * V, (t + 1) * V)), `position ${t}: one token at a time (one thread) vs the prompt (two)`);
    }
  });
}

test('wasm LLM with int8 activations: 4-bit layers int8, an 8-bit head int16 (the trained models\' layout); 3 and 5 tokens', async () => {
  const base = randomLlama(CFG, 77);
  const q4 = quantizeRtn(base, { bits: 4, group: 32 });
  const w: LlmWeights = { ...q4, lmHead: quantizeRtn(base, { bits: 8, group: 32 }).lmHead };
  const i8 = await wasm(w, 'int8');
  assert.equal(i8.activations, 'int8');
  const ref = new ReferenceLlm(w);
  await i8.forward([1, 2, 3, 4]); await ref.forward([1, 2, 3, 4]);
  for (const ids of [[9, 8, 7], [100, 200, 300, 10, 20]]) {
    const a = await i8.forward(ids, true), b = await ref.forward(ids, true);
    assert.ok(rel(a, b) <= 3e-2, `${ids.length} tokens: ${rel(a, b)}`);
  }
});

/**
 * The feature's model quantized to q4 g32 and g128, int8 x on 2 threads near the reference, 1 thread the same bits, and
 * the same weights without the feature far off (moved beyond int8's rounding: the test can fail).
 */
async function int8Feature(base: LlmWeights, key: 'qkvBias' | 'qkNorm', what: string, script: (r: LlmRunner) => Promise<Float32Array[]>): Promise<void> {
  for (const group of [32, 128]) {
    const w = quantizeRtn(base, { bits: 4, group });
    const two = await wasm(w, 'int8'), one = await wasm(w, 'int8', 1), off = await wasm(withoutFeature(w, key), 'int8');
    assert.equal(two.activations, 'int8');
    const want = await script(new ReferenceLlm(w)), got = await script(two), got1 = await script(one), moved = await script(off);
    const worst = Math.max(...got.map((a, i) => rel(a, want[i])));
    assert.ok(worst <= 3e-2, `g${group}: logits differ by ${worst}`);
    got.forEach((a, i) => assert.deepEqual(Array.from(got1[i]), Array.from(a), `g${group}, call ${i}: one thread and two give the same bits`));
    const least = Math.min(...moved.map((a, i) => rel(a, want[i])));
    console.log(`${what}, q4 g${group} int8 x: worst ${worst.toExponential(2)}, without them ${least.toExponential(2)}`);
    assert.ok(least > 0.05, `g${group}: without the ${what} the logits differ by only ${least}`);
  }
}

/** A prompt (passes of 2 and 1 through the shared prologue), single steps, then 2 and 3 tokens: each call's logits. */
async function featureScript(r: LlmRunner): Promise<Float32Array[]> {
  const out = [await r.forward([5, 17, 250, 3, 99, 140, 7, 300, 0], true)];
  for (const id of [12, 77]) out.push(await r.forward([id]));
  for (const ids of [[9, 8], [200, 7, 6]]) out.push(await r.forward(ids, true));
  return out;
}

test('wasm LLM with int8 activations: q/k/v biases (Qwen2) near the reference, q4 g32 and g128 (prompt, steps, all-position logits), 1 and 2 threads', async () => {
  await int8Feature(randomQwen({ ...CFG, qkvBias: true }, 43), 'qkvBias', 'biases', featureScript);
});

test('wasm LLM with int8 activations: q/k norms (Qwen3) near the reference, q4 g32 and g128 (prompt, steps, all-position logits, chunked prefill), 1 and 2 threads', async () => {
  // featureScript, then 70 tokens from an empty cache (two launches)
  await int8Feature(randomQwen({ ...CFG, maxPositions: 80, qkNorm: true }, 47), 'qkNorm', 'q/k norms', async (r) => {
    const out = await featureScript(r);
    r.truncate(0);
    out.push(await r.forward(Array.from({ length: 70 }, (_, i) => (i * 37 + 11) % CFG.vocab), true));
    return out;
  });
});

test('greedy speculative decoding with int8 activations gives plain int8 greedy decoding\'s tokens (the trained pair)', { timeout: 120_000 }, async () => {
  const F = 'test/fixtures/lm';
  const tw = await loadLlm(`${F}/target.q4.safetensors`), dw = await loadLlm(`${F}/draft.q4.safetensors`);
  const target = new LlmCausalLM(await wasm(tw, 'int8'));
  const draft = new LlmCausalLM(await wasm(dw, 'int8'));
  const prompt = [0, 412, 1033, 77, 2048, 9, 3000, 15];
  const plain = new TextGenerator(target).generate(prompt, { maxTokens: 40, ignoreEos: true });
  await plain.all();
  for (const k of [2, 3]) {
    const g = new TextGenerator(target, undefined, { draft, draftTokens: k }).generate(prompt, { maxTokens: 40, ignoreEos: true });
    await g.all();
    assert.deepEqual(g.ids, plain.ids, `k = ${k}`);
    const sp = g.stats!.speculative!;
    assert.ok(sp.accepted > 0 && sp.accepted < sp.drafted, `rounds with acceptances and rejections (${sp.accepted}/${sp.drafted})`);
  }
});

test('TextGenerator.create(weights, { activations }) opens the target and the draft with the activations asked for', { timeout: 120_000 }, async () => {
  const F = 'test/fixtures/lm';
  const tw = await loadLlm(`${F}/target.q4.safetensors`), dw = await loadLlm(`${F}/draft.q4.safetensors`);
  for (const activations of ['int8', 'f32'] as const) {
    const gen = await TextGenerator.create(tw, { backend: 'wasm', threads: 2, activations, draft: dw, draftTokens: 3 });
    try {
      assert.equal(activationsOf(gen.decoder.runner), activations, 'the target');
      assert.equal(activationsOf((gen.draft as LlmCausalLM).runner), activations, 'the draft');
      const g = gen.generate([0, 412, 1033, 77], { maxTokens: 8, ignoreEos: true });
      await g.all();
      assert.equal(g.ids.length, 8);
    } finally {
      await gen.release();
    }
  }
  const mixed = await TextGenerator.create(tw, { backend: 'wasm', threads: 2, activations: 'int8', draft: dw, draftActivations: 'f32' });
  try {
    assert.equal(activationsOf(mixed.decoder.runner), 'int8');
    assert.equal(activationsOf((mixed.draft as LlmCausalLM).runner), 'f32', 'draftActivations');
  } finally {
    await mixed.release();
  }
});
