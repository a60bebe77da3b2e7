// The demo page: pick a model and a backend, run webjit, tune its kernels, and chart its latency against
// onnxruntime-web's on the same input in this page; generate text with the trained LLM pair, with or without its draft,
// and race it against onnxruntime-web on the same weights. `window.demo` exposes the last results to the end-to-end test.
import {
  InferenceSession, Tensor, TextGenerator, TextTokenizer, activationsOf, argmax, ctcDecode, decodeLlm, exportLlmOnnx, mulberry32, parseDict, recInput,
  type GenerationStats, type LlmCausalLM, type LlmWeights, type RgbaImage, type TuneProgress,
} from 'webjit';
import type * as Ort from 'onnxruntime-web';
import { fmt, latencyChart, median } from './chart.js';

type ModelId = 'ocr' | 'encoder' | 'decoder';
type Backend = 'wasm' | 'webgpu';
type Engine = 'webjit' | 'onnxruntime-web';

const MODELS: Record<ModelId, { label: string; file: string }> = {
  ocr: { label: 'PP-OCRv4 rec', file: 'models/ch_PP-OCRv4_rec_infer.onnx' },
  encoder: { label: 'encoder-small', file: 'models/encoder-small.onnx' },
  decoder: { label: 'decoder-small', file: 'models/decoder-small.onnx' },
};

/** One run's result as the page shows it and the test reads it. */
interface RunResult {
  engine: Engine;
  model: ModelId;
  backend: Backend;
  input: string;
  ms: number;
  /** The first run of this shape on this session (webjit generates and compiles its kernels then). */
  first: boolean;
  summary: string;
  text?: string;
  confidence?: number;
  /** Encoder and decoder: the inputs fed and the first output, as plain arrays (OCR: the text says it). */
  feeds?: Record<string, { type: string; dims: number[]; data: number[] }>;
  output?: { name: string; dims: number[]; data: number[] };
}

type DraftMode = 'none' | 'fixed' | 'adaptive';
type Activations = 'f32' | 'int8';

/** One text generation as the page shows it and the test reads it. */
interface GenResult {
  backend: Backend;
  prompt: string;
  maxTokens: number;
  temperature: number;
  draft: DraftMode;
  /** Asked for, and what the runner runs (int8 needs relaxed SIMD on wasm, dot4I8Packed on webgpu). */
  activations: Activations;
  ran: Activations;
  promptIds: number[];
  ids: number[];
  text: string;
  stats: GenerationStats;
  /** Loading the weights into the runtime and generating its kernels, when this generation did it. */
  createMs?: number;
}

/** Greedy decoding of the same prompt by webjit and by onnxruntime-web on the same 4-bit weights. */
interface GenCompare {
  backend: Backend;
  tokens: number;
  webjitIds: number[];
  ortIds: number[];
  /** Index of the first token where the two differ (-1: identical). */
  firstDiff: number;
  webjitTokensPerSec: number;
  ortTokensPerSec: number;
}

interface DemoState {
  ready: boolean;
  gen?: GenResult;
  genCompare?: GenCompare;
  runs: RunResult[];
  last?: RunResult;
  compare?: { model: ModelId; backend: Backend; input: string; webjit: number[]; ort: number[]; agreement: number; ortText?: string };
  tune?: { done: number; total: number; finished: boolean; kernels: number; winners: number; rejected: number; skipped: number; ms: number };
  env: { isolated: boolean; wasmThreads?: number; wasmNote?: string; adapter?: string };
  errors: string[];
}

const demo: DemoState = { ready: false, runs: [], env: { isolated: globalThis.crossOriginIsolated === true }, errors: [] };
(globalThis as unknown as { demo: DemoState }).demo = demo;

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => document.getElementById(id) as T;
const asset = (p: string): string => new URL(p, document.baseURI).href;
const pick = <T extends string>(id: string): T => $<HTMLSelectElement>(id).value as T;

