// webjit's LLM format and quantizer: safetensors round trips, quantized matrices within their rounding bound, the
// reference runtime against onnxruntime-node on the same weights (dense, 4- and 8-bit via MatMulNBits) token for
// token and logit by logit, the preallocated cache's truncate and limits, the activation-aware quantizer never worse
// than round to nearest on its objective, and the quantize CLI.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readSafetensors, writeSafetensors, f16Tensor, type StTensor } from '../src/llm/safetensors.js';
import { decodeLlm, encodeLlm, loadLlm } from '../src/llm/model_io.js';
import { quantizeMatrix, quantizeRtn } from '../src/llm/quantize.js';
import { quantizeAwq } from '../src/llm/awq.js';
import { exportOnnx } from '../src/llm/onnx_export.js';
import { ReferenceLlm } from '../src/llm/reference.js';
import { createLlm } from '../src/llm/index.js';
import { perplexity } from '../src/llm/perplexity.js';
import { llamaConfig, randomLlm } from '../src/llm/random.js';
import { dequantize, type DenseMatrix, type LlmWeights } from '../src/llm/types.js';
import { GraphError, InputError, ResourceLimitError, UnsupportedError } from '../src/errors.js';
import { ROOT, withoutFeature } from './helpers.js';

const require = createRequire(import.meta.url);
const argmax = (a: Float32Array) => { let b = 0; for (let i = 1; i < a.length; i++) if (a[i] > a[b]) b = i; return b; };
const maxAbs = (a: Float32Array) => a.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
const maxDiff = (a: Float32Array, b: Float32Array) => { let m = 0; for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i])); return m; };

/** onnxruntime-node running exportOnnx(w): greedy ids and each step's logits. */
async function ortGreedy(w: LlmWeights, prompt: number[], n: number): Promise<{ ids: number[]; logits: Float32Array[] }> {
  const ort = require('onnxruntime-node') as typeof import('onnxruntime-node');
  const s = await ort.InferenceSession.create(exportOnnx(w));
  const c = w.config;
  let past: Record<string, import('onnxruntime-node').Tensor> = {};
  for (let l = 0; l < c.layers; l++) for (const k of ['key', 'value']) past[`past_key_values.${l}.${k}`] = new ort.Tensor('float32', new Float32Array(0), [1, c.kvHeads, 0, c.headDim]);
  const ids: number[] = [], logits: Float32Array[] = [];
  let feed = prompt;
  for (let i = 0; i < n; i++) {
    const r = await s.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(feed, BigInt), [1, feed.length]), ...past });
    const lg = r.logits.data as Float32Array;
    const row = lg.slice(lg.length - c.vocab);
    logits.push(row);
    ids.push(argmax(row));
    past = {};
    for (let l = 0; l < c.layers; l++) for (const k of ['key', 'value']) past[`past_key_values.${l}.${k}`] = r[`present.${l}.${k}`];
    feed = [ids[ids.length - 1]];
  }
  await s.release();
  return { ids, logits };
}

/** A Hugging Face config.json for a config (Llama; `extra` adds or overrides keys). */
const hfConfig = (c: ReturnType<typeof llamaConfig>, extra: Record<string, unknown> = {}) => ({
  model_type: 'llama', vocab_size: c.vocab, hidden_size: c.hidden, intermediate_size: c.intermediate, num_hidden_layers: c.layers,
  num_attention_heads: c.heads, num_key_value_heads: c.kvHeads, head_dim: c.headDim, max_position_embeddings: c.maxPositions,
  rms_norm_eps: c.rmsEps, rope_theta: c.ropeTheta, ...extra,
});

async function ourGreedy(w: LlmWeights, prompt: number[], n: number): Promise<{ ids: number[]; logits: Float32Array[] }> {
  const r = new ReferenceLlm(w, 64);
  const ids: number[] = [], logits: Float32Array[] = [];
  let lg = await r.forward(prompt);
  for (let i = 0; i < n; i++) {
    logits.push(lg);
    ids.push(argmax(lg));
    if (i < n - 1) lg = await r.forward([ids[i]]);
  }
  return { ids, logits };
}

const PROMPT = [0, 17, 99, 4, 200, 31];

/** The reference runtime's greedy tokens and logits against onnxruntime-node's on exportOnnx(w); returns ours. */
async function equalsOrt(w: LlmWeights): Promise<{ ids: number[]; logits: Float32Array[] }> {
  const ours = await ourGreedy(w, PROMPT, 12);
  const theirs = await ortGreedy(w, PROMPT, 12);
  assert.deepEqual(ours.ids, theirs.ids);
  for (let i = 0; i < ours.logits.length; i++) {
    const d = maxDiff(ours.logits[i], theirs.logits[i]);
    assert.ok(d <= 1e-4 * maxAbs(theirs.logits[i]), `step ${i}: logits differ by ${d}`);
  }
  return ours;
}
const GQA = llamaConfig({ hidden: 128, heads: 8, kvHeads: 2, intermediate: 192, vocab: 300, layers: 2 });

