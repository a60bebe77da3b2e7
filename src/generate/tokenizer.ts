// Text ↔ token ids through a Hugging Face tokenizer.json (the @huggingface/tokenizers library), chat messages → prompt
// through the tokenizer's Jinja chat template (@huggingface/jinja, as transformers.js renders it), and an incremental
// detokenizer that streams only complete text (a character split over byte tokens waits for its last byte).
import { Template } from '@huggingface/jinja';
import { Tokenizer } from '@huggingface/tokenizers';
import { InputError } from '../errors.js';
import { importNode } from '../util/node.js';

const isNode = typeof process !== 'undefined' && !!process.versions?.node;
// Common end-of-sequence tokens, tried when tokenizer_config.json does not name one.
const EOS_GUESSES = ['</s>', '<|endoftext|>', '<|im_end|>', '<|eot_id|>', '<|end_of_text|>', '<eos>', '<|end|>'];
/**
 * Tokens that end a turn in chat templates (ChatML's, Llama 3's two, Phi-3's, Gemma's, OpenChat's): a chat stops at
 * those its rendered prompt contains (endOfTurnIds), for configs whose EOS is the end of the text instead.
 */
const END_OF_TURN = ['<|im_end|>', '<|eot_id|>', '<|eom_id|>', '<|end|>', '<end_of_turn>', '<|end_of_turn|>'];

type TokenConfig = string | { content?: string } | null | undefined;

/** One message of a chat. Templates may read more fields (tool_calls, reasoning_content, name…): they are passed on. */
export interface ChatMessage {
  role: string;
  content: string;
  [field: string]: unknown;
}

export interface ChatTemplateOptions {
  /** End with the opening of the assistant's turn, so that the model writes the reply (default true). */
  addGenerationPrompt?: boolean;
  /**
   * A Jinja template to use instead of the tokenizer's, or the name of one of the tokenizer's named templates (a
   * chat_template list in tokenizer_config.json, additional_chat_templates/NAME.jinja), as transformers' `chat_template`.
   */
  template?: string;
  /** More template variables, e.g. Qwen3's `{ enable_thinking: false }` or `{ tools: [...] }`. */
  variables?: Record<string, unknown>;
}

/**
 * The chat templates of a tokenizer config's `chat_template`: a string (named 'default'), or transformers' list of
 * `{ name, template }`.
 */
function chatTemplatesOf(v: unknown, where: string): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (typeof v === 'string') return { default: v };
  if (Array.isArray(v) && v.every((t) => typeof t?.name === 'string' && typeof t?.template === 'string')) {
    return Object.fromEntries((v as { name: string; template: string }[]).map((t) => [t.name, t.template]));
  }
  throw new InputError(`${where}: chat_template is neither a string nor a list of { name, template }`, {}, 'fix the tokenizer config, or pass a template of your own');
}

export class TextTokenizer {
  private readonly tok: Tokenizer;
  /** The end-of-sequence token id, when the tokenizer has one. */
  readonly eosTokenId: number | undefined;
  /** The beginning-of-sequence token id, when the tokenizer has one. */
  readonly bosTokenId: number | undefined;
  /**
   * The config's chat templates by name (Jinja text); 'default' is the one applyChatTemplate() uses. Empty when the
   * tokenizer has none (base models, older configs).
   */
  readonly chatTemplates: Readonly<Record<string, string>>;
  /** The special tokens a chat template sees as variables (bos_token, eos_token: '' where the config has none). */
  private readonly specialTokens: Record<string, string>;
  /** Parsed templates by their text: each is parsed once. */
  private readonly parsed = new Map<string, Template>();

  /**
   * @param tokenizerJson the parsed tokenizer.json
   * @param config the parsed tokenizer_config.json (names the BOS/EOS tokens; optional)
   */
  constructor(tokenizerJson: object, config: object = {}) {
    this.chatTemplates = chatTemplatesOf((config as { chat_template?: unknown }).chat_template, 'tokenizer_config.json');
    try {
      this.tok = new Tokenizer(tokenizerJson, config);
    } catch (e) {
      throw new InputError(`the tokenizer.json could not be loaded: ${(e as Error).message}`, {}, "pass a Hugging Face tokenizer.json (the 'tokenizers' format)");
    }
    const c = config as Record<string, TokenConfig>;
    // A config's token: its text, or an AddedToken object's content.
    const str = (t: TokenConfig) => (typeof t === 'string' ? t : typeof t?.content === 'string' ? t.content : undefined);
    const idOf = (t: TokenConfig) => {
      const s = str(t);
      return s ? this.tok.token_to_id(s) : undefined;
    };
    this.eosTokenId = idOf(c.eos_token) ?? EOS_GUESSES.map((s) => this.tok.token_to_id(s)).find((i) => i !== undefined);
    // A config that names no BOS token (Qwen's: bos_token null) has none; '<s>' is then an ordinary piece of the
    // vocabulary at best. Only a config that does not say is given the SentencePiece guess.
    this.bosTokenId = 'bos_token' in c ? idOf(c.bos_token) : this.tok.token_to_id('<s>');
    // As transformers hands a template its special tokens map; bos_token and eos_token are always strings.
    this.specialTokens = { bos_token: str(c.bos_token) ?? '', eos_token: str(c.eos_token) ?? '' };
    for (const k of ['unk_token', 'pad_token']) { const v = str(c[k]); if (v !== undefined) this.specialTokens[k] = v; }
  }

