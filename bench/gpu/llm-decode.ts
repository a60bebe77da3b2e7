// Decode speed of webjit's WebGPU LLM runtime on a big random Llama (default: TinyLlama-1.1B's shapes, q4 g32), as
// tokens/s and as weight bytes read per second against the memory roofline, plus the matrix-vector kernel alone at
// N = K = 8192 and at the model's shapes (with a sweep of its shapes). Every kernel timed is checked on sampled rows.
// Usage: node llm-decode.mjs [--small]   (--small: a small model and matrices, for software drivers)
// Env: LLM_HIDDEN LLM_LAYERS LLM_INTER LLM_VOCAB LLM_HEADS LLM_KV LLM_HEADDIM LLM_BITS LLM_GROUP LLM_STEPS
//      ROOFLINE_GBS (default 3350: H100 SXM HBM3) LLM_SWEEP=0 (no shape sweep) LLM_SHAPE=RT,TK,RG[,UN[,XT]] (force every decode GEMV)
//      LLM_ACT=int8 (W4A8 decode) LLM_ONLY=decode|gemv LLM_CHECK=1 (compare greedy ids with the TypeScript reference; slow on big models)
import { acquireGpu } from '../../src/backends/webgpu/device.js';
import { layerShapes, randomQuantLlama, randomQuantMatrix } from '../../src/llm/random_model.js';
import { ReferenceLlm } from '../../src/llm/reference.js';
import { bytesPerToken, dequantRow, type LlamaConfig, type QBits, type QuantMatrix } from '../../src/llm/types.js';
import { WebGpuLlm, gemvShapeFor, llmGpuConfig, packMatrix, probeSubgroups, stagedTile } from '../../src/llm/webgpu.js';
import { META_IDS, gemvKernel, gemvWorkgroupBytes, matLayout, type GemvShape, type GemvSpec } from '../../src/llm/wgsl.js';
import { mulberry32 } from '../../src/util/random.js';

const small = process.argv.includes('--small');
const env = (k: string, d: number) => (process.env[k] ? Number(process.env[k]) : d);
const ROOF = env('ROOFLINE_GBS', 3350);
const bits = env('LLM_BITS', 4) as QBits, group = env('LLM_GROUP', 32);
const only = process.env.LLM_ONLY;
if (process.env.LLM_SHAPE) {
  const [RT, TK, RG, UN, XT] = process.env.LLM_SHAPE.split(',').map(Number);
  llmGpuConfig.shape = (_role, _u, TB) => (TB === 1 ? { RT, TK, RG, UN: UN || 1, ...(XT === undefined ? {} : { XT }) } : undefined);
  if (TK) llmGpuConfig.TK = TK;
}

const { device, caps } = await acquireGpu();
console.log(`adapter: ${caps.name}; subgroups ${caps.subgroups}; timestamps ${caps.timestamps}; software ${caps.software}`);
const probe = caps.subgroups ? await probeSubgroups(device) : { ok: false, maxSize: 0 };
console.log(`subgroup probe: ${probe.ok ? 'ok' : 'not usable'}, max size ${probe.maxSize}`);
const fmt = (x: number) => (x >= 100 ? x.toFixed(0) : x.toPrecision(3));
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const summary: Record<string, unknown> = { device: caps.name, bits, group, roofline_gbs: ROOF };

const cfg: LlamaConfig = {
  vocab: env('LLM_VOCAB', small ? 1000 : 32000), hidden: env('LLM_HIDDEN', small ? 256 : 2048), intermediate: env('LLM_INTER', small ? 512 : 5632),
  layers: env('LLM_LAYERS', small ? 2 : 22), heads: env('LLM_HEADS', small ? 4 : 32), kvHeads: env('LLM_KV', small ? 2 : 4), headDim: env('LLM_HEADDIM', 64),
  maxPositions: 2048, ropeTheta: 10000, rmsEps: 1e-5,
};

// --- The matrix-vector kernel alone -----------------------------------------------------------------------------

/** Compiled GEMV kernels by code (the warm-up and the default's three timings reuse them). */
const pipelines = new Map<string, Promise<GPUComputePipeline>>();

