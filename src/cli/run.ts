// `webjit run`: runs a model on .npy or random inputs, writes outputs as .npy, times repeated runs.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { InputError } from '../errors.js';
import type { ValueInfo } from '../graph/ir.js';
import { fromNumbers } from '../ops/util.js';
import { InferenceSession, type BackendName, type Feeds } from '../session.js';
import { isFloat, type DType, Tensor } from '../tensor.js';
import { decodeNpy, encodeNpy, npyFileName } from './npy.js';
import { mulberry32 } from '../util/random.js';

export interface RunArgs {
  inputs?: string;
  outputs?: string;
  backend: BackendName;
  threads?: number;
  repeat: number;
  warmupMs: number;
  dim: string[];
  json?: boolean;
  seed: number;
}

export async function runCommand(model: string, a: RunArgs): Promise<number> {
  const log = (s: string) => { if (!a.json) console.error(s); };
  const t0 = performance.now();
  log(`loading ${model} on ${a.backend}…`);
  const session = await InferenceSession.create(model, { backend: a.backend, threads: a.threads });
  if (session.threads.note) log(session.threads.note);
  const createMs = performance.now() - t0;
  log(`session created in ${createMs.toFixed(1)} ms`);
  const dims = parseDims(a.dim);
  const feeds: Feeds = {};
  const meta = session.model.graph.inputs.filter((i) => !session.model.graph.initializers.has(i.name));
  const rng = mulberry32(a.seed);
  for (const vi of meta) {
    const file = a.inputs ? path.join(a.inputs, npyFileName(vi.name)) : undefined;
    if (file && fs.existsSync(file)) feeds[vi.name] = decodeNpy(new Uint8Array(fs.readFileSync(file)), file);
    else if (a.inputs && file) throw new InputError(`no file ${file} for input '${vi.name}'`, { input: vi.name });
    else feeds[vi.name] = randomInput(vi, dims, rng);
  }
  const t1 = performance.now();
  let out = await session.run(feeds);
  const firstMs = performance.now() - t1;
  log(`first run ${firstMs.toFixed(1)} ms`);
  // Warm-up so steady-state speed is measured, not the JS engine's tiers.
  const tw = performance.now();
  while (a.repeat > 0 && performance.now() - tw < a.warmupMs) out = await session.run(feeds);
  const times: number[] = [];
  for (let i = 0; i < a.repeat; i++) {
    const s = performance.now();
    out = await session.run(feeds);
    times.push(performance.now() - s);
  }
  if (a.outputs) {
    fs.mkdirSync(a.outputs, { recursive: true });
    for (const [name, t] of Object.entries(out)) fs.writeFileSync(path.join(a.outputs, npyFileName(name)), encodeNpy(t));
    log(`wrote ${Object.keys(out).length} outputs to ${a.outputs}`);
  } else if (!a.json) {
    for (const [name, t] of Object.entries(out)) console.log(`${name}: ${t.type}[${t.dims.join(',')}] ${preview(t)}`);
  }
  times.sort((x, y) => x - y);
  const median = times.length ? times[Math.floor(times.length / 2)] : firstMs;
  if (a.repeat > 0) log(`median of ${a.repeat} runs: ${median.toFixed(2)} ms`);
  if (a.json) {
    console.log(JSON.stringify({ backend: a.backend, threads: session.threads.threads, create_ms: round(createMs), first_run_ms: round(firstMs), median_ms: round(median), runs: a.repeat }));
  }
  await session.release();
  return 0;
}

const round = (x: number) => Math.round(x * 1000) / 1000;

export function parseDims(specs: string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const s of specs) {
    const k = s.lastIndexOf('=');
    const v = Number(s.slice(k + 1));
    if (k <= 0 || !Number.isInteger(v) || v < 0) throw new InputError(`--dim expects NAME=VALUE, got '${s}'`);
    m.set(s.slice(0, k), v);
  }
  return m;
}

export function randomInput(vi: ValueInfo, dims: Map<string, number>, rng: () => number, intMax = 10): Tensor {
  const t = vi.type;
  if (!t || t.kind !== 'tensor' || !t.dtype || !t.shape) {
    throw new InputError('cannot make a random value: its type or shape is not declared', { input: vi.name }, 'pass it with --inputs');
  }
  const shape = t.shape.map((d, i) => {
    if (typeof d === 'number') return d;
    const v = d !== null ? dims.get(d) : undefined;
    if (v === undefined) {
      throw new InputError(`dim ${i} is '${d ?? '?'}' and has no value`, { input: vi.name }, `pass --dim ${d || 'NAME'}=VALUE`);
    }
    return v;
  });
  const n = shape.reduce((x, y) => x * y, 1);
  const dtype: DType = t.dtype;
  const vals = new Float64Array(n);
  for (let i = 0; i < n; i++) vals[i] = isFloat(dtype) ? rng() * 2 - 1 : dtype === 'bool' ? (rng() < 0.5 ? 1 : 0) : Math.floor(rng() * intMax);
  return fromNumbers(dtype, shape, vals);
}

function preview(t: Tensor): string {
  const d = t.data as ArrayLike<unknown>;
  const k = Math.min(6, d.length);
  const items: string[] = [];
  for (let i = 0; i < k; i++) items.push(typeof d[i] === 'number' ? Number((d[i] as number).toPrecision(5)).toString() : String(d[i]));
  return `[${items.join(', ')}${d.length > k ? ', …' : ''}]`;
}
