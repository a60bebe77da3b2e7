// WebGPU Conv / FusedConv / ConvTranspose, pooling and Resize kernels against the reference kernels at realistic
// (PP-OCRv4-like) and ragged shapes; every case must run on the GPU (no fallback).
import { DEFAULTS_ONLY } from '../src/tune/site.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GpuGraphRunner } from '../src/backends/webgpu/executor.js';
import { acquireGpu } from '../src/backends/webgpu/device.js';
import type { GpuOpPlan, GpuPlanContext } from '../src/backends/webgpu/kernel.js';
import { planConv, validTile, type GemmTile } from '../src/backends/webgpu/ops/conv.js';
import { runNode } from '../src/backends/reference/executor.js';
import type { Attribute, Graph, Node } from '../src/graph/ir.js';
import { Tensor } from '../src/tensor.js';
import { randomFloat } from './helpers.js';
import { attrsOf, relErr, runOneNodeGpu, type AttrVal, type In } from './webgpu-one-node.js';

const TOL = 1e-4;
let seed = 101;
const rnd = (dims: number[], lo = -1, hi = 1) => randomFloat(dims, seed++, lo, hi);
const i64 = (v: number[]) => new Tensor('int64', BigInt64Array.from(v.map(BigInt)), [v.length]);
const f32 = (v: number[]) => new Tensor('float32', Float32Array.from(v), [v.length]);

/** Runs one node on the GPU and the reference; asserts it ran on the GPU, the shapes agree and the error is small. */
async function check(label: string, opType: string, ins: (In | undefined)[], attrs: Record<string, AttrVal> = {}, opset = 17): Promise<void> {
  const { got, want, gpuNodes } = await runOneNodeGpu(opType, ins, attrs, 1, opset);
  assert.ok(gpuNodes >= 1, `${label}: ran on the GPU`);
  assert.deepEqual(got[0].dims, want[0].dims, `${label}: shape`);
  assert.equal(got[0].type, want[0].type, `${label}: dtype`);
  const e = relErr(got[0], want[0]);
  assert.ok(e <= TOL, `${label}: relative error ${e}`);
}

// --- Conv ------------------------------------------------------------------------------------------

interface ConvCase { x: number[]; w: number[]; bias?: boolean; attrs?: Record<string, AttrVal>; constW?: boolean }

