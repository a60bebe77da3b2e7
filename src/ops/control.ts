// Reference kernels: control flow (If, Loop, Scan).
import { ExecutionError, InputError } from '../errors.js';
import type { Graph, ValueType } from '../graph/ir.js';
import { DTYPES, sizeOf, Tensor, type DType, type TypedArray, type Value } from '../tensor.js';
import { registerOp, type KernelContext } from './registry.js';
import { allocData, numbers } from './util.js';

const where = (ctx: KernelContext) => ({ node: ctx.node.name, op: ctx.node.opType });

/** Truth of a bool (or numeric) scalar tensor. */
function truth(v: Value | undefined, what: string, ctx: KernelContext): boolean {
  if (!(v instanceof Tensor)) throw new InputError(`${what} must be a tensor`, where(ctx));
  if (v.size !== 1) throw new InputError(`${what} must hold exactly one element, got shape [${v.dims.join(',')}]`, where(ctx));
  if (v.type === 'string') throw new InputError(`${what} must not be a string tensor`, where(ctx));
  if (v.type === 'int64' || v.type === 'uint64') return (v.data as BigInt64Array)[0] !== 0n;
  return numbers(v)[0] !== 0;
}

function runBody(ctx: KernelContext, g: Graph, ins: (Value | undefined)[]): Value[] {
  const outs = ctx.runSubgraph(g, ins);
  if (outs.length !== g.outputs.length) {
    throw new ExecutionError(`subgraph '${g.name}' returned ${outs.length} values, expected ${g.outputs.length}`, where(ctx));
  }
  return outs;
}

// --- If ----------------------------------------------------------------------------------------

registerOp('If', (inputs, ctx) => {
  const c = truth(inputs[0], 'cond', ctx);
  const g = ctx.attr.graph(c ? 'then_branch' : 'else_branch');
  const outs = runBody(ctx, g, []);
  if (outs.length !== ctx.node.outputs.length) {
    throw new ExecutionError(`${c ? 'then' : 'else'}_branch has ${outs.length} outputs, the node has ${ctx.node.outputs.length}`, where(ctx));
  }
  return outs;
});

// --- helpers for slicing/stacking along an axis -------------------------------------------------

/** Copies slice `t` along `axis` of `src` (dims without that axis). */
function sliceAxis(src: Tensor, axis: number, t: number): Tensor {
  const dims = src.dims;
  const n = dims[axis];
  let outer = 1, inner = 1;
  for (let i = 0; i < axis; i++) outer *= dims[i];
  for (let i = axis + 1; i < dims.length; i++) inner *= dims[i];
  const outDims = dims.filter((_, i) => i !== axis);
  const out = allocData(src.type, outer * inner);
  if (Array.isArray(out)) {
    const s = src.data as string[];
    for (let o = 0; o < outer; o++) for (let j = 0; j < inner; j++) out[o * inner + j] = s[(o * n + t) * inner + j];
  } else {
    const s = src.data as TypedArray;
    for (let o = 0; o < outer; o++) {
      const b = (o * n + t) * inner;
      (out as Float32Array).set((s as Float32Array).subarray(b, b + inner), o * inner);
    }
  }
  return new Tensor(src.type, out, outDims);
}

/** Writes `item` (the slice) at position `t` along `axis` of the stacked buffer `dst` (length `n` along axis). */
function writeSlice(dst: TypedArray | string[], dstDims: readonly number[], axis: number, t: number, item: Tensor): void {
  const n = dstDims[axis];
  let outer = 1, inner = 1;
  for (let i = 0; i < axis; i++) outer *= dstDims[i];
  for (let i = axis + 1; i < dstDims.length; i++) inner *= dstDims[i];
  if (item.size !== outer * inner) {
    throw new ExecutionError(`scan output of shape [${item.dims.join(',')}] does not match the earlier iterations' shape`);
  }
  if (Array.isArray(dst)) {
    const s = item.data as string[];
    for (let o = 0; o < outer; o++) for (let j = 0; j < inner; j++) dst[(o * n + t) * inner + j] = s[o * inner + j];
  } else {
    const s = item.data as Float32Array;
    for (let o = 0; o < outer; o++) (dst as Float32Array).set(s.subarray(o * inner, o * inner + inner), (o * n + t) * inner);
  }
}

