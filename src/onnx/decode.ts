// Decodes ONNX protobuf messages (ModelProto, TensorProto, Sequence/Optional/Map) into the graph IR.
import { ModelFormatError, ResourceLimitError, UnsupportedError } from '../errors.js';
import { WireReader, WT_LEN, WT_VARINT } from './wire.js';
import type { Attribute, AttrType, Dim, FunctionDef, Graph, Model, Node, ValueInfo, ValueType } from '../graph/ir.js';
import { functionKey } from '../graph/ir.js';
import {
  DTYPES, dtypeFromOnnx, MapValue, OptionalValue, sizeOf, Tensor, TensorSequence,
  type DType, type TensorData, type TypedArray, type Value,
} from '../tensor.js';

export interface DecodeOptions {
  /** Reads `length` bytes at `offset` of the external data file `location` (relative to the model). */
  loadExternal?: (location: string, offset: number, length: number | undefined) => Uint8Array;
}

interface Ctx {
  opts: DecodeOptions;
  /** Most elements a decoded structure may expand to (sparse densification): bounded by the file size. */
  expandLimit: number;
}
const expandLimitFor = (bytes: number) => 64 * bytes + (1 << 20);

export function decodeModel(bytes: Uint8Array, opts: DecodeOptions = {}): Model {
  if (!(bytes instanceof Uint8Array)) throw new ModelFormatError('model bytes must be a Uint8Array');
  if (bytes.length === 0) throw new ModelFormatError('model file is empty');
  const ctx: Ctx = { opts, expandLimit: expandLimitFor(bytes.length) };
  const r = new WireReader(bytes, 'model');
  const m: Model = {
    irVersion: 0, producer: '', opsets: new Map(), functions: new Map(), metadata: new Map(),
    graph: undefined as unknown as Graph,
  };
  let nOpset = 0, nFunc = 0;
  while (!r.done) {
    const [f, w] = r.tag();
    switch (f) {
      case 1: r.expect(w, WT_VARINT, 'ir_version'); m.irVersion = r.varint(); break;
      case 2: r.expect(w, WT_LEN, 'producer_name'); m.producer = r.string(); break;
      case 7: r.expect(w, WT_LEN, 'graph'); m.graph = decodeGraph(r.sub('model.graph'), ctx); break;
      case 8: {
        r.expect(w, WT_LEN, 'opset_import');
        const [d, v] = decodeOpset(r.sub(`model.opset_import[${nOpset++}]`));
        m.opsets.set(normDomain(d), v);
        break;
      }
      case 14: {
        r.expect(w, WT_LEN, 'metadata_props');
        const [k, v] = decodeStringPair(r.sub('model.metadata_props'));
        m.metadata.set(k, v);
        break;
      }
      case 25: {
        r.expect(w, WT_LEN, 'functions');
        const fn = decodeFunction(r.sub(`model.functions[${nFunc++}]`), ctx);
        m.functions.set(functionKey(fn.domain, fn.name), fn);
        break;
      }
      default: r.skip(w);
    }
  }
  if (!m.graph) throw new ModelFormatError('model has no graph', { path: 'model' }, 'the file is not an ONNX model');
  if (m.opsets.size === 0) m.opsets.set('', 1);
  return m;
}

const normDomain = (d: string) => (d === 'ai.onnx' ? '' : d);

function decodeOpset(r: WireReader): [string, number] {
  let d = '', v = 0;
  while (!r.done) {
    const [f, w] = r.tag();
    if (f === 1 && w === WT_LEN) d = r.string();
    else if (f === 2 && w === WT_VARINT) v = r.varint();
    else r.skip(w);
  }
  return [d, v];
}

function decodeStringPair(r: WireReader): [string, string] {
  let k = '', v = '';
  while (!r.done) {
    const [f, w] = r.tag();
    if (f === 1 && w === WT_LEN) k = r.string();
    else if (f === 2 && w === WT_LEN) v = r.string();
    else r.skip(w);
  }
  return [k, v];
}

