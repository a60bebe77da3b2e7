// Reference kernels: sequences (SequenceConstruct ... SequenceMap) and optionals.
import { ExecutionError, InputError } from '../errors.js';
import type { ValueType } from '../graph/ir.js';
import { dtypeFromOnnx, OptionalValue, sizeOf, Tensor, TensorSequence, type DType, type TypedArray, type Value } from '../tensor.js';
import { registerOp, type KernelContext } from './registry.js';
import { allocData, input, numbers } from './util.js';

const where = (ctx: KernelContext) => ({ node: ctx.node.name, op: ctx.node.opType });

function seqInput(inputs: (Value | undefined)[], i: number, ctx: KernelContext): TensorSequence {
  const v = inputs[i];
  if (v instanceof TensorSequence) return v;
  throw new InputError(v === undefined ? `input ${i} (a sequence) is required` : `input ${i} must be a sequence, got ${v.constructor.name}`,
    { ...where(ctx), input: ctx.node.inputs[i] });
}

/** A scalar (or 1-element) integer tensor as a number. */
function intScalar(t: Tensor, what: string, ctx: KernelContext): number {
  if (t.size !== 1) throw new InputError(`${what} must be a scalar, got shape [${t.dims.join(',')}]`, where(ctx));
  if (t.type !== 'int32' && t.type !== 'int64') throw new InputError(`${what} must be int32 or int64, got ${t.type}`, where(ctx));
  return t.type === 'int64' ? Number((t.data as BigInt64Array)[0]) : (t.data as Int32Array)[0];
}

function checkElem(seq: TensorSequence, t: Tensor, ctx: KernelContext): void {
  const et = seq.elemType ?? seq.items[0]?.type;
  if (et !== undefined && et !== t.type) {
    throw new InputError(`tensor of type ${t.type} cannot go into a sequence of ${et}`, where(ctx));
  }
}

registerOp('SequenceEmpty', (_inputs, ctx) => {
  const dt: DType = ctx.attr.has('dtype') ? dtypeFromOnnx(ctx.attr.int('dtype'), where(ctx)) : 'float32';
  return [new TensorSequence(dt, [])];
});

registerOp('SequenceConstruct', (inputs, ctx) => {
  const items = inputs.map((_, i) => input(inputs, i, ctx));
  if (!items.length) throw new InputError('SequenceConstruct needs at least one input', where(ctx));
  for (const t of items) {
    if (t.type !== items[0].type) throw new InputError(`inputs have different types (${items[0].type} and ${t.type})`, where(ctx));
  }
  return [new TensorSequence(items[0].type, items)];
});

registerOp('SequenceAt', (inputs, ctx) => {
  const seq = seqInput(inputs, 0, ctx);
  const n = seq.items.length;
  let p = intScalar(input(inputs, 1, ctx), 'position', ctx);
  if (p < -n || p >= n) throw new InputError(`position ${p} is out of range for a sequence of length ${n}`, where(ctx));
  if (p < 0) p += n;
  return [seq.items[p]];
});

registerOp('SequenceInsert', (inputs, ctx) => {
  const seq = seqInput(inputs, 0, ctx);
  const t = input(inputs, 1, ctx);
  checkElem(seq, t, ctx);
  const n = seq.items.length;
  let p = n;
  const pt = inputs[2];
  if (pt instanceof Tensor) {
    p = intScalar(pt, 'position', ctx);
    if (p < -n || p > n) throw new InputError(`position ${p} is out of range [${-n}, ${n}]`, where(ctx));
    if (p < 0) p += n;
  }
  const items = seq.items.slice();
  items.splice(p, 0, t);
  return [new TensorSequence(seq.elemType ?? t.type, items)];
});

registerOp('SequenceErase', (inputs, ctx) => {
  const seq = seqInput(inputs, 0, ctx);
  const n = seq.items.length;
  let p = n - 1;
  const pt = inputs[1];
  if (pt instanceof Tensor) {
    p = intScalar(pt, 'position', ctx);
    if (p < -n || p >= n) throw new InputError(`position ${p} is out of range for a sequence of length ${n}`, where(ctx));
    if (p < 0) p += n;
  } else if (n === 0) {
    throw new InputError('cannot erase from an empty sequence', where(ctx));
  }
  const items = seq.items.slice();
  items.splice(p, 1);
  return [new TensorSequence(seq.elemType, items)];
});

