// WGSL generators of the WebGPU LLM runtime: the matrix-vector kernel (decode and small T, dequantisation fused, RMSNorm
// in its prologue, RoPE/KV-cache writes, SiLU·mul or the residual add in its epilogue), Qwen3's per-head q/k norm,
// attention over the KV cache, and argmax. Every size that changes per token (T, the cache length, which row feeds the
// head) is read from the `meta` buffer, so one pipeline serves every position.
import { f32Lit } from '../backends/webgpu/kernel.js';

const u = (n: number): string => `${n}u`;

/**
 * The `meta` buffer (u32 words), written once per forward: [0] T, [1] p0 (cached positions before this forward), [2]
 * the first x row the head reads, [3] the head's rows, [4] where argmax writes its first id, [5] 1 when argmax also
 * writes its (last) id as the next forward's token, [6] attention splits, [7] keys per split, [8, 8+maxT) token ids,
 * then the RoPE table: cos at ROPE_OFF
 * [capacity, headDim/2], sin after it.
 */
export const META_HEADER = 8;
export const META_IDS = 8;
export const metaRopeOffset = (maxT: number): number => META_IDS + maxT;

/**
 * A matrix as the kernels read it: one u32 buffer holding the data rows (K·bits/32 words each; f32 bits for dense),
 * then the scales ([N, groups] as f32 bits, or as f16 two per word where every scale is an f16 value: 2 bytes fewer per
 * group), then the zero points packed per row and padded to whole words.
 */
export interface MatLayout {
  kind: 'f32' | 'q';
  bits: 4 | 8 | 32;
  group: number;
  N: number;
  K: number;
  /** Data words per row. */
  wpr: number;
  groups: number;
  /** Zero-point words per row. */
  zpr: number;
  /**
   * Words from one row's weights to the next's. Default layout: wpr (every row's weights, then all scales, then all
   * zero points). `inRow`: each row's scales and zero points follow its weights (one contiguous run per row, padded
   * to a multiple of matLayout's `rowAlign` words), and scaleOff/zeroOff are offsets inside the row.
   */
  stride: number;
  inRow: boolean;
  scaleOff: number;
  /** Scales as f16 pairs. */
  scaleF16: boolean;
  zeroOff: number;
  /**
   * The rows' biases (q/k/v of Qwen2), N f32 words at this offset after everything else; absent without. Only the
   * q/k/v epilogue reads them (epilogueLines).
   */
  biasOff?: number;
  /**
   * K-block-major order (absent: row-major). The weights, the scales and the zero points each stay in their region, but
   * inside it the matrix is cut along K into blocks of `C` chunks (vec4s of weights; the last block `LC`) and stored
   * block after block, every row's run of a block together: the workgroups a one-token kernel runs at once then read
   * one narrow window of the matrix, not a run in each of hundreds of rows (blockedIndex).
   */
  kb?: KBlock;
  words: number;
}

/** MatLayout.kb: `NB` blocks of `C` chunks, `G` groups and `Z` zero-point words a row (the last: LC, LG, LZ). */
export interface KBlock { C: number; NB: number; LC: number; G: number; LG: number; Z: number; LZ: number }

/**
 * The K-blocked layout of a 4/8-bit matrix of whole vec4 rows with blocks of `C` chunks, or why there is none: blocks
 * must hold whole groups and be fewer chunks than a row. A block's zero points are padded to whole words a row.
 */
export function kBlockOf(bits: 4 | 8, group: number, K: number, C: number): KBlock | string {
  const CWt = (4 * 32) / bits, KC = (K * bits) / 128;
  if (!Number.isInteger(KC)) return 'rows are not whole vec4s';
  if (!(C > 0 && C < KC)) return `${C} chunks a block in rows of ${KC}`;
  const G = (C * CWt) / group, NB = Math.ceil(KC / C), LC = KC - (NB - 1) * C, LG = (LC * CWt) / group;
  if (!Number.isInteger(G) || !Number.isInteger(LG)) return `blocks of ${C} chunks do not hold whole groups of ${group}`;
  return { C, NB, LC, G, LG, Z: Math.ceil((G * bits) / 32), LZ: Math.ceil((LG * bits) / 32) };
}

/**
 * Where item `i` (an expression) of row `rw` lies in a region cut into NB blocks of `full` items a row (the last of
 * `last`): block by block, each block row-major (N rows).
 */
function blockedIndex(rw: string, i: string, full: number, last: number, NB: number, N: number): string {
  const x = paren(i);
  const width = last === full ? u(full) : `select(${u(full)}, ${u(last)}, ${x} >= ${u((NB - 1) * full)})`;
  return `((${x} / ${u(full)}) * ${u(N * full)} + ${rw} * ${width} + ${x} % ${u(full)})`;
}

/** JavaScript's blockedIndex (packMatrix, tests). */
export function blockedIndexJs(rw: number, i: number, full: number, last: number, NB: number, N: number): number {
  const b = Math.floor(i / full);
  return b * N * full + rw * (b === NB - 1 ? last : full) + (i % full);
}

/** The vec4 index in W of chunk `c` (16 bytes of weights) of row `rw`. */
export function chunkAt(m: MatLayout, rw: string, c: string): string {
  if (m.kb) return blockedIndex(rw, c, m.kb.C, m.kb.LC, m.kb.NB, m.N);
  return `${rw} * ${u(m.stride / 4)} + ${c}`;
}

/** The word index of weight word `w` of row `rw`. */
export function wordAt(m: MatLayout, rw: string, w: string): string {
  if (m.kb) return blockedIndex(rw, w, 4 * m.kb.C, 4 * m.kb.LC, m.kb.NB, m.N);
  return `${rw} * ${u(m.stride)} + ${w}`;
}

/**
 * `rowAlign` > 0: the in-row layout (MatLayout.inRow), each row padded to a multiple of that many words (at least 4).
 * `bias`: N more words for the rows' biases (MatLayout.biasOff).
 */
export function matLayout(kind: 'f32' | 'q', bits: 4 | 8 | 32, group: number, N: number, K: number, scaleF16 = false, rowAlign = 0, bias = false, block = 0): MatLayout {
  const withBias = (m: MatLayout): MatLayout => (bias ? { ...m, biasOff: m.words, words: m.words + N } : m);
  const wpr = (K * bits) / 32;
  if (kind === 'f32') return withBias({ kind, bits: 32, group: K, N, K, wpr, groups: 0, zpr: 0, stride: wpr, inRow: false, scaleOff: N * wpr, scaleF16: false, zeroOff: N * wpr, words: N * wpr });
  const groups = K / group, zpr = Math.ceil((groups * bits) / 32);
  if (rowAlign > 0) {
    const sw = scaleF16 ? Math.ceil(groups / 2) : groups;
    const align = Math.max(4, rowAlign);
    const stride = Math.ceil((wpr + sw + zpr) / align) * align;
    return withBias({ kind, bits, group, N, K, wpr, groups, zpr, stride, inRow: true, scaleOff: wpr, scaleF16, zeroOff: wpr + sw, words: N * stride });
  }
  const scaleOff = N * wpr, zeroOff = scaleOff + (scaleF16 ? Math.ceil((N * groups) / 2) : N * groups);
  if (block > 0) {
    if (bits === 32) throw new Error('matLayout: K blocks of f32 weights');
    const kb = kBlockOf(bits, group, K, block);
    if (typeof kb === 'string') throw new Error(`matLayout: ${kb}`);
    return withBias({ kind, bits, group, N, K, wpr, groups, zpr, stride: wpr, inRow: false, scaleOff, scaleF16, zeroOff, kb, words: zeroOff + N * ((kb.NB - 1) * kb.Z + kb.LZ) });
  }
  return withBias({ kind, bits, group, N, K, wpr, groups, zpr, stride: wpr, inRow: false, scaleOff, scaleF16, zeroOff, words: zeroOff + N * zpr });
}

/** A WGSL expression safe to combine with any operator (WGSL refuses e.g. `a / b >> c` without parentheses). */
const paren = (e: string): string => (/^[\w.]+$/.test(e) ? e : `(${e})`);

/**
 * The scale of group `g` of row `rw` (an f32 expression). `base`: a WGSL prefix of the word index ('o + '), where the
 * matrix starts at word o of the buffer w32() reads.
 */
export function scaleOf(m: MatLayout, rw: string, gx: string, base = ''): string {
  const g = paren(gx);
  if (m.inRow) {
    const at = `${base}${rw} * ${u(m.stride)} + ${u(m.scaleOff)}`;
    return m.scaleF16 ? `unpack2x16float(w32(${at} + (${g} >> 1u)))[${g} & 1u]` : `bitcast<f32>(w32(${at} + ${g}))`;
  }
  const i = m.kb ? blockedIndex(rw, g, m.kb.G, m.kb.LG, m.kb.NB, m.N) : `(${rw} * ${u(m.groups)} + ${g})`;
  return m.scaleF16 ? `unpack2x16float(w32(${base}${u(m.scaleOff)} + (${i} >> 1u)))[${i} & 1u]` : `bitcast<f32>(w32(${base}${u(m.scaleOff)} + ${i}))`;
}

export type Epilogue =
  /** out[t, n] = y (the head: x rows from MT[2], MT[3] of them). */
  | { kind: 'head' }
  /** x[t, n] += y */
  | { kind: 'residual' }
  /** g[t, n] = silu(y[n]) * y[n + F]: units are the row pairs (n, n + F). */
  | { kind: 'gateup'; F: number }
  /**
   * Rows are q|k|v heads of headDim; units are rotary pairs (i, i + headDim/2) of a head. q is rotated into Q, k
   * rotated and v copied into the layer's cache [2, kvHeads, capacity, headDim] at position p0 + t (the rows' biases
   * added first where the matrix has them: MatLayout.biasOff). `qkNorm` (Qwen3): q and k are stored as they are, not
   * rotated, at the same places; qkNormRopeKernel normalizes and rotates them there (a head's rows span workgroups).
   * `kToQ` (with qkNorm, one-token kernels): k's heads go into Q after q's (token 0's rows), not into the cache;
   * attentionKernel's `qkNorm` normalizes and rotates both and writes k into the cache. `kv16`: the cache holds f16
   * (shader-f16; values rounded when stored). `kStage` (qkNorm with an f16 cache, not kToQ): k's heads go unrotated
   * into Q at word kStage + (t·kvHeads + head)·headDim, in f32, for qkNormRopeKernel to normalize from there (the
   * cache rounds once, after the norm and rotation, as with one token).
   */
  | { kind: 'qkv'; heads: number; kvHeads: number; headDim: number; capacity: number; ropeOff: number; qkNorm?: true; kToQ?: true; kv16?: true; kStage?: number };

export interface GemvShape {
  /** Tokens per workgroup: each weight load serves all of them. */
  TB: number;
  /** Units (rows, or row pairs) per thread. */
  RT: number;
  /** Threads along K per row group. */
  TK: number;
  /** Row groups per workgroup. */
  RG: number;
  /** Decode (TB 1): chunks per loop iteration, their loads issued together (default 1). */
  UN?: number;
  /**
   * int8 activations with x quantized beforehand (gemvDot4PreLoop, unrolled kernels): chunks per loop iteration, all
   * their weight loads issued before their math (default 1).
   */
  PU?: number;
  /** int8 x quantized beforehand with a norm: sum the groups' Σx² (for 1/rms) after the loop, not before it. */
  lateRms?: boolean;
  /**
   * gemvDot4PreLoop, unrolled: the next iteration's weights, scales and zero points are loaded (into registers) before
   * this iteration's math, so that loads stay in flight while the math runs (the last iteration loads a clamped,
   * unused chunk).
   */
  pipe?: boolean;
  /**
   * 4/8-bit matrices: x staged in workgroup memory, this many x vec4s per tile, all tokens' (0: x read from storage per
   * chunk). See gemvStagedLoop.
   */
  XT?: number;
  /**
   * One token, x quantized beforehand, with a norm, subgroups exactly TK wide: every subgroup sums the groups' Σx² in
   * registers and shuffles (subgroupGroupsSum: sumGroupsTree's pairs, so the same bits) instead of the workgroup tree
   * and its barriers.
   */
  sgRms?: boolean;
  /**
   * One token (not the head): no early return on MT's row count before the weight loads (the dispatch has one row of
   * workgroups, and the stores check the row count).
   */
  ungated?: boolean;
}

export interface GemvSpec extends GemvShape {
  m: MatLayout;
  /** Subgroup reductions (the device's subgroups were checked to be contiguous runs of the workgroup). */
  sg: boolean;
  /**
   * The device's smallest subgroup (default 4, WebGPU's least): with subgroup reductions each row group keeps TK/sgMin
   * partial sums in workgroup memory, not TK (on the H100 one: room that the small-T kernels' x tiles need).
   */
  sgMin?: number;
  /** RMSNorm of x in the prologue: y = W (nw ⊙ x) / rms(x). */
  norm: boolean;
  eps: number;
  /** x rows are embedding rows picked by the token ids; workgroup 0 also copies them into x. */
  gather: boolean;
  /**
   * Small T (TB > 1): loops over rows and tokens with bounds the compiler cannot see (software drivers: LLVM unrolling
   * them takes minutes). GPUs get constant bounds, so that the accumulators stay in registers.
   */
  rolled?: boolean;
  epi: Epilogue;
  /**
   * Decode of 4-bit weights with int8 activations (see gemvDot4Loop): x quantized per 32 values in workgroup memory,
   * dot4I8Packed products. Taken where dot4Staged says so.
   */
  dot4?: boolean;
  /**
   * int8 activations, one token: x arrives quantized in XP (the producer's epilogue wrote it) and the kernel reads it
   * as the small-T kernels do (gemvDot4PreLoop), with no prologue.
   */
  preIn?: boolean;
  /**
   * int8 activations: the epilogue also quantizes its outputs for the next matrix into XPO (x ⊙ NWN, the next norm's
   * weights, where `norm`), as quantRowsKernel would; done by the variants whose workgroups hold whole groups of 32
   * outputs (quantizesOut).
   */
  qout?: { norm: boolean };
}

