// WebGPU Resize (opset 10+) and Upsample: nearest (every nearest_mode) and linear (up to 3 resized axes), with the
// per-axis source indices and weights computed at plan time as the reference computes them and uploaded as tables.
import type { Node } from '../../../graph/ir.js';
import { isFloat, sizeOf, type Tensor } from '../../../tensor.js';
import { nearestIndex, sourceCoord } from '../../../ops/resize.js';
import { intList } from '../../../ops/shape.js';
import { numbers } from '../../../ops/util.js';
import { GRID_PARAMS, LINEAR_GROUP, f32Lit, grid, i32Lit, registerGpuOp, storageDecls, storageType, type GpuOpPlan, type GpuPlanContext,
  type GpuValueDesc } from '../kernel.js';
import { attrInt, attrInts, attrStr } from './conv.js';

const u = (n: number) => `${n}u`;
const WG = 256;

interface ResizeSpec {
  mode: 'nearest' | 'linear'; coord: string; nearestMode: string; excludeOutside: boolean; extrapolation: number;
  outDims: number[]; scales: number[]; roi: number[];
}

function attrFloat(node: Node, name: string, dflt: number): number {
  const v = node.attrs.get(name)?.value;
  return typeof v === 'number' ? v : dflt;
}

/** A scales / sizes / roi input known at plan time (a model constant or a value the executor read), or null. */
function known(d: GpuValueDesc | undefined): Tensor | null | undefined {
  if (!d || sizeOf(d.dims) === 0) return undefined;
  return d.constant ?? d.value ?? null;
}

/** Resize's attributes and inputs resolved into output dims, per-axis scales and roi, as the reference does; null if unknown or unsupported. */
function resizeSpec(node: Node, inputs: (GpuValueDesc | undefined)[], opset: number, xDims: number[]): ResizeSpec | null {
  const r = xDims.length;
  const mode = attrStr(node, 'mode', 'nearest');
  if (mode !== 'nearest' && mode !== 'linear') return null;
  let coord = 'asymmetric', nearestMode = 'simple';
  let scalesT: Tensor | null | undefined, sizesT: Tensor | null | undefined, roiT: Tensor | null | undefined;
  if (opset < 11) {
    scalesT = known(inputs[1]);
  } else {
    coord = attrStr(node, 'coordinate_transformation_mode', 'half_pixel');
    nearestMode = attrStr(node, 'nearest_mode', 'round_prefer_floor');
    roiT = known(inputs[1]);
    scalesT = known(inputs[2]);
    sizesT = known(inputs[3]);
  }
  if (scalesT === null || sizesT === null || (scalesT && sizesT) || (!scalesT && !sizesT)) return null;
  if (mode === 'linear' && opset >= 18 && attrInt(node, 'antialias', 0) !== 0) return null;
  if (!['half_pixel', 'asymmetric', 'align_corners', 'pytorch_half_pixel', 'tf_half_pixel_for_nn', 'half_pixel_symmetric', 'tf_crop_and_resize'].includes(coord)) return null;
  if (!['round_prefer_floor', 'round_prefer_ceil', 'floor', 'ceil', 'simple'].includes(nearestMode)) return null;
  let axes = xDims.map((_, a) => a);
  if (opset >= 18 && node.attrs.has('axes')) {
    const given = attrInts(node, 'axes');
    if (!given) return null;
    axes = given.map((a) => (a < 0 ? a + r : a));
    if (axes.some((a) => a < 0 || a >= r) || new Set(axes).size !== axes.length) return null;
  }
  const k = axes.length;
  const scales = new Array<number>(r).fill(1);
  const outDims = xDims.slice();
  if (scalesT) {
    const s = Array.from(numbers(scalesT));
    if (s.length !== k || s.some((v) => !(v > 0))) return null;
    for (let a = 0; a < k; a++) { scales[axes[a]] = s[a]; outDims[axes[a]] = Math.floor(s[a] * xDims[axes[a]]); }
  } else {
    const sz = intList(sizesT!);
    if (sz.length !== k) return null;
    const policy = opset >= 18 ? attrStr(node, 'keep_aspect_ratio_policy', 'stretch') : 'stretch';
    if (policy === 'stretch') {
      for (let a = 0; a < k; a++) { outDims[axes[a]] = sz[a]; scales[axes[a]] = sz[a] / xDims[axes[a]]; }
    } else {
      if (policy !== 'not_larger' && policy !== 'not_smaller') return null;
      let sc = policy === 'not_larger' ? Infinity : -Infinity;
      for (let a = 0; a < k; a++) { const v = sz[a] / xDims[axes[a]]; sc = policy === 'not_larger' ? Math.min(sc, v) : Math.max(sc, v); }
      for (let a = 0; a < k; a++) { scales[axes[a]] = sc; outDims[axes[a]] = Math.floor(sc * xDims[axes[a]] + 0.5); }
    }
  }
  if (outDims.some((d, a) => !(d >= 0) || !Number.isInteger(d) || (xDims[a] === 0 && d > 0))) return null;
  const roi = [...new Array<number>(r).fill(0), ...new Array<number>(r).fill(1)];
  if (coord === 'tf_crop_and_resize') {
    if (!roiT) return null;
    const rv = Array.from(numbers(roiT));
    if (rv.length !== 2 * k) return null;
    for (let a = 0; a < k; a++) { roi[axes[a]] = rv[a]; roi[r + axes[a]] = rv[k + a]; }
  }
  return {
    mode, coord, nearestMode, excludeOutside: attrInt(node, 'exclude_outside', 0) !== 0,
    extrapolation: attrFloat(node, 'extrapolation_value', 0), outDims, scales, roi,
  };
}

