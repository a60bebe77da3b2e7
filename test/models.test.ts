// Real models on the reference backend agree with onnxruntime-node within 1e-4 relative error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InferenceSession } from '../src/session.js';
import { Tensor } from '../src/tensor.js';
import * as fs from 'node:fs';
import { PNG } from 'pngjs';
import { detInput, fixture, OCR_CLS, OCR_DET, OCR_REC, ortRun, randomFloat, randomInt64, relErr, SILERO } from './helpers.js';

const TOL = 1e-4;

async function compare(model: string, feeds: Record<string, Tensor>, tol = TOL): Promise<Record<string, Tensor>> {
  const s = await InferenceSession.create(model, { backend: 'reference' });
  const got = await s.run(feeds);
  const want = await ortRun(model, feeds);
  assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort());
  for (const k of Object.keys(want)) {
    assert.equal(got[k].type, want[k].type, `${k} dtype`);
    const e = relErr(got[k], want[k]);
    assert.ok(e <= tol, `${model} output ${k}: relative error ${e} > ${tol}`);
  }
  await s.release();
  return got;
}

test('PP-OCRv4 text recognition [1,3,48,320] matches onnxruntime', { timeout: 300_000 }, async () => {
  const out = await compare(OCR_REC, { x: randomFloat([1, 3, 48, 320], 7) });
  const y = Object.values(out)[0];
  assert.deepEqual(y.dims, [1, 40, 6625]);
});

for (const v of ['silero_vad', 'silero_vad_16k_op15', 'silero_vad_op18_ifless']) {
  test(`Silero VAD (${v}) matches onnxruntime over a stream of chunks`, { timeout: 120_000 }, async () => {
    const s = await InferenceSession.create(SILERO(v));
    let state = new Tensor('float32', new Float32Array(2 * 128), [2, 1, 128]);
    const sr = new Tensor('int64', new BigInt64Array([16000n]), []);
    for (let chunk = 0; chunk < 3; chunk++) {
      const feeds = { input: randomFloat([1, 512], 100 + chunk, -0.5, 0.5), state, sr };
      const got = await s.run(feeds);
      const want = await ortRun(SILERO(v), feeds);
      for (const k of Object.keys(want)) assert.ok(relErr(got[k], want[k]) <= TOL, `${v} chunk ${chunk} ${k}: ${relErr(got[k], want[k])}`);
      const p = (got.output.data as Float32Array)[0];
      assert.ok(p >= 0 && p <= 1, `speech probability ${p} out of [0,1]`);
      state = got.stateN;
    }
  });
}

for (const seq of [16, 128]) {
  test(`BERT-style encoder at sequence ${seq} with padding matches onnxruntime`, { timeout: 120_000 }, async () => {
    const mask = new BigInt64Array(seq).fill(1n);
    mask.fill(0n, seq - 3);
    await compare(fixture('encoder-small.onnx'), {
      input_ids: randomInt64([1, seq], seq, 1000),
      attention_mask: new Tensor('int64', mask, [1, seq]),
      token_type_ids: new Tensor('int64', new BigInt64Array(seq), [1, seq]),
    });
  });
}

test('encoder with external data gives the same outputs as the inline one', async () => {
  const feeds = {
    input_ids: randomInt64([2, 8], 3, 1000),
    attention_mask: new Tensor('int64', new BigInt64Array(16).fill(1n), [2, 8]),
    token_type_ids: new Tensor('int64', new BigInt64Array(16), [2, 8]),
  };
  const a = await (await InferenceSession.create(fixture('encoder-small.onnx'))).run(feeds);
  const b = await (await InferenceSession.create(fixture('encoder-small-external.onnx'))).run(feeds);
  assert.deepEqual(b.last_hidden_state.data, a.last_hidden_state.data);
});

test('GPT-2-style decoder: 8-token prefill, then a decode step on the KV cache, match onnxruntime', { timeout: 120_000 }, async () => {
  const L = 2, H = 4, hd = 32;
  const empty = () => new Tensor('float32', new Float32Array(0), [1, H, 0, hd]);
  const feeds: Record<string, Tensor> = { input_ids: randomInt64([1, 8], 11, 1000) };
  for (let l = 0; l < L; l++) { feeds[`past_key_values.${l}.key`] = empty(); feeds[`past_key_values.${l}.value`] = empty(); }
  const pre = await compare(fixture('decoder-small.onnx'), feeds);
  assert.deepEqual(pre.logits.dims, [1, 8, 1000]);
  assert.deepEqual(pre['present.0.key'].dims, [1, H, 8, hd]);
  const step: Record<string, Tensor> = { input_ids: randomInt64([1, 1], 12, 1000) };
  for (let l = 0; l < L; l++) {
    step[`past_key_values.${l}.key`] = pre[`present.${l}.key`];
    step[`past_key_values.${l}.value`] = pre[`present.${l}.value`];
  }
  const dec = await compare(fixture('decoder-small.onnx'), step);
  assert.deepEqual(dec['present.1.value'].dims, [1, H, 9, hd]);
});

test('PP-OCRv4 text detection on a real text line matches onnxruntime and finds the text', { timeout: 300_000 }, async () => {
  const out = await compare(OCR_DET, { x: detInput(fixture('ocr/hello.png')) });
  const y = Object.values(out)[0];
  const d = y.data as Float32Array;
  let text = 0;
  for (const v of d) if (v > 0.5) text++;
  assert.ok(text > d.length * 0.1, `only ${text} of ${d.length} pixels detected as text`);
});

test('PP-OCR direction classifier matches onnxruntime', async () => {
  await compare(OCR_CLS, { x: randomFloat([2, 3, 48, 192], 9) });
});
