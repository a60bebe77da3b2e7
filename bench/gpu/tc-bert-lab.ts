// Tensor-core GEMMs at BERT-base's shapes: A split while staged (the runtime's splitMatmul) against A split first by
// splitAKernel into f16 halves in memory (splitMatmul with aHalves: 16-byte loads of halves, no conversion in the
// GEMM), for 'high' (3 products) and 'f16' (1), over the tile list; the split pass timed on its own. GPU time from
// timestamps around a pass of many dispatches (median of rounds, two passes over the list, the second reversed);
// error against float64 on sampled rows.
// Usage (GPU machine): node tc-bert-lab.mjs   (LAB_SHAPES=o,ff2 picks shapes; LAB_TILES=all adds every tile)
import { acquireGpu } from '../../src/backends/webgpu/device.js';
import { passTimer, readBuffer, storageBuffer } from './gpu-timing.js';
import type { MatmulSpec } from '../../src/codegen/wgsl/matmul.js';
import { type SplitPasses, type SplitTile, splitAKernel, splitASize, splitB, splitDefault, splitDims, splitExponent, splitMatmul, splitTileName, splitValid } from '../../src/codegen/wgsl/matmul_tc.js';

const gpu = await acquireGpu();
const { device, caps } = gpu;
const SG = caps.subgroupSize || 32;
console.log(`adapter: ${caps.name}; subgroup size ${SG}; maxWorkgroupStorage ${caps.maxWorkgroupStorage}; timestamps ${caps.timestamps}`);
const buf = (d: ArrayBufferView | number) => storageBuffer(device, d);
const timePass = passTimer(device);
const grid = (n: number): [number, number, number] => (n <= 65535 ? [n, 1, 1] : [65535, Math.ceil(n / 65535), 1]);

const all: [string, number, number, number][] = [
  ['qkv', 1024, 2304, 768], ['o', 1024, 768, 768], ['ff1', 1024, 3072, 768], ['ff2', 1024, 768, 3072],
  ['b1-qkv', 128, 2304, 768], ['b1-ff2', 128, 768, 3072], ['4096', 4096, 4096, 4096],
];
const pick = process.env.LAB_SHAPES?.split(',');
const shapes = all.filter(([n]) => !pick || pick.includes(n));
const tiles: SplitTile[] = [];
const shapesList = process.env.LAB_TILES === 'all'
  ? [[2, 2, 2, 2], [2, 4, 2, 2], [4, 2, 2, 2], [4, 4, 2, 2], [2, 2, 4, 2], [2, 2, 2, 4], [2, 4, 4, 2], [1, 2, 4, 2], [2, 1, 2, 4], [1, 1, 4, 4], [2, 2, 4, 4], [1, 2, 2, 4], [2, 1, 4, 2]]
  : [[2, 2, 2, 2], [2, 4, 2, 2], [4, 2, 2, 2], [2, 2, 2, 4], [2, 2, 4, 2], [2, 4, 4, 2], [1, 2, 4, 2], [2, 1, 2, 4], [2, 2, 4, 4]];
for (const [fm, fn, sm, sn] of shapesList) for (const kSteps of [2, 4]) tiles.push({ fm, fn, sm, sn, kSteps });