registerOp('SequenceLength', (inputs, ctx) => {
  const seq = seqInput(inputs, 0, ctx);
  return [new Tensor('int64', BigInt64Array.of(BigInt(seq.items.length)), [])];
});

/** Copies the range [start, start+len) along `axis` of `src`. */
function rangeAxis(src: Tensor, axis: number, start: number, len: number, keepAxis: boolean): Tensor {
  const dims = src.dims;
  const n = dims[axis];
  let outer = 1, inner = 1;
  for (let i = 0; i < axis; i++) outer *= dims[i];
  for (let i = axis + 1; i < dims.length; i++) inner *= dims[i];
  const outDims = [...dims];
  if (keepAxis) outDims[axis] = len; else outDims.splice(axis, 1);
  const chunk = len * inner;
  const out = allocData(src.type, outer * chunk);
  if (Array.isArray(out)) {
    const s = src.data as string[];
    for (let o = 0; o < outer; o++) for (let j = 0; j < chunk; j++) out[o * chunk + j] = s[(o * n + start) * inner + j];
  } else {
    const s = src.data as Float32Array;
    for (let o = 0; o < outer; o++) {
      const b = (o * n + start) * inner;
      (out as Float32Array).set(s.subarray(b, b + chunk), o * chunk);
    }
  }
  return new Tensor(src.type, out, outDims);
}

registerOp('SplitToSequence', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const r = x.dims.length;
  const ax = ctx.attr.int('axis', 0);
  const axis = ax < 0 ? ax + r : ax;
  if (axis < 0 || axis >= r) throw new InputError(`axis ${ax} is out of range for rank ${r}`, where(ctx));
  const dimLen = x.dims[axis];
  const splitT = inputs[1] instanceof Tensor ? inputs[1] : undefined;
  const items: Tensor[] = [];
  if (!splitT) {
    const keep = ctx.attr.int('keepdims', 1) !== 0;
    for (let i = 0; i < dimLen; i++) items.push(rangeAxis(x, axis, i, 1, keep));
  } else {
    if (splitT.type !== 'int32' && splitT.type !== 'int64') throw new InputError(`split must be int32 or int64, got ${splitT.type}`, where(ctx));
    const sv = numbers(splitT);
    if (splitT.dims.length === 0) {
      const s = sv[0];
      if (!(s > 0)) throw new InputError(`split ${s} must be positive`, where(ctx));
      for (let start = 0; start < dimLen; start += s) items.push(rangeAxis(x, axis, start, Math.min(s, dimLen - start), true));
    } else if (splitT.dims.length === 1) {
      let total = 0;
      for (let i = 0; i < sv.length; i++) {
        if (sv[i] < 0) throw new InputError(`split[${i}] = ${sv[i]} is negative`, where(ctx));
        total += sv[i];
      }
      if (total !== dimLen) throw new InputError(`split sizes sum to ${total}, but axis ${axis} has length ${dimLen}`, where(ctx));
      let start = 0;
      for (let i = 0; i < sv.length; i++) { items.push(rangeAxis(x, axis, start, sv[i], true)); start += sv[i]; }
    } else {
      throw new InputError(`split must be a scalar or 1-D, got rank ${splitT.dims.length}`, where(ctx));
    }
  }
  return [new TensorSequence(x.type, items)];
});

