// Wasm Conv and pooling kernels against the reference kernels at realistic and ragged shapes.
import { DEFAULTS_ONLY } from '../src/tune/site.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WasmRuntime } from '../src/backends/wasm/runtime.js';
import { runNode } from '../src/backends/reference/executor.js';
import { planConv } from '../src/backends/wasm/ops/conv.js';
import type { ConvActivation } from '../src/backends/wasm/kernels/conv.js';
import type { Node } from '../src/graph/ir.js';
import type { Launch } from '../src/backends/wasm/kernel.js';
import { Tensor } from '../src/tensor.js';
import { randomFloat, relErr } from './helpers.js';
import { attrsOf, runOneNode, type AttrVal, type In } from './wasm-one-node.js';

/** Runs one node on the Wasm backend (no fallback) and on the reference kernels; returns the max relative error. */
async function oneNode(rt: WasmRuntime, opType: string, ins: (In | undefined)[], attrs: Record<string, AttrVal> = {}, nOut = 1, opset = 17): Promise<number> {
  const { got, want } = await runOneNode(rt, opType, ins, attrs, nOut, opset);
  let worst = 0;
  for (let k = 0; k < nOut; k++) worst = Math.max(worst, relErr(got[k], want[k]));
  return worst;
}

const TOL = 1e-5;

/** Compiles and runs a plan's launches in order (kernels on all threads); returns the float32 output at `out`. */
async function launchAll(rt: WasmRuntime, launches: Launch[], out: number, dims: readonly number[]): Promise<Tensor> {
  for (const l of launches) {
    const id = await rt.compile(l.kernel);
    await rt.sync();
    rt.launch(id, l.args, l.tasks);
  }
  const n = dims.reduce((a, b) => a * b, 1);
  return new Tensor('float32', new Float32Array(rt.mem.u8.buffer.slice(out, out + n * 4)), [...dims]);
}
let seed = 1;
const rnd = (dims: number[]) => randomFloat(dims, seed++);

interface ConvCase { x: number[]; w: number[]; bias?: boolean; attrs?: Record<string, AttrVal>; constW?: boolean }

