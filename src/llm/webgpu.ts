// The WebGPU runtime of decoder LLMs: weights uploaded once, the KV cache preallocated and written in place, kernels
// generated for the model's shapes (wgsl.ts) and compiled once at create, one command encoder and one submit per
// forward() (per maxT tokens), and only the logits (or argmax ids) read back.
import { acquireGpu, checkLost, hasDot4, type GpuContext } from '../backends/webgpu/device.js';
import { ExecutionError, InputError, ResourceLimitError, UnsupportedError } from '../errors.js';
import { f16ToF32, f32ToF16 } from '../ops/util.js';
import { checkForward, checkTruncate, ropeTables } from './reference.js';
import { registerLlmBackend } from './registry.js';
import { tinyDecodeKernel, tinyMatrixProblem, tinyWorkgroupBytes } from './tiny_decode.js';
import { checkWeights, LAYER_MATRICES, type ActivationsFallback, type LlamaConfig, type LlmRunner, type LlmWeights, type Matrix, type QuantMatrix } from './types.js';
import {
  argmaxKernel, ATTN_SPLITS_MAX, attentionCombineKernel, embedGatherKernel, attentionKernel, attentionWorkgroup, blockedIndexJs, dot4Matrix, dot4Pre, GEMM_TM, gemmKernel, type GemmSpec, gemmUnitsPerTile, gemvBindings, gemvKernel, gemvUnits, gemvWorkgroupBytes, kBlockOf, matLayout, META_HEADER, META_IDS, metaRopeOffset,
  paired, preBound, qkNormRopeKernel, qkNormWorkgroup, quantizesOut, quantRowsBindings, quantRowsKernel, stagedChunkVec4s, subgroupProbeKernel, type Epilogue, type GemvShape, type GemvSpec, type MatLayout, type QuantRowsSource,
} from './wgsl.js';
import { gemmTcKernel, gemmTcUnitsPerTile, gemmTcValid, TC_SG, TC_TILE, tcDims, type TcTile } from './wgsl_tc.js';

/** Knobs for tests and benchmarks (read at create). */
export const llmGpuConfig = {
  /** Use subgroup reductions where the device has subgroups (tests turn this off to run the workgroup-memory path). */
  subgroups: true,
  /** Workgroups a matrix-vector product should spread over (row groups per workgroup shrink until it does). */
  targetWorkgroups: 128,
  /** Threads along K per row. */
  TK: 32,
  /** Most tokens per submit: longer forwards go in chunks (activation buffers are sized for this many tokens). */
  maxT: 256,
  /**
   * On GPUs (not software drivers) with timestamp queries: time the largest bucket's kernels and the tiled GEMM at
   * create, and cut each prompt the cheaper way (WebGpuLlm.prefillPlan, prefillChunks).
   */
  prefillTuning: true,
  /** Rows (or row pairs × 2) a workgroup of the tiled prefill GEMM covers: 64 (256 threads) or 32 (128 threads). */
  gemmTN: 64,
  /** Token buckets and rolled loops (tests: run the GPUs' unrolled small-T kernels on a software driver). */
  buckets: undefined as number[] | undefined,
  rolled: undefined as boolean | undefined,
  /** Attention splits the keys over workgroups when a forward of at most 4 tokens sees more than this many. */
  attnSplitMin: 512,
  /** Keys per tile of the attention kernel (undefined: wgsl.ts ATTN_TILE; tests use small tiles). */
  attnTile: undefined as number | undefined,
  /**
   * int8 activations: the kernels that produce a matrix's input (attention, o, gate/up, down) quantize it in their
   * epilogue where their workgroups hold whole groups of 32 outputs (else the reader quantizes it, as before).
   */
  producerQuant: true,
  /** Roles whose epilogues quantize keep 32 outputs per workgroup however few workgroups that leaves (gemvShapeFor). */
  producerFloor: true,
  /**
   * Subgroups exactly TK wide (GemvShape.sgRms): one-token kernels reading x pre-quantized sum Σx² for 1/rms in each
   * subgroup by shuffles, not by a workgroup tree; the same bits. H100, 70B shapes with 10 layers: 2.154 → 2.101 ms a
   * token (with ungated); 7B 2.353 → 2.279 (bench/results/gpu/h100-sg-*-s30.txt).
   */
  sgRms: true,
  /** One-token matrix kernels (not the head) start their weight loads without waiting on MT's row count (GemvShape.ungated). */
  ungated: true,
  /**
   * int8 activations: the last layer's down quantizes its outputs with the final norm in its epilogue, and one-token
   * forwards run a head kernel that reads them (WebGpuLlm.headFed) instead of quantizing x in each of its workgroups.
   */
  headFed: true,
  /**
   * Keys per iteration of the attention kernel's p·V loop (wgsl.ts AttentionSpec.unroll): 16 ran a 7B-shaped decode
   * step 0.158 ms faster than 1 on the H100 (4: 0.124, 8: 0.144; bench/gpu/llm-variants.ts).
   */
  attnUnroll: 16,
  /**
   * 4/8-bit matrices: each row's scales and zero points stored right after its weights, rows padded to a multiple of
   * this many words (packMatrix's rowAlign; 0: the scales and zero points of all rows after all weights).
   */
  rowMeta: 0,
  /**
   * 4/8-bit matrices read by one-token kernels with int8 x: stored in K-block-major order (MatLayout.kb), each block
   * the chunks one iteration of the workgroup's loop reads ('iter': TK × PU of the one-token shape, where that is less
   * than a row); a number: blocks of that many chunks wherever they fit (tests); 0: row-major. H100, same lease each
   * (bench/results/gpu/h100-kb-*-s32.txt): 70B with 80 layers 17.026 → 15.928 ms a token (69.7 → 74.5% of the
   * roofline), 13B 4.208 → 4.090, 7B 2.268 → 2.251 (blocks of 32 for every 7B matrix: 2.393); logits bit-identical.
   */
  kBlock: 'iter' as 'iter' | number,
  /**
   * Qwen3: one-token forwards normalize and rotate q and k inside the attention kernel (AttentionSpec.qkNorm) instead
   * of a q/k norm dispatch after q/k/v (forwards of more tokens keep that dispatch).
   */
  attnQkNorm: true,
  /**
   * Groups of threads of the split attention's combine kernel (undefined: its default; 1: one group walking every
   * split, the kernel before session 27). At 7B shapes on the H100, one token after 4000 cached (16 splits): the default
   * 4.258 ms against 4.400, the combine 5.9 µs a layer against 13.5 (h100-combine-7b-ctx4000-s27.txt).
   */
  attnCombineGroups: undefined as number | undefined,
  /** Keys per split (at most 32 splits). */
  attnSplitKeys: 256,
  /**
   * Most splits over an f16 cache (then more keys per split): on the H100 at 7B shapes, one token after 4000 cached
   * took 3.468 ms in 16 splits of 250 keys and 3.273 in 8 of 500; after 1000, 4 splits of 250 beat 2 of 500 (2.616
   * against 2.763 ms); after 2000, 8 of 250 and 4 of 500 ran alike (bench/results/gpu/h100-kv16-splits2-7b-*-s27.txt).
   */
  attnSplitsF16: 8,
  /** 4/8-bit matrix kernels stage x in workgroup memory (see wgsl.ts gemvStagedLoop), at most this many bytes. */
  stageBytes: 32768,
  /**
   * With WebGpuLlmOptions.prefill 'f16': the prefill GEMM on the tensor cores (wgsl_tc.ts: f16 operands, f32 sums)
   * where the device has subgroup matrices of 16×16×16 f16 → f32 and subgroups of exactly 32 contiguous lanes;
   * 'emulate' runs the same kernel with the matrix operations written out in WGSL (tests, on devices without them);
   * false: gemmKernel (f32) whatever prefill says.
   */
  gemmTensorCores: true as boolean | 'emulate',
  /** The tensor-core GEMM's tile (undefined: wgsl_tc.ts TC_TILE). */
  tcTile: undefined as TcTile | undefined,
  /** Largest embedding chunk in bytes (undefined: the device's binding limit; tests force small chunks). */
  embedChunkBytes: undefined as number | undefined,
  /** Overrides the shape of a matrix-vector kernel (benchmark sweeps). */
  shape: undefined as ((role: GemvRole, units: number, TB: number) => Partial<GemvShape> | undefined) | undefined,
  /**
   * Rewrites a matrix kernel's WGSL (benchmarks' timing-only ablations: the results are then wrong); TB is the token
   * bucket, GEMM_TM for the prefill GEMMs.
   */
  codeHook: undefined as ((code: string, role: GemvRole, TB: number) => string) | undefined,
};

/** Greedy ids from WebGpuLlm.greedyStream, one at a time; close() ends it (and must be called). */
export interface GreedyStream {
  next(): Promise<number>;
  close(): Promise<void>;
}

export type GemvRole = 'qkv' | 'o' | 'gateup' | 'down' | 'head';

/**
 * Tokens per workgroup of the matrix-vector kernels: each T uses the smallest bucket that holds it; larger T the tiled
 * kernel. Software drivers get fewer, rolled kernels (their compiler takes minutes over the unrolled ones). The
 * bucket of 8 (7 more pipelines) took 5 and 8 tokens at 7B shapes on the H100 from 6.05 / 6.81 ms (the 16-token
 * kernels) to 4.34 / 5.20 ms (bench/gpu/llm-variants.ts).
 */
export const TOKEN_BUCKETS = [1, 4, 8, 16];
const SOFTWARE_BUCKETS = [1, 16];

/**
 * The shape of a matrix-vector kernel: RT units per thread (fewer as T grows, to bound the accumulators), TK threads
 * along K, and row groups per workgroup halved from 16 (decode; 8 for small T) until the matrix spreads over
 * targetWorkgroups and the workgroup fits the device's invocations; then shrunk to fit workgroup memory. Subgroup
 * reductions need subgroups no wider than TK.
 */
