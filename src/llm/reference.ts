// The LLM runtime in plain TypeScript: the specification the Wasm and WebGPU runtimes are checked against, and the
// fallback that runs anywhere. f32 throughout; quantized matrices are dequantised row by row as they are read.
import { f16round } from '@petamoriken/float16';
import { InputError, ResourceLimitError } from '../errors.js';
import { checkWeights, dequantRow, type LlamaConfig, type LlmRunner, type LlmWeights, type Matrix } from './types.js';

/** out[t][n] = sum_k x[t][k] * W[n][k], for T rows of x. */
export function matVec(m: Matrix, x: Float32Array, T: number, out: Float32Array, row = new Float32Array(m.K)): void {
  const K = m.K, N = m.N;
  for (let n = 0; n < N; n++) {
    let w: Float32Array;
    if (m.kind === 'f32') w = m.data.subarray(n * K, (n + 1) * K);
    else { dequantRow(m, n, row); w = row; }
    for (let t = 0; t < T; t++) {
      let s = 0;
      const xo = t * K;
      for (let k = 0; k < K; k++) s += x[xo + k] * w[k];
      out[t * N + n] = s;
    }
  }
}

export function rmsNorm(x: Float32Array, w: Float32Array, eps: number, T: number, out: Float32Array): void {
  const D = w.length;
  for (let t = 0; t < T; t++) {
    let ss = 0;
    for (let i = 0; i < D; i++) ss += x[t * D + i] * x[t * D + i];
    const r = 1 / Math.sqrt(ss / D + eps);
    for (let i = 0; i < D; i++) out[t * D + i] = w[i] * Math.fround(x[t * D + i] * r);
  }
}

/**
 * The rotary inverse frequencies θ^(−2i/headDim), i < headDim/2, as f32 values, scaled as cfg.ropeScaling says
 * ('llama3': wavelengths 2π/f above originalMaxPositions/lowFreqFactor are divided by factor, those below
 * originalMaxPositions/highFreqFactor kept, and those between blended by (originalMaxPositions/wavelength −
 * lowFreqFactor)/(highFreqFactor − lowFreqFactor)).
 */
export function ropeInvFreq(cfg: LlamaConfig): Float32Array {
  const half = cfg.headDim / 2, out = new Float32Array(half), s = cfg.ropeScaling;
  for (let i = 0; i < half; i++) {
    let f = Math.fround(1 / Math.pow(cfg.ropeTheta, (2 * i) / cfg.headDim));
    if (s?.type === 'linear') f = f / s.factor;
    else if (s?.type === 'llama3') {
      const wavelen = (2 * Math.PI) / f;
      if (wavelen > s.originalMaxPositions / s.lowFreqFactor) f = f / s.factor;
      else if (wavelen >= s.originalMaxPositions / s.highFreqFactor) {
        const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        f = (1 - smooth) * (f / s.factor) + smooth * f;
      }
    }
    out[i] = f;
  }
  return out;
}

/** The rotary tables: cos/sin[pos][i] for i < headDim/2 (the halves of rotate_half share them). */
export function ropeTables(cfg: LlamaConfig, positions: number): { cos: Float32Array; sin: Float32Array } {
  const half = cfg.headDim / 2;
  const inv = ropeInvFreq(cfg);
  const cos = new Float32Array(positions * half), sin = new Float32Array(positions * half);
  for (let p = 0; p < positions; p++) {
    for (let i = 0; i < half; i++) {
      const invFreq = inv[i];
      const a = Math.fround(p * invFreq);
      cos[p * half + i] = Math.cos(a);
      sin[p * half + i] = Math.sin(a);
    }
  }
  return { cos, sin };
}

/** Rotates heads×headDim vectors at position pos in place (rotate_half: element i pairs with i + headDim/2). */
export function rope(v: Float32Array, off: number, heads: number, headDim: number, pos: number, cos: Float32Array, sin: Float32Array): void {
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    const b = off + h * headDim;
    for (let i = 0; i < half; i++) {
      const c = cos[pos * half + i], s = sin[pos * half + i];
      const a = v[b + i], d = v[b + i + half];
      v[b + i] = a * c - d * s;
      v[b + i + half] = d * c + a * s;
    }
  }
}

