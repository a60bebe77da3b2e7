// Loading and saving decoder LLM weights: a Hugging Face Llama folder (config.json + *.safetensors, f32/f16/bf16),
// or webjit's own format, one safetensors file whose metadata holds the configuration and how each matrix is stored
// (dense f16/f32, or 4/8-bit groups in the MatMulNBits layout, see types.ts).
import { GraphError, InputError, UnsupportedError } from '../errors.js';
import { importNode } from '../util/node.js';
import { quantizeMatrix, quantizeRtn, type ModelQuantOptions } from './quantize.js';
import { f16Tensor, f32Tensor, readSafetensors, readSafetensorsLazy, toF32, u8Tensor, writeSafetensors, type StFile, type StTensor } from './safetensors.js';
import { dequantize, LAYER_MATRICES, layerShapes, type LayerMatrix, type LayerWeights, type DenseMatrix, type LlamaConfig, type LlmWeights, type Matrix, type QBits, type RopeScaling } from './types.js';

export const FORMAT = 'webjit-llm';
export const FORMAT_VERSION = '1';

const HF_NAME: Record<LayerMatrix, string> = {
  q: 'self_attn.q_proj', k: 'self_attn.k_proj', v: 'self_attn.v_proj', o: 'self_attn.o_proj',
  gate: 'mlp.gate_proj', up: 'mlp.up_proj', down: 'mlp.down_proj',
};

/** The configuration from a Hugging Face config.json (Llama architecture; others are refused by name). */
export function configFromHf(j: Record<string, unknown>, where = 'config.json'): LlamaConfig {
  const type = String(j.model_type ?? '');
  // Mistral is the Llama architecture with an optional sliding attention window (see maxPositions below); Qwen2 (and
  // Qwen2.5) is the Llama architecture with biases on the q, k and v projections; Phi-3 stores q/k/v and gate/up fused
  // (weightsFrom splits them) and has a window too (its long-context variants' 'longrope' scaling is refused below);
  // Qwen3 drops Qwen2's biases and RMS-normalizes each head of q and k before the rotation (q_norm, k_norm).
  if (type !== 'llama' && type !== 'mistral' && type !== 'qwen2' && type !== 'qwen3' && type !== 'phi3') {
    throw new UnsupportedError(`${where}: model_type '${type}' is not supported; webjit's LLM runtime runs the Llama architecture (model_type 'llama', 'mistral', 'qwen2', 'qwen3' or 'phi3')`, {},
      'export other architectures to ONNX with a KV cache and run them with `webjit generate MODEL.onnx`');
  }
  const num = (k: string, def?: number): number => {
    const v = j[k] ?? def;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new GraphError(`${where}: '${k}' is ${JSON.stringify(v)}; expected a number`);
    return v;
  };
  if (typeof j.partial_rotary_factor === 'number' && j.partial_rotary_factor !== 1) {
    throw new UnsupportedError(`${where}: a rotary embedding over part of each head (partial_rotary_factor ${j.partial_rotary_factor}) is not supported`);
  }
  if (j.attention_bias || j.mlp_bias) throw new UnsupportedError(`${where}: biases in attention or MLP are not supported`);
  if (j.hidden_act && j.hidden_act !== 'silu') throw new UnsupportedError(`${where}: hidden_act '${String(j.hidden_act)}' is not supported (silu only)`);
  const hidden = num('hidden_size'), heads = num('num_attention_heads');
  const c: LlamaConfig = {
    vocab: num('vocab_size'), hidden, intermediate: num('intermediate_size'), layers: num('num_hidden_layers'), heads,
    kvHeads: num('num_key_value_heads', heads), headDim: num('head_dim', hidden / heads),
    maxPositions: num('max_position_embeddings', 2048), ropeTheta: num('rope_theta', 10000), rmsEps: num('rms_norm_eps', 1e-6),
    bos: typeof j.bos_token_id === 'number' ? j.bos_token_id : undefined,
    eos: eosIds(j.eos_token_id, where),
  };
  const scaling = ropeScalingFromHf(j.rope_scaling, where);
  if (scaling) c.ropeScaling = scaling;
  if (type === 'qwen2') c.qkvBias = true;
  if (type === 'qwen3') c.qkNorm = true;
  // A sliding window (Mistral 7B v0.1: 4096 of 32768) bounds the KV cache instead: attention never looks further back
  // than the window, so the runtimes' full attention over at most that many positions is the model's own. Qwen2 has a
  // window only where use_sliding_window says so, and then only in the layers from max_window_layers on: not one model.
  const win = j.sliding_window;
  const qwen = type === 'qwen2' || type === 'qwen3';
  const windowed = !qwen || j.use_sliding_window === true;
  if (windowed && typeof win === 'number' && Number.isInteger(win) && win > 0 && win < c.maxPositions) {
    const from = j.max_window_layers;
    if (qwen && typeof from === 'number' && from > 0 && from < c.layers) {
      throw new UnsupportedError(`${where}: a sliding window of ${win} in layers ${from} and later only (use_sliding_window, max_window_layers) is not supported`, {},
        'webjit attends over the whole cache in every layer; such a model needs per-layer windows');
    }
    c.maxPositions = win;
  }
  checkConfig(c, where);
  return c;
}

