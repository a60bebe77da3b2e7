// Text generation: a prompt in, tokens out as an async iterator (id and text), with stop strings and ids, a token
// limit, seeded sampling, optional speculative decoding with a draft model, and prefill/decode speeds at the end.
import { InputError } from '../errors.js';
import type { LlmRunner, LlmWeights } from '../llm/types.js';
import type { GreedyStream } from '../llm/webgpu.js';
import type { ModelSource } from '../onnx/load.js';
import { LlmCausalLM, openCausalLM, type CausalLM, type GenerationModel, type OpenOptions } from './causal_lm.js';
import type { CausalDecoder } from './decoder.js';
import { checkSamplingOptions, Sampler, type SamplingOptions, type TokenDistribution } from './sampler.js';
import { verifyDraftToken } from './speculative.js';
import { TextStreamer, TextTokenizer, type ChatMessage } from './tokenizer.js';

/**
 * A chat as the prompt: the messages rendered by the tokenizer's chat template (TextTokenizer.applyChatTemplate) and
 * encoded without added special tokens (the template writes BOS where the model wants one). Generation also stops
 * at the end-of-turn token the template writes after a turn (<|im_end|>, <|eot_id|>, <|end|>, <end_of_turn>…),
 * besides the EOS ids, unless `ignoreEos`.
 */
export interface ChatPrompt {
  messages: readonly ChatMessage[];
  /** Open the assistant's turn at the end (default true). */
  addGenerationPrompt?: boolean;
  /** A Jinja template instead of the tokenizer's, or the name of one of its named templates. */
  chatTemplate?: string;
  /** More template variables, e.g. Qwen3's { enable_thinking: false }. */
  chatVariables?: Record<string, unknown>;
}

const isChatPrompt = (p: unknown): p is ChatPrompt => typeof p === 'object' && p !== null && !Array.isArray(p) && 'messages' in p;

export interface SpeculationOptions {
  /**
   * A draft model sharing the target's tokenizer: it proposes `draftTokens` tokens, the target checks them in one
   * batched run, and the standard rejection rule keeps the output distributed as the target's (greedy output is
   * identical to decoding without a draft).
   */
  draft?: CausalLM;
  /** Tokens the draft proposes per round (default 4). */
  draftTokens?: number;
  /**
   * Turn the draft on and off by measurement (default false): both ways are timed all along, the cheaper runs most
   * of the tokens and the other is probed now and then (DraftGovernor; the generator keeps what it measured for its
   * draft from one generate() call to the next). Greedy output is the same either way and
   * sampled output is distributed as the target's either way, but a seed no longer fixes the tokens (which way drew
   * each one depends on timing).
   */
  adaptiveDraft?: boolean;
}

export interface GenerateOptions extends SamplingOptions {
  /** Most tokens to generate (default 64). */
  maxTokens?: number;
  /**
   * Generation ends at any of these: a string (needs a tokenizer; the text before it is the last emitted) or a token
   * id (not emitted). The tokenizer's EOS token and the end-of-sequence ids the model's config names always stop,
   * unless `ignoreEos`.
   */
  stop?: readonly (string | number)[];
  /** Keep going past the tokenizer's EOS token (default false). */
  ignoreEos?: boolean;
  /** Add the tokenizer's special tokens (BOS) to a text prompt (default true; a chat prompt's template writes its own). */
  addSpecialTokens?: boolean;
  /** A draft model for this call (null: none, even if the generator has one); default: the generator's. */
  draft?: CausalLM | null;
  /** Tokens the draft proposes per round (default: the generator's, else 4). */
  draftTokens?: number;
  /** SpeculationOptions.adaptiveDraft for this call (default: the generator's). */
  adaptiveDraft?: boolean;
  /**
   * Keep the part of the target's KV cache that already holds this prompt's first tokens (what the previous generate()
   * of this generator left there: its prompt and output) and run only the rest (default false). A chat's next turn
   * then runs its new messages only (ChatSession). The reused positions were computed by other kernels (one token at
   * a time, or another chunking), so logits can differ from a fresh prefill's in the last bits; the draft is always
   * prefilled afresh.
   */
  reusePrefix?: boolean;
}

export interface GeneratedToken {
  /** The token id the sampler chose. */
  id: number;
  /** Its position among the generated tokens (0 is the first). */
  index: number;
  /** The text this token completed ('' while a character or a possible stop string is incomplete, or without a tokenizer). */
  text: string;
}

