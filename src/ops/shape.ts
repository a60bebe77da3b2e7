// Reference kernels: shape manipulation and data movement (Reshape, Transpose, Concat, Split, Slice, Pad, ...).
// Data movement copies element storage directly (works for every dtype, strings and int64 included).
import { InputError, UnsupportedError } from '../errors.js';
import { DTYPES, isBig, OptionalValue, sizeOf, Tensor, TensorSequence, type DType, type TensorData } from '../tensor.js';
import { registerOp, type KernelContext } from './registry.js';
import { allocData, broadcastShape, clone, fromNumbers, input, numbers, optInput, stridesOf } from './util.js';

// --- private helpers (exported for the other files of this family) ----------------------------

/** Element storage indexable generically (typed arrays or string[]). */
export type Store = { [i: number]: unknown; length: number };

export function where(ctx: KernelContext, inp?: number) {
  return { node: ctx.node.name, op: ctx.node.opType, input: inp === undefined ? undefined : ctx.node.inputs[inp] };
}

/** New zeroed storage of `n` elements for `dtype` (complex types are not handled by this family). */
export function newStore(dtype: DType, n: number): TensorData {
  if (dtype === 'complex64' || dtype === 'complex128') throw new UnsupportedError(`${dtype} tensors are not supported by data-movement ops`);
  return allocData(dtype, n);
}

/** One element of `dtype` holding the number v, in storage form. */
export function encodeScalar(dtype: DType, v: number): unknown {
  if (dtype === 'string') return String(v);
  return (fromNumbers(dtype, [1], [v]).data as Store)[0];
}

/** Integer values of a small index/shape tensor (int64 decoded exactly enough for shapes). */
export function intList(t: Tensor): number[] {
  if (isBig(t.type)) {
    const d = t.data as BigInt64Array;
    const out = new Array<number>(d.length);
    for (let i = 0; i < d.length; i++) out[i] = Number(d[i]);
    return out;
  }
  return Array.from(numbers(t));
}

/** Copies `len` elements of src[srcOff..] to dst[dstOff..] (same dtype storage). */
export function copyRange(dst: TensorData, dstOff: number, src: TensorData, srcOff: number, len: number): void {
  if (Array.isArray(dst) || len < 32) {
    const d = dst as Store, s = src as Store;
    for (let i = 0; i < len; i++) d[dstOff + i] = s[srcOff + i];
  } else {
    (dst as Float32Array).set((src as Float32Array).subarray(srcOff, srcOff + len), dstOff);
  }
}

/**
 * Per-axis offset tables → the input offset of every output element (odometer over outDims).
 * A negative table entry marks "outside the input" and yields -1.
 */
export function tableIndex(outDims: readonly number[], tables: Int32Array[]): Int32Array {
  const n = sizeOf(outDims);
  const idx = new Int32Array(n);
  if (n === 0) return idx;
  const r = outDims.length;
  if (r === 0) return idx;
  const last = tables[r - 1];
  const inner = outDims[r - 1];
  const rows = n / inner;
  const ctr = new Int32Array(r);
  let p = 0;
  for (let row = 0; row < rows; row++) {
    let base = 0;
    let bad = false;
    for (let a = 0; a < r - 1; a++) {
      const v = tables[a][ctr[a]];
      if (v < 0) bad = true;
      base += v;
    }
    if (bad) {
      idx.fill(-1, p, p + inner);
      p += inner;
    } else {
      for (let j = 0; j < inner; j++) {
        const v = last[j];
        idx[p++] = v < 0 ? -1 : base + v;
      }
    }
    for (let a = r - 2; a >= 0; a--) {
      if (++ctr[a] < outDims[a]) break;
      ctr[a] = 0;
    }
  }
  return idx;
}

/** Builds a tensor of t's dtype whose element i is t[idx[i]] (or `fill` where idx[i] < 0). */
export function take(t: Tensor, outDims: readonly number[], idx: Int32Array, fill?: unknown): Tensor {
  const n = idx.length;
  const out = newStore(t.type, n) as Store;
  const src = t.data as Store;
  if (fill === undefined) {
    for (let i = 0; i < n; i++) out[i] = src[idx[i]];
  } else {
    for (let i = 0; i < n; i++) {
      const k = idx[i];
      out[i] = k < 0 ? fill : src[k];
    }
  }
  return new Tensor(t.type, out as TensorData, outDims);
}

