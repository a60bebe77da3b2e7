// Conformance of the Wasm backend's own kernels: with no fallback, every test it runs must pass.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { runPool } from '../src/conformance/pool.js';
import { listTests } from '../src/conformance/runner.js';
import { ONNX_TESTS } from './helpers.js';

test('wasm --no-fallback: no implemented op fails a node test', { timeout: 2_400_000 }, async () => {
  const dirs = listTests([path.join(ONNX_TESTS, 'node')]);
  const results = await runPool(dirs, { backend: 'wasm', noFallback: true, timeoutMs: 120_000 });
  const ran = results.filter((r) => r.status !== 'unsupported');
  const bad = ran.filter((r) => r.status !== 'passed');
  console.log(`wasm --no-fallback: ${ran.length - bad.length} passed, ${bad.length} failed or errors, ${results.length - ran.length} unsupported (a node without a Wasm kernel) of ${results.length}`);
  assert.deepEqual(bad.map((r) => `${r.name}: ${r.message?.slice(0, 200)}`), []);
  // The backend must cover a real share of the suite, or this proves nothing.
  assert.ok(ran.length >= 100, `only ${ran.length} tests ran on Wasm kernels alone`);
});
