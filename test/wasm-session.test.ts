// Sessions of one process share a Wasm runtime (memory, workers, kernels): runs of different sessions may interleave,
// a released session leaves the others intact, and results never depend on what else ran.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { test } from 'node:test';
import { InferenceSession } from '../src/session.js';
import { Tensor } from '../src/tensor.js';
import { fixture, SILERO } from './helpers.js';
import { mulberry32 } from '../src/util/random.js';

const ids = (n: number, seed: number) => {
  const r = mulberry32(seed);
  return new Tensor('int64', BigInt64Array.from({ length: n }, () => BigInt(Math.floor(r() * 1000))), [1, n]);
};
const encFeeds = (n: number, seed: number) => ({
  input_ids: ids(n, seed),
  attention_mask: new Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]),
  token_type_ids: new Tensor('int64', new BigInt64Array(n), [1, n]),
});
const vadFeeds = (seed: number) => {
  const r = mulberry32(seed);
  return {
    input: new Tensor('float32', Float32Array.from({ length: 512 }, () => r() - 0.5), [1, 512]),
    state: new Tensor('float32', new Float32Array(256), [2, 1, 128]),
    sr: new Tensor('int64', [16000n], []),
  };
};

function same(a: Record<string, Tensor>, b: Record<string, Tensor>, what: string): void {
  assert.deepEqual(Object.keys(a).sort(), Object.keys(b).sort());
  for (const k of Object.keys(a)) {
    assert.deepEqual(a[k].dims, b[k].dims, `${what}: ${k} dims`);
    const x = a[k].data as Float32Array, y = b[k].data as Float32Array;
    for (let i = 0; i < x.length; i++) assert.equal(x[i], y[i], `${what}: ${k}[${i}] ${x[i]} vs ${y[i]}`);
  }
}

test('Wasm sessions share one runtime: interleaved runs and releases leave every result unchanged', { timeout: 300_000 }, async () => {
  const enc = new Uint8Array(fs.readFileSync(fixture('encoder-small.onnx')));
  const vad = new Uint8Array(fs.readFileSync(SILERO('silero_vad')));
  // Each model alone, in a process where it is the only session.
  const a0 = await InferenceSession.create(enc, { backend: 'wasm', threads: 2 });
  const wantE1 = await a0.run(encFeeds(64, 1));
  const wantE2 = await a0.run(encFeeds(40, 2));
  await a0.release();
  const v0 = await InferenceSession.create(vad, { backend: 'wasm', threads: 2 });
  const wantV = await v0.run(vadFeeds(3));
  await v0.release();

  // Now together: three sessions on the shared runtime, runs started without waiting for each other.
  const [a, b, v] = await Promise.all([enc, enc, vad].map((m) => InferenceSession.create(m, { backend: 'wasm', threads: 2 })));
  for (let round = 0; round < 3; round++) {
    const got = await Promise.all([a.run(encFeeds(64, 1)), v.run(vadFeeds(3)), b.run(encFeeds(40, 2)), a.run(encFeeds(40, 2))]);
    same(got[0], wantE1, `round ${round} encoder A seq 64`);
    same(got[1], wantV, `round ${round} VAD`);
    same(got[2], wantE2, `round ${round} encoder B seq 40`);
    same(got[3], wantE2, `round ${round} encoder A seq 40`);
  }
  // Releasing one session frees its buffers only.
  await b.release();
  await assert.rejects(b.run(encFeeds(40, 2)), /released/);
  same(await a.run(encFeeds(64, 1)), wantE1, 'encoder A after B was released');
  same(await v.run(vadFeeds(3)), wantV, 'VAD after B was released');
  await a.release();
  await v.release();
  // A session created after all were released (the runtime lingers) still computes the same.
  const c = await InferenceSession.create(vad, { backend: 'wasm', threads: 2 });
  same(await c.run(vadFeeds(3)), wantV, 'VAD in a later session');
  await c.release();
});

// Wasm memory must not grow at all after the first run's plans. The JS heap is compared from run 1,000 on: until
// then V8 is still optimising code and collecting type feedback (~0.3 MB of its heap, measured to plateau by run
// 2,000 and stay flat to 20,000).
test('10,000 streaming runs of Silero VAD on Wasm: no growth of Wasm memory, and JS heap within 5%', { timeout: 300_000 }, async () => {
  const v8 = await import('node:v8');
  const vm = await import('node:vm');
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const s = await InferenceSession.create(new Uint8Array(fs.readFileSync(SILERO('silero_vad'))), { backend: 'wasm', threads: 2 });
  const rt = (s as unknown as { wasm: { rt: { mem: { bytesInUse: number; memory: WebAssembly.Memory } } } }).wasm.rt;
  const r = mulberry32(5);
  let state = new Tensor('float32', new Float32Array(256), [2, 1, 128]);
  const sr = new Tensor('int64', [16000n], []);
  const marks: { wasm: number; pages: number; heap: number }[] = [];
  const mark = async () => { await new Promise((r) => setImmediate(r)); gc(); gc(); marks.push({ wasm: rt.mem.bytesInUse, pages: rt.mem.memory.buffer.byteLength, heap: process.memoryUsage().heapUsed }); };
  for (let i = 1; i <= 10_000; i++) {
    const input = new Tensor('float32', Float32Array.from({ length: 512 }, () => r() - 0.5), [1, 512]);
    const out = await s.run({ input, state, sr });
    state = out.stateN ?? Object.values(out).find((t) => t.dims.length === 3)!;
    const p = out.output ?? Object.values(out).find((t) => t.dims.length === 2)!;
    const v = (p.data as Float32Array)[0];
    assert.ok(v >= 0 && v <= 1, `run ${i}: speech probability ${v}`);
    if (i === 100 || i === 1_000 || i === 10_000) await mark();
  }
  await s.release();
  const [a, k, b] = marks;
  assert.equal(b.wasm, a.wasm, 'Wasm bytes in use, run 100 to 10,000');
  assert.equal(b.pages, a.pages, 'Wasm memory size, run 100 to 10,000');
  console.log(`wasm 10,000 runs: Wasm ${a.wasm} bytes in use / ${a.pages} bytes of memory at run 100, ${b.wasm} / ${b.pages} at 10,000; JS heap ${a.heap} (run 100) → ${k.heap} (1,000) → ${b.heap} (10,000)`);
  assert.ok(b.heap <= a.heap * 1.05, `JS heap grew from ${a.heap} (run 100) to ${b.heap} bytes (run 10,000)`);
});
