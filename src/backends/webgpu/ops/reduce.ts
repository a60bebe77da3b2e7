// WebGPU reductions and normalizations: Reduce*, ArgMax/ArgMin, Softmax/LogSoftmax, Layer/RMS/InstanceNormalization as
// row kernels (threads of a row walk contiguous memory, then combine through subgroups or workgroup memory), and
// inference BatchNormalization as one thread per element.
import type { Node } from '../../../graph/ir.js';
import { sizeOf, type DType } from '../../../tensor.js';
import { GRID_PARAMS, LINEAR_GROUP, f32Lit, grid, i32Lit, registerGpuOp, storageDecls, type Dispatch, type GpuOpPlan, type GpuPlanContext,
  type GpuValueDesc } from '../kernel.js';
import { type ParamMode, reduceAxes, reduceShape, rowParam, wantedOutputs } from '../../op_attrs.js';
import { enumerate, raggedSize, spaceSize, withDefault, type Fault, type Params, type TuneSite } from '../../../tune/site.js';
import { dropBarrier, faultOf, replaceAll, replaceFirst, withF16Helpers, withoutFault } from '../faults.js';
import { nodeSig, raggedBroadcast, raggedKeep4 } from '../sites.js';

/** Tests turn subgroup reductions off to exercise the workgroup-memory path on a device that has subgroups. */
export const reduceConfig = { subgroups: true };

const attrI = (n: Node, name: string, d: number): number => { const a = n.attrs.get(name); return a && a.type === 'int' ? (a.value as number) : d; };
const attrF = (n: Node, name: string, d: number): number => {
  const a = n.attrs.get(name);
  return a && (a.type === 'float' || a.type === 'int') ? (a.value as number) : d;
};
const np2 = (n: number): number => 2 ** Math.ceil(Math.log2(Math.max(1, n)));
const u = (n: number): string => `${n}u`;

// ±Inf and NaN are not representable in WGSL constant expressions (f32Lit's bitcast of them is rejected at shader
// creation), so they come from a load of a `var`, which is a runtime value.
const SPECIALS = `fn wj_ninf() -> f32 { var b = 0xff800000u; return bitcast<f32>(b); }
fn wj_pinf() -> f32 { var b = 0x7f800000u; return bitcast<f32>(b); }
fn wj_qnan() -> f32 { var b = 0x7fc00000u; return bitcast<f32>(b); }`;

// --- Row layout ------------------------------------------------------------------------------------

interface Level { n: number; stride: number }

/**
 * How independent reductions (rows) over a dense tensor map to workgroups. Dims of the same kind (kept or reduced)
 * merge into levels; strides and counts are in units of `vec` elements. `inner`: the innermost level is reduced, so a
 * row's threads (TR of them, `tr` fastest) read consecutive elements, TJ rows per workgroup. Otherwise rows are
 * adjacent in memory and the TJ rows of a workgroup (`tj` fastest) are consecutive elements of the innermost kept level,
 * each row's elements split over TR threads. With few workgroups and long rows, `split` workgroups share a row, each
 * reducing `chunk` of its (vec) elements; a second kernel combines the parts.
 */
interface Layout {
  rows: number;
  /** Elements per row, and in vec units. */
  count: number;
  cv: number;
  vec: 1 | 4;
  kept: Level[];
  red: Level[];
  inner: boolean;
  TJ: number;
  TR: number;
  WG: number;
  /** Column layout: rows per run of the innermost kept level. */
  Bj: number;
  split: number;
  chunk: number;
  groups: number;
}

/** Workgroups worth having in flight before splitting rows (a few per streaming multiprocessor of a large GPU). */
const TARGET_GROUPS = 1024;
/** Vec elements per thread: enough loads in flight, little per-workgroup overhead. */
const PER_THREAD = 8;

/** Forced layout parameters (a tuning candidate): threads per row, rows per workgroup, vector width, split parts. */
interface LayoutForce { TR: number; TJ: number; vec: number; split: number }

function layoutOf(dims: readonly number[], reduced: readonly boolean[], allowVec: boolean, maxSplit = 0, force?: LayoutForce): Layout {
  const runs: { n: number; red: boolean }[] = [];
  dims.forEach((d, i) => {
    if (d === 1) return;
    const last = runs[runs.length - 1];
    if (last && last.red === reduced[i]) last.n *= d; else runs.push({ n: d, red: reduced[i] });
  });
  const strides: number[] = [];
  for (let i = runs.length - 1, s = 1; i >= 0; i--) { strides[i] = s; s *= runs[i].n; }
  const inner = runs.length === 0 || runs[runs.length - 1].red;
  const vec: 1 | 4 = inner && allowVec && runs.length > 0 && runs[runs.length - 1].n % 4 === 0 && (!force || force.vec === 4) ? 4 : 1;
  const lv = runs.map((r, i) => ({ n: r.n, stride: strides[i] / vec, red: r.red }));
  if (vec === 4) lv[lv.length - 1] = { ...lv[lv.length - 1], n: lv[lv.length - 1].n / 4, stride: 1 };
  const kept = lv.filter((l) => !l.red).map(({ n, stride }) => ({ n, stride }));
  const red = lv.filter((l) => l.red).map(({ n, stride }) => ({ n, stride }));
  const rows = kept.reduce((a, l) => a * l.n, 1);
  const cv = red.reduce((a, l) => a * l.n, 1);
  let TJ: number, TR: number, Bj: number, base: number;
  if (inner) {
    TR = Math.min(256, np2(Math.ceil(cv / PER_THREAD)));
    TJ = TR >= 32 ? 1 : Math.min(64 / TR, np2(rows));
    Bj = rows;
    base = Math.ceil(rows / TJ);
  } else {
    Bj = kept[kept.length - 1].n;
    TJ = Math.min(64, np2(Bj));
    TR = Math.min(256 / TJ, np2(Math.ceil(cv / PER_THREAD)));
    base = (rows / Bj) * Math.ceil(Bj / TJ);
  }
  if (force) {
    // A candidate's threads and rows per workgroup replace the heuristic's (the row walk works for any powers of 2).
    TR = force.TR;
    TJ = force.TJ;
    base = inner ? Math.ceil(rows / TJ) : (rows / Bj) * Math.ceil(Bj / TJ);
  }
  let split = 1, chunk = cv;
  const ni = Math.ceil(cv / TR);
  if (force) {
    if (maxSplit > 1 && force.split > 1) {
      chunk = Math.ceil(cv / Math.min(force.split, maxSplit, cv));
      split = Math.ceil(cv / chunk);
    }
  } else if (maxSplit > 1 && base < TARGET_GROUPS / 4 && ni > 2 * PER_THREAD) {
    split = Math.min(maxSplit, Math.ceil(TARGET_GROUPS / base), Math.ceil(ni / PER_THREAD));
    chunk = Math.ceil(cv / split);
    split = Math.ceil(cv / chunk);
  }
  return { rows, count: cv * vec, cv, vec, kept, red, inner, TJ, TR, WG: TJ * TR, Bj, split, chunk, groups: base * split };
}

