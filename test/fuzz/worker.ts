// Fuzz worker: for each case, mutates one of the model files (bytes or structure), then loads it, creates a session
// and, when that works, runs it on inputs made from its declared types. Reports each case's outcome to the harness.
import * as fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { WebjitError } from '../../src/errors.js';
import { InferenceSession, type BackendName } from '../../src/session.js';
import { Tensor, DTYPES, type DType } from '../../src/tensor.js';
import { mulberry32 } from '../../src/util/random.js';
import { mutate, MUTATIONS } from './mutate.js';
import { parse, type Msg } from './proto.js';
import { mutateStructure, STRUCT_MUTATIONS } from './structural.js';

interface Job {
  files: string[]; first: number; count: number; backends: BackendName[]; run: boolean; runTimeoutMs: number;
  /** The harness's self-check: cases that throw an untyped error, reject a promise nobody awaits, or never end. */
  inject?: { crash?: number; reject?: number; hang?: number };
}
const job = workerData as Job;
const sources = job.files.map((f) => new Uint8Array(fs.readFileSync(f)));
const trees: (Msg | undefined)[] = [];
const mutateKind = (c: number) => MUTATIONS[c % MUTATIONS.length];
// A promise rejected with nobody to catch it is a crash of the case that made it: checked after each case, once the
// event loop has turned (rejections are only reported then).
let rejection: unknown = null;
process.on('unhandledRejection', (e) => { rejection ??= e; });

/** Inputs for a session from its declared types: named dims become 1..3 (one value per name); ints small, so indices mostly fit. */
function feedsFor(s: InferenceSession, r: () => number): Record<string, Tensor> | null {
  const feeds: Record<string, Tensor> = {};
  // One value per named dim ('batch', 'sequence'), as a caller would feed.
  const named = new Map<string, number>();
  const symbolic = (d: unknown) => {
    if (typeof d !== 'string' || !d) return 1 + Math.floor(r() * 3);
    if (!named.has(d)) named.set(d, 1 + Math.floor(r() * 3));
    return named.get(d)!;
  };
  for (const vi of s.model.graph.inputs) {
    if (s.model.graph.initializers.has(vi.name)) continue;
    const ty = vi.type;
    if (!ty || ty.kind !== 'tensor' || !ty.dtype || ty.dtype === 'string') return null;
    const dims = (ty.shape ?? []).map((d) => (typeof d === 'number' && d >= 0 && d <= 4096 ? d : symbolic(d)));
    const n = dims.reduce((a, b) => a * b, 1);
    if (n > 1 << 20) return null;
    const data = DTYPES[ty.dtype as DType].make(n);
    if (data instanceof Float32Array || data instanceof Float64Array) for (let i = 0; i < n; i++) data[i] = r() * 2 - 1;
    else if (data instanceof BigInt64Array || data instanceof BigUint64Array) for (let i = 0; i < n; i++) data[i] = BigInt(Math.floor(r() * 3));
    else if (!Array.isArray(data)) for (let i = 0; i < data.length; i++) data[i] = Math.floor(r() * 3);
    feeds[vi.name] = new Tensor(ty.dtype as DType, data, dims);
  }
  return feeds;
}

for (let c = job.first; c < job.first + job.count; c++) {
  const fi = c % sources.length;
  const r = mulberry32(Math.imul(c, 2246822519) ^ 0x5bd1e995);
  const backend = job.backends[Math.floor(c / 2) % job.backends.length];
  // Half the cases edit the structure, half the bytes (and a structure the model lacks falls back to bytes).
  const structural = c % 2 === 1 ? STRUCT_MUTATIONS[(c >> 1) % STRUCT_MUTATIONS.length] : null;
  let kind: string = structural ?? mutateKind(c);
  parentPort!.postMessage({ type: 'start', c, file: job.files[fi], kind });
  // A fatal V8 error ends the whole process before any message gets out: WEBJIT_FUZZ_TRACE names the case first.
  if (process.env.WEBJIT_FUZZ_TRACE) fs.writeSync(2, `case ${c}\n`);
  let outcome: 'ok' | 'typed' | 'crash' = 'ok';
  let stage = 'mutate';
  let message = '';
  let s: InferenceSession | undefined;
  try {
    let bytes: Uint8Array | null = null;
    if (structural) {
      try { trees[fi] ??= parse(sources[fi]); } catch { trees[fi] = undefined; }
      bytes = trees[fi] ? mutateStructure(trees[fi]!, r, structural) : null;
    }
    if (!bytes) { const m = mutate(sources[fi], c); bytes = m.bytes; kind = m.kind; }
    stage = 'create';
    if (c === job.inject?.crash) throw new TypeError('injected crash');
    if (c === job.inject?.reject) void Promise.reject(new RangeError('injected unhandled rejection'));
    if (c === job.inject?.hang) for (;;) { /* injected hang */ }
    s = await InferenceSession.create(bytes, { backend, threads: 1, tuning: 'off', runTimeoutMs: job.runTimeoutMs });
    const feeds = job.run ? feedsFor(s, r) : null;
    if (feeds) { stage = 'run'; await s.run(feeds); stage = 'ran'; }
  } catch (e) {
    if (e instanceof WebjitError) outcome = 'typed';
    else { outcome = 'crash'; message = e instanceof Error ? `${e.name}: ${e.message}\n${e.stack}` : String(e); }
  }
  try { await s?.release(); } catch (e) { outcome = 'crash'; message = `release: ${String(e)}`; }
  await new Promise((r) => setImmediate(r));
  if (rejection) {
    outcome = 'crash';
    message = `unhandled rejection: ${rejection instanceof Error ? `${rejection.name}: ${rejection.message}\n${rejection.stack}` : String(rejection)}`;
    rejection = null;
  }
  parentPort!.postMessage({ type: 'done', c, kind, outcome, stage, message, backend });
}
parentPort!.postMessage({ type: 'end' });
