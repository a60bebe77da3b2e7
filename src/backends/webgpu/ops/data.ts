// WebGPU data movement (Transpose, Concat, Split, Slice, Gather*, ScatterND, Expand, Tile, Pad, ConstantOfShape, Range,
// Trilu, DepthToSpace/SpaceToDepth, CumSum): JIT kernels with every size and stride baked in, one thread per output element.
import type { Node } from '../../../graph/ir.js';
import { Tensor, type DType } from '../../../tensor.js';
import { encodeScalar, evenSplit } from '../../../ops/shape.js';
import { isPermutation } from '../../../ops/util.js';
import {
  GRID_PARAMS, LINEAR_GROUP, enables, grid, i32Lit, registerGpuOp, storageBytes, storageDecls, storageType,
  type Binding, type Dispatch, type GpuOp, type GpuOpPlan, type GpuPlanContext, type GpuValueDesc,
} from '../kernel.js';
import { expandView, normAxis, planInts, sliceView, tensorInts, tileView } from '../../strided_views.js';

const WG = 256;
/** Transpose tile edge and the rows a workgroup covers per step (TILE x ROWS threads). */
const TILE = 32, ROWS = 8;

const prod = (v: readonly number[]) => v.reduce((a, b) => a * b, 1);

function stridesOf(dims: readonly number[]): number[] {
  const s = new Array<number>(dims.length);
  for (let i = dims.length - 1, acc = 1; i >= 0; i--) { s[i] = acc; acc *= dims[i]; }
  return s;
}

/**
 * The WGSL element a data kernel moves: every 4-byte storage type is copied as its bits (u32), so one kernel text serves
 * float32, the ints and bool; float16 moves as f16 where the device has it.
 */
type Elem = 'u32' | 'f16';
function elemOf(dtype: DType, ctx: GpuPlanContext): Elem | null {
  const s = storageType(dtype);
  if (!s) return null;
  if (s === 'f16') return ctx.caps.f16 ? 'f16' : null;
  return 'u32';
}

/** A value's storage element as a WGSL literal of the kernel's element type. */
function wordLit(dtype: DType, e: Elem, v: unknown): string {
  if (e === 'f16') return `bitcast<vec2<f16>>(${Number(v) & 0xffff}u).x`;
  switch (storageType(dtype)) {
    case 'f32': return `${new Uint32Array(Float32Array.of(Number(v)).buffer)[0]}u`;
    case 'u32': return dtype === 'bool' ? (v ? '1u' : '0u') : `${Number(v) >>> 0}u`;
    default: {
      // int64 is stored clamped to i32, as the executor uploads it.
      const x = typeof v === 'bigint' ? (v > 2147483647n ? 2147483647 : v < -2147483648n ? -2147483648 : Number(v)) : Number(v);
      return `${(x | 0) >>> 0}u`;
    }
  }
}

const zeroLit = (e: Elem) => (e === 'f16' ? 'f16(0.0)' : '0u');

// --- node attributes and plan-time values ---------------------------------------------------------------

function attrInt(node: Node, name: string, dflt: number): number {
  const v = node.attrs.get(name)?.value;
  return typeof v === 'number' ? v : dflt;
}
function attrInts(node: Node, name: string): number[] | null {
  const v = node.attrs.get(name)?.value;
  return Array.isArray(v) && v.every((x) => typeof x === 'number') ? (v as number[]) : null;
}
function attrStr(node: Node, name: string, dflt: string): string {
  const v = node.attrs.get(name)?.value;
  return typeof v === 'string' ? v : dflt;
}

const ints = planInts;

/** Registers a data op whose plans fall back to the reference where an output would not fit one storage binding. */
function registerDataOp(opType: string, op: GpuOp): void {
  registerGpuOp(opType, (node, inputs, ctx, opset) => {
    const plan = op(node, inputs, ctx, opset);
    if (!plan) return null;
    const fits = plan.outputs.every((o, k) => plan.alias?.[k] !== undefined || prod(o.dims) * storageBytes(o.dtype) <= ctx.caps.maxBindingSize);
    return fits ? plan : null;
  });
}

// --- WGSL building blocks -------------------------------------------------------------------------------

interface Buf { name: string; type: string; bind: Binding; write?: boolean }

/** A 1-D kernel over n threads (`i` is the thread's element). */
function kernel1d(bufs: Buf[], n: number, body: string[], ctx: GpuPlanContext): Dispatch {
  if (n > 0xffffffff - WG) throw new RangeError(`too many elements (${n})`);
  const code = `${storageDecls(bufs)}
@compute @workgroup_size(${WG})
fn main(${GRID_PARAMS}) {
  ${LINEAR_GROUP}
  let i = group * ${WG}u + lid;
  if (i >= ${n}u) { return; }
  ${body.join('\n  ')}
}`;
  return { code: enables(code), bindings: bufs.map((b) => b.bind), groups: grid(Math.ceil(n / WG), ctx.caps.maxWorkgroupsPerDim) };
}

