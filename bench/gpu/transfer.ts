// Host↔GPU transfer costs through Dawn: writeBuffer, a buffer copy, mapAsync and reading the mapped range, by size.
// Tells whether a webgpu run from CPU arrays pays for bandwidth or for fixed latency. Usage: node transfer.mjs
import { dawnInstance } from '../../src/backends/webgpu/device.js';

const gpu = await dawnInstance();
const adapter = (await gpu.requestAdapter({ powerPreference: 'high-performance' }))!;
const device = await adapter.requestDevice();
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
console.log('bytes        write ms  copy ms  map ms  slice ms  Float32Array.from ms  GB/s(write+copy+map+slice)');
for (const bytes of [4096, 128 * 1024, 1 << 20, 4 << 20, 16 << 20]) {
  const n = bytes / 4;
  const buf = device.createBuffer({ size: bytes, usage: 0x80 | 0x04 | 0x08 });
  const rd = device.createBuffer({ size: bytes, usage: 0x01 | 0x08 });
  const data = new Float32Array(n).fill(1);
  const t = { w: [] as number[], c: [] as number[], m: [] as number[], s: [] as number[], f: [] as number[] };
  for (let it = 0; it < 12; it++) {
    let a = performance.now();
    device.queue.writeBuffer(buf, 0, data.buffer, 0, bytes);
    await device.queue.onSubmittedWorkDone();
    t.w.push(performance.now() - a);
    a = performance.now();
    const enc = device.createCommandEncoder();
    enc.copyBufferToBuffer(buf, 0, rd, 0, bytes);
    device.queue.submit([enc.finish()]);
    await device.queue.onSubmittedWorkDone();
    t.c.push(performance.now() - a);
    a = performance.now();
    await rd.mapAsync(1);
    t.m.push(performance.now() - a);
    const r = rd.getMappedRange();
    a = performance.now();
    const copy = new Float32Array(r.slice(0));
    t.s.push(performance.now() - a);
    a = performance.now();
    const copy2 = Float32Array.from(new Float32Array(r));
    t.f.push(performance.now() - a);
    if (copy[n - 1] !== 1 || copy2[0] !== 1) throw new Error('bad read-back');
    rd.unmap();
  }
  const [w, c, m, s, f] = [t.w, t.c, t.m, t.s, t.f].map((x) => med(x.slice(2)));
  console.log(`${String(bytes).padEnd(12)} ${w.toFixed(3).padStart(8)} ${c.toFixed(3).padStart(8)} ${m.toFixed(3).padStart(7)} ${s.toFixed(3).padStart(9)} ${f.toFixed(3).padStart(21)}  ${(bytes / (w + c + m + s) / 1e6).toFixed(2)}`);
  buf.destroy(); rd.destroy();
}
process.exit(0);