/** eos_token_id: an id, or a list of them (Llama 3.1/3.2: end_of_text, eom_id, eot_id); null or absent: none. */
function eosIds(v: unknown, where: string): number | number[] | undefined {
  if (v === undefined || v === null) return undefined;
  const ids = Array.isArray(v) ? v : [v];
  for (const id of ids) if (!Number.isInteger(id) || (id as number) < 0) throw new GraphError(`${where}: eos_token_id ${JSON.stringify(v)} is not a token id or a list of them`);
  return Array.isArray(v) ? [...new Set(v as number[])] : (v as number);
}

/** The union of two eos_token_id values (config.json's and generation_config.json's). */
function mergeEos(a: number | number[] | undefined, b: number | number[] | undefined): number | number[] | undefined {
  const ids = [...new Set([a, b].flat().filter((x): x is number => x !== undefined))];
  return ids.length === 0 ? undefined : ids.length === 1 ? ids[0] : ids;
}

/** `rope_scaling` of a config.json: none, 'linear' or 'llama3'; the others (dynamic NTK, YaRN, LongRoPE) are refused. */
function ropeScalingFromHf(v: unknown, where: string): RopeScaling | undefined {
  if (v === undefined || v === null) return undefined;
  const r = v as Record<string, unknown>;
  const type = String(r.rope_type ?? r.type ?? '');
  if (type === 'default') return undefined;
  const num = (k: string): number => {
    const x = r[k];
    if (typeof x !== 'number' || !Number.isFinite(x) || x <= 0) throw new GraphError(`${where}: rope_scaling.${k} is ${JSON.stringify(x)}; expected a positive number`);
    return x;
  };
  if (type === 'linear') return { type, factor: num('factor') };
  if (type === 'llama3') {
    const s: RopeScaling = { type, factor: num('factor'), lowFreqFactor: num('low_freq_factor'), highFreqFactor: num('high_freq_factor'), originalMaxPositions: num('original_max_position_embeddings') };
    if (s.highFreqFactor <= s.lowFreqFactor) throw new GraphError(`${where}: rope_scaling.high_freq_factor ${s.highFreqFactor} is not above low_freq_factor ${s.lowFreqFactor}`);
    return s;
  }
  throw new UnsupportedError(`${where}: rope_scaling of type '${type}' is not supported (${JSON.stringify(v)})`, {},
    "webjit's LLM runtime scales rotary frequencies the 'linear' and 'llama3' ways; export the model to ONNX with a KV cache and run it with `webjit generate MODEL.onnx`");
}

function ropeScalingToHf(s: RopeScaling | undefined): Record<string, unknown> | undefined {
  if (!s) return undefined;
  return s.type === 'linear' ? { rope_type: 'linear', factor: s.factor }
    : { rope_type: 'llama3', factor: s.factor, low_freq_factor: s.lowFreqFactor, high_freq_factor: s.highFreqFactor, original_max_position_embeddings: s.originalMaxPositions };
}

