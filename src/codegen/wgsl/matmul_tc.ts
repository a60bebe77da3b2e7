// f32 GEMM on the tensor cores (WGSL subgroup matrices, 16×16×16 f16 → f32), for MatMul/Gemm/FusedMatMul with a
// constant B. Two precisions:
// - 'high' (3 products): every f32 is split into two halves, x = hi + lo with hi ≈ x in 11 bits and lo = f16(x − hi), and
//   A·B ≈ Ahi·Bhi + Alo·Bhi + Ahi·Blo (the dropped Alo·Blo is ~2^-22 of the product). About 22 significant bits per
//   operand where TF32 keeps 11 (Ootomo & Yokota, "Recovering single precision accuracy from Tensor Cores while
//   surpassing the FP32 theoretical peak performance", 2022; PyTorch calls the same class 'high' matmul precision).
//   B, a weight, is split once when the session plans it (on the GPU: splitBKernel, bit for bit splitB) and scaled by
//   a power of two so that its lo parts stay normal halves; A is split while it is staged into workgroup memory.
// - 'f16' (1 product): Ahi·Bhi, the `precision: 'f16'` session's GEMM.
// The tensor cores accumulate in f32. An |A| element past the f16 range (65504) sets the node's fault words (kind 2):
// the run fails with a typed error instead of returning infinities.
import { type MatmulSpec, type SubgroupMatrixConfig, epilogueDecls, epilogueExpr } from './matmul.js';
import { sgmStore, sgmLoad } from './sgm.js';
import { mathPrelude } from './math.js';

export interface SplitTile {
  /** Result matrices (16×16) per subgroup along M and N. */
  fm: number; fn: number;
  /** Subgroups per workgroup along M and N. */
  sm: number; sn: number;
  /** K steps of 16 per K tile. */
  kSteps: number;
}

/** 'high': 3 products on split operands; 'f16': 1 product on rounded operands. */
export type SplitPasses = 1 | 3;

/** K and N of the split B buffer are padded to these (every tile's BK and BN divides them). */
export const SPLIT_PAD_K = 64;
export const SPLIT_PAD_N = 128;
/** f16 elements appended to each workgroup row (spreads fragment rows over the banks). */
const PAD = 8;
/** The config the kernel is written for. */
export const SPLIT_CFG: SubgroupMatrixConfig = { M: 16, N: 16, K: 16, componentType: 'f16', resultComponentType: 'f32' };

export const splitTileName = (t: SplitTile): string => `tc f${t.fm}x${t.fn} s${t.sm}x${t.sn} k${16 * t.kSteps}`;

export function splitDims(t: SplitTile): { BM: number; BN: number; BK: number; threads: (sg: number) => number } {
  return { BM: t.sm * t.fm * 16, BN: t.sn * t.fn * 16, BK: t.kSteps * 16, threads: (sg) => t.sm * t.sn * sg };
}

export function splitBytes(t: SplitTile, passes: SplitPasses): number {
  const { BM, BN, BK } = splitDims(t);
  return (BM * (BK + PAD) + BK * (BN + PAD)) * 2 * (passes === 3 ? 2 : 1) + t.sm * t.sn * 1024;
}

/**
 * Whether the kernel runs this problem: one matrix (no batch dims), M and N multiples of 16 (fragments are stored whole,
 * skipped past the edge), K a multiple of 4 (vec4 loads of A), the tile within the padding of B and the device's limits.
 */
export function splitValid(s: MatmulSpec, t: SplitTile, passes: SplitPasses, subgroupSize: number, maxInvocations: number, maxStorage: number, aHalves = false): boolean {
  const { BM, BN, BK, threads } = splitDims(t);
  const T = threads(subgroupSize);
  return s.batchDims.length === 0 && s.M % 16 === 0 && s.N % 16 === 0 && s.K % 4 === 0 && s.K > 0 &&
    SPLIT_PAD_K % BK === 0 && SPLIT_PAD_N % BN === 0 && T <= maxInvocations && T >= subgroupSize &&
    (BM * BK / (aHalves ? 8 : 4)) % T === 0 && (BK * BN / 8) % T === 0 && splitBytes(t, passes) <= maxStorage;
}

const padTo = (x: number, m: number) => Math.ceil(x / m) * m;

/** The padded B dims of the split buffer. */
export function splitBDims(K: number, N: number): { Kp: number; Np: number } {
  return { Kp: padTo(K, SPLIT_PAD_K), Np: padTo(N, SPLIT_PAD_N) };
}

