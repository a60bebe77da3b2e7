// GPU-resident inputs and outputs: runGpu() keeps outputs on the GPU as GpuTensors, which feed the next run with no
// readback (the decoder's KV cache); results equal the CPU round trip's; misuse gets typed errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InferenceSession } from '../src/session.js';
import { GpuTensor } from '../src/backends/webgpu/gpu_tensor.js';
import { acquireGpu } from '../src/backends/webgpu/device.js';
import { InputError, UnsupportedError } from '../src/errors.js';
import { Tensor } from '../src/tensor.js';
import { fixture, ortRun, randomInt64, relErr } from './helpers.js';

const LAYERS = 2;
const argmaxLast = (logits: Tensor): number => {
  const d = logits.data as Float32Array;
  const V = logits.dims[logits.dims.length - 1];
  const off = d.length - V;
  let best = 0;
  for (let i = 1; i < V; i++) if (d[off + i] > d[off + best]) best = i;
  return best;
};

test('webgpu runGpu: a greedy decode loop with the KV cache on the GPU gives the same tokens and logits as run()', { timeout: 300_000 }, async () => {
  const model = fixture('decoder-small.onnx');
  const s = await InferenceSession.create(model, { backend: 'webgpu' });
  try {
    const empty = () => new Tensor('float32', new Float32Array(0), [1, 4, 0, 32]);
    const prompt = randomInt64([1, 12], 31, 1000);
    const STEPS = 6;

    // The CPU round trip: every output read back, fed again as Tensors; checked against onnxruntime-node.
    const cpuTokens: number[] = [];
    const cpuLogits: Tensor[] = [];
    let feeds: Record<string, Tensor> = { input_ids: prompt };
    for (let l = 0; l < LAYERS; l++) { feeds[`past_key_values.${l}.key`] = empty(); feeds[`past_key_values.${l}.value`] = empty(); }
    for (let t = 0; t < STEPS; t++) {
      const out = await s.run(feeds);
      if (t === STEPS - 1) {
        const want = await ortRun(model, feeds);
        assert.ok(relErr(out.logits, want.logits) <= 1e-3, `step ${t} logits against onnxruntime-node: ${relErr(out.logits, want.logits)}`);
      }
      cpuLogits.push(out.logits);
      const tok = argmaxLast(out.logits);
      cpuTokens.push(tok);
      feeds = { input_ids: new Tensor('int64', BigInt64Array.of(BigInt(tok)), [1, 1]) };
      for (let l = 0; l < LAYERS; l++) { feeds[`past_key_values.${l}.key`] = out[`present.${l}.key`]; feeds[`past_key_values.${l}.value`] = out[`present.${l}.value`]; }
    }

    // The GPU-resident loop: only the logits come back; the KV cache goes from one step to the next on the GPU.
    const gpuLoop = async (): Promise<number[]> => {
      const tokens: number[] = [];
      let gfeeds: Record<string, Tensor | GpuTensor> = { input_ids: prompt };
      for (let l = 0; l < LAYERS; l++) { gfeeds[`past_key_values.${l}.key`] = empty(); gfeeds[`past_key_values.${l}.value`] = empty(); }
      for (let t = 0; t < STEPS; t++) {
        const out = await s.runGpu(gfeeds);
        assert.ok(out.logits instanceof GpuTensor && out.logits.location === 'gpu-buffer');
        assert.deepEqual([...out['present.0.key'].dims], [1, 4, 12 + t, 32]);
        const logits = await out.logits.download();
        out.logits.dispose();
        assert.ok(relErr(logits, cpuLogits[t]) <= 1e-5, `step ${t}: GPU-resident logits ${relErr(logits, cpuLogits[t])} from the round trip's`);
        tokens.push(argmaxLast(logits));
        // The previous step's cache is no longer needed once this step has run.
        for (const v of Object.values(gfeeds)) if (v instanceof GpuTensor) v.dispose();
        gfeeds = { input_ids: new Tensor('int64', BigInt64Array.of(BigInt(tokens[t])), [1, 1]) };
        for (let l = 0; l < LAYERS; l++) { gfeeds[`past_key_values.${l}.key`] = out[`present.${l}.key`]; gfeeds[`past_key_values.${l}.value`] = out[`present.${l}.value`]; }
      }
      for (const v of Object.values(gfeeds)) if (v instanceof GpuTensor) v.dispose();
      return tokens;
    };
    const readsBefore = s.gpuStats!.midRunReads;
    assert.deepEqual(await gpuLoop(), cpuTokens, 'greedy tokens');
    assert.equal(s.gpuStats!.midRunReads, readsBefore, 'no readback inside the GPU-resident runs');
    // Disposed GPU tensors go back to the session's pool: a second pass allocates no new buffer.
    const mem = s.gpuInfo!.memory;
    assert.deepEqual(await gpuLoop(), cpuTokens);
    assert.deepEqual(s.gpuInfo!.memory, mem, 'GPU memory after a second GPU-resident pass');
  } finally {
    await s.release();
  }
});