export const paired = (e: Epilogue): boolean => e.kind === 'gateup' || e.kind === 'qkv';
export const gemvUnits = (s: { m: MatLayout; epi: Epilogue }): number => (paired(s.epi) ? s.m.N / 2 : s.m.N);
export const gemvWorkgroupSize = (s: GemvShape): number => s.TK * s.RG;

/** Values each thread reduces: the accumulators (units × rows per unit × tokens), and the sums of squares for the norm. */
function valueCount(s: GemvSpec): number {
  return s.RT * (paired(s.epi) ? 2 : 1) * s.TB + (s.norm && !dot4Pre(s) && !dot4Staged(s) ? s.TB : 0);
}

/** Partial sums per value and row group in the reduction: one per subgroup, or per thread along K without subgroups. */
const reductionSlots = (s: GemvSpec): number => (s.sg ? Math.max(1, s.TK / Math.min(s.TK, s.sgMin ?? 4)) : s.TK);
/** Subgroup sums land complete in red (one slot per row group): no second pass into fin. */
const oneSlot = (s: GemvSpec): boolean => s.sg && reductionSlots(s) === 1;

/** Workgroup memory of a GEMV kernel (the reduction's two arrays, and staged x). */
export function gemvWorkgroupBytes(s: GemvSpec): number {
  const NV = valueCount(s);
  return 4 * (NV * s.RG * reductionSlots(s) + (oneSlot(s) ? 0 : NV * s.RG)) + 16 * (staged(s) ? s.XT! : 0) + (dot4Staged(s) ? dot4StageBytes(s.m.K) : 0)
    + (dot4Pre(s) && s.norm ? 4 * s.TB * (s.m.K / 32) : 0) + (quantizesOut(s) ? 4 * s.TB * s.RG * s.RT : 0);
}

/** A matrix the int8-activation kernels take: 4-bit weights in vec4 chunks (32 weights) of one quantisation group. */
export const dot4Matrix = (m: MatLayout): boolean => m.kind === 'q' && m.bits === 4 && m.group % 32 === 0 && m.wpr % 4 === 0;

/** Whether a kernel takes the int8-activation path of decode: x quantized in workgroup memory (gemvDot4Loop). */
export const dot4Staged = (s: GemvSpec): boolean => !!s.dot4 && s.TB === 1 && dot4Matrix(s.m) && !s.preIn;

/**
 * Whether a kernel reads x quantized beforehand (int8 activations, gemvDot4PreLoop): small T, and one token where the
 * producer's epilogue quantized it (`preIn`). XP holds per token and group of 32 the bytes (two vec4<u32>) and
 * (dx, dx·Σxi, Σx² of the raw values, 0) as bits; written by quantRowsKernel or a producer's epilogue (xpStore).
 */
export const dot4Pre = (s: GemvSpec): boolean => !!s.dot4 && (s.TB > 1 || !!s.preIn) && dot4Matrix(s.m);

/** Whether a kernel's epilogue quantizes its outputs for the next matrix: workgroups of whole groups of 32 outputs. */
export const quantizesOut = (s: GemvSpec): boolean => !!s.qout && !!s.dot4 && (s.RG * s.RT) % 32 === 0 && gemvUnits(s) % 32 === 0 && s.epi.kind !== 'qkv' && s.epi.kind !== 'head';

/** WGSL storing quantBlock's results for token row `t`, group `g` of a row of G groups into the XP-layout buffer `buf`. */
const xpStore = (buf: string, t: string, g: string, G: number, ss: string): string =>
  `{ let xo = (${paren(t)} * ${u(G)} + ${g}) * 3u; ${buf}[xo] = qa; ${buf}[xo + 1u] = qb; ${buf}[xo + 2u] = vec4<u32>(bitcast<u32>(qg.x), bitcast<u32>(qg.y), bitcast<u32>(${ss}), 0u); }`;

/** Workgroup memory of x as int8: per 32 values two vec4<u32> of bytes, (dx, dx·Σxi) and the values' Σx². */
export const dot4StageBytes = (K: number): number => (K / 32) * 44;

/**
 * Σx² of x from its groups of 32 in workgroup memory (`SS`), summed by a tree whose shape depends on the group count
 * only, into SS[0] (then `rinvOfGroups`); with `rows`, one tree per row of G groups (SS[r·G]). The decode prologue and
 * the readers of XP (whose groups' Σx² came from quantRowsKernel or a producer's epilogue) compute 1/rms alike, bit for
 * bit, so that every path rounds x to the same codes (an ulp apart, a code can round the other way, and speculative
 * decoding's greedy equality rests on the paths agreeing). Every thread of the workgroup runs it.
 */
function sumGroupsTree(G: number, WG: number, rows = 1): string {
  let H = 1;
  while (H < G) H *= 2;
  if (rows > 1) {
    return `for (var st = ${u(H / 2)}; st > 0u; st >>= 1u) {
    for (var e = lid; e < ${u(rows)} * st; e += ${u(WG)}) { let g = e % st; let sr = (e / st) * ${u(G)}; if (g + st < ${u(G)}) { SS[sr + g] += SS[sr + g + st]; } }
    workgroupBarrier();
  }`;
  }
  return `for (var st = ${u(H / 2)}; st > 0u; st >>= 1u) {
    for (var g = lid; g < st; g += ${u(WG)}) { if (g + st < ${u(G)}) { SS[g] += SS[g + st]; } }
    workgroupBarrier();
  }`;
}
/** 1/rms of n values whose Σx² is `sum` (a WGSL expression safe before `/`): every norm's one expression. */
const rinvOf = (sum: string, n: number, eps: number): string => `inverseSqrt(${sum} / ${f32Lit(n)} + ${f32Lit(eps)})`;
const rinvOfGroups = (K: number, eps: number, at = '0u'): string => rinvOf(`SS[${at}]`, K, eps);

/**
 * Σ of G values by one subgroup of exactly L0 lanes, with no workgroup memory or barrier: sumGroupsTree's pairs in the
 * same order, so the same bits. Value g sits in lane g % L (L = min(L0, the tree's width H)), register g / L; the tree's
 * levels of H/2 … L pair registers inside a lane, those of L/2 … 1 pair lanes by xor shuffles, after which lane 0 holds
 * the tree's SS[0] (other lanes hold other pairings), broadcast to all into `out`. `at(g)`: value g (g < G, a WGSL
 * u32 expression); `lane`: the lane index.
 */
export function subgroupGroupsSum(G: number, L0: number, at: (g: string) => string, lane: string, out: string): string {
  let H = 1;
  while (H < G) H *= 2;
  const L = Math.min(L0, H), R = H / L;
  const o: string[] = [];
  for (let j = 0; j < R; j++) {
    const g = j === 0 ? lane : `${u(j * L)} + ${lane}`;
    o.push(j * L >= G ? `var gs${j} = 0.0;` : `var gs${j} = select(0.0, ${at(`min(${g}, ${u(G - 1)})`)}, ${g} < ${u(G)});`);
  }
  for (let st = R / 2; st >= 1; st /= 2) for (let j = 0; j < st; j++) o.push(`gs${j} += gs${j + st};`);
  for (let m = L / 2; m >= 1; m /= 2) o.push(`gs0 += subgroupShuffleXor(gs0, ${u(m)});`);
  o.push(`let ${out} = subgroupBroadcast(gs0, 0u);`);
  return o.join('\n  ');
}

/** Whether a kernel stages x in workgroup memory (decode of 4/8-bit weights in whole vec4 chunks, XT > 0). */
export const staged = (s: GemvSpec): boolean => (s.XT ?? 0) > 0 && s.m.kind === 'q' && s.m.wpr % 4 === 0 && (s.TB === 1 || !s.rolled) && !dot4Staged(s) && !dot4Pre(s);

/** x vec4s per chunk (one vec4<u32> of packed weights) of a 4/8-bit matrix. */
export const stagedChunkVec4s = (m: MatLayout): number => (4 * (32 / m.bits)) / 4;

type BindingSpec = { norm: boolean; gather: boolean; epi: Epilogue; m: MatLayout; dot4?: boolean; qout?: { norm: boolean } };

/** Whether a matrix's kernels bind the pre-quantized x (XP) that its int8 kernels of small T (and fed decode) read. */
export const preBound = (s: BindingSpec): boolean => !!s.dot4 && dot4Matrix(s.m);

/** Bindings in order: 'r' read-only storage, 'w' read-write storage. */
export function gemvBindings(s: BindingSpec): string {
  let b = 'rrr' + (s.norm ? 'r' : '');
  if (s.epi.kind === 'qkv') b += 'ww';
  else b += 'w';
  if (s.gather) b += 'w';
  if (preBound(s)) b += 'r';
  if (s.qout) b += s.qout.norm ? 'wr' : 'w';
  return b;
}

/**
 * The rotary embedding's cosine and sine of pair `jj` at position `pos` (the RoPE table at word ropeOff of MT): the
 * statements that make `cs` and `sn`.
 */
export function ropeTrig(ropeOff: number, CAP: number, half: number): [string, string] {
  return [`let cs = bitcast<f32>(MT[${u(ropeOff)} + pos * ${u(half)} + jj]);`, `let sn = bitcast<f32>(MT[${u(ropeOff + CAP * half)} + pos * ${u(half)} + jj]);`];
}

/** The rotary pair (a, b) rotated by `cs`, `sn`: its new first and second values. */
export const rotated = (a: string, b: string): [string, string] => [`${a} * cs - ${b} * sn`, `${b} * cs + ${a} * sn`];

/**
 * Qwen3's q/k norm of a rotary pair (x0, x1) with 1/rms `r` and the weights NW[w] and NW[w + half]: `let`s named
 * out0, out1 = w ⊙ (x · r) (qkNormRopeKernel and attentionKernel's qkNorm, in the same order of operations).
 */
function normedPair(out: [string, string], x: [string, string], r: string, w: string, half: number): string {
  return `let ${out[0]} = NW[${w}] * (${x[0]} * ${r});
    let ${out[1]} = NW[${w} + ${u(half)}] * (${x[1]} * ${r});`;
}

/** A scalar stored into the KV cache (an f16 cache rounds it). */
const kvStore = (kv16: boolean | undefined, v: string): string => (kv16 ? `f16(${v})` : v);
/** A scalar read from the KV cache, as f32. */
const kvLoad = (kv16: boolean | undefined, v: string): string => (kv16 ? `f32(${v})` : v);

/** The epilogue of one output: `ya` (and `yb`, the pair's second row) of unit `un` for token `t`. */
export function epilogueLines(s: { m: MatLayout; epi: Epilogue }): string[] {
  const { m, epi } = s;
  switch (epi.kind) {
    case 'head': return [`OUT[t * ${u(m.N)} + un] = ya;`];
    case 'residual': return [`let ov = OUT[t * ${u(m.N)} + un] + ya;`, `OUT[t * ${u(m.N)} + un] = ov;`];
    case 'gateup': return [`let ov = ya / (1.0 + exp(-ya)) * yb;`, `OUT[t * ${u(epi.F)} + un] = ov;`];
    case 'qkv': {
      const { heads: H, kvHeads: KVH, headDim: HD, capacity: CAP, ropeOff } = epi;
      const half = HD / 2;
      // Biases (MatLayout.biasOff: words of W after the matrix) are added to the pair's rows before the rotation, into
      // ba, bb (ya, yb are lets of the caller's scope).
      const bias = m.biasOff !== undefined;
      const [a, b] = bias ? ['ba', 'bb'] : ['ya', 'yb'];
      const [r0, r1] = rotated(a, b);
      const kv = (v: string) => kvStore(epi.kv16, v);
      const biasLine = bias ? [`let bo = ${u(m.biasOff!)} + hh * ${u(HD)} + jj; let ba = ya + bitcast<f32>(w32(bo)); let bb = yb + bitcast<f32>(w32(bo + ${u(half)}));`] : [];
      // q/k norms: every row stored as it is (k and v alike: v's cache half follows k's, so one offset serves both).
      if (epi.qkNorm) {
        return [`let hh = un / ${u(half)}; let jj = un % ${u(half)}; let pos = MT[1] + t;`, ...biasLine,
          `if (hh < ${u(epi.kToQ ? H + KVH : H)}) {
        let o = t * ${u(H * HD)} + hh * ${u(HD)} + jj;
        QO[o] = ${a}; QO[o + ${u(half)}] = ${b};
      }${epi.kStage !== undefined && !epi.kToQ ? ` else if (hh < ${u(H + KVH)}) {
        let o = ${u(epi.kStage)} + (t * ${u(KVH)} + hh - ${u(H)}) * ${u(HD)} + jj;
        QO[o] = ${a}; QO[o + ${u(half)}] = ${b};
      }` : ''} else {
        let o = ((hh - ${u(H)}) * ${u(CAP)} + pos) * ${u(HD)} + jj;
        KV[o] = ${kv(a)}; KV[o + ${u(half)}] = ${kv(b)};
      }`];
      }
      return [`let hh = un / ${u(half)}; let jj = un % ${u(half)}; let pos = MT[1] + t;`,
        ...biasLine,
        ...ropeTrig(ropeOff, CAP, half),
        `if (hh < ${u(H)}) {
        let o = t * ${u(H * HD)} + hh * ${u(HD)} + jj;
        QO[o] = ${r0}; QO[o + ${u(half)}] = ${r1};
      } else if (hh < ${u(H + KVH)}) {
        let o = ((hh - ${u(H)}) * ${u(CAP)} + pos) * ${u(HD)} + jj;
        KV[o] = ${kv(r0)}; KV[o + ${u(half)}] = ${kv(r1)};
      } else {
        let o = ${u(KVH * CAP * HD)} + ((hh - ${u(H + KVH)}) * ${u(CAP)} + pos) * ${u(HD)} + jj;
        KV[o] = ${kv(a)}; KV[o + ${u(half)}] = ${kv(b)};
      }`];
    }
  }
}