test('safetensors: round trip of tensors and metadata; malformed headers are GraphErrors', () => {
  const a = new Float32Array([1.5, -2, 3.25]);
  const bytes = writeSafetensors([['a', { dtype: 'F32', shape: [3], bytes: new Uint8Array(a.buffer) }], ['h', f16Tensor(a, [1, 3])]], { k: 'v' });
  assert.equal((8 + Number(new DataView(bytes.buffer).getBigUint64(0, true))) % 8, 0, 'data starts 8-byte aligned');
  const f = readSafetensors(bytes);
  assert.deepEqual(f.metadata, { k: 'v' });
  assert.deepEqual([...new Float32Array(f.tensors.get('a')!.bytes.slice().buffer)], [1.5, -2, 3.25]);
  assert.deepEqual(f.tensors.get('h')!.shape, [1, 3]);
  assert.throws(() => readSafetensors(bytes.subarray(0, 5)), GraphError);
  const bad = bytes.slice();
  new DataView(bad.buffer).setBigUint64(0, 1n << 40n, true);
  assert.throws(() => readSafetensors(bad), /header length/);
  const short = writeSafetensors([['a', { dtype: 'F32', shape: [4], bytes: new Uint8Array(12) }]], {});
  assert.throws(() => readSafetensors(short), /needs 16 bytes, has 12/);
});

test('quantizeMatrix: every weight within half a step of its group, 4 and 8 bits', () => {
  const w = randomLlm(GQA, 3);
  const m = w.layers[0].gate as DenseMatrix;
  for (const bits of [4, 8] as const) {
    for (const group of [32, 64]) {
      const q = quantizeMatrix(m, { bits, group });
      const dq = dequantize(q);
      const groups = m.K / group;
      let worst = 0;
      for (let n = 0; n < m.N; n++) for (let k = 0; k < m.K; k++) {
        const s = q.scales[n * groups + Math.floor(k / group)];
        worst = Math.max(worst, Math.abs(dq[n * m.K + k] - m.data[n * m.K + k]) / s);
      }
      assert.ok(worst <= 0.5 + 1e-3, `q${bits} g${group}: error ${worst} steps`);
      assert.equal(q.data.length, (m.N * m.K * bits) / 8);
    }
  }
  assert.throws(() => quantizeMatrix(m, { bits: 4, group: 48 }), InputError);
  assert.throws(() => quantizeMatrix(m, { bits: 3 as never }), InputError);
});

test('webjit format: encode/decode round trip (f32 exact; f16 storage within f16 rounding; quantized bytes identical)', () => {
  const w = randomLlm(GQA, 5);
  const back = decodeLlm(encodeLlm(w, { f32: true }));
  assert.deepEqual(back.config, { ...w.config, bos: 0, eos: 1 });
  assert.equal(maxDiff(back.layers[1].down.kind === 'f32' ? back.layers[1].down.data : new Float32Array(), (w.layers[1].down as DenseMatrix).data), 0);
  const q = quantizeRtn(w, { bits: 4 });
  const qb = decodeLlm(encodeLlm(q));
  const a = q.layers[0].q, b = qb.layers[0].q;
  assert.ok(a.kind === 'q' && b.kind === 'q');
  assert.deepEqual(b.data, a.data);
  assert.deepEqual(b.zeros, a.zeros);
  assert.deepEqual(b.scales, a.scales, 'scales are f16-rounded by the quantizer, so f16 storage is exact');
  assert.equal(qb.quant, 'q4 g32 rtn');
  // Quantized files store the embedding in 8 bits: within half a step of its group.
  assert.ok(maxDiff(qb.embed, q.embed) <= maxAbs(q.embed) / 255 + 1e-6);
  assert.throws(() => decodeLlm(writeSafetensors([], { format: 'other' })), GraphError);
});

for (const [name, make] of [
  ['f32', (w: LlmWeights) => w],
  ['q8', (w: LlmWeights) => quantizeRtn(w, { bits: 8 })],
  ['q4', (w: LlmWeights) => quantizeRtn(w, { bits: 4 })],
  ['q4 g64', (w: LlmWeights) => quantizeRtn(w, { bits: 4, group: 64 })],
] as const) {
  test(`reference LLM runtime equals onnxruntime-node on the same weights (${name}, GQA, MatMulNBits): tokens and logits`, async () => {
    await equalsOrt(make(randomLlm(GQA, 7)));
  });
}

test('reference runtime: allLogits rows equal step-by-step logits; truncate rewinds; typed errors for bad ids and a full cache', async () => {
  const w = randomLlm(GQA, 9);
  const a = new ReferenceLlm(w, 16);
  const all = await a.forward(PROMPT, true);
  assert.equal(all.length, PROMPT.length * GQA.vocab);
  const b = new ReferenceLlm(w, 16);
  for (let t = 0; t < PROMPT.length; t++) {
    const row = await b.forward([PROMPT[t]]);
    assert.ok(maxDiff(row, all.subarray(t * GQA.vocab, (t + 1) * GQA.vocab)) < 1e-4 * maxAbs(row));
  }
  a.truncate(3);
  const again = await a.forward(PROMPT.slice(3), true);
  assert.ok(maxDiff(again, all.subarray(3 * GQA.vocab)) < 1e-5 * maxAbs(again));
  await assert.rejects(a.forward([GQA.vocab]), InputError);
  await assert.rejects(a.forward([-1]), InputError);
  await assert.rejects(a.forward(new Array(11).fill(5)), ResourceLimitError);
  assert.throws(() => a.truncate(7), InputError);
  await assert.rejects(createLlm(w, { backend: 'reference', capacity: 1000 }), UnsupportedError);
});

