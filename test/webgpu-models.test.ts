// Real models on the WebGPU backend (a software Vulkan driver in CI) agree with onnxruntime-node within 1e-3 of
// max|ref|; the GPU memory a session holds stays fixed over runs; a lost device gives a typed error and a new session works.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { PNG } from 'pngjs';
import { InferenceSession } from '../src/session.js';
import { recInput } from '../src/apps/ocr.js';
import { DeviceLostError } from '../src/errors.js';
import { Tensor } from '../src/tensor.js';
import { acquireGpu } from '../src/backends/webgpu/device.js';
import { assertLikeOrt, detInput, fixture, OCR_CLS, OCR_DET, OCR_REC, ortRun, randomFloat, randomInt64, relErr, SILERO } from './helpers.js';

/** Runs each feed on webgpu and onnxruntime-node; returns the session's stats line. */
async function compare(model: string, feeds: Record<string, Tensor>[], label: string, expectNoFallback = true): Promise<void> {
  const s = await InferenceSession.create(model, { backend: 'webgpu' });
  try {
    for (const f of feeds) {
      await assertLikeOrt(model, f, await s.run(f), 1e-3, label);
    }
    const st = s.gpuStats!;
    console.log(`${label}: ${st.gpuNodes} GPU node runs, ${st.cpuNodes} CPU shape nodes, ${st.fallbackNodes} fallback (${[...st.fallbackOps].map(([k, v]) => `${k}×${v}`).join(' ')}), ${st.midRunReads} mid-run reads`);
    if (expectNoFallback) assert.equal(st.fallbackNodes, 0, `${label}: every node ran on the GPU or as CPU shape arithmetic`);
  } finally {
    await s.release();
  }
}

test('webgpu: PP-OCRv4 recognition on a real text line', { timeout: 600_000 }, async () => {
  const png = PNG.sync.read(fs.readFileSync(fixture('ocr/hello.png')));
  await compare(OCR_REC, [{ x: recInput({ width: png.width, height: png.height, data: png.data }) }], 'PP-OCRv4 rec');
});

test('webgpu: PP-OCRv4 detection and the direction classifier', { timeout: 1_200_000 }, async () => {
  const png = PNG.sync.read(fs.readFileSync(fixture('ocr/hello.png')));
  // The real text line ([1,3,64,352]). Uniform random input is no oracle here: on it every webjit backend agrees with
  // the others to 1e-5 but not with onnxruntime-node (noted in bench/NOTES.md, session 4).
  await compare(OCR_DET, [{ x: detInput(fixture('ocr/hello.png')) }], 'PP-OCRv4 det');
  await compare(OCR_CLS, [{ x: recInput({ width: png.width, height: png.height, data: png.data }, 48, 192) }], 'PP-OCR cls');
});

test('webgpu: Silero VAD streams three chunks (its LSTM runs on the reference fallback)', { timeout: 300_000 }, async () => {
  for (const v of ['silero_vad', 'silero_vad_op18_ifless']) {
    const s = await InferenceSession.create(SILERO(v), { backend: 'webgpu' });
    let state = new Tensor('float32', new Float32Array(256), [2, 1, 128]);
    const sr = new Tensor('int64', [16000n], []);
    for (let c = 0; c < 3; c++) {
      const feeds = { input: randomFloat([1, 512], 200 + c, -0.5, 0.5), state, sr };
      const got = await s.run(feeds);
      const want = await ortRun(SILERO(v), feeds);
      for (const k of Object.keys(want)) assert.ok(relErr(got[k], want[k]) <= 1e-3, `${v} chunk ${c} ${k}: ${relErr(got[k], want[k])}`);
      state = got.stateN;
    }
    await s.release();
  }
});

test('webgpu: BERT-style encoder at sequence 128 with padding, batch 1 and 2', { timeout: 600_000 }, async () => {
  for (const b of [1, 2]) {
    const mask = new BigInt64Array(128 * b).fill(1n);
    mask.fill(0n, 120);
    await compare(fixture('encoder-small.onnx'), [{
      input_ids: randomInt64([b, 128], 4 + b, 1000),
      attention_mask: new Tensor('int64', mask, [b, 128]),
      token_type_ids: new Tensor('int64', new BigInt64Array(128 * b), [b, 128]),
    }], `encoder-small b${b}`);
  }
});

test('webgpu: GPT-2-style decoder prefill and a decode step', { timeout: 300_000 }, async () => {
  const empty = () => new Tensor('float32', new Float32Array(0), [1, 4, 0, 32]);
  const pre: Record<string, Tensor> = { input_ids: randomInt64([1, 16], 21, 1000) };
  for (let l = 0; l < 2; l++) { pre[`past_key_values.${l}.key`] = empty(); pre[`past_key_values.${l}.value`] = empty(); }
  const out = await ortRun(fixture('decoder-small.onnx'), pre);
  const step: Record<string, Tensor> = { input_ids: randomInt64([1, 1], 22, 1000) };
  for (let l = 0; l < 2; l++) { step[`past_key_values.${l}.key`] = out[`present.${l}.key`]; step[`past_key_values.${l}.value`] = out[`present.${l}.value`]; }
  await compare(fixture('decoder-small.onnx'), [pre, step], 'decoder-small');
});