/** Copy of t with other dims. */
export function reshaped(t: Tensor, dims: readonly number[]): Tensor {
  const d = t.data;
  return new Tensor(t.type, Array.isArray(d) ? [...d] : d.slice(), dims);
}

export function transposeT(t: Tensor, perm: readonly number[]): Tensor {
  const r = t.dims.length;
  const st = stridesOf(t.dims);
  const outDims = perm.map((p) => t.dims[p]);
  const tables: Int32Array[] = [];
  for (let a = 0; a < r; a++) {
    const tab = new Int32Array(outDims[a]);
    const s = st[perm[a]];
    for (let o = 0; o < outDims[a]; o++) tab[o] = o * s;
    tables.push(tab);
  }
  return take(t, outDims, tableIndex(outDims, tables));
}

function normAx(axis: number, rank: number, ctx: KernelContext, what = 'axis'): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) {
    throw new InputError(`${what} ${axis} is out of range for rank ${rank}`, where(ctx));
  }
  return a;
}

function checkPerm(perm: number[], rank: number, ctx: KernelContext): void {
  if (perm.length !== rank) throw new InputError(`perm [${perm}] has ${perm.length} entries, the input has rank ${rank}`, where(ctx));
  const seen = new Set<number>();
  for (const p of perm) {
    if (!Number.isInteger(p) || p < 0 || p >= rank || seen.has(p)) throw new InputError(`perm [${perm}] is not a permutation of 0..${rank - 1}`, where(ctx));
    seen.add(p);
  }
}

// --- Reshape / Flatten / Squeeze / Unsqueeze / Identity ------------------------------------------

registerOp('Reshape', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const shape = ctx.opset < 5 ? ctx.attr.ints('shape') : intList(input(inputs, 1, ctx));
  const allowzero = ctx.opset >= 14 ? ctx.attr.int('allowzero', 0) : 0;
  const dims = shape.slice();
  let neg = -1;
  let known = 1;
  for (let i = 0; i < dims.length; i++) {
    if (dims[i] === -1) {
      if (neg >= 0) throw new InputError(`shape [${shape}] has more than one -1`, where(ctx, 1));
      neg = i;
      continue;
    }
    if (dims[i] === 0 && !allowzero) {
      if (i >= x.dims.length) throw new InputError(`shape [${shape}] copies dimension ${i} (0) but the input has rank ${x.dims.length}`, where(ctx, 1));
      dims[i] = x.dims[i];
    }
    if (dims[i] < 0) throw new InputError(`shape [${shape}] has invalid dimension ${dims[i]}`, where(ctx, 1));
    known *= dims[i];
  }
  if (neg >= 0) {
    if (known === 0 || x.size % known !== 0) throw new InputError(`cannot reshape [${x.dims}] to [${shape}]`, where(ctx, 1));
    dims[neg] = x.size / known;
  }
  if (sizeOf(dims) !== x.size) throw new InputError(`cannot reshape [${x.dims}] (${x.size} elements) to [${shape}]`, where(ctx, 1));
  return [reshaped(x, dims)];
});

registerOp('Flatten', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const r = x.dims.length;
  let axis = ctx.attr.int('axis', 1);
  if (axis < 0) axis += r;
  if (axis < 0 || axis > r) throw new InputError(`axis ${ctx.attr.int('axis', 1)} is out of range for rank ${r}`, where(ctx));
  const a = sizeOf(x.dims.slice(0, axis));
  return [reshaped(x, [a, sizeOf(x.dims.slice(axis))])];
});

function axesArg(inputs: (unknown)[], ctx: KernelContext, attrUntil: number): number[] | undefined {
  if (ctx.opset < attrUntil) return ctx.attr.has('axes') ? ctx.attr.ints('axes') : undefined;
  const t = optInput(inputs as never, 1);
  return t ? intList(t) : undefined;
}

registerOp('Squeeze', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const r = x.dims.length;
  const axes = axesArg(inputs, ctx, 13);
  let dims: number[];
  if (!axes || axes.length === 0) dims = x.dims.filter((d) => d !== 1);
  else {
    const drop = new Set<number>();
    for (const a0 of axes) {
      const a = normAx(a0, r, ctx, 'axes entry');
      if (x.dims[a] !== 1) throw new InputError(`cannot squeeze axis ${a0}: its dimension is ${x.dims[a]}, not 1`, where(ctx));
      drop.add(a);
    }
    dims = x.dims.filter((_, i) => !drop.has(i));
  }
  return [reshaped(x, dims)];
});