/** How speculative decoding went. */
export interface SpeculativeStats {
  /** Tokens the draft proposed per round (fewer in a round near maxTokens or the cache's end). */
  draftTokens: number;
  /** Rounds of draft-then-verify. */
  rounds: number;
  /** Draft tokens proposed. */
  drafted: number;
  /** Draft tokens the target accepted. */
  accepted: number;
  /** accepted / drafted (0 with no round). */
  acceptanceRate: number;
  /** adaptiveDraft: tokens made with the draft off, and how often the governor changed its way. */
  plainTokens?: number;
  switches?: number;
}

export interface GenerationStats {
  promptTokens: number;
  /** Tokens the model produced, a stop token included. */
  generatedTokens: number;
  /** From the call to the first token: prefill (the draft's too) and the first sample. */
  timeToFirstTokenMs: number;
  prefillMs: number;
  prefillTokensPerSec: number;
  /** Time from the first token to the last one. */
  decodeMs: number;
  decodeTokensPerSec: number;
  stopReason: 'maxTokens' | 'eos' | 'stopToken' | 'stopString';
  /** With a draft model. */
  speculative?: SpeculativeStats;
  /** reusePrefix: prompt tokens taken from the cache (not run; prefillTokensPerSec counts the others). */
  reusedTokens?: number;
}

/** One generation: iterate it (once) for the tokens; `stats`, `ids` and `text` are complete when the iteration ends. */
export class Generation implements AsyncIterable<GeneratedToken> {
  stats: GenerationStats | null = null;
  /** The generated ids so far (a stop token left out). */
  readonly ids: number[] = [];
  /**
   * The generated text so far (without the stop string). At the end it also holds any text that was held back when a
   * stop token ended the stream (the tokens' texts then miss that tail).
   */
  text = '';
  /** The prompt text a chat prompt was rendered to by the chat template (undefined for other prompts). */
  promptText?: string;
  private started = false;
  private readonly ends: ((g: Generation, error?: unknown) => void)[] = [];

  constructor(private readonly run: (g: Generation) => AsyncGenerator<GeneratedToken>) {}

  [Symbol.asyncIterator](): AsyncIterator<GeneratedToken> {
    if (this.started) throw new InputError('a Generation can be iterated once', {}, 'call generate() again');
    this.started = true;
    return this.ends.length ? this.runThenEnd() : this.run(this);
  }

  /**
   * Calls `fn` when the iteration ends: at its end, when the consumer stops early (ids and text then hold what came),
   * or with the error that ended it.
   */
  onEnd(fn: (g: Generation, error?: unknown) => void): void {
    if (this.started) throw new InputError('onEnd() after the iteration started', {}, 'register it before iterating');
    this.ends.push(fn);
  }

  private async *runThenEnd(): AsyncGenerator<GeneratedToken> {
    let error: unknown, threw = false;
    try {
      yield* this.run(this);
    } catch (e) {
      threw = true;
      error = e;
      throw e;
    } finally {
      for (const f of this.ends) f(this, ...(threw ? [error] : []));
    }
  }

  /** Runs to the end; returns the text (or the ids joined by spaces without a tokenizer). */
  async all(): Promise<string> {
    for await (const _ of this) { /* drain */ }
    return this.text;
  }
}

export type CreateOptions = OpenOptions & {
  tokenizer?: TextTokenizer;
  /**
   * A draft model for speculative decoding, opened like the target with the same options (its activations:
   * draftActivations); released with the generator.
   */
  draft?: GenerationModel;
  draftTokens?: number;
  adaptiveDraft?: boolean;
  /**
   * The draft's activations (LLM runtime). Default: the target's, except on WebGPU, where the draft runs f32: a small
   * draft's step pays int8's quantizing dispatches more than its dot products save (the trained draft on the H100:
   * 0.282 against 0.148 ms a step, bench/NOTES.md session 16).
   */
  draftActivations?: 'f32' | 'int8';
};

/** The activations a draft opens with (CreateOptions.draftActivations). */
export function draftActivationsFor(o: { backend?: string; activations?: 'f32' | 'int8'; draftActivations?: 'f32' | 'int8' }): 'f32' | 'int8' | undefined {
  return o.draftActivations ?? (o.backend === 'webgpu' ? 'f32' : o.activations);
}

function checkDraftTokens(k: number): void {
  if (!(Number.isInteger(k) && k >= 1 && k <= 64)) throw new InputError(`draftTokens must be an integer in [1, 64], got ${k}`, {}, 'e.g. 4');
}

