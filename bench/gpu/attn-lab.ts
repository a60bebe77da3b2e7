// Fused attention at BERT-base's shapes (12 heads, sequence 128, head size 64, a key-padding mask; batch 8 and 1):
// the row kernel's default against the register-tiled kernel over its parameter grid. GPU time from timestamps
// around one pass of many dispatches (median of rounds); every variant checked against float64 on sampled rows.
// Usage (GPU machine): node attn-lab.mjs   (LAB_BATCH=8,1)
import { acquireGpu } from '../../src/backends/webgpu/device.js';
import { attentionConfig, attentionLabPlan } from '../../src/backends/webgpu/ops/attention.js';
import { passTimer, readBuffer, storageBuffer } from './gpu-timing.js';
import type { Params } from '../../src/tune/site.js';

const gpu = await acquireGpu();
const { device, caps } = gpu;
console.log(`adapter: ${caps.name}; subgroup size ${caps.subgroupSize}; maxWorkgroupStorage ${caps.maxWorkgroupStorage}`);
const buf = (d: ArrayBufferView | number) => storageBuffer(device, d);
const timePass = passTimer(device);
const H = 12, S = 128, D = 64;
const reps = Number(process.env.LAB_REPS ?? 60);

for (const B of (process.env.LAB_BATCH ?? '8,1').split(',').map(Number)) {
  const n = B * H * S * D;
  const rnd = (k: number) => Float32Array.from({ length: k }, () => Math.random() * 2 - 1);
  const q = rnd(n), k = rnd(n), v = rnd(n);
  const mask = new Float32Array(B * S);
  for (let b = 0; b < B; b++) for (let j = S - 3 - b; j < S; j++) mask[b * S + j] = -10000;
  const bq = buf(q), bk = buf(k), bv = buf(v), bm = buf(mask), bo = buf(n * 4);
  // float64 reference on sampled rows (batch·head, row)
  const samples: [number, number][] = [];
  for (let t = 0; t < 24; t++) samples.push([Math.floor(Math.random() * B * H), Math.floor(Math.random() * S)]);
  const want = samples.map(([bh, i]) => {
    const b = Math.floor(bh / H), sc = new Float64Array(S);
    let mx = -Infinity;
    for (let j = 0; j < S; j++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += q[(bh * S + i) * D + d] * k[(bh * S + j) * D + d];
      sc[j] = s / 8 + mask[b * S + j];
      mx = Math.max(mx, sc[j]);
    }
    let l = 0;
    for (let j = 0; j < S; j++) { sc[j] = Math.exp(sc[j] - mx); l += sc[j]; }
    return Array.from({ length: D }, (_, d) => { let o = 0; for (let j = 0; j < S; j++) o += sc[j] * v[(bh * S + j) * D + d]; return o / l; });
  });
  const variants: [string, Params | null, 'auto' | 'off'][] = [['row kernel (default before)', null, 'off'], ['tiled default', null, 'auto']];
  for (const Br of [16, 32, 64]) for (const Bc of [16, 32, 64]) for (const TN of [4, 8, 16]) variants.push([`tiled Br ${Br} Bc ${Bc} TN ${TN}`, { kind: 'tiled', Br, Bc, TN }, 'auto']);
  const rows: [string, number, number, string][] = [];
  const seen = new Set<string>();
  for (const [name, p, mode] of variants) {
    attentionConfig.tiled = mode;
    const plan = attentionLabPlan({ batch: [B, H], Sq: S, Skv: S, D, mask: true, scale: 8 }, p, caps);
    attentionConfig.tiled = 'auto';
    if (!plan || plan.dispatches.length !== 1) { rows.push([name, NaN, NaN, 'no plan']); continue; }
    const d = plan.dispatches[0];
    const key = d.code + d.groups.join();
    if (p && seen.has(key)) continue; // a forced shape that fell back to the default
    seen.add(key);
    const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module: device.createShaderModule({ code: d.code }), entryPoint: 'main' } });
    const bufs = [bq, bk, bv, bm, bo];
    const bind = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: bufs.map((buffer, binding) => ({ binding, resource: { buffer } })) });
    await timePass({ pipeline, binds: [bind], groups: d.groups }, 10);
    const ts: number[] = [];
    for (let r = 0; r < 5; r++) ts.push(await timePass({ pipeline, binds: [bind], groups: d.groups }, reps));
    const ms = ts.sort((x, y) => x - y)[2];
    const got = new Float32Array(await readBuffer(device, bo, n * 4));
    let err = 0, mx = 0;
    samples.forEach(([bh, i], t) => want[t].forEach((w, dd) => { err = Math.max(err, Math.abs(got[(bh * S + i) * D + dd] - w)); mx = Math.max(mx, Math.abs(w)); }));
    rows.push([name, ms * 1e3, (2 * 2 * B * H * S * S * D) / (ms * 1e9), `err ${(err / mx).toExponential(1)} groups ${d.groups.join('x')}`]);
  }
  console.log(`\nBERT-base attention, batch ${B} (${H} heads, S ${S}, D ${D}, key mask): µs per dispatch, TFLOP/s`);
  for (const [name, us, tf, note] of rows.sort((x, y) => (x[1] || 1e9) - (y[1] || 1e9))) console.log(`${name.padEnd(30)} ${us.toFixed(1).padStart(8)} ${tf.toFixed(2).padStart(7)}  ${note}`);
}
gpu.device.destroy();
