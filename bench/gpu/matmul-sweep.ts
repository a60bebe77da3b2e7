// GPU matmul sweep (run on the H100 through Dawn): every candidate tile at 4096³ and 1024³ and the skinny kernel at
// decode shapes, each checked on sampled outputs against a CPU dot product, timed over many dispatches in one pass.
import { acquireGpu } from '../../src/backends/webgpu/device.js';
import { type MatmulSpec, type MatmulTile, skinnyMatmul, tensorCoreMatmul, tiledMatmul, tileValid } from '../../src/codegen/wgsl/matmul.js';
import { getFloat16, setFloat16 } from '@petamoriken/float16';

const gpu = await acquireGpu();
const { device, caps } = gpu;
console.log(`adapter: ${caps.name}; f16 ${caps.f16}; subgroups ${caps.subgroups}; subgroup-matrix configs ${caps.subgroupMatrix.length}`);

function buffer(data: Float32Array): GPUBuffer {
  const b = device.createBuffer({ size: data.byteLength, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(b, 0, data);
  return b;
}
async function read(b: GPUBuffer, bytes: number): Promise<Float32Array> {
  const s = device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const e = device.createCommandEncoder();
  e.copyBufferToBuffer(b, 0, s, 0, bytes);
  device.queue.submit([e.finish()]);
  await s.mapAsync(GPUMapMode.READ);
  const out = new Float32Array(s.getMappedRange().slice(0));
  s.destroy();
  return out;
}

/** Median ms per dispatch over `rounds` submits of `reps` dispatches each. */
async function time(pipeline: GPUComputePipeline, group: GPUBindGroup, groups: [number, number, number], reps: number, rounds = 5): Promise<number> {
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

async function bench(M: number, N: number, K: number, kernels: { name: string; code: string; groups: [number, number, number] }[], reps: number) {
  const A = Float32Array.from({ length: M * K }, () => Math.random() - 0.5);
  const B = Float32Array.from({ length: K * N }, () => Math.random() - 0.5);
  const bA = buffer(A), bB = buffer(B);
  const bC = device.createBuffer({ size: M * N * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const rows: string[] = [];
  for (const k of kernels) {
    let pipeline: GPUComputePipeline;
    try {
      const t0 = performance.now();
      pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module: device.createShaderModule({ code: k.code }), entryPoint: 'main' } });
      const compileMs = performance.now() - t0;
      const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [bA, bB, bC].map((buffer, binding) => ({ binding, resource: { buffer } })) });
      const ms = await time(pipeline, group, k.groups, reps);
      const C = await read(bC, M * N * 4);
      let err = 0;
      for (let s = 0; s < 64; s++) {
        const i = Math.floor(Math.random() * M), j = Math.floor(Math.random() * N);
        let d = 0;
        for (let q = 0; q < K; q++) d += A[i * K + q] * B[q * N + j];
        err = Math.max(err, Math.abs(d - C[i * N + j]));
      }
      const tflops = (2 * M * N * K) / (ms * 1e-3) / 1e12;
      const gbs = ((M * K + K * N + M * N) * 4) / (ms * 1e-3) / 1e9;
      rows.push(`${M}x${N}x${K} ${k.name.padEnd(22)} ${ms.toFixed(4).padStart(9)} ms ${tflops.toFixed(2).padStart(7)} TFLOP/s ${gbs.toFixed(0).padStart(6)} GB/s  maxerr ${err.toExponential(1)} compile ${compileMs.toFixed(0)} ms`);
    } catch (e) {
      rows.push(`${M}x${N}x${K} ${k.name.padEnd(22)} FAILED ${(e as Error).message.slice(0, 200)}`);
    }
    console.log(rows[rows.length - 1]);
  }
  bA.destroy(); bB.destroy(); bC.destroy();
}