function checkVocab(target: CausalLM, draft: CausalLM, tv = target.vocab, dv = draft.vocab): void {
  if (tv !== undefined && dv !== undefined && tv !== dv) {
    throw new InputError(`the draft model's vocabulary has ${dv} tokens and the target's ${tv}`, {},
      'a draft model must share the target\'s tokenizer (the same token ids)');
  }
}

/**
 * A causal LM (an ONNX decoder, or webjit's LLM runtime) and, optionally, its tokenizer and a draft model:
 * generate() streams tokens from a prompt.
 */
export class TextGenerator<M extends CausalLM = CausalLM> {
  private busy = false;
  readonly draft?: CausalLM;
  readonly draftTokens: number;
  readonly adaptiveDraft: boolean;
  /**
   * Adaptive drafting's governor for this generator's draft, kept across generate() calls so that a later generation
   * starts from what earlier ones measured (one per way of making plain tokens: streamed or stepped).
   */
  private readonly governors = new Map<string, DraftGovernor>();
  /**
   * reusePrefix: the ids of the positions the target's cache holds as the last generation left it (its prompt and all
   * its output but the last token, which was never run), or null where that is not known (none yet, or one that failed).
   */
  private cachedIds: number[] | null = null;

  constructor(readonly decoder: M, readonly tokenizer?: TextTokenizer, opts: SpeculationOptions = {}) {
    this.draftTokens = opts.draftTokens ?? 4;
    this.adaptiveDraft = opts.adaptiveDraft ?? false;
    checkDraftTokens(this.draftTokens);
    if (opts.draft) {
      if (opts.draft === (decoder as CausalLM)) throw new InputError('the draft model is the target model itself', {}, 'open the model twice: each needs its own KV cache');
      checkVocab(decoder, opts.draft);
      this.draft = opts.draft;
    }
  }

  /**
   * An ONNX decoder (path or bytes; wasm backend unless `backend` says otherwise), LLM weights (run by createLlm on
   * `backend`), an LlmRunner, or any CausalLM. `draft` is opened the same way.
   */
  static async create(model: ModelSource, opts?: CreateOptions): Promise<TextGenerator<CausalDecoder>>;
  static async create(model: LlmWeights | LlmRunner, opts?: CreateOptions): Promise<TextGenerator<LlmCausalLM>>;
  static async create<T extends CausalLM>(model: T, opts?: CreateOptions): Promise<TextGenerator<T>>;
  static async create(model: GenerationModel, opts: CreateOptions = {}): Promise<TextGenerator> {
    const { tokenizer, draft, draftTokens, adaptiveDraft, draftActivations, ...open } = opts;
    if (draftTokens !== undefined) checkDraftTokens(draftTokens);
    const lm = await openCausalLM(model, open);
    let d: CausalLM | undefined;
    try {
      d = draft !== undefined ? await openCausalLM(draft, { ...open, activations: draftActivationsFor({ ...open, draftActivations }) }) : undefined;
      return new TextGenerator(lm, tokenizer, { draft: d, draftTokens, adaptiveDraft });
    } catch (e) {
      await lm.release();
      await d?.release();
      throw e;
    }
  }

