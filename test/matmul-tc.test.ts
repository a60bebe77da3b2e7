// The tensor-core GEMM's host side (matmul_tc.ts): splitting B into halves, its scale, the default tiles, the generated
// kernel's structure, and that matmulPrecision 'high' falls back to the f32 kernels where the device has no subgroup
// matrices (the software driver here). The kernel itself runs only on GPUs with subgroup matrices: its numbers come
// from bench/gpu/tc-split.ts on the H100 (bench/results/gpu/h100-tc-split.txt: ragged shapes with the epilogue and the
// f16-range fault checked element by element there).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Float16Array } from '@petamoriken/float16';
import { splitB, splitBDims, splitDefault, splitExponent, splitMatmul, splitValid, type SplitTile } from '../src/codegen/wgsl/matmul_tc.js';
import type { MatmulSpec } from '../src/codegen/wgsl/matmul.js';
import { sgmLoad, sgmStore, sgmSyntax } from '../src/codegen/wgsl/sgm.js';
import { gemmTcKernel, TC_TILE } from '../src/llm/wgsl_tc.js';
import { matLayout } from '../src/llm/wgsl.js';
import { InferenceSession } from '../src/session.js';
import { writeModel } from '../src/bench/onnx_writer.js';
import { Tensor } from '../src/tensor.js';
import { f16ToF32 } from '../src/ops/util.js';

const spec = (M: number, N: number, K: number, epilogue: MatmulSpec['epilogue'] = {}): MatmulSpec => ({ M, N, K, batchDims: [], aBatchStrides: [], bBatchStrides: [], epilogue });

test('splitB: hi + lo reconstructs every weight to ~22 bits, padding is zero, hi alone rounds like Float16Array', () => {
  const K = 70, N = 130;
  const b = Float32Array.from({ length: K * N }, (_, i) => (Math.sin(i * 1.7) * 0.08) * (i % 17 === 0 ? 1e-4 : 1));
  b[3] = 0; b[4] = -0; b[5] = 1e-12; b[6] = -3e-7; b[7] = 0.31;
  const e = splitExponent(b, 3)!;
  const max = Math.max(...Array.from(b, Math.abs));
  assert.ok(max * 2 ** e >= 2 ** 13 && max * 2 ** e < 2 ** 14, `scaled max ${max * 2 ** e}`);
  const bits = splitB(b, K, N, 3, e);
  const { Kp, Np } = splitBDims(K, N);
  assert.equal(Kp, 128); assert.equal(Np, 256);
  assert.equal(bits.length, 2 * Kp * Np);
  let worst = 0;
  for (let k = 0; k < Kp; k++) {
    for (let n = 0; n < Np; n++) {
      const hi = f16ToF32(bits[k * Np + n]), lo = f16ToF32(bits[Kp * Np + k * Np + n]);
      if (k >= K || n >= N) { assert.equal(hi + lo, 0, `padding at ${k},${n}`); continue; }
      const x = b[k * N + n] * 2 ** e;
      // Relative to the element, bounded below by the half subnormal spacing (relative to max|B| that is 2^-37).
      const err = Math.abs(hi + lo - x);
      assert.ok(err <= Math.abs(x) * 2 ** -21 + 2 ** -25, `element ${k},${n}: ${x} split to ${hi} + ${lo}`);
      worst = Math.max(worst, err / (max * 2 ** e));
    }
  }
  assert.ok(worst < 2 ** -22, `worst error relative to max|B| ${worst}`);
  // One part ('f16' precision): no scale, round to nearest even as Float16Array does.
  assert.equal(splitExponent(b, 1), 0);
  const one = splitB(b, K, N, 1, 0);
  assert.equal(one.length, Kp * Np);
  const ref = new Uint16Array(new Float16Array(b).buffer);
  for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) assert.equal(one[k * Np + n], ref[k * N + n], `half of element ${k},${n}`);
});

test('splitExponent: non-finite weights and halves out of range are refused, in any lane of the scan', () => {
  assert.equal(splitExponent(new Float32Array([1, NaN]), 3), null);
  assert.equal(splitExponent(new Float32Array([1, Infinity]), 1), null);
  assert.equal(splitExponent(new Float32Array([7e4]), 1), null);
  assert.equal(splitExponent(new Float32Array([7e4]), 3), 13 - 16);
  assert.equal(splitExponent(new Float32Array(8), 3), 0);
  // The scan reads the bits four at a time: the maximum (or a refused value) in any lane, in the tail, in a view.
  const scalar = (b: Float32Array, passes: 1 | 3) => {
    let max = 0;
    for (const x of b) { if (!(Math.abs(x) <= 3.4e38)) return null; max = Math.max(max, Math.abs(x)); }
    return passes === 1 ? (max > 65504 ? null : 0) : max > 0 ? 13 - Math.floor(Math.log2(max)) : 0;
  };
  for (const special of [-0.7, 3e-3, 1e-40, -65504, 65505, 3.4e38, 3.4000001e38, -Infinity, NaN]) {
    for (let n = 1; n <= 9; n++) {
      for (let at = 0; at < n; at++) {
        const b = new Float32Array(n + 2).fill(-0.125).subarray(1, n + 1);
        b[at] = special;
        for (const passes of [1, 3] as const) assert.equal(splitExponent(b, passes), scalar(b, passes), `${special} at ${at} of ${n}, passes ${passes}`);
      }
    }
  }
});