async function fetchBytes(p: string): Promise<Uint8Array> {
  const r = await fetch(asset(p));
  if (!r.ok) throw new Error(`${p}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}
const modelBytes = new Map<ModelId, Promise<Uint8Array>>();
const bytesOf = (m: ModelId): Promise<Uint8Array> => {
  if (!modelBytes.has(m)) modelBytes.set(m, fetchBytes(MODELS[m].file));
  return modelBytes.get(m)!;
};
let dict: Promise<string[]> | null = null;
const dictionary = (): Promise<string[]> => (dict ??= fetchBytes('models/ppocr_keys_v1.txt').then((b) => parseDict(new TextDecoder().decode(b))));

// ---- inputs ----------------------------------------------------------------------------------------------------

function tokenIds(n: number, seed: number): Tensor {
  const r = mulberry32(seed);
  return new Tensor('int64', BigInt64Array.from({ length: n }, () => BigInt(Math.floor(r() * 1000))), [1, n]);
}

/** The PNG's RGBA pixels, decoded by the browser without colour conversion. */
async function imagePixels(name: string): Promise<RgbaImage> {
  const blob = await (await fetch(asset(`images/${name}.png`))).blob();
  const bmp = await createImageBitmap(blob, { premultiplyAlpha: 'none', colorSpaceConversion: 'none' });
  const canvas = new OffscreenCanvas(bmp.width, bmp.height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true })!;
  ctx.drawImage(bmp, 0, 0);
  return { width: bmp.width, height: bmp.height, data: ctx.getImageData(0, 0, bmp.width, bmp.height).data };
}

async function inputsFor(model: ModelId): Promise<{ feeds: Record<string, Tensor>; label: string }> {
  if (model === 'ocr') {
    const name = pick('image');
    const x = recInput(await imagePixels(name));
    return { feeds: { x }, label: `${name}.png [${x.dims.join(',')}]` };
  }
  if (model === 'encoder') {
    const n = 32;
    return {
      feeds: {
        input_ids: tokenIds(n, 7),
        attention_mask: new Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]),
        token_type_ids: new Tensor('int64', new BigInt64Array(n), [1, n]),
      },
      label: `${n} token ids (seed 7)`,
    };
  }
  const feeds: Record<string, Tensor> = { input_ids: tokenIds(16, 11) };
  for (let l = 0; l < 2; l++) {
    for (const kv of ['key', 'value']) feeds[`past_key_values.${l}.${kv}`] = new Tensor('float32', new Float32Array(0), [1, 4, 0, 32]);
  }
  return { feeds, label: '16-token prompt (seed 11), empty cache' };
}

// ---- what an output means -----------------------------------------------------------------------------------------

async function interpret(model: ModelId, out: Tensor): Promise<Pick<RunResult, 'summary' | 'text' | 'confidence'>> {
  if (model === 'ocr') {
    const r = ctcDecode(out, await dictionary());
    return { text: r.text, confidence: r.confidence, summary: `confidence ${r.confidence.toFixed(3)}` };
  }
  const d = out.data as Float32Array;
  if (model === 'encoder') {
    let s = 0;
    for (const v of d) s += Math.abs(v);
    return { summary: `last_hidden_state [${out.dims.join(',')}], mean |x| ${(s / d.length).toFixed(4)}, first values ${[...d.slice(0, 4)].map((v) => v.toFixed(4)).join(', ')}` };
  }
  const V = out.dims[2], last = d.subarray(d.length - V);
  let best = 0;
  for (let i = 1; i < V; i++) if (last[i] > last[best]) best = i;
  return { summary: `logits [${out.dims.join(',')}]; at the last position the argmax is token ${best} (logit ${last[best].toFixed(3)}). One forward pass of an ONNX decoder; the text generation card runs webjit's LLM runtime.` };
}

const plain = (t: Tensor) => ({ type: t.type, dims: [...t.dims], data: Array.from(t.data as ArrayLike<number | bigint>, Number) });

/** max |a-b| / max |b|. */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let e = 0, m = 0;
  for (let i = 0; i < b.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    e = d > e || Number.isNaN(d) ? (Number.isNaN(d) ? Infinity : d) : e;
    m = Math.max(m, Math.abs(b[i]));
  }
  return e / (m || 1);
}

