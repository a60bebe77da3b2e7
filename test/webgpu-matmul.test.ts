// WebGPU MatMul, Gemm and FusedMatMul against the reference kernels: every default tile and the skinny kernel, ragged
// and aligned shapes, batch broadcasting, 1-D operands, Gemm's transB/alpha/beta/C forms, and fused epilogues.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InferenceSession } from '../src/session.js';
import { writeModel, type WNode } from '../src/bench/onnx_writer.js';
import { sizeOf, Tensor } from '../src/tensor.js';
import { relErr, runOneNodeGpu } from './webgpu-one-node.js';
import { acquireGpu } from '../src/backends/webgpu/device.js';
import { matmulPlanned } from '../src/backends/webgpu/ops/matmul.js';
import { type MatmulEpilogue, type MatmulSpec, type MatmulTile, tiledMatmul, tileName, tileValid } from '../src/codegen/wgsl/matmul.js';

function rand(dims: number[], lo = -1, hi = 1): Tensor {
  return new Tensor('float32', Float32Array.from({ length: sizeOf(dims) }, () => lo + (hi - lo) * Math.random()), dims);
}

async function check(what: string, op: string, ins: { t: Tensor; constant?: boolean }[], attrs = {}, tol = 1e-4): Promise<void> {
  const { got, want, gpuNodes } = await runOneNodeGpu(op, ins, attrs);
  assert.equal(gpuNodes, 1, `${what}: ran on the GPU`);
  assert.deepEqual(got[0].dims, want[0].dims, `${what}: dims`);
  const e = relErr(got[0], want[0]);
  assert.ok(e <= tol, `${what}: relative error ${e}`);
}

const TILES = ['64,64,8,8,4', '16,64,16,4,4', '32,32,16,4,4', '128,128,8,8,8', '128,256,16,16,8'];

test('MatMul: every tile on aligned and ragged shapes, K not a multiple of 4 included', async () => {
  // Sizes are baked into the WGSL, so each shape is one more kernel per tile to compile (seconds each on a cold
  // software-driver shader cache). Four shapes cover the load and guard paths: aligned (vec4 A and B, no guards where
  // the tile divides it); ragged M, N, K with K % 4 = 0 and N % 4 != 0 (vec4 A, scalar B, several k-tiles); ragged
  // with K % 4 != 0 and N % 4 = 0 (scalar A, vec4 B, K = 257); and a tiny one (K = 5 below every BK, N = 7).
  const shapes: [number, number, number][] = [[128, 128, 64], [200, 45, 36], [67, 260, 257], [33, 7, 5]];
  for (const tile of TILES) {
    process.env.WEBJIT_MATMUL_TILE = tile;
    try {
      for (const [M, N, K] of shapes) await check(`tile ${tile} ${M}x${N}x${K}`, 'MatMul', [{ t: rand([M, K]) }, { t: rand([K, N]) }]);
    } finally {
      delete process.env.WEBJIT_MATMUL_TILE;
    }
  }
});

test('MatMul: default tiles, batch broadcasting, 1-D operands, skinny rows', async () => {
  const cases: [number[], number[]][] = [
    [[2, 3, 40, 24], [24, 56]], [[2, 3, 40, 24], [3, 24, 56]], [[2, 4, 6, 8], [2, 4, 8, 5]], [[2, 2, 3, 15], [2, 2, 15, 3]], [[1, 3, 40, 24], [2, 1, 24, 56]], [[4, 17, 9], [4, 9, 13]],
    [[24], [24, 56]], [[3, 40, 24], [24]], [[24], [24]],
    [[1, 768], [768, 768]], [[3, 512], [512, 1000]], [[16, 64], [64, 40]], [[1, 1, 128], [128, 12]], [[5, 100], [100, 36]],
  ];
  for (const [ad, bd] of cases) {
    for (const constant of [false, true]) await check(`[${ad}]·[${bd}] const B ${constant}`, 'MatMul', [{ t: rand(ad) }, { t: rand(bd), constant }]);
  }
});