test('splitDefault: BERT-base at batch 8 and 1 takes tensor-core tiles, tiny grids and odd shapes keep the f32 kernel', () => {
  const pick = (M: number, N: number, K: number) => splitDefault(spec(M, N, K), 3, 32, 1024, 49152);
  const name = (t: SplitTile | null) => (t ? `${t.fm}x${t.fn} ${t.sm}x${t.sn} k${16 * t.kSteps}` : null);
  assert.equal(name(pick(4096, 4096, 4096)), '2x4 4x2 k32');
  assert.equal(name(pick(1024, 2304, 768)), '2x2 2x4 k32');
  assert.equal(name(pick(1024, 3072, 768)), '2x2 2x4 k32');
  assert.equal(name(pick(1024, 768, 3072)), '2x2 2x4 k32', 'N = 768: 96 workgroups of 64×128 beat 192 of 64×64');
  assert.equal(name(pick(768, 768, 768)), '2x1 2x4 k64', '72 workgroups of 64×128: 144 of 64×64');
  assert.equal(name(pick(128, 2304, 768)), '2x1 2x4 k64', 'batch 1: 72 workgroups of 64×64');
  assert.equal(pick(32, 256, 768), null, '2 workgroups of 32 rows');
  // 'f16' (A in halves first): 64×128 everywhere it has 96 workgroups, K tiles of 64 where it has fewer than 160.
  const pick1 = (M: number, N: number, K: number) => splitDefault(spec(M, N, K), 1, 32, 1024, 49152);
  assert.equal(name(pick1(4096, 4096, 4096)), '2x2 2x4 k32');
  assert.equal(name(pick1(1024, 2304, 768)), '2x2 2x4 k32');
  assert.equal(name(pick1(1024, 768, 3072)), '2x2 2x4 k64');
  assert.equal(name(pick1(1024, 768, 768)), '2x2 2x4 k64');
  assert.equal(name(pick1(128, 768, 3072)), '2x1 2x4 k64');
  assert.equal(pick1(64, 128, 64), null, 'one workgroup');
  assert.equal(pick(1000, 2304, 768), null, 'M not a multiple of 16');
  assert.equal(pick(1024, 2304, 770), null, 'K not a multiple of 4');
  // Devices with smaller subgroups or less workgroup memory refuse tiles rather than overrun them.
  assert.equal(splitValid(spec(1024, 1024, 1024), { fm: 2, fn: 4, sm: 4, sn: 2, kSteps: 2 }, 3, 32, 1024, 16384), false);
});

