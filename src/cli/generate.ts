// `webjit generate`: text generation from an ONNX decoder with a KV cache, or from an LLM (a Hugging Face Llama, Mistral, Qwen2, Qwen3 or Phi-3 folder
// or webjit's .safetensors file) run by webjit's LLM runtime, optionally quantized on the fly and optionally with a
// draft model for speculative decoding; tokens are printed as they come, then the prefill and decode speeds.
import { InputError, UnsupportedError } from '../errors.js';
import { LlmCausalLM, type CausalLM } from '../generate/causal_lm.js';
import { CausalDecoder } from '../generate/decoder.js';
import { ChatSession } from '../generate/chat.js';
import { TextGenerator, draftActivationsFor, type ChatPrompt, type GenerateOptions, type GenerationStats } from '../generate/generate.js';
import { TextTokenizer, type ChatMessage } from '../generate/tokenizer.js';
import { activationsOf, createLlm, decodeLlm, int8Unavailable, isWebjitLlm, loadLlm, quantizeRtn, LAYER_MATRICES, type LlmRunner, type LlmWeights } from '../llm/index.js';
import type { BackendName } from '../session.js';
import { importNode } from '../util/node.js';

export interface GenerateArgs {
  prompt?: string;
  promptIds?: string;
  tokenizer?: string;
  backend: BackendName;
  threads?: number;
  maxTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  seed?: number;
  stop: string[];
  stopId: string[];
  ignoreEos?: boolean;
  json?: boolean;
  quant?: string;
  activations?: 'f32' | 'int8';
  draftActivations?: 'f32' | 'int8';
  kvCache?: 'f32' | 'f16';
  prefill?: 'f32' | 'f16';
  draft?: string;
  draftTokens?: number;
  draftAdaptive?: boolean;
  /** --prompt is the user's message, rendered by the tokenizer's chat template. */
  chat?: boolean;
  /** With chat: a system message first. */
  system?: string;
  /** With chat: a template file (or the name of one of the tokenizer's templates) instead of the tokenizer's template. */
  chatTemplate?: string;
  /** With chat: template variables, KEY=VALUE. */
  chatVar?: string[];
}

/**
 * --chat-var KEY=VALUE list → template variables. VALUE is JSON where it parses (false, 3, "x", [..], {..}), Python's
 * True / False / None as in transformers' examples (enable_thinking=False), else the text itself.
 */
export function parseChatVars(list: readonly string[]): Record<string, unknown> {
  const vars: Record<string, unknown> = {};
  for (const kv of list) {
    const eq = kv.indexOf('=');
    const key = eq > 0 ? kv.slice(0, eq).trim() : '';
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) {
      throw new InputError(`--chat-var ${kv}: expected KEY=VALUE, KEY a template variable name`, {}, 'e.g. --chat-var enable_thinking=false');
    }
    const v = kv.slice(eq + 1);
    if (v === 'True' || v === 'False') vars[key] = v === 'True';
    else if (v === 'None') vars[key] = null;
    else {
      try { vars[key] = JSON.parse(v); } catch { vars[key] = v; }
    }
  }
  return vars;
}

/**
 * --chat-template: a Jinja file's text (a .json file: its "chat_template", as chat_template.json holds it), or the
 * name of one of the tokenizer's named templates where no such file exists.
 */
async function readChatTemplate(file: string, tokenizer: TextTokenizer): Promise<string> {
  const fs = await importNode<typeof import('node:fs/promises')>('node:fs/promises');
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' && Object.hasOwn(tokenizer.chatTemplates, file)) return file;
    throw new InputError(`--chat-template ${file}: ${(e as Error).message}`, {}, 'give a Jinja template file (e.g. chat_template.jinja)');
  }
  if (!file.endsWith('.json')) return text;
  let t: unknown;
  try { t = (JSON.parse(text) as { chat_template?: unknown }).chat_template; } catch (e) {
    throw new InputError(`--chat-template ${file}: ${(e as Error).message}`, {}, 'a .json template file holds { "chat_template": "…" }');
  }
  if (typeof t !== 'string') throw new InputError(`--chat-template ${file}: no "chat_template" string in it`, {}, 'a .json template file holds { "chat_template": "…" }; or give the .jinja text');
  return t;
}

const QUANTS = ['q4', 'q8', 'f16', 'f32'] as const;
type Quant = typeof QUANTS[number];

const parseIds = (s: string, what: string): number[] => s.split(',').map((x) => x.trim()).filter(Boolean).map((x) => {
  const v = Number(x);
  if (!Number.isInteger(v) || v < 0) throw new InputError(`${what} expects comma-separated token ids, got '${x}'`);
  return v;
});