  /**
   * Generates from `prompt`: text (with a tokenizer), token ids, or chat messages ({ messages }, with a tokenizer: see
   * ChatPrompt). Validation errors are thrown here, not mid-stream.
   */
  generate(prompt: string | readonly number[] | ChatPrompt, opts: GenerateOptions = {}): Generation {
    const maxTokens = opts.maxTokens ?? 64;
    if (!(Number.isInteger(maxTokens) && maxTokens >= 1)) throw new InputError(`maxTokens must be an integer ≥ 1, got ${maxTokens}`);
    checkSamplingOptions(opts);
    const draft = opts.draft === null ? undefined : opts.draft ?? this.draft;
    const draftTokens = opts.draftTokens ?? this.draftTokens;
    checkDraftTokens(draftTokens);
    if (draft) {
      if (draft === (this.decoder as CausalLM)) throw new InputError('the draft model is the target model itself', {}, 'open the model twice: each needs its own KV cache');
      checkVocab(this.decoder, draft);
    }
    const tok = this.tokenizer;
    const chat = isChatPrompt(prompt) ? prompt : null;
    if ((typeof prompt === 'string' || chat) && !tok) {
      throw new InputError(`a ${chat ? 'chat' : 'text'} prompt needs a tokenizer`, {}, 'pass { tokenizer } to TextGenerator.create, or give token ids');
    }
    const chatText = chat ? tok!.applyChatTemplate(chat.messages, { addGenerationPrompt: chat.addGenerationPrompt, template: chat.chatTemplate, variables: chat.chatVariables }) : undefined;
    const ids = chatText !== undefined ? tok!.encode(chatText, { addSpecialTokens: false })
      : typeof prompt === 'string' ? tok!.encode(prompt, { addSpecialTokens: opts.addSpecialTokens }) : [...(prompt as readonly number[])];
    const stopStrings = (opts.stop ?? []).filter((s): s is string => typeof s === 'string');
    const stopIds = new Set((opts.stop ?? []).filter((s): s is number => typeof s === 'number'));
    if (stopStrings.length && !tok) throw new InputError('stop strings need a tokenizer', {}, 'pass { tokenizer }, or stop on token ids');
    if (stopStrings.some((s) => s === '')) throw new InputError('a stop string is empty');
    for (const id of stopIds) if (!Number.isInteger(id) || id < 0) throw new InputError(`stop token id ${id} is not a token id`);
    const eos = new Set(opts.ignoreEos ? [] : [...(tok?.eosTokenId === undefined ? [] : [tok.eosTokenId]), ...(this.decoder.eosIds ?? []),
      ...(chatText !== undefined ? tok!.endOfTurnIds(chatText) : [])]);
    const sampler = new Sampler(opts);
    const self = this;

    const generation = new Generation(async function* (g: Generation): AsyncGenerator<GeneratedToken> {
      if (self.busy) throw new InputError('this TextGenerator is already generating', {}, 'finish the other generation first, or make a second TextGenerator');
      self.busy = true;
      const target = self.decoder;
      // reusePrefix: positions the cache holds for this prompt (at least the last token runs, for its logits).
      const reused = opts.reusePrefix ? commonPrefix(self.cachedIds, ids, Math.min(ids.length - 1, target.pastLength)) : 0;
      self.cachedIds = null;
      let threw = false;
      try {
        const streamer = tok ? new TextStreamer(tok) : null;
        const stopText = new StopText(stopStrings);
        const t0 = performance.now();
        let logits: Float32Array;
        if (reused > 0) {
          await target.truncate(reused);
          logits = await target.forward(ids.slice(reused), false);
        } else {
          logits = await target.prefill(ids);
        }
        if (draft) {
          const dl = await draft.prefill(ids);
          checkVocab(target, draft, logits.length, dl.length);
        }
        const prefillMs = performance.now() - t0;
        const gpuStream = !draft && sampler.greedy ? streamingRunner(target) : null;
        const governor = draft && (opts.adaptiveDraft ?? self.adaptiveDraft) ? self.governorFor(draft, sampler.greedy && streamingRunner(target) !== null) : null;
        const source: TokenSource = draft ? new SpeculativeSource(target, draft, sampler, ids, logits, draftTokens, governor)
          : gpuStream ? new GreedyStreamSource(target, gpuStream, sampler, ids, logits) : new PlainSource(target, sampler, ids, logits);
        let tFirst = 0, tLast = 0, produced = 0;
        let reason: GenerationStats['stopReason'] = 'maxTokens';
        let i = 0;
        try {
          generation: while (i < maxTokens) {
            // Tokens come one at a time, or a draft round's worth; each is emitted exactly as without a draft, and those
            // after a stop are dropped.
            for (const id of await source.next(maxTokens - i)) {
              produced++;
              const now = performance.now();
              if (i === 0) tFirst = now;
              tLast = now;
              if (stopIds.has(id) || eos.has(id)) { reason = stopIds.has(id) ? 'stopToken' : 'eos'; break generation; }
              g.ids.push(id);
              let text = streamer ? streamer.push(id) : '';
              let stopped = false;
              if (i === maxTokens - 1 && streamer) text += streamer.flush();
              if (stopStrings.length) ({ text, stopped } = stopText.feed(text, i === maxTokens - 1));
              g.text += text;
              yield { id, index: i, text };
              i++;
              if (stopped) { reason = 'stopString'; break generation; }
            }
          }
        } finally {
          await source.close?.();
        }
        // A stop token can leave text held back (an incomplete character, a possible start of a stop string).
        if (reason === 'eos' || reason === 'stopToken') {
          const tail = streamer ? streamer.flush() : '';
          g.text += stopStrings.length ? stopText.feed(tail, true).text : tail;
        }
        if (!tok) g.text = g.ids.join(' ');
        const decodeMs = tLast - tFirst;
        g.stats = {
          promptTokens: ids.length,
          generatedTokens: produced,
          timeToFirstTokenMs: tFirst - t0,
          prefillMs,
          prefillTokensPerSec: (ids.length - reused) / (prefillMs / 1000),
          decodeMs,
          decodeTokensPerSec: produced > 1 ? (produced - 1) / (decodeMs / 1000) : 0,
          stopReason: reason,
          ...(source instanceof SpeculativeSource ? { speculative: source.stats() } : {}),
          ...(opts.reusePrefix ? { reusedTokens: reused } : {}),
        };
      } catch (e) {
        threw = true;
        throw e;
      } finally {
        // Every source leaves the prompt and the output but its last token in the cache's first positions (a stop
        // token, or a rejected draft token past them, is not among them); a consumer that stopped early leaves a
        // shorter output, as valid.
        if (!threw) self.cachedIds = [...ids, ...g.ids].slice(0, Math.min(ids.length + g.ids.length - 1, target.pastLength));
        self.busy = false;
      }
    });
    generation.promptText = chatText;
    return generation;
  }

