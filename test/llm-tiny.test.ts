// The one-workgroup decode of small models (WebGpuLlmOptions.tinyDecode, src/llm/tiny_decode.ts) against the
// TypeScript reference: random q4 Llamas (GQA, groups of 32 and 64, f16 and f32 scales), the prompt through the
// runtime's kernels and every step through the tiny kernel; greedy streaming and generateGreedy with it; and where it
// must not be taken (8-bit layers).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { acquireGpu } from '../src/backends/webgpu/device.js';
import { quantizeRtn } from '../src/llm/quantize.js';
import { randomLlama } from '../src/llm/random_model.js';
import { ReferenceLlm } from '../src/llm/reference.js';
import type { LlamaConfig, LlmWeights } from '../src/llm/types.js';
import { withoutFeature } from './helpers.js';
import { WebGpuLlm } from '../src/llm/webgpu.js';

const TIMEOUT = { timeout: 600_000 };
const GQA: LlamaConfig = { vocab: 300, hidden: 96, intermediate: 160, layers: 2, heads: 6, kvHeads: 2, headDim: 16, maxPositions: 64, ropeTheta: 10000, rmsEps: 1e-5 };
const MHA: LlamaConfig = { vocab: 257, hidden: 128, intermediate: 256, layers: 3, heads: 2, kvHeads: 2, headDim: 64, maxPositions: 96, ropeTheta: 10000, rmsEps: 1e-5 };

const q4 = (c: LlamaConfig, seed: number, group = 32): LlmWeights => quantizeRtn(randomLlama(c, seed), { bits: 4, group });
const ids = (n: number, seed: number, vocab: number) => Array.from({ length: n }, (_, i) => (i * 131 + seed * 17 + 3) % vocab);
const argmax = (a: Float32Array): number => { let b = 0; for (let i = 1; i < a.length; i++) if (a[i] > a[b]) b = i; return b; };

function rel(got: Float32Array, want: Float32Array): number {
  assert.equal(got.length, want.length);
  let m = 0, e = 0;
  for (let i = 0; i < want.length; i++) {
    assert.ok(Number.isFinite(got[i]), `logit ${i} is ${got[i]}`);
    m = Math.max(m, Math.abs(want[i]));
    e = Math.max(e, Math.abs(got[i] - want[i]));
  }
  assert.ok(m > 0.1, `degenerate reference logits (${m})`);
  return e / m;
}

async function check(c: LlamaConfig, w: LlmWeights, what: string, steps = 14): Promise<void> {
  const { caps } = await acquireGpu();
  const cap = c.maxPositions, V = c.vocab;
  const gpu = await WebGpuLlm.create(w, { capacity: cap, tinyDecode: true });
  // The kernel needs dot4I8Packed; the software driver CI runs on has it.
  assert.ok(caps.dot4, 'this device has no dot4I8Packed: the tiny decode kernel cannot be checked here');
  assert.equal(gpu.stats.tinyDecode, true, `${what}: the tiny decode kernel was not taken`);
  const ref = new ReferenceLlm(w, cap);
  const prompt = ids(9, 2, V);
  assert.ok(rel(await gpu.forward(prompt), await ref.forward(prompt)) <= 1e-3, `${what}: prompt (runtime kernels)`);
  let worst = 0, agree = 0;
  for (let s = 0; s < steps; s++) {
    const id = (s * 97 + 11) % V;
    const got = await gpu.forward([id]);
    assert.equal(gpu.stats.dispatchesLastForward <= 4, true, `${what}: a step took ${gpu.stats.dispatchesLastForward} dispatches`);
    const want = await ref.forward([id]);
    worst = Math.max(worst, rel(got, want));
    if (argmax(got) === argmax(want)) agree++;
  }
  console.log(`${what}: worst step error ${worst.toExponential(2)}, argmax agrees ${agree}/${steps}`);
  // x rounded to 8 bits per 32 values before each matrix: a few 1e-3 of the logits' range.
  assert.ok(worst <= 1e-2, `${what}: worst step error ${worst}`);
  assert.ok(agree >= steps - 1, `${what}: argmax agrees at ${agree} of ${steps} steps`);
  // Truncating and running a step again rewrites the same cache slot with the same values.
  const len = gpu.length;
  gpu.truncate(len - 1);
  ref.truncate(len - 1);
  const again = await gpu.forward([5]);
  assert.ok(rel(again, await ref.forward([5])) <= 1e-2, `${what}: step after truncate`);
  await gpu.release();
}

