// WebGPU webjit.FusedAttention against its reference kernel: nodes made by the fusion pass from MatMul/Softmax chains of
// the real models' shapes (BERT encoder, GPT-2 prefill and decode, PP-OCRv4 rec) and of ragged ones, every mask layout,
// every scaling, the key split and both reduction paths.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { attentionConfig } from '../src/backends/webgpu/ops/attention.js';
import { foldAttentionTransposes, fuseAttention } from '../src/graph/fuse_attention.js';
import type { Attribute, Graph, Model, Node } from '../src/graph/ir.js';
import { Tensor } from '../src/tensor.js';
import { randomFloat, rng } from './helpers.js';
import { relErr, runOneNodeGpu, type AttrVal, type In } from './webgpu-one-node.js';

const node = (opType: string, inputs: string[], outputs: string[], attrs: Attribute[] = []): Node =>
  ({ name: outputs[0], opType, domain: '', inputs, outputs, attrs: new Map(attrs.map((a) => [a.name, a])) });

interface Case {
  B: number; H: number; Sq: number; Skv: number; D: number; Dv?: number;
  /** K's layout: [B,H,S,D] transposed by [0,1,3,2]; [B,S,H,D] by [0,2,3,1]; or Kᵀ [B,H,D,S] given directly. */
  k: 'bhsd' | 'bshd' | 'kt';
  scale?: { op: 'Mul' | 'Div'; on: 'scores' | 'q' };
  /** pad: [B,1,1,S]; causal: [1,1,Sq,S]; full: [B,H,Sq,S]; rows: [Sq,S]; keys: [S]; col: [B,1,Sq,1]. */
  mask?: 'pad' | 'causal' | 'full' | 'rows' | 'keys' | 'col';
  maskFill?: number;
  /** V rows of masked keys set to 1e36: a masked key's weight must be exactly 0. */
  hugeMaskedV?: boolean;
  /** K and V with batch 1 (broadcast over Q's batch). */
  kvBatch1?: boolean;
  axis?: number;
  opset?: number;
  /** Q and V given as [B,S,H,D] and transposed, the result transposed back: the Transposes fold into the node. */
  bshd?: boolean;
}

