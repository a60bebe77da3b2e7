// What text generation runs on: a causal language model with a KV cache that can run several tokens at once and roll
// back. Implemented by CausalDecoder (an ONNX decoder over an InferenceSession) and by LlmCausalLM (webjit's own
// LLM runtime); openCausalLM() makes one from an ONNX model, LLM weights or a runner.
import { InputError, UnsupportedError } from '../errors.js';
import { createLlm, type LlmOptions } from '../llm/index.js';
import type { LlmRunner, LlmWeights } from '../llm/types.js';
import type { ModelSource } from '../onnx/load.js';
import type { SessionOptions } from '../session.js';
import { CausalDecoder } from './decoder.js';

export interface CausalLM {
  /** Logits per position; undefined until known (an ONNX model that does not declare it, before its first run). */
  readonly vocab: number | undefined;
  /** Positions in the KV cache. */
  readonly pastLength: number;
  /** End-of-sequence ids the model itself names (an LLM's config), besides its tokenizer's EOS token. */
  readonly eosIds?: readonly number[];
  /** Most positions the cache holds, when it has a fixed size. */
  readonly capacity?: number;
  /** Forgets the cache and runs the prompt; returns the logits of its last position. */
  prefill(ids: readonly number[]): Promise<Float32Array>;
  /** Runs one token after the cached ones; returns its logits. */
  step(id: number): Promise<Float32Array>;
  /** Runs ids after the cached ones and caches them; all their logits ([ids.length, vocab]) or the last row. */
  forward(ids: readonly number[], allLogits?: boolean): Promise<Float32Array>;
  /** Keeps the first `length` positions of the cache. */
  truncate(length: number): Promise<void>;
  release(): Promise<void>;
}

/** An LlmRunner as a CausalLM: its preallocated cache makes truncate() free. */
export class LlmCausalLM implements CausalLM {
  constructor(readonly runner: LlmRunner) {}
  get vocab(): number { return this.runner.config.vocab; }
  get pastLength(): number { return this.runner.length; }
  get capacity(): number { return this.runner.capacity; }
  get eosIds(): number[] { const e = this.runner.config.eos; return e === undefined ? [] : Array.isArray(e) ? e : [e]; }

  async prefill(ids: readonly number[]): Promise<Float32Array> {
    if (ids.length === 0) throw new InputError('the prompt has no tokens', { input: 'input_ids' }, 'give at least one token (e.g. the BOS token)');
    this.runner.truncate(0);
    return this.runner.forward(ids, false);
  }

  step(id: number): Promise<Float32Array> { return this.runner.forward([id], false); }
  forward(ids: readonly number[], allLogits = false): Promise<Float32Array> { return this.runner.forward(ids, allLogits); }
  async truncate(length: number): Promise<void> { this.runner.truncate(length); }
  release(): Promise<void> { return this.runner.release(); }
}

/** What a generator can be made from: an ONNX decoder (path or bytes), LLM weights, an LLM runner, or a CausalLM. */
export type GenerationModel = ModelSource | LlmWeights | LlmRunner | CausalLM;

/** Options for opening either kind: session options for ONNX models, LLM options (capacity) for LLM weights. */
export type OpenOptions = SessionOptions & Omit<LlmOptions, 'backend'>;

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null;
const fn = (x: Record<string, unknown>, k: string) => typeof x[k] === 'function';

export function isCausalLM(x: unknown): x is CausalLM {
  return isObject(x) && fn(x, 'prefill') && fn(x, 'step') && fn(x, 'forward') && fn(x, 'truncate') && 'pastLength' in x;
}

export function isLlmRunner(x: unknown): x is LlmRunner {
  return isObject(x) && fn(x, 'forward') && fn(x, 'truncate') && isObject(x.config) && typeof x.capacity === 'number';
}

export function isLlmWeights(x: unknown): x is LlmWeights {
  return isObject(x) && isObject(x.config) && Array.isArray(x.layers) && x.embed instanceof Float32Array;
}

/** A CausalLM from any GenerationModel; ONNX models default to the wasm backend, LLM weights to createLlm's default. */
export async function openCausalLM(model: GenerationModel, opts: OpenOptions = {}): Promise<CausalLM> {
  if (isCausalLM(model)) return model;
  if (isLlmRunner(model)) return new LlmCausalLM(model);
  if (isLlmWeights(model)) {
    return new LlmCausalLM(await createLlm(model, { backend: opts.backend, capacity: opts.capacity, threads: opts.threads, activations: opts.activations, kvCache: opts.kvCache, prefill: opts.prefill }));
  }
  if (opts.kvCache === 'f16') throw new UnsupportedError('an f16 KV cache for an ONNX decoder: its past key/value inputs are the graph\'s', {}, "leave kvCache out, or run the model's LLM weights (webjit quantize) on webgpu");
  if (opts.prefill === 'f16') throw new UnsupportedError('an f16 prefill for an ONNX decoder: it runs in the precision the session gives it', {}, "leave prefill out, or run the model's LLM weights (webjit quantize) on webgpu");
  const { capacity: _, kvCache: _kv, prefill: _pf, ...sessionOpts } = opts;
  return CausalDecoder.create(model, { backend: 'wasm', ...sessionOpts });
}
