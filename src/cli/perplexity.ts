// `webjit perplexity MODEL --text FILE --tokenizer FILE`: held-out perplexity of an LLM (a Hugging Face Llama folder
// or a webjit file) on webjit's LLM runtime, optionally quantized on the fly to compare precisions on equal terms.
import fs from 'node:fs/promises';
import { InputError } from '../errors.js';
import { activationsNote } from './generate.js';
import { TextTokenizer } from '../generate/tokenizer.js';
import { activationsOf, createLlm, type LlmBackend } from '../llm/index.js';
import { loadLlm } from '../llm/model_io.js';
import { perplexity } from '../llm/perplexity.js';
import { quantizeRtn } from '../llm/quantize.js';

export interface PerplexityArgs {
  text: string;
  tokenizer: string;
  backend: LlmBackend;
  threads?: string;
  quant?: string;
  window: string;
  windows?: string;
  chunk?: string;
  activations?: 'f32' | 'int8';
  json?: boolean;
}

export async function perplexityCommand(model: string, a: PerplexityArgs): Promise<number> {
  const tok = await TextTokenizer.fromFile(a.tokenizer);
  const ids = tok.encode(await fs.readFile(a.text, 'utf8'), { addSpecialTokens: false });
  const loaded = await loadLlm(model);
  const rows: { quant: string; activations: string; perplexity: number; tokens: number; seconds: number }[] = [];
  for (const q of (a.quant ?? 'as-stored').split(',')) {
    if (!['as-stored', 'q4', 'q8'].includes(q)) throw new InputError(`--quant ${q}: use q4, q8 (comma-separated), or leave it out`);
    const w = q === 'as-stored' ? loaded : quantizeRtn(loaded, { bits: q === 'q4' ? 4 : 8 });
    const window = Math.min(Number(a.window), w.config.maxPositions);
    const r = await createLlm(w, { backend: a.backend, threads: a.threads ? Number(a.threads) : undefined, capacity: window, activations: a.activations });
    const t0 = performance.now();
    try {
      const p = await perplexity(r, ids, { window, maxWindows: a.windows ? Number(a.windows) : undefined, bos: w.config.bos ?? tok.bosTokenId, chunk: a.chunk ? Number(a.chunk) : undefined });
      rows.push({ quant: w.quant, activations: activationsOf(r), perplexity: p.perplexity, tokens: p.tokens, seconds: (performance.now() - t0) / 1000 });
    } finally {
      await r.release();
    }
    const last = rows[rows.length - 1];
    if (!a.json) console.log(`${model} ${last.quant}${activationsNote(a.activations, r)}: perplexity ${last.perplexity.toFixed(3)} over ${last.tokens} tokens (windows of ${window}), ${last.seconds.toFixed(1)} s on ${a.backend}`);
  }
  if (a.json) console.log(JSON.stringify({ model, backend: a.backend, rows }));
  return 0;
}
