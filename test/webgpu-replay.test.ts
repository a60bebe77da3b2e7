// Replayed runs on the WebGPU backend (executor.ts, Trace): from the third run() with feeds of one signature, a run
// is a replay of the second's recording. Replays must give exactly what a normal run gives, for any feed data, and
// must step aside whenever the recording no longer holds (other dims, plans that read feed data, runGpu).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InferenceSession } from '../src/session.js';
import { InputError } from '../src/errors.js';
import { Tensor } from '../src/tensor.js';
import { writeModel } from '../src/bench/onnx_writer.js';
import { fixture, OCR_REC, randomFloat } from './helpers.js';

const encoderFeeds = (b: number, S: number, seed: number) => {
  const n = b * S;
  return {
    input_ids: new Tensor('int64', BigInt64Array.from({ length: n }, (_, i) => BigInt((i * 7919 + 131 * seed) % 1000)), [b, S]),
    // A different number of masked keys every run: the mask's CPU nodes are redone in each replay.
    attention_mask: new Tensor('int64', BigInt64Array.from({ length: n }, (_, i) => (i % S < S - 1 - seed ? 1n : 0n)), [b, S]),
    token_type_ids: new Tensor('int64', BigInt64Array.from({ length: n }, (_, i) => BigInt((i + seed) & 1)), [b, S]),
  };
};

const data = (t: Tensor) => t.data as Float32Array;

test('webgpu replay: runs replayed from a recording equal normal runs bit for bit, with new data each run', { timeout: 600_000 }, async () => {
  const model = fixture('encoder-small.onnx');
  const s = await InferenceSession.create(model, { backend: 'webgpu' });
  const plain = await InferenceSession.create(model, { backend: 'webgpu', replay: false });
  for (let i = 0; i < 6; i++) {
    const feeds = encoderFeeds(2, 32, i);
    const got = (await s.run(feeds)).last_hidden_state;
    const want = (await plain.run(feeds)).last_hidden_state;
    assert.deepEqual(got.dims, want.dims);
    assert.deepEqual(data(got), data(want), `run ${i}`);
    // Runs 0 and 1 are normal (the second one records), the rest replay.
    assert.equal(s.gpuStats!.replays, Math.max(0, i - 1), `replays after run ${i}`);
  }
  assert.equal(plain.gpuStats!.replays, 0);
  // The node counts of a replay are those of the run it replays.
  assert.equal(s.gpuStats!.gpuNodes, plain.gpuStats!.gpuNodes);
  assert.equal(s.gpuStats!.cpuNodes, plain.gpuStats!.cpuNodes);
  // Another sequence length runs normally (and right), then gets its own recording; the first one's feeds replay again
  // after theirs is recorded anew.
  for (const [S, seed] of [[24, 7], [24, 8], [24, 9], [32, 10], [32, 11], [32, 12]]) {
    const feeds = encoderFeeds(2, S, seed);
    const before = s.gpuStats!.replays;
    const got = (await s.run(feeds)).last_hidden_state;
    assert.deepEqual(data(got), data((await plain.run(feeds)).last_hidden_state), `S ${S} seed ${seed}`);
    assert.equal(s.gpuStats!.replays - before, seed === 9 || seed === 12 ? 1 : 0, `S ${S} seed ${seed} replayed`);
  }
  await s.release();
  await plain.release();
});

test('webgpu replay: a feed whose data decides dims or a kernel plan is never replayed wrongly', { timeout: 300_000 }, async () => {
  // NonZero on the CPU: the number of indices depends on the mask's data, so a replay must notice the new dims.
  const nz = writeModel({
    nodes: [
      { op: 'NonZero', inputs: ['m'], outputs: ['nz'] },
      { op: 'Squeeze', inputs: ['nz', 'ax'], outputs: ['idx'] },
      { op: 'Gather', inputs: ['x', 'idx'], outputs: ['g'] },
      { op: 'Exp', inputs: ['g'], outputs: ['y'] },
    ],
    inputs: [{ name: 'x', dtype: 'float32', dims: [8, 64] }, { name: 'm', dtype: 'bool', dims: [8] }],
    outputs: [{ name: 'y', dtype: 'float32' }],
    initializers: { ax: new Tensor('int64', BigInt64Array.from([0n]), [1]) },
    opset: 17,
  });
  const s = await InferenceSession.create(nz, { backend: 'webgpu' });
  const x = randomFloat([8, 64], 3);
  const masks = [[1, 0, 1, 0, 0, 1, 0, 0], [0, 1, 0, 1, 0, 0, 0, 1], [1, 1, 0, 0, 0, 0, 1, 0], [1, 1, 1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 0, 0, 0, 0]];
  for (const m of masks) {
    const y = (await s.run({ x, m: new Tensor('bool', Uint8Array.from(m), [8]) })).y;
    const rows = m.flatMap((v, r) => (v ? [r] : []));
    assert.deepEqual(y.dims, [rows.length, 64]);
    rows.forEach((r, k) => {
      for (let j = 0; j < 64; j++) assert.ok(Math.abs(data(y)[k * 64 + j] - Math.exp(data(x)[r * 64 + j])) <= 1e-5 * Math.exp(1), `mask ${m} row ${r}`);
    });
  }
  // Runs 3 (three rows again) replays; runs 4 and 5 (other counts) find new dims and run normally.
  assert.equal(s.gpuStats!.replays, 1);
  await s.release();

  // Reshape to a shape fed as data: a view whose dims read a feed's values is never recorded.
  const rs = writeModel({
    nodes: [{ op: 'Reshape', inputs: ['x', 'shape'], outputs: ['r'] }, { op: 'Softmax', inputs: ['r'], outputs: ['y'], attrs: { axis: -1 } }],
    inputs: [{ name: 'x', dtype: 'float32', dims: [4, 6] }, { name: 'shape', dtype: 'int64', dims: [2] }],
    outputs: [{ name: 'y', dtype: 'float32' }],
    initializers: {},
    opset: 17,
  });
  const r = await InferenceSession.create(rs, { backend: 'webgpu' });
  const xr = randomFloat([4, 6], 5);
  for (const shape of [[4, 6], [4, 6], [3, 8], [2, 12], [4, 6]]) {
    const y = (await r.run({ x: xr, shape: new Tensor('int64', BigInt64Array.from(shape.map(BigInt)), [2]) })).y;
    assert.deepEqual(y.dims, shape);
    for (let row = 0; row < shape[0]; row++) {
      const seg = Array.from(data(xr).slice(row * shape[1], (row + 1) * shape[1]));
      const mx = Math.max(...seg), z = seg.reduce((a, v) => a + Math.exp(v - mx), 0);
      seg.forEach((v, j) => assert.ok(Math.abs(data(y)[row * shape[1] + j] - Math.exp(v - mx) / z) < 1e-6, `shape ${shape}`));
    }
  }
  assert.equal(r.gpuStats!.replays, 0);
  await r.release();
});