registerOp('Unsqueeze', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const axes = axesArg(inputs, ctx, 13);
  if (!axes) throw new InputError('axes are required', where(ctx));
  const outRank = x.dims.length + axes.length;
  const ins = new Set<number>();
  for (const a0 of axes) {
    const a = normAx(a0, outRank, ctx, 'axes entry');
    if (ins.has(a)) throw new InputError(`axes [${axes}] repeat axis ${a}`, where(ctx));
    ins.add(a);
  }
  const dims: number[] = [];
  let k = 0;
  for (let i = 0; i < outRank; i++) dims.push(ins.has(i) ? 1 : x.dims[k++]);
  return [reshaped(x, dims)];
});

registerOp('Identity', (inputs, ctx) => {
  const v = inputs[0];
  if (v instanceof Tensor) return [clone(v)];
  if (v instanceof TensorSequence || v instanceof OptionalValue) return [v];
  return [input(inputs, 0, ctx)];
});

// --- Transpose / Concat / Split / Slice ----------------------------------------------------------

registerOp('Transpose', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const r = x.dims.length;
  const perm = ctx.attr.has('perm') ? ctx.attr.ints('perm') : x.dims.map((_, i) => r - 1 - i);
  checkPerm(perm, r, ctx);
  return [transposeT(x, perm)];
});

registerOp('Concat', (inputs, ctx) => {
  const xs: Tensor[] = [];
  for (let i = 0; i < inputs.length; i++) xs.push(input(inputs, i, ctx));
  if (xs.length === 0) throw new InputError('Concat needs at least one input', where(ctx));
  const r = xs[0].dims.length;
  const axis = normAx(ctx.opset < 4 ? ctx.attr.int('axis', 1) : ctx.attr.int('axis'), r, ctx);
  const type = xs[0].type;
  let total = 0;
  for (let i = 0; i < xs.length; i++) {
    const t = xs[i];
    if (t.type !== type) throw new InputError(`input ${i} has dtype ${t.type}, input 0 has ${type}`, where(ctx, i));
    if (t.dims.length !== r) throw new InputError(`input ${i} has rank ${t.dims.length}, input 0 has rank ${r}`, where(ctx, i));
    for (let d = 0; d < r; d++) {
      if (d !== axis && t.dims[d] !== xs[0].dims[d]) {
        throw new InputError(`input ${i} has shape [${t.dims}], incompatible with [${xs[0].dims}] on axis ${d}`, where(ctx, i));
      }
    }
    total += t.dims[axis];
  }
  const outDims = xs[0].dims.slice();
  outDims[axis] = total;
  const outer = sizeOf(outDims.slice(0, axis));
  const innerUnit = sizeOf(outDims.slice(axis + 1));
  const out = newStore(type, sizeOf(outDims));
  const rowOut = total * innerUnit;
  let colOff = 0;
  for (const t of xs) {
    const blk = t.dims[axis] * innerUnit;
    for (let o = 0; o < outer; o++) copyRange(out, o * rowOut + colOff, t.data, o * blk, blk);
    colOff += blk;
  }
  return [new Tensor(type, out, outDims)];
});

/** Copies the slab [start, start+len) along `axis`. */
function sliceAxis(t: Tensor, axis: number, start: number, len: number): Tensor {
  const outDims = t.dims.slice();
  outDims[axis] = len;
  const outer = sizeOf(t.dims.slice(0, axis));
  const inner = sizeOf(t.dims.slice(axis + 1));
  const out = newStore(t.type, sizeOf(outDims));
  const blk = len * inner;
  const rowIn = t.dims[axis] * inner;
  for (let o = 0; o < outer; o++) copyRange(out, o * blk, t.data, o * rowIn + start * inner, blk);
  return new Tensor(t.type, out, outDims);
}

/**
 * Split's part sizes when no `split` input is given: `n` parts (num_outputs from opset 18, which must equal the node's
 * outputs), the last one smaller where `d` does not divide (opset 18; earlier opsets need an even split). A reason
 * string when the node is malformed.
 */
