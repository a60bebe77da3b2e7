// A causal decoder with a KV cache over an InferenceSession: finds the Hugging Face past/present layout, prefills a
// prompt, then runs one token per step (or several, for speculative decoding) feeding each run's presents back as the
// next run's past, and truncates the cache to roll back rejected tokens. On WebGPU the cache stays in GPU buffers and
// only the logits are read back.
import { InputError, UnsupportedError } from '../errors.js';
import type { Dim, ValueInfo } from '../graph/ir.js';
import { numbers } from '../ops/util.js';
import { InferenceSession, type Feeds, type SessionOptions } from '../session.js';
import { Tensor, type DType } from '../tensor.js';
import { GpuTensor } from '../backends/webgpu/gpu_tensor.js';
import { gpuBytes } from '../backends/webgpu/storage.js';
import type { ModelSource } from '../onnx/load.js';
import type { CausalLM } from './causal_lm.js';

/** What the decoder found in the model's inputs and outputs. */
export interface DecoderLayout {
  inputIds: string;
  idsType: DType;
  attentionMask?: { name: string; type: DType };
  positionIds?: { name: string; type: DType };
  logits: string;
  layers: number;
  heads: number;
  headDim: number;
  kvType: DType;
  /** Per layer: past key/value input names and present key/value output names. */
  past: { key: string; value: string }[];
  present: { key: string; value: string }[];
  /** The vocabulary size when the logits' last dim is declared. */
  vocab?: number;
}

type Kv = Tensor | GpuTensor;

const PAST = /^past_key_values\.(\d+)\.(key|value)$/;
const PRESENT = /^(?:present|present_key_values)\.(\d+)\.(key|value)$/;
const INT_TYPES: readonly DType[] = ['int64', 'int32'];

