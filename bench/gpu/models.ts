// End-to-end GPU model bench (run on the GPU machine through Dawn): webjit webgpu against onnxruntime-web's WebGPU
// backend in the same process and on the same device: creation, first run and warm median, outputs compared with each
// other and with PyTorch's where a reference file exists. Usage: node models.mjs ORT_DIR CASE... (CASE: bert:PATH:B:S | ocr:PATH:W)
import fs from 'node:fs';
import { gpuRunnerOf, installGpuForPeers } from '../../src/bench/gpu_env.js';
import { median } from '../../src/util/stats.js';
import { InferenceSession, Tensor } from '../../src/index.js';
import { f16ToF32 } from '../../src/ops/util.js';

// One Dawn instance for both engines (webjit reuses navigator.gpu when it exists).
await installGpuForPeers();

interface Ort {
  env: { wasm: { wasmPaths?: string; numThreads?: number }; webgpu?: { powerPreference?: string } };
  InferenceSession: { create(b: Uint8Array, o: object): Promise<{ run(f: object): Promise<Record<string, { data: Float32Array; dims: readonly number[] }>>; release(): Promise<void> }> };
  Tensor: new (type: string, data: unknown, dims: number[]) => unknown;
}
const [ortDir, ...cases] = process.argv.slice(2);
const ort = (await import(`${ortDir}/ort.webgpu.mjs`)) as Ort;
ort.env.wasm.wasmPaths = `${ortDir}/`;
ort.env.wasm.numThreads = 1;

const RUNS = Number(process.env.RUNS ?? 20);

function feedsFor(kind: string, a: number, b: number): Record<string, { type: string; data: Float32Array | BigInt64Array; dims: number[] }> {
  if (kind === 'bert') {
    const n = a * b;
    const ids = BigInt64Array.from({ length: n }, (_, i) => BigInt((i * 7919 + 13) % 30000));
    const mask = BigInt64Array.from({ length: n }, (_, i) => (i % b < b - 3 ? 1n : 0n));
    return { input_ids: { type: 'int64', data: ids, dims: [a, b] }, attention_mask: { type: 'int64', data: mask, dims: [a, b] }, token_type_ids: { type: 'int64', data: new BigInt64Array(n), dims: [a, b] } };
  }
  const x = Float32Array.from({ length: 3 * 48 * a }, (_, i) => Math.sin(i * 0.37) * 0.8);
  return { x: { type: 'float32', data: x, dims: [1, 3, 48, a] } };
}

function diff(x: ArrayLike<number>, y: ArrayLike<number>): string {
  let md = 0, mx = 0;
  for (let i = 0; i < x.length; i++) { md = Math.max(md, Math.abs(x[i] - y[i])); mx = Math.max(mx, Math.abs(y[i])); }
  return (md / Math.max(mx, 1e-30)).toExponential(1);
}

