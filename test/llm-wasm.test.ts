// The Wasm LLM runtime against the TypeScript reference: random small Llama models (GQA, sizes that are not powers of
// two), f32 / q8 / q4 weights, prompts then single steps, all-position logits after a filled cache, truncate, chunked
// prefill, the typed errors, and no kernel compile after the first forward.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { hasRelaxedSimd } from '../src/backends/wasm/features.js';
import { InputError, ResourceLimitError } from '../src/errors.js';
import { createLlm } from '../src/llm/index.js';
import { quantizeRtn } from '../src/llm/quantize.js';
import { randomLlama } from '../src/llm/random_model.js';
import { ReferenceLlm } from '../src/llm/reference.js';
import type { LlamaConfig, LlmRunner, LlmWeights, Matrix } from '../src/llm/types.js';
import { WASM_LLM_TMAX, WasmLlm } from '../src/llm/wasm.js';
import { rng, withoutFeature } from './helpers.js';

const BASE: LlamaConfig = {
  vocab: 300, hidden: 96, intermediate: 160, layers: 2, heads: 4, kvHeads: 2, headDim: 24, maxPositions: 160,
  ropeTheta: 10000, rmsEps: 1e-5,
};

/** A random model whose logits spread over a few units (as a trained model's do), tied embeddings. */
export function randomLlm(c: LlamaConfig, seed: number): LlmWeights {
  const r = rng(seed);
  const u = (n: number, a: number, c0 = 0) => Float32Array.from({ length: n }, () => c0 + (r() * 2 - 1) * a);
  const mat = (N: number, K: number): Matrix => ({ kind: 'f32', N, K, data: u(N * K, Math.sqrt(3 / K)) });
  const D = c.hidden, qd = c.heads * c.headDim, kvd = c.kvHeads * c.headDim;
  const embed = u(c.vocab * D, 1);
  return {
    config: c,
    embed,
    layers: Array.from({ length: c.layers }, () => ({
      attnNorm: u(D, 0.2, 1), q: mat(qd, D), k: mat(kvd, D), v: mat(kvd, D), o: mat(D, qd),
      mlpNorm: u(D, 0.2, 1), gate: mat(c.intermediate, D), up: mat(c.intermediate, D), down: mat(D, c.intermediate),
    })),
    norm: u(D, 0.2, 1),
    lmHead: { kind: 'f32', N: c.vocab, K: D, data: embed },
    quant: 'f32',
  };
}

/** max |a - b| / max |b|. */
function relDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let e = 0, m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    e = Number.isNaN(d) ? Infinity : Math.max(e, d);
    m = Math.max(m, Math.abs(b[i]));
  }
  return e / m;
}

const argmax = (a: Float32Array, off = 0, n = a.length) => { let b = 0; for (let i = 1; i < n; i++) if (a[off + i] > a[off + b]) b = i; return b; };

const runners: LlmRunner[] = [];
after(async () => { for (const r of runners) await r.release(); });

async function pair(w: LlmWeights, capacity?: number): Promise<{ ref: ReferenceLlm; wasm: LlmRunner }> {
  const wasm = await createLlm(w, { backend: 'wasm', capacity, threads: 2 });
  runners.push(wasm);
  return { ref: new ReferenceLlm(w, capacity), wasm };
}

const variants: { name: string; tol: number; make: (w: LlmWeights) => LlmWeights }[] = [
  { name: 'f32', tol: 1e-4, make: (w) => w },
  { name: 'q8', tol: 1e-3, make: (w) => quantizeRtn(w, { bits: 8, group: 32 }) },
  { name: 'q4', tol: 1e-3, make: (w) => quantizeRtn(w, { bits: 4, group: 32 }) },
];