const convCases: Record<string, ConvCase> = {
  'OCR stem 3x3 s2 3→16 at 48x320': { x: [1, 3, 48, 320], w: [16, 3, 3, 3], bias: true, attrs: { pads: [1, 1, 1, 1], strides: [2, 2] } },
  'OCR 1x1 64→128 at 12x80': { x: [1, 64, 12, 80], w: [128, 64, 1, 1], bias: true },
  'OCR 1x1 480→96 at 3x20 (ragged tiles)': { x: [1, 480, 3, 20], w: [96, 480, 1, 1], bias: true },
  'ragged 1x1 13→11 at 7x9, batch 2': { x: [2, 13, 7, 9], w: [11, 13, 1, 1], bias: true },
  'SE 1x1 240→60 at 1x1': { x: [1, 240, 1, 1], w: [60, 240, 1, 1], bias: true },
  '1x1 64→64 at 96x96 (64-row tiles)': { x: [1, 64, 96, 96], w: [64, 64, 1, 1] },
  'dense 3x3 16→32 at 40x60': { x: [1, 16, 40, 60], w: [32, 16, 3, 3], bias: true, attrs: { pads: [1, 1, 1, 1] } },
  '1x1 stride 2 with pads': { x: [1, 24, 15, 17], w: [40, 24, 1, 1], bias: true, attrs: { strides: [2, 2], pads: [1, 0, 0, 1] } },
  'OCR depthwise 3x3 at 24x160': { x: [1, 32, 24, 160], w: [32, 1, 3, 3], bias: true, attrs: { group: 32, pads: [1, 1, 1, 1] } },
  'OCR depthwise 3x3 stride [2,1]': { x: [1, 64, 24, 80], w: [64, 1, 3, 3], bias: true, attrs: { group: 64, pads: [1, 1, 1, 1], strides: [2, 1] } },
  'OCR depthwise 5x5 at 12x80': { x: [1, 120, 12, 80], w: [120, 1, 5, 5], bias: true, attrs: { group: 120, pads: [2, 2, 2, 2] } },
  'OCR depthwise 5x5 at 3x40': { x: [1, 240, 3, 40], w: [240, 1, 5, 5], bias: true, attrs: { group: 240, pads: [2, 2, 2, 2] } },
  'depthwise 3x3 s2 d2 asymmetric pads, batch 2, no bias': { x: [2, 5, 13, 23], w: [5, 1, 3, 3], attrs: { group: 5, pads: [2, 1, 0, 2], strides: [2, 2], dilations: [2, 2] } },
  'depthwise 4x3 stride 3, weights as input': { x: [1, 3, 17, 29], w: [3, 1, 4, 3], bias: true, constW: false, attrs: { group: 3, pads: [1, 2, 2, 1], strides: [3, 3] } },
  'depthwise channel multiplier 2': { x: [1, 4, 9, 11], w: [8, 1, 3, 3], bias: true, attrs: { group: 4, pads: [1, 1, 1, 1] } },
  'depthwise output narrower than 4': { x: [1, 6, 5, 3], w: [6, 1, 3, 3], attrs: { group: 6, pads: [0, 0, 0, 0] } },
  'dense 3x3 s2 ragged 16→24 at 21x70, batch 2': { x: [2, 16, 21, 70], w: [24, 16, 3, 3], bias: true, attrs: { pads: [1, 1, 1, 1], strides: [2, 2] } },
  'dense 3x3 s2 dilation 2 at 30x75': { x: [1, 5, 30, 75], w: [7, 5, 3, 3], attrs: { pads: [2, 2, 2, 2], strides: [2, 2], dilations: [2, 2] } },
  'grouped 3x3 (group 2), asymmetric pads': { x: [1, 8, 10, 12], w: [6, 4, 3, 3], bias: true, attrs: { group: 2, pads: [0, 1, 2, 1] } },
  'grouped 1x1 (group 4), batch 2': { x: [2, 16, 6, 7], w: [20, 4, 1, 1], bias: true, attrs: { group: 4 } },
  'OCR 1x3 480→60 at 1x40': { x: [1, 480, 1, 40], w: [60, 480, 1, 3], attrs: { pads: [0, 1, 0, 1] } },
  'dense 3x3 SAME_UPPER stride 2, batch 2': { x: [2, 7, 11, 13], w: [9, 7, 3, 3], bias: true, attrs: { auto_pad: 'SAME_UPPER', strides: [2, 2] } },
  'dense 2x4 SAME_LOWER': { x: [1, 6, 9, 10], w: [5, 6, 2, 4], attrs: { auto_pad: 'SAME_LOWER' } },
  'dense 3x3 VALID, weights as input': { x: [1, 9, 12, 14], w: [70, 9, 3, 3], bias: true, constW: false, attrs: { auto_pad: 'VALID' } },
  '1x1 weights as input': { x: [1, 33, 8, 8], w: [17, 33, 1, 1], constW: false },
  'split K: 3x3 64→20 at 5x5, weights as input': { x: [1, 64, 5, 5], w: [20, 64, 3, 3], bias: true, constW: false, attrs: { pads: [1, 1, 1, 1] } },
  'split K: 3x3 96→24 at 20x20 (DB head)': { x: [1, 96, 20, 20], w: [24, 96, 3, 3], attrs: { pads: [1, 1, 1, 1] } },
  '1-D conv k3 s2, batch 2': { x: [2, 5, 37], w: [7, 5, 3], bias: true, attrs: { pads: [1, 2], strides: [2] } },
  '1-D depthwise k5 dilation 2': { x: [1, 6, 40], w: [6, 1, 5], attrs: { group: 6, pads: [4, 4], dilations: [2] } },
};

for (const [label, k] of Object.entries(convCases)) {
  test(`webgpu Conv: ${label}`, async () => {
    const ins: In[] = [{ t: rnd(k.x) }, { t: rnd(k.w, -0.5, 0.5), constant: k.constW !== false }];
    if (k.bias) ins.push({ t: rnd([k.w[0]]), constant: true });
    await check(label, 'Conv', ins, k.attrs);
  });
}

test('webgpu Conv: 1x1 with a bias computed in the graph', async () => {
  await check('bias as input', 'Conv', [{ t: rnd([1, 20, 5, 6]) }, { t: rnd([12, 20, 1, 1]), constant: true }, { t: rnd([12]) }]);
});