/** Stacks same-shaped tensors along a new axis `axis` (0..rank). */
function stack(items: Tensor[], axis: number, ctx: KernelContext, what: string): Tensor {
  const first = items[0];
  for (const it of items) {
    if (it.type !== first.type || it.dims.length !== first.dims.length || it.dims.some((d, i) => d !== first.dims[i])) {
      throw new ExecutionError(`${what}: iterations produced different types or shapes ([${first.dims.join(',')}] ${first.type} vs [${it.dims.join(',')}] ${it.type})`, where(ctx));
    }
  }
  const dims = [...first.dims];
  dims.splice(axis, 0, items.length);
  const out = allocData(first.type, sizeOf(dims));
  for (let t = 0; t < items.length; t++) writeSlice(out, dims, axis, t, items[t]);
  return new Tensor(first.type, out, dims);
}

/** An empty scan output (zero iterations): dtype and trailing dims from the body's declared output type. */
function emptyScanOutput(vt: ValueType | null, axis: number, ctx: KernelContext, what: string): Tensor {
  let dtype: DType = 'float32';
  let inner: number[] = [];
  if (vt && vt.kind === 'tensor') {
    if (vt.dtype) dtype = vt.dtype;
    if (vt.shape && vt.shape.every((d) => typeof d === 'number')) inner = vt.shape as number[];
  } else if (vt) {
    throw new ExecutionError(`${what}: scan outputs must be tensors`, where(ctx));
  }
  const dims = [...inner];
  dims.splice(Math.min(axis, dims.length), 0, 0);
  return new Tensor(dtype, DTYPES[dtype].make(0), dims);
}

// --- Loop --------------------------------------------------------------------------------------

registerOp('Loop', (inputs, ctx) => {
  const body = ctx.attr.graph('body');
  const mIn = inputs[0];
  let maxTrip = Infinity;
  if (mIn !== undefined) {
    if (!(mIn instanceof Tensor) || mIn.size !== 1) throw new InputError('M must be a scalar tensor', where(ctx));
    maxTrip = mIn.type === 'int64' ? Number((mIn.data as BigInt64Array)[0]) : numbers(mIn)[0];
  }
  let cond = inputs[1] === undefined ? true : truth(inputs[1], 'cond', ctx);
  const nCarried = Math.max(0, inputs.length - 2);
  let carried: (Value | undefined)[] = inputs.slice(2);
  const nScan = body.outputs.length - 1 - nCarried;
  if (nScan < 0) {
    throw new ExecutionError(`body has ${body.outputs.length} outputs, fewer than 1 + ${nCarried} loop-carried values`, where(ctx));
  }
  const scans: Tensor[][] = Array.from({ length: nScan }, () => []);
  const condTrue = new Tensor('bool', new Uint8Array([1]), []);
  const iterT = (i: number) => new Tensor('int64', BigInt64Array.of(BigInt(i)), []);
  let i = 0;
  while (i < maxTrip && cond) {
    const condIn = inputs[1] === undefined ? condTrue : new Tensor('bool', new Uint8Array([cond ? 1 : 0]), []);
    const outs = runBody(ctx, body, [iterT(i), condIn, ...carried]);
    // Without a cond input the body's cond output is ignored (a for loop / endless loop).
    if (inputs[1] !== undefined) cond = truth(outs[0], 'body output cond', ctx);
    carried = outs.slice(1, 1 + nCarried);
    for (let k = 0; k < nScan; k++) {
      const v = outs[1 + nCarried + k];
      if (!(v instanceof Tensor)) throw new ExecutionError(`scan output ${k} of the body must be a tensor`, where(ctx));
      scans[k].push(v);
    }
    i++;
  }
  const result: Value[] = [];
  for (let k = 0; k < nCarried; k++) {
    const v = carried[k];
    if (v === undefined) throw new ExecutionError(`loop-carried value ${k} is missing`, where(ctx));
    result.push(v);
  }
  for (let k = 0; k < nScan; k++) {
    result.push(scans[k].length ? stack(scans[k], 0, ctx, `scan output ${k}`)
      : emptyScanOutput(body.outputs[1 + nCarried + k].type, 0, ctx, `scan output ${k}`));
  }
  return result;
});

