// Constants derived on the GPU (kernel.ts's GpuDerivation): the source is uploaded, one dispatch writes the constant's
// buffer, and the source goes as soon as the GPU is done with it.
import type { GpuDerivation } from './kernel.js';
import { writePadded } from './storage.js';

const STORAGE = 0x80, UNIFORM = 0x40, COPY_SRC = 0x04, COPY_DST = 0x08;

/** Derivation pipelines by WGSL text, per device (a handful of kernels, each compiled once). */
const pipelines = new WeakMap<GPUDevice, Map<string, GPUComputePipeline>>();

/**
 * The constant's buffer (storage, copy source and destination, as the executor's constants), with the derivation
 * submitted: queue order puts it before any later submit that reads the buffer. The pipeline is created synchronously
 * (a dispatch of this submit needs it now; the kernels are small and cached per device).
 */
export function deriveConstant(device: GPUDevice, d: GpuDerivation): GPUBuffer {
  let cache = pipelines.get(device);
  if (!cache) { cache = new Map(); pipelines.set(device, cache); }
  let pipeline = cache.get(d.code);
  if (!pipeline) {
    pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: d.code }), entryPoint: 'main' } });
    cache.set(d.code, pipeline);
  }
  const source = device.createBuffer({ size: Math.max(4, Math.ceil(d.source.byteLength / 4) * 4), usage: STORAGE | COPY_DST });
  writePadded(device, source, d.source);
  const params = device.createBuffer({ size: Math.max(16, Math.ceil(d.params.byteLength / 16) * 16), usage: UNIFORM | COPY_DST });
  writePadded(device, params, d.params);
  const out = device.createBuffer({ size: Math.max(4, Math.ceil(d.bytes / 4) * 4), usage: STORAGE | COPY_SRC | COPY_DST });
  const group = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [source, params, out].map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, group);
  pass.dispatchWorkgroups(...d.groups);
  pass.end();
  device.queue.submit([enc.finish()]);
  // Destroyed after the submit: the GPU keeps what submitted work uses until that work is done.
  source.destroy();
  params.destroy();
  return out;
}