function decodeGraph(r: WireReader, ctx: Ctx): Graph {
  const g: Graph = { name: '', nodes: [], inputs: [], outputs: [], initializers: new Map(), valueInfo: new Map() };
  const p = r.path;
  while (!r.done) {
    const [f, w] = r.tag();
    if (w !== WT_LEN) { r.skip(w); continue; }
    switch (f) {
      case 1: g.nodes.push(decodeNode(r.sub(`${p}.node[${g.nodes.length}]`), ctx)); break;
      case 2: g.name = r.string(); break;
      case 5: {
        const t = decodeTensor(r.sub(`${p}.initializer[${g.initializers.size}]`), ctx);
        g.initializers.set(t.name, t.tensor);
        break;
      }
      case 15: {
        const t = decodeSparseTensor(r.sub(`${p}.sparse_initializer`), ctx);
        g.initializers.set(t.name, t.tensor);
        break;
      }
      case 11: g.inputs.push(decodeValueInfo(r.sub(`${p}.input[${g.inputs.length}]`))); break;
      case 12: g.outputs.push(decodeValueInfo(r.sub(`${p}.output[${g.outputs.length}]`))); break;
      case 13: { const vi = decodeValueInfo(r.sub(`${p}.value_info`)); g.valueInfo.set(vi.name, vi); break; }
      default: r.skip(w);
    }
  }
  return g;
}

function decodeNode(r: WireReader, ctx: Ctx): Node {
  const n: Node = { name: '', opType: '', domain: '', inputs: [], outputs: [], attrs: new Map() };
  let na = 0;
  while (!r.done) {
    const [f, w] = r.tag();
    if (w !== WT_LEN) { r.skip(w); continue; }
    switch (f) {
      case 1: n.inputs.push(r.string()); break;
      case 2: n.outputs.push(r.string()); break;
      case 3: n.name = r.string(); break;
      case 4: n.opType = r.string(); break;
      case 7: n.domain = normDomain(r.string()); break;
      case 5: { const a = decodeAttribute(r.sub(`${r.path}.attribute[${na++}]`), ctx); n.attrs.set(a.name, a); break; }
      default: r.skip(w);
    }
  }
  if (!n.opType) throw new ModelFormatError('node has no op_type', { path: r.path, node: n.name });
  // Unnamed nodes get a stable name so errors can point at them.
  if (!n.name) n.name = `${n.opType}#${/\[(\d+)\]$/.exec(r.path)?.[1] ?? '?'}`;
  return n;
}

const ATTR_TYPES: Record<number, AttrType> = {
  1: 'float', 2: 'int', 3: 'string', 4: 'tensor', 5: 'graph', 11: 'sparse_tensor', 13: 'type_proto',
  6: 'floats', 7: 'ints', 8: 'strings', 9: 'tensors', 10: 'graphs', 12: 'sparse_tensors', 14: 'type_protos',
};