/** Lets `${p}0 … ${p}{r-1}`: the row-major coordinates of the u32 `idx` in dims. */
function decompose(dims: readonly number[], idx: string, p: string): string[] {
  const r = dims.length;
  if (r === 0) return [];
  if (r === 1) return [`let ${p}0 = ${idx};`];
  const lines = [`var ${p}r = ${idx};`];
  for (let d = r - 1; d >= 1; d--) lines.push(`let ${p}${d} = ${p}r % ${dims[d]}u; ${p}r = ${p}r / ${dims[d]}u;`);
  lines.push(`let ${p}0 = ${p}r;`);
  return lines;
}

/** The u32 element offset base + Σ coords[d]·strides[d] (signed arithmetic only where a stride or the base is negative). */
function offsetExpr(coords: readonly string[], strides: readonly number[], base: number): string {
  if (base >= 0 && strides.every((s) => s >= 0)) {
    const terms = coords.map((c, d) => (strides[d] === 0 ? '' : strides[d] === 1 ? c : `${c} * ${strides[d]}u`)).filter(Boolean);
    if (base > 0) terms.push(`${base}u`);
    return terms.length ? terms.join(' + ') : '0u';
  }
  const terms = coords.map((c, d) => (strides[d] === 0 ? '' : `i32(${c}) * ${i32Lit(strides[d])}`)).filter(Boolean);
  return `u32(${[i32Lit(base), ...terms].join(' + ')})`;
}

/** Drops unit dims and merges neighbours the source walks contiguously (the destination is dense, so it always can). */
function simplify(dims: readonly number[], src: readonly number[]): { dims: number[]; src: number[] } {
  const d: number[] = [], s: number[] = [];
  for (let k = 0; k < dims.length; k++) {
    if (dims[k] === 1) continue;
    const last = d.length - 1;
    if (last >= 0 && s[last] === src[k] * dims[k]) { d[last] *= dims[k]; s[last] = src[k]; continue; }
    d.push(dims[k]); s.push(src[k]);
  }
  return d.length ? { dims: d, src: s } : { dims: [1], src: [0] };
}

// --- strided views: Transpose, Slice, Expand, Tile, DepthToSpace ---------------------------------------

/**
 * A transpose that swaps the source's contiguous axis away from the innermost: a 32x32 tile is read along the source's
 * contiguous axis and written along the destination's, through workgroup memory, so both sides stay coalesced.
 */
function tiledDispatch(e: Elem, dims: number[], src: number[], off: number, ctx: GpuPlanContext): Dispatch | null {
  const k = dims.length;
  if (k < 2 || src[k - 1] === 1 || off < 0 || src.some((s) => s < 0)) return null;
  const a = src.indexOf(1);
  if (a < 0 || a === k - 1) return null;
  const A = dims[a], B = dims[k - 1];
  if (A < 8 || B < 8) return null;
  const os = stridesOf(dims);
  const batch = dims.map((_, d) => d).filter((d) => d !== a && d !== k - 1);
  const bdims = batch.map((d) => dims[d]);
  const TA = Math.ceil(A / TILE), TB = Math.ceil(B / TILE);
  const total = prod(bdims) * TA * TB;
  const coords = batch.map((_, j) => `q${j}`);
  const inBase = offsetExpr(coords, batch.map((d) => src[d]), off);
  const outBase = offsetExpr(coords, batch.map((d) => os[d]), 0);
  const code = `${storageDecls([{ name: 'x', type: e }, { name: 'y', type: e, write: true }])}
var<workgroup> tile: array<array<${e}, ${TILE + 1}>, ${TILE}>;
@compute @workgroup_size(${TILE}, ${ROWS})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) l: vec3u) {
  let group = wg.y * nwg.x + wg.x;
  if (group >= ${total}u) { return; }
  let a0 = ((group / ${TB}u) % ${TA}u) * ${TILE}u;
  let b0 = (group % ${TB}u) * ${TILE}u;
  ${decompose(bdims, `group / ${TA * TB}u`, 'q').join('\n  ')}
  let inBase = ${inBase};
  let outBase = ${outBase};
  for (var j = 0u; j < ${TILE}u; j += ${ROWS}u) {
    let a = a0 + l.x;
    let b = b0 + l.y + j;
    if (a < ${A}u && b < ${B}u) { tile[l.y + j][l.x] = x[inBase + a + b * ${src[k - 1]}u]; }
  }
  workgroupBarrier();
  for (var j = 0u; j < ${TILE}u; j += ${ROWS}u) {
    let b = b0 + l.x;
    let a = a0 + l.y + j;
    if (a < ${A}u && b < ${B}u) { y[outBase + a * ${os[a]}u + b] = tile[l.x][l.y + j]; }
  }
}`;
  return { code: enables(code), bindings: [{ input: 0 }, { output: 0 }], groups: grid(total, ctx.caps.maxWorkgroupsPerDim) };
}

