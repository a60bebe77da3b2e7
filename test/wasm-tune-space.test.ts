// Wasm tuning spaces: every candidate (or a deterministic sample of 12) of each family's space matches the reference
// at the real and at the ragged shape; every planted fault is caught at the ragged shape; the GEMM default is exactly
// chooseGemmTile; the space sizes at BERT-base shapes.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { WasmGraphRunner } from '../src/backends/wasm/executor.js';
import { WasmRuntime } from '../src/backends/wasm/runtime.js';
import { runNode } from '../src/backends/reference/executor.js';
import { chooseGemmTile } from '../src/backends/wasm/ops/matmul.js';
import { gemmDefaultParams, gemmSpace, gemmTileOf } from '../src/backends/wasm/tune.js';
import { graphOfNode } from '../src/tune/one_node.js';
import { FAULTS, type Family, type Params, paramsKey, type TuneSite } from '../src/tune/site.js';
import type { Tensor } from '../src/tensor.js';
import { attrsOf, type AttrVal } from './wasm-one-node.js';
import { randomFloat, relErr } from './helpers.js';

interface Case {
  family: Family;
  name: string;
  op: string;
  domain?: string;
  attrs?: Record<string, AttrVal>;
  /** Input dims; constant inputs become initializers. */
  inputs: { dims: number[]; constant?: boolean }[];
  opset?: number;
}

const CASES: Case[] = [
  { family: 'matmul', name: 'Gemm + bias, constant B', op: 'Gemm', inputs: [{ dims: [32, 96] }, { dims: [96, 48], constant: true }, { dims: [48], constant: true }] },
  { family: 'matmul', name: 'batched MatMul, B per run', op: 'MatMul', inputs: [{ dims: [2, 16, 40] }, { dims: [2, 40, 24] }] },
  { family: 'conv', name: 'Conv 3x3 pad 1 (unfold GEMM)', op: 'Conv', attrs: { pads: [1, 1, 1, 1] },
    inputs: [{ dims: [1, 8, 12, 12] }, { dims: [16, 8, 3, 3], constant: true }, { dims: [16], constant: true }] },
  { family: 'attention', name: 'Attention 4-D', op: 'Attention', opset: 23, inputs: [{ dims: [1, 2, 24, 16] }, { dims: [1, 2, 24, 16] }, { dims: [1, 2, 24, 16] }] },
  { family: 'reduce', name: 'LayerNormalization', op: 'LayerNormalization', attrs: { axis: -1 },
    inputs: [{ dims: [16, 96] }, { dims: [96], constant: true }, { dims: [96], constant: true }] },
  { family: 'reduce', name: 'Softmax', op: 'Softmax', inputs: [{ dims: [8, 50] }] },
  { family: 'reduce', name: 'ReduceMean last axis', op: 'ReduceMean', attrs: { axes: [1], keepdims: 1 }, inputs: [{ dims: [12, 40] }] },
  { family: 'elementwise', name: 'Add, row broadcast', op: 'Add', inputs: [{ dims: [64, 640] }, { dims: [640] }] },
];

let rt: WasmRuntime;
before(async () => { rt = await WasmRuntime.create({ threads: 2 }); });
after(async () => { await rt.dispose(); });

let seed = 1;
/** Runs the case's node at `dims` on the Wasm backend with `pick` and on the reference; returns the error and the sites. */
async function runCase(c: Case, dims: number[][], pick: (s: TuneSite) => Params): Promise<{ err: number; sites: TuneSite[] }> {
  const ins = c.inputs.map((x, i) => ({ t: randomFloat(dims[i], seed++ * 7919 + i), constant: x.constant }));
  const opset = c.opset ?? 17;
  const { node, graph, feeds, env } = graphOfNode({ opType: c.op, domain: c.domain ?? '', attrs: attrsOf(c.attrs ?? {}) }, ins, 1, opset);
  const sites: TuneSite[] = [];
  const runner = new WasmGraphRunner(graph, env, rt, { fallback: false, tune: { pick }, onSite: (r) => sites.push(r.site) });
  try {
    const got = (await runner.run(feeds)) as Tensor[];
    const want = runNode(node, ins.map((x) => x.t), env, () => undefined) as Tensor[];
    return { err: relErr(got[0], want[0]), sites };
  } finally {
    runner.dispose();
  }
}

/** The candidates to check: all, or 12 spread evenly (the default first). */
function sample(cands: Params[]): Params[] {
  if (cands.length <= 12) return cands;
  return Array.from({ length: 12 }, (_, i) => cands[Math.floor((i * (cands.length - 1)) / 11)]);
}