/** Reads the decoder layout from the session's declared inputs and outputs; a model without a KV cache is an UnsupportedError. */
export function decoderLayout(session: InferenceSession): DecoderLayout {
  const g = session.model.graph;
  const inputs = new Map<string, ValueInfo>(g.inputs.filter((i) => !g.initializers.has(i.name)).map((i) => [i.name, i]));
  const outputs = new Map<string, ValueInfo>(g.outputs.map((o) => [o.name, o]));
  const tensorType = (vi: ValueInfo | undefined) => (vi?.type?.kind === 'tensor' ? vi.type : null);
  const hint = 'export the decoder with past key/value inputs and present outputs, e.g. optimum-cli export onnx --task text-generation-with-past';
  const ids = tensorType(inputs.get('input_ids'));
  if (!ids) throw new UnsupportedError(`the model has no 'input_ids' input (its inputs: ${[...inputs.keys()].join(', ')})`, {}, hint);
  if (!ids.dtype || !INT_TYPES.includes(ids.dtype)) throw new UnsupportedError(`'input_ids' is ${ids.dtype}; expected int64 or int32`, { input: 'input_ids' });
  const logitsName = outputs.has('logits') ? 'logits' : g.outputs[0]?.name;
  const pastBy = collect(inputs.keys(), PAST);
  const presentBy = collect(outputs.keys(), PRESENT);
  if (pastBy.size === 0 || presentBy.size === 0) {
    const missing = [pastBy.size === 0 ? "inputs 'past_key_values.{i}.key|value'" : '', presentBy.size === 0 ? "outputs 'present.{i}.key|value'" : ''].filter(Boolean);
    throw new UnsupportedError(`the model is not a decoder with a KV cache: it has no ${missing.join(' and no ')} `
      + `(inputs: ${[...inputs.keys()].join(', ')}; outputs: ${[...outputs.keys()].join(', ')})`, {}, hint);
  }
  const layers = pastBy.size;
  const past: DecoderLayout['past'] = [];
  const present: DecoderLayout['present'] = [];
  for (let l = 0; l < layers; l++) {
    const p = pastBy.get(l), q = presentBy.get(l);
    if (!p?.key || !p.value) throw new UnsupportedError(`layer ${l} lacks past_key_values.${l}.${p?.key ? 'value' : 'key'} (layers must be numbered 0..${layers - 1})`, {}, hint);
    if (!q?.key || !q.value) throw new UnsupportedError(`layer ${l} has past inputs but no present.${l}.${q?.key ? 'value' : 'key'} output`, {}, hint);
    past.push({ key: p.key, value: p.value });
    present.push({ key: q.key, value: q.value });
  }
  if (presentBy.size !== layers) throw new UnsupportedError(`the model has ${layers} layers of past inputs but ${presentBy.size} of present outputs`, {}, hint);
  const kv = tensorType(inputs.get(past[0].key))!;
  const shape = kv.shape;
  const known = (d: Dim | undefined): d is number => typeof d === 'number' && d > 0;
  if (!shape || shape.length !== 4 || !known(shape[1]) || !known(shape[3])) {
    throw new UnsupportedError(`'${past[0].key}' is declared as [${shape?.map((d) => d ?? '?').join(', ') ?? 'unknown'}]; `
      + 'expected [batch, heads, past_sequence, head_dim] with numeric heads and head_dim', { input: past[0].key }, hint);
  }
  if (!kv.dtype || (kv.dtype !== 'float32' && kv.dtype !== 'float16')) {
    throw new UnsupportedError(`the KV cache is ${kv.dtype}; expected float32 or float16`, { input: past[0].key });
  }
  const optInt = (name: string) => {
    const t = tensorType(inputs.get(name));
    return t ? { name, type: t.dtype && INT_TYPES.includes(t.dtype) ? t.dtype : 'int64' as DType } : undefined;
  };
  const fillable = new Set(['input_ids', 'attention_mask', 'position_ids', ...past.flatMap((p) => [p.key, p.value])]);
  const extra = [...inputs.keys()].filter((n) => !fillable.has(n));
  if (extra.length) throw new UnsupportedError(`the decoder has inputs webjit cannot fill: ${extra.join(', ')}`, { input: extra[0] }, 'generation feeds input_ids, attention_mask, position_ids and past_key_values.* only');
  const lshape = tensorType(outputs.get(logitsName))?.shape;
  const vocabDim = lshape?.[lshape.length - 1];
  return {
    inputIds: 'input_ids', idsType: ids.dtype, attentionMask: optInt('attention_mask'), positionIds: optInt('position_ids'),
    logits: logitsName, layers, heads: shape[1] as number, headDim: shape[3] as number, kvType: kv.dtype, past, present,
    vocab: typeof vocabDim === 'number' ? vocabDim : undefined,
  };
}

function collect(names: Iterable<string>, re: RegExp): Map<number, { key?: string; value?: string }> {
  const m = new Map<number, { key?: string; value?: string }>();
  for (const n of names) {
    const r = re.exec(n);
    if (!r) continue;
    const l = Number(r[1]);
    const e = m.get(l) ?? {};
    e[r[2] as 'key' | 'value'] = n;
    m.set(l, e);
  }
  return m;
}

function intTensor(type: DType, dims: number[], values: ArrayLike<number>): Tensor {
  if (type === 'int32') return new Tensor('int32', Int32Array.from(values), dims);
  const d = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) d[i] = BigInt(values[i]);
  return new Tensor('int64', d, dims);
}

/** One sequence (batch 1) decoded with a KV cache. Not reentrant: one prefill/step at a time. */
export class CausalDecoder implements CausalLM {
  readonly layout: DecoderLayout;
  /** True when the KV cache lives on the GPU between steps (webgpu backend). */
  readonly gpuResident: boolean;
  private cache: Map<string, Kv> | null = null;
  private length = 0;
  /** The logits' last dim as the first run returned it, when the model does not declare it. */
  private seenVocab: number | undefined;

  constructor(readonly session: InferenceSession) {
    this.layout = decoderLayout(session);
    this.gpuResident = session.backend === 'webgpu';
  }

  static async create(model: ModelSource, opts: SessionOptions = {}): Promise<CausalDecoder> {
    const s = await InferenceSession.create(model, opts);
    try {
      return new CausalDecoder(s);
    } catch (e) {
      await s.release();
      throw e;
    }
  }