registerOp('ConcatFromSequence', (inputs, ctx) => {
  const seq = seqInput(inputs, 0, ctx);
  const newAxis = ctx.attr.int('new_axis', 0) !== 0;
  const ax = ctx.attr.int('axis');
  const items = seq.items;
  if (!items.length) throw new InputError('cannot concatenate an empty sequence', where(ctx));
  const first = items[0];
  const r = first.dims.length;
  const outRank = newAxis ? r + 1 : r;
  const axis = ax < 0 ? ax + outRank : ax;
  if (axis < 0 || axis >= outRank) throw new InputError(`axis ${ax} is out of range for rank ${outRank}`, where(ctx));
  // View every item with the concat axis present (length 1 when new_axis).
  const views = items.map((t) => {
    if (t.type !== first.type) throw new InputError(`sequence items have different types (${first.type}, ${t.type})`, where(ctx));
    if (t.dims.length !== r) throw new InputError(`sequence items have different ranks (${r}, ${t.dims.length})`, where(ctx));
    if (!newAxis) return t.dims;
    const d = [...t.dims];
    d.splice(axis, 0, 1);
    return d;
  });
  const base = views[0];
  let total = 0;
  for (const d of views) {
    for (let i = 0; i < outRank; i++) {
      if (i !== axis && d[i] !== base[i]) {
        throw new InputError(`sequence items' shapes disagree on dimension ${i} ([${first.dims.join(',')}] vs [${d.join(',')}])`, where(ctx));
      }
    }
    total += d[axis];
  }
  const outDims = [...base];
  outDims[axis] = total;
  let outer = 1, inner = 1;
  for (let i = 0; i < axis; i++) outer *= base[i];
  for (let i = axis + 1; i < outRank; i++) inner *= base[i];
  const out = allocData(first.type, sizeOf(outDims));
  let off = 0;
  for (let k = 0; k < items.length; k++) {
    const chunk = views[k][axis] * inner;
    const src = items[k].data;
    if (Array.isArray(out)) {
      const s = src as string[];
      for (let o = 0; o < outer; o++) for (let j = 0; j < chunk; j++) out[o * total * inner + off + j] = s[o * chunk + j];
    } else {
      const s = src as Float32Array;
      for (let o = 0; o < outer; o++) (out as Float32Array).set(s.subarray(o * chunk, o * chunk + chunk), o * total * inner + off);
    }
    off += chunk;
  }
  return [new Tensor(first.type, out as TypedArray | string[], outDims)];
});

registerOp('SequenceMap', (inputs, ctx) => {
  const body = ctx.attr.graph('body');
  const seq0 = seqInput(inputs, 0, ctx);
  const n = seq0.items.length;
  for (let k = 1; k < inputs.length; k++) {
    const v = inputs[k];
    if (v instanceof TensorSequence && v.items.length !== n) {
      throw new InputError(`sequence input ${k} has length ${v.items.length}, input 0 has ${n}`, where(ctx));
    }
  }
  const nOut = body.outputs.length;
  const outs: Tensor[][] = Array.from({ length: nOut }, () => []);
  for (let i = 0; i < n; i++) {
    const args = inputs.map((v) => (v instanceof TensorSequence ? v.items[i] : v));
    const res = ctx.runSubgraph(body, args);
    for (let k = 0; k < nOut; k++) {
      const t = res[k];
      if (!(t instanceof Tensor)) throw new ExecutionError(`body output ${k} must be a tensor`, where(ctx));
      outs[k].push(t);
    }
  }
  return outs.map((items, k) => new TensorSequence(items[0]?.type ?? elemOf(body.outputs[k].type), items));
});

function elemOf(vt: ValueType | null): DType | undefined {
  if (!vt) return undefined;
  if (vt.kind === 'tensor') return vt.dtype ?? undefined;
  if (vt.kind === 'sequence') return elemOf(vt.elem);
  return undefined;
}

// --- optionals ---------------------------------------------------------------------------------

registerOp('Optional', (inputs) => {
  const v = inputs[0];
  return [new OptionalValue(v === undefined ? null : v)];
});

registerOp('OptionalHasElement', (inputs) => {
  const v = inputs[0];
  const has = v === undefined ? false : v instanceof OptionalValue ? v.value !== null : true;
  return [new Tensor('bool', Uint8Array.of(has ? 1 : 0), [])];
});

registerOp('OptionalGetElement', (inputs, ctx) => {
  const v = inputs[0];
  if (v === undefined) throw new InputError('input is required', where(ctx));
  if (v instanceof OptionalValue) {
    if (v.value === null) throw new InputError('the optional input is empty', where(ctx));
    return [v.value];
  }
  return [v];
});