/** Storage declarations of the matrix kernels, in gemvBindings' order. */
export function matDecls(s: BindingSpec): string {
  const bindings = gemvBindings(s);
  const names = ['MT', 'W', 'X', ...(s.norm ? ['NW'] : [])];
  const types = ['array<u32>', 'array<vec4<u32>>', 'array<vec4f>', ...(s.norm ? ['array<vec4f>'] : [])];
  const kv16 = s.epi.kind === 'qkv' && !!s.epi.kv16;
  if (s.epi.kind === 'qkv') { names.push('QO', 'KV'); types.push('array<f32>', kv16 ? 'array<f16>' : 'array<f32>'); }
  else { names.push('OUT'); types.push('array<f32>'); }
  if (s.gather) { names.push('XW'); types.push('array<vec4f>'); }
  if (preBound(s)) { names.push('XP'); types.push('array<vec4<u32>>'); }
  if (s.qout) { names.push('XPO'); types.push('array<vec4<u32>>'); }
  if (s.qout?.norm) { names.push('NWN'); types.push('array<vec4f>'); }
  return (kv16 ? 'enable f16;\n' : '') + names.map((n, i) => `@group(0) @binding(${i}) var<storage, ${bindings[i] === 'r' ? 'read' : 'read_write'}> ${n}: ${types[i]};`).join('\n');
}

/** Row of unit `uv`, half `h` (a number or a WGSL expression; paired units are two rows). */
export function rowOfUnit(epi: Epilogue, uv: string, h: number | string): string {
  const hv = typeof h === 'number' ? u(h) : h;
  if (epi.kind === 'gateup') return h === 0 ? uv : `(${uv} + ${hv} * ${u(epi.F)})`;
  if (epi.kind === 'qkv') {
    const half = epi.headDim / 2;
    return `((${uv} / ${u(half)}) * ${u(epi.headDim)} + (${uv} % ${u(half)})${h === 0 ? '' : ` + ${hv} * ${u(half)}`})`;
  }
  return uv;
}

/** The x row of token slot `t` (an expression): an embedding row, the head's row, or row t. */
export function xRow(s: { gather: boolean; epi: Epilogue }, t: string): string {
  return s.gather ? `MT[${u(META_IDS)} + ${t}]` : s.epi.kind === 'head' ? `(MT[2] + ${t})` : t;
}

/** Gather mode: workgroups of column 0 copy their tokens' embedding rows into x. */
export function gatherCopy(K4: number, TB: number, WG: number): string {
  return `if (wid.x == 0u) {
    for (var i = 0u; i < ${u(TB)}; i++) {
      let t = t0 + i;
      if (t < rows) {
        let src = MT[${u(META_IDS)} + t] * ${u(K4)};
        for (var k = lid; k < ${u(K4)}; k += ${u(WG)}) { XW[t * ${u(K4)} + k] = X[src + k]; }
      }
    }
  }`;
}

export function quantHelpers(bits: number): string {
  return [
    'fn w32(i: u32) -> u32 { return W[i >> 2u][i & 3u]; }',
    bits === 4 ? 'fn nib(w: u32, sh: vec4<u32>) -> vec4f { return bitcast<vec4f>(((vec4<u32>(w) >> sh) & vec4<u32>(15u)) | vec4<u32>(0x4B000000u)) - vec4f(8388608.0); }' : '',
    bits === 8 ? 'fn byt(w: u32) -> vec4f { return bitcast<vec4f>(((vec4<u32>(w) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(255u)) | vec4<u32>(0x4B000000u)) - vec4f(8388608.0); }' : '',
  ].filter(Boolean).join('\n');
}

/** The zero point of group `g` of row `rw` (an f32 expression; `base` as scaleOf's). */
export function zeroOf(m: MatLayout, rw: string, gx: string, base = ''): string {
  let g = paren(gx);
  const sh = m.bits === 4 ? 3 : 2;
  let at: string;
  if (m.kb) {
    // Block g / G, its row rw's zero-point words, the group's place in them (g % G).
    const { G, Z, LZ, NB } = m.kb;
    at = `${base}${u(m.zeroOff)} + (${g} / ${u(G)}) * ${u(m.N * Z)} + ${rw} * ${LZ === Z ? u(Z) : `select(${u(Z)}, ${u(LZ)}, ${g} >= ${u((NB - 1) * G)})`}`;
    g = `(${g} % ${u(G)})`;
  } else at = base + (m.inRow ? `${rw} * ${u(m.stride)} + ${u(m.zeroOff)}` : `${u(m.zeroOff)} + ${rw} * ${u(m.zpr)}`);
  return m.bits === 4 ? `f32((w32(${at} + (${g} >> 3u)) >> ((${g} & 7u) * 4u)) & 15u)`
    : `f32((w32(${at} + (${g} >> 2u)) >> ((${g} & 3u) * 8u)) & 255u)`;
}

/**
 * The decode loop with x staged in workgroup memory (4/8-bit weights; see gemvKernel for the thread layout). Per tile of
 * XT x vec4s the workgroup copies x (times the norm weights, with each thread's Σx² on the way) into `xs`, rotated by
 * chunk so that the 8 lanes of a quarter-warp reading "their" chunk's k-th vec4 hit distinct banks; reading x from
 * storage instead, lanes a chunk apart touch a cache line each per load, which bounds the kernel well below the
 * memory's speed. Weights become floats without shifts: nibble (byte) i of a 16-bit half is ORed as is into the
 * mantissa of 2^23, worth code·16^i (code·256^i), and x was staged times 16^-i (256^-i); subtracting
 * 2^23 + zero·16^i removes the offset and the zero point at once, so a group costs one scale multiply.
 */
function gemvStagedLoop(s: GemvSpec, d: { KC: number; XC: number; CWt: number; GS: number; NSG: number; WG: number; P: number }): string[] {
  const { m, RT, TK, TB, norm } = s;
  const { KC, XC, CWt, GS, NSG, WG, P } = d;
  const UN = TB === 1 ? s.UN ?? 1 : 1;
  const KTC = Math.min(KC, Math.floor(s.XT! / (XC * TB)));
  if (KTC < 1) throw new Error(`gemv: ${s.XT} staged vec4s hold no chunk of ${TB} tokens`);
  const TV = KTC * XC; // vec4s per token per tile
  const q4 = m.bits === 4;
  const pre = q4 ? 'vec4f(1.0, 0.0625, 0.00390625, 0.000244140625)' : 'vec4f(1.0, 0.00390625, 1.0, 0.00390625)';
  const zmul = q4 ? 'vec4f(1.0, 16.0, 256.0, 4096.0)' : 'vec4f(1.0, 256.0, 1.0, 256.0)';
  const mask = q4 ? 'vec4<u32>(15u, 240u, 3840u, 61440u)' : 'vec4<u32>(255u, 65280u, 255u, 65280u)';
  const WPW = 32 / m.bits;
  const out: string[] = [];
  out.push(`for (var kt = 0u; kt < ${u(KC)}; kt += ${u(KTC)}) {
    let ce = min(kt + ${u(KTC)}, ${u(KC)});
    workgroupBarrier();`);
  for (let i = 0; i < TB; i++) {
    out.push(`    for (var e = lid; e < (ce - kt) * ${u(XC)}; e += ${u(WG)}) {
      ${norm ? `let xr = X[xb${i} + kt * ${u(XC)} + e];
      ss${TB === 1 ? '' : i} += dot(xr, xr);
      let v = xr * NW[kt * ${u(XC)} + e];` : `let v = X[xb${i} + kt * ${u(XC)} + e];`}
      let cl = e / ${u(XC)};
      xs[${i > 0 ? `${u(i * TV)} + ` : ''}cl * ${u(XC)} + (e + cl) % ${u(XC)}] = v * ${pre};
    }`);
  }
  out.push('    workgroupBarrier();');
  // The weights of vec4 k of row (r, h) in the chunk, offset and zero point removed (times 16^-i per lane, see above).
  const decoded = (r: number, h: number, k: number): string => {
    const j = q4 ? k >> 1 : k, q = Math.floor((j * WPW) / GS), z = `z${r}_${h}_${q}`, w = `w${r}_${h}[${j}]`;
    if (!q4) return `bitcast<vec4f>((vec4<u32>(${w}, ${w}, ${w} >> 16u, ${w} >> 16u) & ${mask}) | vec4<u32>(0x4B000000u)) - ${z}`;
    return `bitcast<vec4f>((vec4<u32>(${k & 1 ? `${w} >> 16u` : w}) & ${mask}) | vec4<u32>(0x4B000000u)) - ${z}`;
  };
  const groupOf = (k: number): number => Math.floor(((q4 ? k >> 1 : k) * WPW) / GS);
  const slot = (v: number): string[] => {
    const b: string[] = [];
    b.push(v === 0 ? 'let cc = c;' : `let cc = min(c + ${u(v * TK)}, ce - 1u);`);
    b.push('let cl = cc - kt;');
    for (let r = 0; r < RT; r++) for (let h = 0; h < P; h++) b.push(`let w${r}_${h} = W[${chunkAt(m, `rw${r}_${h}`, 'cc')}];`);
    for (let r = 0; r < RT; r++) for (let h = 0; h < P; h++) for (let q = 0; q < NSG; q++) {
      const id = `${r}_${h}_${q}`;
      b.push(`let g${id} = (cc * ${u(CWt)} + ${u(q * GS)}) / ${u(m.group)};`,
        `let s${id} = ${scaleOf(m, `rw${r}_${h}`, `g${id}`)};`,
        `let z${id} = vec4f(8388608.0) + ${zeroOf(m, `rw${r}_${h}`, `g${id}`)} * ${zmul};`);
    }
    const fs = v > 0 ? `select(0.0, 1.0, c + ${u(v * TK)} < ce) * ` : '';
    // Σ over the chunk of row (r, h)'s weights (vec4 k: dv(k)) times x vec4 k (`x${k}`), each group times its scale.
    const sum = (r: number, h: number, dv: (k: number) => string): string => {
      const terms: string[][] = Array.from({ length: NSG }, () => []);
      for (let k = 0; k < XC; k++) terms[groupOf(k)].push(`dot(${dv(k)}, x${k})`);
      return terms.map((t, q) => `s${r}_${h}_${q} * (${t.join(' + ')})`).join(' + ');
    };
    if (TB === 1) {
      for (let k = 0; k < XC; k++) b.push(`let x${k} = xs[cl * ${u(XC)} + (cl + ${u(k)}) % ${u(XC)}];`);
      for (let r = 0; r < RT; r++) for (let h = 0; h < P; h++) b.push(`a${r}_${h} += ${fs}(${sum(r, h, (k) => decoded(r, h, k))});`);
    } else {
      // Each row's chunk decoded once, applied to every token.
      for (let r = 0; r < RT; r++) for (let h = 0; h < P; h++) for (let k = 0; k < XC; k++) b.push(`let d${r}_${h}_${k} = ${decoded(r, h, k)};`);
      for (let i = 0; i < TB; i++) {
        const xl = Array.from({ length: XC }, (_, k) => `let x${k} = xs[${u(i * TV)} + cl * ${u(XC)} + (cl + ${u(k)}) % ${u(XC)}];`);
        const acc = [];
        for (let r = 0; r < RT; r++) for (let h = 0; h < P; h++) acc.push(`a${r}_${h}_${i} += ${sum(r, h, (k) => `d${r}_${h}_${k}`)};`);
        b.push(`{ ${xl.join(' ')}\n        ${acc.join('\n        ')} }`);
      }
    }
    return b;
  };
  out.push(`    for (var c = kt + tk; c < ce; c += ${u(TK * UN)}) {`);
  for (let v = 0; v < UN; v++) out.push(`      {\n        ${slot(v).join('\n        ')}\n      }`);
  out.push('    }', '  }');
  return out;
}

/**
 * WGSL quantizing block `g` (32 values: vec4s `xAt(i)`, i = 0…7, of the raw x) to int8: `qa`, `qb` (the bytes in the
 * order gemvDot4Loop describes) and `qg` = (dx, dx·Σxi). With norm weights `nwAt(i)` the values are x ⊙ nw and Σx² of
 * the raw x is added to `ss`. A NaN or infinity in x makes dx NaN (max() may drop a NaN; the sum keeps it).
 */