test('activation-aware quantization: each site no worse than round to nearest on calibration; better on the whole', async () => {
  const w = randomLlm(GQA, 11);
  // Channels with large activations: the case the method is for.
  for (const L of w.layers) for (let i = 0; i < GQA.hidden; i += 7) { L.attnNorm[i] *= 8; L.mlpNorm[i] *= 8; }
  const calib = Array.from({ length: 96 }, (_, i) => (i * 37 + 11) % GQA.vocab);
  const { weights, report } = await quantizeAwq(w, { bits: 4, calib, window: 48 });
  assert.equal(report.sites.length, GQA.layers * 4);
  for (const s of report.sites) if (Number.isFinite(s.error)) assert.ok(s.error <= s.rtnError + 1e-12, `${s.layer} ${s.site}: ${s.error} > ${s.rtnError}`);
  assert.ok(report.sites.some((s) => s.alpha > 0 && s.error < 0.95 * s.rtnError), 'some site improved by > 5%');
  assert.equal(weights.quant, 'q4 g32 awq');
  // The folded scales keep the model the same function: its greedy tokens on the calibration prompt stay close to f32.
  const held = Array.from({ length: 64 }, (_, i) => (i * 53 + 5) % GQA.vocab);
  const p32 = await perplexity(new ReferenceLlm(w, 64), held, { window: 64, bos: 0 });
  const pawq = await perplexity(new ReferenceLlm(weights, 64), held, { window: 64, bos: 0 });
  const prtn = await perplexity(new ReferenceLlm(quantizeRtn(w, { bits: 4 }), 64), held, { window: 64, bos: 0 });
  assert.ok(Math.abs(pawq.nll - p32.nll) <= Math.abs(prtn.nll - p32.nll) * 1.5 + 0.02, `awq ${pawq.nll} rtn ${prtn.nll} f32 ${p32.nll}`);
});

test('webjit quantize CLI: a Hugging Face folder to a q4 file and its ONNX twin; loadLlm reads both kinds', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webjit-q-'));
  const w = randomLlm(llamaConfig({ vocab: 256 }), 13);
  // A Hugging Face folder: config.json + model.safetensors with transformers' names (tied: no lm_head).
  const c = w.config;
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(hfConfig(c, { tie_word_embeddings: true })));
  const st = readSafetensors(encodeLlm(w, { f32: true }));
  fs.writeFileSync(path.join(dir, 'model.safetensors'), writeSafetensors([...st.tensors], {}));
  const hf = await loadLlm(dir);
  assert.equal(maxDiff(hf.embed, w.embed), 0);
  const out = path.join(dir, 'm.q4.safetensors'), onnx = path.join(dir, 'm.q4.onnx');
  const log = execFileSync(process.execPath, [path.join(ROOT, 'bin/webjit.js'), 'quantize', dir, '--bits', '4', '--out', out, '--onnx', onnx], { encoding: 'utf8' });
  assert.match(log, /q4 g32 rtn/);
  const q = await loadLlm(out);
  assert.equal(q.layers[0].q.kind, 'q');
  const ours = await ourGreedy(q, PROMPT, 6);
  const theirs = await ortGreedy(q, PROMPT, 6);
  assert.deepEqual(ours.ids, theirs.ids);
  assert.ok(fs.statSync(onnx).size > 0);
  await assert.rejects(loadLlm(path.join(dir, 'nope')), InputError);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'gpt2' }));
  await assert.rejects(loadLlm(dir), UnsupportedError);
});

// Llama 3.1/3.2's rope_scaling (Llama-3.2-1B's values). The expected frequencies follow Hugging Face's llama3 rule,
// computed here in f64: wavelength λ = 2π/f; λ < 8192/4 kept, λ > 8192/1 divided by 32, between blended by
// s = (8192/λ − 1)/(4 − 1) as (1 − s)·f/32 + s·f.
const LLAMA32_ROPE = { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };

test('rope_scaling: llama3 (Llama 3.1/3.2) and linear frequencies; other kinds and bad values are typed errors', async () => {
  const { configFromHf } = await import('../src/llm/model_io.js');
  const { ropeInvFreq } = await import('../src/llm/reference.js');
  const c = configFromHf(hfConfig(llamaConfig({ hidden: 2048, heads: 32, kvHeads: 8, headDim: 64, ropeTheta: 500000 }), { rope_scaling: LLAMA32_ROPE }));
  assert.deepEqual(c.ropeScaling, { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 });
  const got = ropeInvFreq(c);
  const kinds = new Set<string>();
  for (let i = 0; i < 32; i++) {
    const f = 1 / Math.pow(500000, (2 * i) / 64), lam = (2 * Math.PI) / f;
    let want: number;
    if (lam < 2048) { want = f; kinds.add('kept'); } else if (lam > 8192) { want = f / 32; kinds.add('divided'); } else {
      const s = (8192 / lam - 1) / 3;
      want = (1 - s) * (f / 32) + s * f;
      kinds.add('blended');
    }
    assert.ok(Math.abs(got[i] - want) <= 1e-6 * want, `frequency ${i}: ${got[i]} vs ${want}`);
  }
  assert.deepEqual([...kinds].sort(), ['blended', 'divided', 'kept']);
  const lin = configFromHf(hfConfig(llamaConfig(), { rope_scaling: { type: 'linear', factor: 4 } }));
  const plain = configFromHf(hfConfig(llamaConfig(), { rope_scaling: { rope_type: 'default' } }));
  assert.equal(plain.ropeScaling, undefined);
  const fl = ropeInvFreq(lin), fp = ropeInvFreq(plain);
  for (let i = 0; i < fl.length; i++) assert.ok(Math.abs(fl[i] - fp[i] / 4) <= 1e-7 * fp[i]);
  assert.throws(() => configFromHf(hfConfig(llamaConfig(), { rope_scaling: { rope_type: 'yarn', factor: 4 } })), (e: unknown) => e instanceof UnsupportedError && /'yarn'/.test((e as Error).message));
  assert.throws(() => configFromHf(hfConfig(llamaConfig(), { rope_scaling: { ...LLAMA32_ROPE, factor: -1 } })), (e: unknown) => e instanceof GraphError && /factor/.test((e as Error).message));
  assert.throws(() => configFromHf(hfConfig(llamaConfig(), { rope_scaling: { ...LLAMA32_ROPE, high_freq_factor: 1 } })), GraphError);
});