/** WGSL lines that set `name` to the offset of flat index `v` decomposed over `levels` (outermost first). */
function offsetOf(levels: Level[], v: string, name: string): string {
  if (levels.length === 0) return `let ${name} = 0u;`;
  if (levels.length === 1) return `let ${name} = ${levels[0].stride === 1 ? v : `${v} * ${u(levels[0].stride)}`};`;
  const lines = [`var ${name}_r = ${v};`, `var ${name} = 0u;`];
  for (let l = levels.length - 1; l > 0; l--) {
    lines.push(`${name} += (${name}_r % ${u(levels[l].n)}) * ${u(levels[l].stride)};`, `${name}_r = ${name}_r / ${u(levels[l].n)};`);
  }
  lines.push(`${name} += ${name}_r * ${u(levels[0].stride)};`);
  return lines.join('\n  ');
}

/** How partial results combine: WGSL type, identity, binary combine and the subgroup-wide combine. */
interface Combine {
  type: string;
  identity: string;
  op: (a: string, b: string) => string;
  sub: (v: string) => string;
  fns?: string;
  /** Helpers of `sub` (they need `enable subgroups`, so only subgroup kernels include them). */
  subFns?: string;
}

const SUM_F: Combine = { type: 'f32', identity: '0.0', op: (a, b) => `(${a} + ${b})`, sub: (v) => `subgroupAdd(${v})` };
const SUM_I: Combine = { type: 'i32', identity: '0', op: (a, b) => `(${a} + ${b})`, sub: (v) => `subgroupAdd(${v})` };
const PROD_F: Combine = { type: 'f32', identity: '1.0', op: (a, b) => `(${a} * ${b})`, sub: (v) => `subgroupMul(${v})` };
const PROD_I: Combine = { type: 'i32', identity: '1', op: (a, b) => `(${a} * ${b})`, sub: (v) => `subgroupMul(${v})` };
// ReduceMax/Min propagate NaN as the reference does (WGSL's max/min leave NaN implementation-defined).
const MAX_F: Combine = {
  type: 'f32', identity: 'wj_ninf()', op: (a, b) => `wj_fmax(${a}, ${b})`,
  sub: (v) => `select(subgroupMax(${v}), wj_qnan(), subgroupAny(${v} != ${v}))`,
  fns: 'fn wj_fmax(a: f32, b: f32) -> f32 { return select(max(a, b), a + b, a != a || b != b); }',
};
const MIN_F: Combine = {
  type: 'f32', identity: 'wj_pinf()', op: (a, b) => `wj_fmin(${a}, ${b})`,
  sub: (v) => `select(subgroupMin(${v}), wj_qnan(), subgroupAny(${v} != ${v}))`,
  fns: 'fn wj_fmin(a: f32, b: f32) -> f32 { return select(min(a, b), a + b, a != a || b != b); }',
};
const MAX_I: Combine = { type: 'i32', identity: i32Lit(-2147483648), op: (a, b) => `max(${a}, ${b})`, sub: (v) => `subgroupMax(${v})` };
const MIN_I: Combine = { type: 'i32', identity: i32Lit(2147483647), op: (a, b) => `min(${a}, ${b})`, sub: (v) => `subgroupMin(${v})` };
/** (max, Σ exp(x - max)) pairs; a zero sum (an empty part) adds nothing even when both maxima are -inf. */
const LSE: Combine = {
  type: 'vec2f', identity: 'vec2f(wj_ninf(), 0.0)', op: (a, b) => `wj_lse(${a}, ${b})`,
  sub: (v) => `wj_lse_sub(${v})`,
  subFns: `fn wj_lse_sub(v: vec2f) -> vec2f {
  let m = subgroupMax(v.x);
  return vec2f(m, subgroupAdd(select(0.0, v.y * exp(v.x - m), v.y != 0.0)));
}`,
  fns: `fn wj_lse(a: vec2f, b: vec2f) -> vec2f {
  let m = max(a.x, b.x);
  return vec2f(m, select(0.0, a.y * exp(a.x - m), a.y != 0.0) + select(0.0, b.y * exp(b.x - m), b.y != 0.0));
}`,
};

/** ArgMax/ArgMin partials: (order key, index); NaN has the top key; ties go to the first (or last) index. */
function argCombine(last: boolean): Combine {
  const cmp = last ? '>' : '<';
  return {
    type: 'vec2u', identity: `vec2u(0u, ${last ? '0u' : '0xffffffffu'})`, op: (a, b) => `wj_arg(${a}, ${b})`,
    sub: (v) => `wj_arg_sub(${v})`,
    subFns: `fn wj_arg_sub(v: vec2u) -> vec2u {
  let k = subgroupMax(v.x);
  return vec2u(k, subgroup${last ? 'Max' : 'Min'}(select(${last ? '0u' : '0xffffffffu'}, v.y, v.x == k)));
}`,
    fns: `fn wj_arg(a: vec2u, b: vec2u) -> vec2u { return select(a, b, b.x > a.x || (b.x == a.x && b.y ${cmp} a.y)); }`,
  };
}

/** Builds a row kernel: thread coordinates, element loops and reductions over a Layout. */
class RowGen {
  private readonly wgVars: string[] = [];
  private readonly fnSet = new Set<string>([SPECIALS]);
  private nRed = 0;
  /** Subgroup reductions serve when one row spans the whole workgroup. */
  readonly sg: boolean;
  /** Loop trips per thread over its part of a row. */
  readonly NI: number;

  constructor(readonly L: Layout, subgroups: boolean) {
    this.sg = subgroups && L.TJ === 1 && L.TR > 1;
    this.NI = Math.ceil(L.chunk / L.TR);
  }

