// The decode benchmark: greedy generation, batch 1, of one model on webjit's LLM runtime and on onnxruntime-web (and
// onnxruntime-node where present) running the very same weights as an ONNX decoder with a KV cache (exportOnnx:
// MatMulNBits for quantized matrices). Every engine's tokens are checked against onnxruntime's on the same weights
// before its speed counts; the ratio is taken in the same run.
import { createLlm, int8Unavailable, type LlmBackend } from '../llm/index.js';
import { exportOnnx } from '../llm/onnx_export.js';
import { InputError, UnsupportedError } from '../errors.js';
import { dequantizeLlm, quantBits, quantizeRtn } from '../llm/quantize.js';
import { argmax } from '../generate/sampler.js';
import { LlmCausalLM } from '../generate/causal_lm.js';
import { TextGenerator, draftActivationsFor } from '../generate/generate.js';
import { bytesPerToken, type LlmWeights, type QBits } from '../llm/types.js';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

export interface Greedy {
  /** Runs the prompt; returns the argmax of the last position. */
  prefill(ids: readonly number[]): Promise<number>;
  step(id: number): Promise<number>;
  /** Whole greedy generations, where the engine runs them itself (n tokens after the prompt; speculative decoding). */
  generate?(ids: readonly number[], n: number): Promise<{ ids: number[]; acceptance?: number }>;
  release(): Promise<void>;
}

export interface DecodeEngine {
  name: string;
  /** Which weights it runs ('f32', 'q4', 'q8'): tokens are compared with onnxruntime's on the same weights. */
  weights: string;
  peer: boolean;
  /**
   * Why its numbers differ from the oracle's by design (an f16 KV cache): its tokens are still compared, a difference
   * is reported as expected rather than wrong.
   */
  inexact?: string;
  create(): Promise<Greedy>;
}


/** How a webjit row runs: its activations, KV cache and prefill GEMM (LlmOptions). */
export interface WebjitRun { activations?: 'f32' | 'int8'; kvCache?: 'f32' | 'f16'; prefill?: 'f32' | 'f16' }

/** A row's label suffix: ' int8', ' kv f16', ' prefill f16'. */
const runLabel = (o: WebjitRun): string => `${o.activations === 'int8' ? ' int8' : ''}${o.kvCache === 'f16' ? ' kv f16' : ''}${o.prefill === 'f16' ? ' prefill f16' : ''}`;

/**
 * int8 activations round x to 8 bits a group (logits ~1e-2 of max|logit| from f32), an f16 cache rounds keys and
 * values, an f16 prefill the prompt's x and weights: tokens may part from an f32 oracle's at near-ties, by design (the
 * trained target with int8 x and a 400-token prompt: at its second token, where the reference's top two logits are
 * 0.007 apart; bench/results/gpu/h100-tc-bench-s28.txt).
 */
const inexactOf = (o: WebjitRun): { inexact?: string } => {
  const why = [o.activations === 'int8' ? 'int8 x' : '', o.kvCache === 'f16' ? 'f16 KV cache' : '', o.prefill === 'f16' ? 'f16 prefill' : ''].filter(Boolean);
  return why.length ? { inexact: why.join(', ') } : {};
};

/** A runner with the activations asked for, or a typed error (a row labelled int8 never runs other activations). */
async function runner(w: LlmWeights, backend: LlmBackend, threads: number | undefined, { activations, kvCache, prefill }: WebjitRun) {
  const r = await createLlm(w, { backend, threads, activations, kvCache, prefill });
  const why = int8Unavailable(activations, r);
  if (why) {
    await r.release();
    throw new UnsupportedError(why.message, {}, why.hint);
  }
  return r;
}

export function webjitLlmEngine(w: LlmWeights, weights: string, backend: LlmBackend, threads?: number, how: WebjitRun = {}): DecodeEngine {
  return {
    name: `webjit ${backend}${runLabel(how)}`, weights, peer: false, ...inexactOf(how),
    async create() {
      const r = await runner(w, backend, threads, how);
      const g = r as unknown as { greedy?: (ids: readonly number[]) => Promise<number> };
      const run = async (ids: readonly number[]) => g.greedy ? g.greedy(ids) : argmax(await r.forward(ids));
      return {
        prefill: (ids) => { r.truncate(0); return run(ids); },
        step: (id) => run([id]),
        release: () => r.release(),
      };
    },
  };
}

