// GpuTensor: a tensor that lives in a GPU buffer, for chained runs without a trip through the CPU (the decoder loop
// feeds each step's KV cache to the next). Produced by session.runGpu() or wrapped around an app's own buffer; fed to
// session.run()/runGpu() like a Tensor. The buffer holds webjit's storage form of the dtype: float32, int32, uint32
// as themselves, float16 as f16, int64 as i32 (clamped), bool as u32.
import { ExecutionError, InputError } from '../../errors.js';
import { sizeOf, Tensor, type DType } from '../../tensor.js';
import { fromStorage, gpuBytes } from './storage.js';
import { storageType } from './kernel.js';

const MAP_READ = 1;
const USAGE_READBACK = 0x01 | 0x08; // MAP_READ | COPY_DST

export class GpuTensor {
  readonly location = 'gpu-buffer' as const;
  readonly size: number;
  private buf: GPUBuffer | null;

  /**
   * @param release called instead of buffer.destroy() by dispose() (a session takes its buffer back into its pool).
   */
  constructor(readonly type: DType, readonly dims: readonly number[], buffer: GPUBuffer, readonly device: GPUDevice,
    private readonly release?: (b: GPUBuffer) => void) {
    this.size = sizeOf(dims);
    this.buf = buffer;
  }

  /**
   * Wraps an app's buffer (STORAGE | COPY_SRC usage, at least the storage bytes of `dims`). webjit never writes to it
   * nor destroys it.
   */
  static fromBuffer(buffer: GPUBuffer, opts: { type: DType; dims: readonly number[]; device: GPUDevice }): GpuTensor {
    if (storageType(opts.type) === null) {
      throw new InputError(`dtype ${opts.type} has no GPU storage form`, {}, 'use float32, float16, int32, uint32, int64 or bool');
    }
    const need = gpuBytes(opts.type, opts.dims);
    if (buffer.size < need) {
      throw new InputError(`the buffer has ${buffer.size} bytes; ${opts.type}[${opts.dims.join(',')}] needs ${need}`, {}, 'pass a larger buffer or smaller dims');
    }
    return new GpuTensor(opts.type, [...opts.dims], buffer, opts.device, () => undefined);
  }

  get disposed(): boolean { return this.buf === null; }

  /** The GPU buffer (valid until dispose()). */
  get buffer(): GPUBuffer {
    if (!this.buf) throw new InputError('the GPU tensor was disposed', {}, 'keep it until its last use, then dispose() it');
    return this.buf;
  }

  /** Reads the values back into a CPU Tensor (one GPU→CPU synchronisation). */
  async download(): Promise<Tensor> {
    const src = this.buffer;
    const bytes = gpuBytes(this.type, this.dims);
    const staging = this.device.createBuffer({ size: Math.ceil(bytes / 4) * 4, usage: USAGE_READBACK });
    try {
      const enc = this.device.createCommandEncoder();
      enc.copyBufferToBuffer(src, 0, staging, 0, staging.size);
      this.device.queue.submit([enc.finish()]);
      try {
        await staging.mapAsync(MAP_READ);
      } catch (e) {
        throw new ExecutionError(`reading a GPU tensor back failed: ${(e as Error).message}`, {}, 'the device may have been lost; create a new session');
      }
      return fromStorage(this.type, [...this.dims], staging.getMappedRange());
    } finally {
      staging.destroy();
    }
  }

  /** Gives the buffer back (to the session's pool, or destroys it). Later uses throw an InputError. */
  dispose(): void {
    const b = this.buf;
    if (!b) return;
    this.buf = null;
    if (this.release) this.release(b);
    else b.destroy();
  }
}
