// Weight layouts of the Wasm LLM kernels: rows of one or more [N, K] matrices re-laid out in blocks of 4 rows (one
// SIMD vector of outputs), q4/q8 codes arranged so that one 16-byte load unpacks with shifts and masks into i16x8
// vectors of (4 rows x 2 k), the operand order of i32x4.dot_i16x8_s. The bytes of a quantized matrix are the
// quantizer's codes, re-ordered, never re-quantized: the kernels compute exactly (q - zero) * scale.
import { dequantRow, type Matrix, type QBits, type QkNorm, type QkvBias, type QuantMatrix } from './types.js';

/** A matrix format the kernels specialise on. */
export type MatFmt = { kind: 'f32' } | { kind: 'q'; bits: QBits; group: number };

export const fmtKey = (f: MatFmt): string => (f.kind === 'f32' ? 'f32' : `q${f.bits}g${f.group}`);

/**
 * Row blocks whose quantized codes, scales and zero points interleave load by load: block b's 16 bytes of load li of
 * group g sit beside those of the other blocks of its run of Q_INTERLEAVE, so a kernel reading Q_INTERLEAVE blocks
 * at once reads one sequential stream (4 streams that each end after a row block's K/2 bytes defeat the hardware
 * prefetchers: a one-token step ran ~1.5x slower). Divides the kernels' tile of 4 blocks.
 */
export const Q_INTERLEAVE = 4;

/** A source row of a packed matrix: row `row` of `m`, or null for a zero row (padding). */
export type RowSrc = { m: Matrix; row: number } | null;

export interface PackedMatrix {
  fmt: MatFmt;
  K: number;
  /** Row blocks of 4 (padding included). */
  blocks: number;
  /**
   * f32: [blocks][K][4] floats as bytes. q: [blocks/Q_INTERLEAVE][K/group][group/kPerLoad][Q_INTERLEAVE][16] codes
   * (kPerLoad = 8 for q4, 4 for q8). Then, for rows with biases (packRows' bias), the biases: [blocks][4] f32; then
   * packRows' tail (the fused projection's q/k norm weights), as given.
   */
  w: Uint8Array;
  /** q only: [blocks/Q_INTERLEAVE][K/group][Q_INTERLEAVE][4] f32 scales and u8 zero points. */
  s?: Float32Array;
  z?: Uint8Array;
}

/** The format a set of matrices shares, or f32 when they differ (the kernels then read them dequantised, exactly). */
export function commonFmt(ms: Matrix[]): MatFmt {
  const first = ms[0];
  if (first.kind === 'q' && ms.every((m) => m.kind === 'q' && m.bits === first.bits && m.group === first.group && m.K === first.K)) {
    return { kind: 'q', bits: first.bits, group: first.group };
  }
  return { kind: 'f32' };
}

/** Codes, scales and zero points of one row of a quantized matrix. */
function qRow(m: QuantMatrix, n: number): { q: Uint8Array; s: Float32Array; z: Uint8Array } {
  const { K, group, bits } = m, G = K / group;
  const rowBytes = (K * bits) / 8, zRow = Math.ceil((G * bits) / 8);
  const q = new Uint8Array(K), s = m.scales.subarray(n * G, (n + 1) * G), z = new Uint8Array(G);
  const d = m.data.subarray(n * rowBytes, (n + 1) * rowBytes);
  if (bits === 8) q.set(d);
  else for (let k = 0; k < K; k++) q[k] = (d[k >> 1] >> ((k & 1) * 4)) & 15;
  for (let g = 0; g < G; g++) z[g] = bits === 8 ? m.zeros[n * zRow + g] : (m.zeros[n * zRow + (g >> 1)] >> ((g & 1) * 4)) & 15;
  return { q, s, z };
}

/**
 * Packs rows (a multiple of 4 of them) into the layout of fmt; `bias` (one per row, in the rows' order) follows the
 * codes in w, then `tail` (any floats), a kernel reading them at constant offsets from the matrix.
 */
