// Reference kernels: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear (per-tensor, per-axis, blocked).
import { InputError } from '../errors.js';
import { dtypeFromOnnx, isFloat, sizeOf, Tensor, type DType } from '../tensor.js';
import { floatEncoder } from './cast.js';
import { registerOp, unsupported, type KernelContext } from './registry.js';
import { allocData, bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, input, normAxis, numbers, optInput } from './util.js';

const where = (ctx: KernelContext) => ({ node: ctx.node.name, op: ctx.node.opType });

/**
 * For each element of an x of `xDims`, the index of its scale / zero point (shape `pDims`), or null when the
 * parameter is a single value (per-tensor). Per-axis: pDims = [xDims[axis]]; blocked: pDims = xDims with
 * dimension `axis` divided by `blockSize` (rounded up).
 */
function paramIndex(xDims: readonly number[], pDims: readonly number[], axisAttr: number, blockSize: number,
  what: string, ctx: KernelContext): Int32Array | null {
  const pSize = sizeOf(pDims);
  if (pSize === 1) return null;
  const rank = xDims.length;
  if (rank === 0) throw new InputError(`${what} has ${pSize} values but the input is a scalar`, where(ctx));
  const axis = normAxis(axisAttr, rank, ctx);
  const A = xDims[axis];
  let outer = 1;
  for (let d = 0; d < axis; d++) outer *= xDims[d];
  let inner = 1;
  for (let d = axis + 1; d < rank; d++) inner *= xDims[d];
  const n = outer * A * inner;
  const idx = new Int32Array(n);
  if (blockSize > 0) {
    const nb = Math.ceil(A / blockSize);
    let ok = pDims.length === rank;
    for (let d = 0; ok && d < rank; d++) ok = pDims[d] === (d === axis ? nb : xDims[d]);
    if (!ok) {
      throw new InputError(`${what} of shape [${pDims.join(',')}] does not fit blocked quantization of an input of shape [${xDims.join(',')}] with axis ${axis} and block_size ${blockSize}`, where(ctx));
    }
    let i = 0;
    for (let o = 0; o < outer; o++) {
      for (let a = 0; a < A; a++) {
        const base = (o * nb + Math.floor(a / blockSize)) * inner;
        for (let k = 0; k < inner; k++) idx[i++] = base + k;
      }
    }
    return idx;
  }
  if (blockSize < 0) throw new InputError(`block_size must be positive, got ${blockSize}`, where(ctx));
  if (pDims.length !== 1 || pDims[0] !== A) {
    throw new InputError(`${what} of shape [${pDims.join(',')}] must be a scalar or a 1-D tensor of length ${A} (input dimension ${axis})`, where(ctx));
  }
  let i = 0;
  for (let o = 0; o < outer; o++) {
    for (let a = 0; a < A; a++) {
      for (let k = 0; k < inner; k++) idx[i++] = a;
    }
  }
  return idx;
}