/** Runs a plan's dispatches directly on the device (f32 inputs; constants made by the plan's ctx.constant). */
async function runPlan(plan: (ctx: GpuPlanContext) => GpuOpPlan | null, inputs: Tensor[]): Promise<Float32Array> {
  const { device, caps } = await acquireGpu();
  const usage = 0x80 | 0x04 | 0x08;
  const made: GPUBuffer[] = [];
  const upload = (d: ArrayBufferView) => {
    const b = device.createBuffer({ size: Math.max(16, Math.ceil(d.byteLength / 16) * 16), usage });
    device.queue.writeBuffer(b, 0, d.buffer, d.byteOffset, d.byteLength);
    made.push(b);
    return b;
  };
  const consts = new Map<number, GPUBuffer>();
  const p = plan({
    ...DEFAULTS_ONLY, caps, f16: false,
    constant: (_n, _t, make) => { const d = make(); const id = consts.size + 1; consts.set(id, upload(d)); return { id, bytes: d.byteLength }; },
    derivedConstant: () => assert.fail('conv plans derive no constants'),
  });
  assert.ok(p, 'a plan');
  const ins = inputs.map((t) => upload(t.data as Float32Array));
  const outBytes = p.outputs[0].dims.reduce((a, b) => a * b, 1) * 4;
  const out = device.createBuffer({ size: Math.max(16, outBytes), usage });
  const scratch = (p.scratchBytes ?? []).map((b) => device.createBuffer({ size: Math.max(16, b), usage }));
  const read = device.createBuffer({ size: Math.max(16, outBytes), usage: 0x01 | 0x08 });
  made.push(out, read, ...scratch);
  try {
    const enc = device.createCommandEncoder();
    for (const d of p.dispatches) {
      const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module: device.createShaderModule({ code: d.code }), entryPoint: 'main' } });
      const entries = d.bindings.map((b, binding) => ({
        binding,
        resource: { buffer: 'input' in b ? ins[b.input] : 'output' in b ? out : 'scratch' in b ? scratch[b.scratch] : 'constant' in b ? consts.get(b.constant.id)! : assert.fail('conv kernels bind no fault words') },
      }));
      const pass = enc.beginComputePass();
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries }));
      pass.dispatchWorkgroups(...d.groups);
      pass.end();
    }
    enc.copyBufferToBuffer(out, 0, read, 0, Math.max(16, outBytes));
    device.queue.submit([enc.finish()]);
    await read.mapAsync(1);
    const r = new Float32Array(read.getMappedRange().slice(0, outBytes));
    read.unmap();
    return r;
  } finally {
    for (const b of made) b.destroy();
  }
}

/** Tiles the planner does not pick by default (benchmarks pass them): each must still be exact. */
const tiles: GemmTile[] = [
  { BM: 128, BN: 64, BK: 16, RM: 8 }, { BM: 64, BN: 32, BK: 32, RM: 8 }, { BM: 32, BN: 16, BK: 16, RM: 4 }, { BM: 64, BN: 64, BK: 16, RM: 4 },
];

test('webgpu Conv: every valid GEMM tile (ragged, split K, pointwise)', async () => {
  const shapes: ConvCase[] = [
    { x: [1, 10, 13, 21], w: [37, 10, 3, 3], bias: true, attrs: { pads: [1, 0, 1, 2], strides: [1, 2] } },
    { x: [2, 19, 9, 15], w: [70, 19, 1, 1], bias: true },
    { x: [1, 96, 4, 6], w: [24, 96, 3, 3], attrs: { pads: [1, 1, 1, 1] } },
  ];
  // Each (tile, shape) is a kernel to compile, tens of seconds each for an implicit GEMM on a cold software-driver
  // shader cache: every tile runs the ragged strided 3x3 shape, and the pointwise and split-K shapes alternate over
  // the tiles (two tiles each). The tuning-space test also runs a sample of the GEMM space at a real and a ragged shape.
  const tilesOf = (si: number) => (si === 0 ? tiles : tiles.filter((_, ti) => ti % 2 === si - 1));
  for (const [si, k] of shapes.entries()) {
    const x = rnd(k.x), w = rnd(k.w, -0.5, 0.5), b = k.bias ? rnd([k.w[0]]) : undefined;
    const node: Node = { name: 'c', opType: 'Conv', domain: '', inputs: ['x', 'w', ...(b ? ['b'] : [])], outputs: ['y'], attrs: attrsOf(k.attrs ?? {}) };
    const want = runNode(node, [x, w, b], { opsets: new Map([['', 17]]), functions: new Map() }, () => undefined)[0] as Tensor;
    for (const tile of tilesOf(si)) {
      assert.ok(validTile(tile), JSON.stringify(tile));
      const descs = [{ dtype: 'float32' as const, dims: k.x, name: 'x' }, { dtype: 'float32' as const, dims: k.w, name: 'w', constant: w },
        ...(b ? [{ dtype: 'float32' as const, dims: [k.w[0]], name: 'b', constant: b }] : [])];
      const got = await runPlan((ctx) => planConv(node, descs, ctx, undefined, tile), [x, w, ...(b ? [b] : [])]);
      const e = relErr(new Tensor('float32', got, want.dims), want);
      assert.ok(e <= TOL, `[${k.x}] * [${k.w}] tile ${JSON.stringify(tile)}: relative error ${e}`);
    }
  }
});

