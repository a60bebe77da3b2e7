// Lab (H100): the access-pattern ceiling of the 4-bit decode GEMV by weight layout, at 7B, 13B and 70B matrix sizes.
// Every variant is loads-only (the loaded words folded by xor into one f32 a row, a subgroupAdd per row), with the
// runtime's thread mapping (32 lanes along K reading one 16-byte chunk = one group of 32 weights each, RG rows groups
// per workgroup, RT rows per thread, UN chunks per iteration):
//  - flat:    the buffer read as one stream, grid-stride, no rows (the attainable ceiling);
//  - weights: the weights alone, the default layout minus scales and zeros (what it would cost with no metadata);
//  - split:   the default layout (packMatrix): weights, then all f16 scales, then all 4-bit zeros (three streams);
//  - inrow:   llmGpuConfig.rowMeta: each row's scales and zeros after its weights, rows padded to 16 bytes;
//  - blocked: each run of 32 groups (1024 weights) stored as 512 B of weights, 64 B of f16 scales and 16 B of zeros
//             (592 B, 37 vec4, no padding): one contiguous region per warp iteration.
// Usage: node layout-lab.mjs   Env: ROUNDS (default 9), LAB_SHAPES (e.g. 70b-gateup,7b-gateup)
import { acquireGpu } from '../../src/backends/webgpu/device.js';
import { median } from '../../src/util/stats.js';
import { passTimer } from './gpu-timing.js';

const { device, caps } = await acquireGpu();
console.log(`adapter: ${caps.name}; timestamps ${caps.timestamps}`);
const ROUNDS = Number(process.env.ROUNDS ?? 9);
const u = (n: number) => `${n}u`;
type Layout = 'flat' | 'weights' | 'split' | 'inrow' | 'blocked';
interface Shape { RT: number; RG: number; UN: number }

/** Words of one N×K q4 g32 matrix in a layout, and the word offsets its kernel needs. */
function layoutOf(L: Layout, N: number, K: number) {
  const wpr = K / 8, G = K / 32, sw = Math.ceil(G / 2), zw = Math.ceil(G / 8);
  if (L === 'flat' || L === 'weights') return { words: N * wpr, stride: wpr };
  if (L === 'split') return { words: N * (wpr + sw + zw), stride: wpr, scaleOff: N * wpr, zeroOff: N * (wpr + sw), sw, zw };
  if (L === 'inrow') { const stride = Math.ceil((wpr + sw + zw) / 4) * 4; return { words: N * stride, stride, scaleOff: wpr, zeroOff: wpr + sw }; }
  if (K % 1024 !== 0) throw new Error('blocked needs K % 1024 == 0');
  return { words: N * (K / 1024) * 148, stride: (K / 1024) * 148 };
}

function kernel(L: Layout, N: number, K: number, s: Shape): string {
  const { RT, RG, UN } = s;
  const WG = 32 * RG, KC = K / 32, lay = layoutOf(L, N, K), st = lay.stride;
  if (L === 'flat') {
    const V = lay.words / 4;
    return `@group(0) @binding(0) var<storage, read> W: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> OUT: array<f32>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  var a = 0u;
  let T = nw.x * ${u(WG)};
  for (var i = gid.x; i < ${u(V)}; i += T * ${u(UN)}) {
    ${Array.from({ length: UN }, (_, v) => `{ let w = W[min(i + T * ${u(v)}, ${u(V - 1)})]; a ^= w.x ^ w.y ^ w.z ^ w.w; }`).join('\n    ')}
  }
  if (a == 0x12345678u) { OUT[gid.x] = 1.0; }
}`;
  }
  const body: string[] = [];
  for (let v = 0; v < UN; v++) {
    const b: string[] = [v === 0 ? 'let cc = c;' : `let cc = min(c + ${u(32 * v)}, ${u(KC - 1)});`];
    for (let r = 0; r < RT; r++) {
      const rw = `rw${r}`;
      if (L === 'blocked') {
        b.push(`let bb${r} = ${rw} * ${u(st / 4)} + (cc >> 5u) * 37u;`);
        b.push(`let w${r} = W[bb${r} + (cc & 31u)];`);
        b.push(`let m${r} = W32(bb${r} * 4u + 128u + ((cc & 31u) >> 1u)) ^ W32(bb${r} * 4u + 144u + ((cc & 31u) >> 3u));`);
      } else {
        b.push(`let w${r} = W[${rw} * ${u(st / 4)} + cc];`);
        if (L === 'split') b.push(`let m${r} = W32(${u(lay.scaleOff!)} + ${rw} * ${u(lay.sw!)} + (cc >> 1u)) ^ W32(${u(lay.zeroOff!)} + ${rw} * ${u(lay.zw!)} + (cc >> 3u));`);
        else if (L === 'inrow') b.push(`let m${r} = W32(${rw} * ${u(st)} + ${u(lay.scaleOff!)} + (cc >> 1u)) ^ W32(${rw} * ${u(st)} + ${u(lay.zeroOff!)} + (cc >> 3u));`);
        else b.push(`let m${r} = 0u;`);
      }
      b.push(`a${r} += bitcast<f32>((w${r}.x ^ w${r}.y ^ w${r}.z ^ w${r}.w ^ m${r}) & 0x3FFFFFFFu);`);
    }
    body.push(`{\n      ${b.join('\n      ')}\n    }`);
  }
  const rows = Array.from({ length: RT }, (_, r) => `let rw${r} = min(r0 + ${u(r)}, ${u(N - 1)}); var a${r} = 0.0;`);
  const store = Array.from({ length: RT }, (_, r) => `{ let t = subgroupAdd(a${r}); if (tk == 0u && r0 + ${u(r)} < ${u(N)}) { OUT[r0 + ${u(r)}] = t; } }`);
  return `enable subgroups;
@group(0) @binding(0) var<storage, read> W: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> OUT: array<f32>;
fn W32(i: u32) -> u32 { return W[i >> 2u][i & 3u]; }
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let rg = lid / 32u; let tk = lid % 32u;
  let r0 = (wid.x * ${u(RG)} + rg) * ${u(RT)};
  ${rows.join('\n  ')}
  for (var c = tk; c < ${u(KC)}; c += ${u(32 * UN)}) {
    ${body.join('\n    ')}
  }
  ${store.join('\n  ')}
}`;
}

