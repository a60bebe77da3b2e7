// Structure-aware mutations of ONNX models: each edits the parsed protobuf tree where the engine's assumptions live
// (dims, dtypes, graph edges, initializers, attributes, op types, tensor data) and writes valid wire bytes back, so
// the mutant gets past the protobuf decoder and tests what comes after it.
import { clone, collect, get, intField, isMsg, packVarints, parse, serialize, str, strField, unpackVarints, type Field, type Msg } from './proto.js';

export type StructMutation = 'dims' | 'dtype' | 'cycle' | 'missing' | 'attr' | 'rename' | 'op' | 'data';
export const STRUCT_MUTATIONS: StructMutation[] = ['dims', 'dtype', 'cycle', 'missing', 'attr', 'rename', 'op', 'data'];

type Rng = () => number;
const pick = <T>(r: Rng, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];

/** Dim values that break size arithmetic: zero, negative, past 2^31 and 2^53, and merely off by a little. */
const ABSURD = [0n, -1n, -7n, 1n, 3n, 65535n, 1n << 31n, 1n << 32n, 1n << 40n, 1n << 53n, (1n << 62n), -(1n << 63n)];
const absurd = (r: Rng, d?: bigint): bigint => (d !== undefined && r() < 0.3 ? d + BigInt(pick(r, [1, -1, 2])) * (r() < 0.5 ? 1n : 1000n) : pick(r, ABSURD));
const OPS = ['Add', 'MatMul', 'Conv', 'Reshape', 'Gather', 'Concat', 'Slice', 'Transpose', 'Softmax', 'LayerNormalization', 'Expand',
  'Tile', 'ConstantOfShape', 'Range', 'Loop', 'If', 'Scan', 'LSTM', 'Resize', 'Pad', 'Split', 'Squeeze', 'Unsqueeze', 'Cast', 'Where',
  'ReduceMean', 'TopK', 'NonZero', 'OneHot', 'Shape', 'Size', 'Identity', 'Attention', 'GroupQueryAttention', 'NotAnOp', ''];

/** Varints of a repeated int field, packed or not. */
function readInts(m: Msg, no: number): bigint[] {
  return get(m, no).flatMap((f) => (typeof f.v === 'bigint' ? [f.v] : f.v instanceof Uint8Array ? unpackVarints(f.v) : []));
}

function setInts(m: Msg, no: number, xs: bigint[]): void {
  const at = m.fields.findIndex((f) => f.no === no);
  m.fields = m.fields.filter((f) => f.no !== no);
  m.fields.splice(at < 0 ? m.fields.length : at, 0, ...xs.map((x) => intField(no, x)));
}

function setOne(m: Msg, field: Field): void {
  const i = m.fields.findIndex((f) => f.no === field.no);
  if (i >= 0) m.fields[i] = field; else m.fields.push(field);
}

function removeAt(parent: Msg, child: Msg): void {
  parent.fields = parent.fields.filter((f) => f.v !== child);
}