/** An ONNX model path, or LLM weights: a folder (Hugging Face Llama) or a file in webjit's LLM format. */
async function readModel(path: string, quant?: Quant): Promise<{ kind: 'onnx'; path: string } | { kind: 'llm'; weights: LlmWeights; note?: string }> {
  const fs = await importNode<typeof import('node:fs/promises')>('node:fs/promises');
  let st;
  try { st = await fs.stat(path); } catch { throw new InputError(`${path}: no such file or folder`, {}, 'give an .onnx decoder, a Hugging Face Llama, Mistral, Qwen2, Qwen3 or Phi-3 folder, or a .safetensors file written by `webjit quantize`'); }
  if (st.isDirectory()) {
    // --quant q4/q8 on a Hugging Face folder: each matrix is quantized as it is read (the model is never whole in f32).
    if (quant !== 'q4' && quant !== 'q8') return { kind: 'llm', weights: await loadLlm(path) };
    const t0 = performance.now();
    const weights = await loadLlm(path, { quantize: { bits: quant === 'q4' ? 4 : 8 } });
    return { kind: 'llm', weights, note: `quantized to ${weights.quant} while loading (${(performance.now() - t0).toFixed(0)} ms)` };
  }
  if (path.endsWith('.onnx')) return { kind: 'onnx', path };
  const bytes = new Uint8Array(await fs.readFile(path));
  if (isWebjitLlm(bytes)) return { kind: 'llm', weights: decodeLlm(bytes, path) };
  if (path.endsWith('.safetensors')) {
    throw new InputError(`${path} is a safetensors file but not webjit's LLM format`, {}, 'give the Hugging Face folder it belongs to (with config.json), or a file written by `webjit quantize`');
  }
  return { kind: 'onnx', path };
}

const isQuantized = (w: LlmWeights) => w.lmHead.kind === 'q' || w.layers.some((L) => LAYER_MATRICES.some((m) => L[m].kind === 'q'));

/** The weights in the precision --quant asks for, and a note on what was done. */
function applyQuant(w: LlmWeights, q: Quant | undefined, what: string): { weights: LlmWeights; note: string } {
  if (q === undefined) return { weights: w, note: w.quant };
  if (isQuantized(w)) {
    throw new InputError(`--quant ${q}: ${what} is already quantized (${w.quant})`, {}, 'leave out --quant, or give the dense model (the Hugging Face folder)');
  }
  if (q === 'f32') return { weights: w, note: 'f32' };
  if (q === 'f16') return { weights: w, note: 'f16: the LLM runtime keeps dense weights in float32 (f16 checkpoints are widened when loaded), so this runs as f32' };
  const t0 = performance.now();
  const weights = quantizeRtn(w, { bits: q === 'q4' ? 4 : 8 });
  return { weights, note: `quantized to ${weights.quant} in ${(performance.now() - t0).toFixed(0)} ms` };
}

async function openModel(path: string, a: GenerateArgs, quant: Quant | undefined, what: string): Promise<{ lm: CausalLM; describe: string }> {
  const m = await readModel(path, quant);
  if (m.kind === 'onnx') {
    if (quant !== undefined) {
      throw new UnsupportedError(`--quant applies to LLM weights (a Hugging Face Llama, Mistral, Qwen2, Qwen3 or Phi-3 folder or a webjit .safetensors file); ${what} ${path} is an ONNX model, which runs in the precision it stores`, {},
        'give the model\'s Hugging Face folder to quantize on the fly, or quantize it ahead with `webjit quantize`');
    }
    if (a.kvCache === 'f16') {
      throw new UnsupportedError(`--kv-cache f16 applies to LLM weights; ${what} ${path} is an ONNX decoder, whose past key/value inputs are the graph's`, {},
        "leave --kv-cache out, or give the model's Hugging Face folder (or a webjit .safetensors file) with --backend webgpu");
    }
    if (a.prefill === 'f16') {
      throw new UnsupportedError(`--prefill f16 applies to LLM weights; ${what} ${path} is an ONNX decoder`, {},
        "leave --prefill out, or give the model's Hugging Face folder (or a webjit .safetensors file) with --backend webgpu");
    }
    const dec = await CausalDecoder.create(m.path, { backend: a.backend, threads: a.threads });
    const L = dec.layout;
    return { lm: dec, describe: `ONNX decoder, ${L.layers} layers, ${L.heads} heads of ${L.headDim}` };
  }
  const { weights, note } = m.note ? { weights: m.weights, note: m.note } : applyQuant(m.weights, quant, `${what} ${path}`);
  const runner = await createLlm(weights, { backend: a.backend, threads: a.threads, activations: a.activations, kvCache: a.kvCache, prefill: a.prefill });
  const c = weights.config;
  return { lm: new LlmCausalLM(runner), describe: `LLM runtime, ${c.layers} layers, hidden ${c.hidden}, vocab ${c.vocab}, ${note}${activationsNote(a.activations, runner)}` };
}

