// The tuner's core: the cache (keys, persistence, export/import), verification (poisoned outputs, tolerances,
// NaN/Inf), and selection (the fastest verified candidate wins; a wrong one never does, however fast).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadCache, saveCache, TuneCache } from '../src/tune/cache.js';
import { mismatch, Tuner, type TuneReport, type TuneRow, type TuneRunner, type TuneTarget } from '../src/tune/tuner.js';
import { kernelsChanged } from '../src/tune/report.js';
import { graphOfNode } from '../src/tune/one_node.js';
import { runNode } from '../src/backends/reference/executor.js';
import { Tensor, type Value } from '../src/tensor.js';
import { wasmTarget } from '../src/tune/targets.js';
import { WasmRuntime } from '../src/backends/wasm/runtime.js';
import { enumerate, paramsKey, raggedSize, spaceSize, withDefault, type Params, type SiteRecord, type TuneSite } from '../src/tune/site.js';

const entry = (params: Params, tunedMs = 1) => ({ params, defaultMs: 2, tunedMs, tried: 3, rejected: 1, at: '2026-11-21T00:00:00Z' });

test('tune cache: keyed by device, family and signature; persisted, merged with what is on disk, exported and imported', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webjit-tune-'));
  const file = path.join(dir, 'sub', 'tuning.json');
  const c = new TuneCache();
  c.set('devA', 'matmul', 'M128 N768 K768', entry({ BM: 64 }));
  c.set('devB', 'matmul', 'M128 N768 K768', entry({ BM: 32 }));
  assert.deepEqual(c.get('devA', 'matmul', 'M128 N768 K768')?.params, { BM: 64 });
  assert.deepEqual(c.get('devB', 'matmul', 'M128 N768 K768')?.params, { BM: 32 });
  assert.equal(c.get('devA', 'conv', 'M128 N768 K768'), undefined);
  await saveCache(c, file);
  // Another process saved an entry meanwhile: both survive the next save.
  const other = new TuneCache();
  other.set('devA', 'reduce', 'rows 128 x 768', entry({ wg: 128 }));
  await saveCache(other, file);
  const back = await loadCache(file);
  assert.equal(back.size, 3);
  assert.deepEqual(back.get('devA', 'reduce', 'rows 128 x 768')?.params, { wg: 128 });
  // Export → import into an empty cache.
  const copy = new TuneCache();
  assert.equal(copy.import(JSON.stringify(back.toJSON())), 3);
  assert.deepEqual(copy.toJSON(), back.toJSON());
  assert.throws(() => copy.import({ format: 'something-else', version: 1, devices: {} }), TypeError);
  // A damaged file is an empty cache, never an error.
  fs.writeFileSync(file, '{ not json');
  assert.equal((await loadCache(file)).size, 0);
  assert.equal((await loadCache(null)).size, 0);
  fs.rmSync(dir, { recursive: true });
});

test('search-space helpers: enumeration with pruning, sizes, the default first, ragged sizes', () => {
  const axes = { a: [1, 2, 4], b: [8, 16] };
  assert.equal(spaceSize(axes), 6);
  const kept = enumerate(axes, (p) => (p.a as number) * (p.b as number) <= 32);
  assert.deepEqual(kept.map(paramsKey), ['a=1,b=8', 'a=1,b=16', 'a=2,b=8', 'a=2,b=16', 'a=4,b=8']);
  assert.deepEqual(withDefault({ b: 16, a: 2 }, kept).map(paramsKey), ['a=2,b=16', 'a=1,b=8', 'a=1,b=16', 'a=2,b=8', 'a=4,b=8']);
  for (const n of [1, 2, 3]) assert.equal(raggedSize(n), n);
  for (const n of [4, 8, 16, 64, 128, 768, 3072]) {
    const r = raggedSize(n);
    assert.ok(r % 2 === 1 && r < n && r >= 3, `raggedSize(${n}) = ${r}`);
  }
});