const summary: string[] = [];
for (const [label, M, N, K] of shapes) {
  const spec: MatmulSpec = { M, N, K, batchDims: [], aBatchStrides: [], bBatchStrides: [], epilogue: { bias: 'n', residual: true } };
  const A = Float32Array.from({ length: M * K }, () => (Math.random() - 0.5) * 3);
  const B = Float32Array.from({ length: K * N }, () => (Math.random() - 0.5) * 0.07);
  const bias = Float32Array.from({ length: N }, () => Math.random() - 0.5);
  const res = Float32Array.from({ length: M * N }, () => Math.random() - 0.5);
  const bA = buf(A), bBias = buf(bias), bRes = buf(res), bC = buf(M * N * 4), bF = buf(new Uint32Array(4));
  interface V { name: string; passes: SplitPasses; pre: boolean; t: SplitTile; pipeline?: GPUComputePipeline; bind?: GPUBindGroup; ms: number[]; err: number }
  const vs: V[] = [];
  const parts = new Map<SplitPasses, { bS: GPUBuffer; unscale: number; bAh: GPUBuffer; splitA: GPUComputePipeline; splitBind: GPUBindGroup; splitMs: number[] }>();
  for (const passes of [3, 1] as SplitPasses[]) {
    const exp = splitExponent(B, passes)!;
    const bS = buf(splitB(B, K, N, passes, exp));
    const sz = splitASize(M, K, passes);
    const bAh = buf(sz.bytes);
    const splitA = await device.createComputePipelineAsync({ layout: 'auto', compute: { module: device.createShaderModule({ code: splitAKernel(M, K, passes) }), entryPoint: 'main' } });
    const splitBind = device.createBindGroup({ layout: splitA.getBindGroupLayout(0), entries: [bA, bAh, bF].map((buffer, binding) => ({ binding, resource: { buffer } })) });
    parts.set(passes, { bS, unscale: 2 ** -exp, bAh, splitA, splitBind, splitMs: [] });
    const def = splitDefault(spec, passes, SG, caps.maxInvocations, caps.maxWorkgroupStorage);
    if (def) vs.push({ name: `${passes === 3 ? 'high' : 'f16 '} cur ${splitTileName(def)} (default)`, passes, pre: false, t: def, ms: [], err: 0 });
    for (const t of tiles) {
      const { BM, BN } = splitDims(t);
      if (Math.ceil(M / BM) * Math.ceil(N / BN) < 24) continue;
      if (splitValid(spec, t, passes, SG, caps.maxInvocations, caps.maxWorkgroupStorage, true)) vs.push({ name: `${passes === 3 ? 'high' : 'f16 '} pre ${splitTileName(t)}`, passes, pre: true, t, ms: [], err: 0 });
      const same = def && splitTileName(def) === splitTileName(t);
      if (!same && splitValid(spec, t, passes, SG, caps.maxInvocations, caps.maxWorkgroupStorage)) vs.push({ name: `${passes === 3 ? 'high' : 'f16 '} cur ${splitTileName(t)}`, passes, pre: false, t, ms: [], err: 0 });
    }
  }
  // The split pass once, so every pre variant reads real halves.
  {
    const e = device.createCommandEncoder();
    const p = e.beginComputePass();
    for (const [passes, q] of parts) { p.setPipeline(q.splitA); p.setBindGroup(0, q.splitBind); p.dispatchWorkgroups(...grid(splitASize(M, K, passes).workgroups)); }
    p.end();
    device.queue.submit([e.finish()]);
  }
  await Promise.all(vs.map(async (v) => {
    const q = parts.get(v.passes)!;
    try {
      device.pushErrorScope('validation');
      v.pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module: device.createShaderModule({ code: splitMatmul(spec, v.t, v.passes, SG, q.unscale, v.pre) }), entryPoint: 'main' } });
      const entries = v.pre ? [q.bAh, q.bS, bBias, bRes, bC] : [bA, q.bS, bBias, bRes, bC, bF];
      v.bind = device.createBindGroup({ layout: v.pipeline.getBindGroupLayout(0), entries: entries.map((buffer, binding) => ({ binding, resource: { buffer } })) });
      const err = await device.popErrorScope();
      if (err) throw new Error(err.message);
    } catch (err) { console.log(`${label} ${v.name} FAILED ${(err as Error).message.slice(0, 200).replace(/\s+/g, ' ')}`); v.pipeline = undefined; }
  }));
  const ok = vs.filter((v) => v.pipeline);
  const rows = Array.from({ length: 8 }, () => Math.floor(Math.random() * M));
  const ref = rows.map((i) => {
    const r = new Float64Array(N);
    for (let k = 0; k < K; k++) { const a = A[i * K + k]; for (let j = 0; j < N; j++) r[j] += a * B[k * N + j]; }
    for (let j = 0; j < N; j++) r[j] += bias[j] + res[i * N + j];
    return r;
  });
  let refMax = 0;
  for (const r of ref) for (const v of r) refMax = Math.max(refMax, Math.abs(v));
  const flop = 2 * M * N * K;
  const reps = Math.max(20, Math.min(1000, Math.round(30 / (flop / 50e12 * 1e3))));
  // Warm the clocks: ~1.5 s of the first variant.
  {
    const { BM, BN } = splitDims(ok[0].t);
    const t0 = performance.now();
    while (performance.now() - t0 < 1500) await timePass({ pipeline: ok[0].pipeline!, binds: [ok[0].bind!], groups: [Math.ceil(N / BN), Math.ceil(M / BM), 1] }, reps);
  }
  for (const round of [0, 1]) {
    for (const [passes, q] of parts) q.splitMs.push(await timePass({ pipeline: q.splitA, binds: [q.splitBind], groups: grid(splitASize(M, K, passes).workgroups) }, reps));
    for (const v of round === 0 ? ok : [...ok].reverse()) {
      const { BM, BN } = splitDims(v.t);
      const groups: [number, number, number] = [Math.ceil(N / BN), Math.ceil(M / BM), 1];
      device.queue.writeBuffer(bC, 0, new Float32Array(M * N).fill(NaN));
      const ts: number[] = [];
      for (let r = 0; r < 3; r++) ts.push(await timePass({ pipeline: v.pipeline!, binds: [v.bind!], groups }, reps));
      v.ms.push(ts.sort((a, b) => a - b)[1]);
      const C = new Float32Array(await readBuffer(device, bC, M * N * 4));
      rows.forEach((i, r) => { for (let j = 0; j < N; j++) { const d = Math.abs(C[i * N + j] - ref[r][j]); v.err = Number.isNaN(d) || Number.isNaN(v.err) ? NaN : Math.max(v.err, d); } });
    }
  }
  const splitOf = (p: SplitPasses) => Math.min(...parts.get(p)!.splitMs);
  console.log(`${label} ${M}x${N}x${K}: split A pass 'high' ${(splitOf(3) * 1e3).toFixed(1)} µs, 'f16' ${(splitOf(1) * 1e3).toFixed(1)} µs (reps ${reps})`);
  const best = new Map<string, { name: string; ms: number }>();
  for (const v of ok) {
    const ms = Math.min(...v.ms), tot = ms + (v.pre ? splitOf(v.passes) : 0);
    const rel = v.err / refMax;
    const bad = Number.isNaN(rel) || rel > (v.passes === 3 ? 1e-4 : 5e-3);
    console.log(`${label.padEnd(7)} ${v.name.padEnd(36)} ${(ms * 1e3).toFixed(1).padStart(8)} µs ${v.pre ? `+split ${(tot * 1e3).toFixed(1).padStart(7)} µs` : ' '.repeat(21)} ${(flop / tot / 1e9).toFixed(1).padStart(6)} TFLOP/s  err ${rel.toExponential(1)}${bad ? ' WRONG' : ''}  (rounds ${v.ms.map((x) => (x * 1e3).toFixed(1)).join(', ')})`);
    if (bad) continue;
    const key = `${v.passes === 3 ? 'high' : 'f16'} ${v.pre ? 'pre' : 'cur'}`;
    if (!best.has(key) || tot < best.get(key)!.ms) best.set(key, { name: v.name, ms: tot });
  }
  const fmt = (k: string) => { const b = best.get(k); return b ? `${(b.ms * 1e3).toFixed(1)} µs (${b.name.replace(/^\S+ \S+ /, '')})` : '-'; };
  const ratio = (p: string) => { const c = best.get(`${p} cur`), q = best.get(`${p} pre`); return c && q ? (c.ms / q.ms).toFixed(2) : '-'; };
  summary.push(`${label.padEnd(7)} high cur ${fmt('high cur')} | pre+split ${fmt('high pre')} -> ${ratio('high')}x ; f16 cur ${fmt('f16 cur')} | pre+split ${fmt('f16 pre')} -> ${ratio('f16')}x`);
  for (const b of [bA, bBias, bRes, bC, bF]) b.destroy();
  for (const q of parts.values()) { q.bS.destroy(); q.bAh.destroy(); }
}
console.log('\nsummary (best of each; pre includes the split pass):');
for (const l of summary) console.log(l);
process.exit(0);
