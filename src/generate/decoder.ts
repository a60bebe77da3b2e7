// A causal decoder with a KV cache over an InferenceSession: finds the Hugging Face past/present layout, prefills a
// prompt, then runs one token per step feeding each step's presents back as the next step's past. On WebGPU the cache
// stays in GPU buffers and only the logits are read back.
import { InputError, UnsupportedError } from '../errors.js';
import type { Dim, ValueInfo } from '../graph/ir.js';
import { numbers } from '../ops/util.js';
import { InferenceSession, type Feeds, type SessionOptions } from '../session.js';
import { Tensor, type DType } from '../tensor.js';
import { GpuTensor } from '../backends/webgpu/gpu_tensor.js';
import type { ModelSource } from '../onnx/load.js';

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
export class CausalDecoder {
  readonly layout: DecoderLayout;
  /** True when the KV cache lives on the GPU between steps (webgpu backend). */
  readonly gpuResident: boolean;
  private cache: Map<string, Kv> | null = null;
  private length = 0;

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

  private async forward(ids: readonly number[]): Promise<Float32Array> {
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
    return lastRow(logits);
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

/** The last position's logits, as float32. */
function lastRow(t: Tensor): Float32Array {
  const V = t.dims[t.dims.length - 1];
  const all = numbers(t);
  const off = all.length - V;
  return all instanceof Float32Array ? all.slice(off) : Float32Array.from(all.subarray(off));
}