/** Times y = W x (the head's kernel: no prologue or epilogue) and checks 16 sampled rows against the CPU. */
async function timeGemv(m: QuantMatrix, shape: GemvShape, Ws: GPUBuffer[], x: Float32Array, bufs: { meta: GPUBuffer; X: GPUBuffer; OUT: GPUBuffer }) {
  const layout = matLayout('q', bits, group, m.N, m.K, true);
  const base = { m: layout, norm: false, eps: 1e-5, gather: false, epi: { kind: 'head' as const }, sg: probe.ok };
  let spec: GemvSpec = { ...base, ...shape };
  if (spec.sg && spec.TK < probe.maxSize) spec = { ...spec, sg: false };
  if (gemvWorkgroupBytes(spec) > caps.maxWorkgroupStorage || spec.TK * spec.RG > caps.maxInvocations) return null;
  const code = gemvKernel(spec);
  if (!pipelines.has(code)) pipelines.set(code, device.createComputePipelineAsync({ layout: 'auto', compute: { module: device.createShaderModule({ code }), entryPoint: 'main' } }));
  const pipeline = await pipelines.get(code)!;
  const binds = Ws.map((W) => device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [bufs.meta, W, bufs.X, bufs.OUT].map((buffer, binding) => ({ binding, resource: { buffer } })) }));
  const groups = Math.ceil(m.N / (spec.RT * spec.RG));
  const qs = caps.timestamps ? device.createQuerySet({ type: 'timestamp', count: 2 }) : null;
  const qbuf = qs ? device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC }) : null;
  const qread = qs ? device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST }) : null;
  const reps = small ? 5 : Math.max(50, 2 * Ws.length);
  const times: number[] = [];
  for (let round = 0; round < 6; round++) {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass(qs ? { timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } } : undefined);
    pass.setPipeline(pipeline);
    for (let i = 0; i < reps; i++) { pass.setBindGroup(0, binds[i % binds.length]); pass.dispatchWorkgroups(groups); }
    pass.end();
    if (qs) { enc.resolveQuerySet(qs, 0, 2, qbuf!, 0); enc.copyBufferToBuffer(qbuf!, 0, qread!, 0, 16); }
    const t0 = performance.now();
    device.queue.submit([enc.finish()]);
    await device.queue.onSubmittedWorkDone();
    const wall = performance.now() - t0;
    let ms = wall;
    if (qread) {
      await qread.mapAsync(GPUMapMode.READ);
      const t = new BigInt64Array(qread.getMappedRange().slice(0));
      qread.unmap();
      ms = Number(t[1] - t[0]) / 1e6;
    }
    if (round > 0) times.push(ms / reps);
  }
  qs?.destroy(); qbuf?.destroy(); qread?.destroy();
  // Check sampled rows.
  const rd = device.createBuffer({ size: m.N * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const enc = device.createCommandEncoder();
  enc.copyBufferToBuffer(bufs.OUT, 0, rd, 0, m.N * 4);
  device.queue.submit([enc.finish()]);
  await rd.mapAsync(GPUMapMode.READ);
  const y = new Float32Array(rd.getMappedRange().slice(0));
  rd.destroy();
  const row = new Float32Array(m.K);
  let worst = 0;
  for (let s = 0; s < 16; s++) {
    const n = Math.floor((s * m.N) / 16 + (s * 7919) % Math.max(1, Math.floor(m.N / 16)));
    dequantRow(m, n, row);
    let want = 0, mag = 0;
    for (let k = 0; k < m.K; k++) { want += row[k] * x[k]; mag += Math.abs(row[k] * x[k]); }
    worst = Math.max(worst, Math.abs(y[n] - want) / (mag + 1e-30));
  }
  if (!(worst < 1e-4)) throw new Error(`GEMV ${m.N}x${m.K} shape ${JSON.stringify(shape)}: row error ${worst} (relative to Σ|w·x|)`);
  const ms = med(times);
  const bytes = layout.words * 4 + m.K * 4 + m.N * 4;
  return { ms, gbs: bytes / ms / 1e6, spec };
}

async function gemvBench(): Promise<void> {
  const shapes: [string, number, number][] = small
    ? [['1024x1024', 1024, 1024], ['2048x512', 2048, 512]]
    : (() => {
      const D = cfg.hidden, F = cfg.intermediate, QD = cfg.heads * cfg.headDim, KVD = cfg.kvHeads * cfg.headDim;
      const mat = (what: string, N: number, K: number): [string, number, number] => [`${what} ${N}x${K}`, N, K];
      return [mat('', 8192, 8192), mat('qkv', QD + 2 * KVD, D), mat('o', D, QD), mat('gate+up', 2 * F, D), mat('down', D, F), mat('head', cfg.vocab, D)];
    })();
  const sweep = process.env.LLM_SWEEP ? process.env.LLM_SWEEP !== '0' : !small;
  console.log(`\nGEMV y = W x, ${bits}-bit g${group}, one token; GB/s = (the bytes the kernel reads: weights, f16 scales, zeros, x; and writes: y) / kernel time${caps.timestamps ? ' (GPU timestamps over a pass of repeated dispatches)' : ' (wall clock)'}`);
  for (const [name, N, K] of shapes) {
    const m = randomQuantMatrix(N, K, bits, group, N + K);
    const packed = packMatrix(m);
    const mk = (bytes: number, usage: number) => device.createBuffer({ size: Math.max(16, bytes), usage: GPUBufferUsage.STORAGE | usage });
    // Cold: enough copies of W, dispatched in turn, that the L2 cache (50 MB on the H100) cannot hold them, as in a
    // model's forward; warm: one copy, repeated (cache-flattered for matrices that fit in L2).
    const copies = small ? 1 : Math.max(1, Math.ceil((256 << 20) / packed.words.byteLength));
    const Ws = Array.from({ length: copies }, () => {
      const W = mk(packed.words.byteLength, GPUBufferUsage.COPY_DST);
      device.queue.writeBuffer(W, 0, packed.words);
      return W;
    });
    const r = mulberry32(3);
    const x = Float32Array.from({ length: K }, () => r() * 2 - 1);
    const X = mk(K * 4, GPUBufferUsage.COPY_DST);
    device.queue.writeBuffer(X, 0, x);
    const meta = mk((META_IDS + 1) * 4, GPUBufferUsage.COPY_DST);
    device.queue.writeBuffer(meta, 0, new Uint32Array([1, 0, 0, 1, 0, 0, 0, 0, 0]));
    const OUT = mk(N * 4, GPUBufferUsage.COPY_SRC);
    const bufs = { meta, X, OUT };
    const base = { m: packed.layout, norm: false, eps: 1e-5, gather: false, epi: { kind: 'head' as const }, sg: probe.ok };
    const def = gemvShapeFor('head', base, 1, { maxWorkgroupStorage: caps.maxWorkgroupStorage, subgroupMax: probe.maxSize, maxInvocations: caps.maxInvocations });
    const tag = (s: GemvShape) => `RT${s.RT} TK${s.TK} RG${s.RG} UN${s.UN ?? 1} XT${s.XT ?? 0}`;
    // The GPU's clocks rise under load: keep it busy ~0.3 s before the first timing (else the first shape timed pays).
    for (const t0 = performance.now(); performance.now() - t0 < 300;) await timeGemv(m, def, Ws, x, bufs);
    const warm = await timeGemv(m, def, Ws.slice(0, 1), x, bufs);
    const d = await timeGemv(m, def, Ws, x, bufs);
    const old = await timeGemv(m, { ...def, XT: 0 }, Ws, x, bufs);
    console.log(`${name.padEnd(20)} default ${tag(def).padEnd(22)} cold (${copies} copies) ${d!.ms.toFixed(4)} ms ${fmt(d!.gbs).padStart(5)} GB/s = ${((100 * d!.gbs) / ROOF).toFixed(1)}% of ${ROOF}; warm ${fmt(warm!.gbs)} GB/s; x from storage ${fmt(old!.gbs)} GB/s`);
    summary[`gemv ${name}`] = { shape: tag(def), ms: d!.ms, gbs: d!.gbs, warmGbs: warm!.gbs, unstagedGbs: old!.gbs };
    if (sweep) {
      const results: { s: GemvShape; ms: number; gbs: number }[] = [];
      for (const RT of [1, 2, 4]) for (const TK of [32, 64]) for (const RG of [1, 2, 4, 8]) for (const UN of [1, 2, 4]) {
        if (TK * RG > 512) continue;
        const shape: GemvShape = { TB: 1, RT, TK, RG, UN };
        const s: GemvShape = { ...shape, XT: stagedTile({ ...base, ...shape }, caps.maxWorkgroupStorage) };
        const t = await timeGemv(m, s, Ws, x, bufs);
        if (t) results.push({ s, ms: t.ms, gbs: t.gbs });
      }
      results.sort((a, b) => a.ms - b.ms);
      console.log(`${''.padEnd(20)} sweep of ${results.length}: best ${results.slice(0, 4).map((b) => `${tag(b.s)} ${fmt(b.gbs)} GB/s`).join(' | ')}; worst ${results.length ? fmt(results[results.length - 1].gbs) : '-'} GB/s`);
      if (results.length) summary[`gemv ${name} best`] = { shape: tag(results[0].s), ms: results[0].ms, gbs: results[0].gbs };
    }
    for (const b of [...Ws, X, meta, OUT]) b.destroy();
  }
}

// --- Decoding ---------------------------------------------------------------------------------------------------

async function decodeBench(): Promise<void> {
  let t = performance.now();
  const w = randomQuantLlama(cfg, bits, group, 1);
  const genMs = performance.now() - t;
  console.log(`\nmodel: ${JSON.stringify(cfg)} ${w.quant}; made in ${genMs.toFixed(0)} ms`);
  t = performance.now();
  const r = await WebGpuLlm.create(w, { capacity: 1024, activations: process.env.LLM_ACT === 'int8' ? 'int8' : 'f32' });
  // GB/s from the bytes the runner reads (f16 scales); types.ts's bytesPerToken (f32 scales) for reference.
  const bytes = r.weightBytesPerToken;
  console.log(`weights read per token: ${(bytes / 1e6).toFixed(1)} MB as uploaded (bytesPerToken of the f32-scale format: ${(bytesPerToken(w) / 1e6).toFixed(1)} MB)`);
  summary.bytesPerToken = bytes;
  console.log(`create (upload + ${r.stats.pipelines} pipelines): ${(performance.now() - t).toFixed(0)} ms; subgroups ${r.subgroups}; token buckets ${r.buckets.join(',')}; activations ${r.activations}`);
  const rnd = mulberry32(9);
  const prompt = Array.from({ length: 16 }, () => Math.floor(rnd() * cfg.vocab));
  const steps = env('LLM_STEPS', small ? 16 : 256);
  const report = (what: string, msPerToken: number) => {
    const gbs = bytes / msPerToken / 1e6;
    console.log(`${what.padEnd(44)} ${msPerToken.toFixed(3).padStart(8)} ms/token ${(1000 / msPerToken).toFixed(1).padStart(8)} tokens/s ${fmt(gbs).padStart(6)} GB/s = ${((100 * gbs) / ROOF).toFixed(1).padStart(5)}% of roofline`);
    summary[what] = { msPerToken, tokensPerSecond: 1000 / msPerToken, gbs, roofline: gbs / ROOF };
  };

  // greedy(): one forward, argmax on the GPU, 4 bytes read back per token.
  let id = await r.greedy(prompt);
  for (let i = 0; i < 4; i++) id = await r.greedy([id]);
  r.truncate(prompt.length);
  id = await r.greedy([prompt[prompt.length - 1]]);
  const seq: number[] = [];
  t = performance.now();
  for (let s = 0; s < steps; s++) { id = await r.greedy([id]); seq.push(id); }
  report(`greedy() x${steps} (read-back per token)`, (performance.now() - t) / steps);
  console.log(`dispatches per token: ${r.stats.dispatchesLastForward}`);

  // generateGreedy: the steps' argmax feeds the next on the GPU; one read-back.
  r.truncate(0);
  await r.generateGreedy(prompt, 8);
  r.truncate(0);
  t = performance.now();
  const gen = await r.generateGreedy(prompt, steps + 1);
  const genTotal = performance.now() - t;
  r.truncate(0);
  t = performance.now();
  await r.forward(prompt);
  const promptMs = performance.now() - t;
  report(`generateGreedy x${steps} (no read-back per token)`, (genTotal - promptMs) / steps);
  if (process.env.LLM_CHECK === '1' || small) {
    // greedy() continued from the prompt's argmax; generateGreedy's first id is that argmax.
    r.truncate(0);
    const g0 = await r.greedy(prompt);
    const again: number[] = [];
    let x = g0;
    for (let s = 0; s < Math.min(steps, 8); s++) { x = await r.greedy([x]); again.push(x); }
    const ref = new ReferenceLlm(w, 64);
    const refIds: number[] = [];
    let logits = await ref.forward(prompt);
    const am = (l: Float32Array) => l.reduce((b, v, i) => (v > l[b] ? i : b), 0);
    for (let s = 0; s <= Math.min(steps, 8); s++) { const k = am(logits); refIds.push(k); if (s < Math.min(steps, 8)) logits = await ref.forward([k]); }
    const ok = JSON.stringify(refIds) === JSON.stringify([g0, ...again]) && JSON.stringify(gen.slice(0, refIds.length)) === JSON.stringify(refIds);
    console.log(`check against the TypeScript reference, ${refIds.length} greedy ids: ${ok ? 'equal' : `DIFFER ref ${refIds} gpu ${[g0, ...again]} gen ${gen.slice(0, refIds.length)}`}`);
    summary.check = ok;
  }

  // GPU time of one decode forward (timestamps around the compute pass).
  if (caps.timestamps) {
    r.truncate(prompt.length);
    r.timing = true;
    const g: number[] = [];
    for (let s = 0; s < 40; s++) { await r.forward([seq[s % seq.length]]); g.push(r.stats.gpuMsLastForward); }
    r.timing = false;
    report('GPU time of a decode forward (timestamps)', med(g.slice(5)));
  }

  // Speculative verification (T tokens, argmax per position) after 80 cached positions, and prefill.
  r.truncate(prompt.length);
  await r.forward(Array.from({ length: 64 }, () => Math.floor(rnd() * cfg.vocab)));
  // Where a forward's GPU time goes: every dispatch timed in a pass of its own (so the sum exceeds the one-pass time by
  // the passes' own cost), per kernel role, for T = 1 (decode) and the verification sizes.
  if (caps.timestamps) {
    for (const T of [1, 5, 16]) {
      const runs: { name: string; ms: number; count: number }[][] = [];
      for (let it = 0; it < 7; it++) {
        r.truncate(prompt.length + 64);
        runs.push(await r.profileForward(seq.slice(0, T)));
      }
      const rows = runs[0].map((e, i) => ({ ...e, ms: med(runs.slice(2).map((x) => x[i].ms)) }));
      const total = rows.reduce((a, e) => a + e.ms, 0);
      console.log(`profile T=${T} after ${prompt.length + 64} cached (dispatches in passes of their own): ${total.toFixed(3)} ms; ${rows.map((e) => `${e.name} ${e.ms.toFixed(3)} ms/${e.count} = ${((1000 * e.ms) / e.count).toFixed(1)} us each (${((100 * e.ms) / total).toFixed(0)}%)`).join('; ')}`);
      summary[`profile T=${T}`] = rows;
    }
  }

  for (const T of [5, 16]) {
    const xs: number[] = [];
    for (let it = 0; it < 8; it++) {
      r.truncate(prompt.length + 64);
      const a = performance.now();
      await r.forwardArgmaxAll(seq.slice(0, T));
      xs.push(performance.now() - a);
    }
    const ms = med(xs.slice(2));
    console.log(`${`forwardArgmaxAll, T=${T} after 80 cached`.padEnd(44)} ${ms.toFixed(3).padStart(8)} ms (${(ms / T).toFixed(3)} ms per position)`);
    summary[`verify T=${T}`] = { ms };
  }
  const P = small ? 64 : 256;
  const long = Array.from({ length: P }, () => Math.floor(rnd() * cfg.vocab));
  const ps: number[] = [];
  for (let it = 0; it < 4; it++) {
    r.truncate(0);
    const a = performance.now();
    await r.forward(long);
    ps.push(performance.now() - a);
  }
  const pm = med(ps.slice(1));
  const params = cfg.layers * Object.values(layerShapes(cfg)).reduce((a, [N, K]) => a + N * K, 0) + cfg.vocab * cfg.hidden;
  const flops = 2 * P * params;
  console.log(`${`prefill ${P} tokens`.padEnd(44)} ${pm.toFixed(1).padStart(8)} ms ${((P / pm) * 1000).toFixed(0).padStart(8)} tokens/s  ~${(flops / pm / 1e9).toFixed(2)} TFLOP/s`);
  summary[`prefill ${P}`] = { ms: pm, tokensPerSecond: (P / pm) * 1000 };
  await r.release();
}

if (only !== 'decode') await gemvBench();
if (only !== 'gemv') await decodeBench();
console.log(`\nsummary ${JSON.stringify(summary)}`);
// Dawn keeps the process alive; exit once stdout (a pipe on the GPU machine) has flushed.
process.stdout.write('', () => process.exit(0));