export const silu = (x: number) => x / (1 + Math.exp(-x));

/** Checks ids and room in the cache; the error names the input. */
export function checkForward(cfg: LlamaConfig, length: number, capacity: number, ids: readonly number[]): void {
  if (ids.length === 0) throw new InputError('forward() got no token ids', { input: 'input_ids' }, 'give at least one token');
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0 || id >= cfg.vocab) {
      throw new InputError(`token id ${id} is outside the model's vocabulary [0, ${cfg.vocab})`, { input: 'input_ids' }, 'check that the tokenizer belongs to this model');
    }
  }
  if (length + ids.length > capacity) {
    throw new ResourceLimitError(`${length} cached + ${ids.length} new positions exceed the KV cache's ${capacity} (the model's context)`,
      { input: 'input_ids' }, 'start a new sequence, or generate fewer tokens');
  }
}

/** y[t] += b for each of the T rows of y. */
function addRows(y: Float32Array, b: Float32Array, T: number): void {
  for (let t = 0; t < T; t++) for (let i = 0; i < b.length; i++) y[t * b.length + i] += b[i];
}

export function checkTruncate(length: number, to: number): void {
  if (!Number.isInteger(to) || to < 0 || to > length) throw new InputError(`truncate(${to}): the cache holds ${length} positions`, {}, 'truncate to a length between 0 and the current length');
}

/** Where a matrix's input can be observed: the attention input (q, k, v), o's, the MLP input (gate, up), down's. */
export type TapSite = 'attn' | 'o' | 'mlp' | 'down';
export type Tap = (layer: number, site: TapSite, x: Float32Array, T: number) => void;

export class ReferenceLlm implements LlmRunner {
  readonly backend = 'reference' as const;
  /** Sees every matrix input during forward() (calibration of the activation-aware quantizer). */
  tap?: Tap;
  readonly config: LlamaConfig;
  readonly capacity: number;
  private len = 0;
  /** Per layer: [kvHeads, capacity, headDim] */
  private readonly kCache: Float32Array[];
  private readonly vCache: Float32Array[];
  private readonly rope: { cos: Float32Array; sin: Float32Array };

  /**
   * kvCache 'f16': keys and values are rounded to f16 as they are stored (what an f16 cache holds), the math in f64/f32
   * as before.
   */
  constructor(readonly weights: LlmWeights, capacity = weights.config.maxPositions, readonly kvCache: 'f32' | 'f16' = 'f32') {
    checkWeights(weights);
    this.config = weights.config;
    this.capacity = capacity;
    const c = this.config;
    this.kCache = Array.from({ length: c.layers }, () => new Float32Array(c.kvHeads * capacity * c.headDim));
    this.vCache = Array.from({ length: c.layers }, () => new Float32Array(c.kvHeads * capacity * c.headDim));
    this.rope = ropeTables(c, capacity);
  }

  get length(): number { return this.len; }

  truncate(length: number): void {
    checkTruncate(this.len, length);
    this.len = length;
  }

