// webjit's decoder-LLM model: a Llama-architecture configuration and its weights, dense or quantized, as the
// quantizer writes them and the LLM runtimes (reference, Wasm, WebGPU) read them.
//
// Matrices are stored as nn.Linear stores them: [N (outputs), K (inputs)], row n holding output n's weights. The
// quantized layout is onnxruntime's MatMulNBits (com.microsoft) layout, so an ONNX export is a copy:
//   data   uint8 [N, K/group, group*bits/8]: 4-bit values two per byte, the lower nibble first;
//   scales f32   [N, K/group];
//   zeros  uint8 [N, ceil((K/group)*bits/8)]: 4-bit zero points two per byte (lower nibble first), 8-bit one per byte;
//   w[n][k] = (q[n][k] - zero[n][k/group]) * scale[n][k/group].

import { InputError } from '../errors.js';

export interface LlamaConfig {
  vocab: number;
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** Positions the model was trained for: the KV cache's capacity. */
  maxPositions: number;
  ropeTheta: number;
  /** Scaled rotary frequencies (Hugging Face `rope_scaling`): 'linear' divides every frequency by `factor`; 'llama3'
   * (Llama 3.1/3.2) divides the low ones by `factor`, keeps the high ones and blends those between. */
  ropeScaling?: RopeScaling;
  rmsEps: number;
  /**
   * q, k and v projections with biases (Qwen2; Hugging Face model_type 'qwen2'): each layer's `qkvBias` is added to
   * the projections before the rotary embedding. Absent (not false) for Llama.
   */
  qkvBias?: true;
  /**
   * A per-head RMSNorm of q and k before the rotary embedding (Qwen3; Hugging Face model_type 'qwen3'): each head's
   * headDim values are scaled by 1/rms (eps rmsEps) and by the layer's `qkNorm` weights. Absent (not false) for Llama.
   */
  qkNorm?: true;
  bos?: number;
  /** End-of-sequence id(s) of config.json and generation_config.json (Llama 3.1 names three): generation stops at each. */
  eos?: number | number[];
}

export type RopeScaling =
  | { type: 'linear'; factor: number }
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number };

export type QBits = 4 | 8;

export interface DenseMatrix {
  kind: 'f32';
  K: number;
  N: number;
  /** [N, K] */
  data: Float32Array;
}

export interface QuantMatrix {
  kind: 'q';
  bits: QBits;
  group: number;
  K: number;
  N: number;
  data: Uint8Array;
  scales: Float32Array;
  zeros: Uint8Array;
}

export type Matrix = DenseMatrix | QuantMatrix;

export interface LayerWeights {
  attnNorm: Float32Array;
  q: Matrix;
  k: Matrix;
  v: Matrix;
  o: Matrix;
  mlpNorm: Float32Array;
  gate: Matrix;
  up: Matrix;
  down: Matrix;
  /** The q, k and v projections' biases (config.qkvBias): [heads·headDim], [kvHeads·headDim], [kvHeads·headDim]. */
  qkvBias?: QkvBias;
  /** The per-head q and k norms' weights (config.qkNorm): [headDim] each, shared by the heads. */
  qkNorm?: QkNorm;
}

export interface QkNorm {
  q: Float32Array;
  k: Float32Array;
}

export interface QkvBias {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
}

export interface LlmWeights {
  config: LlamaConfig;
  /** [vocab, hidden] */
  embed: Float32Array;
  layers: LayerWeights[];
  norm: Float32Array;
  /** The output projection, N = vocab, K = hidden (a copy of embed when the embeddings are tied). */
  lmHead: Matrix;
  /** How the weights were made: 'f32', 'q4 g32 rtn', 'q4 g32 awq' … */
  quant: string;
}

/** The matrices of a layer in a fixed order (quantizers, writers and runtimes iterate them alike). */
export const LAYER_MATRICES = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'] as const;
export type LayerMatrix = typeof LAYER_MATRICES[number];

/** Bytes a matrix occupies (what one decode step reads of it). */
export function matrixBytes(m: Matrix): number {
  return m.kind === 'f32' ? m.data.byteLength : m.data.byteLength + m.scales.byteLength + m.zeros.byteLength;
}

/** The shapes [N, K] of a layer's matrices. */
export function layerShapes(c: LlamaConfig): Record<LayerMatrix, [number, number]> {
  const D = c.hidden, F = c.intermediate, qd = c.heads * c.headDim, kvd = c.kvHeads * c.headDim;
  return { q: [qd, D], k: [kvd, D], v: [kvd, D], o: [D, qd], gate: [F, D], up: [F, D], down: [D, F] };
}

/** bytesPerToken of the same model with every matrix in f32 (what a Hugging Face checkpoint reads as loaded). */
export function denseBytesPerToken(c: LlamaConfig): number {
  const biases = (c.qkvBias ? (c.heads + 2 * c.kvHeads) * c.headDim : 0) + (c.qkNorm ? 2 * c.headDim : 0);
  const layer = Object.values(layerShapes(c)).reduce((b, [N, K]) => b + N * K, 2 * c.hidden + biases);
  return (c.layers * layer + c.vocab * c.hidden + 2 * c.hidden) * 4;
}

/** Weight bytes one decode step reads: every matrix, both norms per layer, the final norm and one embedding row. */
export function bytesPerToken(w: LlmWeights): number {
  let b = matrixBytes(w.lmHead) + w.norm.byteLength + w.config.hidden * 4;
  for (const l of w.layers) {
    for (const m of LAYER_MATRICES) b += matrixBytes(l[m]);
    b += l.attnNorm.byteLength + l.mlpNorm.byteLength;
    if (l.qkvBias) b += l.qkvBias.q.byteLength + l.qkvBias.k.byteLength + l.qkvBias.v.byteLength;
    if (l.qkNorm) b += l.qkNorm.q.byteLength + l.qkNorm.k.byteLength;
  }
  return b;
}