export function evenSplit(d: number, n: number, nOut: number, opset: number): number[] | string {
  if (n !== nOut) return `num_outputs ${n} differs from the node's ${nOut} outputs`;
  if (n < 1) return `cannot split into ${n} parts`;
  if (opset < 18 && d % n !== 0) return `dimension ${d} does not split evenly into ${n} outputs`;
  const chunk = Math.ceil(d / n), split: number[] = [];
  for (let i = 0, left = d; i < n; i++) { const c = Math.max(0, Math.min(chunk, left)); split.push(c); left -= c; }
  return split;
}

registerOp('Split', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const r = x.dims.length;
  const axis = normAx(ctx.attr.int('axis', 0), r, ctx);
  const d = x.dims[axis];
  const nOut = ctx.node.outputs.length;
  let split: number[] | undefined;
  if (ctx.opset >= 13) {
    const s = optInput(inputs, 1);
    if (s) split = intList(s);
  } else {
    if (ctx.attr.has('split')) split = ctx.attr.ints('split');
    else if (ctx.opset < 2 && optInput(inputs, 1)) split = intList(optInput(inputs, 1)!);
  }
  if (split && split.length === 0) split = undefined;
  if (!split) {
    const n = ctx.opset >= 18 && ctx.attr.has('num_outputs') ? ctx.attr.int('num_outputs') : nOut;
    const even = evenSplit(d, n, nOut, ctx.opset);
    if (typeof even === 'string') throw new InputError(`${even} (axis ${axis})`, where(ctx));
    split = even;
  }
  let sum = 0;
  for (const s of split) {
    if (s < 0) throw new InputError(`split [${split}] has a negative entry`, where(ctx, 1));
    sum += s;
  }
  if (sum !== d) throw new InputError(`split [${split}] sums to ${sum}, but axis ${axis} has dimension ${d}`, where(ctx, 1));
  if (split.length !== nOut) throw new InputError(`split has ${split.length} parts but the node has ${nOut} outputs`, where(ctx, 1));
  const outs: Tensor[] = [];
  let start = 0;
  for (const s of split) { outs.push(sliceAxis(x, axis, start, s)); start += s; }
  return outs;
});

registerOp('Slice', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const r = x.dims.length;
  let starts: number[], ends: number[], axes: number[] | undefined, steps: number[] | undefined;
  if (ctx.opset < 10) {
    starts = ctx.attr.ints('starts');
    ends = ctx.attr.ints('ends');
    axes = ctx.attr.has('axes') ? ctx.attr.ints('axes') : undefined;
  } else {
    starts = intList(input(inputs, 1, ctx));
    ends = intList(input(inputs, 2, ctx));
    const a = optInput(inputs, 3);
    const s = optInput(inputs, 4);
    axes = a ? intList(a) : undefined;
    steps = s ? intList(s) : undefined;
  }
  if (ends.length !== starts.length) throw new InputError(`starts has ${starts.length} entries, ends has ${ends.length}`, where(ctx));
  if (!axes) axes = starts.map((_, i) => i);
  if (!steps) steps = starts.map(() => 1);
  if (axes.length !== starts.length || steps.length !== starts.length) throw new InputError('starts, ends, axes and steps must have the same length', where(ctx));
  const st = new Array<number>(r).fill(0);
  const sp = new Array<number>(r).fill(1);
  const outDims = x.dims.slice();
  const seen = new Set<number>();
  for (let i = 0; i < axes.length; i++) {
    const a = normAx(axes[i], r, ctx, 'axes entry');
    if (seen.has(a)) throw new InputError(`axes repeat axis ${a}`, where(ctx));
    seen.add(a);
    const d = x.dims[a];
    const step = steps[i];
    if (step === 0 || !Number.isFinite(step)) throw new InputError(`step for axis ${a} must be non-zero`, where(ctx));
    let s = starts[i], e = ends[i];
    if (s < 0) s += d;
    if (e < 0) e += d;
    let n: number;
    if (step > 0) {
      s = Math.min(Math.max(s, 0), d);
      e = Math.min(Math.max(e, 0), d);
      n = e > s ? Math.ceil((e - s) / step) : 0;
    } else {
      s = Math.min(Math.max(s, 0), d - 1);
      e = Math.min(Math.max(e, -1), d - 1);
      n = s > e ? Math.ceil((s - e) / -step) : 0;
    }
    st[a] = s;
    sp[a] = step;
    outDims[a] = n;
  }
  const strides = stridesOf(x.dims);
  const tables: Int32Array[] = [];
  for (let a = 0; a < r; a++) {
    const tab = new Int32Array(outDims[a]);
    for (let o = 0; o < outDims[a]; o++) tab[o] = (st[a] + o * sp[a]) * strides[a];
    tables.push(tab);
  }
  return [take(x, outDims, tableIndex(outDims, tables))];
});