for (const c of CASES) {
  test(`${c.family}: ${c.name}: the space matches the reference at the real and ragged shapes; faults are caught`, { timeout: 120_000 }, async () => {
    const dims = c.inputs.map((x) => x.dims);
    const first = await runCase(c, dims, (s) => s.default);
    assert.ok(first.err <= 1e-4, `default: error ${first.err}`);
    const site = first.sites.find((s) => s.family === c.family);
    assert.ok(site, `no ${c.family} site (sites: ${first.sites.map((s) => s.family).join(', ')})`);
    const space = site.space();
    assert.equal(paramsKey(space.candidates[0]), paramsKey(site.default), 'the default leads the space');
    assert.ok(space.candidates.every((p) => p.fault === undefined), 'a space never holds a fault');
    assert.ok(space.candidates.length <= space.before || space.candidates.length === 1);
    const ragged = site.ragged(dims);
    assert.deepEqual(ragged.map((d) => d.length), dims.map((d) => d.length), 'ragged keeps ranks');
    assert.notDeepEqual(ragged, dims, 'ragged differs');
    console.log(`${c.family} ${c.name}: ${space.before} -> ${space.candidates.length}; ragged ${JSON.stringify(ragged)}; sig ${site.sig.slice(0, 100)}`);
    const force = (cand: Params) => (s: TuneSite) => (s.family === c.family ? cand : s.default);
    for (const cand of sample(space.candidates)) {
      for (const [what, d] of [['real', dims], ['ragged', ragged]] as const) {
        const { err } = await runCase(c, d, force(cand));
        assert.ok(err <= 1e-4, `${paramsKey(cand)} at the ${what} shape: error ${err}`);
      }
    }
    for (const fault of FAULTS) {
      const { err } = await runCase(c, ragged, force({ ...site.default, fault }));
      assert.ok(!(err <= 1e-4), `fault ${fault} not caught at the ragged shape (error ${err})`);
    }
  });
}

test('matmul: the default tile is exactly chooseGemmTile', () => {
  for (const [M, N, K, b, th, rx] of [[128, 768, 768, 1, 8, false], [128, 3072, 768, 1, 2, true], [1, 768, 3072, 1, 4, false], [2, 5, 7, 3, 1, false],
    [3, 64, 2000, 1, 8, true], [37, 9, 1, 2, 2, false]] as const) {
    assert.deepEqual(gemmTileOf(gemmDefaultParams(M, N, K, rx), M, N, K, b, th).tile, chooseGemmTile(M, N, K, b, th, rx), `${M}x${N}x${K}`);
  }
});

test('space sizes at BERT-base shapes (before -> after pruning)', async () => {
  const sizes: Record<string, string> = {};
  for (const [M, N, K] of [[128, 768, 768], [128, 3072, 768], [128, 768, 3072]]) {
    for (const th of [1, 8]) {
      const s = gemmSpace(M, N, K, 1, th, false, gemmDefaultParams(M, N, K, false));
      const r = gemmSpace(M, N, K, 1, th, true, gemmDefaultParams(M, N, K, true));
      sizes[`matmul [${M},${K}]x[${K},${N}] T${th}`] = `${s.before} -> ${s.candidates.length} (relaxed SIMD: ${r.candidates.length})`;
    }
  }
  // The other families at BERT-base shapes, from the sites the runner reports (2 threads).
  const bert: Case[] = [
    { family: 'attention', name: 'attention [1,12,128,64]', op: 'Attention', opset: 23, inputs: [{ dims: [1, 12, 128, 64] }, { dims: [1, 12, 128, 64] }, { dims: [1, 12, 128, 64] }] },
    { family: 'reduce', name: 'LayerNorm [1,128,768]', op: 'LayerNormalization', attrs: { axis: -1 }, inputs: [{ dims: [1, 128, 768] }, { dims: [768], constant: true }, { dims: [768], constant: true }] },
    { family: 'reduce', name: 'Softmax [1,12,128,128]', op: 'Softmax', inputs: [{ dims: [1, 12, 128, 128] }] },
    { family: 'elementwise', name: 'Add [1,128,768] + [768]', op: 'Add', inputs: [{ dims: [1, 128, 768] }, { dims: [768] }] },
    { family: 'conv', name: 'conv 3x3 [1,64,56,56]→64', op: 'Conv', attrs: { pads: [1, 1, 1, 1] }, inputs: [{ dims: [1, 64, 56, 56] }, { dims: [64, 64, 3, 3], constant: true }] },
  ];
  for (const c of bert) {
    const { sites } = await runCase(c, c.inputs.map((x) => x.dims), (s) => s.default);
    const s = sites.find((x) => x.family === c.family)!.space();
    sizes[c.name] = `${s.before} -> ${s.candidates.length}`;
  }
  console.log(JSON.stringify(sizes, null, 1));
  assert.deepEqual(sizes, EXPECTED_SIZES);
});

const EXPECTED_SIZES: Record<string, string> = {
  'matmul [128,768]x[768,768] T1': '1728 -> 23 (relaxed SIMD: 45)',
  'matmul [128,768]x[768,768] T8': '1728 -> 67 (relaxed SIMD: 133)',
  'matmul [128,768]x[768,3072] T1': '1728 -> 23 (relaxed SIMD: 45)',
  'matmul [128,768]x[768,3072] T8': '1728 -> 67 (relaxed SIMD: 133)',
  'matmul [128,3072]x[3072,768] T1': '1728 -> 22 (relaxed SIMD: 45)',
  'matmul [128,3072]x[3072,768] T8': '1728 -> 66 (relaxed SIMD: 133)',
  'attention [1,12,128,64]': '24 -> 24',
  'LayerNorm [1,128,768]': '48 -> 48',
  'Softmax [1,12,128,128]': '48 -> 48',
  'Add [1,128,768] + [768]': '36 -> 36',
  // The conv's relaxed-SIMD count depends on the machine: its site reports what the runtime has.
  'conv 3x3 [1,64,56,56]→64': '1728 -> 67',
};
