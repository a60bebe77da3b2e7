// `webjit bench-llm MODEL`: greedy decode tokens/s of webjit's LLM runtime against onnxruntime-web (and -node) on the
// same weights in the same run, outputs checked token for token; optionally with a draft model (speculative).
import fs from 'node:fs/promises';
import { InputError } from '../errors.js';
import { TextTokenizer } from '../generate/tokenizer.js';
import { loadLlm } from '../llm/model_io.js';
import { quantBits } from '../llm/quantize.js';
import type { LlmBackend } from '../llm/index.js';
import { hasOrtNode } from '../bench/engines.js';
import { installGpuForPeers } from '../bench/gpu_env.js';
import { llmBench, type DecodeResult } from '../bench/llm.js';
import { llamaConfig, randomQuantLlm } from '../llm/random.js';
import type { LlamaConfig } from '../llm/types.js';

/**
 * random:hidden=2048,layers=16,heads=16,kv=16,intermediate=5632,vocab=32000,bits=4: random quantized weights; bias=1
 * adds q/k/v biases (Qwen2), qknorm=1 per-head q/k norms (Qwen3), headdim=128 a head size other than hidden/heads.
 */
function randomModel(spec: string) {
  const kv = Object.fromEntries(spec.split(',').filter(Boolean).map((p) => {
    const [k, v] = p.split('=');
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0) throw new InputError(`random model: '${p}' is not name=positive integer`);
    return [k, n];
  }));
  const known = ['hidden', 'layers', 'heads', 'kv', 'intermediate', 'vocab', 'bits', 'positions', 'bias', 'qknorm', 'headdim'];
  for (const k of Object.keys(kv)) if (!known.includes(k)) throw new InputError(`random model: unknown '${k}' (use ${known.join(', ')})`);
  const heads = kv.heads ?? 16;
  const c: Partial<LlamaConfig> = { hidden: kv.hidden ?? 2048, layers: kv.layers ?? 16, heads, kvHeads: kv.kv ?? heads, intermediate: kv.intermediate ?? 5632, vocab: kv.vocab ?? 32000, maxPositions: kv.positions ?? 512, ...(kv.bias ? { qkvBias: true } : {}), ...(kv.qknorm ? { qkNorm: true } : {}) };
  const bits = kv.bits ?? 4;
  if (bits !== 4 && bits !== 8) throw new InputError('random model: bits must be 4 or 8');
  return randomQuantLlm(llamaConfig({ ...c, headDim: kv.headdim ?? c.hidden! / heads }), bits);
}

export interface BenchLlmArgs {
  backend: LlmBackend;
  quant?: string;
  draft?: string;
  draftTokens: string;
  threads?: string;
  promptTokens: string;
  tokens: string;
  rounds: string;
  prompt?: string;
  tokenizer?: string;
  peers?: string;
  peerOnnx?: string;
  activations?: string;
  kvCache?: string;
  prefill?: string;
  draftAdaptive?: boolean;
  json?: string;
}

/** A comma-separated list option whose every item is one of `allowed` (a typed error names the one that is not). */
function listOption<T extends string>(flag: string, given: string, allowed: readonly T[]): T[] {
  const xs = given.split(',').map((x) => x.trim());
  for (const x of xs) if (!(allowed as readonly string[]).includes(x)) throw new InputError(`--${flag} ${x}: use ${allowed.join(', ')} (comma-separated)`);
  return xs as T[];
}

