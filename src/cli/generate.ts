// `webjit generate`: text generation from an ONNX decoder with a KV cache; tokens are printed as they come, then the
// prefill and decode speeds.
import { InputError, UnsupportedError } from '../errors.js';
import { TextGenerator, type GenerationStats } from '../generate/generate.js';
import { TextTokenizer } from '../generate/tokenizer.js';
import type { BackendName } from '../session.js';

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
  draft?: string;
}

const parseIds = (s: string, what: string): number[] => s.split(',').map((x) => x.trim()).filter(Boolean).map((x) => {
  const v = Number(x);
  if (!Number.isInteger(v) || v < 0) throw new InputError(`${what} expects comma-separated token ids, got '${x}'`);
  return v;
});

export async function generateCommand(model: string, a: GenerateArgs): Promise<number> {
  if (a.quant !== undefined) throw new UnsupportedError('--quant is not implemented yet (issue 8)', {}, 'leave it out: weights run in the precision the model stores');
  if (a.draft !== undefined) throw new UnsupportedError('--draft (speculative decoding) is not implemented yet (issue 8)', {}, 'leave it out');
  if ((a.prompt === undefined) === (a.promptIds === undefined)) throw new InputError('give exactly one of --prompt TEXT (with --tokenizer) or --prompt-ids 1,2,3');
  if (a.prompt !== undefined && !a.tokenizer) throw new InputError('--prompt needs --tokenizer FILE (a tokenizer.json)', {}, 'or pass token ids with --prompt-ids');
  const log = (s: string) => { if (!a.json) console.error(s); };
  const tokenizer = a.tokenizer ? await TextTokenizer.fromFile(a.tokenizer) : undefined;
  const t0 = performance.now();
  const gen = await TextGenerator.create(model, { backend: a.backend, threads: a.threads, tokenizer });
  try {
    log(`${model} loaded on ${a.backend} in ${(performance.now() - t0).toFixed(0)} ms (${gen.decoder.layout.layers} layers, ${gen.decoder.layout.heads} heads of ${gen.decoder.layout.headDim})`);
    const stopIds = a.stopId.flatMap((s) => parseIds(s, '--stop-id'));
    const prompt = a.prompt ?? parseIds(a.promptIds!, '--prompt-ids');
    const g = gen.generate(prompt, {
      maxTokens: a.maxTokens, temperature: a.temperature, topK: a.topK, topP: a.topP, seed: a.seed, stop: [...a.stop, ...stopIds], ignoreEos: a.ignoreEos,
    });
    for await (const t of g) {
      if (a.json) continue;
      process.stdout.write(tokenizer ? t.text : `${t.index ? ' ' : ''}${t.id}`);
    }
    const s = g.stats!;
    if (a.json) {
      console.log(JSON.stringify({ backend: a.backend, ids: g.ids, text: tokenizer ? g.text : undefined, ...statsJson(s) }));
    } else {
      process.stdout.write('\n');
      console.log(statsLine(s));
    }
  } finally {
    await gen.release();
  }
  return 0;
}

export function statsLine(s: GenerationStats): string {
  return `prefill: ${s.promptTokens} tokens in ${s.prefillMs.toFixed(1)} ms (${s.prefillTokensPerSec.toFixed(1)} tokens/s); `
    + `decode: ${Math.max(0, s.generatedTokens - 1)} tokens in ${s.decodeMs.toFixed(1)} ms (${s.decodeTokensPerSec.toFixed(1)} tokens/s); `
    + `first token after ${s.timeToFirstTokenMs.toFixed(1)} ms; stop: ${s.stopReason}`;
}

const r3 = (x: number) => Math.round(x * 1000) / 1000;

function statsJson(s: GenerationStats) {
  return {
    prompt_tokens: s.promptTokens, generated_tokens: s.generatedTokens, time_to_first_token_ms: r3(s.timeToFirstTokenMs),
    prefill_ms: r3(s.prefillMs), prefill_tokens_per_s: r3(s.prefillTokensPerSec), decode_ms: r3(s.decodeMs),
    decode_tokens_per_s: r3(s.decodeTokensPerSec), stop_reason: s.stopReason,
  };
}