// --- FusedConv -------------------------------------------------------------------------------------

/** A webjit.FusedConv node whose 'graph' attribute holds Conv → `act` (the reference kernel replays it). */
function fusedConvNode(convAttrs: Record<string, AttrVal>, hasBias: boolean, act: string, actNode: (y: string) => { node: Node; inits: Map<string, Tensor> },
  params: Record<string, number>): Node {
  const inputs = ['in0', 'in1', ...(hasBias ? ['in2'] : [])];
  const conv: Node = { name: 'conv', opType: 'Conv', domain: '', inputs, outputs: ['y'], attrs: attrsOf(convAttrs) };
  const a = actNode('y');
  const sub: Graph = {
    name: 'fused', nodes: [conv, a.node], inputs: inputs.map((name) => ({ name, type: null })), outputs: [{ name: 'out0', type: null }],
    initializers: a.inits, valueInfo: new Map(),
  };
  const attrs = attrsOf({ ...convAttrs, activation: act });
  for (const [k, v] of Object.entries(params)) attrs.set(k, { name: k, type: 'float', value: v });
  attrs.set('graph', { name: 'graph', type: 'graph', value: sub } as Attribute);
  return { name: 'fused', opType: 'FusedConv', domain: 'webjit', inputs, outputs: ['out0'], attrs };
}

/** Like runOneNodeGpu, for a node that carries a graph attribute. */
async function runNodeGpu(node: Node, ins: In[]): Promise<{ got: Tensor; want: Tensor; gpuNodes: number }> {
  const graph: Graph = { name: 'g', nodes: [node], valueInfo: new Map(), initializers: new Map(), inputs: [], outputs: [{ name: node.outputs[0], type: null }] };
  const feeds = new Map<string, Tensor>();
  ins.forEach((x, k) => {
    if (x.constant) graph.initializers.set(`in${k}`, x.t);
    else { graph.inputs.push({ name: `in${k}`, type: null }); feeds.set(`in${k}`, x.t); }
  });
  const env = { opsets: new Map([['', 17]]), functions: new Map() };
  const runner = new GpuGraphRunner(graph, env, await acquireGpu(), { fallback: false });
  try {
    const got = (await runner.run(feeds))[0] as Tensor;
    const want = runNode(node, ins.map((x) => x.t), env, () => undefined)[0] as Tensor;
    return { got, want, gpuNodes: runner.stats.gpuNodes };
  } finally {
    runner.dispose();
  }
}

const one = (op: string, ins: string[], attrs: Record<string, AttrVal> = {}, inits = new Map<string, Tensor>()) =>
  (y: string) => ({ node: { name: op, opType: op, domain: '', inputs: [y, ...ins], outputs: ['out0'], attrs: attrsOf(attrs) } as Node, inits });
const scalar = (v: number) => new Tensor('float32', Float32Array.of(v), []);

const activations: { act: string; make: ReturnType<typeof one>; params: Record<string, number> }[] = [
  { act: 'relu', make: one('Relu', []), params: {} },
  { act: 'clip', make: one('Clip', ['lo', 'hi'], {}, new Map([['lo', scalar(0)], ['hi', scalar(6)]])), params: { act_min: 0, act_max: 6 } },
  { act: 'clip', make: one('Clip', ['', 'hi'], {}, new Map([['hi', scalar(0.5)]])), params: { act_min: -Infinity, act_max: 0.5 } },
  { act: 'sigmoid', make: one('Sigmoid', []), params: {} },
  { act: 'hardsigmoid', make: one('HardSigmoid', [], { alpha: 0.2, beta: 0.5 }), params: { act_alpha: 0.2, act_beta: 0.5 } },
  { act: 'hardswish', make: one('HardSwish', []), params: {} },
];