  /** The governor of adaptive drafting with `draft`: kept for the generator's own draft, fresh for a per-call one. */
  private governorFor(draft: CausalLM, streams: boolean): DraftGovernor {
    if (draft !== this.draft) return new DraftGovernor({ streams });
    const key = streams ? 'stream' : 'step';
    let g = this.governors.get(key);
    if (!g) { g = new DraftGovernor({ streams }); this.governors.set(key, g); }
    return g;
  }

  /** Releases the model and the generator's draft model. */
  async release(): Promise<void> {
    await this.decoder.release();
    await this.draft?.release();
  }
}

/** The next tokens of a sequence; `remaining` (≥ 1) caps how many. Each returned token is appended to the sequence. */
interface TokenSource {
  next(remaining: number): Promise<number[]>;
  /** Ends the source (the generation stopped or failed); the model's cache then holds every token but the newest. */
  close?(): Promise<void>;
}

/** One target run per token; the last token is run only when another one is asked for. */
/** Length of the common prefix of `cached` and `ids`, at most `max`. */
function commonPrefix(cached: readonly number[] | null, ids: readonly number[], max: number): number {
  if (!cached) return 0;
  const n = Math.min(cached.length, max);
  let i = 0;
  while (i < n && cached[i] === ids[i]) i++;
  return i;
}

class PlainSource implements TokenSource {
  private readonly seq: number[];
  constructor(private readonly lm: CausalLM, private readonly sampler: Sampler, prompt: readonly number[], private logits: Float32Array | null) {
    this.seq = [...prompt];
  }

  async next(): Promise<number[]> {
    const logits = this.logits ?? await this.lm.step(this.seq[this.seq.length - 1]);
    this.logits = null;
    const id = this.sampler.sample(logits);
    this.seq.push(id);
    return [id];
  }
}

/**
 * Greedy decoding on a WebGPU LLM runner with steps in flight (WebGpuLlm.greedyStream): each step's argmax feeds the
 * next step on the GPU and comes back as 4 bytes while the following step runs, so the GPU does not wait for the host
 * between tokens. The first token comes from the prefill's logits; where the cache would fill before `remaining`, the
 * stream stops there and the next token is asked of the model as PlainSource would (which reports the full cache).
 */
class GreedyStreamSource implements TokenSource {
  private stream: GreedyStream | null = null;
  private last: number;
  private left = 0;
  private first: number | null;

  constructor(private readonly lm: CausalLM, private readonly runner: StreamingRunner, private readonly sampler: Sampler,
    prompt: readonly number[], logits: Float32Array) {
    this.last = prompt[prompt.length - 1];
    this.first = sampler.sample(logits);
  }

  async next(remaining: number): Promise<number[]> {
    if (this.first !== null) { this.last = this.first; this.first = null; return [this.last]; }
    if (!this.stream) {
      const room = this.runner.capacity - this.runner.length;
      if (room < 1) { this.last = this.sampler.sample(await this.lm.step(this.last)); return [this.last]; }
      this.left = Math.min(remaining, room);
      this.stream = this.runner.greedyStream(this.last, this.left);
    }
    this.last = await this.stream.next();
    if (--this.left === 0) await this.close();
    return [this.last];
  }

  async close(): Promise<void> {
    const s = this.stream;
    this.stream = null;
    await s?.close();
  }
}

/** A runner that streams greedy ids with steps in flight (WebGpuLlm.greedyStream). */
interface StreamingRunner extends LlmRunner {
  greedyStream(id: number, max: number, depth?: number): GreedyStream;
}

function streamingRunner(lm: CausalLM): StreamingRunner | null {
  if (!(lm instanceof LlmCausalLM)) return null;
  const r = lm.runner as Partial<StreamingRunner>;
  return r.backend === 'webgpu' && typeof r.greedyStream === 'function' ? (r as StreamingRunner) : null;
}

