// WebGPU webjit.FusedAttention (from graph/fuse_attention.ts) as one flash-attention kernel: per (batch, block of query
// rows) a workgroup streams K/V tiles through workgroup memory with an online softmax, never holding the score matrix;
// few long rows (decoding against a KV cache) split the keys over workgroups and combine the parts in a second kernel.
import { GRID_PARAMS, LINEAR_GROUP, f32Lit, grid, registerGpuOp, storageDecls, type Dispatch, type GpuOpPlan, type GpuPlanContext } from '../kernel.js';
import { attentionOperands } from '../../attention_operands.js';
import type { Node } from '../../../graph/ir.js';
import { enumerate, raggedSize, spaceSize, withDefault, type Params, type TuneSite } from '../../../tune/site.js';
import { FMA_ASSIGN, dropBarrier, f16Accumulate, faultOf, replaceAll, replaceFirst, withoutFault } from '../faults.js';

/** Tests force the key split (`split`: parts, 0 = automatic) and turn subgroups off to exercise every path. */
export const attentionConfig = { split: 0, subgroups: true };

const u = (n: number): string => `${n}u`;
const np2 = (n: number): number => 2 ** Math.ceil(Math.log2(Math.max(1, n)));
const prod = (d: readonly number[]): number => d.reduce((a, b) => a * b, 1);


/** Element strides of the operands (Q, V and the output have contiguous rows: Q's row stride is D, V's key stride Dv). */
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
/** Scores a thread keeps in registers (Bc / TPR). */
const MAX_NS = 16;

/**
 * The attention site: Br query rows and TPR threads per row per workgroup, Bc keys per tile, `split` parts of the keys
 * (decode). Pruned: rows past the queries, tiles past the keys, workgroups outside [32, maxInvocations] threads or
 * the workgroup memory, more than MAX_NS scores per thread, splits where the workgroups already fill the device or a
 * part would get no whole tile.
 */
function attentionSite(a: Attn, nb: number, sig: string, def: Params, budget: number, maxInv: number,
  ragged: (d: number[][]) => number[][]): TuneSite {
  return {
    family: 'attention', sig, default: def, ragged, rowsAt: attentionRows,
    space: () => {
      const cands = enumerate(ATTN_AXES, (p) => {
        const Br = Number(p.Br), TPR = Number(p.TPR), Bc = Number(p.Bc), split = Number(p.split);
        if (Br > np2(a.Sq) || Bc > Math.max(16, np2(a.Skv)) || Bc % TPR !== 0 || Bc / TPR > MAX_NS) return false;
        if (Br * TPR < 32 || Br * TPR > maxInv || tileShape(a, Br, TPR, Bc).bytes > budget) return false;
        return split === 1 || (nb * Math.ceil(a.Sq / Br) < 128 && split <= Math.ceil(a.Skv / Bc));
      });
      return { candidates: withDefault(def, cands), before: spaceSize(ATTN_AXES) };
    },
  };
}

/**
 * FusedAttention's inputs at ragged query and key counts (heads, batch and head sizes kept): Q [.., Sq, D], K (or Kᵀ
 * through k_perm), V [.., Skv, Dv], the mask's key and row axes.
 */