  /** Tokens in the KV cache. */
  get pastLength(): number { return this.length; }

  /** The vocabulary size: declared by the model, or learnt from the first run's logits. */
  get vocab(): number | undefined { return this.layout.vocab ?? this.seenVocab; }

  /** Exported decoders have no fixed context here: positions are limited by the model's own tables. */
  readonly capacity = undefined;

  /** Forgets the cache: the next call must be prefill(). */
  reset(): void {
    if (this.cache) for (const t of this.cache.values()) if (t instanceof GpuTensor) t.dispose();
    this.cache = null;
    this.length = 0;
  }

  /** Runs the prompt over an empty cache; returns the logits of its last position. */
  async prefill(ids: readonly number[]): Promise<Float32Array> {
    if (ids.length === 0) throw new InputError('the prompt has no tokens', { input: this.layout.inputIds }, 'give at least one token (e.g. the BOS token)');
    this.reset();
    return this.forward(ids);
  }

  /** Runs one token after the cached ones; returns its logits. */
  async step(id: number): Promise<Float32Array> {
    if (!this.cache) throw new InputError('step() before prefill()', {}, 'call prefill(promptIds) first');
    return this.forward([id]);
  }

  /**
   * Keeps the first `length` positions of the cache. On the CPU the [1, heads, L, headDim] tensors are sliced along L;
   * on WebGPU each head's kept rows are copied on the GPU into a new buffer (nothing is read back).
   */
  async truncate(length: number): Promise<void> {
    if (!Number.isInteger(length) || length < 0 || length > this.length) {
      throw new InputError(`truncate(${length}): the cache holds ${this.length} positions`, {}, 'truncate to a length between 0 and the current length');
    }
    if (length === this.length) return;
    if (length === 0) { this.reset(); return; }
    const next = new Map<string, Kv>();
    for (const [name, t] of this.cache!) {
      if (t instanceof GpuTensor) {
        next.set(name, sliceGpuKv(t, length) ?? sliceKv(await t.download(), length));
        t.dispose();
      } else {
        next.set(name, sliceKv(t, length));
      }
    }
    this.cache = next;
    this.length = length;
  }

  /**
   * Runs `ids` after the cached tokens (all at once, causally) and appends them to the cache. Returns the logits of
   * every new position ([ids.length, vocab], row-major) when `allLogits`, else of the last one.
   */
  async forward(ids: readonly number[], allLogits = false): Promise<Float32Array> {
    if (ids.length === 0) throw new InputError('forward() got no token ids', { input: this.layout.inputIds }, 'give at least one token');
    const L = this.layout;
    const V = L.vocab;
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || (V !== undefined && id >= V)) {
        throw new InputError(`token id ${id} is outside the model's vocabulary [0, ${V ?? '?'})`, { input: L.inputIds }, 'check that the tokenizer belongs to this model');
      }
    }
    const past = this.length, n = ids.length;
    const feeds: Feeds = { [L.inputIds]: intTensor(L.idsType, [1, n], ids) };
    if (L.attentionMask) feeds[L.attentionMask.name] = intTensor(L.attentionMask.type, [1, past + n], new Array<number>(past + n).fill(1));
    if (L.positionIds) feeds[L.positionIds.name] = intTensor(L.positionIds.type, [1, n], Array.from({ length: n }, (_, i) => past + i));
    for (let l = 0; l < L.layers; l++) {
      for (const kind of ['key', 'value'] as const) {
        const name = L.past[l][kind];
        feeds[name] = this.cache?.get(name) ?? emptyKv(L);
      }
    }
    let logits: Tensor;
    const next = new Map<string, Kv>();
    if (this.gpuResident) {
      const out = await this.session.runGpu(feeds);
      const lg = out[L.logits];
      try {
        logits = await lg.download();
        // Position or token ids past the model's tables: the GPU's Gather reports them here, not as zeros.
        await this.session.checkGpuFaults();
      } catch (e) {
        for (const t of Object.values(out)) t.dispose();
        throw e;
      } finally {
        lg.dispose();
      }
      for (let l = 0; l < L.layers; l++) {
        next.set(L.past[l].key, out[L.present[l].key]);
        next.set(L.past[l].value, out[L.present[l].value]);
      }
      // The previous step's cache was last read by this run.
      if (this.cache) for (const t of this.cache.values()) if (t instanceof GpuTensor) t.dispose();
    } else {
      const out = await this.session.run(feeds);
      logits = out[L.logits];
      for (let l = 0; l < L.layers; l++) {
        next.set(L.past[l].key, out[L.present[l].key]);
        next.set(L.past[l].value, out[L.present[l].value]);
      }
    }
    this.cache = next;
    this.length = past + n;
    const k = next.get(L.past[0].key)!;
    if (k.dims[2] !== this.length) {
      throw new UnsupportedError(`'${L.present[0].key}' has ${k.dims[2]} positions after ${this.length} tokens`, { input: L.present[0].key },
        'the model does not append the new keys to the past ones as the Hugging Face layout does');
    }
    this.seenVocab ??= logits.dims[logits.dims.length - 1];
    if (!allLogits) return lastRow(logits);
    const all = numbers(logits);
    if (all.length !== n * this.seenVocab) {
      throw new UnsupportedError(`'${L.logits}' is [${logits.dims.join(', ')}] after ${n} tokens; expected [1, ${n}, vocab]`, { input: L.logits },
        'speculative decoding needs the logits of every new position');
    }
    return all instanceof Float32Array ? all.slice() : Float32Array.from(all);
  }

  /** Frees the cache and the session. */
  async release(): Promise<void> {
    this.reset();
    await this.session.release();
  }
}