test('splitMatmul: three products per fragment pair for high, one for f16; the f16-range fault; edge fragments guarded', () => {
  const t: SplitTile = { fm: 2, fn: 2, sm: 2, sn: 4, kSteps: 2 };
  const count = (s: string, re: RegExp) => (s.match(re) ?? []).length;
  const high = splitMatmul(spec(1024, 768, 768, { bias: 'n', act: 'gelu', residual: true }), t, 3, 32, 2 ** -15);
  assert.equal(count(high, /subgroupMatrixMultiplyAccumulate/g), 3 * 2 * 2 * 2);
  assert.match(high, /fault\[0\] = 2u/);
  assert.match(high, /\* 3\.0517578125e-5/, 'sums unscaled by 2^-15');
  assert.match(high, /var<workgroup> Al:/);
  assert.match(high, /bias\[col\]/);
  assert.match(high, /resid\[idx\]/);
  assert.doesNotMatch(high, /let inside = [^;]*<[^;]*;/, 'no guards where the tile divides M and N');
  const f16 = splitMatmul(spec(144, 784, 772), t, 1, 32, 1);
  assert.equal(count(f16, /subgroupMatrixMultiplyAccumulate/g), 2 * 2 * 2);
  assert.doesNotMatch(f16, /var<workgroup> Al:/);
  assert.match(f16, /let inside = row0 \+ wr \+ 0u < 144u && col0 \+ wc \+ 0u < 784u;/);
  assert.match(f16, /select\(vec4f\(0\.0\), A4\[/, 'K tail loads zeros');
  assert.match(f16, /min\(row0 \+/, 'rows past M read row M-1');
  // A in halves (splitAKernel's layout [parts][M][Kp]): 16-byte loads of halves, no conversion, no fault words here.
  const pre = splitMatmul(spec(144, 784, 772, { bias: 'n' }), t, 3, 32, 1, true);
  assert.match(pre, /var<storage, read> Ah4: array<vec4<u32>>/);
  assert.doesNotMatch(pre, /A4\[|fault/);
  assert.match(pre, /pa1_0 = Ah4\[\(144u \+ min\(row0 \+ \(lid \+ 0u\) \/ 4u, 143u\)\) \* 104u \+ k0 \/ 8u/, 'the lo part after M rows of hi; rows of Kp = 832 halves (104 vec4)');
  assert.equal(count(pre, /subgroupMatrixMultiplyAccumulate/g), 3 * 2 * 2 * 2);
  assert.equal(splitValid(spec(64, 128, 64), { fm: 1, fn: 1, sm: 2, sn: 4, kSteps: 2 }, 1, 32, 1024, 49152, true), false, '32×32 halves of A over 256 threads: no whole vec4 each');
  assert.equal(splitValid(spec(64, 128, 64), { fm: 1, fn: 1, sm: 2, sn: 4, kSteps: 2 }, 1, 32, 1024, 49152), true);
});

test('subgroup-matrix loads and stores: the layout as a bool argument, or in the template list where the device compiles that', () => {
  const saved = sgmSyntax.layoutTemplate;
  const t: SplitTile = { fm: 2, fn: 2, sm: 2, sn: 4, kSteps: 2 };
  const llm = () => gemmTcKernel({ m: matLayout('q', 4, 32, 384, 128, true), norm: true, eps: 1e-5, gather: false, epi: { kind: 'residual' } } as never, TC_TILE, false);
  try {
    sgmSyntax.layoutTemplate = false;
    assert.equal(sgmLoad('subgroup_matrix_left<f16, 16, 16>', '&A', 'k', false, '64u'), 'subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&A, k, false, 64u)');
    assert.equal(sgmStore('&C', '0u', 'acc', true, '16u'), 'subgroupMatrixStore(&C, 0u, acc, true, 16u)');
    const oldK = splitMatmul(spec(144, 784, 772), t, 1, 32, 1), oldL = llm();
    assert.match(oldK, /subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>\(&Ah, [^;]*, false, \d+u\);/);
    assert.match(oldL, /subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>\(&Bs, [^;]*, true, \d+u\);/);
    sgmSyntax.layoutTemplate = true;
    assert.equal(sgmLoad('subgroup_matrix_right<f16, 16, 16>', '&B', 'k', true, '64u'), 'subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, col_major>(&B, k, 64u)');
    assert.equal(sgmStore('&C', '0u', 'acc', false, '16u'), 'subgroupMatrixStore<row_major>(&C, 0u, acc, 16u)');
    // Both runtime kernels (the ONNX f32-by-halves GEMM and the LLM's prefill GEMM) take the spelling, every call of it.
    for (const [k, old] of [[splitMatmul(spec(144, 784, 772), t, 1, 32, 1), oldK], [llm(), oldL]]) {
      const calls = (c: string) => (c.match(/subgroupMatrix(Load|Store)\b/g) ?? []).length;
      assert.ok(calls(k) > 0 && calls(k) === calls(old));
      assert.equal((k.match(/subgroupMatrixLoad<subgroup_matrix_(left|right)<f16, 16, 16>, (row|col)_major>\(/g) ?? []).length + (k.match(/subgroupMatrixStore<(row|col)_major>\(/g) ?? []).length, calls(k));
    }
    assert.match(llm(), /subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, col_major>\(&Bs, /);
  } finally {
    sgmSyntax.layoutTemplate = saved;
  }
});

test("matmulPrecision 'high' on a device without subgroup matrices runs the f32 kernels", async () => {
  const K = 64, N = 48, M = 32;
  const W = Float32Array.from({ length: K * N }, (_, i) => Math.cos(i) * 0.1);
  const bytes = writeModel({
    nodes: [{ op: 'MatMul', inputs: ['x', 'W'], outputs: ['y'] }], opset: 17,
    inputs: [{ name: 'x', dtype: 'float32', dims: [M, K] }], outputs: [{ name: 'y', dtype: 'float32' }],
    initializers: { W: new Tensor('float32', W, [K, N]) },
  });
  const x = new Tensor('float32', Float32Array.from({ length: M * K }, (_, i) => Math.sin(i * 0.3)), [M, K]);
  const a = await InferenceSession.create(bytes, { backend: 'webgpu', fallback: false, tuning: 'off' });
  const b = await InferenceSession.create(bytes, { backend: 'webgpu', fallback: false, tuning: 'off', matmulPrecision: 'high' });
  assert.equal(b.gpuInfo!.subgroupMatrix, false, 'the software driver has no subgroup matrices');
  const ya = (await a.run({ x })).y.data as Float32Array, yb = (await b.run({ x })).y.data as Float32Array;
  assert.deepEqual(Array.from(yb), Array.from(ya));
  let d = 0;
  for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) {
    let s = 0;
    for (let k = 0; k < K; k++) s += x.data[i * K + k] as number * W[k * N + j];
    d = Math.max(d, Math.abs(s - ya[i * N + j]));
  }
  assert.ok(d < 1e-5, `against float64: ${d}`);
  await a.release(); await b.release();
});