// ---- webjit sessions -------------------------------------------------------------------------------------------

/** `?threads=N` asks the Wasm backend for N threads (the default is every core). */
const askedThreads = Number(new URLSearchParams(location.search).get('threads')) || undefined;

const sessions = new Map<string, Promise<InferenceSession>>();
const seenShapes = new Set<string>();

function webjitSession(model: ModelId, backend: Backend): Promise<InferenceSession> {
  const key = `${model}|${backend}`;
  let p = sessions.get(key);
  if (!p) {
    p = bytesOf(model).then((bytes) => InferenceSession.create(bytes, { backend, threads: askedThreads }));
    p.catch(() => sessions.delete(key));
    sessions.set(key, p);
  }
  return p;
}

function describeSession(s: InferenceSession, createMs?: number): void {
  const parts = [`${s.backend}`];
  if (s.backend === 'wasm') {
    const t = s.threads;
    demo.env.wasmThreads = t.threads;
    demo.env.wasmNote = t.note;
    const el = $('env-wasm');
    el.dataset.threads = String(t.threads);
    const asked = askedThreads ? `, ${askedThreads} asked` : '';
    el.textContent = `${t.threads} thread${t.threads === 1 ? '' : 's'}${t.note ? ` (${t.note}${asked})` : ` (${navigator.hardwareConcurrency} cores${asked})`}`;
    parts.push(`${t.threads} thread${t.threads === 1 ? '' : 's'}`);
  } else {
    const g = s.gpuInfo!;
    demo.env.adapter = g.adapter;
    $('env-webgpu').textContent = `adapter ${g.adapter}${g.f16 ? ', shader-f16' : ', no shader-f16'}${g.subgroups ? ', subgroups' : ''}`;
    parts.push(`adapter ${g.adapter}`);
  }
  if (createMs !== undefined) parts.push(`created in ${fmt(createMs)} ms`);
  $('env-session').textContent = parts.join(', ');
}

async function timedRun(s: InferenceSession, feeds: Record<string, Tensor>): Promise<{ out: Tensor; ms: number }> {
  const t0 = performance.now();
  const out = await s.run(feeds);
  return { out: out[s.outputNames[0]], ms: performance.now() - t0 };
}

// ---- onnxruntime-web, as it ships (its ES module and Wasm binary copied beside the page) ------------------------------

type OrtModule = typeof Ort;
let ortModule: Promise<OrtModule> | null = null;
const ortSessions = new Map<string, Promise<Ort.InferenceSession>>();

function loadOrt(threads: number): Promise<OrtModule> {
  ortModule ??= (import(/* @vite-ignore */ asset('ort/ort.bundle.min.mjs')) as Promise<OrtModule>).then((ort) => {
    ort.env.wasm.wasmPaths = asset('ort/');
    ort.env.wasm.numThreads = threads;
    return ort;
  });
  return ortModule;
}

function ortSession(ort: OrtModule, model: ModelId, backend: Backend): Promise<Ort.InferenceSession> {
  const key = `${model}|${backend}`;
  let p = ortSessions.get(key);
  if (!p) {
    p = bytesOf(model).then((b) => ort.InferenceSession.create(b, { executionProviders: [backend], graphOptimizationLevel: 'all' }));
    p.catch(() => ortSessions.delete(key));
    ortSessions.set(key, p);
  }
  return p;
}

async function ortRun(ort: OrtModule, s: Ort.InferenceSession, feeds: Record<string, Tensor>): Promise<{ out: Tensor; ms: number }> {
  const of: Record<string, Ort.Tensor> = {};
  for (const [k, t] of Object.entries(feeds)) of[k] = new ort.Tensor(t.type as 'float32', t.data as Float32Array, [...t.dims]);
  const t0 = performance.now();
  const r = await s.run(of);
  const ms = performance.now() - t0;
  const o = r[s.outputNames[0]];
  return { out: new Tensor('float32', o.data as Float32Array, [...o.dims]), ms };
}

// ---- page ----------------------------------------------------------------------------------------------------------