function emptyKv(L: DecoderLayout): Tensor {
  return new Tensor(L.kvType, L.kvType === 'float16' ? new Uint16Array(0) : new Float32Array(0), [1, L.heads, 0, L.headDim]);
}

/** A [1, heads, L, headDim] cache tensor cut to its first n positions. */
function sliceKv(t: Tensor, n: number): Tensor {
  const [B, H, L, D] = t.dims;
  const src = t.data as Float32Array | Uint16Array;
  const out = t.type === 'float16' ? new Uint16Array(B * H * n * D) : new Float32Array(B * H * n * D);
  for (let h = 0; h < B * H; h++) out.set(src.subarray(h * L * D, h * L * D + n * D), h * n * D);
  return new Tensor(t.type, out, [B, H, n, D]);
}

// GPUBufferUsage.STORAGE | COPY_SRC | COPY_DST: bound by kernels, copied from when truncated again or read back.
const USAGE_KV = 0x80 | 0x04 | 0x08;

/**
 * The same cut on the GPU: one copyBufferToBuffer per head into a new buffer (destroyed when the tensor is disposed).
 * Null when the rows are not 4-byte aligned, which copyBufferToBuffer needs (f16 with an odd headDim × positions).
 */
function sliceGpuKv(t: GpuTensor, n: number): GpuTensor | null {
  const [B, H, L, D] = t.dims;
  const bytes = t.type === 'float16' ? 2 : 4;
  const keep = n * D * bytes, stride = L * D * bytes;
  if (keep % 4 !== 0 || stride % 4 !== 0) return null;
  const dims = [B, H, n, D];
  const dst = t.device.createBuffer({ size: gpuBytes(t.type, dims), usage: USAGE_KV });
  const enc = t.device.createCommandEncoder();
  for (let h = 0; h < B * H; h++) enc.copyBufferToBuffer(t.buffer, h * stride, dst, h * keep, keep);
  t.device.queue.submit([enc.finish()]);
  return new GpuTensor(t.type, dims, dst, t.device);
}

/** The last position's logits, as float32. */
function lastRow(t: Tensor): Float32Array {
  const V = t.dims[t.dims.length - 1];
  const all = numbers(t);
  const off = all.length - V;
  return all instanceof Float32Array ? all.slice(off) : Float32Array.from(all.subarray(off));
}