/** Per-axis tables: nearest, one source offset per output position; linear, two (offset, weight) taps. Offset -1 = extrapolate. */
interface AxisTable { offsets: Int32Array; weights?: Float32Array }

function nearestTable(s: ResizeSpec, a: number, inLen: number, stride: number): AxisTable {
  const r = s.outDims.length, outLen = s.outDims[a];
  const offsets = new Int32Array(outLen);
  for (let p = 0; p < outLen; p++) {
    const xo = sourceCoord(p, s.scales[a], inLen, outLen, s.roi[a], s.roi[r + a], s.coord);
    offsets[p] = Number.isNaN(xo) ? -1 : Math.min(Math.max(nearestIndex(xo, s.nearestMode, s.scales[a] < 1), 0), inLen - 1) * stride;
  }
  return { offsets };
}

/** The reference's two linear taps (src/ops/resize.ts axisTaps without antialias). */
function linearTable(s: ResizeSpec, a: number, inLen: number, stride: number): AxisTable {
  const r = s.outDims.length, outLen = s.outDims[a];
  const offsets = new Int32Array(2 * outLen);
  const weights = new Float32Array(2 * outLen);
  for (let p = 0; p < outLen; p++) {
    const xo = sourceCoord(p, s.scales[a], inLen, outLen, s.roi[a], s.roi[r + a], s.coord);
    if (Number.isNaN(xo)) { offsets[2 * p] = offsets[2 * p + 1] = -1; continue; }
    const base = Number.isInteger(xo) ? xo - 1 : Math.floor(xo);
    const ratio = xo - base;
    const c = [1 - ratio, ratio];
    let sum = 0;
    for (let t = 0; t < 2; t++) {
      const idx = base + t;
      if (s.excludeOutside && (idx < 0 || idx >= inLen)) c[t] = 0;
      offsets[2 * p + t] = Math.min(Math.max(idx, 0), inLen - 1) * stride;
      sum += c[t];
    }
    for (let t = 0; t < 2; t++) weights[2 * p + t] = s.excludeOutside && sum !== 0 ? c[t] / sum : c[t];
  }
  return { offsets, weights };
}

/** A table that maps every output position onto the same input position (weight 1): the axis needs no lookup. */
function isIdentity(t: AxisTable, inLen: number, outLen: number, stride: number): boolean {
  if (inLen !== outLen) return false;
  const T = t.weights ? 2 : 1;
  for (let p = 0; p < outLen; p++) {
    for (let k = 0; k < T; k++) {
      const off = t.offsets[p * T + k], wt = t.weights ? t.weights[p * T + k] : 1;
      if (off < 0 || (wt !== 0 && !(off === p * stride && wt === 1))) return false;
    }
  }
  return true;
}

