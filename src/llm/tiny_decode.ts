// One-token decode of a whole small model in one workgroup: every layer's RMSNorm, q/k/v with RoPE (and Qwen3's q/k
// norms) and the KV-cache write, attention over the cache, o, gate/up with SiLU and down, in one dispatch (the head and
// argmax stay the runtime's kernels). A speculative draft's step is launch-bound on a large GPU (the trained draft: 22
// dispatches, 0.148 ms of GPU time on the H100 for ~1 MB of layer weights), and nothing but workgroup barriers orders
// one workgroup's phases, so the step needs no grid-wide synchronisation (which WebGPU cannot give). x is rounded to
// int8 per 32 values before each matrix and multiplied with dot4I8Packed (as the runtime's 'int8' activations).
// Measured slower than the runtime's kernels on the H100 (0.184 ms a step): see WebGpuLlmOptions.tinyDecode.
import { dot4Terms, META_IDS, quantBlock, ropeTrig, rotated, scaleOf, zeroOf, type MatLayout } from './wgsl.js';

const u = (n: number): string => `${n}u`;

/**
 * A matrix inside the packed weights buffer: its word offset (a multiple of 4) and layout (packMatrix's default; q/k/v
 * biases, where the model has them, at m.biasOff words after the offset, added before the rotation).
 */
export interface TinyMat { off: number; m: MatLayout }

export interface TinySpec {
  D: number; F: number; H: number; KVH: number; HD: number;
  capacity: number; ropeOff: number; eps: number;
  /** Threads of the workgroup. */
  WG: number;
  /**
   * Layer 0's matrices and norm weights (word offsets); layer l's are at l·layerStride words more. `qkNorm` (Qwen3):
   * the per-head q and k norms' weights, headDim words each (q's, then k's), applied before the rotation.
   */
  layer: { qkv: TinyMat; o: TinyMat; gu: TinyMat; down: TinyMat; attnNorm: number; mlpNorm: number; qkNorm?: number };
  layers: number;
  /** Words from one layer's weights to the next's (a multiple of 4). */
  layerStride: number;
  /** f32 elements from one layer's KV cache to the next's in the KV binding. */
  kvStride: number;
  /** Key slices of attention's p·V (partials in workgroup memory). */
  S: number;
  /** Matrix rows' chunks unrolled 4 at a time, their loads first (GPUs); else a loop (software drivers). */
  unroll: boolean;
}

/** Why a matrix cannot be read by the kernel (null: it can): 4-bit, groups of whole chunks of 32, default layout. */
export function tinyMatrixProblem(m: MatLayout): string | null {
  if (m.kind !== 'q' || m.bits !== 4) return `${m.kind === 'q' ? `${m.bits}-bit` : 'f32'} weights`;
  if (m.group % 32 !== 0 || m.K % 32 !== 0) return `groups of ${m.group} along K = ${m.K}`;
  if (m.inRow) return 'the in-row layout';
  if (m.kb) return 'the K-blocked layout';
  return null;
}

/** Workgroup bytes the kernel declares. */
export function tinyWorkgroupBytes(s: Pick<TinySpec, 'D' | 'F' | 'H' | 'KVH' | 'HD' | 'capacity' | 'WG' | 'S'>): number {
  const maxK = Math.max(s.D, s.H * s.HD, s.F);
  const scratch = Math.max((s.H + 2 * s.KVH) * s.HD, s.S * s.H * s.HD, s.WG);
  return 4 * (s.D + maxK + maxK / 4 + (maxK / 32) * 2 + s.H * s.HD + s.H * s.capacity + scratch + 32 + 2 * s.H);
}

