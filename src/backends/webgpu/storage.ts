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

/** A tensor from the mapped staging bytes at `off` (copied out: the mapping ends after this). */
export function fromStorage(dtype: DType, dims: number[], bytes: ArrayBuffer, off = 0): Tensor {
  const n = sizeOf(dims);
  switch (dtype) {
    case 'float32': return new Tensor(dtype, new Float32Array(bytes, off, n).slice(), dims);
    case 'float16': return new Tensor(dtype, new Uint16Array(bytes, off, n).slice(), dims);
    case 'int32': return new Tensor(dtype, new Int32Array(bytes, off, n).slice(), dims);
    case 'uint32': return new Tensor(dtype, new Uint32Array(bytes, off, n).slice(), dims);
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
