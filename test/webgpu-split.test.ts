// The tensor-core GEMM's weight split derived on the GPU (splitBKernel through deriveConstant, as a session makes it)
// against the host's splitB, bit for bit: rounding ties, subnormal halves, carries into the next binade, signed zeros,
// f32 subnormal weights, extreme scales, padding, and K and N off the padding. The GEMM itself needs subgroup matrices
// (not on the software driver here); the split runs on any adapter.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { acquireGpu } from '../src/backends/webgpu/device.js';
import { deriveConstant } from '../src/backends/webgpu/derive.js';
import { splitOnGpu } from '../src/backends/webgpu/ops/matmul.js';
import { type SplitPasses, splitAKernel, splitASize, splitB, splitExponent } from '../src/codegen/wgsl/matmul_tc.js';
import { grid } from '../src/backends/webgpu/kernel.js';
import { readBuffer } from '../bench/gpu/gpu-timing.js';
import { f16ToF32, f32ToF16 } from '../src/ops/util.js';
import { mulberry32 as rng } from '../src/util/random.js';

/** The split buffer derived on the GPU, read back as halves. */
async function gpuSplit(b: Float32Array, K: number, N: number, passes: SplitPasses, exp: number, maxPerDim = 65535): Promise<Uint16Array> {
  const { device } = await acquireGpu();
  const d = splitOnGpu(b, K, N, passes, exp, maxPerDim);
  const out = deriveConstant(device, d);
  const read = device.createBuffer({ size: out.size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const enc = device.createCommandEncoder();
  enc.copyBufferToBuffer(out, 0, read, 0, out.size);
  device.queue.submit([enc.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const bits = new Uint16Array(read.getMappedRange().slice(0, d.bytes));
  read.destroy();
  out.destroy();
  return bits;
}

/** Asserts the GPU's split equals splitB's for both precisions where the weight can be split. */
async function agree(label: string, b: Float32Array, K: number, N: number, maxPerDim?: number): Promise<void> {
  for (const passes of [3, 1] as const) {
    const exp = splitExponent(b, passes);
    if (exp === null) continue;
    const want = splitB(b, K, N, passes, exp);
    const got = await gpuSplit(b, K, N, passes, exp, maxPerDim);
    assert.equal(got.length, want.length, `${label} passes ${passes}: length`);
    let bad = 0, first = '';
    for (let i = 0; i < want.length; i++) {
      if (got[i] !== want[i] && bad++ === 0) first = `half ${i}: ${got[i].toString(16)}, splitB ${want[i].toString(16)}`;
    }
    assert.equal(bad, 0, `${label} passes ${passes} (exp ${exp}): ${bad} halves differ, first ${first}`);
  }
}

const F = new Float32Array(1), U = new Uint32Array(F.buffer);
const fromBits = (u: number) => { U[0] = u; return F[0]; };
/** A float with a 24-bit significand m (2^23 ≤ m < 2^24) times 2^(e − 23). */
const sig = (m: number, e: number) => m * 2 ** (e - 23);

/**
 * Values in the scaled domain (max|x| just under 2^14): ties for hi (the 13 bits below its 11 are 1000…0) and for lo,
 * lo parts below the half normal range, hi parts that are subnormal halves or round to zero (ties at 2^-25 included),
 * a maximum that rounds up to 2^14, signed zeros, and normal samples.
 */
function awkward(n: number, seed: number): number[] {
  const r = rng(seed);
  const normal = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  const top = () => 1024 + Math.floor(r() * 1024);
  const sign = () => (r() < 0.5 ? -1 : 1);
  const out = [sig(0xffffff, 13), -sig(0xffffff, 13), 0, -0, 2 ** -25, -(2 ** -25), 3 * 2 ** -25, 2 ** -24, -(2 ** -14), sig(0xffffff, -15), -1, 65504 / 8];
  const kinds = [
    () => normal() * 2000,
    () => sign() * sig((top() << 13) | 0x1000, Math.floor(r() * 24) - 10), // hi tie
    () => sign() * sig((top() << 13) | 0x1000 | (r() < 0.5 ? 0x2 : 0x1), Math.floor(r() * 24) - 10), // lo ties and near-ties
    () => sign() * sig(0x800000 + Math.floor(r() * 0x800000), -2 - Math.floor(r() * 10)), // lo below 2^-14
    () => sign() * sig(0x800000 + Math.floor(r() * 0x800000), -15 - Math.floor(r() * 10)), // hi a subnormal half
    () => sign() * (2 * Math.floor(r() * 1024) + 1) * 2 ** -25, // ties on the subnormal grid
    () => sign() * sig(0x800000 + Math.floor(r() * 0x800000), -26 - Math.floor(r() * 20)), // rounds to ±0
  ];
  while (out.length < n) out.push(kinds[out.length % kinds.length]());
  return out;
}

test('GPU split: awkward weights off the padding agree with splitB bit for bit (high and f16)', async () => {
  for (const [K, N, e] of [[77, 131, 17], [64, 128, -3], [1, 1, 0], [130, 257, 30]]) {
    // The scaled values times 2^-e: splitExponent gives back e (the maximum's binade is 13 when scaled).
    const b = Float32Array.from(awkward(K * N, K + N), (x) => x * 2 ** -e);
    if (K * N === 1) b[0] = 3.75;
    await agree(`${K}x${N}`, b, K, N);
  }
});

test('GPU split: f16 range, subnormal and huge f32 weights, and a grid folded into two dimensions', async () => {
  // 'f16' (no scale): the half range's edge, ties in every binade and on the subnormal grid.
  const r = rng(7);
  const half = Float32Array.from({ length: 40 * 100 }, (_, i) => [65504, -65504, 65503.5, 32768 + 8, 2048 + 1, 1 + 2 ** -11, 2 ** -14 + 2 ** -25, 5 * 2 ** -25][i % 9] ?? (r() - 0.5) * 100);
  await agree('half range', half, 40, 100);
  // Weights of f32 subnormals only (scaled up by 2^140 and more) and with a maximum near 3.4e38 (scaled by 2^-114).
  const sub = Float32Array.from({ length: 33 * 70 }, (_, i) => fromBits((i % 2 ? 0x80000000 : 0) | ((i * 2654435761) >>> 9) % 0x800000));
  await agree('f32 subnormals', sub, 33, 70);
  const huge = Float32Array.from({ length: 33 * 70 }, () => (r() - 0.5) * 10 ** (Math.floor(r() * 76) - 38));
  huge[5] = 3.3e38;
  await agree('max 3.3e38', huge, 33, 70);
  // At most 10 workgroups per grid dimension (64 needed: 10 × 7): the workgroup index folds x and y; the last groups run past the words.
  const big = Float32Array.from(awkward(70 * 200, 3), (x) => x / 1024);
  await agree('grid in 2-D', big, 70, 200, 10);
});

/** splitAKernel's halves of A (read back as u16) and its fault words. */
async function gpuSplitA(a: Float32Array, M: number, K: number, passes: SplitPasses): Promise<{ halves: Uint16Array; fault: Uint32Array }> {
  const { device } = await acquireGpu();
  const U = GPUBufferUsage;
  const mk = (size: number) => device.createBuffer({ size: Math.ceil(size / 16) * 16, usage: U.STORAGE | U.COPY_SRC | U.COPY_DST });
  const sz = splitASize(M, K, passes);
  const bA = mk(a.byteLength), bH = mk(sz.bytes), bF = mk(16);
  device.queue.writeBuffer(bA, 0, a.buffer as ArrayBuffer, a.byteOffset, a.byteLength);
  device.queue.writeBuffer(bH, 0, new Uint16Array(sz.bytes / 2).fill(0x7e00)); // NaN halves: every half must be written
  const p = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: splitAKernel(M, K, passes) }), entryPoint: 'main' } });
  const g = device.createBindGroup({ layout: p.getBindGroupLayout(0), entries: [bA, bH, bF].map((buffer, binding) => ({ binding, resource: { buffer } })) });
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(p); pass.setBindGroup(0, g); pass.dispatchWorkgroups(...grid(sz.workgroups, 7));
  pass.end();
  device.queue.submit([enc.finish()]);
  const halves = new Uint16Array(await readBuffer(device, bH, sz.bytes)), fault = new Uint32Array(await readBuffer(device, bF, 16));
  for (const b of [bA, bH, bF]) b.destroy();
  return { halves, fault };
}

