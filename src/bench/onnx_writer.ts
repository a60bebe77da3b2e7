// A small ONNX ModelProto writer for the op benchmarks: one graph of a few nodes with typed inputs, outputs and
// initializers, encoded as protobuf bytes that every engine (webjit, onnxruntime-web, onnxruntime-node) loads.
import { Tensor, type DType } from '../tensor.js';

/** TensorProto.DataType codes of the dtypes the benchmarks use. */
const ONNX_TYPE: Partial<Record<DType, number>> = { float32: 1, uint8: 2, int8: 3, int32: 6, int64: 7, bool: 9, float16: 10 };

export type AttrValue = number | number[] | string | { float: number } | { floats: number[] };

export interface WNode {
  op: string;
  inputs: string[];
  outputs: string[];
  attrs?: Record<string, AttrValue>;
  domain?: string;
  /** NodeProto.name (field 3). */
  name?: string;
}

export interface WGraph {
  nodes: WNode[];
  /** Dims are numbers or symbolic names (dim_param). */
  inputs: { name: string; dtype: DType; dims: (number | string)[] }[];
  outputs: { name: string; dtype: DType; dims?: (number | string)[] }[];
  initializers?: Record<string, Tensor>;
  opset?: number;
  /** Opset imports of other domains, e.g. { 'com.microsoft': 1 }. */
  domains?: Record<string, number>;
}

/** Protobuf bytes in chunks: small fields go to a number list, large byte fields stay the caller's arrays. */
class Buf {
  private readonly chunks: Uint8Array[] = [];
  private cur: number[] = [];
  private size = 0;
  get length(): number { return this.size + this.cur.length; }
  private push(x: number): void { this.cur.push(x); }
  private flush(): void {
    if (this.cur.length) { this.chunks.push(Uint8Array.from(this.cur)); this.size += this.cur.length; this.cur = []; }
  }
  varint(v: number | bigint): this {
    let x = BigInt.asUintN(64, BigInt(v));
    while (x > 127n) { this.push(Number(x & 127n) | 128); x >>= 7n; }
    this.push(Number(x));
    return this;
  }
  tag(field: number, wire: number): this { return this.varint((field << 3) | wire); }
  int(field: number, v: number | bigint): this { return this.tag(field, 0).varint(v); }
  bytes(field: number, data: Uint8Array | Buf): this {
    this.tag(field, 2).varint(data.length);
    this.flush();
    if (data instanceof Buf) { data.flush(); this.chunks.push(...data.chunks); } else this.chunks.push(data);
    this.size += data.length;
    return this;
  }
  str(field: number, s: string): this { return this.bytes(field, new TextEncoder().encode(s)); }
  msg(field: number, build: (m: Buf) => void): this { const m = new Buf(); build(m); return this.bytes(field, m); }
  f32(field: number, v: number): this {
    this.tag(field, 5);
    const a = new Uint8Array(new Float32Array([v]).buffer);
    for (const x of a) this.push(x);
    return this;
  }
  toBytes(): Uint8Array {
    this.flush();
    const out = new Uint8Array(this.size);
    let p = 0;
    for (const c of this.chunks) { out.set(c, p); p += c.length; }
    return out;
  }
}

function attribute(m: Buf, name: string, v: AttrValue): void {
  m.str(1, name);
  // AttributeProto: f 2, i 3, s 4, floats 7, ints 8, type 20 (FLOAT 1, INT 2, STRING 3, FLOATS 6, INTS 7).
  if (typeof v === 'number') { m.int(3, v); m.int(20, 2); }
  else if (typeof v === 'string') { m.str(4, v); m.int(20, 3); }
  else if (Array.isArray(v)) { for (const x of v) m.int(8, x); m.int(20, 7); }
  else if ('float' in v) { m.f32(2, v.float); m.int(20, 1); }
  else { for (const x of v.floats) m.f32(7, x); m.int(20, 6); }
}

function valueInfo(m: Buf, name: string, dtype: DType, dims?: (number | string)[]): void {
  m.str(1, name);
  m.msg(2, (tp) => tp.msg(1, (tt) => {
    tt.int(1, ONNX_TYPE[dtype] ?? 0);
    if (dims) tt.msg(2, (sh) => { for (const d of dims) sh.msg(1, (dim) => (typeof d === 'number' ? dim.int(1, d) : dim.str(2, d))); });
  }));
}

/** The model's bytes (ir_version 8, opset 17 unless given). */
export function writeModel(g: WGraph): Uint8Array {
  const m = new Buf();
  m.int(1, 8);
  m.msg(8, (os) => { os.str(1, ''); os.int(2, g.opset ?? 17); });
  for (const [d, v] of Object.entries(g.domains ?? {})) m.msg(8, (os) => { os.str(1, d); os.int(2, v); });
  m.msg(7, (gr) => {
    for (const n of g.nodes) {
      gr.msg(1, (nd) => {
        for (const x of n.inputs) nd.str(1, x);
        for (const y of n.outputs) nd.str(2, y);
        if (n.name) nd.str(3, n.name);
        nd.str(4, n.op);
        for (const [k, v] of Object.entries(n.attrs ?? {})) nd.msg(5, (a) => attribute(a, k, v));
        if (n.domain) nd.str(7, n.domain);
      });
    }
    gr.str(2, 'bench');
    for (const [name, t] of Object.entries(g.initializers ?? {})) {
      gr.msg(5, (tp) => {
        for (const d of t.dims) tp.int(1, d);
        tp.int(2, ONNX_TYPE[t.type] ?? 0);
        tp.str(8, name);
        const d = t.data as unknown as ArrayBufferView;
        tp.bytes(9, new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
      });
    }
    for (const i of g.inputs) gr.msg(11, (vi) => valueInfo(vi, i.name, i.dtype, i.dims));
    for (const o of g.outputs) gr.msg(12, (vi) => valueInfo(vi, o.name, o.dtype, o.dims));
  });
  return m.toBytes();
}

export { Tensor };