function attentionRagged(node: Node): (d: number[][]) => number[][] {
  return (d) => {
    const [q, k, v, m] = d;
    const Sq = q[q.length - 2], Skv = v[v.length - 2];
    const Sq2 = raggedSize(Sq), Skv2 = raggedSize(Skv);
    const set = (x: number[], i: number, n: number) => { const y = [...x]; y[i] = n; return y; };
    let k2: number[];
    if (node.attrs.get('transpose_k')?.value === 1) {
      const r = k.length;
      const perm = (node.attrs.get('k_perm')?.value as number[] | undefined) ?? [...Array(r).keys()].reverse();
      k2 = set(k, perm[r - 1], Skv2);
    } else k2 = set(k, k.length - 1, Skv2);
    const out = [set(q, q.length - 2, Sq2), k2, set(v, v.length - 2, Skv2)];
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
function attentionRows(d: number[][], R: number): { dims: number[][]; macs: number } {
  const [q, , v, m] = d;
  const out = d.map((x) => [...x]);
  out[0][q.length - 2] = R;
  if (m && m.length >= 2 && m[m.length - 2] !== 1) out[3][m.length - 2] = R;
  return { dims: out, macs: (prod(q) / q[q.length - 1]) * v[v.length - 2] * (q[q.length - 1] + v[v.length - 1]) };
}

/**
 * Plants a fault (faults.ts): edge, the last query row is not written (guard i < Sq-1); barrier, the barrier between
 * loading a K/V tile and reading it; epilogue, the mask index one off (no mask: the output index); f16acc, the output
 * accumulators rounded to f16 after every fma.
 */
function attentionFault(code: string, fault: string, a: Attn, main: boolean, last: boolean, hasF16: boolean): string {
  switch (fault) {
    case 'edge': return main ? replaceFirst(code, `let ok = i < ${a.Sq}u;`, `let ok = i + 1u < ${a.Sq}u;`, 'query row guard') : code;
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
  const qVec = D % 4 === 0;
  const kVec = a.kD === 1 && D % 4 === 0 && a.kKey % 4 === 0 && a.kb.every((x) => x % 4 === 0);
  const vVec = Dv % 4 === 0;
  const decls = [{ name: 'qm', type: qVec ? 'vec4f' : 'f32' }, { name: 'km', type: kVec ? 'vec4f' : 'f32' }, { name: 'vm', type: vVec ? 'vec4f' : 'f32' }];
  if (a.mask) decls.push({ name: 'mm', type: 'f32' });
  const outs = split > 1
    ? [{ name: 'opart', type: 'vec4f', write: true }, { name: 'ml', type: 'vec2f', write: true }]
    : [{ name: 'om', type: vVec ? 'vec4f' : 'f32', write: true }];
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
    ? `let g = j0 * ${u(Dv4)} + idx;
      vs[idx] = select(vec4f(0.0), vm[vb + min(g, ${u(Skv * Dv4 - 1)})], g < kend * ${u(Dv4)});`
    : `let jg = j0 + idx / ${u(Dv4)};
      let e = (idx % ${u(Dv4)}) * 4u;
      let row = vb + min(jg, ${u(Skv - 1)}) * ${u(Dv)};
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
    const st = split > 1 ? `opart[pidx * ${u(Dv4)} + ${e4}] = o[${x}];` : storeCols('om', 'orow', e4, `(o[${x}] / lt)`, Dv, vVec);
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
  ${maskRow}
  let qrow = qb + ic * ${u(D)};
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
    let orow = (b * ${u(Sq)} + i) * ${u(Dv)};
    let pidx = (b * ${u(Sq)} + i) * ${u(split)} + sp;
    ${writes.join('\n    ')}
    ${split > 1 ? 'if (t == 0u) { ml[pidx] = vec2f(m, lt); }' : ''}
  }
}`;
}

/** Merges the key parts of each output element: weights exp(m_part - max) (an empty part weighs 0). */
function combineKernel(rows: number, split: number, Dv: number): string {
  const Dv4 = Math.ceil(Dv / 4);
  const vecOut = Dv % 4 === 0;
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
  let orow = row * ${u(Dv)};
  ${storeCols('om', 'orow', 'e4', '(acc / lt)', Dv, vecOut)}
}`;
}

function planAttention(a: Attn, outDims: number[], ctx: GpuPlanContext, ragged: (d: number[][]) => number[][]): GpuOpPlan | null {
  const outputs = [{ dtype: 'float32' as const, dims: outDims }];
  const nb = prod(a.batch);
  if (nb === 0 || a.Sq === 0 || a.Dv === 0) return { outputs, dispatches: [] };
  const budget = Math.min(ctx.caps.maxWorkgroupStorage, 49152);
  const T0 = tilingOf(a, nb, budget);
  if (!T0) return null;
  const sg = ctx.caps.subgroups && attentionConfig.subgroups;
  const def: Params = { Br: T0.Br, TPR: T0.TPR, Bc: T0.Bc, split: T0.split };
  const picked = ctx.pick(attentionSite(a, nb, `attention:${JSON.stringify(a)}:sg=${sg}`, def, budget, ctx.caps.maxInvocations, ragged));
  const fault = faultOf(picked);
  // A candidate that does not fit this shape (a ragged one) or device runs the default tiling.
  const T = forcedTiling(a, withoutFault(picked), budget, ctx.caps.maxInvocations) ?? T0;
  const mut = (code: string, main: boolean, last: boolean) => (fault ? attentionFault(code, fault, a, main, last, ctx.caps.f16) : code);
  const ins = [{ input: 0 }, { input: 1 }, { input: 2 }, ...(a.mask ? [{ input: 3 }] : [])];
  const groups = grid(nb * T.RB * T.split, ctx.caps.maxWorkgroupsPerDim);
  const main = mut(attentionKernel(a, T, nb, sg), true, T.split === 1);
  if (T.split === 1) return { outputs, dispatches: [{ code: main, bindings: [...ins, { output: 0 }], groups }] };
  const rows = nb * a.Sq;
  const dispatches: Dispatch[] = [
    { code: main, bindings: [...ins, { scratch: 0 }, { scratch: 1 }], groups },
    { code: mut(combineKernel(rows, T.split, a.Dv), false, true), bindings: [{ scratch: 0 }, { scratch: 1 }, { output: 0 }], groups: grid(Math.ceil(rows * T.Dv4 / 256), ctx.caps.maxWorkgroupsPerDim) },
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
  const { batch, Sq, Skv, D, Dv, qb, kb, kKey, kD, vb, mask } = o;
  return planAttention({ batch, Sq, Skv, D, Dv, qb, kb, kKey, kD, vb, mask, scale }, [...batch, Sq, Dv], ctx, attentionRagged(node));
});
