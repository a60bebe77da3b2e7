// Helpers the fast backends' planners share: attribute readers, window geometry (strides, dilations, pads, output
// size), and batch-shape arithmetic (contiguous strides, broadcasting).
import type { Node } from '../graph/ir.js';
import type { Tensor } from '../tensor.js';
import { poolOutputShape } from '../ops/pool.js';
import { resolveAutoPad } from '../ops/conv.js';

export function attrInts(node: Node, name: string): number[] | undefined {
  const v = node.attrs.get(name)?.value;
  return Array.isArray(v) && v.every((x) => typeof x === 'number') ? (v as number[]) : undefined;
}
export function attrInt(node: Node, name: string, dflt: number): number {
  const v = node.attrs.get(name)?.value;
  return typeof v === 'number' ? v : dflt;
}
export function attrStr(node: Node, name: string, dflt: string): string {
  const v = node.attrs.get(name)?.value;
  return typeof v === 'string' ? v : dflt;
}

export interface Window { strides: number[]; dils: number[]; pads: number[]; outS: number[] }

/** strides, dilations and pads of a window op over `sp` spatial dims (defaults filled in), or null when invalid. */
function windowAttrs(node: Node, sp: number): Omit<Window, 'outS'> | null {
  const strides = attrInts(node, 'strides') ?? new Array<number>(sp).fill(1);
  const dils = attrInts(node, 'dilations') ?? new Array<number>(sp).fill(1);
  const pads = attrInts(node, 'pads') ?? new Array<number>(2 * sp).fill(0);
  if (strides.length !== sp || dils.length !== sp || pads.length !== 2 * sp) return null;
  if (strides.some((s) => s < 1) || dils.some((d) => d < 1) || pads.some((p) => p < 0)) return null;
  return { strides, dils, pads };
}

/** Conv's window as the reference computes it (auto_pad resolved); null when invalid or an output dim is < minOut. */
export function convWindow(node: Node, inS: number[], kS: number[], minOut = 1): Window | null {
  const w = windowAttrs(node, inS.length);
  if (!w) return null;
  const pads = resolveAutoPad(attrStr(node, 'auto_pad', 'NOTSET'), inS, kS, w.strides, w.dils, w.pads);
  if (!pads) return null;
  const sp = inS.length;
  const outS: number[] = [];
  for (let a = 0; a < sp; a++) {
    const o = Math.floor((inS[a] + pads[a] + pads[a + sp] - ((kS[a] - 1) * w.dils[a] + 1)) / w.strides[a]) + 1;
    if (o < minOut) return null;
    outS.push(o);
  }
  return { ...w, pads, outS };
}

/** A pool's window (auto_pad, ceil_mode) as the reference computes it; null when invalid. */
export function poolWindow(node: Node, inS: number[], kS: number[]): Window | null {
  const w = windowAttrs(node, inS.length);
  if (!w) return null;
  const shaped = poolOutputShape(inS, kS, w.strides, w.dils, w.pads, attrStr(node, 'auto_pad', 'NOTSET'), attrInt(node, 'ceil_mode', 0) !== 0);
  if (!shaped || shaped.outS.some((o) => o < 0)) return null;
  return { strides: w.strides, dils: w.dils, pads: shaped.pads, outS: shaped.outS };
}

/**
 * The MaxPool / AveragePool nodes both fast backends run: f32, NCHW of rank 3 or 4, no MaxPool Indices output, a
 * valid kernel_shape and window. Null otherwise (the node falls back).
 */
export function poolNodeGeometry(node: Node, x: { dtype: string; dims: number[] } | undefined, kind: 'max' | 'avg'):
  (Window & { sp: number; inS: number[]; kS: number[]; outDims: number[] }) | null {
  if (!x || x.dtype !== 'float32') return null;
  if (kind === 'max' && node.outputs.length > 1 && node.outputs[1] !== '') return null;
  const r = x.dims.length;
  if (r !== 3 && r !== 4) return null;
  const sp = r - 2;
  const inS = x.dims.slice(2);
  const kS = attrInts(node, 'kernel_shape');
  if (!kS || kS.length !== sp || kS.some((k) => k < 1)) return null;
  const w = poolWindow(node, inS, kS);
  if (!w) return null;
  return { ...w, sp, inS, kS, outDims: [x.dims[0], x.dims[1], ...w.outS] };
}

