// Tensor: the public value type (shaped like onnxruntime-web's) and the dtype table.
import { UnsupportedError, InputError } from './errors.js';

export type DType =
  | 'float32' | 'float64' | 'float16' | 'bfloat16'
  | 'int8' | 'int16' | 'int32' | 'int64'
  | 'uint8' | 'uint16' | 'uint32' | 'uint64'
  | 'bool' | 'string'
  | 'float8e4m3fn' | 'float8e4m3fnuz' | 'float8e5m2' | 'float8e5m2fnuz' | 'float8e8m0'
  | 'int4' | 'uint4' | 'float4e2m1' | 'int2' | 'uint2'
  | 'complex64' | 'complex128';

export type TypedArray =
  | Float32Array | Float64Array | Int8Array | Int16Array | Int32Array | BigInt64Array
  | Uint8Array | Uint16Array | Uint32Array | BigUint64Array;

export type TensorData = TypedArray | string[];

interface DTypeInfo {
  onnx: number;
  /** Bytes per element in the ONNX raw_data encoding (0.5 for 4-bit, 0.25 for 2-bit). */
  rawBytes: number;
  make: (n: number) => TensorData;
}

const f32 = (n: number) => new Float32Array(n);
const u8 = (n: number) => new Uint8Array(n);
const u16 = (n: number) => new Uint16Array(n);

export const DTYPES: Record<DType, DTypeInfo> = {
  float32: { onnx: 1, rawBytes: 4, make: f32 },
  uint8: { onnx: 2, rawBytes: 1, make: u8 },
  int8: { onnx: 3, rawBytes: 1, make: (n) => new Int8Array(n) },
  uint16: { onnx: 4, rawBytes: 2, make: u16 },
  int16: { onnx: 5, rawBytes: 2, make: (n) => new Int16Array(n) },
  int32: { onnx: 6, rawBytes: 4, make: (n) => new Int32Array(n) },
  int64: { onnx: 7, rawBytes: 8, make: (n) => new BigInt64Array(n) },
  string: { onnx: 8, rawBytes: 0, make: (n) => new Array<string>(n).fill('') },
  bool: { onnx: 9, rawBytes: 1, make: u8 },
  float16: { onnx: 10, rawBytes: 2, make: u16 },
  float64: { onnx: 11, rawBytes: 8, make: (n) => new Float64Array(n) },
  uint32: { onnx: 12, rawBytes: 4, make: (n) => new Uint32Array(n) },
  uint64: { onnx: 13, rawBytes: 8, make: (n) => new BigUint64Array(n) },
  complex64: { onnx: 14, rawBytes: 8, make: (n) => new Float32Array(2 * n) },
  complex128: { onnx: 15, rawBytes: 16, make: (n) => new Float64Array(2 * n) },
  bfloat16: { onnx: 16, rawBytes: 2, make: u16 },
  float8e4m3fn: { onnx: 17, rawBytes: 1, make: u8 },
  float8e4m3fnuz: { onnx: 18, rawBytes: 1, make: u8 },
  float8e5m2: { onnx: 19, rawBytes: 1, make: u8 },
  float8e5m2fnuz: { onnx: 20, rawBytes: 1, make: u8 },
  uint4: { onnx: 21, rawBytes: 0.5, make: u8 },
  int4: { onnx: 22, rawBytes: 0.5, make: (n) => new Int8Array(n) },
  float4e2m1: { onnx: 23, rawBytes: 0.5, make: u8 },
  float8e8m0: { onnx: 24, rawBytes: 1, make: u8 },
  uint2: { onnx: 25, rawBytes: 0.25, make: u8 },
  int2: { onnx: 26, rawBytes: 0.25, make: (n) => new Int8Array(n) },
};

const BY_ONNX = new Map<number, DType>(Object.entries(DTYPES).map(([k, v]) => [v.onnx, k as DType]));

