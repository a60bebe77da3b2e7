// End to end in headless Chromium: the demo page, built by Vite from the package as users import it, served with
// COOP/COEP on 127.0.0.1, runs PP-OCRv4 recognition, the encoder and the decoder on wasm and on webgpu (SwiftShader);
// texts match `webjit ocr` in Node and tensors match onnxruntime-node; the latency chart, tuning progress and thread
// count are checked; the trained LLM pair generates the tokens `webjit generate` makes in Node (greedy, sampled, with
// the draft, int8 activations) and onnxruntime-web's greedy tokens on the same weights; screenshots go to test-artifacts/.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { Tensor } from '../src/tensor.js';
import { ortRun, relErr, ROOT } from './helpers.js';

const CHROMIUM = process.env.WEBJIT_CHROMIUM ?? '/usr/bin/chromium';
// ../shared/gpu/README.md: the flags that give headless Chromium a WebGPU adapter (SwiftShader) and keep it quiet.
const FLAGS = ['--headless=new', '--no-sandbox', '--enable-unsafe-webgpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];
const ARTIFACTS = path.join(ROOT, 'test-artifacts');
const IMAGES = ['hello', 'fox', 'invoice'];

type Plain = { type: string; dims: number[]; data: number[] };
interface RunResult {
  engine: string; model: string; backend: string; input: string; ms: number; first: boolean; summary: string;
  text?: string; confidence?: number; feeds?: Record<string, Plain>; output?: Plain & { name: string };
}
interface GenStats {
  promptTokens: number; generatedTokens: number; decodeTokensPerSec: number; prefillTokensPerSec: number;
  speculative?: { draftTokens: number; rounds: number; drafted: number; accepted: number; acceptanceRate: number };
}
interface GenResult {
  backend: string; prompt: string; draft: string; activations: string; ran: string; promptIds: number[]; ids: number[]; text: string;
  stats: GenStats; createMs?: number;
}
interface GenCompare { backend: string; tokens: number; webjitIds: number[]; ortIds: number[]; firstDiff: number; webjitTokensPerSec: number; ortTokensPerSec: number }
interface DemoState {
  ready: boolean; runs: RunResult[]; last?: RunResult; errors: string[]; gen?: GenResult; genCompare?: GenCompare;
  compare?: { model: string; backend: string; input: string; webjit: number[]; ort: number[]; agreement: number; ortText?: string };
  tune?: { done: number; total: number; finished: boolean; kernels: number; winners: number; rejected: number; skipped: number; ms: number };
  env: { isolated: boolean; wasmThreads?: number; wasmNote?: string; adapter?: string };
}
// Functions given to page.evaluate run in the page: they name `window.demo` themselves (no closures over Node code).
declare global {
  interface Window { demo: DemoState }
}

interface Server { url: string; close(): Promise<void> }
type ServeDemo = (o: { root?: string; host?: string; port?: number; isolate?: boolean }) => Promise<Server>;

let serveDemo: ServeDemo;
let server: Server | undefined;
let bare: Server | undefined;
let ctx: BrowserContext | undefined;
let profile: string | undefined;
let page: Page;
const pageErrors: string[] = [];
const t0 = Date.now();
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;

/** What `webjit ocr --json` prints in Node for the fixture images: the texts the page must read. */
let nodeTexts: Map<string, string>;

/** What `webjit generate --json` prints in Node for the trained pair (test/fixtures/lm): the generations the page must make. */
interface NodeGen {
  ids: number[]; text: string; generated_tokens: number;
  speculative?: { draft_tokens: number; rounds: number; drafted: number; accepted: number };
}
const LM = 'test/fixtures/lm';
const GEN_PROMPT = 'The Debian project';
const GEN_TOKENS = 32;
const SAMPLED = ['--temperature', '0.8', '--top-k', '40', '--top-p', '0.95', '--seed', '1'];
let nodeGen: { greedy: NodeGen; sampled: NodeGen; draft: NodeGen; int8: NodeGen };

function sh(cmd: string, args: string[], timeoutMs: number): string {
  return execFileSync(cmd, args, { cwd: ROOT, timeout: timeoutMs, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, WEBJIT_TUNE_CACHE: 'off' } });
}

