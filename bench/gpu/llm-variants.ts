// GPU time of a decode forward for variants of the WebGPU LLM runtime, interleaved round by round in one process on
// one random model (so that clocks and the host affect them alike), and what each kernel role costs inside the
// forward: the forward timed with that role's dispatches left out (WebGpuLlm.ablate), against the whole one in the
// same round. Per-dispatch profiles (llm-decode.ts) add a pass per dispatch and keep the GPU near idle clocks; this
// does not.
// Usage: node llm-variants.mjs   Env: LLM_HIDDEN LLM_INTER LLM_LAYERS LLM_HEADS LLM_KV LLM_HEADDIM LLM_VOCAB (default
//   LLM_SIZE=7b's shapes; 1b 13b 70b; or LLM_MODEL=a webjit model file; LLM_BIAS=1 q/k/v biases; LLM_QKNORM=1 q/k norms) LLM_ACT=int8|f32 LLM_GROUP=32|64|128 (the random model's quantization group) LLM_VARIANTS=base,noprod LLM_ROUNDS=5 LLM_ABLATE=0|1 LLM_CTX=80 LLM_CAP=1024 (cache positions) LLM_POSITIONS=2048 (the model's) LLM_TS=5 (token counts of the
//   multi-token forwards timed) LLM_CHECK=n LLM_CHECK1=n (logits against the first runner's)
import { randomFillSync } from 'node:crypto';
import { acquireGpu } from '../../src/backends/webgpu/device.js';
import { loadLlm } from '../../src/llm/model_io.js';
import { randomQuantLlama } from '../../src/llm/random_model.js';
import type { LlamaConfig } from '../../src/llm/types.js';
import { WebGpuLlm, llmGpuConfig } from '../../src/llm/webgpu.js';
import type { GemvShape } from '../../src/llm/wgsl.js';
import { mulberry32 } from '../../src/util/random.js';

const env = (k: string, d: number) => (process.env[k] ? Number(process.env[k]) : d);
const ROOF = env('ROOFLINE_GBS', 3350);
// Llama-2 shapes by size (LLM_SIZE); LLM_* override single fields.
const SIZES: Record<string, [number, number, number, number, number]> = {
  // hidden, intermediate, layers, heads, kv heads
  '1b': [2048, 5632, 22, 32, 4], '7b': [4096, 11008, 32, 32, 32], '13b': [5120, 13824, 40, 40, 40], '70b': [8192, 28672, 80, 64, 8],
};
const size = SIZES[process.env.LLM_SIZE ?? '7b'];
if (!size) throw new Error(`LLM_SIZE: one of ${Object.keys(SIZES).join(', ')}`);
const cfg: LlamaConfig = {
  vocab: env('LLM_VOCAB', 32000), hidden: env('LLM_HIDDEN', size[0]), intermediate: env('LLM_INTER', size[1]), layers: env('LLM_LAYERS', size[2]),
  heads: env('LLM_HEADS', size[3]), kvHeads: env('LLM_KV', size[4]), headDim: env('LLM_HEADDIM', 128), maxPositions: env('LLM_POSITIONS', 2048), ropeTheta: 10000, rmsEps: 1e-5,
  // LLM_BIAS=1: q/k/v biases (Qwen2)
  ...(process.env.LLM_BIAS === '1' ? { qkvBias: true as const } : {}),
  // LLM_QKNORM=1: per-head q/k norms (Qwen3)
  ...(process.env.LLM_QKNORM === '1' ? { qkNorm: true as const } : {}),
};
const act = process.env.LLM_ACT === 'f32' ? 'f32' : 'int8';
const rounds = env('LLM_ROUNDS', 5), ctx = env('LLM_CTX', 80);
const Ts = (process.env.LLM_TS ?? '5').split(',').map(Number);