let runNo = 0;
function logRun(r: RunResult): void {
  demo.runs.push(r);
  const tr = document.createElement('tr');
  const cells = [String(++runNo), r.engine, MODELS[r.model].label, r.backend, r.input, fmt(r.ms), r.first ? 'first run of this shape' : r.summary === 'warm-up' ? 'warm-up, not charted' : ''];
  cells.forEach((c, i) => {
    const td = document.createElement('td');
    td.textContent = c;
    if (i === 5) td.className = 'num';
    tr.append(td);
  });
  $('log').querySelector('tbody')!.prepend(tr);
}

function status(state: 'busy' | 'ready' | 'error', text: string): void {
  const el = $('status');
  el.dataset.state = state;
  el.textContent = text;
  for (const id of ['run', 'compare', 'tune', 'generate', 'gen-compare']) $<HTMLButtonElement>(id).disabled = state === 'busy';
}

function showResult(r: RunResult): void {
  const box = $('result');
  box.replaceChildren();
  if (r.text !== undefined) {
    const t = document.createElement('div');
    t.className = 'text';
    t.id = 'ocr-text';
    t.textContent = r.text;
    box.append(t);
  }
  const m = document.createElement('div');
  m.className = 'meta';
  m.id = 'result-meta';
  m.textContent = `${MODELS[r.model].label} on ${r.backend}, ${r.input}: ${fmt(r.ms)} ms${r.first ? ' (first run: kernels generated and compiled)' : ''}. ${r.summary}`;
  box.append(m);
}

/** Lets the page paint between runs (a Wasm run keeps the main thread busy while it lasts). */
const paint = () => new Promise<void>((r) => requestAnimationFrame(() => setTimeout(r, 0)));

async function guarded(what: string, f: () => Promise<void>): Promise<void> {
  try {
    status('busy', `${what}…`);
    await f();
    status('ready', `${what}: done`);
  } catch (e) {
    const msg = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    demo.errors.push(`${what}: ${msg}`);
    status('error', `${what} failed: ${msg}`);
    console.error(e);
  }
}

async function runWebjit(): Promise<void> {
  const model = pick<ModelId>('model'), backend = pick<Backend>('backend');
  const t0 = performance.now();
  const created = sessions.has(`${model}|${backend}`);
  const s = await webjitSession(model, backend);
  describeSession(s, created ? undefined : performance.now() - t0);
  const { feeds, label } = await inputsFor(model);
  const key = `${model}|${backend}|${label}`;
  const first = !seenShapes.has(key);
  seenShapes.add(key);
  const { out, ms } = await timedRun(s, feeds);
  const r: RunResult = { engine: 'webjit', model, backend, input: label, ms, first, ...(await interpret(model, out)) };
  if (model !== 'ocr') {
    r.feeds = Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, plain(t)]));
    r.output = { name: s.outputNames[0], ...plain(out) };
  }
  demo.last = r;
  logRun(r);
  showResult(r);
}