async function openPage(url: string): Promise<Page> {
  const p = await ctx!.newPage();
  p.on('pageerror', (e) => pageErrors.push(`${url}: ${e.message}`));
  p.on('console', (m) => { if (m.type() === 'error') pageErrors.push(`${url}: console: ${m.text()}`); });
  await p.goto(url, { timeout: 60_000 });
  await p.waitForFunction(() => window.demo?.ready === true, null, { timeout: 60_000, polling: 100 });
  return p;
}

async function idle(p: Page, timeoutMs: number): Promise<void> {
  await p.waitForFunction(() => document.getElementById('status')?.dataset.state !== 'busy', null, { timeout: timeoutMs, polling: 250 });
  const st = await p.$eval('#status', (e) => `${(e as HTMLElement).dataset.state}: ${e.textContent}`);
  assert.match(st, /^ready/, `the page reports: ${st}`);
}

/** Picks model, backend (and text line), presses Run, and returns the page's result. */
async function runInPage(p: Page, model: string, backend: string, image?: string, timeoutMs = 120_000): Promise<RunResult> {
  await p.selectOption('#model', model);
  await p.selectOption('#backend', backend);
  if (image) await p.selectOption('#image', image);
  const n = await p.evaluate(() => window.demo.runs.length);
  await p.click('#run');
  await idle(p, timeoutMs);
  const r = await p.evaluate(() => window.demo.last!);
  assert.equal(await p.evaluate(() => window.demo.runs.length), n + 1);
  assert.equal(r.model, model);
  assert.equal(r.backend, backend);
  console.log(`[${elapsed()}] ${model} on ${backend}${image ? ` (${image})` : ''}: ${r.ms.toFixed(1)} ms${r.first ? ' (first run)' : ''}${r.text !== undefined ? `, read "${r.text}"` : ''}`);
  return r;
}

const tensorOf = (p: Plain): Tensor => p.type === 'int64'
  ? new Tensor('int64', BigInt64Array.from(p.data, (v) => BigInt(v)), p.dims)
  : new Tensor('float32', Float32Array.from(p.data), p.dims);

/** The page's first output against onnxruntime-node's on the feeds the page reports it fed. */
async function assertMatchesOrt(r: RunResult, file: string, label: string): Promise<void> {
  assert.ok(r.feeds && r.output, `${label}: the page reports its feeds and output`);
  const feeds = Object.fromEntries(Object.entries(r.feeds).map(([k, v]) => [k, tensorOf(v)]));
  const want = (await ortRun(path.join(ROOT, 'test/fixtures', file), feeds))[r.output.name];
  const err = relErr(tensorOf(r.output), want);
  console.log(`[${elapsed()}] ${label}: max|err| / max|ref| = ${err.toExponential(2)} against onnxruntime-node`);
  assert.ok(err <= 1e-3, `${label}: ${err} of max|ref|`);
}