/** The chain as the models write it, fused by the pass: the FusedAttention node's inputs and attributes. */
function fused(c: Case): { ins: In[]; attrs: Record<string, AttrVal>; opset: number } {
  const { B, H, Sq, Skv, D } = c;
  const Dv = c.Dv ?? D;
  const KB = c.kvBatch1 ? 1 : B;
  const seed = B * 1000 + H * 100 + Sq * 10 + Skv + D;
  const feeds = new Map<string, Tensor>();
  const kDims = c.k === 'bhsd' ? [KB, H, Skv, D] : c.k === 'bshd' ? [KB, Skv, H, D] : [KB, H, D, Skv];
  feeds.set('q', randomFloat(c.bshd ? [B, Sq, H, D] : [B, H, Sq, D], seed + 1, -2, 2));
  feeds.set('k', randomFloat(kDims, seed + 2, -2, 2));
  feeds.set('v', randomFloat(c.bshd ? [KB, Skv, H, Dv] : [KB, H, Skv, Dv], seed + 3));
  const nodes: Node[] = [];
  const swap = [{ name: 'perm', type: 'ints' as const, value: [0, 2, 1, 3] }];
  if (c.bshd) nodes.push(node('Transpose', ['q'], ['qt'], swap), node('Transpose', ['v'], ['vt'], swap));
  const inits = new Map<string, Tensor>();
  let kt = 'k';
  if (c.k !== 'kt') {
    nodes.push(node('Transpose', ['k'], ['kt'], [{ name: 'perm', type: 'ints', value: c.k === 'bhsd' ? [0, 1, 3, 2] : [0, 2, 3, 1] }]));
    kt = 'kt';
  }
  let q = c.bshd ? 'qt' : 'q';
  const sc = c.scale;
  if (sc) inits.set('c', new Tensor('float32', new Float32Array([sc.op === 'Div' ? Math.sqrt(D) : 1 / Math.sqrt(D)]), []));
  if (sc?.on === 'q') { nodes.push(node(sc.op, [q, 'c'], ['qs'])); q = 'qs'; }
  nodes.push(node('MatMul', [q, kt], ['s0']));
  let s = 's0';
  if (sc?.on === 'scores') { nodes.push(node(sc.op, [s, 'c'], ['s1'])); s = 's1'; }
  if (c.mask) {
    const r = rng(seed + 4);
    const fill = c.maskFill ?? -10000;
    let md: number[], mv: Float32Array;
    if (c.mask === 'pad') {
      md = [B, 1, 1, Skv];
      mv = new Float32Array(B * Skv);
      for (let b = 0; b < B; b++) { const len = Math.max(1, Math.round(Skv * (0.5 + 0.5 * r()))); for (let j = len; j < Skv; j++) mv[b * Skv + j] = fill; }
      if (c.hugeMaskedV) {
        const vd = feeds.get('v')!.data as Float32Array;
        for (let b = 0; b < KB; b++) for (let h = 0; h < H; h++) for (let j = 0; j < Skv; j++) {
          if (mv[b * Skv + j] < -1000) vd.fill(1e36, ((b * H + h) * Skv + j) * Dv, ((b * H + h) * Skv + j + 1) * Dv);
        }
      }
    } else if (c.mask === 'causal') {
      md = [1, 1, Sq, Skv];
      mv = new Float32Array(Sq * Skv);
      for (let i = 0; i < Sq; i++) for (let j = 0; j < Skv; j++) if (j > i + Skv - Sq) mv[i * Skv + j] = c.maskFill ?? -3.4028234663852886e38;
    } else {
      md = c.mask === 'full' ? [B, H, Sq, Skv] : c.mask === 'rows' ? [Sq, Skv] : c.mask === 'keys' ? [Skv] : [B, 1, Sq, 1];
      mv = new Float32Array(md.reduce((a, b) => a * b, 1)).map(() => 3 * r() - 1.5);
    }
    feeds.set('mask', new Tensor('float32', mv, md));
    nodes.push(node('Add', ['mask', s], ['s2']));
    s = 's2';
  }
  nodes.push(node('Softmax', [s], ['p'], c.axis === undefined ? [] : [{ name: 'axis', type: 'int', value: c.axis }]));
  nodes.push(node('MatMul', ['p', c.bshd ? 'vt' : 'v'], [c.bshd ? 'yt' : 'y']));
  if (c.bshd) nodes.push(node('Transpose', ['yt'], ['y'], swap));
  const graph: Graph = {
    name: 'attention', nodes, initializers: inits, valueInfo: new Map(),
    inputs: [...feeds.keys()].map((name) => ({ name, type: null })), outputs: [{ name: 'y', type: null }],
  };
  const opset = c.opset ?? 17;
  const model: Model = { irVersion: 8, producer: 'test', opsets: new Map([['', opset]]), graph, functions: new Map(), metadata: new Map() };
  assert.equal(fuseAttention(model).fused, 1, `not fused: ${JSON.stringify(c)}`);
  if (c.bshd) {
    // The reference replays the unfolded ops; the fold must leave one node that reads q and v and writes y.
    const f = foldAttentionTransposes(model.graph);
    assert.equal(f.folded, 3, 'three Transposes folded');
    model.graph = f.graph;
    assert.deepEqual(model.graph.nodes.map((n) => n.opType), ['FusedAttention']);
  }
  const fa = model.graph.nodes.find((n) => n.opType === 'FusedAttention')!;
  const attrs: Record<string, AttrVal> = {};
  for (const a of fa.attrs.values()) attrs[a.name] = a.value as AttrVal;
  return { ins: fa.inputs.map((name) => ({ t: feeds.get(name)! })), attrs, opset };
}

