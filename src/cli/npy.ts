// NumPy .npy files (format versions 1–3): read and write tensors, little-endian, C order.
import { InputError, UnsupportedError } from '../errors.js';
import { DTYPES, sizeOf, Tensor, type DType, type TypedArray } from '../tensor.js';

const DESCR: Partial<Record<DType, string>> = {
  float32: '<f4', float64: '<f8', float16: '<f2', int8: '|i1', uint8: '|u1', int16: '<i2', uint16: '<u2',
  int32: '<i4', uint32: '<u4', int64: '<i8', uint64: '<u8', bool: '|b1',
};
const FROM_DESCR = new Map<string, DType>(Object.entries(DESCR).map(([k, v]) => [v!.replace('|', '<'), k as DType]));

export function encodeNpy(t: Tensor): Uint8Array {
  let descr = DESCR[t.type];
  let body: Uint8Array;
  if (t.type === 'string') {
    const strs = t.data as string[];
    const width = Math.max(1, ...strs.map((s) => [...s].length));
    descr = `<U${width}`;
    const u32 = new Uint32Array(strs.length * width);
    strs.forEach((s, i) => { let j = 0; for (const ch of s) u32[i * width + j++] = ch.codePointAt(0)!; });
    body = new Uint8Array(u32.buffer);
  } else {
    if (!descr) throw new UnsupportedError(`dtype ${t.type} has no NumPy equivalent`, {}, 'cast the output to float32 first');
    const d = t.data as TypedArray;
    body = new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
  }
  const shape = t.dims.length === 1 ? `(${t.dims[0]},)` : `(${t.dims.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }`;
  const pad = 64 - ((10 + header.length + 1) % 64);
  header += ' '.repeat(pad % 64) + '\n';
  const out = new Uint8Array(10 + header.length + body.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]);
  out[8] = header.length & 0xff;
  out[9] = header.length >> 8;
  out.set(new TextEncoder().encode(header), 10);
  out.set(body, 10 + header.length);
  return out;
}

export function decodeNpy(bytes: Uint8Array, what = 'npy file'): Tensor {
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];
  if (bytes.length < 10 || magic.some((m, i) => bytes[i] !== m)) throw new InputError(`${what} is not a NumPy .npy file`);
  const major = bytes[6];
  const hlen = major === 1 ? bytes[8] | (bytes[9] << 8) : new DataView(bytes.buffer, bytes.byteOffset).getUint32(8, true);
  const hstart = major === 1 ? 10 : 12;
  if (hstart + hlen > bytes.length) throw new InputError(`${what}: header runs past the end`);
  const header = new TextDecoder().decode(bytes.subarray(hstart, hstart + hlen));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeStr = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (!descr || !fortran || shapeStr === undefined) throw new InputError(`${what}: malformed header ${header.trim()}`);
  if (fortran === 'True') throw new UnsupportedError(`${what}: Fortran-order arrays are not supported`, {}, 'save with np.ascontiguousarray');
  const dims = shapeStr.split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  const n = sizeOf(dims);
  const body = bytes.subarray(hstart + hlen);
  const u = /^[<|=]U(\d+)$/.exec(descr);
  if (u) {
    const w = Number(u[1]);
    if (body.length < n * w * 4) throw new InputError(`${what}: data is shorter than its shape`);
    const dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
    const strs: string[] = [];
    for (let i = 0; i < n; i++) {
      let s = '';
      for (let j = 0; j < w; j++) { const c = dv.getUint32((i * w + j) * 4, true); if (!c) break; s += String.fromCodePoint(c); }
      strs.push(s);
    }
    return new Tensor('string', strs, dims);
  }
  const dtype = FROM_DESCR.get(descr.replace('|', '<').replace('=', '<'));
  if (!dtype) throw new UnsupportedError(`${what}: NumPy dtype '${descr}' is not supported`, {}, 'use little-endian numeric or bool arrays');
  const bytesPer = DTYPES[dtype].rawBytes;
  if (body.length < n * bytesPer) throw new InputError(`${what}: data has ${body.length} bytes, shape needs ${n * bytesPer}`);
  const copy = body.slice(0, n * bytesPer);
  const data = DTYPES[dtype].make(0) as TypedArray;
  const C = data.constructor as { new (b: ArrayBuffer, o: number, n: number): TypedArray };
  return new Tensor(dtype, new C(copy.buffer, 0, n), dims);
}

/** File name for a tensor name: characters outside [A-Za-z0-9._:-] become %XX of their UTF-8 bytes. */
export function npyFileName(name: string): string {
  let out = '';
  for (const b of new TextEncoder().encode(name)) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9._:-]/.test(c) ? c : '%' + b.toString(16).toUpperCase().padStart(2, '0');
  }
  return out + '.npy';
}