test('Gemm: transB, alpha, beta, C as bias row, column, scalar and full matrix', async () => {
  const M = 37, K = 50, N = 44;
  const A = rand([M, K]), Bt = rand([N, K]), B = rand([K, N]);
  await check('transB const', 'Gemm', [{ t: A }, { t: Bt, constant: true }, { t: rand([N]) }], { transB: 1 });
  await check('alpha beta row', 'Gemm', [{ t: A }, { t: B }, { t: rand([1, N]) }], { alpha: 0.5, beta: 2.25 });
  await check('column', 'Gemm', [{ t: A }, { t: B }, { t: rand([M, 1]) }], {});
  await check('scalar', 'Gemm', [{ t: A }, { t: B }, { t: rand([1]) }], { beta: 0.25 });
  await check('full C', 'Gemm', [{ t: A }, { t: B }, { t: rand([M, N]) }], { beta: 1.5 });
  await check('no C', 'Gemm', [{ t: A }, { t: B }], {});
  await check('skinny transB', 'Gemm', [{ t: rand([1, 64]) }, { t: rand([1000, 64]), constant: true }, { t: rand([1000]) }], { transB: 1 });
});

test('FusedMatMul: bias, each activation and a residual, through the fusion pass, no fallback', async () => {
  const K = 48, N = 40;
  const acts: { name: string; nodes: (x: string, y: string) => WNode[] }[] = [
    { name: 'none', nodes: (x, y) => [{ op: 'Identity', inputs: [x], outputs: [y] }] },
    { name: 'relu', nodes: (x, y) => [{ op: 'Relu', inputs: [x], outputs: [y] }] },
    { name: 'sigmoid', nodes: (x, y) => [{ op: 'Sigmoid', inputs: [x], outputs: [y] }] },
    { name: 'tanh', nodes: (x, y) => [{ op: 'Tanh', inputs: [x], outputs: [y] }] },
    { name: 'gelu', nodes: (x, y) => [{ op: 'Gelu', inputs: [x], outputs: [y] }] },
    { name: 'silu', nodes: (x, y) => [{ op: 'Sigmoid', inputs: [x], outputs: ['sg'] }, { op: 'Mul', inputs: [x, 'sg'], outputs: [y] }] },
  ];
  for (const rows of [1, 5, 77]) {
    for (const act of acts) {
      const nodes: WNode[] = [
        { op: 'MatMul', inputs: ['x', 'W'], outputs: ['mm'] },
        { op: 'Add', inputs: ['mm', 'bias'], outputs: ['pre'] },
        ...act.nodes('pre', 'act'),
        { op: 'Add', inputs: ['act', 'r'], outputs: ['y'] },
      ];
      const bytes = writeModel({
        nodes, opset: 20,
        inputs: [{ name: 'x', dtype: 'float32', dims: [1, rows, K] }, { name: 'r', dtype: 'float32', dims: [1, rows, N] }],
        outputs: [{ name: 'y', dtype: 'float32' }],
        initializers: { W: rand([K, N]), bias: rand([N]) },
      });
      const feeds = { x: rand([1, rows, K], -2, 2), r: rand([1, rows, N]) };
      const ref = await InferenceSession.create(bytes, { backend: 'reference' });
      const gpu = await InferenceSession.create(bytes, { backend: 'webgpu', fallback: false });
      try {
        const want = (await ref.run(feeds)).y, got = (await gpu.run(feeds)).y;
        assert.ok(gpu.model.graph.nodes.some((n) => n.opType === 'FusedMatMul'), `${act.name}: fused`);
        assert.deepEqual(got.dims, want.dims);
        const e = relErr(got, want);
        assert.ok(e <= 1e-4, `${act.name} rows ${rows}: relative error ${e}`);
      } finally {
        await gpu.release();
      }
    }
  }
});

