// Runs conformance tests on a pool of worker threads; a test that runs past its timeout is an error.
import * as os from 'node:os';
import { Worker } from 'node:worker_threads';
import type { RunOptions, TestResult } from './runner.js';

export interface PoolOptions extends RunOptions {
  jobs?: number;
  timeoutMs?: number;
  onResult?: (r: TestResult, done: number, total: number) => void;
}

const workerUrl = new URL(import.meta.url.endsWith('.ts') ? './worker.ts' : './worker.js', import.meta.url);

export async function runPool(dirs: string[], opts: PoolOptions): Promise<TestResult[]> {
  const jobs = Math.max(1, Math.min(opts.jobs ?? os.availableParallelism(), dirs.length));
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const results: TestResult[] = new Array(dirs.length);
  let next = 0, done = 0;
  const runOpts: RunOptions = { backend: opts.backend, noFallback: opts.noFallback };

  await new Promise<void>((resolve) => {
    if (dirs.length === 0) { resolve(); return; }
    const start = () => {
      // From TypeScript sources (development), register tsx inside the worker before loading it.
      const w = workerUrl.pathname.endsWith('.ts')
        ? new Worker(`import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(workerUrl.href)}); })`, { eval: true, resourceLimits: { maxOldGenerationSizeMb: 4096 } })
        : new Worker(workerUrl, { resourceLimits: { maxOldGenerationSizeMb: 4096 } });
      let current = -1;
      let timer: NodeJS.Timeout | undefined;
      const finish = (r: TestResult) => {
        if (current < 0) return;
        clearTimeout(timer);
        results[current] = r;
        current = -1;
        done++;
        opts.onResult?.(r, done, dirs.length);
        if (done === dirs.length) resolve();
      };
      const feed = () => {
        if (next >= dirs.length) { void w.terminate(); return; }
        current = next++;
        const dir = dirs[current];
        const t0 = performance.now();
        timer = setTimeout(() => {
          finish({ name: dir.split('/').pop()!, dir, op: '?', status: 'error', standard: true, message: `timed out after ${timeoutMs} ms`, ms: performance.now() - t0 });
          void w.terminate();
          start();
        }, timeoutMs);
        w.postMessage({ dir, opts: runOpts });
      };
      w.on('message', (r: TestResult) => { finish(r); feed(); });
      w.on('error', (e) => {
        const dir = current >= 0 ? dirs[current] : '';
        finish({ name: dir.split('/').pop()!, dir, op: '?', status: 'error', standard: true, message: `worker crashed: ${e.message}`, ms: 0 });
        start();
      });
      feed();
    };
    for (let i = 0; i < jobs; i++) start();
  });
  return results;
}