export function quantBlock(xAt: (i: string) => string, nwAt: ((i: string) => string) | null, ss: string): string {
  return `var v: array<vec4f, 8>;
    var mx = 0.0;
    var sa = 0.0;
    for (var i = 0u; i < 8u; i++) {
      let xr = ${xAt('i')};
      ${nwAt ? `${ss} += dot(xr, xr);\n      let xv = xr * ${nwAt('i')};` : 'let xv = xr;'}
      v[i] = xv;
      let a = abs(xv);
      mx = max(mx, max(max(a.x, a.y), max(a.z, a.w)));
      sa += a.x + a.y + a.z + a.w;
    }
    let inv = select(0.0, 127.0 / mx, mx > 0.0);
    var qa = vec4<u32>();
    var qb = vec4<u32>();
    var sum = 0;
    for (var j = 0u; j < 4u; j++) {
      let p = vec4<i32>(round(v[2u * j] * inv));
      let q = vec4<i32>(round(v[2u * j + 1u] * inv));
      sum += p.x + p.y + p.z + p.w + q.x + q.y + q.z + q.w;
      let pu = vec4<u32>(p) & vec4<u32>(255u);
      let qu = vec4<u32>(q) & vec4<u32>(255u);
      qa[j] = pu.x | (pu.z << 8u) | (qu.x << 16u) | (qu.z << 24u);
      qb[j] = pu.y | (pu.w << 8u) | (qu.y << 16u) | (qu.w << 24u);
    }
    let dx = mx / 127.0 + (sa - sa);
    let qg = vec2f(dx, dx * f32(sum));`;
}

/**
 * The int8 loops' rows: ids `r_h` of every (unit r, half h) a thread owns, and the WGSL loading chunk `c` of each: its
 * weights w{id}, and its group's scale s{id} and zero point z{id}.
 */
const rowIds = (RT: number, P: number): string[] => Array.from({ length: RT * P }, (_, i) => `${Math.floor(i / P)}_${i % P}`);

function dot4RowLoads(s: GemvSpec, P: number, c: string, sfx = ''): { ids: string[]; lines: string[] } {
  const { m } = s;
  const g = m.group === 32 ? c : `(${c} * 32u) / ${u(m.group)}`;
  const ids = rowIds(s.RT, P);
  return { ids, lines: ids.flatMap((id) => [`let w${id}${sfx} = W[${chunkAt(m, `rw${id}`, c)}];`, `let s${id}${sfx} = ${scaleOf(m, `rw${id}`, g)};`, `let z${id}${sfx} = ${zeroOf(m, `rw${id}`, g)};`]) };
}

/** The int8 dot products of chunk `w${id}` with x bytes `xa`, `xb`: an i32 expression. */
export const dot4Terms = (id: string): string => ['x', 'y', 'z', 'w']
  .flatMap((j) => [`dot4I8Packed(w${id}.${j} & 0x0F0F0F0Fu, xa.${j})`, `dot4I8Packed((w${id}.${j} >> 4u) & 0x0F0F0F0Fu, xb.${j})`]).join(' + ');

/**
 * Decode with int8 activations (4-bit weights; the W4A8 scheme of llama.cpp's CUDA kernels). The workgroup first
 * quantizes x (times the norm weights, Σx² on the way) per 32 values: dx = max|v|/127, xi = round(v/dx), stored as two
 * vec4<u32> of bytes per 32 values, ordered to match the nibbles of a weight word: `w & 0x0F0F0F0F` holds weights 0, 2,
 * 4, 6 of the word's 8 and `(w >> 4) & 0x0F0F0F0F` weights 1, 3, 5, 7, so SA[c][j] packs x[8j], x[8j+2], x[8j+4],
 * x[8j+6] and SB[c][j] the odd ones. A chunk (one vec4<u32> of a row, 32 weights of one group) then costs 8
 * dot4I8Packed, and its group s·Σ(q − z)·x = s·(dx·Σ q·xi − z·dx·Σxi), against 32 FMAs and 64 more operations to
 * unpack. Measured on the H100 inside the Llama-7B layer shapes: 1.2–1.4× the f32 kernel (bench/gpu/gemv-lab.ts).
 * The price is x rounded to 8 bits per 32 values (relative row error ~2e-4 of Σ|w·x|).
 */
function gemvDot4Loop(s: GemvSpec, d: { KC: number; WG: number; P: number }): string[] {
  const { m, TK, norm } = s;
  const { KC, WG, P } = d;
  const UN = s.UN ?? 1, G = m.K / 32;
  const out: string[] = [];
  out.push(`for (var g = lid; g < ${u(G)}; g += ${u(WG)}) {
    var sb = 0.0;
    ${quantBlock((i) => `X[xb0 + g * 8u + ${i}]`, norm ? (i) => `NW[g * 8u + ${i}]` : null, 'sb')}
    SA[g] = qa;
    SB[g] = qb;
    SG[g] = qg;
    ${norm ? 'SS[g] = sb;' : ''}
  }
  workgroupBarrier();${norm ? `\n  ${sumGroupsTree(G, WG)}` : ''}`);
  const guard = KC % (TK * UN) !== 0;
  const body: string[] = [];
  for (let v = 0; v < UN; v++) {
    const b: string[] = [];
    b.push(v === 0 ? 'let cc = c;' : `let cc = min(c + ${u(v * TK)}, ${u(KC - 1)});`);
    const f = guard && v > 0 ? `select(0.0, 1.0, c + ${u(v * TK)} < ${u(KC)}) * ` : '';
    b.push('let xa = SA[cc];', 'let xb = SB[cc];', 'let xg = SG[cc];');
    const { ids, lines } = dot4RowLoads(s, P, 'cc');
    b.push(...lines);
    for (const id of ids) {
      b.push(`let d${id} = ${dot4Terms(id)};`);
      b.push(`a${id} += ${f}s${id} * (xg.x * f32(d${id}) - z${id} * xg.y);`);
    }
    body.push(`{\n      ${b.join('\n      ')}\n    }`);
  }
  out.push(`for (var c = tk; c < ${u(KC)}; c += ${u(TK * UN)}) {\n    ${body.join('\n    ')}\n  }`);
  return out;
}

/**
 * int8 activations with x quantized beforehand (XP, see dot4Pre: by quantRowsKernel or the producer's epilogue): small
 * T, and decode where the producer quantized. The loop reads x from storage, where every workgroup finds it in cache,
 * and each row's chunk is loaded once for the TB tokens: 8 dot4I8Packed per token. GPUs get it unrolled (accumulators a{r}_{h}_{i});
 * software drivers a loop over the tokens present, accumulators in acc[(r·P + h)·TB + i].
 */
function gemvDot4PreLoop(s: GemvSpec, d: { KC: number; P: number }): string[] {
  const { TK, TB } = s;
  const { KC, P } = d;
  // Unrolled kernels: PU chunks per iteration, every chunk's weight loads first (past KC a chunk's loads are clamped
  // and its math skipped).
  const PU = s.rolled ? 1 : (s.PU ?? 1);
  const pipe = !s.rolled && !!s.pipe;
  const guard = KC % (TK * PU) !== 0;
  const loads: string[] = [], math: string[] = [];
  const ids = rowIds(s.RT, P);
  const tokenBody = (xo: string, acc: (k: number, id: string) => string, v: string): string => {
    const t = [`let xo = (${xo}) * 3u;`, 'let xa = XP[xo];', 'let xb = XP[xo + 1u];', 'let xm = XP[xo + 2u];', 'let xg = vec2f(bitcast<f32>(xm.x), bitcast<f32>(xm.y));'];
    ids.forEach((id, k) => t.push(`${acc(k, id)} += s${id}${v} * (xg.x * f32(${dot4Terms(id + v)}) - z${id}${v} * xg.y);`));
    return t.join('\n        ');
  };
  const out: string[] = [];
  if (!s.rolled) for (let i = 0; i < TB; i++) out.push(`let xq${i} = min(t0 + ${u(i)}, rows - 1u) * ${u(KC)};`);
  const offs: string[] = [], vars: string[] = [], cur: string[] = [];
  for (let p = 0; p < PU; p++) {
    const v = PU === 1 ? '' : `v${p}`, cc = p === 0 ? 'c' : `c${p}`;
    if (p > 0) (pipe ? offs : loads).push(`let ${cc} = min(c + ${u(p * TK)}, ${u(KC - 1)});`);
    const rl = dot4RowLoads(s, P, cc, v).lines;
    if (pipe) {
      // `let wX = …;` becomes the assignment of the prefetch register pwX, and the math reads `let wX = pwX;`.
      for (const l of rl) {
        const [, name, expr] = /^let (\w+) = (.*);$/.exec(l)!;
        vars.push(`var p${name}: ${name.startsWith('w') ? 'vec4<u32>' : 'f32'};`);
        loads.push(`p${name} = ${expr};`);
        cur.push(`let ${name} = p${name};`);
      }
    } else loads.push(...rl);
    const b: string[] = [];
    if (s.rolled) {
      b.push(`for (var i = 0u; i < min(${u(TB)}, rows - t0); i++) {\n        ${tokenBody(`(t0 + i) * ${u(KC)} + ${cc}`, (k) => `acc[${u(k * TB)} + i]`, v)}\n      }`);
    } else {
      // Slots past the tokens present are skipped (rows is uniform: a branch, not divergence).
      for (let i = 0; i < TB; i++) b.push(`${i ? `if (t0 + ${u(i)} < rows) ` : ''}{\n        ${tokenBody(`xq${i} + ${cc}`, (_, id) => `a${id}_${i}`, v)}\n      }`);
    }
    math.push(p > 0 && guard ? `if (c + ${u(p * TK)} < ${u(KC)}) {\n      ${b.join('\n      ')}\n      }` : b.join('\n      '));
  }
  if (pipe) {
    // Registers current first, then the next iteration's loads (from a clamped c), then this iteration's math.
    const fetch = (c0: string) => `{\n      let c = ${c0};\n      ${[...offs, ...loads].join('\n      ')}\n    }`;
    out.push(...vars, fetch('tk'));
    out.push(`for (var c = tk; c < ${u(KC)}; c += ${u(TK * PU)}) {\n      ${[...cur, ...offs, fetch(`min(c + ${u(TK * PU)}, ${u(KC - 1)})`), ...math].join('\n      ')}\n  }`);
    return out;
  }
  out.push(`for (var c = tk; c < ${u(KC)}; c += ${u(TK * PU)}) {\n      ${[...loads, ...math].join('\n      ')}\n  }`);
  return out;
}

/** Where quantRowsKernel's rows come from: x row t, the head's x row MT[2] + t, or the embedding row of token t. */
export type QuantRowsSource = 'x' | 'head' | 'gather';

/** Bindings of quantRowsKernel (gemvBindings' letters): MT, X, [NW], XP, [XW]. */
export const quantRowsBindings = (src: QuantRowsSource, norm: boolean): string => `rr${norm ? 'r' : ''}w${src === 'gather' ? 'w' : ''}`;

/**
 * Quantizes the rows a kernel reads where no producer did (see gemvDot4PreLoop): a workgroup per row t < MT[0] (the
 * head's MT[3]), each thread whole groups of 32 values, as the decode kernel quantizes x in its prologue (quantBlock),
 * into XP (xpStore). With norm weights it quantizes x ⊙ nw and keeps each group's Σx² of x (the reader sums them);
 * gathering, it also copies the embedding row into x.
 */
export function quantRowsKernel(K: number, src: QuantRowsSource, norm: boolean, WG = 256): string {
  const G = K / 32, K4 = K / 4;
  if (K % 32 !== 0) throw new Error(`quantRows: K = ${K} is not whole groups of 32`);
  const names = ['MT', 'X', ...(norm ? ['NW'] : []), 'XP', ...(src === 'gather' ? ['XW'] : [])];
  const types: Record<string, string> = { MT: 'array<u32>', X: 'array<vec4f>', NW: 'array<vec4f>', XP: 'array<vec4<u32>>', XW: 'array<vec4f>' };
  const bind = quantRowsBindings(src, norm);
  const decls = names.map((n, i) => `@group(0) @binding(${i}) var<storage, ${bind[i] === 'r' ? 'read' : 'read_write'}> ${n}: ${types[n]};`).join('\n');
  const row = src === 'gather' ? `MT[${u(META_IDS)} + t]` : src === 'head' ? '(MT[2] + t)' : 't';
  const xAt = (i: string) => (src === 'gather' ? `xcopy(xr0 + g * 8u + ${i}, t * ${u(K4)} + g * 8u + ${i})` : `X[xr0 + g * 8u + ${i}]`);
  return `${decls}
${src === 'gather' ? 'fn xcopy(s: u32, d: u32) -> vec4f { let v = X[s]; XW[d] = v; return v; }' : ''}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let t = wid.y;
  if (t >= ${src === 'head' ? 'MT[3]' : 'MT[0]'}) { return; }
  let xr0 = ${row} * ${u(K4)};
  for (var g = lid; g < ${u(G)}; g += ${u(WG)}) {
    var sb = 0.0;
    ${quantBlock(xAt, norm ? (i) => `NW[g * 8u + ${i}]` : null, 'sb')}
    ${xpStore('XP', 't', 'g', G, 'sb')}
  }
}
`;
}

/**
 * y = W x for up to TB tokens per workgroup. Thread (rg, tk) of a workgroup owns RT units of row group rg and walks the
 * K chunks tk, tk+TK, …: a chunk is one vec4<u32> of packed weights per row (32 4-bit, 16 8-bit or 4 f32 weights), or
 * one u32 where rows are not whole vec4s. 4/8-bit values become floats by the 2^23 trick (OR into the mantissa of
 * 8388608.0, subtract it); a group's zero point enters once as z·Σx. Partial sums meet in workgroup memory (after a
 * subgroupAdd where subgroups are on), then one thread per output runs the epilogue.
 */
