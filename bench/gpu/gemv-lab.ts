// Lab (H100): what bounds the decode GEMV (4-bit g32, one token) at Llama-7B shapes. Variants timed interleaved, in
// the same rounds, after the GPU has been kept busy (its clocks rise under load; bench/gpu/tc-timing-probe.ts):
//  - gen:  the runtime's kernel (wgsl.ts gemvKernel) at the default shape and a few others;
//  - loads: the same thread mapping with the math replaced by an xor of the loaded words (no x): the access pattern's
//    ceiling;
//  - dp4a: x quantized to int8 per group of 32 (dx, Σxi per group), weights' nibbles fed as bytes to dot4I8Packed (8
//    weights: 2 ANDs, a shift, 2 integer dot products), no workgroup memory, a subgroupAdd per row.
// Usage: node gemv-lab.mjs   Env: ROUNDS (default 15), REPS (dispatches per pass, default 64), COPIES (matrix copies
// rotated; default enough to span 256 MiB so every pass misses the 50 MB L2; COPIES=1 keeps a matrix L2-resident)
import { acquireGpu, dawnInstance } from '../../src/backends/webgpu/device.js';
import { randomQuantMatrix } from '../../src/llm/random_model.js';
import { dequantRow } from '../../src/llm/types.js';
import { gemvShapeFor, packMatrix, probeSubgroups, stagedTile } from '../../src/llm/webgpu.js';
import { META_IDS, gemvKernel, type GemvShape, type GemvSpec, type MatLayout } from '../../src/llm/wgsl.js';
import { mulberry32 } from '../../src/util/random.js';
import { median } from '../../src/util/stats.js';
import { passTimer } from './gpu-timing.js';

const { device, caps } = await acquireGpu();
const probe = caps.subgroups ? await probeSubgroups(device) : { ok: false, maxSize: 0 };
const gpu = (await dawnInstance()) as GPU & { wgslLanguageFeatures?: Set<string> };
const dot4 = gpu.wgslLanguageFeatures?.has('packed_4x8_integer_dot_product') ?? false;
console.log(`adapter: ${caps.name}; subgroups ${probe.ok} (max ${probe.maxSize}); timestamps ${caps.timestamps}; dot4I8Packed ${dot4}`);
const ROUNDS = Number(process.env.ROUNDS ?? 15), REPS = Number(process.env.REPS ?? 64);
const u = (n: number) => `${n}u`;

/** x as int8 per group of 32: words [chunk][A0..A3, B0..B3] (A_j = x[8j], x[8j+2], x[8j+4], x[8j+6]; B_j the odd ones), and per group (dx, dx·Σxi). */
function quantX(x: Float32Array): { words: Uint32Array; gs: Float32Array; xq: Float32Array } {
  const K = x.length, G = K / 32;
  const words = new Uint32Array(K / 4), gs = new Float32Array(2 * G), xq = new Float32Array(K);
  for (let g = 0; g < G; g++) {
    let mx = 0;
    for (let k = 0; k < 32; k++) mx = Math.max(mx, Math.abs(x[32 * g + k]));
    const dx = mx / 127 || 1;
    const qi = Array.from({ length: 32 }, (_, k) => Math.round(x[32 * g + k] / dx));
    let sum = 0;
    for (let k = 0; k < 32; k++) { sum += qi[k]; xq[32 * g + k] = qi[k] * dx; }
    gs[2 * g] = dx; gs[2 * g + 1] = dx * sum;
    for (let j = 0; j < 4; j++) {
      const pack = (o: number) => ((qi[8 * j + o] & 255) | ((qi[8 * j + o + 2] & 255) << 8) | ((qi[8 * j + o + 4] & 255) << 16) | ((qi[8 * j + o + 6] & 255) << 24)) >>> 0;
      words[8 * g + j] = pack(0);
      words[8 * g + 4 + j] = pack(1);
    }
  }
  return { words, gs, xq };
}

interface LabShape { RT: number; RG: number; UN: number }