export function checkConfig(c: LlamaConfig, where: string): void {
  const ints = ['vocab', 'hidden', 'intermediate', 'layers', 'heads', 'kvHeads', 'headDim', 'maxPositions'] as const;
  for (const k of ints) if (!Number.isInteger(c[k]) || c[k] <= 0 || c[k] > 1 << 20) throw new GraphError(`${where}: ${k} = ${c[k]} is not a positive integer in range`);
  if (c.heads % c.kvHeads !== 0) throw new GraphError(`${where}: ${c.heads} attention heads are not a multiple of ${c.kvHeads} key/value heads`);
  if (c.headDim % 2 !== 0) throw new GraphError(`${where}: head_dim ${c.headDim} is odd (rotary embeddings pair halves)`);
}

function configToHf(c: LlamaConfig): Record<string, unknown> {
  // No checkpoint family has both (Qwen3's attention_bias would bias o too), so no model_type says so.
  if (c.qkvBias && c.qkNorm) throw new UnsupportedError('q/k/v biases together with per-head q/k norms: no Hugging Face model_type has both, so webjit\'s format cannot store them');
  return {
    model_type: c.qkNorm ? 'qwen3' : c.qkvBias ? 'qwen2' : 'llama', vocab_size: c.vocab, hidden_size: c.hidden, intermediate_size: c.intermediate, num_hidden_layers: c.layers,
    num_attention_heads: c.heads, num_key_value_heads: c.kvHeads, head_dim: c.headDim, max_position_embeddings: c.maxPositions,
    rope_theta: c.ropeTheta, rope_scaling: ropeScalingToHf(c.ropeScaling), rms_norm_eps: c.rmsEps, bos_token_id: c.bos, eos_token_id: c.eos, hidden_act: 'silu',
  };
}

function need(f: StFile, name: string, shape: number[], where: string): StTensor {
  const t = f.tensors.get(name);
  if (!t) throw new GraphError(`${where}: tensor '${name}' is missing`, { input: name }, 'the checkpoint does not match its config.json');
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new GraphError(`${where}: tensor '${name}' is [${t.shape.join(', ')}]; the config says [${shape.join(', ')}]`, { input: name });
  }
  return t;
}

function denseFrom(f: StFile, name: string, N: number, K: number, where: string): Matrix {
  return { kind: 'f32', N, K, data: toF32(need(f, name, [N, K], where), name) };
}

/** A matrix from webjit's format: dense (`.weight`) or quantized (`.qweight`, `.scales`, `.zeros`). */
function matrixFrom(f: StFile, prefix: string, N: number, K: number, where: string): Matrix {
  if (f.tensors.has(`${prefix}.weight`)) return denseFrom(f, `${prefix}.weight`, N, K, where);
  const qw = f.tensors.get(`${prefix}.qweight`);
  if (!qw) throw new GraphError(`${where}: '${prefix}' has neither .weight nor .qweight`, { input: prefix });
  const [n, groups, blob] = qw.shape;
  if (qw.dtype !== 'U8' || qw.shape.length !== 3 || n !== N || K % groups !== 0) {
    throw new GraphError(`${where}: '${prefix}.qweight' is ${qw.dtype}[${qw.shape.join(', ')}]; expected U8[${N}, K/group, group*bits/8] with K = ${K}`, { input: prefix });
  }
  const group = K / groups;
  const bits = (blob * 8) / group;
  if (bits !== 4 && bits !== 8) throw new GraphError(`${where}: '${prefix}' stores ${bits} bits per weight; webjit reads 4 and 8`, { input: prefix });
  const scales = toF32(need(f, `${prefix}.scales`, [N, groups], where), `${prefix}.scales`);
  const zeros = need(f, `${prefix}.zeros`, [N, Math.ceil((groups * bits) / 8)], where);
  if (zeros.dtype !== 'U8') throw new GraphError(`${where}: '${prefix}.zeros' is ${zeros.dtype}; expected U8`, { input: prefix });
  return { kind: 'q', bits: bits as QBits, group, N, K, data: qw.bytes.slice(), scales, zeros: zeros.bytes.slice() };
}