export function gemvKernel(s: GemvSpec): string {
  const { m, TB, RT, TK, RG, sg, norm, gather, epi } = s;
  const P = paired(epi) ? 2 : 1;
  const WG = TK * RG, UW = RG * RT, U = gemvUnits(s);
  const NV = valueCount(s);
  const K4 = m.K / 4;
  const quant = m.kind === 'q';
  // Words per chunk (vec4 loads where every row starts on a vec4) and weights per chunk.
  const CW = m.wpr % 4 === 0 ? 4 : 1;
  const WPW = 32 / m.bits; // weights per word
  const CWt = CW * WPW;
  const XC = CWt / 4; // x vec4s per chunk
  const KC = m.wpr / CW;
  if (CWt % 4 !== 0) throw new Error(`gemv: a chunk of ${CWt} weights is not whole vec4s`);
  // Quantisation groups inside one chunk (a 4-bit vec4 chunk holds two groups of 16).
  const GS = quant ? Math.min(m.group, CWt) : CWt; // weights per scale inside a chunk
  const NSG = CWt / GS;
  const headMode = epi.kind === 'head';
  const rowsExpr = headMode ? 'MT[3]' : 'MT[0]';

  const decls = matDecls(s);

  const rowOf = (uv: string, h: number): string => rowOfUnit(epi, uv, h);

  const L: string[] = [];
  const emit = (x: string) => L.push(x);
  // Row words and the clamped unit of every (r, h).
  for (let r = 0; r < RT; r++) {
    emit(`let un${r} = min(ub + ${u(r)}, ${u(U - 1)});`);
    for (let h = 0; h < P; h++) emit(`let rw${r}_${h} = ${rowOf(`un${r}`, h)};`);
  }
  // x row bases (vec4 index) per token slot.
  for (let i = 0; i < TB; i++) {
    const t = `min(t0 + ${u(i)}, rows - 1u)`;
    emit(`let xb${i} = ${xRow(s, t)} * ${u(K4)};`);
  }

  // One chunk of the row in variable `rw`; names get the suffix `id`.
  const wLoad = (rw: string, id: string, c = 'c'): string => CW === 4
    ? `let w${id} = W[${chunkAt(m, rw, c)}];`
    : `let w${id} = w32(${wordAt(m, rw, c)});`;
  // The chunk's weights as vec4s (unscaled integers, or f32).
  const chunkVecs = (id: string): string[] => {
    if (m.bits === 32) return [`bitcast<vec4f>(w${id})`];
    const v: string[] = [];
    for (let j = 0; j < CW; j++) {
      const w = CW === 4 ? `w${id}[${j}]` : `w${id}`;
      if (m.bits === 8) v.push(`byt(${w})`);
      else v.push(`nib(${w}, vec4<u32>(0u, 4u, 8u, 12u))`, `nib(${w}, vec4<u32>(16u, 20u, 24u, 28u))`);
    }
    return v;
  };
  const scaleZero = (rw: string, id: string, q: number, c = 'c'): string[] => {
    if (!quant) return [];
    const g = `g${id}_${q}`;
    return [`let ${g} = (${c} * ${u(CWt)} + ${u(q * GS)}) / ${u(m.group)};`,
      `let s${id}_${q} = ${scaleOf(m, rw, g)};`,
      `let z${id}_${q} = ${zeroOf(m, rw, g)};`];
  };
  // Vec4s of x per scale group inside the chunk.
  const XG = GS / 4;
  const xLoads = (xb: string, ss: string | null, pre: string, c = 'c'): string[] => {
    const out: string[] = [];
    for (let k = 0; k < XC; k++) out.push(`let ${pre}r${k} = X[${xb} + ${c} * ${u(XC)} + ${u(k)}];`);
    if (ss) out.push(`${ss} += ${Array.from({ length: XC }, (_, k) => `dot(${pre}r${k}, ${pre}r${k})`).join(' + ')};`);
    for (let k = 0; k < XC; k++) out.push(norm ? `let ${pre}${k} = ${pre}r${k} * NW[${c} * ${u(XC)} + ${u(k)}];` : `let ${pre}${k} = ${pre}r${k};`);
    return out;
  };

  const body: string[] = [];
  const vals: string[] = [];
  const XS = staged(s), D4 = dot4Staged(s), DP = dot4Pre(s);
  const sgRms = DP && norm && TB === 1 && !!s.sgRms && oneSlot(s);
  if (DP) {
    // 1/rms per token from the groups' Σx² that XP carries, summed by the tree decode uses (sumGroupsTree): before the
    // loop, or after it (lateRms: the weight loads start at once; the epilogue follows the reduction's barrier). One
    // token with subgroups exactly TK wide (sgRms): the same pairs in each subgroup's registers and shuffles, no barrier.
    const G = m.K / 32;
    const rms = sgRms ? [`let xr1 = min(t0, rows - 1u) * ${u(G)};\n  ${subgroupGroupsSum(G, TK, (g) => `bitcast<f32>(XP[(xr1 + ${g}) * 3u + 2u].z)`, 'tk', 'ssw')}`] : norm ? [`for (var e = lid; e < ${u(TB * G)}; e += ${u(WG)}) { SS[e] = bitcast<f32>(XP[(min(t0 + e / ${u(G)}, rows - 1u) * ${u(G)} + e % ${u(G)}) * 3u + 2u].z); }
  workgroupBarrier();
  ${sumGroupsTree(G, WG, TB)}`] : [];
    if (!s.lateRms) body.push(...rms);
    body.push(...gemvDot4PreLoop(s, { KC, P }));
    if (s.lateRms) body.push(...rms);
    if (s.rolled) emit(`var acc: array<f32, ${NV}>;`);
    else for (let r = 0; r < RT; r++) for (let h = 0; h < P; h++) for (let i = 0; i < TB; i++) { emit(`var a${r}_${h}_${i} = 0.0;`); vals.push(`a${r}_${h}_${i}`); }
  } else if (XS || D4) {
    body.push(...(D4 ? gemvDot4Loop(s, { KC, WG, P }) : gemvStagedLoop(s, { KC, XC, CWt, GS, NSG, WG, P })));
    const sfx = (i: number) => (TB === 1 ? '' : `_${i}`);
    for (let r = 0; r < RT; r++) for (let h = 0; h < P; h++) for (let i = 0; i < TB; i++) { emit(`var a${r}_${h}${sfx(i)} = 0.0;`); vals.push(`a${r}_${h}${sfx(i)}`); }
    if (norm && !D4) for (let i = 0; i < TB; i++) { emit(`var ss${TB === 1 ? '' : i} = 0.0;`); vals.push(`ss${TB === 1 ? '' : i}`); }
  } else if (TB === 1) {
    // Decode: fully unrolled. x once per chunk, shared by every row; the zero point enters as z·Σx per group. UN chunks
    // per iteration, all loads first (memory-level parallelism); past KC a chunk is clamped and weighted 0.
    const UN = s.UN ?? 1;
    for (let r = 0; r < RT; r++) for (let h = 0; h < P; h++) emit(`var a${r}_${h} = 0.0;`);
    if (norm) emit('var ss = 0.0;');
    const guard = KC % (TK * UN) !== 0;
    const slots = Array.from({ length: UN }, (_, v) => v);
    const sl: string[][] = slots.map(() => []);
    for (const v of slots) {
      const b = sl[v];
      b.push(v === 0 ? 'let cc = c;' : `let cc = min(c + ${u(v * TK)}, ${u(KC - 1)});`);
      if (guard && v > 0) b.push(`let f = select(0.0, 1.0, c + ${u(v * TK)} < ${u(KC)});`);
      b.push(...xLoads('xb0', null, 'x', 'cc'));
      for (let r = 0; r < RT; r++) for (let h = 0; h < P; h++) b.push(wLoad(`rw${r}_${h}`, `${r}_${h}`, 'cc'));
      for (let r = 0; r < RT; r++) for (let h = 0; h < P; h++) for (let q = 0; q < NSG; q++) b.push(...scaleZero(`rw${r}_${h}`, `${r}_${h}`, q, 'cc'));
    }
    // Math after every slot's loads: the slots' values live in their own blocks, so the math goes in each block's end.
    for (const v of slots) {
      const b = sl[v];
      const fs = guard && v > 0 ? 'f * ' : '';
      if (norm) b.push(`ss += ${fs}(${Array.from({ length: XC }, (_, k) => `dot(xr${k}, xr${k})`).join(' + ')});`);
      if (quant) for (let q = 0; q < NSG; q++) b.push(`let sx${q} = dot(${Array.from({ length: XG }, (_, k) => `x${q * XG + k}`).join(' + ')}, vec4f(1.0));`);
      for (let r = 0; r < RT; r++) for (let h = 0; h < P; h++) {
        const id = `${r}_${h}`;
        const vecs = chunkVecs(id);
        for (let q = 0; q < NSG; q++) {
          const terms = Array.from({ length: XG }, (_, k) => `dot(${vecs[q * XG + k]}, x${q * XG + k})`).join(' + ');
          b.push(quant ? `a${id} += ${fs}(s${id}_${q} * ((${terms}) - z${id}_${q} * sx${q}));` : `a${id} += ${fs}(${terms});`);
        }
      }
    }
    for (const v of slots) body.push(`{\n    ${sl[v].join('\n    ')}\n    }`);
    for (let r = 0; r < RT; r++) for (let h = 0; h < P; h++) vals.push(`a${r}_${h}`);
    if (norm) vals.push('ss');
  } else {
    // Small T: loops (compilers unroll them; software drivers compile them fast). Each row's chunk is dequantised once
    // and applied to every token of the workgroup. acc[(r * P + h) * TB + i], then the sums of squares.
    const RP = RT * P;
    emit(`var rws: array<u32, ${RP}>;`);
    for (let r = 0; r < RT; r++) for (let h = 0; h < P; h++) emit(`rws[${r * P + h}] = rw${r}_${h};`);
    emit(`var xbs: array<u32, ${TB}>;`);
    for (let i = 0; i < TB; i++) emit(`xbs[${i}] = xb${i};`);
    emit(`var acc: array<f32, ${NV}>;`);
    // rows + RP >= RP, but the compiler cannot know it (rows is read from a buffer).
    body.push(`for (var rh = 0u; rh < ${s.rolled ? `min(${u(RP)}, rows + ${u(RP)})` : u(RP)}; rh++) {`);
    body.push('let rw = rws[rh];');
    body.push(wLoad('rw', ''));
    for (let q = 0; q < NSG; q++) body.push(...scaleZero('rw', '', q));
    chunkVecs('').forEach((v, k) => {
      const q = Math.floor(k / XG);
      body.push(quant ? `let d${k} = (${v} - vec4f(z_${q})) * s_${q};` : `let d${k} = ${v};`);
    });
    body.push(`for (var i = 0u; i < ${s.rolled ? `min(${u(TB)}, rows - t0)` : u(TB)}; i++) {`);
    body.push('if (t0 + i < rows) {');
    body.push(...xLoads('xbs[i]', null, 'x'));
    if (norm) body.push(`if (rh == 0u) { acc[${u(RP * TB)} + i] += ${Array.from({ length: XC }, (_, k) => `dot(xr${k}, xr${k})`).join(' + ')}; }`);
    body.push(`acc[rh * ${u(TB)} + i] += ${Array.from({ length: XC }, (_, k) => `dot(d${k}, x${k})`).join(' + ')};`);
    body.push('}', '}', '}');
  }
  const step = TB === 1 ? TK * (s.UN ?? 1) : TK;
  if (XS || D4 || DP) emit(body.join('\n  '));
  else emit(`for (var c = tk; c < ${u(KC)}; c += ${u(step)}) {\n    ${body.join('\n    ')}\n  }`);

  // Reduction: value vi of row group rg lands in red[(vi * RG + rg) * SLOTS + slot] (a slot per subgroup, or per thread).
  const store = (v: string, vi: string): string => (sg
    ? `{ let sv = subgroupAdd(${v}); if (sgi == 0u) { red[(${vi} * RGC + rg) * SLOTS + tk / sgs] = sv; } }`
    : `red[(${vi} * RGC + rg) * SLOTS + tk] = ${v};`);
  // One slot per row group (subgroups exactly TK wide: sgMin = TK, and the device's widest is at most TK): each sum is
  // complete in red, which the epilogue reads after one barrier (no second pass, no second barrier).
  const direct = oneSlot(s);
  if (!direct) emit(sg ? 'let nsl = max(1u, TKC / sgs);' : 'let nsl = TKC;');
  if (vals.length) vals.forEach((v, vi) => emit(store(v, u(vi))));
  else emit(`for (var vi = 0u; vi < ${u(NV)}; vi++) { ${store('acc[vi]', 'vi')} }`);
  emit(direct ? 'workgroupBarrier();' : `workgroupBarrier();
  for (var e = lid; e < ${u(NV * RG)}; e += ${u(WG)}) {
    var sum = 0.0;
    for (var k = 0u; k < nsl; k++) { sum += red[e * SLOTS + k]; }
    fin[e] = sum;
  }
  workgroupBarrier();`);
  const FIN = direct ? 'red' : 'fin';

  // Epilogue: one thread per (unit, token).
  const acc = (h: number) => `${FIN}[((r * ${u(P)} + ${u(h)}) * ${u(TB)} + i) * RGC + erg]`;
  const ep: string[] = [];
  ep.push(`let ul = e % ${u(UW)}; let i = e / ${u(UW)}; let t = t0 + i;`);
  ep.push(`let un = wid.x * ${u(UW)} + ul;`);
  ep.push(`if (t < rows && un < ${u(U)}) {`);
  ep.push(`let erg = ul / ${u(RT)}; let r = ul % ${u(RT)};`);
  // Staged x: every thread's sum of squares covers the x it staged, so the row groups' sums add up to Σx².
  const ssOf = XS || D4 ? Array.from({ length: RG }, (_, g) => `${FIN}[(${u(RT * P * TB)} + i) * RGC + ${u(g)}]`).join(' + ') : `${FIN}[(${u(RT * P * TB)} + i) * RGC + erg]`;
  ep.push(!norm ? 'let rinv = 1.0;' : sgRms ? `let rinv = ${rinvOf('ssw', m.K, s.eps)};` : DP ? `let rinv = ${rinvOfGroups(m.K, s.eps, `i * ${u(m.K / 32)}`)};` : D4 ? `let rinv = ${rinvOfGroups(m.K, s.eps)};` : `let rinv = ${rinvOf(`(${ssOf})`, m.K, s.eps)};`);
  ep.push(`let ya = ${acc(0)} * rinv;`);
  if (P === 2) ep.push(`let yb = ${acc(1)} * rinv;`);
  ep.push(...epilogueLines(s));
  const QO = quantizesOut(s);
  if (QO) ep.push(`QV[i * ${u(UW)} + ul] = ov;`);
  ep.push('}');
  emit(`for (var e = lid; e < ${u(UW * TB)}; e += ${u(WG)}) {\n    ${ep.join('\n    ')}\n  }`);
  if (QO) {
    // The outputs quantized for the next matrix: a thread per group of 32 (its values from QV), as quantRowsKernel.
    const GPW = UW / 32, NG = U / 32;
    const qv = (k: string) => `vec4f(QV[q0 + ${k} * 4u], QV[q0 + ${k} * 4u + 1u], QV[q0 + ${k} * 4u + 2u], QV[q0 + ${k} * 4u + 3u])`;
    emit(`workgroupBarrier();
  for (var e = lid; e < ${u(GPW * TB)}; e += ${u(WG)}) {
    let ti = e / ${u(GPW)};
    let gg = wid.x * ${u(GPW)} + e % ${u(GPW)};
    if (t0 + ti < rows && gg < ${u(NG)}) {
      let q0 = ti * ${u(UW)} + (e % ${u(GPW)}) * 32u;
      var sb = 0.0;
      ${quantBlock(qv, s.qout!.norm ? (k) => `NWN[gg * 8u + ${k}]` : null, 'sb')}
      ${xpStore('XPO', 't0 + ti', 'gg', NG, 'sb')}
    }
  }`);
  }

  // Small-T int8 kernels find x quantized (and, gathering, copied into x) by quantRowsKernel.
  const copy = gather && !DP ? gatherCopy(K4, TB, WG) : '';
  const helpers = quantHelpers(m.bits);

  const sgArgs = sg ? ', @builtin(subgroup_invocation_id) sgi: u32, @builtin(subgroup_size) sgs: u32' : '';
  return `${sg ? 'enable subgroups;\n' : ''}${decls}
const TKC = ${u(TK)};
const RGC = ${u(RG)};
const SLOTS = ${u(reductionSlots(s))};
var<workgroup> red: array<f32, ${NV * RG * reductionSlots(s)}>;
${oneSlot(s) ? '' : `var<workgroup> fin: array<f32, ${NV * RG}>;\n`}${XS ? `var<workgroup> xs: array<vec4f, ${s.XT}>;\n` : ''}${DP && norm && !sgRms ? `var<workgroup> SS: array<f32, ${TB * (m.K / 32)}>;\n` : ''}${quantizesOut(s) ? `var<workgroup> QV: array<f32, ${UW * TB}>;\n` : ''}${D4 ? `var<workgroup> SA: array<vec4<u32>, ${m.K / 32}>;\nvar<workgroup> SB: array<vec4<u32>, ${m.K / 32}>;\nvar<workgroup> SG: array<vec2f, ${m.K / 32}>;\n${norm ? `var<workgroup> SS: array<f32, ${m.K / 32}>;\n` : ''}` : ''}${helpers}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32${sgArgs}) {
  let rows = ${rowsExpr};
  let t0 = wid.y * ${u(TB)};${TB === 1 && !headMode && s.ungated ? '' : `
  if (t0 >= rows) { return; }`}
  ${copy}
  let rg = lid / TKC;
  let tk = lid % TKC;
  let ub = wid.x * ${u(UW)} + rg * ${u(RT)};
  ${L.join('\n  ')}
}
`;
}

