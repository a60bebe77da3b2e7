// f32 GEMM on the tensor cores (split halves, src/codegen/wgsl/matmul_tc.ts) against the register-tiled f32 kernel,
// at 4096³, 1024³ and BERT-base's GEMMs: time per dispatch (many dispatches per pass, median of rounds, two passes over
// the list, the second in reverse order) and the error against a float64 dot product on sampled rows.
// Usage (GPU machine): node tc-split.mjs [quick]
import { acquireGpu } from '../../src/backends/webgpu/device.js';
import { erf } from '../../src/ops/elementwise.js';
import { readBuffer, timeDispatches } from './gpu-timing.js';
import { type MatmulSpec, type MatmulTile, tiledMatmul, tileName, tileValid } from '../../src/codegen/wgsl/matmul.js';
import { type SplitPasses, type SplitTile, splitB, splitExponent, splitMatmul, splitTileName, splitValid, splitDims } from '../../src/codegen/wgsl/matmul_tc.js';

const gpu = await acquireGpu();
const { device, caps } = gpu;
const SG = caps.subgroupSize || 32;
console.log(`adapter: ${caps.name}; subgroup-matrix configs ${caps.subgroupMatrix.length} (layout as a template argument: ${caps.sgmLayoutTemplate}); subgroup size ${caps.subgroupSize}; maxWorkgroupStorage ${caps.maxWorkgroupStorage}`);
const U = GPUBufferUsage;
const buf = (d: ArrayBufferView, extra = 0) => {
  const b = device.createBuffer({ size: Math.max(16, Math.ceil(d.byteLength / 16) * 16), usage: U.STORAGE | U.COPY_DST | U.COPY_SRC | extra });
  device.queue.writeBuffer(b, 0, d.buffer, d.byteOffset, d.byteLength);
  return b;
};
const read = (b: GPUBuffer, bytes: number) => readBuffer(device, b, bytes);
const time = (pipeline: GPUComputePipeline, group: GPUBindGroup, groups: [number, number, number], reps: number, rounds = 5) => timeDispatches(device, pipeline, group, groups, reps, rounds);

const spec = (M: number, N: number, K: number): MatmulSpec => ({ M, N, K, batchDims: [], aBatchStrides: [], bBatchStrides: [], epilogue: {} });
const quick = process.argv[2] === 'quick';
const shapes: [number, number, number, string][] = [
  [4096, 4096, 4096, '4096³'], [1024, 1024, 1024, '1024³'],
  [1024, 2304, 768, 'BERT b8 qkv'], [1024, 768, 768, 'BERT b8 o'], [1024, 3072, 768, 'BERT b8 ff1'], [1024, 768, 3072, 'BERT b8 ff2'],
  [128, 2304, 768, 'BERT b1 qkv'], [128, 3072, 768, 'BERT b1 ff1'], [128, 768, 3072, 'BERT b1 ff2'],
];
const splitTiles: SplitTile[] = [];
for (const [fm, fn, sm, sn] of [[2, 2, 2, 2], [2, 4, 2, 2], [4, 2, 2, 2], [4, 4, 2, 2], [2, 2, 4, 2], [2, 2, 2, 4], [2, 4, 4, 2], [1, 2, 4, 2], [2, 1, 2, 4], [1, 1, 4, 4], [2, 2, 4, 4]]) {
  for (const kSteps of [2, 4]) splitTiles.push({ fm, fn, sm, sn, kSteps });
}
const simtDefault = (M: number, N: number): MatmulTile => {
  const big: MatmulTile = { BM: 128, BN: 128, BK: 16, TM: 8, TN: 8, unroll: true, aRows: true };
  if (Math.ceil(M / 128) * Math.ceil(N / 128) >= 512) return big;
  for (const t of [{ BM: 64, BN: 64, BK: 8, TM: 8, TN: 4 }, { BM: 16, BN: 64, BK: 16, TM: 4, TN: 4 }]) if (Math.ceil(M / t.BM) * Math.ceil(N / t.BN) >= 64) return t;
  return { BM: 32, BN: 32, BK: 16, TM: 4, TN: 4 };
};

interface Kernel { name: string; code: string; groups: [number, number, number]; split?: SplitPasses }

