// The elementwise program IR shared by the backends: ONNX elementwise nodes translated into one SSA program over
// broadcast inputs (EwProgram, translate); each backend compiles an EwSpec into its own loop (Wasm bytes, WGSL).
import type { Graph, Node } from '../graph/ir.js';
import { sizeOf, type DType, type Tensor } from '../tensor.js';
import { broadcastWalk as sharedWalk } from '../ops/util.js';

/** A value as the program builder sees it at plan time (the backends' ValueDesc satisfies it). */
export interface EwInputDesc { dtype: DType; dims: number[]; constant?: Tensor }

/** Memory dtypes the generator reads and writes. uint8 values live in i32 lanes; bool in mask lanes. */
export type EwDType = 'float32' | 'int32' | 'uint8' | 'bool' | 'int64';

/**
 * One SSA instruction. `in` reads input p[0]; `const` is the value p[0]; `cast` converts args[0] to `dtype`;
 * every other op takes its operands from `args` and parameters from `p` (see emitVec for the list).
 */
export interface EwInstr { op: string; args: number[]; dtype: EwDType; p?: number[] }

export interface EwSpec {
  /** The output's dims with unit dims dropped and compatible neighbours merged; the last one is contiguous. */
  shape: number[];
  /** Element strides per walk dim (0 = broadcast). */
  inputs: { dtype: EwDType; strides: number[] }[];
  instrs: EwInstr[];
  /** Outputs are dense over `shape`. */
  outputs: { value: number; dtype: EwDType }[];
}

const EW_DTYPES: ReadonlySet<string> = new Set(['float32', 'int32', 'uint8', 'bool', 'int64']);
export const ewDType = (d: DType): EwDType | null => (EW_DTYPES.has(d) ? (d as EwDType) : null);

/** A value of the program: its instruction and its (logical, pre-broadcast) dims. */
export interface EwVal { id: number; dims: number[] }

/** Builds an EwSpec from ONNX nodes; each method returns null where the semantics are not covered. */
export class EwProgram {
  readonly instrs: EwInstr[] = [];
  /** External inputs: node input index and the dims it is read with. */
  readonly inputs: { index: number; dtype: EwDType; dims: number[] }[] = [];
  private readonly byInput = new Map<number, EwVal>();

  emit(op: string, args: number[], dtype: EwDType, p?: number[]): number {
    this.instrs.push(p ? { op, args, dtype, p } : { op, args, dtype });
    return this.instrs.length - 1;
  }

  dtype(v: EwVal): EwDType { return this.instrs[v.id].dtype; }

  /** The constant value of v, if it is one. */
  constOf(v: EwVal | undefined): number | undefined {
    const ins = v && this.instrs[v.id];
    return ins?.op === 'const' ? ins.p![0] : undefined;
  }

  /** Node input `index` (read once however often it is used); single-element constants are baked in. */
  external(index: number, desc: EwInputDesc, dims: number[] = desc.dims): EwVal | null {
    const known = this.byInput.get(index);
    if (known && known.dims.join() === dims.join()) return known;
    const dt = ewDType(desc.dtype);
    if (!dt) return null;
    const c = desc.constant;
    if (c && c.size === 1) {
      const x = c.data[0] as number | bigint;
      const n = typeof x === 'bigint' ? Number(x) : x;
      if (typeof x !== 'bigint' || Number.isSafeInteger(n)) {
        const val = { id: this.emit('const', [], dt, [dt === 'bool' ? (n ? 1 : 0) : n]), dims };
        this.byInput.set(index, val);
        return val;
      }
    }
    this.inputs.push({ index, dtype: dt, dims });
    const val = { id: this.emit('in', [], dt, [this.inputs.length - 1]), dims };
    this.byInput.set(index, val);
    return val;
  }