/**
 * Phi-3's fused matrices of layer prefix `p`, split by rows: self_attn.qkv_proj (q's rows, then k's, then v's) and
 * mlp.gate_up_proj (gate's, then up's). None where the checkpoint stores them apart.
 */
function fusedFrom(f: StFile, p: string, shapes: Record<LayerMatrix, [number, number]>, where: string): Partial<Record<LayerMatrix, Matrix>> {
  const out: Partial<Record<LayerMatrix, Matrix>> = {};
  for (const [name, parts] of [['self_attn.qkv_proj', ['q', 'k', 'v']], ['mlp.gate_up_proj', ['gate', 'up']]] as const) {
    const t = `${p}.${name}.weight`;
    if (!f.tensors.has(t)) continue;
    const K = shapes[parts[0]][1], rows = parts.map((k) => shapes[k][0]);
    const all = toF32(need(f, t, [rows.reduce((a, b) => a + b, 0), K], where), t);
    let r0 = 0;
    parts.forEach((k, i) => { out[k] = { kind: 'f32', N: rows[i], K, data: all.slice(r0 * K, (r0 + rows[i]) * K) }; r0 += rows[i]; });
  }
  return out;
}

/** What becomes of each dense matrix as it is read (a quantizer: the f32 copy of a matrix lives only while it runs). */
type DenseMap = (m: Matrix, what: string, head: boolean) => Matrix;

function weightsFrom(f: StFile, c: LlamaConfig, where: string, webjit: boolean, quant: string, map: DenseMap = (m) => m): LlmWeights {
  const D = c.hidden, shapes = layerShapes(c);
  const vec = (name: string, n: number) => toF32(need(f, name, [n], where), name);
  // The embedding table is read one row per token: quantized files store it in 8 bits (dequantized here, once).
  const embed = webjit && f.tensors.has('model.embed_tokens.qweight') ? dequantize(matrixFrom(f, 'model.embed_tokens', c.vocab, D, where))
    : toF32(need(f, 'model.embed_tokens.weight', [c.vocab, D], where), 'model.embed_tokens.weight');
  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.layers; l++) {
    const p = `model.layers.${l}`;
    const m = {} as Record<LayerMatrix, Matrix>;
    const fused = webjit ? {} : fusedFrom(f, p, shapes, where);
    for (const k of LAYER_MATRICES) {
      const [N, K] = shapes[k];
      m[k] = webjit ? matrixFrom(f, `${p}.${HF_NAME[k]}`, N, K, where) : map(fused[k] ?? denseFrom(f, `${p}.${HF_NAME[k]}.weight`, N, K, where), `layer ${l} ${k}`, false);
    }
    const L: LayerWeights = { attnNorm: vec(`${p}.input_layernorm.weight`, D), mlpNorm: vec(`${p}.post_attention_layernorm.weight`, D), ...m };
    if (c.qkvBias) L.qkvBias = { q: vec(`${p}.${HF_NAME.q}.bias`, shapes.q[0]), k: vec(`${p}.${HF_NAME.k}.bias`, shapes.k[0]), v: vec(`${p}.${HF_NAME.v}.bias`, shapes.v[0]) };
    if (c.qkNorm) L.qkNorm = { q: vec(`${p}.self_attn.q_norm.weight`, c.headDim), k: vec(`${p}.self_attn.k_norm.weight`, c.headDim) };
    layers.push(L);
  }
  const hasHead = f.tensors.has('lm_head.weight') || f.tensors.has('lm_head.qweight');
  const lmHead: Matrix = hasHead ? (webjit ? matrixFrom(f, 'lm_head', c.vocab, D, where) : map(denseFrom(f, 'lm_head.weight', c.vocab, D, where), 'lm_head', true))
    : { kind: 'f32', N: c.vocab, K: D, data: embed };
  return { config: c, embed, layers, norm: vec('model.norm.weight', D), lmHead, quant };
}

/** Whether bytes are webjit's LLM format (a safetensors file with format = webjit-llm). */
export function isWebjitLlm(bytes: Uint8Array): boolean {
  try { return readSafetensors(bytes).metadata.format === FORMAT; } catch { return false; }
}

