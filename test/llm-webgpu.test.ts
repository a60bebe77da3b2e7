// The WebGPU LLM runtime against the TypeScript reference: random small Llamas (GQA, f32/q8/q4, odd sizes), prompt then
// steps, all-position logits after a non-empty cache, truncate, greedy and per-position argmax, chunked long forwards,
// typed errors before anything is submitted, and no pipeline or bind group created by forwards.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { acquireGpu } from '../src/backends/webgpu/device.js';
import { InputError, ResourceLimitError, UnsupportedError } from '../src/errors.js';
import { createLlm } from '../src/llm/index.js';
import { quantizeRtn } from '../src/llm/quantize.js';
import { randomLlama } from '../src/llm/random_model.js';
import { ReferenceLlm } from '../src/llm/reference.js';
import type { LlamaConfig, LlmWeights, Matrix, QuantMatrix } from '../src/llm/types.js';
import { WebGpuLlm, gemvShapeFor, llmGpuConfig, packMatrix, prefillChunks } from '../src/llm/webgpu.js';
import { blockedIndexJs, gemvKernel, gemvWorkgroupBytes, kBlockOf, matLayout, type GemvShape, type GemvSpec } from '../src/llm/wgsl.js';
import { f16ToF32 } from '../src/ops/util.js';
import { LAYER_MATRICES, bytesPerToken } from '../src/llm/types.js';

const TIMEOUT = { timeout: 900_000 };

const GQA: LlamaConfig = { vocab: 300, hidden: 96, intermediate: 160, layers: 2, heads: 6, kvHeads: 2, headDim: 16, maxPositions: 64, ropeTheta: 10000, rmsEps: 1e-5 };

function model(c: LlamaConfig, quant: 'f32' | 'q8' | 'q4', seed = 7, group = 32): LlmWeights {
  const w = randomLlama(c, seed);
  return quant === 'f32' ? w : quantizeRtn(w, { bits: quant === 'q8' ? 8 : 4, group });
}

/** Largest |got − want| over the largest |want|. */
function rel(got: Float32Array, want: Float32Array): number {
  assert.equal(got.length, want.length, 'logits length');
  let m = 0, e = 0;
  for (let i = 0; i < want.length; i++) {
    assert.ok(Number.isFinite(got[i]), `logit ${i} is ${got[i]}`);
    m = Math.max(m, Math.abs(want[i]));
    e = Math.max(e, Math.abs(got[i] - want[i]));
  }
  assert.ok(m > 0.1, `reference logits are degenerate (max |logit| ${m})`);
  return e / m;
}

const argmax = (a: Float32Array, off = 0, n = a.length): number => {
  let b = off;
  for (let i = off + 1; i < off + n; i++) if (a[i] > a[b]) b = i;
  return b - off;
};

const ids = (n: number, seed: number, vocab: number) => Array.from({ length: n }, (_, i) => (i * 131 + seed * 17 + 3) % vocab);

/** The trained pair (test/fixtures/lm): real acceptance, so speculative rounds end both in rejections and in bonus tokens. */
const LM = 'test/fixtures/lm';
async function trainedPair(): Promise<[LlmWeights, LlmWeights]> {
  const { loadLlm } = await import('../src/llm/model_io.js');
  return Promise.all([loadLlm(`${LM}/target.q4.safetensors`), loadLlm(`${LM}/draft.q4.safetensors`)]);
}

/** Prompt, steps, then T>1 with all logits, each against the reference. */
async function conformance(w: LlmWeights, what: string, o: { kvCache?: 'f32' | 'f16'; activations?: 'f32' | 'int8'; prefill?: 'f32' | 'f16' } = {}): Promise<WebGpuLlm> {
  const cap = 48;
  const gpu = await WebGpuLlm.create(w, { capacity: cap, ...o });
  const ref = new ReferenceLlm(w, cap, o.kvCache);
  const V = w.config.vocab;
  const prompt = ids(9, 1, V);
  assert.ok(rel(await gpu.forward(prompt), await ref.forward(prompt)) <= 1e-3, `${what}: prompt, last logits`);
  for (let s = 0; s < 4; s++) {
    const id = (s * 97 + 11) % V;
    const e = rel(await gpu.forward([id]), await ref.forward([id]));
    assert.ok(e <= 1e-3, `${what}: step ${s}: ${e}`);
  }
  for (const T of [3, 6, 17]) {
    const x = ids(T, T, V);
    const got = await gpu.forward(x, true), want = await ref.forward(x, true);
    assert.equal(got.length, T * V);
    const e = rel(got, want);
    assert.ok(e <= 1e-3, `${what}: T=${T} all logits after ${gpu.length - T} cached: ${e}`);
  }
  assert.equal(gpu.length, 9 + 4 + 3 + 6 + 17);
  assert.equal(gpu.length, ref.length);
  return gpu;
}

for (const quant of ['f32', 'q8', 'q4'] as const) {
  test(`webgpu llm ${quant}: prompt, steps and all-position logits equal the reference (GQA)`, TIMEOUT, async () => {
    const w = model(GQA, quant);
    const gpu = await conformance(w, quant);
    // The upload reads f16 scales: fewer bytes than the f32-scale format for quantized weights.
    if (quant === 'f32') assert.equal(gpu.weightBytesPerToken, bytesPerToken(w));
    else assert.ok(gpu.weightBytesPerToken < bytesPerToken(w) && gpu.weightBytesPerToken > 0.8 * bytesPerToken(w), `${gpu.weightBytesPerToken} vs ${bytesPerToken(w)}`);
    await gpu.release();
  });
}

/** Runs `fn` with some llmGpuConfig knobs set, then puts the previous values back. */
async function withGpuConfigValue<T>(patch: Partial<typeof llmGpuConfig>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(patch).map((k) => [k, llmGpuConfig[k as keyof typeof llmGpuConfig]]));
  Object.assign(llmGpuConfig, patch);
  try {
    return await fn();
  } finally {
    Object.assign(llmGpuConfig, saved);
  }
}
const withGpuConfig = (patch: Partial<typeof llmGpuConfig>, fn: () => Promise<void>): Promise<void> => withGpuConfigValue(patch, fn);

test('webgpu llm q4 g16 without subgroups (workgroup-memory reductions; two groups per vec4 of weights) equals the reference', TIMEOUT, () => withGpuConfig({ subgroups: false }, async () => {
  const gpu = await conformance(model(GQA, 'q4', 3, 16), 'q4 g16 no subgroups');
  assert.equal(gpu.subgroups, false);
  await gpu.release();
}));

test('webgpu llm f32: the unrolled small-T kernels GPUs get (constant loop bounds, 4 tokens per workgroup) equal the reference', TIMEOUT, () => withGpuConfig({ buckets: [1, 4], rolled: false }, async () => {
  const gpu = await conformance(model(GQA, 'f32', 4), 'f32 unrolled');
  assert.deepEqual(gpu.buckets, [1, 4]);
  await gpu.release();
}));

for (const quant of ['q4', 'q8'] as const) {
  test(`webgpu llm ${quant}: decode kernels staging x in tiles of one chunk (a barrier pair per chunk) and x read from storage equal the reference`, TIMEOUT, async () => {
    const cases: [string, (TB: number) => Partial<GemvShape> | undefined][] = [
      ['one-chunk tiles, UN=2', (TB) => (TB === 1 ? { TK: 2, RG: 2, RT: 2, UN: 2, XT: quant === 'q4' ? 8 : 4 } : undefined)],
      ['x from storage', (TB) => (TB === 1 ? { XT: 0 } : undefined)],
    ];
    for (const [what, shape] of cases) {
      await withGpuConfig({ shape: (_role, _units, TB) => shape(TB) }, async () => {
        await (await conformance(model(GQA, quant, 5), `${quant} ${what}`)).release();
      });
    }
  });
}

test('webgpu llm q4 and q8: the unrolled small-T kernels with x staged for 4 tokens (whole and in one-chunk tiles) equal the reference', TIMEOUT, () => withGpuConfig({ buckets: [1, 4], rolled: false }, async () => {
  for (const quant of ['q4', 'q8'] as const) {
    await (await conformance(model(GQA, quant, 13), `${quant} staged T<=4`)).release();
    await withGpuConfig({ shape: (_role, _units, TB) => (TB === 4 ? { XT: 4 * (quant === 'q4' ? 8 : 4) } : undefined) }, async () => {
      await (await conformance(model(GQA, quant, 14), `${quant} staged T<=4, one-chunk tiles`)).release();
    });
  }
}));

test('webgpu llm q4: decode kernels with two chunks per loop iteration (the second clamped and weighted 0 past K) equal the reference', TIMEOUT, () => withGpuConfig({ shape: (_role, _units, TB) => (TB === 1 ? { TK: 2, RG: 4, RT: 1, UN: 2 } : undefined) }, async () => {
  await (await conformance(model(GQA, 'q4', 8), 'q4 UN=2')).release();
}));

test('webgpu llm: attention split over workgroups (flash-decoding partials, then a combine) equals the reference', TIMEOUT, () => withGpuConfig({ attnSplitMin: 4, attnSplitKeys: 5 }, async () => {
  const gpu = await conformance(model(GQA, 'q8', 6), 'split attention');
  // The last forward (T=17) does not split; a step does: one more dispatch per layer.
  await gpu.greedy([1]);
  assert.equal(gpu.stats.dispatchesLastForward, 6 * GQA.layers + 2);
  await gpu.release();
  // The combine in one group walking every split, and in 3 groups (up to 10 splits here: groups with unequal counts);
  // an f16 cache read by the split kernels.
  for (const attnCombineGroups of [1, 3]) {
    await withGpuConfig({ attnCombineGroups }, async () => (await conformance(model(GQA, 'q8', 6), `split attention, combine in ${attnCombineGroups} groups`)).release());
  }
  await (await conformance(model(GQA, 'q8', 6), 'split attention, f16 cache', { kvCache: 'f16' })).release();
}));

test('webgpu llm: attention in tiles of 3 keys (online softmax across tiles), alone and with split attention, equals the reference', TIMEOUT, () => withGpuConfig({ attnTile: 3 }, async () => {
  await (await conformance(model(GQA, 'q4', 12), 'attention tiles of 3')).release();
  await withGpuConfig({ attnSplitMin: 4, attnSplitKeys: 7 }, async () => {
    await (await conformance(model(GQA, 'q4', 12), 'attention tiles of 3, splits of 7')).release();
  });
}));

/** Odd shapes: rows not whole vec4 words, 4-bit groups of 16, one KV head, f32 scales, a q8 head. */
function oddModel(): LlmWeights {
  const c: LlamaConfig = { vocab: 203, hidden: 80, intermediate: 112, layers: 2, heads: 5, kvHeads: 1, headDim: 16, maxPositions: 48, ropeTheta: 500000, rmsEps: 1e-6 };
  const w = quantizeRtn(randomLlama(c, 11, true), { bits: 4, group: 16, headBits: 8 });
  // Scales that are not f16 values stay f32 in the upload (the head's, from the quantizer, become f16).
  for (const L of w.layers) for (const m of [L.q, L.k, L.v, L.o, L.gate, L.up, L.down]) if (m.kind === 'q') m.scales.forEach((v, i, a) => { a[i] = v * 1.0001; });
  return w;
}