/**
 * The power of two B is scaled by: max|B| lands in [2^13, 2^14) for 'high' (its lo halves stay normal), 1 for 'f16'.
 * Null when B cannot be split: a non-finite value, or for 'f16' a value past the half range.
 */
export function splitExponent(b: Float32Array, passes: SplitPasses): number | null {
  // max|B| as the largest of the bit patterns without their sign (ordered as the magnitudes are; NaN and ±Inf come out
  // above every finite value), four at a time: ~1.5 ns a weight against 3 for Math.abs in one chain (bench/NOTES.md,
  // session 12), which counts at session creation.
  const u = new Int32Array(b.buffer, b.byteOffset, b.length);
  let m0 = 0, m1 = 0, m2 = 0, m3 = 0, i = 0;
  for (const n = u.length - 3; i < n; i += 4) {
    const a0 = u[i] & 0x7fffffff, a1 = u[i + 1] & 0x7fffffff, a2 = u[i + 2] & 0x7fffffff, a3 = u[i + 3] & 0x7fffffff;
    if (a0 > m0) m0 = a0;
    if (a1 > m1) m1 = a1;
    if (a2 > m2) m2 = a2;
    if (a3 > m3) m3 = a3;
  }
  for (; i < u.length; i++) m0 = Math.max(m0, u[i] & 0x7fffffff);
  const max = new Float32Array(Int32Array.of(Math.max(m0, m1, m2, m3)).buffer)[0];
  if (!(max <= 3.4e38)) return null;
  if (passes === 1) return max > 65504 ? null : 0;
  return max > 0 ? 13 - Math.floor(Math.log2(max)) : 0;
}

/**
 * B [K, N] (f32) as the kernel reads it: halves [parts][Kp][Np] (parts 2 for 'high': hi then lo; 1 for 'f16'), zero
 * padded, all times 2^exp (splitExponent). The kernel multiplies its sums by 2^-exp. Sessions derive it on the GPU
 * (splitBKernel, tested bit for bit against this): in JS it takes ~80 ms per 768×3072 weight, ~2.8 s over BERT-base.
 */
export function splitB(b: Float32Array, K: number, N: number, passes: SplitPasses, exp: number): Uint16Array {
  const scale = 2 ** exp;
  const { Kp, Np } = splitBDims(K, N);
  const two = passes === 3;
  const bits = new Uint16Array((two ? 2 : 1) * Kp * Np);
  const lo0 = Kp * Np;
  for (let k = 0; k < K; k++) {
    for (let n = 0, i = k * N, o = k * Np; n < N; n++, i++, o++) {
      const x = b[i] * scale;
      const hi = roundHalf(x);
      bits[o] = halfBitsExact(hi);
      if (two) bits[lo0 + o] = halfBitsExact(roundHalf(x - hi));
    }
  }
  return bits;
}

/**
 * x (|x| < 65520) rounded to the nearest half-precision value: Veltkamp's split to 11 significant bits in the normal
 * range, a multiple of 2^-24 below it, ties to even. With halfBitsExact it gives the bits of ops/util's f32ToF16 (for
 * f32 inputs) at a quarter of its time over a BERT-sized weight (88 vs 420 ms for 768×3072 here).
 */
function roundHalf(x: number): number {
  const a = Math.abs(x);
  if (a >= 6.103515625e-5) {
    const c = x * 4398046511105; // 2^42 + 1
    return c - (c - x);
  }
  const q = a * 16777216, r = Math.floor(q), f = q - r;
  const m = f > 0.5 || (f === 0.5 && r % 2 === 1) ? r + 1 : r;
  return (x < 0 || Object.is(x, -0) ? -m : m) / 16777216;
}

const HB_F32 = new Float32Array(1), HB_U32 = new Uint32Array(HB_F32.buffer);
/** IEEE half bits of a value exactly representable as a half (roundHalf's results below 65520). */
function halfBitsExact(h: number): number {
  const a = Math.abs(h), sign = h < 0 || Object.is(h, -0) ? 0x8000 : 0;
  if (a < 6.103515625e-5) return sign | Math.round(a * 16777216);
  if (a >= 65520) return sign | 0x7c00;
  HB_F32[0] = h;
  const w = HB_U32[0];
  return sign | ((((w >>> 23) & 0xff) - 112) << 10) | ((w >>> 13) & 0x3ff);
}