export function gemvShapeFor(role: GemvRole, base: Omit<GemvSpec, keyof GemvShape>, TB: number,
  limits: { maxWorkgroupStorage: number; subgroupMax: number; maxInvocations?: number }): GemvSpec {
  const P = paired(base.epi) ? 2 : 1;
  const units = gemvUnits(base);
  // Decode: two rows per thread, 16 row groups of 32 threads, two chunks per iteration, x staged: the fastest of ten
  // shapes compared inside 1.1B- and 7B-shaped models on the H100 (bench/gpu/llm-shapes.ts, bench/NOTES.md). A
  // gate/up whose epilogue quantizes for down takes two units (four rows) per thread: 32 outputs, a whole group, per
  // workgroup (7B shapes on the H100: 2.566 against 2.690 ms a token, bench/gpu/llm-variants.ts). Kernels reading
  // pre-quantized x load 4 chunks before their math and sum 1/rms after the loop: 2.417 → 2.399 ms (small T: slower).
  //
  // A role whose epilogue can quantize for the next matrix (int8 activations) keeps 32 outputs per workgroup in
  // decode and at 4 tokens, however few workgroups that leaves: on small models (the trained target's 384-wide
  // matrices) the dispatch of quantRowsKernel it saves costs more than the spread.
  const qo = llmGpuConfig.producerFloor && !!base.qout && units % 32 === 0 && (TB === 1 || TB === 4);
  const RT = TB === 1 ? (base.qout ? 2 : Math.max(1, 2 / P)) : TB === 4 ? (qo ? 2 : Math.max(1, 2 / P)) : 1;
  // Small T with f32 x stages every token's x in each workgroup: 16 row groups (not 8) halve that traffic per row. 7B
  // shapes on the H100, f32 x: 4 / 8 / 16 tokens 8.62 / 18.75 / 63.3 → 6.11 / 13.86 / 47.2 ms; the trained target
  // 0.400 / 0.587 / 1.182 → 0.363 / 0.495 / 0.883 ms (32 row groups: slower; bench/results/gpu/h100-smallT-f32-s22.txt).
  let RG = TB === 1 || qo || !base.dot4 ? 16 : 8;
  const maxInv = limits.maxInvocations ?? 256;
  const floor = qo ? 32 / RT : 1;
  while (RG > 1 && (RG * llmGpuConfig.TK > maxInv || (RG > floor && ceilDiv(units, RG * RT) < llmGpuConfig.targetWorkgroups))) RG /= 2;
  // One token, x pre-quantized: four chunks an iteration, all their loads before their math; where a thread's loop
  // would take 2–4 such iterations (5–16 chunks a thread), one chunk an iteration with the next one's loads issued
  // before this one's math (pipe). Measured on the H100 against four chunks for every role (same lease,
  // bench/results/gpu/h100-pipe-s23.txt): 70B shapes with 10 layers 2.201 → 2.152 ms with q/k/v, o and gate/up piped
  // (8 chunks a thread) and down not (28); every role piped 2.187; at 7B (4 chunks a thread) piping every role was
  // 1.046× slower, down alone (10.75) 2.383 → 2.353; at 13B (5 and 13.5, every role piped) 4.701 → 4.307.
  const cpt = base.m.K / 32 / llmGpuConfig.TK;
  const one: Partial<GemvShape> = cpt > 4 && cpt <= 16 ? { UN: 2, PU: 1, pipe: true, lateRms: true } : { UN: 2, PU: 4, lateRms: true };
  const sgFlags: Partial<GemvShape> = TB === 1 ? { sgRms: llmGpuConfig.sgRms, ungated: llmGpuConfig.ungated } : {};
  let spec: GemvSpec = { ...base, TB, RT, TK: llmGpuConfig.TK, RG, ...sgFlags, ...(TB === 1 ? one : {}), ...llmGpuConfig.shape?.(role, units, TB) };
  while (gemvWorkgroupBytes(spec) > limits.maxWorkgroupStorage && (spec.RG > 1 || spec.RT > 1)) {
    spec = spec.RG > 1 ? { ...spec, RG: spec.RG / 2 } : { ...spec, RT: spec.RT / 2 };
  }
  // int8 activations need room for x's bytes beside the reduction (else the f32 path).
  if (spec.dot4 && gemvWorkgroupBytes(spec) > limits.maxWorkgroupStorage) spec = { ...spec, dot4: false };
  if (spec.sg && spec.TK < limits.subgroupMax) spec = { ...spec, sg: false };
  if (spec.XT === undefined) spec = { ...spec, XT: stagedTile(spec, limits.maxWorkgroupStorage) };
  return spec;
}

/**
 * x vec4s a 4/8-bit kernel stages in workgroup memory (all tokens' x where it fits in stageBytes and the device's
 * workgroup memory beside the reductions, else tiles of whole chunks); 0 where x is read from storage (f32 weights,
 * rows not whole vec4s, the rolled small-T kernels of software drivers, or no room for one chunk).
 */
export function stagedTile(spec: GemvSpec, maxWorkgroupStorage: number): number {
  if (spec.m.kind !== 'q' || spec.m.wpr % 4 !== 0 || (spec.TB > 1 && spec.rolled)) return 0;
  const XC = stagedChunkVec4s(spec.m) * spec.TB;
  // 16 tokens and more: all the workgroup memory the reductions leave (7B, f32 x: 47.2 → 36.5 ms at 16 tokens; at 4 and
  // 8 tokens a larger stage was slower, 6.9 and 15.4 ms).
  const budget = spec.TB >= 16 ? maxWorkgroupStorage : llmGpuConfig.stageBytes;
  const avail = Math.min(budget, maxWorkgroupStorage - gemvWorkgroupBytes({ ...spec, XT: 0 }));
  const XT = Math.min((spec.m.K / 4) * spec.TB, Math.floor(avail / 16 / XC) * XC);
  return XT >= XC ? XT : 0;
}

/**
 * Runs a probe kernel at the workgroup sizes the LLM kernels use: ok when every subgroup is a contiguous, aligned run of
 * local_invocation_index (the GEMV and attention reductions index workgroup memory by lid / subgroup_size).
 */
export async function probeSubgroups(dev: GPUDevice): Promise<{ ok: boolean; maxSize: number }> {
  let ok = true, maxSize = 0;
  const bgl = dev.createBindGroupLayout({ entries: [{ binding: 0, visibility: 4, buffer: { type: 'storage' } }] });
  const layout = dev.createPipelineLayout({ bindGroupLayouts: [bgl] });
  for (const WG of [32, 64, 128, 256]) {
    dev.pushErrorScope('validation');
    let a: Uint32Array;
    try {
      const p = await dev.createComputePipelineAsync({ layout, compute: { module: dev.createShaderModule({ code: subgroupProbeKernel(WG) }), entryPoint: 'main' } });
      const buf = dev.createBuffer({ size: WG * 8, usage: STORAGE | COPY_SRC });
      const rd = dev.createBuffer({ size: WG * 8, usage: MAP_READ | COPY_DST });
      const enc = dev.createCommandEncoder();
      const pass = enc.beginComputePass();
      pass.setPipeline(p);
      pass.setBindGroup(0, dev.createBindGroup({ layout: bgl, entries: [{ binding: 0, resource: { buffer: buf } }] }));
      pass.dispatchWorkgroups(1);
      pass.end();
      enc.copyBufferToBuffer(buf, 0, rd, 0, WG * 8);
      dev.queue.submit([enc.finish()]);
      await rd.mapAsync(MAP_READ);
      a = new Uint32Array(rd.getMappedRange().slice(0));
      rd.unmap();
      buf.destroy(); rd.destroy();
    } catch {
      await dev.popErrorScope();
      return { ok: false, maxSize: 0 };
    }
    if (await dev.popErrorScope()) return { ok: false, maxSize: 0 };
    for (let i = 0; i < WG; i++) {
      if (a[2 * i] !== 1) ok = false;
      maxSize = Math.max(maxSize, a[2 * i + 1]);
    }
  }
  return { ok: ok && maxSize > 0, maxSize };
}

export interface WebGpuLlmOptions {
  capacity?: number;
  /** A device to run on (default: webjit's shared device). */
  device?: GPUDevice;
  /**
   * 'int8': decode of 4-bit matrices rounds x to 8 bits per 32 values and multiplies with integer dot products (W4A8;
   * faster, see wgsl.ts gemvDot4Loop), where WGSL has dot4I8Packed. 'f32' (default): x in f32.
   */
  activations?: 'f32' | 'int8';
  /**
   * Experimental, off by default: one-token forwards of a small model as one dispatch of one workgroup
   * (tiny_decode.ts; the head and argmax stay separate), meant for a speculative draft, whose steps are launch-bound.
   * Taken where the device has dot4I8Packed, every layer matrix is 4-bit in groups of whole chunks of 32 and the
   * kernel's workgroup memory fits; else ignored (stats.tinyDecode says). x is rounded to int8 per 32 values before
   * each matrix, whatever `activations` says. Measured on the H100 it is slower than the runtime's kernels (the trained
   * draft's step 0.184 against 0.148 ms of GPU time, bench/NOTES.md session 16): one SM's phases wait on memory and on
   * serial reductions.
   */
  tinyDecode?: boolean;
  /**
   * The KV cache's element type: 'f32' (default) or 'f16' (half the cache's memory and the bytes attention reads a
   * token; keys and values rounded to f16 when stored, the math in f32). 'f16' needs the device's shader-f16.
   */
  kvCache?: 'f32' | 'f16';
  /**
   * The prefill GEMM (forwards past the largest token bucket): 'f32' (default, gemmKernel) or 'f16': on the tensor
   * cores (wgsl_tc.ts: x and the dequantised weights rounded to f16, f32 sums) where the device has subgroup matrices
   * of 16×16×16 f16 → f32 on 32-lane subgroups, else the f32 kernel (stats.tensorCoreGemms says which ran). On the H100
   * at 7B shapes a 256-token prompt took 65.9 ms against 149.3 (bench/NOTES.md, session 28).
   */
  prefill?: 'f32' | 'f16';
}

/**
 * What a prompt costs either way, measured on the device at create (WebGpuLlm.prefillPlan): GPU ms of one forward of
 * `bucket` tokens through the matrix-vector kernels, and of forwards of `gemm[i][0]` tokens through the tiled GEMM.
 */
export interface PrefillCost { bucket: number; bucketMs: number; gemm: [number, number][] }

/**
 * The chunk lengths a prompt of n tokens runs in: chunks of maxT (the tiled GEMM past the largest bucket), or chunks of
 * the largest bucket where the measured costs make that cheaper for this n. On the H100 (bench/NOTES.md, session 22)
 * a 32-token prompt at 7B shapes with int8 x costs 2 × 9.1 ms in 16-token chunks against 61 ms in one GEMM tile; 512
 * tokens 322 against 336 ms. With f32 x, or on the trained target (whose GEMM reads 480 tokens in ~5 ms), the GEMM
 * wins from 32 tokens on.
 */
export function prefillChunks(n: number, maxT: number, cost: PrefillCost | null): number[] {
  const cut = (size: number) => { const out: number[] = []; for (let r = n; r > 0; r -= size) out.push(Math.min(size, r)); return out; };
  const plain = cut(maxT);
  if (!cost || n <= cost.bucket || cost.gemm.length === 0) return plain;
  const g = cost.gemm;
  // GEMM ms for T tokens: the first point's below it (whole tiles cost alike), linear between points, proportional past the last.
  const gemmMs = (T: number): number => {
    if (T <= g[0][0]) return g[0][1];
    for (let i = 1; i < g.length; i++) if (T <= g[i][0]) return g[i - 1][1] + ((g[i][1] - g[i - 1][1]) * (T - g[i - 1][0])) / (g[i][0] - g[i - 1][0]);
    const [Tl, ml] = g[g.length - 1];
    return (ml * T) / Tl;
  };
  const viaGemm = plain.reduce((sum, T) => sum + (T <= cost.bucket ? cost.bucketMs : gemmMs(T)), 0);
  const viaBuckets = Math.ceil(n / cost.bucket) * cost.bucketMs;
  return viaBuckets < viaGemm ? cut(cost.bucket) : plain;
}

/** profileForward's timestamps: two per dispatch (names[i] is dispatch i's kernel role). */
interface Profiling { set: GPUQuerySet; resolve: GPUBuffer; read: GPUBuffer; names: string[] }

/** Forwards of up to this many tokens may split attention's keys over workgroups (partials sized for them). */
const SPLIT_MAX_T = 4;
const STORAGE = 0x80, COPY_SRC = 0x04, COPY_DST = 0x08, MAP_READ = 0x01;
const ceilDiv = (a: number, b: number): number => Math.ceil(a / b);

/** A whole buffer or a range of one (offsets a multiple of 256 bytes). */
type Bind = GPUBuffer | { buffer: GPUBuffer; offset: number; size: number };