test('webgpu llm: odd shapes (rows not whole vec4 words, 4-bit groups of 16, one KV head, f32 scales, q8 head) equal the reference', TIMEOUT, async () => {
  await (await conformance(oddModel(), 'odd')).release();
});

test('webgpu llm: scales and zero points stored after each row\'s weights (rowMeta) equal the reference: q4, q8, odd shapes, unrolled small T, int8 x', TIMEOUT, () => withGpuConfig({ rowMeta: 4, buckets: [1, 4], rolled: false }, async () => {
  await (await conformance(model(GQA, 'q4', 21), 'q4 rowMeta')).release();
  await (await conformance(model(GQA, 'q8', 22), 'q8 rowMeta')).release();
  await (await conformance(oddModel(), 'odd rowMeta')).release();
  await int8Check(GQA, 12);
}));

test('webgpu llm: forwards longer than maxT run in chunks and equal the reference', TIMEOUT, () => withGpuConfig({ maxT: 8 }, async () => {
  const w = model(GQA, 'q8', 5);
  const gpu = await WebGpuLlm.create(w, { capacity: 40 });
  const ref = new ReferenceLlm(w, 40);
  const a = ids(21, 2, 300);
  const e1 = rel(await gpu.forward(a, true), await ref.forward(a, true));
  assert.ok(e1 <= 1e-3, `21 tokens in chunks of 8, all logits: ${e1}`);
  const b = ids(11, 4, 300);
  const e2 = rel(await gpu.forward(b), await ref.forward(b));
  assert.ok(e2 <= 1e-3, `11 more tokens, last logits: ${e2}`);
  const got = await gpu.forwardArgmaxAll([5, 6, 7]);
  const l = await ref.forward([5, 6, 7], true);
  assert.deepEqual(got, [0, 1, 2].map((t) => argmax(l, t * 300, 300)));
  await gpu.release();
}));

test('webgpu llm: the prefill GEMM with 32-row tiles (128 threads) equals the reference: q4, q8, f32', TIMEOUT, () => withGpuConfig({ gemmTN: 32 }, async () => {
  for (const q of ['q4', 'q8', 'f32'] as const) (await conformance(model(GQA, q, 3), `gemm TN 32 ${q}`)).release();
  const w = model(GQA, 'q4', 4);
  const gpu = await WebGpuLlm.create(w, { capacity: 48 });
  const ref = new ReferenceLlm(w, 48);
  const a = ids(40, 6, 300);
  const e = rel(await gpu.forward(a, true), await ref.forward(a, true));
  assert.ok(e <= 1e-3, `40 tokens through the GEMM: ${e}`);
  await gpu.release();
}));

test('prefillChunks: chunks of maxT unless the measured costs make chunks of the largest bucket cheaper', () => {
  assert.deepEqual(prefillChunks(600, 256, null), [256, 256, 88]);
  assert.deepEqual(prefillChunks(7, 256, null), [7]);
  // 7B shapes, int8 x, on the H100: 16 tokens 9.4 ms, one GEMM tile 80 ms, 256 tokens ~200 ms.
  const h100 = { bucket: 16, bucketMs: 9.4, gemm: [[64, 80], [256, 200]] as [number, number][] };
  assert.deepEqual(prefillChunks(16, 256, h100), [16], 'a prompt of one bucket runs as it is');
  assert.deepEqual(prefillChunks(40, 256, h100), [16, 16, 8], '3 × 9.4 ms against one tile of 80');
  assert.deepEqual(prefillChunks(512, 256, h100), Array(32).fill(16), '32 × 9.4 = 301 ms against 2 × 200');
  // The trained target with f32 x: 16 tokens 1.19 ms, the GEMM 1.77 ms for 64 and 2.4 for 256 tokens.
  const small = { bucket: 16, bucketMs: 1.19, gemm: [[64, 1.77], [256, 2.4]] as [number, number][] };
  assert.deepEqual(prefillChunks(20, 256, small), [20], '2 × 1.19 against 1.77');
  assert.deepEqual(prefillChunks(300, 256, small), [256, 44]);
  // Past the last point the GEMM costs in proportion; linear between points.
  const at = (ms: number) => prefillChunks(160, 256, { bucket: 16, bucketMs: ms, gemm: [[64, 80], [256, 200]] });
  assert.deepEqual(at(13.9), Array(10).fill(16), '139 against the GEMM\'s 80 + 60 for 160 tokens');
  assert.deepEqual(at(14), [160], 'a tie keeps the GEMM');
  assert.deepEqual(prefillChunks(512, 256, { bucket: 16, bucketMs: 13, gemm: [[64, 80]] }), Array(32).fill(16), 'past the last point: 2 × 320 against 416');
});

test('webgpu llm: a prompt cut into bucket-sized chunks by a measured plan equals the reference (and the plain chunks)', TIMEOUT, () => withGpuConfig({ maxT: 40 }, async () => {
  const w = model(GQA, 'q4', 9);
  const gpu = await WebGpuLlm.create(w, { capacity: 48 });
  const ref = new ReferenceLlm(w, 48);
  assert.equal(gpu.prefillPlan, null, 'no plan measured on a software driver');
  const a = ids(37, 3, 300);
  const plain = await gpu.forward(a, true);
  // A plan that makes the largest bucket (software drivers: SOFTWARE_BUCKETS) cheaper than the GEMM tiles.
  (gpu as unknown as { prefillCost: unknown }).prefillCost = { bucket: Math.max(...gpu.buckets), bucketMs: 0.001, gemm: [[16, 1000]] };
  assert.ok(Math.max(...gpu.buckets) < 37, `buckets ${gpu.buckets}: 37 tokens take more than one`);
  gpu.truncate(0);
  const cut = await gpu.forward(a, true);
  const want = await ref.forward(a, true);
  assert.ok(rel(cut, want) <= 1e-3, `37 tokens in bucket chunks: ${rel(cut, want)}`);
  assert.ok(rel(cut, plain) <= 1e-5, `against chunks of maxT: ${rel(cut, plain)}`);
  assert.equal(gpu.length, 37);
  gpu.truncate(0);
  const g = await gpu.generateGreedy(a, 4);
  ref.truncate(0);
  let l = await ref.forward(a);
  const refIds: number[] = [];
  for (let i = 0; i < 4; i++) { const id = argmax(l, 0, 300); refIds.push(id); if (i < 3) l = await ref.forward([id]); }
  assert.deepEqual(g, refIds, 'generateGreedy with the plan');
  await gpu.release();
}));

test('webgpu llm: truncate then forward equals a fresh run; greedy and forwardArgmaxAll equal the reference argmax', TIMEOUT, async () => {
  const w = model(GQA, 'q4', 9);
  const V = 300;
  const a = await WebGpuLlm.create(w, { capacity: 32 });
  const prompt = ids(10, 5, V);
  await a.forward(prompt);
  a.truncate(6);
  assert.equal(a.length, 6);
  const tail = [17, 250, 3];
  const afterTruncate = await a.forward(tail, true);
  const fresh = await WebGpuLlm.create(w, { capacity: 32 });
  const freshAll = await fresh.forward([...prompt.slice(0, 6), ...tail], true);
  const want = freshAll.subarray(6 * V);
  for (let i = 0; i < want.length; i++) assert.ok(Math.abs(afterTruncate[i] - want[i]) <= 1e-5 * (1 + Math.abs(want[i])), `logit ${i}: ${afterTruncate[i]} vs fresh ${want[i]}`);
  const ref = new ReferenceLlm(w, 32);
  const refAll = await ref.forward([...prompt.slice(0, 6), ...tail], true);
  assert.ok(rel(afterTruncate, refAll.subarray(6 * V)) <= 1e-3);

  // greedy decoding: 6 steps, each token the argmax of the reference's logits, fed back.
  a.truncate(0);
  ref.truncate(0);
  let next = await a.greedy(prompt);
  let refLogits = await ref.forward(prompt);
  const tokens = [next];
  for (let s = 0; s < 6; s++) {
    assert.equal(next, argmax(refLogits), `greedy step ${s}`);
    refLogits = await ref.forward([next]);
    next = await a.greedy([next]);
    tokens.push(next);
  }
  assert.equal(next, argmax(refLogits));
  assert.equal(a.length, ref.length);

  // The same tokens with no read-back between steps (each argmax feeds the next step on the GPU).
  const lengthBefore = a.length;
  a.truncate(0);
  assert.deepEqual(await a.generateGreedy(prompt, 7), tokens);
  assert.equal(a.length, prompt.length + 6);
  assert.equal(a.length, lengthBefore);
  assert.equal(await a.greedy([tokens[6]]), argmax(await ref.forward([tokens[6]])), 'the cache after generateGreedy continues the sequence');
  await assert.rejects(a.generateGreedy([1], 32 - a.length + 1), ResourceLimitError);

  // Speculative verification: the argmax of every position of a 5-token draft.
  const draft = [next, 1, 2, 3, 4];
  const got = await a.forwardArgmaxAll(draft);
  const wantAll = await ref.forward(draft, true);
  assert.deepEqual(got, draft.map((_, t) => argmax(wantAll, t * V, V)));
  await a.release();
  await fresh.release();
});

test('webgpu llm: capacity overflow and bad ids throw typed errors before anything is submitted', TIMEOUT, async () => {
  const { device } = await acquireGpu();
  const w = model(GQA, 'q8', 13);
  const gpu = await WebGpuLlm.create(w, { capacity: 12, device });
  const ref = new ReferenceLlm(w, 12);
  const queue = device.queue;
  const submit = queue.submit.bind(queue);
  let submits = 0;
  (queue as { submit: GPUQueue['submit'] }).submit = (cbs) => { submits++; submit(cbs); };
  try {
    await gpu.forward(ids(10, 1, 300));
    await ref.forward(ids(10, 1, 300));
    assert.equal(submits, 1, 'one submit per forward');
    submits = 0;
    await assert.rejects(gpu.forward([1, 2, 3]), ResourceLimitError);
    await assert.rejects(gpu.greedy([1, 2, 3]), ResourceLimitError);
    await assert.rejects(gpu.forward([5, 300]), InputError);
    await assert.rejects(gpu.forward([-1]), InputError);
    await assert.rejects(gpu.forward([1.5]), InputError);
    await assert.rejects(gpu.forward([]), InputError);
    assert.throws(() => gpu.truncate(11), InputError);
    assert.equal(submits, 0, 'nothing submitted by the failing calls');
    assert.equal(gpu.length, 10);
    // The runner still works and its cache is intact.
    assert.ok(rel(await gpu.forward([7, 8]), await ref.forward([7, 8])) <= 1e-3);
    await assert.rejects(gpu.forward([1]), ResourceLimitError);
  } finally {
    (queue as { submit: GPUQueue['submit'] }).submit = submit;
  }
  await gpu.release();
  await assert.rejects(gpu.forward([1]), InputError);
  await assert.rejects(WebGpuLlm.create(w, { capacity: 65 }), /capacity|positions/);
  const short = { ...w, layers: w.layers.map((L, l) => (l === 1 ? { ...L, down: { ...L.down, K: 96 } } : L)) };
  await assert.rejects(WebGpuLlm.create(short, { capacity: 8 }), (e: Error) => e instanceof InputError && /layer 1 down/.test(e.message));
});

