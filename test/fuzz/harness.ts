// Fuzz harness: runs mutants in worker threads with a per-case watchdog; a hang or non-typed error fails.
import * as os from 'node:os';
import { Worker } from 'node:worker_threads';

export interface FuzzReport {
  cases: number;
  ok: number;
  typed: number;
  crashes: { c: number; file: string; kind: string; message: string }[];
  hangs: { c: number; file: string; kind: string }[];
  byKind: Record<string, number>;
}

const workerUrl = new URL(import.meta.url.endsWith('.ts') ? './worker.ts' : './worker.js', import.meta.url);

export async function fuzz(files: string[], cases: number, opts: { first?: number; jobs?: number; caseTimeoutMs?: number; heapMb?: number } = {}): Promise<FuzzReport> {
  const jobs = opts.jobs ?? Math.min(2, os.availableParallelism());
  const first = opts.first ?? 0;
  const rep: FuzzReport = { cases: 0, ok: 0, typed: 0, crashes: [], hangs: [], byKind: {} };
  const per = Math.ceil(cases / jobs);
  const runRange = (start: number, count: number): Promise<void> => new Promise((resolve) => {
    if (count <= 0) { resolve(); return; }
    const w = workerUrl.pathname.endsWith('.ts')
      ? new Worker(`import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(workerUrl.href)}); })`,
        { eval: true, workerData: { files, first: start, count }, resourceLimits: { maxOldGenerationSizeMb: opts.heapMb ?? 2048 } })
      : new Worker(workerUrl, { workerData: { files, first: start, count }, resourceLimits: { maxOldGenerationSizeMb: opts.heapMb ?? 2048 } });
    let cur: { c: number; file: string; kind: string } | undefined;
    let timer: NodeJS.Timeout | undefined;
    let finished = false;
    const end = () => { if (!finished) { finished = true; clearTimeout(timer); resolve(); } };
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        // A case that runs past the watchdog is a hang: record it and go on after it.
        if (cur) rep.hangs.push(cur);
        rep.cases++;
        const next = cur ? cur.c + 1 : start;
        finished = true;
        void w.terminate();
        runRange(next, start + count - next).then(resolve);
      }, opts.caseTimeoutMs ?? 20_000);
    };
    w.on('message', (m: { type: string; c: number; file: string; kind: string; outcome: string; message: string }) => {
      if (m.type === 'start') { cur = { c: m.c, file: m.file, kind: m.kind }; rep.byKind[m.kind] = (rep.byKind[m.kind] ?? 0) + 1; arm(); }
      else if (m.type === 'done') {
        rep.cases++;
        if (m.outcome === 'ok') rep.ok++;
        else if (m.outcome === 'typed') rep.typed++;
        else rep.crashes.push({ ...cur!, message: m.message });
      } else if (m.type === 'end') end();
    });
    w.on('error', (e) => {
      // Out of memory or an uncaught error in the worker: a crash of the case in flight.
      if (finished) return;
      rep.cases++;
      if (cur) rep.crashes.push({ ...cur, message: `worker died: ${e.message}` });
      finished = true;
      clearTimeout(timer);
      const next = cur ? cur.c + 1 : start;
      runRange(next, start + count - next).then(resolve);
    });
    w.on('exit', () => end());
    arm();
  });
  await Promise.all(Array.from({ length: jobs }, (_, j) => runRange(first + j * per, Math.min(per, cases - j * per))));
  return rep;
}