test('verification: tolerance by dtype, NaN and Inf mismatches reject, shapes must agree', () => {
  const t = (xs: number[]) => new Tensor('float32', Float32Array.from(xs), [xs.length]);
  assert.equal(mismatch([t([1, 2, 3])], [t([1, 2, 3 + 1e-6])], 1e-4), null);
  assert.match(mismatch([t([1, 2, 3.01])], [t([1, 2, 3])], 1e-4)!, /differs/);
  assert.match(mismatch([t([1, NaN, 3])], [t([1, 2, 3])], 1e-4)!, /NaN/);
  assert.match(mismatch([t([1, 2, Infinity])], [t([1, 2, 3])], 1e-4)!, /Infinity/);
  assert.match(mismatch([t([1, 2, -Infinity])], [t([1, 2, Infinity])], 1e-4)!, /Infinity/);
  assert.equal(mismatch([t([1, NaN])], [t([1, NaN])], 1e-4), null, 'NaN where the reference has NaN is right');
  assert.match(mismatch([t([1, 2])], [t([1, 2, 3])], 1e-4)!, /dims/);
  const i = (xs: number[]) => new Tensor('int32', Int32Array.from(xs), [xs.length]);
  assert.match(mismatch([i([1, 2])], [i([1, 3])], 1e-4)!, /differs/, 'integers must be exact');
});

/**
 * A fake backend for the selection logic: the node runs on the reference kernels, then each candidate's `bug` is
 * applied (a wrong value, a NaN, an element never written, so still the NaN poison), and `ms` is its "time".
 */
function fakeTarget(): TuneTarget {
  return {
    backend: 'wasm', device: 'fake-device',
    runner(graph, env, opts): TuneRunner {
      const node = graph.nodes[0];
      const exec = (feeds: Map<string, Value>): Value[] => {
        const p = opts.tune!.pick(site);
        const ins = node.inputs.map((n) => feeds.get(n) ?? graph.initializers.get(n));
        const out = runNode(node, ins, env, () => undefined) as Tensor[];
        const d = (out[0].data as Float32Array).slice();
        if (p.bug === 'off') d[0] += 1e-2;
        if (p.bug === 'nan') d[1] = NaN;
        if (p.bug === 'unwritten' && opts.poison) d[d.length - 1] = NaN;
        return [new Tensor('float32', d, out[0].dims)];
      };
      return {
        run: async (feeds) => exec(feeds),
        time: async () => opts.tune!.pick(site).ms as number,
        dispose: () => undefined,
      };
    },
  };
}

const site: TuneSite = {
  family: 'elementwise', sig: 'Add f32[4,6]',
  default: { v: 0, ms: 5 },
  space: () => ({ candidates: [{ v: 0, ms: 5 }, { v: 1, ms: 3 }, { v: 2, ms: 4 }], before: 10 }),
  ragged: (d) => d.map((x) => x.map(raggedSize)),
};

test('selection: the fastest verified candidate wins and is cached; wrong candidates are rejected however fast', async () => {
  const g = graphOfNode({ opType: 'Add', domain: '', attrs: new Map() }, [{ t: new Tensor('float32', new Float32Array(24).fill(1), [4, 6]) }, { t: new Tensor('float32', new Float32Array(24).fill(2), [4, 6]) }], 1, 17);
  const record: SiteRecord = { site, node: g.node, inputs: [{ dtype: 'float32', dims: [4, 6] }, { dtype: 'float32', dims: [4, 6] }], opset: 17 };
  const cache = new TuneCache();
  const bugs = [{ v: 9, ms: 0.1, bug: 'off' }, { v: 9, ms: 0.1, bug: 'nan' }, { v: 9, ms: 0.1, bug: 'unwritten' }];
  const progress: number[] = [];
  const report = await new Tuner(fakeTarget(), cache).tune([{ record, nodes: new Set(['a', 'b']) }], {
    extra: () => bugs, onProgress: (p) => progress.push(p.bestSpeedup),
  });
  assert.equal(report.rows.length, 1);
  const row = report.rows[0];
  assert.deepEqual(row.params, { v: 1, ms: 3 });
  assert.equal(row.rejected, 3, 'each wrong candidate was rejected');
  assert.equal(row.tried, 6);
  assert.equal(row.nodes, 2);
  assert.deepEqual([row.before, row.after], [10, 3]);
  assert.ok(Math.abs(row.defaultMs / row.tunedMs - 5 / 3) < 1e-9);
  assert.deepEqual(progress, [5 / 3]);
  assert.deepEqual(cache.get('fake-device', 'elementwise', site.sig)?.params, { v: 1, ms: 3 });
  // Cached kernels are not tuned again unless forced.
  const again = await new Tuner(fakeTarget(), cache).tune([{ record, nodes: new Set(['a']) }]);
  assert.equal(again.rows.length, 0);
});

