// Wasm data movement for any dtype by byte width: Transpose, Concat, Split, Slice, Gather, Expand, Tile, Pad,
// Resize (nearest), ConstantOfShape, Shape, Size. Shape-like inputs (starts, pads, repeats …) must be model constants.
import { DTYPES, Tensor, type DType, type TypedArray } from '../../../tensor.js';
import { encodeScalar, evenSplit, rangeCount } from '../../../ops/shape.js';
import { nearestIndex, sourceCoord } from '../../../ops/resize.js';
import { UnsupportedError } from '../../../errors.js';
import { isPermutation } from '../../../ops/util.js';
import {
  type CopyParams, type Width, copyTasks, fillTasks, gatherTasks, genCopy, genFill, genGather, genRange, genStoreBytes,
  genTableGather, packTables, simplifyCopy, tableGatherTasks,
} from '../kernels/data.js';
import { type Launch, type OpPlan, type PlanContext, type ValueDesc, registerWasmOp, taskCount } from '../kernel.js';
import { attrInt, attrInts, attrStr } from './conv.js';
import { expandView, normAxis, planInts, sliceView, tileView } from '../../strided_views.js';

const prod = (v: readonly number[]) => v.reduce((a, b) => a * b, 1);

function widthOf(t: DType): Width | null {
  if (t === 'string' || t.startsWith('complex')) return null;
  const b = DTYPES[t].rawBytes;
  return b === 1 || b === 2 || b === 4 || b === 8 ? b : null;
}

function stridesOf(dims: readonly number[]): number[] {
  const s = new Array<number>(dims.length);
  let acc = 1;
  for (let i = dims.length - 1; i >= 0; i--) { s[i] = acc; acc *= dims[i]; }
  return s;
}

const constInts = planInts;

/** A strided copy launch (src/dst pointers resolved at launch time, plus element offsets). */
interface CopySpec { params: CopyParams; srcOff: number; dstOff: number; src: (b: { inputs: number[]; outputs: number[] }) => number; dst: (b: { inputs: number[]; outputs: number[] }) => number }

function copySpec(w: Width, dims: number[], src: number[], dst: number[], threads: number): CopyParams | null {
  if (prod(dims) === 0) return null;
  const s = simplifyCopy(dims, src, dst);
  const rows = prod(s.dims.slice(0, -1));
  const tasks = Math.min(rows, taskCount(prod(s.dims) * w, threads, 1 << 16));
  return { w, ...s, rpt: Math.ceil(rows / tasks) };
}

function copyLaunches(specs: CopySpec[], w: Width) {
  const ks = specs.map((s) => ({ s, kernel: genCopy(s.params), tasks: copyTasks(s.params) }));
  return (b: { inputs: number[]; outputs: number[] }): Launch[] =>
    ks.map(({ s, kernel, tasks }) => ({ kernel, args: [s.src(b) + s.srcOff * w, s.dst(b) + s.dstOff * w], tasks }));
}

/** out = x viewed through (dims, strides, element offset) — Transpose, Slice, Expand, Tile. */
function planView(x: ValueDesc, outDims: number[], dims: number[], src: number[], srcOff: number, ctx: PlanContext): OpPlan | null {
  const w = widthOf(x.dtype);
  if (!w) return null;
  const outputs = [{ dtype: x.dtype, dims: outDims }];
  if (prod(outDims) === 0) return { outputs, launches: () => [] };
  const params = copySpec(w, dims, src, stridesOf(dims), ctx.threads);
  if (!params) return { outputs, launches: () => [] };
  return { outputs, launches: copyLaunches([{ params, srcOff, dstOff: 0, src: (b) => b.inputs[0], dst: (b) => b.outputs[0] }], w) };
}

// --- Transpose ---------------------------------------------------------------------------------------

registerWasmOp('Transpose', (node, inputs, ctx) => {
  const x = inputs[0];
  if (!x) return null;
  const r = x.dims.length;
  const perm = attrInts(node, 'perm') ?? x.dims.map((_, i) => r - 1 - i);
  if (!isPermutation(perm, r)) return null;
  const st = stridesOf(x.dims);
  const outDims = perm.map((p) => x.dims[p]);
  return planView(x, outDims, outDims, perm.map((p) => st[p]), 0, ctx);
});

