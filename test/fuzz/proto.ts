// A generic protobuf tree for structure-aware fuzzing: ONNX messages parsed into fields (sub-messages recursively,
// by a schema of which field numbers hold which message), edited, and written back as valid wire bytes.

export type Kind =
  | 'model' | 'graph' | 'node' | 'attr' | 'tensor' | 'sparse' | 'vinfo' | 'type' | 'ttype' | 'seqtype' | 'maptype'
  | 'opttype' | 'shape' | 'dim' | 'opset' | 'pair' | 'function';

/** For each message kind, the field numbers that hold sub-messages and their kinds. */
const SCHEMA: Record<Kind, Record<number, Kind>> = {
  model: { 7: 'graph', 8: 'opset', 14: 'pair', 25: 'function' },
  graph: { 1: 'node', 5: 'tensor', 15: 'sparse', 11: 'vinfo', 12: 'vinfo', 13: 'vinfo' },
  node: { 5: 'attr' },
  attr: { 5: 'tensor', 6: 'graph', 10: 'tensor', 11: 'graph', 14: 'type', 15: 'type', 22: 'sparse', 23: 'sparse' },
  tensor: { 13: 'pair' },
  sparse: { 1: 'tensor', 2: 'tensor' },
  vinfo: { 2: 'type' },
  type: { 1: 'ttype', 4: 'seqtype', 5: 'maptype', 9: 'opttype', 8: 'ttype' },
  ttype: { 2: 'shape' },
  seqtype: { 1: 'type' },
  maptype: { 2: 'type' },
  opttype: { 1: 'type' },
  shape: { 1: 'dim' },
  dim: {},
  opset: {},
  pair: {},
  function: { 7: 'node', 9: 'opset', 11: 'attr' },
};

export interface Field {
  no: number;
  /** Wire type: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32. */
  wt: number;
  /** Varints as BigInt (exact int64); fixed and plain bytes as bytes; known sub-messages parsed. */
  v: bigint | Uint8Array | Msg;
}

export interface Msg {
  kind: Kind;
  fields: Field[];
}

class Reader {
  pos = 0;
  constructor(readonly b: Uint8Array, readonly end = b.length) {}
  varint(): bigint {
    let x = 0n, shift = 0n;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new Error('truncated');
      const byte = this.b[this.pos++];
      x |= BigInt(byte & 0x7f) << shift;
      shift += 7n;
      if (!(byte & 0x80)) return BigInt.asIntN(64, x);
    }
    throw new Error('long varint');
  }
  take(n: number): Uint8Array {
    if (n < 0 || this.pos + n > this.end) throw new Error('overrun');
    const v = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
}

/** Parses a message of `kind`; a length-delimited field of a message kind that does not parse stays bytes. */
export function parse(bytes: Uint8Array, kind: Kind = 'model'): Msg {
  const r = new Reader(bytes);
  const fields: Field[] = [];
  while (r.pos < r.end) {
    const tag = Number(r.varint());
    const no = tag >>> 3, wt = tag & 7;
    if (wt === 0) fields.push({ no, wt, v: r.varint() });
    else if (wt === 1) fields.push({ no, wt, v: r.take(8) });
    else if (wt === 5) fields.push({ no, wt, v: r.take(4) });
    else if (wt === 2) {
      const body = r.take(Number(r.varint()));
      const sub = SCHEMA[kind][no];
      let v: Uint8Array | Msg = body;
      if (sub) { try { v = parse(body, sub); } catch { v = body; } }
      fields.push({ no, wt, v });
    } else throw new Error(`wire type ${wt}`);
  }
  return { kind, fields };
}

class Writer {
  private parts: Uint8Array[] = [];
  private small: number[] = [];
  private size = 0;
  private flush(): void {
    if (this.small.length) { this.parts.push(Uint8Array.from(this.small)); this.size += this.small.length; this.small = []; }
  }
  varint(x: bigint): void {
    let u = BigInt.asUintN(64, x);
    do {
      let byte = Number(u & 0x7fn);
      u >>= 7n;
      if (u) byte |= 0x80;
      this.small.push(byte);
    } while (u);
  }
  bytes(b: Uint8Array): void {
    if (b.length < 64) { for (const x of b) this.small.push(x); return; }
    this.flush();
    this.parts.push(b);
    this.size += b.length;
  }
  out(): Uint8Array {
    this.flush();
    const o = new Uint8Array(this.size);
    let at = 0;
    for (const p of this.parts) { o.set(p, at); at += p.length; }
    return o;
  }
}

export function serialize(m: Msg): Uint8Array {
  const w = new Writer();
  for (const f of m.fields) {
    w.varint(BigInt(f.no * 8 + f.wt));
    if (f.wt === 0) w.varint(f.v as bigint);
    else if (f.wt === 1 || f.wt === 5) w.bytes(f.v as Uint8Array);
    else {
      const body = f.v instanceof Uint8Array ? f.v : serialize(f.v as Msg);
      w.varint(BigInt(body.length));
      w.bytes(body);
    }
  }
  return w.out();
}

/** A packed repeated varint field's bytes. */
export function packVarints(xs: bigint[]): Uint8Array {
  const w = new Writer();
  for (const x of xs) w.varint(x);
  return w.out();
}

/** The values of a packed repeated varint field. */
export function unpackVarints(b: Uint8Array): bigint[] {
  const r = new Reader(b), out: bigint[] = [];
  while (r.pos < r.end) out.push(r.varint());
  return out;
}

export function clone(m: Msg): Msg {
  return { kind: m.kind, fields: m.fields.map((f) => ({ no: f.no, wt: f.wt, v: isMsg(f.v) ? clone(f.v) : f.v })) };
}

export const isMsg = (v: Field['v']): v is Msg => typeof v === 'object' && !(v instanceof Uint8Array);

/** Every message of `kind` in the tree, depth first, with its parent (graphs inside attributes included). */
export function collect(m: Msg, kind: Kind, out: { msg: Msg; parent: Msg | null }[] = [], parent: Msg | null = null) {
  if (m.kind === kind) out.push({ msg: m, parent });
  for (const f of m.fields) if (isMsg(f.v)) collect(f.v, kind, out, m);
  return out;
}

const enc = new TextEncoder(), dec = new TextDecoder();
export const str = (f: Field): string => (f.v instanceof Uint8Array ? dec.decode(f.v) : '');
export const strField = (no: number, s: string): Field => ({ no, wt: 2, v: enc.encode(s) });
export const intField = (no: number, x: bigint | number): Field => ({ no, wt: 0, v: BigInt(x) });
export const get = (m: Msg, no: number): Field[] => m.fields.filter((f) => f.no === no);
export const strings = (m: Msg, no: number): string[] => get(m, no).map(str);