async function compare(): Promise<void> {
  const model = pick<ModelId>('model'), backend = pick<Backend>('backend');
  const runs = Math.max(2, Math.min(100, Number($<HTMLInputElement>('runs').value) || 10));
  const s = await webjitSession(model, backend);
  describeSession(s);
  // onnxruntime-web's Wasm threads are fixed once it starts: webjit's default (every core, or ?threads=N) when isolated.
  const ort = await loadOrt(demo.env.isolated ? askedThreads ?? navigator.hardwareConcurrency : 1);
  const t0 = performance.now();
  const os = await ortSession(ort, model, backend);
  const ortCreate = performance.now() - t0;
  const { feeds, label } = await inputsFor(model);
  // First runs (webjit: kernel generation and compilation; onnxruntime-web: its own warm-up) are not charted.
  const key = `${model}|${backend}|${label}`;
  const w0 = await timedRun(s, feeds);
  logRun({ engine: 'webjit', model, backend, input: label, ms: w0.ms, first: !seenShapes.has(key), summary: '' });
  seenShapes.add(key);
  const o0 = await ortRun(ort, os, feeds);
  logRun({ engine: 'onnxruntime-web', model, backend, input: label, ms: o0.ms, first: true, summary: '' });
  const agreement = relErr(w0.out.data as Float32Array, o0.out.data as Float32Array);
  // Two more uncharted runs each: the browser compiles hot Wasm functions again with its optimising tier over the first
  // runs (webjit's kernels and onnxruntime-web's alike), and the chart is meant for the steady state.
  for (let i = 0; i < 2; i++) {
    logRun({ engine: 'webjit', model, backend, input: label, ms: (await timedRun(s, feeds)).ms, first: false, summary: 'warm-up' });
    logRun({ engine: 'onnxruntime-web', model, backend, input: label, ms: (await ortRun(ort, os, feeds)).ms, first: false, summary: 'warm-up' });
    await paint();
  }
  const ms: Record<Engine, number[]> = { webjit: [], 'onnxruntime-web': [] };
  const draw = () => {
    const chart = latencyChart([
      { label: 'webjit', color: '#1f6feb', ms: ms.webjit },
      { label: 'onnxruntime-web', color: '#d1495b', ms: ms['onnxruntime-web'] },
    ], `${MODELS[model].label} on ${backend}, ${label}`);
    $('chart').replaceChildren(chart);
  };
  // Interleaved, so that both engines see the same machine (a shared CPU's speed drifts).
  for (let i = 0; i < runs; i++) {
    for (const engine of ['webjit', 'onnxruntime-web'] as const) {
      const r = engine === 'webjit' ? await timedRun(s, feeds) : await ortRun(ort, os, feeds);
      ms[engine].push(r.ms);
      logRun({ engine, model, backend, input: label, ms: r.ms, first: false, summary: '' });
    }
    draw();
    await paint();
  }
  const mw = median(ms.webjit), mo = median(ms['onnxruntime-web']);
  let ortText: string | undefined;
  if (model === 'ocr') ortText = ctcDecode(o0.out, await dictionary()).text;
  const ratio = mo / mw;
  $('chart-summary').textContent =
    `median of ${runs} warm runs (after 3 uncharted runs each): webjit ${fmt(mw)} ms, onnxruntime-web ${fmt(mo)} ms (webjit ${ratio >= 1 ? `${ratio.toFixed(2)}× faster` : `${(1 / ratio).toFixed(2)}× slower`}). ` +
    `First runs ${fmt(w0.ms)} vs ${fmt(o0.ms)} ms; onnxruntime-web session created in ${fmt(ortCreate)} ms. ` +
    `Outputs agree within ${agreement.toExponential(1)} of max|onnxruntime-web|${ortText !== undefined ? `; onnxruntime-web read “${ortText}”` : ''}.`;
  demo.compare = { model, backend, input: label, webjit: ms.webjit, ort: ms['onnxruntime-web'], agreement, ortText };
}

async function tune(): Promise<void> {
  const model = pick<ModelId>('model'), backend = pick<Backend>('backend');
  const budgetMs = 1000 * Math.max(1, Number($<HTMLInputElement>('budget').value) || 5);
  const s = await webjitSession(model, backend);
  describeSession(s);
  const { feeds } = await inputsFor(model);
  const bar = $<HTMLProgressElement>('tune-progress'), text = $('tune-text');
  bar.max = 1;
  bar.value = 0;
  text.textContent = 'measuring the kernels of one run…';
  demo.tune = { done: 0, total: 0, finished: false, kernels: 0, winners: 0, rejected: 0, skipped: 0, ms: 0 };
  const onProgress = (p: TuneProgress) => {
    bar.max = Math.max(1, p.total);
    bar.value = p.done;
    Object.assign(demo.tune!, { done: p.done, total: p.total });
    text.textContent = `${p.done} of ${p.total} kernels (${p.family}), best kernel speedup ×${p.bestSpeedup.toFixed(2)}`;
  };
  const report = await s.tune({ feeds, budgetMs, onProgress });
  const winners = report.rows.filter((r) => r.changed).length;
  bar.max = 1;
  bar.value = 1;
  Object.assign(demo.tune, { finished: true, kernels: report.rows.length, winners, rejected: report.rejected, skipped: report.skipped, ms: report.ms });
  text.textContent = `${report.rows.length} kernels tuned in ${(report.ms / 1000).toFixed(1)} s: ${winners} faster than the default, ` +
    `${report.rejected} candidates rejected by verification, ${report.skipped} left for lack of budget. Winners are cached in IndexedDB.`;
}

