// ONNX backend conformance on the reference backend: the acceptance floor of the foundation issue.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { runPool } from '../src/conformance/pool.js';
import { listTests } from '../src/conformance/runner.js';
import { ONNX_TESTS } from './helpers.js';

test('reference backend passes >= 85% of node tests and >= 95% of the standard subset', { timeout: 2_400_000 }, async () => {
  const dirs = listTests([path.join(ONNX_TESTS, 'node')]);
  assert.equal(dirs.length, 1626, 'the shared node tests are not all there');
  const results = await runPool(dirs, { backend: 'reference', noFallback: false, timeoutMs: 120_000 });
  const passed = results.filter((r) => r.status === 'passed').length;
  const std = results.filter((r) => r.standard);
  const stdPassed = std.filter((r) => r.status === 'passed').length;
  console.log(`conformance: ${passed}/${results.length} node tests passed; standard subset ${stdPassed}/${std.length}`);
  const crashes = results.filter((r) => r.status === 'error' && /timed out|worker crashed/.test(r.message ?? ''));
  assert.deepEqual(crashes.map((r) => r.name), [], 'tests that hung or crashed a worker');
  assert.ok(passed / results.length >= 0.85, `${passed}/${results.length} passed`);
  assert.ok(stdPassed / std.length >= 0.95, `standard subset ${stdPassed}/${std.length}`);
});