/** out = x seen through (dims, src strides, element offset); the output is x itself when that view is the identity. */
function planView(x: GpuValueDesc, outDims: number[], dims: number[], src: number[], off: number, ctx: GpuPlanContext): GpuOpPlan | null {
  const e = elemOf(x.dtype, ctx);
  if (!e) return null;
  const outputs = [{ dtype: x.dtype, dims: outDims }];
  const n = prod(outDims);
  if (n === 0) return { outputs, dispatches: [] };
  const s = simplify(dims, src);
  if (off === 0 && n === prod(x.dims) && (n === 1 || (s.dims.length === 1 && s.src[0] === 1))) return { outputs, alias: [0], dispatches: [] };
  const tiled = tiledDispatch(e, s.dims, s.src, off, ctx);
  if (tiled) return { outputs, dispatches: [tiled] };
  const bufs: Buf[] = [{ name: 'x', type: e, bind: { input: 0 } }, { name: 'y', type: e, write: true, bind: { output: 0 } }];
  const body = s.dims.length === 1
    ? [`y[i] = x[${offsetExpr(['i'], s.src, off)}];`]
    : [...decompose(s.dims, 'i', 'c'), `y[i] = x[${offsetExpr(s.dims.map((_, d) => `c${d}`), s.src, off)}];`];
  return { outputs, dispatches: [kernel1d(bufs, n, body, ctx)] };
}

/** x (dense, inDims) permuted by perm. */
function planTranspose(x: GpuValueDesc, inDims: number[], perm: number[], outDims: number[], ctx: GpuPlanContext): GpuOpPlan | null {
  const st = stridesOf(inDims);
  return planView(x, outDims, perm.map((p) => inDims[p]), perm.map((p) => st[p]), 0, ctx);
}

registerDataOp('Transpose', (node, inputs, ctx) => {
  const x = inputs[0];
  if (!x) return null;
  const r = x.dims.length;
  const perm = attrInts(node, 'perm') ?? x.dims.map((_, i) => r - 1 - i);
  if (!isPermutation(perm, r)) return null;
  return planTranspose(x, x.dims, perm, perm.map((p) => x.dims[p]), ctx);
});

registerDataOp('DepthToSpace', (node, inputs, ctx, opset) => {
  const x = inputs[0];
  if (!x || x.dims.length !== 4) return null;
  const b = attrInt(node, 'blocksize', 0);
  const mode = opset >= 11 ? attrStr(node, 'mode', 'DCR') : 'DCR';
  const [n, c, h, w] = x.dims;
  if (!(b > 0) || c % (b * b) !== 0) return null;
  const c2 = c / (b * b);
  const outDims = [n, c2, h * b, w * b];
  if (mode === 'DCR') return planTranspose(x, [n, b, b, c2, h, w], [0, 3, 4, 1, 5, 2], outDims, ctx);
  if (mode === 'CRD') return planTranspose(x, [n, c2, b, b, h, w], [0, 1, 4, 2, 5, 3], outDims, ctx);
  return null;
});

registerDataOp('SpaceToDepth', (node, inputs, ctx) => {
  const x = inputs[0];
  if (!x || x.dims.length !== 4) return null;
  const b = attrInt(node, 'blocksize', 0);
  const [n, c, h, w] = x.dims;
  if (!(b > 0) || h % b !== 0 || w % b !== 0) return null;
  return planTranspose(x, [n, c, h / b, b, w / b, b], [0, 3, 5, 1, 2, 4], [n, c * b * b, h / b, w / b], ctx);
});

registerDataOp('Slice', (node, inputs, ctx, opset) => {
  const x = inputs[0];
  const v = x && sliceView(node, x.dims, opset, inputs);
  return v ? planView(x, v.outDims, v.dims, v.src, v.off, ctx) : null;
});

registerDataOp('Expand', (_node, inputs, ctx) => {
  const x = inputs[0], shape = ints(inputs[1]);
  const v = x && shape && expandView(x.dims, shape);
  return v ? planView(x, v.outDims, v.dims, v.src, v.off, ctx) : null;
});

registerDataOp('Tile', (_node, inputs, ctx) => {
  const x = inputs[0], reps = ints(inputs[1]);
  const v = x && reps && tileView(x.dims, reps);
  return v ? planView(x, v.outDims, v.dims, v.src, v.off, ctx) : null;
});

// --- Concat / Split --------------------------------------------------------------------------------------

/** A block of `blk` elements per outer row: at `col` in the wide side's rows, from/to binding `bind`. */
interface Part { blk: number; col: number; bind: Binding }

/**
 * Concat (gather = false: parts are sources, the wide tensor is the destination) or Split (the reverse) as a few
 * dispatches: each covers as many parts as the storage-buffer limit allows, one thread per element of its parts.
 */