for (const c of cases) {
  const [kind, path, p1, p2] = c.split(':');
  const a = Number(p1), b = Number(p2 ?? 0);
  const bytes = new Uint8Array(fs.readFileSync(path));
  const spec = feedsFor(kind, a, b);
  const label = (kind === 'bert' ? `BERT b${a} s${b}` : `PP-OCRv4 rec [1,3,48,${a}]`) + (process.env.WEBJIT_PRECISION === 'f16' ? ' (f16 weights)' : '');
  const results: Record<string, { create: number; first: number; warm: number; gpu?: number; phases?: string; out: Float32Array }> = {};
  // webjit, in each variant of WEBJIT_VARIANTS (comma-separated: f32, high = matmulPrecision 'high', f16 = precision
  // 'f16'; default f32, or WEBJIT_PRECISION).
  for (const v of (process.env.WEBJIT_VARIANTS ?? (process.env.WEBJIT_PRECISION === 'f16' ? 'f16' : 'f32')).split(',')) {
    const t0 = performance.now();
    const s = await InferenceSession.create(bytes, { backend: 'webgpu', precision: v === 'f16' ? 'f16' : 'f32', matmulPrecision: v === 'high' ? 'high' : 'highest' });
    const tc = performance.now() - t0;
    const feeds = Object.fromEntries(Object.entries(spec).map(([k, v]) => [k, new Tensor(v.type as 'float32', v.data, v.dims)]));
    let t1 = performance.now();
    let out = await s.run(feeds);
    const first = performance.now() - t1;
    const ts: number[] = [];
    const ph0 = { ...s.gpuStats!.phaseMs };
    for (let i = 0; i < RUNS; i++) { t1 = performance.now(); out = await s.run(feeds); ts.push(performance.now() - t1); }
    const ph = s.gpuStats!.phaseMs;
    const phases = (Object.keys(ph) as (keyof typeof ph)[]).map((k) => `${k} ${((ph[k] - ph0[k]) / RUNS).toFixed(2)}`).join(', ');
    // The GPU's own time for a run: its dispatches recorded once and replayed 20 times in one pass (timestamps), so
    // warm minus this is what the host adds (recording, submits, the read-back's round trip).
    const g = gpuRunnerOf(s)!;
    const gpuMs = await g.runner.timeRuns([g.feeds(feeds)], 20, 5).then(median, () => undefined);
    // WEBJIT_ABLATE=1: the GPU time of each kind of kernel inside the run (op type and grid), its dispatches alone
    // replayed in one pass: where the GPU time goes, without a profile's pass per dispatch.
    if (process.env.WEBJIT_ABLATE) {
      const kinds = new Map<string, number>();
      for (const c of g.runner.traceDispatches() ?? []) { const k = `${c.node.opType} ${c.dispatch.groups.join('x')}`; kinds.set(k, (kinds.get(k) ?? 0) + 1); }
      const rows: [string, number, number][] = [];
      for (const [k, n] of kinds) {
        const t = await g.runner.timeTrace((node, d) => `${node.opType} ${d.groups.join('x')}` === k, 20, 3);
        if (t) rows.push([k, n, median(t)]);
      }
      const sum = rows.reduce((a, r) => a + r[2], 0);
      console.log(`  ${v}: GPU time by kernel kind, each alone in one pass (sum ${sum.toFixed(2)} ms, whole run ${gpuMs?.toFixed(2)} ms)`);
      for (const [k, n, t] of rows.sort((a, b) => b[2] - a[2])) console.log(`    ${(t * 1e3).toFixed(1).padStart(8)} µs/run  x${n}  ${k}`);
    }
    const st = s.gpuStats!;
    console.log(`  webjit ${v} stats: gpu ${st.gpuNodes / (RUNS + 1)} cpu ${st.cpuNodes / (RUNS + 1)} fallback ${st.fallbackNodes / (RUNS + 1)} [${[...st.fallbackOps.keys()].join(' ')}] mid-run reads ${st.midRunReads / (RUNS + 1)}`);
    // A variant listed again (interleaved rounds against load drift) gets its round number.
    const base = v === 'f32' ? 'webjit' : `webjit-${v}`;
    let key = base;
    for (let r = 2; key in results; r++) key = `${base}#${r}`;
    results[key] = { create: tc, first, warm: median(ts), gpu: gpuMs, phases, out: out[s.outputNames[0]].data as Float32Array };
    await s.release();
  }
  // onnxruntime-web WebGPU; with ORT_F16=1 also on the f16 export beside the model (torch_bert.py writes
  // encoder-base-f16.onnx): the like-for-like peer of webjit's precision 'f16'.
  const f16Path = path.replace(/\.onnx$/, '-f16.onnx');
  const ortRuns: [string, Uint8Array][] = [['ort', bytes]];
  if (process.env.ORT_F16 && kind === 'bert' && fs.existsSync(f16Path)) ortRuns.push(['ort-f16', new Uint8Array(fs.readFileSync(f16Path))]);
  if (!process.env.WEBJIT_ONLY) for (const [ortName, ortBytes] of ortRuns) try {
    const t0 = performance.now();
    const s = await ort.InferenceSession.create(ortBytes, { executionProviders: ['webgpu'] });
    const tc = performance.now() - t0;
    const feeds = Object.fromEntries(Object.entries(spec).map(([k, v]) => [k, new ort.Tensor(v.type, v.data.slice(), v.dims)]));
    let t1 = performance.now();
    let out = await s.run(feeds);
    const first = performance.now() - t1;
    const ts: number[] = [];
    for (let i = 0; i < RUNS; i++) { t1 = performance.now(); out = await s.run(feeds); ts.push(performance.now() - t1); }
    // ORT_SERIES=N: the median of every N runs, to see how long onnxruntime-web takes to reach its steady state.
    const series = Number(process.env.ORT_SERIES ?? 0);
    if (series) console.log(`  onnxruntime-web medians per ${series} runs: ${Array.from({ length: Math.floor(ts.length / series) }, (_, k) => median(ts.slice(k * series, (k + 1) * series)).toFixed(1)).join(' ')}`);
    const o = Object.values(out)[0];
    // An f16 output (bits, or a Float16Array where the runtime has one) as f32 values.
    const od = o.data as ArrayLike<number>;
    const vals = od instanceof Uint16Array ? Float32Array.from(od, f16ToF32) : Float32Array.from(od);
    results[ortName] = { create: tc, first, warm: median(ts), out: vals };
    await s.release();
  } catch (e) {
    console.log(`  onnxruntime-web webgpu (${ortName}) failed: ${(e as Error).message.slice(0, 300)}`);
  }
  const ref = kind === 'bert' && fs.existsSync(`${path}.b${a}s${b}.f32`) ? new Float32Array(fs.readFileSync(`${path}.b${a}s${b}.f32`).buffer.slice(0)) : null;
  for (const [name, r] of Object.entries(results)) {
    console.log(`${label} ${name.padEnd(11)} create ${r.create.toFixed(0).padStart(6)} ms  first ${r.first.toFixed(0).padStart(6)} ms  warm ${r.warm.toFixed(2).padStart(8)} ms${r.gpu ? ` (GPU ${r.gpu.toFixed(2)}; host: ${r.phases})` : ''}` +
      `${ref ? `  vs torch ${diff(r.out, ref)}` : ''}${name !== 'webjit' && results.webjit ? `  vs webjit f32 ${diff(r.out, results.webjit.out)}` : ''}`);
  }
  for (const [name, r] of Object.entries(results)) {
    if (!results.ort || !name.startsWith('webjit')) continue;
    console.log(`${label} ${name} speedup over onnxruntime-web webgpu: ${(results.ort.warm / r.warm).toFixed(2)}x warm, cold (create+first) ${((results.ort.create + results.ort.first) / (r.create + r.first)).toFixed(1)}x`);
    const o16 = results['ort-f16'];
    if (o16 && name.startsWith('webjit-f16')) console.log(`${label} ${name} speedup over onnxruntime-web webgpu on the f16 model: ${(o16.warm / r.warm).toFixed(2)}x warm, cold (create+first) ${((o16.create + o16.first) / (r.create + r.first)).toFixed(1)}x`);
  }
}
process.exit(0);