test('configFromHf: Mistral is read as the Llama architecture; a sliding window bounds the positions (the cache never outgrows it)', async () => {
  const { configFromHf } = await import('../src/llm/model_io.js');
  const base = hfConfig(llamaConfig({ maxPositions: 32768 }));
  assert.equal(configFromHf({ ...base, model_type: 'mistral', sliding_window: 4096 }).maxPositions, 4096);
  assert.equal(configFromHf({ ...base, model_type: 'mistral', sliding_window: null }).maxPositions, 32768);
  assert.equal(configFromHf({ ...base, model_type: 'mistral', sliding_window: 65536 }).maxPositions, 32768);
  assert.throws(() => configFromHf({ ...base, model_type: 'gemma' }), UnsupportedError);
});

test('configFromHf: Qwen2 is the Llama architecture with q/k/v biases; its sliding window counts only where use_sliding_window says so, and a window in some layers only is refused', async () => {
  const { configFromHf } = await import('../src/llm/model_io.js');
  const base = { ...hfConfig(llamaConfig({ maxPositions: 32768 })), model_type: 'qwen2', sliding_window: 4096, max_window_layers: 21 };
  const c = configFromHf({ ...base, use_sliding_window: false });
  assert.equal(c.qkvBias, true);
  assert.equal(c.maxPositions, 32768, 'use_sliding_window false: no window');
  assert.equal(configFromHf({ ...base, use_sliding_window: true, max_window_layers: 0 }).maxPositions, 4096, 'a window in every layer bounds the cache');
  assert.throws(() => configFromHf({ ...base, use_sliding_window: true, num_hidden_layers: 24 }), (e: unknown) => e instanceof UnsupportedError && /layers 21 and later/.test(e.message));
  assert.equal(configFromHf(hfConfig(llamaConfig())).qkvBias, undefined, 'Llama has no biases');
  assert.throws(() => configFromHf({ ...hfConfig(llamaConfig()), attention_bias: true }), UnsupportedError, 'a Llama with attention biases (o too) is still refused');
});

const QWEN = { ...GQA, qkvBias: true as const };

/** All-position logits of a 20-token prompt on the wasm runtime (2 threads) within 1e-3 of max|logits| of the reference's. */
async function wasmEqualsReference(w: LlmWeights): Promise<void> {
  const prompt = Array.from({ length: 20 }, (_, i) => (i * 29 + 3) % w.config.vocab);
  const want = await new ReferenceLlm(w, 64).forward(prompt, true);
  const r = await createLlm(w, { backend: 'wasm', capacity: 64, threads: 2 });
  const got = await r.forward(prompt, true);
  await r.release();
  assert.ok(maxDiff(got, want) < 1e-3 * maxAbs(want), `wasm vs reference ${maxDiff(got, want)}`);
}

for (const [name, make] of [
  ['f32', (w: LlmWeights) => w],
  ['q4', (w: LlmWeights) => quantizeRtn(w, { bits: 4 })],
] as const) {
  test(`reference LLM runtime with q/k/v biases (Qwen2) equals onnxruntime-node on the same weights (${name}): tokens and logits; the biases matter`, async () => {
    const w = make(randomLlm(QWEN, 7));
    assert.ok(w.layers.every((L) => L.qkvBias), 'every layer has biases');
    const ours = await equalsOrt(w);
    const without = await ourGreedy(withoutFeature(w, 'qkvBias'), PROMPT, 1);
    assert.ok(maxDiff(without.logits[0], ours.logits[0]) > 0.05 * maxAbs(ours.logits[0]), 'without the biases the logits move far');
  });
}

test('Qwen2: a Hugging Face folder with q/k/v biases loads, keeps them through webjit\'s format and quantize, and the wasm runtime equals the reference', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webjit-qwen2-'));
  const w = randomLlm(QWEN, 21);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(hfConfig(w.config, { model_type: 'qwen2', tie_word_embeddings: true, use_sliding_window: false, sliding_window: 32 })));
  fs.writeFileSync(path.join(dir, 'model.safetensors'), writeSafetensors([...readSafetensors(encodeLlm(w, { f32: true })).tensors], {}));
  const names = [...readSafetensors(fs.readFileSync(path.join(dir, 'model.safetensors'))).tensors.keys()];
  assert.ok(names.includes('model.layers.1.self_attn.k_proj.bias'), 'biases stored under the Hugging Face names');
  const hf = await loadLlm(dir);
  assert.equal(hf.config.qkvBias, true);
  assert.equal(hf.config.maxPositions, GQA.maxPositions);
  const { denseBytesPerToken, bytesPerToken } = await import('../src/llm/types.js');
  assert.equal(denseBytesPerToken(hf.config), bytesPerToken(hf), 'the biases count in the f32 model\'s bytes a token');
  for (let l = 0; l < QWEN.layers; l++) for (const k of ['q', 'k', 'v'] as const) assert.deepEqual(hf.layers[l].qkvBias?.[k], w.layers[l].qkvBias?.[k]);
  const q4 = decodeLlm(encodeLlm(quantizeRtn(hf, { bits: 4 })));
  assert.equal(q4.config.qkvBias, true);
  assert.deepEqual(q4.layers[1].qkvBias?.k, w.layers[1].qkvBias?.k, 'biases stay f32 through the quantized format');
  const lazy = await loadLlm(dir, { quantize: { bits: 4 } });
  assert.deepEqual(lazy.layers[0].qkvBias?.v, w.layers[0].qkvBias?.v, 'and through quantize-while-loading');
  await wasmEqualsReference(q4);
});