  fn(code: string | undefined): void { if (code) this.fnSet.add(code); }

  /** Thread coordinates, `row` (clamped: `rowc`), `ok` (a real row), `part` (of a split row) and `base` (row start). */
  head(): string {
    const L = this.L;
    const lines = [LINEAR_GROUP, `if (group >= ${u(L.groups)}) { return; }`];
    if (this.sg) {
      // Each subgroup claims a slot for its partial results: no assumption on how invocations map to subgroups.
      this.wgVars.push('var<workgroup> wj_nsg: atomic<u32>;');
      lines.push('var wj_slot0 = 0u;', 'let wj_leader = subgroupElect();', 'if (wj_leader) { wj_slot0 = atomicAdd(&wj_nsg, 1u); }',
        'let wj_slot = subgroupBroadcastFirst(wj_slot0);');
    }
    lines.push(...(L.split > 1 ? [`let part = group % ${u(L.split)};`, `let gq = group / ${u(L.split)};`] : ['let part = 0u;', 'let gq = group;']));
    if (L.inner) {
      lines.push(`let tr = lid % ${u(L.TR)};`, `let tj = lid / ${u(L.TR)};`, `let row = gq * ${u(L.TJ)} + tj;`,
        `let ok = row < ${u(L.rows)};`, `let rowc = min(row, ${u(L.rows - 1)});`);
    } else {
      const njb = Math.ceil(L.Bj / L.TJ);
      lines.push(`let tj = lid % ${u(L.TJ)};`, `let tr = lid / ${u(L.TJ)};`, `let j = (gq % ${u(njb)}) * ${u(L.TJ)} + tj;`,
        `let ok = j < ${u(L.Bj)};`, `let row = (gq / ${u(njb)}) * ${u(L.Bj)} + j;`,
        `let rowc = (gq / ${u(njb)}) * ${u(L.Bj)} + min(j, ${u(L.Bj - 1)});`);
    }
    lines.push(offsetOf(L.kept, 'rowc', 'base'));
    return lines.join('\n  ');
  }

  /**
   * The thread's elements: `body(k, a)` gives `load`, run for every trip (k clamped into the row, so loads need no
   * branch and can all be in flight at once), and `use`, run only for real elements (and real rows, with `writes`).
   * k is the element's vec index in its row, a its vec offset in the tensor.
   */
  each(body: (k: string, a: string) => { load?: string; use: string }, writes = false): string {
    const L = this.L;
    const conds: string[] = [];
    let kLine: string;
    if (L.split > 1) {
      kLine = `let kk = tr + i * ${u(L.TR)}; let k = part * ${u(L.chunk)} + kk;`;
      if (L.chunk % L.TR !== 0) conds.push(`kk < ${u(L.chunk)}`);
      if (L.chunk * L.split !== L.cv) conds.push(`k < ${u(L.cv)}`);
    } else {
      kLine = `let k = tr + i * ${u(L.TR)};`;
      if (L.cv % L.TR !== 0) conds.push(`k < ${u(L.cv)}`);
    }
    const clamp = conds.length > 0;
    if (writes) conds.push('ok');
    const { load, use } = body('k', 'a');
    return `for (var i = 0u; i < ${u(this.NI)}; i++) {
    ${kLine}${clamp ? `\n    let kc = min(k, ${u(L.cv - 1)});` : ''}
    ${offsetOf(L.red, clamp ? 'kc' : 'k', 'off')}
    let a = base + off;
    ${load ?? ''}
    ${conds.length ? `if (${conds.join(' && ')}) {\n      ${use}\n    }` : use}
  }`;
  }

  /** Combines `v` over the threads of each row; every thread of the row gets the result in `out`. */
  reduce(c: Combine, v: string, out: string): string {
    const L = this.L;
    this.fn(c.fns);
    if (L.TR === 1) return `let ${out} = ${v};`;
    const arr = `wj_red${this.nRed++}`;
    if (this.sg) {
      this.fn(c.subFns);
      this.wgVars.push(`var<workgroup> ${arr}: array<${c.type}, ${Math.max(1, L.WG / 4)}>;`);
      // Every subgroup claimed its slot before the barrier, so the count is final after it.
      return `let ${out}_s = ${c.sub(v)};
  if (wj_leader) { ${arr}[wj_slot] = ${out}_s; }
  workgroupBarrier();
  let ${out}_n = atomicLoad(&wj_nsg);
  var ${out} = ${arr}[0];
  for (var q = 1u; q < ${out}_n; q++) { ${out} = ${c.op(out, `${arr}[q]`)}; }`;
    }
    // Two levels, two barriers (a tree takes log2(TR)): G threads per row combine R slots each, then every thread
    // combines the G results. A row's slot of thread t is first + t * step (tr fastest: step 1; tj fastest: step TJ).
    const G = 2 ** Math.floor(Math.log2(L.TR) / 2), R = L.TR / G;
    const step = L.inner ? 1 : L.TJ;
    const first = L.inner ? `tj * ${u(L.TR)}` : 'tj';
    this.wgVars.push(`var<workgroup> ${arr}: array<${c.type}, ${L.WG}>;`, `var<workgroup> ${arr}_g: array<${c.type}, ${L.TJ * G}>;`);
    const slot = (t: string) => `${arr}[${first} + (${t}) * ${u(step)}]`;
    return `${arr}[lid] = ${v};
  workgroupBarrier();
  if (tr < ${u(G)}) {
    var t = ${slot(`tr * ${u(R)}`)};
    for (var q = 1u; q < ${u(R)}; q++) { t = ${c.op('t', slot(`tr * ${u(R)} + q`))}; }
    ${arr}_g[tj * ${u(G)} + tr] = t;
  }
  workgroupBarrier();
  var ${out} = ${arr}_g[tj * ${u(G)}];
  for (var q = 1u; q < ${u(G)}; q++) { ${out} = ${c.op(out, `${arr}_g[tj * ${u(G)} + q]`)}; }`;
  }

  /** The whole shader around `body`; `decls` are the storage bindings. */
  text(decls: string, body: string): string {
    const head = this.head();
    return `${this.sg ? 'enable subgroups;\n' : ''}${decls}
${this.wgVars.join('\n')}
${[...this.fnSet].join('\n')}
@compute @workgroup_size(${this.L.WG})
fn main(${GRID_PARAMS}) {
  ${head}
  ${body}
}`;
  }
}