/** Tokens of context a draft re-reads after a run without it longer than this (adaptive drafting). */
const REBASE = 64;

/**
 * Speculative decoding. The first token comes from the target's prefill. Then each round: the draft catches up on the
 * tokens it has not seen and proposes k tokens; the target runs its pending token and the k proposals in one batch
 * (k + 1 rows of logits); the proposals are accepted left to right by the rejection rule until one is replaced; if
 * all pass, the last row gives a bonus token. Both caches are truncated to the accepted prefix. The newest token is
 * in neither cache (as in plain decoding), so a round ending at maxTokens runs nothing it does not need.
 */
class SpeculativeSource implements TokenSource {
  private readonly seq: number[];
  private rounds = 0;
  private drafted = 0;
  private accepted = 0;
  private readonly vocab: number;
  private readonly governor: DraftGovernor | null;
  /** The governor's counts when this generation began (it may carry what earlier generations measured). */
  private readonly plainBefore: number;
  private readonly switchesBefore: number;
  /** Greedy tokens without the draft on a WebGPU runner: a stream with steps in flight, and the ids it has left. */
  private stream: GreedyStream | null = null;
  private streamLeft = 0;
  /** Time and tokens of the current call, or of the stream so far (recorded when it ends). */
  private timed = { ms: 0, tokens: 0 };
  /** The draft's cache holds seq[draftBase …] (adaptive drafting rebases it after long runs without it). */
  private draftBase = 0;
  /** Index in seq of the first token the draft has not seen. */
  private drafted0(): number { return this.draftBase + this.draft.pastLength; }

  constructor(private readonly target: CausalLM, private readonly draft: CausalLM, private readonly sampler: Sampler,
    prompt: readonly number[], private logits: Float32Array | null, private readonly k: number, governor: DraftGovernor | null = null) {
    this.seq = [...prompt];
    this.vocab = logits!.length;
    this.governor = governor;
    this.plainBefore = governor?.plainTokens ?? 0;
    this.switchesBefore = governor?.switches ?? 0;
  }

  stats(): SpeculativeStats {
    const g = this.governor;
    return {
      draftTokens: this.k, rounds: this.rounds, drafted: this.drafted, accepted: this.accepted, acceptanceRate: this.drafted ? this.accepted / this.drafted : 0,
      ...(g ? { plainTokens: g.plainTokens - this.plainBefore, switches: g.switches - this.switchesBefore } : {}),
    };
  }

  async next(remaining: number): Promise<number[]> {
    const s = this.sampler, seq = this.seq;
    if (this.logits) {
      const id = s.sample(this.logits);
      this.logits = null;
      seq.push(id);
      return [id];
    }
    const g = this.governor;
    if (!g) return this.round(remaining);
    // After tokens made without it, the draft first catches up on them: a cost of the switch, not of the tokens
    // drafting makes, so it is left out of the call's time.
    const backlog = seq.length - 1 - this.drafted0();
    if (g.mode === 'draft' && !this.stream && backlog > 1) {
      // A long backlog is not worth reading: the draft starts over on the last REBASE tokens (it only proposes; the
      // target checks every proposal whatever context the draft had).
      if (backlog > REBASE) { await this.draft.truncate(0); this.draftBase = seq.length - 1 - REBASE; }
      await this.draft.forward(seq.slice(this.drafted0(), -1), false);
    }
    const way = this.stream ? 'plain' : g.mode; // a stream runs to its end (its length was this way's turn)
    const t0 = performance.now();
    const out = way === 'draft' ? await this.round(remaining) : await this.plain(Math.min(remaining, g.turn('plain')));
    // A stream is measured whole: its first token waits for the pipeline to fill and its last for it to drain.
    this.timed.ms += performance.now() - t0;
    this.timed.tokens += out.length;
    if (!this.stream) { g.record(way, this.timed.ms, this.timed.tokens); this.timed = { ms: 0, tokens: 0 }; }
    return out;
  }

  async close(): Promise<void> {
    const st = this.stream;
    this.stream = null;
    await st?.close();
  }