/** Rows of several matrices stacked into one [ΣN, K] matrix of the same format. */
export function concatRows(ms: Matrix[], what: string): Matrix {
  const a = ms[0];
  for (const m of ms) {
    if (m.K !== a.K || m.kind !== a.kind || (m.kind === 'q' && a.kind === 'q' && (m.bits !== a.bits || m.group !== a.group))) {
      throw new UnsupportedError(`${what}: the matrices fused into one kernel differ in shape or format`, {}, "quantize them alike, or use backend 'wasm'");
    }
  }
  const N = ms.reduce((s, m) => s + m.N, 0);
  if (a.kind === 'f32') {
    const data = new Float32Array(N * a.K);
    let o = 0;
    for (const m of ms) { data.set(m.data, o); o += m.data.length; }
    return { kind: 'f32', N, K: a.K, data };
  }
  const qs = ms as QuantMatrix[];
  const cat = <T extends Uint8Array | Float32Array>(parts: T[], make: (n: number) => T): T => {
    const out = make(parts.reduce((s, p) => s + p.length, 0));
    let o = 0;
    for (const p of parts) { out.set(p, o); o += p.length; }
    return out;
  };
  return {
    kind: 'q', bits: a.bits, group: a.group, N, K: a.K,
    data: cat(qs.map((m) => m.data), (n) => new Uint8Array(n)),
    scales: cat(qs.map((m) => m.scales), (n) => new Float32Array(n)),
    zeros: cat(qs.map((m) => m.zeros), (n) => new Uint8Array(n)),
  };
}

/**
 * A matrix in the kernels' layout (wgsl.ts MatLayout): data words, scales, zero points padded to whole words per row;
 * `rowAlign` > 0: each row's scales and zero points right after its data words, rows padded to a multiple of that
 * many words (at least 4). `bias` (N values): the rows' biases as f32 words after everything (MatLayout.biasOff).
 * `block` > 0 (4/8-bit, row-major): the K-block-major order of blocks of that many chunks (MatLayout.kb).
 */
export function packMatrix(m: Matrix, rowAlign = 0, bias?: Float32Array, block = 0): { layout: MatLayout; words: Uint32Array<ArrayBuffer> } {
  if (bias && bias.length !== m.N) throw new Error(`packMatrix: ${bias.length} biases for ${m.N} rows`);
  // f16 scales where every scale is a normal f16 value (webjit's quantizer rounds them so) or 0.
  const f16 = m.kind === 'q' && m.scales.every((v) => v === 0 || (Math.abs(v) >= 6.103515625e-5 && f16ToF32(f32ToF16(v)) === v));
  const layout = m.kind === 'f32' ? matLayout('f32', 32, m.K, m.N, m.K, false, 0, !!bias) : matLayout('q', m.bits, m.group, m.N, m.K, f16, rowAlign, !!bias, block);
  const words = new Uint32Array(layout.words);
  if (bias) new Float32Array(words.buffer, layout.biasOff! * 4, m.N).set(bias);
  if (m.kind === 'f32') {
    new Float32Array(words.buffer, 0, m.data.length).set(m.data);
    return { layout, words };
  }
  const bytes = new Uint8Array(words.buffer);
  const G = layout.groups, zRow = Math.ceil((G * m.bits) / 8);
  if (layout.inRow) {
    const rowBytes = layout.wpr * 4;
    for (let n = 0; n < m.N; n++) {
      const o = n * layout.stride;
      bytes.set(m.data.subarray(n * rowBytes, (n + 1) * rowBytes), o * 4);
      if (f16) { const h = new Uint16Array(words.buffer, (o + layout.scaleOff) * 4, G); for (let g = 0; g < G; g++) h[g] = f32ToF16(m.scales[n * G + g]); }
      else new Float32Array(words.buffer, (o + layout.scaleOff) * 4, G).set(m.scales.subarray(n * G, (n + 1) * G));
      bytes.set(m.zeros.subarray(n * zRow, (n + 1) * zRow), (o + layout.zeroOff) * 4);
    }
    return { layout, words };
  }
  const kb = layout.kb;
  if (kb) {
    // Block b of every row, then block b + 1: data chunks (16 bytes), scales, zero-point bytes (whole words a block).
    const scales = f16 ? new Uint16Array(words.buffer, layout.scaleOff * 4, m.N * G) : new Float32Array(words.buffer, layout.scaleOff * 4, m.N * G);
    for (let n = 0; n < m.N; n++) {
      for (let b = 0; b < kb.NB; b++) {
        const nc = b === kb.NB - 1 ? kb.LC : kb.C, ng = b === kb.NB - 1 ? kb.LG : kb.G, nz = b === kb.NB - 1 ? kb.LZ : kb.Z;
        const src = n * layout.wpr * 4 + b * kb.C * 16;
        bytes.set(m.data.subarray(src, src + nc * 16), blockedIndexJs(n, b * kb.C, kb.C, kb.LC, kb.NB, m.N) * 16);
        // A block's groups of a row are one run in the scales too.
        const s0 = blockedIndexJs(n, b * kb.G, kb.G, kb.LG, kb.NB, m.N), v0 = n * G + b * kb.G;
        for (let g = 0; g < ng; g++) scales[s0 + g] = f16 ? f32ToF16(m.scales[v0 + g]) : m.scales[v0 + g];
        const zo = (layout.zeroOff + b * m.N * kb.Z + n * nz) * 4, zb = b * kb.G * m.bits;
        if (zb % 8 === 0) bytes.set(m.zeros.subarray(n * zRow + zb / 8, n * zRow + Math.ceil((zb + ng * m.bits) / 8)), zo);
        else for (let g = 0; g < ng; g++) bytes[zo + (g >> 1)] |= ((m.zeros[n * zRow + ((b * kb.G + g) >> 1)] >> (((b * kb.G + g) & 1) * 4)) & 15) << ((g & 1) * 4);
      }
    }
    return { layout, words };
  }
  bytes.set(m.data, 0);
  if (f16) {
    const h = new Uint16Array(words.buffer, layout.scaleOff * 4, m.scales.length);
    for (let i = 0; i < m.scales.length; i++) h[i] = f32ToF16(m.scales[i]);
  } else {
    new Float32Array(words.buffer, layout.scaleOff * 4, m.N * G).set(m.scales);
  }
  for (let n = 0; n < m.N; n++) bytes.set(m.zeros.subarray(n * zRow, (n + 1) * zRow), (layout.zeroOff + n * layout.zpr) * 4);
  return { layout, words };
}

interface GemvKernels {
  units: number;
  /**
   * Per token bucket: the pipeline, the units and tokens one workgroup covers, whether quantRowsKernel must quantize x first (the
   * kernel reads it quantized and no producer wrote it), and whether the epilogue quantizes the outputs for the next.
   */
  byTB: Map<number, { pipeline: GPUComputePipeline; UW: number; TW: number; quantBefore: boolean; quantOut: boolean }>;
  bind: GPUBindGroup | null;
  layout: GPUBindGroupLayout;
  /** The kernels bind the pre-quantized x XP (int8 activations, a 4-bit matrix). */
  preBound: boolean;
  /** Their epilogue may quantize for the next matrix (binds XPO, and the next norm's weights where `norm`). */
  qout: { norm: boolean } | null;
  /** What quantizes x where no producer did (quantRowsKernel, its bindings). */
  quant: { pipeline: GPUComputePipeline | null; bind: GPUBindGroup | null; bindings: string };
}

type Mode = 'logits' | 'logitsAll' | 'argmax' | 'argmaxAll';

export class WebGpuLlm implements LlmRunner {
  readonly backend = 'webgpu' as const;
  readonly config: LlamaConfig;
  readonly capacity: number;
  /** Pipelines and bind groups this runner created (tests check that forwards create none). */
  readonly stats = { pipelines: 0, bindGroups: 0, dispatchesLastForward: 0, gpuMsLastForward: NaN, encodeMsLastForward: NaN, quantizingEpilogues: 0, kBlockedMatrices: 0, tinyDecode: false, kvCacheBytes: 0, tensorCoreGemms: 0 };
  /**
   * Time each forward's compute pass on the GPU into stats.gpuMsLastForward (where the device has timestamp-query;
   * costs a second read-back per forward).
   */
  timing = false;
  /**
   * Kernel roles (profileForward's names: 'qkv', 'attention', 'gate/up x8', …) whose dispatches forwards leave out:
   * benchmarks time a forward without them to learn what they cost inside it. The results are wrong while set.
   */
  ablate: ReadonlySet<string> | null = null;
  /** Whether the kernels use subgroup reductions. */
  subgroups = false;
  /**
   * Weight bytes one decode step reads in this runner's layout (types.ts bytesPerToken counts f32 scales; here they
   * are f16 where exact): every matrix, the norms and one embedding row.
   */
  weightBytesPerToken = 0;
  /** Tokens per workgroup of the matrix kernels' variants. */
  readonly buckets: number[];
  private readonly rolled: boolean;
  /** llmGpuConfig's attention split rule at create. */
  private readonly attnSplit = { min: llmGpuConfig.attnSplitMin, keys: llmGpuConfig.attnSplitKeys, mostF16: llmGpuConfig.attnSplitsF16 };
  private len = 0;
  private busy = false;
  private released = false;
  private readonly device: GPUDevice;
  private readonly ctx: GpuContext | null;
  private readonly maxT: number;
  private readonly buffers: GPUBuffer[] = [];
  private readonly pipelineCache = new Map<string, Promise<GPUComputePipeline>>();
  /** greedyStream's read-back buffers, one per step in flight. */
  private readonly streamStaging: GPUBuffer[] = [];
  private readonly layoutCache = new Map<string, { bgl: GPUBindGroupLayout; pl: GPUPipelineLayout }>();
  // Filled by init().
  private meta!: GPUBuffer;
  private x!: GPUBuffer;
  private q!: GPUBuffer;
  private attn!: GPUBuffer;
  private g!: GPUBuffer;
  /**
   * x quantized for the int8 kernels (wgsl.ts dot4Pre: bytes, dx, dx·Σxi and Σx² per 32 values), two buffers that the
   * matrices of a layer take in turn (a kernel reads one and its epilogue writes the other): attention → A, o A → B,
   * gate/up B → A, down A → B, next q/k/v B.
   */
  private xp!: [GPUBuffer, GPUBuffer];
  private res!: GPUBuffer;
  private logits: GPUBuffer | null = null;
  private logitsRows = 0;
  private staging: GPUBuffer | null = null;
  private headW!: GPUBuffer;
  private finalNorm!: GPUBuffer;
  private layers: {
    qkv: GemvKernels; o: GemvKernels; gateup: GemvKernels; down: GemvKernels; kv: Bind; attnBind: GPUBindGroup | null;
    /** Qwen3: the q/k norm weights (q's headDim, then k's), the q/k norm dispatch's bind group, the one-token attention's. */
    qkNorm: { nw: GPUBuffer; bind: GPUBindGroup; attnBind: GPUBindGroup | null } | null;
  }[] = [];
  /** Qwen3's per-head q/k norm and rotation after the q/k/v kernel (qkNormRopeKernel), where the model has the norms. */
  private qkNorm: GPUComputePipeline | null = null;
  /** The one-workgroup decode of every layer (WebGpuLlmOptions.tinyDecode), where taken. */
  private tiny: { pipeline: GPUComputePipeline; bind: GPUBindGroup } | null = null;
  /** An embedding table larger than one binding: the kernel that gathers the tokens' rows into x before layer 0. */
  private embedGather: { pipeline: GPUComputePipeline; bind: GPUBindGroup } | null = null;
  private head!: GemvKernels;
  /**
   * The head's one-token kernel reading x as the last layer's down quantized it (llmGpuConfig.headFed; that epilogue
   * wrote the second XP buffer), and its bind group (made with the logits'); null where down does not quantize.
   */
  private headFed: { pipeline: GPUComputePipeline | null; UW: number; bind: GPUBindGroup | null } | null = null;
  private attention!: GPUComputePipeline;
  /** Qwen3 (llmGpuConfig.attnQkNorm): one-token attention that normalizes and rotates q and k itself. */
  private attentionQkNorm: GPUComputePipeline | null = null;
  private attnCombine!: GPUComputePipeline;
  private combineBind!: GPUBindGroup;
  private argmax!: GPUComputePipeline;
  private argmaxBind: GPUBindGroup | null = null;
  /** GPU timestamps of a forward's compute pass, where the device has timestamp-query. */
  private timestamps: { set: GPUQuerySet; resolve: GPUBuffer; read: GPUBuffer } | null = null;

