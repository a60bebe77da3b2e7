// Long runs and concurrency on the WebGPU backend (software Vulkan in CI): 10,000 runs hold the same GPU buffers and
// make no bind group after the first runs, the JS heap stays within 5%, and the results stay right; sessions run
// concurrently in one process give the results of sequential runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InferenceSession } from '../src/session.js';
import { Tensor } from '../src/tensor.js';
import { fixture, randomFloat, randomInt64, relErr, smallCnnModel } from './helpers.js';

test('10,000 runs of a small CNN on WebGPU: fixed GPU memory and bind groups, JS heap within 5%, outputs right', { timeout: 600_000 }, async () => {
  const v8 = await import('node:v8');
  const vm = await import('node:vm');
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const model = smallCnnModel();
  const s = await InferenceSession.create(model, { backend: 'webgpu', tuning: 'off' });
  const ref = await InferenceSession.create(model, { backend: 'reference' });
  const inputs = [0, 1, 2].map((k) => ({ x: randomFloat([1, 8, 14, 14], 40 + k, -1, 1), z: randomFloat([1, 8, 1, 14], 50 + k, -1, 1) }));
  const want = await Promise.all(inputs.map((f) => ref.run(f)));
  const marks: { bytes: number; buffers: number; groups: number; heap: number }[] = [];
  // The heap is read after the event loop has turned (Dawn's objects are released there) and two full collections:
  // one collection after a run left up to 6% of the heap uncollected under load.
  const mark = async () => {
    await new Promise((r) => setImmediate(r));
    gc(); gc();
    const m = s.gpuInfo!.memory;
    marks.push({ bytes: m.bytes, buffers: m.buffers, groups: s.gpuStats!.bindGroupsMade, heap: process.memoryUsage().heapUsed });
  };
  try {
    for (let i = 1; i <= 10_000; i++) {
      const k = i % 3;
      const out = await s.run(inputs[k]);
      if (i % 997 === 0 || i === 10_000) {
        for (const name of Object.keys(want[k])) assert.ok(relErr(out[name], want[k][name]) <= 1e-4, `run ${i} ${name}: ${relErr(out[name], want[k][name])}`);
      }
      if (i === 100 || i === 1_000 || i === 10_000) await mark();
    }
  } finally {
    await s.release();
    await ref.release();
  }
  const [a, k, b] = marks;
  console.log(`webgpu 10,000 runs: GPU ${a.buffers} buffers / ${a.bytes} bytes at run 100, ${b.buffers} / ${b.bytes} at 10,000; bind groups ${a.groups} → ${b.groups}; JS heap ${a.heap} (run 100) → ${k.heap} (1,000) → ${b.heap} (10,000)`);
  assert.equal(b.bytes, a.bytes, 'GPU bytes held, run 100 to 10,000');
  assert.equal(b.buffers, a.buffers, 'GPU buffers held, run 100 to 10,000');
  assert.equal(b.groups, a.groups, 'no bind group made after run 100');
  assert.ok(b.heap <= a.heap * 1.05, `JS heap grew from ${a.heap} (run 100) to ${b.heap} bytes (run 10,000)`);
});

test('WebGPU sessions run concurrently in one process give the results of sequential runs', { timeout: 600_000 }, async () => {
  const enc = fixture('encoder-small.onnx');
  const cnn = smallCnnModel();
  const encFeeds = (seed: number) => ({
    input_ids: randomInt64([1, 16], seed, 1000),
    attention_mask: new Tensor('int64', new BigInt64Array(16).fill(1n), [1, 16]),
    token_type_ids: new Tensor('int64', new BigInt64Array(16), [1, 16]),
  });
  const cnnFeeds = (seed: number) => ({ x: randomFloat([1, 8, 14, 14], seed, -1, 1), z: randomFloat([1, 8, 1, 14], seed + 1, -1, 1) });
  const a = await InferenceSession.create(enc, { backend: 'webgpu', tuning: 'off' });
  const b = await InferenceSession.create(cnn, { backend: 'webgpu', tuning: 'off' });
  const a2 = await InferenceSession.create(enc, { backend: 'webgpu', tuning: 'off' });
  try {
    const jobs: [InferenceSession, Record<string, Tensor>][] = [];
    for (let i = 0; i < 8; i++) jobs.push([a, encFeeds(100 + i)], [b, cnnFeeds(200 + i)], [a2, encFeeds(300 + i)]);
    const sequential: Record<string, Tensor>[] = [];
    for (const [s, f] of jobs) sequential.push(await s.run(f));
    const concurrent = await Promise.all(jobs.map(([s, f]) => s.run(f)));
    concurrent.forEach((got, i) => {
      for (const k of Object.keys(sequential[i])) {
        assert.deepEqual(got[k].dims, sequential[i][k].dims);
        assert.equal(relErr(got[k], sequential[i][k]), 0, `job ${i} output ${k}: concurrent differs from sequential`);
      }
    });
  } finally {
    await Promise.all([a.release(), b.release(), a2.release()]);
  }
});