/** Reads webjit's format from bytes. */
export function decodeLlm(bytes: Uint8Array, where = 'model'): LlmWeights {
  const f = readSafetensors(bytes, where);
  const md = f.metadata;
  if (md.format !== FORMAT) {
    throw new GraphError(`${where}: safetensors metadata format is ${JSON.stringify(md.format)}, not '${FORMAT}'`, {},
      'give a Hugging Face folder (config.json + *.safetensors) or a file written by `webjit quantize`');
  }
  if (md.version !== FORMAT_VERSION) throw new UnsupportedError(`${where}: format version ${md.version}; this webjit reads ${FORMAT_VERSION}`);
  let cfg: Record<string, unknown>;
  try { cfg = JSON.parse(md.config) as Record<string, unknown>; } catch { throw new GraphError(`${where}: the metadata's config is not JSON`); }
  return weightsFrom(f, configFromHf(cfg, `${where} (config)`), where, true, md.quant ?? 'unknown');
}

/**
 * Loads a Hugging Face Llama folder or a webjit LLM file (Node). With `quantize`, a folder's layer matrices and
 * untied head are quantized (round to nearest, as quantizeRtn) one by one as they are read, so that the whole model
 * never exists in f32, nor the checkpoint in memory: each tensor is read from its file when converted (a 7B f16 checkpoint,
 * 13.5 GB, then needs about its 4-bit result, not 27 GB of f32 besides the file). The result equals
 * quantizeRtn(loadLlm(path)) bit for bit.
 */
export async function loadLlm(path: string, opts: { quantize?: ModelQuantOptions } = {}): Promise<LlmWeights> {
  const fs = await importNode<typeof import('node:fs/promises')>('node:fs/promises');
  const nodePath = await importNode<typeof import('node:path')>('node:path');
  let st;
  try { st = await fs.stat(path); } catch { throw new InputError(`${path}: no such file or folder`, {}, 'give a Hugging Face Llama folder or a .safetensors file written by `webjit quantize`'); }
  if (!st.isDirectory()) return decodeLlm(new Uint8Array(await fs.readFile(path)), path);
  const cfgPath = nodePath.join(path, 'config.json');
  let cfgJson: Record<string, unknown>;
  try { cfgJson = JSON.parse(await fs.readFile(cfgPath, 'utf8')) as Record<string, unknown>; } catch (e) {
    throw new InputError(`${cfgPath}: ${(e as Error).message}`, {}, 'a Hugging Face model folder has config.json and *.safetensors');
  }
  const config = configFromHf(cfgJson, cfgPath);
  // generation_config.json may name more end-of-sequence ids (Qwen2.5-Instruct: <|im_end|> and <|endoftext|>).
  const genPath = nodePath.join(path, 'generation_config.json');
  let gen: Record<string, unknown> | null = null;
  try { gen = JSON.parse(await fs.readFile(genPath, 'utf8')) as Record<string, unknown>; } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new InputError(`${genPath}: ${(e as Error).message}`, {}, 'fix or remove generation_config.json');
  }
  if (gen) config.eos = mergeEos(config.eos, eosIds(gen.eos_token_id, genPath));
  const parts = (await fs.readdir(path)).filter((n) => n.endsWith('.safetensors')).sort();
  if (parts.length === 0) throw new InputError(`${path}: no *.safetensors files`, {}, 'convert PyTorch .bin checkpoints to safetensors first');
  const merged: StFile = { tensors: new Map(), metadata: {} };
  const q = opts.quantize;
  // Quantizing: each tensor is read from its file when converted (readSafetensorsLazy), so memory holds one matrix in
  // f16 and f32 at a time besides the quantized ones.
  const fsSync = q ? await importNode<typeof import('node:fs')>('node:fs') : null;
  const fds: number[] = [];
  try {
    for (const p of parts) {
      const file = nodePath.join(path, p);
      let f: StFile;
      if (fsSync) {
        const fd = fsSync.openSync(file, 'r');
        fds.push(fd);
        const read = (off: number, len: number): Uint8Array => {
          const b = new Uint8Array(len);
          for (let got = 0; got < len;) {
            const n = fsSync.readSync(fd, b, got, len - got, off + got);
            if (n === 0) throw new GraphError(`${file}: the file ended at byte ${off + got}`, {}, 'the checkpoint is truncated');
            got += n;
          }
          return b;
        };
        f = readSafetensorsLazy(read, fsSync.fstatSync(fd).size, file);
      } else f = readSafetensors(new Uint8Array(await fs.readFile(file)), file);
      for (const [k, v] of f.tensors) merged.tensors.set(k, v);
    }
    const map: DenseMap | undefined = q && ((m, what, head) => quantizeMatrix(m as DenseMatrix, { bits: head ? (q.headBits ?? q.bits) : q.bits, group: q.group }, what));
    const w = weightsFrom(merged, config, path, false, 'f32', map);
    return q ? quantizeRtn(w, q) : w;
  } finally {
    for (const fd of fds) fsSync!.closeSync(fd);
  }
}