  /** Why int8 activations asked for are not what it runs (null when they run or were not asked for). */
  int8Fallback: ActivationsFallback | null = null;

  private constructor(private readonly w: LlmWeights, capacity: number, device: GPUDevice, ctx: GpuContext | null,
    private readonly caps: { subgroups: boolean; sgMin: number; software: boolean; subgroupMatrix: boolean; maxWorkgroupStorage: number; maxBindingSize: number; maxWorkgroupsPerDim: number; maxInvocations: number; maxStorageBuffers: number },
    /** The activations decode runs with ('int8' where asked for and the device has dot4I8Packed). */
    readonly activations: 'f32' | 'int8', private readonly wantTiny = false,
    /** The KV cache's element type (WebGpuLlmOptions.kvCache). */
    readonly kvCache: 'f32' | 'f16' = 'f32',
    /** The prefill GEMM's precision (WebGpuLlmOptions.prefill). */
    readonly prefill: 'f32' | 'f16' = 'f32') {
    this.config = w.config;
    this.capacity = capacity;
    this.device = device;
    this.ctx = ctx;
    this.maxT = Math.max(1, Math.min(llmGpuConfig.maxT, capacity));
    this.buckets = llmGpuConfig.buckets ?? (caps.software ? SOFTWARE_BUCKETS : TOKEN_BUCKETS);
    this.rolled = llmGpuConfig.rolled ?? caps.software;
  }

  /** The kernel variant for T tokens: a matrix-vector bucket, or the tiled kernel (GEMM_TM) past the largest. */
  private bucketOf(T: number): number {
    return this.buckets.find((b) => T <= b) ?? GEMM_TM;
  }

  static async create(w: LlmWeights, o: WebGpuLlmOptions = {}): Promise<WebGpuLlm> {
    const c = w.config;
    const capacity = o.capacity ?? c.maxPositions;
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > c.maxPositions) {
      throw new UnsupportedError(`a KV cache of ${capacity} positions: the model was trained for ${c.maxPositions}`, {}, `give a capacity between 1 and ${c.maxPositions}`);
    }
    checkConfig(c);
    checkWeights(w);
    let device: GPUDevice, ctx: GpuContext | null = null;
    if (o.device) device = o.device;
    else { ctx = await acquireGpu(); checkLost(ctx); device = ctx.device; }
    const L = device.limits;
    const info = (device as { adapterInfo?: GPUAdapterInfo }).adapterInfo;
    const caps = {
      subgroups: device.features.has('subgroups' as GPUFeatureName),
      sgMin: ctx?.caps.subgroupSize || (info as { subgroupMinSize?: number } | undefined)?.subgroupMinSize || 4,
      software: ctx ? ctx.caps.software : /llvmpipe|lavapipe|swiftshader|software/i.test(`${info?.vendor ?? ''} ${info?.device ?? ''} ${info?.description ?? ''} ${info?.architecture ?? ''}`),
      // 16×16×16 f16 → f32 subgroup matrices on subgroups of exactly TC_SG lanes (wgsl_tc.ts).
      subgroupMatrix: device.features.has('chromium-experimental-subgroup-matrix' as GPUFeatureName) && !!ctx && ctx.caps.subgroupSize === TC_SG
        && ctx.caps.subgroupMatrix.some((m) => m.M === 16 && m.N === 16 && m.K === 16 && m.componentType === 'f16' && m.resultComponentType === 'f32'),
      maxWorkgroupStorage: L.maxComputeWorkgroupStorageSize,
      maxBindingSize: L.maxStorageBufferBindingSize,
      maxWorkgroupsPerDim: L.maxComputeWorkgroupsPerDimension,
      maxInvocations: Math.min(L.maxComputeInvocationsPerWorkgroup, L.maxComputeWorkgroupSizeX),
      maxStorageBuffers: L.maxStorageBuffersPerShaderStage,
      dot4: ctx ? ctx.caps.dot4 : hasDot4((globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu),
    };
    if (L.maxStorageBuffersPerShaderStage < 7) {
      throw new UnsupportedError(`the device binds ${L.maxStorageBuffersPerShaderStage} storage buffers per shader; the LLM kernels need 7`, {}, "use backend 'wasm'");
    }
    // int8 activations bind one buffer more (layer 0's q/k/v: 8).
    const device8 = !caps.dot4
      ? { message: 'int8 activations on webgpu: this device has no dot4I8Packed', hint: 'leave --activations out' }
      : L.maxStorageBuffersPerShaderStage < 8
        ? { message: `int8 activations on webgpu: the device binds ${L.maxStorageBuffersPerShaderStage} storage buffers per shader, int8 activations need 8`, hint: 'leave --activations out' }
        : null;
    // Where the device cannot, a model with no 4-bit matrix is named as the cause first (it would not gain anyway).
    const q4 = [...w.layers.flatMap((Lw) => LAYER_MATRICES.map((m) => Lw[m])), w.lmHead].some((m) => m.kind === 'q' && m.bits === 4);
    const int8Fallback: ActivationsFallback | null = o.activations !== 'int8' || !device8 ? null : q4 ? device8
      : { message: 'int8 activations on webgpu: they apply to 4-bit matrices and this model has none', hint: 'quantize it to 4 bits (--quant q4), or leave --activations out' };
    const kvCache = o.kvCache ?? 'f32';
    const prefill = o.prefill ?? 'f32';
    if (prefill !== 'f32' && prefill !== 'f16') throw new InputError(`prefill '${String(prefill)}': 'f32' or 'f16'`, {}, "give prefill 'f32' or 'f16'");
    if (kvCache !== 'f32' && kvCache !== 'f16') throw new InputError(`kvCache '${String(kvCache)}': 'f32' or 'f16'`, {}, "give kvCache 'f32' or 'f16'");
    if (kvCache === 'f16' && !device.features.has('shader-f16')) {
      throw new UnsupportedError('an f16 KV cache on webgpu: this device has no shader-f16', {}, "use kvCache 'f32' (--kv-cache f32)");
    }
    // The tiny decode kernel reads an f32 cache.
    const r = new WebGpuLlm(w, capacity, device, ctx, caps, o.activations === 'int8' && !int8Fallback ? 'int8' : 'f32', !!o.tinyDecode && caps.dot4 && kvCache === 'f32', kvCache, prefill);
    r.int8Fallback = int8Fallback;
    try {
      await r.init();
      await r.tunePrefill();
    } catch (e) {
      r.destroyBuffers();
      throw e;
    }
    return r;
  }

  get length(): number { return this.len; }

  /** The measured costs prompts are cut by (null: not measured, every prompt in chunks of maxT). */
  get prefillPlan(): PrefillCost | null { return this.prefillCost; }
  private prefillCost: PrefillCost | null = null;

  /**
   * Times, from an empty cache, a forward of the largest bucket's tokens and tiled-GEMM forwards of one tile and of
   * maxT tokens, for prefillChunks: GPU time by timestamps, the best of 3 interleaved rounds, after up to 200 ms (24
   * forwards at most) of forwards: an idle GPU's clocks ran the first measurements here 1.2–4× slow. ~1 s at 7B shapes
   * on the H100.
   */
  private async tunePrefill(): Promise<void> {
    const bucket = Math.max(...this.buckets);
    if (!llmGpuConfig.prefillTuning || this.caps.software || !this.timestamps || bucket < 2 || this.maxT <= bucket) return;
    const V = this.config.vocab;
    const ids = Array.from({ length: this.maxT }, (_, i) => (i * 7919) % V);
    const sizes = [bucket, ...new Set([Math.min(GEMM_TM, this.maxT), this.maxT])].filter((T, i) => i === 0 || T > bucket);
    const once = async (T: number): Promise<number> => {
      this.len = 0;
      await this.run(ids.slice(0, T), 'argmax');
      return this.stats.gpuMsLastForward;
    };
    const timing = this.timing;
    this.timing = true;
    try {
      for (let i = 0, t0 = performance.now(); i < 24 && performance.now() - t0 < 200; i++) await once(sizes[i % sizes.length]);
      const best = sizes.map(() => Infinity);
      for (let round = 0; round < 3; round++) for (let i = 0; i < sizes.length; i++) best[i] = Math.min(best[i], await once(sizes[i]));
      const gemm = sizes.slice(1).map((T, i): [number, number] => [T, best[i + 1]]);
      if (best.every((ms) => Number.isFinite(ms) && ms > 0)) this.prefillCost = { bucket, bucketMs: best[0], gemm };
    } finally {
      this.timing = timing;
      this.len = 0;
    }
  }

  truncate(length: number): void {
    checkTruncate(this.len, length);
    this.len = length;
  }

  async forward(ids: readonly number[], allLogits = false): Promise<Float32Array> {
    return (await this.run(ids, allLogits ? 'logitsAll' : 'logits')) as Float32Array;
  }

  /** Runs ids and returns the argmax of the last position's logits (4 bytes read back). */
  async greedy(ids: readonly number[]): Promise<number> {
    return (await this.run(ids, 'argmax'))[0];
  }

  /** Runs ids and returns the argmax of every position's logits (speculative decoding's verification). */
  async forwardArgmaxAll(ids: readonly number[]): Promise<number[]> {
    return [...(await this.run(ids, 'argmaxAll'))];
  }

  async release(): Promise<void> {
    this.released = true;
    this.destroyBuffers();
  }

  // --- Setup -------------------------------------------------------------------------------------------------------