  /** The spec for outputs `outs` (all of the same dims); null if a shape does not broadcast. */
  spec(outs: EwVal[]): { spec: EwSpec; dims: number[]; inputIndex: number[] } | null {
    const dims = outs[0].dims;
    if (outs.some((o) => o.dims.join() !== dims.join())) return null;
    const walk = broadcastWalk(dims, this.inputs.map((x) => x.dims));
    if (!walk) return null;
    return {
      spec: {
        shape: walk.shape,
        inputs: this.inputs.map((x, k) => ({ dtype: x.dtype, strides: walk.strides[k] })),
        instrs: this.instrs,
        outputs: outs.map((o) => ({ value: o.id, dtype: this.instrs[o.id].dtype })),
      },
      dims,
      inputIndex: this.inputs.map((x) => x.index),
    };
  }
}

function bcast(...shapes: number[][]): number[] | null {
  const rank = Math.max(0, ...shapes.map((s) => s.length));
  const out = new Array<number>(rank).fill(1);
  for (const s of shapes) {
    for (let i = 0; i < s.length; i++) {
      const o = rank - s.length + i, d = s[i];
      if (out[o] === 1) out[o] = d;
      else if (d !== 1 && d !== out[o]) return null;
    }
  }
  return out;
}

/** broadcastWalk of src/ops/util.ts, after checking the inputs broadcast to outDims (null otherwise); inputs of higher rank need unit leading dims. */
export function broadcastWalk(outDims: readonly number[], ins: readonly (readonly number[])[]): { shape: number[]; strides: number[][] } | null {
  const r = outDims.length;
  const trimmed: number[][] = [];
  for (const d of ins) {
    if (d.length > r && d.slice(0, d.length - r).some((x) => x !== 1)) return null;
    const t = d.length > r ? d.slice(d.length - r) : [...d];
    for (let i = 0; i < t.length; i++) if (t[i] !== 1 && t[i] !== outDims[r - t.length + i]) return null;
    trimmed.push(t);
  }
  return sharedWalk(outDims, trimmed);
}

const attrF = (n: Node, name: string, d: number) => { const a = n.attrs.get(name); return a && a.type === 'float' ? (a.value as number) : d; };
const attrI = (n: Node, name: string, d: number) => { const a = n.attrs.get(name); return a && a.type === 'int' ? (a.value as number) : d; };
const attrS = (n: Node, name: string, d: string) => { const a = n.attrs.get(name); return a && a.type === 'string' ? (a.value as string) : d; };

const ONNX_DTYPE: Record<number, EwDType> = { 1: 'float32', 2: 'uint8', 6: 'int32', 7: 'int64', 9: 'bool' };

const UNARY_F32: Record<string, string> = {
  Sqrt: 'sqrt', Reciprocal: 'recip', Exp: 'exp', Log: 'log', Tanh: 'tanh', Erf: 'erf', Sigmoid: 'sigmoid',
  Softplus: 'softplus', HardSwish: 'hardswish', Floor: 'floor', Ceil: 'ceil',
};
const COMPARE: Record<string, string> = { Equal: 'eq', Less: 'lt', Greater: 'gt', LessOrEqual: 'le', GreaterOrEqual: 'ge' };
const ARITH: Record<string, string> = { Add: 'add', Sub: 'sub', Mul: 'mul', Div: 'div' };

/** Op types translate() covers (the fusion pass groups only these). */
export const EW_OPS: ReadonlySet<string> = new Set([
  ...Object.keys(UNARY_F32), ...Object.keys(COMPARE), ...Object.keys(ARITH),
  'Pow', 'Max', 'Min', 'Sum', 'Neg', 'Abs', 'Relu', 'LeakyRelu', 'Elu', 'HardSigmoid', 'Gelu', 'Clip', 'Where',
  'Not', 'And', 'Or', 'Xor', 'Cast', 'CastLike',
]);