// --- Expand / Tile / Pad / CenterCropPad ---------------------------------------------------------

export function expandTo(x: Tensor, outDims: readonly number[]): Tensor {
  const r = outDims.length;
  const st = stridesOf(x.dims);
  const tables: Int32Array[] = [];
  for (let a = 0; a < r; a++) {
    const ia = a - (r - x.dims.length);
    const tab = new Int32Array(outDims[a]);
    if (ia >= 0 && x.dims[ia] !== 1) for (let o = 0; o < outDims[a]; o++) tab[o] = o * st[ia];
    tables.push(tab);
  }
  return take(x, outDims, tableIndex(outDims, tables));
}

registerOp('Expand', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const shape = intList(input(inputs, 1, ctx));
  let outDims: number[];
  try {
    outDims = broadcastShape(x.dims, shape);
  } catch {
    throw new InputError(`input shape [${x.dims}] cannot be expanded to [${shape}]`, where(ctx, 1));
  }
  return [expandTo(x, outDims)];
});

registerOp('Tile', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const reps = intList(input(inputs, 1, ctx));
  const r = x.dims.length;
  if (reps.length !== r) throw new InputError(`repeats has ${reps.length} entries, the input has rank ${r}`, where(ctx, 1));
  for (const v of reps) if (v < 0 || !Number.isInteger(v)) throw new InputError(`repeats [${reps}] has invalid entry ${v}`, where(ctx, 1));
  const outDims = x.dims.map((d, i) => d * reps[i]);
  const st = stridesOf(x.dims);
  const tables: Int32Array[] = [];
  for (let a = 0; a < r; a++) {
    const tab = new Int32Array(outDims[a]);
    for (let o = 0; o < outDims[a]; o++) tab[o] = (o % x.dims[a]) * st[a];
    tables.push(tab);
  }
  return [take(x, outDims, tableIndex(outDims, tables))];
});

/** Pads (or crops, for negative pads) x; begins/ends per axis. */
export function padTensor(x: Tensor, begins: number[], ends: number[], mode: string, fill: unknown, ctx: KernelContext): Tensor {
  const r = x.dims.length;
  const st = stridesOf(x.dims);
  const outDims: number[] = [];
  const tables: Int32Array[] = [];
  for (let a = 0; a < r; a++) {
    const d = x.dims[a];
    const pb = begins[a], pe = ends[a];
    const lo = Math.max(0, -pb);
    const de = d - lo - Math.max(0, -pe);
    const od = d + pb + pe;
    if (de < 0 || od < 0) throw new InputError(`pads ${pb},${pe} crop more than axis ${a} of dimension ${d}`, where(ctx));
    const padB = Math.max(pb, 0);
    const tab = new Int32Array(od);
    if (de === 0 && od > de && mode !== 'constant') {
      throw new InputError(`cannot ${mode}-pad axis ${a} of dimension 0`, where(ctx));
    }
    for (let o = 0; o < od; o++) {
      let i = o - padB;
      if (i < 0 || i >= de) {
        if (mode === 'constant') { tab[o] = -1; continue; }
        if (mode === 'edge') i = i < 0 ? 0 : de - 1;
        else if (mode === 'wrap') i = ((i % de) + de) % de;
        else if (mode === 'reflect') {
          if (de === 1) i = 0;
          else {
            const per = 2 * (de - 1);
            i = ((i % per) + per) % per;
            if (i >= de) i = per - i;
          }
        } else throw new UnsupportedError(`pad mode '${mode}' is not supported`, where(ctx));
      }
      tab[o] = (lo + i) * st[a];
    }
    outDims.push(od);
    tables.push(tab);
  }
  return take(x, outDims, tableIndex(outDims, tables), mode === 'constant' ? fill : undefined);
}