// Ragged shapes and the epilogue first: M, N multiples of 16 but not of the tile, K not a multiple of the K tile;
// bias + GELU + residual. Checked against float64 on every element.
async function ragged(M: number, N: number, K: number, passes: SplitPasses, t: SplitTile): Promise<string> {
  const A = Float32Array.from({ length: M * K }, () => (Math.random() - 0.5) * 3);
  const B = Float32Array.from({ length: K * N }, () => (Math.random() - 0.5) * 0.07);
  const bias = Float32Array.from({ length: N }, () => Math.random() - 0.5);
  const res = Float32Array.from({ length: M * N }, () => Math.random() - 0.5);
  const s: MatmulSpec = { ...spec(M, N, K), epilogue: { bias: 'n', act: 'gelu', residual: true } };
  const exp = splitExponent(B, passes)!;
  const sp = { bits: splitB(B, K, N, passes, exp), unscale: 2 ** -exp };
  const code = splitMatmul(s, t, passes, SG, sp.unscale);
  const bC = device.createBuffer({ size: M * N * 4, usage: U.STORAGE | U.COPY_SRC | U.COPY_DST });
  device.queue.writeBuffer(bC, 0, new Float32Array(M * N).fill(NaN));
  const bF = buf(new Uint32Array(4));
  const bufs = [buf(A), buf(sp.bits), buf(bias), buf(res), bC, bF];
  const p = await device.createComputePipelineAsync({ layout: 'auto', compute: { module: device.createShaderModule({ code }), entryPoint: 'main' } });
  const g = device.createBindGroup({ layout: p.getBindGroupLayout(0), entries: bufs.map((buffer, binding) => ({ binding, resource: { buffer } })) });
  const { BM, BN } = splitDims(t);
  const e = device.createCommandEncoder();
  const pass = e.beginComputePass();
  pass.setPipeline(p); pass.setBindGroup(0, g); pass.dispatchWorkgroups(Math.ceil(N / BN), Math.ceil(M / BM), 1); pass.end();
  device.queue.submit([e.finish()]);
  const C = new Float32Array(await read(bC, M * N * 4));
  const fault = new Uint32Array(await read(bF, 16));
  let err = 0, max = 0;
  const gelu = (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2));
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let d = 0;
      for (let k = 0; k < K; k++) d += A[i * K + k] * B[k * N + j];
      const r = gelu(d + bias[j]) + res[i * N + j];
      max = Math.max(max, Math.abs(r));
      const x = Math.abs(C[i * N + j] - r);
      err = Number.isNaN(x) || Number.isNaN(err) ? NaN : Math.max(err, x);
    }
  }
  // An element past the f16 range: the fault words.
  A[5] = 1e5;
  device.queue.writeBuffer(bufs[0], 0, A);
  const e2 = device.createCommandEncoder();
  const pass2 = e2.beginComputePass();
  pass2.setPipeline(p); pass2.setBindGroup(0, g); pass2.dispatchWorkgroups(Math.ceil(N / BN), Math.ceil(M / BM), 1); pass2.end();
  device.queue.submit([e2.finish()]);
  const fault2 = new Uint32Array(await read(bF, 16));
  for (const b of bufs) b.destroy();
  const rel = err / max;
  return `ragged ${M}x${N}x${K} ${passes === 3 ? 'high' : 'f16'} ${splitTileName(t)} bias+gelu+residual: err/max|ref| ${rel.toExponential(1)}${rel > (passes === 3 ? 1e-5 : 2e-3) || Number.isNaN(rel) ? ' WRONG' : ' ok'}; fault words ${[...fault].join(',')} then with 1e5 in A ${[...fault2].join(',')} (${new Float32Array(fault2.buffer)[1]})`;
}
// `probe`: why a kernel inside BERT is slower than here: the ff2 shape with the model's epilogue and GELU-like A.
if (process.argv[2] === 'probe') {
  const M = 1024, N = 768, K = 3072;
  const t: SplitTile = { fm: 2, fn: 1, sm: 2, sn: 4, kSteps: 4 };
  const gauss = () => Math.sqrt(-2 * Math.log(1 - Math.random())) * Math.cos(2 * Math.PI * Math.random());
  const gelu = (x: number) => 0.5 * x * (1 + Math.tanh(0.7978845608 * (x + 0.044715 * x * x * x)));
  const Auni = Float32Array.from({ length: M * K }, () => (Math.random() - 0.5) * 3);
  const Agelu = Float32Array.from({ length: M * K }, () => gelu(gauss() * 3));
  const Bw = Float32Array.from({ length: K * N }, () => gauss() * 0.05);
  const bias = Float32Array.from({ length: N }, () => gauss() * 0.05);
  const res = Float32Array.from({ length: M * N }, () => gauss());
  const e3 = splitExponent(Bw, 3)!;
  const bS = buf(splitB(Bw, K, N, 3, e3)), bBias = buf(bias), bRes = buf(res), bF = buf(new Uint32Array(4));
  const bC = device.createBuffer({ size: M * N * 4, usage: U.STORAGE | U.COPY_SRC | U.COPY_DST });
  const { BM, BN } = splitDims(t);
  for (const [name, A, epi] of [['uniform A, no epilogue', Auni, false], ['uniform A, bias+residual', Auni, true], ['GELU A, no epilogue', Agelu, false], ['GELU A, bias+residual', Agelu, true]] as [string, Float32Array, boolean][]) {
    const s: MatmulSpec = { ...spec(M, N, K), epilogue: epi ? { bias: 'n', residual: true } : {} };
    const code = splitMatmul(s, t, 3, SG, 2 ** -e3);
    const bA = buf(A);
    const p = await device.createComputePipelineAsync({ layout: 'auto', compute: { module: device.createShaderModule({ code }), entryPoint: 'main' } });
    const entries = epi ? [bA, bS, bBias, bRes, bC, bF] : [bA, bS, bC, bF];
    const g = device.createBindGroup({ layout: p.getBindGroupLayout(0), entries: entries.map((buffer, binding) => ({ binding, resource: { buffer } })) });
    const ms1 = await time(p, g, [Math.ceil(N / BN), Math.ceil(M / BM), 1], 1, 9);
    const ms = await time(p, g, [Math.ceil(N / BN), Math.ceil(M / BM), 1], 200, 5);
    console.log(`probe ${name.padEnd(26)} ${ms.toFixed(4)} ms/dispatch in a pass of 200, ${ms1.toFixed(4)} ms alone (${(2 * M * N * K / ms / 1e9).toFixed(1)} TFLOP/s)`);
    // Interleaved with a small f32 GEMM (another kernel, little workgroup memory), as inside a model.
    if (!epi) {
      const s2 = spec(128, 128, 128), t2: MatmulTile = { BM: 32, BN: 32, BK: 16, TM: 4, TN: 4 };
      const bX = buf(new Float32Array(128 * 128)), bY = device.createBuffer({ size: 128 * 128 * 4, usage: U.STORAGE });
      const p2 = await device.createComputePipelineAsync({ layout: 'auto', compute: { module: device.createShaderModule({ code: tiledMatmul(s2, t2) }), entryPoint: 'main' } });
      const g2 = device.createBindGroup({ layout: p2.getBindGroupLayout(0), entries: [bX, bX, bY].map((buffer, binding) => ({ binding, resource: { buffer } })) });
      const run = async (withTc: boolean) => {
        const e = device.createCommandEncoder();
        const pass = e.beginComputePass();
        for (let r = 0; r < 100; r++) {
          if (withTc) { pass.setPipeline(p); pass.setBindGroup(0, g); pass.dispatchWorkgroups(Math.ceil(N / BN), Math.ceil(M / BM), 1); }
          pass.setPipeline(p2); pass.setBindGroup(0, g2); pass.dispatchWorkgroups(4, 4, 1);
        }
        pass.end();
        device.queue.submit([e.finish()]);
        await device.queue.onSubmittedWorkDone();
      };
      const med = async (withTc: boolean) => { await run(withTc); const ts: number[] = []; for (let i = 0; i < 5; i++) { const t0 = performance.now(); await run(withTc); ts.push((performance.now() - t0) / 100); } return ts.sort((a, b) => a - b)[2]; };
      const both = await med(true), small = await med(false);
      console.log(`probe ${name.padEnd(26)} interleaved with a small f32 GEMM: ${(both - small).toFixed(4)} ms per tensor-core dispatch (pair ${both.toFixed(4)}, small alone ${small.toFixed(4)})`);
      bX.destroy(); bY.destroy();
    }
    bA.destroy();
  }
  process.exit(0);
}
for (const passes of [3, 1] as SplitPasses[]) {
  for (const t of [{ fm: 2, fn: 2, sm: 2, sn: 2, kSteps: 2 }, { fm: 2, fn: 1, sm: 2, sn: 4, kSteps: 2 }, { fm: 4, fn: 4, sm: 2, sn: 2, kSteps: 2 }]) {
    try { console.log(await ragged(144, 784, 772, passes, t)); } catch (err) { console.log(`ragged ${splitTileName(t)} FAILED ${(err as Error).message.slice(0, 300)}`); }
  }
}
// Clocks up before timing.
{
  const s = spec(2048, 2048, 2048), t: MatmulTile = { BM: 64, BN: 64, BK: 8, TM: 8, TN: 4 };
  const bA = buf(new Float32Array(2048 * 2048)), bC = device.createBuffer({ size: 2048 * 2048 * 4, usage: U.STORAGE });
  const p = await device.createComputePipelineAsync({ layout: 'auto', compute: { module: device.createShaderModule({ code: tiledMatmul(s, t) }), entryPoint: 'main' } });
  const g = device.createBindGroup({ layout: p.getBindGroupLayout(0), entries: [bA, bA, bC].map((buffer, binding) => ({ binding, resource: { buffer } })) });
  const t0 = performance.now();
  while (performance.now() - t0 < 1500) await time(p, g, [32, 32, 1], 50, 1);
  bA.destroy(); bC.destroy();
}
const summary: string[] = [];
for (const [M, N, K, label] of quick ? shapes.slice(0, 3) : shapes) {
  // Values like a transformer's: activations ~N(0,1)-ish, weights ~0.02.
  const A = Float32Array.from({ length: M * K }, () => (Math.random() - 0.5) * 3);
  const B = Float32Array.from({ length: K * N }, () => (Math.random() - 0.5) * 0.07);
  const s = spec(M, N, K);
  const kernels: Kernel[] = [];
  const simt = simtDefault(M, N);
  kernels.push({ name: `f32 ${tileName(simt)}`, code: tiledMatmul(s, simt), groups: [Math.ceil(N / simt.BN), Math.ceil(M / simt.BM), 1] });
  const e3 = splitExponent(B, 3)!, e1 = splitExponent(B, 1)!;
  const sp3 = { bits: splitB(B, K, N, 3, e3), unscale: 2 ** -e3 }, sp1 = { bits: splitB(B, K, N, 1, e1), unscale: 2 ** -e1 };
  for (const passes of [3, 1] as SplitPasses[]) {
    for (const t of splitTiles) {
      if (!splitValid(s, t, passes, SG, caps.maxInvocations, caps.maxWorkgroupStorage)) continue;
      const { BM, BN } = splitDims(t);
      const wgs = Math.ceil(N / BN) * Math.ceil(M / BM);
      if (wgs < 32) continue;
      if (passes === 1 && !(t.fm === 4 && t.fn === 4) && !(t.fm === 2 && t.fn === 2 && t.sm === 2)) continue;
      kernels.push({ name: `${passes === 3 ? 'high' : 'f16 '} ${splitTileName(t)}`, code: splitMatmul(s, t, passes, SG, passes === 3 ? sp3.unscale : sp1.unscale), groups: [Math.ceil(N / BN), Math.ceil(M / BM), 1], split: passes });
    }
  }
  const bA = buf(A), bB = buf(B), bS3 = buf(sp3.bits), bS1 = buf(sp1.bits);
  const bC = device.createBuffer({ size: M * N * 4, usage: U.STORAGE | U.COPY_SRC | U.COPY_DST });
  const bF = buf(new Uint32Array(4));
  // Float64 reference on sampled rows.
  const rows = Array.from({ length: 16 }, () => Math.floor(Math.random() * M));
  const ref = rows.map((i) => {
    const r = new Float64Array(N);
    for (let k = 0; k < K; k++) { const a = A[i * K + k]; for (let j = 0; j < N; j++) r[j] += a * B[k * N + j]; }
    return r;
  });
  let refMax = 0;
  for (const r of ref) for (const v of r) refMax = Math.max(refMax, Math.abs(v));
  const results = new Map<string, { ms: number[]; err: number }>();
  const pipes = new Map<string, { p: GPUComputePipeline; g: GPUBindGroup }>();
  for (const pass of [0, 1]) {
    for (const k of pass === 0 ? kernels : [...kernels].reverse()) {
      try {
        let e = pipes.get(k.name);
        if (!e) {
          device.pushErrorScope('validation');
          const p = await device.createComputePipelineAsync({ layout: 'auto', compute: { module: device.createShaderModule({ code: k.code }), entryPoint: 'main' } });
          const entries = k.split ? [bA, k.split === 3 ? bS3 : bS1, bC, bF] : [bA, bB, bC];
          const g = device.createBindGroup({ layout: p.getBindGroupLayout(0), entries: entries.map((buffer, binding) => ({ binding, resource: { buffer } })) });
          const verr = await device.popErrorScope();
          if (verr) throw new Error(verr.message);
          e = { p, g };
          pipes.set(k.name, e);
        }
        device.queue.writeBuffer(bC, 0, new Float32Array(M * N).fill(NaN));
        const reps = Math.max(10, Math.min(500, Math.round(40 / (2 * M * N * K / 40e12 * 1e3))));
        const ms = await time(e.p, e.g, k.groups, reps);
        const C = new Float32Array(await read(bC, M * N * 4));
        let err = 0;
        rows.forEach((i, q) => { for (let j = 0; j < N; j++) { const d = Math.abs(C[i * N + j] - ref[q][j]); err = Number.isNaN(d) ? NaN : Math.max(err, d); } });
        const r = results.get(k.name) ?? { ms: [], err: 0 };
        r.ms.push(ms); r.err = Number.isNaN(err) || Number.isNaN(r.err) ? NaN : Math.max(r.err, err);
        results.set(k.name, r);
      } catch (err) {
        if (pass === 0) console.log(`${label} ${k.name} FAILED ${(err as Error).message.slice(0, 300).replace(/\s+/g, ' ')}`);
      }
    }
  }
  const flop = 2 * M * N * K;
  let best: { name: string; tf: number; err: number } | null = null, bestF16: typeof best = null;
  for (const k of kernels) {
    const r = results.get(k.name);
    if (!r) continue;
    const ms = Math.min(...r.ms);
    const tf = flop / (ms * 1e-3) / 1e12;
    const rel = r.err / refMax;
    console.log(`${label.padEnd(12)} ${M}x${N}x${K} ${k.name.padEnd(26)} ${ms.toFixed(4).padStart(8)} ms ${tf.toFixed(1).padStart(6)} TFLOP/s  err/max|ref| ${rel.toExponential(1)}${rel > 1e-3 || Number.isNaN(rel) ? ' WRONG' : ''}  (passes ${r.ms.map((x) => x.toFixed(4)).join(', ')})`);
    if (k.split === 3 && rel <= 1e-4 && (!best || tf > best.tf)) best = { name: k.name, tf, err: rel };
    if (k.split === 1 && rel <= 1e-2 && (!bestF16 || tf > bestF16.tf)) bestF16 = { name: k.name, tf, err: rel };
  }
  const f32 = results.get(kernels[0].name);
  const f32tf = f32 ? flop / (Math.min(...f32.ms) * 1e-3) / 1e12 : NaN;
  summary.push(`${label.padEnd(12)} f32 ${f32tf.toFixed(1)} (err ${f32 ? (f32.err / refMax).toExponential(1) : '-'}) | high ${best ? `${best.tf.toFixed(1)} ${best.name} (err ${best.err.toExponential(1)})` : '-'} | f16 ${bestF16 ? `${bestF16.tf.toFixed(1)} ${bestF16.name} (err ${bestF16.err.toExponential(1)})` : '-'}`);
  for (const b of [bA, bB, bS3, bS1, bC, bF]) b.destroy();
}
console.log('\nsummary (TFLOP/s, best of two passes):');
for (const l of summary) console.log(l);
process.exit(0);