for (const v of variants) {
  test(`wasm LLM ${v.name}: prompt, then greedy steps, equal the reference`, async () => {
    const w = v.make(randomLlm(BASE, 7));
    const { ref, wasm } = await pair(w);
    const prompt = [5, 17, 250, 3, 99, 140, 7];
    let a = await wasm.forward(prompt), b = await ref.forward(prompt);
    let worst = relDiff(a, b);
    for (let step = 0; step < 12; step++) {
      const ta = argmax(a), tb = argmax(b);
      assert.equal(ta, tb, `greedy token ${step}`);
      a = await wasm.forward([ta]); b = await ref.forward([tb]);
      worst = Math.max(worst, relDiff(a, b));
    }
    assert.ok(worst < v.tol, `logits differ by ${worst} of max|logits|`);
    assert.equal(wasm.length, prompt.length + 12);
  });
}

// Groups of 64 and 128 (GPTQ's and AWQ's usual size): every K of this config is a multiple of 128.
test('wasm LLM q8 and q4 in groups of 64 and 128: prompt, steps and all-position logits equal the reference', async () => {
  const C: LlamaConfig = { ...BASE, hidden: 128, intermediate: 256, heads: 4, kvHeads: 2, headDim: 32 };
  for (const bits of [8, 4] as const) for (const group of [64, 128]) {
    const w = quantizeRtn(randomLlm(C, 29 + group + bits), { bits, group });
    const { ref, wasm } = await pair(w);
    const prompt = [5, 17, 250, 3, 99, 140, 7];
    let worst = relDiff(await wasm.forward(prompt, true), await ref.forward(prompt, true));
    for (const id of [12, 77, 201]) worst = Math.max(worst, relDiff(await wasm.forward([id]), await ref.forward([id])));
    assert.ok(worst < 1e-3, `q${bits} g${group}: logits differ by ${worst} of max|logits|`);
  }
});

test('wasm LLM: all-position logits of several tokens after a filled cache, GQA, chunked prefill', async () => {
  for (const v of variants) {
    const w = v.make(randomLlm(BASE, 11));
    const { ref, wasm } = await pair(w);
    await ref.forward([1, 2, 3, 4, 5]); await wasm.forward([1, 2, 3, 4, 5]);
    const ids = [9, 8, 200, 7, 6, 150];
    const a = await wasm.forward(ids, true), b = await ref.forward(ids, true);
    assert.equal(a.length, ids.length * BASE.vocab);
    const d = relDiff(a, b);
    assert.ok(d < v.tol, `${v.name}: all logits differ by ${d}`);
    for (let t = 0; t < ids.length; t++) assert.equal(argmax(a, t * BASE.vocab, BASE.vocab), argmax(b, t * BASE.vocab, BASE.vocab));
    // Longer than one launch: chunks of WASM_LLM_TMAX continue the cache.
    const long = Array.from({ length: WASM_LLM_TMAX + 37 }, (_, i) => (i * 37 + 11) % BASE.vocab);
    const la = await wasm.forward(long, true), lb = await ref.forward(long, true);
    assert.ok(relDiff(la, lb) < v.tol, `${v.name}: chunked prefill differs by ${relDiff(la, lb)}`);
    assert.equal(wasm.length, 11 + long.length);
  }
});

test('wasm LLM: truncate then forward equals a fresh run; rollback of a rejected draft', async () => {
  const w = quantizeRtn(randomLlm(BASE, 13), { bits: 4, group: 32 });
  const a = await createLlm(w, { backend: 'wasm', threads: 2 });
  const b = await createLlm(w, { backend: 'wasm', threads: 2 });
  runners.push(a, b);
  const prefix = [3, 1, 4, 1, 5, 9, 2, 6];
  await a.forward(prefix);
  await a.forward([100, 200, 250, 17], true); // e.g. draft tokens verified, then rejected
  a.truncate(prefix.length);
  assert.equal(a.length, prefix.length);
  const next = [5, 3, 5];
  const got = await a.forward(next, true);
  await b.forward(prefix);
  const want = await b.forward(next, true);
  assert.deepEqual(Array.from(got), Array.from(want), 'bitwise equal to a fresh run');
  a.truncate(0);
  assert.deepEqual(Array.from(await a.forward(prefix)), Array.from(await (async () => { b.truncate(0); return b.forward(prefix); })()));
  assert.throws(() => a.truncate(prefix.length + 1), InputError);
});

