// Shape and type inference over the graph IR: static dims where they follow, symbolic names carried through.
import type { Dim, Graph, Model, Node, ValueType } from './ir.js';
import { topoOrder } from './topo.js';
import { dtypeFromOnnx, type DType, Tensor } from '../tensor.js';

type TT = { dtype: DType | null; shape: Dim[] | null };

const UNARY = new Set(('Abs Acos Acosh Asin Asinh Atan Atanh Ceil Celu Cos Cosh Elu Erf Exp Floor Gelu HardSigmoid HardSwish ' +
  'Identity LeakyRelu Log Mish Neg Not Reciprocal Relu Round Selu Shrink Sigmoid Sign Sin Sinh Softplus Softsign Sqrt Swish Tan Tanh ' +
  'ThresholdedRelu Softmax LogSoftmax Hardmax Clip Dropout BatchNormalization InstanceNormalization LayerNormalization ' +
  'RMSNormalization GroupNormalization LpNormalization MeanVarianceNormalization LRN CumSum CumProd BitwiseNot Trilu').split(' '));
const BINARY = new Set('Add Sub Mul Div Pow Mod PRelu BitShift BitwiseAnd BitwiseOr BitwiseXor Max Min Sum Mean'.split(' '));
const COMPARE = new Set('Equal Less LessOrEqual Greater GreaterOrEqual And Or Xor'.split(' '));
const BOOL_UNARY = new Set(['IsNaN', 'IsInf']);

/** Infers the type of every value it can and records it in graph.valueInfo (declared types win). */
export function inferShapes(model: Model): Map<string, ValueType> {
  return inferGraph(model.graph, model.opsets.get('') ?? 1);
}

export function inferGraph(g: Graph, opset: number): Map<string, ValueType> {
  const types = new Map<string, TT>();
  const consts = new Map<string, Tensor>(g.initializers);
  // Small integer tensors (shapes being computed in the graph) tracked element by element, symbolically.
  const vals = new Map<string, Dim[]>();
  const track = (name: string, t: Tensor) => {
    if ((t.type === 'int64' || t.type === 'int32') && t.dims.length <= 1 && t.size <= 64) vals.set(name, Array.from(t.data as ArrayLike<number | bigint>, Number));
  };
  for (const [k, t] of g.initializers) track(k, t);
  for (const [k, t] of g.initializers) types.set(k, { dtype: t.type, shape: [...t.dims] });
  for (const v of [...g.inputs, ...g.valueInfo.values()]) {
    if (v.type?.kind === 'tensor') types.set(v.name, { dtype: v.type.dtype, shape: v.type.shape ? [...v.type.shape] : null });
  }
  for (const n of topoOrder(g)) {
    let outs: (TT | null)[] = [];
    try {
      const valIn = (i: number) => vals.get(n.inputs[i] ?? '') ?? null;
      outs = inferNode(n, n.inputs.map((x) => (x ? types.get(x) ?? null : null)), valIn, opset);
      const v = trackNode(n, n.inputs.map((x) => (x ? types.get(x) ?? null : null)), valIn);
      if (v && n.outputs[0]) vals.set(n.outputs[0], v);
    } catch {
      outs = [];
    }
    if (n.opType === 'Constant') {
      const v = n.attrs.get('value')?.value;
      if (v instanceof Tensor) { consts.set(n.outputs[0], v); track(n.outputs[0], v); }
      else if (n.attrs.has('value_int')) vals.set(n.outputs[0], [n.attrs.get('value_int')!.value as number]);
      else if (n.attrs.has('value_ints')) vals.set(n.outputs[0], [...(n.attrs.get('value_ints')!.value as number[])]);
    }
    n.outputs.forEach((o, i) => {
      if (!o || g.valueInfo.has(o)) return;
      const t = outs[i];
      if (t) types.set(o, t);
    });
  }
  const result = new Map<string, ValueType>();
  for (const [k, t] of types) {
    result.set(k, { kind: 'tensor', dtype: t.dtype, shape: t.shape });
    if (!g.valueInfo.has(k) && !g.initializers.has(k)) g.valueInfo.set(k, { name: k, type: { kind: 'tensor', dtype: t.dtype, shape: t.shape } });
  }
  return result;
}