/** Round half to even (np.rint). */
function rint(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Rounding of a JS number to the float dtype `t` (identity for float64). */
function rounder(t: DType): (x: number) => number {
  switch (t) {
    case 'float64': return (x) => x;
    case 'float32': return Math.fround;
    case 'float16': return (x) => f16ToF32(f32ToF16(x));
    case 'bfloat16': return (x) => bf16ToF32(f32ToBf16(x));
    default: throw new InputError(`${t} is not a computation precision`);
  }
}

/** numpy's result dtype of arithmetic between x and scale (float types; ints promote to float64). */
function promote(a: DType, b: DType): DType {
  if (a === b && isFloat(a)) return a;
  if (!isFloat(a) || !isFloat(b)) return 'float64';
  if (a === 'float64' || b === 'float64') return 'float64';
  return 'float32';
}

const INT_RANGES: Partial<Record<DType, [number, number]>> = {
  uint8: [0, 255], int8: [-128, 127], uint16: [0, 65535], int16: [-32768, 32767],
  uint4: [0, 15], int4: [-8, 7], uint2: [0, 3], int2: [-2, 1],
};
const F8 = new Set<DType>(['float8e4m3fn', 'float8e4m3fnuz', 'float8e5m2', 'float8e5m2fnuz']);
const QUANT_X = new Set<DType>(['float32', 'float16', 'bfloat16', 'float64', 'int32']);
const SCALE_T = new Set<DType>(['float32', 'float16', 'bfloat16', 'float64']);

function outputDtypeAttr(ctx: KernelContext): DType | undefined {
  const code = ctx.attr.int('output_dtype', 0);
  return code ? dtypeFromOnnx(code, where(ctx)) : undefined;
}

registerOp('QuantizeLinear', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const scale = input(inputs, 1, ctx);
  const zp = optInput(inputs, 2);
  const axis = ctx.attr.int('axis', 1);
  const blockSize = ctx.attr.int('block_size', 0);
  const saturate = ctx.attr.int('saturate', 1) !== 0;
  const precisionCode = ctx.attr.int('precision', 0);
  const outAttr = outputDtypeAttr(ctx);

  if (!QUANT_X.has(x.type)) unsupported(ctx, `input type ${x.type} is not supported`);
  if (!SCALE_T.has(scale.type)) unsupported(ctx, `scale type ${scale.type} is not supported`);
  let outT: DType = outAttr ?? 'uint8';
  if (zp) {
    if (outAttr && outAttr !== zp.type) {
      throw new InputError(`output_dtype ${outAttr} does not match the zero point type ${zp.type}`, where(ctx));
    }
    outT = zp.type;
    if (sizeOf(zp.dims) !== sizeOf(scale.dims)) {
      throw new InputError(`zero point shape [${zp.dims.join(',')}] differs from scale shape [${scale.dims.join(',')}]`, where(ctx));
    }
  }
  const range = INT_RANGES[outT];
  if (!range && !F8.has(outT) && outT !== 'float4e2m1') unsupported(ctx, `quantizing to ${outT} is not supported`);

  const sIdx = paramIndex(x.dims, scale.dims, axis, blockSize, 'scale', ctx);
  const precT = precisionCode ? dtypeFromOnnx(precisionCode, where(ctx)) : promote(x.type, scale.type);
  if (!SCALE_T.has(precT)) unsupported(ctx, `precision ${precT} is not supported`);
  const R = rounder(precT);

  const xv = numbers(x);
  const sv = numbers(scale);
  const zv = zp ? numbers(zp) : undefined;
  const n = x.size;
  const out = allocData(outT, n) as Uint8Array;
  if (range) {
    const [qmin, qmax] = range;
    for (let i = 0; i < n; i++) {
      const j = sIdx ? sIdx[i] : 0;
      const q = R(R(xv[i]) / R(sv[j]));
      let r: number;
      if (q !== q) r = qmin; // numpy: NaN -> INT32_MIN -> clipped
      else {
        r = rint(q) + (zv ? zv[j] : 0);
        r = r < qmin ? qmin : r > qmax ? qmax : r;
      }
      out[i] = r;
    }
  } else {
    const enc = floatEncoder(outT, saturate || outT === 'float4e2m1');
    const addZp = outT === 'float4e2m1' && zv !== undefined;
    for (let i = 0; i < n; i++) {
      const j = sIdx ? sIdx[i] : 0;
      let q = R(R(xv[i]) / R(sv[j]));
      if (addZp) q = R(q + zv![j]);
      out[i] = enc(q);
    }
  }
  return [new Tensor(outT, out, x.dims)];
});

const DEQUANT_X = new Set<DType>(['int8', 'uint8', 'int16', 'uint16', 'int32', 'int4', 'uint4', 'int2', 'uint2',
  'float8e4m3fn', 'float8e4m3fnuz', 'float8e5m2', 'float8e5m2fnuz', 'float4e2m1']);