function decodeAttribute(r: WireReader, ctx: Ctx): Attribute {
  let name = '', typeCode = 0, ref: string | undefined;
  let f_ = 0, i_ = 0, s_ = '';
  let t_: Tensor | undefined, g_: Graph | undefined, tp_: ValueType | undefined;
  const floats: number[] = [], ints: number[] = [], strings: string[] = [];
  const tensors: Tensor[] = [], graphs: Graph[] = [], tps: ValueType[] = [];
  const seen = new Set<number>();
  const p = r.path;
  while (!r.done) {
    const [f, w] = r.tag();
    seen.add(f);
    switch (f) {
      case 1: r.expect(w, WT_LEN, 'name'); name = r.string(); break;
      case 21: r.expect(w, WT_LEN, 'ref_attr_name'); ref = r.string(); break;
      case 20: r.expect(w, WT_VARINT, 'type'); typeCode = r.varint(); break;
      case 2: f_ = w === 5 ? r.f32() : (r.skip(w), 0); break;
      case 3: r.expect(w, WT_VARINT, 'i'); i_ = r.varint(); break;
      case 4: r.expect(w, WT_LEN, 's'); s_ = r.string(); break;
      case 5: r.expect(w, WT_LEN, 't'); t_ = decodeTensor(r.sub(`${p}.t`), ctx).tensor; break;
      case 6: r.expect(w, WT_LEN, 'g'); g_ = decodeGraph(r.sub(`${p}.g`), ctx); break;
      case 22: r.expect(w, WT_LEN, 'sparse_tensor'); t_ = decodeSparseTensor(r.sub(`${p}.sparse_tensor`), ctx).tensor; break;
      case 14: r.expect(w, WT_LEN, 'tp'); tp_ = decodeType(r.sub(`${p}.tp`)); break;
      case 7: r.floats(w, floats); break;
      case 8: r.varints(w, ints); break;
      case 9: r.expect(w, WT_LEN, 'strings'); strings.push(r.string()); break;
      case 10: r.expect(w, WT_LEN, 'tensors'); tensors.push(decodeTensor(r.sub(`${p}.tensors`), ctx).tensor); break;
      case 11: r.expect(w, WT_LEN, 'graphs'); graphs.push(decodeGraph(r.sub(`${p}.graphs`), ctx)); break;
      case 23: r.expect(w, WT_LEN, 'sparse_tensors'); tensors.push(decodeSparseTensor(r.sub(`${p}.sparse_tensors`), ctx).tensor); break;
      case 15: r.expect(w, WT_LEN, 'type_protos'); tps.push(decodeType(r.sub(`${p}.type_protos`))); break;
      default: r.skip(w);
    }
  }
  let type = ATTR_TYPES[typeCode];
  if (!type) {
    // Old models omit the type field: infer it from which field is present.
    type = seen.has(2) ? 'float' : seen.has(3) ? 'int' : seen.has(4) ? 'string' : seen.has(5) ? 'tensor'
      : seen.has(6) ? 'graph' : seen.has(7) ? 'floats' : seen.has(8) ? 'ints' : seen.has(9) ? 'strings'
      : seen.has(10) ? 'tensors' : seen.has(11) ? 'graphs' : seen.has(22) ? 'sparse_tensor' : seen.has(14) ? 'type_proto' : 'ints';
  }
  const values: Record<AttrType, Attribute['value'] | undefined> = {
    float: f_, int: i_, string: s_, tensor: t_, graph: g_, sparse_tensor: t_, type_proto: tp_,
    floats, ints, strings, tensors, graphs, sparse_tensors: tensors, type_protos: tps,
  };
  const value = values[type];
  if (value === undefined && ref === undefined) {
    throw new ModelFormatError(`attribute '${name}' of type ${type} has no value`, { path: p });
  }
  return { name, type, value: value as Attribute['value'], refAttrName: ref };
}

function decodeValueInfo(r: WireReader): ValueInfo {
  const vi: ValueInfo = { name: '', type: null };
  while (!r.done) {
    const [f, w] = r.tag();
    if (f === 1 && w === WT_LEN) vi.name = r.string();
    else if (f === 2 && w === WT_LEN) vi.type = decodeType(r.sub(`${r.path}.type`));
    else r.skip(w);
  }
  return vi;
}

function decodeType(r: WireReader): ValueType {
  let t: ValueType | null = null;
  while (!r.done) {
    const [f, w] = r.tag();
    if (w !== WT_LEN) { r.skip(w); continue; }
    const s = r.sub(`${r.path}`);
    switch (f) {
      case 1: case 8: {
        const { dtype, shape } = decodeTensorType(s);
        t = { kind: f === 1 ? 'tensor' : 'sparse', dtype, shape };
        break;
      }
      case 4: case 9: {
        let elem: ValueType | null = null;
        while (!s.done) {
          const [f2, w2] = s.tag();
          if (f2 === 1 && w2 === WT_LEN) elem = decodeType(s.sub(s.path));
          else s.skip(w2);
        }
        t = { kind: f === 4 ? 'sequence' : 'optional', elem };
        break;
      }
      case 5: {
        let key: DType = 'int64', value: ValueType | null = null;
        while (!s.done) {
          const [f2, w2] = s.tag();
          if (f2 === 1 && w2 === WT_VARINT) key = dtypeFromOnnx(s.varint(), { path: s.path });
          else if (f2 === 2 && w2 === WT_LEN) value = decodeType(s.sub(s.path));
          else s.skip(w2);
        }
        t = { kind: 'map', key, value };
        break;
      }
      default: break;
    }
  }
  return t ?? { kind: 'tensor', dtype: null, shape: null };
}