  /**
   * A token without the draft, `n` of them to come this way: on a WebGPU runner (greedy) from a stream of n with steps
   * in flight, opened by the first (as plain generate() makes them; a step each would pay a read-back each), else a
   * step. One token a call, so that a stop ends the stream where it falls.
   */
  private async plain(n: number): Promise<number[]> {
    const seq = this.seq;
    if (!this.stream) {
      const pending = seq.slice(this.target.pastLength);
      const runner = this.sampler.greedy && pending.length === 1 && n > 1 ? streamingRunner(this.target) : null;
      if (runner && runner.capacity - runner.length >= n) {
        this.stream = runner.greedyStream(pending[0], n);
        this.streamLeft = n;
      } else {
        const id = this.sampler.sample(await this.target.forward(pending, false));
        seq.push(id);
        return [id];
      }
    }
    const id = await this.stream.next();
    if (--this.streamLeft === 0) await this.close();
    seq.push(id);
    return [id];
  }

  /** A round with the draft: k proposals checked in one target run. */
  private async round(remaining: number): Promise<number[]> {
    const s = this.sampler, seq = this.seq, V = this.vocab;
    // Room: the round yields at most k + 1 tokens; the target caches seq + k positions, the draft seq + k − 1.
    let k = Math.min(this.k, remaining - 1);
    if (this.target.capacity !== undefined) k = Math.min(k, this.target.capacity - seq.length);
    if (this.draft.capacity !== undefined) k = Math.min(k, this.draft.capacity - (seq.length - this.draftBase) + 1);
    const pending = seq.slice(this.target.pastLength);
    if (k < 1) {
      const id = s.sample(await this.target.forward(pending, false));
      seq.push(id);
      return [id];
    }
    const gpu = s.greedy ? gpuPair(this.target, this.draft) : null;
    if (gpu) {
      // Greedy on one GPU: the draft's steps chain there and the round reads back once (WebGpuLlm.speculateGreedy).
      const r = await gpu.target.speculateGreedy(gpu.draft, pending, seq.slice(this.drafted0()), k);
      let n = 0;
      while (n < k && r.proposals[n] === r.argmax[pending.length - 1 + n]) n++;
      return this.settle(k, n, [...r.proposals.slice(0, n), r.argmax[pending.length - 1 + n]]);
    }
    const proposals: number[] = [], qs: TokenDistribution[] = [];
    let dl = await this.draft.forward(seq.slice(this.drafted0()), false);
    for (let j = 0; j < k; j++) {
      const q = s.distribution(dl);
      const d = s.draw(q);
      proposals.push(d);
      qs.push(q);
      if (j < k - 1) dl = await this.draft.step(d);
    }
    const rows = await this.target.forward([...pending, ...proposals], true);
    const first = rows.length / V - (k + 1);
    const row = (j: number) => rows.subarray((first + j) * V, (first + j + 1) * V);
    const out: number[] = [];
    let n = 0;
    for (; n < k; n++) {
      const v = verifyDraftToken(s.distribution(row(n)), qs[n], proposals[n], () => s.uniform());
      out.push(v.id);
      if (!v.accepted) break;
    }
    if (n === k) out.push(s.draw(s.distribution(row(k))));
    return this.settle(k, n, out);
  }

  /** Ends a round in which n of k proposals were accepted: both caches keep the accepted prefix; `out` joins seq. */
  private async settle(k: number, n: number, out: number[]): Promise<number[]> {
    const keep = this.seq.length + n;
    await this.target.truncate(keep);
    await this.draft.truncate(Math.min(this.draft.pastLength, keep - this.draftBase));
    this.rounds++;
    this.drafted += k;
    this.accepted += n;
    this.seq.push(...out);
    return out;
  }
}

/**
 * Whether to draft, by measurement. Each call (a round with the draft, or plain tokens) is timed, and each way keeps
 * moving averages (weight BETA a call) of its ms and of its tokens a call: its cost is their ratio, so a round that
 * made one token weighs as the time it took, not as a ratio. The cheaper way runs; each time `spacing` tokens have
 * gone its way, the other way runs for its PROBE tokens, so both are measured all along and under the same load (a
 * machine that slows down slows both; long windows taken at different times are fooled by that). While one way
 * stays cheaper by more than MARGIN, the spacing doubles up to MAX_SPACING tokens; otherwise it returns to SPACING.
 */
export class DraftGovernor {
  static readonly SPACING = 32;
  static readonly MAX_SPACING = 192;
  /**
   * Tokens a probe takes: draft rounds vary with what is accepted, plain steps hardly vary; a stream of plain tokens
   * (WebGPU) pays to fill its pipeline, so it is probed longer.
   */
  static readonly PROBE = { draft: 8, plain: 3, stream: 16 } as const;
  static readonly MARGIN = 1.2;
  static readonly BETA = 0.2;
  plainTokens = 0;
  switches = 0;
  private readonly ms = { draft: NaN, plain: NaN };
  private readonly tokens = { draft: NaN, plain: NaN };
  private best: 'draft' | 'plain' = 'draft';
  private since = 0;
  private probe = 0;
  private spacing = DraftGovernor.SPACING;
  private last: 'draft' | 'plain' | null = null;
  private readonly probeOf: { draft: number; plain: number };