/** Lanes of a vec element as scalar expressions. */
const lanes = (x: string, vec: 1 | 4): string[] => (vec === 1 ? [x] : ['x', 'y', 'z', 'w'].map((c) => `${x}.${c}`));
const hsum = (x: string, vec: 1 | 4): string => (vec === 1 ? x : `dot(${x}, vec4f(1.0))`);
const useSubgroups = (ctx: GpuPlanContext): boolean => ctx.caps.subgroups && reduceConfig.subgroups;
const groupsOf = (n: number, ctx: GpuPlanContext): [number, number, number] => grid(n, ctx.caps.maxWorkgroupsPerDim);

// --- Tuning ---------------------------------------------------------------------------------------

const ROW_AXES = { TR: [1, 4, 16, 32, 64, 128, 256], TJ: [1, 2, 4, 8, 16, 64], vec: [1, 4], split: [1, 4, 16, 64] };
const isPow2 = (n: number): boolean => Number.isInteger(n) && n >= 1 && (n & (n - 1)) === 0;

/**
 * The row layout of a reduction, Softmax or normalization as a tuning site ('reduce'): threads per row TR, rows per
 * workgroup TJ, vector width, split parts of long rows (only ops with a split pass). Pruned: workgroups outside
 * [32, maxInvocations] threads, more threads per row than a quarter of the row's elements (min 1), more rows per
 * workgroup than rows, vec4 where the innermost reduced run is not a multiple of 4, splits of rows too short for them.
 * A forced candidate that does not fit runs the default. Returns the layout and the fault to plant.
 */
function rowLayout(node: Node, inputs: (GpuValueDesc | undefined)[], ctx: GpuPlanContext, dims: readonly number[], reduced: readonly boolean[],
  allowVec: boolean, maxSplit: number, ragged: (d: number[][]) => number[][]): { L: Layout; fault?: Fault } {
  const L0 = layoutOf(dims, reduced, allowVec, maxSplit);
  const def: Params = { TR: L0.TR, TJ: L0.TJ, vec: L0.vec, split: L0.split };
  const maxInv = ctx.caps.maxInvocations;
  const site: TuneSite = {
    family: 'reduce',
    sig: nodeSig('reduce', node, inputs, `reduced=${reduced.map(Number).join('')}:sg=${useSubgroups(ctx)}`),
    default: def,
    ragged,
    space: () => {
      const cands = enumerate(ROW_AXES, (p) => {
        const TR = Number(p.TR), TJ = Number(p.TJ), vec = Number(p.vec), split = Number(p.split);
        if (TR * TJ < 32 || TR * TJ > maxInv) return false;
        if (vec === 4 && L0.vec !== 4) return false;
        const cv = L0.count / vec;
        if (TR > Math.max(1, np2(Math.ceil(cv / 4))) || TJ > np2(L0.inner ? L0.rows : L0.Bj)) return false;
        return split === 1 || (maxSplit > 1 && split <= maxSplit && cv / split >= 2 * TR * PER_THREAD);
      });
      return { candidates: withDefault(def, cands), before: spaceSize(ROW_AXES) };
    },
  };
  const picked = ctx.pick(site);
  const fault = faultOf(picked);
  const p = withoutFault(picked);
  let f: LayoutForce = { TR: Number(p.TR), TJ: Number(p.TJ), vec: Number(p.vec), split: Number(p.split) };
  if (!isPow2(f.TR) || !isPow2(f.TJ) || f.TR * f.TJ > maxInv || !(f.split >= 1) || (f.vec !== 1 && f.vec !== 4)) f = { ...def } as unknown as LayoutForce;
  // The barrier fault gets rows of 32 threads (a layout of one thread per row has no barrier, and a row of a few
  // threads fits in one SIMD chunk of lavapipe, which then needs none).
  if (fault === 'barrier' && f.TR < 32) f = { ...f, TR: 32, TJ: 1 };
  const same = f.TR === L0.TR && f.TJ === L0.TJ && f.vec === L0.vec && f.split === L0.split;
  return { L: same ? L0 : layoutOf(dims, reduced, allowVec, maxSplit, f), fault };
}

/** Ragged dims of a one-input row op (other inputs, e.g. an axes list, kept; the innermost axis stays vec4 if it was). */
const raggedFirst = (d: number[][]): number[][] => [d[0].map((n, i) => (i === d[0].length - 1 ? raggedKeep4(n) : raggedSize(n))), ...d.slice(1)];

/**
 * Plants a fault in a row kernel (faults.ts): edge, the last row is not written (guard row < rows-1); barrier, the
 * first barrier of the workgroup combine (partials read before every thread stored them); epilogue, the scale (gamma)
 * index one off (no per-row scale: the output index); f16acc, the running sums (and maxima) rounded to f16 each step.
 * `first`: the dispatch that reduces the elements; `last`: the one that writes y.
 */
function rowFault(code: string, fault: Fault, first: boolean, last: boolean, hasF16: boolean): string {
  switch (fault) {
    case 'edge': return last ? replaceFirst(code, /let ok = (\w+) < (\d+)u;/, 'let ok = $1 + 1u < $2u;', 'row guard') : code;
    case 'barrier': return first ? dropBarrier(code, 0) : code;
    case 'epilogue':
      if (!last) return code;
      if (/\bsc\[(?!0\])/.test(code)) return replaceAll(code, /\bsc\[([^\]]+)\]/g, 'sc[($1) + 1u]', 'scale index');
      return replaceAll(code, /\by\[([^\]\n]+)\] = /g, 'y[$1 + 1u] = ', 'output index');
    case 'f16acc': {
      if (!first) return code;
      const acc = /var acc: (\w+) =/.exec(code)?.[1];
      if (acc && acc !== 'f32' && acc !== 'vec2f') throw new Error(`f16acc: no f16 form of a ${acc} accumulation`);
      let out = code;
      if (acc) out = replaceAll(out, /\bacc = ([^;\n]*);/g, `acc = wj_h${acc === 'f32' ? 1 : 2}($1);`, 'accumulator');
      out = out.replace(/\b(s|sum|sq) \+= ([^;\n]*);/g, '$1 = wj_h1($1 + ($2));');
      if (out === code) throw new Error('fault injection: no accumulation in the generated WGSL');
      return withF16Helpers(out, hasF16);
    }
  }
}