/** Translates one ONNX node over program values; null where the op, dtypes or attributes are not covered. */
export function translate(P: EwProgram, node: Node, a: (EwVal | undefined)[], opset: number): EwVal | null {
  const op = node.opType;
  const dt = a[0] ? P.dtype(a[0]) : undefined;
  const val = (id: number, dims: number[]) => ({ id, dims });
  const need = (n: number) => a.length >= n && a.slice(0, n).every((x) => x !== undefined);
  const sameType = (xs: (EwVal | undefined)[]) => xs.every((x) => x && P.dtype(x) === dt);
  if (node.domain !== '') return null;
  if (ARITH[op] || COMPARE[op] || op === 'And' || op === 'Or' || op === 'Xor') {
    if (!need(2) || !sameType([a[1]])) return null;
    if (opset < 7 && node.attrs.has('broadcast')) return null;
    const dims = bcast(a[0]!.dims, a[1]!.dims);
    if (!dims) return null;
    if (ARITH[op]) {
      if (!(dt === 'float32' || dt === 'int64' || (dt === 'int32' && op !== 'Div'))) return null;
      return val(P.emit(ARITH[op], [a[0]!.id, a[1]!.id], dt), dims);
    }
    if (COMPARE[op]) {
      if (dt === 'bool' ? op !== 'Equal' : false) return null;
      return val(P.emit(COMPARE[op], [a[0]!.id, a[1]!.id], 'bool'), dims);
    }
    if (dt !== 'bool') return null;
    return val(P.emit(op.toLowerCase(), [a[0]!.id, a[1]!.id], 'bool'), dims);
  }
  if (UNARY_F32[op]) {
    if (!need(1) || dt !== 'float32') return null;
    return val(P.emit(UNARY_F32[op], [a[0]!.id], dt), a[0]!.dims);
  }
  switch (op) {
    case 'Neg': case 'Abs': case 'Relu': {
      if (!need(1) || !(dt === 'float32' || dt === 'int32' || dt === 'int64')) return null;
      return val(P.emit(op.toLowerCase(), [a[0]!.id], dt), a[0]!.dims);
    }
    case 'LeakyRelu': case 'Elu': case 'HardSigmoid': case 'Gelu': {
      if (!need(1) || dt !== 'float32') return null;
      const x = a[0]!;
      if (op === 'LeakyRelu') return val(P.emit('leakyrelu', [x.id], dt, [attrF(node, 'alpha', Math.fround(0.01))]), x.dims);
      if (op === 'Elu') return val(P.emit('elu', [x.id], dt, [attrF(node, 'alpha', 1)]), x.dims);
      if (op === 'HardSigmoid') return val(P.emit('hardsigmoid', [x.id], dt, [attrF(node, 'alpha', Math.fround(0.2)), attrF(node, 'beta', 0.5)]), x.dims);
      const approx = attrS(node, 'approximate', 'none');
      if (approx !== 'none' && approx !== 'tanh') return null;
      return val(P.emit(approx === 'tanh' ? 'gelu_tanh' : 'gelu', [x.id], dt), x.dims);
    }
    case 'Max': case 'Min': case 'Sum': {
      if (a.length === 0 || !need(a.length) || !sameType(a)) return null;
      if (!(dt === 'float32' || dt === 'int32' || dt === 'int64')) return null;
      let acc = a[0]!;
      for (let k = 1; k < a.length; k++) {
        const dims = bcast(acc.dims, a[k]!.dims);
        if (!dims) return null;
        acc = val(P.emit(op === 'Sum' ? 'add' : op.toLowerCase(), [acc.id, a[k]!.id], dt), dims);
      }
      return acc;
    }
    case 'Pow': {
      if (!need(2) || dt !== 'float32') return null;
      if (opset < 7 && node.attrs.has('broadcast')) return null;
      const dims = bcast(a[0]!.dims, a[1]!.dims);
      if (!dims) return null;
      const y = P.constOf(a[1]);
      if (y !== undefined) return val(P.emit('powc', [a[0]!.id], dt, [y]), dims);
      const yt = P.dtype(a[1]!);
      let yid = a[1]!.id;
      if (yt === 'int32' || yt === 'uint8') yid = P.emit('cast', [yid], 'float32');
      else if (yt !== 'float32') return null;
      return val(P.emit('pow', [a[0]!.id, yid], dt), dims);
    }
    case 'Clip': {
      if (!need(1) || !(dt === 'float32' || dt === 'int32')) return null;
      const x = a[0]!;
      if (opset < 11) {
        if (dt !== 'float32') return null;
        const F = 3.4028234663852886e38;
        return val(P.emit('clip', [x.id], dt, [attrF(node, 'min', -F), attrF(node, 'max', F)]), x.dims);
      }
      const bound = (k: number): EwVal | undefined | null => {
        const b = a[k];
        if (!b || sizeOf(b.dims) === 0) return undefined;
        if (P.dtype(b) !== dt || sizeOf(b.dims) !== 1) return null;
        return b;
      };
      const lo = bound(1), hi = bound(2);
      if (lo === null || hi === null) return null;
      if (dt === 'int32') {
        let id = x.id;
        if (lo) id = P.emit('max', [id, lo.id], dt);
        if (hi) id = P.emit('min', [id, hi.id], dt);
        return val(id === x.id ? P.emit('max', [id, id], dt) : id, x.dims);
      }
      const cl = lo ? P.constOf(lo) : -Infinity, ch = hi ? P.constOf(hi) : Infinity;
      if (cl !== undefined && ch !== undefined) return val(P.emit('clip', [x.id], dt, [cl, ch]), x.dims);
      let id = x.id;
      if (lo) id = P.emit('clip_lo', [id, lo.id], dt);
      if (hi) id = P.emit('clip_hi', [id, hi.id], dt);
      return val(id, x.dims);
    }
    case 'Where': {
      if (!need(3) || dt !== 'bool') return null;
      const t = P.dtype(a[1]!);
      if (P.dtype(a[2]!) !== t) return null;
      const dims = bcast(a[0]!.dims, a[1]!.dims, a[2]!.dims);
      if (!dims) return null;
      return val(P.emit('where', [a[0]!.id, a[1]!.id, a[2]!.id], t), dims);
    }
    case 'Not':
      if (!need(1) || dt !== 'bool') return null;
      return val(P.emit('not', [a[0]!.id], 'bool'), a[0]!.dims);
    case 'Cast': case 'CastLike': {
      if (!need(op === 'Cast' ? 1 : 2) || !dt) return null;
      const to = op === 'Cast' ? ONNX_DTYPE[attrI(node, 'to', 0)] : P.dtype(a[1]!);
      if (!to) return null;
      if (to === dt) return val(P.emit('cast', [a[0]!.id], to), a[0]!.dims);
      return val(P.emit('cast', [a[0]!.id], to), a[0]!.dims);
    }
    default:
      return null;
  }
}