async function check(c: Case, kernel?: 'tiled' | 'rows'): Promise<void> {
  const { ins, attrs, opset } = fused(c);
  const before = { ...attentionConfig.planned };
  const { got, want, gpuNodes } = await runOneNodeGpu('FusedAttention', ins, attrs, 1, opset, 'webjit');
  const what = `${JSON.stringify(c)} split ${attentionConfig.split} subgroups ${attentionConfig.subgroups} tiled ${attentionConfig.tiled}`;
  if (kernel) assert.ok(attentionConfig.planned[kernel] > before[kernel], `${what}: the ${kernel} kernel was not planned`);
  assert.ok(gpuNodes >= 1, `${what}: not run on the GPU`);
  assert.deepEqual(got[0].dims, want[0].dims, what);
  const err = relErr(got[0], want[0]);
  if (process.env.ATTN_VERBOSE) console.log(what, err);
  assert.ok(err <= 1e-3, `${what}: rel err ${err}`);
}

test('WebGPU FusedAttention on the real models\' shapes', { timeout: 180_000 }, async () => {
  // BERT encoder: K as [B,S,H,D] by perm [0,2,3,1], Div by sqrt(d), padding mask [B,1,1,S]; batch 1 and 8.
  await check({ B: 1, H: 12, Sq: 128, Skv: 128, D: 64, k: 'bshd', scale: { op: 'Div', on: 'scores' }, mask: 'pad' });
  await check({ B: 8, H: 12, Sq: 128, Skv: 128, D: 64, k: 'bshd', scale: { op: 'Div', on: 'scores' }, mask: 'pad' });
  // GPT-2: prefill with a causal mask filled with finfo(float32).min; a decode step against a KV cache (keys split).
  await check({ B: 1, H: 12, Sq: 64, Skv: 64, D: 64, k: 'bhsd', scale: { op: 'Div', on: 'scores' }, mask: 'causal' });
  await check({ B: 1, H: 12, Sq: 1, Skv: 1024, D: 64, k: 'bhsd', scale: { op: 'Div', on: 'scores' }, mask: 'causal' });
  // PP-OCRv4 rec: Q scaled first, head size 15, softmax axis 3, no mask, opset 9 as in the model.
  await check({ B: 1, H: 8, Sq: 40, Skv: 40, D: 15, k: 'bhsd', scale: { op: 'Mul', on: 'q' }, axis: 3, opset: 9 });
});

/** Shapes both kernels cover (whole vec4 rows of Q, K and V), ragged in rows and keys, every mask and scaling. */
const BOTH: Case[] = [
  { B: 8, H: 12, Sq: 128, Skv: 128, D: 64, k: 'bshd', scale: { op: 'Div', on: 'scores' }, mask: 'pad' },
  { B: 1, H: 2, Sq: 9, Skv: 5, D: 4, Dv: 8, k: 'bhsd', scale: { op: 'Div', on: 'scores' }, mask: 'full' },
  { B: 2, H: 3, Sq: 67, Skv: 45, D: 32, k: 'bshd', scale: { op: 'Mul', on: 'q' }, mask: 'causal' },
  { B: 2, H: 2, Sq: 33, Skv: 70, D: 16, Dv: 68, k: 'bhsd', scale: { op: 'Div', on: 'q' }, mask: 'rows' },
  { B: 3, H: 2, Sq: 20, Skv: 40, D: 48, k: 'bhsd', mask: 'keys', kvBatch1: true },
  { B: 2, H: 2, Sq: 17, Skv: 6, D: 8, k: 'bshd', scale: { op: 'Mul', on: 'scores' }, mask: 'col' },
  { B: 2, H: 4, Sq: 33, Skv: 37, D: 32, k: 'bhsd', scale: { op: 'Div', on: 'scores' }, mask: 'pad', maskFill: -Infinity, hugeMaskedV: true },
  // BERT's layout with the Transposes folded in (strided Q and V reads, the result written as [B,S,H,Dv]).
  { B: 3, H: 4, Sq: 40, Skv: 40, D: 16, k: 'bshd', scale: { op: 'Div', on: 'scores' }, mask: 'pad', bshd: true },
  { B: 2, H: 3, Sq: 21, Skv: 35, D: 8, Dv: 12, k: 'bhsd', scale: { op: 'Mul', on: 'q' }, mask: 'full', bshd: true },
  // One query against many keys: the row kernel splits the keys and its combine pass writes the strided result.
  { B: 1, H: 2, Sq: 1, Skv: 300, D: 16, k: 'bshd', scale: { op: 'Div', on: 'scores' }, mask: 'pad', bshd: true },
];