// --- Reduce* and ArgMax/ArgMin --------------------------------------------------------------------

type Kind = 'sum' | 'mean' | 'sumsq' | 'l1' | 'l2' | 'prod' | 'max' | 'min' | 'logsum' | 'logsumexp';

/** What a reduction computes: the partial combine, an element's partial, and the final value from the total. */
interface ReduceSpec {
  c: Combine;
  fns?: string;
  elem: (x: string, idx: string) => string;
  fin: (r: string) => string;
  /** WGSL scalar type of the input and of the output. */
  inT: 'f32' | 'i32';
  outT: 'f32' | 'i32';
}

function reduceSpec(kind: Kind, dtype: DType, count: number): ReduceSpec | null {
  const int = dtype !== 'float32';
  if (int) {
    // Integers: exact in i32 (wrapping like the reference's int32 results); no int64 products, no float results.
    if (kind === 'sum') return { c: SUM_I, elem: (x) => x, fin: (r) => r, inT: 'i32', outT: 'i32' };
    if (kind === 'max') return { c: MAX_I, elem: (x) => x, fin: (r) => r, inT: 'i32', outT: 'i32' };
    if (kind === 'min') return { c: MIN_I, elem: (x) => x, fin: (r) => r, inT: 'i32', outT: 'i32' };
    if (kind === 'prod' && dtype === 'int32') return { c: PROD_I, elem: (x) => x, fin: (r) => r, inT: 'i32', outT: 'i32' };
    return null;
  }
  const f = (c: Combine, elem: (x: string) => string, fin: (r: string) => string): ReduceSpec => ({ c, elem, fin, inT: 'f32', outT: 'f32' });
  switch (kind) {
    case 'sum': return f(SUM_F, (x) => x, (r) => r);
    case 'mean': return f(SUM_F, (x) => x, (r) => `(${r} / ${f32Lit(count)})`);
    case 'sumsq': return f(SUM_F, (x) => `(${x} * ${x})`, (r) => r);
    case 'l2': return f(SUM_F, (x) => `(${x} * ${x})`, (r) => `sqrt(${r})`);
    case 'l1': return f(SUM_F, (x) => `abs(${x})`, (r) => r);
    case 'prod': return f(PROD_F, (x) => x, (r) => r);
    case 'max': return f(MAX_F, (x) => x, (r) => r);
    case 'min': return f(MIN_F, (x) => x, (r) => r);
    case 'logsum': return f(SUM_F, (x) => x, (r) => `log(${r})`);
    case 'logsumexp': return f(LSE, (x) => `vec2f(${x}, 1.0)`, (r) => `(${r}.x + log(${r}.y))`);
  }
}

function argSpec(isMax: boolean, last: boolean, dtype: DType): ReduceSpec {
  const int = dtype !== 'float32';
  // A u32 key ordered like the values (max) or reversed (min), -0 as +0, NaN above everything.
  const key = int
    ? `fn wj_key(v: i32) -> u32 { let o = bitcast<u32>(v) ^ 0x80000000u; return ${isMax ? 'o' : '~o'}; }`
    : `fn wj_key(v: f32) -> u32 {
  let b = select(bitcast<u32>(v), 0u, v == 0.0);
  let o = select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
  return select(${isMax ? 'o' : '~o'}, 0xffffffffu, v != v);
}`;
  return {
    c: argCombine(last), fns: key,
    elem: (x, idx) => `vec2u(wj_key(${x}), ${idx})`, fin: (r) => `i32(${r}.y)`, inT: int ? 'i32' : 'f32', outT: 'i32',
  };
}

/** One or two dispatches (a split row's parts, then their combine) for a reduction of `x` over `reduced`. */
function reduceDispatches(spec: ReduceSpec, x: GpuValueDesc, reduced: boolean[], ctx: GpuPlanContext, node: Node,
  inputs: (GpuValueDesc | undefined)[]): { dispatches: Dispatch[]; scratchBytes?: number[] } {
  const sg = useSubgroups(ctx);
  const { L, fault } = rowLayout(node, inputs, ctx, x.dims, reduced, spec.inT === 'f32', 1024, raggedFirst);
  const mut = (code: string, first: boolean, last: boolean) => (fault ? rowFault(code, fault, first, last, ctx.caps.f16) : code);
  const g = new RowGen(L, sg);
  g.fn(spec.fns);
  const c = spec.c;
  const xT = L.vec === 4 ? 'vec4f' : spec.inT;
  // The element index along the reduced axis (ArgMax reduces one level, so it is the flat index within the row).
  const idx = (k: string, lane: number) => (L.vec === 4 ? `(${k} * 4u + ${lane}u)` : k);
  const accumulate = g.each((k, a) => ({
    load: `let xv = x[${a}];`,
    use: lanes('xv', L.vec).map((l, lane) => `acc = ${c.op('acc', spec.elem(l, idx(k, lane)))};`).join('\n      '),
  }));
  const partial = `var acc: ${c.type} = ${c.identity};
  ${accumulate}
  ${g.reduce(c, 'acc', 'r')}`;
  if (L.split === 1) {
    const code = g.text(storageDecls([{ name: 'x', type: xT }, { name: 'y', type: spec.outT, write: true }]),
      `${partial}\n  if (ok && tr == 0u) { y[row] = ${spec.fin('r')}; }`);
    return { dispatches: [{ code: mut(code, true, true), bindings: [{ input: 0 }, { output: 0 }], groups: groupsOf(L.groups, ctx) }] };
  }
  // Few long rows: parts of each row on many workgroups, then one workgroup per row combines the parts.
  const code1 = g.text(storageDecls([{ name: 'x', type: xT }, { name: 'part_out', type: c.type, write: true }]),
    `${partial}\n  if (ok && tr == 0u) { part_out[row * ${u(L.split)} + part] = r; }`);
  const L2 = layoutOf([L.rows, L.split], [false, true], false);
  const g2 = new RowGen(L2, sg);
  g2.fn(spec.fns);
  const code2 = g2.text(storageDecls([{ name: 'parts', type: c.type }, { name: 'y', type: spec.outT, write: true }]),
    `var acc: ${c.type} = ${c.identity};
  ${g2.each((_k, a) => ({ load: `let pv = parts[${a}];`, use: `acc = ${c.op('acc', 'pv')};` }))}
  ${g2.reduce(c, 'acc', 'r')}
  if (ok && tr == 0u) { y[row] = ${spec.fin('r')}; }`);
  const bytes = L.rows * L.split * (c.type.startsWith('vec2') ? 8 : 4);
  return {
    scratchBytes: [bytes],
    dispatches: [
      { code: mut(code1, true, false), bindings: [{ input: 0 }, { scratch: 0 }], groups: groupsOf(L.groups, ctx) },
      { code: mut(code2, false, true), bindings: [{ scratch: 0 }, { output: 0 }], groups: groupsOf(L2.groups, ctx) },
    ],
  };
}