/** The program of one elementwise node, or null where it is not covered. */
export function nodeProgram(node: Node, inputs: (EwInputDesc | undefined)[], opset: number): { P: EwProgram; outs: EwVal[] } | null {
  if (node.outputs.length !== 1) return null;
  const P = new EwProgram();
  const args: (EwVal | undefined)[] = [];
  for (let i = 0; i < inputs.length; i++) {
    const d = inputs[i];
    if (!d) { args.push(undefined); continue; }
    const v = P.external(i, d);
    if (!v) return null;
    args.push(v);
  }
  const out = translate(P, node, args, opset);
  return out ? { P, outs: [out] } : null;
}

/** The program of a FusedElementwise node (domain webjit): its 'graph' attribute's nodes, translated in order. */
export function fusedProgram(node: Node, inputs: (EwInputDesc | undefined)[], opset: number): { P: EwProgram; outs: EwVal[] } | null {
  const g = node.attrs.get('graph');
  if (!g || g.type !== 'graph') return null;
  const sub = g.value as Graph;
  if (sub.inputs.length !== inputs.length || sub.outputs.length !== node.outputs.length) return null;
  const P = new EwProgram();
  const vals = new Map<string, EwVal>();
  for (let i = 0; i < inputs.length; i++) {
    const d = inputs[i];
    if (!d) return null;
    const v = P.external(i, d);
    if (!v) return null;
    vals.set(sub.inputs[i].name, v);
  }
  for (const n of sub.nodes) {
    const args = n.inputs.map((x) => (x ? vals.get(x) : undefined));
    if (n.inputs.some((x, k) => x && !args[k]) || n.outputs.length !== 1) return null;
    const out = translate(P, n, args, opset);
    if (!out) return null;
    vals.set(n.outputs[0], out);
  }
  const outs = sub.outputs.map((o) => vals.get(o.name));
  return outs.every((o) => o) ? { P, outs: outs as EwVal[] } : null;
}