test('wasm LLM: capacity overflow and bad ids are typed errors and leave the cache as it was', async () => {
  const w = randomLlm(BASE, 17);
  const r = await createLlm(w, { backend: 'wasm', capacity: 16, threads: 2 });
  runners.push(r);
  await r.forward([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  await assert.rejects(r.forward([1, 2, 3, 4, 5, 6, 7]), ResourceLimitError);
  await assert.rejects(r.forward([1, BASE.vocab]), InputError);
  await assert.rejects(r.forward([-1]), InputError);
  await assert.rejects(r.forward([1.5]), InputError);
  await assert.rejects(r.forward([]), InputError);
  assert.equal(r.length, 10);
  const ref = new ReferenceLlm(w, 16);
  await ref.forward([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  const a = await r.forward([11, 12, 13, 14, 15, 16], true), b = await ref.forward([11, 12, 13, 14, 15, 16], true);
  assert.ok(relDiff(a, b) < 1e-4);
  assert.equal(r.length, 16);
  await assert.rejects(r.forward([1]), ResourceLimitError);
  await assert.rejects(createLlm(w, { backend: 'wasm', capacity: BASE.maxPositions + 1 }));
});

test('wasm LLM: no kernel compiles after the first forward, at any T and cache length', async () => {
  const w = quantizeRtn(randomLlm(BASE, 19), { bits: 8, group: 32 });
  const r = await createLlm(w, { backend: 'wasm', threads: 2 }) as WasmLlm;
  runners.push(r);
  await r.forward([1, 2, 3]);
  const before = r.runtime.kernelCount;
  for (const T of [1, 2, 3, 4, 5, 7, 16, 33, 64]) {
    r.truncate(0);
    await r.forward(Array.from({ length: T }, (_, i) => i + 1), true);
    for (let i = 0; i < 3; i++) await r.forward([i + 5]);
  }
  await r.forward(Array.from({ length: 80 }, (_, i) => i), true);
  assert.equal(r.runtime.kernelCount, before);
  // one token: per layer the qkv, attention, o, gate/up and down phases, then the head (no norm/quant phases)
  await r.forward([9]);
  assert.equal(r.waitStats().phases, BASE.layers * 5 + 1);
  await r.forward([1, 2, 3, 4, 5], true);
  assert.equal(r.waitStats().phases, BASE.layers * 9 + 2);
});

test('wasm LLM: other shapes (no GQA, head_dim 32, group 64, a vocabulary not a multiple of 16) and one thread', async () => {
  const c: LlamaConfig = { ...BASE, vocab: 301, hidden: 128, intermediate: 192, layers: 3, heads: 4, kvHeads: 4, headDim: 32, maxPositions: 40 };
  const base = randomLlm(c, 23);
  for (const [name, w, tol] of [['f32', base, 1e-4], ['q8 g64', quantizeRtn(base, { bits: 8, group: 64 }), 1e-3], ['q4 g64', quantizeRtn(base, { bits: 4, group: 64 }), 1e-3]] as const) {
    const one = await createLlm(w, { backend: 'wasm', threads: 1 });
    const two = await createLlm(w, { backend: 'wasm', threads: 2 });
    runners.push(one, two);
    const ref = new ReferenceLlm(w);
    const ids = [300, 0, 5, 77, 123, 9, 250];
    const a = await two.forward(ids, true), b = await ref.forward(ids, true), a1 = await one.forward(ids, true);
    assert.ok(relDiff(a, b) < tol, `${name}: differs by ${relDiff(a, b)}`);
    assert.deepEqual(Array.from(a1), Array.from(a), `${name}: one thread and two give the same bits`);
    const s = await two.forward([argmax(a, 6 * c.vocab, c.vocab)]), sr = await ref.forward([argmax(b, 6 * c.vocab, c.vocab)]);
    assert.ok(relDiff(s, sr) < tol);
  }
});

test('wasm LLM: a model whose matrices differ in format runs them dequantised (exactly)', async () => {
  const w = randomLlm(BASE, 29);
  const q = quantizeRtn(w, { bits: 4, group: 32 });
  // q quantized, k and v dense: the fused projection reads all three as f32
  const mixed: LlmWeights = { ...q, layers: q.layers.map((L, i) => ({ ...L, k: w.layers[i].k, v: w.layers[i].v, up: quantizeRtn(w, { bits: 8, group: 32 }).layers[i].up })) };
  const { ref, wasm } = await pair(mixed);
  const ids = [4, 40, 140, 240];
  const d = relDiff(await wasm.forward(ids, true), await ref.forward(ids, true));
  assert.ok(d < 1e-3, `differs by ${d}`);
});

test('wasm LLM: int8 activations asked for where the engine has no relaxed SIMD run int16 x (the default\'s bits)', async () => {
  const w = quantizeRtn(randomLlm(BASE, 31), { bits: 4, group: 32 });
  const asked = await createLlm(w, { backend: 'wasm', threads: 2, activations: 'int8' }) as WasmLlm;
  const plain = await createLlm(w, { backend: 'wasm', threads: 2 }) as WasmLlm;
  runners.push(asked, plain);
  assert.equal(plain.activations, 'f32');
  assert.equal(asked.activations, hasRelaxedSimd() ? 'int8' : 'f32');
  const ids = [3, 30, 130, 230];
  const a = await asked.forward(ids, true), b = await plain.forward(ids, true);
  if (asked.activations === 'f32') assert.deepEqual(Array.from(a), Array.from(b));
  else assert.ok(relDiff(a, b) > 1e-6 && relDiff(a, b) < 3e-2);
});

/** A prompt, single steps, then chunks of 2, 3 and 6 tokens (passes of every width, both prologue paths): the logits of each call. */
async function biasScript(r: LlmRunner): Promise<Float32Array[]> {
  const out = [await r.forward([5, 17, 250, 3, 99, 140, 7], true)];
  for (const id of [12, 77, 201]) out.push(await r.forward([id]));
  for (const ids of [[9, 8], [200, 7, 6], [150, 1, 2, 3, 4, 5]]) out.push(await r.forward(ids, true));
  return out;
}

/**
 * Each case on 1 and 2 threads against the reference (within tol, the same bits on both), and without `key` (the same
 * weights less the feature) far off: the test can fail. `then` runs on the 2-thread runner after.
 */
async function featureCases(cases: [string, LlmWeights, number][], key: 'qkvBias' | 'qkNorm', what: string,
  script: (r: LlmRunner) => Promise<Float32Array[]>, then?: (two: LlmRunner, w: LlmWeights) => Promise<void>): Promise<void> {
  for (const [name, w, tol] of cases) {
    const one = await createLlm(w, { backend: 'wasm', threads: 1 }), two = await createLlm(w, { backend: 'wasm', threads: 2 });
    const bare = await createLlm(withoutFeature(w, key), { backend: 'wasm', threads: 2 });
    runners.push(one, two, bare);
    const want = await script(new ReferenceLlm(w)), got = await script(two), got1 = await script(one), off = await script(bare);
    const worst = Math.max(...got.map((a, i) => relDiff(a, want[i])));
    assert.ok(worst < tol, `${name}: logits differ by ${worst} of max|logits|`);
    got.forEach((a, i) => assert.deepEqual(Array.from(got1[i]), Array.from(a), `${name}, call ${i}: one thread and two give the same bits`));
    const moved = Math.min(...off.map((a, i) => relDiff(a, want[i])));
    assert.ok(moved > 0.05, `${name}: without the ${what} the logits differ by only ${moved}`);
    await then?.(two, w);
  }
}

test('wasm LLM: q/k/v biases (Qwen2) equal the reference: f32, q8, q4 (prompt, steps, all-position logits), 1 and 2 threads', async () => {
  // GQA (4 heads on 2 kv heads of 24 dims); groups of 64 and 128 (every K a multiple of 128); 3 heads on 1 kv head
  // (f32: a quantized K would not divide): 30 row blocks of q/k/v, the last tile's 2 padding blocks with zero biases;
  // a layer with all-zero biases beside one with (checkWeights wants every layer to have them).
  const C: LlamaConfig = { ...BASE, qkvBias: true };
  const gqa = randomLlama(C, 37), wide = randomLlama({ ...C, hidden: 128, intermediate: 256, headDim: 32 }, 39);
  const padded = randomLlama({ ...C, heads: 3, kvHeads: 1 }, 41);
  const half: LlmWeights = { ...gqa, layers: gqa.layers.map((L, l) => (l ? { ...L, qkvBias: { q: L.qkvBias!.q.map(() => 0), k: L.qkvBias!.k.map(() => 0), v: L.qkvBias!.v.map(() => 0) } } : L)) };
  const cases: [string, LlmWeights, number][] = [
    ...variants.map((v): [string, LlmWeights, number] => [`GQA ${v.name}`, v.make(gqa), v.tol]),
    ['q8 g64', quantizeRtn(wide, { bits: 8, group: 64 }), 1e-3], ['q4 g128', quantizeRtn(wide, { bits: 4, group: 128 }), 1e-3],
    ['padded f32', padded, 1e-4], ['one layer with zero biases, q4', quantizeRtn(half, { bits: 4, group: 32 }), 1e-3],
  ];
  await featureCases(cases, 'qkvBias', 'biases', biasScript);
});

test('wasm LLM: q/k norms (Qwen3) equal the reference: f32, q8, q4, head_dim 16/24/32, with biases, chunked prefill, 1 and 2 threads', async () => {
  // GQA (4 heads of 24 dims on 2 kv heads: rotary pair blocks 6 a head); head_dim 32 with groups of 64 and 128;
  // head_dim 16 (6 heads on 2 kv heads); with q/k/v biases too (the norm weights then follow the biases): 3 heads on 1
  // kv head (f32: padding tiles past q/k/v), 4 heads on 1 (q4).
  const C: LlamaConfig = { ...BASE, qkNorm: true };
  const gqa = randomLlama(C, 43), wide = randomLlama({ ...C, hidden: 128, intermediate: 256, headDim: 32 }, 45);
  const narrow = randomLlama({ ...C, heads: 6, kvHeads: 2, headDim: 16 }, 47);
  const padded = randomLlama({ ...C, heads: 3, kvHeads: 1, qkvBias: true }, 49), biased = randomLlama({ ...C, kvHeads: 1, qkvBias: true }, 51);
  const cases: [string, LlmWeights, number][] = [
    ...variants.map((v): [string, LlmWeights, number] => [`GQA ${v.name}`, v.make(gqa), v.tol]),
    ['q8 g64', quantizeRtn(wide, { bits: 8, group: 64 }), 1e-3], ['q4 g128', quantizeRtn(wide, { bits: 4, group: 128 }), 1e-3],
    ['head_dim 16 f32', narrow, 1e-4], ['head_dim 16 q4', quantizeRtn(narrow, { bits: 4, group: 32 }), 1e-3],
    ['with biases, padded f32', padded, 1e-4], ['with biases q4', quantizeRtn(biased, { bits: 4, group: 32 }), 1e-3],
  ];
  /** biasScript, then a chunk longer than one launch. */
  const script = async (r: LlmRunner) => [...await biasScript(r), await r.forward(Array.from({ length: WASM_LLM_TMAX + 6 }, (_, i) => (i * 37 + 11) % BASE.vocab), true)];
  await featureCases(cases, 'qkNorm', 'q/k norms', script, async (two, w) => {
    // one token: per layer a phase more (the norms) than Llama's
    await two.forward([9]);
    assert.equal((two as WasmLlm).waitStats().phases, w.config.layers * 6 + 1);
  });
});