/**
 * Whole generations through TextGenerator (prefill included in the rate): with a draft, speculative decoding (a draft
 * proposes k tokens, the target checks them in one pass); without, plain greedy decoding as the generator runs it (on
 * WebGPU a stream with steps in flight, WebGpuLlm.greedyStream).
 */
export function webjitGeneratorEngine(target: LlmWeights, draft: LlmWeights | undefined, weights: string, backend: LlmBackend, k: number, threads?: number, run: WebjitRun = {}, adaptive = false): DecodeEngine {
  const { activations, kvCache, prefill } = run;
  return {
    name: `webjit ${backend}${runLabel(run)}${draft ? ` + draft (k=${k}${adaptive ? ', adaptive' : ''})` : ' generate()'}`, weights, peer: false, ...inexactOf(run),
    async create() {
      const t = new LlmCausalLM(await runner(target, backend, threads, run));
      // The draft's activations as TextGenerator.create and `webjit generate` choose them (draftActivationsFor): the
      // target's on wasm, f32 on WebGPU, where int8 x costs the trained draft's small matrices more than it saves
      // (0.282 against 0.148 ms a step, bench/NOTES.md session 16).
      const d = draft ? new LlmCausalLM(await createLlm(draft, { backend, threads, activations: draftActivationsFor({ backend, activations }), kvCache, prefill })) : undefined;
      const gen = new TextGenerator(t, undefined, { draft: d, draftTokens: k, adaptiveDraft: adaptive });
      const unsupported = async (): Promise<number> => { throw new Error('this engine runs whole generations'); };
      return {
        prefill: unsupported, step: unsupported,
        async generate(ids, n) {
          const g = gen.generate(ids, { maxTokens: n });
          await g.all();
          return { ids: g.ids, acceptance: g.stats!.speculative?.acceptanceRate };
        },
        async release() { await t.release(); await d?.release(); },
      };
    },
  };
}

type OrtTensor = { type: string; data: unknown; dims: readonly number[]; dispose?: () => void };
type Ort = {
  env: { wasm: { numThreads: number; wasmPaths?: string } };
  Tensor: new (type: string, data: unknown, dims: readonly number[]) => OrtTensor;
  InferenceSession: { create(m: Uint8Array, o?: object): Promise<{ run(f: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>; release(): Promise<void>; outputNames: string[] }> };
};
const require = createRequire(import.meta.url);

/** onnxruntime-web (wasm or webgpu) or onnxruntime-node on an ONNX decoder, KV fed back (kept on the GPU for webgpu). */
export function ortDecodeEngine(kind: 'web-wasm' | 'web-webgpu' | 'node', onnx: Uint8Array, w: LlmWeights, weights: string, threads: number, note = ''): DecodeEngine {
  const label = kind === 'node' ? `onnxruntime-node ${threads}t` : kind === 'web-wasm' ? `onnxruntime-web wasm ${threads}t` : 'onnxruntime-web webgpu';
  return {
    name: label + note, weights, peer: true,
    async create() {
      let ort: Ort;
      if (kind === 'node') ort = require('onnxruntime-node') as Ort;
      else if (kind === 'web-wasm') { ort = require('onnxruntime-web') as Ort; ort.env.wasm.numThreads = threads; }
      else {
        const dir = process.env.WEBJIT_ORT_WEB_DIR ?? path.dirname(require.resolve('onnxruntime-web'));
        ort = (await import(pathToFileURL(path.join(dir, 'ort.webgpu.mjs')).href)) as Ort;
        ort.env.wasm.wasmPaths = `${dir}${path.sep}`;
        ort.env.wasm.numThreads = 1;
      }
      const c = w.config;
      const kvNames: string[] = [];
      for (let l = 0; l < c.layers; l++) for (const k of ['key', 'value']) kvNames.push(`${l}.${k}`);
      const opts: Record<string, unknown> = kind === 'node' ? { intraOpNumThreads: threads, interOpNumThreads: 1 }
        : { executionProviders: [kind === 'web-wasm' ? 'wasm' : 'webgpu'] };
      if (kind === 'web-webgpu') opts.preferredOutputLocation = Object.fromEntries(kvNames.map((n) => [`present.${n}`, 'gpu-buffer']));
      const s = await ort.InferenceSession.create(onnx, opts);
      let past: Record<string, OrtTensor> = {};
      const empty = () => { for (const n of kvNames) past[`past_key_values.${n}`] = new ort.Tensor('float32', new Float32Array(0), [1, c.kvHeads, 0, c.headDim]); };
      const run = async (ids: readonly number[]) => {
        const out = await s.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map((x) => BigInt(x))), [1, ids.length]), ...past });
        const old = past;
        past = {};
        for (const n of kvNames) past[`past_key_values.${n}`] = out[`present.${n}`];
        for (const t of Object.values(old)) t.dispose?.();
        const lg = out.logits.data as Float32Array;
        return argmax(lg.subarray(lg.length - c.vocab));
      };
      return {
        prefill: (ids) => { for (const t of Object.values(past)) t.dispose?.(); empty(); return run(ids); },
        step: (id) => run([id]),
        release: () => s.release(),
      };
    },
  };
}