const convCases: Record<string, ConvCase> = {
  'OCR 1x1 240→240 at 12x80': { x: [1, 240, 12, 80], w: [240, 240, 1, 1], bias: true },
  'OCR 1x1 16→32 at 24x160': { x: [1, 16, 24, 160], w: [32, 16, 1, 1], bias: true },
  'ragged 1x1 13→11 at 7x9, batch 2': { x: [2, 13, 7, 9], w: [11, 13, 1, 1], bias: true },
  'SE 1x1 240→60 at 1x1': { x: [1, 240, 1, 1], w: [60, 240, 1, 1], bias: true },
  'OCR depthwise 3x3 at 24x160': { x: [1, 32, 24, 160], w: [32, 1, 3, 3], bias: true, attrs: { group: 32, pads: [1, 1, 1, 1] } },
  'OCR depthwise 3x3 stride [2,1]': { x: [1, 64, 24, 160], w: [64, 1, 3, 3], bias: true, attrs: { group: 64, pads: [1, 1, 1, 1], strides: [2, 1] } },
  'OCR depthwise 3x3 stride [1,2]': { x: [1, 128, 12, 160], w: [128, 1, 3, 3], bias: true, attrs: { group: 128, pads: [1, 1, 1, 1], strides: [1, 2] } },
  'OCR depthwise 5x5 at 12x80': { x: [1, 240, 12, 80], w: [240, 1, 5, 5], bias: true, attrs: { group: 240, pads: [2, 2, 2, 2] } },
  'OCR depthwise 5x5 at 3x80 (odd row count)': { x: [1, 480, 3, 80], w: [480, 1, 5, 5], bias: true, attrs: { group: 480, pads: [2, 2, 2, 2] } },
  'ragged depthwise 5x5 at 11x13, batch 2': { x: [2, 7, 11, 13], w: [7, 1, 5, 5], bias: true, attrs: { group: 7, pads: [2, 2, 2, 2] } },
  'ragged depthwise 3x3 stride [2,1], odd rows, dilation [2,1]': { x: [1, 6, 13, 10], w: [6, 1, 3, 3], attrs: { group: 6, pads: [2, 1, 1, 1], strides: [2, 1], dilations: [2, 1] } },
  'ragged depthwise 3x3 s2 d2, batch 2, no bias': { x: [2, 5, 13, 23], w: [5, 1, 3, 3], attrs: { group: 5, pads: [2, 1, 0, 2], strides: [2, 2], dilations: [2, 2] } },
  'ragged depthwise 4x3 stride 3, weights as input': { x: [1, 3, 17, 29], w: [3, 1, 4, 3], bias: true, constW: false, attrs: { group: 3, pads: [1, 2, 2, 1], strides: [3, 3] } },
  'large-plane depthwise 3x3 (border path)': { x: [1, 2, 1100, 1100], w: [2, 1, 3, 3], bias: true, attrs: { group: 2, pads: [1, 1, 1, 1] } },
  'large-plane depthwise 5x5 s2 (border path)': { x: [1, 2, 1201, 1203], w: [2, 1, 5, 5], attrs: { group: 2, pads: [2, 2, 2, 2], strides: [2, 2] } },
  'OCR stem 3x3 s2 3→16 at 48x320': { x: [1, 3, 48, 320], w: [16, 3, 3, 3], attrs: { pads: [1, 1, 1, 1], strides: [2, 2] } },
  'ResNet stem 7x7 s2 p3 3→32 at 64x96 (stride-2 vector unfold)': { x: [1, 3, 64, 96], w: [32, 3, 7, 7], attrs: { pads: [3, 3, 3, 3], strides: [2, 2] } },
  'dense 3x3 s2 ragged 16→24 at 21x70, batch 2': { x: [2, 16, 21, 70], w: [24, 16, 3, 3], bias: true, attrs: { pads: [1, 1, 1, 1], strides: [2, 2] } },
  'dense 3x3 s2 dilation 2 at 30x75': { x: [1, 5, 30, 75], w: [7, 5, 3, 3], attrs: { pads: [2, 2, 2, 2], strides: [2, 2], dilations: [2, 2] } },
  'OCR 1x3 480→60 at 1x40': { x: [1, 480, 1, 40], w: [60, 480, 1, 3], attrs: { pads: [0, 1, 0, 1] } },
  'dense 3x3 SAME_UPPER stride 2 ragged, batch 2': { x: [2, 7, 11, 13], w: [9, 7, 3, 3], bias: true, attrs: { auto_pad: 'SAME_UPPER', strides: [2, 2] } },
  'grouped 3x3 group 2': { x: [1, 8, 10, 10], w: [6, 4, 3, 3], bias: true, attrs: { group: 2, pads: [1, 1, 1, 1] } },
  '1-D k3 129→128 (Silero)': { x: [1, 129, 64], w: [128, 129, 3], bias: true, attrs: { pads: [1, 1] } },
  '1-D STFT-like k256 s128': { x: [1, 1, 640], w: [258, 1, 256], attrs: { strides: [128] } },
  '1-D depthwise k5 dilation 2': { x: [1, 6, 50], w: [6, 1, 5], bias: true, attrs: { group: 6, pads: [4, 4], dilations: [2] } },
  'dense 3x3 weights as input': { x: [1, 6, 9, 14], w: [10, 6, 3, 3], bias: true, constW: false, attrs: { pads: [1, 1, 1, 1] } },
  '1x1 weights as input': { x: [1, 20, 9, 14], w: [10, 20, 1, 1], constW: false },
  // Pointwise (1x1, stride 1, group 1, oH*oW >= 16): the packed-B GEMM with the bias as a per-row residual.
  'pointwise OCR 480→480 at 3x80': { x: [1, 480, 3, 80], w: [480, 480, 1, 1], bias: true },
  'pointwise OCR 64→128 at 12x160': { x: [1, 64, 12, 160], w: [128, 64, 1, 1], bias: true },
  'pointwise OCR 60→120 at 1x40': { x: [1, 60, 1, 40], w: [120, 60, 1, 1], bias: true },
  'pointwise ragged 37→19 at 5x7, batch 2, no bias': { x: [2, 37, 5, 7], w: [19, 37, 1, 1] },
  'pointwise ragged 5→3 at 1x17, batch 3': { x: [3, 5, 1, 17], w: [3, 5, 1, 1], bias: true },
  'pointwise 1-D 33→10 at 16, batch 2': { x: [2, 33, 16], w: [10, 33, 1], bias: true },
  'pointwise K > 1024 (K blocks) 1100→7 at 4x5': { x: [1, 1100, 4, 5], w: [7, 1100, 1, 1], bias: true },
  'pointwise weights as input, batch 2, bias': { x: [2, 9, 6, 7], w: [13, 9, 1, 1], bias: true, constW: false },
  '1x1 stride 2': { x: [1, 16, 9, 10], w: [24, 16, 1, 1], bias: true, attrs: { strides: [2, 2] } },
  // Narrow outputs (oH*oW <= 4): the channel-vector kernel.
  'narrow: Silero STFT k256 s128 → 3 frames': { x: [1, 1, 576], w: [258, 1, 256], attrs: { strides: [128] } },
  'narrow: Silero k3 129→128 on 3 frames': { x: [1, 129, 3], w: [128, 129, 3], bias: true, attrs: { pads: [1, 1] } },
  'narrow: Silero k3 s2 128→64 on 3 frames': { x: [1, 128, 3], w: [64, 128, 3], bias: true, attrs: { pads: [1, 1], strides: [2] } },
  'narrow: Silero k3 s2 64→64 on 2 frames': { x: [1, 64, 2], w: [64, 64, 3], bias: true, attrs: { pads: [1, 1], strides: [2] } },
  'narrow: Silero k3 64→128 on 1 frame': { x: [1, 64, 1], w: [128, 64, 3], bias: true, attrs: { pads: [1, 1] } },
  'narrow: Silero 1x1 128→1': { x: [1, 128, 1], w: [1, 128, 1], bias: true },
  'narrow: ragged 2-D 3x3 s[2,1] 7→13, batch 2': { x: [2, 7, 3, 2], w: [13, 7, 3, 3], bias: true, attrs: { pads: [1, 1, 1, 1], strides: [2, 1] } },
  'narrow: 1x20 taps s10 (runtime tap loop)': { x: [1, 3, 1, 40], w: [10, 3, 1, 20], bias: true, attrs: { strides: [1, 10] } },
  'narrow: 1-D dilation 3 stride 3, 6 channels': { x: [3, 4, 9], w: [6, 4, 3], attrs: { pads: [2, 2], dilations: [3], strides: [3] } },
  'narrow: 5 channels, 1 position': { x: [1, 9, 4], w: [5, 9, 4] },
  'narrow: large batch splits over tasks': { x: [64, 96, 2], w: [100, 96, 3], bias: true, attrs: { pads: [1, 1] } },
  'narrow-sized 5x5 (GEMM path)': { x: [1, 2, 5, 5], w: [6, 2, 5, 5], bias: true },
  'narrow-sized with padded 1x20 taps (GEMM path)': { x: [1, 3, 1, 30], w: [10, 3, 1, 20], attrs: { strides: [1, 10], pads: [0, 2, 0, 2] } },
};