describe('browser: the demo page in headless Chromium', { timeout: 900_000 }, () => {
  before(async () => {
    if (!fs.existsSync(CHROMIUM)) {
      throw new Error(`Chromium is not installed at ${CHROMIUM}: install it (Debian: apt-get update && apt-get install -y chromium; .ci/run does this), or point WEBJIT_CHROMIUM at a Chromium binary`);
    }
    // The page as `npm run demo` builds it: the demo type-checked against webjit's published types, then bundled by Vite.
    sh(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'demo/tsconfig.json'], 120_000);
    sh(process.execPath, [path.join(ROOT, 'node_modules/vite/bin/vite.js'), 'build', '--config', 'demo/vite.config.mjs'], 180_000);
    const out = sh(process.execPath, ['bin/webjit.js', 'ocr', '--json', ...IMAGES.map((n) => `test/fixtures/ocr/${n}.png`)], 120_000);
    nodeTexts = new Map(out.trim().split('\n').filter((l) => l.startsWith('{')).map((l) => {
      const j = JSON.parse(l) as { image: string; text: string };
      return [path.basename(j.image, '.png'), j.text];
    }));
    console.log(`[${elapsed()}] demo built; webjit ocr in Node read ${JSON.stringify(Object.fromEntries(nodeTexts))}`);
    const gen = (args: string[], node: string[] = []): NodeGen => JSON.parse(sh(process.execPath, [...node, 'bin/webjit.js', 'generate', `${LM}/target.q4.safetensors`,
      '--tokenizer', `${LM}/tokenizer.json`, '--prompt', GEN_PROMPT, '--max-tokens', String(GEN_TOKENS), '--backend', 'wasm', '--json', ...args], 120_000).trim().split('\n').pop()!) as NodeGen;
    nodeGen = {
      greedy: gen([]), sampled: gen(SAMPLED), draft: gen(['--draft', `${LM}/draft.q4.safetensors`, '--draft-tokens', '3']),
      int8: gen(['--activations', 'int8'], ['--experimental-wasm-relaxed-simd']),
    };
    console.log(`[${elapsed()}] webjit generate in Node: "${GEN_PROMPT}${nodeGen.greedy.text}"`);
    ({ serveDemo } = (await import(pathToFileURL(path.join(ROOT, 'demo/serve.mjs')).href)) as { serveDemo: ServeDemo });
    server = await serveDemo({ host: '127.0.0.1', port: 0 });
    profile = fs.mkdtempSync(path.join(os.tmpdir(), 'webjit-chromium-'));
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM, headless: true, args: FLAGS, viewport: { width: 1280, height: 1000 }, timeout: 120_000,
    });
    fs.mkdirSync(ARTIFACTS, { recursive: true });
  });

  after(async () => {
    const closing = (async () => {
      await ctx?.close().catch(() => undefined);
      await server?.close();
      await bare?.close();
    })();
    await Promise.race([closing, new Promise((r) => setTimeout(r, 30_000).unref())]);
    if (profile) fs.rmSync(profile, { recursive: true, force: true });
    console.log(`[${elapsed()}] browser end-to-end done`);
  });

  it('serves the page with COOP/COEP; it loads cross-origin isolated and finds a WebGPU adapter', async () => {
    const res = await fetch(server!.url);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('cross-origin-opener-policy'), 'same-origin');
    assert.equal(res.headers.get('cross-origin-embedder-policy'), 'require-corp');
    // Two Wasm threads asked for, so the thread check does not depend on the machine's core count.
    page = await openPage(`${server!.url}?threads=2`);
    assert.equal(await page.evaluate(() => globalThis.crossOriginIsolated), true);
    assert.equal(await page.evaluate(() => window.demo.env.isolated), true);
    assert.match(await page.textContent('#env-webgpu') ?? '', /^adapter /, 'navigator.gpu gives an adapter (--enable-unsafe-webgpu)');
    assert.equal(await page.isDisabled('#backend option[value=webgpu]'), false);
  });

  it('PP-OCRv4 on wasm reads the three text lines as `webjit ocr` does in Node, on 2 threads', { timeout: 180_000 }, async () => {
    for (const name of IMAGES) {
      const r = await runInPage(page, 'ocr', 'wasm', name);
      assert.equal(r.text, nodeTexts.get(name), `${name}: the page read "${r.text}", webjit ocr in Node "${nodeTexts.get(name)}"`);
      const truth = fs.readFileSync(path.join(ROOT, `test/fixtures/ocr/${name}.txt`), 'utf8').trim();
      assert.equal(r.text!.trim(), truth, `${name}: the text printed in the image`);
      assert.equal(await page.textContent('#ocr-text'), r.text);
    }
    assert.equal(await page.evaluate(() => window.demo.env.wasmThreads), 2, 'wasm runs on 2 threads in a cross-origin isolated page');
    assert.equal(await page.getAttribute('#env-wasm', 'data-threads'), '2');
    assert.match(await page.textContent('#env-session') ?? '', /wasm, 2 threads/);
  });

  it('the encoder and the decoder on wasm match onnxruntime-node', { timeout: 180_000 }, async () => {
    await assertMatchesOrt(await runInPage(page, 'encoder', 'wasm'), 'encoder-small.onnx', 'encoder on wasm');
    const d = await runInPage(page, 'decoder', 'wasm');
    await assertMatchesOrt(d, 'decoder-small.onnx', 'decoder on wasm');
    assert.match(d.summary, /the text generation card runs webjit's LLM runtime/);
  });

  it('charts webjit against onnxruntime-web on the same OCR input, and keeps a screenshot', { timeout: 300_000 }, async () => {
    const r = await runInPage(page, 'ocr', 'wasm', 'hello');
    await page.fill('#runs', '5');
    await page.click('#compare');
    await idle(page, 240_000);
    const c = (await page.evaluate(() => window.demo.compare))!;
    assert.equal(c.model, 'ocr');
    assert.equal(c.webjit.length, 5);
    assert.equal(c.ort.length, 5);
    assert.ok([...c.webjit, ...c.ort].every((ms) => ms > 0 && Number.isFinite(ms)));
    assert.ok(c.agreement <= 1e-4, `webjit and onnxruntime-web agree: ${c.agreement}`);
    assert.equal(c.ortText, r.text, 'onnxruntime-web reads the same text');
    assert.equal(await page.locator('#chart svg circle.point[data-engine="webjit"]').count(), 5);
    assert.equal(await page.locator('#chart svg circle.point[data-engine="onnxruntime-web"]').count(), 5);
    assert.match(await page.textContent('#chart-summary') ?? '', /median of 5 warm runs \(after 3 uncharted runs each\): webjit [\d.]+ ms, onnxruntime-web [\d.]+ ms/);
    assert.equal(await page.textContent('#ocr-text'), nodeTexts.get('hello'));
    const shot = path.join(ARTIFACTS, 'browser-demo-ocr.png');
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(fs.statSync(shot).size > 20_000, 'a screenshot was written');
    console.log(`[${elapsed()}] compare: webjit ${c.webjit.map((x) => x.toFixed(0)).join(' ')} ms, onnxruntime-web ${c.ort.map((x) => x.toFixed(0)).join(' ')} ms; screenshot ${shot}`);
  });

  it('tuning shows its progress and finishes', { timeout: 180_000 }, async () => {
    await page.selectOption('#model', 'encoder');
    await page.selectOption('#backend', 'wasm');
    await page.fill('#budget', '3');
    await page.click('#tune');
    await idle(page, 150_000);
    const t = (await page.evaluate(() => window.demo.tune))!;
    console.log(`[${elapsed()}] tuning: ${JSON.stringify(t)}`);
    assert.equal(t.finished, true);
    assert.ok(t.total > 0 && t.done > 0 && t.kernels > 0, 'kernels were tuned');
    const bar = await page.$eval('#tune-progress', (e) => [(e as HTMLProgressElement).value, (e as HTMLProgressElement).max]);
    assert.deepEqual(bar, [1, 1]);
    assert.match(await page.textContent('#tune-text') ?? '', /kernels tuned in/);
  });

  /** Sets the generation card, presses Generate, and returns the page's result. */
  async function generateInPage(p: Page, o: { backend?: string; draft?: string; act?: string; temperature?: number; tokens?: number }, timeoutMs = 120_000): Promise<GenResult> {
    await p.selectOption('#backend', o.backend ?? 'wasm');
    await p.fill('#gen-prompt', GEN_PROMPT);
    await p.fill('#gen-tokens', String(o.tokens ?? GEN_TOKENS));
    await p.fill('#gen-temp', String(o.temperature ?? 0));
    await p.selectOption('#gen-draft', o.draft ?? 'none');
    await p.selectOption('#gen-act', o.act ?? 'f32');
    await p.evaluate(() => { window.demo.gen = undefined; });
    await p.click('#generate');
    await idle(p, timeoutMs);
    const g = (await p.evaluate(() => window.demo.gen))!;
    assert.ok(g, 'the page reports its generation');
    console.log(`[${elapsed()}] generate on ${g.backend} (draft ${g.draft}, ${g.ran}${o.temperature ? `, temperature ${o.temperature}` : ''}): ${g.ids.length} tokens, `
      + `decode ${g.stats.decodeTokensPerSec.toFixed(1)} tokens/s${g.stats.speculative ? `, acceptance ${(100 * g.stats.speculative.acceptanceRate).toFixed(0)}%` : ''}`);
    return g;
  }

  it('generates text with the trained 4-bit pair on wasm: the tokens `webjit generate` makes in Node, with and without the draft, sampled and with int8 activations', { timeout: 300_000 }, async () => {
    const g = await generateInPage(page, {});
    assert.deepEqual(g.ids, nodeGen.greedy.ids, 'greedy tokens as in Node');
    assert.equal(g.text, nodeGen.greedy.text);
    assert.equal(g.ran, 'f32');
    assert.equal(g.stats.generatedTokens, nodeGen.greedy.generated_tokens);
    assert.ok(g.stats.decodeTokensPerSec > 0 && Number.isFinite(g.stats.decodeTokensPerSec));
    assert.ok(g.createMs !== undefined && g.createMs > 0, 'the first generation loaded the model');
    assert.equal(await page.textContent('#gen-text'), GEN_PROMPT + g.text, 'the page shows the prompt and the continuation');
    assert.match(await page.textContent('#gen-stats') ?? '', /^wasm, f32 activations, greedy; \d+ prompt tokens in [\d.]+ ms \([\d.]+ tokens\/s\); \d+ tokens, decode [\d.]+ tokens\/s/);

    const d = await generateInPage(page, { draft: 'fixed' });
    assert.deepEqual(d.ids, nodeGen.greedy.ids, 'speculative greedy decoding gives the plain greedy tokens');
    const sp = d.stats.speculative!, ns = nodeGen.draft.speculative!;
    assert.ok(sp, 'the page reports the draft');
    assert.deepEqual([sp.draftTokens, sp.rounds, sp.drafted, sp.accepted], [ns.draft_tokens, ns.rounds, ns.drafted, ns.accepted], 'the same rounds as in Node');
    assert.ok(sp.accepted > 0 && sp.accepted <= sp.drafted);
    assert.match(await page.textContent('#gen-stats') ?? '', /draft: \d+ of \d+ proposed tokens accepted \(\d+%\) in \d+ rounds/);

    const s = await generateInPage(page, { temperature: 0.8 });
    assert.deepEqual(s.ids, nodeGen.sampled.ids, 'seeded sampling as in Node');
    assert.notDeepEqual(s.ids, nodeGen.greedy.ids);

    // Chromium has relaxed SIMD: int8 activations run (Node needs --experimental-wasm-relaxed-simd for the same tokens).
    const q = await generateInPage(page, { act: 'int8' });
    assert.equal(q.ran, 'int8');
    assert.deepEqual(q.ids, nodeGen.int8.ids, 'int8 activations give the tokens they give in Node');
    await page.screenshot({ path: path.join(ARTIFACTS, 'browser-demo-generate.png'), fullPage: true });
  });

  it('generation against onnxruntime-web in the page: the same greedy tokens from the same 4-bit weights', { timeout: 300_000 }, async () => {
    await page.selectOption('#backend', 'wasm');
    await page.fill('#gen-prompt', GEN_PROMPT);
    await page.fill('#gen-tokens', String(GEN_TOKENS));
    await page.selectOption('#gen-act', 'f32');
    await page.click('#gen-compare');
    await idle(page, 240_000);
    const c = (await page.evaluate(() => window.demo.genCompare))!;
    assert.equal(c.backend, 'wasm');
    assert.deepEqual(c.webjitIds, nodeGen.greedy.ids);
    assert.deepEqual(c.ortIds, nodeGen.greedy.ids, 'onnxruntime-web greedy tokens equal webjit\'s');
    assert.equal(c.firstDiff, -1);
    assert.ok([c.webjitTokensPerSec, c.ortTokensPerSec].every((x) => x > 0 && Number.isFinite(x)));
    assert.match(await page.textContent('#gen-stats') ?? '', /webjit [\d.]+ tokens\/s \(f32 activations\), onnxruntime-web [\d.]+ tokens\/s: webjit [\d.]+× (faster|slower)\. The tokens are identical\./);
    console.log(`[${elapsed()}] generation in the page: webjit ${c.webjitTokensPerSec.toFixed(1)} tokens/s, onnxruntime-web ${c.ortTokensPerSec.toFixed(1)} (same weights, wasm)`);
  });

  it('generates on webgpu (SwiftShader) the greedy tokens of wasm and onnxruntime', { timeout: 420_000 }, async () => {
    // 12 tokens: SwiftShader makes under one token a second with this model (speculative decoding on WebGPU is tested
    // in Node on lavapipe, test/llm-webgpu.test.ts).
    const n = 12, want = nodeGen.greedy.ids.slice(0, n);
    const g = await generateInPage(page, { backend: 'webgpu', tokens: n }, 300_000);
    assert.equal(g.backend, 'webgpu');
    assert.deepEqual(g.ids, want);
    assert.equal(await page.textContent('#gen-text'), GEN_PROMPT + g.text);
    assert.match(await page.textContent('#gen-stats') ?? '', /^webgpu, f32 activations, greedy; /);
  });

  it('PP-OCRv4 on webgpu (SwiftShader) reads two text lines of different widths', { timeout: 420_000 }, async () => {
    // Two shapes ([1,3,48,320] and [1,3,48,632]): each compiles its own kernels, seconds each on SwiftShader.
    for (const name of ['hello', 'invoice']) {
      const r = await runInPage(page, 'ocr', 'webgpu', name, 200_000);
      assert.equal(r.text, nodeTexts.get(name), `${name}: the page read "${r.text}", webjit ocr in Node "${nodeTexts.get(name)}"`);
    }
    assert.match(await page.textContent('#env-session') ?? '', /^webgpu, adapter /);
    assert.ok(await page.evaluate(() => window.demo.env.adapter), 'the session names its adapter');
    await page.screenshot({ path: path.join(ARTIFACTS, 'browser-demo-ocr-webgpu.png'), fullPage: true });
  });

  it('the encoder and the decoder on webgpu match onnxruntime-node', { timeout: 300_000 }, async () => {
    await assertMatchesOrt(await runInPage(page, 'encoder', 'webgpu', undefined, 140_000), 'encoder-small.onnx', 'encoder on webgpu');
    await assertMatchesOrt(await runInPage(page, 'decoder', 'webgpu', undefined, 140_000), 'decoder-small.onnx', 'decoder on webgpu');
  });

  it('without COOP/COEP the page says Wasm runs on one thread, and still computes right', { timeout: 120_000 }, async () => {
    bare = await serveDemo({ host: '127.0.0.1', port: 0, isolate: false });
    const p = await openPage(`${bare.url}?threads=2`);
    assert.equal(await p.evaluate(() => globalThis.crossOriginIsolated), false);
    assert.match(await p.textContent('#env-isolated') ?? '', /^no: .*one thread/);
    await assertMatchesOrt(await runInPage(p, 'encoder', 'wasm'), 'encoder-small.onnx', 'encoder on wasm, one thread');
    assert.equal(await p.evaluate(() => window.demo.env.wasmThreads), 1);
    assert.match(await p.evaluate(() => window.demo.env.wasmNote) ?? '', /not cross-origin isolated/);
    assert.match(await p.textContent('#env-wasm') ?? '', /^1 thread \(running on one thread: the page is not cross-origin isolated/);
    await p.close();
  });

  it('raised no error in the page', async () => {
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(await page.evaluate(() => window.demo.errors), []);
  });
});