  async forward(ids: readonly number[], allLogits = false): Promise<Float32Array> {
    const c = this.config, w = this.weights;
    checkForward(c, this.len, this.capacity, ids);
    const T = ids.length, D = c.hidden, H = c.heads, KVH = c.kvHeads, hd = c.headDim, F = c.intermediate, cap = this.capacity;
    const p0 = this.len;
    const x = new Float32Array(T * D);
    for (let t = 0; t < T; t++) x.set(w.embed.subarray(ids[t] * D, (ids[t] + 1) * D), t * D);
    const h = new Float32Array(T * D), q = new Float32Array(T * H * hd), k = new Float32Array(T * KVH * hd), v = new Float32Array(T * KVH * hd);
    const att = new Float32Array(T * H * hd), o = new Float32Array(T * D);
    const g = new Float32Array(T * F), u = new Float32Array(T * F);
    const scores = new Float32Array(p0 + T);
    const scale = 1 / Math.sqrt(hd);
    const rep = H / KVH;
    for (let l = 0; l < c.layers; l++) {
      const L = w.layers[l];
      rmsNorm(x, L.attnNorm, c.rmsEps, T, h);
      this.tap?.(l, 'attn', h, T);
      matVec(L.q, h, T, q); matVec(L.k, h, T, k); matVec(L.v, h, T, v);
      if (L.qkvBias) for (const [y, b] of [[q, L.qkvBias.q], [k, L.qkvBias.k], [v, L.qkvBias.v]]) addRows(y, b, T);
      // Qwen3: every head of q and k RMS-normalized (in place: rows of headDim) before the rotation
      if (L.qkNorm) { rmsNorm(q, L.qkNorm.q, c.rmsEps, T * H, q); rmsNorm(k, L.qkNorm.k, c.rmsEps, T * KVH, k); }
      const kc = this.kCache[l], vc = this.vCache[l];
      for (let t = 0; t < T; t++) {
        rope(q, t * H * hd, H, hd, p0 + t, this.rope.cos, this.rope.sin);
        rope(k, t * KVH * hd, KVH, hd, p0 + t, this.rope.cos, this.rope.sin);
        for (let j = 0; j < KVH; j++) {
          kc.set(k.subarray((t * KVH + j) * hd, (t * KVH + j + 1) * hd), (j * cap + p0 + t) * hd);
          vc.set(v.subarray((t * KVH + j) * hd, (t * KVH + j + 1) * hd), (j * cap + p0 + t) * hd);
          if (this.kvCache === 'f16') {
            for (let i = (j * cap + p0 + t) * hd, e = i + hd; i < e; i++) { kc[i] = f16round(kc[i]); vc[i] = f16round(vc[i]); }
          }
        }
      }
      for (let t = 0; t < T; t++) {
        const n = p0 + t + 1; // causal: position p0+t sees 0..p0+t
        for (let hh = 0; hh < H; hh++) {
          const j = Math.floor(hh / rep);
          const qo = (t * H + hh) * hd;
          let m = -Infinity;
          for (let s = 0; s < n; s++) {
            let d = 0;
            const ko = (j * cap + s) * hd;
            for (let i = 0; i < hd; i++) d += q[qo + i] * kc[ko + i];
            scores[s] = d * scale;
            if (scores[s] > m) m = scores[s];
          }
          let sum = 0;
          for (let s = 0; s < n; s++) { scores[s] = Math.exp(scores[s] - m); sum += scores[s]; }
          const out = att.subarray(qo, qo + hd);
          out.fill(0);
          for (let s = 0; s < n; s++) {
            const p = scores[s] / sum, vo = (j * cap + s) * hd;
            for (let i = 0; i < hd; i++) out[i] += p * vc[vo + i];
          }
        }
      }
      this.tap?.(l, 'o', att, T);
      matVec(L.o, att, T, o);
      for (let i = 0; i < T * D; i++) x[i] += o[i];
      rmsNorm(x, L.mlpNorm, c.rmsEps, T, h);
      this.tap?.(l, 'mlp', h, T);
      matVec(L.gate, h, T, g); matVec(L.up, h, T, u);
      for (let i = 0; i < T * F; i++) g[i] = silu(g[i]) * u[i];
      this.tap?.(l, 'down', g, T);
      matVec(L.down, g, T, o);
      for (let i = 0; i < T * D; i++) x[i] += o[i];
    }
    this.len = p0 + T;
    const rows = allLogits ? T : 1;
    const last = x.subarray((T - rows) * D);
    const hn = new Float32Array(rows * D);
    rmsNorm(last, w.norm, c.rmsEps, rows, hn);
    const logits = new Float32Array(rows * c.vocab);
    matVec(w.lmHead, hn, rows, logits);
    return logits;
  }

  async release(): Promise<void> { /* nothing held outside the JS heap */ }
}