  /** streams: plain tokens come from a stream with steps in flight (WebGPU). */
  constructor(opts: { streams?: boolean } = {}) {
    this.probeOf = { draft: DraftGovernor.PROBE.draft, plain: opts.streams ? DraftGovernor.PROBE.stream : DraftGovernor.PROBE.plain };
  }

  /** ms a token of a way (NaN before its first call). */
  cost(way: 'draft' | 'plain'): number { return this.ms[way] / this.tokens[way]; }

  /** The way the next call takes. */
  get mode(): 'draft' | 'plain' {
    const other = this.best === 'draft' ? 'plain' : 'draft';
    if (Number.isNaN(this.cost(this.best))) return this.best;
    if (Number.isNaN(this.cost(other)) || this.probe > 0 || this.since >= this.spacing) return other;
    return this.best;
  }

  /** Tokens a call of `way` may make: the rest of its turn (a stream of plain tokens is cheaper the longer it runs). */
  turn(way: 'draft' | 'plain'): number {
    if (way !== this.best) return this.probe || this.probeOf[way];
    return Math.max(1, this.spacing - this.since);
  }

  /** ms and tokens of one call made the way `mode` said. */
  record(way: 'draft' | 'plain', ms: number, tokens: number): void {
    const avg = (m: Record<'draft' | 'plain', number>, v: number) => { m[way] = Number.isNaN(m[way]) ? v : m[way] + DraftGovernor.BETA * (v - m[way]); };
    avg(this.ms, ms);
    avg(this.tokens, tokens);
    if (way === 'plain') this.plainTokens += tokens;
    if (this.last !== null && way !== this.last) this.switches++;
    this.last = way;
    if (way === this.best) { this.since += tokens; return; }
    // A call of the other way: a probe of PROBE tokens in all, then compare.
    if (this.probe === 0) this.probe = this.probeOf[way];
    this.probe = Math.max(0, this.probe - tokens);
    if (this.probe > 0) return;
    this.since = 0;
    const d = this.cost('draft'), p = this.cost('plain');
    if (Number.isNaN(d) || Number.isNaN(p)) return;
    const best = d <= p ? 'draft' : 'plain';
    const clear = Math.max(d, p) > DraftGovernor.MARGIN * Math.min(d, p);
    this.spacing = clear && best === this.best ? Math.min(DraftGovernor.MAX_SPACING, 2 * this.spacing) : DraftGovernor.SPACING;
    this.best = best;
  }
}

/** A runner that can do a greedy speculative round on its GPU with a draft runner (WebGpuLlm.speculateGreedy). */
interface GpuSpeculator extends LlmRunner {
  speculateGreedy(draft: LlmRunner, ids: readonly number[], draftIds: readonly number[], k: number): Promise<{ proposals: number[]; argmax: number[] }>;
}

/** The target's and the draft's runners where both are WebGPU LLM runners (one device: checked by the round). */
function gpuPair(target: CausalLM, draft: CausalLM): { target: GpuSpeculator; draft: LlmRunner } | null {
  if (!(target instanceof LlmCausalLM && draft instanceof LlmCausalLM)) return null;
  const t = target.runner as Partial<GpuSpeculator>;
  if (t.backend !== 'webgpu' || draft.runner.backend !== 'webgpu' || typeof t.speculateGreedy !== 'function') return null;
  return { target: t as GpuSpeculator, draft: draft.runner };
}

/**
 * Holds back text that might be the start of a stop string and cuts the stream before the first stop string found.
 */
class StopText {
  private held = '';
  constructor(private readonly stops: readonly string[]) {}

  feed(text: string, last: boolean): { text: string; stopped: boolean } {
    const s = this.held + text;
    let cut = -1;
    for (const stop of this.stops) {
      const at = s.indexOf(stop);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) { this.held = ''; return { text: s.slice(0, cut), stopped: true }; }
    if (last) { this.held = ''; return { text: s, stopped: false }; }
    // The longest end of s that begins some stop string waits for the next token.
    let keep = 0;
    for (const stop of this.stops) {
      for (let k = Math.min(stop.length - 1, s.length); k > keep; k--) if (s.endsWith(stop.slice(0, k))) { keep = k; break; }
    }
    this.held = s.slice(s.length - keep);
    return { text: s.slice(0, s.length - keep), stopped: false };
  }
}
