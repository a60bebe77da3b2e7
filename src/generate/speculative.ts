// Speculative sampling's acceptance rule (Leviathan et al. 2023, Chen et al. 2023): a draft token x drawn from the
// draft's distribution q is kept with probability min(1, p(x)/q(x)), p being the target's; a rejected token is replaced
// by a draw from norm(max(0, p − q)). The tokens that come out are distributed as p, whatever q is.
import { pick, type TokenDistribution } from './sampler.js';

export type Verdict = { accepted: true; id: number } | { accepted: false; id: number };

/** The probability of `id` in a distribution (0 outside its support). */
export function probabilityOf(d: TokenDistribution, id: number): number {
  // An unfiltered distribution in id order (what the sampler makes without top-k/top-p) is looked up directly.
  if (id < d.ids.length && d.ids[id] === id) return d.probs[id];
  for (let i = 0; i < d.ids.length; i++) if (d.ids[i] === id) return d.probs[i];
  return 0;
}

/**
 * norm(max(0, p − q)): where the target puts more mass than the draft. Empty when p ≤ q everywhere (then p = q up to
 * rounding, and rejection had probability ~0).
 */
export function residual(p: TokenDistribution, q: TokenDistribution): TokenDistribution {
  let n = 0;
  for (const id of p.ids) n = Math.max(n, id + 1);
  const qOf = new Float64Array(n);
  for (let i = 0; i < q.ids.length; i++) if (q.ids[i] < n) qOf[q.ids[i]] = q.probs[i];
  const ids: number[] = [], probs: number[] = [];
  let sum = 0;
  for (let i = 0; i < p.ids.length; i++) {
    const r = p.probs[i] - qOf[p.ids[i]];
    if (r > 0) { ids.push(p.ids[i]); probs.push(r); sum += r; }
  }
  return { ids: Int32Array.from(ids), probs: Float64Array.from(probs, (r) => r / sum) };
}

/**
 * Checks draft token x (drawn from q) against the target's p with two numbers of the seeded stream: `uniform()` for
 * the acceptance test, and again for the replacement draw on rejection.
 */
export function verifyDraftToken(p: TokenDistribution, q: TokenDistribution, x: number, uniform: () => number): Verdict {
  const px = probabilityOf(p, x), qx = probabilityOf(q, x);
  // u < p/q, written without the division (qx > 0 for a token drawn from q; qx = 0 would accept only if px > 0).
  if (uniform() * qx < px) return { accepted: true, id: x };
  const r = residual(p, q);
  return { accepted: false, id: pick(r.ids.length ? r : p, uniform()) };
}