export function packRows(rows: RowSrc[], K: number, fmt: MatFmt, bias?: Float32Array, tail?: Float32Array): PackedMatrix {
  if (rows.length % 4) throw new Error('packRows: rows must come in blocks of 4');
  if (fmt.kind === 'q' && rows.length % (4 * Q_INTERLEAVE)) throw new Error(`packRows: quantized rows must come in runs of ${4 * Q_INTERLEAVE}`);
  if (bias && bias.length !== rows.length) throw new Error('packRows: one bias per row');
  const blocks = rows.length / 4;
  const withTail = (p: PackedMatrix): PackedMatrix => {
    const after = [bias, tail].filter((a): a is Float32Array => !!a);
    if (!after.length) return p;
    const w = new Uint8Array(p.w.byteLength + after.reduce((n, a) => n + a.byteLength, 0));
    w.set(p.w);
    let o = p.w.byteLength;
    for (const a of after) { w.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), o); o += a.byteLength; }
    return { ...p, w };
  };
  if (fmt.kind === 'f32') {
    const out = new Float32Array(blocks * K * 4);
    const tmp = new Float32Array(K);
    rows.forEach((r, i) => {
      if (!r) return;
      dequantRow(r.m, r.row, tmp);
      const b = i >> 2, l = i & 3, base = b * K * 4;
      for (let k = 0; k < K; k++) out[base + k * 4 + l] = tmp[k];
    });
    return withTail({ fmt, K, blocks, w: new Uint8Array(out.buffer) });
  }
  const { bits, group } = fmt, G = K / group, I = Q_INTERLEAVE;
  const gBytes = (group * 4 * bits) / 8;
  const w = new Uint8Array(blocks * G * gBytes), s = new Float32Array(blocks * G * 4), z = new Uint8Array(blocks * G * 4);
  const zero = { q: new Uint8Array(K), s: new Float32Array(G), z: new Uint8Array(G) };
  for (let b = 0; b < blocks; b++) {
    const src = [0, 1, 2, 3].map((l) => { const r = rows[b * 4 + l]; return r ? qRow(r.m as QuantMatrix, r.row) : zero; });
    const b0 = b - (b % I), bi = b % I;
    for (let g = 0; g < G; g++) {
      const m = (b0 * G + g * I + bi) * 4;
      for (let l = 0; l < 4; l++) { s[m + l] = src[l].s[g]; z[m + l] = src[l].z[g]; }
      const base = b0 * G * gBytes + g * I * gBytes + bi * 16;
      // One 16-byte load covers 8 k (q4) or 4 k (q8) of the 4 rows. Its i16 lane L holds, in 4-bit (q4) or 8-bit (q8)
      // fields from the low end, the codes of pair vectors j = 0, 1, ...: pair vector j's lane L is row L>>1 at
      // k = k0 + 2j + (L & 1).
      const kPerLoad = bits === 4 ? 8 : 4, loads = group / kPerLoad, pairs = kPerLoad / 2;
      for (let li = 0; li < loads; li++) {
        const k0 = g * group + li * kPerLoad;
        for (let L = 0; L < 8; L++) {
          const row = src[L >> 1].q;
          let v = 0;
          for (let j = 0; j < pairs; j++) v |= row[k0 + 2 * j + (L & 1)] << (j * bits);
          w[base + li * I * 16 + 2 * L] = v & 255;
          w[base + li * I * 16 + 2 * L + 1] = v >> 8;
        }
      }
    }
  }
  return withTail({ fmt, K, blocks, w, s, z });
}

/** Rows of m in order, padded with zero rows to a multiple of `multiple`. */
export function plainRows(m: Matrix, multiple: number): RowSrc[] {
  const rows: RowSrc[] = [];
  for (let n = 0; n < m.N; n++) rows.push({ m, row: n });
  while (rows.length % multiple) rows.push(null);
  return rows;
}

/**
 * The fused projection's rows as (matrix 0 = q, 1 = k, 2 = v; row), null for padding: q and k heads in blocks
 * [i, i+1, i+half, i+half+1] (the rotary pairs of rotate_half in one vector), v in order.
 */
function qkvOrder(N: [number, number, number], headDim: number, multiple: number): ([number, number] | null)[] {
  const rows: ([number, number] | null)[] = [];
  const half = headDim / 2;
  for (const m of [0, 1]) {
    for (let h = 0; h < N[m] / headDim; h++) {
      for (let i = 0; i < half; i += 2) {
        const b = h * headDim;
        rows.push([m, b + i], [m, b + i + 1], [m, b + half + i], [m, b + half + i + 1]);
      }
    }
  }
  for (let n = 0; n < N[2]; n++) rows.push([2, n]);
  while (rows.length % multiple) rows.push(null);
  return rows;
}

/** q, k, v rows as the fused projection computes them (qkvOrder). */
export function qkvRows(q: Matrix, k: Matrix, v: Matrix, headDim: number, multiple: number): RowSrc[] {
  const ms = [q, k, v];
  return qkvOrder([q.N, k.N, v.N], headDim, multiple).map((r) => r && { m: ms[r[0]], row: r[1] });
}

/** The q, k, v biases in the rows' order of qkvRows (0 for padding rows): packRows' bias of the fused projection. */
export function qkvBiasRows(b: QkvBias, headDim: number, multiple: number): Float32Array {
  const bs = [b.q, b.k, b.v];
  return Float32Array.from(qkvOrder([b.q.length, b.k.length, b.v.length], headDim, multiple), (r) => (r ? bs[r[0]][r[1]] : 0));
}

/**
 * The q and k norm weights as the norm phase reads them (packRows' tail of the fused projection): q's, then k's, each
 * per rotary pair block b the f32x4 (w[2b], w[2b+1], w[half+2b], w[half+2b+1]), the order of the head's values there.
 */
export function qkNormRows(n: QkNorm, headDim: number): Float32Array {
  const half = headDim / 2, out = new Float32Array(2 * headDim);
  [n.q, n.k].forEach((w, m) => {
    for (let i = 0; i < half; i += 2) out.set([w[i], w[i + 1], w[half + i], w[half + i + 1]], m * headDim + 2 * i);
  });
  return out;
}

/** gate and up rows interleaved by blocks of 4: gate f..f+3, up f..f+3, … (the SiLU·mul epilogue pairs them). */
export function gateUpRows(gate: Matrix, up: Matrix, multiple: number): RowSrc[] {
  const rows: RowSrc[] = [];
  for (let f = 0; f < gate.N; f += 4) {
    for (let l = 0; l < 4; l++) rows.push({ m: gate, row: f + l });
    for (let l = 0; l < 4; l++) rows.push({ m: up, row: f + l });
  }
  while (rows.length % multiple) rows.push(null);
  return rows;
}