export function contiguous(dims: readonly number[]): number[] {
  const s = new Array<number>(dims.length);
  let acc = 1;
  for (let i = dims.length - 1; i >= 0; i--) { s[i] = acc; acc *= dims[i]; }
  return s;
}

/** Numpy broadcast of batch shapes, or null. */
export function broadcast(...shapes: (readonly number[])[]): number[] | null {
  const n = Math.max(0, ...shapes.map((s) => s.length));
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    let d = 1;
    for (const s of shapes) {
      const x = s[s.length - n + i] ?? 1;
      if (x === 1) continue;
      if (d !== 1 && d !== x) return null;
      d = x;
    }
    out.push(d);
  }
  return out;
}

/** Per output batch dim, the stride of an operand with batch dims `own` and strides `strides` (0 where it broadcasts). */
export function alignStrides(own: readonly number[], strides: readonly number[], out: readonly number[]): number[] {
  return out.map((_, i) => {
    const k = own.length - out.length + i;
    return k >= 0 && own[k] !== 1 ? strides[k] : 0;
  });
}

export function attrOf(node: Node, name: string): number | string | number[] | Tensor | undefined {
  return node.attrs.get(name)?.value as number | string | number[] | Tensor | undefined;
}

/** ReduceX's axes: the attribute before opset `inputFrom`, else input 1 (its plan-time value); 'dynamic' when unknown yet. */
export function reduceAxes(node: Node, inputs: ({ constant?: Tensor; value?: Tensor } | undefined)[], opset: number, inputFrom: number): number[] | null | 'dynamic' {
  if (opset < inputFrom) {
    const a = node.attrs.get('axes');
    if (!a || a.type !== 'ints') return null;
    const l = a.value as number[];
    return l.length ? l : null;
  }
  const t = inputs[1];
  if (!t) return null;
  const c = t.constant ?? t.value;
  if (!c) return 'dynamic';
  if (c.size === 0) return null;
  return Array.from(c.data as ArrayLike<number | bigint>, Number);
}

/**
 * A reduction's shape: which dims are reduced (all when `axes` is null), the output dims (kept as 1 with keepdims)
 * and the elements reduced per output. Null for an axis out of range or listed twice (the reference reports it).
 */
export function reduceShape(dims: readonly number[], axes: number[] | null, keep: boolean): { reduced: boolean[]; outDims: number[]; count: number } | null {
  const rank = dims.length;
  const reduced = new Array<boolean>(rank).fill(axes === null);
  for (const a of axes ?? []) {
    const n = a < 0 ? a + rank : a;
    if (n < 0 || n >= rank || reduced[n]) return null;
    reduced[n] = true;
  }
  const outDims: number[] = [];
  let count = 1;
  dims.forEach((d, i) => { if (reduced[i]) { count *= d; if (keep) outDims.push(1); } else outDims.push(d); });
  return { reduced, outDims, count };
}

/** How a norm's scale or bias applies to a row's elements: one value, per element of the row, or per row modulo C. */
export type ParamMode = 'none' | 'scalar' | 'row' | 'chan';

/** The reference's paramMap, restricted to what a row kernel indexes cheaply (other broadcasts return null). */
export function rowParam(p: { dtype: string; dims: number[] } | undefined, xdims: readonly number[], inner: number): ParamMode | null {
  if (!p) return 'none';
  if (p.dtype !== 'float32') return null;
  const n = p.dims.reduce((a, b) => a * b, 1);
  if (n === 1) return 'scalar';
  const pd = [...p.dims];
  while (pd.length > 0 && pd[0] === 1) pd.shift();
  if (n === inner && pd.length <= xdims.length && pd.every((d, i) => d === xdims[xdims.length - pd.length + i])) return 'row';
  return null;
}

/** Outputs a node asks for (trailing unnamed ones are optional outputs left out). */
export function wantedOutputs(node: Node): number {
  let n = node.outputs.length;
  while (n > 0 && !node.outputs[n - 1]) n--;
  return n;
}
