// Deliberately wrong candidates (a tile edge off by one, a missing barrier, a wrong index in the epilogue, f16
// accumulation where f32 is required) are injected into every kernel family of both fast backends; verification must
// reject every one of them, so none is ever selected, and the tuned session must still match the reference.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { attentionConfig } from '../src/backends/webgpu/ops/attention.js';
import { matmulPlanned } from '../src/backends/webgpu/ops/matmul.js';
import { InferenceSession } from '../src/session.js';
import { Tensor } from '../src/tensor.js';
import { FAMILIES, FAULTS, type Family, type TuneSite } from '../src/tune/site.js';
import type { TuneReport } from '../src/tune/tuner.js';
import { fixture, randomFloat, randomInt64, relErr, smallCnnModel } from './helpers.js';
import { writeModel } from '../src/bench/onnx_writer.js';

/** Feeds of the small encoder: S tokens, the mask 0 from `padFrom` on. */
const encoderFeeds = (S = 24, padFrom = 21, seed = 7) => ({
  input_ids: randomInt64([1, S], seed, 1000),
  attention_mask: new Tensor('int64', new BigInt64Array(S).fill(1n).fill(0n, padFrom), [1, S]),
  token_type_ids: new Tensor('int64', new BigInt64Array(S), [1, S]),
});

/** A GEMM with bias and residual (one FusedMatMul): x [1, rows, K] · w [K, N] + b + r; w in ±wMax; seeds s..s+3. */
function gemmCase(rows: number, K: number, N: number, wMax: number, s: number): { model: Uint8Array; feeds: Record<string, Tensor> } {
  const model = writeModel({
    nodes: [
      { op: 'MatMul', inputs: ['x', 'w'], outputs: ['m'] },
      { op: 'Add', inputs: ['m', 'b'], outputs: ['mb'] },
      { op: 'Add', inputs: ['mb', 'r'], outputs: ['y'] },
    ],
    inputs: [{ name: 'x', dtype: 'float32', dims: [1, rows, K] }, { name: 'r', dtype: 'float32', dims: [1, rows, N] }],
    outputs: [{ name: 'y', dtype: 'float32' }],
    initializers: { w: randomFloat([K, N], s, -wMax, wMax), b: randomFloat([N], s + 1) },
    opset: 17,
  });
  return { model, feeds: { x: randomFloat([1, rows, K], s + 2), r: randomFloat([1, rows, N], s + 3) } };
}

/** Faults planted in the small encoder's attention at 64 queries (ragged 41) are all rejected; `ran` checks the plan. */
async function attentionFaultsRejected(ran: () => void = () => {}): Promise<void> {
  const enc = await InferenceSession.create(fixture('encoder-small.onnx'), { backend: 'webgpu', tuning: 'off' });
  try {
    await enc.run(encoderFeeds(64, 60, 5));
    ran();
    await sampledFaultsRejected(enc, 'attention', 1);
  } finally {
    await enc.release();
  }
}