export function dtypeFromOnnx(code: number, where = {}): DType {
  const t = BY_ONNX.get(code);
  if (!t) throw new UnsupportedError(`unknown tensor element type ${code}`, where, 'the model uses a data type newer than webjit knows');
  return t;
}

export function onnxFromDtype(t: DType): number {
  return DTYPES[t].onnx;
}

export const isFloat = (t: DType) =>
  t === 'float32' || t === 'float64' || t === 'float16' || t === 'bfloat16' ||
  t === 'float8e4m3fn' || t === 'float8e4m3fnuz' || t === 'float8e5m2' || t === 'float8e5m2fnuz' ||
  t === 'float8e8m0' || t === 'float4e2m1';
export const isBig = (t: DType) => t === 'int64' || t === 'uint64';
export const isInt = (t: DType) =>
  t === 'int8' || t === 'int16' || t === 'int32' || t === 'int64' || t === 'uint8' || t === 'uint16' ||
  t === 'uint32' || t === 'uint64' || t === 'int4' || t === 'uint4' || t === 'int2' || t === 'uint2';
/** Dtypes stored as an encoding that must be decoded to compute on (f16, bf16, f8, f4). */
export const isEncodedFloat = (t: DType) => isFloat(t) && t !== 'float32' && t !== 'float64';

export function sizeOf(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) n *= d;
  return n;
}

/** A dense tensor. `data` is the storage in the dtype's array type (see DTYPES). */
export class Tensor {
  readonly type: DType;
  readonly dims: readonly number[];
  readonly data: TensorData;

  constructor(type: DType, data: TensorData | readonly number[] | readonly bigint[] | readonly boolean[], dims?: readonly number[]) {
    if (!(type in DTYPES)) throw new InputError(`unknown tensor type '${type}'`);
    this.type = type;
    let arr: TensorData;
    if (Array.isArray(data) && type !== 'string') {
      const made = DTYPES[type].make(data.length) as TypedArray;
      for (let i = 0; i < data.length; i++) {
        const v = data[i] as unknown as number | bigint | boolean;
        if (made instanceof BigInt64Array || made instanceof BigUint64Array) (made as BigInt64Array)[i] = BigInt(v as number);
        else (made as Float32Array)[i] = Number(v);
      }
      arr = made;
    } else {
      arr = data as TensorData;
    }
    this.data = arr;
    const n = type === 'complex64' || type === 'complex128' ? arr.length / 2 : arr.length;
    this.dims = dims ? Object.freeze([...dims]) : Object.freeze([n]);
    for (const d of this.dims) {
      if (!Number.isInteger(d) || d < 0) throw new InputError(`invalid dimension ${d} in dims [${this.dims.join(',')}]`);
    }
    if (sizeOf(this.dims) !== n) {
      throw new InputError(`data has ${n} elements but dims [${this.dims.join(',')}] need ${sizeOf(this.dims)}`);
    }
  }

  get size(): number {
    return sizeOf(this.dims);
  }

  static zeros(type: DType, dims: readonly number[]): Tensor {
    return new Tensor(type, DTYPES[type].make(sizeOf(dims)), dims);
  }

  /** Same data, other dims (no copy). */
  reshape(dims: readonly number[]): Tensor {
    return new Tensor(this.type, this.data, dims);
  }
}

/** Values that flow through a graph: tensors, sequences of tensors, optionals, maps. */
export class TensorSequence {
  constructor(readonly elemType: DType | undefined, readonly items: Tensor[]) {}
}
export class OptionalValue {
  constructor(readonly value: Value | null) {}
}
export class MapValue {
  constructor(readonly keyType: DType, readonly keys: Tensor, readonly values: Value) {}
}
export type Value = Tensor | TensorSequence | OptionalValue | MapValue;

export function asTensor(v: Value | undefined, what: string): Tensor {
  if (v instanceof Tensor) return v;
  throw new InputError(`${what} must be a tensor, got ${v === undefined ? 'nothing' : v.constructor.name}`);
}