function decodeTensorType(r: WireReader): { dtype: DType | null; shape: Dim[] | null } {
  let dtype: DType | null = null, shape: Dim[] | null = null;
  while (!r.done) {
    const [f, w] = r.tag();
    if (f === 1 && w === WT_VARINT) { const c = r.varint(); dtype = c === 0 ? null : dtypeFromOnnx(c, { path: r.path }); }
    else if (f === 2 && w === WT_LEN) {
      shape = [];
      const s = r.sub(`${r.path}.shape`);
      while (!s.done) {
        const [f2, w2] = s.tag();
        if (f2 === 1 && w2 === WT_LEN) {
          const d = s.sub(s.path);
          let dim: Dim = null;
          while (!d.done) {
            const [f3, w3] = d.tag();
            if (f3 === 1 && w3 === WT_VARINT) dim = d.varint();
            else if (f3 === 2 && w3 === WT_LEN) dim = d.string() || null;
            else d.skip(w3);
          }
          shape.push(dim);
        } else s.skip(w2);
      }
    } else r.skip(w);
  }
  return { dtype, shape };
}

function decodeFunction(r: WireReader, ctx: Ctx): FunctionDef {
  const fn: FunctionDef = {
    name: '', domain: '', inputs: [], outputs: [], attributes: [], attributeDefaults: new Map(), nodes: [], opsets: new Map(),
  };
  while (!r.done) {
    const [f, w] = r.tag();
    if (w !== WT_LEN) { r.skip(w); continue; }
    switch (f) {
      case 1: fn.name = r.string(); break;
      case 4: fn.inputs.push(r.string()); break;
      case 5: fn.outputs.push(r.string()); break;
      case 6: fn.attributes.push(r.string()); break;
      case 11: { const a = decodeAttribute(r.sub(`${r.path}.attribute_proto`), ctx); fn.attributeDefaults.set(a.name, a); break; }
      case 7: fn.nodes.push(decodeNode(r.sub(`${r.path}.node[${fn.nodes.length}]`), ctx)); break;
      case 9: { const [d, v] = decodeOpset(r.sub(`${r.path}.opset_import`)); fn.opsets.set(normDomain(d), v); break; }
      case 10: fn.domain = normDomain(r.string()); break;
      default: r.skip(w);
    }
  }
  return fn;
}

// ---------------------------------------------------------------------------------------------
// Tensors

export function decodeTensorProto(bytes: Uint8Array, opts: DecodeOptions = {}): { name: string; tensor: Tensor } {
  return decodeTensor(new WireReader(bytes, 'tensor'), { opts, expandLimit: expandLimitFor(bytes.length) });
}