// Qwen3's shapes: heads × headDim (128) is not the hidden size (64), and each head of q and k is RMS-normalized.
const QWEN3 = llamaConfig({ hidden: 64, heads: 4, kvHeads: 2, headDim: 32, intermediate: 160, vocab: 300, layers: 2, qkNorm: true });

test('configFromHf: Qwen3 is the Llama architecture with per-head q/k norms and its own head size; Qwen3 MoE and a q/k/v bias with the norms are refused', async () => {
  const { configFromHf } = await import('../src/llm/model_io.js');
  const base = { ...hfConfig(llamaConfig({ hidden: 1024, heads: 16, kvHeads: 8, headDim: 128, maxPositions: 40960 })), model_type: 'qwen3', tie_word_embeddings: true, attention_bias: false, use_sliding_window: false, sliding_window: null, max_window_layers: 28 };
  const c = configFromHf(base);
  assert.equal(c.qkNorm, true);
  assert.equal(c.qkvBias, undefined, 'Qwen3 has no q/k/v biases');
  assert.equal(c.headDim, 128);
  assert.equal(c.maxPositions, 40960);
  assert.equal(configFromHf(hfConfig(llamaConfig())).qkNorm, undefined, 'Llama has no q/k norms');
  assert.throws(() => configFromHf({ ...base, attention_bias: true }), UnsupportedError);
  assert.throws(() => configFromHf({ ...base, model_type: 'qwen3_moe' }), (e: unknown) => e instanceof UnsupportedError && /qwen3_moe/.test(e.message));
  assert.throws(() => encodeLlm(randomLlm({ ...QWEN3, qkvBias: true }, 2)), UnsupportedError);
});

for (const [name, make] of [
  ['f32', (w: LlmWeights) => w],
  ['q4', (w: LlmWeights) => quantizeRtn(w, { bits: 4 })],
] as const) {
  test(`reference LLM runtime with per-head q/k norms (Qwen3) equals onnxruntime-node on the same weights (${name}): tokens and logits; the norms matter`, async () => {
    const w = make(randomLlm(QWEN3, 7));
    assert.ok(w.layers.every((L) => L.qkNorm), 'every layer has q/k norms');
    const ours = await equalsOrt(w);
    const without = await ourGreedy(withoutFeature(w, 'qkNorm'), PROMPT, 1);
    assert.ok(maxDiff(without.logits[0], ours.logits[0]) > 0.05 * maxAbs(ours.logits[0]), 'without the norms the logits move far');
    const swapped: LlmWeights = { ...w, layers: w.layers.map((L) => ({ ...L, qkNorm: { q: L.qkNorm!.k, k: L.qkNorm!.q } })) };
    const sw = await ourGreedy(swapped, PROMPT, 1);
    assert.ok(maxDiff(sw.logits[0], ours.logits[0]) > 0.01 * maxAbs(ours.logits[0]), "q's weights on k (and k's on q) move the logits too");
  });
}

test('Qwen3: a Hugging Face folder with q/k norms loads, keeps them through webjit\'s format and quantize, every runtime checks their length, and the wasm runtime equals the reference', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webjit-qwen3-'));
  const w = randomLlm(QWEN3, 23);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(hfConfig(w.config, { model_type: 'qwen3', tie_word_embeddings: true, attention_bias: false, use_sliding_window: false })));
  fs.writeFileSync(path.join(dir, 'model.safetensors'), writeSafetensors([...readSafetensors(encodeLlm(w, { f32: true })).tensors], {}));
  const names = [...readSafetensors(fs.readFileSync(path.join(dir, 'model.safetensors'))).tensors.keys()];
  assert.ok(names.includes('model.layers.1.self_attn.k_norm.weight') && names.includes('model.layers.0.self_attn.q_norm.weight'), 'norms stored under the Hugging Face names');
  const hf = await loadLlm(dir);
  assert.equal(hf.config.qkNorm, true);
  const { denseBytesPerToken, bytesPerToken } = await import('../src/llm/types.js');
  assert.equal(denseBytesPerToken(hf.config), bytesPerToken(hf), 'the norms count in the f32 model\'s bytes a token');
  for (let l = 0; l < QWEN3.layers; l++) for (const k of ['q', 'k'] as const) assert.deepEqual(hf.layers[l].qkNorm?.[k], w.layers[l].qkNorm?.[k]);
  const q4 = decodeLlm(encodeLlm(quantizeRtn(hf, { bits: 4 })));
  assert.equal(q4.config.qkNorm, true);
  assert.deepEqual(q4.layers[1].qkNorm?.k, w.layers[1].qkNorm?.k, 'norm weights stay f32 through the quantized format');
  const lazy = await loadLlm(dir, { quantize: { bits: 4 } });
  assert.deepEqual(lazy.layers[0].qkNorm?.q, w.layers[0].qkNorm?.q, 'and through quantize-while-loading');
  // A missing tensor names it.
  const noNorm = fs.mkdtempSync(path.join(os.tmpdir(), 'webjit-qwen3-bad-'));
  fs.copyFileSync(path.join(dir, 'config.json'), path.join(noNorm, 'config.json'));
  fs.writeFileSync(path.join(noNorm, 'model.safetensors'), writeSafetensors([...readSafetensors(encodeLlm(w, { f32: true })).tensors].filter(([n]) => n !== 'model.layers.1.self_attn.k_norm.weight'), {}));
  await assert.rejects(loadLlm(noNorm), (e: unknown) => e instanceof GraphError && /layers\.1\.self_attn\.k_norm/.test(e.message));
  // Hand-built weights with a wrong norm length are typed errors on every runtime, before anything runs.
  const bad: LlmWeights = { ...q4, layers: q4.layers.map((L, l) => (l === 1 ? { ...L, qkNorm: { q: L.qkNorm!.q, k: L.qkNorm!.k.subarray(1) } } : L)) };
  assert.throws(() => new ReferenceLlm(bad, 64), (e: unknown) => e instanceof InputError && /layer 1 k norm/.test(e.message));
  await assert.rejects(createLlm(bad, { backend: 'wasm', capacity: 64, threads: 1 }), (e: unknown) => e instanceof InputError && /layer 1 k norm/.test(e.message));
  await wasmEqualsReference(q4);
});

