// The benchmark suite's own machinery: the ONNX writer, the op cases, and an end-to-end `webjit bench` run that
// must check every engine's output and write the JSON and HTML reports.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GraphExecutor } from '../src/backends/reference/executor.js';
import { opCases, opModel } from '../src/bench/ops.js';
import { writeModel } from '../src/bench/onnx_writer.js';
import { loadModel } from '../src/onnx/load.js';
import { Tensor } from '../src/tensor.js';
import { ortRun, relErr, ROOT } from './helpers.js';

test('the ONNX writer round-trips through the loader: nodes, attributes, initializers, typed inputs', async () => {
  const w = new Tensor('float32', Float32Array.from({ length: 6 }, (_, i) => i - 2.5), [2, 3]);
  const bytes = writeModel({
    nodes: [
      { op: 'MatMul', inputs: ['x', 'w'], outputs: ['m'] },
      { op: 'LeakyRelu', inputs: ['m'], outputs: ['l'], attrs: { alpha: { float: 0.25 } } },
      { op: 'Transpose', inputs: ['l'], outputs: ['y'], attrs: { perm: [1, 0] } },
    ],
    inputs: [{ name: 'x', dtype: 'float32', dims: [4, 2] }], outputs: [{ name: 'y', dtype: 'float32' }], initializers: { w },
  });
  const m = await loadModel(bytes);
  assert.deepEqual(m.graph.nodes.map((n) => n.opType), ['MatMul', 'LeakyRelu', 'Transpose']);
  assert.equal(m.graph.nodes[1].attrs.get('alpha')?.value, 0.25);
  assert.deepEqual(m.graph.nodes[2].attrs.get('perm')?.value, [1, 0]);
  assert.deepEqual([...(m.graph.initializers.get('w')!.data as Float32Array)], [...(w.data as Float32Array)]);
  const x = new Tensor('float32', Float32Array.from({ length: 8 }, (_, i) => i * 0.5 - 1), [4, 2]);
  const [y] = new GraphExecutor(m.graph, m).run(new Map([['x', x]])) as Tensor[];
  const want = (await ortRun(bytes, { x })).y;
  assert.deepEqual(y.dims, [3, 4]);
  assert.ok(relErr(y, want) <= 1e-6);
});

test('every op case is a valid model whose small cases agree between the reference backend and onnxruntime-node', async () => {
  for (const c of opCases()) {
    const m = await loadModel(opModel(c));
    assert.ok(m.graph.nodes.length >= 1, c.name);
    assert.ok(c.flops || c.bytes, `${c.name} has a throughput measure`);
    const size = Object.values(c.feeds()).reduce((s, t) => s + t.size, 0);
    if (size > 300_000 || (c.flops ?? 0) > 5e7) continue; // the reference backend is the oracle, not fast
    const feeds = c.feeds();
    const got = new GraphExecutor(m.graph, m).run(new Map(Object.entries(feeds))) as Tensor[];
    const want = await ortRun(opModel(c), feeds);
    assert.ok(relErr(got[0], want[c.graph.outputs[0].name]) <= 1e-5, c.name);
  }
});

test('webjit bench --only ops checks every engine and writes JSON and an HTML report with charts', { timeout: 180_000 }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webjit-bench-'));
  const json = path.join(dir, 'r.json'), html = path.join(dir, 'r.html');
  const out = execFileSync(process.execPath, [path.join(ROOT, 'bin/webjit.js'), 'bench', '--only', 'ops', '--quick', '--rounds', '1',
    '--filter', 'Transpose|LayerNorm', '--json', json, '--html', html], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  assert.match(out, /geometric mean, [\d.]+× the best web peer over 2 cases/);
  const r = JSON.parse(fs.readFileSync(json, 'utf8'));
  const engines = new Set(r.rows.map((x: { engine: string }) => x.engine));
  for (const e of ['webjit wasm 2t', 'onnxruntime-web wasm 2t', 'onnxruntime-node 2t', 'TensorFlow.js wasm 1t']) assert.ok(engines.has(e), e);
  for (const row of r.rows) {
    assert.equal(row.check, 'ok', `${row.name} on ${row.engine}: ${row.check} ${row.error ?? ''}`);
    assert.ok(row.medianMs > 0 && row.minMs <= row.medianMs && row.medianMs <= row.maxMs);
    if (row.engine.startsWith('webjit')) assert.ok(row.vsBest.ratio > 0 && row.vsWeb.ratio > 0 && row.gbs > 0);
  }
  const page = fs.readFileSync(html, 'utf8');
  assert.match(page, /<svg[^>]*>.*<rect/s);
  assert.match(page, /LayerNormalization \[128,768\]/);
  assert.match(page, new RegExp(r.commit));
  fs.rmSync(dir, { recursive: true });
});