async function injectAll(backend: 'wasm' | 'webgpu'): Promise<void> {
  const cases: [string, string | Uint8Array, Record<string, Tensor>][] = [
    ['encoder-small', fixture('encoder-small.onnx'), encoderFeeds()],
    ['cnn', smallCnnModel(), { x: randomFloat([1, 8, 14, 14], 11, -1, 1), z: randomFloat([1, 8, 1, 14], 12, -1, 1) }],
  ];
  /** family → faults injected somewhere in it */
  const covered = new Map<Family, Set<string>>();
  for (const [name, model, feeds] of cases) {
    const ref = await InferenceSession.create(model, { backend: 'reference' });
    const want = await ref.run(feeds);
    const s = await InferenceSession.create(model, { backend, threads: 2, tuning: 'off' });
    const injected = new Map<string, Set<string>>();
    try {
      await s.run(feeds);
      // Which sites get the faults. Wasm: every one. WebGPU: a first tuning pass lists the sites; then, in each family,
      // sites in sig order until every fault the family's sites can hold is planted (one site each, where it holds all
      // four). Each planted fault is a kernel to compile, seconds each on a cold software-driver shader cache, and the
      // faults at each family's ragged shape are also checked one by one in webgpu-tune-space.test.ts.
      let chosen: ((key: string) => boolean) | null = null;
      if (backend === 'webgpu') {
        const sites = new Map<string, TuneSite>();
        await s.tune({ budgetMs: 600_000, force: true, maxCandidates: 1, extra: (site) => { sites.set(`${site.family}|${site.sig}`, site); return []; } });
        const picked = new Set<string>(), have = new Map<Family, Set<string>>();
        for (const [key, site] of [...sites].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
          const got = have.get(site.family) ?? have.set(site.family, new Set()).get(site.family)!;
          const fs = site.faults?.() ?? FAULTS;
          if (fs.some((f) => !got.has(f))) { picked.add(key); for (const f of fs) got.add(f); }
        }
        chosen = (key) => picked.has(key);
      }
      const report: TuneReport = await s.tune({
        budgetMs: 600_000, force: true, maxCandidates: 1,
        extra: (site) => {
          if (chosen && !chosen(`${site.family}|${site.sig}`)) return [];
          const fs = site.faults?.() ?? FAULTS;
          injected.set(`${site.family}|${site.sig}`, new Set(fs));
          for (const f of fs) (covered.get(site.family) ?? covered.set(site.family, new Set()).get(site.family)!).add(f);
          return fs.map((fault) => ({ ...site.default, fault }));
        },
      });
      assert.ok(report.rows.length > 0, `${name}: kernels were tuned`);
      for (const r of report.rows) {
        // Never selected: not even a fault that happens to be harmless at this kernel's shapes.
        assert.equal(r.params.fault, undefined, `${backend} ${name} ${r.family} ${r.sig}: a faulty candidate was selected`);
        const rejected = new Set(Object.keys(r.rejections).map((k) => /(?:^|,)fault=(\w+)/.exec(k)?.[1]).filter(Boolean));
        for (const f of injected.get(`${r.family}|${r.sig}`) ?? []) {
          assert.ok(rejected.has(f), `${backend} ${name} ${r.family} ${r.sig}: the '${f}' fault passed verification`);
        }
      }
      console.log(`${backend} ${name}: ${report.rows.map((r) => `${r.family} ${r.tried} tried ${r.rejected} rejected`).join('; ')}`);
      // The session with the winners swapped in still matches the reference.
      const got = await s.run(feeds);
      for (const k of Object.keys(want)) assert.ok(relErr(got[k], want[k]) <= 1e-3, `${backend} ${name} ${k} after tuning: ${relErr(got[k], want[k])}`);
    } finally {
      await s.release();
      await ref.release();
    }
  }
  // Every kind of fault was injected (and so rejected) in every family.
  for (const f of FAMILIES) assert.deepEqual([...(covered.get(f) ?? [])].sort(), [...FAULTS].sort(), `${backend} ${f}: faults injected`);
}

test('tuning on wasm: injected wrong candidates in every family are rejected, none is selected', { timeout: 900_000 }, async () => {
  await injectAll('wasm');
});

test('tuning on webgpu: injected wrong candidates in every family are rejected, none is selected', { timeout: 900_000 }, async () => {
  await injectAll('webgpu');
});

/** Tunes `family` with every fault planted and sampled verification forced: each fault is rejected, nothing else is. */
async function sampledFaultsRejected(s: InferenceSession, family: Family, maxCandidates: number): Promise<void> {
  let faults: string[] = [];
  const report = await s.tune({
    budgetMs: 600_000, force: true, maxCandidates, sampleMacs: 0, families: [family],
    extra: (site) => { faults = site.faults?.() ?? [...FAULTS]; return faults.map((fault) => ({ ...site.default, fault })); },
  });
  assert.equal(report.rows.length, 1);
  const [r] = report.rows;
  assert.equal(r.sampledRows, 32, `${family}: the real shape was verified on sampled rows`);
  assert.equal(r.params.fault, undefined);
  assert.ok(faults.length >= 3, `${family}: faults planted: ${faults}`);
  const rejected = new Set(Object.keys(r.rejections).map((k) => /(?:^|,)fault=(\w+)/.exec(k)?.[1]));
  for (const f of faults) assert.ok(rejected.has(f), `${family}: the '${f}' fault passed sampled verification`);
  // The candidates that are right passed it (nothing else was rejected).
  assert.equal(r.rejected, faults.length, JSON.stringify(r.rejections));
}

