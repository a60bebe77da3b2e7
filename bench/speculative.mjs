// Speculative decoding on a target/draft pair: acceptance rate and decode speed against plain decoding of the same
// target, measured in the same run on the same prompts (held-out text). Greedy runs also check that the tokens equal
// plain greedy decoding's.
//
// Usage (after `npm run build`):
//   node bench/speculative.mjs --target T --draft D [--backend wasm] [--threads N] [--k 2,3,4,6] [--temperature 0,0.8]
//     [--target-quant stored|f32] [--activations f32|int8] [--draft-activations f32|int8] [--adaptive] [--prompts 10] [--prompt-tokens 32] [--tokens 64] [--tokenizer FILE] [--valid FILE] [--warmup] [--rounds 1] [--json FILE]
// T and D: .onnx decoders (run by CausalDecoder on --backend) or LLMs (a Hugging Face Llama folder or a webjit
// .safetensors file, run by createLlm on --backend). --warmup runs every configuration once before the timed pass
// (the ONNX path compiles kernels per KV length; the timed pass then meets only compiled shapes). Before the runs it
// times a target run of 1 … k+1 tokens and a draft step, and prints the speedup those costs and the measured
// acceptance predict next to the measured one.
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { CausalDecoder } from '../dist/src/generate/decoder.js';
import { LlmCausalLM } from '../dist/src/generate/causal_lm.js';
import { TextGenerator } from '../dist/src/generate/generate.js';
import { TextTokenizer } from '../dist/src/generate/tokenizer.js';
import { createLlm, decodeLlm, dequantizeLlm, loadLlm } from '../dist/src/llm/index.js';

const LM = new URL('../.lm', import.meta.url).pathname; // where scripts/train_lm.py --export-from writes (x/onnx)
const { values: a } = parseArgs({
  options: {
    target: { type: 'string', default: `${LM}/x/onnx/target.onnx` },
    draft: { type: 'string', default: `${LM}/x/onnx/draft.onnx` },
    backend: { type: 'string', default: 'wasm' },
    threads: { type: 'string' },
    'draft-threads': { type: 'string' },
    k: { type: 'string', default: '2,3,4,6' },
    temperature: { type: 'string', default: '0,0.8' },
    prompts: { type: 'string', default: '10' },
    'prompt-tokens': { type: 'string', default: '32' },
    tokens: { type: 'string', default: '64' },
    tokenizer: { type: 'string', default: `${LM}/out/tokenizer.json` },
    valid: { type: 'string', default: `${LM}/corpus/valid.txt` },
    warmup: { type: 'boolean', default: false },
    rounds: { type: 'string', default: '1' },
    json: { type: 'string' },
    'target-quant': { type: 'string', default: 'stored' },
    activations: { type: 'string', default: 'f32' },
    'draft-activations': { type: 'string', default: 'f32' },
    adaptive: { type: 'boolean', default: false },
  },
});
const ks = a.k.split(',').map(Number);
const temps = a.temperature.split(',').map(Number);
const nPrompts = Number(a.prompts), promptTokens = Number(a['prompt-tokens']), maxTokens = Number(a.tokens);
const threads = a.threads ? Number(a.threads) : undefined;

async function open(path, th = threads, quant = 'stored', activations = 'f32') {
  if (path.endsWith('.onnx')) return CausalDecoder.create(path, { backend: a.backend, threads: th, tuning: 'off' });
  let w = fs.statSync(path).isDirectory() ? await loadLlm(path) : decodeLlm(new Uint8Array(fs.readFileSync(path)), path);
  if (quant === 'f32') w = dequantizeLlm(w);
  else if (quant !== 'stored') throw new Error(`--target-quant ${quant}: 'stored' or 'f32'`);
  const r = await createLlm(w, { backend: a.backend, threads: th, activations });
  if (r.activations !== undefined && r.activations !== activations) {
    throw new Error(`${path}: ${activations} activations asked for, the runner has ${r.activations} (wasm int8 needs relaxed SIMD: node --experimental-wasm-relaxed-simd)`);
  }
  return new LlmCausalLM(r);
}

// Prompts: paragraphs of at least 400 characters, evenly spaced through the held-out text, cut to promptTokens ids.
const tok = await TextTokenizer.fromFile(a.tokenizer);
const paras = fs.readFileSync(a.valid, 'utf8').split(/\n\s*\n/).map((p) => p.trim()).filter((p) => p.length >= 400);
const prompts = Array.from({ length: nPrompts }, (_, i) => tok.encode(paras[Math.floor(((i + 0.5) * paras.length) / nPrompts)]).slice(0, promptTokens));

const target = await open(a.target, threads, a['target-quant'], a.activations);
const draft = await open(a.draft, a['draft-threads'] ? Number(a['draft-threads']) : threads, 'stored', a['draft-activations']);
const plain = new TextGenerator(target, tok);
console.log(`target ${a.target} (${a.activations} x), draft ${a.draft} (${a['draft-activations']} x), backend ${a.backend}${threads ? `, ${threads} threads` : ''}; ${nPrompts} prompts of ${promptTokens} tokens from ${a.valid}, ${maxTokens} tokens each`);

const gens = new Map();
async function run(T, k, i) {
  // One generator per k, as an application would keep one (adaptive drafting carries what it measured across prompts).
  if (k && !gens.has(k)) gens.set(k, new TextGenerator(target, tok, { draft, draftTokens: k, adaptiveDraft: a.adaptive }));
  const gen = k ? gens.get(k) : plain;
  const g = gen.generate(prompts[i], { maxTokens, temperature: T, seed: 1000 + i, ignoreEos: true });
  await g.all();
  return { tokens: g.stats.generatedTokens - 1, decodeMs: g.stats.decodeMs, ids: g.ids, ...(g.stats.speculative ?? {}) };
}