  private async init(): Promise<void> {
    const c = this.config, w = this.w, cap = this.capacity, maxT = this.maxT;
    const D = c.hidden, F = c.intermediate, H = c.heads, KVH = c.kvHeads, HD = c.headDim;
    this.subgroups = this.caps.subgroups && llmGpuConfig.subgroups && await this.subgroupsUsable();

    // The meta buffer with the RoPE table after the per-forward words.
    const ropeOff = metaRopeOffset(maxT);
    const rope = ropeTables(c, cap);
    const metaInit = new Uint32Array(ropeOff + rope.cos.length * 2);
    new Float32Array(metaInit.buffer, ropeOff * 4, rope.cos.length).set(rope.cos);
    new Float32Array(metaInit.buffer, (ropeOff + rope.cos.length) * 4, rope.sin.length).set(rope.sin);
    this.meta = this.upload(metaInit, COPY_DST, 'the RoPE table');

    this.x = this.alloc(maxT * D * 4, 0, 'activations');
    const pending: Promise<unknown>[] = [];
    // (One-token forwards of a model with q/k norms keep k's heads after q's: AttentionSpec.qkNorm.)
    // Qwen3 with an f16 cache stages k's heads after every token's q (Epilogue kStage).
    const kStage = c.qkNorm && this.kvCache === 'f16' ? maxT * H * HD : undefined;
    this.q = this.alloc((kStage !== undefined ? maxT * (H + KVH) : Math.max(maxT * H, H + KVH)) * HD * 4, 0, 'activations');
    this.attn = this.alloc(maxT * H * HD * 4, 0, 'activations');
    this.g = this.alloc(maxT * F * 4, 0, 'activations');
    const int8 = this.activations === 'int8';
    const preT = int8 ? Math.max(...this.buckets) : 0, maxK = Math.max(D, H * HD, F);
    this.xp = [this.alloc(preT * (maxK / 32) * 48, 0, 'activations'), this.alloc(preT * (maxK / 32) * 48, 0, 'activations')];
    this.res = this.alloc(Math.max(maxT, cap) * 4, COPY_SRC, 'argmax ids');
    if (this.device.features.has('timestamp-query')) {
      const resolve = this.device.createBuffer({ size: 16, usage: 0x200 /* QUERY_RESOLVE */ | COPY_SRC });
      const read = this.device.createBuffer({ size: 16, usage: MAP_READ | COPY_DST });
      this.buffers.push(resolve, read);
      this.timestamps = { set: this.device.createQuerySet({ type: 'timestamp', count: 2 }), resolve, read };
    }
    // The embedding table: gathered by layer 0's q/k/v kernels where it fits one binding, else held in chunks of rows
    // that embedGatherKernel reads (one dispatch more a forward).
    const rowBytes = D * 4, chunkBytes = Math.min(this.caps.maxBindingSize, llmGpuConfig.embedChunkBytes ?? Infinity);
    const chunked = w.embed.byteLength > chunkBytes;
    let embed: GPUBuffer | null = null;
    if (!chunked) embed = this.upload(w.embed, 0, 'the embedding table');
    else {
      const rowsPer = Math.floor(chunkBytes / rowBytes), chunks = Math.ceil(c.vocab / rowsPer), most = this.caps.maxStorageBuffers - 2;
      if (rowsPer < 1 || chunks > most) {
        throw new ResourceLimitError(`the embedding table takes ${w.embed.byteLength} bytes: ${chunks} buffers of at most ${chunkBytes} bytes, and a kernel binds ${most}`, {},
          'use a smaller model, a device with larger limits, or backend \'wasm\'');
      }
      const parts = Array.from({ length: chunks }, (_, i) => this.upload(w.embed.subarray(i * rowsPer * D, Math.min(c.vocab, (i + 1) * rowsPer) * D), 0, 'the embedding table'));
      const bindings = 'r'.repeat(chunks + 1) + 'w';
      pending.push(this.pipeline(embedGatherKernel(D, rowsPer, chunks), bindings).then((p) => {
        this.embedGather = { pipeline: p, bind: this.bindGroup(this.layoutFor(bindings).bgl, [this.meta, ...parts, this.x]) };
      }));
    }
    this.finalNorm = this.upload(w.norm, 0, 'norm weights');
    this.weightBytesPerToken = (D + D + 2 * c.layers * D) * 4;

    // Qwen3: one-token forwards normalize q and k in attention (AttentionSpec.qkNorm) where its workgroup is wide enough.
    const fuseQkNorm = !!c.qkNorm && llmGpuConfig.attnQkNorm && attentionWorkgroup(this.subgroups) >= qkNormWorkgroup(HD);
    /**
     * A matrix's kernels: per token bucket its spec (int8 activations: `fed(TB)` says whether the producer's epilogue
     * quantized x for it, else quantRowsKernel does where the kernel reads x quantized; `qout` makes its own epilogue
     * quantize for the next matrix).
     */
    const gemv = (role: GemvRole, m: Matrix, norm: boolean, gather: boolean, epi: Epilogue, what: string,
      fed: (TB: number) => boolean = () => false, qout?: { norm: boolean }, bias?: Float32Array): { k: GemvKernels; buf: GPUBuffer; packed: ReturnType<typeof packMatrix>; quantOut: (TB: number) => boolean; base: Omit<GemvSpec, keyof GemvShape> } => {
      // The kernels' spec for a layout, and its one-token form (x as the producer quantized it where fed).
      const baseOf = (layout: MatLayout): Omit<GemvSpec, keyof GemvShape> => {
        const plain = { m: layout, norm, eps: c.rmsEps, gather, epi, sg: this.subgroups, sgMin: this.caps.sgMin, rolled: this.rolled, dot4: int8 };
        return { ...plain, ...(qout && llmGpuConfig.producerQuant && preBound(plain) ? { qout } : {}) };
      };
      const oneToken = (b: Omit<GemvSpec, keyof GemvShape>) => (int8 && fed(1) ? { ...b, preIn: true } : b);
      // The block size follows the one-token kernel's shape, which the K order does not change (a row-major layout asks).
      const packed = packMatrix(m, llmGpuConfig.rowMeta, bias, this.kBlockFor(m, (q) => this.shapeFor(role, oneToken(baseOf(matLayout('q', q.bits, q.group, q.N, q.K))), 1)));
      if (packed.layout.kb) this.stats.kBlockedMatrices++;
      const buf = this.upload(packed.words, 0, what);
      this.weightBytesPerToken += packed.words.byteLength;
      const base = baseOf(packed.layout);
      const bindings = gemvBindings(base);
      const src: QuantRowsSource = role === 'head' ? 'head' : gather ? 'gather' : 'x';
      const k: GemvKernels = {
        units: gemvUnits(base), byTB: new Map(), bind: null, layout: this.layoutFor(bindings).bgl, preBound: preBound(base), qout: base.qout ?? null,
        quant: { pipeline: null, bind: null, bindings: quantRowsBindings(src, norm) },
      };
      const outAt = new Map<number, boolean>();
      let anyQuant = false;
      for (const TB of [...this.buckets, GEMM_TM]) {
        let code: string, UW: number, TW = TB, quantBefore = false, quantOut = false;
        const tc = TB === GEMM_TM ? this.tensorCoreTile(base) : null;
        if (tc) {
          code = gemmTcKernel(base, tc.tile, tc.emulate);
          UW = gemmTcUnitsPerTile(base, tc.tile);
          TW = tcDims(tc.tile).BM;
          this.stats.tensorCoreGemms++;
        } else if (TB === GEMM_TM) {
          code = gemmKernel(base, llmGpuConfig.gemmTN);
          UW = gemmUnitsPerTile(base, llmGpuConfig.gemmTN);
        } else {
          // Qwen3 with the norm in attention: the one-token kernel leaves k's heads in Q (Epilogue kToQ).
          const kToQ = TB === 1 && epi.kind === 'qkv' && epi.qkNorm && fuseQkNorm;
          const spec = this.shapeFor(role, { ...(TB === 1 ? oneToken(base) : base), ...(kToQ ? { epi: { ...epi, kToQ: true as const } } : {}) }, TB);
          code = gemvKernel(spec);
          UW = spec.RG * spec.RT;
          quantBefore = dot4Pre(spec) && !fed(TB);
          quantOut = quantizesOut(spec);
          anyQuant ||= quantBefore;
        }
        if (llmGpuConfig.codeHook) code = llmGpuConfig.codeHook(code, role, TB);
        outAt.set(TB, quantOut);
        if (quantOut) this.stats.quantizingEpilogues++;
        if (ceilDiv(k.units, UW) > this.caps.maxWorkgroupsPerDim) throw new UnsupportedError(`${what}: ${m.N} rows need more workgroups than the device dispatches`, {}, "use backend 'wasm'");
        pending.push(this.pipeline(code, bindings).then((p) => { k.byTB.set(TB, { pipeline: p, UW, TW, quantBefore, quantOut }); }));
      }
      if (anyQuant) pending.push(this.pipeline(quantRowsKernel(packed.layout.K, src, norm), k.quant.bindings).then((p) => { k.quant.pipeline = p; }));
      return { k, buf, packed, quantOut: (TB) => outAt.get(TB) ?? false, base };
    };
    /** The bind group of a matrix's quantRowsKernel: its x rows (and norm weights), the quantized x, (gathering) x. */
    const quantBind = (k: GemvKernels, src: GPUBuffer, nw: GPUBuffer | null, xp: GPUBuffer, gatherInto: GPUBuffer | null) => {
      if (!k.preBound) return;
      k.quant.bind = this.bindGroup(this.layoutFor(k.quant.bindings).bgl, [this.meta, src, ...(nw ? [nw] : []), xp, ...(gatherInto ? [gatherInto] : [])]);
    };

    // int8 activations: attention quantizes its output rows for o (heads of whole groups of 32) where every layer's o
    // reads x quantized (its kernels bind XP: preBound).
    const attnQuant = int8 && llmGpuConfig.producerQuant && HD % 32 === 0
      && w.layers.every(({ o }) => o.kind === 'q' && dot4Matrix(matLayout('q', o.bits, o.group, o.N, o.K)));
    // int8 activations: the last layer's down quantizes for the head (with the final norm) where the head reads x
    // quantized (a 4-bit head) and one-token forwards run it (not the one-workgroup decode).
    const hm = w.lmHead;
    const headFed = int8 && llmGpuConfig.headFed && !this.wantTiny && hm.kind === 'q' && dot4Matrix(matLayout('q', hm.bits, hm.group, hm.N, hm.K));
    const [A, B] = this.xp;
    const norms = w.layers.map((Lw) => ({ attn: this.upload(Lw.attnNorm, 0, 'norm weights'), mlp: this.upload(Lw.mlpNorm, 0, 'norm weights') }));
    let downOut: (TB: number) => boolean = () => false;
    // The tiny decode kernel binds every layer's cache as one buffer: the layers' caches are ranges of it.
    const kv16 = this.kvCache === 'f16', kvLayerBytes = 2 * KVH * cap * HD * (kv16 ? 2 : 4);
    const kvBytes = Math.ceil(kvLayerBytes / 256) * 256;
    this.stats.kvCacheBytes = kvLayerBytes * c.layers;
    const kvAll = this.wantTiny && embed ? this.alloc(kvBytes * c.layers, 0, 'the KV cache') : null;
    const tinyMats: { qkv: ReturnType<typeof packMatrix>; o: ReturnType<typeof packMatrix>; gu: ReturnType<typeof packMatrix>; down: ReturnType<typeof packMatrix> }[] = [];
    for (let l = 0; l < c.layers; l++) {
      const Lw = w.layers[l];
      const { attn: attnNorm, mlp: mlpNorm } = norms[l];
      const last = l === c.layers - 1;
      const kv: Bind = kvAll ? { buffer: kvAll, offset: l * kvBytes, size: kvLayerBytes } : this.alloc(kvLayerBytes, 0, 'the KV cache');
      // Qwen3: the epilogue stores q and k unrotated, and qkNormRopeKernel normalizes and rotates them in place.
      const qkvEpi: Epilogue = { kind: 'qkv', heads: H, kvHeads: KVH, headDim: HD, capacity: cap, ropeOff, ...(c.qkNorm ? { qkNorm: true as const } : {}), ...(kv16 ? { kv16: true as const } : {}), ...(kStage !== undefined ? { kStage } : {}) };
      // Qwen2's q/k/v biases travel in the fused matrix's buffer (MatLayout.biasOff): the kernels bind no more buffers.
      const b = Lw.qkvBias, qkvBias = b && Float32Array.from([...b.q, ...b.k, ...b.v]);
      const gather = l === 0 && !!embed;
      const qkv = gemv('qkv', concatRows([Lw.q, Lw.k, Lw.v], `layer ${l} q/k/v`), true, gather, qkvEpi, `layer ${l} q/k/v`, downOut, undefined, qkvBias);
      const o = gemv('o', Lw.o, false, false, { kind: 'residual' }, `layer ${l} o`, () => attnQuant, { norm: true });
      const gu = gemv('gateup', concatRows([Lw.gate, Lw.up], `layer ${l} gate/up`), true, false, { kind: 'gateup', F }, `layer ${l} gate/up`, o.quantOut, { norm: false });
      const down = gemv('down', Lw.down, false, false, { kind: 'residual' }, `layer ${l} down`, gu.quantOut, last && !headFed ? undefined : { norm: true });
      downOut = down.quantOut;
      if (kvAll) tinyMats.push({ qkv: qkv.packed, o: o.packed, gu: gu.packed, down: down.packed });
      qkv.k.bind = this.bindGroup(qkv.k.layout, gather
        ? [this.meta, qkv.buf, embed!, attnNorm, this.q, kv, this.x, ...this.preBufs(qkv.k, B)]
        : [this.meta, qkv.buf, this.x, attnNorm, this.q, kv, ...this.preBufs(qkv.k, B)]);
      o.k.bind = this.bindGroup(o.k.layout, [this.meta, o.buf, this.attn, this.x, ...this.preBufs(o.k, A, B, mlpNorm)]);
      gu.k.bind = this.bindGroup(gu.k.layout, [this.meta, gu.buf, this.x, mlpNorm, this.g, ...this.preBufs(gu.k, B, A)]);
      down.k.bind = this.bindGroup(down.k.layout, [this.meta, down.buf, this.g, this.x, ...this.preBufs(down.k, A, B, last ? this.finalNorm : norms[l + 1].attn)]);
      quantBind(qkv.k, gather ? embed! : this.x, attnNorm, B, gather ? this.x : null);
      quantBind(o.k, this.attn, null, A, null);
      quantBind(gu.k, this.x, mlpNorm, B, null);
      quantBind(down.k, this.g, null, A, null);
      // The layer's q and k norm weights in one buffer (q's headDim, then k's).
      const nk = Lw.qkNorm;
      let qkNorm: (typeof this.layers)[number]['qkNorm'] = null;
      if (nk) {
        const nw = this.upload(Float32Array.from([...nk.q, ...nk.k]), 0, 'q/k norm weights');
        this.weightBytesPerToken += 2 * HD * 4;
        qkNorm = { nw, bind: this.bindGroup(this.layoutFor('rrww').bgl, [this.meta, nw, this.q, kv]), attnBind: null };
      }
      this.layers.push({ qkv: qkv.k, o: o.k, gateup: gu.k, down: down.k, kv, attnBind: null, qkNorm });
    }
    const head = gemv('head', w.lmHead, true, false, { kind: 'head' }, 'lm_head');
    this.head = head.k;
    this.headW = head.buf;
    quantBind(head.k, this.x, this.finalNorm, A, null);
    // One-token forwards: the last layer's down quantized x with the final norm into B, so the head's kernel reads it
    // as every other matrix's does (a dispatch quantizing x in each of the head's workgroups cost it ~20 µs at 70B).
    if (headFed && downOut(1)) {
      const spec = this.shapeFor('head', { ...head.base, preIn: true }, 1);
      if (dot4Pre(spec)) {
        let code = gemvKernel(spec);
        if (llmGpuConfig.codeHook) code = llmGpuConfig.codeHook(code, 'head', 1);
        const fedK = this.headFed = { pipeline: null as GPUComputePipeline | null, UW: spec.RG * spec.RT, bind: null };
        pending.push(this.pipeline(code, gemvBindings(head.base)).then((p) => { fedK.pipeline = p; }));
      }
    }

    const qoutRows = attnQuant ? preT : undefined;
    if (attnQuant) this.stats.quantizingEpilogues++;
    const attnSpec = { heads: H, kvHeads: KVH, headDim: HD, capacity: cap, WG: attentionWorkgroup(this.subgroups), sg: this.subgroups, tile: llmGpuConfig.attnTile, unroll: llmGpuConfig.attnUnroll, qoutRows, kv16 };
    const attnCode = attentionKernel(attnSpec);
    const attnB = qoutRows ? 'rrrwww' : 'rrrww', combB = qoutRows ? 'rrww' : 'rrw';
    pending.push(this.pipeline(attnCode, attnB).then((p) => { this.attention = p; }));
    // Qwen3's one-token attention: the cache written (the new key), the norm weights bound last.
    const attnNormB = `rrw${attnB.slice(3)}r`;
    if (fuseQkNorm) {
      const code = attentionKernel({ ...attnSpec, qkNorm: { ropeOff, eps: c.rmsEps } });
      pending.push(this.pipeline(code, attnNormB).then((p) => { this.attentionQkNorm = p; }));
    }
    pending.push(this.pipeline(attentionCombineKernel({ heads: H, headDim: HD, qoutRows, groups: llmGpuConfig.attnCombineGroups }), combB).then((p) => { this.attnCombine = p; }));
    pending.push(this.pipeline(argmaxKernel(c.vocab), 'wrw').then((p) => { this.argmax = p; }));
    if (c.qkNorm) pending.push(this.pipeline(qkNormRopeKernel({ heads: H, kvHeads: KVH, headDim: HD, capacity: cap, ropeOff, eps: c.rmsEps, kv16, kStage }), 'rrww').then((p) => { this.qkNorm = p; }));
    if (kvAll) pending.push(this.initTiny(tinyMats, kvAll, kvBytes / 4, embed!, ropeOff));
    await Promise.all(pending);
    const attnLayout = this.layoutFor(attnB).bgl;
    const parts = this.alloc(SPLIT_MAX_T * H * ATTN_SPLITS_MAX * (HD / 4 + 1) * 16, 0, 'attention partials');
    for (const L of this.layers) {
      L.attnBind = this.bindGroup(attnLayout, [this.meta, this.q, L.kv, this.attn, parts, ...(qoutRows ? [A] : [])]);
      if (fuseQkNorm && L.qkNorm) L.qkNorm.attnBind = this.bindGroup(this.layoutFor(attnNormB).bgl, [this.meta, this.q, L.kv, this.attn, parts, ...(qoutRows ? [A] : []), L.qkNorm.nw]);
    }
    this.combineBind = this.bindGroup(this.layoutFor(combB).bgl, [this.meta, parts, this.attn, ...(qoutRows ? [A] : [])]);
    // Room for the logits of a speculative draft's verification from the start; longer all-position forwards grow it.
    this.ensureLogits(16);
  }