/** ', int8 activations' where they run; where asked for and not run, why (a user sees the fallback). */
export function activationsNote(asked: 'f32' | 'int8' | undefined, r: LlmRunner): string {
  const why = int8Unavailable(asked, r);
  return why ? `, f32 activations (${why.message}: ${why.hint})` : activationsOf(r) === 'int8' ? ', int8 activations' : '';
}

export async function generateCommand(model: string, a: GenerateArgs): Promise<number> {
  // --chat without --prompt: a conversation, one user message a line of stdin.
  const interactive = !!a.chat && a.prompt === undefined && a.promptIds === undefined;
  if (!interactive && (a.prompt === undefined) === (a.promptIds === undefined)) throw new InputError('give exactly one of --prompt TEXT (with --tokenizer) or --prompt-ids 1,2,3', {}, 'or --chat without a prompt for a conversation on stdin');
  if (interactive && !a.tokenizer) throw new InputError('--chat needs --tokenizer FILE (a tokenizer.json, with its chat template)');
  if (a.chat && a.promptIds !== undefined) {
    throw new InputError('--chat renders --prompt TEXT with the chat template; it does not take --prompt-ids', {}, 'give --prompt TEXT and --tokenizer FILE, or leave out --chat');
  }
  const chatVars = parseChatVars(a.chatVar ?? []);
  if (!a.chat && (a.system !== undefined || a.chatTemplate !== undefined || (a.chatVar ?? []).length > 0)) {
    throw new InputError('--system, --chat-template and --chat-var apply to a chat', {}, 'add --chat');
  }
  if (a.prompt !== undefined && !a.tokenizer) throw new InputError('--prompt needs --tokenizer FILE (a tokenizer.json)', {}, 'or pass token ids with --prompt-ids');
  if (a.quant !== undefined && !(QUANTS as readonly string[]).includes(a.quant)) throw new InputError(`--quant ${a.quant}: use q4, q8, f16 or f32`);
  if (a.draftTokens !== undefined && !(Number.isInteger(a.draftTokens) && a.draftTokens >= 1 && a.draftTokens <= 64)) {
    throw new InputError(`--draft-tokens ${a.draftTokens}: give an integer from 1 to 64`, {}, 'e.g. 4');
  }
  if (a.draftTokens !== undefined && a.draft === undefined) throw new InputError('--draft-tokens needs --draft DRAFT');
  if (a.draftAdaptive && a.draft === undefined) throw new InputError('--draft-adaptive needs --draft DRAFT');
  const quant = a.quant as Quant | undefined;
  const log = (s: string) => { if (!a.json) console.error(s); };
  const tokenizer = a.tokenizer ? await TextTokenizer.fromFile(a.tokenizer) : undefined;
  let chat: ChatPrompt | undefined;
  if (a.chat) {
    const messages: ChatMessage[] = [...(a.system !== undefined ? [{ role: 'system', content: a.system }] : []), { role: 'user', content: a.prompt ?? '' }];
    chat = { messages, chatTemplate: a.chatTemplate !== undefined ? await readChatTemplate(a.chatTemplate, tokenizer!) : undefined, chatVariables: chatVars };
    // Rendered once here so that a template's error comes before the model loads.
    tokenizer!.applyChatTemplate(messages, { template: chat.chatTemplate, variables: chatVars });
  }
  const t0 = performance.now();
  const target = await openModel(model, a, quant, 'the model');
  log(`${model} loaded on ${a.backend} in ${(performance.now() - t0).toFixed(0)} ms (${target.describe})`);
  let draft: Awaited<ReturnType<typeof openModel>> | undefined;
  let gen: TextGenerator;
  try {
    if (a.draft !== undefined) {
      const t1 = performance.now();
      draft = await openModel(a.draft, { ...a, activations: draftActivationsFor(a) }, quant, 'the draft');
      log(`draft ${a.draft} loaded in ${(performance.now() - t1).toFixed(0)} ms (${draft.describe})`);
    }
    gen = new TextGenerator(target.lm, tokenizer, { draft: draft?.lm, draftTokens: a.draftTokens, adaptiveDraft: a.draftAdaptive });
  } catch (e) {
    await target.lm.release();
    await draft?.lm.release();
    throw e;
  }
  try {
    const stopIds = a.stopId.flatMap((s) => parseIds(s, '--stop-id'));
    const opts = { maxTokens: a.maxTokens, temperature: a.temperature, topK: a.topK, topP: a.topP, seed: a.seed, stop: [...a.stop, ...stopIds], ignoreEos: a.ignoreEos };
    if (interactive) return await converse(new ChatSession(gen, { system: a.system, chatTemplate: chat!.chatTemplate, chatVariables: chatVars }), opts, a.json);
    const prompt = chat ?? a.prompt ?? parseIds(a.promptIds!, '--prompt-ids');
    const g = gen.generate(prompt, opts);
    for await (const t of g) {
      if (a.json) continue;
      process.stdout.write(tokenizer ? t.text : `${t.index ? ' ' : ''}${t.id}`);
    }
    const s = g.stats!;
    if (a.json) {
      console.log(JSON.stringify({ backend: a.backend, chat_prompt: g.promptText, ids: g.ids, text: tokenizer ? g.text : undefined, ...statsJson(s) }));
    } else {
      process.stdout.write('\n');
      console.log(statsLine(s));
      if (s.speculative) console.log(speculativeLine(s));
    }
  } finally {
    await gen.release();
  }
  return 0;
}