test('webgpu llm: forwards create no pipelines, shader modules or bind groups after the first', TIMEOUT, async () => {
  const { device } = await acquireGpu();
  const counts = { pipelines: 0, modules: 0, bindGroups: 0 };
  const d = device as unknown as Record<string, (...a: unknown[]) => unknown>;
  const orig = { a: d.createComputePipelineAsync, s: d.createComputePipeline, m: d.createShaderModule, b: d.createBindGroup };
  d.createComputePipelineAsync = (...a) => { counts.pipelines++; return orig.a.apply(device, a); };
  d.createComputePipeline = (...a) => { counts.pipelines++; return orig.s.apply(device, a); };
  d.createShaderModule = (...a) => { counts.modules++; return orig.m.apply(device, a); };
  d.createBindGroup = (...a) => { counts.bindGroups++; return orig.b.apply(device, a); };
  try {
    const w = model(GQA, 'q4', 21);
    const gpu = await WebGpuLlm.create(w, { capacity: 48, device });
    assert.ok(counts.pipelines >= gpu.stats.pipelines && gpu.stats.pipelines > 0);
    await gpu.forward(ids(5, 1, 300));
    const after = { ...counts };
    const ref = new ReferenceLlm(w, 48);
    await ref.forward(ids(5, 1, 300));
    for (const x of [[4], [9, 8, 7], ids(16, 2, 300), [1]]) {
      const e = rel(await gpu.forward(x), await ref.forward(x));
      assert.ok(e <= 1e-3, `T=${x.length}: ${e}`);
    }
    await gpu.greedy([3]);
    // One dispatch per layer for q/k/v, attention, o, gate/up and down, then the head and argmax.
    assert.equal(gpu.stats.dispatchesLastForward, 5 * GQA.layers + 2);
    await gpu.forwardArgmaxAll([3, 4]);
    await gpu.forward(ids(16, 3, 300), true);
    assert.deepEqual(counts, after, 'pipelines, shader modules and bind groups created by forwards after the first');
    await gpu.release();
  } finally {
    Object.assign(d, { createComputePipelineAsync: orig.a, createComputePipeline: orig.s, createShaderModule: orig.m, createBindGroup: orig.b });
  }
});

test('webgpu llm: GPU timestamps of a forward', TIMEOUT, async (t) => {
  const { device } = await acquireGpu();
  if (!device.features.has('timestamp-query')) { t.skip('no timestamp-query'); return; }
  const w = model(GQA, 'q8', 13);
  const gpu = await WebGpuLlm.create(w, { capacity: 16 });
  const ref = new ReferenceLlm(w, 16);
  assert.ok(rel(await gpu.forward([1, 2]), await ref.forward([1, 2])) <= 1e-3);
  assert.ok(Number.isNaN(gpu.stats.gpuMsLastForward), 'no timing unless asked');
  gpu.timing = true;
  assert.ok(rel(await gpu.forward([3, 4, 5]), await ref.forward([3, 4, 5])) <= 1e-3);
  assert.ok(gpu.stats.gpuMsLastForward > 0 && gpu.stats.gpuMsLastForward < 60_000, `GPU ms ${gpu.stats.gpuMsLastForward}`);
  await gpu.release();
});

test('packMatrix: scales become f16 pairs where every one is an f16 value, else stay f32; zero points padded per row', () => {
  const w = model(GQA, 'q4', 1);
  const q = w.layers[0].q;
  assert.equal(q.kind, 'q');
  if (q.kind !== 'q') return;
  const p = packMatrix(q);
  assert.equal(p.layout.scaleF16, true);
  // Data, 2 bytes per scale, and 2 bytes of zero points per row (3 groups) padded to 4.
  assert.equal(p.words.byteLength, q.data.byteLength + q.scales.length * 2 + q.N * 4);
  const h = new Uint16Array(p.words.buffer, p.layout.scaleOff * 4, q.scales.length);
  for (let i = 0; i < q.scales.length; i += 7) assert.equal(f16ToF32(h[i]), q.scales[i]);
  const off = { ...q, scales: q.scales.map((v) => v * 1.0001) };
  const p32 = packMatrix(off);
  assert.equal(p32.layout.scaleF16, false);
  assert.deepEqual(new Float32Array(p32.words.buffer, p32.layout.scaleOff * 4, q.scales.length), off.scales);
  // 96/32 = 3 groups of 4-bit zero points: 2 bytes per row, padded to a word.
  assert.equal(p32.layout.zpr, 1);
  const z = new Uint8Array(p32.words.buffer, p32.layout.zeroOff * 4);
  assert.deepEqual([...z.subarray(4, 6)], [...q.zeros.subarray(2, 4)]);
  // In-row: row n holds its 12 data words (96 4-bit weights), 2 words of f16 scales (3, padded), 1 of zero points,
  // padded to 16 words.
  const r = packMatrix(q, 4);
  assert.deepEqual([r.layout.stride, r.layout.scaleOff, r.layout.zeroOff], [16, 12, 14]);
  assert.equal(r.words.length, q.N * 16);
  const rb = new Uint8Array(r.words.buffer);
  for (const n of [0, 5, q.N - 1]) {
    assert.deepEqual([...rb.subarray(n * 64, n * 64 + 48)], [...q.data.subarray(n * 48, n * 48 + 48)]);
    const hs = new Uint16Array(r.words.buffer, (n * 16 + 12) * 4, 3);
    assert.deepEqual([...hs].map(f16ToF32), [...q.scales.subarray(n * 3, n * 3 + 3)]);
    assert.deepEqual([...rb.subarray((n * 16 + 14) * 4, (n * 16 + 14) * 4 + 2)], [...q.zeros.subarray(n * 2, n * 2 + 2)]);
  }
});

test('webgpu llm: createLlm finds the webgpu backend', TIMEOUT, async () => {
  const w = model(GQA, 'f32', 2);
  const r = await createLlm(w, { backend: 'webgpu', capacity: 16 });
  assert.equal(r.backend, 'webgpu');
  const ref = new ReferenceLlm(w, 16);
  assert.ok(rel(await r.forward([1, 2, 3]), await ref.forward([1, 2, 3])) <= 1e-3);
  await r.release();
});

// GQA's hidden and intermediate sizes are whole groups of 32 (its heads of 16 are not): o and gate/up of both layers and
// the first layer's down quantize for the next matrix in decode and at 4 tokens (workgroups of 32 outputs, however few).
test('webgpu llm q4 with int8 activations: decode and small-T steps near the reference, and near each other', TIMEOUT, () => int8Check(GQA, 6));
test('webgpu llm q4 with int8 activations: the unrolled small-T int8 kernels GPUs get (4 tokens per workgroup)', TIMEOUT, () => withGpuConfig({ buckets: [1, 4], rolled: false }, () => int8Check(GQA, 12)));
test('webgpu llm q4: the unrolled 8-token kernels GPUs get equal the reference, f32 and int8 x (small-T and one-token paths alike)', TIMEOUT, () => withGpuConfig({ buckets: [1, 8], rolled: false }, async () => {
  await (await conformance(model(GQA, 'q4', 23), 'q4 T<=8')).release();
  // Producers quantize in decode only (32-output workgroups are kept at 1 and 4 tokens).
  await int8Check(GQA, 6);
}));
test('webgpu llm q4 with int8 activations: no producer quantizes (quantRowsKernel before every matrix)', TIMEOUT, () => withGpuConfig({ buckets: [1, 4], rolled: false, producerQuant: false }, () => int8Check(GQA, 0)));
// Heads of 32 and decode workgroups of 32 outputs: attention, o, gate/up and down quantize the next matrix's x in their
// epilogues; the small-T kernels still get it from quantRowsKernel, so pathDiff compares the two quantizers.
const HEADS32: LlamaConfig = { ...GQA, hidden: 128, intermediate: 192, heads: 4, kvHeads: 2, headDim: 32 };
test('webgpu llm q4 with int8 activations: x quantized by the producers\' epilogues in decode', TIMEOUT, () => withGpuConfig({ shape: (_r, _u, TB) => (TB === 1 ? { TK: 16, RG: 16, RT: 2 } : undefined) }, () => int8Check(HEADS32, 3 * HEADS32.layers + 1)));

test('webgpu llm q4 with int8 activations: pre-quantized loops one chunk deep, 1/rms summed before the loop', TIMEOUT, () => withGpuConfig({ shape: (_r, _u, TB) => (TB === 1 ? { TK: 16, RG: 16, RT: 2, PU: 1, lateRms: false } : undefined) }, () => int8Check(HEADS32, 3 * HEADS32.layers + 1)));

// Groups of 64 and 128 (GPTQ's and AWQ's usual 4-bit format): a chunk's group index is a division in the kernels, which
// WGSL will not mix with shifts unparenthesized (the one-token int8 loops did not compile before).
const G128: LlamaConfig = { ...GQA, hidden: 128, intermediate: 256, heads: 4, kvHeads: 2, headDim: 32 };
for (const group of [64, 128]) {
  test(`webgpu llm g${group}: q4 (f32 and int8 x), q8 and q4 with a q8 head equal the reference, rolled and unrolled small-T kernels`, TIMEOUT, async () => {
    await (await conformance(model(G128, 'q4', 13, group), `q4 g${group}`)).release();
    await (await conformance(model(G128, 'q8', 13, group), `q8 g${group}`)).release();
    await (await conformance(quantizeRtn(randomLlama(G128, 19), { bits: 4, group, headBits: 8 }), `q4 g${group}, q8 head`)).release();
    await int8Check(G128, null, group);
    await withGpuConfig({ buckets: [1, 4], rolled: false }, async () => {
      await (await conformance(model(G128, 'q4', 13, group), `q4 g${group} unrolled`)).release();
      await int8Check(G128, null, group);
    });
  });
}