/**
 * The tiled kernels' RMSNorm prologue: every token's sum of squares over its x row (4 threads a token, each a quarter of
 * K, then one per token sums the four) into `rinv` (1/rms of the tile's TM tokens); needs `ssr` (4·TM f32) and `rinv`
 * (TM f32) in workgroup memory, `rows` and `t0` in scope.
 */
export function rmsPass(s: { m: MatLayout; gather: boolean; epi: Epilogue; eps: number }, TM: number, WG: number): string {
  const K4 = s.m.K / 4;
  return `{
    for (var e = lid; e < ${u(4 * TM)}; e += ${u(WG)}) {
      let tt = e / 4u;
      let xr = ${xRow(s, 'min(t0 + tt, rows - 1u)')} * ${u(K4)};
      var ss = 0.0;
      for (var k = e % 4u; k < ${u(K4)}; k += 4u) { let v = X[xr + k]; ss += dot(v, v); }
      ssr[e] = ss;
    }
    workgroupBarrier();
    for (var tt = lid; tt < ${u(TM)}; tt += ${u(WG)}) {
      rinv[tt] = ${rinvOf('(ssr[4u * tt] + ssr[4u * tt + 1u] + ssr[4u * tt + 2u] + ssr[4u * tt + 3u])', s.m.K, s.eps)};
    }
    workgroupBarrier();
  }`;
}

/**
 * The tiled kernels' row of W for tile row `r` (a WGSL expression): unit u0 + r (paired units: u0 + r/2, half r%2),
 * clamped to the last of U units.
 */
export function tileRow(epi: Epilogue, U: number, r: string): string {
  return paired(epi) ? rowOfUnit(epi, `min(u0 + ${r} / 2u, ${u(U - 1)})`, `(${r} % 2u)`) : rowOfUnit(epi, `min(u0 + ${r}, ${u(U - 1)})`, 0);
}

/**
 * The tiled kernels' work items: slot j of a thread is item `it` = lid + j·WG (of n; the last slot checks the bound),
 * running `body`.
 */
export const itemSlot = (WG: number) => (j: number, n: number, body: string): string =>
  `{ let it = lid + ${u(j * WG)};${(j + 1) * WG > n ? ` if (it < ${u(n)})` : ''} {\n      ${body}\n    } }`;

/**
 * One W word `wd` of row `row` dequantised: the statements (4-bit nibbles into lo/hi, 8-bit bytes into by; for 4/8-bit
 * the group `g` = `gExpr`, its scale sc and zero point zp) and the f32 expression of each of its 32/bits weights.
 */
export function wordDequant(m: MatLayout, gExpr: string): { lines: string[]; value: (e: number) => string } {
  const quant = m.kind === 'q';
  const lines: string[] = [];
  if (m.bits === 4) lines.push('let lo = nib(wd, vec4<u32>(0u, 4u, 8u, 12u));', 'let hi = nib(wd, vec4<u32>(16u, 20u, 24u, 28u));');
  if (m.bits === 8) lines.push('let by = byt(wd);');
  if (quant) lines.push(`let g = ${gExpr};`, `let sc = ${scaleOf(m, 'row', 'g')};`, `let zp = ${zeroOf(m, 'row', 'g')};`);
  const raw = (e: number) => (m.bits === 32 ? 'bitcast<f32>(wd)' : m.bits === 4 ? `${e < 4 ? 'lo' : 'hi'}[${e % 4}]` : `by[${e}]`);
  return { lines, value: (e) => (quant ? `(${raw(e)} - zp) * sc` : raw(e)) };
}

/** The tiled matrix kernel: 64 tokens × 64 rows per workgroup of 256 threads, each thread 4 tokens × 4 rows. */
export const GEMM_TM = 64;
export const GEMM_TN = 64;

export type GemmSpec = Omit<GemvSpec, keyof GemvShape | 'sg' | 'rolled'>;

/** Units (rows, or row pairs) of a tile of TN rows. */
export const gemmUnitsPerTile = (s: { epi: Epilogue }, TN = GEMM_TN): number => TN / (paired(s.epi) ? 2 : 1);

/**
 * Y = X Wᵀ for many tokens (prefill): per K step, the workgroup dequantises a 64-row slice of W and stages a 64-token
 * slice of x (RMS-normalised: a first pass takes every token's sum of squares) in workgroup memory, then every thread
 * accumulates its 4×4 outputs. Each weight is read once per 64 tokens. Same bindings, row pairs and epilogues as
 * gemvKernel.
 */
export function gemmKernel(s: GemmSpec, TN = GEMM_TN): string {
  const { m, norm, gather, epi } = s;
  const P = paired(epi) ? 2 : 1;
  // 16 threads along the tokens (4 each) and TN / 4 along the rows (4 each).
  if (TN % 8 !== 0 || TN > 64) throw new Error(`gemm: TN = ${TN}`);
  const WG = 4 * TN, TM = GEMM_TM, UT = TN / P, U = gemvUnits(s);
  const K4 = m.K / 4;
  const CW = m.wpr % 4 === 0 ? 4 : 1;
  const WPW = 32 / m.bits;
  const CWt = CW * WPW;
  const KC = m.wpr / CW;
  // Chunks per K step: up to 32 weights.
  let NCH = 1;
  while (NCH * 2 * CWt <= 32 && KC % (NCH * 2) === 0) NCH *= 2;
  const KS = NCH * CWt, KS4 = KS / 4, WS = NCH * CW; // weights, x vec4s and W words per row per step
  const rowsExpr = epi.kind === 'head' ? 'MT[3]' : 'MT[0]';

  // One W word -> WPW dequantised weights in ws[k][r].
  const wordWeights = (): string[] => {
    const d = wordDequant(m, `(kc * ${u(CWt)} + wi * ${u(WPW)}) / ${u(m.group)}`);
    return [...d.lines, ...Array.from({ length: WPW }, (_, e) => `ws[((wi * ${u(WPW)} + ${u(e)}) * ${u(TN)} + r) >> 2u][r & 3u] = ${d.value(e)};`)];
  };

  // Each K step's W words and x vec4s go through registers: loaded one step ahead (loadStep), then dequantised and
  // stored into workgroup memory (storeStep). Slot j of a thread is item lid + j·WG.
  const ITW = Math.ceil((TN * WS) / WG), ITX = Math.ceil((TM * KS4) / WG);
  const slot = itemSlot(WG);
  const wItem = `let r = it / ${u(WS)};\n      let wi = it % ${u(WS)};\n      let row = ${tileRow(epi, U, 'r')};`;
  const xItem = `let tt = it / ${u(KS4)};\n      let k4 = it % ${u(KS4)};`;
  const loadStep = (k: string): string => [
    ...Array.from({ length: ITW }, (_, j) => slot(j, TN * WS, `${wItem}\n      pw[${j}] = w32(${wordAt(m, 'row', `${k} * ${u(CW)} + wi`)});`)),
    ...Array.from({ length: ITX }, (_, j) => slot(j, TM * KS4, `${xItem}\n      px[${j}] = X[${xRow(s, 'min(t0 + tt, rows - 1u)')} * ${u(K4)} + ${k} * ${u(CWt / 4)} + k4];`)),
  ].join('\n    ');
  const storeStep = (): string => [
    ...Array.from({ length: ITW }, (_, j) => slot(j, TN * WS, `${wItem}\n      let wd = pw[${j}];\n      ${wordWeights().join('\n      ')}`)),
    ...Array.from({ length: ITX }, (_, j) => slot(j, TM * KS4, `${xItem}\n      let xi = kc * ${u(CWt / 4)} + k4;
      let v = px[${j}]${norm ? ' * NW[xi] * rinv[tt]' : ''};
      let xo = k4 * ${u(TM)} + (tt >> 2u);
      xs[xo][tt & 3u] = v.x;
      xs[xo + ${u(TM / 4)}][tt & 3u] = v.y;
      xs[xo + ${u(TM / 2)}][tt & 3u] = v.z;
      xs[xo + ${u((3 * TM) / 4)}][tt & 3u] = v.w;`)),
  ].join('\n    ');
  const ssPass = norm ? rmsPass(s, TM, WG) : '';
  const accs: string[] = [];
  for (let i = 0; i < 4; i++) for (let j = 0; j < 4; j++) accs.push(`c${i}${j}`);
  const fma: string[] = [];
  for (let i = 0; i < 4; i++) for (let j = 0; j < 4; j++) fma.push(`c${i}${j} += a[${i}] * b[${j}];`);
  // Epilogue per (token i, row j) of the thread.
  const epi4: string[] = [];
  for (let i = 0; i < 4; i++) {
    epi4.push(`{ let t = t0 + tg * 4u + ${u(i)};\n    if (t < rows) {`);
    if (P === 1) {
      for (let j = 0; j < 4; j++) epi4.push(`{ let un = u0 + rg * 4u + ${u(j)}; if (un < ${u(U)}) { let ya = c${i}${j}; ${epilogueLines(s).join(' ')} } }`);
    } else {
      for (let j = 0; j < 2; j++) epi4.push(`{ let un = u0 + rg * 2u + ${u(j)}; if (un < ${u(U)}) { let ya = c${i}${2 * j}; let yb = c${i}${2 * j + 1}; ${epilogueLines(s).join('\n      ')} } }`);
    }
    epi4.push('} }');
  }

  return `${matDecls(s)}
var<workgroup> xs: array<vec4f, ${(KS * TM) / 4}>;
var<workgroup> ws: array<vec4f, ${(KS * TN) / 4}>;
${norm ? `var<workgroup> ssr: array<f32, ${4 * TM}>;\nvar<workgroup> rinv: array<f32, ${TM}>;` : ''}
${quantHelpers(m.bits)}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let rows = ${rowsExpr};
  let t0 = wid.y * ${u(TM)};
  if (t0 >= rows) { return; }
  ${gather ? gatherCopy(K4, TM, WG) : ''}
  let u0 = wid.x * ${u(UT)};
  let tg = lid % 16u;
  let rg = lid / 16u;
  ${ssPass}
  ${accs.map((a) => `var ${a} = 0.0;`).join(' ')}
  var pw: array<u32, ${ITW}>;
  var px: array<vec4f, ${ITX}>;
  ${loadStep('0u')}
  for (var kc = 0u; kc < ${u(KC)}; kc += ${u(NCH)}) {
    ${storeStep()}
    workgroupBarrier();
    // The next step's words and x, loaded while this step's products run.
    if (kc + ${u(NCH)} < ${u(KC)}) {
      let kn = kc + ${u(NCH)};
      ${loadStep('kn')}
    }
    for (var kk = 0u; kk < ${u(KS)}; kk++) {
      // One 16-byte workgroup load each for the thread's 4 tokens and 4 rows.
      let a = xs[kk * ${u(TM / 4)} + tg];
      let b = ws[kk * ${u(TN / 4)} + rg];
      ${fma.join(' ')}
    }
    workgroupBarrier();
  }
  ${epi4.join('\n  ')}
}
`;
}