test('tuning on webgpu: large matmuls and attention verified on sampled rows still reject every injected fault', { timeout: 600_000 }, async () => {
  // A GEMM with bias and residual (one FusedMatMul), verified on sampled rows at both shapes (sampleMacs 0): the
  // reference computes 32 of the 200 (ragged 125) rows, and the rest of the output must have been written.
  const { model, feeds } = gemmCase(200, 96, 80, 0.5, 31);
  const s = await InferenceSession.create(model, { backend: 'webgpu', tuning: 'off' });
  try {
    await s.run(feeds);
    await sampledFaultsRejected(s, 'matmul', 2);
  } finally {
    await s.release();
  }
  // The same GEMM with K split in two parts (partial sums, then a pass with the epilogue): faults in either kernel.
  const deep = gemmCase(100, 1024, 48, 0.1, 35);
  process.env.WEBJIT_MATMUL_SPLITK = '2';
  const sk = await InferenceSession.create(deep.model, { backend: 'webgpu', tuning: 'off' });
  try {
    const before = matmulPlanned.splitK;
    await sk.run(deep.feeds);
    assert.ok(matmulPlanned.splitK > before, 'the default GEMM split K');
    await sampledFaultsRejected(sk, 'matmul', 2);
  } finally {
    delete process.env.WEBJIT_MATMUL_SPLITK;
    await sk.release();
  }
  // Attention at 64 queries (ragged 41): sampled query rows, the keys and values whole.
  await attentionFaultsRejected();
  // The same with the register-tiled kernel as the default (its own row guards, barriers and epilogue).
  attentionConfig.tiled = 'on';
  try {
    const tiled = attentionConfig.planned.tiled;
    await attentionFaultsRejected(() => assert.ok(attentionConfig.planned.tiled > tiled, 'the tiled attention kernel ran'));
  } finally {
    attentionConfig.tiled = 'auto';
  }
});

test('tuning on wasm and webgpu: a tuned model that is not faster than its defaults gets them back', { timeout: 600_000 }, async () => {
  const feeds = encoderFeeds();
  const ref = await (await InferenceSession.create(fixture('encoder-small.onnx'), { backend: 'reference' })).run(feeds);
  for (const [backend, keepBelow] of [['wasm', 0], ['wasm', Infinity], ['webgpu', 0], ['webgpu', Infinity]] as const) {
    const s = await InferenceSession.create(fixture('encoder-small.onnx'), { backend, threads: 2 });
    try {
      await s.run(feeds);
      // margin 100: any right candidate replaces its default; then the whole model decides (keepBelow 0: never kept).
      const report = await s.tune({ budgetMs: 600_000, force: true, maxCandidates: 2, margin: 100, families: ['matmul'], keepBelow });
      assert.ok(report.model, `${backend}: the whole model was timed`);
      assert.ok(report.model!.defaultMs > 0 && report.model!.tunedMs > 0);
      assert.equal(report.model!.kept, keepBelow === Infinity, backend);
      const changed = report.rows.filter((r) => r.changed);
      if (keepBelow === 0) {
        assert.equal(changed.length, 0, 'every winner was put back');
        for (const r of report.rows) assert.deepEqual(r.params, r.defaultParams);
      } else {
        assert.ok(changed.length > 0, 'the winners stay');
      }
      const got = await s.run(feeds);
      assert.ok(relErr(got.last_hidden_state, ref.last_hidden_state) <= 1e-3);
    } finally {
      await s.release();
    }
  }
});