// --- Concat / Split ------------------------------------------------------------------------------------

registerWasmOp('Concat', (node, inputs, ctx, opset) => {
  const xs = inputs;
  if (xs.length === 0 || xs.some((x) => !x)) return null;
  const x0 = xs[0]!;
  const w = widthOf(x0.dtype);
  const r = x0.dims.length;
  if (!w || r === 0) return null;
  const axis = normAxis(attrInt(node, 'axis', opset < 4 ? 1 : NaN), r);
  if (axis === null) return null;
  let total = 0;
  for (const x of xs) {
    if (x!.dtype !== x0.dtype || x!.dims.length !== r) return null;
    for (let d = 0; d < r; d++) if (d !== axis && x!.dims[d] !== x0.dims[d]) return null;
    total += x!.dims[axis];
  }
  const outDims = x0.dims.slice();
  outDims[axis] = total;
  const outputs = [{ dtype: x0.dtype, dims: outDims }];
  const outer = prod(outDims.slice(0, axis)), inner = prod(outDims.slice(axis + 1));
  const specs: CopySpec[] = [];
  let off = 0;
  xs.forEach((x, i) => {
    const blk = x!.dims[axis] * inner;
    const params = copySpec(w, [outer, blk], [blk, 1], [total * inner, 1], ctx.threads);
    if (params) specs.push({ params, srcOff: 0, dstOff: off, src: (b) => b.inputs[i], dst: (b) => b.outputs[0] });
    off += blk;
  });
  return { outputs, launches: copyLaunches(specs, w) };
});

registerWasmOp('Split', (node, inputs, ctx, opset) => {
  const x = inputs[0];
  if (!x) return null;
  const w = widthOf(x.dtype);
  const r = x.dims.length;
  if (!w || r === 0) return null;
  const axis = normAxis(attrInt(node, 'axis', 0), r);
  if (axis === null) return null;
  const d = x.dims[axis];
  const nOut = node.outputs.length;
  let split: number[] | null = null;
  if (opset >= 13) {
    if (inputs[1]) { split = constInts(inputs[1]); if (!split) return null; }
  } else split = attrInts(node, 'split') ?? (opset < 2 && inputs[1] ? constInts(inputs[1]) : null);
  if (split && split.length === 0) split = null;
  if (!split) {
    const even = evenSplit(d, opset >= 18 && node.attrs.has('num_outputs') ? attrInt(node, 'num_outputs', 0) : nOut, nOut, opset);
    if (typeof even === 'string') return null;
    split = even;
  }
  if (split.some((s) => s < 0) || split.reduce((a, b) => a + b, 0) !== d || split.length !== nOut) return null;
  const outer = prod(x.dims.slice(0, axis)), inner = prod(x.dims.slice(axis + 1));
  const outputs = split.map((s) => { const dims = x.dims.slice(); dims[axis] = s; return { dtype: x.dtype, dims }; });
  const specs: CopySpec[] = [];
  let off = 0;
  split.forEach((s, i) => {
    const blk = s * inner;
    const params = copySpec(w, [outer, blk], [d * inner, 1], [blk, 1], ctx.threads);
    if (params) specs.push({ params, srcOff: off, dstOff: 0, src: (b) => b.inputs[0], dst: (b) => b.outputs[i] });
    off += blk;
  });
  return { outputs, launches: copyLaunches(specs, w) };
});

// --- Slice -------------------------------------------------------------------------------------------

registerWasmOp('Slice', (node, inputs, ctx, opset) => {
  const x = inputs[0];
  const v = x && sliceView(node, x.dims, opset, inputs);
  return v ? planView(x, v.outDims, v.dims, v.src, v.off, ctx) : null;
});

// --- Expand / Tile -----------------------------------------------------------------------------------

registerWasmOp('Expand', (_node, inputs, ctx) => {
  const x = inputs[0], shape = constInts(inputs[1]);
  const v = x && shape && expandView(x.dims, shape);
  return v ? planView(x, v.outDims, v.dims, v.src, v.off, ctx) : null;
});