export interface DecodeResult {
  engine: string;
  weights: string;
  peer: boolean;
  prefillTokPerSec: number;
  decodeTokPerSec: number;
  /** Tokens equal to onnxruntime's on the same weights (null: no reference run). */
  correct: boolean | null;
  /** DecodeEngine.inexact: why `correct` may be false by design. */
  inexact?: string;
  /** Where the tokens first differ from the reference's (with correct false). */
  firstDiff?: number;
  acceptance?: number;
  ids: number[];
}

/** Times engines, interleaved over rounds; medians. The first engine per weights label that is a peer is the oracle. */
export async function runDecode(engines: DecodeEngine[], prompt: readonly number[], tokens: number, rounds: number, log: (s: string) => void): Promise<DecodeResult[]> {
  const times = new Map<DecodeEngine, { pre: number[]; dec: number[]; ids: number[]; acc: number[] }>();
  const sessions = new Map<DecodeEngine, Greedy>();
  for (const e of engines) sessions.set(e, await e.create());
  for (let r = 0; r < rounds; r++) {
    for (const e of engines) {
      const g = sessions.get(e)!;
      const rec = times.get(e) ?? { pre: [], dec: [], ids: [], acc: [] };
      times.set(e, rec);
      if (g.generate) {
        const t0 = performance.now();
        const res = await g.generate(prompt, tokens);
        const ms = performance.now() - t0;
        rec.dec.push(res.ids.length / (ms / 1000));
        if (res.acceptance !== undefined) rec.acc.push(res.acceptance);
        rec.ids = res.ids;
        continue;
      }
      const t0 = performance.now();
      let id = await g.prefill(prompt);
      const t1 = performance.now();
      const ids = [id];
      for (let i = 1; i < tokens; i++) { id = await g.step(id); ids.push(id); }
      const t2 = performance.now();
      rec.pre.push(prompt.length / ((t1 - t0) / 1000));
      rec.dec.push((tokens - 1) / ((t2 - t1) / 1000));
      rec.ids = ids;
    }
    log(`round ${r + 1}/${rounds} done`);
  }
  for (const g of sessions.values()) await g.release();
  const med = (a: number[]) => { if (!a.length) return NaN; const s = [...a].sort((x, y) => x - y); return s[s.length >> 1]; };
  const oracle = new Map<string, number[]>();
  for (const e of engines) if (e.peer && !oracle.has(e.weights)) oracle.set(e.weights, times.get(e)!.ids);
  return engines.map((e) => {
    const t = times.get(e)!;
    const ref = oracle.get(e.weights);
    const same = ref ? ref.length === t.ids.length && ref.every((x, i) => x === t.ids[i]) : null;
    return {
      engine: e.name, weights: e.weights, peer: e.peer, prefillTokPerSec: med(t.pre), decodeTokPerSec: med(t.dec),
      correct: same,
      ...(e.inexact ? { inexact: e.inexact } : {}),
      ...(ref && !same ? { firstDiff: Math.max(0, ref.findIndex((x, i) => x !== t.ids[i])) } : {}),
      acceptance: t.acc.length ? med(t.acc) : undefined, ids: t.ids,
    };
  });
}

