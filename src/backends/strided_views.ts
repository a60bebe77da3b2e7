// Slice, Expand and Tile as strided reads of their input (the geometry both fast backends copy with), and the readers
// of the small integer inputs they take. A view: output dims, the walk's dims and source strides, a source offset.
import type { Node } from '../graph/ir.js';
import { Tensor } from '../tensor.js';
import { attrInts, contiguous } from './op_attrs.js';

export interface StridedView { outDims: number[]; dims: number[]; src: number[]; off: number }

/** Integer values of a tensor known at plan time (a model constant, or a value the executor read), else null. */
export function tensorInts(t: Tensor | undefined): number[] | null {
  if (!(t instanceof Tensor)) return null;
  switch (t.type) {
    case 'int64': case 'uint64': return Array.from(t.data as BigInt64Array, Number);
    case 'int32': case 'int16': case 'int8': case 'uint8': case 'uint16': case 'uint32': return Array.from(t.data as ArrayLike<number>);
    default: return null;
  }
}

/** The values of a plan-time input (its value read by the executor, or the model constant). */
export function planInts(v: { value?: Tensor; constant?: Tensor } | undefined): number[] | null {
  return tensorInts(v?.value ?? v?.constant);
}

export function normAxis(a: number, r: number): number | null {
  const b = a < 0 ? a + r : a;
  return Number.isInteger(b) && b >= 0 && b < r ? b : null;
}

/** Slice (attributes before opset 10, inputs after; negative steps too), or null for what the reference rejects. */
export function sliceView(node: Node, dims: number[], opset: number, inputs: ({ value?: Tensor; constant?: Tensor } | undefined)[]): StridedView | null {
  const r = dims.length;
  let starts: number[] | null, ends: number[] | null, axes: number[] | null = null, steps: number[] | null = null;
  if (opset < 10) {
    starts = attrInts(node, 'starts') ?? null;
    ends = attrInts(node, 'ends') ?? null;
    axes = attrInts(node, 'axes') ?? null;
  } else {
    starts = planInts(inputs[1]);
    ends = planInts(inputs[2]);
    if (inputs[3]) { axes = planInts(inputs[3]); if (!axes) return null; }
    if (inputs[4]) { steps = planInts(inputs[4]); if (!steps) return null; }
  }
  if (!starts || !ends || ends.length !== starts.length) return null;
  axes ??= starts.map((_, i) => i);
  steps ??= starts.map(() => 1);
  if (axes.length !== starts.length || steps.length !== starts.length) return null;
  const st = new Array<number>(r).fill(0), sp = new Array<number>(r).fill(1);
  const outDims = dims.slice();
  const seen = new Set<number>();
  for (let i = 0; i < axes.length; i++) {
    const a = normAxis(axes[i], r);
    if (a === null || seen.has(a)) return null;
    seen.add(a);
    const d = dims[a], step = steps[i];
    if (step === 0 || !Number.isFinite(step)) return null;
    let s = starts[i], e = ends[i], n: number;
    if (s < 0) s += d;
    if (e < 0) e += d;
    if (step > 0) {
      s = Math.min(Math.max(s, 0), d); e = Math.min(Math.max(e, 0), d);
      n = e > s ? Math.ceil((e - s) / step) : 0;
    } else {
      s = Math.min(Math.max(s, 0), d - 1); e = Math.min(Math.max(e, -1), d - 1);
      n = s > e ? Math.ceil((s - e) / -step) : 0;
    }
    st[a] = s; sp[a] = step; outDims[a] = n;
  }
  const xs = contiguous(dims);
  return { outDims, dims: outDims, src: xs.map((s, a) => s * sp[a]), off: st.reduce((acc, s, a) => acc + s * xs[a], 0) };
}

/** Expand to `shape` (numpy broadcasting both ways), or null. */
export function expandView(dims: number[], shape: number[]): StridedView | null {
  const rank = Math.max(dims.length, shape.length);
  const outDims: number[] = [];
  for (let i = 0; i < rank; i++) {
    const a = dims[dims.length - rank + i] ?? 1, b = shape[shape.length - rank + i] ?? 1;
    if (!Number.isInteger(b) || b < 0 || (a !== b && a !== 1 && b !== 1)) return null;
    outDims.push(a === 1 ? b : a);
  }
  const xs = contiguous(dims);
  const src = outDims.map((_, i) => {
    const ia = i - (rank - dims.length);
    return ia >= 0 && dims[ia] !== 1 ? xs[ia] : 0;
  });
  return { outDims, dims: outDims, src, off: 0 };
}

/** Tile by `reps`: each axis becomes (repeat, dim) with source strides (0, stride), the tiled output's row-major order. */
export function tileView(dims: number[], reps: number[]): StridedView | null {
  if (reps.length !== dims.length || reps.some((v) => v < 0 || !Number.isInteger(v))) return null;
  const xs = contiguous(dims);
  const walk: number[] = [], src: number[] = [];
  dims.forEach((d, i) => { walk.push(reps[i], d); src.push(0, xs[i]); });
  return { outDims: dims.map((d, i) => d * reps[i]), dims: walk, src, off: 0 };
}
