// Random Llama weights for tests and benchmarks: dense (then quantized by the caller if wanted), or 4/8-bit groups made
// directly as random bytes (seconds instead of minutes for a billion-parameter model).
import { f16ToF32, f32ToF16 } from '../ops/util.js';
import { mulberry32 } from '../util/random.js';
import { LAYER_MATRICES, layerShapes, type LayerWeights, type LlamaConfig, type LlmWeights, type Matrix, type QBits, type QkNorm, type QkvBias, type QuantMatrix } from './types.js';

export { layerShapes } from './types.js';

/** A quantized matrix of the given codes with one scale everywhere and every zero point at the middle of the range. */
export function midQuantMatrix(N: number, K: number, bits: QBits, group: number, data: Uint8Array, scale: number): Matrix {
  const groups = K / group, zRow = Math.ceil((groups * bits) / 8), mid = 1 << (bits - 1);
  const zeros = new Uint8Array(N * zRow).fill(bits === 8 ? mid : mid | (mid << 4));
  return { kind: 'q', bits, group, N, K, data, scales: new Float32Array(N * groups).fill(scale), zeros };
}

/**
 * A quantized matrix of random codes, random zero points and random f16-valued scales (the GEMV benchmarks: every
 * group's scale and zero point differ, so a wrong group index shows in the check).
 */
export function randomQuantMatrix(N: number, K: number, bits: QBits, group: number, seed: number): QuantMatrix {
  const r = mulberry32(seed);
  const data = new Uint8Array((N * K * bits) / 8);
  const w32 = new Uint32Array(data.buffer);
  for (let i = 0; i < w32.length; i++) w32[i] = (r() * 4294967296) >>> 0;
  const groups = K / group;
  const scales = new Float32Array(N * groups);
  for (let i = 0; i < scales.length; i++) scales[i] = f16ToF32(f32ToF16((0.5 + r()) / 64)); // f16 values, as the quantizer writes
  const zRow = Math.ceil((groups * bits) / 8);
  const zeros = new Uint8Array(N * zRow);
  for (let i = 0; i < zeros.length; i++) zeros[i] = (r() * 256) | 0;
  return { kind: 'q', bits, group, N, K, data, scales, zeros };
}

/**
 * q/k/v biases of one layer (config.qkvBias): uniform in ±0.5, as large as the projections' outputs (Qwen2's k biases
 * run larger still), so that a kernel that drops or misplaces them moves the logits far beyond rounding.
 */
function randomQkvBias(c: LlamaConfig, r: () => number): QkvBias {
  const uni = (n: number) => Float32Array.from({ length: n }, () => (r() * 2 - 1) * 0.5);
  return { q: uni(c.heads * c.headDim), k: uni(c.kvHeads * c.headDim), v: uni(c.kvHeads * c.headDim) };
}

/**
 * q/k norm weights of one layer (config.qkNorm): uniform in [0.25, 2.25] per dimension (Qwen3's run from ~0.1 to ~5), so
 * that a kernel that drops them, or applies q's to k or a dimension's to another, moves the logits far beyond rounding.
 */
export function randomQkNorm(c: LlamaConfig, r: () => number): QkNorm {
  const w = () => Float32Array.from({ length: c.headDim }, () => 0.25 + 2 * r());
  return { q: w(), k: w() };
}

/** Dense f32 weights, uniform in ±1/√K per matrix (activations stay O(1)); tied embeddings unless `untied`. */
export function randomLlama(c: LlamaConfig, seed = 1, untied = false): LlmWeights {
  const r = mulberry32(seed);
  const uni = (n: number, s: number) => { const a = new Float32Array(n); for (let i = 0; i < n; i++) a[i] = (r() * 2 - 1) * s; return a; };
  const norm = () => { const a = new Float32Array(c.hidden); for (let i = 0; i < a.length; i++) a[i] = 0.8 + 0.4 * r(); return a; };
  const shapes = layerShapes(c);
  const dense = (N: number, K: number): Matrix => ({ kind: 'f32', N, K, data: uni(N * K, 1 / Math.sqrt(K)) });
  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.layers; l++) {
    const L = { attnNorm: norm(), mlpNorm: norm() } as LayerWeights;
    for (const m of LAYER_MATRICES) L[m] = dense(...shapes[m]);
    if (c.qkvBias) L.qkvBias = randomQkvBias(c, r);
    if (c.qkNorm) L.qkNorm = randomQkNorm(c, r);
    layers.push(L);
  }
  const embed = uni(c.vocab * c.hidden, 1);
  const lmHead: Matrix = untied ? dense(c.vocab, c.hidden) : { kind: 'f32', N: c.vocab, K: c.hidden, data: embed };
  return { config: c, embed, layers, norm: norm(), lmHead, quant: 'f32' };
}

/**
 * Random quantized weights made directly: random codes, zero points near the middle and scales that give each weight
 * a spread of about ±1/√K. The embedding table is f32 (as webjit's quantizer leaves it). `fill` replaces the seeded
 * codes (benchmarks of 13–70B shapes: a native random source fills gigabytes in seconds).
 */
export function randomQuantLlama(c: LlamaConfig, bits: QBits, group = 32, seed = 1, fill?: (a: Uint8Array) => void): LlmWeights {
  const r = mulberry32(seed);
  const shapes = layerShapes(c);
  const qmax = (1 << bits) - 1;
  const bytes = (n: number) => {
    const a = new Uint8Array(n);
    if (fill) { fill(a); return a; }
    const w = new Uint32Array(a.buffer, 0, n >> 2);
    for (let i = 0; i < w.length; i++) w[i] = (r() * 4294967296) >>> 0;
    for (let i = w.length * 4; i < n; i++) a[i] = (r() * 256) | 0;
    return a;
  };
  // Scales as f16 values, as webjit's quantizer writes them.
  const quant = (N: number, K: number): Matrix => midQuantMatrix(N, K, bits, group, bytes((N * K * bits) / 8), f16ToF32(f32ToF16((2 / Math.sqrt(K)) / qmax)));
  const norm = () => new Float32Array(c.hidden).fill(1);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.layers; l++) {
    const L = { attnNorm: norm(), mlpNorm: norm() } as LayerWeights;
    for (const m of LAYER_MATRICES) L[m] = quant(...shapes[m]);
    if (c.qkvBias) L.qkvBias = randomQkvBias(c, r);
    if (c.qkNorm) L.qkNorm = randomQkNorm(c, r);
    layers.push(L);
  }
  const embed = new Float32Array(c.vocab * c.hidden);
  for (let i = 0; i < embed.length; i++) embed[i] = r() * 2 - 1;
  return { config: c, embed, layers, norm: norm(), lmHead: quant(c.vocab, c.hidden), quant: `q${bits} g${group} random` };
}