const fusedShapes: { label: string; x: number[]; w: number[]; attrs: Record<string, AttrVal> }[] = [
  { label: 'dense 3x3 s2', x: [1, 8, 17, 30], w: [20, 8, 3, 3], attrs: { pads: [1, 1, 1, 1], strides: [2, 2] } },
  { label: 'depthwise 5x5', x: [1, 12, 9, 21], w: [12, 1, 5, 5], attrs: { group: 12, pads: [2, 2, 2, 2] } },
  { label: 'pointwise', x: [1, 24, 6, 19], w: [36, 24, 1, 1], attrs: {} },
  { label: 'split K', x: [1, 64, 3, 5], w: [16, 64, 3, 3], attrs: { pads: [1, 1, 1, 1] } },
];

// The activation is applied where each kernel stores: the implicit GEMM's store (dense and pointwise alike), the
// depthwise kernel's, and the split-K reduction's. Every activation runs all three; the dense and the pointwise GEMM
// shape alternate over the activations (each shape is one more kernel to compile, seconds each on a cold shader cache).
activations.forEach((a, ai) => {
  test(`webgpu FusedConv ${a.act} ${JSON.stringify(a.params)}`, async () => {
    for (const s of fusedShapes.filter((f) => f.label !== (ai % 2 ? 'dense 3x3 s2' : 'pointwise'))) {
      const node = fusedConvNode(s.attrs, true, a.act, a.make, a.params);
      const { got, want, gpuNodes } = await runNodeGpu(node, [{ t: rnd(s.x, -3, 3) }, { t: rnd(s.w, -0.5, 0.5), constant: true }, { t: rnd([s.w[0]]), constant: true }]);
      assert.ok(gpuNodes >= 1, `${s.label}: ran on the GPU`);
      assert.deepEqual(got.dims, want.dims, `${s.label}: shape`);
      const e = relErr(got, want);
      assert.ok(e <= TOL, `${a.act} ${s.label}: relative error ${e}`);
    }
  });
});

// --- ConvTranspose -----------------------------------------------------------------------------------

const transposeCases: Record<string, ConvCase> = {
  'DB head 2x2 stride 2, 64→64 at 40x40': { x: [1, 64, 40, 40], w: [64, 64, 2, 2], bias: true, attrs: { strides: [2, 2] } },
  '2x2 stride 2, 24→6 ragged, batch 2': { x: [2, 24, 7, 9], w: [24, 6, 2, 2], bias: true, attrs: { strides: [2, 2] } },
  '3x3 stride 2 pads, output_padding': { x: [1, 5, 6, 7], w: [5, 7, 3, 3], bias: true, attrs: { strides: [2, 2], pads: [1, 1, 1, 1], output_padding: [1, 0] } },
  '4x3 stride [2,3] dilation 2, groups 2': { x: [1, 6, 5, 4], w: [6, 3, 4, 3], attrs: { strides: [2, 3], dilations: [2, 2], group: 2, pads: [0, 1, 2, 0] } },
  'output_shape SAME_UPPER': { x: [1, 3, 5, 6], w: [3, 4, 3, 3], bias: true, attrs: { strides: [2, 2], output_shape: [10, 12], auto_pad: 'SAME_UPPER' } },
  'weights as input': { x: [1, 8, 6, 6], w: [8, 5, 2, 2], constW: false, attrs: { strides: [2, 2] } },
  '1-D k4 stride 2': { x: [2, 4, 11], w: [4, 3, 4], bias: true, attrs: { strides: [2], pads: [1, 1] } },
};

for (const [label, k] of Object.entries(transposeCases)) {
  test(`webgpu ConvTranspose: ${label}`, async () => {
    const ins: In[] = [{ t: rnd(k.x) }, { t: rnd(k.w, -0.5, 0.5), constant: k.constW !== false }];
    if (k.bias) ins.push({ t: rnd([k.w[1] * ((k.attrs?.group as number | undefined) ?? 1)]), constant: true });
    await check(label, 'ConvTranspose', ins, k.attrs);
  });
}

// --- pooling -----------------------------------------------------------------------------------------

