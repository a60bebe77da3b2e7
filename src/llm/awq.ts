// Activation-aware weight quantization, in the spirit of AWQ (Lin et al., 2023): input channels that see large
// activations matter more, so each matrix group is quantized as Q(W·diag(s))·diag(1/s) with per-channel scales
// s = mean|x|^α, α searched on a grid to minimise the output error on calibration activations, and 1/s folded into
// the operation that produces the input (the RMSNorm weight for q/k/v and gate/up, v's rows for o, up's rows for
// down), so the runtime does no extra work. α = 0 is plain round-to-nearest, so the search never does worse than
// it on the calibration objective.
import { InputError } from '../errors.js';
import { ReferenceLlm, type TapSite } from './reference.js';
import { quantizeMatrix, type ModelQuantOptions } from './quantize.js';
import { dequantize, LAYER_MATRICES, type DenseMatrix, type LayerWeights, type LlmWeights, type Matrix } from './types.js';

export interface AwqOptions extends ModelQuantOptions {
  /** Calibration token ids (a few hundred to a few thousand). */
  calib: readonly number[];
  /** Tokens per calibration window (default 256). */
  window?: number;
  /** Activation rows kept per site for the error (default 128). */
  sampleRows?: number;
  /** α grid points in [0, 1] (default 11). */
  grid?: number;
  onProgress?: (done: number, total: number, what: string) => void;
}

export interface AwqReport {
  /** Per layer and site: the α chosen and the relative output error before (RTN) and after. */
  sites: { layer: number; site: TapSite; alpha: number; rtnError: number; error: number }[];
}

interface SiteStats { absMean: Float64Array; rows: Float32Array[]; count: number }

/** Runs the dense model on the calibration text and keeps, per layer and site, mean |x| per channel and sample rows. */
async function calibrate(w: LlmWeights, o: AwqOptions): Promise<Map<string, SiteStats>> {
  const W = Math.min(o.window ?? 256, w.config.maxPositions);
  const keep = o.sampleRows ?? 128;
  const stats = new Map<string, SiteStats>();
  const windows = Math.ceil(o.calib.length / W);
  const every = Math.max(1, Math.floor(o.calib.length / keep));
  const r = new ReferenceLlm(w, W);
  let seen = 0;
  r.tap = (layer, site, x, T) => {
    const K = x.length / T;
    const key = `${layer}:${site}`;
    let s = stats.get(key);
    if (!s) stats.set(key, s = { absMean: new Float64Array(K), rows: [], count: 0 });
    for (let t = 0; t < T; t++) {
      const row = x.subarray(t * K, (t + 1) * K);
      for (let k = 0; k < K; k++) s.absMean[k] += Math.abs(row[k]);
      if ((seen + t) % every === 0 && s.rows.length < keep) s.rows.push(row.slice());
    }
    s.count += T;
  };
  for (let i = 0; i < windows; i++) {
    const ids = o.calib.slice(i * W, (i + 1) * W);
    r.truncate(0);
    await r.forward(ids);
    seen += ids.length;
    o.onProgress?.(i + 1, windows, 'calibration');
  }
  return stats;
}

/** Relative output error of quantizing the group's matrices with input scales s, on sample rows X. */
function groupError(ms: DenseMatrix[], s: Float32Array | null, X: Float32Array[], o: ModelQuantOptions): { err: number; q: Matrix[] } {
  let err = 0, ref = 0;
  const q: Matrix[] = [];
  for (const m of ms) {
    const K = m.K;
    const scaled = s ? scaleCols(m, s) : m;
    const qm = quantizeMatrix(scaled, { bits: o.bits, group: o.group });
    q.push(qm);
    const dq = dequantize(qm);
    for (let n = 0; n < m.N; n++) {
      const wo = n * K;
      for (const x of X) {
        let a = 0, b = 0;
        for (let k = 0; k < K; k++) {
          const wq = s ? dq[wo + k] / s[k] : dq[wo + k];
          a += x[k] * wq;
          b += x[k] * m.data[wo + k];
        }
        err += (a - b) * (a - b);
        ref += b * b;
      }
    }
  }
  return { err: err / Math.max(ref, 1e-30), q };
}

function scaleCols(m: DenseMatrix, s: Float32Array): DenseMatrix {
  const d = new Float32Array(m.data.length);
  for (let n = 0; n < m.N; n++) for (let k = 0; k < m.K; k++) d[n * m.K + k] = m.data[n * m.K + k] * s[k];
  return { kind: 'f32', N: m.N, K: m.K, data: d };
}