  /**
   * Loads tokenizer.json from a path (Node), and tokenizer_config.json beside it when present. A chat template in
   * chat_template.jinja beside it, else in chat_template.json (`{ "chat_template": … }`), wins over the config's, as in
   * transformers; additional_chat_templates/NAME.jinja add named ones.
   */
  static async fromFile(file: string): Promise<TextTokenizer> {
    if (!isNode) throw new InputError('loading a tokenizer from a path needs Node.js; in a browser pass the parsed JSON to new TextTokenizer()');
    const fs = await importNode<typeof import('node:fs')>('node:fs');
    const path = await importNode<typeof import('node:path')>('node:path');
    const read = (f: string) => {
      try {
        return JSON.parse(fs.readFileSync(f, 'utf8')) as object;
      } catch (e) {
        throw new InputError(`cannot read tokenizer file '${f}': ${(e as Error).message}`, {}, 'pass the path of a tokenizer.json');
      }
    };
    const dir = path.dirname(file);
    const cfgFile = path.join(dir, 'tokenizer_config.json');
    const config = (fs.existsSync(cfgFile) ? read(cfgFile) : {}) as Record<string, unknown>;
    const text = (f: string) => {
      try {
        return fs.readFileSync(f, 'utf8');
      } catch (e) {
        throw new InputError(`cannot read chat template file '${f}': ${(e as Error).message}`);
      }
    };
    const jinja = path.join(dir, 'chat_template.jinja'), json = path.join(dir, 'chat_template.json');
    let templates = chatTemplatesOf(config.chat_template, cfgFile);
    if (fs.existsSync(jinja)) templates = { default: text(jinja) };
    else if (fs.existsSync(json)) templates = chatTemplatesOf((read(json) as { chat_template?: unknown }).chat_template, json);
    const extra = path.join(dir, 'additional_chat_templates');
    if (fs.existsSync(extra) && fs.statSync(extra).isDirectory()) {
      for (const n of fs.readdirSync(extra).sort()) if (n.endsWith('.jinja')) templates[n.slice(0, -6)] ??= text(path.join(extra, n));
    }
    const names = Object.keys(templates);
    const chat_template = names.length === 0 ? undefined
      : names.length === 1 && names[0] === 'default' ? templates.default : names.map((name) => ({ name, template: templates[name] }));
    return new TextTokenizer(read(file), { ...config, chat_template });
  }

