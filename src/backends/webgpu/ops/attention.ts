// WebGPU webjit.FusedAttention (from graph/fuse_attention.ts) as one flash-attention kernel: per (batch, block of query
// rows) a workgroup streams K/V tiles through workgroup memory with an online softmax, never holding the score matrix;
// few long rows (decoding against a KV cache) split the keys over workgroups and combine the parts in a second kernel.
import { GRID_PARAMS, LINEAR_GROUP, f32Lit, grid, registerGpuOp, storageDecls, type Dispatch, type GpuOpPlan, type GpuPlanContext } from '../kernel.js';
import { attentionOperands } from '../../attention_operands.js';
import type { Node } from '../../../graph/ir.js';
import { enumerate, raggedSize, spaceSize, withDefault, type Params, type TuneSite } from '../../../tune/site.js';
import { FMA_ASSIGN, dropBarrier, f16Accumulate, faultOf, replaceAll, replaceFirst, withoutFault } from '../faults.js';

/**
 * Tests force the key split (`split`: parts, 0 = automatic), turn subgroups off, keep the row kernel (`tiled` 'off') or
 * take the tiled one wherever it fits ('on') to exercise every path; `planned` counts the plans of each kernel.
 */
export const attentionConfig: { split: number; subgroups: boolean; tiled: 'auto' | 'off' | 'on'; planned: { tiled: number; rows: number } } =
  { split: 0, subgroups: true, tiled: 'auto', planned: { tiled: 0, rows: 0 } };

const u = (n: number): string => `${n}u`;
const np2 = (n: number): number => 2 ** Math.ceil(Math.log2(Math.max(1, n)));
const prod = (d: readonly number[]): number => d.reduce((a, b) => a * b, 1);


/** Element strides of the operands (Q, V and the output: rows strided, each row's elements contiguous). */
interface Attn {
  batch: number[];
  Sq: number;
  Skv: number;
  D: number;
  Dv: number;
  qb: number[];
  /** K element (key j, dim d) at kb + j*kKey + d*kD. */
  kb: number[];
  kKey: number;
  kD: number;
  vb: number[];
  /** Q's row stride and V's key stride (their head dims are contiguous). */
  qRow: number;
  vKey: number;
  /** The output's batch strides and row stride (its columns are contiguous). */
  ob: number[];
  oRow: number;
  mask?: { b: number[]; row: number; key: number };
  /** The reference's scaling, replayed: Q or the scores multiplied or divided by c. */
  scale?: { op: 'Mul' | 'Div'; on: 'q' | 'scores'; c: number };
}

/**
 * Br query rows per workgroup, TPR threads per row; tiles of Bc keys; NS scores per thread. P·V: each row's threads
 * cover the Dv4 vec4 columns of the output, NE4 per thread, or (more threads than columns) JG groups of keys each;
 * `split` parts of `chunk` keys each (a multiple of Bc).
 */
interface Tiling {
  Br: number; TPR: number; Bc: number; WG: number; NS: number; D4: number; KS4: number; Dv4: number; NE4: number; JG: number;
  RB: number; split: number; chunk: number;
}

/**
 * Which operands the kernels can read (write) as vec4s: rows of whole vec4s at vec4 strides and batch offsets. Q
 * (D, qRow, qb), Kᵀ with d contiguous (D, kKey, kb), V (Dv, vKey, vb) and the output (Dv, oRow, ob).
 */
function vec4Operands(a: Attn): { q: boolean; k: boolean; v: boolean; o: boolean } {
  const rows4 = (n: number, row: number, b: number[]) => n % 4 === 0 && row % 4 === 0 && b.every((x) => x % 4 === 0);
  return { q: rows4(a.D, a.qRow, a.qb), k: a.kD === 1 && rows4(a.D, a.kKey, a.kb), v: rows4(a.Dv, a.vKey, a.vb), o: rows4(a.Dv, a.oRow, a.ob) };
}

/** Largest head sizes the register-resident Q row and output columns are generated for. */
const MAX_D = 256;

/** Vec4 sizes, the P·V split and the workgroup memory of a tiling's Br, TPR, Bc. */
function tileShape(a: Attn, Br: number, TPR: number, Bc: number) {
  const D4 = Math.ceil(a.D / 4), KS4 = D4 | 1; // odd row stride (in vec4): a row's threads read distinct banks
  const Dv4 = Math.ceil(a.Dv / 4);
  const pv = TPR >= Dv4 ? { JG: Math.floor(TPR / Dv4), NE4: 1 } : { JG: 1, NE4: Math.ceil(Dv4 / TPR) };
  const bytes = Bc * KS4 * 16 + (Bc * Dv4 + TPR * pv.NE4) * 16 + Br * Bc * 4 + 4 * Br * TPR * 4 + (pv.JG > 1 ? Br * TPR * 16 : 0) + 64;
  return { D4, KS4, Dv4, ...pv, bytes };
}

/** The tiling of Br, TPR, Bc with `split` parts of the keys (clamped: equal parts of whole tiles, none empty). */
function finishTiling(a: Attn, Br: number, TPR: number, Bc: number, split: number): Tiling {
  const { D4, KS4, Dv4, JG, NE4 } = tileShape(a, Br, TPR, Bc);
  const RB = Math.ceil(a.Sq / Br);
  const chunk = Math.ceil(Math.ceil(a.Skv / Math.max(1, split)) / Bc) * Bc;
  split = Math.ceil(a.Skv / chunk);
  return { Br, TPR, Bc, WG: Br * TPR, NS: Bc / TPR, D4, KS4, Dv4, NE4, JG, RB, split, chunk };
}

function tilingOf(a: Attn, nb: number, budget: number): Tiling | null {
  let Br = Math.min(16, np2(a.Sq));
  // Enough workgroups to fill the device before rows per workgroup (K/V reuse).
  while (Br > 4 && nb * Math.ceil(a.Sq / Br) < 128) Br /= 2;
  let TPR = Math.min(64, 128 / Br);
  let Bc = Math.max(32, TPR);
  while (tileShape(a, Br, TPR, Bc).bytes > budget) {
    if (Bc > TPR) Bc /= 2;
    else if (TPR > 4) { TPR /= 2; Bc = TPR; }
    else return null;
  }
  const RB = Math.ceil(a.Sq / Br);
  let split = attentionConfig.split;
  if (!split) {
    // Few workgroups (decoding, small batches) but many keys: parts of the keys on more workgroups.
    const work = nb * RB;
    split = work < 128 && a.Skv >= 4 * Bc ? Math.min(Math.ceil(a.Skv / (2 * Bc)), Math.ceil(256 / work)) : 1;
  }
  return finishTiling(a, Br, TPR, Bc, split);
}

