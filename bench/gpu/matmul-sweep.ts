// GPU matmul sweep (run on the H100 through Dawn): every candidate tile at 4096³ and 1024³ and the skinny kernel at
// decode shapes, each checked on sampled outputs against a CPU dot product, timed over many dispatches in one pass.
import { acquireGpu } from '../../src/backends/webgpu/device.js';
import { readBuffer, timeDispatches } from './gpu-timing.js';
import {
  type MatmulSpec, type MatmulTile, skinnyMatmul, tensorCoreMatmul, tensorCoreStagedMatmul, tensorCoreStagedName, tensorCoreStagedValid,
  type TensorCoreStagedTile, tiledMatmul, tileName, tileValid,
} from '../../src/codegen/wgsl/matmul.js';
import { getFloat16, setFloat16 } from '@petamoriken/float16';

const gpu = await acquireGpu();
const { device, caps } = gpu;
console.log(`adapter: ${caps.name}; f16 ${caps.f16}; subgroups ${caps.subgroups}; subgroup-matrix configs ${caps.subgroupMatrix.length}`);

function buffer(data: Float32Array): GPUBuffer {
  const b = device.createBuffer({ size: data.byteLength, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(b, 0, data);
  return b;
}
const read = async (b: GPUBuffer, bytes: number): Promise<Float32Array> => new Float32Array(await readBuffer(device, b, bytes));
const time = (pipeline: GPUComputePipeline, group: GPUBindGroup, groups: [number, number, number], reps: number, rounds = 5) => timeDispatches(device, pipeline, group, groups, reps, rounds);

async function bench(M: number, N: number, K: number, kernels: { name: string; code: string; groups: [number, number, number] }[], reps: number) {
  const A = Float32Array.from({ length: M * K }, () => Math.random() - 0.5);
  const B = Float32Array.from({ length: K * N }, () => Math.random() - 0.5);
  const bA = buffer(A), bB = buffer(B);
  const bC = device.createBuffer({ size: M * N * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  const rows: string[] = [];
  for (const k of kernels) {
    let pipeline: GPUComputePipeline;
    try {
      const t0 = performance.now();
      pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module: device.createShaderModule({ code: k.code }), entryPoint: 'main' } });
      const compileMs = performance.now() - t0;
      device.pushErrorScope('validation');
      const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [bA, bB, bC].map((buffer, binding) => ({ binding, resource: { buffer } })) });
      const verr = await device.popErrorScope();
      if (verr) throw new Error(verr.message);
      // Poisoned first: an element the kernel never writes reads NaN.
      device.queue.writeBuffer(bC, 0, new Float32Array(M * N).fill(NaN));
      const ms = await time(pipeline, group, k.groups, reps);
      const C = await read(bC, M * N * 4);
      let err = 0;
      for (let s = 0; s < 64; s++) {
        const i = Math.floor(Math.random() * M), j = Math.floor(Math.random() * N);
        let d = 0;
        for (let q = 0; q < K; q++) d += A[i * K + q] * B[q * N + j];
        const e = Math.abs(d - C[i * N + j]);
        err = Number.isNaN(e) || Number.isNaN(err) ? NaN : Math.max(err, e);
      }
      const tflops = (2 * M * N * K) / (ms * 1e-3) / 1e12;
      const gbs = ((M * K + K * N + M * N) * 4) / (ms * 1e-3) / 1e9;
      rows.push(`${M}x${N}x${K} ${k.name.padEnd(28)} ${ms.toFixed(4).padStart(9)} ms ${tflops.toFixed(2).padStart(7)} TFLOP/s ${gbs.toFixed(0).padStart(6)} GB/s  maxerr ${err.toExponential(1)} compile ${compileMs.toFixed(0)} ms${err <= 1e-3 ? '' : ' FAILED (wrong values)'}`);
    } catch (e) {
      rows.push(`${M}x${N}x${K} ${k.name.padEnd(28)} FAILED ${(e as Error).message.slice(0, 200).replace(/\s+/g, ' ')}`);
    }
    console.log(rows[rows.length - 1]);
  }
  bA.destroy(); bB.destroy(); bC.destroy();
}