function matrixTensors(prefix: string, m: Matrix, denseF16: boolean): [string, StTensor][] {
  if (m.kind === 'f32') return [[`${prefix}.weight`, (denseF16 ? f16Tensor : f32Tensor)(m.data, [m.N, m.K])]];
  const groups = m.K / m.group;
  return [
    [`${prefix}.qweight`, u8Tensor(m.data, [m.N, groups, (m.group * m.bits) / 8])],
    // Scales are rounded to f16 by the quantizer, so storing them as f16 loses nothing.
    [`${prefix}.scales`, f16Tensor(m.scales, [m.N, groups])],
    [`${prefix}.zeros`, u8Tensor(m.zeros, [m.N, Math.ceil((groups * m.bits) / 8)])],
  ];
}

/**
 * Encodes weights in webjit's format. Norms stay f32; dense matrices are stored as f16 unless `f32` (an f32 model is
 * then exact). The embedding table is stored like dense matrices, or in 8 bits (groups of 32) when `embedBits` is 8,
 * the default for quantized models. A tied output projection that was not quantized separately is not stored twice.
 */
export function encodeLlm(w: LlmWeights, opts: { f32?: boolean; embedBits?: 8 | 16; extra?: Record<string, string> } = {}): Uint8Array {
  const c = w.config, f16 = !opts.f32;
  const embedBits = opts.embedBits ?? (w.quant === 'f32' ? 16 : 8);
  const embed: Matrix = { kind: 'f32', N: c.vocab, K: c.hidden, data: w.embed };
  const t: [string, StTensor][] = embedBits === 8 && c.hidden % 32 === 0
    ? matrixTensors('model.embed_tokens', quantizeMatrix(embed, { bits: 8, group: 32 }, 'embedding'), f16)
    : [['model.embed_tokens.weight', (f16 ? f16Tensor : f32Tensor)(w.embed, [c.vocab, c.hidden])]];
  w.layers.forEach((L, l) => {
    const p = `model.layers.${l}`;
    t.push([`${p}.input_layernorm.weight`, f32Tensor(L.attnNorm, [c.hidden])], [`${p}.post_attention_layernorm.weight`, f32Tensor(L.mlpNorm, [c.hidden])]);
    for (const k of LAYER_MATRICES) t.push(...matrixTensors(`${p}.${HF_NAME[k]}`, L[k], f16));
    // Biases stay f32 (a few thousand values a layer; Qwen2's k biases reach the hundreds).
    if (L.qkvBias) for (const k of ['q', 'k', 'v'] as const) t.push([`${p}.${HF_NAME[k]}.bias`, f32Tensor(L.qkvBias[k], [L.qkvBias[k].length])]);
    if (L.qkNorm) for (const k of ['q', 'k'] as const) t.push([`${p}.self_attn.${k}_norm.weight`, f32Tensor(L.qkNorm[k], [c.headDim])]);
  });
  t.push(['model.norm.weight', f32Tensor(w.norm, [c.hidden])]);
  const tied = w.lmHead.kind === 'f32' && w.lmHead.data === w.embed;
  if (!tied) t.push(...matrixTensors('lm_head', w.lmHead, f16));
  return writeSafetensors(t, { format: FORMAT, version: FORMAT_VERSION, config: JSON.stringify(configToHf(c)), quant: w.quant, ...opts.extra });
}