test('Conv matches the reference', { timeout: 120_000 }, async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    for (const [name, c] of Object.entries(convCases)) {
      const ins: (In | undefined)[] = [{ t: rnd(c.x) }, { t: rnd(c.w), constant: c.constW ?? true }];
      if (c.bias) ins.push({ t: rnd([c.w[0]]), constant: true });
      const e = await oneNode(rt, 'Conv', ins, c.attrs ?? {});
      assert.ok(e <= TOL, `${name}: relative error ${e}`);
    }
  } finally {
    await rt.dispose();
  }
});

test('Conv with a fused activation matches reference conv + activation', { timeout: 60_000 }, async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  const acts: [ConvActivation, (v: number) => number][] = [
    [{ kind: 'relu' }, (v) => Math.max(v, 0)],
    [{ kind: 'clip', min: 0, max: 6 }, (v) => Math.min(Math.max(v, 0), 6)],
    [{ kind: 'hardswish' }, (v) => (v * Math.min(Math.max(v + 3, 0), 6)) / 6],
    [{ kind: 'sigmoid' }, (v) => 1 / (1 + Math.exp(-v))],
  ];
  const shapes: ConvCase[] = [
    { x: [1, 24, 10, 20], w: [20, 24, 1, 1], bias: true },
    { x: [1, 12, 10, 21], w: [12, 1, 3, 3], bias: true, attrs: { group: 12, pads: [1, 1, 1, 1] } },
    { x: [1, 8, 9, 14], w: [8, 1, 5, 5], bias: true, attrs: { group: 8, pads: [2, 2, 2, 2] } },
    { x: [1, 3, 16, 18], w: [8, 3, 3, 3], bias: true, attrs: { pads: [1, 1, 1, 1], strides: [2, 2] } },
    // pointwise GEMM path: OCR-sized, and ragged in Cout, Cin and HW with batch 2 and no bias
    { x: [1, 240, 12, 80], w: [240, 240, 1, 1], bias: true },
    { x: [2, 13, 5, 7], w: [11, 13, 1, 1], bias: true },
    { x: [2, 13, 5, 7], w: [11, 13, 1, 1] },
    { x: [1, 30, 3, 7], w: [6, 30, 1, 1] },
  ];
  try {
    for (const [act, fn] of acts) for (const c of shapes) {
      const x = randomFloat(c.x, seed++, -4, 4), w = rnd(c.w), b = c.bias ? rnd([c.w[0]]) : undefined;
      const node: Node = { name: 'c', opType: 'Conv', domain: '', inputs: b ? ['x', 'w', 'b'] : ['x', 'w'], outputs: ['y'], attrs: attrsOf(c.attrs ?? {}) };
      const env = { opsets: new Map([['', 17]]), functions: new Map() };
      const ts = b ? [x, w, b] : [x, w];
      const ref = runNode(node, ts, env, () => undefined)[0] as Tensor;
      const want = new Tensor('float32', Float32Array.from(ref.data as Float32Array, fn), ref.dims);
      const ctx = { ...DEFAULTS_ONLY, threads: rt.threads, relaxedSimd: rt.relaxedSimd, constant: () => { throw new Error('unused'); } };
      const descs = ts.map((t, i) => ({ dtype: t.type, dims: [...t.dims], name: `v${i}` }));
      const plan = planConv(node, descs, ctx, act)!;
      assert.ok(plan);
      const ptrs = ts.map((t) => {
        const d = t.data as Float32Array;
        const p = rt.mem.alloc(d.byteLength);
        rt.mem.u8.set(new Uint8Array(d.buffer, d.byteOffset, d.byteLength), p);
        return p;
      });
      const n = want.data.length;
      const out = rt.mem.alloc(n * 4);
      new Float32Array(rt.mem.u8.buffer, out, n).fill(NaN);
      const scratch = plan.scratchBytes ? rt.mem.alloc(plan.scratchBytes) : 0;
      const launches = plan.launches({ inputs: ptrs, outputs: [out], scratch });
      const pointwise = c.w[2] === 1 && c.w[3] === 1 && !c.attrs;
      if (pointwise) assert.ok(launches.some((l) => l.kernel.key.startsWith('gemm:')), `pointwise [${c.x}] * [${c.w}] runs on genGemm`);
      const e = relErr(await launchAll(rt, launches, out, want.dims), want);
      assert.ok(e <= TOL, `${act.kind} on [${c.x}] * [${c.w}]: ${e}`);
      for (const p of [...ptrs, out]) rt.mem.release(p);
      if (scratch) rt.mem.release(scratch);
    }
  } finally {
    await rt.dispose();
  }
});