function blockDispatches(e: Elem, parts: Part[], outer: number, wideRow: number, wide: Binding, concat: boolean, ctx: GpuPlanContext): Dispatch[] {
  const per = Math.max(1, ctx.caps.maxStorageBuffers - 1);
  const live = parts.filter((p) => p.blk > 0);
  const out: Dispatch[] = [];
  for (let c0 = 0; c0 < live.length; c0 += per) {
    const chunk = live.slice(c0, c0 + per);
    const W = chunk.reduce((a, p) => a + p.blk, 0);
    const bufs: Buf[] = concat
      ? [...chunk.map((p, k) => ({ name: `p${k}`, type: e, bind: p.bind })), { name: 'w', type: e, write: true, bind: wide }]
      : [{ name: 'w', type: e, bind: wide }, ...chunk.map((p, k) => ({ name: `p${k}`, type: e, write: true, bind: p.bind }))];
    const body = outer === 1 ? ['let o = 0u;', 'let j = i;'] : [`let o = i / ${W}u;`, `let j = i % ${W}u;`];
    let start = 0;
    chunk.forEach((p, k) => {
      const jj = start ? `(j - ${start}u)` : 'j';
      const narrowIdx = outer === 1 ? jj : `o * ${p.blk}u + ${jj}`;
      const wideIdx = `${outer === 1 ? '' : `o * ${wideRow}u + `}${p.col ? `${p.col}u + ` : ''}${jj}`;
      const stmt = concat ? `w[${wideIdx}] = p${k}[${narrowIdx}];` : `p${k}[${narrowIdx}] = w[${wideIdx}];`;
      const end = start + p.blk;
      body.push(k === chunk.length - 1 ? (k === 0 ? stmt : `else { ${stmt} }`) : `${k === 0 ? '' : 'else '}if (j < ${end}u) { ${stmt} }`);
      start = end;
    });
    out.push(kernel1d(bufs, outer * W, body, ctx));
  }
  return out;
}

registerDataOp('Concat', (node, inputs, ctx, opset) => {
  if (inputs.length === 0 || inputs.some((x) => !x)) return null;
  const xs = inputs as GpuValueDesc[];
  const x0 = xs[0];
  const e = elemOf(x0.dtype, ctx);
  const r = x0.dims.length;
  if (!e || r === 0) return null;
  const axis = normAxis(attrInt(node, 'axis', opset < 4 ? 1 : NaN), r);
  if (axis === null) return null;
  let total = 0;
  for (const x of xs) {
    if (x.dtype !== x0.dtype || x.dims.length !== r) return null;
    for (let d = 0; d < r; d++) if (d !== axis && x.dims[d] !== x0.dims[d]) return null;
    total += x.dims[axis];
  }
  const outDims = x0.dims.slice();
  outDims[axis] = total;
  const outputs = [{ dtype: x0.dtype, dims: outDims }];
  if (prod(outDims) === 0) return { outputs, dispatches: [] };
  const nonEmpty = xs.map((x, k) => (prod(x.dims) > 0 ? k : -1)).filter((k) => k >= 0);
  if (nonEmpty.length === 1) return { outputs, alias: [nonEmpty[0]], dispatches: [] };
  const outer = prod(outDims.slice(0, axis)), inner = prod(outDims.slice(axis + 1));
  let col = 0;
  const parts = xs.map((x, k) => { const p = { blk: x.dims[axis] * inner, col, bind: { input: k } }; col += p.blk; return p; });
  return { outputs, dispatches: blockDispatches(e, parts, outer, total * inner, { output: 0 }, true, ctx) };
});

registerDataOp('Split', (node, inputs, ctx, opset) => {
  const x = inputs[0];
  if (!x) return null;
  const e = elemOf(x.dtype, ctx);
  const r = x.dims.length;
  if (!e || r === 0) return null;
  const axis = normAxis(attrInt(node, 'axis', 0), r);
  if (axis === null) return null;
  const d = x.dims[axis];
  const nOut = node.outputs.length;
  let split: number[] | null = null;
  if (opset >= 13) {
    if (inputs[1]) { split = ints(inputs[1]); if (!split) return null; }
  } else {
    split = attrInts(node, 'split');
    if (!split && opset < 2 && inputs[1]) { split = ints(inputs[1]); if (!split) return null; }
  }
  if (split && split.length === 0) split = null;
  if (!split) {
    const even = evenSplit(d, opset >= 18 && node.attrs.has('num_outputs') ? attrInt(node, 'num_outputs', 0) : nOut, nOut, opset);
    if (typeof even === 'string') return null;
    split = even;
  }
  if (split.some((s) => s < 0 || !Number.isInteger(s)) || split.reduce((a, b) => a + b, 0) !== d || split.length !== nOut) return null;
  const outer = prod(x.dims.slice(0, axis)), inner = prod(x.dims.slice(axis + 1));
  const outputs = split.map((s) => { const dims = x.dims.slice(); dims[axis] = s; return { dtype: x.dtype, dims }; });
  if (split.length === 1) return { outputs, alias: [0], dispatches: [] };
  let col = 0;
  const parts = split.map((s, k) => { const p = { blk: s * inner, col, bind: { output: k } }; col += p.blk; return p; });
  return { outputs, dispatches: outer === 0 ? [] : blockDispatches(e, parts, outer, d * inner, { input: 0 }, false, ctx) };
});

// --- Pad ---------------------------------------------------------------------------------------------------

