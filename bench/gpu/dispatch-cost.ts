// What a dispatch costs on this GPU through Dawn, apart from its work: GPU time per dispatch (timestamps around a pass of
// N dispatches) for an almost empty kernel and for a 4-bit matrix-vector product, with the same bind group every time,
// alternating bind groups, and one pass per dispatch; plus the read bandwidth a WGSL kernel reaches when streaming a
// 256 MiB buffer (the attainable roofline). Usage: node dispatch-cost.mjs   (Env: WEBJIT_DAWN_FLAGS, ';'-separated extra
// Dawn flags, e.g. disable-dawn-features=timestamp_quantization)
import { acquireGpu } from '../../src/backends/webgpu/device.js';
import { gemvKernel, matLayout } from '../../src/llm/wgsl.js';

const { device, caps } = await acquireGpu();
console.log(`adapter ${caps.name}; extra Dawn flags ${process.env.WEBJIT_DAWN_FLAGS ?? 'none'}`);
const S = GPUBufferUsage.STORAGE, CD = GPUBufferUsage.COPY_DST, CS = GPUBufferUsage.COPY_SRC;
const qs = device.createQuerySet({ type: 'timestamp', count: 512 });
const qbuf = device.createBuffer({ size: 512 * 8, usage: GPUBufferUsage.QUERY_RESOLVE | CS });
const qread = device.createBuffer({ size: 512 * 8, usage: GPUBufferUsage.MAP_READ | CD });
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

async function pipe(code: string): Promise<GPUComputePipeline> {
  return device.createComputePipelineAsync({ layout: 'auto', compute: { module: device.createShaderModule({ code }), entryPoint: 'main' } });
}
const bind = (p: GPUComputePipeline, bufs: GPUBuffer[]) => device.createBindGroup({ layout: p.getBindGroupLayout(0), entries: bufs.map((buffer, binding) => ({ binding, resource: { buffer } })) });

/** µs of GPU time per dispatch: N dispatches, in one pass (bind groups cycled) or one pass each. */
async function perDispatch(p: GPUComputePipeline, binds: GPUBindGroup[], groups: number, N: number, mode: 'one' | 'each', rebind = true): Promise<number> {
  const xs: number[] = [];
  for (let round = 0; round < 5; round++) {
    const enc = device.createCommandEncoder();
    if (mode === 'one') {
      const pass = enc.beginComputePass({ timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } });
      pass.setPipeline(p);
      for (let i = 0; i < N; i++) { if (rebind || i === 0) pass.setBindGroup(0, binds[i % binds.length]); pass.dispatchWorkgroups(groups); }
      pass.end();
    } else {
      for (let i = 0; i < N; i++) {
        const pass = enc.beginComputePass(i === 0 || i === N - 1 ? { timestampWrites: { querySet: qs, ...(i === 0 ? { beginningOfPassWriteIndex: 0 } : {}), ...(i === N - 1 ? { endOfPassWriteIndex: 1 } : {}) } } : undefined);
        pass.setPipeline(p); pass.setBindGroup(0, binds[i % binds.length]); pass.dispatchWorkgroups(groups); pass.end();
      }
    }
    enc.resolveQuerySet(qs, 0, 2, qbuf, 0);
    enc.copyBufferToBuffer(qbuf, 0, qread, 0, 16);
    device.queue.submit([enc.finish()]);
    await qread.mapAsync(GPUMapMode.READ, 0, 16);
    const t = new BigInt64Array(qread.getMappedRange(0, 16).slice(0));
    qread.unmap();
    if (round > 0) xs.push(Number(t[1] - t[0]) / 1e3 / N);
  }
  return med(xs);
}

const out = (what: string, us: number, extra = '') => console.log(`${what.padEnd(64)} ${us.toFixed(2).padStart(8)} us/dispatch ${extra}`);

// 1. An almost empty kernel: one workgroup of 64 writes one word.
const tiny = await pipe('@group(0) @binding(0) var<storage, read_write> o: array<u32>;\n@compute @workgroup_size(64) fn main(@builtin(local_invocation_index) l: u32) { if (l == 0u) { o[0] = o[0] + 1u; } }');
const tb = [0, 1, 2].map(() => bind(tiny, [device.createBuffer({ size: 256, usage: S })]));
for (const N of [100, 400]) {
  out(`empty kernel x${N}, one pass, same bind group set once`, await perDispatch(tiny, tb.slice(0, 1), 1, N, 'one', false));
  out(`empty kernel x${N}, one pass, same bind group set every dispatch`, await perDispatch(tiny, tb.slice(0, 1), 1, N, 'one'));
  out(`empty kernel x${N}, one pass, 3 bind groups in turn`, await perDispatch(tiny, tb, 1, N, 'one'));
  out(`empty kernel x${N}, a pass each`, await perDispatch(tiny, tb, 1, N, 'each'));
}
// Many workgroups doing nothing: the cost of a wide grid.
for (const G of [256, 1024, 4096]) out(`empty kernel, ${G} workgroups of 64, x200, one pass`, await perDispatch(tiny, tb.slice(0, 1), G, 200, 'one', false));