  /**
   * The tiny decode kernel where the model fits it: every layer's packed matrices and norm weights copied into one
   * buffer (a small model's: a few MB), its pipeline and bind group. Leaves `tiny` null where it does not fit.
   */
  private async initTiny(mats: { qkv: ReturnType<typeof packMatrix>; o: ReturnType<typeof packMatrix>; gu: ReturnType<typeof packMatrix>; down: ReturnType<typeof packMatrix> }[],
    kvAll: GPUBuffer, kvStride: number, embed: GPUBuffer, ropeOff: number): Promise<void> {
    const c = this.config;
    // One layout for every layer (scales are f16 pairs per matrix only where all of its scales are f16 values).
    const layouts = (L: (typeof mats)[number]) => JSON.stringify([L.qkv.layout, L.o.layout, L.gu.layout, L.down.layout]);
    if (llmGpuConfig.rowMeta || Object.values(mats[0]).some((p) => tinyMatrixProblem(p.layout) !== null)
      || mats.some((L) => layouts(L) !== layouts(mats[0]))) return;
    // Software drivers run a workgroup's threads in turn between barriers: fewer threads there.
    const WG = this.caps.software ? 64 : Math.min(1024, this.caps.maxInvocations);
    const dims = { D: c.hidden, F: c.intermediate, H: c.heads, KVH: c.kvHeads, HD: c.headDim, capacity: this.capacity, WG };
    const S = [8, 4, 2, 1].find((n) => tinyWorkgroupBytes({ ...dims, S: n }) <= this.caps.maxWorkgroupStorage);
    if (!S || WG < c.heads) return;
    // Layer 0's placement (word offsets, each a multiple of 4); layer l's is layerStride·l words further.
    let layerStride = 0;
    const place = (n: number) => { const at = layerStride; layerStride += Math.ceil(n / 4) * 4; return at; };
    const m0 = mats[0];
    const layer = {
      qkv: { off: place(m0.qkv.words.length), m: m0.qkv.layout }, o: { off: place(m0.o.words.length), m: m0.o.layout },
      gu: { off: place(m0.gu.words.length), m: m0.gu.layout }, down: { off: place(m0.down.words.length), m: m0.down.layout },
      attnNorm: place(c.hidden), mlpNorm: place(c.hidden), ...(c.qkNorm ? { qkNorm: place(2 * c.headDim) } : {}),
    };
    const all = new Uint32Array(layerStride * c.layers);
    mats.forEach((L, l) => {
      const at = l * layerStride, Lw = this.w.layers[l];
      all.set(L.qkv.words, at + layer.qkv.off); all.set(L.o.words, at + layer.o.off); all.set(L.gu.words, at + layer.gu.off); all.set(L.down.words, at + layer.down.off);
      new Float32Array(all.buffer, (at + layer.attnNorm) * 4, c.hidden).set(Lw.attnNorm);
      new Float32Array(all.buffer, (at + layer.mlpNorm) * 4, c.hidden).set(Lw.mlpNorm);
      if (layer.qkNorm !== undefined) new Float32Array(all.buffer, (at + layer.qkNorm) * 4, 2 * c.headDim).set([...Lw.qkNorm!.q, ...Lw.qkNorm!.k]);
    });
    const buf = this.upload(all, 0, 'the tiny decode weights');
    const code = tinyDecodeKernel({ ...dims, S, ropeOff, eps: c.rmsEps, layer, layers: c.layers, kvStride, layerStride, unroll: !this.caps.software });
    const pipeline = await this.pipeline(code, 'rrrww');
    this.tiny = { pipeline, bind: this.bindGroup(this.layoutFor('rrrww').bgl, [this.meta, buf, embed, kvAll, this.x]) };
    this.stats.tinyDecode = true;
  }

  /** The tensor-core GEMM's tile for this matrix (llmGpuConfig.gemmTensorCores), or null for gemmKernel. */
  private tensorCoreTile(s: GemmSpec): { tile: TcTile; emulate: boolean } | null {
    const mode = this.prefill === 'f16' ? llmGpuConfig.gemmTensorCores : false;
    const emulate = mode === 'emulate';
    if (!mode || !this.device.features.has('shader-f16') || (!emulate && !(this.caps.subgroupMatrix && this.subgroups))) return null;
    // K steps of 64 where K holds whole ones, else of 32 (the default tile's).
    const tiles = llmGpuConfig.tcTile ? [llmGpuConfig.tcTile] : [TC_TILE, { ...TC_TILE, kSteps: 2 }];
    const tile = tiles.find((t) => gemmTcValid(s, t, this.caps.maxWorkgroupStorage, this.caps.maxInvocations, emulate));
    return tile ? { tile, emulate } : null;
  }

  /**
   * Chunks a K block of a matrix (llmGpuConfig.kBlock; 0: row-major): by default those one iteration of its one-token
   * kernel reads, where that kernel takes x quantized (the measured case) and reads less than a row an iteration.
   */
  private kBlockFor(m: Matrix, oneToken: (q: QuantMatrix) => GemvSpec): number {
    const want = llmGpuConfig.kBlock;
    if (m.kind !== 'q' || llmGpuConfig.rowMeta > 0 || this.wantTiny || want === 0) return 0;
    let C = typeof want === 'number' ? want : 0;
    if (want === 'iter') {
      const spec = oneToken(m);
      if (dot4Pre(spec)) C = spec.TK * (spec.PU ?? 1);
    }
    return C > 0 && typeof kBlockOf(m.bits, m.group, m.K, C) !== 'string' ? C : 0;
  }

  private shapeFor(role: GemvRole, base: Omit<GemvSpec, keyof GemvShape>, TB: number): GemvSpec {
    return gemvShapeFor(role, base, TB, { maxWorkgroupStorage: this.caps.maxWorkgroupStorage, subgroupMax: this.sgMax, maxInvocations: this.caps.maxInvocations });
  }

  private sgMax = 0;

  /** Subgroups must be aligned runs of the workgroup no larger than TK (what the reductions assume). */
  private async subgroupsUsable(): Promise<boolean> {
    const p = await probeSubgroups(this.device);
    this.sgMax = p.maxSize;
    return p.ok;
  }

  private layoutFor(bindings: string): { bgl: GPUBindGroupLayout; pl: GPUPipelineLayout } {
    let e = this.layoutCache.get(bindings);
    if (!e) {
      const bgl = this.device.createBindGroupLayout({
        entries: [...bindings].map((b, i) => ({ binding: i, visibility: 4 /* COMPUTE */, buffer: { type: b === 'r' ? 'read-only-storage' : 'storage' } as GPUBufferBindingLayout })),
      });
      e = { bgl, pl: this.device.createPipelineLayout({ bindGroupLayouts: [bgl] }) };
      this.layoutCache.set(bindings, e);
    }
    return e;
  }

