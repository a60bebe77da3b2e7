// WebGPU pooling (f32, NCHW): MaxPool (no Indices output) and AveragePool for 1-D and 2-D windows, one thread per
// output; GlobalAveragePool and GlobalMaxPool with a workgroup tree reduction per plane when planes are large.
import type { Node } from '../../../graph/ir.js';
import { sizeOf } from '../../../tensor.js';
import { GRID_PARAMS, LINEAR_GROUP, f32Lit, grid, registerGpuOp, storageDecls, type GpuOpPlan, type GpuPlanContext, type GpuValueDesc } from '../kernel.js';
import { attrInt, poolNodeGeometry } from '../../op_attrs.js';

const u = (n: number) => `${n}u`;
const i = (n: number) => `${n}i`;
/** -Inf at run time: WGSL rejects a constant expression whose value is infinite (so f32Lit(-Infinity) does not compile). */
const negInf = (runtimeU32: string) => `bitcast<f32>(0xff800000u | (${runtimeU32} & 0u))`;

interface PoolParams {
  kind: 'max' | 'avg'; planes: number; countPad: boolean;
  iH: number; iW: number; kH: number; kW: number; oH: number; oW: number;
  sH: number; sW: number; pH: number; pW: number; dH: number; dW: number; peH: number; peW: number;
}

/**
 * One output per thread. Max keeps the first window element and then only strictly larger ones (as the reference);
 * an empty window gives -Inf (max) or NaN (average, as 0/0).
 */
function poolKernel(p: PoolParams): string {
  const WG = 256;
  const total = p.planes * p.oH * p.oW;
  const max = p.kind === 'max';
  const take = max ? 'if (!any || v > best) { best = v; } any = true;' : 's += v;';
  // count_include_pad counts the window positions inside the padded input [-pad_begin, size + pad_end).
  const count = !max && p.countPad
    ? `var ch = 0u; var cw = 0u;
  for (var kh = 0u; kh < ${u(p.kH)}; kh++) { let ih = sh + i32(kh) * ${i(p.dH)}; ch += select(0u, 1u, ih >= ${i(-p.pH)} && ih < ${i(p.iH + p.peH)}); }
  for (var kw = 0u; kw < ${u(p.kW)}; kw++) { let iw = sw + i32(kw) * ${i(p.dW)}; cw += select(0u, 1u, iw >= ${i(-p.pW)} && iw < ${i(p.iW + p.peW)}); }
  let cnt = ch * cw;`
    : 'let cnt = vh * vw;';
  const result = max ? `select(${negInf('idx')}, best, any)` : 's / f32(cnt)';
  return `${storageDecls([{ name: 'x', type: 'f32' }, { name: 'y', type: 'f32', write: true }])}
@compute @workgroup_size(${WG})
fn main(${GRID_PARAMS}) {
  ${LINEAR_GROUP}
  let idx = group * ${u(WG)} + lid;
  if (idx >= ${u(total)}) { return; }
  let ow = idx % ${u(p.oW)};
  let rest = idx / ${u(p.oW)};
  let oh = rest % ${u(p.oH)};
  let xb = (rest / ${u(p.oH)}) * ${u(p.iH * p.iW)};
  let sh = i32(oh) * ${i(p.sH)} - ${i(p.pH)};
  let sw = i32(ow) * ${i(p.sW)} - ${i(p.pW)};
  var best = 0.0;
  var any = false;
  var s = 0.0;
  var vh = 0u;
  var vw = 0u;
  for (var kh = 0u; kh < ${u(p.kH)}; kh++) {
    let ih = sh + i32(kh) * ${i(p.dH)};
    if (u32(ih) >= ${u(p.iH)}) { continue; }
    vh++;
    vw = 0u;
    for (var kw = 0u; kw < ${u(p.kW)}; kw++) {
      let iw = sw + i32(kw) * ${i(p.dW)};
      if (u32(iw) >= ${u(p.iW)}) { continue; }
      vw++;
      let v = x[xb + u32(ih) * ${u(p.iW)} + u32(iw)];
      ${take}
    }
  }
  ${max ? '' : count}
  y[idx] = ${result};
}`;
}

function planPool(node: Node, inputs: (GpuValueDesc | undefined)[], ctx: GpuPlanContext, kind: 'max' | 'avg'): GpuOpPlan | null {
  const x = inputs[0];
  const geo = poolNodeGeometry(node, x, kind);
  if (!x || !geo) return null;
  const { sp, inS, kS, strides, dils, pads, outS } = geo;
  const outputs = [{ dtype: 'float32' as const, dims: geo.outDims }];
  const total = sizeOf(outputs[0].dims);
  if (total === 0) return { outputs, dispatches: [] };
  if (sizeOf(x.dims) === 0) return null;
  const two = (v: number[], fill: number) => (v.length === 1 ? [fill, v[0]] : [v[0], v[1]]);
  const [iH, iW] = two(inS, 1), [kH, kW] = two(kS, 1), [oH, oW] = two(outS, 1);
  const [sH, sW] = two(strides, 1), [dH, dW] = two(dils, 1), [pH, pW] = two(pads.slice(0, sp), 0), [peH, peW] = two(pads.slice(sp), 0);
  const code = poolKernel({
    kind, planes: x.dims[0] * x.dims[1], countPad: kind === 'avg' && attrInt(node, 'count_include_pad', 0) !== 0,
    iH, iW, kH, kW, oH, oW, sH, sW, pH, pW, dH, dW, peH, peW,
  });
  return { outputs, dispatches: [{ code, bindings: [{ input: 0 }, { output: 0 }], groups: grid(Math.ceil(total / 256), ctx.caps.maxWorkgroupsPerDim) }] };
}