/** Invocations per workgroup of splitAKernel. */
const SPLIT_A_WG = 256;

/**
 * A (f32 [M, K], K a multiple of 4) split as splitMatmul stages it, into halves [parts][M][Kp] (Kp = splitBDims' K,
 * zeros past K), so that the GEMM (splitMatmul with aHalves) stages 16-byte runs of halves. 'high': hi is a with its
 * mantissa cut to 10 bits, lo = f16(a − hi); 'f16': f16(a). An |a| past 65504 sets the fault words (kind 2, the value).
 * One invocation per 4 elements. Bindings: A4 (array<vec4f>), Ah (array<vec2<u32>>), fault. Dispatch: splitASize's
 * workgroups as a `grid` (the workgroup index is wg.y · nwg.x + wg.x).
 */
export function splitAKernel(M: number, K: number, passes: SplitPasses): string {
  const Kp = padTo(K, SPLIT_PAD_K), quads = (M * Kp) / 4, two = passes === 3;
  return `enable f16;
@group(0) @binding(0) var<storage, read> A4: array<vec4f>;
@group(0) @binding(1) var<storage, read_write> Ah: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read_write> fault: array<u32>;
@compute @workgroup_size(${SPLIT_A_WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.y * nwg.x + wg.x) * ${SPLIT_A_WG}u + lid;
  if (i >= ${quads}u) { return; }
  let row = i / ${Kp / 4}u; let k = (i % ${Kp / 4}u) * 4u;
  var a = vec4f(0.0);
  if (k < ${K}u) { a = A4[(row * ${K}u + k) / 4u]; }
  ${splitVec4('a', two).join('\n  ')}
  Ah[i] = bitcast<vec2<u32>>(h);${two ? `\n  Ah[${quads}u + i] = bitcast<vec2<u32>>(lo);` : ''}
}`;
}

/**
 * WGSL lines that split the vec4f `v` as both A paths do (the GEMM's staging, splitAKernel), so they agree bit for bit:
 * the f16-range check (|v| past 65504 sets the fault words: kind 2, the value), then `h` (vec4<f16>: hi for 'high',
 * v rounded for 'f16') and, for 'high', `lo` = f16(v − hi). hi is v with its mantissa cut to 10 bits (exact as a half
 * in the normal range), so v − hi is exact in f32 and no f32 → f16 → f32 round trip is left for a compiler to fold away.
 */
function splitVec4(v: string, two: boolean): string[] {
  return [
    `let big = max(max(abs(${v}.x), abs(${v}.y)), max(abs(${v}.z), abs(${v}.w)));`,
    'if (big > 65504.0) { fault[0] = 2u; fault[1] = bitcast<u32>(big); }',
    ...(two
      ? [`let hf = bitcast<vec4f>(bitcast<vec4u>(clamp(${v}, vec4f(-65504.0), vec4f(65504.0))) & vec4u(0xffffe000u));`, 'let h = vec4<f16>(hf);', `let lo = vec4<f16>(${v} - hf);`]
      : [`let h = vec4<f16>(${v});`]),
  ];
}

/** splitAKernel's workgroups, and the bytes of its output. */
export function splitASize(M: number, K: number, passes: SplitPasses): { workgroups: number; bytes: number } {
  const Kp = padTo(K, SPLIT_PAD_K);
  return { workgroups: Math.ceil((M * Kp) / 4 / SPLIT_A_WG), bytes: (passes === 3 ? 2 : 1) * M * Kp * 2 };
}

/** Invocations per workgroup of splitBKernel. */
const SPLIT_B_WG = 256;

/**
 * splitB on the GPU, bit for bit: one invocation per u32 word (two halves) of each part, zero padding included.
 * WGSL leaves the rounding of an f32 → f16 conversion to the implementation and lets it flush subnormals, so the
 * halves are rounded in integer arithmetic from B's bits: x = m·2^q exactly (m < 2^24), hi = x rounded to nearest even
 * on the half grid (11 significant bits, steps of 2^-24 below 2^-14), lo the same of x − hi (an integer times 2^q).
 * Bindings: B's f32 bits [K, N]; the uniform splitBParams; the split buffer (u32 words, splitBDims). Dispatch:
 * splitBWorkgroups as a `grid` (the workgroup index is wg.y · nwg.x + wg.x).
 */