registerOp('Pad', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const r = x.dims.length;
  const mode = ctx.attr.string('mode', 'constant');
  let pads: number[];
  let fill: unknown;
  let axes: number[] | undefined;
  if (ctx.opset < 11) {
    pads = ctx.opset < 2 ? ctx.attr.ints('paddings') : ctx.attr.ints('pads');
    fill = encodeScalar(x.type, ctx.attr.float('value', 0));
  } else {
    pads = intList(input(inputs, 1, ctx));
    const cv = optInput(inputs, 2);
    if (cv && cv.size > 0) {
      if (cv.type !== x.type) throw new InputError(`constant_value has dtype ${cv.type}, the input has ${x.type}`, where(ctx, 2));
      fill = (cv.data as Store)[0];
    } else fill = x.type === 'string' ? '' : (newStore(x.type, 1) as Store)[0];
    const ax = ctx.opset >= 18 ? optInput(inputs, 3) : undefined;
    if (ax) axes = intList(ax).map((a) => normAx(a, r, ctx, 'axes entry'));
  }
  if (!axes) axes = x.dims.map((_, i) => i);
  const k = axes.length;
  if (pads.length !== 2 * k) throw new InputError(`pads has ${pads.length} entries, expected ${2 * k}`, where(ctx, 1));
  const begins = new Array<number>(r).fill(0);
  const ends = new Array<number>(r).fill(0);
  for (let i = 0; i < k; i++) { begins[axes[i]] = pads[i]; ends[axes[i]] = pads[i + k]; }
  return [padTensor(x, begins, ends, mode, fill, ctx)];
});

registerOp('CenterCropPad', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const shape = intList(input(inputs, 1, ctx));
  const r = x.dims.length;
  const axes = ctx.attr.has('axes') ? ctx.attr.ints('axes').map((a) => normAx(a, r, ctx, 'axes entry')) : x.dims.map((_, i) => i);
  if (shape.length !== axes.length) throw new InputError(`shape has ${shape.length} entries, expected ${axes.length}`, where(ctx, 1));
  const begins = new Array<number>(r).fill(0);
  const ends = new Array<number>(r).fill(0);
  for (let i = 0; i < axes.length; i++) {
    const a = axes[i];
    const diff = shape[i] - x.dims[a];
    if (diff >= 0) { begins[a] = Math.floor(diff / 2); ends[a] = diff - begins[a]; }
    else { const c = -diff; begins[a] = -Math.floor(c / 2); ends[a] = -(c - Math.floor(c / 2)); }
  }
  const fill = x.type === 'string' ? '' : (newStore(x.type, 1) as Store)[0];
  return [padTensor(x, begins, ends, 'constant', fill, ctx)];
});

// --- Shape / Size / ConstantOfShape / Constant / Range / EyeLike / Trilu -------------------------

registerOp('Shape', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const r = x.dims.length;
  let s = ctx.opset >= 15 ? ctx.attr.int('start', 0) : 0;
  let e = ctx.opset >= 15 && ctx.attr.has('end') ? ctx.attr.int('end') : r;
  if (s < 0) s += r;
  if (e < 0) e += r;
  s = Math.min(Math.max(s, 0), r);
  e = Math.min(Math.max(e, 0), r);
  const dims = e > s ? x.dims.slice(s, e) : [];
  return [new Tensor('int64', BigInt64Array.from(dims, (d) => BigInt(d)), [dims.length])];
});

registerOp('Size', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  return [new Tensor('int64', BigInt64Array.of(BigInt(x.size)), [])];
});

registerOp('ConstantOfShape', (inputs, ctx) => {
  const shape = intList(input(inputs, 0, ctx));
  for (const d of shape) if (d < 0 || !Number.isInteger(d)) throw new InputError(`shape [${shape}] has invalid dimension ${d}`, where(ctx, 0));
  const v = ctx.attr.tensor('value');
  const type: DType = v ? v.type : 'float32';
  if (v && v.size !== 1) throw new InputError(`value must have exactly one element, has ${v.size}`, where(ctx));
  const n = sizeOf(shape);
  const out = newStore(type, n);
  if (v) {
    const e = (v.data as Store)[0];
    if (Array.isArray(out)) out.fill(e as string);
    else (out as Float32Array).fill(e as number);
  }
  return [new Tensor(type, out, shape)];
});