export async function benchLlmCommand(model: string, a: BenchLlmArgs): Promise<number> {
  const log = (s: string) => console.error(s);
  const target = model.startsWith('random:') ? randomModel(model.slice(7)) : await loadLlm(model);
  const stored = quantBits(target);
  const quants = listOption('quant', a.quant ?? (stored ? `q${stored}` : 'q4'), ['f32', 'q4', 'q8'] as const);
  const draft = a.draft ? await loadLlm(a.draft) : undefined;
  const n = Number(a.promptTokens);
  let prompt: number[];
  if (a.prompt && a.tokenizer) {
    const tok = await TextTokenizer.fromFile(a.tokenizer);
    prompt = tok.encode(await fs.readFile(a.prompt, 'utf8').catch(() => a.prompt!), { addSpecialTokens: true }).slice(0, n);
  } else {
    // A fixed pseudo-random prompt of n ids after BOS.
    prompt = [target.config.bos ?? 0];
    let s = 12345;
    while (prompt.length < n) { s = (s * 1103515245 + 12345) >>> 0; prompt.push(3 + (s % (target.config.vocab - 3))); }
  }
  const threads = a.threads ? Number(a.threads) : 2;
  const activations = listOption('activations', a.activations ?? 'f32', ['f32', 'int8'] as const);
  const kvCaches = listOption('kv-cache', a.kvCache ?? 'f32', ['f32', 'f16'] as const);
  const prefills = listOption('prefill', a.prefill ?? 'f32', ['f32', 'f16'] as const);
  const PEERS = ['web-wasm', 'web-webgpu', 'node'] as const;
  const given = (a.peers ?? (a.backend === 'webgpu' ? 'web-webgpu' : 'web-wasm')).split(',').map((p) => p.trim());
  for (const p of given) {
    if (p !== 'none' && !(PEERS as readonly string[]).includes(p)) throw new InputError(`--peers: unknown peer '${p}'`, {}, `use ${PEERS.join(', ')} (comma-separated), or none`);
  }
  let peers = given.filter((p) => p !== 'none') as (typeof PEERS)[number][];
  if (peers.includes('node') && !hasOrtNode()) { log('onnxruntime-node is not installed here: left out'); peers = peers.filter((p) => p !== 'node'); }
  if (peers.includes('web-webgpu') || a.backend === 'webgpu') log(`GPU: ${await installGpuForPeers()}`);
  const { results, bytesPerToken } = await llmBench({
    target, draft, quants, backend: a.backend, threads, prompt, tokens: Number(a.tokens), rounds: Number(a.rounds),
    draftTokens: Number(a.draftTokens), peers, log, activations, kvCaches, prefills, draftAdaptive: a.draftAdaptive, peerOnnx: a.peerOnnx ? new Uint8Array(await fs.readFile(a.peerOnnx)) : undefined,
  });
  const best = (backendPeer: DecodeResult[]) => Math.max(...backendPeer.filter((r) => r.peer && r.correct !== false && r.engine.startsWith('onnxruntime-web')).map((r) => r.decodeTokPerSec));
  const bestWeb = best(results);
  const rows = results.map((r) => {
    const same = results.find((p) => p.peer && p.weights === r.weights && p.engine.startsWith('onnxruntime-web'));
    return {
      ...r,
      vsSameWeights: !r.peer && same ? r.decodeTokPerSec / same.decodeTokPerSec : undefined,
      vsBestWeb: !r.peer ? r.decodeTokPerSec / bestWeb : undefined,
      gbPerSec: (bytesPerToken[r.weights] * r.decodeTokPerSec) / 1e9,
    };
  });
  const f = (x: number | undefined, d = 1) => (x === undefined || !Number.isFinite(x) ? '' : x.toFixed(d));
  console.log(`model ${model}: ${target.config.layers} layers, hidden ${target.config.hidden}, vocab ${target.config.vocab}; prompt ${prompt.length} tokens, ${a.tokens} generated, greedy, median of ${a.rounds} rounds`);
  console.log(['engine', 'weights', 'MB/token', 'prefill tok/s', 'decode tok/s', 'GB/s', 'tokens', 'vs web, same weights', 'vs best web'].join(' | '));
  for (const r of rows) {
    console.log([r.engine, r.weights, f(bytesPerToken[r.weights] / 1e6), f(r.prefillTokPerSec), f(r.decodeTokPerSec), f(r.gbPerSec, 2),
      r.correct === null ? 'no reference' : r.correct ? 'match' : r.inexact ? `differ from token ${r.firstDiff} (${r.inexact})` : 'WRONG',
      r.vsSameWeights ? `${f(r.vsSameWeights, 2)}x` : '', r.vsBestWeb ? `${f(r.vsBestWeb, 2)}x` : ''].join(' | ')
      + (r.acceptance !== undefined ? ` (acceptance ${(100 * r.acceptance).toFixed(0)}%)` : ''));
  }
  if (a.json) await fs.writeFile(a.json, JSON.stringify({ date: new Date().toISOString(), model, config: target.config, prompt: prompt.length, tokens: Number(a.tokens), rounds: Number(a.rounds), bytesPerToken, rows }, null, 1));
  return rows.some((r) => r.correct === false && !r.inexact) ? 1 : 0;
}