registerDataOp('Pad', (node, inputs, ctx, opset) => {
  const x = inputs[0];
  if (!x) return null;
  const e = elemOf(x.dtype, ctx);
  const r = x.dims.length;
  const mode = attrStr(node, 'mode', 'constant');
  if (!e || r === 0 || !['constant', 'edge', 'reflect', 'wrap'].includes(mode)) return null;
  let pads: number[] | null;
  let fill = zeroLit(e);
  let fillInput = false;
  let axes: number[] | null = null;
  if (opset < 11) {
    pads = opset < 2 ? attrInts(node, 'paddings') : attrInts(node, 'pads');
    const v = node.attrs.get('value')?.value;
    fill = wordLit(x.dtype, e, encodeScalar(x.dtype, typeof v === 'number' ? v : 0));
  } else {
    pads = ints(inputs[1]);
    const cv = inputs[2];
    if (cv && prod(cv.dims) > 0) {
      if (cv.dtype !== x.dtype) return null;
      fillInput = true; // read on the GPU at run time: plans are not keyed by its value
    }
    if (opset >= 18 && inputs[3]) {
      const a = ints(inputs[3]);
      if (!a) return null;
      axes = [];
      for (const v of a) { const b = normAxis(v, r); if (b === null) return null; axes.push(b); }
    }
  }
  if (!pads) return null;
  axes ??= x.dims.map((_, i) => i);
  const k = axes.length;
  if (pads.length !== 2 * k) return null;
  const begins = new Array<number>(r).fill(0), ends = new Array<number>(r).fill(0);
  for (let i = 0; i < k; i++) { begins[axes[i]] = pads[i]; ends[axes[i]] = pads[i + k]; }
  const st = stridesOf(x.dims);
  // Per output axis: size, source stride, and for a padded axis the shift and the valid source length.
  const ax: { od: number; st: number; padB: number; lo: number; de: number; padded: boolean }[] = [];
  for (let a = 0; a < r; a++) {
    const d = x.dims[a], pb = begins[a], pe = ends[a];
    const lo = Math.max(0, -pb);
    const de = d - lo - Math.max(0, -pe);
    const od = d + pb + pe;
    if (de < 0 || od < 0 || (mode !== 'constant' && de === 0 && od > 0)) return null; // the reference reports the error
    const padded = pb !== 0 || pe !== 0;
    const prev = ax[ax.length - 1];
    if (!padded && prev && !prev.padded) { prev.od *= od; prev.st = st[a]; prev.de = prev.od; continue; }
    ax.push({ od, st: st[a], padB: Math.max(pb, 0), lo, de, padded });
  }
  const outDims = ax.map((v) => v.od);
  const outputs = [{ dtype: x.dtype, dims: begins.map((b, a) => x.dims[a] + b + ends[a]) }];
  const n = prod(outDims);
  if (n === 0) return { outputs, dispatches: [] };
  const body = decompose(outDims, 'i', 'c');
  body.push('var ok = true;', 'var src = 0;');
  ax.forEach((v, a) => {
    if (!v.padded) { body.push(`src += i32(c${a}) * ${v.st};`); return; }
    const s = `s${a}`;
    body.push(`var ${s} = i32(c${a}) - ${v.padB};`);
    if (mode === 'constant') body.push(`ok = ok && u32(${s}) < ${v.de}u;`);
    else if (mode === 'edge') body.push(`${s} = clamp(${s}, 0, ${v.de - 1});`);
    else if (mode === 'wrap') body.push(`${s} = ((${s} % ${v.de}) + ${v.de}) % ${v.de};`);
    else if (v.de === 1) body.push(`${s} = 0;`);
    else {
      const per = 2 * (v.de - 1);
      body.push(`${s} = ((${s} % ${per}) + ${per}) % ${per};`, `if (${s} >= ${v.de}) { ${s} = ${per} - ${s}; }`);
    }
    body.push(`src += (${s} + ${v.lo}) * ${v.st};`);
  });
  const bufs: Buf[] = [{ name: 'x', type: e, bind: { input: 0 } }];
  if (fillInput) bufs.push({ name: 'cv', type: e, bind: { input: 2 } });
  bufs.push({ name: 'y', type: e, write: true, bind: { output: 0 } });
  if (mode === 'constant') body.push(`y[i] = select(${fillInput ? 'cv[0]' : fill}, x[select(0u, u32(src), ok)], ok);`);
  else body.push('y[i] = x[u32(src)];');
  return { outputs, dispatches: [kernel1d(bufs, n, body, ctx)] };
});

// --- ConstantOfShape / Range / Trilu ------------------------------------------------------------------------

registerDataOp('ConstantOfShape', (node, inputs, ctx) => {
  const shape = ints(inputs[0]);
  if (!shape || shape.some((d) => d < 0 || !Number.isInteger(d))) return null;
  const a = node.attrs.get('value')?.value;
  const v = a instanceof Tensor ? a : undefined;
  if (v && v.size !== 1) return null;
  const dtype: DType = v ? v.type : 'float32';
  const e = elemOf(dtype, ctx);
  if (!e) return null;
  const outputs = [{ dtype, dims: shape }];
  const n = prod(shape);
  if (n === 0) return { outputs, dispatches: [] };
  const lit = v ? wordLit(dtype, e, (v.data as ArrayLike<unknown>)[0]) : zeroLit(e);
  return { outputs, dispatches: [kernel1d([{ name: 'y', type: e, write: true, bind: { output: 0 } }], n, [`y[i] = ${lit};`], ctx)] };
});

