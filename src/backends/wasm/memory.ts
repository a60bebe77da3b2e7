// Wasm linear memory: one (shared) WebAssembly.Memory and a first-fit allocator with coalescing, 64-byte aligned.
import { ExecutionError, ResourceLimitError } from '../../errors.js';

const PAGE = 65536;
const ALIGN = 64;
/** The 32-bit Wasm address space: 4 GiB. */
export const MAX_PAGES = 65536;
export const MAX_BYTES = MAX_PAGES * PAGE;

/** The bytes an allocation of `bytes` takes (64-byte aligned, never empty). */
export const allocSize = (bytes: number) => Math.max(ALIGN, Math.ceil(bytes / ALIGN) * ALIGN);

export class WasmMemory {
  readonly memory: WebAssembly.Memory;
  /** Free blocks [start, end) sorted by start. */
  private free: { start: number; end: number }[] = [];
  private top = ALIGN; // 0 is never a valid pointer
  private sizes = new Map<number, number>();
  private u8cache: Uint8Array | null = null;

  constructor(readonly shared: boolean, initialPages = 256) {
    this.memory = new WebAssembly.Memory({ initial: initialPages, maximum: MAX_PAGES, shared } as WebAssembly.MemoryDescriptor);
  }

  get bytesInUse(): number {
    let n = 0;
    for (const s of this.sizes.values()) n += s;
    return n;
  }

  get capacity(): number {
    return this.memory.buffer.byteLength;
  }

  alloc(bytes: number): number {
    // A size computed from a malformed shape (NaN, negative, fractional) must not reach the allocator's state.
    if (!Number.isSafeInteger(bytes) || bytes < 0) {
      throw new ExecutionError(`invalid allocation of ${bytes} bytes of Wasm memory`, {}, 'a node computed an invalid output shape: the model is malformed');
    }
    const size = allocSize(bytes);
    for (let i = 0; i < this.free.length; i++) {
      const b = this.free[i];
      if (b.end - b.start >= size) {
        const p = b.start;
        b.start += size;
        if (b.start === b.end) this.free.splice(i, 1);
        this.sizes.set(p, size);
        return p;
      }
    }
    const p = this.top;
    const end = p + size;
    if (end > MAX_BYTES) {
      throw new ResourceLimitError(`the model needs more than the 4 GiB of Wasm memory (asked for ${bytes} more bytes with ${this.bytesInUse} in use)`,
        {}, 'use a smaller batch or sequence, or the webgpu backend');
    }
    if (end > this.capacity) this.grow(end);
    this.top = end;
    this.sizes.set(p, size);
    return p;
  }

  release(p: number): void {
    const size = this.sizes.get(p);
    if (size === undefined) return;
    this.sizes.delete(p);
    let start = p, end = p + size;
    // Insert and coalesce with neighbours.
    let i = 0;
    while (i < this.free.length && this.free[i].start < start) i++;
    if (i > 0 && this.free[i - 1].end === start) { start = this.free[i - 1].start; this.free.splice(--i, 1); }
    if (i < this.free.length && this.free[i].start === end) { end = this.free[i].end; this.free.splice(i, 1); }
    if (end === this.top) { this.top = start; return; }
    this.free.splice(i, 0, { start, end });
  }

  private grow(end: number): void {
    const need = Math.ceil((end - this.capacity) / PAGE);
    // Grow geometrically to keep the number of grows small.
    const pages = Math.min(MAX_PAGES - this.capacity / PAGE, Math.max(need, Math.ceil(this.capacity / PAGE / 2)));
    try {
      this.memory.grow(pages);
    } catch (e) {
      // The engine could not reserve the pages (a browser or device cap below 4 GiB): a typed error, not a crash.
      throw new ResourceLimitError(`growing Wasm memory from ${this.capacity} to ${this.capacity + pages * PAGE} bytes failed (${(e as Error).message})`,
        {}, 'use a smaller batch, sequence or model, or the webgpu backend');
    }
    this.u8cache = null;
  }

  /** A byte view of the whole memory (refreshed after growth). */
  get u8(): Uint8Array {
    if (!this.u8cache || this.u8cache.buffer !== this.memory.buffer || this.u8cache.length !== this.memory.buffer.byteLength) {
      this.u8cache = new Uint8Array(this.memory.buffer);
    }
    return this.u8cache;
  }
}