  private pipeline(code: string, bindings: string): Promise<GPUComputePipeline> {
    let p = this.pipelineCache.get(code);
    if (!p) {
      this.stats.pipelines++;
      p = this.device.createComputePipelineAsync({ layout: this.layoutFor(bindings).pl, compute: { module: this.device.createShaderModule({ code }), entryPoint: 'main' } })
        .catch((e: Error) => {
          throw new ExecutionError(`a generated LLM kernel does not compile: ${e.message}`, {}, 'this is a bug in webjit; please report it with the model config');
        });
      this.pipelineCache.set(code, p);
    }
    return p;
  }

  private bindGroup(layout: GPUBindGroupLayout, bufs: Bind[]): GPUBindGroup {
    this.stats.bindGroups++;
    return this.device.createBindGroup({ layout, entries: bufs.map((b, binding) => ({ binding, resource: 'buffer' in b ? b : { buffer: b } })) });
  }

  private alloc(bytes: number, usage: number, what: string): GPUBuffer {
    const size = Math.max(16, Math.ceil(bytes / 16) * 16);
    if (size > this.caps.maxBindingSize) {
      throw new ResourceLimitError(`${what} takes ${size} bytes; the device binds at most ${this.caps.maxBindingSize} per buffer`, {},
        'use a smaller capacity or model, a device with larger limits, or backend \'wasm\'');
    }
    const b = this.device.createBuffer({ size, usage: STORAGE | usage });
    this.buffers.push(b);
    return b;
  }