const isPow2 = (n: number): boolean => Number.isInteger(n) && n >= 1 && (n & (n - 1)) === 0;

/** A forced tiling (a tuning candidate), or null where it does not fit this shape or device. */
function forcedTiling(a: Attn, p: Params, budget: number, maxInv: number): Tiling | null {
  const Br = Number(p.Br), TPR = Number(p.TPR), Bc = Number(p.Bc), split = Number(p.split);
  if (!isPow2(Br) || !isPow2(TPR) || !Number.isInteger(Bc) || Bc < TPR || Bc % TPR !== 0 || !(split >= 1)) return null;
  if (Br * TPR > maxInv || tileShape(a, Br, TPR, Bc).bytes > budget) return null;
  return finishTiling(a, Br, TPR, Bc, Math.floor(split));
}

const ATTN_AXES = { Br: [1, 2, 4, 8, 16], TPR: [4, 8, 16, 32, 64], Bc: [16, 32, 64, 128], split: [1, 2, 4, 8, 16] };
const TILED_AXES = { kind: ['tiled'], Br: [16, 32, 64], Bc: [16, 32, 64], TN: [4, 8, 16] };
/** Scores a thread keeps in registers (Bc / TPR). */
const MAX_NS = 16;

/**
 * The attention site: Br query rows and TPR threads per row per workgroup, Bc keys per tile, `split` parts of the keys
 * (decode). Pruned: rows past the queries, tiles past the keys, workgroups outside [32, maxInvocations] threads or
 * the workgroup memory, more than MAX_NS scores per thread, splits where the workgroups already fill the device or a
 * part would get no whole tile.
 */
function attentionSite(a: Attn, nb: number, sig: string, def: Params, budget: number, maxInv: number,
  ragged: (d: number[][]) => number[][], rowsAt: TuneSite['rowsAt']): TuneSite {
  return {
    family: 'attention', sig, default: def, ragged, rowsAt,
    space: () => {
      const cands = enumerate(ATTN_AXES, (p) => {
        const Br = Number(p.Br), TPR = Number(p.TPR), Bc = Number(p.Bc), split = Number(p.split);
        if (Br > np2(a.Sq) || Bc > Math.max(16, np2(a.Skv)) || Bc % TPR !== 0 || Bc / TPR > MAX_NS) return false;
        if (Br * TPR < 32 || Br * TPR > maxInv || tileShape(a, Br, TPR, Bc).bytes > budget) return false;
        return split === 1 || (nb * Math.ceil(a.Sq / Br) < 128 && split <= Math.ceil(a.Skv / Bc));
      });
      // The tiled kernel's shapes (rows per workgroup, keys per tile, keys per thread) where the operands suit it.
      const tiled = tiledFits(a) && attentionConfig.tiled !== 'off'
        ? enumerate(TILED_AXES, (p) => Number(p.Br) <= Math.max(16, np2(a.Sq)) && Number(p.Bc) <= Math.max(16, np2(a.Skv)) &&
          tiledShape(a, Number(p.Br), Number(p.Bc), Number(p.TN), budget, maxInv) !== null)
        : [];
      return { candidates: withDefault(def, [...cands, ...tiled]), before: spaceSize(ATTN_AXES) + spaceSize(TILED_AXES) };
    },
  };
}

/** The axis of input Q (V) that holds the queries (keys): the one q_perm (v_perm) moved to the next-to-last place. */
function seqAxis(node: Node, name: string, rank: number): number {
  const p = node.attrs.get(name)?.value as number[] | undefined;
  return p && p.length === rank ? p[rank - 2] : rank - 2;
}

/**
 * FusedAttention's inputs at ragged query and key counts (heads, batch and head sizes kept): Q [.., Sq, D] (or its
 * queries' axis through q_perm), K (or Kᵀ through k_perm), V [.., Skv, Dv] (v_perm), the mask's key and row axes.
 */
function attentionRagged(node: Node): (d: number[][]) => number[][] {
  return (d) => {
    const [q, k, v, m] = d;
    const qa = seqAxis(node, 'q_perm', q.length), va = seqAxis(node, 'v_perm', v.length);
    const Sq = q[qa], Skv = v[va];
    const Sq2 = raggedSize(Sq), Skv2 = raggedSize(Skv);
    const set = (x: number[], i: number, n: number) => { const y = [...x]; y[i] = n; return y; };
    let k2: number[];
    if (node.attrs.get('transpose_k')?.value === 1) {
      const r = k.length;
      const perm = (node.attrs.get('k_perm')?.value as number[] | undefined) ?? [...Array(r).keys()].reverse();
      k2 = set(k, perm[r - 1], Skv2);
    } else k2 = set(k, k.length - 1, Skv2);
    const out = [set(q, qa, Sq2), k2, set(v, va, Skv2)];
    if (m) {
      let m2 = set(m, m.length - 1, m[m.length - 1] === 1 ? 1 : Skv2);
      if (m.length >= 2 && m[m.length - 2] !== 1) m2 = set(m2, m.length - 2, Sq2);
      out.push(m2);
    }
    return out;
  };
}

/**
 * FusedAttention's inputs with R query rows (each output row depends on its query row, the keys and values, and its
 * mask row), and the multiply-adds of the whole case: the tuner checks large cases on sampled rows.
 */