test('rope_scaling: a Hugging Face folder with llama3 scaling loads, keeps it through webjit\'s format, and the runtimes rotate with it', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webjit-rope-'));
  // Small heads and a short original context, so that all three kinds of frequency occur.
  const w = randomLlm(llamaConfig({ vocab: 256, ropeTheta: 10000 }), 17);
  const scaling = { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(hfConfig(w.config, { rope_scaling: scaling, tie_word_embeddings: true })));
  fs.writeFileSync(path.join(dir, 'model.safetensors'), writeSafetensors([...readSafetensors(encodeLlm(w, { f32: true })).tensors], {}));
  const hf = await loadLlm(dir);
  assert.equal(hf.config.ropeScaling?.type, 'llama3');
  const again = decodeLlm(encodeLlm(quantizeRtn(hf, { bits: 4 })));
  assert.deepEqual(again.config.ropeScaling, hf.config.ropeScaling);
  const prompt = Array.from({ length: 40 }, (_, i) => (i * 29 + 3) % 256);
  const scaled = await new ReferenceLlm(hf, 64).forward(prompt, true);
  const unscaled = await new ReferenceLlm(w, 64).forward(prompt, true);
  assert.ok(maxDiff(scaled, unscaled) > 1e-3, 'the scaling changes the logits');
  const r = await createLlm(hf, { backend: 'wasm', capacity: 64, threads: 2 });
  const got = await r.forward(prompt, true);
  await r.release();
  assert.ok(maxDiff(got, scaled) < 1e-3 * Math.max(...scaled.map(Math.abs)), `wasm vs reference ${maxDiff(got, scaled)}`);
});

test('loadLlm with quantize: a Hugging Face folder quantized matrix by matrix as read equals quantizeRtn of the whole f32 model', async () => {
  const { denseBytesPerToken, bytesPerToken } = await import('../src/llm/types.js');
  for (const tied of [true, false]) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webjit-stream-'));
    const w = randomLlm(llamaConfig({ vocab: 256 }), 23, 0.08, tied);
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(hfConfig(w.config, { tie_word_embeddings: tied })));
    // Two shards, as large checkpoints come.
    const all = [...readSafetensors(encodeLlm(w, { f32: false })).tensors];
    fs.writeFileSync(path.join(dir, 'model-00001-of-00002.safetensors'), writeSafetensors(all.slice(0, 9), {}));
    fs.writeFileSync(path.join(dir, 'model-00002-of-00002.safetensors'), writeSafetensors(all.slice(9), {}));
    const whole = await loadLlm(dir);
    assert.equal(denseBytesPerToken(whole.config), bytesPerToken(whole));
    const o = { bits: 4 as const, group: 32, headBits: 8 as const };
    const want = quantizeRtn(whole, o), got = await loadLlm(dir, { quantize: o });
    assert.equal(got.quant, want.quant);
    assert.deepEqual(got.layers.map((L) => L.down), want.layers.map((L) => L.down));
    assert.deepEqual(got.layers.map((L) => L.q), want.layers.map((L) => L.q));
    assert.deepEqual(got.lmHead, want.lmHead);
    assert.equal(got.lmHead.kind === 'q' && got.lmHead.bits, 8);
    assert.deepEqual(encodeLlm(got), encodeLlm(want), `tied ${tied}: the files written are the same bytes`);
  }
});

test('webjit generate FOLDER --quant q4 quantizes while loading and generates quantizeRtn\'s greedy tokens', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webjit-genq-'));
  const w = randomLlm(llamaConfig({ vocab: 256 }), 29);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(hfConfig(w.config, { tie_word_embeddings: true })));
  fs.writeFileSync(path.join(dir, 'model.safetensors'), writeSafetensors([...readSafetensors(encodeLlm(w, { f32: true })).tensors], {}));
  const { ids: want } = await ourGreedy(quantizeRtn(await loadLlm(dir), { bits: 4 }), [3, 14, 15], 8);
  const out = execFileSync(process.execPath, [path.join(ROOT, 'bin/webjit.js'), 'generate', dir, '--prompt-ids', '3,14,15', '--max-tokens', '8', '--quant', 'q4', '--backend', 'reference', '--json', '--ignore-eos'], { encoding: 'utf8' });
  const r = JSON.parse(out.trim().split('\n').pop()!);
  assert.deepEqual(r.ids, want);
});