registerWasmOp('Tile', (_node, inputs, ctx) => {
  const x = inputs[0], reps = constInts(inputs[1]);
  const v = x && reps && tileView(x.dims, reps);
  return v ? planView(x, v.outDims, v.dims, v.src, v.off, ctx) : null;
});

// --- Pad (constant) ------------------------------------------------------------------------------------

function scalarBytes(dtype: DType, t: Tensor | undefined, fallback: number): Uint8Array | null {
  const w = widthOf(dtype);
  if (!w) return null;
  if (t) {
    if (t.type !== dtype || t.size < 1) return null;
    const d = t.data as TypedArray;
    return new Uint8Array(d.buffer, d.byteOffset, w).slice();
  }
  const one = DTYPES[dtype].make(1) as TypedArray;
  (one as unknown as unknown[])[0] = encodeScalar(dtype, fallback);
  return new Uint8Array(one.buffer, one.byteOffset, w).slice();
}

registerWasmOp('Pad', (node, inputs, ctx, opset) => {
  const x = inputs[0];
  if (!x) return null;
  const w = widthOf(x.dtype);
  const r = x.dims.length;
  const mode = attrStr(node, 'mode', 'constant');
  if (!w || !['constant', 'edge', 'reflect', 'wrap'].includes(mode)) return null;
  let pads: number[] | null;
  let fill: Uint8Array | null;
  let axes: number[] | null = null;
  if (opset < 11) {
    pads = (opset < 2 ? attrInts(node, 'paddings') : attrInts(node, 'pads')) ?? null;
    const v = node.attrs.get('value')?.value;
    fill = scalarBytes(x.dtype, undefined, typeof v === 'number' ? v : 0);
  } else {
    pads = constInts(inputs[1]);
    const cv = inputs[2];
    if (cv && !cv.constant) return null;
    fill = scalarBytes(x.dtype, cv?.constant && cv.constant.size > 0 ? cv.constant : undefined, 0);
    if (opset >= 18 && inputs[3]) {
      const a = constInts(inputs[3]);
      if (!a) return null;
      axes = [];
      for (const v of a) { const b = normAxis(v, r); if (b === null) return null; axes.push(b); }
    }
  }
  if (!pads || !fill) return null;
  axes ??= x.dims.map((_, i) => i);
  const k = axes.length;
  if (pads.length !== 2 * k) return null;
  const begins = new Array<number>(r).fill(0), ends = new Array<number>(r).fill(0);
  for (let i = 0; i < k; i++) { begins[axes[i]] = pads[i]; ends[axes[i]] = pads[i + k]; }
  const outDims: number[] = [], inner: number[] = [], srcStart: number[] = [], dstStart: number[] = [];
  for (let a = 0; a < r; a++) {
    const d = x.dims[a], pb = begins[a], pe = ends[a];
    const lo = Math.max(0, -pb);
    const de = d - lo - Math.max(0, -pe);
    const od = d + pb + pe;
    if (de < 0 || od < 0 || od > 2 ** 31) return null; // the reference reports the error (or refuses the size)
    outDims.push(od); inner.push(de); srcStart.push(lo); dstStart.push(Math.max(pb, 0));
  }
  if (mode !== 'constant') return planPadTable(x, w, begins, ends, mode, ctx);
  const outputs = [{ dtype: x.dtype, dims: outDims }];
  const n = prod(outDims);
  if (n === 0) return { outputs, launches: () => [] };
  const ept = Math.ceil(n / Math.min(taskCount(n * w, ctx.threads, 1 << 16), n));
  const fillK = genFill(w, fill, n, Math.ceil(ept / 16) * 16);
  const fillT = fillTasks(n, Math.ceil(ept / 16) * 16);
  const xs = stridesOf(x.dims), os = stridesOf(outDims);
  const params = copySpec(w, inner, xs, os, ctx.threads);
  const srcOff = srcStart.reduce((acc, s, a) => acc + s * xs[a], 0);
  const dstOff = dstStart.reduce((acc, s, a) => acc + s * os[a], 0);
  const copy = params ? copyLaunches([{ params, srcOff, dstOff, src: (b) => b.inputs[0], dst: (b) => b.outputs[0] }], w) : () => [];
  return {
    outputs,
    launches: (b) => [{ kernel: fillK, args: [b.outputs[0]], tasks: fillT }, ...copy(b)],
  };
});