/** Axes to reduce (null: none given), or 'dynamic' when an axes input's value is unknown at plan time. */

const REDUCE_DTYPES: ReadonlySet<DType> = new Set(['float32', 'int32', 'int64']);

function planReduce(kind: Kind, inputFrom: number) {
  return (node: Node, inputs: (GpuValueDesc | undefined)[], ctx: GpuPlanContext, opset: number): GpuOpPlan | null => {
    const x = inputs[0];
    if (!x || !REDUCE_DTYPES.has(x.dtype)) return null;
    const keep = attrI(node, 'keepdims', 1) !== 0;
    const noop = opset >= inputFrom && attrI(node, 'noop_with_empty_axes', 0) !== 0;
    const axes = reduceAxes(node, inputs, opset, inputFrom);
    if (axes === 'dynamic') return null;
    if (axes === null && noop) return { outputs: [{ dtype: x.dtype, dims: [...x.dims] }], alias: [0], dispatches: [] };
    const rank = x.dims.length;
    if (rank === 0 && axes !== null) return null;
    const shape = reduceShape(x.dims, axes, keep);
    if (!shape) return null; // the reference reports the error
    const { reduced, outDims, count } = shape;
    const outputs = [{ dtype: x.dtype, dims: outDims }];
    if (sizeOf(outDims) === 0) return { outputs, dispatches: [] };
    if (count === 0) return null;
    const spec = reduceSpec(kind, x.dtype, count);
    if (!spec) return null;
    return { outputs, ...reduceDispatches(spec, x, reduced, ctx, node, inputs) };
  };
}

registerGpuOp('ReduceSum', planReduce('sum', 13));
registerGpuOp('ReduceMean', planReduce('mean', 18));
registerGpuOp('ReduceSumSquare', planReduce('sumsq', 18));
registerGpuOp('ReduceL1', planReduce('l1', 18));
registerGpuOp('ReduceL2', planReduce('l2', 18));
registerGpuOp('ReduceProd', planReduce('prod', 18));
registerGpuOp('ReduceMax', planReduce('max', 18));
registerGpuOp('ReduceMin', planReduce('min', 18));
registerGpuOp('ReduceLogSum', planReduce('logsum', 18));
registerGpuOp('ReduceLogSumExp', planReduce('logsumexp', 18));

function planArg(isMax: boolean) {
  return (node: Node, inputs: (GpuValueDesc | undefined)[], ctx: GpuPlanContext): GpuOpPlan | null => {
    const x = inputs[0];
    if (!x || !REDUCE_DTYPES.has(x.dtype)) return null;
    const rank = x.dims.length;
    if (rank === 0) return null;
    const a = attrI(node, 'axis', 0);
    const axis = a < 0 ? a + rank : a;
    if (axis < 0 || axis >= rank) return null;
    const keep = attrI(node, 'keepdims', 1) !== 0;
    const last = attrI(node, 'select_last_index', 0) !== 0;
    const outDims = x.dims.map((d, i) => (i === axis ? 1 : d)).filter((_, i) => keep || i !== axis);
    const outputs = [{ dtype: 'int64' as const, dims: outDims }];
    if (sizeOf(outDims) === 0) return { outputs, dispatches: [] };
    if (x.dims[axis] === 0) return null;
    return { outputs, ...reduceDispatches(argSpec(isMax, last, x.dtype), x, x.dims.map((_, i) => i === axis), ctx, node, inputs) };
  };
}

registerGpuOp('ArgMax', planArg(true));
registerGpuOp('ArgMin', planArg(false));

// --- Softmax / LogSoftmax ----------------------------------------------------------------------------

/** Rows short enough to keep their elements in registers between passes (elements per thread). */
const MAX_CACHED = 16;

/** Loads each element once into `xc` (when the row is short enough), so later passes read registers. */
function cachedLoads(g: RowGen, xT: string): { decl: string; first: (a: string) => string; again: (a: string) => string } {
  if (g.NI > MAX_CACHED) return { decl: '', first: (a) => `x[${a}]`, again: (a) => `x[${a}]` };
  return { decl: `var xc: array<${xT}, ${g.NI}>;`, first: (a) => `x[${a}]`, again: () => 'xc[i]' };
}

