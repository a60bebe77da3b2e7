// Perplexity of a decoder LLM on a token stream: non-overlapping windows, each started from an empty cache with the
// BOS token, scored on every next-token prediction inside the window (the way the trained pair's held-out figure is
// computed: windows of the training length, loss averaged over predicted tokens).
import { InputError } from '../errors.js';
import type { LlmRunner } from './types.js';

export interface PerplexityResult {
  perplexity: number;
  /** Mean negative log-likelihood per predicted token (nats). */
  nll: number;
  tokens: number;
  windows: number;
}

export interface PerplexityOptions {
  /** Tokens per window, BOS included (default 256, at most the runner's capacity). */
  window?: number;
  /** Windows to score (default: as many as the tokens fill). */
  maxWindows?: number;
  /** Prepended to each window (e.g. the BOS id); none when undefined. */
  bos?: number;
  /** Tokens per forward() call inside a window: the prefill chunk (default: the whole window). */
  chunk?: number;
}

export async function perplexity(r: LlmRunner, ids: readonly number[], o: PerplexityOptions = {}): Promise<PerplexityResult> {
  const W = Math.min(o.window ?? 256, r.capacity);
  const body = W - (o.bos !== undefined ? 1 : 0);
  if (body < 2) throw new InputError(`a perplexity window of ${W} tokens is too short`);
  const windows = Math.min(Math.floor(ids.length / body), o.maxWindows ?? Infinity);
  if (windows < 1) throw new InputError(`${ids.length} tokens do not fill one window of ${body}`, {}, 'give more text or a smaller window');
  const V = r.config.vocab;
  let nll = 0, count = 0;
  for (let w = 0; w < windows; w++) {
    const seq = [...(o.bos !== undefined ? [o.bos] : []), ...ids.slice(w * body, (w + 1) * body)];
    r.truncate(0);
    const chunk = o.chunk ?? seq.length;
    for (let s = 0; s < seq.length; s += chunk) {
      const part = seq.slice(s, s + chunk);
      const logits = await r.forward(part, true);
      for (let t = 0; t < part.length; t++) {
        const target = seq[s + t + 1];
        if (target === undefined) break;
        if (o.bos !== undefined && s + t + 1 === 0) continue;
        const row = logits.subarray(t * V, (t + 1) * V);
        let m = -Infinity;
        for (let i = 0; i < V; i++) if (row[i] > m) m = row[i];
        let sum = 0;
        for (let i = 0; i < V; i++) sum += Math.exp(row[i] - m);
        nll += Math.log(sum) + m - row[target];
        count++;
      }
    }
  }
  r.truncate(0);
  return { perplexity: Math.exp(nll / count), nll: nll / count, tokens: count, windows };
}