/** edge / reflect / wrap Pad as a gather through per-axis source-offset tables (the reference's indexing). */
function planPadTable(x: ValueDesc, w: Width, begins: number[], ends: number[], mode: string, ctx: PlanContext): OpPlan | null {
  const r = x.dims.length;
  if (r === 0) return null;
  const st = stridesOf(x.dims);
  const outDims: number[] = [];
  const tables: Int32Array[] = [];
  for (let a = 0; a < r; a++) {
    const d = x.dims[a], pb = begins[a], pe = ends[a];
    const lo = Math.max(0, -pb);
    const de = d - lo - Math.max(0, -pe);
    const od = d + pb + pe;
    if (de < 0 || od < 0 || od > 2 ** 31 || (de === 0 && od > 0)) return null; // the reference reports the error
    const padB = Math.max(pb, 0);
    const tab = new Int32Array(od);
    for (let o = 0; o < od; o++) {
      let i = o - padB;
      if (i < 0 || i >= de) {
        if (mode === 'edge') i = i < 0 ? 0 : de - 1;
        else if (mode === 'wrap') i = ((i % de) + de) % de;
        else if (de === 1) i = 0;
        else {
          const per = 2 * (de - 1);
          i = ((i % per) + per) % per;
          if (i >= de) i = per - i;
        }
      }
      tab[o] = (lo + i) * st[a];
    }
    outDims.push(od);
    tables.push(tab);
  }
  const outputs = [{ dtype: x.dtype, dims: outDims }];
  if (prod(outDims) === 0) return { outputs, launches: () => [] };
  const packed = packTables(tables);
  const tkey = `pad:${mode}:${x.dims}:${begins}:${ends}`;
  const tp = ctx.constant('#pad-tables', tkey, () => packed);
  const rows = prod(outDims.slice(0, -1));
  const tasks = Math.min(rows, taskCount(prod(outDims) * w, ctx.threads, 1 << 16));
  const p = { w, dims: outDims, rpt: Math.ceil(rows / tasks) };
  const kernel = genTableGather(p);
  const t = tableGatherTasks(p);
  return { outputs, launches: (b) => [{ kernel, args: [b.inputs[0], b.outputs[0], tp], tasks: t }] };
}

// --- ConstantOfShape / Shape -------------------------------------------------------------------------

registerWasmOp('ConstantOfShape', (node, inputs, ctx) => {
  const shape = constInts(inputs[0]);
  if (!shape || shape.some((d) => d < 0 || !Number.isInteger(d))) return null;
  const a = node.attrs.get('value')?.value;
  const v = a instanceof Tensor ? a : undefined;
  if (v && v.size !== 1) return null;
  const dtype: DType = v ? v.type : 'float32';
  const w = widthOf(dtype);
  const bytes = scalarBytes(dtype, v, 0);
  if (!w || !bytes) return null;
  const outputs = [{ dtype, dims: shape }];
  const n = prod(shape);
  if (n === 0) return { outputs, launches: () => [] };
  const ept = Math.ceil(Math.ceil(n / Math.min(taskCount(n * w, ctx.threads, 1 << 16), n)) / 16) * 16;
  const k = genFill(w, bytes, n, ept);
  const t = fillTasks(n, ept);
  return { outputs, launches: (b) => [{ kernel: k, args: [b.outputs[0]], tasks: t }] };
});

/**
 * Range on int64 or int32 (the position ids of transformers): out[i] = start + i*delta, start and delta read at run
 * time, the length from the values the executor read at plan time (its plans are keyed by the length).
 */
