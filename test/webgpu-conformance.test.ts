// Conformance of the WebGPU backend's own kernels (software Vulkan in CI): with no fallback, every test it runs must pass.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { runPool } from '../src/conformance/pool.js';
import { listTests } from '../src/conformance/runner.js';
import { ONNX_TESTS } from './helpers.js';

test('webgpu --no-fallback: no implemented op fails a node test', { timeout: 3_000_000 }, async () => {
  const dirs = listTests([path.join(ONNX_TESTS, 'node')]);
  const results = await runPool(dirs, { backend: 'webgpu', noFallback: true, timeoutMs: 120_000 });
  const ran = results.filter((r) => r.status !== 'unsupported');
  const bad = ran.filter((r) => r.status !== 'passed');
  console.log(`webgpu --no-fallback: ${ran.length - bad.length} passed, ${bad.length} failed or errors, ${results.length - ran.length} unsupported (a node without a GPU kernel) of ${results.length}`);
  assert.deepEqual(bad.map((r) => `${r.name}: ${r.message?.slice(0, 200)}`), []);
  // The backend must cover a real share of the suite, or this proves nothing.
  assert.ok(ran.length >= 100, `only ${ran.length} tests ran on GPU kernels alone`);
});
