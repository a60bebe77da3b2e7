// The GPU suite's process: one Dawn instance as navigator.gpu, shared by webjit and the WebGPU peers (onnxruntime-web,
// TensorFlow.js), as in a browser tab.
import { dawnInstance } from '../backends/webgpu/device.js';
import type { GpuGraphRunner } from '../backends/webgpu/executor.js';
import type { InferenceSession } from '../session.js';
import type { Tensor, Value } from '../tensor.js';

/**
 * Benchmarks only: a WebGPU session's runner, and feeds as the runner takes them (checked as run() checks them), to
 * time a run's GPU work alone (timeRuns) or its kinds of kernels (timeTrace). Null on other backends.
 */
export function gpuRunnerOf(s: InferenceSession): { runner: GpuGraphRunner; feeds(f: Record<string, Tensor>): Map<string, Value> } | null {
  const inner = s as unknown as { gpu: GpuGraphRunner | null; checkFeeds(f: Record<string, Tensor>): Map<string, Value> };
  return inner.gpu ? { runner: inner.gpu, feeds: (f) => inner.checkFeeds(f) } : null;
}

let installed: Promise<string> | null = null;

/** Installs Dawn as navigator.gpu (once); resolves to the adapter's description. */
export function installGpuForPeers(): Promise<string> {
  installed ??= (async () => {
    const gpu = await dawnInstance(true);
    // onnxruntime-web writes straight from its shared Wasm memory, which Dawn in Node rejects: hand it a copy.
    const proto = (globalThis as unknown as { GPUQueue: { prototype: GPUQueue } }).GPUQueue.prototype;
    const writeBuffer = proto.writeBuffer;
    proto.writeBuffer = function (this: GPUQueue, buf: GPUBuffer, off: number, data: BufferSource, dataOff = 0, size?: number) {
      if (ArrayBuffer.isView(data) && data.buffer instanceof SharedArrayBuffer) {
        const bpe = (data as unknown as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT ?? 1;
        const start = data.byteOffset + dataOff * bpe;
        const bytes = size !== undefined ? size * bpe : data.byteLength - dataOff * bpe;
        return writeBuffer.call(this, buf, off, new Uint8Array(data.buffer, start, bytes).slice());
      }
      return writeBuffer.call(this, buf, off, data, dataOff, size);
    } as GPUQueue['writeBuffer'];
    const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) throw new Error('no WebGPU adapter: on a machine with no GPU, run under scripts/with-gpu.sh (software Vulkan)');
    const info = (adapter as unknown as { info?: { vendor?: string; architecture?: string; device?: string; description?: string } }).info;
    return [info?.vendor, info?.architecture, info?.device, info?.description].filter(Boolean).join(' ') || 'unknown adapter';
  })();
  return installed;
}
