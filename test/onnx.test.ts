// Loader, tensors, .npy files and the CLI: typed errors, zero-copy initializers, round trips.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ModelFormatError, InputError, WebjitError } from '../src/errors.js';
import { decodeModel } from '../src/onnx/decode.js';
import { loadModel } from '../src/onnx/load.js';
import { InferenceSession } from '../src/session.js';
import { Tensor } from '../src/tensor.js';
import { decodeNpy, encodeNpy, npyFileName } from '../src/cli/npy.js';
import { fixture, ROOT, SILERO } from './helpers.js';

test('initializers are views on the file bytes where aligned (no copy)', () => {
  const bytes = new Uint8Array(fs.readFileSync(fixture('encoder-small.onnx')));
  const m = decodeModel(bytes);
  let views = 0, total = 0;
  for (const t of m.graph.initializers.values()) {
    if (t.type !== 'float32') continue;
    total++;
    if ((t.data as Float32Array).buffer === bytes.buffer) views++;
  }
  assert.ok(total > 10);
  // Offsets of raw_data in the file are arbitrary, so about a quarter are 4-byte aligned; the rest are copied once.
  assert.ok(views > 0, 'no zero-copy initializer');
});

test('external data files are read relative to the model', async () => {
  const m = await loadModel(fixture('encoder-small-external.onnx'));
  const inline = await loadModel(fixture('encoder-small.onnx'));
  for (const [k, t] of inline.graph.initializers) {
    const e = m.graph.initializers.get(k);
    assert.ok(e, `missing ${k}`);
    assert.deepEqual(e.dims, t.dims);
    assert.deepEqual(Array.from(e.data as Float32Array).slice(0, 8), Array.from(t.data as Float32Array).slice(0, 8));
  }
});

test('external data without the file gives a typed error that says what to do', async () => {
  const bytes = fs.readFileSync(fixture('encoder-small-external.onnx'));
  await assert.rejects(InferenceSession.create(new Uint8Array(bytes)), (e: unknown) =>
    e instanceof WebjitError && /external/.test(e.message));
});

test('malformed bytes give ModelFormatError with a location', () => {
  const bytes = new Uint8Array(fs.readFileSync(SILERO('silero_vad')));
  assert.throws(() => decodeModel(bytes.subarray(0, 1000)), (e: unknown) => e instanceof ModelFormatError && /model\.graph/.test(e.message));
  assert.throws(() => decodeModel(new Uint8Array(0)), ModelFormatError);
  assert.throws(() => decodeModel(new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f])), ModelFormatError);
});

test('run() validates feeds: names, dtypes, ranks and static dims', async () => {
  const s = await InferenceSession.create(SILERO('silero_vad_16k_op15'));
  const sr = new Tensor('int64', [16000n], []);
  const state = new Tensor('float32', new Float32Array(256), [2, 1, 128]);
  const input = new Tensor('float32', new Float32Array(512), [1, 512]);
  await assert.rejects(s.run({ input, state }), (e: unknown) => e instanceof InputError && /'sr'/.test(e.message));
  await assert.rejects(s.run({ input, state, sr, bogus: sr }), (e: unknown) => e instanceof InputError && /bogus/.test(e.message));
  await assert.rejects(s.run({ input: new Tensor('float64', new Float64Array(512), [1, 512]), state, sr }),
    (e: unknown) => e instanceof InputError && /float32/.test(e.message) && /'input'/.test(e.message));
  await assert.rejects(s.run({ input, state: new Tensor('float32', new Float32Array(256), [2, 128]), sr }),
    (e: unknown) => e instanceof InputError && /rank 3/.test(e.message));
  await assert.rejects(s.run({ input, state: new Tensor('float32', new Float32Array(256), [1, 2, 128]), sr }),
    (e: unknown) => e instanceof InputError && /dim 0 must be 2/.test(e.message));
});

test('Tensor rejects data that does not fit its dims', () => {
  assert.throws(() => new Tensor('float32', new Float32Array(5), [2, 3]), InputError);
  assert.deepEqual(new Tensor('int64', [1, 2, 3]).data, new BigInt64Array([1n, 2n, 3n]));
});

test('.npy round trip for every NumPy dtype, and file names are escaped', () => {
  for (const t of [new Tensor('float32', [1.5, -2, 3, 4], [2, 2]), new Tensor('int64', [1n, -5n], [2]), new Tensor('bool', [1, 0, 1], [3]),
    new Tensor('uint8', [255], []), new Tensor('float16', new Uint16Array([0x3c00]), [1]), new Tensor('string', ['ab', 'héllo'], [2])]) {
    const back = decodeNpy(encodeNpy(t));
    assert.equal(back.type, t.type);
    assert.deepEqual(back.dims, t.dims);
    assert.deepEqual(Array.from(back.data as ArrayLike<unknown>), Array.from(t.data as ArrayLike<unknown>));
  }
  assert.equal(npyFileName('past_key_values.0/key é'), 'past_key_values.0%2Fkey%20%C3%A9.npy');
});

test('CLI run writes outputs as .npy and prints a JSON line of timings', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webjit-'));
  const inp = path.join(dir, 'in');
  fs.mkdirSync(inp);
  fs.writeFileSync(path.join(inp, 'input.npy'), encodeNpy(new Tensor('float32', new Float32Array(512).fill(0.1), [1, 512])));
  fs.writeFileSync(path.join(inp, 'state.npy'), encodeNpy(new Tensor('float32', new Float32Array(256), [2, 1, 128])));
  fs.writeFileSync(path.join(inp, 'sr.npy'), encodeNpy(new Tensor('int64', [16000n], [])));
  const out = execFileSync(process.execPath, [path.join(ROOT, 'bin/webjit.js'), 'run', SILERO('silero_vad_16k_op15'),
    '--inputs', inp, '--outputs', path.join(dir, 'out'), '--repeat', '3', '--warmup-ms', '10', '--json'], { encoding: 'utf8' });
  const last = JSON.parse(out.trim().split('\n').pop()!);
  assert.deepEqual(Object.keys(last), ['backend', 'threads', 'create_ms', 'first_run_ms', 'median_ms', 'runs']);
  assert.equal(last.runs, 3);
  const y = decodeNpy(new Uint8Array(fs.readFileSync(path.join(dir, 'out', 'output.npy'))));
  assert.deepEqual(y.dims, [1, 1]);
  const p = (y.data as Float32Array)[0];
  assert.ok(p > 0 && p < 1);
  assert.ok(fs.existsSync(path.join(dir, 'out', 'stateN.npy')));
});

test('CLI info reports inputs, opsets, ops and parameters', () => {
  const out = execFileSync(process.execPath, [path.join(ROOT, 'bin/webjit.js'), 'info', fixture('encoder-small.onnx'), '--json'], { encoding: 'utf8' });
  const j = JSON.parse(out);
  assert.equal(j.inputs.length, 3);
  assert.equal(j.opsets['ai.onnx'], 17);
  assert.ok(j.ops.MatMul >= 8);
  assert.ok(j.parameters > 500_000 && j.parameters < 700_000, `parameters ${j.parameters}`);
});

test('CLI exits non-zero with a typed message on a bad model', () => {
  const bad = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'webjit-')), 'bad.onnx');
  fs.writeFileSync(bad, Buffer.from([0x08, 0x07, 0x3a, 0xff]));
  assert.throws(() => execFileSync(process.execPath, [path.join(ROOT, 'bin/webjit.js'), 'run', bad], { encoding: 'utf8', stdio: 'pipe' }),
    (e: { status: number; stderr: string }) => e.status !== 0 && /ModelFormatError/.test(e.stderr));
});