export interface QkNormSpec {
  heads: number;
  kvHeads: number;
  headDim: number;
  capacity: number;
  /** The RoPE table's word offset in MT (metaRopeOffset). */
  ropeOff: number;
  eps: number;
  /** The cache holds f16 (shader-f16). */
  kv16?: boolean;
  /** k's heads are read from Q at this word (Epilogue kStage), not from the cache. */
  kStage?: number;
}

/** Threads of qkNormRopeKernel's workgroups: a rotary pair each, a power of two (for the reduction's tree). */
export const qkNormWorkgroup = (headDim: number): number => 2 ** Math.ceil(Math.log2(headDim / 2));

/**
 * Qwen3's per-head q/k RMSNorm, then the rotary embedding, in place: what the q/k/v epilogue (Epilogue qkNorm) stored
 * unrotated. Workgroup (j, t) takes head j of token t < MT[0]: q head j of Q for j < heads, else k head j − heads of
 * the layer's cache at position MT[1] + t. A thread per rotary pair (i, i + headDim/2) (threads past headDim/2 add 0 to
 * Σx²); 1/rms from the workgroup's tree, the weights NW (q's headDim, then k's), then the rotation the epilogue does
 * without the norm: out = w ⊙ (x / rms), rotated.
 */
export function qkNormRopeKernel(a: QkNormSpec): string {
  const { heads: H, kvHeads: KVH, headDim: HD, capacity: CAP, ropeOff } = a;
  const half = HD / 2, WG = qkNormWorkgroup(HD);
  const kv16 = !!a.kv16;
  return `${kv16 ? 'enable f16;\n' : ''}@group(0) @binding(0) var<storage, read> MT: array<u32>;
@group(0) @binding(1) var<storage, read> NW: array<f32>;
@group(0) @binding(2) var<storage, read_write> QO: array<f32>;
@group(0) @binding(3) var<storage, read_write> KV: array<${kv16 ? 'f16' : 'f32'}>;
var<workgroup> red: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let hh = wid.x;
  let t = wid.y;
  if (t >= MT[0] || hh >= ${u(H + KVH)}) { return; }
  let pos = MT[1] + t;
  let live = lid < ${u(half)};
  let jj = min(lid, ${u(half - 1)});
  let isQ = hh < ${u(H)};
  let o = select(((hh - ${u(H)}) * ${u(CAP)} + pos) * ${u(HD)}, t * ${u(H * HD)} + hh * ${u(HD)}, isQ) + jj;
  var xa: f32;
  var xb: f32;
  ${a.kStage === undefined
    ? `if (isQ) { xa = QO[o]; xb = QO[o + ${u(half)}]; } else { xa = ${kvLoad(kv16, 'KV[o]')}; xb = ${kvLoad(kv16, `KV[o + ${u(half)}]`)}; }`
    : `let so = select(${u(a.kStage)} + (t * ${u(KVH)} + hh - ${u(H)}) * ${u(HD)} + jj, o, isQ);
  xa = QO[so]; xb = QO[so + ${u(half)}];`}
  red[lid] = select(0.0, xa * xa + xb * xb, live);
  workgroupBarrier();
  for (var st = ${u(WG / 2)}; st > 0u; st >>= 1u) {
    if (lid < st) { red[lid] += red[lid + st]; }
    workgroupBarrier();
  }
  let r = ${rinvOf('red[0]', HD, a.eps)};
  if (live) {
    let wo = select(${u(HD)}, 0u, isQ) + jj;
    ${normedPair(['na', 'nb'], ['xa', 'xb'], 'r', 'wo', half)}
    ${ropeTrig(ropeOff, CAP, half).join('\n    ')}
    let ra = ${rotated('na', 'nb')[0]};
    let rb = ${rotated('na', 'nb')[1]};
    if (isQ) { QO[o] = ra; QO[o + ${u(half)}] = rb; } else { KV[o] = ${kvStore(kv16, 'ra')}; KV[o + ${u(half)}] = ${kvStore(kv16, 'rb')}; }
  }
}
`;
}

export interface AttentionSpec {
  heads: number;
  kvHeads: number;
  headDim: number;
  capacity: number;
  /** Threads per workgroup. */
  WG: number;
  sg: boolean;
  /** Keys per tile (default ATTN_TILE). */
  tile?: number;
  /**
   * Keys whose V rows a thread loads together in the p·V sum (default 1): each iteration of that loop otherwise waits
   * for its one load from memory before the next.
   */
  unroll?: number;
  /**
   * int8 activations: also quantize the output rows for the o projection into XPO (binding 5), for forwards of at
   * most this many tokens (XPO holds them).
   */
  qoutRows?: number;
  /**
   * Qwen3, one-token forwards (the q/k/v epilogue's kToQ: q's and k's heads unrotated in Q): each workgroup
   * normalizes and rotates its q head and its kv head's new key as qkNormRopeKernel does (the same arithmetic), the
   * key into workgroup memory, which the scores read in place of the cache's row; the first workgroup of each kv head
   * writes it into the cache (binding KV read_write; the layer's q/k norm weights bound last, NW). No workgroup reads
   * that row's key from the cache, so the write races with nothing.
   */
  qkNorm?: { ropeOff: number; eps: number };
  /** The cache holds f16 (shader-f16): rows read as vec4<f16>, widened to f32 for the math. */
  kv16?: boolean;
}

/** Workgroup size of the attention kernel. */
export const attentionWorkgroup = (sg: boolean): number => (sg ? 256 : 128);

/** Keys per tile of the attention kernel (their scores live in workgroup memory). */
export const ATTN_TILE = 1024;

/**
 * Causal attention of T queries over the cache. Workgroup (head, token, split) takes the keys of its split (MT[6]
 * splits of MT[7] keys; one split unless the cache is long and T small), in tiles of ATTN_TILE keys: (1) a thread per
 * key computes its score, q from workgroup memory and the key's row read whole (many loads in flight per thread);
 * (2) the tile's max and Σexp, merged into the running ones (online softmax across tiles); (3) the workgroup as
 * WG/(headDim/4) groups of headDim/4 threads, group g summing p·v over keys g, g+G, …, a vec4 of the head per thread
 * (V rows read coalesced, one accumulator per thread); the groups meet in workgroup memory at the end. One split writes
 * O; several write (Σ p·v, max, Σ p) partials that attentionCombineKernel merges. GQA: head h reads kv head
 * h / (heads / kvHeads).
 */
export function attentionKernel(a: AttentionSpec): string {
  const { heads: H, kvHeads: KVH, headDim: HD, capacity: CAP, WG, sg, qkNorm } = a;
  const HD4 = HD / 4, REP = H / KVH;
  // A cache row's vec4 at index i, as f32.
  const kvAt = (i: string) => (a.kv16 ? `vec4f(KV[${i}])` : `KV[${i}]`);
  if (WG < HD4) throw new Error(`attention: ${WG} threads are fewer than a head's ${HD4} vec4s`);
  const QW = qkNormWorkgroup(HD);
  if (qkNorm && WG < QW) throw new Error(`attention: ${WG} threads are fewer than a head's ${QW} rotary pairs`);
  // p·V runs in G groups of HD4 threads; where WG is not a multiple of HD4 (heads of 80 or 96) the rest sit it out.
  const G = Math.floor(WG / HD4), whole = WG % HD4 === 0;
  const TILE = a.tile ?? ATTN_TILE;
  const scale = 1 / Math.sqrt(HD);
  const scalarReduce = (op: 'max' | 'add', v: string, out: string): string => {
    const comb = (x: string, y: string) => (op === 'max' ? `max(${x}, ${y})` : `(${x} + ${y})`);
    if (sg) {
      return `{ let sv = subgroup${op === 'max' ? 'Max' : 'Add'}(${v}); if (sgi == 0u) { red[lid / sgs] = sv; } }
    workgroupBarrier();
    var ${out} = red[0];
    for (var k = 1u; k < max(1u, ${u(WG)} / sgs); k++) { ${out} = ${comb(out, 'red[k]')}; }
    workgroupBarrier();`;
    }
    return `red[lid] = ${v};
    workgroupBarrier();
    for (var st = ${u(WG / 2)}; st > 0u; st >>= 1u) {
      if (lid < st) { red[lid] = ${comb('red[lid]', 'red[lid + st]')}; }
      workgroupBarrier();
    }
    let ${out} = red[0];
    workgroupBarrier();`;
  };
  // p·V: keys g, g + G, …; UJ of them per iteration, their V rows loaded first (a key past the tile loads the tile's last
  // row and adds p = 0).
  const UJ = a.unroll ?? 1;
  const pv = UJ === 1
    ? `for (var j = g; j < tn; j += ${u(G)}) {
      acc += sc[j] * ${kvAt(`vb + (ts + j) * ${u(HD4)} + d`)};
    }`
    : `for (var j0 = g; j0 < tn; j0 += ${u(G * UJ)}) {
      ${Array.from({ length: UJ }, (_, k) => `let j${k} = min(j0 + ${u(k * G)}, tn - 1u);`).join(' ')}
      ${Array.from({ length: UJ }, (_, k) => `let v${k} = ${kvAt(`vb + (ts + j${k}) * ${u(HD4)} + d`)};`).join('\n      ')}
      ${Array.from({ length: UJ }, (_, k) => `acc += ${k === 0 ? 'sc[j0]' : `select(0.0, sc[j${k}], j0 + ${u(k * G)} < tn)`} * v${k};`).join('\n      ')}
    }`;
  const sgArgs = sg ? ', @builtin(subgroup_invocation_id) sgi: u32, @builtin(subgroup_size) sgs: u32' : '';
  // The key of one row: from the cache, or (qkNorm) the new key from workgroup memory.
  const keyDot = (K: string, at: (k: number) => string) => Array.from({ length: HD4 }, (_, k) => `dot(qs[${k}], ${K === 'KV' ? kvAt(at(k)) : `${K}[${at(k)}]`})`).join(' + ');
  const score = qkNorm
    ? `var s: f32;
      if (ts + j == MT[1]) { s = ${keyDot('kn', (k) => u(k))}; } else { s = ${keyDot('KV', (k) => `kr + ${u(k)}`)}; }`
    : `let s = ${keyDot('KV', (k) => `kr + ${u(k)}`)};`;
  return `${sg ? 'enable subgroups;\n' : ''}${a.kv16 ? 'enable f16;\n' : ''}@group(0) @binding(0) var<storage, read> MT: array<u32>;
@group(0) @binding(1) var<storage, read> Q: array<vec4f>;
@group(0) @binding(2) var<storage, ${qkNorm ? 'read_write' : 'read'}> KV: array<${a.kv16 ? 'vec4<f16>' : 'vec4f'}>;
@group(0) @binding(3) var<storage, read_write> O: array<vec4f>;
@group(0) @binding(4) var<storage, read_write> PART: array<vec4f>;
${a.qoutRows ? `@group(0) @binding(5) var<storage, read_write> XPO: array<vec4<u32>>;
var<workgroup> ov: array<vec4f, ${HD4}>;` : ''}${qkNorm ? `
@group(0) @binding(${a.qoutRows ? 6 : 5}) var<storage, read> NW: array<f32>;
var<workgroup> kn: array<vec4f, ${HD4}>;
var<workgroup> nq: array<f32, ${QW}>;
var<workgroup> nk: array<f32, ${QW}>;` : ''}
var<workgroup> qs: array<vec4f, ${HD4}>;
var<workgroup> red: array<f32, ${WG}>;
var<workgroup> sc: array<f32, ${TILE}>;
var<workgroup> red4: array<vec4f, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32${sgArgs}) {
  let hh = wid.x;
  let t = wid.y;
  let sp = wid.z;
  if (t >= MT[0]) { return; }
  let n = MT[1] + t + 1u;
  let S = MT[6];
  let k0 = sp * MT[7];
  let k1 = min(n, k0 + MT[7]);
  let kb = (hh / ${u(REP)}) * ${u(CAP * HD4)};
  let vb = ${u(KVH * CAP * HD4)} + kb;
  let qb = (t * ${u(H)} + hh) * ${u(HD4)};
  ${qkNorm ? attnQkNormPrologue(a, QW, scale) : `if (lid < ${u(HD4)}) { qs[lid] = Q[qb + lid] * ${f32Lit(scale)}; }
  workgroupBarrier();`}
  let d = lid % ${u(HD4)};
  let g = lid / ${u(HD4)};
  var m = -3.0e38;
  var l = 0.0;
  var acc = vec4f(0.0);
  for (var ts = k0; ts < k1; ts += ${u(TILE)}) {
    let tn = min(${u(TILE)}, k1 - ts);
    var mt = -3.0e38;
    for (var j = lid; j < tn; j += ${u(WG)}) {
      let kr = kb + (ts + j) * ${u(HD4)};
      ${score}
      sc[j] = s;
      mt = max(mt, s);
    }
    ${scalarReduce('max', 'mt', 'tmax')}
    let mn = max(m, tmax);
    var lt = 0.0;
    for (var j = lid; j < tn; j += ${u(WG)}) {
      let p = exp(sc[j] - mn);
      sc[j] = p;
      lt += p;
    }
    ${scalarReduce('add', 'lt', 'tsum')}
    let al = exp(m - mn);
    l = l * al + tsum;
    m = mn;
    acc = acc * al;
    ${whole ? pv : `if (g < ${u(G)}) {\n    ${pv}\n    }`}
    workgroupBarrier();
  }
  red4[lid] = acc;
  workgroupBarrier();
  if (lid < ${u(HD4)}) {
    var o = red4[lid];
    for (var k = 1u; k < ${u(G)}; k++) { o += red4[k * ${u(HD4)} + lid]; }
    if (S == 1u) {
      let ol = o / l;
      O[qb + lid] = ol;${a.qoutRows ? '\n      ov[lid] = ol;' : ''}
    } else {
      let pb = ((t * ${u(H)} + hh) * S + sp) * ${u(HD4 + 1)};
      PART[pb + lid] = o;
      if (lid == 0u) { PART[pb + ${u(HD4)}] = vec4f(m, l, 0.0, 0.0); }
    }
  }${a.qoutRows ? `
  workgroupBarrier();
  if (S == 1u) { ${attnQuantOut(H, HD, a.qoutRows)} }` : ''}
}
`;
}

