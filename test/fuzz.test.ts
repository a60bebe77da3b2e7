// Malformed input: mutated and truncated real model files either load or throw webjit's typed error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fuzz } from './fuzz/harness.js';
import { fixture, OCR_CLS, ONNX_TESTS, SILERO } from './helpers.js';

const CASES = Number(process.env.WEBJIT_FUZZ_CASES ?? 1200);

test(`fuzz: ${CASES} mutants of real models never crash or hang`, { timeout: 1_800_000 }, async () => {
  const small = ['test_lstm_defaults', 'test_if', 'test_loop11', 'test_scan9_sum', 'test_conv_with_strides_padding', 'test_resize_upsample_scales_linear',
    'test_gather_0', 'test_layer_normalization_4d_axis0', 'test_sequence_insert_at_back', 'test_cast_FLOAT_to_FLOAT16', 'test_reduce_sum_keepdims_example',
    'test_attention_4d_with_past_and_present', 'test_gru_defaults', 'test_range_float_type_positive_delta_expanded']
    .map((t) => path.join(ONNX_TESTS, 'node', t, 'model.onnx')).filter((f) => fs.existsSync(f));
  const files = [SILERO('silero_vad'), SILERO('silero_vad_op18_ifless'), fixture('encoder-small.onnx'), fixture('decoder-small.onnx'), OCR_CLS, ...small];
  const rep = await fuzz(files, CASES);
  console.log(`fuzz: ${rep.cases} cases over ${files.length} files: ${rep.ok} loaded, ${rep.typed} typed errors, ${rep.crashes.length} crashes, ${rep.hangs.length} hangs; by mutation ${JSON.stringify(rep.byKind)}`);
  assert.equal(rep.cases, CASES);
  assert.deepEqual(rep.hangs, []);
  assert.deepEqual(rep.crashes.slice(0, 5), []);
  // Mutants must exercise both paths, or the test proves nothing.
  assert.ok(rep.typed > CASES / 10, `only ${rep.typed} typed errors`);
  assert.ok(rep.ok > CASES / 20, `only ${rep.ok} mutants loaded`);
});
