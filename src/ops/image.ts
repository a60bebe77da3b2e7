// Reference kernel: ImageDecoder. PNG through pngjs, TIFF through utif2 (both loaded on first use);
// other formats (JPEG, BMP, WebP, ...) are refused with UnsupportedError naming the format.
import { InputError, UnsupportedError } from '../errors.js';
import { Tensor } from '../tensor.js';
import { registerOp, type KernelContext } from './registry.js';
import { input } from './util.js';

const where = (ctx: KernelContext) => ({ node: ctx.node.name, op: ctx.node.opType });

interface Rgba { width: number; height: number; data: Uint8Array }
interface PngJs { PNG: { sync: { read(buf: Uint8Array): Rgba } } }
interface Ifd { width: number; height: number }
interface Utif { decode(buf: ArrayBuffer): Ifd[]; decodeImage(buf: ArrayBuffer, ifd: Ifd): void; toRGBA8(ifd: Ifd): Uint8Array }

type Require = (id: string) => unknown;
let req: Require | undefined;
/** Loads a CommonJS decoder package on first use (Node only; no static node: import, so bundles stay browser-safe). */
function load<T>(pkg: string, format: string, ctx: KernelContext): T {
  try {
    if (!req) {
      const proc = (globalThis as { process?: { getBuiltinModule?: (m: string) => unknown } }).process;
      const mod = proc?.getBuiltinModule?.('node:module') as { createRequire(url: string): Require } | undefined;
      if (!mod) throw new Error('no require');
      req = mod.createRequire(import.meta.url);
    }
    return req(pkg) as T;
  } catch {
    throw new UnsupportedError(`decoding ${format} needs the npm package '${pkg}', which is not installed`, where(ctx), `npm install ${pkg}`);
  }
}

function sniff(b: Uint8Array): string {
  const at = (i: number, ...v: number[]) => v.every((x, k) => b[i + k] === x);
  if (at(0, 0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)) return 'PNG';
  if (at(0, 0xff, 0xd8, 0xff)) return 'JPEG';
  if (at(0, 0x49, 0x49, 0x2a, 0x00) || at(0, 0x4d, 0x4d, 0x00, 0x2a)) return 'TIFF';
  if (at(0, 0x42, 0x4d)) return 'BMP';
  if (at(0, 0x52, 0x49, 0x46, 0x46) && at(8, 0x57, 0x45, 0x42, 0x50)) return 'WebP';
  if (at(0, 0x47, 0x49, 0x46, 0x38)) return 'GIF';
  if (at(0, 0x00, 0x00, 0x00, 0x0c, 0x6a, 0x50, 0x20, 0x20) || at(0, 0xff, 0x4f, 0xff, 0x51)) return 'JPEG 2000';
  if (at(0, 0x50) && b[1] >= 0x31 && b[1] <= 0x36) return 'PNM';
  return 'unknown';
}

registerOp('ImageDecoder', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  if (x.type !== 'uint8' || x.dims.length !== 1) throw new InputError(`encoded_stream must be a 1-D uint8 tensor, got ${x.type}[${x.dims.join(',')}]`, where(ctx));
  const fmt = ctx.attr.string('pixel_format', 'RGB');
  if (fmt !== 'RGB' && fmt !== 'BGR' && fmt !== 'Grayscale') throw new InputError(`pixel_format '${fmt}' must be RGB, BGR or Grayscale`, where(ctx));
  const bytes = x.data as Uint8Array;
  const kind = sniff(bytes);
  let img: Rgba;
  try {
    if (kind === 'PNG') {
      const png = load<PngJs>('pngjs', kind, ctx);
      const B = (globalThis as { Buffer?: { from(b: ArrayBufferLike, o: number, n: number): Uint8Array } }).Buffer;
      img = png.PNG.sync.read(B ? B.from(bytes.buffer, bytes.byteOffset, bytes.byteLength) : bytes);
    } else if (kind === 'TIFF') {
      const utif = load<Utif>('utif2', kind, ctx);
      const buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
      const ifds = utif.decode(buf);
      if (!ifds.length) throw new InputError('the TIFF stream holds no image', where(ctx));
      utif.decodeImage(buf, ifds[0]);
      img = { width: ifds[0].width, height: ifds[0].height, data: utif.toRGBA8(ifds[0]) };
    } else {
      throw new UnsupportedError(`decoding ${kind === 'unknown' ? 'this image format' : kind} images is not supported (webjit decodes PNG and TIFF)`, where(ctx));
    }
  } catch (e) {
    if (e instanceof UnsupportedError || e instanceof InputError) throw e;
    throw new InputError(`the ${kind} stream could not be decoded: ${(e as Error).message}`, where(ctx));
  }
  const { width: W, height: H, data } = img;
  const n = W * H;
  if (data.length < n * 4) throw new InputError(`the ${kind} decoder returned ${data.length} bytes for ${W}x${H} RGBA`, where(ctx));
  if (fmt === 'Grayscale') {
    const out = new Uint8Array(n);
    // ITU-R 601-2 luma with the rounding of PIL's convert('L').
    for (let i = 0; i < n; i++) out[i] = (data[4 * i] * 19595 + data[4 * i + 1] * 38470 + data[4 * i + 2] * 7471 + 0x8000) >>> 16;
    return [new Tensor('uint8', out, [H, W, 1])];
  }
  const out = new Uint8Array(n * 3);
  const r = fmt === 'RGB' ? 0 : 2, b = 2 - r;
  for (let i = 0; i < n; i++) {
    out[3 * i] = data[4 * i + r];
    out[3 * i + 1] = data[4 * i + 1];
    out[3 * i + 2] = data[4 * i + b];
  }
  return [new Tensor('uint8', out, [H, W, 3])];
});