export function tinyDecodeKernel(s: TinySpec): string {
  const { D, F, H, KVH, HD, capacity: CAP, ropeOff, WG, S } = s;
  const half = HD / 2, REP = H / KVH, HD4 = HD / 4;
  const maxK = Math.max(D, H * HD, F);
  const scratch = Math.max((H + 2 * KVH) * HD, S * H * HD, WG);
  // Threads per head in the softmax's first pass.
  const TPH = Math.min(32, 2 ** Math.floor(Math.log2(WG / H)));
  if (WG % 32 !== 0 || TPH < 1) throw new Error(`tinyDecode: ${WG} threads`);
  const RED = WG / 32;

  /** Σ over the workgroup of each thread's `v` (two levels through scr; every thread gets `out`). */
  const wgSum = (v: string, out: string) => `scr[lid] = ${v};
  workgroupBarrier();
  if (lid < 32u) { var ps = 0.0; for (var i = 0u; i < ${u(RED)}; i++) { ps += scr[lid * ${u(RED)} + i]; } scr[${u(WG)} + lid] = ps; }
  workgroupBarrier();
  var ${out} = 0.0;
  for (var i = 0u; i < 32u; i++) { ${out} += scr[${u(WG)} + i]; }
  workgroupBarrier();`;

  /** xv[0, D) = RMSNorm(xs) ⊙ norm weights at word `nw`. */
  const rms = (nw: number) => `{
  var ss = 0.0;
  for (var k = lid; k < ${u(D)}; k += ${u(WG)}) { let v = xs[k]; ss += v * v; }
  ${wgSum('ss', 'tot')}
  let inv = inverseSqrt(tot / ${D}.0 + ${s.eps});
  for (var k = lid; k < ${u(D)}; k += ${u(WG)}) { xv[k] = xs[k] * inv * bitcast<f32>(w32(lw + ${u(nw)} + k)); }
  workgroupBarrier();
  }`;

  /** xq/xg = xv[0, K) rounded to int8 per 32 values (wgsl.ts quantBlock: the runtime's int8 x). */
  const quant = (K: number) => `for (var g = lid; g < ${u(K / 32)}; g += ${u(WG)}) {
    ${quantBlock((i) => `vec4f(xv[g * 32u + 4u * ${i}], xv[g * 32u + 4u * ${i} + 1u], xv[g * 32u + 4u * ${i} + 2u], xv[g * 32u + 4u * ${i} + 3u])`, null, '')}
    xq[2u * g] = qa; xq[2u * g + 1u] = qb; xg[g] = qg;
  }
  workgroupBarrier();`;

  /**
   * `name` = row r of matrix t · x (xq/xg). Unrolled (GPUs): chunks loaded 4 at a time before their math; rolled
   * (software drivers, which compile long kernels slowly): one chunk per iteration.
   */
  const dotRow = (t: TinyMat, r: string, name: string) => {
    const m = t.m, KC = m.K / 32, W4 = m.wpr / 4, gm = m.group / 32;
    const base = `lw + ${u(t.off)} + `;
    // Chunk c's weights are `w${id}`.
    const chunk = (c: string, g: string, id: string) => `{ let xa = xq[2u * ${c}]; let xb = xq[2u * ${c} + 1u];
      ${name} += ${scaleOf(m, r, g, base)} * (xg[${c}].x * f32(${dot4Terms(id)}) - ${zeroOf(m, r, g, base)} * xg[${c}].y); }`;
    const wAt = (c: string) => `W[lw / 4u + ${u(t.off / 4)} + ${r} * ${u(W4)} + ${c}]`;
    if (!s.unroll) return `var ${name} = 0.0;
    for (var c = 0u; c < ${u(KC)}; c++) { let wc = ${wAt('c')}; ${chunk('c', `(c / ${u(gm)})`, 'c')} }`;
    const lines = [`var ${name} = 0.0;`];
    for (let c0 = 0; c0 < KC; c0 += 4) {
      const cs = Array.from({ length: Math.min(4, KC - c0) }, (_, i) => c0 + i);
      for (const c of cs) lines.push(`let w${name}${c} = ${wAt(u(c))};`);
      for (const c of cs) lines.push(chunk(u(c), u(Math.floor(c / gm)), `${name}${c}`));
    }
    return lines.join('\n    ');
  };

  // Every layer has the same shapes and layout: one loop, its offsets from layer 0's plus l times the layer stride.
  const L = s.layer;
  const NQ = (H + 2 * KVH) * HD;
  // Qwen3's q/k norms: 1/rms of every q and k head (a thread each, serially over headDim) into hm (its 2H ≥ H + KVH
  // words are free until the softmax), then each rotary pair scaled by it and the norm weights as the rotation reads it.
  const qkn = L.qkNorm;
  const normPass = qkn === undefined ? '' : `
  for (var hh = lid; hh < ${u(H + KVH)}; hh += ${u(WG)}) {
    var ss = 0.0;
    for (var e = 0u; e < ${u(HD)}; e++) { let v = scr[hh * ${u(HD)} + e]; ss += v * v; }
    hm[hh] = inverseSqrt(ss / ${HD}.0 + ${s.eps});
  }
  workgroupBarrier();`;
  const [ya, yb] = rotated('ya', 'yb');
  const pair = qkn === undefined ? `let ya = scr[hh * ${u(HD)} + jj]; let yb = scr[hh * ${u(HD)} + jj + ${u(half)}];`
    : `let nw = lw + ${u(qkn)} + select(${u(HD)}, 0u, hh < ${u(H)}) + jj; let rr = hm[hh];
    let ya = bitcast<f32>(w32(nw)) * (scr[hh * ${u(HD)} + jj] * rr); let yb = bitcast<f32>(w32(nw + ${u(half)})) * (scr[hh * ${u(HD)} + jj + ${u(half)}] * rr);`;
  const body = `
  ${rms(L.attnNorm)}
  ${quant(D)}
  for (var r = lid; r < ${u(NQ)}; r += ${u(WG)}) {
    ${dotRow(L.qkv, 'r', 'a')}
    scr[r] = a${L.qkv.m.biasOff === undefined ? '' : ` + bitcast<f32>(w32(lw + ${u(L.qkv.off + L.qkv.m.biasOff)} + r))`};
  }
  workgroupBarrier();${normPass}
  for (var i = lid; i < ${u((H + KVH) * half)}; i += ${u(WG)}) {
    let hh = i / ${u(half)}; let jj = i % ${u(half)};
    ${ropeTrig(ropeOff, CAP, half).join('\n    ')}
    ${pair}
    if (hh < ${u(H)}) {
      qv[hh * ${u(HD)} + jj] = ${ya}; qv[hh * ${u(HD)} + jj + ${u(half)}] = ${yb};
    } else {
      let o = kb + ((hh - ${u(H)}) * ${u(CAP)} + pos) * ${u(HD)} + jj;
      KV[o] = ${ya}; KV[o + ${u(half)}] = ${yb};
    }
  }
  for (var i = lid; i < ${u(KVH * HD)}; i += ${u(WG)}) {
    KV[vb + ((i / ${u(HD)}) * ${u(CAP)} + pos) * ${u(HD)} + i % ${u(HD)}] = scr[${u((H + KVH) * HD)} + i];
  }
  storageBarrier();
  workgroupBarrier();
  // scores of every head and key
  for (var i = lid; i < ${u(H)} * L; i += ${u(WG)}) {
    let h = i / L; let j = i % L;
    let kr = kb + ((h / ${u(REP)}) * ${u(CAP)} + j) * ${u(HD)};
    var d = 0.0;
    for (var e = 0u; e < ${u(HD)}; e += 4u) {
      d += dot(vec4f(qv[h * ${u(HD)} + e], qv[h * ${u(HD)} + e + 1u], qv[h * ${u(HD)} + e + 2u], qv[h * ${u(HD)} + e + 3u]), vec4f(KV[kr + e], KV[kr + e + 1u], KV[kr + e + 2u], KV[kr + e + 3u]));
    }
    sc[h * ${u(CAP)} + j] = d * ${1 / Math.sqrt(HD)};
  }
  workgroupBarrier();
  // softmax: TPH threads a head, then one
  if (lid < ${u(TPH * H)}) {
    let h = lid / ${u(TPH)}; var mx = -3.4e38;
    for (var j = lid % ${u(TPH)}; j < L; j += ${u(TPH)}) { mx = max(mx, sc[h * ${u(CAP)} + j]); }
    scr[lid] = mx;
  }
  workgroupBarrier();
  if (lid < ${u(H)}) { var mx = -3.4e38; for (var i = 0u; i < ${u(TPH)}; i++) { mx = max(mx, scr[lid * ${u(TPH)} + i]); } hm[lid] = mx; }
  workgroupBarrier();
  if (lid < ${u(TPH * H)}) {
    let h = lid / ${u(TPH)}; var sm = 0.0;
    for (var j = lid % ${u(TPH)}; j < L; j += ${u(TPH)}) { let e = exp(sc[h * ${u(CAP)} + j] - hm[h]); sc[h * ${u(CAP)} + j] = e; sm += e; }
    scr[lid] = sm;
  }
  workgroupBarrier();
  if (lid < ${u(H)}) { var sm = 0.0; for (var i = 0u; i < ${u(TPH)}; i++) { sm += scr[lid * ${u(TPH)} + i]; } hm[${u(H)} + lid] = 1.0 / sm; }
  workgroupBarrier();
  // p·V: ${S} key slices, then their sum into xv
  for (var i = lid; i < ${u(S * H * HD4)}; i += ${u(WG)}) {
    let sl = i / ${u(H * HD4)}; let hd = i % ${u(H * HD4)}; let h = hd / ${u(HD4)}; let e = (hd % ${u(HD4)}) * 4u;
    let vr = vb + (h / ${u(REP)}) * ${u(CAP * HD)} + e;
    var acc = vec4f();
    for (var j = sl; j < L; j += ${u(S)}) {
      let o = vr + j * ${u(HD)};
      acc += sc[h * ${u(CAP)} + j] * vec4f(KV[o], KV[o + 1u], KV[o + 2u], KV[o + 3u]);
    }
    let po = sl * ${u(H * HD)} + h * ${u(HD)} + e;
    scr[po] = acc.x; scr[po + 1u] = acc.y; scr[po + 2u] = acc.z; scr[po + 3u] = acc.w;
  }
  workgroupBarrier();
  for (var i = lid; i < ${u(H * HD)}; i += ${u(WG)}) {
    var a = 0.0;
    for (var sl = 0u; sl < ${u(S)}; sl++) { a += scr[sl * ${u(H * HD)} + i]; }
    xv[i] = a * hm[${u(H)} + i / ${u(HD)}];
  }
  workgroupBarrier();
  ${quant(H * HD)}
  for (var r = lid; r < ${u(D)}; r += ${u(WG)}) {
    ${dotRow(L.o, 'r', 'a')}
    xs[r] += a;
  }
  workgroupBarrier();
  ${rms(L.mlpNorm)}
  ${quant(D)}
  for (var r = lid; r < ${u(F)}; r += ${u(WG)}) {
    ${dotRow(L.gu, 'r', 'a')}
    ${dotRow(L.gu, `(r + ${u(F)})`, 'b')}
    scr[r] = a / (1.0 + exp(-a)) * b;
  }
  workgroupBarrier();
  for (var i = lid; i < ${u(F)}; i += ${u(WG)}) { xv[i] = scr[i]; }
  workgroupBarrier();
  ${quant(F)}
  for (var r = lid; r < ${u(D)}; r += ${u(WG)}) {
    ${dotRow(L.down, 'r', 'a')}
    xs[r] += a;
  }
  workgroupBarrier();`;

  return `@group(0) @binding(0) var<storage, read> MT: array<u32>;
@group(0) @binding(1) var<storage, read> W: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> E: array<f32>;
@group(0) @binding(3) var<storage, read_write> KV: array<f32>;
@group(0) @binding(4) var<storage, read_write> X: array<f32>;
var<workgroup> xs: array<f32, ${D}>;
var<workgroup> xv: array<f32, ${maxK}>;
var<workgroup> xq: array<vec4<u32>, ${maxK / 16}>;
var<workgroup> xg: array<vec2f, ${maxK / 32}>;
var<workgroup> qv: array<f32, ${H * HD}>;
var<workgroup> sc: array<f32, ${H * CAP}>;
var<workgroup> scr: array<f32, ${scratch + 32}>;
var<workgroup> hm: array<f32, ${2 * H}>;
fn w32(i: u32) -> u32 { return W[i >> 2u][i & 3u]; }
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) lid: u32) {
  let pos = MT[1];
  let L = pos + 1u;
  let tok = MT[${u(META_IDS)}];
  for (var k = lid; k < ${u(D)}; k += ${u(WG)}) { xs[k] = E[tok * ${u(D)} + k]; }
  workgroupBarrier();
  for (var l = 0u; l < ${u(s.layers)}; l++) {
  let lw = l * ${u(s.layerStride)};
  let kb = l * ${u(s.kvStride)};
  let vb = kb + ${u(KVH * CAP * HD)};
  ${body}
  }
  for (var k = lid; k < ${u(D)}; k += ${u(WG)}) { X[k] = xs[k]; }
}
`;
}