/**
 * A conversation on stdin: each line a user message, the reply streamed to stdout, then its speeds (stderr) — or one
 * JSON line a turn. The KV cache is kept between turns (ChatSession), so a turn runs only its new tokens. Ends at the
 * end of the input or an empty line.
 */
async function converse(chat: ChatSession, opts: GenerateOptions, json?: boolean): Promise<number> {
  const readline = await importNode<typeof import('node:readline')>('node:readline');
  const rl = readline.createInterface({ input: process.stdin, terminal: false });
  const tty = process.stdin.isTTY;
  if (tty) process.stderr.write('> ');
  let turn = 0;
  try {
    for await (const line of rl) {
      if (line.trim() === '') break;
      turn++;
      const g = chat.send(line, opts);
      for await (const t of g) if (!json) process.stdout.write(t.text);
      const s = g.stats!;
      if (json) console.log(JSON.stringify({ turn, text: g.text, ids: g.ids, ...statsJson(s) }));
      else {
        process.stdout.write('\n');
        console.error(statsLine(s));
      }
      if (tty) process.stderr.write('> ');
    }
  } finally {
    rl.close();
  }
  return 0;
}

export function statsLine(s: GenerationStats): string {
  return `prefill: ${s.promptTokens} tokens${s.reusedTokens ? ` (${s.reusedTokens} kept in the cache)` : ''} in ${s.prefillMs.toFixed(1)} ms (${s.prefillTokensPerSec.toFixed(1)} tokens/s); `
    + `decode: ${Math.max(0, s.generatedTokens - 1)} tokens in ${s.decodeMs.toFixed(1)} ms (${s.decodeTokensPerSec.toFixed(1)} tokens/s); `
    + `first token after ${s.timeToFirstTokenMs.toFixed(1)} ms; stop: ${s.stopReason}`;
}

export function speculativeLine(s: GenerationStats): string {
  const p = s.speculative!;
  return `speculative: draft of ${p.draftTokens} tokens a round, ${p.rounds} rounds, ${p.drafted} drafted, ${p.accepted} accepted `
    + `(acceptance ${(100 * p.acceptanceRate).toFixed(1)}%)`
    + (p.plainTokens !== undefined ? `; adaptive: ${p.plainTokens} tokens without the draft, ${p.switches} switches` : '');
}

const r3 = (x: number) => Math.round(x * 1000) / 1000;

function statsJson(s: GenerationStats) {
  const p = s.speculative;
  return {
    prompt_tokens: s.promptTokens, generated_tokens: s.generatedTokens, time_to_first_token_ms: r3(s.timeToFirstTokenMs),
    prefill_ms: r3(s.prefillMs), prefill_tokens_per_s: r3(s.prefillTokensPerSec), decode_ms: r3(s.decodeMs),
    decode_tokens_per_s: r3(s.decodeTokensPerSec), stop_reason: s.stopReason, reused_tokens: s.reusedTokens,
    speculative: p ? { draft_tokens: p.draftTokens, rounds: p.rounds, drafted: p.drafted, accepted: p.accepted, acceptance_rate: r3(p.acceptanceRate), plain_tokens: p.plainTokens, switches: p.switches } : undefined,
  };
}