test('webgpu replay: runGpu outputs are never overwritten by replays, and bad ids still fail by name', { timeout: 300_000 }, async () => {
  const model = fixture('encoder-small.onnx');
  const s = await InferenceSession.create(model, { backend: 'webgpu' });
  const plain = await InferenceSession.create(model, { backend: 'webgpu', replay: false });
  for (let i = 0; i < 3; i++) await s.run(encoderFeeds(1, 16, i));
  assert.equal(s.gpuStats!.replays, 1);
  const kept = (await s.runGpu(encoderFeeds(1, 16, 20))).last_hidden_state;
  for (let i = 0; i < 4; i++) await s.run(encoderFeeds(1, 16, 30 + i));
  assert.ok(s.gpuStats!.replays >= 2, 'runs after runGpu record and replay again');
  const want = (await plain.run(encoderFeeds(1, 16, 20))).last_hidden_state;
  assert.deepEqual(data(await kept.download()), data(want), 'the runGpu output kept its values through later replays');
  kept.dispose();

  // An id past the vocabulary in a replayed run: the Gather's fault words are read back with the outputs.
  const bad = encoderFeeds(1, 16, 40);
  (bad.input_ids.data as BigInt64Array)[5] = 5000n;
  const replays = s.gpuStats!.replays;
  await assert.rejects(s.run(bad), (e: unknown) => e instanceof InputError && /5000/.test(e.message) && (e as InputError).where.op === 'Gather');
  assert.equal(s.gpuStats!.replays, replays + 1, 'the failing run was a replay');
  const ok = encoderFeeds(1, 16, 41);
  assert.deepEqual(data((await s.run(ok)).last_hidden_state), data((await plain.run(ok)).last_hidden_state));
  await s.release();
  await plain.release();
});

test('webgpu timeRuns replays every dispatch of the run (none submitted while it records)', { timeout: 300_000 }, async () => {
  const s = await InferenceSession.create(OCR_REC, { backend: 'webgpu' });
  const x = randomFloat([1, 3, 48, 96], 9, 0, 1);
  await s.run({ x });
  await s.run({ x });
  const inner = s as unknown as { gpu: { trace: { cmds: unknown[] } | null; timeRuns(f: Map<string, unknown>[], reps: number, rounds: number): Promise<number[]> } };
  const recorded = inner.gpu.trace!.cmds.length;
  assert.ok(recorded > 100, `PP-OCRv4 rec records ${recorded} dispatches`);
  const times = await inner.gpu.timeRuns([new Map([['x', x]])], 1, 1);
  assert.equal(times.length, 1);
  assert.equal(s.gpuStats!.timedDispatches, recorded);
  await s.release();
});

test('webgpu: a CPU node whose output came out large runs on the GPU from the next run on', { timeout: 300_000 }, async () => {
  // encoder-small's token-type embedding: a Gather of [8, 32] ids (small, on the CPU) from a [2, 128] table makes
  // [8, 32, 128] = 32768 values, past the CPU's 16384: uploading that every run cost more than the kernel.
  const s = await InferenceSession.create(fixture('encoder-small.onnx'), { backend: 'webgpu', replay: false });
  const plain = await InferenceSession.create(fixture('encoder-small.onnx'), { backend: 'reference' });
  const perRun: { cpu: number; gpu: number }[] = [];
  for (let i = 0; i < 3; i++) {
    const before = { cpu: s.gpuStats!.cpuNodes, gpu: s.gpuStats!.gpuNodes };
    const feeds = encoderFeeds(8, 32, i);
    const got = (await s.run(feeds)).last_hidden_state;
    perRun.push({ cpu: s.gpuStats!.cpuNodes - before.cpu, gpu: s.gpuStats!.gpuNodes - before.gpu });
    const want = (await plain.run(feeds)).last_hidden_state;
    let md = 0, mx = 0;
    for (let k = 0; k < data(want).length; k++) { md = Math.max(md, Math.abs(data(got)[k] - data(want)[k])); mx = Math.max(mx, Math.abs(data(want)[k])); }
    assert.ok(md <= 1e-4 * mx, `run ${i}: ${md / mx}`);
  }
  assert.deepEqual(perRun[1], { cpu: perRun[0].cpu - 1, gpu: perRun[0].gpu + 1 }, JSON.stringify(perRun));
  assert.deepEqual(perRun[2], perRun[1]);
  await s.release();
  await plain.release();
});
