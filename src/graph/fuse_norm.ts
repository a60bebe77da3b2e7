// Graph pass: LayerNorm as exporters write it for opsets before 17 (PyTorch's decomposition) becomes one
// LayerNormalization node:
//   m = ReduceMean(x, trailing axes) → d = Sub(x, m) → Pow(d, 2) or Mul(d, d) → v = ReduceMean(·, same axes)
//   → Add(v, eps) → Sqrt → Div(d, ·) → [Mul by γ] → [Add β]
// (LayerNormalization computes the same: (x - mean) / sqrt(var + eps) · γ + β, with var the mean square deviation.)
import type { Dim, Model, Node, ValueType } from './ir.js';
import { inferShapes } from './shapes.js';
import { consumersOf, replaceNodes } from './topo.js';
import { Tensor } from '../tensor.js';

const near = (x: number, y: number) => Math.abs(x - y) <= 1e-6 * Math.max(1, Math.abs(y));

/** Fuses every decomposed LayerNorm of the top-level graph; returns how many. Run it before fuseElementwise. */
export function fuseLayerNorm(model: Model): number {
  const g = model.graph;
  let types: Map<string, ValueType>;
  try { types = inferShapes(model); } catch { return 0; }
  const shapeOf = (x: string): Dim[] | null => { const t = types.get(x); return t && t.kind === 'tensor' ? t.shape : null; };
  const graphInputs = new Set(g.inputs.map((i) => i.name));
  const { consumers, pinned } = consumersOf(g);
  const constant = (x: string | undefined): Tensor | null =>
    (x && g.initializers.has(x) && !graphInputs.has(x) ? g.initializers.get(x)! : null);
  const scalar = (x: string | undefined): number | null => {
    const t = constant(x);
    if (!t || t.size !== 1 || !(t.data instanceof Float32Array || t.data instanceof Float64Array)) return null;
    return Number(t.data[0]);
  };
  const std = (n: Node | undefined, op: string) => !!n && n.domain === '' && n.opType === op && n.outputs.length === 1 && !!n.outputs[0];
  /** The one consumer of x (of type op, when given), if x is read by nothing else and is no output. */
  const sole = (x: string, op?: string): Node | null => {
    const c = consumers.get(x) ?? [];
    return c.length === 1 && !pinned.has(x) && (!op || std(c[0], op)) ? c[0] : null;
  };
  /**
   * ReduceMean's axes (attribute or constant input) as k, when they are the trailing k axes (negative axes need no
   * rank; rank null: unknown), with keepdims; else null.
   */
  const trailingAxes = (n: Node, rank: number | null): number | null => {
    if (!std(n, 'ReduceMean') || (n.attrs.get('keepdims')?.value ?? 1) !== 1) return null;
    let axes = n.attrs.get('axes')?.value as number[] | undefined;
    if (n.inputs[1]) {
      const t = constant(n.inputs[1]);
      if (!t || !(t.data instanceof BigInt64Array)) return null;
      axes = Array.from(t.data, Number);
    }
    if (!axes || axes.length === 0) return null;
    if (rank === null && axes.some((a) => a >= 0)) return null;
    const neg = axes.map((a) => (a >= 0 ? a - rank! : a)).sort((a, b) => a - b);
    return neg.every((a, i) => a === -neg.length + i) && (rank === null || neg.length <= rank) ? neg.length : null;
  };

  const replace = new Map<Node, Node | null>();
  let fused = 0, uid = 0;
  for (const m1 of g.nodes) {
    if (replace.has(m1) || !std(m1, 'ReduceMean')) continue;
    const x = m1.inputs[0];
    const xt = x ? types.get(x) : undefined;
    if (!x || !xt || xt.kind !== 'tensor' || xt.dtype !== 'float32') continue;
    const xs = shapeOf(x);
    const rank = xs ? xs.length : null;
    const k = trailingAxes(m1, rank);
    if (!k) continue;
    const sub = sole(m1.outputs[0], 'Sub');
    if (!sub || sub.inputs[0] !== x || sub.inputs[1] !== m1.outputs[0]) continue;
    const d = sub.outputs[0];
    const dc = consumers.get(d) ?? [];
    if (dc.length !== 2 || pinned.has(d)) continue;
    const sq = dc.find((n) => (std(n, 'Pow') && n.inputs[0] === d && near(scalar(n.inputs[1]) ?? NaN, 2)) || (std(n, 'Mul') && n.inputs[0] === d && n.inputs[1] === d));
    const div = dc.find((n) => std(n, 'Div') && n.inputs[0] === d);
    if (!sq || !div || sq === div) continue;
    const m2 = sole(sq.outputs[0], 'ReduceMean');
    if (!m2 || m2.inputs[0] !== sq.outputs[0]) continue;
    if (trailingAxes(m2, rank) !== k) continue;
    const addEps = sole(m2.outputs[0], 'Add');
    if (!addEps) continue;
    const epsName = addEps.inputs[0] === m2.outputs[0] ? addEps.inputs[1] : addEps.inputs[0];
    const eps = scalar(epsName);
    if (eps === null || !(eps >= 0)) continue;
    const sqrt = sole(addEps.outputs[0], 'Sqrt');
    if (!sqrt || div.inputs[1] !== sqrt.outputs[0] || !sole(sqrt.outputs[0], 'Div')) continue;
    // Optional affine: Mul by γ, then Add β, float32 constants over the normalised (trailing k) dims, which come from
    // x's shape or else from γ.
    let normDims: number[] | null = xs && xs.slice(-k).every((q) => typeof q === 'number') ? (xs.slice(-k) as number[]) : null;
    const param = (n: Node | null, v: string): { node: Node; t: Tensor } | null => {
      if (!n || n.inputs.length !== 2) return null;
      const other = n.inputs[0] === v ? n.inputs[1] : n.inputs[1] === v ? n.inputs[0] : undefined;
      const t = constant(other);
      if (!t || t.type !== 'float32' || (rank !== null && t.dims.length > rank)) return null;
      // 1 on every leading axis, the normalised dims on the trailing k.
      const lead = t.dims.slice(0, Math.max(0, t.dims.length - k)), tail = t.dims.slice(-k);
      if (lead.some((q) => q !== 1) || tail.length !== k) return null;
      if (normDims ? tail.some((q, i) => q !== normDims![i]) : false) return null;
      normDims ??= [...tail];
      return { node: n, t };
    };
    let out = div.outputs[0];
    const nodes: Node[] = [m1, sub, sq, m2, addEps, sqrt, div];
    const mul = param(sole(out, 'Mul'), out);
    if (mul) { nodes.push(mul.node); out = mul.node.outputs[0]; }
    const add = mul ? param(sole(out, 'Add'), out) : null;
    if (add) { nodes.push(add.node); out = add.node.outputs[0]; }
    if (!normDims) continue;
    const dims = normDims;
    const name = (t: Tensor | null, what: string) => {
      let n: string;
      do n = `${x}_layernorm${uid++}_${what}`; while (g.initializers.has(n));
      g.initializers.set(n, t ?? new Tensor('float32', new Float32Array(dims.reduce((a, b) => a * b, 1)).fill(1), dims));
      return n;
    };
    const scaleName = name(mul ? new Tensor('float32', (mul.t.data as Float32Array).slice(), dims) : null, 'scale');
    const inputs = [x, scaleName];
    if (add) inputs.push(name(new Tensor('float32', (add.t.data as Float32Array).slice(), dims), 'bias'));
    const ln: Node = {
      name: `${m1.name || x}_layernorm`, opType: 'LayerNormalization', domain: '', inputs, outputs: [out],
      attrs: new Map([
        ['axis', { name: 'axis', type: 'int', value: -k }],
        ['epsilon', { name: 'epsilon', type: 'float', value: eps }],
      ]),
    };
    replace.set(m1, ln);
    for (const n of nodes.slice(1)) replace.set(n, null);
    fused++;
  }
  if (fused) replaceNodes(model, replace);
  return fused;
}