const poolCases: { op: string; x: number[]; attrs: Record<string, AttrVal> }[] = [
  { op: 'MaxPool', x: [1, 16, 24, 80], attrs: { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] } },
  { op: 'MaxPool', x: [2, 3, 11, 13], attrs: { kernel_shape: [3, 2], strides: [2, 2], ceil_mode: 1 } },
  { op: 'MaxPool', x: [1, 4, 10, 9], attrs: { kernel_shape: [2, 3], dilations: [2, 2], pads: [1, 0, 2, 1] } },
  { op: 'MaxPool', x: [1, 3, 7, 8], attrs: { kernel_shape: [3, 3], auto_pad: 'SAME_UPPER', strides: [2, 2] } },
  { op: 'MaxPool', x: [2, 5, 30], attrs: { kernel_shape: [4], strides: [3], pads: [1, 2] } },
  { op: 'MaxPool', x: [1, 2, 4, 4], attrs: { kernel_shape: [2, 2], pads: [2, 2, 2, 2] } },
  { op: 'AveragePool', x: [1, 32, 6, 40], attrs: { kernel_shape: [2, 2], strides: [2, 2] } },
  { op: 'AveragePool', x: [1, 4, 9, 11], attrs: { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] } },
  { op: 'AveragePool', x: [1, 4, 9, 11], attrs: { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], count_include_pad: 1 } },
  { op: 'AveragePool', x: [2, 3, 10, 7], attrs: { kernel_shape: [3, 2], strides: [2, 2], pads: [0, 1, 1, 0], ceil_mode: 1, count_include_pad: 1 } },
  { op: 'AveragePool', x: [1, 3, 12, 9], attrs: { kernel_shape: [2, 2], dilations: [2, 1], ceil_mode: 1, strides: [3, 2] } },
  { op: 'AveragePool', x: [1, 2, 8, 9], attrs: { kernel_shape: [3, 3], auto_pad: 'SAME_LOWER', strides: [2, 2], count_include_pad: 1 } },
  { op: 'AveragePool', x: [1, 5, 21], attrs: { kernel_shape: [3], strides: [2], pads: [1, 1] } },
  { op: 'GlobalAveragePool', x: [1, 480, 3, 40], attrs: {} },
  { op: 'GlobalAveragePool', x: [2, 7, 5, 3], attrs: {} },
  { op: 'GlobalAveragePool', x: [1, 3, 200, 333], attrs: {} },
  { op: 'GlobalMaxPool', x: [1, 64, 24, 80], attrs: {} },
  { op: 'GlobalMaxPool', x: [2, 5, 7], attrs: {} },
  { op: 'GlobalMaxPool', x: [1, 2, 90, 100], attrs: {} },
];

poolCases.forEach((k, n) => {
  test(`webgpu ${k.op} #${n}: [${k.x.join(',')}] ${JSON.stringify(k.attrs)}`, async () => {
    await check(`${k.op} #${n}`, k.op, [{ t: rnd(k.x, -2, 2) }], k.attrs);
  });
});

test('webgpu MaxPool with an Indices output falls back (returns no plan)', async () => {
  await assert.rejects(runOneNodeGpu('MaxPool', [{ t: rnd([1, 2, 6, 6]) }], { kernel_shape: [2, 2] }, 2), /no kernel/);
});

// --- Resize ------------------------------------------------------------------------------------------

interface ResizeCase { x: number[]; scales?: number[]; sizes?: number[]; roi?: number[]; attrs: Record<string, AttrVal>; opset?: number; dtype?: 'int32' }

