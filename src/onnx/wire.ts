// Protobuf wire-format reader over a Uint8Array: zero-copy sub-views, bounds-checked, typed errors.
import { ModelFormatError } from '../errors.js';

export const WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5;

export class WireReader {
  pos: number;
  readonly end: number;
  private readonly view: DataView;
  constructor(readonly buf: Uint8Array, readonly path: string, start = 0, end = buf.length, view?: DataView) {
    this.pos = start;
    this.end = end;
    this.view = view ?? new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  fail(msg: string): never {
    throw new ModelFormatError(`${msg} (byte ${this.pos})`, { path: this.path }, 'the file is not a valid ONNX model or is truncated');
  }

  get done(): boolean {
    return this.pos >= this.end;
  }

  /** Varint as a JS number; exact up to 2^53, and int64 negatives (10-byte varints) come back negative. */
  varint(): number {
    const b = this.buf;
    const start = this.pos;
    let x = 0;
    // Fast path: up to 4 bytes (28 bits) fit a 32-bit integer exactly.
    for (let i = 0; i < 4; i++) {
      if (this.pos >= this.end) this.fail('truncated varint');
      const byte = b[this.pos++];
      x |= (byte & 0x7f) << (7 * i);
      if (!(byte & 0x80)) return x;
    }
    this.pos = start;
    return Number(this.varintBig());
  }

  /** Varint as an exact BigInt (signed int64 interpretation). */
  varintBig(): bigint {
    const b = this.buf;
    let x = 0n, shift = 0n;
    for (let i = 0; ; i++) {
      if (this.pos >= this.end) this.fail('truncated varint');
      if (i >= 10) this.fail('varint longer than 10 bytes');
      const byte = b[this.pos++];
      x |= BigInt(byte & 0x7f) << shift;
      shift += 7n;
      if (!(byte & 0x80)) break;
    }
    return BigInt.asIntN(64, x);
  }

  tag(): [field: number, wire: number] {
    const t = this.varint();
    if (t <= 0) this.fail(`invalid field tag ${t}`);
    return [Math.floor(t / 8), t & 7];
  }

  /** Length-delimited bytes as a view (no copy). */
  bytes(): Uint8Array {
    const n = this.varint();
    if (n < 0 || this.pos + n > this.end) this.fail(`length ${n} runs past the end of the message`);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  string(): string {
    return textDecoder.decode(this.bytes());
  }

  /** A sub-reader over a length-delimited field. */
  sub(path: string): WireReader {
    const n = this.varint();
    if (n < 0 || this.pos + n > this.end) {
      throw new ModelFormatError(`length ${n} runs past the end of the enclosing message (byte ${this.pos})`, { path },
        'the file is not a valid ONNX model or is truncated');
    }
    const r = new WireReader(this.buf, path, this.pos, this.pos + n, this.view);
    this.pos += n;
    return r;
  }

  f32(): number {
    if (this.pos + 4 > this.end) this.fail('truncated float');
    const v = this.view.getFloat32(this.pos, true);
    this.pos += 4;
    return v;
  }

  f64(): number {
    if (this.pos + 8 > this.end) this.fail('truncated double');
    const v = this.view.getFloat64(this.pos, true);
    this.pos += 8;
    return v;
  }

  skip(wire: number): void {
    switch (wire) {
      case WT_VARINT: this.varint(); return;
      case WT_I64: this.pos += 8; break;
      case WT_LEN: { const n = this.varint(); this.pos += n; break; }
      case WT_I32: this.pos += 4; break;
      default: this.fail(`unsupported wire type ${wire}`);
    }
    if (this.pos > this.end) this.fail('field runs past the end of the message');
  }

  /** Repeated varints, packed or not (call once per occurrence of the field). */
  varints(wire: number, out: number[]): void {
    if (wire === WT_LEN) {
      const r = this.sub(this.path);
      while (!r.done) out.push(r.varint());
    } else out.push(this.varint());
  }

  varintsBig(wire: number, out: bigint[]): void {
    if (wire === WT_LEN) {
      const r = this.sub(this.path);
      while (!r.done) out.push(r.varintBig());
    } else out.push(this.varintBig());
  }

  floats(wire: number, out: number[]): void {
    if (wire === WT_LEN) {
      const r = this.sub(this.path);
      while (!r.done) out.push(r.f32());
    } else out.push(this.f32());
  }

  doubles(wire: number, out: number[]): void {
    if (wire === WT_LEN) {
      const r = this.sub(this.path);
      while (!r.done) out.push(r.f64());
    } else out.push(this.f64());
  }

  expect(wire: number, want: number, field: string): void {
    if (wire !== want) this.fail(`field ${field} has wire type ${wire}, expected ${want}`);
  }
}

const textDecoder = new TextDecoder('utf-8');