  private upload(data: ArrayBufferView, usage: number, what: string): GPUBuffer {
    const size = Math.max(16, Math.ceil(data.byteLength / 16) * 16);
    if (size > this.caps.maxBindingSize) {
      throw new ResourceLimitError(`${what} takes ${size} bytes; the device binds at most ${this.caps.maxBindingSize} per buffer`, {},
        'use a smaller model, a device with larger limits, or backend \'wasm\'');
    }
    const b = this.device.createBuffer({ size, usage: STORAGE | usage, mappedAtCreation: true });
    new Uint8Array(b.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    b.unmap();
    this.buffers.push(b);
    return b;
  }

  /** The logits buffer holds at least `rows` rows (grown rarely: the head's and argmax's bind groups follow it). */
  private ensureLogits(rows: number): void {
    if (this.logits && this.logitsRows >= rows) return;
    const want = Math.min(this.maxT, Math.max(rows, this.logitsRows * 2, 1));
    if (this.logits) { this.logits.destroy(); this.buffers.splice(this.buffers.indexOf(this.logits), 1); }
    this.logits = this.alloc(want * this.config.vocab * 4, COPY_SRC, 'the logits');
    this.logitsRows = want;
    this.head.bind = this.bindGroup(this.head.layout, [this.meta, this.headW, this.x, this.finalNorm, this.logits, ...this.preBufs(this.head, this.xp[0])]);
    if (this.headFed) this.headFed.bind = this.bindGroup(this.head.layout, [this.meta, this.headW, this.x, this.finalNorm, this.logits, this.xp[1]]);
    this.argmaxBind = this.bindGroup(this.layoutFor('wrw').bgl, [this.meta, this.logits, this.res]);
  }

  /**
   * The quantized x a matrix's kernels bind last, where they bind it (GemvKernels.preBound: `xin`), then where their
   * epilogue quantizes for the next matrix, `xout` and that matrix's norm weights.
   */
  private preBufs(k: GemvKernels, xin: GPUBuffer, xout?: GPUBuffer, nextNorm?: GPUBuffer): GPUBuffer[] {
    if (!k.preBound) return [];
    if (k.qout && (!xout || (k.qout.norm && !nextNorm))) throw new Error('preBufs: a quantizing epilogue without its buffers');
    return [xin, ...(k.qout ? [xout!] : []), ...(k.qout?.norm ? [nextNorm!] : [])];
  }

  private stagingOf(bytes: number): GPUBuffer {
    if (!this.staging || this.staging.size < bytes) {
      if (this.staging) { this.staging.destroy(); this.buffers.splice(this.buffers.indexOf(this.staging), 1); }
      const b = this.device.createBuffer({ size: Math.max(256, Math.ceil(bytes / 256) * 256), usage: MAP_READ | COPY_DST });
      this.buffers.push(b);
      this.staging = b;
    }
    return this.staging;
  }

  private destroyBuffers(): void {
    this.timestamps?.set.destroy();
    this.timestamps = null;
    for (const b of this.buffers) b.destroy();
    this.buffers.length = 0;
    this.logits = null;
    this.staging = null;
    this.streamStaging.length = 0;
  }

  // --- Running -----------------------------------------------------------------------------------------------------

  private begin(ids: readonly number[], extra = 0): void {
    if (this.released) throw new InputError('this WebGPU LLM runner was released', {}, 'create a new one');
    if (this.busy) throw new InputError('forward() was called while another forward() of the same runner was running', {}, 'await each call before the next');
    checkForward(this.config, this.len, this.capacity - extra, ids);
    if (this.ctx) checkLost(this.ctx);
  }

  /**
   * Writes the meta words (and the chunk's ids unless `ids` is null: the previous argmax wrote the token), records and
   * submits one chunk, with a copy of `copyBytes` of the logits or argmax ids to the staging buffer.
   */
  private submitChunk(ids: readonly number[] | null, T: number, head: { rows: number; rowOff: number; argmax: boolean; resOff?: number; feed?: boolean },
    copyBytes: number, prof: Profiling | null = null, around?: { before?: (enc: GPUCommandEncoder) => void; after?: (enc: GPUCommandEncoder) => void }): GPUBuffer | null {
    if (head.rows > this.logitsRows) this.ensureLogits(head.rows);
    const meta = new Uint32Array(ids ? META_IDS + T : META_HEADER);
    const keys = this.len + T;
    const most = this.kvCache === 'f16' ? Math.min(ATTN_SPLITS_MAX, this.attnSplit.mostF16) : ATTN_SPLITS_MAX;
    const splits = T <= SPLIT_MAX_T && keys > this.attnSplit.min ? Math.min(most, ceilDiv(keys, this.attnSplit.keys)) : 1;
    meta[0] = T; meta[1] = this.len; meta[2] = head.rowOff; meta[3] = head.rows; meta[4] = head.resOff ?? 0; meta[5] = head.feed ? 1 : 0;
    meta[6] = splits; meta[7] = ceilDiv(keys, splits);
    if (ids) meta.set(ids, META_IDS);
    const t0 = performance.now();
    this.device.queue.writeBuffer(this.meta, 0, meta.buffer, 0, meta.byteLength);
    const enc = this.device.createCommandEncoder();
    const timed = this.timing && this.timestamps !== null && copyBytes > 0;
    around?.before?.(enc);
    this.encode(enc, T, splits, head.rows, head.argmax, timed, prof);
    around?.after?.(enc);
    if (prof) {
      const q = prof.names.length * 2;
      enc.resolveQuerySet(prof.set, 0, q, prof.resolve, 0);
      enc.copyBufferToBuffer(prof.resolve, 0, prof.read, 0, q * 8);
    }
    let staging: GPUBuffer | null = null;
    if (copyBytes > 0) {
      staging = this.stagingOf(copyBytes);
      enc.copyBufferToBuffer(head.argmax ? this.res : this.logits!, 0, staging, 0, copyBytes);
      if (timed) {
        const ts = this.timestamps!;
        enc.resolveQuerySet(ts.set, 0, 2, ts.resolve, 0);
        enc.copyBufferToBuffer(ts.resolve, 0, ts.read, 0, 16);
      }
    }
    this.device.queue.submit([enc.finish()]);
    this.stats.encodeMsLastForward = performance.now() - t0;
    this.len += T;
    return staging;
  }

  private async readBack(staging: GPUBuffer, bytes: number, u32: boolean, timed = true): Promise<Float32Array | Uint32Array> {
    await staging.mapAsync(MAP_READ, 0, bytes);
    const r = staging.getMappedRange(0, bytes).slice(0);
    staging.unmap();
    if (this.timestamps && this.timing && timed) {
      const ts = this.timestamps;
      await ts.read.mapAsync(MAP_READ, 0, 16);
      const t = new BigInt64Array(ts.read.getMappedRange(0, 16).slice(0));
      ts.read.unmap();
      this.stats.gpuMsLastForward = Number(t[1] - t[0]) / 1e6;
    }
    return u32 ? new Uint32Array(r) : new Float32Array(r);
  }

  private async run(ids: readonly number[], mode: Mode): Promise<Float32Array | Uint32Array> {
    this.begin(ids);
    const V = this.config.vocab, all = mode === 'logitsAll' || mode === 'argmaxAll', argmax = mode === 'argmax' || mode === 'argmaxAll';
    const out = all ? (argmax ? new Uint32Array(ids.length) : new Float32Array(ids.length * V)) : null;
    this.busy = true;
    try {
      let last: Float32Array | Uint32Array | null = null;
      let c0 = 0;
      for (const size of prefillChunks(ids.length, this.maxT, this.prefillCost)) {
        const chunk = ids.slice(c0, c0 + size);
        const T = chunk.length, isLast = c0 + T === ids.length;
        const rows = all ? T : isLast ? 1 : 0;
        const bytes = rows * (argmax ? 4 : V * 4);
        const staging = this.submitChunk(chunk, T, { rows, rowOff: all ? 0 : T - 1, argmax }, bytes);
        if (staging) {
          const got = await this.readBack(staging, bytes, argmax);
          if (out) out.set(got, argmax ? c0 : c0 * V);
          else last = got;
        }
        c0 += T;
      }
      return out ?? last!;
    } finally {
      this.busy = false;
    }
  }

  /**
   * Greedy decoding of `steps` tokens after `prompt` with no read-back between steps: each step's argmax writes the
   * next step's token on the GPU, so the CPU records step n+1 while the GPU runs step n, and the ids come back once.
   * Returns the generated ids (the last one is not run: the cache grows by prompt.length + steps − 1). Stops at nothing:
   * cut the result at an end-of-sequence id.
   */
  async generateGreedy(prompt: readonly number[], steps: number): Promise<number[]> {
    if (!Number.isInteger(steps) || steps < 1) throw new InputError(`generateGreedy: steps = ${steps}`, {}, 'give a whole number of steps, at least 1');
    this.begin(prompt, steps - 1);
    this.busy = true;
    try {
      let c0 = 0;
      for (const size of prefillChunks(prompt.length, this.maxT, this.prefillCost)) {
        const chunk = prompt.slice(c0, c0 + size), T = chunk.length;
        const isLast = c0 + T === prompt.length;
        this.submitChunk(chunk, T, { rows: isLast ? 1 : 0, rowOff: T - 1, argmax: isLast, resOff: 0, feed: true }, 0);
        c0 += T;
      }
      for (let s = 1; s < steps; s++) this.submitChunk(null, 1, { rows: 1, rowOff: 0, argmax: true, resOff: s, feed: true }, 0);
      const staging = this.stagingOf(steps * 4);
      const enc = this.device.createCommandEncoder();
      enc.copyBufferToBuffer(this.res, 0, staging, 0, steps * 4);
      this.device.queue.submit([enc.finish()]);
      return [...(await this.readBack(staging, steps * 4, true, false))];
    } finally {
      this.busy = false;
    }
  }

  /**
   * Greedy decoding as a stream: runs `id` (the newest token, not yet in the cache), then each step's argmax as the
   * next step's token on the GPU (as generateGreedy), with up to `depth` steps in flight: step n + depth is recorded
   * and submitted while the caller waits for step n's id (a 4-byte read-back each), so the GPU does not idle through
   * the round trips. Gives at most `max` ids. close() (required) waits for the steps in flight and leaves the cache as
   * plain decoding would have: every id before the newest one given out. The runner is busy until then. H100, 128
   * tokens: depth 2 gives 1.38–1.90× one read-back a token, 4 a little more, 8 no more (bench/gpu/llm-stream.ts).
   */
  greedyStream(id: number, max: number, depth = 4): GreedyStream {
    if (!Number.isInteger(max) || max < 1) throw new InputError(`greedyStream: max = ${max}`, {}, 'ask for at least one token');
    if (!Number.isInteger(depth) || depth < 1) throw new InputError(`greedyStream: depth = ${depth}`, {}, 'keep at least one step in flight');
    this.begin([id], max - 1);
    this.busy = true;
    const len0 = this.len;
    while (this.streamStaging.length < depth) {
      const b = this.device.createBuffer({ size: 256, usage: MAP_READ | COPY_DST });
      this.buffers.push(b);
      this.streamStaging.push(b);
    }
    const maps: Promise<void>[] = [];
    let submitted = 0, given = 0, closed = false;
    const submit = () => {
      const s = submitted++, slot = s % depth, ring = this.streamStaging[slot];
      this.submitChunk(s === 0 ? [id] : null, 1, { rows: 1, rowOff: 0, argmax: true, resOff: slot, feed: true }, 0, null,
        { after: (enc) => enc.copyBufferToBuffer(this.res, slot * 4, ring, 0, 4) });
      maps[slot] = ring.mapAsync(MAP_READ, 0, 4);
    };
    const topUp = () => { while (submitted < max && submitted - given < depth) submit(); };
    return {
      next: async () => {
        if (closed || given >= max) throw new InputError('greedyStream: no more tokens', {}, `ask for at most ${max}, before close()`);
        topUp();
        const slot = given % depth, ring = this.streamStaging[slot];
        await maps[slot];
        const got = new Uint32Array(ring.getMappedRange(0, 4))[0];
        ring.unmap();
        given++;
        topUp();
        return got;
      },
      close: async () => {
        if (closed) return;
        closed = true;
        try {
          for (let s = given; s < submitted; s++) {
            const ring = this.streamStaging[s % depth];
            await maps[s % depth].then(() => ring.unmap(), () => {});
          }
        } finally {
          this.len = len0 + given;
          this.busy = false;
        }
      },
    };
  }

  /**
   * One round of greedy speculative decoding with one read-back. The draft (another runner on this device) runs
   * `draftIds`, the tokens its cache lacks, and k − 1 more steps, each step's argmax becoming the next step's token on
   * the GPU (as generateGreedy); this runner then runs `ids`, its pending tokens, and the k proposals, copied into its
   * token ids on the GPU, with the argmax of every position. Returns the proposals and this runner's argmaxes
   * (ids.length + k). Both caches keep everything they ran: the caller truncates them to what it accepts.
   */
  async speculateGreedy(draft: WebGpuLlm, ids: readonly number[], draftIds: readonly number[], k: number): Promise<{ proposals: number[]; argmax: number[] }> {
    if (draft.device !== this.device) throw new InputError('speculateGreedy: the draft runs on another GPU device', {}, 'create both runners on one device');
    if (!Number.isInteger(k) || k < 1) throw new InputError(`speculateGreedy: k = ${k}`, {}, 'propose at least one token');
    if (draft === this) throw new InputError('speculateGreedy: the draft is the target itself', {}, 'open the draft model as a runner of its own');
    const T = ids.length + k;
    if (ids.length < 1 || draftIds.length < 1 || T > this.maxT || draftIds.length > draft.maxT) {
      throw new InputError(`speculateGreedy: ${ids.length} pending tokens + ${k} proposals (the draft ${draftIds.length})`, {}, `run at most ${this.maxT} tokens a round, at least one pending for each model`);
    }
    // The proposals' slots hold 0 until the GPU copies the draft's ids into them.
    const all = [...ids, ...new Array<number>(k).fill(0)];
    this.begin(all);
    draft.begin(draftIds, k - 1);
    this.busy = draft.busy = true;
    try {
      draft.submitChunk(draftIds, draftIds.length, { rows: 1, rowOff: draftIds.length - 1, argmax: true, resOff: 0, feed: true }, 0);
      for (let s = 1; s < k; s++) draft.submitChunk(null, 1, { rows: 1, rowOff: 0, argmax: true, resOff: s, feed: true }, 0);
      const staging = this.stagingOf((T + k) * 4);
      this.submitChunk(all, T, { rows: T, rowOff: 0, argmax: true, resOff: 0 }, 0, null, {
        before: (enc) => enc.copyBufferToBuffer(draft.res, 0, this.meta, (META_IDS + ids.length) * 4, k * 4),
        after: (enc) => {
          enc.copyBufferToBuffer(this.res, 0, staging, 0, T * 4);
          enc.copyBufferToBuffer(draft.res, 0, staging, T * 4, k * 4);
        },
      });
      const got = await this.readBack(staging, (T + k) * 4, true, false);
      return { argmax: [...got.subarray(0, T)], proposals: [...got.subarray(T, T + k)] };
    } finally {
      this.busy = draft.busy = false;
    }
  }

  /** Records one chunk: per layer q/k/v (and Qwen3's q/k norm), attention, o, gate/up, down; then the head and argmax. */
  private encode(enc: GPUCommandEncoder, T: number, splits: number, headRows: number, argmax: boolean, timed: boolean,
    prof: Profiling | null): void {
    const pass = prof ? null : enc.beginComputePass(timed
      ? { timestampWrites: { querySet: this.timestamps!.set, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } }
      : undefined);
    const TB = this.bucketOf(T);
    let n = 0;
    // Profiling: every dispatch in a pass of its own, timed.
    const dispatch = (name: string, pipeline: GPUComputePipeline, bind: GPUBindGroup, x: number, y = 1, z = 1) => {
      if (this.ablate?.has(name)) return;
      let p = pass;
      if (prof) {
        const i = prof.names.length;
        prof.names.push(name);
        p = enc.beginComputePass({ timestampWrites: { querySet: prof.set, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } });
      }
      p!.setPipeline(pipeline);
      p!.setBindGroup(0, bind);
      p!.dispatchWorkgroups(x, y, z);
      if (prof) p!.end();
      n++;
    };
    const gemv = (name: string, k: GemvKernels, rows: number, tb: number) => {
      const e = k.byTB.get(tb)!;
      if (e.quantBefore) dispatch(`${name} x8`, k.quant.pipeline!, k.quant.bind!, 1, rows);
      dispatch(name, e.pipeline, k.bind!, ceilDiv(k.units, e.UW), ceilDiv(rows, e.TW));
    };
    if (T === 1 && this.tiny) dispatch('tiny decode', this.tiny.pipeline, this.tiny.bind, 1);
    else if (this.embedGather) dispatch('embedding', this.embedGather.pipeline, this.embedGather.bind, T);
    if (!(T === 1 && this.tiny)) for (const L of this.layers) {
      gemv('qkv', L.qkv, T, TB);
      // Qwen3: one token's q/k norm inside attention where its kernel exists (the one-token q/k/v kernel then left k in
      // Q), else a dispatch of its own.
      const inAttn = T === 1 && L.qkNorm?.attnBind;
      if (L.qkNorm && !inAttn) dispatch('qk norm', this.qkNorm!, L.qkNorm.bind, this.config.heads + this.config.kvHeads, T);
      dispatch('attention', inAttn ? this.attentionQkNorm! : this.attention, inAttn || L.attnBind!, this.config.heads, T, splits);
      if (splits > 1) dispatch('attention combine', this.attnCombine, this.combineBind, this.config.heads, T);
      gemv('o', L.o, T, TB);
      gemv('gate/up', L.gateup, T, TB);
      gemv('down', L.down, T, TB);
    }
    if (headRows > 0) {
      // One token (its logits row 0): x as the last down's epilogue quantized it (headFed is never set with tinyDecode).
      if (T === 1 && headRows === 1 && this.headFed) dispatch('head', this.headFed.pipeline!, this.headFed.bind!, ceilDiv(this.head.units, this.headFed.UW));
      else gemv('head', this.head, headRows, this.bucketOf(headRows));
      if (argmax) dispatch('argmax', this.argmax, this.argmaxBind!, headRows);
    }
    pass?.end();
    this.stats.dispatchesLastForward = n;
  }

  /**
   * Profiles one forward of `ids` (argmax of every position): every dispatch in a compute pass of its own between two
   * GPU timestamps. Returns the GPU time per kernel role (ms, summed over layers) and their count. Needs timestamp-query.
   */
  async profileForward(ids: readonly number[]): Promise<{ name: string; ms: number; count: number }[]> {
    if (!this.device.features.has('timestamp-query')) throw new UnsupportedError('profiling needs the timestamp-query feature', {}, 'run without profiling');
    this.begin(ids);
    if (ids.length > this.maxT) throw new InputError(`profileForward: ${ids.length} tokens > ${this.maxT}`, {}, 'profile a shorter chunk');
    this.busy = true;
    // At most 11 dispatches a layer (q/k/v, the q/k norm, attention and its combine, o, gate/up, down, and x quantized
    // before four of them), then the embedding gather, the head (and x before it) and argmax.
    const maxQ = 2 * (this.layers.length * 11 + 6);
    const prof: Profiling = {
      set: this.device.createQuerySet({ type: 'timestamp', count: maxQ }),
      resolve: this.device.createBuffer({ size: maxQ * 8, usage: 0x200 /* QUERY_RESOLVE */ | COPY_SRC }),
      read: this.device.createBuffer({ size: maxQ * 8, usage: MAP_READ | COPY_DST }),
      names: [],
    };
    try {
      this.submitChunk(ids, ids.length, { rows: ids.length, rowOff: 0, argmax: true }, 0, prof);
      const q = prof.names.length * 2;
      await prof.read.mapAsync(MAP_READ, 0, q * 8);
      const t = new BigInt64Array(prof.read.getMappedRange(0, q * 8).slice(0));
      prof.read.unmap();
      const by = new Map<string, { ms: number; count: number }>();
      prof.names.forEach((name, i) => {
        const e = by.get(name) ?? { ms: 0, count: 0 };
        e.ms += Number(t[2 * i + 1] - t[2 * i]) / 1e6;
        e.count++;
        by.set(name, e);
      });
      return [...by].map(([name, e]) => ({ name, ...e }));
    } finally {
      this.busy = false;
      prof.set.destroy(); prof.resolve.destroy(); prof.read.destroy();
    }
  }

}

function checkConfig(c: LlamaConfig): void {
  // The Wasm runtime also needs head and hidden sizes that are multiples of 4: only the reference runs those.
  const bad = (what: string, hint = "use backend 'wasm' or 'reference'") => new UnsupportedError(`the WebGPU LLM runtime needs ${what}`, {}, hint);
  if (c.hidden % 4 || c.intermediate % 4) throw bad(`hidden and intermediate sizes that are multiples of 4 (got ${c.hidden}, ${c.intermediate})`, "use backend 'reference'");
  if (c.headDim % 4) throw bad(`a head size that is a multiple of 4 (got ${c.headDim})`, "use backend 'reference'");
  if (c.headDim > 256) throw bad(`a head size of at most 256 (got ${c.headDim})`);
  if (c.heads % c.kvHeads) throw bad(`heads (${c.heads}) that are a multiple of the KV heads (${c.kvHeads})`);
}

registerLlmBackend('webgpu', (w, o) => WebGpuLlm.create(w, { capacity: o.capacity, activations: o.activations, kvCache: o.kvCache, prefill: o.prefill }));