const resizeCases: Record<string, ResizeCase> = {
  'nearest x2 (DB neck), asymmetric floor': { x: [1, 24, 20, 20], scales: [1, 1, 2, 2], attrs: { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' } },
  'nearest sizes, half_pixel round_prefer_floor': { x: [1, 3, 7, 9], sizes: [1, 3, 12, 5], attrs: { mode: 'nearest' } },
  'nearest round_prefer_ceil, align_corners': { x: [2, 2, 5, 6], sizes: [2, 2, 9, 11], attrs: { mode: 'nearest', coordinate_transformation_mode: 'align_corners', nearest_mode: 'round_prefer_ceil' } },
  'nearest ceil, pytorch_half_pixel downsample': { x: [1, 2, 9, 13], scales: [1, 1, 0.5, 0.6], attrs: { mode: 'nearest', coordinate_transformation_mode: 'pytorch_half_pixel', nearest_mode: 'ceil' } },
  'nearest simple, tf_half_pixel_for_nn': { x: [1, 2, 6, 7], scales: [1, 1, 1.5, 0.5], attrs: { mode: 'nearest', coordinate_transformation_mode: 'tf_half_pixel_for_nn', nearest_mode: 'simple' } },
  'nearest int32 x3': { x: [1, 4, 64, 70], scales: [1, 1, 3, 3], attrs: { mode: 'nearest' }, dtype: 'int32' },
  'nearest tf_crop_and_resize with extrapolation': { x: [1, 1, 6, 8], sizes: [1, 1, 5, 7], roi: [0, 0, -0.2, 0.1, 1, 1, 0.9, 1.3], attrs: { mode: 'nearest', coordinate_transformation_mode: 'tf_crop_and_resize', extrapolation_value: -3.5 } },
  'linear x2 half_pixel (DB upsample)': { x: [1, 16, 20, 24], scales: [1, 1, 2, 2], attrs: { mode: 'linear' } },
  'linear sizes align_corners': { x: [2, 3, 7, 9], sizes: [2, 3, 13, 4], attrs: { mode: 'linear', coordinate_transformation_mode: 'align_corners' } },
  'linear asymmetric x4 width only': { x: [1, 4, 5, 6], scales: [1, 1, 1, 4], attrs: { mode: 'linear', coordinate_transformation_mode: 'asymmetric' } },
  'linear pytorch_half_pixel downsample': { x: [1, 3, 17, 15], scales: [1, 1, 0.5, 0.4], attrs: { mode: 'linear', coordinate_transformation_mode: 'pytorch_half_pixel' } },
  'linear half_pixel_symmetric, exclude_outside': { x: [1, 2, 6, 5], scales: [1, 1, 1.7, 2.3], attrs: { mode: 'linear', coordinate_transformation_mode: 'half_pixel_symmetric', exclude_outside: 1 }, opset: 19 },
  'linear tf_crop_and_resize': { x: [1, 2, 8, 8], sizes: [1, 2, 6, 5], roi: [0, 0, 0.1, -0.1, 1, 1, 0.8, 1.2], attrs: { mode: 'linear', coordinate_transformation_mode: 'tf_crop_and_resize', extrapolation_value: 2.5 } },
  'linear 3-D [N,C,L]': { x: [2, 3, 10], scales: [1, 1, 2.5], attrs: { mode: 'linear' } },
  'opset 10 nearest': { x: [1, 2, 5, 5], scales: [1, 1, 2, 3], attrs: { mode: 'nearest' }, opset: 10 },
  'opset 18 axes, sizes not_larger': { x: [1, 2, 6, 10], sizes: [9, 12], attrs: { mode: 'linear', axes: [2, 3], keep_aspect_ratio_policy: 'not_larger' }, opset: 18 },
};

for (const [label, k] of Object.entries(resizeCases)) {
  test(`webgpu Resize: ${label}`, async () => {
    const opset = k.opset ?? 17;
    const x = k.dtype === 'int32' ? new Tensor('int32', Int32Array.from(rnd(k.x, -100, 100).data as Float32Array, Math.round), k.x) : rnd(k.x);
    const ins: (In | undefined)[] = opset < 11
      ? [{ t: x }, { t: f32(k.scales!), constant: true }]
      : [{ t: x }, k.roi ? { t: f32(k.roi), constant: true } : undefined, k.scales ? { t: f32(k.scales), constant: true } : undefined,
        k.sizes ? { t: i64(k.sizes), constant: true } : undefined];
    if (k.dtype === 'int32') {
      // Integer tensors of at most 16384 elements stay on the CPU (shape arithmetic): this one is larger.
      const { got, want, gpuNodes } = await runOneNodeGpu('Resize', ins, k.attrs, 1, opset);
      assert.ok(gpuNodes >= 1, `${label}: ran on the GPU`);
      assert.deepEqual(Array.from(got[0].data as Int32Array), Array.from(want[0].data as Int32Array), label);
      return;
    }
    await check(label, 'Resize', ins, k.attrs, opset);
  });
}

test('webgpu Upsample (opset 9) nearest and linear', async () => {
  await check('Upsample nearest', 'Upsample', [{ t: rnd([1, 3, 5, 7]) }, { t: f32([1, 1, 2, 2]), constant: true }], { mode: 'nearest' }, 9);
  await check('Upsample linear', 'Upsample', [{ t: rnd([1, 3, 5, 7]) }, { t: f32([1, 1, 2, 1.5]), constant: true }], { mode: 'linear' }, 9);
});
