// The GPU storage form of tensors (int64 as i32, bool as u32 …): host copies to upload, and tensors from read-back bytes.
import { DTYPES, sizeOf, Tensor, type DType, type TypedArray, type Value } from '../../tensor.js';
import { storageBytes, storageType } from './kernel.js';

/** Host copies of GPU data in the storage representation (int64 as i32, bool as u32 …). */
export function toStorage(t: Tensor): ArrayBufferView {
  const d = t.data as TypedArray;
  switch (t.type) {
    case 'float32': case 'int32': case 'uint32': case 'float16':
      // Dawn cannot read from a SharedArrayBuffer (Wasm memory): copy those.
      return d.buffer instanceof ArrayBuffer ? d : (d.slice() as TypedArray);
    case 'int64': {
      const out = new Int32Array(d.length);
      const src = d as BigInt64Array;
      for (let i = 0; i < src.length; i++) {
        const v = src[i];
        out[i] = v > 2147483647n ? 2147483647 : v < -2147483648n ? -2147483648 : Number(v);
      }
      return out;
    }
    case 'bool': return Uint32Array.from(d as Uint8Array);
    default: return Int32Array.from(d as ArrayLike<number>);
  }
}

type Direct = Float32Array | Uint16Array | Int32Array | Uint32Array;
const DIRECT: Partial<Record<DType, { new (n: number): Direct; new (b: ArrayBuffer, off: number, n: number): Direct }>> =
  { float32: Float32Array, float16: Uint16Array, int32: Int32Array, uint32: Uint32Array };

/**
 * The array a read-back of `dtype`/`dims` will be copied into, made and touched before the GPU is done (readBack calls
 * it between its submit and the map), so the copy out of the mapped range writes to memory that is already there:
 * on the H100's host a fresh 3 MB array cost as much again as the copy (page faults on first write). Null for dtypes
 * that are converted, not copied.
 */
export function outputArray(dtype: DType, dims: readonly number[]): Direct | null {
  const C = DIRECT[dtype];
  if (!C) return null;
  const a = new C(sizeOf(dims));
  if (a.byteLength >= 1 << 16) a.fill(0);
  return a;
}

/**
 * A tensor from the mapped staging bytes at `off` (copied out: the mapping ends after this), into `into` when given
 * (an outputArray of the same dtype and dims).
 */
export function fromStorage(dtype: DType, dims: number[], bytes: ArrayBuffer, off = 0, into?: Direct | null): Tensor {
  const n = sizeOf(dims);
  const C = DIRECT[dtype];
  if (C) {
    const src = new C(bytes, off, n);
    if (into) { into.set(src as never); return new Tensor(dtype, into, dims); }
    return new Tensor(dtype, src.slice(), dims);
  }
  switch (dtype) {
    case 'int64': { const s = new Int32Array(bytes, off, n); const o = new BigInt64Array(n); for (let i = 0; i < n; i++) o[i] = BigInt(s[i]); return new Tensor(dtype, o, dims); }
    case 'bool': { const s = new Uint32Array(bytes, off, n); const o = new Uint8Array(n); for (let i = 0; i < n; i++) o[i] = s[i] ? 1 : 0; return new Tensor(dtype, o, dims); }
    default: {
      const s = new Int32Array(bytes, off, n);
      const C = (DTYPES[dtype].make(0) as TypedArray).constructor as unknown as { from(x: ArrayLike<number>): TypedArray };
      return new Tensor(dtype, C.from(s), dims);
    }
  }
}

export const storable = (t: Value): t is Tensor => t instanceof Tensor && storageType(t.type) !== null;
export const gpuBytes = (dtype: DType, dims: readonly number[]) => Math.max(4, Math.ceil((sizeOf(dims) * storageBytes(dtype)) / 4) * 4);

/** queue.writeBuffer needs a multiple of 4 bytes, and (in Dawn for Node) a buffer that is not shared: such data is copied. */
export function writePadded(device: GPUDevice, buffer: GPUBuffer, data: ArrayBufferView): void {
  const n = data.byteLength;
  const shared = typeof SharedArrayBuffer !== 'undefined' && data.buffer instanceof SharedArrayBuffer;
  if (n % 4 === 0 && !shared) { device.queue.writeBuffer(buffer, 0, data.buffer, data.byteOffset, n); return; }
  const padded = new Uint8Array(Math.ceil(n / 4) * 4);
  padded.set(new Uint8Array(data.buffer, data.byteOffset, n));
  device.queue.writeBuffer(buffer, 0, padded);
}