/**
 * Integer Range (position ids): the length comes from the values known at plan time, start and delta are read on the GPU,
 * since the executor keys Range plans by the length alone. Float Range would need f64 products to match: it stays on the CPU.
 */
registerDataOp('Range', (node, inputs, ctx) => {
  const [s, l, d] = inputs;
  if (!s || !l || !d || node.domain !== '') return null;
  const dtype = s.dtype;
  if ((dtype !== 'int64' && dtype !== 'int32') || l.dtype !== dtype || d.dtype !== dtype) return null;
  if ([s, l, d].some((x) => prod(x.dims) !== 1)) return null;
  const vals = [s, l, d].map(ints);
  if (vals.some((v) => !v || v.length !== 1)) return null;
  const [start, limit, delta] = vals.map((v) => v![0]);
  if (delta === 0) return null;
  const n = Math.max(Math.ceil((limit - start) / delta), 0);
  const outputs = [{ dtype, dims: [n] }];
  if (n === 0) return { outputs, dispatches: [] };
  const bufs: Buf[] = [
    { name: 'st', type: 'i32', bind: { input: 0 } }, { name: 'dl', type: 'i32', bind: { input: 2 } },
    { name: 'y', type: 'i32', write: true, bind: { output: 0 } },
  ];
  return { outputs, dispatches: [kernel1d(bufs, n, ['y[i] = st[0] + i32(i) * dl[0];'], ctx)] };
});

registerDataOp('Trilu', (node, inputs, ctx) => {
  const x = inputs[0];
  if (!x || x.dims.length < 2) return null;
  const e = elemOf(x.dtype, ctx);
  if (!e) return null;
  const kIn = inputs[1] && prod(inputs[1].dims) > 0 ? inputs[1] : undefined;
  if (kIn && kIn.dtype !== 'int64' && kIn.dtype !== 'int32') return null;
  const upper = attrInt(node, 'upper', 1) !== 0;
  const r = x.dims.length;
  const h = x.dims[r - 2], w = x.dims[r - 1];
  const outputs = [{ dtype: x.dtype, dims: x.dims }];
  const n = prod(x.dims);
  if (n === 0) return { outputs, dispatches: [] };
  // k is read on the GPU: it is not a plan-time value input.
  const bufs: Buf[] = [{ name: 'x', type: e, bind: { input: 0 } }];
  if (kIn) bufs.push({ name: 'kk', type: 'i32', bind: { input: 1 } });
  bufs.push({ name: 'y', type: e, write: true, bind: { output: 0 } });
  const body = [
    `let k = ${kIn ? 'kk[0]' : '0'};`,
    `let dj = i32(i % ${w}u) - i32((i / ${w}u) % ${h}u);`,
    `y[i] = select(${zeroLit(e)}, x[i], dj ${upper ? '>=' : '<='} k);`,
  ];
  return { outputs, dispatches: [kernel1d(bufs, n, body, ctx)] };
});

// --- Gather / GatherElements / GatherND / ScatterND --------------------------------------------------------

const isIndex = (v: GpuValueDesc) => v.dtype === 'int64' || v.dtype === 'int32';

/** False when the indices are a model constant with an entry outside [-dim, dim) (the reference reports the error). */
function constIndicesOk(v: GpuValueDesc, dim: (j: number) => number): boolean {
  const c = tensorInts(v.constant);
  return !c || c.every((k, j) => k >= -dim(j) && k < dim(j));
}

/*
 * Indices only known on the GPU: an out-of-range index reads nothing (the output element is zero, so the kernels never
 * read outside their buffers) and sets the node's fault words, which fail the run with the reference's error at the
 * next read-back (see the executor's checkFaults).
 */
const FAULT: Buf = { name: 'fault', type: 'u32', write: true, bind: { fault: true } };
/** WGSL: record index `v` as out of range unless `ok`. */
const faultIf = (ok: string, v: string) => `if (!(${ok})) { fault[0] = 1u; fault[1] = bitcast<u32>(${v}); }`;

registerDataOp('Gather', (node, inputs, ctx) => {
  const [x, ind] = inputs;
  if (!x || !ind || !isIndex(ind)) return null;
  const e = elemOf(x.dtype, ctx);
  const r = x.dims.length;
  if (!e || r === 0) return null;
  const axis = normAxis(attrInt(node, 'axis', 0), r);
  if (axis === null) return null;
  const L = x.dims[axis];
  if (!constIndicesOk(ind, () => L)) return null;
  const outer = prod(x.dims.slice(0, axis)), inner = prod(x.dims.slice(axis + 1)), nIdx = prod(ind.dims);
  const outDims = [...x.dims.slice(0, axis), ...ind.dims, ...x.dims.slice(axis + 1)];
  const outputs = [{ dtype: x.dtype, dims: outDims }];
  const n = prod(outDims);
  if (n === 0) return { outputs, dispatches: [] };
  if (L === 0) return null;
  const bufs: Buf[] = [
    { name: 'x', type: e, bind: { input: 0 } }, { name: 'idx', type: 'i32', bind: { input: 1 } },
    { name: 'y', type: e, write: true, bind: { output: 0 } }, FAULT,
  ];
  const body = [
    ...decompose([outer, nIdx, inner], 'i', 'c'),
    'let v = idx[c1];',
    `let k = select(v, v + ${L}, v < 0);`,
    `let ok = u32(k) < ${L}u;`,
    faultIf('ok', 'v'),
    `let src = ${offsetExpr(['c0', 'u32(k)', 'c2'], [L * inner, inner, 1], 0)};`,
    `y[i] = select(${zeroLit(e)}, x[select(0u, src, ok)], ok);`,
  ];
  return { outputs, dispatches: [kernel1d(bufs, n, body, ctx)] };
});