test('webjit bench-llm: an unknown --peers name is a typed error that lists the known ones', async () => {
  const { benchLlmCommand } = await import('../src/cli/bench_llm.js');
  const args = { backend: 'wasm' as const, quant: 'q4', draftTokens: '3', promptTokens: '8', tokens: '4', rounds: '1' };
  await assert.rejects(benchLlmCommand(path.join(ROOT, 'test/fixtures/lm/draft.q4.safetensors'), { ...args, peers: 'web-wasm,nope' }),
    (e: unknown) => e instanceof InputError && /unknown peer 'nope'/.test(e.message) && /web-webgpu/.test(String(e.hint)));
});

test('webjit bench-llm --activations: unknown kinds are typed errors; int8 on an engine without relaxed SIMD is refused, never run as f32 under an int8 label', async () => {
  const { benchLlmCommand } = await import('../src/cli/bench_llm.js');
  const { hasRelaxedSimd } = await import('../src/backends/wasm/features.js');
  const model = path.join(ROOT, 'test/fixtures/lm/draft.q4.safetensors');
  const args = { backend: 'wasm' as const, quant: 'q4', draftTokens: '3', promptTokens: '8', tokens: '4', rounds: '1', peers: 'none' };
  await assert.rejects(benchLlmCommand(model, { ...args, activations: 'f32,int4' }), (e: unknown) => e instanceof InputError && /--activations int4/.test(e.message));
  await assert.rejects(benchLlmCommand(model, { ...args, kvCache: 'f32,bf16' }), (e: unknown) => e instanceof InputError && /--kv-cache bf16/.test(e.message));
  if (!hasRelaxedSimd()) {
    await assert.rejects(benchLlmCommand(model, { ...args, activations: 'int8' }),
      (e: unknown) => e instanceof UnsupportedError && /relaxed SIMD/.test(e.message) && /--experimental-wasm-relaxed-simd/.test(String(e.hint)));
  } else {
    assert.equal(await benchLlmCommand(model, { ...args, activations: 'int8' }), 0);
  }
});

test('int8 activations that cannot run are reported, not hidden: the generate/perplexity note names the cause and the fix', async () => {
  const { activationsNote } = await import('../src/cli/generate.js');
  const { hasRelaxedSimd } = await import('../src/backends/wasm/features.js');
  const { createLlm } = await import('../src/llm/index.js');
  const w = quantizeRtn(randomLlm(GQA, 5), { bits: 4 });
  const ref = await createLlm(w, { backend: 'reference' });
  assert.match(activationsNote('int8', ref), /f32 activations \(int8 activations: the reference backend computes in f32: use --backend wasm or webgpu\)/);
  assert.equal(activationsNote(undefined, ref), '');
  // A model with no 4-bit matrix: the cause named is that, not the engine.
  const q8 = quantizeRtn(randomLlm(GQA, 5), { bits: 8 });
  const r8 = await createLlm(q8, { backend: 'wasm', threads: 1, activations: 'int8' });
  try {
    assert.match(activationsNote('int8', r8), /they apply to 4-bit matrices and this model has none/);
  } finally { await r8.release(); }
  const r = await createLlm(w, { backend: 'wasm', threads: 1, activations: 'int8' });
  try {
    assert.equal(activationsNote('int8', r), hasRelaxedSimd() ? ', int8 activations' : ', f32 activations (int8 activations on wasm: this engine has no relaxed SIMD: run node with --experimental-wasm-relaxed-simd (Chrome has it by default), or leave --activations out)');
  } finally { await r.release(); }
});