const spec = (M: number, N: number, K: number): MatmulSpec => ({ M, N, K, batchDims: [], aBatchStrides: [], bBatchStrides: [], epilogue: {} });
const tiles: MatmulTile[] = [];
for (const [BM, BN] of [[128, 128], [128, 64], [64, 128], [64, 64], [256, 128], [128, 256]]) {
  for (const BK of [8, 16, 32]) {
    for (const [TM, TN] of [[8, 8], [4, 4], [8, 4], [4, 8], [16, 8], [8, 16]]) {
      const t = { BM, BN, BK, TM, TN };
      if (tileValid(t, caps.maxInvocations, caps.maxWorkgroupStorage)) tiles.push(t);
    }
  }
}
const only = process.argv[2];
if (only === 'tc') {
  // f16 on the tensor cores (subgroup matrices): every f16 config, a few subgroup tilings, 4096³ and 1024³.
  console.log('subgroup-matrix configs:', caps.subgroupMatrix.map((c) => `${c.M}x${c.N}x${c.K} ${c.componentType}->${c.resultComponentType}`).join(', '));
  for (const S of [4096, 1024]) {
    const M = S, N = S, K = S;
    const A = new Uint16Array(M * K), B = new Uint16Array(K * N);
    const dvA = new DataView(A.buffer), dvB = new DataView(B.buffer);
    for (let i = 0; i < A.length; i++) setFloat16(dvA, 2 * i, Math.random() - 0.5, true);
    for (let i = 0; i < B.length; i++) setFloat16(dvB, 2 * i, Math.random() - 0.5, true);
    const mk = (d: Uint16Array) => { const b = device.createBuffer({ size: d.byteLength, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST }); device.queue.writeBuffer(b, 0, d); return b; };
    const bA = mk(A), bB = mk(B);
    const bC = device.createBuffer({ size: M * N * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
    for (const cfg of caps.subgroupMatrix.filter((c) => c.componentType === 'f16' && c.resultComponentType === 'f32')) {
      for (const [fm, fn] of [[2, 2], [2, 4], [4, 2], [4, 4], [4, 8], [8, 4], [2, 8]]) {
        for (const [sm, sn] of [[1, 1]]) {
          const t = { fm, fn, sm, sn, subgroupSize: 32 };
          const bm = sm * fm * cfg.M, bn = sn * fn * cfg.N;
          if (M % bm || N % bn) continue;
          const name = `tc ${cfg.M}x${cfg.N}x${cfg.K} f${fm}x${fn} s${sm}x${sn}`;
          try {
            const code = tensorCoreMatmul(M, N, K, cfg, t);
            const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module: device.createShaderModule({ code }), entryPoint: 'main' } });
            const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [bA, bB, bC].map((buffer, binding) => ({ binding, resource: { buffer } })) });
            const ms = await time(pipeline, group, [N / bn, M / bm, 1], S >= 4096 ? 20 : 100);
            const C = await read(bC, M * N * 4);
            let err = 0;
            for (let q = 0; q < 32; q++) {
              const i = Math.floor(Math.random() * M), j = Math.floor(Math.random() * N);
              let d = 0;
              for (let k = 0; k < K; k++) d += getFloat16(dvA, 2 * (i * K + k), true) * getFloat16(dvB, 2 * (k * N + j), true);
              err = Math.max(err, Math.abs(d - C[i * N + j]));
            }
            console.log(`${M}x${N}x${K} ${name.padEnd(30)} ${ms.toFixed(4).padStart(9)} ms ${((2 * M * N * K) / (ms * 1e-3) / 1e12).toFixed(1).padStart(7)} TFLOP/s  maxerr ${err.toExponential(1)}`);
          } catch (e) {
            console.log(`${M}x${N}x${K} ${name} FAILED ${(e as Error).message.slice(0, 300)}`);
          }
        }
      }
    }
    bA.destroy(); bB.destroy(); bC.destroy();
  }
  process.exit(0);
}
if (only === 'shapes') {
  // The GEMMs of BERT-base at batch 1 and 8 (seq 128) and of GPT-2-base prefill: which tile wins at each.
  const small: MatmulTile[] = [
    { BM: 32, BN: 32, BK: 16, TM: 4, TN: 4 }, { BM: 16, BN: 64, BK: 16, TM: 4, TN: 4 }, { BM: 32, BN: 64, BK: 16, TM: 4, TN: 4 },
    { BM: 64, BN: 32, BK: 16, TM: 4, TN: 4 }, { BM: 64, BN: 64, BK: 8, TM: 8, TN: 4 }, { BM: 64, BN: 64, BK: 16, TM: 4, TN: 4 },
    { BM: 128, BN: 64, BK: 16, TM: 4, TN: 8 }, { BM: 128, BN: 64, BK: 16, TM: 8, TN: 4 }, { BM: 64, BN: 128, BK: 16, TM: 4, TN: 8 },
    { BM: 128, BN: 128, BK: 8, TM: 8, TN: 8 }, { BM: 128, BN: 128, BK: 16, TM: 8, TN: 4 },
  ].filter((t) => tileValid(t, caps.maxInvocations, caps.maxWorkgroupStorage));
  for (const [M, N, K] of [[128, 768, 768], [128, 2304, 768], [128, 3072, 768], [128, 768, 3072], [1024, 768, 768], [1024, 2304, 768], [1024, 3072, 768], [1024, 768, 3072]]) {
    await bench(M, N, K, small.map((t) => ({
      name: `${t.BM}x${t.BN}x${t.BK} ${t.TM}x${t.TN}`, code: tiledMatmul(spec(M, N, K), t), groups: [Math.ceil(N / t.BN), Math.ceil(M / t.BM), 1] as [number, number, number],
    })), 50);
  }
  process.exit(0);
}
const sizes = only ? [Number(only)] : [4096, 1024];
for (const S of sizes) {
  await bench(S, S, S, tiles.map((t) => ({
    name: `${t.BM}x${t.BN}x${t.BK} ${t.TM}x${t.TN}`, code: tiledMatmul(spec(S, S, S), t), groups: [Math.ceil(S / t.BN), Math.ceil(S / t.BM), 1] as [number, number, number],
  })), S >= 4096 ? 10 : 50);
}
for (const M of [1, 4, 16]) {
  const N = 4096, K = 4096;
  const ks = [];
  for (const quads of [4, 8, 16, 32]) {
    for (const slices of [8, 16, 32, 64]) {
      if (quads * slices > caps.maxInvocations || slices * M * quads * 16 > caps.maxWorkgroupStorage) continue;
      ks.push({ name: `skinny q${quads} s${slices}`, code: skinnyMatmul(spec(M, N, K), { quads, slices }), groups: [Math.ceil(N / 4 / quads), 1, 1] as [number, number, number] });
    }
  }
  await bench(M, N, K, ks, 200);
}
process.exit(0);