test('WebGPU FusedAttention: the register-tiled kernel and the row kernel agree with the reference on the same shapes', { timeout: 300_000 }, async () => {
  try {
    for (const mode of ['on', 'off'] as const) {
      attentionConfig.tiled = mode;
      for (const c of BOTH) await check(c, mode === 'on' ? 'tiled' : 'rows');
    }
  } finally {
    attentionConfig.tiled = 'auto';
  }
});

test('WebGPU FusedAttention on ragged shapes, every mask layout and scaling', { timeout: 180_000 }, async () => {
  await check({ B: 1, H: 2, Sq: 9, Skv: 5, D: 3, Dv: 2, k: 'bhsd', scale: { op: 'Div', on: 'scores' }, mask: 'full' });
  await check({ B: 2, H: 1, Sq: 17, Skv: 3, D: 7, Dv: 13, k: 'kt', mask: 'pad' });
  await check({ B: 1, H: 1, Sq: 1, Skv: 1, D: 4, k: 'bhsd' });
  await check({ B: 1, H: 2, Sq: 10, Skv: 21, D: 80, Dv: 36, k: 'bshd', scale: { op: 'Div', on: 'scores' }, mask: 'full' });
  await check({ B: 3, H: 2, Sq: 12, Skv: 40, D: 32, k: 'bhsd', scale: { op: 'Div', on: 'q' }, mask: 'keys', kvBatch1: true });
  await check({ B: 2, H: 2, Sq: 5, Skv: 6, D: 8, k: 'bshd', scale: { op: 'Mul', on: 'scores' }, mask: 'col' });
  // Output columns not a multiple of 4, several column blocks per thread.
  await check({ B: 2, H: 8, Sq: 64, Skv: 20, D: 8, Dv: 66, k: 'kt', scale: { op: 'Mul', on: 'q' }, mask: 'rows' });
});

test('WebGPU FusedAttention: masked weights are exactly 0, -inf masks, the key split and the workgroup-memory path', { timeout: 180_000 }, async () => {
  // One kernel (the mask is data): a masked key's weight is 0 with V = 1e36 behind it, whatever the fill.
  for (const maskFill of [-10000, -3.4028234663852886e38, -Infinity]) {
    await check({ B: 2, H: 4, Sq: 33, Skv: 37, D: 32, k: 'bhsd', scale: { op: 'Div', on: 'scores' }, mask: 'pad', maskFill, hugeMaskedV: true });
  }
  await check({ B: 1, H: 2, Sq: 1, Skv: 600, D: 32, k: 'bshd', scale: { op: 'Div', on: 'scores' }, mask: 'pad', maskFill: -Infinity, hugeMaskedV: true });
  try {
    attentionConfig.split = 3;
    await check({ B: 1, H: 2, Sq: 20, Skv: 100, D: 24, Dv: 10, k: 'bhsd', scale: { op: 'Div', on: 'scores' }, mask: 'causal' });
    attentionConfig.split = 0;
    attentionConfig.subgroups = false;
    await check({ B: 1, H: 4, Sq: 1, Skv: 1024, D: 64, k: 'bhsd', scale: { op: 'Div', on: 'scores' }, mask: 'causal' });
  } finally {
    attentionConfig.split = 0;
    attentionConfig.subgroups = true;
  }
});