/** webjit's fused nodes carry their original nodes as a 'graph' attribute: their types follow from it. */
function inferFused(n: Node, ins: (TT | null)[], opset: number): (TT | null)[] {
  const sub = n.attrs.get('graph')?.value as Graph | undefined;
  if (!sub || typeof sub !== 'object' || !Array.isArray((sub as Graph).nodes)) return [];
  const g: Graph = {
    ...sub,
    inputs: sub.inputs.map((v, i) => ({ name: v.name, type: ins[i] ? { kind: 'tensor' as const, dtype: ins[i]!.dtype, shape: ins[i]!.shape } : v.type })),
    valueInfo: new Map(),
  };
  const t = inferGraph(g, opset);
  return sub.outputs.map((o) => { const v = t.get(o.name); return v?.kind === 'tensor' ? { dtype: v.dtype, shape: v.shape } : null; });
}

/** Tracked values as plain numbers, or null where any element is unknown or symbolic. */
const ints = (v: Dim[] | null): number[] | null => (v && v.every((d) => typeof d === 'number') ? (v as number[]) : null);

/** Symbolic evaluation of shape arithmetic: Shape, Gather, Concat, Slice, Unsqueeze, Cast, Range... */
function trackNode(n: Node, ins: (TT | null)[], valIn: (i: number) => Dim[] | null): Dim[] | null {
  const a = (name: string) => n.attrs.get(name)?.value;
  const v0 = valIn(0);
  switch (n.opType) {
    case 'Shape': {
      const sh = ins[0]?.shape;
      if (!sh) return null;
      const r = sh.length;
      const st = Math.max(0, Math.min(r, wrap((a('start') as number) ?? 0, r)));
      const en = Math.max(0, Math.min(r, wrap((a('end') as number) ?? r, r)));
      return sh.slice(st, en);
    }
    case 'Cast': case 'Identity': case 'Squeeze': case 'Unsqueeze': case 'Reshape': case 'Flatten':
      return v0;
    case 'Gather': {
      const idx = ints(valIn(1));
      if (!v0 || !idx) return null;
      return idx.map((i) => v0[norm(i, v0.length)] ?? null);
    }
    case 'Concat': {
      const parts = n.inputs.map((_, i) => valIn(i));
      return parts.every(Boolean) ? (parts as Dim[][]).flat() : null;
    }
    case 'Slice': {
      const st = ints(valIn(1)), en = ints(valIn(2));
      if (!v0 || !st || !en || n.inputs[3] || n.inputs[4]) return null;
      const L = v0.length;
      const s0 = Math.max(0, Math.min(L, wrap(st[0], L))), e0 = Math.max(0, Math.min(L, en[0] < 0 ? en[0] + L : en[0]));
      return v0.slice(s0, e0);
    }
    case 'Add': case 'Sub': case 'Mul': case 'Div': {
      const v1 = valIn(1);
      if (!v0 || !v1) return null;
      const len = Math.max(v0.length, v1.length);
      const out: Dim[] = [];
      for (let i = 0; i < len; i++) {
        const x = v0[v0.length === 1 ? 0 : i], y = v1[v1.length === 1 ? 0 : i];
        if (typeof x === 'number' && typeof y === 'number') {
          out.push(n.opType === 'Add' ? x + y : n.opType === 'Sub' ? x - y : n.opType === 'Mul' ? x * y : Math.trunc(x / y));
        } else if (n.opType === 'Mul' && (x === 1 || y === 1)) out.push(x === 1 ? y : x);
        else if ((n.opType === 'Add' || n.opType === 'Sub') && y === 0) out.push(x);
        else if (n.opType === 'Div' && y === 1) out.push(x);
        else out.push(null);
      }
      return out;
    }
    default:
      return null;
  }
}

function broadcast(shapes: (Dim[] | null)[]): Dim[] | null {
  if (shapes.some((s) => s === null)) return null;
  const ss = shapes as Dim[][];
  const rank = Math.max(...ss.map((s) => s.length));
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    let d: Dim = 1;
    for (const s of ss) {
      const x = s[s.length - rank + i];
      if (x === undefined || x === 1) continue;
      if (d === 1) d = x;
      else if (d !== x) d = typeof d === 'number' && typeof x === 'number' ? NaN : typeof x === 'number' ? x : typeof d === 'number' ? d : null;
    }
    if (Number.isNaN(d)) throw new Error('incompatible');
    out.push(d);
  }
  return out;
}

/** An axis attribute in [-r, r) as an index; anything else (a malformed model) gives no inferred type (the kernel reports it). */
const norm = (a: number, r: number) => {
  if (!Number.isInteger(a) || a < -r || a >= r) throw new RangeError(`axis ${a} out of range for rank ${r}`);
  return a < 0 ? a + r : a;
};
/** A start or end index that the op clamps into [0, r] afterwards (Shape, Slice): any integer is valid. */
const wrap = (a: number, r: number) => (a < 0 ? a + r : a);