test('narrow Conv (few output positions, constant weights) takes the channel-vector kernel, with fused activations', { timeout: 60_000 }, async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  const acts: [ConvActivation, (v: number) => number][] = [
    [{ kind: 'none' }, (v) => v],
    [{ kind: 'relu' }, (v) => Math.max(v, 0)],
    [{ kind: 'sigmoid' }, (v) => 1 / (1 + Math.exp(-v))],
  ];
  const shapes: ConvCase[] = [
    { x: [1, 1, 576], w: [258, 1, 256], bias: true, attrs: { strides: [128] } },
    { x: [1, 129, 3], w: [128, 129, 3], bias: true, attrs: { pads: [1, 1] } },
    { x: [2, 5, 3, 3], w: [7, 5, 3, 3], bias: true, attrs: { pads: [1, 1, 1, 1], strides: [2, 2] } },
  ];
  const allocs: number[] = [];
  const put = (bytes: Uint8Array) => { const p = rt.mem.alloc(bytes.length); rt.mem.u8.set(bytes, p); allocs.push(p); return p; };
  try {
    for (const [act, fn] of acts) for (const c of shapes) {
      const x = randomFloat(c.x, seed++, -4, 4), w = rnd(c.w), b = rnd([c.w[0]]);
      const node: Node = { name: 'c', opType: 'Conv', domain: '', inputs: ['x', 'w', 'b'], outputs: ['y'], attrs: attrsOf(c.attrs ?? {}) };
      const env = { opsets: new Map([['', 17]]), functions: new Map() };
      const ref = runNode(node, [x, w, b], env, () => undefined)[0] as Tensor;
      const want = new Tensor('float32', Float32Array.from(ref.data as Float32Array, fn), ref.dims);
      const ctx = { ...DEFAULTS_ONLY, threads: rt.threads, relaxedSimd: rt.relaxedSimd, constant: (_n: string, _t: string, make: () => Uint8Array) => put(make()) };
      const descs = [x, w, b].map((t, i) => ({ dtype: t.type, dims: [...t.dims], name: `v${i}`, constant: i > 0 ? t : undefined }));
      const plan = planConv(node, descs, ctx, act)!;
      assert.ok(plan);
      const ptrs = [x, w, b].map((t) => { const d = t.data as Float32Array; return put(new Uint8Array(d.buffer, d.byteOffset, d.byteLength)); });
      const n = want.data.length;
      const out = rt.mem.alloc(n * 4);
      allocs.push(out);
      new Float32Array(rt.mem.u8.buffer, out, n).fill(NaN);
      const launches = plan.launches({ inputs: ptrs, outputs: [out], scratch: 0 });
      assert.ok(launches.length === 1 && launches[0].kernel.key.startsWith('convnarrow:'), `narrow kernel for [${c.x}] * [${c.w}]`);
      const e = relErr(await launchAll(rt, launches, out, want.dims), want);
      assert.ok(e <= TOL, `${act.kind} on [${c.x}] * [${c.w}]: ${e}`);
    }
  } finally {
    for (const p of allocs) rt.mem.release(p);
    await rt.dispose();
  }
});

