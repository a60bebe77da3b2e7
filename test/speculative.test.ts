// Speculative decoding: the rejection rule's output is distributed as the target's (and a wrong rule is caught).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { argmax, pick, Sampler, tokenDistribution, type SamplingOptions, type TokenDistribution } from '../src/generate/sampler.js';
import { probabilityOf, residual, verifyDraftToken, type Verdict } from '../src/generate/speculative.js';
import { mulberry32 } from '../src/util/random.js';

/** Chi-square's critical value at p = 0.001 (Wilson–Hilferty). */
const chiCritical = (df: number) => df * (1 - 2 / (9 * df) + 3.09 * Math.sqrt(2 / (9 * df))) ** 3;

/** Chi-square of counts against probabilities, cells with expected count < 5 pooled; Infinity if an impossible cell was hit. */
function chiSquare(counts: ArrayLike<number>, probs: ArrayLike<number>, n: number): { chi: number; df: number } {
  let chi = 0, cells = 0, poolE = 0, poolO = 0;
  for (let i = 0; i < probs.length; i++) {
    const e = n * probs[i];
    if (e === 0 && counts[i] > 0) return { chi: Infinity, df: 1 };
    if (e < 5) { poolE += e; poolO += counts[i]; continue; }
    chi += (counts[i] - e) ** 2 / e;
    cells++;
  }
  if (poolE > 0) { chi += (poolO - poolE) ** 2 / poolE; cells++; }
  return { chi, df: Math.max(1, cells - 1) };
}

const dense = (d: TokenDistribution, V: number) => { const a = new Float64Array(V); d.ids.forEach((id, i) => { a[id] = d.probs[i]; }); return a; };

type Rule = (p: TokenDistribution, q: TokenDistribution, x: number, u: () => number, raw: { p: TokenDistribution; q: TokenDistribution }) => Verdict;

test('rejection rule: tokens come out distributed as the target\'s p after temperature/top-k/top-p; acceptance is Σ min(p, q); wrong rules fail the same test', () => {
  const V = 8, N = 60_000;
  const r0 = mulberry32(5);
  const row = () => Float32Array.from({ length: V }, () => 3 * r0());
  const opts: SamplingOptions[] = [
    { temperature: 1 }, { temperature: 0.7, topK: 5 }, { temperature: 1.3, topP: 0.9 }, { temperature: 1, topK: 4, topP: 0.8 }, { temperature: 0.5, topK: 6 },
  ];
  const rules: Record<string, Rule> = {
    right: (p, q, x, u) => verifyDraftToken(p, q, x, u),
    // Common mistakes: a rejected token replaced by a draw from p; the test on the unfiltered softmax (temperature only).
    resampleFromP: (p, q, x, u) => (u() * probabilityOf(q, x) < probabilityOf(p, x) ? { accepted: true, id: x } : { accepted: false, id: pick(p, u()) }),
    unfilteredRatio: (p, q, x, u, raw) => (u() * probabilityOf(raw.q, x) < probabilityOf(raw.p, x) ? { accepted: true, id: x } : { accepted: false, id: pick(residual(raw.p, raw.q), u()) }),
  };
  const worst: Record<string, number> = {};
  for (const o of opts) {
    const lp = row(), lq = row();
    const p = tokenDistribution(lp, o), q = tokenDistribution(lq, o);
    const raw = { p: tokenDistribution(lp, { temperature: o.temperature }), q: tokenDistribution(lq, { temperature: o.temperature }) };
    const pd = dense(p, V), qd = dense(q, V);
    const overlap = pd.reduce((s, pi, i) => s + Math.min(pi, qd[i]), 0);
    for (const [name, rule] of Object.entries(rules)) {
      const u = mulberry32(11);
      const counts = new Float64Array(V);
      let accepted = 0;
      for (let t = 0; t < N; t++) {
        const x = pick(q, u());
        const v = rule(p, q, x, u, raw);
        counts[v.id]++;
        if (v.accepted) { accepted++; assert.equal(v.id, x); }
      }
      const { chi, df } = chiSquare(counts, pd, N);
      const dev = Math.max(...[...counts].map((c, i) => Math.abs(c / N - pd[i])));
      worst[name] = Math.max(worst[name] ?? 0, chi / chiCritical(df));
      if (name === 'right') {
        assert.ok(chi < chiCritical(df), `${JSON.stringify(o)}: chi² ${chi.toFixed(1)} ≥ ${chiCritical(df).toFixed(1)} (df ${df})`);
        assert.ok(dev < 0.008, `${JSON.stringify(o)}: max |freq − p| = ${dev}`);
        assert.ok(Math.abs(accepted / N - overlap) < 0.008, `${JSON.stringify(o)}: acceptance ${accepted / N} vs Σ min(p, q) = ${overlap}`);
        for (let i = 0; i < V; i++) if (pd[i] === 0) assert.equal(counts[i], 0, `token ${i} is outside p's support (top-k/top-p) but came out`);
      }
    }
  }
  assert.ok(worst.right < 1);
  assert.ok(worst.resampleFromP > 10, `resampling from p is caught: ${worst.resampleFromP}`);
  assert.ok(worst.unfilteredRatio > 10, `the ratio of unfiltered distributions is caught: ${worst.unfilteredRatio}`);
  // The residual: max(0, p − q), renormalised, on p's support; greedy distributions accept only the argmax.
  const p = { ids: Int32Array.of(2, 0, 1), probs: Float64Array.of(0.5, 0.3, 0.2) }, q = { ids: Int32Array.of(0, 3, 2), probs: Float64Array.of(0.6, 0.3, 0.1) };
  const r = residual(p, q);
  assert.deepEqual([...r.ids], [2, 1]);
  assert.ok(Math.abs(r.probs[0] - 0.4 / 0.6) < 1e-12 && Math.abs(r.probs[1] - 0.2 / 0.6) < 1e-12);
  const one = (id: number) => ({ ids: Int32Array.of(id), probs: Float64Array.of(1) });
  const u = mulberry32(1);
  for (let i = 0; i < 20; i++) {
    assert.deepEqual(verifyDraftToken(one(4), one(4), 4, u), { accepted: true, id: 4 });
    assert.deepEqual(verifyDraftToken(one(4), one(6), 6, u), { accepted: false, id: 4 });
  }
});

test('sampler: sample() is draw(distribution()) from the same seeded stream; greedy draws take no number', () => {
  const r = mulberry32(3);
  const rows = Array.from({ length: 50 }, () => Float32Array.from({ length: 20 }, () => 4 * r()));
  const o = { temperature: 0.9, topK: 8, topP: 0.95, seed: 17 };
  const a = new Sampler(o), b = new Sampler(o);
  for (const l of rows) assert.equal(a.sample(l), b.draw(b.distribution(l)));
  const g = new Sampler({ seed: 1 });
  for (const l of rows) assert.equal(g.draw(g.distribution(l)), argmax(l));
  assert.equal(g.uniform(), new Sampler({ seed: 1 }).uniform(), 'greedy draws did not advance the stream');
});