function planSoftmax(log: boolean) {
  return (node: Node, inputs: (GpuValueDesc | undefined)[], ctx: GpuPlanContext, opset: number): GpuOpPlan | null => {
    const x = inputs[0];
    if (!x || x.dtype !== 'float32') return null;
    const rank = x.dims.length;
    let reduced: boolean[];
    if (opset < 13) {
      // Coerced to 2-D at axis: the rows are dims[:axis], each reducing dims[axis:].
      const a = attrI(node, 'axis', 1);
      const axis = a < 0 ? a + rank : a;
      if (axis < 0 || axis > rank) return null;
      reduced = x.dims.map((_, i) => i >= axis);
    } else {
      if (rank === 0) return null;
      const a = attrI(node, 'axis', -1);
      const axis = a < 0 ? a + rank : a;
      if (axis < 0 || axis >= rank) return null;
      reduced = x.dims.map((_, i) => i === axis);
    }
    const outputs = [{ dtype: 'float32' as const, dims: [...x.dims] }];
    if (sizeOf(x.dims) === 0) return { outputs, dispatches: [] };
    const { L, fault } = rowLayout(node, inputs, ctx, x.dims, reduced, true, 64, raggedFirst);
    const mut = (code: string, first: boolean, last: boolean) => (fault ? rowFault(code, fault, first, last, ctx.caps.f16) : code);
    const sg = useSubgroups(ctx);
    const g = new RowGen(L, sg);
    const xT = L.vec === 4 ? 'vec4f' : 'f32';
    const ld = cachedLoads(g, xT);
    const mx = (v: string) => (L.vec === 4 ? `max(max(${v}.x, ${v}.y), max(${v}.z, ${v}.w))` : v);
    const store = ld.decl ? 'xc[i] = xv; ' : '';
    // Per thread: its maximum, then Σ exp(x - max) (an all -inf part adds 0); the (max, sum) pairs then combine.
    const partial = `${ld.decl}
  var m = wj_ninf();
  ${g.each((_k, a) => ({ load: `let xv = ${ld.first(a)};`, use: `${store}m = max(m, ${mx('xv')});` }))}
  let sh = select(m, 0.0, m == wj_ninf());
  var s = 0.0;
  ${g.each((_k, a) => ({ load: `let xv = ${ld.again(a)};`, use: `s += ${hsum('exp(xv - sh)', L.vec)};` }))}
  ${g.reduce(LSE, 'vec2f(m, s)', 'r')}`;
    const write = (again: (a: string) => string) => `${log ? 'let ls = log(r.y);' : ''}
  ${g.each((_k, a) => ({ load: `let xv = ${again(a)};`, use: `y[${a}] = ${log ? 'xv - r.x - ls' : 'exp(xv - r.x) / r.y'};` }), true)}`;
    const groups = groupsOf(L.groups, ctx);
    if (L.split === 1) {
      const code = g.text(storageDecls([{ name: 'x', type: xT }, { name: 'y', type: xT, write: true }]), `${partial}\n  ${write(ld.again)}`);
      return { outputs, dispatches: [{ code: mut(code, true, true), bindings: [{ input: 0 }, { output: 0 }], groups }] };
    }
    // Few long rows: each part's (max, sum) first; then every part combines its row's pairs and writes its elements.
    const code1 = g.text(storageDecls([{ name: 'x', type: xT }, { name: 'part_out', type: 'vec2f', write: true }]),
      `${partial}\n  if (ok && tr == 0u) { part_out[row * ${u(L.split)} + part] = r; }`);
    const g2 = new RowGen(L, false);
    g2.fn(LSE.fns);
    const code2 = g2.text(storageDecls([{ name: 'x', type: xT }, { name: 'parts', type: 'vec2f' }, { name: 'y', type: xT, write: true }]),
      `var r = parts[rowc * ${u(L.split)}];
  for (var q = 1u; q < ${u(L.split)}; q++) { r = ${LSE.op('r', `parts[rowc * ${u(L.split)} + q]`)}; }
  ${write((a) => `x[${a}]`)}`);
    return {
      outputs,
      scratchBytes: [L.rows * L.split * 8],
      dispatches: [
        { code: mut(code1, true, false), bindings: [{ input: 0 }, { scratch: 0 }], groups },
        { code: mut(code2, false, true), bindings: [{ input: 0 }, { scratch: 0 }, { output: 0 }], groups },
      ],
    };
  };
}

registerGpuOp('Softmax', planSoftmax(false));
registerGpuOp('LogSoftmax', planSoftmax(true));

// --- LayerNormalization / RMSNormalization / InstanceNormalization ---------------------------------




interface NormSpec {
  x: GpuValueDesc;
  reduced: boolean[];
  eps: number;
  rms: boolean;
  scale: ParamMode;
  bias: ParamMode;
  /** Channels for 'chan' parameters. */
  C: number;
  /** Also write each row's mean and 1/std (LayerNormalization's optional outputs). */
  stats: boolean;
  /** The node and its inputs (the tuning site) and their ragged dims. */
  node: Node;
  inputs: (GpuValueDesc | undefined)[];
  ragged: (d: number[][]) => number[][];
}

/** y = (x - mean) * inv * scale + bias per row, inv = 1/sqrt(var + eps); mean = 0 for RMS. Inputs: x, scale?, bias?. */
function normDispatch(s: NormSpec, ctx: GpuPlanContext): Dispatch {
  const { L, fault } = rowLayout(s.node, s.inputs, ctx, s.x.dims, s.reduced, true, 0, s.ragged);
  const g = new RowGen(L, useSubgroups(ctx));
  const vec = L.vec;
  const xT = vec === 4 ? 'vec4f' : 'f32';
  const ld = cachedLoads(g, xT);
  const store = ld.decl ? 'xc[i] = xv; ' : '';
  const n = f32Lit(L.count);
  const param = (mode: ParamMode, name: string, k: string): string => {
    if (mode === 'scalar') return `${name}[0]`;
    if (mode === 'chan') return `${name}[rowc % ${u(s.C)}]`;
    return `${name}[${k}]`;
  };
  const decls: { name: string; type: string; write?: boolean }[] = [{ name: 'x', type: xT }];
  const ptype = (m: ParamMode) => (m === 'row' ? xT : 'f32');
  if (s.scale !== 'none') decls.push({ name: 'sc', type: ptype(s.scale) });
  if (s.bias !== 'none') decls.push({ name: 'bi', type: ptype(s.bias) });
  decls.push({ name: 'y', type: xT, write: true });
  if (s.stats) decls.push({ name: 'mean_out', type: 'f32', write: true }, { name: 'inv_out', type: 'f32', write: true });
  // RMS reads the row first in the squares pass; LayerNorm in the sum pass.
  const meanPart = s.rms
    ? 'let mean = 0.0;'
    : `var sum = 0.0;
  ${g.each((_k, a) => ({ load: `let xv = ${ld.first(a)};`, use: `${store}sum += ${hsum('xv', vec)};` }))}
  ${g.reduce(SUM_F, 'sum', 'tot')}
  let mean = tot / ${n};`;
  const sqLoad = s.rms ? ld.first : ld.again;
  const body = `${ld.decl}
  ${meanPart}
  var sq = 0.0;
  ${g.each((_k, a) => ({ load: `let d = ${sqLoad(a)} - mean;`, use: `${s.rms ? store.replace('xv', 'd') : ''}sq += ${hsum('d * d', vec)};` }))}
  ${g.reduce(SUM_F, 'sq', 'sqt')}
  let inv = 1.0 / sqrt(sqt / ${n} + ${f32Lit(s.eps)});
  ${g.each((k, a) => {
    let e = '(xv - mean) * inv';
    if (s.scale !== 'none') e = `${e} * ${param(s.scale, 'sc', k)}`;
    if (s.bias !== 'none') e = `${e} + ${param(s.bias, 'bi', k)}`;
    return { load: `let xv = ${ld.again(a)};`, use: `y[${a}] = ${e};` };
  }, true)}
  ${s.stats ? 'if (ok && tr == 0u) { mean_out[row] = mean; inv_out[row] = inv; }' : ''}`;
  const bindings: Dispatch['bindings'] = [{ input: 0 }];
  if (s.scale !== 'none') bindings.push({ input: 1 });
  if (s.bias !== 'none') bindings.push({ input: 2 });
  bindings.push({ output: 0 });
  if (s.stats) bindings.push({ output: 1 }, { output: 2 });
  const code = g.text(storageDecls(decls), body);
  return { code: fault ? rowFault(code, fault, true, true, ctx.caps.f16) : code, bindings, groups: groupsOf(L.groups, ctx) };
}