test('webjit bench --suite gpu puts webjit webgpu (host and resident) against onnxruntime-web and TensorFlow.js on WebGPU, checked against onnxruntime-node', { timeout: 300_000 }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webjit-bench-gpu-'));
  const json = path.join(dir, 'r.json'), html = path.join(dir, 'r.html');
  // No Python peers here: the suite must say so, not fail (the GPU machine has onnxruntime and PyTorch in Python).
  const out = execFileSync(process.execPath, [path.join(ROOT, 'bin/webjit.js'), 'bench', '--suite', 'gpu', '--only', 'ops', '--quick', '--rounds', '1',
    '--filter', 'Transpose', '--json', json, '--html', html], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, WEBJIT_PYTHON: '/nonexistent/python3' } });
  assert.match(out, /geometric mean, [\d.]+× the best web peer over 1 cases/);
  assert.match(out, /PyTorch with CUDA is not available here/);
  const r = JSON.parse(fs.readFileSync(json, 'utf8'));
  assert.equal(r.suite, 'gpu');
  assert.equal(r.tolerance, 1e-3);
  const engines = new Set(r.rows.map((x: { engine: string }) => x.engine));
  for (const e of ['webjit webgpu', 'webjit webgpu resident', 'onnxruntime-web webgpu', 'TensorFlow.js webgpu', `onnxruntime-node ${os.availableParallelism()}t`]) assert.ok(engines.has(e), e);
  for (const row of r.rows) {
    assert.equal(row.check, 'ok', `${row.name} on ${row.engine}: ${row.check} ${row.error ?? ''}`);
    assert.ok(row.medianMs > 0 && row.minMs <= row.medianMs && row.medianMs <= row.maxMs);
  }
  const host = r.rows.find((x: { engine: string }) => x.engine === 'webjit webgpu');
  // Host rows are compared with the host peers; the resident row has no resident peer without PyTorch.
  assert.ok(host.vsWeb.ratio > 0 && host.vsBest.ratio > 0);
  assert.equal(r.rows.find((x: { engine: string }) => x.engine === 'webjit webgpu resident').vsBest, undefined);
  assert.match(fs.readFileSync(html, 'utf8'), /GPU suite/);
  fs.rmSync(dir, { recursive: true });
});

test('bench/peer.py interprets the op suite with PyTorch and agrees with onnxruntime-node (where Python has PyTorch)', { timeout: 120_000 }, async (t) => {
  const { PythonPeer } = await import('../src/bench/python_peer.js');
  process.env.WEBJIT_PEER_TORCH_CPU = '1'; // Debian's python3-torch (CPU) where it is installed
  const { peer, have } = await PythonPeer.start(path.join(ROOT, 'bench', 'peer.py'));
  try {
    if (!have.torch) {
      // The GPU machine has PyTorch; here only Debian's python3-torch would run it.
      t.skip('no PyTorch in python3 here');
      return;
    }
    // One case per op the interpreter maps (MatMul, Conv with stride and groups, Mul/Add/Softmax, LayerNormalization,
    // Div/Erf, ReduceSum, Transpose, Gather): the full suite on a CPU PyTorch takes minutes.
    const pick = /decode 4|s2|Depthwise|Attention causal|LayerNorm|GELU|ReduceSum|Transpose|Gather/;
    for (const c of opCases().filter((x) => pick.test(x.name))) {
      const feeds = c.feeds();
      const want = (await ortRun(opModel(c), feeds))[c.graph.outputs[0].name];
      for (const kind of ['torch', 'torch-resident'] as const) {
        const s = await peer.engine(kind, 'PyTorch').create(opModel(c));
        const got = (await s.run(feeds))[c.graph.outputs[0].name];
        assert.ok(relErr(got, want) <= 1e-4, `${c.name} (${kind}): ${relErr(got, want)}`);
        const times = await s.selfTimed!.timeRuns(feeds, { warmupMs: 0, minRuns: 2, minMs: 0 });
        assert.ok(times.length >= 2 && times.every((x) => x > 0));
        await s.release();
      }
    }
  } finally {
    peer.close();
  }
});