const noTree = (c: string) => c.replace(/  for \(var e = lid; e < \d+u; e \+= \d+u\) \{ SS\[e\] = [^\n]*\n  workgroupBarrier\(\);\n/, '')
  .replace(/  for \(var st = \d+u; st > 0u; st >>= 1u\) \{\n[^\n]*\n    workgroupBarrier\(\);\n  \}\n?/, '');
const noQuant = (c: string) => c.replace('if (t0 + ti < rows && gg <', 'if (false && gg <');
/**
 * Timing-only probe (session 23): before its epilogue, every thread of a one-token pre-quantized int8 kernel loads one
 * word of each of its first-iteration weight chunks in the workgroup `D` tiles ahead, so that DRAM keeps streaming
 * (into L2) while this workgroup reduces and quantizes and the next one ramps up. The words are folded into a
 * subnormal added before the subgroup sums (so that the loads are kept; the sums move by at most 1.4e-45).
 */
const touchAhead = (D: number) => (c: string, _r: string, TB: number): string => {
  if (TB !== 1 || !c.includes('dot4I8Packed')) return c;
  const ub = /let ub = wid\.x \* (\d+)u \+ rg \* (\d+)u;/.exec(c);
  if (!ub) return c;
  const units = [...c.matchAll(/let (un\d+) = min\(ub \+ (\d+)u, (\d+)u\);/g)];
  const rws = [...c.matchAll(/let (rw\d+_\d+) = ([^;]+);/g)];
  const loads = [...c.matchAll(/let w(\d+_\d+)v?(\d*) = W\[(rw\d+_\d+) \* (\d+)u \+ (c\d*)\];/g)];
  const cdefs = [...c.matchAll(/let (c\d+) = min\(c \+ (\d+)u, (\d+)u\);/g)];
  if (!units.length || !loads.length) return c;
  const t = [`var tch = 0u;`, `{`, `let ubN = (wid.x + ${D}u) * ${ub[1]}u + rg * ${ub[2]}u;`];
  for (const m of units) t.push(`let ${m[1]}N = min(ubN + ${m[2]}u, ${m[3]}u);`);
  for (const m of rws) t.push(`let ${m[1]}N = ${m[2].replace(/\b(un\d+)\b/g, '$1N')};`);
  t.push('let c = tk;');
  for (const m of cdefs) t.push(`let ${m[1]} = min(c + ${m[2]}u, ${m[3]}u);`);
  for (const m of loads) t.push(`tch ^= W[${m[3]}N * ${m[4]}u + ${m[5]}].x;`);
  t.push('}');
  // After the K loop: where the epilogue starts (the 1/rms tree or the subgroup sums).
  const at = Math.min(...['  for (var e = lid; e < ', '  { let sv = subgroupAdd('].map((k) => c.indexOf(k)).filter((i) => i >= 0));
  if (!Number.isFinite(at)) return c;
  let out = c.slice(0, at) + t.join('\n  ') + '\n' + c.slice(at);
  let once = false;
  out = out.replace(/let sv = subgroupAdd\((a[\d_]+)\);/, (_m, a) => { once = true; return `let sv = subgroupAdd(${a} + bitcast<f32>(tch & 1u));`; });
  return once ? out : c;
};
/** A code hook for the tensor-core prefill GEMMs only (their WGSL enables subgroup matrices). */
const tcHook = (f: (c: string) => string) => (c: string): string => (c.includes('subgroupMatrixMultiplyAccumulate') ? f(c) : c);
/**
 * Timing only (session 31; the logits are wrong): the one-token matrix kernels read their weights, scales and zeros
 * in K-block-major order, one 32-chunk block of every row after another (tlb-lab's "slab"), as if the matrices were
 * packed that way. The bytes read are the same; only the order across rows and blocks changes.
 */
const slabHook = (code: string, role: string, TB: number): string => {
  if (TB !== 1 || role === 'head') return code;
  const so = /w32\((\d+)u \+ \(\(rw\w+ \* (\d+)u \+ /.exec(code);
  if (!so) return code;
  const KC = Number(so[2]), N = Number(so[1]) / (KC * 4);
  const idx = (rw: string, cv: string) => `((${cv} / 32u) * ${N * 32}u + ${rw} * 32u + (${cv} % 32u))`;
  let c = code.replace(new RegExp(`\\((rw\\w+) \\* ${KC}u \\+ (c\\w*)\\)`, 'g'), (_m, rw, cv) => idx(rw, cv));
  c = c.replace(new RegExp(`W\\[(rw\\w+) \\* ${KC}u \\+ (c\\w*)\\]`, 'g'), (_m, rw, cv) => `W[${idx(rw, cv)}]`);
  c = c.replace(new RegExp(`(rw\\w+) \\* ${KC / 8}u \\+ \\((c\\w*) >> 3u\\)`, 'g'), (_m, rw, cv) => `(${cv} / 32u) * ${N * 4}u + ${rw} * 4u + ((${cv} % 32u) >> 3u)`);
  return c;
};
/** Variants: what each sets in llmGpuConfig (from the defaults) before its runner is created. */
const DEFAULTS = { ...llmGpuConfig };
const at1 = (shape: Partial<GemvShape>) => (_r: string, _u: number, TB: number) => (TB === 1 ? shape : undefined);
const VARIANTS: Record<string, Partial<typeof llmGpuConfig>> = {
  base: {},
  // Session 30: Σx² by subgroups and ungated one-token kernels, both off and one at a time.
  sgOff: { sgRms: false, ungated: false },
  noSgRms: { sgRms: false },
  gated: { ungated: false },
  // Session 31: weights read in K-block-major order (timing only, slabHook, over row-major packing).
  slabT: { kBlock: 0, codeHook: slabHook },
  // Session 32: K-block-major packing (llmGpuConfig.kBlock 'iter' by default): row-major, and blocks of 32 chunks for
  // every matrix whatever its loop (slabT's order, with the head).
  rowMajor: { kBlock: 0 },
  kb32: { kBlock: 32 },
  // Blocks of 128 chunks everywhere (70B's piped loops read 32 an iteration): the small-T buckets' cost, memory or ALU?
  kb128: { kBlock: 128 },
  // Session 31: the head's one-token kernel quantizing x in each workgroup (before headFed).
  headStaged: { headFed: false },
  // down's one-token shape: 64 threads along K (14 chunks a thread), piped or 4 chunks an iteration; 2 chunks an iteration.
  dTk64p: { shape: (r, _u, TB) => (TB === 1 && r === 'down' ? { TK: 64, RG: 16, RT: 2, UN: 2, PU: 1, pipe: true } : undefined) },
  dTk64: { shape: (r, _u, TB) => (TB === 1 && r === 'down' ? { TK: 64, RG: 16, RT: 2, PU: 4, pipe: false } : undefined) },
  dPu2: { shape: (r, _u, TB) => (TB === 1 && r === 'down' ? { PU: 2 } : undefined) },
  dPipe2: { shape: (r, _u, TB) => (TB === 1 && r === 'down' ? { PU: 2, pipe: true } : undefined) },
  noprod: { producerQuant: false },
  qknormsep: { attnQkNorm: false },
  nofloor: { producerFloor: false },
  b8: { buckets: [1, 4, 8, 16] },
  rowmeta: { rowMeta: 4 },
  rowmeta32: { rowMeta: 32 },
  attn1: { attnUnroll: 1 },
  un1: { shape: at1({ UN: 1 }) },
  un4: { shape: at1({ UN: 4 }) },
  tk64: { shape: at1({ TK: 64, RG: 16 }) },
  split32: { attnSplitMin: 0, attnSplitKeys: 32 },
  old1: { shape: at1({ PU: 1, lateRms: false }) },
  // One-token shapes: 256-thread workgroups of the same outputs (RT doubled), or fewer threads along K.
  // Small T: workgroups of 32 outputs for the roles whose epilogues can quantize for the next matrix.
  sp: { shape: (r, _u, TB) => (r === 'qkv' || r === 'head' ? undefined : TB === 4 ? { RG: 16, RT: 2 } : TB === 16 ? { RG: 32, RT: 1 } : undefined) },
  sp4: { shape: (r, _u, TB) => (r !== 'qkv' && r !== 'head' && TB === 4 ? { RG: 16, RT: 2 } : undefined) },
  rg8: { shape: (r, _u, TB) => (TB === 1 ? { RG: 8, RT: r === 'qkv' ? 2 : 4 } : undefined) },
  tk16: { shape: at1({ TK: 16, RG: 16 }) },
  tk16rg32: { shape: at1({ TK: 16, RG: 32, RT: 1 }) },
  tk8rg32: { shape: at1({ TK: 8, RG: 32 }) },
  tiny: {},
  pu2: { shape: at1({ PU: 2 }) },
  pu1: { shape: at1({ PU: 1 }) },
  rt1: { shape: at1({ RT: 1, RG: 32 }) },
  rt1pu2: { shape: at1({ RT: 1, RG: 32, PU: 2 }) },
  rt1rg16: { shape: at1({ RT: 1, RG: 16 }) },
  // The reduction through fin as before (two slots a row group: one is empty on a device whose subgroups are TK wide).
  fin: { shape: at1({ sgMin: 16 } as Partial<GemvShape>) },
  // Fewer, larger workgroups with the same loads in flight a thread (twice the rows, half the chunks an iteration).
  guRt4pu2: { shape: (r, _u, TB) => (TB === 1 && r === 'gateup' ? { RT: 4, PU: 2 } : undefined) },
  guRt4pu1: { shape: (r, _u, TB) => (TB === 1 && r === 'gateup' ? { RT: 4, PU: 1 } : undefined) },
  rt4pu2: { shape: (r, _u, TB) => (TB === 1 && r !== 'head' ? { RT: 4, PU: 2 } : undefined) },
  downRt4pu2: { shape: (r, _u, TB) => (TB === 1 && r === 'down' ? { RT: 4, PU: 2 } : undefined) },
  finGU: { shape: (r, _u, TB) => (TB === 1 && r === 'gateup' ? { sgMin: 16 } as Partial<GemvShape> : undefined) },
  finQKV: { shape: (r, _u, TB) => (TB === 1 && r === 'qkv' ? { sgMin: 16 } as Partial<GemvShape> : undefined) },
  finO: { shape: (r, _u, TB) => (TB === 1 && r === 'o' ? { sgMin: 16 } as Partial<GemvShape> : undefined) },
  finDown: { shape: (r, _u, TB) => (TB === 1 && r === 'down' ? { sgMin: 16 } as Partial<GemvShape> : undefined) },

  // Small T with f32 x (session 22): x read from storage instead of staged, more rows a workgroup, a larger stage.
  smallXs0: { shape: (_r, _u, TB) => (TB > 1 ? { XT: 0 } : undefined) },
  smallRg16: { shape: (_r, _u, TB) => (TB > 1 ? { RG: 16 } : undefined) },
  smallRg16rt2: { shape: (_r, _u, TB) => (TB > 1 ? { RG: 16, RT: 2 } : undefined) },
  smallXs0rg16: { shape: (_r, _u, TB) => (TB > 1 ? { XT: 0, RG: 16 } : undefined) },
  stage48: { stageBytes: 49152 },
  // Tokens past the last bucket run the tiled prefill GEMM (64 rows a tile).
  bucket8: { buckets: [1, 4, 8] },
  // Prompts in chunks of 16 tokens (the 16-token matrix-vector kernels) or 64 (one tile of the GEMM) instead of 256.
  pf16: { maxT: 16 },
  pf64: { maxT: 64 },
  noPrefillPlan: { prefillTuning: false },
  gemm32: { prefillTuning: false, gemmTN: 32 },
  bucket4: { buckets: [1, 4] },
  smallRg32: { shape: (_r, _u, TB) => (TB > 1 ? { RG: 32 } : undefined) },
  smallRg16s48: { stageBytes: 49152, shape: (_r, _u, TB) => (TB > 1 ? { RG: 16 } : undefined) },
  smallRg32s48: { stageBytes: 49152, shape: (_r, _u, TB) => (TB > 1 ? { RG: 32 } : undefined) },

  // Timing-only ablations of the one-token epilogue (the numbers are wrong): no 1/rms tree, no quantizing for the
  // next matrix, neither.
  notree: { codeHook: (c, _r, TB) => (TB === 1 ? noTree(c) : c) },
  noq: { codeHook: (c, _r, TB) => (TB === 1 ? noQuant(c) : c) },
  noepi: { codeHook: (c, _r, TB) => (TB === 1 ? noQuant(noTree(c)) : c) },
  // The next iteration's loads issued before this iteration's math (GemvShape.pipe), at 4, 2 and 1 chunks an iteration.
  pipe4: { shape: at1({ PU: 4, pipe: true }) },
  nopipe: { shape: at1({ PU: 4, pipe: false }) },
  guOnly: { shape: (r, _u, TB) => (TB !== 1 ? undefined : r === 'gateup' ? { PU: 1, pipe: true } : { PU: 4, pipe: false }) },
  qkvoOnly: { shape: (r, _u, TB) => (TB !== 1 ? undefined : r === 'qkv' || r === 'o' ? { PU: 1, pipe: true } : { PU: 4, pipe: false }) },
  pipe2: { shape: at1({ PU: 2, pipe: true }) },
  pipe1: { shape: at1({ PU: 1, pipe: true }) },
  pipe1rt4: { shape: at1({ PU: 1, pipe: true, RT: 4, RG: 8 }) },
  // Per role, on top of the default (pipe1): q/k/v in smaller workgroups (more of them: 70B's 5120 rotary pairs make
  // 160 workgroups of 32, 1.2 waves on 132 SMs), down as before or two chunks an iteration.
  qkvRg8: { shape: (r, _u, TB) => (TB === 1 && r === 'qkv' ? { RG: 8 } : undefined) },
  qkvRg4: { shape: (r, _u, TB) => (TB === 1 && r === 'qkv' ? { RG: 4 } : undefined) },
  qkvPu2: { shape: (r, _u, TB) => (TB === 1 && r === 'qkv' ? { PU: 2 } : undefined) },
  downPipe1: { shape: (r, _u, TB) => (TB === 1 && r === 'down' ? { PU: 1, pipe: true } : undefined) },
  downPu4: { shape: (r, _u, TB) => (TB === 1 && r === 'down' ? { PU: 4, pipe: false } : undefined) },
  downPipe2: { shape: (r, _u, TB) => (TB === 1 && r === 'down' ? { PU: 2 } : undefined) },
  pipe1gu: { shape: (r, _u, TB) => (TB === 1 && (r === 'gateup' || r === 'down') ? { PU: 1, pipe: true } : undefined) },
  touch66: { codeHook: touchAhead(66) },
  touch132: { codeHook: touchAhead(132) },
  touch264: { codeHook: touchAhead(264) },
  // The runtime's defaults with an f16 KV cache (WebGpuLlmOptions.kvCache; every variant named kv16…).
  kv16: {},
  kv16s128: { attnSplitKeys: 128 },
  kv16s512: { attnSplitKeys: 512 },
  kv16s1024: { attnSplitKeys: 1024 },
  // An f16 cache split up to 32 ways like an f32 one (llmGpuConfig.attnSplitsF16 before it was set).
  kv16split32: { attnSplitsF16: 32 },
  s128: { attnSplitKeys: 128 },
  // The split attention's combine as one group walking every split (the kernel before session 27).
  comb1: { attnCombineGroups: 1 },
  // The prefill GEMM on the tensor cores (WebGpuLlmOptions.prefill 'f16' for every variant named tc…; wgsl_tc.ts):
  // the default tile (64×128, K steps of 64), K steps of 32, 64×64.
  tc: {},
  // Session 32: the tensor-core GEMM reading row-major weights (tc reads them K-block-major where decode does).
  tcRowMajor: { kBlock: 0 },
  tck32: { tcTile: { fm: 2, fn: 2, sm: 2, sn: 4, kSteps: 2 } },
  tc64: { tcTile: { fm: 2, fn: 1, sm: 2, sn: 4, kSteps: 2 } },
  // 128 tokens a tile: 128 rows (8 subgroups of 4×2 matrices), K steps of 32 or 64; 64 rows (8 of 2×2), K steps of 64.
  tc128: { tcTile: { fm: 4, fn: 2, sm: 2, sn: 4, kSteps: 2 } },
  tc128k64: { tcTile: { fm: 4, fn: 2, sm: 2, sn: 4, kSteps: 4 } },
  tc128n64: { tcTile: { fm: 2, fn: 2, sm: 4, sn: 2, kSteps: 4 } },
  // Timing-only ablations of the tensor-core GEMM (session 29; the numbers are wrong): x's loads replaced by a constant,
  // W's loads (words, scales, zero points) replaced by constants, no matrix products, no W dequantisation (constant
  // halves stored).
  tcNoX: { codeHook: tcHook((c) => c.replace(/px\[(\d+)\] = X\[[^;]*\];/g, 'px[$1] = vec4f(0.5 + f32(lid) * 1e-3);')) },
  tcNoW: { codeHook: tcHook((c) => c.replace(/pw\[(\d+)\] = W\[[^;]*\];/g, 'pw[$1] = vec4<u32>(lid * 0x9e3779b9u);').replace(/ps\[(\d+)\] = [^;]*\][^;]*;/g, 'ps[$1] = 0.01;').replace(/pz\[(\d+)\] = f32\([^;]*\);/g, 'pz[$1] = 8.0;')) },
  tcNoMMA: { codeHook: tcHook((c) => c.replace(/acc\d+_\d+ = subgroupMatrixMultiplyAccumulate\([^;]*\);/g, '')) },
  // The norm weights read where x is stored (as before session 29), not loaded with x a step ahead (default tile only).
  tcNoPn: { codeHook: tcHook((c) => c.replace(/\n\s*pn\[\d+\] = NW\[[^;]*\];/g, '').replace(/\* pn\[\d+\] \*/g, '* NW[kt * 16u + k4] *')) },
  // 64 rows a tile, K steps of 64 and 128.
  tc64k64: { tcTile: { fm: 2, fn: 1, sm: 2, sn: 4, kSteps: 4 } },
  tc64k128: { tcTile: { fm: 2, fn: 1, sm: 2, sn: 4, kSteps: 8 } },
  // Timing-only: each workgroup's step reads one contiguous run of W (a tile-major layout's access; wrong numbers).
  tcFlatW: { codeHook: tcHook((c) => c.replace(/pw\[(\d+)\] = W\[row \* \d+u \+ (\w+) \* (\d+)u \+ wi\];/g, (_m, j, k, iw) => `pw[${j}] = W[((wid.x * ${/kt < (\d+)u; kt\+\+/.exec(c)![1]}u + ${k}) * ${Number(iw) * 128}u + it) % arrayLength(&W)];`)) },
  // Two K steps in flight (TcTile.ahead): the default tile, and K steps of 32.
  tcA2: { tcTile: { fm: 2, fn: 2, sm: 2, sn: 4, kSteps: 4, ahead: 2 } },
  tck32A2: { tcTile: { fm: 2, fn: 2, sm: 2, sn: 4, kSteps: 2, ahead: 2 } },
  tc128A2: { tcTile: { fm: 4, fn: 2, sm: 2, sn: 4, kSteps: 2, ahead: 2 } },
  tcNoDq: { codeHook: tcHook((c) => c.replace(/\{ let v0 = \(bitcast[^\n]*\n/g, '{ let v0 = vec2<f16>(f16(wd[0] & 7u)); let v1 = v0; let v2 = v0; let v3 = v0;\n')) },
};
const names = (process.env.LLM_VARIANTS ?? 'base,noprod').split(',');
for (const n of names) if (!VARIANTS[n]) throw new Error(`unknown variant ${n}: ${Object.keys(VARIANTS).join(', ')}`);

const { caps } = await acquireGpu();
console.log(`adapter: ${caps.name}; timestamps ${caps.timestamps}`);
if (!caps.timestamps) throw new Error('needs timestamp-query');
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

let t = performance.now();
// Models past ~10 GB of codes get them from the native random source (the seeded generator takes minutes).
const big = cfg.layers * cfg.hidden * (4 * cfg.hidden + 3 * cfg.intermediate) > 8e9;
const w = process.env.LLM_MODEL ? await loadLlm(process.env.LLM_MODEL) : randomQuantLlama(cfg, 4, env('LLM_GROUP', 32), 1, big ? (a) => { for (let o = 0; o < a.length; o += 1 << 30) randomFillSync(a, o, Math.min(1 << 30, a.length - o)); } : undefined);
Object.assign(cfg, w.config);
console.log(`model: ${JSON.stringify(cfg)} ${w.quant}; made in ${(performance.now() - t).toFixed(0)} ms; activations ${act}`);
const runners: { name: string; r: WebGpuLlm }[] = [];
for (const name of names) {
  Object.assign(llmGpuConfig, DEFAULTS, VARIANTS[name]);
  t = performance.now();
  // 'tiny': one-token forwards as one workgroup (WebGpuLlmOptions.tinyDecode).
  // LLM_CAP: the cache's positions (default 1024, at most the model's).
  const r = await WebGpuLlm.create(w, { capacity: Math.min(env('LLM_CAP', 1024), cfg.maxPositions), activations: act, tinyDecode: name === 'tiny', kvCache: name.startsWith('kv16') ? 'f16' : 'f32', prefill: name.startsWith('tc') ? 'f16' : 'f32' });
  console.log(`${name}: KV cache ${(r.stats.kvCacheBytes / 2 ** 20).toFixed(0)} MiB (${r.kvCache}); created in ${(performance.now() - t).toFixed(0)} ms (${r.stats.pipelines} pipelines, ${r.stats.quantizingEpilogues} quantizing epilogues), activations ${r.activations}${r.stats.tinyDecode ? ', tiny decode' : ''}${r.stats.tensorCoreGemms ? `, ${r.stats.tensorCoreGemms} tensor-core GEMMs` : ''}`);
  runners.push({ name, r });
}
Object.assign(llmGpuConfig, DEFAULTS);
const bytes = runners[0].r.weightBytesPerToken;
const rnd = mulberry32(5);
const PREFILLS = (process.env.LLM_PREFILL ?? '').split(',').filter(Boolean).map(Number);
const ids = Array.from({ length: Math.max(ctx + 64, ctx + Math.max(...Ts), ...PREFILLS) }, () => Math.floor(rnd() * cfg.vocab));

/** Median GPU ms of n one-token forwards after `ctx` cached positions (and of one T-token forward where T > 1). */
async function gpuMs(r: WebGpuLlm, T: number, n: number): Promise<number> {
  const xs: number[] = [];
  r.timing = true;
  for (let i = 0; i < n + 3; i++) {
    r.truncate(ctx);
    if (T === 1) await r.forward([ids[ctx + i]]);
    else await r.forwardArgmaxAll(ids.slice(ctx, ctx + T));
    if (i >= 3) xs.push(r.stats.gpuMsLastForward);
  }
  r.timing = false;
  return med(xs);
}

for (const { r } of runners) { r.truncate(0); await r.forward(ids.slice(0, ctx)); }
// Clocks up before the first timing.
for (const t0 = performance.now(); performance.now() - t0 < 1500;) await gpuMs(runners[0].r, 1, 10);
const res = new Map<string, number[]>();
const add = (k: string, v: number) => { if (!res.has(k)) res.set(k, []); res.get(k)!.push(v); };
const roles = ['qkv', 'qk norm', 'attention', 'attention combine', 'o', 'gate/up', 'down', 'head', 'argmax', 'qkv x8', 'o x8', 'gate/up x8', 'down x8', 'head x8'];
for (let round = 0; round < rounds; round++) {
  for (const { name, r } of runners) {
    add(`${name} T=1`, await gpuMs(r, 1, 20));
    for (const T of Ts) add(`${name} T=${T}`, await gpuMs(r, T, 8));
  }
  if (process.env.LLM_ABLATE !== '0') {
    const r = runners[0].r;
    for (const role of roles) {
      const whole = await gpuMs(r, 1, 10);
      const n = r.stats.dispatchesLastForward;
      r.ablate = new Set([role]);
      const without = await gpuMs(r, 1, 10);
      r.ablate = null;
      if (r.stats.dispatchesLastForward === n) continue; // no such dispatch in a one-token forward
      add(`${runners[0].name} T=1 without ${role}`, whole - without);
    }
  }
}
// LLM_PREFILL=n,m: wall time of a whole n-token prompt from an empty cache (as the runner cuts it, one submit a chunk).
for (const n of PREFILLS) {
  // LLM_PREFILL_ROUNDS: rounds over the runners (default 4; the first is not counted).
  for (let round = 0; round < env('LLM_PREFILL_ROUNDS', 4); round++) {
    for (const { name, r } of runners) {
      r.truncate(0);
      const t0 = performance.now();
      await r.forward(ids.slice(0, n));
      add(`${name} prefill ${n}`, performance.now() - t0);
    }
  }
}
// LLM_CHECK=n: every runner's logits of an n-token prompt from an empty cache against the first runner's (largest
// difference over the largest |logit|, and how many positions' argmax agree).
const CHECK = env('LLM_CHECK', 0);
if (CHECK > 0) {
  const all: Float32Array[] = [];
  for (const { r } of runners) { r.truncate(0); all.push(await r.forward(ids.slice(0, CHECK), true)); }
  const V = cfg.vocab, am = (a: Float32Array, t: number) => { let b = 0; for (let i = 1; i < V; i++) if (a[t * V + i] > a[t * V + b]) b = i; return b; };
  console.log(`\nlogits of a ${CHECK}-token prompt against ${runners[0].name}'s:`);
  runners.forEach(({ name }, i) => {
    let m = 0, e = 0, same = 0;
    for (let k = 0; k < all[0].length; k++) { m = Math.max(m, Math.abs(all[0][k])); e = Math.max(e, Math.abs(all[i][k] - all[0][k])); if (!Number.isFinite(all[i][k])) e = Infinity; }
    for (let t = 0; t < CHECK; t++) same += +(am(all[i], t) === am(all[0], t));
    console.log(`  ${name.padEnd(10)} max|diff| / max|logit| ${(e / m).toExponential(2)}; argmax equal at ${same}/${CHECK} positions`);
  });
}
// LLM_CHECK1=n: every runner's logits of n one-token forwards after ctx cached against the first runner's, bit for bit.
const CHECK1 = env('LLM_CHECK1', 0);
if (CHECK1 > 0) {
  const all: Float32Array[][] = [];
  for (const { r } of runners) {
    r.truncate(0);
    await r.forward(ids.slice(0, ctx));
    const steps: Float32Array[] = [];
    for (let i = 0; i < CHECK1; i++) steps.push(await r.forward([ids[ctx + i]]));
    all.push(steps);
  }
  console.log(`\nlogits of ${CHECK1} one-token forwards after ${ctx} cached against ${runners[0].name}'s:`);
  runners.forEach(({ name }, i) => {
    let same = 0, e = 0;
    all[i].forEach((a, s) => {
      const b = all[0][s];
      if (a.every((v, k) => Object.is(v, b[k]))) same++;
      for (let k = 0; k < a.length; k++) e = Math.max(e, Math.abs(a[k] - b[k]));
    });
    console.log(`  ${name.padEnd(10)} bit-identical ${same}/${CHECK1}; max|diff| ${e.toExponential(2)}`);
  });
}
const base = med(res.get(`${runners[0].name} T=1`)!);
// What attention reads of the cache a token at ctx positions: 2 (k, v) × kv heads × head dim × element bytes × layers.
const kvRead = (r: WebGpuLlm) => 2 * cfg.kvHeads * cfg.headDim * (r.kvCache === 'f16' ? 2 : 4) * cfg.layers * (ctx + 1);
for (const { name, r } of runners) console.log(`${name}: the cache read a token after ${ctx} cached: ${(kvRead(r) / 1e6).toFixed(1)} MB (${r.kvCache}) beside ${(bytes / 1e6).toFixed(0)} MB of weights`);
console.log(`\nGPU time of a forward after ${ctx} cached, median of ${rounds} rounds (each the median of 20 forwards; T>1: 8):`);
for (const { name } of runners) {
  const one = med(res.get(`${name} T=1`)!);
  const gbs = bytes / one / 1e6;
  const small = Ts.map((T) => { const ms = med(res.get(`${name} T=${T}`)!); return `T=${T} ${ms.toFixed(3)} ms (${(ms / one).toFixed(2)}x T=1)`; }).join(', ');
  console.log(`${name.padEnd(10)} T=1 ${one.toFixed(3)} ms (${(one / base).toFixed(3)}x of ${runners[0].name}; ${gbs.toFixed(0)} GB/s = ${((100 * gbs) / ROOF).toFixed(1)}% of ${ROOF}) rounds ${res.get(`${name} T=1`)!.map((x) => x.toFixed(3)).join(' ')}; ${small}`);
}
for (const n of PREFILLS) {
  console.log(`\nwall time of a ${n}-token prompt from an empty cache, median of ${env('LLM_PREFILL_ROUNDS', 4) - 1} (after one untimed):`);
  for (const { name, r } of runners) { const ms = med(res.get(`${name} prefill ${n}`)!.slice(1)); console.log(`  ${name.padEnd(12)} ${ms.toFixed(2)} ms = ${(n / ms * 1000).toFixed(0)} tokens/s (maxT ${r['maxT']}; plan ${JSON.stringify(r.prefillPlan)})`); }
}
if (process.env.LLM_ABLATE !== '0') {
  console.log(`\nwhat a role costs inside ${runners[0].name}'s one-token forward (whole - without it; per forward, and per layer):`);
  for (const role of roles) {
    const ds = res.get(`${runners[0].name} T=1 without ${role}`);
    if (!ds) continue;
    const d = med(ds);
    const per = role === 'head' || role === 'argmax' ? 1 : cfg.layers;
    console.log(`  ${role.padEnd(18)} ${(d * 1000).toFixed(0).padStart(6)} us (${((1000 * d) / per).toFixed(1)} us each)`);
  }
}
process.stdout.write('', () => process.exit(0));