  /** Token ids of `text`; special tokens (e.g. BOS) are added as the tokenizer's post-processor says, unless turned off. */
  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    return this.tok.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }).ids;
  }

  /** The tokenizer's default chat template, when it has one. */
  get chatTemplate(): string | undefined {
    return this.chatTemplates.default;
  }

  /**
   * The prompt text of a chat: the messages rendered by the chat template (the tokenizer's, or opts.template) with the
   * variables transformers passes: messages, add_generation_prompt, bos_token, eos_token (unk_token, pad_token where
   * the config names them) and opts.variables. Errors (no template, a template that does not parse, a
   * raise_exception() in the template, malformed messages) are InputErrors.
   */
  applyChatTemplate(messages: readonly ChatMessage[], opts: ChatTemplateOptions = {}): string {
    checkMessages(messages);
    const vars = opts.variables ?? {};
    for (const k of ['messages', 'add_generation_prompt'] as const) {
      if (k in vars) throw new InputError(`the chat variable '${k}' is set by applyChatTemplate itself`, {}, k === 'messages' ? 'pass the messages as the first argument' : 'use addGenerationPrompt');
    }
    const template = this.parse(this.templateText(opts.template, vars));
    try {
      return template.render({
        ...this.specialTokens,
        ...vars,
        messages,
        add_generation_prompt: opts.addGenerationPrompt ?? true,
      });
    } catch (e) {
      // The template's own raise_exception('…') (e.g. roles that do not alternate) throws its message as it is; the
      // engine's failures (an unknown filter, a type error) come the same way.
      throw new InputError(`the chat template raised an error: ${(e as Error).message}`, {},
        "the template's own checks (e.g. roles that alternate user/assistant, a system message only first) or a construct the Jinja engine cannot run");
    }
  }

  /**
   * Token ids of a chat (applyChatTemplate), encoded without adding special tokens: the template writes BOS itself,
   * as transformers' apply_chat_template(tokenize=True) does.
   */
  encodeChat(messages: readonly ChatMessage[], opts: ChatTemplateOptions = {}): number[] {
    return this.encode(this.applyChatTemplate(messages, opts), { addSpecialTokens: false });
  }

  /** The text of the template to use: opts.template (a name of the tokenizer's templates, or Jinja text), else the default. */
  private templateText(choice: string | undefined, vars: Record<string, unknown>): string {
    const t = this.chatTemplates;
    if (choice !== undefined) return Object.hasOwn(t, choice) ? t[choice] : choice;
    // transformers: a 'tool_use' template, where there is one, when tools are passed.
    if (vars.tools !== undefined && vars.tools !== null && Object.hasOwn(t, 'tool_use')) return t.tool_use;
    if (Object.hasOwn(t, 'default')) return t.default;
    const names = Object.keys(t);
    if (names.length) {
      throw new InputError(`the tokenizer has several chat templates (${names.join(', ')}) and none is named 'default'`, {}, 'choose one by name (template option)');
    }
    throw new InputError('the tokenizer has no chat_template (tokenizer_config.json, chat_template.jinja or chat_template.json)', {},
      'pass the prompt as plain text (--prompt without --chat), or a template file (--chat-template FILE; API: the template option)');
  }

  private parse(text: string): Template {
    let t = this.parsed.get(text);
    if (!t) {
      try {
        t = new Template(text);
      } catch (e) {
        throw new InputError(`the chat template does not parse: ${(e as Error).message}`, {}, 'fix the Jinja template');
      }
      this.parsed.set(text, t);
    }
    return t;
  }

  /**
   * The ids of the end-of-turn tokens (<|im_end|>, <|eot_id|>, <|end|>, <end_of_turn>…) that a rendered chat prompt
   * contains: where a template closes turns with one, a reply ends there, whatever the config names as EOS.
   */
  endOfTurnIds(chatText: string): number[] {
    const ids: number[] = [];
    for (const t of END_OF_TURN) {
      const id = chatText.includes(t) ? this.tok.token_to_id(t) : undefined;
      if (id !== undefined) ids.push(id);
    }
    return ids;
  }

  /** Text of `ids`; special tokens are left out unless asked for. */
  decode(ids: readonly number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return '';
    return this.tok.decode([...ids], { skip_special_tokens: opts.skipSpecialTokens ?? true });
  }

  /** The token string of an id (e.g. '▁the', '<0xE4>'), or undefined outside the vocabulary. */
  idToToken(id: number): string | undefined {
    return this.tok.id_to_token(id);
  }
}

function checkMessages(messages: readonly ChatMessage[]): void {
  const hint = 'give a list of { role: string, content: string }, e.g. [{ role: "user", content: "Hello" }]';
  if (!Array.isArray(messages)) throw new InputError(`chat messages must be a list, got ${messages === null ? 'null' : typeof messages}`, {}, hint);
  if (messages.length === 0) throw new InputError('no chat messages', {}, hint);
  messages.forEach((m: unknown, i) => {
    const o = m as Record<string, unknown> | null;
    if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new InputError(`chat message ${i} is not an object: ${JSON.stringify(m)}`, {}, hint);
    if (typeof o.role !== 'string' || o.role === '') throw new InputError(`chat message ${i} has no role (a non-empty string): ${JSON.stringify(m)}`, {}, hint);
    if (typeof o.content !== 'string') throw new InputError(`chat message ${i} (${o.role}) has no content string: ${JSON.stringify(m)}`, {}, hint);
  });
}

/**
 * Turns a stream of token ids into a stream of text. Each push() returns the text that became complete; text ending in
 * an incomplete UTF-8 sequence (U+FFFD from byte tokens still to come) is held back. Decoding a window that starts
 * before the new tokens keeps tokenizers that treat a sequence's first token specially (SentencePiece's leading
 * space) consistent with decoding the whole sequence.
 */
export class TextStreamer {
  private readonly ids: number[] = [];
  private prefixOffset = 0;
  private readOffset = 0;

  constructor(private readonly tokenizer: TextTokenizer) {}

  push(id: number): string {
    this.ids.push(id);
    const prefix = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const text = this.tokenizer.decode(this.ids.slice(this.prefixOffset));
    if (text.length > prefix.length && !text.endsWith('\uFFFD') && text.startsWith(prefix)) {
      this.prefixOffset = this.readOffset;
      this.readOffset = this.ids.length;
      return text.slice(prefix.length);
    }
    return '';
  }

  /** The text still held back (an incomplete character at the end of the stream becomes U+FFFD). */
  flush(): string {
    const prefix = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const text = this.tokenizer.decode(this.ids.slice(this.prefixOffset));
    this.prefixOffset = this.readOffset = this.ids.length;
    return text.startsWith(prefix) ? text.slice(prefix.length) : '';
  }
}