test('webgpu runGpu: an app buffer wrapped by GpuTensor.fromBuffer is an input; fetches pick outputs; misuse is a typed error', { timeout: 300_000 }, async () => {
  const model = fixture('encoder-small.onnx');
  const ids = randomInt64([1, 16], 9, 1000);
  const mask = new Tensor('int64', new BigInt64Array(16).fill(1n), [1, 16]);
  const types = new Tensor('int64', new BigInt64Array(16), [1, 16]);
  const want = (await ortRun(model, { input_ids: ids, attention_mask: mask, token_type_ids: types })).last_hidden_state;
  const s = await InferenceSession.create(model, { backend: 'webgpu' });
  const { device } = await acquireGpu();
  // int64 is stored on the GPU as i32.
  const buf = device.createBuffer({ size: 64, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(buf, 0, Int32Array.from(ids.data as BigInt64Array, Number));
  const gIds = GpuTensor.fromBuffer(buf, { type: 'int64', dims: [1, 16], device });
  try {
    const out = await s.runGpu({ input_ids: gIds, attention_mask: mask, token_type_ids: types }, ['last_hidden_state']);
    assert.deepEqual(Object.keys(out), ['last_hidden_state']);
    const got = await out.last_hidden_state.download();
    assert.ok(relErr(got, want) <= 1e-3, `fromBuffer input: ${relErr(got, want)}`);
    // The GPU output also feeds run(), and the app's buffer is neither written nor destroyed.
    const again = await s.run({ input_ids: gIds, attention_mask: mask, token_type_ids: types });
    assert.ok(relErr(again.last_hidden_state, want) <= 1e-3);
    assert.deepEqual([...(await gIds.download()).data as BigInt64Array], [...ids.data as BigInt64Array]);
    out.last_hidden_state.dispose();
    await assert.rejects(out.last_hidden_state.download(), (e: unknown) => e instanceof InputError && /disposed/.test((e as Error).message));
    gIds.dispose();
    await assert.rejects(s.run({ input_ids: gIds, attention_mask: mask, token_type_ids: types }),
      (e: unknown) => e instanceof InputError && /disposed/.test((e as Error).message) && (e as InputError).message.includes('input_ids'));
    assert.throws(() => GpuTensor.fromBuffer(buf, { type: 'float32', dims: [1, 17], device }), InputError);
    // Wrong dims on a GPU tensor are caught like a Tensor's.
    const wrong = GpuTensor.fromBuffer(buf, { type: 'int64', dims: [16], device });
    await assert.rejects(s.runGpu({ input_ids: wrong, attention_mask: mask, token_type_ids: types }), InputError);
  } finally {
    await s.release();
    buf.destroy();
  }
  const w = await InferenceSession.create(model, { backend: 'wasm', threads: 1 });
  try {
    await assert.rejects(w.runGpu({ input_ids: ids, attention_mask: mask, token_type_ids: types }), UnsupportedError);
    const g = GpuTensor.fromBuffer(device.createBuffer({ size: 128, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC }), { type: 'int64', dims: [1, 16], device });
    await assert.rejects(w.run({ input_ids: g, attention_mask: mask, token_type_ids: types }), (e: unknown) => e instanceof InputError && /download/.test((e as Error).message));
  } finally {
    await w.release();
  }
});