/** Dequantises row n of a matrix into out[0..K). */
export function dequantRow(m: Matrix, n: number, out: Float32Array): void {
  const K = m.K;
  if (m.kind === 'f32') { out.set(m.data.subarray(n * K, (n + 1) * K)); return; }
  const G = m.group, groups = K / G;
  const rowBytes = groups * G * m.bits / 8;
  const zRow = Math.ceil(groups * m.bits / 8);
  for (let g = 0; g < groups; g++) {
    const s = m.scales[n * groups + g];
    const z = m.bits === 8 ? m.zeros[n * zRow + g] : (m.zeros[n * zRow + (g >> 1)] >> ((g & 1) * 4)) & 15;
    const base = n * rowBytes + g * G * m.bits / 8;
    for (let i = 0; i < G; i++) {
      const q = m.bits === 8 ? m.data[base + i] : (m.data[base + (i >> 1)] >> ((i & 1) * 4)) & 15;
      out[g * G + i] = (q - z) * s;
    }
  }
}

/** The whole matrix as f32 [N, K]. */
export function dequantize(m: Matrix): Float32Array {
  if (m.kind === 'f32') return m.data;
  const out = new Float32Array(m.N * m.K);
  for (let n = 0; n < m.N; n++) dequantRow(m, n, out.subarray(n * m.K, (n + 1) * m.K));
  return out;
}

/** Why a runner does not run the activations asked for (int8 where it cannot): the cause, and what to do. */
export interface ActivationsFallback { message: string; hint: string }

/**
 * A decoder LLM with a preallocated KV cache of `capacity` positions. forward() appends `ids` at the cache's current
 * length and returns the logits; truncate() forgets positions (speculative decoding's rollback costs nothing).
 */
export interface LlmRunner {
  readonly config: LlamaConfig;
  readonly backend: 'reference' | 'wasm' | 'webgpu';
  readonly capacity: number;
  /** Positions in the KV cache. */
  readonly length: number;
  /**
   * Runs ids at positions length … length+ids.length−1 and appends their keys and values to the cache. Returns the
   * logits of every position ([ids.length, vocab], row-major) when `allLogits`, else of the last position only.
   */
  forward(ids: readonly number[], allLogits?: boolean): Promise<Float32Array>;
  /** Keeps the first `length` positions of the cache. */
  truncate(length: number): void;
  release(): Promise<void>;
}

/**
 * The weights must have the config's shapes (every runner checks at create): a wrong one would read past a matrix into
 * wrong numbers (clamped on WebGPU, NaNs or another matrix's bytes on Wasm).
 */
export function checkWeights(w: LlmWeights): void {
  const c = w.config, D = c.hidden, F = c.intermediate, qd = c.heads * c.headDim, kvd = c.kvHeads * c.headDim;
  const bad = (what: string, got: string, want: string) => new InputError(`${what} is ${got}; the config needs ${want}`, { input: what }, 'check that the weights belong to this config');
  const mat = (m: Matrix, N: number, K: number, what: string) => {
    if (m.N !== N || m.K !== K) throw bad(what, `[${m.N}, ${m.K}]`, `[${N}, ${K}]`);
    const want = m.kind === 'f32' ? N * K : (N * K * m.bits) / 8;
    if (m.data.length !== want) throw bad(`${what} data`, `${m.data.length} values`, `${want}`);
    if (m.kind === 'q' && (K % m.group !== 0 || m.scales.length !== N * (K / m.group) || m.zeros.length !== N * Math.ceil(((K / m.group) * m.bits) / 8))) {
      throw bad(`${what} scales/zeros`, `${m.scales.length}/${m.zeros.length} values`, `groups of ${m.group} along K = ${K}`);
    }
  };
  const vec = (v: Float32Array, n: number, what: string) => { if (v.length !== n) throw bad(what, `${v.length} values`, `${n}`); };
  if (w.layers.length !== c.layers) throw bad('layers', `${w.layers.length}`, `${c.layers}`);
  vec(w.embed, c.vocab * D, 'embed');
  vec(w.norm, D, 'norm');
  mat(w.lmHead, c.vocab, D, 'lm_head');
  w.layers.forEach((L, l) => {
    vec(L.attnNorm, D, `layer ${l} attn norm`);
    vec(L.mlpNorm, D, `layer ${l} mlp norm`);
    mat(L.q, qd, D, `layer ${l} q`); mat(L.k, kvd, D, `layer ${l} k`); mat(L.v, kvd, D, `layer ${l} v`); mat(L.o, D, qd, `layer ${l} o`);
    mat(L.gate, F, D, `layer ${l} gate`); mat(L.up, F, D, `layer ${l} up`); mat(L.down, D, F, `layer ${l} down`);
    if (L.qkvBias) { vec(L.qkvBias.q, qd, `layer ${l} q bias`); vec(L.qkvBias.k, kvd, `layer ${l} k bias`); vec(L.qkvBias.v, kvd, `layer ${l} v bias`); }
    if (!!L.qkvBias !== !!c.qkvBias) throw bad(`layer ${l} q/k/v biases`, L.qkvBias ? 'present' : 'absent', c.qkvBias ? 'them (qkvBias)' : 'none');
    if (L.qkNorm) { vec(L.qkNorm.q, c.headDim, `layer ${l} q norm`); vec(L.qkNorm.k, c.headDim, `layer ${l} k norm`); }
    if (!!L.qkNorm !== !!c.qkNorm) throw bad(`layer ${l} q/k norms`, L.qkNorm ? 'present' : 'absent', c.qkNorm ? 'them (qkNorm)' : 'none');
  });
}