export function splitBKernel(passes: SplitPasses): string {
  const two = passes === 3;
  return `struct Params { K: u32, N: u32, rowWords: u32, partWords: u32, exp: i32 }
@group(0) @binding(0) var<storage, read> B: array<u32>;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read_write> Bs: array<u32>;
// m·2^q (0 < m < 2^24) rounded to nearest even on the half grid: x = the half's bits (no sign), y = the remainder
// m·2^q − half in units of 2^q. The half's last place is 2^g; its bits are (g + 24)·2^10 + r for r units of 2^g
// (r < 1024 the subnormals at g = -24; r = 2048 after a carry is the next binade's first value).
fn round_half(m: u32, q: i32) -> vec2i {
  let g = max(i32(firstLeadingBit(m)) + q - 10, -24);
  let d = g - q;
  if (d <= 0) { return vec2i(((g + 24) << 10u) + i32(m << u32(-d)), 0); }
  // Past 24 places below the grid x is under half a last place (2^-25: g is -24 there) and rounds to zero.
  if (d > 24) { return vec2i(0, i32(m)); }
  let r = m >> u32(d);
  let rem = m & ((1u << u32(d)) - 1u);
  let half = 1u << u32(d - 1);
  let up = rem > half || (rem == half && (r & 1u) == 1u);
  return vec2i(((g + 24) << 10u) + i32(r + u32(up)), select(i32(rem), i32(rem) - i32(1u << u32(d)), up));
}
// The halves of B[k][n] · 2^exp: hi, lo (0 past K or N; lo of an exact hi is +0, as x − hi is in splitB).
fn split(k: u32, n: u32) -> vec2u {
  if (k >= p.K || n >= p.N) { return vec2u(0u); }
  let w = B[k * p.N + n];
  let s = (w >> 16u) & 0x8000u;
  let e = (w >> 23u) & 0xffu;
  let m = select(w & 0x7fffffu, (w & 0x7fffffu) | 0x800000u, e != 0u);
  if (m == 0u) { return vec2u(s, 0u); }
  let q = select(-149, i32(e) - 150, e != 0u) + p.exp;
  let h = round_half(m, q);${two ? `
  if (h.y == 0) { return vec2u(s | u32(h.x), 0u); }
  let l = round_half(u32(abs(h.y)), q);
  return vec2u(s | u32(h.x), select(s, s ^ 0x8000u, h.y < 0) | u32(l.x));` : `
  return vec2u(s | u32(h.x), 0u);`}
}
@compute @workgroup_size(${SPLIT_B_WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.y * nwg.x + wg.x) * ${SPLIT_B_WG}u + lid;
  if (i >= p.partWords) { return; }
  let k = i / p.rowWords; let n = (i % p.rowWords) * 2u;
  let a = split(k, n); let b = split(k, n + 1u);
  Bs[i] = a.x | (b.x << 16u);${two ? '\n  Bs[p.partWords + i] = a.y | (b.y << 16u);' : ''}
}`;
}

/** The uniform of splitBKernel for B [K, N] scaled by 2^exp (Params: K, N, words per row, words per part, exp). */
export function splitBParams(K: number, N: number, exp: number): Int32Array {
  const { Kp, Np } = splitBDims(K, N);
  return Int32Array.of(K, N, Np / 2, (Kp * Np) / 2, exp, 0, 0, 0);
}

/** splitBKernel's workgroups: one invocation per word of a part. */
export function splitBWorkgroups(K: number, N: number): number {
  const { Kp, Np } = splitBDims(K, N);
  return Math.ceil((Kp * Np) / 2 / SPLIT_B_WG);
}

/**
 * The default tile. 'high' (A split while staged): 128×128 (8 subgroups of 2×4 fragments) from 512 workgroups, 64×128
 * from 96, 64×64 (K tiles of 64) from 16. 'f16' (A rounded to halves in memory first, splitAKernel): 64×128 from 96
 * workgroups with K tiles of 64 under 160 workgroups (more of K per barrier where the grid is thin) and of 32 above,
 * 64×64 with K tiles of 64 from 16. Null below that (the f32 kernel then runs). From bench/gpu/tc-bert-lab.ts on the
 * H100 (bench/results/gpu/h100-tc-bert-lab.txt): BERT-base b8's o and ff2 (N = 768, 96 workgroups at 64×128) ran
 * 1.15-1.19× faster at 64×128 than at 64×64 in 'high', 1.3-2.2× in 'f16'; 128×128 led at 4096³ in 'high' only. BERT-base
 * at batch 1 (24–96 workgroups of 64×64) took 2.47 ms of GPU time against 3.45 with the f32 kernels in 'high', 1.57
 * against 4.62 (f16 weights on the f32 kernels) in 'f16' (h100-tc-b1-models.txt; session 10's loss there came before
 * the fault words moved into pages).
 */