test('webgpu tiny decode: GQA q4 g32 (f16 scales) steps near the reference', TIMEOUT, () => check(GQA, q4(GQA, 3), 'GQA q4 g32'));
test('webgpu tiny decode: head size 64, 3 layers, q4 g64, keys past one workgroup', TIMEOUT, async () => {
  // 60 cached positions × 2 heads: more scores than threads per head-slice.
  const w = q4(MHA, 5, 64);
  await check(MHA, w, 'MHA q4 g64', 40);
});
test('webgpu tiny decode: Qwen3\'s per-head q/k norms (1/rms of each q and k head before the rotation) steps near the reference', TIMEOUT, async () => {
  const c: LlamaConfig = { ...GQA, qkNorm: true };
  const w = q4(c, 8);
  // The norms move the logits far beyond the tolerance: a kernel that skipped them would fail the check.
  const plain = withoutFeature(w, 'qkNorm');
  const p = ids(9, 2, GQA.vocab);
  assert.ok(rel(await new ReferenceLlm(plain, 16).forward(p), await new ReferenceLlm(w, 16).forward(p)) > 0.05, 'the norms change the logits');
  await check(c, w, 'GQA q4 q/k norms');
});
test('webgpu tiny decode: greedy streaming and generateGreedy give the tokens of one forward a step', TIMEOUT, async () => {
  const w = q4(GQA, 9);
  const cap = 48;
  const tiny = await WebGpuLlm.create(w, { capacity: cap, tinyDecode: true });
  assert.equal(tiny.stats.tinyDecode, true);
  const prompt = ids(6, 4, GQA.vocab);
  const gen = await tiny.generateGreedy(prompt, 10);
  tiny.truncate(0);
  let next = await tiny.greedy(prompt);
  const oneByOne = [next];
  for (let s = 1; s < 10; s++) { next = await tiny.greedy([next]); oneByOne.push(next); }
  assert.deepEqual(gen, oneByOne);
  tiny.truncate(prompt.length);
  // The stream runs oneByOne[0] first: its ids are the rest.
  const st = tiny.greedyStream(oneByOne[0], 9, 3);
  const streamed: number[] = [];
  for (let s = 0; s < 9; s++) streamed.push(await st.next());
  await st.close();
  assert.deepEqual(streamed, oneByOne.slice(1));
  await tiny.release();
});
test('webgpu tiny decode: not taken for 8-bit layers (the runtime kernels run, equal to the reference)', TIMEOUT, async () => {
  const w = quantizeRtn(randomLlama(GQA, 4), { bits: 8, group: 32 });
  const gpu = await WebGpuLlm.create(w, { capacity: 32, tinyDecode: true });
  assert.equal(gpu.stats.tinyDecode, false);
  const ref = new ReferenceLlm(w, 32);
  await gpu.forward(ids(5, 1, GQA.vocab)); await ref.forward(ids(5, 1, GQA.vocab));
  assert.ok(rel(await gpu.forward([7]), await ref.forward([7])) <= 1e-3);
  assert.ok(gpu.stats.dispatchesLastForward > 4);
  await gpu.release();
});
test('webgpu tiny decode: speculative rounds with a tiny-decode draft give the target\'s plain greedy tokens', TIMEOUT, async () => {
  const target = q4(GQA, 21), draft = q4({ ...GQA, layers: 1 }, 22);
  const cap = 48;
  const t = await WebGpuLlm.create(target, { capacity: cap });
  const d = await WebGpuLlm.create(draft, { capacity: cap, tinyDecode: true });
  assert.equal(d.stats.tinyDecode, true);
  const prompt = ids(5, 3, GQA.vocab);
  const plain = await t.generateGreedy(prompt, 12);
  t.truncate(0);
  // Greedy speculation: k = 3 proposals a round (the draft's steps 2..k are one-token: the tiny kernel), accept the
  // longest agreeing prefix, then the target's token.
  const out: number[] = [];
  let pending = [...prompt], draftPending = [...prompt], rounds = 0, accepted = 0;
  while (out.length < 12) {
    const k = 3;
    const r = await t.speculateGreedy(d, pending, draftPending, k);
    const base = r.argmax.length - k - 1;
    let n = 0;
    while (n < k && r.proposals[n] === r.argmax[base + n]) n++;
    const next = r.argmax[base + n];
    out.push(...r.proposals.slice(0, n), next);
    accepted += n;
    rounds++;
    // Keep what was accepted: the target's pending tokens and n proposals; the draft's cache up to the last accepted.
    t.truncate(t.length - (k - n));
    d.truncate(d.length - (k - 1) + Math.min(n, k - 1));
    pending = [next];
    draftPending = n === k ? [r.proposals[k - 1], next] : [next];
  }
  assert.deepEqual(out.slice(0, 12), plain);
  console.log(`tiny draft: ${rounds} rounds, ${accepted} proposals accepted`);
  await t.release();
  await d.release();
});