function inferNode(n: Node, ins: (TT | null)[], constIn: (i: number) => Dim[] | null, opset: number): (TT | null)[] {
  const a = (name: string) => n.attrs.get(name)?.value;
  const x = ins[0];
  const op = n.opType;
  if (n.domain === 'webjit') return inferFused(n, ins, opset);
  if (n.domain !== '') return [];
  if (UNARY.has(op)) return [x ? { ...x } : null];
  if (BOOL_UNARY.has(op)) return [x ? { dtype: 'bool', shape: x.shape } : null];
  if (BINARY.has(op)) return [{ dtype: ins[0]?.dtype ?? null, shape: broadcast(ins.map((t) => t?.shape ?? null)) }];
  if (COMPARE.has(op)) return [{ dtype: 'bool', shape: broadcast(ins.map((t) => t?.shape ?? null)) }];
  switch (op) {
    case 'Range': {
      const st = ins[0]?.dtype ?? null;
      const [s0, l0, d0] = [constIn(0)?.[0], constIn(1)?.[0], constIn(2)?.[0]];
      let len: Dim = null;
      if (typeof s0 === 'number' && typeof l0 === 'number' && typeof d0 === 'number') len = Math.max(0, Math.ceil((l0 - s0) / d0));
      else if (s0 === 0 && d0 === 1 && l0 !== undefined) len = l0;
      return [{ dtype: st, shape: [len] }];
    }
    case 'Where': return [{ dtype: ins[1]?.dtype ?? null, shape: broadcast(ins.map((t) => t?.shape ?? null)) }];
    case 'Cast': return [{ dtype: dtypeFromOnnx(a('to') as number), shape: x?.shape ?? null }];
    case 'CastLike': return [{ dtype: ins[1]?.dtype ?? null, shape: x?.shape ?? null }];
    case 'Constant': {
      const v = a('value');
      if (v instanceof Tensor) return [{ dtype: v.type, shape: [...v.dims] }];
      if (n.attrs.has('value_float')) return [{ dtype: 'float32', shape: [] }];
      if (n.attrs.has('value_int')) return [{ dtype: 'int64', shape: [] }];
      if (n.attrs.has('value_floats')) return [{ dtype: 'float32', shape: [(a('value_floats') as number[]).length] }];
      if (n.attrs.has('value_ints')) return [{ dtype: 'int64', shape: [(a('value_ints') as number[]).length] }];
      return [];
    }
    case 'Shape': {
      if (!x?.shape) return [{ dtype: 'int64', shape: [null] }];
      const r = x.shape.length;
      const s = Math.max(0, Math.min(r, wrap((a('start') as number) ?? 0, r)));
      const e = Math.max(0, Math.min(r, wrap((a('end') as number) ?? r, r)));
      return [{ dtype: 'int64', shape: [Math.max(0, e - s)] }];
    }
    case 'Size': return [{ dtype: 'int64', shape: [] }];
    case 'MatMul': case 'MatMulInteger': {
      const b = ins[1];
      const dtype = op === 'MatMulInteger' ? 'int32' : x?.dtype ?? null;
      if (!x?.shape || !b?.shape) return [{ dtype, shape: null }];
      const A = x.shape.length === 1 ? [1, x.shape[0]] : x.shape;
      const B = b.shape.length === 1 ? [b.shape[0], 1] : b.shape;
      const batch = broadcast([A.slice(0, -2), B.slice(0, -2)])!;
      const out = [...batch, A[A.length - 2], B[B.length - 1]];
      if (x.shape.length === 1) out.splice(out.length - 2, 1);
      if (b.shape.length === 1) out.pop();
      return [{ dtype, shape: out }];
    }
    case 'Gemm': {
      const b = ins[1];
      if (!x?.shape || !b?.shape) return [{ dtype: x?.dtype ?? null, shape: null }];
      const m = a('transA') ? x.shape[1] : x.shape[0];
      const nn = a('transB') ? b.shape[0] : b.shape[1];
      return [{ dtype: x.dtype, shape: [m, nn] }];
    }
    case 'Transpose': {
      if (!x?.shape) return [{ dtype: x?.dtype ?? null, shape: null }];
      const perm = (a('perm') as number[] | undefined) ?? x.shape.map((_, i) => x.shape!.length - 1 - i);
      return [{ dtype: x.dtype, shape: perm.map((p) => x.shape![p]) }];
    }
    case 'Reshape': {
      const s = constIn(1);
      if (!s) return [{ dtype: x?.dtype ?? null, shape: null }];
      const allowzero = a('allowzero') === 1;
      const out: Dim[] = s.map((d, i) => (d === 0 && !allowzero ? x?.shape?.[i] ?? null : d === -1 ? null : d));
      const k = s.indexOf(-1);
      if (k >= 0 && x?.shape && x.shape.every((d) => typeof d === 'number') && out.every((d, i) => i === k || typeof d === 'number')) {
        const total = (x.shape as number[]).reduce((p, q) => p * q, 1);
        const rest = (out.filter((_, i) => i !== k) as number[]).reduce((p, q) => p * q, 1);
        out[k] = rest ? total / rest : 0;
      }
      return [{ dtype: x?.dtype ?? null, shape: out }];
    }
    case 'Flatten': {
      if (!x?.shape) return [{ dtype: x?.dtype ?? null, shape: [null, null] }];
      const ax = norm((a('axis') as number) ?? 1, x.shape.length);
      const prod = (ds: Dim[]) => (ds.every((d) => typeof d === 'number') ? (ds as number[]).reduce((p, q) => p * q, 1) : null);
      return [{ dtype: x.dtype, shape: [prod(x.shape.slice(0, ax)), prod(x.shape.slice(ax))] }];
    }
    case 'Unsqueeze': case 'Squeeze': {
      const axes = opset >= 13 ? ints(constIn(1)) : ((a('axes') as number[] | undefined) ?? null);
      if (!x?.shape) return [{ dtype: x?.dtype ?? null, shape: null }];
      if (op === 'Unsqueeze') {
        if (!axes) return [{ dtype: x.dtype, shape: null }];
        const r = x.shape.length + axes.length;
        const set = new Set(axes.map((v) => norm(v, r)));
        const out: Dim[] = [];
        let j = 0;
        for (let i = 0; i < r; i++) out.push(set.has(i) ? 1 : x.shape[j++]);
        return [{ dtype: x.dtype, shape: out }];
      }
      const set = new Set((axes ?? x.shape.map((d, i) => (d === 1 ? i : -1)).filter((i) => i >= 0)).map((v) => norm(v, x.shape!.length)));
      if (!axes && x.shape.some((d) => typeof d !== 'number')) return [{ dtype: x.dtype, shape: null }];
      return [{ dtype: x.dtype, shape: x.shape.filter((_, i) => !set.has(i)) }];
    }
    case 'Concat': {
      if (ins.some((t) => !t?.shape)) return [{ dtype: x?.dtype ?? null, shape: null }];
      const r = x!.shape!.length;
      const ax = norm(a('axis') as number, r);
      const out = [...x!.shape!];
      let sum: Dim = 0;
      for (const t of ins) { const d = t!.shape![ax]; sum = typeof sum === 'number' && typeof d === 'number' ? sum + d : null; }
      out[ax] = sum;
      return [{ dtype: x!.dtype, shape: out }];
    }
    case 'Gather': {
      const idx = ins[1];
      if (!x?.shape || !idx?.shape) return [{ dtype: x?.dtype ?? null, shape: null }];
      const ax = norm((a('axis') as number) ?? 0, x.shape.length);
      return [{ dtype: x.dtype, shape: [...x.shape.slice(0, ax), ...idx.shape, ...x.shape.slice(ax + 1)] }];
    }
    case 'Conv': case 'MaxPool': case 'AveragePool': case 'LpPool': case 'ConvInteger': {
      const w = ins[1];
      if (!x?.shape) return [{ dtype: x?.dtype ?? null, shape: null }];
      const sp = x.shape.length - 2;
      const kernel = op.startsWith('Conv') ? (w?.shape?.slice(2) ?? null) : (a('kernel_shape') as number[]);
      const strides = (a('strides') as number[] | undefined) ?? new Array(sp).fill(1);
      const dil = (a('dilations') as number[] | undefined) ?? new Array(sp).fill(1);
      const pads = (a('pads') as number[] | undefined) ?? new Array(2 * sp).fill(0);
      const autoPad = (a('auto_pad') as string | undefined) ?? 'NOTSET';
      const ceil = a('ceil_mode') === 1;
      const spatial: Dim[] = x.shape.slice(2).map((d, i) => {
        const k = kernel?.[i];
        if (typeof d !== 'number' || typeof k !== 'number') return null;
        if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') return Math.ceil(d / strides[i]);
        const eff = (k - 1) * dil[i] + 1;
        const p = autoPad === 'VALID' ? 0 : pads[i] + pads[i + sp];
        const v = (d + p - eff) / strides[i];
        return (ceil ? Math.ceil(v) : Math.floor(v)) + 1;
      });
      const c = op.startsWith('Conv') ? (w?.shape?.[0] ?? null) : x.shape[1];
      const dtype = op === 'ConvInteger' ? 'int32' : x.dtype;
      return op === 'MaxPool' ? [{ dtype, shape: [x.shape[0], c, ...spatial] }, { dtype: 'int64', shape: [x.shape[0], c, ...spatial] }]
        : [{ dtype, shape: [x.shape[0], c, ...spatial] }];
    }
    case 'GlobalAveragePool': case 'GlobalMaxPool': case 'GlobalLpPool':
      return [{ dtype: x?.dtype ?? null, shape: x?.shape ? [x.shape[0], x.shape[1], ...x.shape.slice(2).map(() => 1)] : null }];
    case 'ReduceSum': case 'ReduceMean': case 'ReduceMax': case 'ReduceMin': case 'ReduceProd': case 'ReduceL1': case 'ReduceL2':
    case 'ReduceLogSum': case 'ReduceLogSumExp': case 'ReduceSumSquare': case 'ArgMax': case 'ArgMin': {
      const dtype = op.startsWith('Arg') ? 'int64' : x?.dtype ?? null;
      if (!x?.shape) return [{ dtype, shape: null }];
      const r = x.shape.length;
      const keep = ((a('keepdims') as number | undefined) ?? 1) === 1;
      let axes: number[] | null = op.startsWith('Arg') ? [(a('axis') as number) ?? 0]
        : (a('axes') as number[] | undefined) ?? (n.inputs[1] ? ints(constIn(1)) : []);
      if (axes === null) return [{ dtype, shape: null }];
      if (axes.length === 0) axes = a('noop_with_empty_axes') === 1 ? [] : x.shape.map((_, i) => i);
      const set = new Set(axes.map((v) => norm(v, r)));
      const out: Dim[] = [];
      x.shape.forEach((d, i) => { if (!set.has(i)) out.push(d); else if (keep) out.push(1); });
      return [{ dtype, shape: out }];
    }
    case 'Expand': {
      const s = constIn(1);
      return [{ dtype: x?.dtype ?? null, shape: s ? broadcast([x?.shape ?? null, s]) : null }];
    }
    case 'ConstantOfShape': {
      const s = constIn(0);
      const v = a('value');
      return [{ dtype: v instanceof Tensor ? v.type : 'float32', shape: s }];
    }
    case 'Split': {
      if (!x?.shape) return n.outputs.map(() => ({ dtype: x?.dtype ?? null, shape: null }));
      const ax = norm((a('axis') as number) ?? 0, x.shape.length);
      const d = x.shape[ax];
      const split = (a('split') as number[] | undefined) ?? ints(constIn(1));
      return n.outputs.map((_, i) => {
        const s = [...x.shape!];
        s[ax] = split ? split[i] : typeof d === 'number' ? Math.ceil(d / n.outputs.length) : null;
        if (!split && typeof d === 'number' && i === n.outputs.length - 1) s[ax] = d - Math.ceil(d / n.outputs.length) * (n.outputs.length - 1);
        return { dtype: x.dtype, shape: s };
      });
    }
    case 'Slice': {
      if (!x?.shape) return [{ dtype: x?.dtype ?? null, shape: null }];
      const starts = opset >= 10 ? ints(constIn(1)) : (a('starts') as number[]);
      const ends = opset >= 10 ? ints(constIn(2)) : (a('ends') as number[]);
      const axes = opset >= 10 ? (n.inputs[3] ? ints(constIn(3)) : null) : ((a('axes') as number[] | undefined) ?? null);
      const steps = opset >= 10 && n.inputs[4] ? ints(constIn(4)) : null;
      if (!starts || !ends || (n.inputs[3] && !axes) || (n.inputs[4] && !steps)) return [{ dtype: x.dtype, shape: x.shape.map(() => null) }];
      const out = [...x.shape];
      starts.forEach((s0, i) => {
        const ax = norm(axes ? axes[i] : i, x.shape!.length);
        const d = x.shape![ax];
        const st = steps ? steps[i] : 1;
        if (typeof d !== 'number') { out[ax] = null; return; }
        const clamp = (v: number, lo: number, hi: number) => Math.max(lo, Math.min(hi, v));
        let s = s0 < 0 ? s0 + d : s0, e = ends[i] < 0 ? ends[i] + d : ends[i];
        if (st > 0) { s = clamp(s, 0, d); e = clamp(e, 0, d); out[ax] = Math.max(0, Math.ceil((e - s) / st)); }
        else { s = clamp(s, -1, d - 1); e = clamp(e, -1, d - 1); out[ax] = Math.max(0, Math.ceil((e - s) / st)); }
      });
      return [{ dtype: x.dtype, shape: out }];
    }
    default:
      return [];
  }
}