registerOp('DequantizeLinear', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const scale = input(inputs, 1, ctx);
  const zp = optInput(inputs, 2);
  const axis = ctx.attr.int('axis', 1);
  const blockSize = ctx.attr.int('block_size', 0);
  const outT = outputDtypeAttr(ctx) ?? scale.type;

  if (!DEQUANT_X.has(x.type)) unsupported(ctx, `input type ${x.type} is not supported`);
  if (!SCALE_T.has(scale.type)) unsupported(ctx, `scale type ${scale.type} is not supported`);
  if (!SCALE_T.has(outT)) unsupported(ctx, `output type ${outT} is not supported`);
  const floatX = isFloat(x.type);
  if (zp) {
    if (sizeOf(zp.dims) !== sizeOf(scale.dims)) {
      throw new InputError(`zero point shape [${zp.dims.join(',')}] differs from scale shape [${scale.dims.join(',')}]`, where(ctx));
    }
    if (!floatX && zp.type !== x.type) {
      throw new InputError(`zero point type ${zp.type} differs from input type ${x.type}`, where(ctx));
    }
    if (F8.has(x.type)) {
      const zb = numbers(zp);
      for (let i = 0; i < zb.length; i++) {
        if (zb[i] !== 0) throw new InputError('the zero point of a float8 input must be zero', where(ctx));
      }
    }
  }
  const sIdx = paramIndex(x.dims, scale.dims, axis, blockSize, 'scale', ctx);
  const xv = numbers(x);
  const sv = numbers(scale);
  const zv = zp && !floatX ? numbers(zp) : undefined;
  const n = x.size;
  // numpy: x.astype(float32) - zp (float32, or float64 for int32 inputs), times scale, then cast.
  const wide = x.type === 'int32';
  const vals = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const j = sIdx ? sIdx[i] : 0;
    let dx = xv[i];
    if (wide) dx = Math.fround(dx) - (zv ? zv[j] : 0);
    else if (zv) dx = Math.fround(dx - zv[j]);
    const y = dx * sv[j];
    vals[i] = wide || scale.type === 'float64' ? y : Math.fround(y);
  }
  const out = allocData(outT, n);
  if (outT === 'float32' || outT === 'float64') (out as Float32Array).set(vals);
  else {
    const enc = floatEncoder(outT);
    const o = out as Uint16Array;
    for (let i = 0; i < n; i++) o[i] = enc(vals[i]);
  }
  return [new Tensor(outT, out, x.dims)];
});

registerOp('DynamicQuantizeLinear', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  if (x.type !== 'float32' && x.type !== 'float16' && x.type !== 'bfloat16' && x.type !== 'float64') {
    unsupported(ctx, `input type ${x.type} is not supported`);
  }
  const f = Math.fround;
  const xv = numbers(x);
  const n = x.size;
  let mx = 0;
  let mn = 0;
  for (let i = 0; i < n; i++) {
    const v = xv[i];
    if (v > mx) mx = v;
    if (v < mn) mn = v;
  }
  mx = f(mx);
  mn = f(mn);
  const yScale = mx === mn ? 1 : f(f(mx - mn) / 255);
  const initialZp = f(0 - f(mn / yScale));
  const zpc = Math.max(0, Math.min(255, initialZp));
  const zpi = rint(zpc);
  const y = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const q = f(xv[i] / yScale);
    if (q !== q) { y[i] = 0; continue; }
    const r = rint(q) + zpi;
    y[i] = r < 0 ? 0 : r > 255 ? 255 : r;
  }
  const scaleOut = allocData(x.type, 1);
  if (x.type === 'float32' || x.type === 'float64') (scaleOut as Float32Array)[0] = yScale;
  else (scaleOut as Uint16Array)[0] = floatEncoder(x.type)(yScale);
  return [new Tensor('uint8', y, x.dims), new Tensor(x.type, scaleOut, []), new Tensor('uint8', new Uint8Array([zpi]), [])];
});
