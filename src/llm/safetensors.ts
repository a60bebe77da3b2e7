// safetensors, read and written: an 8-byte little-endian header length, a JSON header naming each tensor's dtype,
// shape and byte range, then the bytes. Hugging Face checkpoints use it, and webjit's quantized format is a
// safetensors file whose __metadata__ says what the tensors are.
import { GraphError } from '../errors.js';
import { f16ToF32, bf16ToF32, f32ToF16 } from '../ops/util.js';

export type StDType = 'F32' | 'F16' | 'BF16' | 'U8' | 'I8' | 'I32' | 'I64';
const BYTES: Record<StDType, number> = { F32: 4, F16: 2, BF16: 2, U8: 1, I8: 1, I32: 4, I64: 8 };

export interface StTensor { dtype: StDType; shape: number[]; bytes: Uint8Array }
export interface StFile { tensors: Map<string, StTensor>; metadata: Record<string, string> }

/** Parses a safetensors file; the tensors' bytes are views into `buf`. */
export function readSafetensors(buf: Uint8Array, what = 'safetensors file'): StFile {
  if (buf.byteLength < 8) throw badFile(what, `${buf.byteLength} bytes, fewer than the 8-byte header length`);
  const n = headerLength(buf, buf.byteLength, what);
  const body = buf.subarray(8 + n);
  return parseHeader(buf.subarray(8, 8 + n), body.byteLength, what, (a, b) => body.subarray(a, b));
}

/**
 * Parses a safetensors file through `read(offset, length)` (Node: fs.readSync on an open file): only the header is
 * read now, and each tensor's bytes are read again, into a buffer of their own, whenever its `bytes` is taken, so
 * that a checkpoint larger than memory can be converted tensor by tensor.
 */
export function readSafetensorsLazy(read: (offset: number, length: number) => Uint8Array, fileBytes: number, what = 'safetensors file'): StFile {
  if (fileBytes < 8) throw badFile(what, `${fileBytes} bytes, fewer than the 8-byte header length`);
  const n = headerLength(read(0, 8), fileBytes, what);
  return parseHeader(read(8, n), fileBytes - 8 - n, what, (a, b) => read(8 + n + a, b - a));
}

const badFile = (what: string, m: string) => new GraphError(`${what}: ${m}`, {}, 'the file is not a safetensors file or is truncated');

function headerLength(first8: Uint8Array, fileBytes: number, what: string): number {
  const n = Number(new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true));
  if (n > fileBytes - 8 || n > 100_000_000) throw badFile(what, `header length ${n} exceeds the file (${fileBytes} bytes)`);
  return n;
}

function parseHeader(head: Uint8Array, bodyBytes: number, what: string, bytesOf: (start: number, end: number) => Uint8Array): StFile {
  const bad = (m: string) => badFile(what, m);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder().decode(head)) as Record<string, unknown>;
  } catch (e) {
    throw bad(`the header is not JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw bad('the header is not a JSON object');
  const tensors = new Map<string, StTensor>();
  let metadata: Record<string, string> = {};
  for (const [name, v] of Object.entries(header)) {
    if (name === '__metadata__') { metadata = (v ?? {}) as Record<string, string>; continue; }
    const t = v as { dtype?: string; shape?: unknown; data_offsets?: unknown };
    if (!t || typeof t.dtype !== 'string' || !(t.dtype in BYTES)) throw bad(`tensor '${name}' has dtype ${String(t?.dtype)} (webjit reads ${Object.keys(BYTES).join(', ')})`);
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isInteger(d) && d >= 0)) throw bad(`tensor '${name}' has shape ${JSON.stringify(t.shape)}`);
    const off = t.data_offsets as number[];
    if (!Array.isArray(off) || off.length !== 2 || !Number.isInteger(off[0]) || !Number.isInteger(off[1]) || off[0] < 0 || off[1] < off[0] || off[1] > bodyBytes) {
      throw bad(`tensor '${name}' has byte range ${JSON.stringify(off)} outside the ${bodyBytes} data bytes`);
    }
    const shape = t.shape as number[];
    const elems = shape.reduce((a, b) => a * b, 1);
    const dtype = t.dtype as StDType;
    if (elems * BYTES[dtype] !== off[1] - off[0]) throw bad(`tensor '${name}' ${dtype}[${shape.join(',')}] needs ${elems * BYTES[dtype]} bytes, has ${off[1] - off[0]}`);
    tensors.set(name, { dtype, shape, get bytes() { return bytesOf(off[0], off[1]); } });
  }
  return { tensors, metadata };
}

/** Writes tensors (in the given order, 8-byte aligned) and string metadata as one safetensors file. */
export function writeSafetensors(tensors: [string, StTensor][], metadata: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let off = 0;
  for (const [name, t] of tensors) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + t.bytes.byteLength] };
    off += t.bytes.byteLength;
  }
  let json = JSON.stringify(header);
  // The data starts 8-byte aligned (the header is padded with spaces, as the reference writer does).
  json += ' '.repeat((8 - ((8 + new TextEncoder().encode(json).byteLength) % 8)) % 8);
  const hb = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + hb.byteLength + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(hb.byteLength), true);
  out.set(hb, 8);
  let p = 8 + hb.byteLength;
  for (const [, t] of tensors) { out.set(t.bytes, p); p += t.bytes.byteLength; }
  return out;
}

/** A float tensor (F32, F16 or BF16) as float32. */
export function toF32(t: StTensor, name: string): Float32Array {
  const b = t.bytes;
  if (t.dtype === 'F32') {
    if (b.byteOffset % 4 === 0) return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4).slice();
    return new Float32Array(b.slice().buffer);
  }
  if (t.dtype === 'F16' || t.dtype === 'BF16') {
    const u16 = b.byteOffset % 2 === 0 ? new Uint16Array(b.buffer, b.byteOffset, b.byteLength / 2) : new Uint16Array(b.slice().buffer);
    const out = new Float32Array(u16.length);
    const cv = t.dtype === 'F16' ? f16ToF32 : bf16ToF32;
    for (let i = 0; i < u16.length; i++) out[i] = cv(u16[i]);
    return out;
  }
  throw new GraphError(`tensor '${name}' is ${t.dtype}; expected a float tensor`, { input: name });
}

export function f32Tensor(a: Float32Array, shape: number[]): StTensor {
  return { dtype: 'F32', shape, bytes: new Uint8Array(a.buffer, a.byteOffset, a.byteLength) };
}

export function f16Tensor(a: Float32Array, shape: number[]): StTensor {
  const u = new Uint16Array(a.length);
  for (let i = 0; i < a.length; i++) u[i] = f32ToF16(a[i]);
  return { dtype: 'F16', shape, bytes: new Uint8Array(u.buffer) };
}

export function u8Tensor(a: Uint8Array, shape: number[]): StTensor {
  return { dtype: 'U8', shape, bytes: a };
}