registerWasmOp('Range', (node, inputs) => {
  const [s, l, d] = inputs;
  if (!s || !l || !d || node.domain !== '') return null;
  const dtype = s.dtype;
  if ((dtype !== 'int64' && dtype !== 'int32') || l.dtype !== dtype || d.dtype !== dtype) return null;
  const vals = [s, l, d].map((x) => constInts(x));
  if (vals.some((v) => !v || v.length !== 1)) return null;
  const [start, limit, delta] = vals.map((v) => v![0]);
  if (delta === 0) return null;
  const n = rangeCount(start, limit, delta);
  const outputs = [{ dtype, dims: [n] }];
  if (n === 0) return { outputs, launches: () => [] };
  const kernel = genRange(dtype === 'int64' ? 8 : 4, n);
  return { outputs, launches: (b) => [{ kernel, args: [b.inputs[0], b.inputs[2], b.outputs[0]], tasks: 1 }] };
});

registerWasmOp('Shape', (node, inputs, _ctx, opset) => {
  const x = inputs[0];
  if (!x) return null;
  const r = x.dims.length;
  let s = opset >= 15 ? attrInt(node, 'start', 0) : 0;
  let e = opset >= 15 && node.attrs.has('end') ? attrInt(node, 'end', r) : r;
  if (s < 0) s += r;
  if (e < 0) e += r;
  s = Math.min(Math.max(s, 0), r);
  e = Math.min(Math.max(e, 0), r);
  const dims = e > s ? x.dims.slice(s, e) : [];
  const outputs = [{ dtype: 'int64' as const, dims: [dims.length] }];
  if (dims.length === 0) return { outputs, launches: () => [] };
  const k = genStoreBytes(new Uint8Array(BigInt64Array.from(dims, (d) => BigInt(d)).buffer));
  return { outputs, launches: (b) => [{ kernel: k, args: [b.outputs[0]], tasks: 1 }] };
});

registerWasmOp('Size', (_node, inputs) => {
  const x = inputs[0];
  if (!x) return null;
  const outputs = [{ dtype: 'int64' as const, dims: [] as number[] }];
  const k = genStoreBytes(new Uint8Array(BigInt64Array.of(BigInt(prod(x.dims))).buffer));
  return { outputs, launches: (b) => [{ kernel: k, args: [b.outputs[0]], tasks: 1 }] };
});

// --- Gather ------------------------------------------------------------------------------------------

registerWasmOp('Gather', (node, inputs, ctx) => {
  const [x, ind] = inputs;
  if (!x || !ind || (ind.dtype !== 'int32' && ind.dtype !== 'int64')) return null;
  const w = widthOf(x.dtype);
  const r = x.dims.length;
  if (!w || r === 0) return null;
  const axis = normAxis(attrInt(node, 'axis', 0), r);
  if (axis === null) return null;
  const L = x.dims[axis];
  // Constant indices are checked here: out of range → the reference kernel reports the error.
  const c = constInts(ind);
  if (c && c.some((v) => v < -L || v >= L)) return null;
  const outer = prod(x.dims.slice(0, axis)), inner = prod(x.dims.slice(axis + 1)), nIdx = prod(ind.dims);
  const outDims = [...x.dims.slice(0, axis), ...ind.dims, ...x.dims.slice(axis + 1)];
  const outputs = [{ dtype: x.dtype, dims: outDims }];
  if (prod(outDims) === 0) return { outputs, launches: () => [] };
  const units = outer * nIdx;
  const tasks = Math.min(units, taskCount(units * inner * w, ctx.threads, 1 << 15));
  const p = { w, outer, axisLen: L, nIdx, inner, idx64: ind.dtype === 'int64', upt: Math.ceil(units / tasks) };
  const k = genGather(p);
  const t = gatherTasks(p);
  return { outputs, launches: (b) => [{ kernel: k, args: [b.inputs[0], b.inputs[1], b.outputs[0]], tasks: t }] };
});

// --- Resize (nearest) --------------------------------------------------------------------------------

/** The reference's index rule for one output position (null for a mode it does not know: the node falls back). */
function nearestSource(p: number, scale: number, inLen: number, outLen: number, coord: string, mode: string): number | null {
  try {
    return nearestIndex(sourceCoord(p, scale, inLen, outLen, 0, 1, coord), mode, scale < 1);
  } catch (e) {
    if (e instanceof UnsupportedError) return null;
    throw e;
  }
}

