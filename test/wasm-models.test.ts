// Real models on the Wasm backend (2 threads) agree with onnxruntime-node within 1e-4 of max|ref|.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { PNG } from 'pngjs';
import { InferenceSession } from '../src/session.js';
import { recInput } from '../src/apps/ocr.js';
import { Tensor } from '../src/tensor.js';
import { assertLikeOrt, detInput, fixture, OCR_CLS, OCR_DET, OCR_REC, ortRun, randomFloat, randomInt64, relErr, SILERO } from './helpers.js';

async function compare(model: string, feeds: Record<string, Tensor>[], label: string): Promise<void> {
  const s = await InferenceSession.create(model, { backend: 'wasm', threads: 2 });
  try {
    for (const f of feeds) {
      await assertLikeOrt(model, f, await s.run(f), 1e-4, label);
    }
    const st = s.stats!;
    console.log(`${label}: ${st.wasmNodes} node runs on Wasm kernels, ${st.fallbackNodes} on the reference fallback (${[...st.fallbackOps].map(([k, v]) => `${k}×${v}`).join(' ')})`);
  } finally {
    await s.release();
  }
}

test('wasm: PP-OCRv4 recognition on a real text line', { timeout: 300_000 }, async () => {
  const png = PNG.sync.read(fs.readFileSync(fixture('ocr/hello.png')));
  await compare(OCR_REC, [{ x: recInput({ width: png.width, height: png.height, data: png.data }) }], 'PP-OCRv4 rec');
});

test('wasm: PP-OCRv4 detection and the direction classifier (ConvTranspose, folded BatchNorm, fused conv activations)', { timeout: 300_000 }, async () => {
  // A real text line: the probability map has text (values near 1), not only ~0 as for random input.
  const png = PNG.sync.read(fs.readFileSync(fixture('ocr/hello.png')));
  await compare(OCR_DET, [{ x: detInput(fixture('ocr/hello.png')) }], 'PP-OCRv4 det');
  await compare(OCR_CLS, [{ x: recInput({ width: png.width, height: png.height, data: png.data }, 48, 192) }], 'PP-OCR cls');
});

test('wasm: Silero VAD streams three chunks', { timeout: 120_000 }, async () => {
  for (const v of ['silero_vad', 'silero_vad_op18_ifless']) {
    const s = await InferenceSession.create(SILERO(v), { backend: 'wasm', threads: 2 });
    let state = new Tensor('float32', new Float32Array(256), [2, 1, 128]);
    const sr = new Tensor('int64', [16000n], []);
    for (let c = 0; c < 3; c++) {
      const feeds = { input: randomFloat([1, 512], 200 + c, -0.5, 0.5), state, sr };
      const got = await s.run(feeds);
      const want = await ortRun(SILERO(v), feeds);
      for (const k of Object.keys(want)) assert.ok(relErr(got[k], want[k]) <= 1e-4, `${v} chunk ${c} ${k}: ${relErr(got[k], want[k])}`);
      state = got.stateN;
    }
    await s.release();
  }
});

test('wasm: BERT-style encoder at sequence 128 with padding', { timeout: 120_000 }, async () => {
  const mask = new BigInt64Array(128).fill(1n);
  mask.fill(0n, 120);
  await compare(fixture('encoder-small.onnx'), [{
    input_ids: randomInt64([1, 128], 4, 1000),
    attention_mask: new Tensor('int64', mask, [1, 128]),
    token_type_ids: new Tensor('int64', new BigInt64Array(128), [1, 128]),
  }], 'encoder-small');
});

test('wasm: GPT-2-style decoder prefill and a decode step', { timeout: 120_000 }, async () => {
  const empty = () => new Tensor('float32', new Float32Array(0), [1, 4, 0, 32]);
  const pre: Record<string, Tensor> = { input_ids: randomInt64([1, 16], 21, 1000) };
  for (let l = 0; l < 2; l++) { pre[`past_key_values.${l}.key`] = empty(); pre[`past_key_values.${l}.value`] = empty(); }
  const s = await InferenceSession.create(fixture('decoder-small.onnx'), { backend: 'wasm', threads: 2 });
  const out = await s.run(pre);
  await s.release();
  const step: Record<string, Tensor> = { input_ids: randomInt64([1, 1], 22, 1000) };
  for (let l = 0; l < 2; l++) { step[`past_key_values.${l}.key`] = out[`present.${l}.key`]; step[`past_key_values.${l}.value`] = out[`present.${l}.value`]; }
  await compare(fixture('decoder-small.onnx'), [pre, step], 'decoder-small');
});

test('wasm: release frees the Wasm memory the session used', async () => {
  const s = await InferenceSession.create(fixture('encoder-small.onnx'), { backend: 'wasm', threads: 1 });
  const feeds = { input_ids: randomInt64([1, 32], 1, 1000), attention_mask: new Tensor('int64', new BigInt64Array(32).fill(1n), [1, 32]), token_type_ids: new Tensor('int64', new BigInt64Array(32), [1, 32]) };
  await s.run(feeds);
  const rt = (s as unknown as { wasm: { rt: { mem: { bytesInUse: number } } } }).wasm.rt;
  const weights = rt.mem.bytesInUse;
  for (let i = 0; i < 5; i++) await s.run(feeds);
  // Between runs only the weights (and packed copies of them) stay allocated.
  assert.equal(rt.mem.bytesInUse, weights);
  await s.release();
});
