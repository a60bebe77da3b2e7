// `webjit conformance`: runs ONNX backend test folders and prints a per-op summary and the totals.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runPool } from '../conformance/pool.js';
import { listTests, type Status, type TestResult } from '../conformance/runner.js';
import type { BackendName } from '../session.js';

export interface ConformanceArgs {
  dir?: string[];
  backend: BackendName;
  fallback: boolean;
  json?: string;
  filter?: string;
  jobs?: number;
  timeout?: number;
  verbose?: boolean;
}

export function defaultTestDirs(): string[] {
  // ../shared/onnx-tests beside the checkout, found from the working directory or the package.
  const roots = [process.cwd(), path.resolve(new URL('.', import.meta.url).pathname, '../../..')];
  for (const r of roots) {
    const base = path.resolve(r, '../shared/onnx-tests');
    if (fs.existsSync(base)) return ['node', 'simple', 'pytorch-operator'].map((d) => path.join(base, d)).filter((d) => fs.existsSync(d));
  }
  return [];
}

export async function conformanceCommand(a: ConformanceArgs): Promise<number> {
  const dirs = a.dir && a.dir.length ? a.dir : defaultTestDirs();
  if (dirs.length === 0) { console.error('no test folders found; pass --dir'); return 2; }
  const tests = listTests(dirs, a.filter ? new RegExp(a.filter) : undefined);
  const isTTY = process.stderr.isTTY;
  const results = await runPool(tests, {
    backend: a.backend, noFallback: !a.fallback, jobs: a.jobs, timeoutMs: a.timeout,
    onResult: (r, done, total) => {
      if (a.verbose && r.status !== 'passed') console.log(`${r.status.padEnd(11)} ${r.name}: ${r.message ?? ''}`.slice(0, 400));
      if (isTTY && (done % 10 === 0 || done === total)) process.stderr.write(`\r${done}/${total} tests`);
    },
  });
  if (isTTY) process.stderr.write('\n');
  printSummary(results);
  const count = (s: Status) => results.filter((r) => r.status === s).length;
  if (a.json) fs.writeFileSync(a.json, JSON.stringify({ backend: a.backend, noFallback: !a.fallback, results }, null, 1));
  const nodeDir = (r: TestResult) => path.basename(path.dirname(r.dir)) === 'node';
  const node = results.filter(nodeDir);
  const std = node.filter((r) => r.standard);
  const pct = (k: number, n: number) => (n ? ((100 * k) / n).toFixed(1) : '0.0');
  const passed = (rs: TestResult[]) => rs.filter((r) => r.status === 'passed').length;
  console.log(`node tests: ${passed(node)} of ${node.length} passed (${pct(passed(node), node.length)}%); ` +
    `standard ai.onnx subset (no string/sequence/optional/training ops): ${passed(std)} of ${std.length} (${pct(passed(std), std.length)}%)`);
  console.log(`conformance ${a.backend}: ${count('passed')} passed, ${count('failed')} failed, ${count('unsupported')} unsupported, ${count('error')} errors of ${results.length}`);
  return 0;
}

function printSummary(results: TestResult[]): void {
  const byOp = new Map<string, Record<Status, number>>();
  for (const r of results) {
    const e = byOp.get(r.op) ?? { passed: 0, failed: 0, unsupported: 0, error: 0 };
    e[r.status]++;
    byOp.set(r.op, e);
  }
  console.log('op                              passed failed unsupp. errors');
  for (const [op, e] of [...byOp].sort((x, y) => x[0].localeCompare(y[0]))) {
    console.log(`${op.padEnd(32)}${String(e.passed).padStart(6)} ${String(e.failed).padStart(6)} ${String(e.unsupported).padStart(7)} ${String(e.error).padStart(6)}`);
  }
}