/** Most resized axes a linear kernel sums over (2^axes taps per output). */
const LINEAR_MAX_AXES = 3;

function planResize(s: ResizeSpec, x: GpuValueDesc, ctx: GpuPlanContext): GpuOpPlan | null {
  const st = storageType(x.dtype);
  if (st !== 'f32' && st !== 'i32' && st !== 'u32') return null;
  const linear = s.mode === 'linear';
  if (linear && x.dtype !== 'float32') return null;
  const outputs = [{ dtype: x.dtype, dims: s.outDims }];
  const total = sizeOf(s.outDims);
  if (total === 0) return { outputs, dispatches: [] };
  const r = x.dims.length;
  const inStrides: number[] = new Array(r);
  for (let a = r - 1, m = 1; a >= 0; a--) { inStrides[a] = m; m *= x.dims[a]; }
  const tables: ({ a: number; base: number; t: AxisTable } | null)[] = [];
  let count = 0;
  let extrapolates = false;
  for (let a = 0; a < r; a++) {
    const t = linear ? linearTable(s, a, x.dims[a], inStrides[a]) : nearestTable(s, a, x.dims[a], inStrides[a]);
    if (isIdentity(t, x.dims[a], s.outDims[a], inStrides[a])) { tables.push(null); continue; }
    if (t.offsets.includes(-1)) extrapolates = true;
    tables.push({ a, base: count, t });
    count += t.offsets.length;
  }
  const resized = tables.filter((t): t is { a: number; base: number; t: AxisTable } => t !== null);
  if (linear && resized.length > LINEAR_MAX_AXES) return null;
  if (extrapolates && (!isFloat(x.dtype) || !Number.isFinite(s.extrapolation))) return null;
  if (resized.length === 0) {
    // Same shape, every axis identity: a copy.
    return { outputs, dispatches: [{ code: copyKernel(st, total), bindings: [{ input: 0 }, { output: 0 }], groups: grid(Math.ceil(total / WG), ctx.caps.maxWorkgroupsPerDim) }] };
  }
  // Leading identity axes fold into one outer index.
  const first = resized[0].a;
  const offsets = new Int32Array(count), weights = new Float32Array(linear ? count : 0);
  for (const e of resized) { offsets.set(e.t.offsets, e.base); if (e.t.weights) weights.set(e.t.weights, e.base); }
  const key = JSON.stringify([s.mode, s.coord, s.nearestMode, s.excludeOutside, x.dims, s.outDims, s.scales, s.roi]);
  const offC = ctx.constant('#resize', `offsets:${key}`, () => offsets);
  const bindings = [{ input: 0 }, { constant: offC }];
  if (linear) bindings.push({ constant: ctx.constant('#resize', `weights:${key}`, () => weights) });
  const code = resizeKernel(s, st, x.dims, first, tables, extrapolates);
  return {
    outputs,
    dispatches: [{ code, bindings: [...bindings, { output: 0 }], groups: grid(Math.ceil(total / WG), ctx.caps.maxWorkgroupsPerDim) }],
  };
}

function copyKernel(st: string, total: number): string {
  return `${storageDecls([{ name: 'x', type: st }, { name: 'y', type: st, write: true }])}
@compute @workgroup_size(${WG})
fn main(${GRID_PARAMS}) {
  ${LINEAR_GROUP}
  let idx = group * ${u(WG)} + lid;
  if (idx < ${u(total)}) { y[idx] = x[idx]; }
}`;
}