// ---- text generation: webjit's LLM runtime on the trained pair ---------------------------------------------------

const LM = 'models/lm/';
interface LmAssets { target: LlmWeights; draft: LlmWeights; tokenizer: TextTokenizer }
let lmAssets: Promise<LmAssets> | null = null;
const utf8 = (b: Uint8Array) => new TextDecoder().decode(b);

function lm(): Promise<LmAssets> {
  lmAssets ??= Promise.all(['target.q4.safetensors', 'draft.q4.safetensors', 'tokenizer.json', 'tokenizer_config.json'].map((f) => fetchBytes(LM + f)))
    .then(([t, d, tj, tc]) => ({
      target: decodeLlm(t, 'target.q4.safetensors'),
      draft: decodeLlm(d, 'draft.q4.safetensors'),
      tokenizer: new TextTokenizer(JSON.parse(utf8(tj)) as object, JSON.parse(utf8(tc)) as object),
    }));
  lmAssets.catch(() => { lmAssets = null; });
  return lmAssets;
}

/** The generator of the last settings; another backend, draft or activations releases it first (each holds its KV cache). */
let generator: { key: string; gen: Promise<TextGenerator<LlmCausalLM>> } | null = null;

async function textGenerator(backend: Backend, draft: DraftMode, activations: Activations): Promise<{ gen: TextGenerator<LlmCausalLM>; createMs?: number }> {
  const key = `${backend}|${draft}|${activations}`;
  if (generator?.key === key) return { gen: await generator.gen };
  const old = generator;
  generator = null;
  if (old) await (await old.gen.catch(() => null))?.release();
  const a = await lm();
  const t0 = performance.now();
  const gen = TextGenerator.create(a.target, {
    backend, threads: askedThreads, activations, tokenizer: a.tokenizer,
    draft: draft === 'none' ? undefined : a.draft, draftTokens: 3, adaptiveDraft: draft === 'adaptive',
  });
  generator = { key, gen };
  gen.catch(() => { if (generator?.key === key) generator = null; });
  return { gen: await gen, createMs: performance.now() - t0 };
}

function genSettings() {
  const num = (id: string, lo: number, hi: number, d: number) => Math.max(lo, Math.min(hi, Number($<HTMLInputElement>(id).value) || d));
  return {
    backend: pick<Backend>('backend'), prompt: $<HTMLTextAreaElement>('gen-prompt').value,
    maxTokens: Math.round(num('gen-tokens', 1, 448, 64)), temperature: num('gen-temp', 0, 2, 0),
    draft: pick<DraftMode>('gen-draft'), activations: pick<Activations>('gen-act'),
  };
}

const tps = (n: number) => `${n >= 100 ? n.toFixed(0) : n.toFixed(1)} tokens/s`;

