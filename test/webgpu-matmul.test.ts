// WebGPU MatMul, Gemm and FusedMatMul against the reference kernels: every default tile and the skinny kernel, ragged
// and aligned shapes, batch broadcasting, 1-D operands, Gemm's transB/alpha/beta/C forms, and fused epilogues.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InferenceSession } from '../src/session.js';
import { writeModel, type WNode } from '../src/bench/onnx_writer.js';
import { sizeOf, Tensor } from '../src/tensor.js';
import { relErr, runOneNodeGpu } from './webgpu-one-node.js';

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
  const shapes: [number, number, number][] = [[128, 128, 64], [200, 136, 72], [67, 45, 33], [130, 260, 257], [33, 7, 5]];
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
