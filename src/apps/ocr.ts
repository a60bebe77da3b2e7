// PP-OCR text recognition around a session: image → [1,3,48,W] tensor, CTC greedy decoding with the dictionary.
import { InputError } from '../errors.js';
import { InferenceSession, type SessionOptions } from '../session.js';
import { Tensor } from '../tensor.js';

export interface RgbaImage {
  width: number;
  height: number;
  /** RGBA bytes, row-major. */
  data: Uint8Array | Uint8ClampedArray;
}

export interface Recognition {
  text: string;
  /** Mean probability of the kept characters. */
  confidence: number;
  ms: number;
}

/**
 * PaddleOCR's recognition preprocessing: bilinear resize to height 48 keeping the aspect ratio,
 * BGR channel order, (x/255 - 0.5)/0.5, right-padded with zeros to a width of at least 320.
 */
export function recInput(img: RgbaImage, height = 48, minWidth = 320): Tensor {
  if (img.width <= 0 || img.height <= 0) throw new InputError(`image of ${img.width}x${img.height} pixels is empty`);
  const w = Math.max(1, Math.min(Math.ceil((height * img.width) / img.height), 4096));
  const W = Math.max(minWidth, Math.ceil(w / 8) * 8);
  const out = new Float32Array(3 * height * W);
  const sx = img.width / w, sy = img.height / height;
  for (let y = 0; y < height; y++) {
    const fy = Math.max(0, (y + 0.5) * sy - 0.5);
    const y0 = Math.min(img.height - 1, Math.floor(fy)), y1 = Math.min(img.height - 1, y0 + 1), wy = fy - y0;
    for (let x = 0; x < w; x++) {
      const fx = Math.max(0, (x + 0.5) * sx - 0.5);
      const x0 = Math.min(img.width - 1, Math.floor(fx)), x1 = Math.min(img.width - 1, x0 + 1), wx = fx - x0;
      for (let c = 0; c < 3; c++) {
        const p = (yy: number, xx: number) => img.data[(yy * img.width + xx) * 4 + c];
        const v = (1 - wy) * ((1 - wx) * p(y0, x0) + wx * p(y0, x1)) + wy * ((1 - wx) * p(y1, x0) + wx * p(y1, x1));
        // Channel c of RGBA goes to plane 2-c: the model was trained on BGR images.
        out[(2 - c) * height * W + y * W + x] = (v / 255 - 0.5) / 0.5;
      }
    }
  }
  return new Tensor('float32', out, [1, 3, height, W]);
}

/** CTC greedy decoding: argmax per step, repeats collapsed, blank (class 0) dropped. */
/** An image as the PP-OCR detector's (and classifier's) input: ImageNet-normalised, padded with white to multiples of `padTo`. */
export function detInput(img: RgbaImage, padTo = 32): Tensor {
  if (img.width <= 0 || img.height <= 0) throw new InputError(`image of ${img.width}x${img.height} pixels is empty`);
  const H = Math.ceil(img.height / padTo) * padTo, W = Math.ceil(img.width / padTo) * padTo;
  const mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225];
  const out = new Float32Array(3 * H * W);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const v = y < img.height && x < img.width ? img.data[(y * img.width + x) * 4 + c] : 255;
        out[c * H * W + y * W + x] = (v / 255 - mean[c]) / std[c];
      }
    }
  }
  return new Tensor('float32', out, [1, 3, H, W]);
}

export function ctcDecode(probs: Tensor, dict: string[]): { text: string; confidence: number } {
  const [, T, C] = probs.dims;
  const p = probs.data as Float32Array;
  let text = '', sum = 0, kept = 0, prev = -1;
  for (let t = 0; t < T; t++) {
    let best = 0, bv = -Infinity;
    for (let c = 0; c < C; c++) if (p[t * C + c] > bv) { bv = p[t * C + c]; best = c; }
    if (best !== 0 && best !== prev) { text += dict[best - 1] ?? ''; sum += bv; kept++; }
    prev = best;
  }
  return { text, confidence: kept ? sum / kept : 0 };
}

/** The dictionary file's characters, plus the space PP-OCR appends as the last class. */
export function parseDict(text: string): string[] {
  const keys = text.split(/\r?\n/);
  if (keys[keys.length - 1] === '') keys.pop();
  return [...keys, ' '];
}

export class TextRecognizer {
  private constructor(private readonly session: InferenceSession, private readonly dict: string[]) {}

  static async create(model: string | Uint8Array, dictText: string, opts: SessionOptions = {}): Promise<TextRecognizer> {
    return new TextRecognizer(await InferenceSession.create(model, opts), parseDict(dictText));
  }

  async recognize(img: RgbaImage): Promise<Recognition> {
    const t0 = performance.now();
    const x = recInput(img);
    const out = await this.session.run({ [this.session.inputNames[0]]: x });
    const r = ctcDecode(out[this.session.outputNames[0]], this.dict);
    return { ...r, ms: performance.now() - t0 };
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