/** A structural mutant of `src` for case `seed`, or null when the model has nothing of the kind to mutate. */
export function mutateStructure(src: Msg | Uint8Array, r: Rng, kind: StructMutation): Uint8Array | null {
  const m = clone(src instanceof Uint8Array ? parse(src) : src);
  const nodes = collect(m, 'node');
  const tensors = collect(m, 'tensor');
  const graphs = collect(m, 'graph');
  switch (kind) {
    case 'dims': {
      const dimMsgs = collect(m, 'dim');
      if (r() < 0.5 && tensors.length) {
        const t = pick(r, tensors).msg;
        const dims = readInts(t, 1);
        const op = r();
        if (op < 0.6 && dims.length) { const i = Math.floor(r() * dims.length); dims[i] = absurd(r, dims[i]); }
        else if (op < 0.8) dims.push(absurd(r));
        else dims.pop();
        setInts(t, 1, dims);
      } else if (dimMsgs.length) {
        const d = pick(r, dimMsgs).msg;
        const v = get(d, 1)[0]?.v as bigint | undefined;
        d.fields = r() < 0.2 ? [strField(2, pick(r, ['batch', 'N', 'x', '']))] : [intField(1, absurd(r, v))];
      } else return null;
      break;
    }
    case 'dtype': {
      const ttypes = collect(m, 'ttype');
      const code = BigInt(pick(r, [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 13, 16, 17, 21, 22, 25, 26, 27, 99, -1]));
      if (r() < 0.5 && tensors.length) setOne(pick(r, tensors).msg, intField(2, code));
      else if (ttypes.length) setOne(pick(r, ttypes).msg, intField(1, code));
      else return null;
      break;
    }
    case 'cycle': {
      // Feed an earlier node (or the node itself) from a later node's output.
      const g = pick(r, graphs).msg;
      const gn = get(g, 1).map((f) => f.v).filter(isMsg);
      if (gn.length === 0) return null;
      const i = Math.floor(r() * gn.length), j = i + Math.floor(r() * (gn.length - i));
      const outs = get(gn[j], 2).map(str).filter(Boolean);
      const ins = get(gn[i], 1);
      if (!outs.length) return null;
      const f = strField(1, pick(r, outs));
      if (ins.length && r() < 0.8) gn[i].fields[gn[i].fields.indexOf(pick(r, ins))] = f; else gn[i].fields.push(f);
      break;
    }
    case 'missing': {
      const what = r();
      const inits = collect(m, 'tensor').filter((t) => t.parent?.kind === 'graph');
      if (what < 0.4 && inits.length) { const t = pick(r, inits); removeAt(t.parent!, t.msg); }
      else if (what < 0.7 && nodes.length) { const n = pick(r, nodes); removeAt(n.parent!, n.msg); }
      else if (what < 0.85) {
        const vis = collect(m, 'vinfo');
        if (!vis.length) return null;
        const v = pick(r, vis); removeAt(v.parent!, v.msg);
      } else {
        // No opset import, or no graph at all.
        m.fields = m.fields.filter((f) => f.no !== (r() < 0.5 ? 8 : 7));
      }
      break;
    }
    case 'attr': {
      const attrs = collect(m, 'attr');
      if (!attrs.length) return null;
      const a = pick(r, attrs).msg;
      const name = get(a, 1);
      const op = r();
      if (op < 0.3) a.fields = [...name, intField(20, 2), intField(3, absurd(r))];
      else if (op < 0.5) {
        // Long or absurd int lists (kernel shapes, pads, perms, axes).
        const n = r() < 0.3 ? 100_000 : 1 + Math.floor(r() * 8);
        const xs = Array.from({ length: n }, () => (r() < 0.5 ? absurd(r) : BigInt(Math.floor(r() * 8) - 2)));
        a.fields = [...name, intField(20, 7), { no: 8, wt: 2, v: packVarints(xs) }];
      } else if (op < 0.65) {
        const f = new Uint8Array(4);
        new DataView(f.buffer).setFloat32(0, pick(r, [NaN, Infinity, -Infinity, 3.4e38, -0, 1e-45]), true);
        a.fields = [...name, intField(20, 1), { no: 2, wt: 5, v: f }];
      } else if (op < 0.75) a.fields = [...name, intField(20, 3), strField(4, r() < 0.5 ? 'x'.repeat(1 << 16) : 'NOTSET\u0000\uffff')];
      else if (op < 0.9) setOne(a, intField(20, Math.floor(r() * 16)));  // the type tag disagrees with the value
      else a.fields = name;                                              // no value at all
      break;
    }
    case 'rename': {
      if (!nodes.length) return null;
      const n = pick(r, nodes).msg;
      const allOuts = nodes.flatMap((x) => get(x.msg, 2).map(str));
      const op = r();
      const outs = get(n, 2), ins = get(n, 1);
      if (op < 0.35 && outs.length) n.fields[n.fields.indexOf(pick(r, outs))] = strField(2, pick(r, allOuts));   // two producers
      else if (op < 0.7 && ins.length) n.fields[n.fields.indexOf(pick(r, ins))] = strField(1, pick(r, ['', 'nowhere', ...allOuts]));
      else {
        const gouts = graphs.flatMap((g) => get(g.msg, 12).map((f) => f.v).filter(isMsg));
        if (!gouts.length) return null;
        setOne(pick(r, gouts), strField(1, pick(r, ['nowhere', '', ...allOuts])));
      }
      break;
    }
    case 'op': {
      const op = r();
      if (op < 0.6 && nodes.length) setOne(pick(r, nodes).msg, strField(4, pick(r, OPS)));
      else if (op < 0.8 && nodes.length) setOne(pick(r, nodes).msg, strField(7, pick(r, ['com.microsoft', 'ai.onnx.ml', 'ai.onnx', 'x.y'])));
      else {
        const sets = collect(m, 'opset');
        if (!sets.length) return null;
        setOne(pick(r, sets).msg, intField(2, pick(r, [0n, 1n, 6n, 9n, 13n, 99n, -1n, 1n << 40n])));
      }
      break;
    }
    case 'data': {
      if (!tensors.length) return null;
      const t = pick(r, tensors).msg;
      const raw = get(t, 9)[0];
      const op = r();
      if (op < 0.35 && raw && raw.v instanceof Uint8Array) {
        // Shape-like int64 constants with absurd values, or a buffer of the wrong length.
        const b = raw.v.slice(0, r() < 0.5 ? raw.v.length : Math.floor(r() * raw.v.length));
        if (b.length >= 8 && r() < 0.7) new DataView(b.buffer).setBigInt64(8 * Math.floor(r() * Math.floor(b.length / 8)), absurd(r), true);
        raw.v = b;
      } else if (op < 0.6) {
        // External data that does not exist or escapes the model's folder.
        t.fields = t.fields.filter((f) => f.no !== 9);
        t.fields.push(intField(14, 1), { no: 13, wt: 2, v: { kind: 'pair', fields: [strField(1, 'location'), strField(2, pick(r, ['missing.bin', '../../etc/passwd', '/dev/zero', '']))] } });
        if (r() < 0.5) t.fields.push({ no: 13, wt: 2, v: { kind: 'pair', fields: [strField(1, 'length'), strField(2, pick(r, ['-1', '99999999999', 'x']))] } });
      } else if (op < 0.8) {
        // Typed data fields instead of (or beside) raw data.
        t.fields.push({ no: 7, wt: 2, v: packVarints(Array.from({ length: 1 + Math.floor(r() * 6) }, () => absurd(r))) });
      } else t.fields = t.fields.filter((f) => f.no !== 9 && f.no !== 4 && f.no !== 7);                    // no data at all
      break;
    }
  }
  return serialize(m);
}
