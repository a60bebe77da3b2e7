// Text generation: a prompt in, tokens out as an async iterator (id and text), with stop strings and ids, a token
// limit, seeded sampling, and prefill/decode speeds at the end.
import { InputError } from '../errors.js';
import type { ModelSource } from '../onnx/load.js';
import type { SessionOptions } from '../session.js';
import { CausalDecoder } from './decoder.js';
import { checkSamplingOptions, Sampler, type SamplingOptions } from './sampler.js';
import { TextStreamer, TextTokenizer } from './tokenizer.js';

export interface GenerateOptions extends SamplingOptions {
  /** Most tokens to generate (default 64). */
  maxTokens?: number;
  /**
   * Generation ends at any of these: a string (needs a tokenizer; the text before it is the last emitted) or a token
   * id (not emitted). The tokenizer's EOS token always stops, unless `ignoreEos`.
   */
  stop?: readonly (string | number)[];
  /** Keep going past the tokenizer's EOS token (default false). */
  ignoreEos?: boolean;
  /** Add the tokenizer's special tokens (BOS) to a text prompt (default true). */
  addSpecialTokens?: boolean;
}

export interface GeneratedToken {
  /** The token id the sampler chose. */
  id: number;
  /** Its position among the generated tokens (0 is the first). */
  index: number;
  /** The text this token completed ('' while a character or a possible stop string is incomplete, or without a tokenizer). */
  text: string;
}

export interface GenerationStats {
  promptTokens: number;
  /** Tokens the model produced, a stop token included. */
  generatedTokens: number;
  /** From the call to the first token: prefill and the first sample. */
  timeToFirstTokenMs: number;
  prefillMs: number;
  prefillTokensPerSec: number;
  /** Time of the decode steps (one per token after the first). */
  decodeMs: number;
  decodeTokensPerSec: number;
  stopReason: 'maxTokens' | 'eos' | 'stopToken' | 'stopString';
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
  private started = false;

  constructor(private readonly run: (g: Generation) => AsyncGenerator<GeneratedToken>) {}

  [Symbol.asyncIterator](): AsyncIterator<GeneratedToken> {
    if (this.started) throw new InputError('a Generation can be iterated once', {}, 'call generate() again');
    this.started = true;
    return this.run(this);
  }

  /** Runs to the end; returns the text (or the ids joined by spaces without a tokenizer). */
  async all(): Promise<string> {
    for await (const _ of this) { /* drain */ }
    return this.text;
  }
}

/** A decoder and, optionally, its tokenizer: generate() streams tokens from a prompt. */
export class TextGenerator {
  private busy = false;
  constructor(readonly decoder: CausalDecoder, readonly tokenizer?: TextTokenizer) {}

  static async create(model: ModelSource, opts: SessionOptions & { tokenizer?: TextTokenizer } = {}): Promise<TextGenerator> {
    const { tokenizer, ...sessionOpts } = opts;
    return new TextGenerator(await CausalDecoder.create(model, { backend: 'wasm', ...sessionOpts }), tokenizer);
  }

  /** Generates from `prompt` (text, with a tokenizer, or token ids). Validation errors are thrown here, not mid-stream. */
  generate(prompt: string | readonly number[], opts: GenerateOptions = {}): Generation {
    const maxTokens = opts.maxTokens ?? 64;
    if (!(Number.isInteger(maxTokens) && maxTokens >= 1)) throw new InputError(`maxTokens must be an integer ≥ 1, got ${maxTokens}`);
    checkSamplingOptions(opts);
    const tok = this.tokenizer;
    if (typeof prompt === 'string' && !tok) throw new InputError('a text prompt needs a tokenizer', {}, 'pass { tokenizer } to TextGenerator.create, or give token ids');
    const ids = typeof prompt === 'string' ? tok!.encode(prompt, { addSpecialTokens: opts.addSpecialTokens }) : [...prompt];
    const stopStrings = (opts.stop ?? []).filter((s): s is string => typeof s === 'string');
    const stopIds = new Set((opts.stop ?? []).filter((s): s is number => typeof s === 'number'));
    if (stopStrings.length && !tok) throw new InputError('stop strings need a tokenizer', {}, 'pass { tokenizer }, or stop on token ids');
    if (stopStrings.some((s) => s === '')) throw new InputError('a stop string is empty');
    for (const id of stopIds) if (!Number.isInteger(id) || id < 0) throw new InputError(`stop token id ${id} is not a token id`);
    const eos = tok && !opts.ignoreEos ? tok.eosTokenId : undefined;
    const sampler = new Sampler(opts);
    const self = this;

    return new Generation(async function* (g: Generation): AsyncGenerator<GeneratedToken> {
      if (self.busy) throw new InputError('this TextGenerator is already generating', {}, 'finish the other generation first, or make a second TextGenerator');
      self.busy = true;
      try {
        const streamer = tok ? new TextStreamer(tok) : null;
        const stopText = new StopText(stopStrings);
        const t0 = performance.now();
        let logits = await self.decoder.prefill(ids);
        const prefillMs = performance.now() - t0;
        let tFirst = 0, tLast = 0, produced = 0;
        let reason: GenerationStats['stopReason'] = 'maxTokens';
        for (let i = 0; i < maxTokens; i++) {
          const id = sampler.sample(logits);
          produced++;
          const now = performance.now();
          if (i === 0) tFirst = now;
          tLast = now;
          if (stopIds.has(id) || id === eos) { reason = stopIds.has(id) ? 'stopToken' : 'eos'; break; }
          g.ids.push(id);
          let text = streamer ? streamer.push(id) : '';
          let stopped = false;
          if (i === maxTokens - 1 && streamer) text += streamer.flush();
          if (stopStrings.length) ({ text, stopped } = stopText.feed(text, i === maxTokens - 1));
          g.text += text;
          yield { id, index: i, text };
          if (stopped) { reason = 'stopString'; break; }
          if (i < maxTokens - 1) logits = await self.decoder.step(id);
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
          prefillTokensPerSec: ids.length / (prefillMs / 1000),
          decodeMs,
          decodeTokensPerSec: produced > 1 ? (produced - 1) / (decodeMs / 1000) : 0,
          stopReason: reason,
        };
      } finally {
        self.busy = false;
      }
    });
  }

  async release(): Promise<void> {
    await this.decoder.release();
  }
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