test('webgpu: the GPU memory a session holds is the same after 5 and after 50 runs, and steady runs make no bind group', { timeout: 300_000 }, async () => {
  const s = await InferenceSession.create(fixture('encoder-small.onnx'), { backend: 'webgpu' });
  const feeds = { input_ids: randomInt64([1, 32], 1, 1000), attention_mask: new Tensor('int64', new BigInt64Array(32).fill(1n), [1, 32]), token_type_ids: new Tensor('int64', new BigInt64Array(32), [1, 32]) };
  for (let i = 0; i < 5; i++) await s.run(feeds);
  const m5 = s.gpuInfo!.memory;
  const groups5 = s.gpuStats!.bindGroupsMade;
  let last: Tensor | undefined;
  for (let i = 0; i < 45; i++) last = (await s.run(feeds)).last_hidden_state;
  assert.deepEqual(s.gpuInfo!.memory, m5);
  // Each run gets the same buffers in the same order, so every bind group is found again (a 1.6× difference on BERT-base).
  assert.equal(s.gpuStats!.bindGroupsMade, groups5, 'steady-state runs reuse their bind groups');
  assert.equal(relErr(last!, (await ortRun(fixture('encoder-small.onnx'), feeds)).last_hidden_state) <= 1e-3, true);
  await s.release();
});

test('webgpu: a lost device rejects runs with DeviceLostError, and a new session gets a new device', { timeout: 300_000 }, async () => {
  const model = fixture('encoder-small.onnx');
  // The memory test's shape: its kernels are compiled already (a cold software-driver shader cache takes seconds each).
  const feeds = { input_ids: randomInt64([1, 32], 3, 1000), attention_mask: new Tensor('int64', new BigInt64Array(32).fill(1n), [1, 32]), token_type_ids: new Tensor('int64', new BigInt64Array(32), [1, 32]) };
  const s = await InferenceSession.create(model, { backend: 'webgpu' });
  await s.run(feeds);
  const gpu = await acquireGpu();
  gpu.device.destroy();
  await new Promise((r) => setTimeout(r, 50));
  await assert.rejects(s.run(feeds), (e: unknown) => e instanceof DeviceLostError && /lost/.test((e as Error).message));
  await s.release();
  const s2 = await InferenceSession.create(model, { backend: 'webgpu' });
  const got = await s2.run(feeds);
  assert.ok(relErr(got.last_hidden_state, (await ortRun(model, feeds)).last_hidden_state) <= 1e-3);
  await s2.release();
});

// f16 weights: one test per model, each compiling one model's f16 kernels (conv, matmul, layer norm on PP-OCRv4 rec;
// matmul, embedding gather, attention, layer norm on the encoder). The f32 runs use the shapes the tests above ran, so
// their kernels are compiled already: the real text line's [1, 3, 48, 320] and the encoder's [1, 32].
async function f16Case(name: string, model: string, feeds: Record<string, Tensor>): Promise<void> {
  const want = await ortRun(model, feeds);
  const k = Object.keys(want)[0];
  const errs: number[] = [];
  for (const precision of ['f32', 'f16'] as const) {
    const s = await InferenceSession.create(model, { backend: 'webgpu', precision });
    errs.push(relErr((await s.run(feeds))[k], want[k]));
    await s.release();
  }
  console.log(`${name}: relative error f32 ${errs[0].toExponential(2)}, f16 weights ${errs[1].toExponential(2)}`);
  assert.ok(errs[1] <= 2e-3, `${name} f16: ${errs[1]}`);
  assert.ok(errs[1] > errs[0], `${name}: the f16 weights were used`);
}

test("webgpu precision 'f16': f16 weights keep PP-OCRv4 rec within 2e-3 of onnxruntime-node", { timeout: 300_000 }, async () => {
  await f16Case('PP-OCRv4 rec', OCR_REC, { x: randomFloat([1, 3, 48, 320], 3, -1, 1) });
});

test("webgpu precision 'f16': f16 weights keep the encoder within 2e-3 of onnxruntime-node", { timeout: 300_000 }, async () => {
  await f16Case('encoder-small', fixture('encoder-small.onnx'), {
    input_ids: randomInt64([1, 32], 4, 1000), attention_mask: new Tensor('int64', new BigInt64Array(32).fill(1n), [1, 32]),
    token_type_ids: new Tensor('int64', new BigInt64Array(32), [1, 32]),
  });
});