function scaleRows(m: DenseMatrix, s: Float32Array): DenseMatrix {
  const d = m.data.slice();
  for (let n = 0; n < m.N; n++) for (let k = 0; k < m.K; k++) d[n * m.K + k] /= s[n];
  return { kind: 'f32', N: m.N, K: m.K, data: d };
}

/** Searches α for one site; returns the scales (null for α = 0), the quantized matrices and the errors. */
function search(ms: DenseMatrix[], st: SiteStats, o: AwqOptions): { s: Float32Array | null; q: Matrix[]; alpha: number; rtn: number; err: number } {
  const K = ms[0].K;
  const mean = new Float32Array(K);
  for (let k = 0; k < K; k++) mean[k] = Math.max(st.absMean[k] / st.count, 1e-8);
  const grid = o.grid ?? 11;
  const base = groupError(ms, null, st.rows, o);
  let best = { s: null as Float32Array | null, q: base.q, alpha: 0, err: base.err };
  for (let g = 1; g < grid; g++) {
    const alpha = g / (grid - 1);
    const s = new Float32Array(K);
    let lo = Infinity, hi = 0;
    for (let k = 0; k < K; k++) { s[k] = Math.pow(mean[k], alpha); lo = Math.min(lo, s[k]); hi = Math.max(hi, s[k]); }
    const norm = 1 / Math.sqrt(lo * hi);
    for (let k = 0; k < K; k++) s[k] *= norm;
    const r = groupError(ms, s, st.rows, o);
    if (r.err < best.err) best = { s, q: r.q, alpha, err: r.err };
  }
  return { ...best, rtn: base.err };
}

const dense = (m: Matrix, what: string): DenseMatrix => {
  if (m.kind !== 'f32') throw new InputError(`${what} is already quantized`, {}, 'give the dense model to the activation-aware quantizer');
  return m;
};

/** Quantizes a dense model with activation-aware scales from calibration tokens. */
export async function quantizeAwq(w: LlmWeights, o: AwqOptions): Promise<{ weights: LlmWeights; report: AwqReport }> {
  if (o.calib.length < 16) throw new InputError(`${o.calib.length} calibration tokens are too few`, {}, 'give a calibration text of at least a few hundred tokens');
  const c = w.config;
  const stats = await calibrate(w, o);
  const report: AwqReport = { sites: [] };
  const layers: LayerWeights[] = [];
  const total = c.layers * 4;
  let done = 0;
  for (let l = 0; l < c.layers; l++) {
    const L = w.layers[l];
    for (const k of LAYER_MATRICES) dense(L[k], `layer ${l} ${k}`);
    const st = (site: TapSite) => stats.get(`${l}:${site}`)!;
    const out = { ...L } as LayerWeights;
    let v = L.v as DenseMatrix, up = L.up as DenseMatrix;
    const note = (site: TapSite, r: { alpha: number; rtn: number; err: number }) => {
      report.sites.push({ layer: l, site, alpha: r.alpha, rtnError: r.rtn, error: r.err });
      o.onProgress?.(++done, total, `layer ${l} ${site}`);
    };
    // o's input is the attention output, linear in v per channel: fold 1/s into v's rows (one v channel per o input
    // channel only without grouped-query sharing).
    if (c.kvHeads === c.heads) {
      const r = search([L.o as DenseMatrix], st('o'), o);
      if (r.s) v = scaleRows(v, r.s);
      out.o = r.q[0];
      note('o', r);
    } else {
      out.o = quantizeMatrix(L.o as DenseMatrix, o);
      note('o', { alpha: 0, rtn: NaN, err: NaN });
    }
    const rd = search([L.down as DenseMatrix], st('down'), o);
    if (rd.s) up = scaleRows(up, rd.s);
    out.down = rd.q[0];
    note('down', rd);
    const ra = search([L.q as DenseMatrix, L.k as DenseMatrix, v], st('attn'), o);
    [out.q, out.k, out.v] = ra.q;
    out.attnNorm = ra.s ? L.attnNorm.map((x, i) => x / ra.s![i]) : L.attnNorm;
    note('attn', ra);
    const rm = search([L.gate as DenseMatrix, up], st('mlp'), o);
    [out.gate, out.up] = rm.q;
    out.mlpNorm = rm.s ? L.mlpNorm.map((x, i) => x / rm.s![i]) : L.mlpNorm;
    note('mlp', rm);
    layers.push(out);
  }
  // The output projection reads the final norm, which the tied embedding shares: round to nearest.
  const lmHead = quantizeMatrix(dense(w.lmHead, 'lm_head'), { bits: o.headBits ?? o.bits, group: o.group }, 'lm_head');
  return { weights: { ...w, layers, lmHead, quant: `q${o.bits} g${o.group ?? 32} awq` }, report };
}