registerOp('Constant', (_inputs, ctx) => {
  const a = ctx.attr;
  if (a.has('value') || a.has('sparse_value')) {
    const t = a.tensor(a.has('value') ? 'value' : 'sparse_value');
    if (!t) throw new InputError('Constant has no value', where(ctx));
    return [clone(t)];
  }
  if (a.has('value_float')) return [new Tensor('float32', Float32Array.of(a.float('value_float')), [])];
  if (a.has('value_floats')) { const v = a.floats('value_floats'); return [new Tensor('float32', Float32Array.from(v), [v.length])]; }
  if (a.has('value_int')) return [new Tensor('int64', BigInt64Array.of(BigInt(a.int('value_int'))), [])];
  if (a.has('value_ints')) { const v = a.ints('value_ints'); return [new Tensor('int64', BigInt64Array.from(v, (x) => BigInt(x)), [v.length])]; }
  if (a.has('value_string')) return [new Tensor('string', [a.string('value_string')], [])];
  if (a.has('value_strings')) { const v = a.strings('value_strings'); return [new Tensor('string', [...v], [v.length])]; }
  throw new InputError('Constant has none of the value attributes', where(ctx));
});

/** Range's element count for number operands: max(ceil((limit - start) / delta), 0) (the Wasm backend plans by it). */
export const rangeCount = (start: number, limit: number, delta: number): number => Math.max(Math.ceil((limit - start) / delta), 0);

registerOp('Range', (inputs, ctx) => {
  const ts = [0, 1, 2].map((i) => input(inputs, i, ctx));
  const type = ts[0].type;
  for (let i = 0; i < 3; i++) {
    if (ts[i].size !== 1) throw new InputError(`input ${i} must be a scalar, has ${ts[i].size} elements`, where(ctx, i));
    if (ts[i].type !== type) throw new InputError(`input ${i} has dtype ${ts[i].type}, input 0 has ${type}`, where(ctx, i));
  }
  if (type === 'string' || type === 'bool') throw new UnsupportedError(`Range on ${type} is not supported`, where(ctx));
  if (isBig(type)) {
    const [s, l, d] = ts.map((t) => (t.data as BigInt64Array)[0]) as bigint[];
    if (d === 0n) throw new InputError('delta must be non-zero', where(ctx, 2));
    const diff = l - s;
    let n = diff / d;
    if (n * d !== diff && ((diff > 0n) === (d > 0n))) n += 1n;
    if (n < 0n) n = 0n;
    const cnt = Number(n);
    const out = newStore(type, cnt) as BigInt64Array;
    for (let i = 0; i < cnt; i++) out[i] = s + BigInt(i) * d;
    return [new Tensor(type, out, [cnt])];
  }
  const [s, l, d] = ts.map((t) => numbers(t)[0]);
  if (d === 0) throw new InputError('delta must be non-zero', where(ctx, 2));
  const cnt = rangeCount(s, l, d);
  if (!Number.isFinite(cnt)) throw new InputError(`Range(${s}, ${l}, ${d}) has no finite length`, where(ctx));
  const vals = new Float64Array(cnt);
  for (let i = 0; i < cnt; i++) vals[i] = s + i * d;
  return [fromNumbers(type, [cnt], vals)];
});

const ONNX_TO_DTYPE = new Map<number, DType>(Object.entries(DTYPES).map(([k, v]) => [v.onnx, k as DType]));

registerOp('EyeLike', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  if (x.dims.length !== 2) throw new InputError(`input must be 2-D, has shape [${x.dims}]`, where(ctx, 0));
  let type: DType = x.type;
  if (ctx.attr.has('dtype')) {
    const t = ONNX_TO_DTYPE.get(ctx.attr.int('dtype'));
    if (!t) throw new UnsupportedError(`dtype ${ctx.attr.int('dtype')} is unknown`, where(ctx));
    type = t;
  }
  if (type === 'string') throw new UnsupportedError('EyeLike of strings is not supported', where(ctx));
  const k = ctx.attr.int('k', 0);
  const [h, w] = x.dims;
  const out = newStore(type, h * w) as Store;
  const one = encodeScalar(type, 1);
  for (let i = 0; i < h; i++) {
    const j = i + k;
    if (j >= 0 && j < w) out[i * w + j] = one;
  }
  return [new Tensor(type, out as TensorData, [h, w])];
});