async function generate(): Promise<void> {
  const o = genSettings();
  const { gen, createMs } = await textGenerator(o.backend, o.draft, o.activations);
  const tok = gen.tokenizer!;
  const promptIds = tok.encode(o.prompt);
  const box = $('gen-text');
  const head = document.createElement('span');
  head.className = 'prompt';
  head.textContent = o.prompt;
  const body = document.createTextNode('');
  box.replaceChildren(head, body);
  $('gen-stats').textContent = '';
  // Greedy at temperature 0; else sampled with top-k 40, top-p 0.95 and a fixed seed (the same text each time).
  const g = gen.generate(promptIds, o.temperature > 0 ? { maxTokens: o.maxTokens, temperature: o.temperature, topK: 40, topP: 0.95, seed: 1 } : { maxTokens: o.maxTokens });
  // Tokens go into the page as they come (a WebGPU step awaits its read-back, so the page paints between them).
  for await (const t of g) body.data += t.text;
  body.data = g.text;
  const s = g.stats!;
  const ran = activationsOf(gen.decoder.runner);
  const r: GenResult = { ...o, ran, promptIds, ids: [...g.ids], text: g.text, stats: s, createMs };
  demo.gen = r;
  const sp = s.speculative;
  $('gen-stats').textContent = [
    `${o.backend}, ${ran} activations${ran !== o.activations ? ` (${o.activations} asked: not available here)` : ''}${o.temperature > 0 ? `, sampled at temperature ${o.temperature}` : ', greedy'}`,
    `${s.promptTokens} prompt tokens in ${fmt(s.prefillMs)} ms (${tps(s.prefillTokensPerSec)})`,
    `${s.generatedTokens} tokens, decode ${tps(s.decodeTokensPerSec)}, first token after ${fmt(s.timeToFirstTokenMs)} ms (${s.stopReason})`,
    ...(sp ? [`draft: ${sp.accepted} of ${sp.drafted} proposed tokens accepted (${(100 * sp.acceptanceRate).toFixed(0)}%) in ${sp.rounds} rounds${sp.plainTokens !== undefined ? `, ${sp.plainTokens} tokens made without it` : ''}`] : []),
    ...(createMs !== undefined ? [`model loaded and kernels generated in ${fmt(createMs)} ms`] : []),
  ].join('; ') + '.';
}

let ortLm: { backend: Backend; s: Promise<Ort.InferenceSession> } | null = null;

/** onnxruntime-web greedy decoding of the same weights as an ONNX decoder (MatMulNBits), its KV cache fed back. */
async function ortGreedy(ort: OrtModule, backend: Backend, w: LlmWeights, prompt: number[], n: number): Promise<{ ids: number[]; tokensPerSec: number }> {
  if (ortLm?.backend !== backend) {
    const old = ortLm;
    ortLm = null;
    if (old) await (await old.s.catch(() => null))?.release();
    const c = w.config;
    const kv = Array.from({ length: c.layers }, (_, l) => [`present.${l}.key`, `present.${l}.value`]).flat();
    ortLm = {
      backend,
      s: ort.InferenceSession.create(exportLlmOnnx(w), {
        executionProviders: [backend], graphOptimizationLevel: 'all',
        ...(backend === 'webgpu' ? { preferredOutputLocation: Object.fromEntries(kv.map((k) => [k, 'gpu-buffer' as const])) } : {}),
      }),
    };
    ortLm.s.catch(() => { ortLm = null; });
  }
  const s = await ortLm.s;
  const c = w.config;
  let past: Record<string, Ort.Tensor> = {};
  for (let l = 0; l < c.layers; l++) for (const k of ['key', 'value']) past[`past_key_values.${l}.${k}`] = new ort.Tensor('float32', new Float32Array(0), [1, c.kvHeads, 0, c.headDim]);
  const run = async (ids: number[]) => {
    const out = await s.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, ids.length]), ...past });
    const old = past;
    past = {};
    for (const k of Object.keys(old)) past[k] = out[k.replace('past_key_values', 'present')];
    for (const t of Object.values(old)) t.dispose();
    const lg = out.logits.data as Float32Array;
    const id = argmax(lg.subarray(lg.length - c.vocab));
    out.logits.dispose();
    return id;
  };
  const ids = [await run(prompt)];
  const t0 = performance.now();
  while (ids.length < n) ids.push(await run([ids[ids.length - 1]]));
  const ms = performance.now() - t0;
  for (const t of Object.values(past)) t.dispose();
  return { ids, tokensPerSec: ((n - 1) * 1000) / ms };
}