function decodeTensor(r: WireReader, ctx: Ctx): { name: string; tensor: Tensor } {
  const dims: number[] = [];
  let code = 0, name = '', raw: Uint8Array | undefined, location = 0;
  const floatData: number[] = [], int32Data: number[] = [], doubleData: number[] = [];
  const int64Data: bigint[] = [], uint64Data: bigint[] = [];
  const strings: Uint8Array[] = [];
  const external = new Map<string, string>();
  const p = r.path;
  while (!r.done) {
    const [f, w] = r.tag();
    switch (f) {
      case 1: r.varints(w, dims); break;
      case 2: r.expect(w, WT_VARINT, 'data_type'); code = r.varint(); break;
      case 4: r.floats(w, floatData); break;
      case 5: r.varints(w, int32Data); break;
      case 6: r.expect(w, WT_LEN, 'string_data'); strings.push(r.bytes()); break;
      case 7: r.varintsBig(w, int64Data); break;
      case 8: r.expect(w, WT_LEN, 'name'); name = r.string(); break;
      case 9: r.expect(w, WT_LEN, 'raw_data'); raw = r.bytes(); break;
      case 10: r.doubles(w, doubleData); break;
      case 11: r.varintsBig(w, uint64Data); break;
      case 13: { r.expect(w, WT_LEN, 'external_data'); const [k, v] = decodeStringPair(r.sub(`${p}.external_data`)); external.set(k, v); break; }
      case 14: r.expect(w, WT_VARINT, 'data_location'); location = r.varint(); break;
      default: r.skip(w);
    }
  }
  const where = { path: p, input: name || undefined };
  if (code === 0) throw new ModelFormatError('tensor has no data_type', where);
  const dtype = dtypeFromOnnx(code, where);
  for (const d of dims) if (d < 0 || !Number.isSafeInteger(d)) throw new ModelFormatError(`tensor dim ${d} is invalid`, where);
  const n = sizeOf(dims);
  if (!Number.isSafeInteger(n)) throw new ModelFormatError(`tensor dims [${dims.join(',')}] are too large`, where);
  if (location === 1 || external.size > 0) {
    const loc = external.get('location');
    if (!loc) throw new ModelFormatError('external tensor has no location', where);
    if (!ctx.opts.loadExternal) {
      throw new UnsupportedError(`tensor '${name}' is stored in external file '${loc}'`, where,
        'load the model from a path (Node) or pass the external files to InferenceSession.create');
    }
    const off = Number(external.get('offset') ?? 0);
    const len = external.has('length') ? Number(external.get('length')) : undefined;
    raw = ctx.opts.loadExternal(loc, off, len);
  }
  let data: TensorData;
  if (dtype === 'string') {
    if (strings.length !== n) throw new ModelFormatError(`string tensor has ${strings.length} values, dims need ${n}`, where);
    const dec = new TextDecoder();
    data = strings.map((s) => dec.decode(s));
  } else if (raw !== undefined) {
    data = fromRaw(dtype, raw, n, where);
  } else {
    data = fromFields(dtype, n, { floatData, int32Data, doubleData, int64Data, uint64Data }, where);
  }
  return { name, tensor: new Tensor(dtype, data, dims) };
}

const ARRAY_CTOR: Partial<Record<DType, { new (b: ArrayBufferLike, o: number, n: number): TypedArray; BYTES_PER_ELEMENT: number }>> = {
  float32: Float32Array, float64: Float64Array, int8: Int8Array, int16: Int16Array, int32: Int32Array,
  int64: BigInt64Array, uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array, uint64: BigUint64Array,
  bool: Uint8Array, float16: Uint16Array, bfloat16: Uint16Array, float8e4m3fn: Uint8Array, float8e4m3fnuz: Uint8Array,
  float8e5m2: Uint8Array, float8e5m2fnuz: Uint8Array, float8e8m0: Uint8Array, complex64: Float32Array, complex128: Float64Array,
};

/** raw_data → typed array: a view when aligned (zero copy), otherwise one copy. */
function fromRaw(dtype: DType, raw: Uint8Array, n: number, where: object): TensorData {
  const rb = DTYPES[dtype].rawBytes;
  const need = Math.ceil(n * rb);
  if (raw.length !== need) {
    throw new ModelFormatError(`raw_data has ${raw.length} bytes, ${dtype} dims need ${need}`, where);
  }
  if (rb < 1) return unpackSubByte(dtype, raw, n);
  const C = ARRAY_CTOR[dtype]!;
  const count = dtype.startsWith('complex') ? 2 * n : n;
  if (raw.byteOffset % C.BYTES_PER_ELEMENT === 0) return new C(raw.buffer, raw.byteOffset, count);
  const copy = new Uint8Array(raw.length);
  copy.set(raw);
  return new C(copy.buffer, 0, count);
}