registerDataOp('GatherElements', (node, inputs, ctx) => {
  const [x, ind] = inputs;
  if (!x || !ind || !isIndex(ind)) return null;
  const e = elemOf(x.dtype, ctx);
  const r = x.dims.length;
  if (!e || r === 0 || ind.dims.length !== r) return null;
  const axis = normAxis(attrInt(node, 'axis', 0), r);
  if (axis === null) return null;
  for (let a = 0; a < r; a++) if (a !== axis && ind.dims[a] > x.dims[a]) return null;
  const L = x.dims[axis];
  if (!constIndicesOk(ind, () => L)) return null;
  const outputs = [{ dtype: x.dtype, dims: ind.dims }];
  const n = prod(ind.dims);
  if (n === 0) return { outputs, dispatches: [] };
  if (L === 0) return null;
  const st = stridesOf(x.dims);
  const coords = ind.dims.map((_, a) => (a === axis ? 'u32(k)' : `c${a}`));
  const bufs: Buf[] = [
    { name: 'x', type: e, bind: { input: 0 } }, { name: 'idx', type: 'i32', bind: { input: 1 } },
    { name: 'y', type: e, write: true, bind: { output: 0 } }, FAULT,
  ];
  const body = [
    ...decompose(ind.dims, 'i', 'c'),
    'let v = idx[i];',
    `let k = select(v, v + ${L}, v < 0);`,
    `let ok = u32(k) < ${L}u;`,
    faultIf('ok', 'v'),
    `let src = ${offsetExpr(coords, st, 0)};`,
    `y[i] = select(${zeroLit(e)}, x[select(0u, src, ok)], ok);`,
  ];
  return { outputs, dispatches: [kernel1d(bufs, n, body, ctx)] };
});

/** GatherND/ScatterND geometry: index tuples of length k after b batch dims, each addressing a slice of `slice` elements. */
interface NdGeom { k: number; slice: number; nT: number; perBatch: number; batchStride: number; st: number[] }
function ndGeom(x: GpuValueDesc, ind: GpuValueDesc, b: number): NdGeom | null {
  const q = ind.dims.length, r = x.dims.length;
  if (q < 1) return null;
  const k = ind.dims[q - 1];
  if (k + b > r) return null;
  for (let a = 0; a < b; a++) if (ind.dims[a] !== x.dims[a]) return null;
  const st = stridesOf(x.dims);
  const nT = prod(ind.dims.slice(0, q - 1));
  const B = prod(x.dims.slice(0, b));
  return { k, slice: prod(x.dims.slice(b + k)), nT, perBatch: B === 0 ? 0 : nT / B, batchStride: b > 0 ? st[b - 1] : 0, st };
}

/** WGSL lines: `ok` and `off`, the data offset of index tuple `t` (a u32 expression). */
function ndOffsetLines(x: GpuValueDesc, g: NdGeom, b: number, t: string): string[] {
  const lines = ['var ok = true;', `var off = ${g.batchStride && g.perBatch ? `(${t} / ${g.perBatch}u) * ${g.batchStride}u` : '0u'};`];
  for (let j = 0; j < g.k; j++) {
    const D = x.dims[b + j];
    lines.push(`let v${j} = idx[${t} * ${g.k}u + ${j}u];`, `let k${j} = select(v${j}, v${j} + ${D}, v${j} < 0);`,
      `ok = ok && u32(k${j}) < ${D}u;`, `off += u32(k${j}) * ${g.st[b + j]}u;`);
  }
  return lines;
}

registerDataOp('GatherND', (node, inputs, ctx, opset) => {
  const [x, ind] = inputs;
  if (!x || !ind || !isIndex(ind)) return null;
  const e = elemOf(x.dtype, ctx);
  if (!e) return null;
  const b = opset >= 12 ? attrInt(node, 'batch_dims', 0) : 0;
  const q = ind.dims.length;
  if (b < 0 || b >= Math.min(q, x.dims.length + 1)) return null;
  const g = ndGeom(x, ind, b);
  if (!g || !constIndicesOk(ind, (j) => x.dims[b + (j % g.k)])) return null;
  const outDims = [...ind.dims.slice(0, q - 1), ...x.dims.slice(b + g.k)];
  const outputs = [{ dtype: x.dtype, dims: outDims }];
  const n = prod(outDims);
  if (n === 0) return { outputs, dispatches: [] };
  if (prod(x.dims) === 0) return null;
  const bufs: Buf[] = [
    { name: 'x', type: e, bind: { input: 0 } }, { name: 'idx', type: 'i32', bind: { input: 1 } },
    { name: 'y', type: e, write: true, bind: { output: 0 } }, ...(g.k ? [FAULT] : []),
  ];
  const body = [
    `let t = i / ${g.slice}u;`, `let s = i % ${g.slice}u;`, ...ndOffsetLines(x, g, b, 't'), ...(g.k ? [faultIf('ok', 'v0')] : []),
    `y[i] = select(${zeroLit(e)}, x[select(0u, off + s, ok)], ok);`,
  ];
  return { outputs, dispatches: [kernel1d(bufs, n, body, ctx)] };
});

