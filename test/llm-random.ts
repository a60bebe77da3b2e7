// Random Llama-architecture weights for tests: seeded, small, with logits peaked enough that greedy choices are not
// near-ties, and perturbed copies (a draft that agrees with its target part of the time).
import { mulberry32 } from '../src/util/random.js';
import { LAYER_MATRICES, type LlamaConfig, type LlmWeights, type Matrix } from '../src/llm/types.js';

export function llamaConfig(c: Partial<LlamaConfig> = {}): LlamaConfig {
  const hidden = c.hidden ?? 32, heads = c.heads ?? 4;
  return {
    vocab: 64, hidden, intermediate: 48, layers: 2, heads, kvHeads: heads, headDim: hidden / heads, maxPositions: 128,
    ropeTheta: 10000, rmsEps: 1e-5, ...c,
  };
}

/** Seeded weights: Gaussian-ish entries scaled by 1/sqrt(K), the output projection scaled by `sharp` (peakier logits). */
export function randomLlama(cfg: LlamaConfig, seed: number, sharp = 3): LlmWeights {
  const r = mulberry32(seed);
  const gauss = () => (r() + r() + r() + r() - 2) * Math.sqrt(3);
  const vec = (n: number, s: number, bias = 0) => Float32Array.from({ length: n }, () => bias + s * gauss());
  const mat = (N: number, K: number, s = 1): Matrix => ({ kind: 'f32', N, K, data: vec(N * K, s / Math.sqrt(K)) });
  const D = cfg.hidden, F = cfg.intermediate, qd = cfg.heads * cfg.headDim, kvd = cfg.kvHeads * cfg.headDim;
  return {
    config: cfg,
    embed: vec(cfg.vocab * D, 1),
    layers: Array.from({ length: cfg.layers }, () => ({
      attnNorm: vec(D, 0.1, 1), mlpNorm: vec(D, 0.1, 1),
      q: mat(qd, D), k: mat(kvd, D), v: mat(kvd, D), o: mat(D, qd), gate: mat(F, D), up: mat(F, D), down: mat(D, F),
    })),
    norm: vec(D, 0.1, 1),
    lmHead: mat(cfg.vocab, D, sharp),
    quant: 'f32',
  };
}

/** A copy of w with every weight moved by Gaussian noise of `scale` times its matrix's typical size. */
export function perturb(w: LlmWeights, scale: number, seed: number): LlmWeights {
  const r = mulberry32(seed);
  const gauss = () => (r() + r() + r() + r() - 2) * Math.sqrt(3);
  const noisy = (a: Float32Array, s: number) => Float32Array.from(a, (x) => x + s * gauss());
  const m = (x: Matrix): Matrix => {
    if (x.kind !== 'f32') return x;
    let ss = 0;
    for (const v of x.data) ss += v * v;
    return { ...x, data: noisy(x.data, scale * Math.sqrt(ss / x.data.length)) };
  };
  return {
    ...w,
    embed: noisy(w.embed, scale),
    layers: w.layers.map((L) => {
      const out = { ...L };
      for (const k of LAYER_MATRICES) out[k] = m(L[k]);
      return out;
    }),
    lmHead: m(w.lmHead),
  };
}