test("precision 'f16': constant weights read as f16 (tiled and skinny GEMM, Gemm transB), f32 sums, error of f16 rounding", async () => {
  const cases: { what: string; op: string; ins: { t: Tensor; constant?: boolean }[]; attrs?: Record<string, number> }[] = [
    { what: 'tiled 77x96x200', op: 'MatMul', ins: [{ t: rand([77, 200]) }, { t: rand([200, 96]), constant: true }] },
    { what: 'tiled ragged 33x45x37', op: 'MatMul', ins: [{ t: rand([33, 37]) }, { t: rand([37, 45]), constant: true }] },
    { what: 'skinny 1x256x128', op: 'MatMul', ins: [{ t: rand([1, 128]) }, { t: rand([128, 256]), constant: true }] },
    { what: 'Gemm transB', op: 'Gemm', ins: [{ t: rand([9, 64]) }, { t: rand([40, 64]), constant: true }, { t: rand([40]) }], attrs: { transB: 1 } },
  ];
  for (const c of cases) {
    const f16 = await runOneNodeGpu(c.op, c.ins, c.attrs ?? {}, 1, 17, '', { f16: true });
    const f32 = await runOneNodeGpu(c.op, c.ins, c.attrs ?? {}, 1, 17, '', { f16: false });
    const e16 = relErr(f16.got[0], f16.want[0]);
    // f16 weights round each to 11 bits: a relative error of ~1e-3 of max|ref|, never more than a few e-3.
    assert.ok(e16 <= 4e-3, `${c.what}: f16 relative error ${e16}`);
    // ... and the f16 path really ran: it differs from the f32 kernel's result.
    assert.ok(relErr(f16.got[0], f32.got[0]) > 1e-6, `${c.what}: f16 weights were used`);
  }
});

/**
 * Runs tiledMatmul(spec, tile) straight on the device (bindings A, B, [bias], [residual], C; C poisoned with NaN first)
 * and returns C; the kernel variants are not reachable through the op's default tile choice.
 */
