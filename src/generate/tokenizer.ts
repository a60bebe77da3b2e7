// Text ↔ token ids through a Hugging Face tokenizer.json (the @huggingface/tokenizers library), and an incremental
// detokenizer that streams only complete text (a character split over byte tokens waits for its last byte).
import { Tokenizer } from '@huggingface/tokenizers';
import { InputError } from '../errors.js';
import { importNode } from '../util/node.js';

const isNode = typeof process !== 'undefined' && !!process.versions?.node;
// Common end-of-sequence tokens, tried when tokenizer_config.json does not name one.
const EOS_GUESSES = ['</s>', '<|endoftext|>', '<|im_end|>', '<|eot_id|>', '<|end_of_text|>', '<eos>', '<|end|>'];

type TokenConfig = string | { content?: string } | null | undefined;

export class TextTokenizer {
  private readonly tok: Tokenizer;
  /** The end-of-sequence token id, when the tokenizer has one. */
  readonly eosTokenId: number | undefined;
  /** The beginning-of-sequence token id, when the tokenizer has one. */
  readonly bosTokenId: number | undefined;

  /**
   * @param tokenizerJson the parsed tokenizer.json
   * @param config the parsed tokenizer_config.json (names the BOS/EOS tokens; optional)
   */
  constructor(tokenizerJson: object, config: object = {}) {
    try {
      this.tok = new Tokenizer(tokenizerJson, config);
    } catch (e) {
      throw new InputError(`the tokenizer.json could not be loaded: ${(e as Error).message}`, {}, "pass a Hugging Face tokenizer.json (the 'tokenizers' format)");
    }
    const c = config as { eos_token?: TokenConfig; bos_token?: TokenConfig };
    const idOf = (t: TokenConfig) => {
      const s = typeof t === 'string' ? t : t?.content;
      return s ? this.tok.token_to_id(s) : undefined;
    };
    this.eosTokenId = idOf(c.eos_token) ?? EOS_GUESSES.map((s) => this.tok.token_to_id(s)).find((i) => i !== undefined);
    // A config that names no BOS token (Qwen's: bos_token null) has none; '<s>' is then an ordinary piece of the
    // vocabulary at best. Only a config that does not say is given the SentencePiece guess.
    this.bosTokenId = 'bos_token' in c ? idOf(c.bos_token) : this.tok.token_to_id('<s>');
  }

  /** Loads tokenizer.json from a path (Node), and tokenizer_config.json beside it when present. */
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
    const cfgFile = path.join(path.dirname(file), 'tokenizer_config.json');
    return new TextTokenizer(read(file), fs.existsSync(cfgFile) ? read(cfgFile) : {});
  }

  /** Token ids of `text`; special tokens (e.g. BOS) are added as the tokenizer's post-processor says, unless turned off. */
  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    return this.tok.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }).ids;
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