/** 4-bit and 2-bit types are stored unpacked, one element per byte. */
export function unpackSubByte(dtype: DType, packed: ArrayLike<number>, n: number): TensorData {
  const out = DTYPES[dtype].make(n) as Int8Array | Uint8Array;
  const bits = DTYPES[dtype].rawBytes === 0.5 ? 4 : 2;
  const per = 8 / bits, mask = (1 << bits) - 1;
  const signed = dtype === 'int4' || dtype === 'int2';
  for (let i = 0; i < n; i++) {
    let v = (packed[Math.floor(i / per)] >> ((i % per) * bits)) & mask;
    if (signed && v >= 1 << (bits - 1)) v -= 1 << bits;
    out[i] = v;
  }
  return out;
}

interface Fields {
  floatData: number[]; int32Data: number[]; doubleData: number[]; int64Data: bigint[]; uint64Data: bigint[];
}

function fromFields(dtype: DType, n: number, f: Fields, where: object): TensorData {
  // Never allocate from dims alone: the data fields bound the element count.
  const avail = f.floatData.length + f.int32Data.length + f.doubleData.length + f.int64Data.length + f.uint64Data.length;
  if (n > 4 * avail) throw new ModelFormatError(`tensor dims need ${n} values but only ${avail} are stored`, where);
  const out = DTYPES[dtype].make(n) as TypedArray;
  const check = (len: number, field: string, want = n) => {
    if (len !== want) throw new ModelFormatError(`${field} has ${len} values, dims need ${want}`, where);
  };
  switch (dtype) {
    case 'float32': check(f.floatData.length, 'float_data'); (out as Float32Array).set(f.floatData); break;
    case 'complex64': check(f.floatData.length, 'float_data', 2 * n); (out as Float32Array).set(f.floatData); break;
    case 'float64': check(f.doubleData.length, 'double_data'); (out as Float64Array).set(f.doubleData); break;
    case 'complex128': check(f.doubleData.length, 'double_data', 2 * n); (out as Float64Array).set(f.doubleData); break;
    case 'int64': check(f.int64Data.length, 'int64_data'); (out as BigInt64Array).set(f.int64Data); break;
    case 'uint64': check(f.uint64Data.length, 'uint64_data');
      for (let i = 0; i < n; i++) (out as BigUint64Array)[i] = BigInt.asUintN(64, f.uint64Data[i]);
      break;
    case 'uint32': check(f.uint64Data.length, 'uint64_data');
      for (let i = 0; i < n; i++) (out as Uint32Array)[i] = Number(BigInt.asUintN(32, f.uint64Data[i]));
      break;
    case 'int4': case 'uint4': case 'float4e2m1': case 'int2': case 'uint2': {
      const per = DTYPES[dtype].rawBytes === 0.5 ? 2 : 4;
      check(f.int32Data.length, 'int32_data', Math.ceil(n / per));
      return unpackSubByte(dtype, f.int32Data, n);
    }
    default:
      // int8..int32, uint8, uint16, bool, float16, bfloat16, float8: one value per int32_data entry.
      check(f.int32Data.length, 'int32_data');
      for (let i = 0; i < n; i++) (out as Int32Array)[i] = f.int32Data[i];
  }
  return out;
}