/** The dp4a kernel (or, with `loadsOnly`, the same loads with the math replaced). Bindings: W, XQ, XG, OUT. */
function dp4aKernel(m: MatLayout, s: LabShape, loadsOnly: boolean, stage = false): string {
  const { RT, RG, UN } = s;
  const WG = 32 * RG, KC = m.wpr / 4, W4 = m.wpr / 4;
  const guard = KC % (32 * UN) !== 0;
  const L: string[] = [];
  for (let r = 0; r < RT; r++) L.push(`let rw${r} = min(r0 + ${u(r)}, ${u(m.N - 1)}); var a${r} = 0.0;`);
  const body: string[] = [];
  for (let v = 0; v < UN; v++) {
    const b: string[] = [];
    b.push(v === 0 ? 'let cc = c;' : `let cc = min(c + ${u(32 * v)}, ${u(KC - 1)});`);
    const f = guard && v > 0 ? `select(0.0, 1.0, c + ${u(32 * v)} < ${u(KC)}) * ` : '';
    if (!loadsOnly) b.push(stage ? 'let xa = SA[cc]; let xb = SB[cc]; let xg = SG[cc];' : 'let xa = XQ[2u * cc]; let xb = XQ[2u * cc + 1u]; let xg = XG[cc];');
    for (let r = 0; r < RT; r++) {
      b.push(`let w${r} = W[rw${r} * ${u(W4)} + cc];`);
      b.push(`let si${r} = rw${r} * ${u(m.groups)} + cc; let s${r} = unpack2x16float(w32(${u(m.scaleOff)} + (si${r} >> 1u)))[si${r} & 1u];`);
      b.push(`let z${r} = f32((w32(${u(m.zeroOff)} + rw${r} * ${u(m.zpr)} + (cc >> 3u)) >> ((cc & 7u) * 4u)) & 15u);`);
    }
    for (let r = 0; r < RT; r++) {
      if (loadsOnly) { b.push(`a${r} += ${f}s${r} * (z${r} + bitcast<f32>((w${r}.x ^ w${r}.y ^ w${r}.z ^ w${r}.w) & 0x3FFFFFFFu));`); continue; }
      const terms: string[] = [];
      for (const j of ['x', 'y', 'z', 'w']) terms.push(`dot4I8Packed(w${r}.${j} & M, xa.${j})`, `dot4I8Packed((w${r}.${j} >> 4u) & M, xb.${j})`);
      b.push(`let d${r} = ${terms.join(' + ')};`);
      b.push(`a${r} += ${f}s${r} * (xg.x * f32(d${r}) - z${r} * xg.y);`);
    }
    body.push(`{\n      ${b.join('\n      ')}\n    }`);
  }
  const store: string[] = [];
  // Subgroups of 32 (the H100): one subgroupAdd per row; narrower ones (software drivers): workgroup memory.
  const sg32 = probe.ok && probe.maxSize === 32;
  if (sg32) for (let r = 0; r < RT; r++) store.push(`{ let t = subgroupAdd(a${r}); if (tk == 0u && r0 + ${u(r)} < ${u(m.N)}) { OUT[r0 + ${u(r)}] = t; } }`);
  else {
    for (let r = 0; r < RT; r++) store.push(`red[${u(r * WG)} + lid] = a${r};`);
    store.push('workgroupBarrier();', `if (tk < ${u(RT)} && r0 + tk < ${u(m.N)}) { var t = 0.0; for (var k = 0u; k < 32u; k++) { t += red[tk * ${u(WG)} + rg * 32u + k]; } OUT[r0 + tk] = t; }`);
  }
  const G = m.K / 32;
  // Staged: each thread quantizes whole groups of x (8 vec4 from storage) into workgroup memory.
  const prologue = stage ? `for (var g = lid; g < ${u(G)}; g += ${u(WG)}) {
    var v: array<vec4f, 8>;
    var mx = 0.0;
    for (var i = 0u; i < 8u; i++) { v[i] = X[g * 8u + i]; let a = abs(v[i]); mx = max(mx, max(max(a.x, a.y), max(a.z, a.w))); }
    let inv = select(0.0, 127.0 / mx, mx > 0.0);
    var qa = vec4<u32>(); var qb = vec4<u32>(); var sum = 0;
    for (var j = 0u; j < 4u; j++) {
      let p = vec4<i32>(round(v[2u * j] * inv)); let q = vec4<i32>(round(v[2u * j + 1u] * inv));
      sum += p.x + p.y + p.z + p.w + q.x + q.y + q.z + q.w;
      let pu = vec4<u32>(p) & vec4<u32>(255u); let qu = vec4<u32>(q) & vec4<u32>(255u);
      qa[j] = pu.x | (pu.z << 8u) | (qu.x << 16u) | (qu.z << 24u);
      qb[j] = pu.y | (pu.w << 8u) | (qu.y << 16u) | (qu.w << 24u);
    }
    let dx = mx / 127.0;
    SA[g] = qa; SB[g] = qb; SG[g] = vec2f(dx, dx * f32(sum));
  }
  workgroupBarrier();` : '';
  return `enable subgroups;
@group(0) @binding(0) var<storage, read> W: array<vec4<u32>>;
${stage ? `@group(0) @binding(1) var<storage, read> X: array<vec4f>;
var<workgroup> SA: array<vec4<u32>, ${G}>;
var<workgroup> SB: array<vec4<u32>, ${G}>;
var<workgroup> SG: array<vec2f, ${G}>;` : `@group(0) @binding(1) var<storage, read> XQ: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> XG: array<vec2f>;`}
@group(0) @binding(3) var<storage, read_write> OUT: array<f32>;
const M = 0x0F0F0F0Fu;
fn w32(i: u32) -> u32 { return W[i >> 2u][i & 3u]; }
${sg32 ? '' : `var<workgroup> red: array<f32, ${RT * WG}>;`}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let rg = lid / 32u; let tk = lid % 32u;
  let r0 = (wid.x * ${u(RG)} + rg) * ${u(RT)};
  ${prologue}
  ${L.join('\n  ')}
  for (var c = tk; c < ${u(KC)}; c += ${u(32 * UN)}) {
    ${body.join('\n    ')}
  }
  ${store.join('\n  ')}
}
`;
}