/**
 * attentionKernel's qkNorm prologue (one token: t = 0, position MT[1]): q head hh and kv head hh / REP read unrotated
 * from Q (k's heads after q's), Σx² of each by qkNormRopeKernel's tree (a thread per rotary pair, QW of them), then
 * w ⊙ (x / rms) rotated, in qkNormRopeKernel's order of operations: q scaled into qs, the key into kn, which the
 * first workgroup (split 0) of the kv head's first q head writes into the cache row.
 */
function attnQkNormPrologue(a: AttentionSpec, QW: number, scale: number): string {
  const { heads: H, kvHeads: KVH, headDim: HD, capacity: CAP } = a, { ropeOff, eps } = a.qkNorm!;
  const half = HD / 2, HD4 = HD / 4, REP = H / KVH;
  // Element i of a vec4 array.
  const at = (arr: string, i: string) => `${arr}[(${i}) >> 2u][(${i}) & 3u]`;
  const [qa, qb] = rotated('na', 'nb'), [ka, kb] = rotated('ma', 'mb');
  // The new key as the cache will hold it (an f16 cache: rounded), so that its score is the one later tokens see.
  const r16 = (v: string) => (a.kv16 ? `f32(f16(${v}))` : v);
  return `let pos = MT[1];
  let live = lid < ${u(half)};
  let jj = min(lid, ${u(half - 1)});
  let qo = hh * ${u(HD)} + jj;
  let ko = (${u(H)} + hh / ${u(REP)}) * ${u(HD)} + jj;
  var xa = 0.0; var xb = 0.0; var ya = 0.0; var yb = 0.0;
  if (lid < ${u(QW)}) {
    xa = ${at('Q', 'qo')}; xb = ${at('Q', `qo + ${u(half)}`)};
    ya = ${at('Q', 'ko')}; yb = ${at('Q', `ko + ${u(half)}`)};
    nq[lid] = select(0.0, xa * xa + xb * xb, live);
    nk[lid] = select(0.0, ya * ya + yb * yb, live);
  }
  workgroupBarrier();
  for (var st = ${u(QW / 2)}; st > 0u; st >>= 1u) {
    if (lid < st) { nq[lid] += nq[lid + st]; nk[lid] += nk[lid + st]; }
    workgroupBarrier();
  }
  let rq = ${rinvOf('nq[0]', HD, eps)};
  let rk = ${rinvOf('nk[0]', HD, eps)};
  if (live) {
    ${ropeTrig(ropeOff, CAP, half).join('\n    ')}
    ${normedPair(['na', 'nb'], ['xa', 'xb'], 'rq', 'jj', half)}
    let ra = ${qa};
    let rb = ${qb};
    ${at('qs', 'jj')} = ra * ${f32Lit(scale)};
    ${at('qs', `jj + ${u(half)}`)} = rb * ${f32Lit(scale)};
    ${normedPair(['ma', 'mb'], ['ya', 'yb'], 'rk', `${u(HD)} + jj`, half)}
    ${at('kn', 'jj')} = ${r16(ka)};
    ${at('kn', `jj + ${u(half)}`)} = ${r16(kb)};
  }
  workgroupBarrier();
  if (hh % ${u(REP)} == 0u && sp == 0u && lid < ${u(HD4)}) { KV[kb + pos * ${u(HD4)} + lid] = ${a.kv16 ? 'vec4<f16>(kn[lid])' : 'kn[lid]'}; }`;
}

/** The attention output of head hh, token t (vec4s `ov` in workgroup memory) quantized into XPO for the o projection. */
function attnQuantOut(H: number, HD: number, rows: number): string {
  if (HD % 32 !== 0) throw new Error(`attention: a head of ${HD} is not whole groups of 32`);
  return `if (MT[0] <= ${u(rows)} && lid < ${u(HD / 32)}) {
    var sb = 0.0;
    ${quantBlock((k) => `ov[lid * 8u + ${k}]`, null, 'sb')}
    ${xpStore('XPO', 't', `hh * ${u(HD / 32)} + lid`, (H * HD) / 32, 'sb')}
  }`;
}

/** Most splits of one head's keys (attentionKernel's partials; attentionCombineKernel holds their (max, Σp) pairs). */
export const ATTN_SPLITS_MAX = 32;

/**
 * Merges the splits' partials of attentionKernel: one workgroup per (head, token), G groups of headDim/4 threads.
 * The splits' (max, Σp) pairs are loaded into workgroup memory by a thread each; group g sums the weighted partial
 * rows of splits g, g + G, … (a vec4 of the head per thread), so that every split's row is loaded at once rather than
 * one split after another; the groups meet in workgroup memory. `groups` (G) defaults to as many as 256 threads hold;
 * 1 is one group walking every split, as the kernel did before session 27.
 */
export function attentionCombineKernel(a: { heads: number; headDim: number; qoutRows?: number; groups?: number }): string {
  const { heads: H, headDim: HD } = a;
  const HD4 = HD / 4;
  const G = Math.max(1, a.groups ?? Math.floor(256 / HD4)), WG = G * HD4;
  return `@group(0) @binding(0) var<storage, read> MT: array<u32>;
@group(0) @binding(1) var<storage, read> PART: array<vec4f>;
@group(0) @binding(2) var<storage, read_write> O: array<vec4f>;${a.qoutRows ? `
@group(0) @binding(3) var<storage, read_write> XPO: array<vec4<u32>>;
var<workgroup> ov: array<vec4f, ${HD4}>;` : ''}
var<workgroup> ml: array<vec2f, ${ATTN_SPLITS_MAX}>;
var<workgroup> red4: array<vec4f, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let hh = wid.x;
  let t = wid.y;
  if (t >= MT[0]) { return; }
  let S = min(MT[6], ${u(ATTN_SPLITS_MAX)});
  let base = (t * ${u(H)} + hh) * S * ${u(HD4 + 1)};
  for (var s = lid; s < S; s += ${u(WG)}) { ml[s] = PART[base + s * ${u(HD4 + 1)} + ${u(HD4)}].xy; }
  workgroupBarrier();
  var mx = -3.0e38;
  for (var s = 0u; s < S; s++) { mx = max(mx, ml[s].x); }
  let d = lid % ${u(HD4)};
  var o = vec4f(0.0);
  for (var s = lid / ${u(HD4)}; s < S; s += ${u(G)}) { o += exp(ml[s].x - mx) * PART[base + s * ${u(HD4 + 1)} + d]; }
  red4[lid] = o;
  workgroupBarrier();
  if (lid < ${u(HD4)}) {
    var l = 0.0;
    for (var s = 0u; s < S; s++) { l += exp(ml[s].x - mx) * ml[s].y; }
    var acc = red4[lid];
    for (var k = 1u; k < ${u(G)}; k++) { acc += red4[k * ${u(HD4)} + lid]; }
    let ol = acc / l;
    O[(t * ${u(H)} + hh) * ${u(HD4)} + lid] = ol;${a.qoutRows ? `
    ov[lid] = ol;` : ''}
  }${a.qoutRows ? `
  workgroupBarrier();
  ${attnQuantOut(H, HD, a.qoutRows)}` : ''}
}
`;
}

/**
 * The tokens' embedding rows copied into x, one workgroup per token, from a table held as `chunks` buffers of
 * `rowsPerChunk` rows (E0, E1, …): a table larger than the device binds in one buffer (Qwen2.5-7B's 152064 × 3584 f32,
 * 2.18 GB). Models whose table fits gather inside layer 0's q/k/v kernels instead.
 */
export function embedGatherKernel(D: number, rowsPerChunk: number, chunks: number, WG = 64): string {
  const D4 = D / 4;
  const decls = Array.from({ length: chunks }, (_, i) => `@group(0) @binding(${i + 1}) var<storage, read> E${i}: array<vec4f>;`).join('\n');
  const pick = Array.from({ length: chunks }, (_, i) => (i < chunks - 1 ? `if (c == ${u(i)}) { v = E${i}[o]; } else ` : `{ v = E${i}[o]; }`)).join('');
  return `@group(0) @binding(0) var<storage, read> MT: array<u32>;
${decls}
@group(0) @binding(${chunks + 1}) var<storage, read_write> XW: array<vec4f>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let t = wid.x;
  let id = MT[${u(META_IDS)} + t];
  let c = id / ${u(rowsPerChunk)};
  let r = id % ${u(rowsPerChunk)};
  for (var k = lid; k < ${u(D4)}; k += ${u(WG)}) {
    let o = r * ${u(D4)} + k;
    var v: vec4f;
    ${pick}
    XW[t * ${u(D4)} + k] = v;
  }
}
`;
}

/**
 * Argmax of `MT[3]` rows of logits (the first index of the maximum, as the reference's loop picks it); row r's
 * index goes to RES[MT[4] + r], and with MT[5] = 1 the last row's also becomes the next forward's token (greedy
 * decoding with no read-back between steps).
 */
export function argmaxKernel(V: number, WG = 256): string {
  return `@group(0) @binding(0) var<storage, read_write> MT: array<u32>;
@group(0) @binding(1) var<storage, read> LG: array<f32>;
@group(0) @binding(2) var<storage, read_write> RES: array<u32>;
var<workgroup> bv: array<f32, ${WG}>;
var<workgroup> bi: array<u32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x;
  // MT is writable here, so its words are not uniform to the compiler: no early return before the barriers.
  let live = row < MT[3];
  var best = -3.4e38;
  var idx = 0xffffffffu;
  for (var i = lid; i < select(0u, ${u(V)}, live); i += ${u(WG)}) {
    let v = LG[row * ${u(V)} + i];
    if (v > best || idx == 0xffffffffu) { best = v; idx = i; }
  }
  bv[lid] = best;
  bi[lid] = idx;
  workgroupBarrier();
  for (var st = ${u(WG / 2)}; st > 0u; st >>= 1u) {
    if (lid < st) {
      let v = bv[lid + st];
      let j = bi[lid + st];
      if (j != 0xffffffffu && (v > bv[lid] || (v == bv[lid] && j < bi[lid]) || bi[lid] == 0xffffffffu)) { bv[lid] = v; bi[lid] = j; }
    }
    workgroupBarrier();
  }
  if (lid == 0u && live) {
    RES[MT[4] + row] = bi[0];
    if (MT[5] == 1u && row + 1u == MT[3]) { MT[${u(META_IDS)}] = bi[0]; }
  }
}
`;
}

/** Checks that subgroups are contiguous, aligned runs of local_invocation_index (what the reductions assume). */
export function subgroupProbeKernel(WG: number): string {
  return `enable subgroups;
@group(0) @binding(0) var<storage, read_write> o: array<u32>;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sgi: u32, @builtin(subgroup_size) sgs: u32) {
  let first = subgroupBroadcastFirst(lid);
  let ok = sgi == lid % sgs && first == lid - sgi;
  o[lid * 2u] = select(0u, 1u, ok);
  o[lid * 2u + 1u] = sgs;
}
`;
}