export function splitDefault(s: MatmulSpec, passes: SplitPasses, subgroupSize: number, maxInvocations: number, maxStorage: number): SplitTile | null {
  const groups = (t: SplitTile) => { const { BM, BN } = splitDims(t); return Math.ceil(s.M / BM) * Math.ceil(s.N / BN); };
  const wide: SplitTile = { fm: 2, fn: 2, sm: 2, sn: 4, kSteps: 2 };
  const prefs: [SplitTile, number][] = passes === 3
    ? [[{ fm: 2, fn: 4, sm: 4, sn: 2, kSteps: 2 }, 512], [wide, 96], [{ fm: 2, fn: 1, sm: 2, sn: 4, kSteps: 4 }, 16]]
    : [[{ ...wide, kSteps: groups(wide) < 160 ? 4 : 2 }, 96], [{ fm: 2, fn: 1, sm: 2, sn: 4, kSteps: 4 }, 16]];
  for (const [t, minGroups] of prefs) {
    if (groups(t) >= minGroups && splitValid(s, t, passes, subgroupSize, maxInvocations, maxStorage, splitAHalves(passes))) return t;
  }
  return null;
}

/**
 * Whether the runtime rounds A to halves in memory first (splitAKernel) for these passes: 'f16' yes (1.0–2.2× on
 * BERT-base's GEMMs with the split pass counted), 'high' no (0.87–1.12×: its three products, not the staging, bound it).
 */
export const splitAHalves = (passes: SplitPasses): boolean => passes === 1;

/**
 * The kernel. Bindings: A (array<vec4f>, [M, K]), Bs (array<vec4<u32>>, splitB's halves), [bias], [residual], C, fault;
 * with `aHalves`, A is splitAKernel's halves (array<vec4<u32>>) and there are no fault words (that pass checks A).
 * Each workgroup stages its A tile (split into hi/lo halves) and B tile into workgroup memory, prefetching the next K
 * tile into registers while its subgroups multiply; each subgroup owns fm×fn result matrices, which leave through a
 * per-subgroup scratch where the lanes unscale them and apply the epilogue. `unscale` is 2^-exp of splitB.
 * Dispatch: [ceil(N / BN), ceil(M / BM), 1].
 */