function decodeSparseTensor(r: WireReader, ctx: Ctx): { name: string; tensor: Tensor } {
  let values: { name: string; tensor: Tensor } | undefined, indices: Tensor | undefined;
  const dims: number[] = [];
  const p = r.path;
  while (!r.done) {
    const [f, w] = r.tag();
    if (f === 1 && w === WT_LEN) values = decodeTensor(r.sub(`${p}.values`), ctx);
    else if (f === 2 && w === WT_LEN) indices = decodeTensor(r.sub(`${p}.indices`), ctx).tensor;
    else if (f === 3) r.varints(w, dims);
    else r.skip(w);
  }
  if (!values || !indices) throw new ModelFormatError('sparse tensor lacks values or indices', { path: p });
  const n = sizeOf(dims);
  const v = values.tensor;
  if (n > ctx.expandLimit) throw new ResourceLimitError(`sparse tensor of ${n} elements is too large to densify (limit ${ctx.expandLimit} for this file)`, { path: p });
  const out = DTYPES[v.type].make(n) as TypedArray;
  const nnz = v.size;
  const idx = Array.from(indices.data as BigInt64Array, Number);
  const rank = dims.length;
  const linear = indices.dims.length === 1;
  if (idx.length !== (linear ? nnz : nnz * rank)) throw new ModelFormatError('sparse indices do not match values', { path: p });
  for (let i = 0; i < nnz; i++) {
    let off = 0;
    if (linear) off = idx[i];
    else for (let d = 0; d < rank; d++) off = off * dims[d] + idx[i * rank + d];
    if (off < 0 || off >= n) throw new ModelFormatError(`sparse index ${off} out of range`, { path: p });
    (out as Float32Array)[off] = (v.data as Float32Array)[i];
  }
  return { name: values.name, tensor: new Tensor(v.type, out, dims) };
}

// ---------------------------------------------------------------------------------------------
// SequenceProto / OptionalProto / MapProto (test data)

/** Decodes a test-data file: TensorProto, or SequenceProto/OptionalProto/MapProto when `kind` says so. */
export function decodeValueProto(bytes: Uint8Array, kind: 'tensor' | 'sequence' | 'optional' | 'map'): Value {
  const ctx: Ctx = { opts: {}, expandLimit: expandLimitFor(bytes.length) };
  const r = new WireReader(bytes, kind);
  if (kind === 'tensor') return decodeTensor(r, ctx).tensor;
  if (kind === 'sequence') return decodeSequence(r, ctx);
  if (kind === 'optional') return decodeOptional(r, ctx);
  return decodeMap(r, ctx);
}

function decodeSequence(r: WireReader, ctx: Ctx): TensorSequence {
  const items: Tensor[] = [];
  while (!r.done) {
    const [f, w] = r.tag();
    if (f === 3 && w === WT_LEN) items.push(decodeTensor(r.sub(`${r.path}.tensor_values`), ctx).tensor);
    else if (f === 5 || f === 6 || f === 7) throw new UnsupportedError('sequences of sequences, maps or optionals are not supported', { path: r.path });
    else r.skip(w);
  }
  return new TensorSequence(items[0]?.type, items);
}

function decodeOptional(r: WireReader, ctx: Ctx): OptionalValue {
  let v: Value | null = null;
  while (!r.done) {
    const [f, w] = r.tag();
    if (f === 3 && w === WT_LEN) v = decodeTensor(r.sub(`${r.path}.tensor_value`), ctx).tensor;
    else if (f === 5 && w === WT_LEN) v = decodeSequence(r.sub(`${r.path}.sequence_value`), ctx);
    else if (f === 7 && w === WT_LEN) v = decodeOptional(r.sub(`${r.path}.optional_value`), ctx);
    else r.skip(w);
  }
  return new OptionalValue(v);
}

function decodeMap(r: WireReader, ctx: Ctx): MapValue {
  let keyType: DType = 'int64';
  const keys: number[] = [], skeys: string[] = [];
  let values: Value = new TensorSequence(undefined, []);
  while (!r.done) {
    const [f, w] = r.tag();
    if (f === 2 && w === WT_VARINT) keyType = dtypeFromOnnx(r.varint());
    else if (f === 3) r.varints(w, keys);
    else if (f === 4 && w === WT_LEN) skeys.push(r.string());
    else if (f === 5 && w === WT_LEN) values = decodeSequence(r.sub(`${r.path}.values`), ctx);
    else r.skip(w);
  }
  const k = keyType === 'string' ? new Tensor('string', skeys) : new Tensor(keyType, keys);
  return new MapValue(keyType, k, values);
}
