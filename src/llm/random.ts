// Random-weight Llama models of any shape: test fixtures and benchmark models (where no trained weights exist).
import { mulberry32 } from '../util/random.js';
import { LAYER_MATRICES, type LayerWeights, type LlamaConfig, type LlmWeights, type Matrix } from './types.js';
import { layerShapes, midQuantMatrix, randomQkNorm } from './random_model.js';

/** A small default shape, overridable field by field. */
export function llamaConfig(c: Partial<LlamaConfig> = {}): LlamaConfig {
  const hidden = c.hidden ?? 64, heads = c.heads ?? 4;
  return {
    vocab: 256, hidden, intermediate: 128, layers: 2, heads, kvHeads: heads, headDim: hidden / heads, maxPositions: 128,
    ropeTheta: 10000, rmsEps: 1e-5, bos: 0, eos: 1, ...c,
  };
}

/** Dense f32 weights, normal-ish with standard deviation `std` (norm weights around 1), from a seed. */
export function randomLlm(config: LlamaConfig, seed = 1, std = 0.08, tied = true): LlmWeights {
  const rnd = mulberry32(seed);
  const normal = () => { let s = 0; for (let i = 0; i < 4; i++) s += rnd(); return (s - 2) * Math.sqrt(3); };
  const fill = (n: number, f: () => number) => { const a = new Float32Array(n); for (let i = 0; i < n; i++) a[i] = f(); return a; };
  const mat = (N: number, K: number): Matrix => ({ kind: 'f32', N, K, data: fill(N * K, () => std * normal()) });
  const c = config, D = c.hidden, shapes = layerShapes(c);
  const norm = () => fill(D, () => 1 + 0.1 * normal());
  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.layers; l++) {
    const L = { attnNorm: norm(), mlpNorm: norm() } as LayerWeights;
    for (const k of LAYER_MATRICES) L[k] = mat(shapes[k][0], shapes[k][1]);
    // Biases about as large as the projections' outputs (Qwen2's): a kernel that drops one moves the logits far.
    if (c.qkvBias) L.qkvBias = { q: fill(c.heads * c.headDim, () => 0.5 * normal()), k: fill(c.kvHeads * c.headDim, () => 0.5 * normal()), v: fill(c.kvHeads * c.headDim, () => 0.5 * normal()) };
    if (c.qkNorm) L.qkNorm = randomQkNorm(c, rnd);
    layers.push(L);
  }
  const embed = fill(c.vocab * D, () => 4 * std * normal());
  return { config: c, embed, layers, norm: norm(), lmHead: tied ? { kind: 'f32', N: c.vocab, K: D, data: embed } : mat(c.vocab, D), quant: 'f32' };
}

/**
 * Random quantized weights generated directly (no dense matrices: a billion-parameter benchmark model takes seconds):
 * uniform codes, zero points at the middle of the range, scales giving weights of standard deviation about `std`.
 */
export function randomQuantLlm(config: LlamaConfig, bits: 4 | 8, group = 32, seed = 1, std = 0.02): LlmWeights {
  let s = seed >>> 0 || 1;
  const bytes = (n: number) => {
    const a = new Uint8Array(n);
    const u = new Uint32Array(a.buffer, 0, n >> 2);
    for (let i = 0; i < u.length; i++) { s ^= s << 13; s ^= s >>> 17; s ^= s << 5; u[i] = s; }
    for (let i = u.length * 4; i < n; i++) a[i] = i * 131;
    return a;
  };
  // Uniform codes over 2^bits levels have standard deviation 2^bits / sqrt(12) steps.
  const scale = (std * Math.sqrt(12)) / (1 << bits);
  const mat = (N: number, K: number): Matrix => midQuantMatrix(N, K, bits, group, bytes((N * K * bits) / 8), scale);
  const c = config, D = c.hidden, shapes = layerShapes(c);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.layers; l++) {
    const L = { attnNorm: new Float32Array(D).fill(1), mlpNorm: new Float32Array(D).fill(1) } as LayerWeights;
    for (const k of LAYER_MATRICES) L[k] = mat(shapes[k][0], shapes[k][1]);
    if (c.qkvBias) {
      const bias = (n: number) => Float32Array.from(bytes(n), (b) => ((b - 127.5) / 73.9) * 0.2);
      L.qkvBias = { q: bias(c.heads * c.headDim), k: bias(c.kvHeads * c.headDim), v: bias(c.kvHeads * c.headDim) };
    }
    if (c.qkNorm) {
      const norm = () => Float32Array.from(bytes(c.headDim), (b) => 0.25 + b / 128);
      L.qkNorm = { q: norm(), k: norm() };
    }
    layers.push(L);
  }
  const eb = bytes(c.vocab * D);
  const embed = new Float32Array(c.vocab * D);
  for (let i = 0; i < embed.length; i++) embed[i] = ((eb[i] - 127.5) / 73.9) * std * 4;
  return { config: c, embed, layers, norm: new Float32Array(D).fill(1), lmHead: mat(c.vocab, D), quant: `q${bits} g${group} random` };
}