export function splitMatmul(s: MatmulSpec, t: SplitTile, passes: SplitPasses, subgroupSize: number, unscale: number, aHalves = false): string {
  const { M, N, K } = s;
  const { BM, BN, BK, threads } = splitDims(t);
  const NT = threads(subgroupSize);
  const { Kp, Np } = splitBDims(K, N);
  const SA = BK + PAD, SB = BN + PAD;
  const LA = aHalves ? (BM * BK) / 8 / NT : (BM * BK) / 4 / NT, LB = (BK * BN) / 8 / NT;
  const kTiles = Math.ceil(K / BK);
  const guardK = K % BK !== 0, guardM = M % BM !== 0;
  const two = passes === 3;
  const left = 'subgroup_matrix_left<f16, 16, 16>', right = 'subgroup_matrix_right<f16, 16, 16>', result = 'subgroup_matrix_result<f32, 16, 16>';
  const range = (n: number) => Array.from({ length: n }, (_, i) => i);
  const e = s.epilogue;

  // A: vec4 l of the tile is row m = v / (BK/4), k quad v % (BK/4); rows past M read row M-1, k past K read zeros.
  const loadA = (l: number) => {
    const v = `(lid + ${l * NT}u)`;
    const row = guardM ? `min(row0 + ${v} / ${BK / 4}u, ${M - 1}u)` : `(row0 + ${v} / ${BK / 4}u)`;
    const k = `(k0 + (${v} % ${BK / 4}u) * 4u)`;
    const ld = `A4[(${row} * ${K}u + ${k}) / 4u]`;
    return guardK ? `pa${l} = select(vec4f(0.0), ${ld}, ${k} < ${K}u);` : `pa${l} = ${ld};`;
  };
  const storeA = (l: number) => {
    const v = `(lid + ${l * NT}u)`;
    const o = `(${v} / ${BK / 4}u) * ${SA}u + (${v} % ${BK / 4}u) * 4u`;
    const lines = [`let o = ${o};`, ...splitVec4(`pa${l}`, two), ...range(4).map((c) => `Ah[o + ${c}u] = h[${c}];`)];
    if (two) lines.push(...range(4).map((c) => `Al[o + ${c}u] = lo[${c}];`));
    return `{ ${lines.join(' ')} }`;
  };
  // A pre-split (splitAKernel): per part, vec4<u32> l of the tile (8 halves) is row v / (BK/8), k octet v % (BK/8);
  // K is padded with zeros to Kp, rows past M read row M-1.
  const loadAh = (l: number, part: number) => {
    const v = `(lid + ${l * NT}u)`;
    const row = guardM ? `min(row0 + ${v} / ${BK / 8}u, ${M - 1}u)` : `(row0 + ${v} / ${BK / 8}u)`;
    return `pa${part}_${l} = Ah4[(${part * M}u + ${row}) * ${Kp / 8}u + k0 / 8u + ${v} % ${BK / 8}u];`;
  };
  const halves8 = (dst: string, o: string, src: string) =>
    range(4).map((q) => `{ let h = bitcast<vec2<f16>>(${src}[${q}]); ${dst}[${o} + ${2 * q}u] = h.x; ${dst}[${o} + ${2 * q + 1}u] = h.y; }`).join(' ');
  const storeAh = (l: number, part: number) => {
    const v = `(lid + ${l * NT}u)`;
    return `{ let o = (${v} / ${BK / 8}u) * ${SA}u + (${v} % ${BK / 8}u) * 8u; ${halves8(part === 0 ? 'Ah' : 'Al', 'o', `pa${part}_${l}`)} }`;
  };
  // B: per part, vec4<u32> l of the tile (8 halves) is k row v / (BN/8), column octet v % (BN/8).
  const loadB = (l: number, part: number) => {
    const v = `(lid + ${l * NT}u)`;
    return `pb${part}_${l} = Bs[(${part * Kp}u + k0 + ${v} / ${BN / 8}u) * ${Np / 8}u + col0 / 8u + ${v} % ${BN / 8}u];`;
  };
  const storeB = (l: number, part: number) => {
    const v = `(lid + ${l * NT}u)`;
    return `{ let o = (${v} / ${BN / 8}u) * ${SB}u + (${v} % ${BN / 8}u) * 8u; ${halves8(part === 0 ? 'Bh' : 'Bl', 'o', `pb${part}_${l}`)} }`;
  };
  const parts = two ? [0, 1] : [0];
  const compute: string[] = [];
  for (let kk = 0; kk < t.kSteps; kk++) {
    compute.push('{');
    for (let i = 0; i < t.fm; i++) {
      const off = `(wr + ${i * 16}u) * ${SA}u + ${kk * 16}u`;
      compute.push(`let ah${i} = ${sgmLoad(left, '&Ah', off, false, `${SA}u`)};`);
      if (two) compute.push(`let al${i} = ${sgmLoad(left, '&Al', off, false, `${SA}u`)};`);
    }
    for (let j = 0; j < t.fn; j++) {
      const off = `${kk * 16 * SB}u + wc + ${j * 16}u`;
      compute.push(`let bh${j} = ${sgmLoad(right, '&Bh', off, false, `${SB}u`)};`);
      if (two) compute.push(`let bl${j} = ${sgmLoad(right, '&Bl', off, false, `${SB}u`)};`);
    }
    // The small products first, then the large one, into the same f32 sums.
    for (let i = 0; i < t.fm; i++) {
      for (let j = 0; j < t.fn; j++) {
        if (two) {
          compute.push(`acc${i}_${j} = subgroupMatrixMultiplyAccumulate(al${i}, bh${j}, acc${i}_${j});`);
          compute.push(`acc${i}_${j} = subgroupMatrixMultiplyAccumulate(ah${i}, bl${j}, acc${i}_${j});`);
        }
        compute.push(`acc${i}_${j} = subgroupMatrixMultiplyAccumulate(ah${i}, bh${j}, acc${i}_${j});`);
      }
    }
    compute.push('}');
  }
  const aLoads = aHalves ? parts.flatMap((p) => range(LA).map((l) => loadAh(l, p))) : range(LA).map(loadA);
  const aStores = aHalves ? parts.flatMap((p) => range(LA).map((l) => storeAh(l, p))) : range(LA).map(storeA);
  const loads = [...aLoads, ...parts.flatMap((p) => range(LB).map((l) => loadB(l, p)))];
  const stores = [...aStores, ...parts.flatMap((p) => range(LB).map((l) => storeB(l, p)))];
  const decl = (n: string, len: number) => `var<workgroup> ${n}: array<f16, ${len}>;`;
  // The sums leave through a 16×16 f32 scratch per subgroup in workgroup memory: each fragment is stored there, and the
  // subgroup's lanes unscale it, apply the epilogue and write C. Fragments wholly past M or N are skipped (M and N are
  // multiples of 16; the condition is uniform per subgroup); the barriers stay in the workgroup's uniform flow.
  const outs = range(t.fm).flatMap((i) => range(t.fn).map((j) => {
    const r = `row0 + wr + ${i * 16}u`, c = `col0 + wc + ${j * 16}u`;
    const conds = [M % BM !== 0 ? `${r} < ${M}u` : '', N % BN !== 0 ? `${c} < ${N}u` : ''].filter(Boolean);
    const inside = conds.length ? conds.join(' && ') : 'true';
    return `{
    let r0 = ${r}; let c0 = ${c}; let inside = ${inside};
    ${sgmStore('&Cs', 'sg * 256u', `acc${i}_${j}`, false, '16u')};
    workgroupBarrier();
    if (inside) {
      for (var q = lane; q < 256u; q += ${subgroupSize}u) {
        let row = r0 + q / 16u; let col = c0 + q % 16u; let idx = row * ${N}u + col;
        let v = Cs[sg * 256u + q]${unscale !== 1 ? ` * ${unscale.toExponential()}` : ''};
        C[idx] = ${epilogueExpr(e, 'v', 'row', 'col', 'idx')};
      }
    }
    workgroupBarrier();
  }`;
  }));
  let binding = 0;
  const decls = [
    aHalves ? `@group(0) @binding(${binding++}) var<storage, read> Ah4: array<vec4<u32>>;` : `@group(0) @binding(${binding++}) var<storage, read> A4: array<vec4f>;`,
    `@group(0) @binding(${binding++}) var<storage, read> Bs: array<vec4<u32>>;`,
    epilogueDecls(e, binding),
  ];
  binding += (e.bias ? 1 : 0) + (e.residual ? 1 : 0);
  decls.push(`@group(0) @binding(${binding++}) var<storage, read_write> C: array<f32>;`);
  if (!aHalves) decls.push(`@group(0) @binding(${binding++}) var<storage, read_write> fault: array<u32>;`);
  const code = `${decls.filter(Boolean).join('\n')}
${decl('Ah', BM * SA)}
${two ? decl('Al', BM * SA) : ''}
${decl('Bh', BK * SB)}
${two ? decl('Bl', BK * SB) : ''}
var<workgroup> Cs: array<f32, ${t.sm * t.sn * 256}>;
@compute @workgroup_size(${NT})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let sg = lid / ${subgroupSize}u; let lane = lid % ${subgroupSize}u;
  let row0 = wg.y * ${BM}u; let col0 = wg.x * ${BN}u;
  let wr = (sg / ${t.sn}u) * ${t.fm * 16}u; let wc = (sg % ${t.sn}u) * ${t.fn * 16}u;
  ${range(t.fm).flatMap((i) => range(t.fn).map((j) => `var acc${i}_${j}: ${result};`)).join('\n  ')}
  ${aHalves ? parts.flatMap((p) => range(LA).map((l) => `var pa${p}_${l}: vec4<u32>;`)).join(' ') : range(LA).map((l) => `var pa${l}: vec4f;`).join(' ')} ${parts.flatMap((p) => range(LB).map((l) => `var pb${p}_${l}: vec4<u32>;`)).join(' ')}
  var k0 = 0u;
  ${loads.join('\n  ')}
  for (var kt = 0u; kt < ${kTiles}u; kt++) {
    ${stores.join('\n    ')}
    workgroupBarrier();
    k0 = k0 + ${BK}u;
    if (kt + 1u < ${kTiles}u) {
      ${loads.join('\n      ')}
    }
    ${compute.join('\n    ')}
    workgroupBarrier();
  }
  ${outs.join('\n  ')}
}`;
  return `enable f16;
enable chromium_experimental_subgroup_matrix;
diagnostic(off, chromium.subgroup_matrix_uniformity);
${mathPrelude(code)}
${code}`;
}
