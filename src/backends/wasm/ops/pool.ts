// Wasm pooling (f32, NCHW, 1-D and 2-D): MaxPool (no Indices output), AveragePool, GlobalAveragePool, GlobalMaxPool.
import type { Node } from '../../../graph/ir.js';
import { genGlobalPool, genPool } from '../kernels/conv.js';
import { type OpPlan, type PlanContext, type ValueDesc, registerWasmOp, taskCount } from '../kernel.js';
import { geom2 } from './conv.js';
import { attrInt, poolNodeGeometry } from '../../op_attrs.js';

const prod = (v: readonly number[]) => v.reduce((a, b) => a * b, 1);

function planPool(node: Node, inputs: (ValueDesc | undefined)[], ctx: PlanContext, kind: 'max' | 'avg'): OpPlan | null {
  const x = inputs[0];
  const geo = poolNodeGeometry(node, x, kind);
  if (!x || !geo) return null;
  const { sp, inS, kS, strides, dils, pads, outS, outDims } = geo;
  const outputs = [{ dtype: 'float32' as const, dims: outDims }];
  if (prod(outDims) === 0) return { outputs, launches: () => [] };
  if (prod(x.dims) === 0) return null;
  const g = geom2(inS, kS, outS, strides, pads.slice(0, sp), dils);
  const planes = x.dims[0] * x.dims[1];
  const tasks = taskCount(planes * prod(outS) * prod(kS), ctx.threads, 1 << 14);
  const ppt = Math.ceil(planes / Math.min(tasks, planes));
  const countPad = kind === 'avg' && attrInt(node, 'count_include_pad', 0) !== 0;
  const padE = sp === 1 ? [0, pads[1]] : [pads[2], pads[3]];
  const kernel = genPool({ kind, planes, g, countPad, padEH: padE[0], padEW: padE[1], ppt });
  const nt = Math.ceil(planes / ppt);
  return { outputs, launches: (b) => [{ kernel, args: [b.inputs[0], b.outputs[0]], tasks: nt }] };
}

function planGlobal(inputs: (ValueDesc | undefined)[], ctx: PlanContext, kind: 'max' | 'avg'): OpPlan | null {
  const x = inputs[0];
  if (!x || x.dtype !== 'float32' || x.dims.length < 2) return null;
  const planes = x.dims[0] * x.dims[1], size = prod(x.dims.slice(2));
  const outputs = [{ dtype: 'float32' as const, dims: [x.dims[0], x.dims[1], ...x.dims.slice(2).map(() => 1)] }];
  if (planes === 0) return { outputs, launches: () => [] };
  if (size === 0) return null;
  const tasks = taskCount(planes * size, ctx.threads, 1 << 15);
  const ppt = Math.ceil(planes / Math.min(tasks, planes));
  const kernel = genGlobalPool(kind, planes, size, ppt);
  const nt = Math.ceil(planes / ppt);
  return { outputs, launches: (b) => [{ kernel, args: [b.inputs[0], b.outputs[0]], tasks: nt }] };
}

registerWasmOp('MaxPool', (node, inputs, ctx) => planPool(node, inputs, ctx, 'max'));
registerWasmOp('AveragePool', (node, inputs, ctx) => planPool(node, inputs, ctx, 'avg'));
registerWasmOp('GlobalAveragePool', (_node, inputs, ctx) => planGlobal(inputs, ctx, 'avg'));
registerWasmOp('GlobalMaxPool', (_node, inputs, ctx) => planGlobal(inputs, ctx, 'max'));