registerOp('Trilu', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const r = x.dims.length;
  if (r < 2) throw new InputError(`input must have rank >= 2, has shape [${x.dims}]`, where(ctx, 0));
  const kt = optInput(inputs, 1);
  const k = kt && kt.size > 0 ? intList(kt)[0] : 0;
  const upper = ctx.attr.int('upper', 1) !== 0;
  const h = x.dims[r - 2], w = x.dims[r - 1];
  const out = newStore(x.type, x.size) as Store;
  const src = x.data as Store;
  const mats = h * w === 0 ? 0 : x.size / (h * w);
  for (let m = 0; m < mats; m++) {
    const base = m * h * w;
    for (let i = 0; i < h; i++) {
      for (let j = 0; j < w; j++) {
        const keep = upper ? j - i >= k : j - i <= k;
        if (keep) out[base + i * w + j] = src[base + i * w + j];
      }
    }
  }
  return [new Tensor(x.type, out as TensorData, x.dims)];
});

// --- DepthToSpace / SpaceToDepth / ReverseSequence -----------------------------------------------

registerOp('DepthToSpace', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  if (x.dims.length !== 4) throw new InputError(`input must be 4-D, has shape [${x.dims}]`, where(ctx, 0));
  const b = ctx.attr.int('blocksize');
  const mode = ctx.opset >= 11 ? ctx.attr.string('mode', 'DCR') : 'DCR';
  const [n, c, h, w] = x.dims;
  if (b <= 0 || c % (b * b) !== 0) throw new InputError(`channels ${c} are not divisible by blocksize² (${b}²)`, where(ctx, 0));
  const c2 = c / (b * b);
  let t: Tensor;
  if (mode === 'DCR') t = transposeT(x.reshape([n, b, b, c2, h, w]), [0, 3, 4, 1, 5, 2]);
  else if (mode === 'CRD') t = transposeT(x.reshape([n, c2, b, b, h, w]), [0, 1, 4, 2, 5, 3]);
  else throw new UnsupportedError(`mode '${mode}' is not supported`, where(ctx));
  return [t.reshape([n, c2, h * b, w * b])];
});

registerOp('SpaceToDepth', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  if (x.dims.length !== 4) throw new InputError(`input must be 4-D, has shape [${x.dims}]`, where(ctx, 0));
  const b = ctx.attr.int('blocksize');
  const [n, c, h, w] = x.dims;
  if (b <= 0 || h % b !== 0 || w % b !== 0) throw new InputError(`spatial dims ${h}x${w} are not divisible by blocksize ${b}`, where(ctx, 0));
  const t = transposeT(x.reshape([n, c, h / b, b, w / b, b]), [0, 3, 5, 1, 2, 4]);
  return [t.reshape([n, c * b * b, h / b, w / b])];
});

registerOp('ReverseSequence', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const lens = intList(input(inputs, 1, ctx));
  const r = x.dims.length;
  if (r < 2) throw new InputError(`input must have rank >= 2, has shape [${x.dims}]`, where(ctx, 0));
  const bAx = normAx(ctx.attr.int('batch_axis', 1), r, ctx, 'batch_axis');
  const tAx = normAx(ctx.attr.int('time_axis', 0), r, ctx, 'time_axis');
  if (bAx === tAx) throw new InputError('batch_axis and time_axis must differ', where(ctx));
  const B = x.dims[bAx], T = x.dims[tAx];
  if (lens.length !== B) throw new InputError(`sequence_lens has ${lens.length} entries, the batch has ${B}`, where(ctx, 1));
  for (const l of lens) if (l < 0 || l > T) throw new InputError(`sequence length ${l} is out of range [0, ${T}]`, where(ctx, 1));
  const st = stridesOf(x.dims);
  const tables: Int32Array[] = x.dims.map((d, a) => {
    const tab = new Int32Array(d);
    for (let o = 0; o < d; o++) tab[o] = o * st[a];
    return tab;
  });
  const idx = tableIndex(x.dims, tables);
  // Fix up the time coordinate per element: decode (b, t) from the flat output index.
  const n = x.size;
  for (let i = 0; i < n; i++) {
    const b = Math.floor(i / st[bAx]) % B;
    const t = Math.floor(i / st[tAx]) % T;
    const l = lens[b];
    if (t < l) idx[i] += (l - 1 - 2 * t) * st[tAx];
  }
  return [take(x, x.dims, idx)];
});