registerDataOp('ScatterND', (node, inputs, ctx, opset) => {
  const [x, ind, upd] = inputs;
  if (!x || !ind || !upd || !isIndex(ind) || upd.dtype !== x.dtype) return null;
  if (opset >= 16 && attrStr(node, 'reduction', 'none') !== 'none') return null;
  const e = elemOf(x.dtype, ctx);
  if (!e) return null;
  const g = ndGeom(x, ind, 0);
  if (!g) return null;
  const q = ind.dims.length;
  const want = [...ind.dims.slice(0, q - 1), ...x.dims.slice(g.k)];
  if (upd.dims.length !== want.length || upd.dims.some((d, i) => d !== want[i])) return null;
  if (!constIndicesOk(ind, (j) => x.dims[j % g.k])) return null;
  // Constant indices that repeat a tuple: the reference's last-writer-wins order has no GPU equivalent.
  if (ind.constant && g.k > 0) {
    const c = tensorInts(ind.constant)!;
    const seen = new Set<string>();
    for (let t = 0; t < g.nT; t++) {
      const key = c.slice(t * g.k, (t + 1) * g.k).map((v, j) => (v < 0 ? v + x.dims[j] : v)).join(',');
      if (seen.has(key)) return null;
      seen.add(key);
    }
  } else if (g.k === 0 && g.nT > 1) return null;
  const outputs = [{ dtype: x.dtype, dims: x.dims }];
  const n = prod(x.dims);
  if (n === 0) return { outputs, dispatches: [] };
  const copy = kernel1d([{ name: 'x', type: e, bind: { input: 0 } }, { name: 'y', type: e, write: true, bind: { output: 0 } }], n, ['y[i] = x[i];'], ctx);
  const nu = prod(upd.dims);
  if (nu === 0) return { outputs, dispatches: [copy] };
  const bufs: Buf[] = [
    { name: 'idx', type: 'i32', bind: { input: 1 } }, { name: 'u', type: e, bind: { input: 2 } },
    { name: 'y', type: e, write: true, bind: { output: 0 } }, ...(g.k ? [FAULT] : []),
  ];
  const body = [
    `let t = i / ${g.slice}u;`, `let s = i % ${g.slice}u;`, ...ndOffsetLines(x, g, 0, 't'), ...(g.k ? [faultIf('ok', 'v0')] : []),
    'if (ok) { y[off + s] = u[i]; }',
  ];
  return { outputs, dispatches: [copy, kernel1d(bufs, nu, body, ctx)] };
});

// --- CumSum --------------------------------------------------------------------------------------------------

/**
 * CumSum on float32 and int32/int64 (stored as i32, wrapping): one thread per line, adding in the reference's order so
 * float32 results are bit-exact.
 */
registerDataOp('CumSum', (node, inputs, ctx) => {
  const x = inputs[0];
  const axv = ints(inputs[1]);
  if (!x || !axv || axv.length !== 1) return null;
  if (x.dtype !== 'float32' && x.dtype !== 'int32' && x.dtype !== 'int64') return null;
  const r = x.dims.length;
  const axis = normAxis(axv[0], r);
  if (axis === null) return null;
  const exclusive = attrInt(node, 'exclusive', 0) !== 0, reverse = attrInt(node, 'reverse', 0) !== 0;
  const outputs = [{ dtype: x.dtype, dims: x.dims }];
  const outer = prod(x.dims.slice(0, axis)), len = x.dims[axis], inner = prod(x.dims.slice(axis + 1));
  const lines = outer * inner;
  if (lines * len === 0) return { outputs, dispatches: [] };
  const t = x.dtype === 'float32' ? 'f32' : 'i32';
  const bufs: Buf[] = [{ name: 'x', type: t, bind: { input: 0 } }, { name: 'y', type: t, write: true, bind: { output: 0 } }];
  const body = [
    `let base = (i / ${inner}u) * ${len * inner}u + i % ${inner}u;`,
    `var acc = ${t === 'f32' ? '0.0' : '0'};`,
    `for (var s = 0u; s < ${len}u; s++) {`,
    `    let p = base + ${reverse ? `(${len - 1}u - s)` : 's'} * ${inner}u;`,
    exclusive ? '    y[p] = acc; acc += x[p];' : '    acc += x[p]; y[p] = acc;',
    '  }',
  ];
  return { outputs, dispatches: [kernel1d(bufs, lines, body, ctx)] };
});