async function runTiled(spec: MatmulSpec, tile: MatmulTile, A: Float32Array<ArrayBuffer>, B: Float32Array<ArrayBuffer>, bias: Float32Array<ArrayBuffer> | null, resid: Float32Array<ArrayBuffer> | null): Promise<Float32Array> {
  const { device } = await acquireGpu();
  const batch = spec.batchDims.reduce((a, b) => a * b, 1);
  const mk = (d: Float32Array<ArrayBuffer>) => {
    const b = device.createBuffer({ size: Math.max(16, d.byteLength), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
    device.queue.writeBuffer(b, 0, d);
    return b;
  };
  const cBytes = batch * spec.M * spec.N * 4;
  const bufs = [mk(A), mk(B), ...(bias ? [mk(bias)] : []), ...(resid ? [mk(resid)] : []), mk(new Float32Array(cBytes / 4).fill(NaN))];
  const module = device.createShaderModule({ code: tiledMatmul(spec, tile) });
  const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: bufs.map((buffer, binding) => ({ binding, resource: { buffer } })) });
  const read = device.createBuffer({ size: cBytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, group);
  pass.dispatchWorkgroups(Math.ceil(spec.N / tile.BN), Math.ceil(spec.M / tile.BM), batch);
  pass.end();
  enc.copyBufferToBuffer(bufs[bufs.length - 1], 0, read, 0, cBytes);
  device.queue.submit([enc.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const out = new Float32Array(read.getMappedRange().slice(0));
  read.destroy();
  for (const b of bufs) b.destroy();
  return out;
}

/** C = act(alpha·A·B + biasScale·bias) + residualScale·resid on the CPU, batch offsets from the spec's strides. */
function refTiled(spec: MatmulSpec, A: Float32Array, B: Float32Array, bias: Float32Array | null, resid: Float32Array | null): Float32Array {
  const { M, N, K, batchDims, aBatchStrides, bBatchStrides } = spec;
  const e: MatmulEpilogue = spec.epilogue;
  const batch = batchDims.reduce((a, b) => a * b, 1);
  const C = new Float32Array(batch * M * N);
  for (let z = 0; z < batch; z++) {
    let rem = z, offA = 0, offB = 0;
    for (let d = batchDims.length - 1; d >= 0; d--) { const c = rem % batchDims[d]; rem = Math.floor(rem / batchDims[d]); offA += c * aBatchStrides[d]; offB += c * bBatchStrides[d]; }
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let v = 0;
        for (let k = 0; k < K; k++) v += A[offA + i * K + k] * B[offB + k * N + j];
        v *= e.alpha ?? 1;
        if (bias) v += (e.bias === 'n' ? bias[j] : e.bias === 'm' ? bias[i] : bias[0]) * (e.biasScale ?? 1);
        if (e.act === 'relu') v = Math.max(v, 0);
        else if (e.act === 'sigmoid') v = 1 / (1 + Math.exp(-v));
        const idx = z * M * N + i * N + j;
        if (resid) v += resid[idx] * (e.residualScale ?? 1);
        C[idx] = v;
      }
    }
  }
  return C;
}

test('tiledMatmul variants (db, splitA, warp, unroll): ragged, batched with broadcast, epilogue, against the CPU', async () => {
  const { caps } = await acquireGpu();
  // Small tiles: lavapipe compiles large unrolled kernels slowly. 32×64 / 8×8 has two row quads and two column quads
  // per thread (what splitA and warp rearrange), 32 invocations (one 8×4 warp block).
  const bases: MatmulTile[] = [{ BM: 64, BN: 64, BK: 8, TM: 8, TN: 4 }, { BM: 32, BN: 64, BK: 8, TM: 8, TN: 8 }];
  // Three sets cover every flag (a cold software-driver shader cache compiles each kernel in seconds).
  const flagSets: Partial<MatmulTile>[] = [{ db: true, splitA: true, warp: true, unroll: true }, { aRows: true, db: true }, { aRows: true, splitA: true, unroll: true }];
  const rnd = (n: number) => Float32Array.from({ length: n }, () => Math.random() * 2 - 1);
  // Two shapes per variant (each is one kernel to compile): between them every load path (vec4 and scalar A and B),
  // ragged M, N and K over several tiles, batching with a broadcast operand, and both epilogue forms.
  const cases: { what: string; spec: MatmulSpec }[] = [
    // Scalar A and B loads (K, N not multiples of 4), every edge ragged, several tiles in each direction; a row bias.
    // (relu in both: what the flags rearrange is which row and column each value is, which the bias and residual
    // indices check; an exp per element unrolled over 8×8 values costs lavapipe far more to compile, and sigmoid in
    // the tiled store is checked by the FusedMatMul test.)
    { what: 'ragged 130x141x33, row bias, relu, residual', spec: { M: 130, N: 141, K: 33, batchDims: [], aBatchStrides: [], bBatchStrides: [], epilogue: { bias: 'm', act: 'relu', residual: true } } },
    // A batched over [2, 3], B broadcast over the first dim (strides in elements, 0 = broadcast); vec4 loads with
    // ragged M, N and K (36 is not a multiple of BK = 8); alpha, a scaled column bias, relu and a scaled residual.
    { what: 'batched [2,3] 37x56x36, epilogue', spec: { M: 37, N: 56, K: 36, batchDims: [2, 3], aBatchStrides: [3 * 37 * 36, 37 * 36], bBatchStrides: [0, 36 * 56], epilogue: { alpha: 0.5, bias: 'n', biasScale: 2, act: 'relu', residual: true, residualScale: 1.5 } } },
  ];
  let ran = 0;
  for (const base of bases) {
    for (const flags of flagSets) {
      const tile = { ...base, ...flags };
      if (!tileValid(tile, caps.maxInvocations, caps.maxWorkgroupStorage)) continue;
      for (const { what, spec } of cases) {
        const batch = spec.batchDims.reduce((a, b) => a * b, 1);
        const aLen = spec.aBatchStrides.reduce((t, x, d) => t + x * (spec.batchDims[d] - 1), 0) + spec.M * spec.K;
        const bLen = spec.bBatchStrides.reduce((t, x, d) => t + x * (spec.batchDims[d] - 1), 0) + spec.K * spec.N;
        const A = rnd(aLen), B = rnd(bLen);
        const e = spec.epilogue;
        const bias = e.bias ? rnd(e.bias === 'n' ? spec.N : e.bias === 'm' ? spec.M : 1) : null;
        const resid = e.residual ? rnd(batch * spec.M * spec.N) : null;
        const got = await runTiled(spec, tile, A, B, bias, resid);
        const want = refTiled(spec, A, B, bias, resid);
        let md = 0, mx = 0;
        for (let i = 0; i < want.length; i++) { md = Math.max(md, Math.abs(got[i] - want[i])); mx = Math.max(mx, Math.abs(want[i])); }
        assert.ok(md / Math.max(1, mx) <= 1e-4, `${tileName(tile)} ${what}: relative error ${md / Math.max(1, mx)} (NaN = element not written)`);
        ran++;
      }
    }
  }
  assert.ok(ran >= 12, `ran ${ran} kernel checks`); // 2 tiles × 3 flag sets × 2 shapes
});

test('MatMul: a large product takes the row-major-A 128×128×16 default tile and matches the reference', { timeout: 300_000 }, async () => {
  // 2048 × 4096 outputs = 512 workgroups of 128×128 (the threshold); ragged K; and one row short of the tile grid.
  await check('MatMul [2048,20]x[20,4096]', 'MatMul', [{ t: rand([2048, 20]) }, { t: rand([20, 4096]) }]);
  await check('MatMul [2047,36]x[36,4100]', 'MatMul', [{ t: rand([2047, 36]) }, { t: rand([36, 4100]) }]);
});

test('split-K: partial sums in parts of K, then one pass adds them and applies bias, GELU and the residual', async () => {
  // WEBJIT_MATMUL_SPLITK splits the default tile's K (each part ≥ 512 deep, whole K tiles per part).
  const cases: [number, number, number, string][] = [[77, 40, 1024, '2'], [130, 68, 2048, '4'], [64, 128, 3072, 'auto']];
  for (const [rows, N, K, S] of cases) {
    const bytes = writeModel({
      nodes: [
        { op: 'MatMul', inputs: ['x', 'W'], outputs: ['mm'] },
        { op: 'Add', inputs: ['mm', 'bias'], outputs: ['pre'] },
        { op: 'Gelu', inputs: ['pre'], outputs: ['act'] },
        { op: 'Add', inputs: ['act', 'r'], outputs: ['y'] },
      ],
      opset: 20,
      inputs: [{ name: 'x', dtype: 'float32', dims: [1, rows, K] }, { name: 'r', dtype: 'float32', dims: [1, rows, N] }],
      outputs: [{ name: 'y', dtype: 'float32' }],
      initializers: { W: rand([K, N], -0.1, 0.1), bias: rand([N]) },
    });
    const feeds = { x: rand([1, rows, K], -1, 1), r: rand([1, rows, N]) };
    const ref = await InferenceSession.create(bytes, { backend: 'reference' });
    process.env.WEBJIT_MATMUL_SPLITK = S;
    const split0 = matmulPlanned.splitK;
    const gpu = await InferenceSession.create(bytes, { backend: 'webgpu', fallback: false, tuning: 'off' });
    try {
      const want = (await ref.run(feeds)).y, got = (await gpu.run(feeds)).y;
      assert.ok(matmulPlanned.splitK > split0, `split ${S}: the split-K plan was made`);
      const e = relErr(got, want);
      assert.ok(e <= 1e-4, `rows ${rows} N ${N} K ${K} split ${S}: relative error ${e}`);
    } finally {
      delete process.env.WEBJIT_MATMUL_SPLITK;
      await gpu.release();
    }
  }
});