test("splitAKernel: A as the GEMM stages it — 'high' hi (mantissa cut to 10 bits) + lo, 'f16' rounded; zeros past K; the f16-range fault", async () => {
  // 40 rows (a grid of 7 workgroups per row of the dispatch, so wg.y counts), K = 100 (Kp 128).
  const M = 40, K = 100, Kp = 128;
  const r = rng(7);
  const a = Float32Array.from({ length: M * K }, (_, i) => (r() < 0.5 ? -1 : 1) * (0.01 + r() * 2.99) * (i % 11 === 0 ? 0.01 : 1));
  for (const passes of [3, 1] as const) {
    const { halves, fault } = await gpuSplitA(a, M, K, passes);
    assert.equal(halves.length, (passes === 3 ? 2 : 1) * M * Kp);
    let worst = 0;
    for (let m = 0; m < M; m++) {
      for (let k = 0; k < Kp; k++) {
        const hi = f16ToF32(halves[m * Kp + k]), lo = passes === 3 ? f16ToF32(halves[M * Kp + m * Kp + k]) : 0;
        if (k >= K) { assert.ok(hi === 0 && lo === 0, `row ${m} k ${k} past K: ${hi}, ${lo}`); continue; }
        const x = a[m * K + k];
        if (passes === 3) {
          // hi is x with its mantissa cut to 10 bits (exact as a half here: |x| ≥ 1e-4 > 2^-14); lo the remainder rounded.
          F[0] = x; U[0] &= 0xffffe000;
          assert.equal(hi, F[0], `hi of ${x}`);
        } else {
          assert.equal(halves[m * Kp + k], f32ToF16(x), `f16 of ${x}`);
        }
        worst = Math.max(worst, Math.abs(hi + lo - x) / 3);
      }
    }
    // Relative to max|A| (3): 'high' keeps ~21 bits, 'f16' 11.
    assert.ok(worst < (passes === 3 ? 2 ** -21 : 2 ** -11), `passes ${passes}: worst ${worst}`);
    assert.deepEqual([...fault], [0, 0, 0, 0]);
  }
  const big = a.slice();
  big[5 * K + 17] = -1e5;
  const { fault } = await gpuSplitA(big, M, K, 3);
  assert.equal(fault[0], 2);
  assert.equal(new Float32Array(fault.buffer)[1], 1e5);
});