test('tune report: a tuned session runs other kernels only when a winner changed and the whole-model check kept it', () => {
  const row = (changed: boolean): TuneRow => ({ family: 'matmul', sig: 's', nodes: 1, before: 2, after: 2, tried: 2, rejected: 0, rejections: {}, defaultMs: 1, tunedMs: changed ? 0.8 : 1, params: {}, defaultParams: {}, changed });
  const report = (rows: TuneRow[], model?: TuneReport['model']) => ({ rows, model } as unknown as TuneReport);
  assert.equal(kernelsChanged(report([row(false), row(false)])), false);
  assert.equal(kernelsChanged(report([row(false), row(true)])), true);
  assert.equal(kernelsChanged(report([row(true)], { defaultMs: 1, tunedMs: 0.9, kept: true })), true);
  assert.equal(kernelsChanged(report([row(true)], { defaultMs: 1, tunedMs: 1.1, kept: false })), false);
});

test('selection: a winner is timed with the default once more, and only that second measurement decides', async () => {
  const g = graphOfNode({ opType: 'Add', domain: '', attrs: new Map() }, [{ t: new Tensor('float32', new Float32Array(24).fill(1), [4, 6]) }, { t: new Tensor('float32', new Float32Array(24).fill(2), [4, 6]) }], 1, 17);
  const record: SiteRecord = { site, node: g.node, inputs: [{ dtype: 'float32', dims: [4, 6] }, { dtype: 'float32', dims: [4, 6] }], opset: 17 };
  // Candidate v=1 looks fast when first timed with the default (a lucky round), and is not when timed again.
  for (const [second, chosen] of [[5.5, false], [3.5, true]] as const) {
    const seen = new Map<number, number>();
    const base = fakeTarget();
    const target: TuneTarget = {
      ...base,
      async timeTogether(runners) {
        const v = (runners[1] as TuneRunner & { v: number }).v;
        const n = (seen.get(v) ?? 0) + 1;
        seen.set(v, n);
        return [5, v === 1 ? (n === 1 ? 3 : second) : 4.5];
      },
      runner(graph, env, opts) { return Object.assign(base.runner(graph, env, opts), { v: opts.tune!.pick(site).v as number }); },
    };
    const row = (await new Tuner(target, new TuneCache()).tune([{ record, nodes: new Set(['a']) }])).rows[0];
    assert.equal(seen.get(1), 2, 'the winner was timed twice');
    assert.equal(seen.get(2), 1, 'the others once');
    assert.equal(row.changed, chosen);
    assert.deepEqual(row.params, chosen ? { v: 1, ms: 3 } : site.default);
    assert.equal(row.tunedMs, chosen ? second : 5);
  }
});

test('wasm tuning target: feeds uploaded once and kept resident for timed runs, interleaved timing, nothing leaked', async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    const target = await wasmTarget(rt);
    const rnd = (n: number, s: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + s));
    const g = graphOfNode({ opType: 'MatMul', domain: '', attrs: new Map() }, [{ t: new Tensor('float32', rnd(48 * 40, 1), [48, 40]) }, { t: new Tensor('float32', rnd(40 * 24, 2), [40, 24]), constant: true }], 1, 17);
    const feedSets = [g.feeds, new Map([...g.feeds].map(([k, v]) => [k, new Tensor('float32', rnd(48 * 40, 3), (v as Tensor).dims)] as [string, Value]))];
    const before = rt.mem.bytesInUse;
    const a = target.runner(g.graph, g.env, {}), b = target.runner(g.graph, g.env, {});
    const want = runNode(g.node, [feedSets[1].get(g.node.inputs[0]), g.graph.initializers.get(g.node.inputs[1])], g.env, () => undefined)[0] as Tensor;
    await a.run(feedSets[1]);
    const t1 = await a.timedRun!(feedSets[1]);
    const resident = rt.mem.bytesInUse;
    const t2 = await a.timedRun!(feedSets[1]);
    assert.ok(t1 >= 0 && t2 >= 0);
    assert.equal(rt.mem.bytesInUse, resident, 'a second timed run on the same feeds uploads nothing');
    const [ta, tb] = await target.timeTogether!([a, b], feedSets, 5);
    assert.ok(Number.isFinite(ta) && ta > 0 && Number.isFinite(tb) && tb > 0);
    // Resident feeds leave the runner's results alone.
    const got = (await a.run(feedSets[1]))[0] as Tensor;
    assert.ok(Math.max(...Array.from(got.data as Float32Array, (x, i) => Math.abs(x - (want.data as Float32Array)[i]))) < 1e-4);
    a.dispose(); b.dispose();
    assert.equal(rt.mem.bytesInUse, before, 'every resident feed and constant released');
  } finally {
    await rt.dispose();
  }
});
