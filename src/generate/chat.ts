// A conversation over a TextGenerator: each turn renders the whole chat with the tokenizer's chat template, and the KV
// cache is kept from one turn to the next (GenerateOptions.reusePrefix), so a turn runs only the tokens that are new
// since the last one (the reply it generated, re-encoded as the template writes it, and the new user message).
import { InputError } from '../errors.js';
import type { CausalLM } from './causal_lm.js';
import type { GenerateOptions, Generation, TextGenerator } from './generate.js';
import type { ChatMessage } from './tokenizer.js';

export interface ChatSessionOptions {
  /** A system message first. */
  system?: string;
  /** A Jinja template instead of the tokenizer's, or the name of one of its named templates. */
  chatTemplate?: string;
  /** More template variables (e.g. Qwen3's { enable_thinking: false }). */
  chatVariables?: Record<string, unknown>;
}

export class ChatSession {
  /** The conversation so far: the system message, then each user message and the reply generated for it. */
  readonly messages: ChatMessage[] = [];

  constructor(readonly generator: TextGenerator<CausalLM>, private readonly opts: ChatSessionOptions = {}) {
    if (!generator.tokenizer) throw new InputError('a chat needs a tokenizer', {}, 'pass { tokenizer } to TextGenerator.create');
    if (opts.system !== undefined) this.messages.push({ role: 'system', content: opts.system });
  }

  /**
   * Sends the user's message: the reply streams from the returned Generation (its stats.reusedTokens: the positions
   * the turn took from the cache). When the iteration ends, the message and the reply (what was generated, also if the
   * consumer stopped early) join `messages`; a generation that fails leaves them as they were.
   */
  send(content: string, opts: GenerateOptions = {}): Generation {
    const user: ChatMessage = { role: 'user', content };
    const { chatTemplate, chatVariables } = this.opts;
    const g = this.generator.generate({ messages: [...this.messages, user], chatTemplate, chatVariables }, { reusePrefix: true, ...opts });
    g.onEnd((done, error) => {
      if (error === undefined) this.messages.push(user, { role: 'assistant', content: done.text });
    });
    return g;
  }
}