const median = (xs) => { const s = [...xs].sort((x, y) => x - y); return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };

// The cost model (Leviathan et al.): a round of k costs k draft steps and one target run of k + 1 tokens, and yields
// (1 − α^(k+1)) / (1 − α) tokens on average, α being the chance a draft token is accepted.
const kMax = Math.max(...ks);
const ctx = prompts[0].slice(0, promptTokens);
const at = [...ctx, ...Array.from({ length: 16 }, (_, i) => ctx[i % ctx.length])];
await target.prefill(at);
await draft.prefill(at);
const time = async (f) => { const t0 = performance.now(); await f(); return performance.now() - t0; };
const samples = { target: Array.from({ length: kMax + 2 }, () => []), draft: [] };
// Interleaved repetitions (the first is a warm-up), so that load from other processes falls on every size alike.
for (let r = 0; r < 16; r++) {
  for (let n = 1; n <= kMax + 1; n++) {
    const t = await time(() => target.forward(at.slice(0, n), true));
    await target.truncate(at.length);
    if (r) samples.target[n].push(t);
  }
  const t = await time(() => draft.step(at[0]));
  await draft.truncate(at.length);
  if (r) samples.draft.push(t);
}
const costs = { target: {}, draft: median(samples.draft) };
for (let n = 1; n <= kMax + 1; n++) costs.target[n] = median(samples.target[n]);
console.log(`\ncosts at ${at.length} cached positions (median of 15, interleaved): target run of n tokens ${Object.entries(costs.target).map(([n, t]) => `${n}: ${t.toFixed(1)} ms`).join(', ')}; draft step ${costs.draft.toFixed(1)} ms`);
const predict = (k, alpha) => ((1 - alpha ** (k + 1)) / (1 - alpha)) * costs.target[1] / (k * costs.draft + costs.target[k + 1]);
/** α from the measured accepted tokens per round: Σ_{i=1..k} α^i = accepted/round, solved by bisection. */
const alphaOf = (k, perRound) => { let lo = 0, hi = 0.999999; for (let it = 0; it < 60; it++) { const m = (lo + hi) / 2; let s = 0; for (let i = 1; i <= k; i++) s += m ** i; if (s < perRound) lo = m; else hi = m; } return (lo + hi) / 2; };

const rows = [];
const rounds = Number(a.rounds);
for (const T of temps) {
  const configs = [0, ...ks];
  if (a.warmup) for (let i = 0; i < prompts.length; i++) for (const k of configs) await run(T, k, i);
  // Configurations interleaved prompt by prompt, so that load from other processes falls on all of them alike; the
  // speedup is also given as the median over prompts of the per-prompt ratio of time per token.
  const res = new Map(configs.map((k) => [k, []]));
  for (let r = 0; r < rounds; r++) for (let i = 0; i < prompts.length; i++) for (const k of configs) res.get(k).push({ i, ...(await run(T, k, i)) });
  const sum = (k, f) => res.get(k).reduce((s, x) => s + f(x), 0);
  const base = res.get(0);
  const baseTps = sum(0, (x) => x.tokens) / (sum(0, (x) => x.decodeMs) / 1000);
  rows.push({ k: 0, temperature: T, tokens: sum(0, (x) => x.tokens), decodeMs: sum(0, (x) => x.decodeMs), tokensPerSec: baseTps });
  console.log(`\ntemperature ${T}: plain decoding ${baseTps.toFixed(2)} tokens/s (${sum(0, (x) => x.tokens)} tokens in ${(sum(0, (x) => x.decodeMs) / 1000).toFixed(1)} s)`);
  console.log('   k | acceptance | accepted/round |   α  | tokens/target run | tokens/s | speedup (sums) | speedup (median/prompt) | predicted | greedy equal');
  for (const k of ks) {
    const xs = res.get(k);
    const drafted = sum(k, (x) => x.drafted), accepted = sum(k, (x) => x.accepted), nRounds = sum(k, (x) => x.rounds), tokens = sum(k, (x) => x.tokens);
    const tps = tokens / (sum(k, (x) => x.decodeMs) / 1000);
    const ratio = median(xs.map((x, j) => (base[j].decodeMs / base[j].tokens) / (x.decodeMs / x.tokens)));
    const alpha = alphaOf(k, accepted / nRounds);
    const same = T === 0 ? `${xs.filter((x, j) => x.ids.join() === base[j].ids.join()).length}/${xs.length}` : '-';
    const row = { k, temperature: T, tokens, decodeMs: sum(k, (x) => x.decodeMs), tokensPerSec: tps, drafted, accepted, rounds: nRounds,
      acceptance: accepted / drafted, alpha, speedup: tps / baseTps, speedupMedian: ratio, predicted: predict(k, alpha) };
    rows.push(row);
    console.log(`${String(k).padStart(4)} | ${(100 * row.acceptance).toFixed(1).padStart(9)}% | ${(accepted / nRounds).toFixed(2).padStart(14)} | ${alpha.toFixed(2)} | `
      + `${(tokens / (tokens - accepted)).toFixed(2).padStart(17)} | ${tps.toFixed(2).padStart(8)} | ${row.speedup.toFixed(2).padStart(13)}x | `
      + `${ratio.toFixed(2).padStart(22)}x | ${row.predicted.toFixed(2).padStart(8)}x | ${same}`
      + (a.adaptive ? ` | adaptive: ${(100 * sum(k, (x) => x.plainTokens ?? 0) / tokens).toFixed(0)}% of the tokens without the draft, ${sum(k, (x) => x.switches ?? 0)} switches` : ''));
  }
}
if (a.json) fs.writeFileSync(a.json, JSON.stringify({ args: a, costs, rows }, null, 1));
await target.release();
await draft.release();