test('webgpu llm q4 with int8 activations: one-token loops that load the next iteration before this one\'s math give the same bits', TIMEOUT, async () => {
  const { caps } = await acquireGpu();
  const w = model(HEADS32, 'q4', 17);
  const run = async (shape?: Partial<GemvShape>): Promise<Float32Array[]> => withGpuConfigValue({ rolled: false, shape: shape && ((_r, _u, TB) => (TB === 1 ? shape : undefined)) }, async () => {
    const r = await WebGpuLlm.create(w, { capacity: 32, activations: 'int8' });
    const outs = [await r.forward(ids(5, 3, HEADS32.vocab))];
    for (let s = 0; s < 6; s++) outs.push(await r.forward([(s * 37 + 5) % HEADS32.vocab]));
    await r.release();
    return outs;
  });
  // Decode workgroups of 32 outputs (TK 16 × RG 16 × RT 2 fits software drivers' 256 invocations): the producers
  // quantize x, so the one-token kernels read it pre-quantized (gemvDot4PreLoop).
  const P32 = { TK: 16, RG: 16, RT: 2 };
  const base = await run(P32);
  // rolled: false gives the unrolled loops GPUs get (software drivers would otherwise run one chunk an iteration).
  for (const shape of [{ PU: 4, pipe: true }, { PU: 2, pipe: true }, { PU: 1, pipe: true }, { PU: 3, pipe: true }]) {
    const got = await run({ ...P32, ...shape });
    // Steps: the same products in the same order, so the same bits (the prompt runs the small-T kernels either way).
    for (let s = 1; s < base.length; s++) assert.deepEqual(got[s], base[s], `${JSON.stringify(shape)}: step ${s}`);
  }
  if (caps.dot4) assert.ok(base[1].some((v) => v !== 0));
});

// Heads of 80 (Phi-2) and 96 (Phi-3): attention's 256 (128 without subgroups) threads are not whole groups of a head's
// vec4s, so some sit p·V out; before, such models were refused at create.
for (const HD of [80, 96]) {
  const C: LlamaConfig = { ...GQA, hidden: 2 * HD, intermediate: 320, heads: 2, kvHeads: 1, headDim: HD };
  test(`webgpu llm: heads of ${HD} equal the reference (subgroups and not, one and several attention splits, int8 x)`, TIMEOUT, async () => {
    await (await conformance(model(C, 'q4', 31), `heads of ${HD}`)).release();
    await withGpuConfig({ subgroups: false, attnSplitMin: 4, attnSplitKeys: 5 }, async () => (await conformance(model(C, 'q4', 31), `heads of ${HD}, no subgroups, split`)).release());
    await int8Check(C, null);
  });
}

test('webgpu llm: a head size the runtime cannot run is a typed error whose hint names a backend that can', TIMEOUT, async () => {
  const odd = { ...GQA, hidden: 100, intermediate: 160, heads: 4, kvHeads: 2, headDim: 25 };
  await assert.rejects(WebGpuLlm.create(randomLlama(odd, 1), { capacity: 8 }), (e: Error & { hint?: string }) =>
    e.name === 'UnsupportedError' && /multiple of 4 \(got 25\)/.test(e.message) && e.hint === "use backend 'reference'");
  const wide = { ...GQA, hidden: 640, heads: 2, kvHeads: 1, headDim: 320 };
  await assert.rejects(WebGpuLlm.create(randomLlama(wide, 1), { capacity: 8 }), (e: Error & { hint?: string }) =>
    e.name === 'UnsupportedError' && /at most 256 \(got 320\)/.test(e.message) && /wasm/.test(e.hint ?? ''));
});