/** One output per thread: its coordinates from the first resized axis on, then table lookups (and taps, linear). */
function resizeKernel(s: ResizeSpec, st: string, inDims: readonly number[], first: number,
  tables: ({ base: number; t: AxisTable } | null)[], extrapolates: boolean): string {
  const r = inDims.length, linear = s.mode === 'linear';
  const total = sizeOf(s.outDims);
  const lines: string[] = ['var rem = idx;'];
  for (let a = r - 1; a >= first; a--) {
    lines.push(`let c${a} = rem % ${u(s.outDims[a])};`, `rem = rem / ${u(s.outDims[a])};`);
  }
  // rem is now the outer index over the leading identity axes.
  const inner = sizeOf(inDims.slice(first));
  const fixed = ['i32(rem) * ' + i32Lit(inner)];
  for (let a = first; a < r; a++) {
    if (!tables[a]) fixed.push(`i32(c${a}) * ${i32Lit(sizeOf(inDims.slice(a + 1)))}`);
  }
  lines.push(`let base = ${fixed.join(' + ')};`);
  const resized = tables.map((t, a) => (t ? a : -1)).filter((a) => a >= 0);
  const extrap = st === 'f32' ? f32Lit(s.extrapolation) : i32Lit(s.extrapolation);
  if (!linear) {
    for (const a of resized) lines.push(`let o${a} = tab[${u(tables[a]!.base)} + c${a}];`);
    if (extrapolates) lines.push(`if (${resized.map((a) => `o${a} < 0i`).join(' || ')}) { y[idx] = ${extrap}; return; }`);
    lines.push(`y[idx] = x[u32(base + ${resized.map((a) => `o${a}`).join(' + ')})];`);
  } else {
    for (const a of resized) {
      const b = `${u(tables[a]!.base)} + 2u * c${a}`;
      lines.push(`let o${a}a = tab[${b}]; let o${a}b = tab[${b} + 1u]; let w${a}a = wt[${b}]; let w${a}b = wt[${b} + 1u];`);
    }
    if (extrapolates) lines.push(`if (${resized.map((a) => `o${a}a < 0i`).join(' || ')}) { y[idx] = ${extrap}; return; }`);
    const terms: string[] = [];
    for (let m = 0; m < 1 << resized.length; m++) {
      const pick = resized.map((a, k) => ((m >> k) & 1 ? 'b' : 'a'));
      const w = resized.map((a, k) => `w${a}${pick[k]}`).join(' * ');
      const off = resized.map((a, k) => `o${a}${pick[k]}`).join(' + ');
      terms.push(`${w} * x[u32(base + ${off})]`);
    }
    lines.push(`y[idx] = ${terms.join(' + ')};`);
  }
  const decls = storageDecls([
    { name: 'x', type: st }, { name: 'tab', type: 'i32' }, ...(linear ? [{ name: 'wt', type: 'f32' }] : []), { name: 'y', type: st, write: true },
  ]);
  return `${decls}
@compute @workgroup_size(${WG})
fn main(${GRID_PARAMS}) {
  ${LINEAR_GROUP}
  let idx = group * ${u(WG)} + lid;
  if (idx >= ${u(total)}) { return; }
  ${lines.join('\n  ')}
}`;
}

registerGpuOp('Resize', (node, inputs, ctx, opset) => {
  const x = inputs[0];
  if (!x || node.domain !== '' || opset < 10) return null;
  const s = resizeSpec(node, inputs, opset, x.dims);
  return s ? planResize(s, x, ctx) : null;
});

/** Upsample (opsets 7–9): Resize with asymmetric coordinates and 'simple' nearest rounding. */
registerGpuOp('Upsample', (node, inputs, ctx, opset) => {
  const x = inputs[0];
  if (!x || node.domain !== '') return null;
  const r = x.dims.length;
  let scales: number[] | undefined;
  if (opset < 9) {
    const v = node.attrs.get('scales')?.value;
    if (Array.isArray(v) && v.every((e) => typeof e === 'number')) scales = v as number[];
  } else {
    const t = known(inputs[1]);
    if (t) scales = Array.from(numbers(t));
  }
  if (!scales || scales.length !== r || scales.some((v) => !(v > 0))) return null;
  let mode = attrStr(node, 'mode', 'nearest');
  if (mode === 'bilinear') mode = 'linear';
  if (mode !== 'nearest' && mode !== 'linear') return null;
  const s: ResizeSpec = {
    mode, coord: 'asymmetric', nearestMode: 'simple', excludeOutside: false, extrapolation: 0,
    outDims: x.dims.map((d, a) => Math.floor(d * scales![a])), scales,
    roi: [...new Array<number>(r).fill(0), ...new Array<number>(r).fill(1)],
  };
  return planResize(s, x, ctx);
});
