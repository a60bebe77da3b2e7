// Helpers the GPU kernel benchmarks share: make and read storage buffers, and time a pipeline over many dispatches in
// one pass.

/** A STORAGE | COPY_DST | COPY_SRC buffer of `d`'s bytes (uploaded) or of `d` bytes, rounded up to 16. */
export function storageBuffer(device: GPUDevice, d: ArrayBufferView | number): GPUBuffer {
  const size = typeof d === 'number' ? d : d.byteLength;
  const U = GPUBufferUsage;
  const b = device.createBuffer({ size: Math.max(16, Math.ceil(size / 16) * 16), usage: U.STORAGE | U.COPY_DST | U.COPY_SRC });
  if (typeof d !== 'number') device.queue.writeBuffer(b, 0, d.buffer, d.byteOffset, d.byteLength);
  return b;
}

/** The first `bytes` of `b` (a STORAGE | COPY_SRC buffer), read through a staging buffer. */
export async function readBuffer(device: GPUDevice, b: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
  const s = device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const e = device.createCommandEncoder();
  e.copyBufferToBuffer(b, 0, s, 0, bytes);
  device.queue.submit([e.finish()]);
  await s.mapAsync(GPUMapMode.READ);
  const out = s.getMappedRange().slice(0);
  s.destroy();
  return out;
}

/** Median ms per dispatch over `rounds` submits of `reps` dispatches each (after one untimed submit). */
export async function timeDispatches(device: GPUDevice, pipeline: GPUComputePipeline, group: GPUBindGroup, groups: [number, number, number], reps: number, rounds = 5): Promise<number> {
  const run = async () => {
    const e = device.createCommandEncoder();
    const p = e.beginComputePass();
    p.setPipeline(pipeline);
    p.setBindGroup(0, group);
    for (let r = 0; r < reps; r++) p.dispatchWorkgroups(...groups);
    p.end();
    device.queue.submit([e.finish()]);
    await device.queue.onSubmittedWorkDone();
  };
  await run();
  const ts: number[] = [];
  for (let i = 0; i < rounds; i++) { const t0 = performance.now(); await run(); ts.push((performance.now() - t0) / reps); }
  return ts.sort((a, b) => a - b)[ts.length >> 1];
}

/**
 * GPU ms per dispatch of one compute pass of `reps` dispatches of `pipeline` (bind groups rotated), from timestamp
 * queries around the pass (the device needs timestamp-query).
 */
export function passTimer(device: GPUDevice): (v: { pipeline: GPUComputePipeline; binds: GPUBindGroup[]; groups: number | [number, number, number] }, reps: number) => Promise<number> {
  const qs = device.createQuerySet({ type: 'timestamp', count: 2 });
  const qbuf = device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  const qread = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  return async (v, reps) => {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass({ timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } });
    pass.setPipeline(v.pipeline);
    for (let i = 0; i < reps; i++) { pass.setBindGroup(0, v.binds[i % v.binds.length]); if (typeof v.groups === 'number') pass.dispatchWorkgroups(v.groups); else pass.dispatchWorkgroups(...v.groups); }
    pass.end();
    enc.resolveQuerySet(qs, 0, 2, qbuf, 0);
    enc.copyBufferToBuffer(qbuf, 0, qread, 0, 16);
    device.queue.submit([enc.finish()]);
    await qread.mapAsync(GPUMapMode.READ);
    const t = new BigInt64Array(qread.getMappedRange().slice(0));
    qread.unmap();
    return Number(t[1] - t[0]) / 1e6 / reps;
  };
}