/** Greedy tokens and decode tokens/s of webjit (the settings' backend and activations, no draft) and onnxruntime-web. */
async function compareGeneration(): Promise<void> {
  const o = genSettings();
  const { gen } = await textGenerator(o.backend, 'none', o.activations);
  const a = await lm();
  const prompt = a.tokenizer.encode(o.prompt);
  const n = Math.min(o.maxTokens, 64);
  // webjit first, before onnxruntime-web's thread pool exists (its threads spin after each run and would take this
  // machine's cores from webjit's): a short warm-up (the browser's optimising tier), then n tokens; then
  // onnxruntime-web's session, a warm-up and the same n tokens.
  await gen.generate(prompt, { maxTokens: 8 }).all();
  await paint();
  const g = gen.generate(prompt, { maxTokens: n });
  await g.all();
  await paint();
  const ort = await loadOrt(demo.env.isolated ? askedThreads ?? navigator.hardwareConcurrency : 1);
  await ortGreedy(ort, o.backend, a.target, prompt, 4);
  const p = await ortGreedy(ort, o.backend, a.target, prompt, g.ids.length);
  const firstDiff = g.ids.findIndex((id, i) => id !== p.ids[i]);
  const c: GenCompare = {
    backend: o.backend, tokens: g.ids.length, webjitIds: [...g.ids], ortIds: p.ids, firstDiff,
    webjitTokensPerSec: g.stats!.decodeTokensPerSec, ortTokensPerSec: p.tokensPerSec,
  };
  demo.genCompare = c;
  const ratio = c.webjitTokensPerSec / c.ortTokensPerSec;
  const ran = activationsOf(gen.decoder.runner);
  $('gen-stats').textContent = `Greedy, ${c.tokens} tokens on ${o.backend}, the same 4-bit weights (onnxruntime-web runs them as MatMulNBits): ` +
    `webjit ${tps(c.webjitTokensPerSec)} (${ran} activations), onnxruntime-web ${tps(c.ortTokensPerSec)}: webjit ${ratio >= 1 ? `${ratio.toFixed(1)}× faster` : `${(1 / ratio).toFixed(2)}× slower`}. ` +
    (firstDiff < 0 ? 'The tokens are identical.' : `The tokens differ from token ${firstDiff} on${ran === 'int8' ? ' (int8 activations round x to 8 bits; f32 gives the same tokens)' : ''}.`);
  $('gen-text').replaceChildren(Object.assign(document.createElement('span'), { className: 'prompt', textContent: o.prompt }), document.createTextNode(g.text));
}

async function probeEnvironment(): Promise<void> {
  $('env-isolated').textContent = demo.env.isolated
    ? 'yes (COOP/COEP headers): SharedArrayBuffer, so Wasm runs on several threads'
    : 'no: the page lacks COOP/COEP headers, so Wasm runs on one thread';
  const wasm = $('env-wasm');
  wasm.textContent = demo.env.isolated ? `threads available, ${navigator.hardwareConcurrency} cores (the session says how many it uses)` : 'one thread: the page is not cross-origin isolated';
  const webgpu = $('env-webgpu');
  const option = $<HTMLSelectElement>('backend').querySelector<HTMLOptionElement>('option[value=webgpu]')!;
  const gpu = (navigator as Navigator & { gpu?: GPU }).gpu;
  const adapter = gpu ? await gpu.requestAdapter().catch(() => null) : null;
  if (!adapter) {
    webgpu.textContent = gpu ? 'navigator.gpu gives no adapter' : 'not available (no navigator.gpu)';
    option.disabled = true;
    option.textContent += ' — unavailable here';
    return;
  }
  const i = adapter.info;
  webgpu.textContent = `adapter ${[i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(' ') || 'unnamed'}`;
}

function syncImage(): void {
  const ocr = pick('model') === 'ocr';
  $('image-row').style.display = ocr ? '' : 'none';
  const img = $<HTMLImageElement>('preview');
  img.style.display = ocr ? '' : 'none';
  img.src = asset(`images/${pick('image')}.png`);
}

$('model').addEventListener('change', syncImage);
$('image').addEventListener('change', syncImage);
$('run').addEventListener('click', () => void guarded('run', runWebjit));
$('compare').addEventListener('click', () => void guarded('compare', compare));
$('tune').addEventListener('click', () => void guarded('tune', tune));
$('generate').addEventListener('click', () => void guarded('generate', generate));
$('gen-compare').addEventListener('click', () => void guarded('compare generation', compareGeneration));
syncImage();
void probeEnvironment().finally(() => {
  demo.ready = true;
  status('ready', 'ready: pick a model and a backend, then run');
});