const spec = (M: number, N: number, K: number): MatmulSpec => ({ M, N, K, batchDims: [], aBatchStrides: [], bBatchStrides: [], epilogue: {} });
const tiles: MatmulTile[] = [];
for (const [BM, BN] of [[128, 128], [128, 64], [64, 128], [64, 64], [256, 128], [128, 256]]) {
  // BK = 32 lost at every tile on the H200 (bench/results/gpu/h200-sweep.txt): left out to keep the sweep short.
  for (const BK of [8, 16]) {
    for (const [TM, TN] of [[8, 8], [4, 4], [8, 4], [4, 8], [16, 8], [8, 16]]) {
      const t = { BM, BN, BK, TM, TN };
      if (tileValid(t, caps.maxInvocations, caps.maxWorkgroupStorage)) tiles.push(t);
    }
  }
}
// The kernel variants (double-buffered workgroup memory, A rows split over the tile, 8×4 warp blocks, unrolled k) on
// the tiles that led the H200 sweep and on the classic 128×128×8 / 8×8 SGEMM tile.
const variantBases: MatmulTile[] = [
  { BM: 64, BN: 64, BK: 8, TM: 8, TN: 4 }, { BM: 64, BN: 64, BK: 16, TM: 8, TN: 4 }, { BM: 128, BN: 128, BK: 8, TM: 8, TN: 8 },
  { BM: 128, BN: 128, BK: 16, TM: 8, TN: 8 }, { BM: 128, BN: 64, BK: 8, TM: 8, TN: 8 }, { BM: 64, BN: 128, BK: 8, TM: 8, TN: 8 },
  { BM: 128, BN: 128, BK: 8, TM: 16, TN: 8 }, { BM: 128, BN: 256, BK: 16, TM: 16, TN: 8 }, { BM: 64, BN: 128, BK: 16, TM: 4, TN: 8 },
];
const variantFlags: Partial<MatmulTile>[] = [
  { db: true }, { splitA: true }, { splitA: true, warp: true }, { db: true, splitA: true }, { db: true, splitA: true, warp: true },
  { db: true, splitA: true, warp: true, unroll: true }, { splitA: true, warp: true, unroll: true },
];
for (const base of variantBases) {
  for (const f of variantFlags) {
    const t = { ...base, ...f };
    // splitA is the plain kernel when TM = 4 (one row quad).
    if (t.splitA && t.TM === 4) continue;
    if (tileValid(t, caps.maxInvocations, caps.maxWorkgroupStorage)) tiles.push(t);
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
    const bC = device.createBuffer({ size: M * N * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
    const kernels: { name: string; code: () => string; groups: [number, number, number] }[] = [];
    // Numbers whatever type the adapter info gave them (the strict comparisons below need numbers).
    const f16cfgs = caps.subgroupMatrix.filter((c) => c.componentType === 'f16' && c.resultComponentType === 'f32')
      .map((c) => ({ M: Number(c.M), N: Number(c.N), K: Number(c.K), componentType: String(c.componentType), resultComponentType: String(c.resultComponentType) }));
    console.log(`f16 configs: ${JSON.stringify(f16cfgs)} (M: ${typeof caps.subgroupMatrix[0]?.M}); maxWorkgroupStorage ${caps.maxWorkgroupStorage}, maxInvocations ${caps.maxInvocations}`);
    // `tc staged`: only the staged kernels.
    for (const cfg of process.argv[3] === 'staged' ? [] : f16cfgs) {
      for (const [fm, fn] of [[2, 2], [2, 4], [4, 2], [4, 4], [4, 8], [8, 4], [2, 8]]) {
        for (const [sm, sn] of [[1, 1]]) {
          const t = { fm, fn, sm, sn, subgroupSize: 32 };
          const bm = sm * fm * cfg.M, bn = sn * fn * cfg.N;
          if (M % bm || N % bn) continue;
          kernels.push({ name: `tc ${cfg.M}x${cfg.N}x${cfg.K} f${fm}x${fn} s${sm}x${sn}`, code: () => tensorCoreMatmul(M, N, K, cfg, t), groups: [N / bn, M / bm, 1] });
        }
      }
    }
    // Staged in workgroup memory: several subgroups per workgroup, K tiles of 32 or 64, single or double buffered.
    for (const cfg of f16cfgs.filter((c) => c.M === 16 && c.N === 16 && c.K === 16)) {
      const shapes: [number, number, number, number][] = [[2, 2, 4, 4], [2, 2, 2, 4], [2, 2, 4, 2], [2, 2, 2, 2], [4, 2, 2, 4], [2, 4, 4, 2], [4, 4, 2, 2], [2, 4, 2, 2]];
      for (const [sm, sn, fm, fn] of shapes) {
        for (const kSteps of [2, 4, 8]) {
          for (const db of [false, true]) {
            if (db && kSteps === 8) continue;
            const t: TensorCoreStagedTile = { fm, fn, sm, sn, kSteps, db, subgroupSize: 32 };
            if (!tensorCoreStagedValid(M, N, K, cfg, t, caps.maxInvocations, caps.maxWorkgroupStorage)) continue;
            kernels.push({ name: tensorCoreStagedName(cfg, t), code: () => tensorCoreStagedMatmul(M, N, K, cfg, t), groups: [N / (sn * fn * cfg.N), M / (sm * fm * cfg.M), 1] });
          }
        }
      }
      // The subgroup index from the subgroup_id builtin (6× slower than lid / 32 in a first H200 run), and no padding.
      for (const extra of [{ sgBuiltin: true }, { pad: 0 }, { pad: 16 }, { pad: 16, kSteps: 4 }, { pad: 4 }]) {
        const t: TensorCoreStagedTile = { fm: 4, fn: 4, sm: 2, sn: 2, kSteps: 2, subgroupSize: 32, ...extra };
        if (tensorCoreStagedValid(M, N, K, cfg, t, caps.maxInvocations, caps.maxWorkgroupStorage)) {
          kernels.push({ name: tensorCoreStagedName(cfg, t), code: () => tensorCoreStagedMatmul(M, N, K, cfg, t), groups: [N / (4 * 2 * cfg.N), M / (4 * 2 * cfg.M), 1] });
        }
      }
    }
    // `tc staged`: a second pass in reverse order, so a variant's figure is not an artifact of its place in the run.
    if (process.argv[3] === 'staged') kernels.push(...[...kernels].reverse().map((k) => ({ ...k, name: `${k.name} (2nd)` })));
    for (const k of kernels) {
      const name = k.name;
      try {
        const code = k.code();
        device.pushErrorScope('validation');
        const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module: device.createShaderModule({ code }), entryPoint: 'main' } });
        const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [bA, bB, bC].map((buffer, binding) => ({ binding, resource: { buffer } })) });
        const verr = await device.popErrorScope();
        if (verr) throw new Error(verr.message);
        device.queue.writeBuffer(bC, 0, new Float32Array(M * N).fill(NaN));
        const ms = await time(pipeline, group, k.groups, S >= 4096 ? 20 : 100);
        const C = await read(bC, M * N * 4);
        let err = 0;
        for (let q = 0; q < 32; q++) {
          const i = Math.floor(Math.random() * M), j = Math.floor(Math.random() * N);
          let d = 0;
          for (let k = 0; k < K; k++) d += getFloat16(dvA, 2 * (i * K + k), true) * getFloat16(dvB, 2 * (k * N + j), true);
          const e = Math.abs(d - C[i * N + j]);
          err = Number.isNaN(e) || Number.isNaN(err) ? NaN : Math.max(err, e);
        }
        const line = `${M}x${N}x${K} ${name.padEnd(34)} ${ms.toFixed(4).padStart(9)} ms ${((2 * M * N * K) / (ms * 1e-3) / 1e12).toFixed(1).padStart(7)} TFLOP/s  maxerr ${err.toExponential(1)}`;
        console.log(err <= 1e-2 ? line : `${line} FAILED (wrong values)`);
      } catch (e) {
        console.log(`${M}x${N}x${K} ${name} FAILED ${(e as Error).message.slice(0, 300).replace(/\s+/g, ' ')}`);
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
if (only === 'ar') {
  // Row-major A tiles (one vec4 store, 4 k steps per read) against the plain kernel on the variant bases.
  const ar: MatmulTile[] = [];
  for (const base of variantBases) {
    for (const f of [{}, { aRows: true }, { aRows: true, unroll: true }, { aRows: true, splitA: true }, { aRows: true, splitA: true, unroll: true }, { aRows: true, warp: true }]) {
      const t = { ...base, ...f } as MatmulTile;
      if (t.splitA && t.TM === 4) continue;
      if (tileValid(t, caps.maxInvocations, caps.maxWorkgroupStorage)) ar.push(t);
    }
  }
  tiles.length = 0;
  tiles.push(...ar);
}
const sizes = only && only !== 'ar' ? [Number(only)] : [4096, 1024];
for (const S of sizes) {
  await bench(S, S, S, tiles.map((t) => ({
    name: tileName(t), code: tiledMatmul(spec(S, S, S), t), groups: [Math.ceil(S / t.BN), Math.ceil(S / t.BM), 1] as [number, number, number],
  })), S >= 4096 ? 10 : 50);
}
for (const M of only === 'ar' ? [] : [1, 4, 16]) {
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