const timePass = passTimer(device);
interface Variant { name: string; pipeline: GPUComputePipeline; binds: GPUBindGroup[]; groups: number; bytes: number }

/** A buffer of `words` random words (xorshift), written in 16 MiB pieces. */
function randomBuffer(words: number, seed: number): GPUBuffer {
  const b = device.createBuffer({ size: words * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
  const piece = new Uint32Array(1 << 22);
  let x = seed >>> 0 || 1;
  for (let at = 0; at < words; at += piece.length) {
    const n = Math.min(piece.length, words - at);
    for (let i = 0; i < n; i++) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; piece[i] = x >>> 0; }
    device.queue.writeBuffer(b, at * 4, piece, 0, n);
  }
  return b;
}

const SHAPES: Record<string, [number, number]> = {
  '7b-qkv': [12288, 4096], '7b-gateup': [22016, 4096], 'tiny': [256, 2048], '13b-gateup': [27648, 5120],
  '70b-qkv': [10240, 8192], '70b-gateup': [57344, 8192], '70b-down': [8192, 28672],
};
const names = (process.env.LAB_SHAPES ?? '7b-qkv,7b-gateup,13b-gateup,70b-gateup,70b-down').split(',');
const shapes: Shape[] = [{ RT: 2, RG: 16, UN: 2 }, { RT: 2, RG: 16, UN: 4 }, { RT: 1, RG: 16, UN: 4 }];
for (const name of names) {
  const [N, K] = SHAPES[name];
  const variants: Variant[] = [];
  const OUT = device.createBuffer({ size: N * 4 * 4, usage: GPUBufferUsage.STORAGE });
  const made: GPUBuffer[] = [OUT];
  for (const L of ['flat', 'weights', 'split', 'inrow', 'blocked'] as Layout[]) {
    if (L === 'blocked' && K % 1024 !== 0) continue;
    const lay = layoutOf(L, N, K);
    // Enough copies to miss the 50 MB L2 between dispatches.
    const copies = Math.max(1, Math.ceil((256 << 20) / (lay.words * 4)));
    const Ws = Array.from({ length: copies }, (_, i) => randomBuffer(lay.words, 17 + i));
    made.push(...Ws);
    for (const s of L === 'flat' ? [{ RT: 1, RG: 8, UN: 4 }] : shapes) {
      const module = device.createShaderModule({ code: kernel(L, N, K, s) });
      const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } });
      const groups = L === 'flat' ? 132 * 8 : Math.ceil(N / (s.RT * s.RG));
      variants.push({ name: L === 'flat' ? 'flat (one stream)' : `${L} RT${s.RT} RG${s.RG} UN${s.UN}`, pipeline, groups, bytes: lay.words * 4,
        binds: Ws.map((W) => device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [W, OUT].map((buffer, binding) => ({ binding, resource: { buffer } })) })) });
    }
  }
  const reps = Math.max(8, Math.min(64, Math.round(4e9 / variants[0].bytes)));
  for (const t0 = performance.now(); performance.now() - t0 < 600;) await timePass(variants[0], reps);
  const times = variants.map(() => [] as number[]);
  for (let r = 0; r < ROUNDS; r++) for (let i = 0; i < variants.length; i++) times[i].push(await timePass(variants[i], reps));
  const q4bytes = N * K * (0.5 + 2 / 32 + 0.5 / 32);
  console.log(`\n${name} ${N}x${K}: q4 g32 ${(q4bytes / 1e6).toFixed(1)} MB, ${reps} dispatches a pass, ${ROUNDS} rounds; % of 3.35 TB/s for the bytes each variant reads`);
  variants.forEach((v, i) => {
    const ms = median(times[i]);
    const spread = (Math.max(...times[i]) - Math.min(...times[i])) * 1e3;
    console.log(`  ${v.name.padEnd(28)} ${(ms * 1e3).toFixed(2).padStart(8)} us ±${spread.toFixed(2)}  ${(v.bytes / ms / 1e6).toFixed(0).padStart(5)} GB/s ${(100 * v.bytes / ms / 1e6 / 3350).toFixed(1).padStart(5)}%`);
  });
  for (const b of made) b.destroy();
}
process.exit(0);