test('MaxPool and AveragePool match the reference (SIMD interior, scalar borders, strides 1-3, NaN taps)', { timeout: 120_000 }, async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  const cases: [string, 'MaxPool' | 'AveragePool', number[], Record<string, AttrVal>][] = [
    ['ResNet stem 3x3 s2 p1', 'MaxPool', [1, 32, 112, 112], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }],
    ['U-Net 2x2 s2', 'MaxPool', [1, 16, 128, 128], { kernel_shape: [2, 2], strides: [2, 2] }],
    ['3x3 s1 p1 ragged', 'MaxPool', [2, 3, 13, 17], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }],
    ['3x2 s3 dilation 2 ceil', 'MaxPool', [1, 4, 23, 29], { kernel_shape: [3, 2], strides: [3, 3], dilations: [2, 2], ceil_mode: 1 }],
    ['5x5 s2 asymmetric pads', 'MaxPool', [1, 5, 31, 37], { kernel_shape: [5, 5], strides: [2, 2], pads: [2, 1, 0, 2] }],
    ['avg 3x3 s2 p1 exclude pad', 'AveragePool', [1, 8, 57, 59], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }],
    ['avg 3x3 s1 p1 count pad', 'AveragePool', [1, 6, 20, 21], { kernel_shape: [3, 3], pads: [1, 1, 1, 1], count_include_pad: 1 }],
    ['avg 2x2 s2', 'AveragePool', [2, 7, 30, 30], { kernel_shape: [2, 2], strides: [2, 2] }],
    ['avg 1-D k4 s2', 'AveragePool', [1, 9, 101], { kernel_shape: [4], strides: [2] }],
  ];
  try {
    for (const [name, op, dims, attrs] of cases) {
      const x = rnd(dims);
      if (op === 'MaxPool') { const d = x.data as Float32Array; for (let i = 0; i < d.length; i += 97) d[i] = NaN; }
      const { got, want } = await runOneNode(rt, op, [{ t: x }], attrs, 1, 19);
      assert.deepEqual(got[0].dims, want[0].dims, name);
      const g = got[0].data as Float32Array, w = want[0].data as Float32Array;
      for (let i = 0; i < w.length; i++) {
        const ok = op === 'MaxPool' ? Object.is(g[i], w[i]) || (Number.isNaN(g[i]) && Number.isNaN(w[i])) : Math.abs(g[i] - w[i]) <= 1e-6 * Math.max(1, Math.abs(w[i]));
        assert.ok(ok, `${name}: output ${i} is ${g[i]}, reference ${w[i]}`);
      }
    }
  } finally {
    await rt.dispose();
  }
});