test('gemv kernels read complete subgroup sums from red where subgroups are exactly TK wide (no second pass into fin)', () => {
  const m = matLayout('q', 4, 32, 64, 128, true);
  const base: GemvSpec = { m, norm: true, eps: 1e-5, gather: false, epi: { kind: 'residual' }, sg: true, sgMin: 32, dot4: true, preIn: true, TB: 1, RT: 2, TK: 32, RG: 4, PU: 4, lateRms: true };
  const direct = gemvKernel(base), twoPass = gemvKernel({ ...base, sgMin: 16 }), plain = gemvKernel({ ...base, sg: false });
  assert.ok(!direct.includes('fin') && /let ya = red\[/.test(direct), 'one slot per row group: the epilogue reads red');
  assert.equal((direct.match(/workgroupBarrier\(\)/g) ?? []).length + 1, (twoPass.match(/workgroupBarrier\(\)/g) ?? []).length);
  for (const c of [twoPass, plain]) assert.ok(/fin\[e\] = sum;/.test(c) && /let ya = fin\[/.test(c));
});

test('webgpu llm q4: TK equal to the subgroup width (sums read from red after one barrier), f32 and int8 x, equals the reference', TIMEOUT, async () => {
  const { caps } = await acquireGpu();
  const TK = caps.subgroups && caps.subgroupSize ? caps.subgroupSize : 32;
  await withGpuConfig({ shape: () => ({ TK }) }, async () => {
    const gpu = await conformance(model(GQA, 'q4', 5), `q4, TK ${TK}`);
    await gpu.release();
    await int8Check(GQA, null);
  });
});

test('webgpu llm q4 with int8 activations: Σx² for 1/rms summed by subgroups (sgRms) and ungated one-token kernels give the same bits', TIMEOUT, async () => {
  const { caps } = await acquireGpu();
  assert.ok(caps.dot4 && caps.subgroups && caps.subgroupSize, 'needs subgroups and dot4I8Packed (lavapipe has both)');
  // 12 groups of 32 (a tree over 16: lanes of 8 with two registers, the last four values absent).
  const C: LlamaConfig = { ...GQA, hidden: 384, intermediate: 512, heads: 6, kvHeads: 2, headDim: 64 };
  const w = model(C, 'q4', 23);
  // rolled: false gives the one-token loops GPUs get (piped, PU chunks an iteration); buckets [1, 4] keeps the
  // unrolled small-T kernels to 4 tokens (16 take this driver minutes to compile). TK = the subgroup width: sgRms' condition.
  const run = (on: boolean) => withGpuConfigValue({
    buckets: [1, 4], rolled: false, sgRms: on, ungated: on, shape: () => ({ TK: caps.subgroupSize }),
    codeHook: (code) => { codes.push(code); return code; },
  }, async () => {
    const r = await WebGpuLlm.create(w, { capacity: 32, activations: 'int8' });
    const outs = [await r.forward(ids(9, 3, C.vocab))];
    for (let s = 0; s < 5; s++) outs.push(await r.forward([(s * 37 + 5) % C.vocab]));
    outs.push(await r.forward(ids(4, 5, C.vocab), true));
    await r.release();
    return outs;
  });
  const codes: string[] = [];
  const off = await run(false);
  assert.ok(!codes.some((c) => c.includes('subgroupShuffleXor')));
  codes.length = 0;
  const on = await run(true);
  // The paths were taken: one-token kernels sum Σx² by shuffles, without the tree's workgroup memory.
  assert.ok(codes.filter((c) => c.includes('gs0 += subgroupShuffleXor') && !c.includes('var<workgroup> SS')).length >= 2, 'sgRms kernels');
  assert.ok(codes.some((c) => !/if \(t0 >= rows\) \{ return; \}/.test(c)), 'ungated kernels');
  for (let s = 0; s < off.length; s++) assert.deepEqual(on[s], off[s], `forward ${s}`);
  assert.ok(on[1].some((v) => v !== 0));
});

test('gemvShapeFor: a shape override keeps its RT when the workgroup is shrunk to fit workgroup memory', () => withGpuConfig({ shape: () => ({ RT: 4, PU: 2 }) }, async () => {
  const base = { m: matLayout('q', 4, 32, 2 * 28672, 8192, true), norm: true, eps: 1e-5, gather: false, epi: { kind: 'gateup' as const, F: 28672 }, sg: true, sgMin: 32, dot4: true, preIn: true, qout: { norm: false } };
  const roomy = gemvShapeFor('gateup', base, 1, { maxWorkgroupStorage: 49152, subgroupMax: 32, maxInvocations: 1024 });
  const tight = gemvShapeFor('gateup', base, 1, { maxWorkgroupStorage: 1400, subgroupMax: 32, maxInvocations: 1024 });
  assert.deepEqual([roomy.RT, roomy.PU, roomy.RG], [4, 2, 16]);
  assert.deepEqual([tight.RT, tight.PU], [4, 2]);
  assert.ok(tight.RG < 16 && gemvWorkgroupBytes(tight) <= 1400, `RG ${tight.RG}, ${gemvWorkgroupBytes(tight)} bytes`);
}));

test('webgpu llm q4 with int8 activations: one-token forwards run the head on x as the last down quantized it (headFed), with the bits of the head quantizing x itself', TIMEOUT, async () => {
  const { caps } = await acquireGpu();
  assert.ok(caps.dot4, 'needs dot4I8Packed (lavapipe has it)');
  const w = model(HEADS32, 'q4', 29);
  const V = HEADS32.vocab;
  // Workgroups of 32 outputs in decode, so that down's epilogue quantizes (as on GPUs at real sizes).
  const run = (fed: boolean, hook: (code: string, role: string, TB: number) => string = (c) => c) => withGpuConfigValue({
    buckets: [1, 4], rolled: false, headFed: fed, shape: (_r, _u, TB) => (TB === 1 ? { TK: 16, RG: 16, RT: 2 } : undefined), codeHook: hook,
  }, async () => {
    const r = await WebGpuLlm.create(w, { capacity: 32, activations: 'int8' });
    const epilogues = r.stats.quantizingEpilogues;
    const outs = [await r.forward(ids(9, 3, V))];
    for (let s = 0; s < 5; s++) outs.push(await r.forward([(s * 37 + 5) % V]));
    outs.push(await r.forward(ids(4, 5, V), true));
    await r.release();
    return { outs, epilogues };
  });
  const off = await run(false), on = await run(true);
  // The last layer's down quantizes too (once per bucket whose down kernel quantizes).
  assert.ok(on.epilogues > off.epilogues, `${on.epilogues} vs ${off.epilogues} quantizing epilogues`);
  for (let s = 0; s < off.outs.length; s++) assert.deepEqual(on.outs[s], off.outs[s], `forward ${s}`);
  assert.ok(on.outs[1].some((v) => v !== 0));
  // The one-token forwards took the fed kernel (the head's one-token kernel that stages no x), and only they did:
  // the same kernel with 1 added to every logit moves the steps' logits by 1 and nothing else.
  const marked = await run(true, (code, role, TB) => (role === 'head' && TB === 1 && !code.includes('var<workgroup> SA')
    ? code.replace(/OUT\[t \* (\d+)u \+ un\] = ya;/, 'OUT[t * $1u + un] = ya + 1.0;') : code));
  assert.deepEqual(marked.outs[0], on.outs[0], 'the prompt');
  assert.deepEqual(marked.outs[6], on.outs[6], 'four tokens');
  for (let s = 1; s <= 5; s++) {
    const d = marked.outs[s].map((v, i) => v - on.outs[s][i]);
    assert.ok(d.every((x) => Math.abs(x - 1) < 1e-3), `step ${s}: ${d.slice(0, 4).join(', ')}`);
  }
});

/**
 * K-block-major weights (llmGpuConfig.kBlock, MatLayout.kb) are the same bytes in another order: every kernel reading
 * them (the one-token and small-T loops with f32 and int8 x, the prefill GEMM and its tensor-core form) must give the
 * bits of row-major. Rows of 12 and 20 chunks (4-bit) in blocks of 8 leave a last block of 4; groups of 128 put a
 * group in 4 chunks and a block's one zero point in a padded word; f32 scales are read from their own offsets.
 */
const WIDE: LlamaConfig = { ...GQA, maxPositions: 96, hidden: 384, intermediate: 640, heads: 6, kvHeads: 2, headDim: 64 };
test('webgpu llm: K-block-major weights give the bits of row-major ones: q4 (g32, g128, f32 scales), q8; f32 and int8 x; decode, small T, the prefill GEMM and its tensor-core form', TIMEOUT, async () => {
  const { caps } = await acquireGpu();
  const runs: [LlmWeights, string, number, { activations?: 'int8'; prefill?: 'f16' }][] = [
    [model(WIDE, 'q4', 21), 'q4 int8 x', 8, { activations: 'int8' }],
    [model(WIDE, 'q4', 22), 'q4', 8, {}],
    [model(WIDE, 'q4', 23, 128), 'q4 g128 int8 x', 4, { activations: 'int8' }],
    [offF16Scales(model(WIDE, 'q4', 24)), 'q4 f32 scales', 8, {}],
    [model(WIDE, 'q8', 25), 'q8', 16, {}],
    [model(WIDE, 'q4', 26), 'q4 tensor cores', 8, { prefill: 'f16' }],
  ];
  const V = WIDE.vocab;
  for (const [w, what, C, o] of runs) {
    const run = (kBlock: number) => withGpuConfigValue({ kBlock, gemmTensorCores: 'emulate', tcTile: TC_SMALL }, async () => {
      const r = await WebGpuLlm.create(w, { capacity: 96, ...o });
      const blocked = r.stats.kBlockedMatrices;
      // A prompt of 70 (the prefill GEMM's 64-token tile and the small-T kernels), four tokens, five steps.
      const outs = [await r.forward(ids(70, 3, V), true), await r.forward(ids(4, 5, V), true)];
      for (let s = 0; s < 5; s++) outs.push(await r.forward([(s * 37 + 5) % V]));
      const int8 = r.activations === 'int8';
      await r.release();
      return { outs, blocked, int8 };
    });
    const rowMajor = await run(0), blocked = await run(C);
    assert.equal(rowMajor.blocked, 0, what);
    // Every layer's q/k/v, o, gate/up and down, and the head.
    assert.equal(blocked.blocked, 4 * WIDE.layers + 1, what);
    if (o.activations) assert.equal(blocked.int8, caps.dot4, what);
    for (let s = 0; s < rowMajor.outs.length; s++) assert.deepEqual(blocked.outs[s], rowMajor.outs[s], `${what}: forward ${s}`);
    assert.ok(rowMajor.outs[2].some((v) => v !== 0), what);
  }
});

/**
 * kBlock 'iter' (the default): blocks of the chunks one iteration of a matrix's one-token int8 kernel reads, here 8
 * (a shape of 8 threads along K, one chunk an iteration), in rows of 12 and 20. Matrices whose one-token kernel
 * quantizes x itself (layer 0's q/k/v reading embedding rows, the head's kernel) and f32 x stay row-major.
 */
test('webgpu llm: kBlock \'iter\' blocks the matrices whose one-token kernel reads x quantized, by that kernel\'s iteration, with the bits of row-major', TIMEOUT, async () => {
  const { caps } = await acquireGpu();
  const w = model(WIDE, 'q4', 27), V = WIDE.vocab;
  const run = (kBlock: 'iter' | number, activations: 'int8' | 'f32') => withGpuConfigValue({
    kBlock, buckets: [1, 4], rolled: false, shape: (_r, _u, TB) => (TB === 1 ? { TK: 8, RG: 16, RT: 2, PU: 1, pipe: true } : undefined),
  }, async () => {
    const r = await WebGpuLlm.create(w, { capacity: 32, activations });
    const outs = [await r.forward(ids(5, 2, V), true)];
    for (let s = 0; s < 3; s++) outs.push(await r.forward([(s * 41 + 3) % V]));
    const blocked = r.stats.kBlockedMatrices, int8 = r.activations === 'int8';
    await r.release();
    return { outs, blocked, int8 };
  });
  const iter = await run('iter', 'int8'), rowMajor = await run(0, 'int8');
  assert.equal(iter.int8, caps.dot4);
  if (caps.dot4) assert.equal(iter.blocked, 4 * WIDE.layers + 1 - 2);
  for (let s = 0; s < iter.outs.length; s++) assert.deepEqual(iter.outs[s], rowMajor.outs[s], `forward ${s}`);
  assert.ok(iter.outs[1].some((v) => v !== 0));
  assert.equal((await run('iter', 'f32')).blocked, 0);
});

async function int8Check(config = GQA, epilogues: number | null = 0, group = 32): Promise<void> {
  const { caps } = await acquireGpu();
  const w = model(config, 'q4', 11, group);
  const cap = 48, V = config.vocab;
  const gpu = await WebGpuLlm.create(w, { capacity: cap, activations: 'int8' });
  assert.equal(gpu.activations, caps.dot4 ? 'int8' : 'f32');
  // Attention, then o, gate/up and down of every layer (the last's down quantizes for the head; one-token variants).
  if (gpu.activations === 'int8' && epilogues !== null) assert.equal(gpu.stats.quantizingEpilogues, epilogues);
  const ref = new ReferenceLlm(w, cap);
  const exact = await WebGpuLlm.create(w, { capacity: cap });
  // The prompt's logits come from the small-T kernels (x quantized by quantRowsKernel; chunks of 4, 4 and 1 tokens),
  // the steps' from decode.
  const prompt = ids(9, 1, V);
  const p0 = new Float32Array(prompt.length * V);
  for (let c0 = 0; c0 < prompt.length; c0 += 4) p0.set(await gpu.forward(prompt.slice(c0, c0 + 4), true), c0 * V);
  const promptErr = rel(p0, await ref.forward(prompt, true));
  await exact.forward(prompt);
  let worst = 0, agree = 0, diff = 0;
  for (let s = 0; s < 12; s++) {
    const id = (s * 97 + 11) % V;
    const got = await gpu.forward([id]), want = await ref.forward([id]), f32 = await exact.forward([id]);
    const e = rel(got, want);
    worst = Math.max(worst, e);
    diff = Math.max(diff, rel(got, f32));
    if (argmax(got) === argmax(want)) agree++;
  }
  // The same tokens one at a time through the decode kernels: the small-T kernels quantize x alike, so the two paths
  // differ only in the order of the f32 sums (what speculative decoding's greedy equality rests on).
  const one = await WebGpuLlm.create(w, { capacity: cap, activations: 'int8' });
  let pathDiff = 0;
  for (let t = 0; t < prompt.length; t++) {
    const row = await one.forward([prompt[t]]);
    pathDiff = Math.max(pathDiff, rel(p0.subarray(t * V, (t + 1) * V), row));
  }
  console.log(`int8 activations (${gpu.activations}): prompt error ${promptErr.toExponential(2)}, worst step error ${worst.toExponential(2)}, ` +
    `argmax agrees ${agree}/12, small-T vs one-token ${pathDiff.toExponential(2)}`);
  // x rounded to 8 bits per 32 values: a few 1e-3 of the logits' range, and the same argmax.
  assert.ok(promptErr <= 1e-2, `prompt error ${promptErr}`);
  assert.ok(worst <= 1e-2, `worst step error ${worst}`);
  assert.ok(agree >= 11, `argmax agrees at ${agree} of 12 steps`);
  assert.ok(pathDiff <= 1e-6, `small-T and one-token int8 logits differ by ${pathDiff}`);
  // The int8 path was taken: its decode differs from the f32 path's (which is within 1e-3 of the reference).
  if (gpu.activations === 'int8') assert.ok(diff > 1e-6, `int8 decode equals the f32 decode (${diff})`);
  await gpu.release();
  await exact.release();
  await one.release();
}

// Qwen2: q/k/v biases (random, ±0.5: as large as the projections' outputs) added before the rotary embedding. The
// runtime stores them after the fused q/k/v matrix in its own buffer (MatLayout.biasOff) and adds them in the q/k/v
// epilogue of every kernel (and in the tiny decode kernel).
const QWEN: LlamaConfig = { ...GQA, qkvBias: true };

/** The same weights with the q/k/v biases dropped: what a runtime that ignored them would compute. */
function withoutBias(w: LlmWeights): LlmWeights {
  const config = { ...w.config };
  delete config.qkvBias;
  return { ...w, config, layers: w.layers.map((L) => { const o = { ...L }; delete o.qkvBias; return o; }) };
}

test('packMatrix K-block-major (MatLayout.kb): every chunk, scale and zero point where blockedIndexJs puts it, a short last block, padded zero-point words; kBlockOf refuses blocks of partial groups or whole rows', () => {
  // 4-bit, 20 chunks a row in blocks of 8 (8, 8, 4), groups of 32: a block's zero points are one word a row.
  const q = model({ ...GQA, hidden: 640 }, 'q4', 2).layers[0].q as QuantMatrix;
  assert.equal(q.kind, 'q');
  const p = packMatrix(q, 0, undefined, 8), kb = p.layout.kb!;
  assert.deepEqual(kb, { C: 8, NB: 3, LC: 4, G: 8, LG: 4, Z: 1, LZ: 1 });
  assert.equal(p.layout.words, q.N * 80 + q.N * 10 + q.N * 3);
  const bytes = new Uint8Array(p.words.buffer), h = new Uint16Array(p.words.buffer, p.layout.scaleOff * 4, q.N * 20);
  for (let n = 0; n < q.N; n += 5) for (let c = 0; c < 20; c++) {
    const at = blockedIndexJs(n, c, 8, 4, 3, q.N) * 16;
    assert.deepEqual([...bytes.subarray(at, at + 16)], [...q.data.subarray((n * 20 + c) * 16, (n * 20 + c + 1) * 16)], `row ${n} chunk ${c}`);
    assert.equal(f16ToF32(h[blockedIndexJs(n, c, 8, 4, 3, q.N)]), q.scales[n * 20 + c]);
    const zw = p.layout.zeroOff + Math.floor(c / 8) * q.N + n, zb = new Uint8Array(p.words.buffer, zw * 4, 4);
    assert.equal((zb[(c % 8) >> 1] >> ((c & 1) * 4)) & 15, (q.zeros[n * 10 + (c >> 1)] >> ((c & 1) * 4)) & 15, `zero of row ${n} group ${c}`);
  }
  // Row-major is unchanged without a block.
  assert.equal(packMatrix(q).layout.kb, undefined);
  assert.match(String(kBlockOf(4, 128, 640, 2)), /whole groups of 128/);
  assert.match(String(kBlockOf(4, 32, 640, 20)), /rows of 20/);
  assert.deepEqual(kBlockOf(4, 128, 640, 4), { C: 4, NB: 5, LC: 4, G: 1, LG: 1, Z: 1, LZ: 1 });
});

test('packMatrix: biases as f32 words after everything else (MatLayout.biasOff), default and in-row layouts, f32; none without', () => {
  const q = model(QWEN, 'q4', 1).layers[0].q, f = model(QWEN, 'f32', 1).layers[0].q;
  const bias = Float32Array.from({ length: q.N }, (_, i) => i - 0.25);
  for (const [m, rowAlign] of [[q, 0], [q, 4], [f, 0]] as const) {
    const plain = packMatrix(m, rowAlign), b = packMatrix(m, rowAlign, bias);
    assert.ok(!('biasOff' in plain.layout), 'a bias-free layout has no biasOff (its kernels\' WGSL is unchanged)');
    assert.deepEqual(b.layout, { ...plain.layout, biasOff: plain.layout.words, words: plain.layout.words + m.N });
    assert.deepEqual(b.words.subarray(0, plain.words.length), plain.words);
    assert.deepEqual(new Float32Array(b.words.buffer, plain.layout.words * 4, m.N), bias);
  }
});

test('webgpu llm: q/k/v biases (Qwen2) equal the reference: f32, q4 (prompt, steps, all-position logits), the tiny decode kernel', TIMEOUT, async () => {
  // The bias is added in the one q/k/v epilogue whatever the weights' format (the int8 kernels: the next test; q8 and
  // other groups: the wasm tests): few models, as software drivers compile each model's kernels for minutes.
  for (const quant of ['f32', 'q4'] as const) {
    const w = model(QWEN, quant, 41);
    assert.ok(w.layers.every((L) => L.qkvBias), `${quant}: the model has biases`);
    const g = await conformance(w, `${quant} biases`);
    if (quant === 'f32') assert.equal(g.weightBytesPerToken, bytesPerToken(w), 'the biases count in the bytes a token reads');
    await g.release();
    // Without the biases the logits land far outside the tolerance: the checks above fail a runtime that ignores them.
    const gpu = await WebGpuLlm.create(withoutBias(w), { capacity: 16 });
    const ref = new ReferenceLlm(w, 16);
    const p = ids(9, 1, QWEN.vocab);
    const e = rel(await gpu.forward(p, true), await ref.forward(p, true));
    assert.ok(e > 0.05, `${quant}: the logits without the biases are only ${e} from the reference's with them`);
    await gpu.release();
  }
  // The tiny decode kernel (int8 x before each matrix): every step through it.
  const { caps } = await acquireGpu();
  const w = model(QWEN, 'q4', 43), cap = 32, V = QWEN.vocab;
  const tiny = await WebGpuLlm.create(w, { capacity: cap, tinyDecode: true });
  assert.equal(tiny.stats.tinyDecode, caps.dot4, 'the tiny decode kernel is taken where the device has dot4I8Packed');
  const ref = new ReferenceLlm(w, cap);
  const prompt = ids(7, 2, V);
  assert.ok(rel(await tiny.forward(prompt), await ref.forward(prompt)) <= 1e-3, 'tiny: prompt (runtime kernels)');
  let worst = 0, agree = 0;
  for (let s = 0; s < 8; s++) {
    const id = (s * 97 + 11) % V, got = await tiny.forward([id]), want = await ref.forward([id]);
    worst = Math.max(worst, rel(got, want));
    if (argmax(got) === argmax(want)) agree++;
  }
  assert.ok(worst <= 1e-2 && agree >= 7, `tiny decode with biases: worst step error ${worst}, argmax agrees at ${agree} of 8`);
  await tiny.release();
});

test('webgpu llm: q/k/v biases with the kernels GPUs get: unrolled small-T with x staged, the prefill GEMM with 32-row tiles, int8 x pre-quantized and piped', TIMEOUT, async () => {
  // The bias is added in the one q/k/v epilogue every kernel shares (and its words sit after any layout: packMatrix's
  // test); one model per kernel family, as software drivers compile the unrolled kernels slowly.
  await withGpuConfig({ buckets: [1, 4], rolled: false }, async () => (await conformance(model(QWEN, 'q4', 44), 'q4 biases, unrolled T<=4')).release());
  // 17 tokens (past the software buckets' 16) run the GEMM.
  await withGpuConfig({ gemmTN: 32 }, async () => (await conformance(model(QWEN, 'q4', 46), 'q4 biases, gemm TN 32')).release());
  // Decode workgroups of 32 outputs: down's epilogue quantizes layer 1's x, whose q/k/v kernel reads it pre-quantized,
  // with the next chunk's loads issued before this one's math.
  const shape = (_r: unknown, _u: unknown, TB: number) => (TB === 1 ? { TK: 16, RG: 16, RT: 2, PU: 2, pipe: true } : undefined);
  await withGpuConfig({ buckets: [1, 4], rolled: false, shape }, () => int8Check({ ...HEADS32, qkvBias: true }, null));
});

// Qwen3: every head of q and k RMS-normalized (weights in [0.25, 2.25]) before the rotary embedding. The q/k/v
// epilogue of every kernel stores them unrotated and qkNormRopeKernel normalizes and rotates them in place (one
// dispatch more a layer). One model's kernels only, as software drivers compile each model's kernels for seconds.
const QWEN3: LlamaConfig = { ...HEADS32, qkNorm: true };

/** The same weights with the q/k norms dropped: what a runtime that ignored them would compute. */
function withoutQkNorm(w: LlmWeights): LlmWeights {
  const config = { ...w.config };
  delete config.qkNorm;
  return { ...w, config, layers: w.layers.map((L) => { const o = { ...L }; delete o.qkNorm; return o; }) };
}

test('webgpu llm: per-head q/k norms (Qwen3) equal the reference: q4 through the one-token, small-T and prefill GEMM kernels, f32 and int8 x', TIMEOUT, async () => {
  const w = model(QWEN3, 'q4', 11);
  assert.ok(w.layers.every((L) => L.qkNorm), 'the model has q/k norms');
  // Without the norms the logits land far outside the tolerances: the checks below fail a runtime that ignores them.
  const p = ids(9, 1, QWEN3.vocab);
  const e = rel(await new ReferenceLlm(withoutQkNorm(w), 16).forward(p, true), await new ReferenceLlm(w, 16).forward(p, true));
  assert.ok(e > 0.05, `the logits without the q/k norms are only ${e} from the reference's with them`);
  // Steps (one token), 3 and 6 tokens (the small-T kernels) and 17 (past the software buckets: the GEMM).
  const g = await conformance(w, 'q4 q/k norms');
  await g.forward([5]);
  assert.equal(g.stats.dispatchesLastForward, 5 * QWEN3.layers + 1, 'one token: the q/k norm inside attention');
  await g.forward([5, 6]);
  assert.equal(g.stats.dispatchesLastForward, 6 * QWEN3.layers + 1, 'two tokens: a q/k norm dispatch after each layer\'s q/k/v');
  await g.release();
  // int8 x: decode and small T (the same shapes and seed: int8Check's f32-x runner compiles the kernels above again,
  // which the driver's cache holds).
  await int8Check(QWEN3, null);
});

test('webgpu llm: Qwen3\'s one-token q/k norm inside attention gives the q/k norm dispatch\'s logits and cache, with one split and several, f32 and int8 x', TIMEOUT, async () => {
  const w = model(QWEN3, 'q4', 11), V = QWEN3.vocab, cap = 40;
  for (const activations of ['f32', 'int8'] as const) {
    for (const split of [{}, { attnSplitMin: 0, attnSplitKeys: 4 }]) {
      const what = `${activations}${'attnSplitMin' in split ? ', splits of 4 keys' : ''}`;
      const fused = await withGpuConfigValue(split, () => WebGpuLlm.create(w, { capacity: cap, activations }));
      const apart = await withGpuConfigValue({ ...split, attnQkNorm: false }, () => WebGpuLlm.create(w, { capacity: cap, activations }));
      await fused.forward([3]);
      assert.equal(fused.stats.dispatchesLastForward, 5 * QWEN3.layers + 1, `${what}: the norm inside attention`);
      await apart.forward([3]);
      assert.equal(apart.stats.dispatchesLastForward, 6 * QWEN3.layers + 1, `${what}: the norm dispatch`);
      // A prompt (small-T kernels, both runners alike), then steps: the new key of each step is written into the cache
      // by attention in one runner and by the norm dispatch in the other; the 3-token forward after them reads the
      // keys the steps wrote.
      const prompt = ids(9, 1, V);
      await fused.forward(prompt);
      await apart.forward(prompt);
      let worst = 0;
      for (let s = 0; s < 14; s++) {
        const id = (s * 53 + 7) % V;
        worst = Math.max(worst, rel(await fused.forward([id]), await apart.forward([id])));
      }
      const x = ids(3, 5, V);
      const after = rel(await fused.forward(x, true), await apart.forward(x, true));
      console.log(`q/k norm in attention vs its own dispatch (${what}): worst step ${worst.toExponential(2)}, 3 tokens after ${after.toExponential(2)}`);
      // The same arithmetic in the same order: equal but for the compiler's contractions.
      assert.ok(worst <= 1e-6, `${what}: steps differ by ${worst}`);
      assert.ok(after <= 1e-6, `${what}: the forward after the steps differs by ${after} (the cached keys)`);
      await fused.release();
      await apart.release();
    }
  }
  // Mutation check of the comparison itself: the norm weights of q and k swapped in one runner land far off.
  const swapped = { ...w, layers: w.layers.map((L) => ({ ...L, qkNorm: { q: L.qkNorm!.k, k: L.qkNorm!.q } })) };
  const a = await WebGpuLlm.create(w, { capacity: cap }), b = await WebGpuLlm.create(swapped, { capacity: cap });
  const p = ids(5, 2, V);
  await a.forward(p);
  await b.forward(p);
  const e = rel(await a.forward([9]), await b.forward([9]));
  assert.ok(e > 1e-3, `swapped q/k norm weights give logits only ${e} away`);
  await a.release();
  await b.release();
});

/**
 * The worst distance of an f16-cache runner's logits from the reference with an f16 cache and from the reference with
 * an f32 one, over a prompt, steps and forwards of 3, 6 and 17 tokens (the small-T kernels and, past the software
 * buckets, the GEMM).
 */
async function kv16Distances(w: LlmWeights, activations: 'f32' | 'int8'): Promise<{ toF16: number; toF32: number; refGap: number; bytes: [number, number] }> {
  const cap = 48, V = w.config.vocab;
  const g16 = await WebGpuLlm.create(w, { capacity: cap, kvCache: 'f16', activations });
  const g32 = await WebGpuLlm.create(w, { capacity: cap, activations });
  const r16 = new ReferenceLlm(w, cap, 'f16'), r32 = new ReferenceLlm(w, cap);
  const d = { toF16: 0, toF32: 0, refGap: 0, bytes: [g16.stats.kvCacheBytes, g32.stats.kvCacheBytes] as [number, number] };
  const run = async (x: number[]) => {
    const a = await g16.forward(x, true), b = await r16.forward(x, true), c = await r32.forward(x, true);
    d.toF16 = Math.max(d.toF16, rel(a, b));
    d.toF32 = Math.max(d.toF32, rel(a, c));
    d.refGap = Math.max(d.refGap, rel(b, c));
  };
  await run(ids(9, 1, V));
  for (let s = 0; s < 8; s++) await run([(s * 97 + 11) % V]);
  for (const T of [3, 6, 17]) await run(ids(T, T, V));
  await g16.release();
  await g32.release();
  return d;
}

test('webgpu llm: an f16 KV cache holds half the bytes and gives the logits of the reference rounding its cache to f16 (GQA, Qwen3\'s q/k norms; one token, small T, GEMM; f32 and int8 x)', TIMEOUT, async () => {
  const { caps } = await acquireGpu();
  assert.ok(caps.f16, 'the test device has shader-f16');
  for (const [what, config] of [['GQA', GQA], ['Qwen3', QWEN3]] as const) {
    const w = model(config, 'q4', 11);
    const c = w.config;
    const d = await kv16Distances(w, 'f32');
    console.log(`f16 cache, ${what}: from the f16 reference ${d.toF16.toExponential(2)}, from the f32 one ${d.toF32.toExponential(2)} (references ${d.refGap.toExponential(2)} apart)`);
    assert.deepEqual(d.bytes, [2 * c.kvHeads * 48 * c.headDim * 2 * c.layers, 2 * c.kvHeads * 48 * c.headDim * 4 * c.layers]);
    // The rounding moves the logits measurably, and the runner follows the f16 reference far closer than the f32 one:
    // a runner that kept f32 (or rounded twice, as Qwen3's forwards of several tokens did before kStage) would sit
    // about refGap from the f16 reference.
    assert.ok(d.refGap > 1e-5, `${what}: the f16 and f32 references are only ${d.refGap} apart`);
    assert.ok(d.toF16 < 0.25 * d.refGap, `${what}: ${d.toF16} from the f16 reference, ${d.refGap} between the references`);
    if (caps.dot4) {
      // int8 x: rounding x to 8 bits (a few 1e-3) dwarfs the cache's rounding; the int8 kernels read the f16 cache too.
      const i8 = await kv16Distances(w, 'int8');
      assert.ok(i8.toF16 <= 1e-2, `${what}, int8 x: ${i8.toF16} from the f16 reference`);
    }
  }
});

test('webgpu llm: kvCache is checked: an unknown type is an InputError, wasm refuses f16 by name', TIMEOUT, async () => {
  const w = model(GQA, 'q4', 11);
  await assert.rejects(WebGpuLlm.create(w, { capacity: 8, kvCache: 'bf16' as 'f16' }), (e: unknown) => e instanceof InputError && /kvCache 'bf16'/.test(e.message));
  await assert.rejects(createLlm(w, { backend: 'wasm', capacity: 8, kvCache: 'f16' }), (e: unknown) => e instanceof UnsupportedError && /f16 KV cache on wasm/.test(e.message));
});

test('webgpu llm: TextGenerator.create opens the draft with f32 activations unless draftActivations says otherwise', TIMEOUT, async () => {
  const { TextGenerator } = await import('../src/generate/generate.js');
  const { LlmCausalLM } = await import('../src/generate/causal_lm.js');
  const { activationsOf } = await import('../src/llm/index.js');
  const tw = model(GQA, 'q4', 12), dw = model(GQA, 'q4', 13);
  const runnerOf = (lm: unknown) => (lm as InstanceType<typeof LlmCausalLM>).runner;
  const gen = await TextGenerator.create(tw, { backend: 'webgpu', capacity: 32, activations: 'int8', draft: dw, draftTokens: 2 });
  const target = activationsOf(runnerOf(gen.decoder));
  assert.equal(activationsOf(runnerOf(gen.draft)), 'f32', `the draft runs f32 (the target ${target})`);
  await gen.release();
  const both = await TextGenerator.create(tw, { backend: 'webgpu', capacity: 32, activations: 'int8', draft: dw, draftTokens: 2, draftActivations: 'int8' });
  assert.equal(activationsOf(runnerOf(both.draft)), activationsOf(runnerOf(both.decoder)), 'asked for: the target\'s (int8 where the device has dot4I8Packed)');
  await both.release();
});

test('webgpu llm: greedy speculative decoding on the GPU (one read-back a round) gives plain greedy decoding\'s tokens', TIMEOUT, async () => {
  const { LlmCausalLM } = await import('../src/generate/causal_lm.js');
  const { TextGenerator } = await import('../src/generate/generate.js');
  const { TextTokenizer } = await import('../src/generate/tokenizer.js');
  const [[tw, dw], tok] = await Promise.all([trainedPair(), TextTokenizer.fromFile(`${LM}/tokenizer.json`)]);
  const prompt = tok.encode('The package manager installs the files of a package and', { addSpecialTokens: true });
  const cap = 96, N = 24;
  for (const activations of ['f32', 'int8'] as const) {
    const plain = new TextGenerator(new LlmCausalLM(await WebGpuLlm.create(tw, { capacity: cap, activations })));
    const pg = plain.generate(prompt, { maxTokens: N });
    await pg.all();
    const want = pg.ids;
    await plain.release();
    const target = await WebGpuLlm.create(tw, { capacity: cap, activations });
    const draft = await WebGpuLlm.create(dw, { capacity: cap, activations });
    let rounds = 0;
    const round = target.speculateGreedy.bind(target);
    target.speculateGreedy = (...a) => { rounds++; return round(...a); };
    const gen = new TextGenerator(new LlmCausalLM(target), undefined, { draft: new LlmCausalLM(draft), draftTokens: 3 });
    const g = gen.generate(prompt, { maxTokens: N });
    await g.all();
    const sp = g.stats!.speculative!;
    console.log(`speculative on the GPU (${activations}): ${sp.rounds} rounds, acceptance ${(100 * sp.acceptanceRate).toFixed(0)}%: ${tok.decode(g.ids)}`);
    assert.equal(want.length, N);
    assert.deepEqual(g.ids, want, activations);
    assert.equal(rounds, sp.rounds, 'every round took the GPU path');
    // Both kinds of round happened: some proposal rejected, and some round accepted all three.
    assert.ok(sp.accepted < sp.drafted && sp.rounds < N - 1, `${sp.accepted}/${sp.drafted} accepted in ${sp.rounds} rounds`);
    await gen.release();
  }
});

test('webgpu llm: the trained pair with an f16 KV cache (TextGenerator.create kvCache, target and draft): greedy tokens equal the reference rounding its cache to f16, plain and speculative; ONNX decoders and `webjit generate --kv-cache f16` on one are refused by name', TIMEOUT, async () => {
  const { TextGenerator } = await import('../src/generate/generate.js');
  const [tw, dw] = await trainedPair();
  const prompt = [0, 412, 1033, 77, 2048, 9, 3000, 15];
  const cap = 96, N = 40;
  const ref = await TextGenerator.create(tw, { backend: 'reference', capacity: cap, kvCache: 'f16' });
  const want = ref.generate(prompt, { maxTokens: N, ignoreEos: true });
  await want.all();
  await ref.release();
  for (const draft of [undefined, dw]) {
    const gen = await TextGenerator.create(tw, { backend: 'webgpu', capacity: cap, kvCache: 'f16', draft, draftTokens: 3 });
    const runners = [gen.decoder, gen.draft].filter((m) => m !== undefined).map((m) => (m as unknown as { runner: WebGpuLlm }).runner);
    assert.ok(runners.length === (draft ? 2 : 1) && runners.every((r) => r.kvCache === 'f16'), 'target and draft hold f16 caches');
    const g = gen.generate(prompt, { maxTokens: N, ignoreEos: true });
    await g.all();
    assert.deepEqual(g.ids, want.ids, draft ? 'speculative' : 'plain');
    if (draft) assert.ok(g.stats!.speculative!.rounds > 0);
    await gen.release();
  }
  await assert.rejects(TextGenerator.create('test/fixtures/decoder-small.onnx', { kvCache: 'f16' }), (e: unknown) => e instanceof UnsupportedError && /f16 KV cache for an ONNX decoder/.test(e.message));
});

test('webjit bench-llm --kv-cache f32,f16 on webgpu: a row set for each cache, the f16 rows labelled and their token differences reported as by design', TIMEOUT, async () => {
  const { benchLlmCommand } = await import('../src/cli/bench_llm.js');
  const fs = await import('node:fs/promises');
  const os = await import('node:os');
  const json = `${await fs.mkdtemp(`${os.tmpdir()}/webjit-kv-`)}/bench.json`;
  const code = await benchLlmCommand(`${LM}/draft.q4.safetensors`, { backend: 'webgpu', quant: 'q4', draftTokens: '3', promptTokens: '8', tokens: '6', rounds: '1', peers: 'none', kvCache: 'f32,f16', json });
  assert.equal(code, 0);
  const rows = (JSON.parse(await fs.readFile(json, 'utf8')) as { rows: { engine: string; inexact?: string; decodeTokPerSec: number; ids: number[] }[] }).rows;
  assert.deepEqual(rows.map((r) => r.engine), ['webjit webgpu', 'webjit webgpu generate()', 'webjit webgpu kv f16', 'webjit webgpu kv f16 generate()']);
  assert.deepEqual(rows.map((r) => r.inexact), [undefined, undefined, 'f16 KV cache', 'f16 KV cache']);
  assert.ok(rows.every((r) => r.decodeTokPerSec > 0 && r.ids.length === 6), JSON.stringify(rows));
});

test('webgpu llm: adaptive drafting on the GPU (speculative rounds, and plain windows streamed with steps in flight) gives plain greedy decoding\'s tokens', TIMEOUT, async () => {
  const { LlmCausalLM } = await import('../src/generate/causal_lm.js');
  const { TextGenerator } = await import('../src/generate/generate.js');
  const [tw, dw] = await trainedPair();
  const prompt = [0, 412, 1033, 77, 2048, 9, 3000, 15];
  const cap = 128, N = 60;
  const plain = new TextGenerator(new LlmCausalLM(await WebGpuLlm.create(tw, { capacity: cap })));
  const pg = plain.generate(prompt, { maxTokens: N, ignoreEos: true });
  await pg.all();
  await plain.release();
  const target = await WebGpuLlm.create(tw, { capacity: cap });
  const draft = await WebGpuLlm.create(dw, { capacity: cap });
  let streams = 0;
  const open = target.greedyStream.bind(target);
  target.greedyStream = (...a) => { streams++; return open(...a); };
  const gen = new TextGenerator(new LlmCausalLM(target), undefined, { draft: new LlmCausalLM(draft), draftTokens: 3, adaptiveDraft: true });
  const g = gen.generate(prompt, { maxTokens: N, ignoreEos: true });
  await g.all();
  const sp = g.stats!.speculative!;
  assert.deepEqual(g.ids, pg.ids);
  assert.ok(sp.rounds > 0 && sp.plainTokens! >= 1 && streams >= 1, `${JSON.stringify(sp)}, ${streams} streams`);
  await gen.release();
});

test('webgpu llm: greedy generation streams ids with steps in flight and gives the tokens of one forward per token', TIMEOUT, async () => {
  const { LlmCausalLM } = await import('../src/generate/causal_lm.js');
  const { TextGenerator } = await import('../src/generate/generate.js');
  const { argmax: top } = await import('../src/generate/sampler.js');
  const { loadLlm } = await import('../src/llm/model_io.js');
  // The trained target: text-like ids (a random model repeats one token), so that a stop token can fall mid-stream.
  const w = await loadLlm(`${LM}/target.q4.safetensors`);
  const prompt = [0, 411, 1187, 93, 2260, 17], N = 14, cap = 40;
  // One forward per token, the next id picked on the CPU.
  const ref = await WebGpuLlm.create(w, { capacity: cap });
  const want = [top(await ref.forward(prompt))];
  while (want.length < N + 4) want.push(top(await ref.forward([want[want.length - 1]])));
  await ref.release();

  const runner = await WebGpuLlm.create(w, { capacity: cap });
  let streams = 0;
  const open = runner.greedyStream.bind(runner);
  runner.greedyStream = (...a) => { streams++; return open(...a); };
  const gen = new TextGenerator(new LlmCausalLM(runner));
  const g = gen.generate(prompt, { maxTokens: N });
  await g.all();
  assert.deepEqual(g.ids, want.slice(0, N));
  assert.equal(streams, 1, 'the tokens after the first came from one stream');
  // The cache holds what plain decoding leaves: the prompt and every token but the newest.
  assert.equal(runner.length, prompt.length + N - 1);

  // A stop token mid-stream: the steps in flight past it are dropped from the cache.
  const k = want.findIndex((id, i) => i >= 3 && !want.slice(0, i).includes(id));
  assert.ok(k >= 3 && k < N - 2, `a token first seen mid-stream: ${want}`);
  const s = gen.generate(prompt, { maxTokens: N, stop: [want[k]] });
  await s.all();
  assert.deepEqual(s.ids, want.slice(0, k));
  assert.equal(s.stats!.stopReason, 'stopToken');
  assert.equal(runner.length, prompt.length + k);

  // The consumer leaves early: the runner is free again, and the next generation gives the same tokens.
  let n = 0;
  for await (const _t of gen.generate(prompt, { maxTokens: N })) if (++n === 4) break;
  assert.equal(runner.length, prompt.length + 3);
  const again = gen.generate(prompt, { maxTokens: 5 });
  await again.all();
  assert.deepEqual(again.ids, want.slice(0, 5));

  // Where the cache fills first, the tokens up to it come, then the error plain decoding gives.
  const small = await WebGpuLlm.create(w, { capacity: prompt.length + 6 });
  const sg = new TextGenerator(new LlmCausalLM(small)).generate(prompt, { maxTokens: 10 });
  await assert.rejects(sg.all(), ResourceLimitError);
  assert.deepEqual(sg.ids, want.slice(0, 7));
  await small.release();
  await gen.release();
});

test('webgpu llm: an embedding table larger than one binding is held in chunks of rows and gathered by its own kernel: f32, q4, int8 x, greedy generation with ids fed on the GPU; too many chunks is a typed error', TIMEOUT, () => withGpuConfig({ embedChunkBytes: 128 * GQA.hidden * 4 }, async () => {
  // 300 rows in chunks of 128: ids in all three chunks (the prompts' ids run over the whole vocabulary).
  for (const quant of ['f32', 'q4'] as const) {
    const g = await conformance(model(GQA, quant, 51), `${quant}, embedding in 3 chunks`);
    await g.forward([299]);
    assert.equal(g.stats.dispatchesLastForward, 5 * GQA.layers + 2, 'five a layer, the head, and one more: the gather');
    await g.release();
  }
  await int8Check(GQA, null);
  const w = model(GQA, 'q4', 52), cap = 32;
  const ref = new ReferenceLlm(w, cap);
  const prompt = [5, 140, 290, 17, 260];
  const want = [argmax(await ref.forward(prompt))];
  while (want.length < 10) want.push(argmax(await ref.forward([want[want.length - 1]])));
  const r = await WebGpuLlm.create(w, { capacity: cap, tinyDecode: true });
  assert.equal(r.stats.tinyDecode, false, 'the tiny decode kernel binds the table whole: not taken');
  assert.deepEqual(await r.generateGreedy(prompt, 10), want);
  await r.release();
  await withGpuConfig({ embedChunkBytes: 8 * GQA.hidden * 4 }, async () => {
    await assert.rejects(WebGpuLlm.create(w, { capacity: cap }), (e: unknown) => e instanceof ResourceLimitError && /embedding table/.test(e.message));
  });
}));

/** The same weights with every scale moved off the f16 grid (packMatrix then stores them as f32). */
function offF16Scales(w: LlmWeights): LlmWeights {
  const off = (m: Matrix): Matrix => (m.kind === 'q' ? { ...m, scales: m.scales.map((v) => v * (1 + 2 ** -14)) } : m);
  return { ...w, layers: w.layers.map((l) => ({ ...l, ...Object.fromEntries(LAYER_MATRICES.map((k) => [k, off(l[k])])) })), lmHead: off(w.lmHead) };
}

/**
 * The tensor-core prefill GEMM (wgsl_tc.ts) with its subgroup-matrix operations written out in WGSL (llmGpuConfig
 * gemmTensorCores 'emulate': this software driver has no subgroup matrices; the H100 runs the same kernel on them,
 * bench/results/gpu/h100-tc-prefill2-7b-s28.txt). x and the dequantised weights are rounded to f16, so its logits sit
 * ~1e-4 of max|logit| from the reference; a misplaced tile, group or pair would be O(1).
 */
const TC_SMALL = { fm: 2, fn: 1, sm: 2, sn: 2, kSteps: 2 }; // 64 tokens × 32 rows, K steps of 32
test('webgpu llm: the tensor-core prefill GEMM (prefill f16) is near the reference: q4 in runs of 32 and in words (g16), q8, f32, Qwen2 biases, Qwen3 q/k norms, an f16 cache', TIMEOUT, () => withGpuConfig({ gemmTensorCores: 'emulate', tcTile: TC_SMALL }, async () => {
  const runs: [LlmWeights, string, { kvCache?: 'f16' }?][] = [
    [model(GQA, 'q4', 3), 'q4'], [model(GQA, 'q4', 3, 16), 'q4 g16'], [model(GQA, 'q8', 3), 'q8'], [model(GQA, 'f32', 3), 'f32'],
    [model(QWEN, 'q4', 46), 'q4 biases'], [model(QWEN3, 'q4', 5), 'q4 q/k norms'], [model(GQA, 'q4', 8), 'q4 f16 cache', { kvCache: 'f16' }],
    // Scales that are not f16 values (stored as f32 words, read from their own offsets).
    [offF16Scales(model(GQA, 'q4', 9)), 'q4 f32 scales'],
  ];
  for (const [w, what, o] of runs) {
    const gpu = await conformance(w, `tc ${what}`, { prefill: 'f16', ...o });
    // Every matrix (q/k/v, o, gate/up, down per layer, and the head) has its tensor-core kernel.
    assert.equal(gpu.stats.tensorCoreGemms, 4 * w.config.layers + 1, `${what}: tensor-core GEMMs`);
    await gpu.release();
  }
  // Two K steps in flight (TcTile.ahead): GQA's K (96, 160) is an odd number of steps of 32; q4 in runs, q8 in words.
  await withGpuConfig({ tcTile: { ...TC_SMALL, ahead: 2 } }, async () => {
    for (const [w, what] of [[model(GQA, 'q4', 3), 'q4'], [model(GQA, 'q8', 3), 'q8']] as const) await (await conformance(w, `tc ahead 2 ${what}`, { prefill: 'f16' })).release();
  });
  // Without prefill 'f16' the f32 GEMM runs.
  const plain = await WebGpuLlm.create(model(GQA, 'q4', 3), { capacity: 8 });
  assert.equal(plain.stats.tensorCoreGemms, 0);
  await plain.release();
}));

test('webgpu llm: the tensor-core prefill GEMM over several token tiles (150 tokens: 64 + 64 + 22), 128-token tiles, K steps of 64, two steps in flight, near the reference', TIMEOUT, async () => {
  const w = model({ ...HEADS32, maxPositions: 160 }, 'q4', 12);
  const x = ids(150, 4, w.config.vocab);
  const ref = await new ReferenceLlm(w, 160).forward(x, true);
  for (const tile of [TC_SMALL, { fm: 1, fn: 1, sm: 8, sn: 1, kSteps: 2 }, { fm: 1, fn: 1, sm: 4, sn: 2, kSteps: 4 }, { ...TC_SMALL, ahead: 2 as const }]) {
    await withGpuConfig({ gemmTensorCores: 'emulate', tcTile: tile }, async () => {
      const gpu = await WebGpuLlm.create(w, { capacity: 160, prefill: 'f16' });
      assert.ok(gpu.stats.tensorCoreGemms > 0, `${JSON.stringify(tile)}: no tensor-core GEMM`);
      const e = rel(await gpu.forward(x, true), ref);
      assert.ok(e > 1e-6 && e <= 1e-3, `${JSON.stringify(tile)}: 150 tokens, all logits: ${e} (f16 operands: above f32's ~1e-7, below 1e-3)`);
      await gpu.release();
    });
  }
});

test('webgpu llm: prefill is checked: an unknown type is an InputError; wasm and ONNX decoders refuse f16 by name', TIMEOUT, async () => {
  const w = model(GQA, 'q4', 11);
  await assert.rejects(WebGpuLlm.create(w, { capacity: 8, prefill: 'bf16' as 'f16' }), (e: unknown) => e instanceof InputError && /prefill 'bf16'/.test(e.message));
  await assert.rejects(createLlm(w, { backend: 'wasm', capacity: 8, prefill: 'f16' }), (e: unknown) => e instanceof UnsupportedError && /f16 prefill on wasm/.test(e.message));
  const { openCausalLM } = await import('../src/generate/causal_lm.js');
  await assert.rejects(openCausalLM(new Uint8Array(8), { prefill: 'f16' }), (e: unknown) => e instanceof UnsupportedError && /f16 prefill for an ONNX decoder/.test(e.message));
});