/** Planes smaller than this reduce in one thread each; larger ones in workgroups of chunks. */
const GLOBAL_THREAD_MAX = 64;
/** Elements a workgroup reduces (16 per thread): larger planes are split and a second pass combines the chunks. */
const GLOBAL_CHUNK = 4096;

const combineOf = (max: boolean) => (a: string, b: string) => (max ? `max(${a}, ${b})` : `${a} + ${b}`);

/** One thread per row of `len` values (a plane, or a plane's chunk partials): combined, divided by `divisor` (average). */
function rowReduceKernel(max: boolean, rows: number, len: number, divisor: number): string {
  const WG = 256;
  const combine = combineOf(max);
  return `${storageDecls([{ name: 'x', type: 'f32' }, { name: 'y', type: 'f32', write: true }])}
@compute @workgroup_size(${WG})
fn main(${GRID_PARAMS}) {
  ${LINEAR_GROUP}
  let row = group * ${u(WG)} + lid;
  if (row >= ${u(rows)}) { return; }
  let b = row * ${u(len)};
  var a = x[b];
  for (var j = 1u; j < ${u(len)}; j++) { a = ${combine('a', 'x[b + j]')}; }
  y[row] = ${max ? 'a' : `a / ${f32Lit(divisor)}`};
}`;
}

/**
 * A workgroup per chunk of a plane (chunks per plane), with a tree reduction in workgroup memory. `divisor` finishes
 * an average in this pass (one chunk per plane); 0 leaves the partial for a second pass.
 */
function chunkReduceKernel(max: boolean, planes: number, size: number, chunks: number, WG: number, divisor: number): string {
  const combine = combineOf(max);
  const chunk = Math.ceil(size / chunks);
  const tree: string[] = [];
  for (let s = WG / 2; s >= 1; s /= 2) {
    tree.push(`if (lid < ${u(s)}) { part[lid] = ${combine('part[lid]', `part[lid + ${u(s)}]`)}; }\n  workgroupBarrier();`);
  }
  return `${storageDecls([{ name: 'x', type: 'f32' }, { name: 'y', type: 'f32', write: true }])}
var<workgroup> part: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(${GRID_PARAMS}) {
  ${LINEAR_GROUP}
  if (group >= ${u(planes * chunks)}) { return; }
  let plane = group / ${u(chunks)};
  let c0 = (group % ${u(chunks)}) * ${u(chunk)};
  let b = plane * ${u(size)};
  let end = b + min(c0 + ${u(chunk)}, ${u(size)});
  // Max starts from the chunk's first element (never empty), so idle threads need no -Inf.
  var a = ${max ? 'x[b + c0]' : '0.0'};
  for (var j = b + c0 + lid; j < end; j += ${u(WG)}) { a = ${combine('a', 'x[j]')}; }
  part[lid] = a;
  workgroupBarrier();
  ${tree.join('\n  ')}
  if (lid == 0u) { y[group] = ${max || !divisor ? 'part[0]' : `part[0] / ${f32Lit(divisor)}`}; }
}`;
}

function planGlobal(inputs: (GpuValueDesc | undefined)[], ctx: GpuPlanContext, kind: 'max' | 'avg'): GpuOpPlan | null {
  const x = inputs[0];
  if (!x || x.dtype !== 'float32' || x.dims.length < 2) return null;
  const planes = x.dims[0] * x.dims[1], size = sizeOf(x.dims.slice(2));
  const outputs = [{ dtype: 'float32' as const, dims: [x.dims[0], x.dims[1], ...x.dims.slice(2).map(() => 1)] }];
  if (planes === 0) return { outputs, dispatches: [] };
  if (size === 0) return null;
  const max = kind === 'max';
  const maxDim = ctx.caps.maxWorkgroupsPerDim;
  if (size < GLOBAL_THREAD_MAX) {
    return { outputs, dispatches: [{ code: rowReduceKernel(max, planes, size, size), bindings: [{ input: 0 }, { output: 0 }], groups: grid(Math.ceil(planes / 256), maxDim) }] };
  }
  const chunks = Math.ceil(size / GLOBAL_CHUNK);
  // Every chunk must start inside its plane (so max can start from its first element).
  if (Math.ceil(size / chunks) * (chunks - 1) >= size) return null;
  let WG = 32;
  while (WG < 256 && WG * 16 < Math.ceil(size / chunks)) WG *= 2;
  if (chunks === 1) {
    return { outputs, dispatches: [{ code: chunkReduceKernel(max, planes, size, 1, WG, size), bindings: [{ input: 0 }, { output: 0 }], groups: grid(planes, maxDim) }] };
  }
  return {
    outputs,
    scratchBytes: [planes * chunks * 4],
    dispatches: [
      { code: chunkReduceKernel(max, planes, size, chunks, WG, 0), bindings: [{ input: 0 }, { scratch: 0 }], groups: grid(planes * chunks, maxDim) },
      { code: rowReduceKernel(max, planes, chunks, size), bindings: [{ scratch: 0 }, { output: 0 }], groups: grid(Math.ceil(planes / 256), maxDim) },
    ],
  };
}

registerGpuOp('MaxPool', (node, inputs, ctx) => planPool(node, inputs, ctx, 'max'));
registerGpuOp('AveragePool', (node, inputs, ctx) => planPool(node, inputs, ctx, 'avg'));
registerGpuOp('GlobalAveragePool', (_node, inputs, ctx) => planGlobal(inputs, ctx, 'avg'));
registerGpuOp('GlobalMaxPool', (_node, inputs, ctx) => planGlobal(inputs, ctx, 'max'));