function attentionRows(node: Node): (d: number[][], R: number) => { dims: number[][]; macs: number } {
  return (d, R) => {
    const [q, , v, m] = d;
    const out = d.map((x) => [...x]);
    out[0][seqAxis(node, 'q_perm', q.length)] = R;
    if (m && m.length >= 2 && m[m.length - 2] !== 1) out[3][m.length - 2] = R;
    // With out_perm the rows land on the output axis that out_perm maps the result's row axis to.
    const op = node.attrs.get('out_perm')?.value as number[] | undefined;
    const outAxis = op ? op.indexOf(op.length - 2) : undefined;
    return { dims: out, macs: (prod(q) / q[q.length - 1]) * v[seqAxis(node, 'v_perm', v.length)] * (q[q.length - 1] + v[v.length - 1]), outAxis };
  };
}

/**
 * Plants a fault (faults.ts): edge, the last query row is not written (guard i < Sq-1); barrier, the barrier between
 * loading a K/V tile and reading it; epilogue, the mask index one off (no mask: the output index); f16acc, the output
 * accumulators rounded to f16 after every fma.
 */
function attentionFault(code: string, fault: string, a: Attn, main: boolean, last: boolean, hasF16: boolean): string {
  switch (fault) {
    // The tiled kernel guards each of a thread's 4 rows: all of them lose the last row.
    case 'edge': return main ? replaceAll(code, new RegExp(`let ok = i < ${a.Sq}u;`, 'g'), `let ok = i + 1u < ${a.Sq}u;`, 'query row guard') : code;
    case 'barrier': return main ? dropBarrier(code, 0) : code;
    case 'epilogue':
      if (a.mask) return main ? replaceAll(code, /mm\[mrow \+ /g, 'mm[mrow + 1u + ', 'mask index') : code;
      return last ? replaceAll(code, /\bom\[/g, 'om[1u + ', 'output index') : code;
    case 'f16acc': return main ? f16Accumulate(code, FMA_ASSIGN('o\\[\\d+\\]'), 4, hasF16) : code;
    default: throw new Error(`unknown fault ${fault}`);
  }
}

/** WGSL lines: `name` = Σ coordinate(b over the batch dims) * strides / div. */
function batchOffset(batch: number[], strides: number[], name: string, div = 1): string {
  const terms: string[] = [];
  let inner = 1;
  for (let i = batch.length - 1; i >= 0; i--) {
    if (strides[i] !== 0 && batch[i] !== 1) {
      const c = i === 0 ? `(b / ${u(inner)})` : `((b / ${u(inner)}) % ${u(batch[i])})`;
      terms.push(`${c} * ${u(strides[i] / div)}`);
    }
    inner *= batch[i];
  }
  return `let ${name} = ${terms.length ? terms.join(' + ') : '0u'};`;
}

/** Combines a per-thread value over the TPR threads of each query row (every thread gets it). */
function rowReduce(T: Tiling, sg: boolean, op: 'max' | 'add', v: string, out: string, arr: string): string {
  const comb = (a: string, b: string) => (op === 'max' ? `max(${a}, ${b})` : `(${a} + ${b})`);
  if (T.TPR === 1) return `let ${out} = ${v};`;
  if (sg) {
    // Every subgroup claimed its slot before the barrier, so the count is final after it.
    return `let ${out}_s = subgroup${op === 'max' ? 'Max' : 'Add'}(${v});
    if (wj_leader) { ${arr}[wj_slot] = ${out}_s; }
    workgroupBarrier();
    let ${out}_n = atomicLoad(&wj_nsg);
    var ${out} = ${arr}[0];
    for (var q = 1u; q < ${out}_n; q++) { ${out} = ${comb(out, `${arr}[q]`)}; }`;
  }
  const row = `r * ${u(T.TPR)}`;
  if (T.TPR <= 16) {
    return `${arr}[lid] = ${v};
    workgroupBarrier();
    var ${out} = ${arr}[${row}];
    for (var q = 1u; q < ${u(T.TPR)}; q++) { ${out} = ${comb(out, `${arr}[${row} + q]`)}; }`;
  }
  const G = 2 ** Math.floor(Math.log2(T.TPR) / 2), R = T.TPR / G;
  return `${arr}[lid] = ${v};
    workgroupBarrier();
    if (t < ${u(G)}) {
      var x = ${arr}[${row} + t * ${u(R)}];
      for (var q = 1u; q < ${u(R)}; q++) { x = ${comb('x', `${arr}[${row} + t * ${u(R)} + q]`)}; }
      ${arr}_g[r * ${u(G)} + t] = x;
    }
    workgroupBarrier();
    var ${out} = ${arr}_g[r * ${u(G)}];
    for (var q = 1u; q < ${u(G)}; q++) { ${out} = ${comb(out, `${arr}_g[r * ${u(G)} + q]`)}; }`;
}

/** Stores vec4 `v` as columns 4*e4.. of an f32 row at `row` (vec4 store when aligned, else the lanes below Dv). */
function storeCols(name: string, row: string, e4: string, v: string, Dv: number, vecOut: boolean): string {
  if (vecOut) return `${name}[${row} / 4u + (${e4})] = ${v};`;
  return [0, 1, 2, 3].map((l) => `if ((${e4}) * 4u + ${u(l)} < ${u(Dv)}) { ${name}[${row} + (${e4}) * 4u + ${u(l)}] = ${v}[${l}]; }`).join('\n      ');
}

function attentionKernel(a: Attn, T: Tiling, nb: number, sg: boolean): string {
  const { Sq, Skv, D, Dv } = a;
  const { Br, TPR, Bc, WG, NS, D4, KS4, Dv4, NE4, JG, RB, split, chunk } = T;
  const useSg = sg && Br === 1 && TPR > 1;
  // vec4 views of the operands where rows and batch offsets are whole vec4s.
  const { q: qVec, k: kVec, v: vVec, o: oVec } = vec4Operands(a);
  const decls = [{ name: 'qm', type: qVec ? 'vec4f' : 'f32' }, { name: 'km', type: kVec ? 'vec4f' : 'f32' }, { name: 'vm', type: vVec ? 'vec4f' : 'f32' }];
  if (a.mask) decls.push({ name: 'mm', type: 'f32' });
  const outs = split > 1
    ? [{ name: 'opart', type: 'vec4f', write: true }, { name: 'ml', type: 'vec2f', write: true }]
    : [{ name: 'om', type: oVec ? 'vec4f' : 'f32', write: true }];
  const sc = a.scale;
  const cl = sc ? f32Lit(sc.c) : '';
  const scaled = (x: string, on: 'q' | 'scores') => (sc && sc.on === on ? `(${x} ${sc.op === 'Mul' ? '*' : '/'} ${cl})` : x);
  const G = 2 ** Math.floor(Math.log2(Math.max(1, TPR)) / 2) * Br;
  const redSize = useSg ? Math.max(1, WG / 4) : WG;
  const wg = [
    `var<workgroup> ks: array<vec4f, ${Bc * KS4}>;`,
    `var<workgroup> vs: array<vec4f, ${Bc * Dv4 + TPR * NE4}>;`,
    `var<workgroup> ps: array<f32, ${Br * Bc}>;`,
    `var<workgroup> rmax: array<f32, ${redSize}>;`, `var<workgroup> rmax_g: array<f32, ${G}>;`,
    `var<workgroup> rsum: array<f32, ${redSize}>;`, `var<workgroup> rsum_g: array<f32, ${G}>;`,
  ];
  if (JG > 1) wg.push(`var<workgroup> ored: array<vec4f, ${WG}>;`);
  if (useSg) wg.push('var<workgroup> wj_nsg: atomic<u32>;');
  const sgInit = useSg
    ? `var wj_slot0 = 0u;
  let wj_leader = subgroupElect();
  if (wj_leader) { wj_slot0 = atomicAdd(&wj_nsg, 1u); }
  let wj_slot = subgroupBroadcastFirst(wj_slot0);`
    : '';

  // Q's row in registers (zero-padded to whole vec4s), scaled as the reference scales Q.
  const qLoad = Array.from({ length: D4 }, (_, x) => {
    if (qVec) return `q[${x}] = ${scaled(`qm[qrow / 4u + ${u(x)}]`, 'q')};`;
    const l = [0, 1, 2, 3].map((k) => (4 * x + k < D ? scaled(`qm[qrow + ${u(4 * x + k)}]`, 'q') : '0.0'));
    return `q[${x}] = vec4f(${l.join(', ')});`;
  });
  // K tile: coalesced along whichever of key or d is contiguous in memory.
  const dFast = a.kD === 1 || a.kKey !== 1;
  const kTile = kVec
    ? `ks[j * ${u(KS4)} + x] = select(vec4f(0.0), km[kbase + jgc * ${u(a.kKey / 4)} + x], live);`
    : `ks[j * ${u(KS4)} + x] = vec4f(${[0, 1, 2, 3].map((l) => {
      const d = `x * 4u + ${u(l)}`;
      return `select(0.0, km[kbase + jgc * ${u(a.kKey)} + min(${d}, ${u(D - 1)}) * ${u(a.kD)}], ${d} < ${u(D)} && live)`;
    }).join(',\n        ')});`;
  const vTile = vVec
    ? `let jg = j0 + idx / ${u(Dv4)};
      vs[idx] = select(vec4f(0.0), vm[vb + min(jg, ${u(Skv - 1)}) * ${u(a.vKey / 4)} + idx % ${u(Dv4)}], jg < kend);`
    : `let jg = j0 + idx / ${u(Dv4)};
      let e = (idx % ${u(Dv4)}) * 4u;
      let row = vb + min(jg, ${u(Skv - 1)}) * ${u(a.vKey)};
      vs[idx] = vec4f(${[0, 1, 2, 3].map((l) => `select(0.0, vm[row + min(e + ${u(l)}, ${u(Dv - 1)})], jg < kend && e + ${u(l)} < ${u(Dv)})`).join(',\n        ')});`;
  const scores: string[] = [];
  for (let c = 0; c < NS; c++) {
    const dots = Array.from({ length: D4 }, (_, x) => `dot(q[${x}], ks[kb + ${u(x)}])`);
    const lines = [
      `{ let j = t + ${u(c * TPR)}; let jg = j0 + j; let kb = j * ${u(KS4)};`,
      `  var s = ${dots.join(' +\n      ')};`,
    ];
    if (sc && sc.on === 'scores') lines.push(`  s = ${scaled('s', 'scores')};`);
    if (a.mask) lines.push(`  s = s + mm[mrow + min(jg, ${u(Skv - 1)}) * ${u(a.mask.key)}];`);
    lines.push(`  s = select(wj_ninf(), s, jg < kend);`, `  sc[${c}] = s; mloc = max(mloc, s); }`);
    scores.push(lines.join('\n    '));
  }
  const probs = Array.from({ length: NS }, (_, c) =>
    `{ let p = select(exp(sc[${c}] - mnew), 0.0, dead); ps[r * ${u(Bc)} + t + ${u(c * TPR)}] = p; lsum += p; }`);
  // P·V: thread t owns column e4 for the keys of its group (JG > 1), or columns t + TPR*x of every key. Only the
  // tile's real keys (tn): the last tile's padding is skipped, and a bound known only at run time keeps software
  // drivers from unrolling the loop into minutes of compilation.
  const pv = TPR >= Dv4
    ? `if (kg < ${u(JG)}) {
      for (var j = kg; j < tn; j += ${u(JG)}) { o[0] = fma(vec4f(ps[r * ${u(Bc)} + j]), vs[j * ${u(Dv4)} + e4], o[0]); }
    }`
    : `for (var j = 0u; j < tn; j++) {
      let p = vec4f(ps[r * ${u(Bc)} + j]);
      ${Array.from({ length: NE4 }, (_, x) => `o[${x}] = fma(p, vs[j * ${u(Dv4)} + t + ${u(x * TPR)}], o[${x}]);`).join('\n      ')}
    }`;
  const colOf = (x: number) => (TPR >= Dv4 ? 'e4' : `t + ${u(x * TPR)}`);
  const writes: string[] = [];
  for (let x = 0; x < NE4; x++) {
    const e4 = colOf(x);
    const st = split > 1 ? `opart[pidx * ${u(Dv4)} + ${e4}] = o[${x}];` : storeCols('om', 'orow', e4, `(o[${x}] / lt)`, Dv, oVec);
    const live = TPR >= Dv4 ? (JG > 1 ? 'kg == 0u' : `t < ${u(Dv4)}`) : (x + 1) * TPR > Dv4 ? `${e4} < ${u(Dv4)}` : '';
    writes.push(live ? `if (${live}) {\n      ${st}\n    }` : st);
  }
  const maskRow = a.mask ? `${batchOffset(a.batch, a.mask.b, 'mb')}\n  let mrow = mb + ic * ${u(a.mask.row)};` : '';
  // Key groups' partial columns add up before the write.
  const groupSum = JG > 1
    ? `ored[lid] = o[0];
  workgroupBarrier();
  if (kg == 0u) { for (var g = 1u; g < ${u(JG)}; g++) { o[0] += ored[r * ${u(TPR)} + g * ${u(Dv4)} + e4]; } }`
    : '';

  return `${useSg ? 'enable subgroups;\n' : ''}${storageDecls([...decls, ...outs])}
${wg.join('\n')}
fn wj_ninf() -> f32 { var b = 0xff800000u; return bitcast<f32>(b); }
@compute @workgroup_size(${WG})
fn main(${GRID_PARAMS}) {
  ${LINEAR_GROUP}
  if (group >= ${u(nb * RB * split)}) { return; }
  ${sgInit}
  let sp = group % ${u(split)};
  let rb = (group / ${u(split)}) % ${u(RB)};
  let b = group / ${u(split * RB)};
  let r = lid / ${u(TPR)};
  let t = lid % ${u(TPR)};
  let e4 = t % ${u(Dv4)};
  let kg = t / ${u(Dv4)};
  let i = rb * ${u(Br)} + r;
  let ok = i < ${u(Sq)};
  let ic = min(i, ${u(Sq - 1)});
  ${batchOffset(a.batch, a.qb, 'qb')}
  ${batchOffset(a.batch, a.kb, 'kbase', kVec ? 4 : 1)}
  ${batchOffset(a.batch, a.vb, 'vb', vVec ? 4 : 1)}
  ${batchOffset(a.batch, a.ob, 'ob')}
  ${maskRow}
  let qrow = qb + ic * ${u(a.qRow)};
  var q: array<vec4f, ${D4}>;
  ${qLoad.join('\n  ')}
  let kbeg = sp * ${u(chunk)};
  let kend = min(kbeg + ${u(chunk)}, ${u(Skv)});
  var m = wj_ninf();
  var l = 0.0;
  var o: array<vec4f, ${NE4}>;
  var sc: array<f32, ${NS}>;
  for (var j0 = kbeg; j0 < kend; j0 += ${u(Bc)}) {
    for (var idx = lid; idx < ${u(Bc * D4)}; idx += ${u(WG)}) {
      let j = ${dFast ? `idx / ${u(D4)}` : `idx % ${u(Bc)}`};
      let x = ${dFast ? `idx % ${u(D4)}` : `idx / ${u(Bc)}`};
      let jg = j0 + j;
      let live = jg < kend;
      let jgc = min(jg, ${u(Skv - 1)});
      ${kTile}
    }
    for (var idx = lid; idx < ${u(Bc * Dv4)}; idx += ${u(WG)}) {
      ${vTile}
    }
    workgroupBarrier();
    var mloc = wj_ninf();
    ${scores.join('\n    ')}
    ${rowReduce(T, useSg, 'max', 'mloc', 'mt', 'rmax')}
    let mnew = max(m, mt);
    // A row with no finite score yet keeps weights 0 (no exp(-inf - -inf)).
    let dead = mnew == wj_ninf();
    let alpha = select(exp(m - mnew), 1.0, dead);
    var lsum = 0.0;
    ${probs.join('\n    ')}
    l = l * alpha + lsum;
    m = mnew;
    ${Array.from({ length: NE4 }, (_, x) => `o[${x}] *= alpha;`).join('\n    ')}
    workgroupBarrier();
    let tn = min(${u(Bc)}, kend - j0);
    ${pv}
    workgroupBarrier();
  }
  ${rowReduce(T, useSg, 'add', 'l', 'lt', 'rsum')}
  ${groupSum}
  if (ok) {
    let orow = ob + i * ${u(a.oRow)};
    let pidx = (b * ${u(Sq)} + i) * ${u(split)} + sp;
    ${writes.join('\n    ')}
    ${split > 1 ? 'if (t == 0u) { ml[pidx] = vec2f(m, lt); }' : ''}
  }
}`;
}

/**
 * The register-tiled kernel's shape: Br query rows per workgroup and tiles of Bc keys; thread (ty, tx) holds the scores
 * of rows 4ty..4ty+3 against TN keys (TN/4 groups of 4 consecutive keys, group tx + TX*c) and the output of the same
 * rows at NC vec4 columns (tx + TX*c). Q, Kᵀ, V and P go through workgroup memory as vec4s, so every multiply-add
 * of a thread's 4×TN (scores) or 4×4NC (P·V) block reuses its operands from registers.
 */
interface Tiled { Br: number; Bc: number; TN: number; TX: number; TY: number; WG: number; D4: number; Dv4: number; NC: number; RB: number }

/** Whether the operands suit the tiled kernel: whole vec4 rows of Q, K (along d) and V, and one part of the keys. */
function tiledFits(a: Attn): boolean {
  const v = vec4Operands(a);
  return v.q && v.k && v.v && v.o;
}

function tiledShape(a: Attn, Br: number, Bc: number, TN: number, budget: number, maxInv: number): Tiled | null {
  if (!tiledFits(a) || !isPow2(Br) || Br < 4 || !isPow2(TN) || TN < 4 || !isPow2(Bc) || Bc < TN) return null;
  const TY = Br / 4, TX = Bc / TN, WG = TX * TY, D4 = a.D / 4, Dv4 = a.Dv / 4, NC = Math.ceil(Dv4 / TX);
  const bytes = (a.D * TY + a.D * (Bc / 4) + Bc * Dv4 + Bc * TY) * 16 + Br * TX * 4;
  if (bytes > budget || WG > maxInv || WG < 32 || NC > 8) return null;
  return { Br, Bc, TN, TX, TY, WG, D4, Dv4, NC, RB: Math.ceil(a.Sq / Br) };
}

/**
 * The tiled kernel's default shape, or null where the row kernel serves better. Measured on the H100 at BERT-base's
 * attention (bench/gpu/attn-lab.ts, bench/results/gpu/h100-attn-lab.txt): 64 rows per workgroup, tiles of 32 keys and
 * 4 keys per thread took 45 µs at batch 8 against the row kernel's 62; every shape with fewer rows per workgroup (more
 * workgroups) or more keys per thread was slower than the row kernel, and at batch 1 (24 such workgroups) the row
 * kernel won by 1.9× or more. So: tiled where 64-row workgroups number 128 or more (tests force it elsewhere with
 * attentionConfig.tiled 'on'), with the first key tiling that fits the device.
 */
function tiledDefault(a: Attn, nb: number, budget: number, maxInv: number): Tiled | null {
  const force = attentionConfig.tiled === 'on';
  if (!tiledFits(a) || (!force && (a.Sq < 16 || nb * Math.ceil(a.Sq / 64) < 128))) return null;
  for (const Br of [64, 32, 16]) {
    for (const [Bc, TN] of [[32, 4], [16, 4], [64, 4], [32, 8]]) {
      const T = tiledShape(a, Br, Bc, TN, budget, maxInv);
      if (T && T.NC <= 4 && (force || Br === 64)) return T;
    }
  }
  return null;
}

function tiledKernel(a: Attn, T: Tiled, nb: number): string {
  const { Sq, Skv, D, Dv } = a;
  const { Br, Bc, TN, TX, TY, WG, D4, Dv4, NC, RB } = T;
  const KG = Bc / 4, CN = TN / 4;
  const decls = [{ name: 'qm', type: 'vec4f' }, { name: 'km', type: 'vec4f' }, { name: 'vm', type: 'vec4f' }];
  if (a.mask) decls.push({ name: 'mm', type: 'f32' });
  const sc = a.scale;
  const cl = sc ? f32Lit(sc.c) : '';
  const scaled = (x: string, on: 'q' | 'scores') => (sc && sc.on === on ? `(${x} ${sc.op === 'Mul' ? '*' : '/'} ${cl})` : x);
  const R = [0, 1, 2, 3];
  const C = Array.from({ length: CN }, (_, c) => c), E = Array.from({ length: NC }, (_, c) => c);
  // 4 rows (or keys) × one vec4 along d, stored as 4 vec4s along the rows (keys), one per d.
  const transpose4 = (dst: string, stride: number, col: string) =>
    R.map((c) => `${dst}[(x * 4u + ${u(c)}) * ${u(stride)} + ${col}] = vec4f(blk[0][${c}], blk[1][${c}], blk[2][${c}], blk[3][${c}]);`).join('\n      ');
  // Scores: s[r * CN + c] holds row r's scores against key group tx + TX*c (4 keys).
  const scoreFma = R.flatMap((r) => C.map((c) => `s[${r * CN + c}] = fma(vec4f(qv[${r}]), k${c}, s[${r * CN + c}]);`));
  const finish: string[] = [];
  for (const r of R) {
    finish.push(`{ let i = min(row0 + ${u(r)}, ${u(Sq - 1)});`);
    if (a.mask) finish.push(`  let mrow = mb + i * ${u(a.mask.row)};`);
    for (const c of C) {
      const k = r * CN + c;
      finish.push(`  { let j = j0 + (tx + ${u(TX * c)}) * 4u;`);
      let v = scaled(`s[${k}]`, 'scores');
      if (a.mask) {
        const mk = (l: number) => a.mask!.key ? `mm[mrow + min(j + ${u(l)}, ${u(Skv - 1)})]` : `mm[mrow]`;
        v = `${v} + vec4f(${R.map(mk).join(', ')})`;
      }
      finish.push(`    let v = ${v};`);
      finish.push(`    s[${k}] = select(vec4f(wj_ninf()), v, j + vec4u(0u, 1u, 2u, 3u) < vec4u(${u(Skv)}));`);
      finish.push(`    mx[${r}] = max(mx[${r}], max(max(s[${k}].x, s[${k}].y), max(s[${k}].z, s[${k}].w))); }`);
    }
    finish.push(`  red[(ty * 4u + ${u(r)}) * ${u(TX)} + tx] = mx[${r}]; }`);
  }
  const probs: string[] = [];
  for (const r of R) {
    probs.push(`{ var mt = red[(ty * 4u + ${u(r)}) * ${u(TX)}];
      for (var q = 1u; q < ${u(TX)}; q++) { mt = max(mt, red[(ty * 4u + ${u(r)}) * ${u(TX)} + q]); }
      let mnew = max(m[${r}], mt);
      // A row with no finite score yet keeps weights 0 (no exp(-inf - -inf)).
      let dead = mnew == wj_ninf();
      let alpha = select(exp(m[${r}] - mnew), 1.0, dead);
      var ls = 0.0;`);
    for (const c of C) probs.push(`  s[${r * CN + c}] = select(exp(s[${r * CN + c}] - vec4f(mnew)), vec4f(0.0), dead); ls += dot(s[${r * CN + c}], vec4f(1.0));`);
    probs.push(`  l[${r}] = l[${r}] * alpha + ls;
      m[${r}] = mnew;`);
    for (const e of E) probs.push(`  o[${r * NC + e}] *= alpha;`);
    probs.push('}');
  }
  // P as [key][row group]: each of the thread's keys gets the vec4 of its 4 rows.
  const pStore = C.flatMap((c) => R.map((l) =>
    `ps[((tx + ${u(TX * c)}) * 4u + ${u(l)}) * ${u(TY)} + ty] = vec4f(s[${c}][${l}], s[${CN + c}][${l}], s[${2 * CN + c}][${l}], s[${3 * CN + c}][${l}]);`));
  const pvFma = E.flatMap((e) => [`let v${e} = vs[j * ${u(Dv4)} + min(tx + ${u(TX * e)}, ${u(Dv4 - 1)})];`,
    ...R.map((r) => `o[${r * NC + e}] = fma(vec4f(pv[${r}]), v${e}, o[${r * NC + e}]);`)]);
  const writes = R.map((r) => `{ let i = row0 + ${u(r)};
    let ok = i < ${u(Sq)};
    var lt = 0.0;
    for (var q = 0u; q < ${u(TX)}; q++) { lt += red[(ty * 4u + ${u(r)}) * ${u(TX)} + q]; }
    if (ok) {
      let orow = ob + i * ${u(a.oRow / 4)};
      ${E.map((e) => { const st = `om[orow + tx + ${u(TX * e)}] = o[${r * NC + e}] / lt;`; return (e + 1) * TX > Dv4 ? `if (tx + ${u(TX * e)} < ${u(Dv4)}) { ${st} }` : st; }).join('\n      ')}
    }
  }`);
  const maskBase = a.mask ? batchOffset(a.batch, a.mask.b, 'mb') : '';
  return `${storageDecls([...decls, { name: 'om', type: 'vec4f', write: true }])}
var<workgroup> qs: array<vec4f, ${D * TY}>;
var<workgroup> ks: array<vec4f, ${D * KG}>;
var<workgroup> vs: array<vec4f, ${Bc * Dv4}>;
var<workgroup> ps: array<vec4f, ${Bc * TY}>;
var<workgroup> red: array<f32, ${Br * TX}>;
fn wj_ninf() -> f32 { var b = 0xff800000u; return bitcast<f32>(b); }
@compute @workgroup_size(${WG})
fn main(${GRID_PARAMS}) {
  ${LINEAR_GROUP}
  if (group >= ${u(nb * RB)}) { return; }
  let rb = group % ${u(RB)};
  let b = group / ${u(RB)};
  let ty = lid / ${u(TX)};
  let tx = lid % ${u(TX)};
  let row0 = rb * ${u(Br)} + ty * 4u;
  ${batchOffset(a.batch, a.qb, 'qb', 4)}
  ${batchOffset(a.batch, a.kb, 'kbase', 4)}
  ${batchOffset(a.batch, a.vb, 'vb', 4)}
  ${batchOffset(a.batch, a.ob, 'ob', 4)}
  ${maskBase}
  // Q's rows of the block, scaled as the reference scales Q, as [d][row group].
  for (var idx = lid; idx < ${u(TY * D4)}; idx += ${u(WG)}) {
    let g = idx / ${u(D4)};
    let x = idx % ${u(D4)};
    var blk: array<vec4f, 4>;
    for (var w = 0u; w < 4u; w++) {
      let i = min(rb * ${u(Br)} + g * 4u + w, ${u(Sq - 1)});
      blk[w] = ${scaled(`qm[qb + i * ${u(a.qRow / 4)} + x]`, 'q')};
    }
    ${transpose4('qs', TY, 'g')}
  }
  var m = array<f32, 4>(wj_ninf(), wj_ninf(), wj_ninf(), wj_ninf());
  var l: array<f32, 4>;
  var o: array<vec4f, ${4 * NC}>;
  for (var j0 = 0u; j0 < ${u(Skv)}; j0 += ${u(Bc)}) {
    // Kᵀ's tile as [d][key group], V's as [key][vec4 column].
    for (var idx = lid; idx < ${u(KG * D4)}; idx += ${u(WG)}) {
      let g = idx / ${u(D4)};
      let x = idx % ${u(D4)};
      var blk: array<vec4f, 4>;
      for (var w = 0u; w < 4u; w++) {
        let j = min(j0 + g * 4u + w, ${u(Skv - 1)});
        blk[w] = km[kbase + j * ${u(a.kKey / 4)} + x];
      }
      ${transpose4('ks', KG, 'g')}
    }
    for (var idx = lid; idx < ${u(Bc * Dv4)}; idx += ${u(WG)}) {
      let j = j0 + idx / ${u(Dv4)};
      vs[idx] = select(vec4f(0.0), vm[vb + min(j, ${u(Skv - 1)}) * ${u(a.vKey / 4)} + idx % ${u(Dv4)}], j < ${u(Skv)});
    }
    workgroupBarrier();
    var s = array<vec4f, ${4 * CN}>();
    for (var d = 0u; d < ${u(D)}; d++) {
      let qv = qs[d * ${u(TY)} + ty];
      ${C.map((c) => `let k${c} = ks[d * ${u(KG)} + tx + ${u(TX * c)}];`).join('\n      ')}
      ${scoreFma.join('\n      ')}
    }
    var mx = array<f32, 4>(wj_ninf(), wj_ninf(), wj_ninf(), wj_ninf());
    ${finish.join('\n    ')}
    workgroupBarrier();
    ${probs.join('\n    ')}
    ${pStore.join('\n    ')}
    workgroupBarrier();
    let tn = min(${u(Bc)}, ${u(Skv)} - j0);
    for (var j = 0u; j < tn; j++) {
      let pv = ps[j * ${u(TY)} + ty];
      ${pvFma.join('\n      ')}
    }
    workgroupBarrier();
  }
  ${R.map((r) => `red[(ty * 4u + ${u(r)}) * ${u(TX)} + tx] = l[${r}];`).join('\n  ')}
  workgroupBarrier();
  ${writes.join('\n  ')}
}`;
}

/** Merges the key parts of each output element: weights exp(m_part - max) (an empty part weighs 0). */
function combineKernel(a: Attn, rows: number, split: number): string {
  const Dv = a.Dv, Dv4 = Math.ceil(Dv / 4);
  const vecOut = vec4Operands(a).o;
  return `${storageDecls([{ name: 'opart', type: 'vec4f' }, { name: 'ml', type: 'vec2f' }, { name: 'om', type: vecOut ? 'vec4f' : 'f32', write: true }])}
fn wj_ninf() -> f32 { var b = 0xff800000u; return bitcast<f32>(b); }
@compute @workgroup_size(256)
fn main(${GRID_PARAMS}) {
  ${LINEAR_GROUP}
  let idx = group * 256u + lid;
  if (idx >= ${u(rows * Dv4)}) { return; }
  let row = idx / ${u(Dv4)};
  let e4 = idx % ${u(Dv4)};
  var mx = wj_ninf();
  for (var s = 0u; s < ${u(split)}; s++) { mx = max(mx, ml[row * ${u(split)} + s].x); }
  var lt = 0.0;
  var acc = vec4f(0.0);
  for (var s = 0u; s < ${u(split)}; s++) {
    let p = row * ${u(split)} + s;
    let w = select(exp(ml[p].x - mx), 0.0, ml[p].y == 0.0);
    lt += ml[p].y * w;
    acc += opart[p * ${u(Dv4)} + e4] * w;
  }
  let b = row / ${u(a.Sq)};
  ${batchOffset(a.batch, a.ob, 'ob')}
  let orow = ob + (row % ${u(a.Sq)}) * ${u(a.oRow)};
  ${storeCols('om', 'orow', 'e4', '(acc / lt)', Dv, vecOut)}
}`;
}

function planAttention(a: Attn, outDims: number[], ctx: GpuPlanContext, ragged: (d: number[][]) => number[][], rowsAt: TuneSite['rowsAt']): GpuOpPlan | null {
  const outputs = [{ dtype: 'float32' as const, dims: outDims }];
  const nb = prod(a.batch);
  if (nb === 0 || a.Sq === 0 || a.Dv === 0) return { outputs, dispatches: [] };
  const budget = Math.min(ctx.caps.maxWorkgroupStorage, 49152);
  const T0 = tilingOf(a, nb, budget);
  if (!T0) return null;
  const sg = ctx.caps.subgroups && attentionConfig.subgroups;
  const TT = attentionConfig.tiled === 'off' ? null : tiledDefault(a, nb, budget, ctx.caps.maxInvocations);
  const def: Params = TT ? { kind: 'tiled', Br: TT.Br, Bc: TT.Bc, TN: TT.TN } : { Br: T0.Br, TPR: T0.TPR, Bc: T0.Bc, split: T0.split };
  const picked = ctx.pick(attentionSite(a, nb, `attention:${JSON.stringify(a)}:sg=${sg}`, def, budget, ctx.caps.maxInvocations, ragged, rowsAt));
  const fault = faultOf(picked);
  const mut = (code: string, main: boolean, last: boolean) => (fault ? attentionFault(code, fault, a, main, last, ctx.caps.f16) : code);
  const ins = [{ input: 0 }, { input: 1 }, { input: 2 }, ...(a.mask ? [{ input: 3 }] : [])];
  if (picked.kind === 'tiled') {
    // A candidate that does not fit this shape (a ragged one) runs the default.
    const TP = tiledShape(a, Number(picked.Br), Number(picked.Bc), Number(picked.TN), budget, ctx.caps.maxInvocations) ?? TT;
    if (TP) {
      attentionConfig.planned.tiled++;
      const groups = grid(nb * TP.RB, ctx.caps.maxWorkgroupsPerDim);
      return { outputs, dispatches: [{ code: mut(tiledKernel(a, TP, nb), true, true), bindings: [...ins, { output: 0 }], groups }] };
    }
  }
  // A candidate that does not fit this shape (a ragged one) or device runs the default tiling.
  const T = forcedTiling(a, withoutFault(picked), budget, ctx.caps.maxInvocations) ?? T0;
  attentionConfig.planned.rows++;
  const groups = grid(nb * T.RB * T.split, ctx.caps.maxWorkgroupsPerDim);
  const main = mut(attentionKernel(a, T, nb, sg), true, T.split === 1);
  if (T.split === 1) return { outputs, dispatches: [{ code: main, bindings: [...ins, { output: 0 }], groups }] };
  const rows = nb * a.Sq;
  const dispatches: Dispatch[] = [
    { code: main, bindings: [...ins, { scratch: 0 }, { scratch: 1 }], groups },
    { code: mut(combineKernel(a, rows, T.split), false, true), bindings: [{ scratch: 0 }, { scratch: 1 }, { output: 0 }], groups: grid(Math.ceil(rows * T.Dv4 / 256), ctx.caps.maxWorkgroupsPerDim) },
  ];
  return { outputs, scratchBytes: [rows * T.split * T.Dv4 * 16, rows * T.split * 8], dispatches };
}

registerGpuOp('FusedAttention', (node, inputs, ctx) => {
  const o = attentionOperands(node, inputs, MAX_D);
  if (!o) return null;
  // The scaling exactly as the reference replays it: one f32 constant, a Mul or Div on Q or on the scores.
  let scale: Attn['scale'];
  const st = o.scaleTensor;
  if (st) {
    if (st.type !== 'float32' || st.size !== 1 || (o.scaleOp !== 'Mul' && o.scaleOp !== 'Div') || (o.scaleOn !== 'q' && o.scaleOn !== 'scores')) return null;
    scale = { op: o.scaleOp, on: o.scaleOn, c: (st.data as Float32Array)[0] };
  }
  const { batch, Sq, Skv, D, Dv, qb, kb, kKey, kD, vb, qRow, vKey, ob, oRow, mask } = o;
  return planAttention({ batch, Sq, Skv, D, Dv, qb, kb, kKey, kD, vb, qRow, vKey, ob, oRow, mask, scale }, o.outDims, ctx, attentionRagged(node), attentionRows(node));
});

/**
 * The dispatches of an attention case with forced parameters (bench/gpu/attn-lab.ts): BERT-style operands given as
 * Q [..., Sq, D], K as [..., Skv, D] (read as Kᵀ), V [..., Skv, Dv], an optional key mask per batch row.
 */
export function attentionLabPlan(shape: { batch: number[]; Sq: number; Skv: number; D: number; mask: boolean; scale: number },
  params: Params | null, caps: GpuPlanContext['caps']): GpuOpPlan | null {
  const { batch, Sq, Skv, D } = shape;
  const str = (rows: number) => batch.map((_, i) => prod(batch.slice(i + 1)) * rows * D);
  const a: Attn = {
    batch, Sq, Skv, D, Dv: D, qb: str(Sq), kb: str(Skv), kKey: D, kD: 1, vb: str(Skv), qRow: D, vKey: D, ob: str(Sq), oRow: D,
    mask: shape.mask ? { b: batch.map((_, i) => (i === 0 ? Skv : 0)), row: 0, key: 1 } : undefined,
    scale: { op: 'Div', on: 'scores', c: shape.scale },
  };
  const ctx = { caps, f16: false, pick: (s: TuneSite) => params ?? s.default } as unknown as GpuPlanContext;
  return planAttention(a, [...batch, Sq, D], ctx, (d) => d, undefined);
}