function constFloats(v: ValueDesc | undefined): number[] | null {
  const t = v?.constant;
  if (!t || (t.type !== 'float32' && t.type !== 'float64')) return null;
  return Array.from(t.data as Float32Array);
}

registerWasmOp('Resize', (node, inputs, ctx, opset) => {
  const x = inputs[0];
  if (!x || x.dtype !== 'float32' || x.dims.length === 0) return null;
  if (attrStr(node, 'mode', 'nearest') !== 'nearest') return null;
  const r = x.dims.length;
  let coord = 'asymmetric', nearestMode = 'simple';
  let scalesV: number[] | null = null, sizesV: number[] | null = null;
  if (opset < 11) {
    scalesV = constFloats(inputs[1]);
    if (!scalesV) return null;
  } else {
    coord = attrStr(node, 'coordinate_transformation_mode', 'half_pixel');
    nearestMode = attrStr(node, 'nearest_mode', 'round_prefer_floor');
    if (inputs[2] && prod(inputs[2].dims) > 0) { scalesV = constFloats(inputs[2]); if (!scalesV) return null; }
    if (inputs[3] && prod(inputs[3].dims) > 0) { sizesV = constInts(inputs[3]); if (!sizesV) return null; }
  }
  if (coord === 'tf_crop_and_resize' || (!scalesV && !sizesV) || (scalesV && sizesV)) return null;
  let axes = x.dims.map((_, i) => i);
  if (opset >= 18 && node.attrs.has('axes')) {
    const a = attrInts(node, 'axes') ?? [];
    const n: number[] = [];
    for (const v of a) { const b = normAxis(v, r); if (b === null) return null; n.push(b); }
    axes = n;
  }
  const k = axes.length;
  const scales = new Array<number>(r).fill(1);
  const outDims = x.dims.slice();
  if (scalesV) {
    if (scalesV.length !== k || scalesV.some((s) => !(s > 0))) return null;
    for (let i = 0; i < k; i++) { scales[axes[i]] = scalesV[i]; outDims[axes[i]] = Math.floor(scalesV[i] * x.dims[axes[i]]); }
  } else {
    if (sizesV!.length !== k) return null;
    if (opset >= 18 && attrStr(node, 'keep_aspect_ratio_policy', 'stretch') !== 'stretch') return null;
    for (let i = 0; i < k; i++) { outDims[axes[i]] = sizesV![i]; scales[axes[i]] = sizesV![i] / x.dims[axes[i]]; }
  }
  for (let a = 0; a < r; a++) {
    if (!(outDims[a] >= 0) || !Number.isInteger(outDims[a]) || (x.dims[a] === 0 && outDims[a] > 0)) return null;
  }
  const outputs = [{ dtype: x.dtype, dims: outDims }];
  if (prod(outDims) === 0) return { outputs, launches: () => [] };
  const st = stridesOf(x.dims);
  const tables: Int32Array[] = [];
  for (let a = 0; a < r; a++) {
    const tab = new Int32Array(outDims[a]);
    for (let p = 0; p < outDims[a]; p++) {
      const i = nearestSource(p, scales[a], x.dims[a], outDims[a], coord, nearestMode);
      if (i === null) return null;
      tab[p] = Math.min(Math.max(i, 0), x.dims[a] - 1) * st[a];
    }
    tables.push(tab);
  }
  const packed = packTables(tables);
  const tkey = `nearest:${x.dims}:${outDims}:${Array.from(new Int32Array(packed.buffer)).join(',')}`;
  const tp = ctx.constant('#resize-tables', tkey, () => packed);
  const rows = prod(outDims.slice(0, -1));
  const tasks = Math.min(rows, taskCount(prod(outDims) * 4, ctx.threads, 1 << 15));
  const p = { w: 4 as const, dims: outDims, rpt: Math.ceil(rows / tasks) };
  const kernel = genTableGather(p);
  const t = tableGatherTasks(p);
  return { outputs, launches: (b) => [{ kernel, args: [b.inputs[0], b.outputs[0], tp], tasks: t }] };
});