export interface LlmBenchOptions {
  target: LlmWeights;
  draft?: LlmWeights;
  quants: ('f32' | 'q4' | 'q8')[];
  backend: LlmBackend;
  threads: number;
  prompt: number[];
  tokens: number;
  rounds: number;
  draftTokens: number;
  peers: ('web-wasm' | 'web-webgpu' | 'node')[];
  /** Another ONNX export of the dense target (e.g. PyTorch's), run by the peers as well. */
  peerOnnx?: Uint8Array;
  /** With a draft, also a row with the draft on and off by measurement (TextGenerator's adaptiveDraft). */
  draftAdaptive?: boolean;
  /** webjit's activations (LlmOptions.activations), a row set each (default: f32 alone). */
  activations?: ('f32' | 'int8')[];
  /** webjit's KV caches (LlmOptions.kvCache), a row set each (default: f32 alone). */
  kvCaches?: ('f32' | 'f16')[];
  /** webjit's prefill GEMMs (LlmOptions.prefill), a row set each (default: f32 alone). */
  prefills?: ('f32' | 'f16')[];
  log: (s: string) => void;
}

/**
 * The weights a benchmark row runs: a dense model as is (f32) or quantized round-to-nearest; a quantized model as
 * stored, or dequantised (f32: its exact values on the dense kernels). Requantizing to other bits is refused.
 */
export function quantized(w: LlmWeights, q: 'f32' | 'q4' | 'q8'): LlmWeights {
  const bits = quantBits(w);
  if (bits === null) return q === 'f32' ? w : quantizeRtn(w, { bits: Number(q.slice(1)) as QBits });
  if (q === 'f32') return dequantizeLlm(w);
  if (`q${bits}` !== q) throw new InputError(`--quant ${q}: the model is already quantized (${w.quant})`, {}, `use --quant q${bits} (as stored) or f32 (its values dequantized)`);
  return w;
}

/** A draft runs as stored when quantized, else in the target's precision. */
const draftWeights = (d: LlmWeights, q: 'f32' | 'q4' | 'q8'): LlmWeights => (quantBits(d) === null ? quantized(d, q) : d);

/** The row label of weights w: f32, q4, q8. */
const labelOf = (w: LlmWeights): string => { const b = quantBits(w); return b === null ? 'f32' : `q${b}`; };

export async function llmBench(o: LlmBenchOptions): Promise<{ results: DecodeResult[]; bytesPerToken: Record<string, number> }> {
  const engines: DecodeEngine[] = [];
  const bytes: Record<string, number> = {};
  if (o.peerOnnx) {
    bytes.f32 = bytesPerToken(o.target);
    for (const p of o.peers) engines.push(ortDecodeEngine(p, o.peerOnnx, o.target, 'f32', o.threads, ' (given ONNX)'));
  }
  for (const q of o.quants) {
    const w = quantized(o.target, q);
    const label = labelOf(w);
    bytes[label] = bytesPerToken(w);
    // The peers' ONNX export only where a peer runs it (a 7B model's would pass a typed array's 4 GB).
    if (o.peers.length) {
      const onnx = exportOnnx(w);
      for (const p of o.peers) engines.push(ortDecodeEngine(p, onnx, w, label, o.threads));
    }
    for (const act of o.activations ?? ['f32']) {
      if (act === 'int8' && label !== 'q4') { o.log(`${label} weights: no int8 rows (int8 activations apply to 4-bit matrices)`); continue; }
      for (const run of (o.kvCaches ?? ['f32']).flatMap((kvCache) => (o.prefills ?? ['f32']).map((prefill): WebjitRun => ({ activations: act, kvCache, prefill })))) {
        engines.push(webjitLlmEngine(w, label, o.backend, o.threads, run));
        // generate() without a draft: on WebGPU the streamed decoding users get; with a draft, the baseline speculative
        // decoding is judged against (both rates count the prefill).
        if (o.backend === 'webgpu' || o.draft) engines.push(webjitGeneratorEngine(w, undefined, label, o.backend, o.draftTokens, o.threads, run));
        if (o.draft) engines.push(webjitGeneratorEngine(w, draftWeights(o.draft, q), label, o.backend, o.draftTokens, o.threads, run));
        if (o.draft && o.draftAdaptive) engines.push(webjitGeneratorEngine(w, draftWeights(o.draft, q), label, o.backend, o.draftTokens, o.threads, run, true));
      }
    }
  }
  return { results: await runDecode(engines, o.prompt, o.tokens, o.rounds, o.log), bytesPerToken: bytes };
}