test('bench-llm precisions: a quantized model runs as stored or dequantized (f32, its exact values), never requantized; a dense one as asked', async () => {
  const { quantized } = await import('../src/bench/llm.js');
  const { dequantizeLlm, quantBits } = await import('../src/llm/quantize.js');
  const dense = randomLlm(GQA, 3);
  const q4 = quantizeRtn(dense, { bits: 4 });
  assert.equal(quantBits(dense), null);
  assert.equal(quantBits(q4), 4);
  assert.equal(quantized(q4, 'q4'), q4);
  assert.throws(() => quantized(q4, 'q8'), (e: unknown) => e instanceof InputError && /already quantized/.test(e.message) && /--quant q4/.test(String(e.hint)));
  assert.equal(quantized(dense, 'f32'), dense);
  assert.equal(quantBits(quantized(dense, 'q8')), 8);
  const f = quantized(q4, 'f32');
  assert.equal(quantBits(f), null);
  assert.match(f.quant, /^f32 \(dequantized q4/);
  // The dense kernels on the dequantised values compute what the quantized model computes.
  const m = q4.layers[1].down, d = f.layers[1].down as DenseMatrix;
  assert.deepEqual(d.data, dequantize(m));
  const a = await new ReferenceLlm(q4, 16).forward(PROMPT), b = await new ReferenceLlm(f, 16).forward(PROMPT);
  assert.ok(maxDiff(a, b) <= 1e-5 * maxAbs(a), `${maxDiff(a, b)}`);
  assert.equal(dequantizeLlm(dense).quant, dense.quant);
});

test('end-of-sequence ids: config.json\'s id or list (Llama 3.1: three) and generation_config.json\'s are read; generation stops at any of them unless ignoreEos', async () => {
  const { configFromHf } = await import('../src/llm/model_io.js');
  const { TextGenerator } = await import('../src/generate/generate.js');
  const { LlmCausalLM } = await import('../src/generate/causal_lm.js');
  const base = hfConfig(llamaConfig());
  assert.deepEqual(configFromHf({ ...base, eos_token_id: [128001, 128008, 128009] }).eos, [128001, 128008, 128009]);
  assert.equal(configFromHf({ ...base, eos_token_id: 2 }).eos, 2);
  assert.equal(configFromHf({ ...base, eos_token_id: null }).eos, undefined);
  assert.throws(() => configFromHf({ ...base, eos_token_id: [1, 'x'] }), GraphError);
  // A folder whose generation_config.json names one more id.
  const w = randomLlm(llamaConfig({ eos: undefined }), 23);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webjit-eos-'));
  fs.writeFileSync(path.join(dir, 'model.safetensors'), writeSafetensors([...readSafetensors(encodeLlm(w, { f32: true })).tensors], {}));
  // The greedy continuation without any end-of-sequence id; then a token first seen after the first made one.
  const gen0 = new TextGenerator(new LlmCausalLM(new ReferenceLlm(w, 64)));
  const free = gen0.generate(PROMPT, { maxTokens: 10 });
  await free.all();
  const k = free.ids.findIndex((id, i) => i >= 1 && !free.ids.slice(0, i).includes(id));
  assert.ok(k >= 1, `a token first seen after the first: ${free.ids}`);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(hfConfig(w.config, { eos_token_id: 255, tie_word_embeddings: true })));
  fs.writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [255, free.ids[k]] }));
  const hf = await loadLlm(dir);
  assert.deepEqual(hf.config.eos, [255, free.ids[k]]);
  const gen = new TextGenerator(new LlmCausalLM(new ReferenceLlm(hf, 64)));
  const g = gen.generate(PROMPT, { maxTokens: 10 });
  await g.all();
  assert.deepEqual(g.ids, free.ids.slice(0, k));
  assert.equal(g.stats!.stopReason, 'eos');
  const past = gen.generate(PROMPT, { maxTokens: 10, ignoreEos: true });
  await past.all();
  assert.deepEqual(past.ids, free.ids);
  fs.writeFileSync(path.join(dir, 'generation_config.json'), '{ not json');
  await assert.rejects(loadLlm(dir), InputError);
});

test('Phi-3: a Hugging Face folder with fused qkv_proj and gate_up_proj loads as the same matrices split by rows; its sliding window bounds the cache; longrope and partial rotary embeddings are refused by name', async () => {
  const { configFromHf } = await import('../src/llm/model_io.js');
  const w = randomLlm(GQA, 29);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webjit-phi3-'));
  const plain = readSafetensors(encodeLlm(w, { f32: true })).tensors;
  const fused: [string, StTensor][] = [];
  const cat = (names: string[]): StTensor => {
    const parts = names.map((n) => plain.get(n)!);
    const bytes = new Uint8Array(parts.reduce((a, t) => a + t.bytes.length, 0));
    let o = 0;
    for (const t of parts) { bytes.set(t.bytes, o); o += t.bytes.length; }
    return { dtype: parts[0].dtype, shape: [parts.reduce((a, t) => a + t.shape[0], 0), parts[0].shape[1]], bytes };
  };
  for (const [name, t] of plain) if (!/(q|k|v|gate|up)_proj/.test(name)) fused.push([name, t]);
  for (let l = 0; l < GQA.layers; l++) {
    const p = `model.layers.${l}`;
    fused.push([`${p}.self_attn.qkv_proj.weight`, cat(['q', 'k', 'v'].map((k) => `${p}.self_attn.${k}_proj.weight`))]);
    fused.push([`${p}.mlp.gate_up_proj.weight`, cat(['gate', 'up'].map((k) => `${p}.mlp.${k}_proj.weight`))]);
  }
  fs.writeFileSync(path.join(dir, 'model.safetensors'), writeSafetensors(fused, {}));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(hfConfig(w.config, { model_type: 'phi3', sliding_window: 47, tie_word_embeddings: true, rope_scaling: null })));
  const phi = await loadLlm(dir);
  assert.equal(phi.config.maxPositions, 47, 'the window bounds the cache');
  for (let l = 0; l < GQA.layers; l++) {
    for (const k of ['q', 'k', 'v', 'o', 'gate', 'up', 'down'] as const) {
      const a = phi.layers[l][k], b = w.layers[l][k];
      assert.ok(a.kind === 'f32' && b.kind === 'f32' && a.N === b.N);
      assert.deepEqual(a.data, b.data, `layer ${l} ${k}`);
    }
  }
  const want = await new ReferenceLlm(w, 32).forward(PROMPT, true);
  assert.deepEqual(await new ReferenceLlm(phi, 32).forward(PROMPT, true), want);
  const base = { ...hfConfig(llamaConfig()), model_type: 'phi3' };
  assert.throws(() => configFromHf({ ...base, rope_scaling: { type: 'longrope', short_factor: [1], long_factor: [1] } }), UnsupportedError);
  assert.throws(() => configFromHf({ ...base, partial_rotary_factor: 0.5 }), (e: unknown) => e instanceof UnsupportedError && /partial_rotary_factor/.test(e.message));
});