// --- Scan --------------------------------------------------------------------------------------

registerOp('Scan', (inputs, ctx) => {
  const body = ctx.attr.graph('body');
  const nScanIn = ctx.attr.int('num_scan_inputs');
  if (ctx.opset < 9) return scan8(inputs, ctx, body, nScanIn);

  const nState = inputs.length - nScanIn;
  if (nState < 0) throw new InputError(`num_scan_inputs ${nScanIn} exceeds the ${inputs.length} inputs`, where(ctx));
  const nScanOut = body.outputs.length - nState;
  if (nScanOut < 0) throw new ExecutionError(`body has ${body.outputs.length} outputs, fewer than its ${nState} state values`, where(ctx));
  const inAxes = ctx.attr.ints('scan_input_axes', new Array<number>(nScanIn).fill(0));
  const inDirs = ctx.attr.ints('scan_input_directions', new Array<number>(nScanIn).fill(0));
  const outAxes = ctx.attr.ints('scan_output_axes', new Array<number>(nScanOut).fill(0));
  const outDirs = ctx.attr.ints('scan_output_directions', new Array<number>(nScanOut).fill(0));

  const scanIns: Tensor[] = [];
  const axes: number[] = [];
  let len = -1;
  for (let k = 0; k < nScanIn; k++) {
    const v = inputs[nState + k];
    if (!(v instanceof Tensor)) throw new InputError(`scan input ${k} must be a tensor`, where(ctx));
    const r = v.dims.length;
    const a = (inAxes[k] ?? 0) < 0 ? inAxes[k] + r : (inAxes[k] ?? 0);
    if (a < 0 || a >= r) throw new InputError(`scan_input_axes[${k}]=${inAxes[k]} is out of range for rank ${r}`, where(ctx));
    const l = v.dims[a];
    if (len >= 0 && l !== len) throw new InputError(`scan inputs have different sequence lengths (${len} and ${l})`, where(ctx));
    len = l;
    scanIns.push(v);
    axes.push(a);
  }
  if (len < 0) len = 0;
  let state: (Value | undefined)[] = inputs.slice(0, nState);
  const scans: Tensor[][] = Array.from({ length: nScanOut }, () => []);
  for (let t = 0; t < len; t++) {
    const slices = scanIns.map((v, k) => sliceAxis(v, axes[k], inDirs[k] ? len - 1 - t : t));
    const outs = runBody(ctx, body, [...state, ...slices]);
    state = outs.slice(0, nState);
    for (let k = 0; k < nScanOut; k++) {
      const v = outs[nState + k];
      if (!(v instanceof Tensor)) throw new ExecutionError(`scan output ${k} of the body must be a tensor`, where(ctx));
      scans[k].push(v);
    }
  }
  const result: Value[] = state.map((v, k) => {
    if (v === undefined) throw new ExecutionError(`state value ${k} is missing`, where(ctx));
    return v;
  });
  for (let k = 0; k < nScanOut; k++) {
    const items = outDirs[k] ? scans[k].slice().reverse() : scans[k];
    if (!items.length) {
      result.push(emptyScanOutput(body.outputs[nState + k].type, 0, ctx, `scan output ${k}`));
      continue;
    }
    const r = items[0].dims.length + 1;
    const a = outAxes[k] < 0 ? outAxes[k] + r : outAxes[k];
    if (a < 0 || a >= r) throw new InputError(`scan_output_axes[${k}]=${outAxes[k]} is out of range for rank ${r}`, where(ctx));
    result.push(stack(items, a, ctx, `scan output ${k}`));
  }
  return result;
});

