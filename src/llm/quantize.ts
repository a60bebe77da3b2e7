// Weight quantization to 4 or 8 bits in groups along K, asymmetric (a scale and a zero point per group), in the
// MatMulNBits layout (types.ts). Round-to-nearest here; the activation-aware variant (awq.ts) searches per-channel
// scales on calibration activations and calls quantizeMatrix on the scaled weights.
import { InputError } from '../errors.js';
import { f16ToF32, f32ToF16 } from '../ops/util.js';
import { dequantize, LAYER_MATRICES, type DenseMatrix, type LlmWeights, type Matrix, type QBits, type QuantMatrix } from './types.js';

export interface QuantOptions {
  bits: QBits;
  /** Weights per scale along K: 32, 64 or 128 (default 32). */
  group?: number;
}

export function checkQuantOptions(o: QuantOptions, K: number, what: string): number {
  const group = o.group ?? 32;
  if (o.bits !== 4 && o.bits !== 8) throw new InputError(`--bits ${String(o.bits)}: webjit quantizes to 4 or 8 bits`, {}, 'use --bits 4 or --bits 8');
  if (![16, 32, 64, 128, 256].includes(group)) throw new InputError(`--group ${group}: use 32, 64 or 128`);
  if (K % group !== 0) throw new InputError(`${what}: K = ${K} is not a multiple of the group size ${group}`, { input: what }, 'choose a group size that divides the hidden sizes');
  return group;
}

const roundF16 = (x: number) => f16ToF32(f32ToF16(x));
/** The smallest f16 value ≥ x (a scale rounded down would leave the group's extremes outside the grid). */
const ceilF16 = (x: number) => { const r = roundF16(x); return r >= x ? r : f16ToF32(f32ToF16(x) + 1); };

/** Quantizes a dense [N, K] matrix, round to nearest, each group's range widened to include 0. */
export function quantizeMatrix(m: DenseMatrix, o: QuantOptions, what = 'matrix'): QuantMatrix {
  const group = checkQuantOptions(o, m.K, what);
  const { N, K } = m, bits = o.bits, qmax = (1 << bits) - 1;
  const groups = K / group;
  const rowBytes = (groups * group * bits) / 8, zRow = Math.ceil((groups * bits) / 8);
  const data = new Uint8Array(N * rowBytes), scales = new Float32Array(N * groups), zeros = new Uint8Array(N * zRow);
  for (let n = 0; n < N; n++) {
    for (let g = 0; g < groups; g++) {
      const base = n * K + g * group;
      let lo = 0, hi = 0;
      for (let i = 0; i < group; i++) { const v = m.data[base + i]; if (v < lo) lo = v; if (v > hi) hi = v; }
      let scale = ceilF16((hi - lo) / qmax);
      if (!(scale > 0) || !Number.isFinite(scale)) scale = hi > lo ? ceilF16(Math.max((hi - lo) / qmax, 6.1e-5)) : 1;
      const z = Math.min(qmax, Math.max(0, Math.round(-lo / scale)));
      scales[n * groups + g] = scale;
      if (bits === 8) zeros[n * zRow + g] = z;
      else zeros[n * zRow + (g >> 1)] |= z << ((g & 1) * 4);
      const qb = n * rowBytes + (g * group * bits) / 8;
      for (let i = 0; i < group; i++) {
        const q = Math.min(qmax, Math.max(0, Math.round(m.data[base + i] / scale) + z));
        if (bits === 8) data[qb + i] = q;
        else data[qb + (i >> 1)] |= q << ((i & 1) * 4);
      }
    }
  }
  return { kind: 'q', bits, group, N, K, data, scales, zeros };
}

export interface ModelQuantOptions extends QuantOptions {
  /** Bits of the output projection (default: bits). */
  headBits?: QBits;
}

/** Round-to-nearest quantization of every matrix of a model (norms and the embedding table stay float). */
export function quantizeRtn(w: LlmWeights, o: ModelQuantOptions): LlmWeights {
  const q = (m: Matrix, what: string, bits: QBits = o.bits): Matrix => m.kind === 'q' ? m : quantizeMatrix(m, { bits, group: o.group }, what);
  return {
    ...w,
    layers: w.layers.map((L, l) => {
      const out = { ...L };
      for (const k of LAYER_MATRICES) out[k] = q(L[k], `layer ${l} ${k}`);
      return out;
    }),
    lmHead: q(w.lmHead, 'lm_head', o.headBits ?? o.bits),
    quant: `q${o.bits} g${o.group ?? 32} rtn`,
  };
}

/** The bits of a model's quantized layer matrices (null where every one is dense). */
export function quantBits(w: LlmWeights): QBits | null {
  for (const L of w.layers) for (const k of LAYER_MATRICES) if (L[k].kind === 'q') return (L[k] as QuantMatrix).bits;
  return w.lmHead.kind === 'q' ? w.lmHead.bits : null;
}

/** Every matrix dequantised to f32: the quantized model's exact values, run by the dense kernels. */
export function dequantizeLlm(w: LlmWeights): LlmWeights {
  const d = (m: Matrix): Matrix => (m.kind === 'f32' ? m : { kind: 'f32', N: m.N, K: m.K, data: dequantize(m) });
  return {
    ...w,
    layers: w.layers.map((L) => {
      const out = { ...L };
      for (const k of LAYER_MATRICES) out[k] = d(L[k]);
      return out;
    }),
    lmHead: d(w.lmHead),
    quant: quantBits(w) === null ? w.quant : `f32 (dequantized ${w.quant})`,
  };
}