// 2. Streaming read bandwidth: WG threads, each reads U vec4<u32> per iteration (grid-stride), XOR-reduces.
const MB = Math.min(256 << 20, device.limits.maxStorageBufferBindingSize);
const big = [0, 1].map(() => { const b = device.createBuffer({ size: MB, usage: S | CD }); return b; });
const sink = device.createBuffer({ size: 1 << 20, usage: S });
for (const [WG, U, G] of [[256, 1, 1056], [256, 4, 1056], [256, 8, 528], [256, 4, 2112], [128, 8, 1056], [512, 4, 528], [256, 2, 4224]]) {
  const n4 = MB / 16;
  const code = `@group(0) @binding(0) var<storage, read> a: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> o: array<u32>;
@compute @workgroup_size(${WG}) fn main(@builtin(global_invocation_id) g: vec3u) {
  var acc = vec4<u32>(0u);
  let stride = ${G * WG}u;
  for (var i = g.x; i < ${n4}u; i += stride * ${U}u) {
    ${Array.from({ length: U }, (_, k) => `let v${k} = a[min(i + ${k}u * stride, ${n4 - 1}u)];`).join(' ')}
    acc ^= ${Array.from({ length: U }, (_, k) => `v${k}`).join(' ^ ')};
  }
  let s = acc.x ^ acc.y ^ acc.z ^ acc.w;
  if (s == 0x12345678u) { o[g.x & 0xffffu] = s; }
}`;
  const p = await pipe(code);
  const us = await perDispatch(p, big.map((b) => bind(p, [b, sink])), G, 20, 'one');
  out(`stream 256 MiB: WG ${WG}, ${U} vec4 loads in flight, ${G} workgroups`, us, `${(MB / us / 1e3).toFixed(0)} GB/s`);
}

// 3. The 4-bit matrix-vector kernel (webjit's, default decode shape) at two sizes: same buffers / many copies in turn.
for (const [N, K, RT, TK, RG, UN] of [[2048, 2048, 4, 32, 2, 1], [8192, 8192, 4, 32, 8, 1], [8192, 8192, 4, 64, 2, 4]]) {
  const m = matLayout('q', 4, 32, N, K, true);
  const spec = { m, norm: false, eps: 1e-5, gather: false, epi: { kind: 'head' as const }, sg: true, TB: 1, RT, TK, RG, UN };
  const p = await pipe(gemvKernel(spec));
  const meta = device.createBuffer({ size: 64, usage: S | CD });
  device.queue.writeBuffer(meta, 0, new Uint32Array([1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]));
  const X = device.createBuffer({ size: K * 4, usage: S });
  const O = device.createBuffer({ size: N * 4, usage: S });
  const copies = Math.ceil((256 << 20) / (m.words * 4));
  const Ws = Array.from({ length: copies }, () => device.createBuffer({ size: m.words * 4, usage: S }));
  const binds = Ws.map((W) => bind(p, [meta, W, X, O]));
  const bytes = m.words * 4;
  const tag = `gemv ${N}x${K} RT${RT} TK${TK} RG${RG} UN${UN}`;
  let us = await perDispatch(p, binds.slice(0, 1), Math.ceil(N / (RT * RG)), 100, 'one', false);
  out(`${tag}: same W, bound once`, us, `${(bytes / us / 1e3).toFixed(0)} GB/s`);
  us = await perDispatch(p, binds.slice(0, 1), Math.ceil(N / (RT * RG)), 100, 'one');
  out(`${tag}: same W, bound every dispatch`, us, `${(bytes / us / 1e3).toFixed(0)} GB/s`);
  us = await perDispatch(p, binds, Math.ceil(N / (RT * RG)), Math.max(100, copies), 'one');
  out(`${tag}: ${copies} copies in turn (cold L2)`, us, `${(bytes / us / 1e3).toFixed(0)} GB/s`);
  us = await perDispatch(p, binds, Math.ceil(N / (RT * RG)), Math.max(100, copies), 'each');
  out(`${tag}: ${copies} copies, a pass each`, us, `${(bytes / us / 1e3).toFixed(0)} GB/s`);
  for (const b of Ws) b.destroy();
}
process.exit(0);