/** Scan-8: a leading batch axis on every state and scan value, optional sequence_lens, time on axis 1. */
function scan8(inputs: (Value | undefined)[], ctx: KernelContext, body: Graph, nScanIn: number): Value[] {
  const seqLensT = inputs[0];
  const rest = inputs.slice(1);
  const nState = rest.length - nScanIn;
  if (nState < 0) throw new InputError(`num_scan_inputs ${nScanIn} exceeds the inputs`, where(ctx));
  const nScanOut = body.outputs.length - nState;
  const dirs = ctx.attr.ints('directions', new Array<number>(nScanIn).fill(0));
  const states = rest.slice(0, nState).map((v, k) => {
    if (!(v instanceof Tensor)) throw new InputError(`initial state ${k} must be a tensor`, where(ctx));
    return v;
  });
  const scanIns = rest.slice(nState).map((v, k) => {
    if (!(v instanceof Tensor) || v.dims.length < 2) throw new InputError(`scan input ${k} must be a tensor of rank >= 2 [batch, seq, ...]`, where(ctx));
    return v;
  });
  const all = [...states, ...scanIns];
  const batch = all.length ? all[0].dims[0] : 0;
  for (const v of all) if (v.dims[0] !== batch) throw new InputError(`inputs disagree on the batch size (${batch} vs ${v.dims[0]})`, where(ctx));
  const maxLen = scanIns.length ? scanIns[0].dims[1] : 0;
  for (const v of scanIns) if (v.dims[1] !== maxLen) throw new InputError('scan inputs have different sequence lengths', where(ctx));
  let lens: number[] = new Array<number>(batch).fill(maxLen);
  if (seqLensT instanceof Tensor) {
    lens = Array.from(numbers(seqLensT));
    if (lens.length !== batch) throw new InputError(`sequence_lens has ${lens.length} entries, batch is ${batch}`, where(ctx));
    for (const l of lens) if (l < 0 || l > maxLen) throw new InputError(`sequence length ${l} is out of range [0, ${maxLen}]`, where(ctx));
  }
  const finalStates: Tensor[][] = Array.from({ length: nState }, () => []);
  const scanOuts: Tensor[][] = Array.from({ length: nScanOut }, () => []);
  for (let b = 0; b < batch; b++) {
    let st: Value[] = states.map((s) => sliceAxis(s, 0, b));
    const seqs = scanIns.map((s) => sliceAxis(s, 0, b));
    const L = lens[b];
    const per: Tensor[][] = Array.from({ length: nScanOut }, () => []);
    for (let t = 0; t < L; t++) {
      const slices = seqs.map((s, k) => sliceAxis(s, 0, dirs[k] ? L - 1 - t : t));
      const outs = runBody(ctx, body, [...st, ...slices]);
      st = outs.slice(0, nState);
      for (let k = 0; k < nScanOut; k++) {
        const v = outs[nState + k];
        if (!(v instanceof Tensor)) throw new ExecutionError(`scan output ${k} of the body must be a tensor`, where(ctx));
        per[k].push(v);
      }
    }
    st.forEach((v, k) => {
      if (!(v instanceof Tensor)) throw new ExecutionError(`state ${k} must be a tensor`, where(ctx));
      finalStates[k].push(v);
    });
    for (let k = 0; k < nScanOut; k++) {
      const items = per[k];
      if (items.length === 0) {
        scanOuts[k].push(emptyScanOutput(body.outputs[nState + k].type, 0, ctx, `scan output ${k}`));
        continue;
      }
      // Pad to the longest sequence with zeros.
      const st0 = stack(items, 0, ctx, `scan output ${k}`);
      if (L < maxLen) {
        const dims = [maxLen, ...items[0].dims];
        const data = allocData(st0.type, sizeOf(dims));
        if (Array.isArray(data)) (st0.data as string[]).forEach((s, i) => { data[i] = s; });
        else (data as Float32Array).set(st0.data as Float32Array);
        scanOuts[k].push(new Tensor(st0.type, data, dims));
      } else scanOuts[k].push(st0);
    }
  }
  const result: Value[] = [];
  for (let k = 0; k < nState; k++) {
    result.push(batch ? stack(finalStates[k], 0, ctx, `state ${k}`) : emptyScanOutput(body.outputs[k].type, 0, ctx, `state ${k}`));
  }
  for (let k = 0; k < nScanOut; k++) {
    result.push(batch ? stack(scanOuts[k], 0, ctx, `scan output ${k}`) : emptyScanOutput(body.outputs[nState + k].type, 0, ctx, `scan output ${k}`));
  }
  return result;
}