function planRowNorm(rms: boolean) {
  return (node: Node, inputs: (GpuValueDesc | undefined)[], ctx: GpuPlanContext): GpuOpPlan | null => {
    const x = inputs[0], scale = inputs[1], bias = rms ? undefined : inputs[2];
    if (!x || !scale || x.dtype !== 'float32') return null;
    const rank = x.dims.length;
    const a = attrI(node, 'axis', -1);
    const axis = a < 0 ? a + rank : a;
    if (axis < 0 || axis >= Math.max(rank, 1)) return null;
    const inner = sizeOf(x.dims.slice(axis));
    const sm = rowParam(scale, x.dims, inner), bm = rowParam(bias, x.dims, inner);
    if (!sm || !bm || sm === 'none') return null;
    const stats = !rms && wantedOutputs(node) > 1;
    if (stats && attrI(node, 'stash_type', 1) !== 1) return null;
    const outputs = [{ dtype: 'float32' as const, dims: [...x.dims] }];
    if (stats) {
      const statDims = x.dims.map((d, i) => (i < axis ? d : 1));
      outputs.push({ dtype: 'float32', dims: statDims }, { dtype: 'float32', dims: [...statDims] });
    }
    if (sizeOf(x.dims) === 0) return { outputs, dispatches: [] };
    const eps = attrF(node, 'epsilon', 1e-5);
    const reduced = x.dims.map((_, i) => i >= axis);
    // Ragged: x, scale and bias keep their broadcast relations.
    const ragged = (d: number[][]) => raggedBroadcast(d);
    return { outputs, dispatches: [normDispatch({ x, reduced, eps, rms, scale: sm, bias: bm, C: 1, stats, node, inputs, ragged }, ctx)] };
  };
}

registerGpuOp('LayerNormalization', planRowNorm(false));
registerGpuOp('RMSNormalization', planRowNorm(true));

registerGpuOp('InstanceNormalization', (node, inputs, ctx) => {
  const [x, scale, bias] = inputs;
  if (!x || !scale || !bias || x.dtype !== 'float32' || scale.dtype !== 'float32' || bias.dtype !== 'float32') return null;
  if (x.dims.length < 2) return null;
  const C = x.dims[1];
  if (sizeOf(scale.dims) !== C || sizeOf(bias.dims) !== C) return null;
  const outputs = [{ dtype: 'float32' as const, dims: [...x.dims] }];
  if (sizeOf(x.dims) === 0) return { outputs, dispatches: [] };
  const reduced = x.dims.map((_, i) => i >= 2);
  const eps = attrF(node, 'epsilon', 1e-5);
  // Ragged: the spatial axes (channels kept, scale and bias are per channel).
  const ragged = (d: number[][]) => [d[0].map((n, i) => (i < 2 ? n : i === d[0].length - 1 ? raggedKeep4(n) : raggedSize(n))), ...d.slice(1)];
  return { outputs, dispatches: [normDispatch({ x, reduced, eps, rms: false, scale: 'chan', bias: 'chan', C, stats: false, node, inputs, ragged }, ctx)] };
});

// --- BatchNormalization (inference) ------------------------------------------------------------------

registerGpuOp('BatchNormalization', (node, inputs, ctx, opset) => {
  const [x, scale, bias, mean, variance] = inputs;
  if (!x || !scale || !bias || !mean || !variance || x.dtype !== 'float32') return null;
  const params = [scale, bias, mean, variance];
  if (params.some((t) => t.dtype !== 'float32')) return null;
  const training = opset >= 14 ? attrI(node, 'training_mode', 0) !== 0 : opset < 7 ? attrI(node, 'is_test', 0) === 0 && wantedOutputs(node) > 1 : false;
  if (training || wantedOutputs(node) > 1) return null;
  if (opset < 9 && attrI(node, 'spatial', 1) === 0) return null;
  const C = x.dims.length > 1 ? x.dims[1] : 1;
  if (params.some((t) => sizeOf(t.dims) !== C)) return null;
  const outputs = [{ dtype: 'float32' as const, dims: [...x.dims] }];
  const n = sizeOf(x.dims);
  if (n === 0) return { outputs, dispatches: [] };
  const spatial = sizeOf(x.dims.slice(2));
  const vec = spatial % 4 === 0 ? 4 : 1;
  const xT = vec === 4 ? 'vec4f' : 'f32';
  const nv = n / vec, sv = spatial / vec;
  const WG = 256;
  const code = `${storageDecls([{ name: 'x', type: xT }, { name: 'sc', type: 'f32' }, { name: 'bi', type: 'f32' }, { name: 'mu', type: 'f32' },
    { name: 'va', type: 'f32' }, { name: 'y', type: xT, write: true }])}
@compute @workgroup_size(${WG})
fn main(${GRID_PARAMS}) {
  ${LINEAR_GROUP}
  let i = group * ${u(WG)} + lid;
  if (i >= ${u(nv)}) { return; }
  let c = (i / ${u(sv)}) % ${u(C)};
  y[i] = (x[i] - mu[c]) * (sc[c] / sqrt(va[c] + ${f32Lit(attrF(node, 'epsilon', 1e-5))})) + bi[c];
}`;
  return {
    outputs,
    dispatches: [{ code, bindings: [...[0, 1, 2, 3, 4].map((input) => ({ input })), { output: 0 }], groups: groupsOf(Math.ceil(nv / WG), ctx) }],
  };
});
