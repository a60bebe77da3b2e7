// Probe (H100): how the GPU time of one tensor-core GEMM depends on how it is timed. The tuner times a one-node graph
// through timeRuns (dispatches replayed `reps` times in one pass, the feed sets rotated); inside BERT-base b8 the same
// GEMM (1024x768x3072, 'high') takes ~0.12 ms, but the tuner measured ~0.5 ms. Found: the first ~0.1–0.4 s of GPU work after
// an idle spell run ~5× slower (low clocks), for the f32 kernel as well. Usage: node tc-timing-probe.mjs
import { gpuRunnerOf, installGpuForPeers } from '../../src/bench/gpu_env.js';
import { median } from '../../src/util/stats.js';
import { InferenceSession, Tensor } from '../../src/index.js';
import { writeModel } from '../../src/bench/onnx_writer.js';

await installGpuForPeers();
const M = Number(process.env.M ?? 1024), K = Number(process.env.K ?? 3072), N = Number(process.env.N ?? 768);
const rnd = (n: number, s: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.731 + s) * 0.5);
const model = writeModel({
  nodes: [{ op: 'MatMul', inputs: ['x', 'w'], outputs: ['m'] }, { op: 'Add', inputs: ['m', 'b'], outputs: ['y'] }],
  inputs: [{ name: 'x', dtype: 'float32', dims: [M, K] }],
  outputs: [{ name: 'y', dtype: 'float32' }],
  initializers: { w: new Tensor('float32', rnd(K * N, 1), [K, N]), b: new Tensor('float32', rnd(N, 2), [N]) },
  opset: 17,
});
for (const prec of ['highest', 'high'] as const) {
  const s = await InferenceSession.create(model, { backend: 'webgpu', matmulPrecision: prec });
  const g = gpuRunnerOf(s)!;
  const feeds = [0, 1, 2].map((k) => g.feeds({ x: new Tensor('float32', rnd(M * K, 3 + k), [M, K]) }));
  for (let i = 0; i < 3; i++) await s.run({ x: new Tensor('float32', rnd(M * K, 3), [M, K]) });
  const rows: string[] = [];
  for (const [sets, reps] of [[1, 1], [1, 5], [1, 20], [1, 100], [1, 400], [3, 20], [3, 100], [3, 400]]) {
    const t = median(await g.runner.timeRuns(feeds.slice(0, sets), reps, 5));
    rows.push(`${sets} set(s) x ${reps} reps: ${(t * 1e3).toFixed(1)} µs (${(2 * M * N * K / t / 1e9).toFixed(1)} TFLOP/s)`);
  }
  // Wall time of warm runs (replayed) for comparison.
  const x = { x: new Tensor('float32', rnd(M * K, 3), [M, K]) };
  const ts: number[] = [];
  for (let i = 0; i < 30; i++) { const t = performance.now(); await s.run(x); ts.push(performance.now() - t); }
  console.log(`${prec} ${M}x${N}x${K}: ${rows.join('; ')}; run() warm ${median(ts).toFixed(3)} ms`);
  await s.release();
}
process.exit(0);