interface Variant { name: string; pipeline: GPUComputePipeline; binds: GPUBindGroup[]; groups: number; check: 'x' | 'xq' | null }

async function pipelineOf(code: string): Promise<GPUComputePipeline> {
  device.pushErrorScope('validation');
  const p = await device.createComputePipelineAsync({ layout: 'auto', compute: { module: device.createShaderModule({ code }), entryPoint: 'main' } });
  const e = await device.popErrorScope();
  if (e) throw new Error(e.message);
  return p;
}

const timePass = passTimer(device);

const mk = (bytes: number, usage = 0) => device.createBuffer({ size: Math.max(16, bytes), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | usage });
const put = (data: ArrayBufferView<ArrayBuffer>, usage = 0) => { const b = mk(data.byteLength, usage); device.queue.writeBuffer(b, 0, data); return b; };

const shapes: [string, number, number][] = process.argv.includes('--small') ? [['small', 512, 1088]] : [['qkv', 12288, 4096], ['o', 4096, 4096], ['gate+up', 22016, 4096], ['down', 4096, 11008]];
const summary: string[] = [];
for (const [name, N, K] of shapes) {
  const m = randomQuantMatrix(N, K, 4, 32, N + K);
  const packed = packMatrix(m);
  const copies = process.env.COPIES ? Number(process.env.COPIES) : process.argv.includes('--small') ? 2 : Math.max(1, Math.ceil((256 << 20) / packed.words.byteLength));
  const Ws = Array.from({ length: copies }, () => put(packed.words));
  const r = mulberry32(3);
  const x = Float32Array.from({ length: K }, () => r() * 2 - 1);
  const xq = quantX(x);
  const X = put(x), XQ = put(xq.words), XG = put(xq.gs);
  const meta = put(new Uint32Array([1, 0, 0, 1, 0, 0, 0, 0, 0]));
  const OUT = mk(N * 4, GPUBufferUsage.COPY_SRC);
  const W0 = Ws[0];
  const variants: Variant[] = [];
  const base = { m: packed.layout, norm: false, eps: 1e-5, gather: false, epi: { kind: 'head' as const }, sg: probe.ok };
  const def = gemvShapeFor('head', base, 1, { maxWorkgroupStorage: caps.maxWorkgroupStorage, subgroupMax: probe.maxSize, maxInvocations: caps.maxInvocations });
  const gens: (GemvShape & { dot4?: boolean })[] = [def, { ...def, UN: 4 }];
  // The runtime's int8-activation kernel (wgsl.ts gemvDot4Loop).
  if (dot4) for (const [RT, RG, UN] of [[2, 16, 2], [2, 8, 2], [1, 16, 4], [2, 8, 4], [1, 8, 4]]) gens.push({ ...def, RT, RG, UN, dot4: true });
  for (const g of gens) {
    const spec: GemvSpec = { ...base, ...g, XT: undefined };
    const s = { ...spec, XT: g.dot4 ? 0 : stagedTile(spec, caps.maxWorkgroupStorage) };
    const p = await pipelineOf(gemvKernel(s));
    variants.push({ name: `gen${g.dot4 ? ' int8' : ''} RT${s.RT} RG${s.RG} UN${s.UN} XT${s.XT}`, pipeline: p, groups: Math.ceil(N / (s.RT * s.RG)), check: g.dot4 ? 'xq' : 'x',
      binds: Ws.map((W) => device.createBindGroup({ layout: p.getBindGroupLayout(0), entries: [meta, W, X, OUT].map((buffer, binding) => ({ binding, resource: { buffer } })) })) });
  }
  const lab: LabShape[] = [{ RT: 2, RG: 8, UN: 2 }, { RT: 1, RG: 8, UN: 4 }, { RT: 2, RG: 8, UN: 4 }, { RT: 1, RG: 8, UN: 8 }, { RT: 2, RG: 16, UN: 2 }, { RT: 4, RG: 8, UN: 2 }, { RT: 2, RG: 4, UN: 2 }, { RT: 1, RG: 16, UN: 4 }];
  for (const mode of ['loads', 'dp4a'] as const) {
    if (mode !== 'loads' && !dot4) continue;
    for (const s of mode === 'loads' ? lab.slice(0, 2) : lab.slice(0, 3)) {
      const p = await pipelineOf(dp4aKernel(packed.layout, s, mode === 'loads', mode === 'dp4a staged'));
      const bufs = mode === 'loads' ? [W0, OUT] : mode === 'dp4a' ? [W0, XQ, XG, OUT] : [W0, X, OUT];
      const at = mode === 'loads' ? [0, 3] : mode === 'dp4a' ? [0, 1, 2, 3] : [0, 1, 3];
      variants.push({ name: `${mode} RT${s.RT} RG${s.RG} UN${s.UN}`, pipeline: p, groups: Math.ceil(N / (s.RT * s.RG)), check: mode === 'loads' ? null : 'xq',
        binds: Ws.map((W) => device.createBindGroup({ layout: p.getBindGroupLayout(0), entries: bufs.map((buffer, i) => ({ binding: at[i], resource: { buffer: buffer === W0 ? W : buffer } })) })) });
    }
  }
  // Check every variant that computes y (16 sampled rows, relative to Σ|w·x|).
  for (const v of variants) {
    if (!v.check) continue;
    await timePass(v, 1);
    const rd = device.createBuffer({ size: N * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const enc = device.createCommandEncoder();
    enc.copyBufferToBuffer(OUT, 0, rd, 0, N * 4);
    device.queue.submit([enc.finish()]);
    await rd.mapAsync(GPUMapMode.READ);
    const y = new Float32Array(rd.getMappedRange().slice(0));
    rd.destroy();
    const row = new Float32Array(K), xs = v.check === 'x' ? x : xq.xq;
    let worst = 0, vsX = 0;
    for (let s = 0; s < 16; s++) {
      const n = Math.floor((s * N) / 16 + ((s * 7919) % Math.floor(N / 16)));
      dequantRow(m, n, row);
      let want = 0, wantX = 0, mag = 0;
      for (let k = 0; k < K; k++) { want += row[k] * xs[k]; wantX += row[k] * x[k]; mag += Math.abs(row[k] * x[k]); }
      worst = Math.max(worst, Math.abs(y[n] - want) / mag);
      vsX = Math.max(vsX, Math.abs(y[n] - wantX) / mag);
    }
    if (!(worst < 1e-4)) throw new Error(`${name} ${v.name}: row error ${worst}`);
    if (v.check === 'xq') v.name += ` (vs f32 x ${vsX.toExponential(1)})`;
  }
  // Busy the GPU ~0.5 s, then interleaved rounds.
  for (const t0 = performance.now(); performance.now() - t0 < 500;) await timePass(variants[0], REPS);
  const times = variants.map(() => [] as number[]);
  for (let round = 0; round < ROUNDS; round++) for (let i = 0; i < variants.length; i++) times[i].push(await timePass(variants[i], REPS));
  const bytes = packed.layout.words * 4 + K * 4 + N * 4;
  const base0 = median(times[0]);
  console.log(`\n${name} ${N}x${K} (${(bytes / 1e6).toFixed(1)} MB, ${copies} copies rotated, ${REPS} dispatches per pass, ${ROUNDS} rounds)`);
  variants.forEach((v, i) => {
    const ms = median(times[i]);
    const line = `  ${v.name.padEnd(48)} ${(ms * 1e3).toFixed(1).padStart(7)} us ${(bytes / ms / 1e6).toFixed(0).padStart(5)} GB/s ${(100 * bytes / ms / 1e6 / 3350).toFixed(1).padStart(5)}%  x${(base0 / ms).toFixed(2)}`;
    console.log(line);
    summary.push(`${name} ${line.trim()}`);
  });
  for (const b of [...Ws, X, XQ, XG, meta, OUT]) b.destroy();
}
process.exit(0);
