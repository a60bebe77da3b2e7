// Conv graph passes:
// - foldConvAffine: a per-output-channel affine map after a Conv with constant weights (BatchNormalization in
//   inference mode, Mul or Add by a per-channel constant, as exporters leave them) is folded into the weights and bias;
// - fuseConvActivation: Conv → activation (Relu, Clip, Sigmoid, HardSigmoid, HardSwish, and the HardSwish patterns
//   x·HardSigmoid(x) and x·Clip(x+3, 0, 6)/6) becomes one webjit.FusedConv node whose kernel applies the activation
//   in its store.
import type { Attribute, Graph, Model, Node } from './ir.js';
import { consumersOf, freeVariables, replaceNodes, subgraphsOf, topoOrder } from './topo.js';
import { Tensor } from '../tensor.js';

/** Op type of the fused node in domain 'webjit' (reference kernel: src/ops/fused_conv.ts; Wasm: backends/wasm/ops/conv.ts). */
export const FUSED_CONV = 'FusedConv';

/**
 * A FusedConv node has the Conv's inputs (X, W, B?) and attributes, plus:
 * - activation (string): relu | clip | sigmoid | hardsigmoid | hardswish;
 * - act_min, act_max (floats, clip) and act_alpha, act_beta (floats, hardsigmoid);
 * - graph (graph): the original Conv and activation nodes, replayed by the reference kernel.
 */
export type FusedConvActivation = 'relu' | 'clip' | 'sigmoid' | 'hardsigmoid' | 'hardswish';

export interface FuseConvStats {
  /** Affine nodes folded into conv weights, by op type. */
  folded: Map<string, number>;
  /** Conv nodes fused with an activation, by activation. */
  activations: Map<string, number>;
}

const near = (x: number, y: number) => Math.abs(x - y) <= 1e-6 * Math.max(1, Math.abs(y));

interface Ctx {
  g: Graph;
  consumers: Map<string, Node[]>;
  /** Values that must stay (graph outputs and values read inside subgraphs). */
  pinned: Set<string>;
  constant(x: string | undefined): Tensor | null;
  scalar(x: string | undefined): number | null;
}

function context(model: Model): Ctx {
  const g = model.graph;
  const graphInputs = new Set(g.inputs.map((i) => i.name));
  const { consumers, pinned } = consumersOf(g);
  const constant = (x: string | undefined) => (x && g.initializers.has(x) && !graphInputs.has(x) ? g.initializers.get(x)! : null);
  const scalar = (x: string | undefined) => {
    const t = constant(x);
    if (!t || t.size !== 1 || t.dims.length > 1 || !(t.data instanceof Float32Array)) return null;
    return t.data[0];
  };
  return { g, consumers, pinned, constant, scalar };
}

/** A standard-domain Conv with float32 constant weights (and bias) and one output. */
function constConv(c: Ctx, n: Node): { W: Tensor; B: Tensor | null } | null {
  if (n.opType !== 'Conv' || n.domain !== '' || n.outputs.length !== 1 || !n.outputs[0]) return null;
  if (n.inputs.length < 2 || n.inputs.length > 3) return null;
  const W = c.constant(n.inputs[1]);
  if (!W || W.type !== 'float32' || W.dims.length < 3 || W.dims[0] === 0) return null;
  const bName = n.inputs[2];
  const B = bName ? c.constant(bName) : null;
  if (bName && (!B || B.type !== 'float32' || B.dims.length !== 1 || B.dims[0] !== W.dims[0])) return null;
  return { W, B };
}

/**
 * The values of a float32 constant that broadcasts against a conv output [N, M, spatial...] along the channel axis
 * only, expanded to M per-channel values; null when it varies along another axis or would change the output's shape.
 */
function perChannel(t: Tensor | null, rank: number, M: number): Float32Array | null {
  if (!t || t.type !== 'float32' || t.dims.length > rank) return null;
  const pad = rank - t.dims.length;
  let along = 1;
  for (let i = 0; i < rank; i++) {
    const d = i < pad ? 1 : t.dims[i - pad];
    if (i === 1) { if (d !== M && d !== 1) return null; along = d; } else if (d !== 1) return null;
  }
  const src = t.data as Float32Array;
  return along === M ? src.slice(0, M) : new Float32Array(M).fill(src[0]);
}

/**
 * w[m*per + i] *= scale[m]. A function of its own: called once per conv, it is optimised after the first few calls,
 * where the same loop inline in the pass would stay on the interpreter (a BERT- or OCR-sized model has millions of
 * weights: tens of ms of session creation).
 */
function scaleRows(w: Float32Array, per: number, scale: Float32Array): void {
  for (let m = 0, o = 0; m < scale.length; m++) {
    const s = scale[m];
    for (let e = o + per; o < e; o++) w[o] *= s;
  }
}

/** Folds BatchNormalization / Mul / Add / Sub by per-channel constants after Convs into the weights and bias. */
export function foldConvAffine(model: Model): Map<string, number> {
  const folded = new Map<string, number>();
  const c = context(model);
  const { g } = c;
  const removed = new Set<Node>();
  let uid = 0;
  const fresh = (base: string) => { let n: string; do n = `${base}_folded${uid++}`; while (g.initializers.has(n)); return n; };
  for (const conv of g.nodes) {
    if (removed.has(conv)) continue;
    for (;;) {
      const cc = constConv(c, conv);
      if (!cc) break;
      const y = conv.outputs[0];
      const cons = c.consumers.get(y) ?? [];
      if (cons.length !== 1 || c.pinned.has(y)) break;
      const n = cons[0];
      if (n.domain !== '' || n.outputs.length !== 1 || !n.outputs[0]) break;
      const M = cc.W.dims[0], rank = cc.W.dims.length;
      let scale: Float32Array | null = null, shift: Float32Array | null = null;
      if (n.opType === 'BatchNormalization' && n.inputs[0] === y && n.inputs.length === 5) {
        if ((n.attrs.get('training_mode')?.value ?? 0) !== 0 || (n.attrs.get('spatial')?.value ?? 1) !== 1) break;
        const [s, b, mean, v] = n.inputs.slice(1).map((x) => c.constant(x));
        if (![s, b, mean, v].every((t) => t && t.type === 'float32' && t.dims.length === 1 && t.dims[0] === M)) break;
        const eps = (n.attrs.get('epsilon')?.value as number | undefined) ?? 1e-5;
        const S = s!.data as Float32Array, Bb = b!.data as Float32Array, Mu = mean!.data as Float32Array, V = v!.data as Float32Array;
        scale = new Float32Array(M); shift = new Float32Array(M);
        for (let m = 0; m < M; m++) { scale[m] = S[m] / Math.sqrt(V[m] + eps); shift[m] = Bb[m] - Mu[m] * scale[m]; }
      } else if ((n.opType === 'Mul' || n.opType === 'Add' || n.opType === 'Sub') && n.inputs.length === 2) {
        const k = n.inputs[0] === y ? 1 : n.inputs[1] === y ? 0 : -1;
        if (k < 0 || n.inputs[k] === y || (n.opType === 'Sub' && k !== 1)) break;
        const v = perChannel(c.constant(n.inputs[k]), rank, M);
        if (!v) break;
        if (n.opType === 'Mul') scale = v;
        else { shift = v; if (n.opType === 'Sub') for (let m = 0; m < M; m++) shift[m] = -shift[m]; }
      } else break;
      // New weights: W[m] * scale[m]; bias: B[m] * scale[m] + shift[m].
      const w = (cc.W.data as Float32Array).slice();
      if (scale) scaleRows(w, cc.W.size / M, scale);
      const bias = cc.B ? (cc.B.data as Float32Array).slice() : new Float32Array(M);
      for (let m = 0; m < M; m++) bias[m] = bias[m] * (scale ? scale[m] : 1) + (shift ? shift[m] : 0);
      const wName = fresh(conv.inputs[1]), bName = fresh(conv.inputs[2] || `${conv.name || y}_bias`);
      g.initializers.set(wName, new Tensor('float32', w, [...cc.W.dims]));
      g.initializers.set(bName, new Tensor('float32', bias, [M]));
      conv.inputs = [conv.inputs[0], wName, bName];
      conv.outputs = [n.outputs[0]];
      removed.add(n);
      c.consumers.delete(y);
      folded.set(n.opType, (folded.get(n.opType) ?? 0) + 1);
    }
  }
  if (removed.size) {
    g.nodes = g.nodes.filter((n) => !removed.has(n));
    // Weights the folding replaced may now be unused.
    const used = new Set<string>(g.outputs.map((o) => o.name));
    for (const n of g.nodes) { for (const x of n.inputs) if (x) used.add(x); for (const s of subgraphsOf(n)) for (const v of freeVariables(s)) used.add(v); }
    const inputs = new Set(g.inputs.map((i) => i.name));
    for (const k of [...g.initializers.keys()]) if (!used.has(k) && !inputs.has(k)) g.initializers.delete(k);
  }
  return folded;
}

interface ActMatch { act: FusedConvActivation; params: Record<string, number>; nodes: Node[]; out: string }

function matchActivation(c: Ctx, y: string, opset: number): ActMatch | null {
  const cons = c.consumers.get(y) ?? [];
  const std = (n: Node | undefined, op: string): boolean => !!n && n.opType === op && n.domain === '' && n.outputs.length === 1 && !!n.outputs[0];
  const only = (x: string, op: string): Node | null => {
    const k = c.consumers.get(x) ?? [];
    return k.length === 1 && std(k[0], op) && !c.pinned.has(x) ? k[0] : null;
  };
  const other = (n: Node, x: string): string | undefined => (n.inputs.length !== 2 ? undefined : n.inputs[0] === x ? n.inputs[1] : n.inputs[1] === x ? n.inputs[0] : undefined);
  const isScalar = (x: string | undefined, v: number) => { const s = c.scalar(x); return s !== null && near(s, v); };
  if (cons.length === 1) {
    const n = cons[0];
    if (n.inputs[0] !== y) return null;
    if (std(n, 'Relu')) return { act: 'relu', params: {}, nodes: [n], out: n.outputs[0] };
    if (std(n, 'Sigmoid')) return { act: 'sigmoid', params: {}, nodes: [n], out: n.outputs[0] };
    if (std(n, 'HardSwish')) return { act: 'hardswish', params: {}, nodes: [n], out: n.outputs[0] };
    if (std(n, 'HardSigmoid')) {
      const alpha = (n.attrs.get('alpha')?.value as number | undefined) ?? 0.2, beta = (n.attrs.get('beta')?.value as number | undefined) ?? 0.5;
      return { act: 'hardsigmoid', params: { act_alpha: alpha, act_beta: beta }, nodes: [n], out: n.outputs[0] };
    }
    if (std(n, 'Clip')) {
      let min = -Infinity, max = Infinity;
      if (opset < 11) {
        min = (n.attrs.get('min')?.value as number | undefined) ?? -Infinity;
        max = (n.attrs.get('max')?.value as number | undefined) ?? Infinity;
      } else {
        if (n.inputs[1]) { const v = c.scalar(n.inputs[1]); if (v === null) return null; min = v; }
        if (n.inputs[2]) { const v = c.scalar(n.inputs[2]); if (v === null) return null; max = v; }
      }
      if (!(min <= max)) return null;
      if (min === 0 && max === Infinity) return { act: 'relu', params: {}, nodes: [n], out: n.outputs[0] };
      return { act: 'clip', params: { act_min: min, act_max: max }, nodes: [n], out: n.outputs[0] };
    }
    return null;
  }
  if (cons.length !== 2) return null;
  // HardSwish as x·HardSigmoid(x) with alpha 1/6, beta 1/2.
  const hs = cons.find((n) => std(n, 'HardSigmoid') && n.inputs[0] === y);
  if (hs && near((hs.attrs.get('alpha')?.value as number | undefined) ?? 0.2, 1 / 6) && near((hs.attrs.get('beta')?.value as number | undefined) ?? 0.5, 0.5)) {
    const m = only(hs.outputs[0], 'Mul');
    if (m && cons.includes(m) && other(m, hs.outputs[0]) === y) return { act: 'hardswish', params: {}, nodes: [hs, m], out: m.outputs[0] };
  }
  // HardSwish as x·Clip(x + 3, 0, 6)/6, the division (or ·1/6) before or after the product.
  const add = cons.find((n) => std(n, 'Add') && isScalar(other(n, y), 3));
  if (!add || opset < 11) return null;
  const clip = only(add.outputs[0], 'Clip');
  if (!clip || clip.inputs[0] !== add.outputs[0] || !isScalar(clip.inputs[1], 0) || !isScalar(clip.inputs[2], 6)) return null;
  const sixth = (n: Node | null, x: string): boolean => !!n && ((n.opType === 'Div' && n.inputs[0] === x && isScalar(n.inputs[1], 6)) || (n.opType === 'Mul' && isScalar(other(n, x), 1 / 6)));
  const cout = clip.outputs[0];
  const k = c.consumers.get(cout) ?? [];
  if (k.length !== 1 || c.pinned.has(cout)) return null;
  const after: Node = k[0];
  if (sixth(after, cout) && std(after, after.opType)) {
    const m = only(after.outputs[0], 'Mul');
    if (m && cons.includes(m) && other(m, after.outputs[0]) === y) return { act: 'hardswish', params: {}, nodes: [add, clip, after, m], out: m.outputs[0] };
  } else if (std(after, 'Mul') && cons.includes(after) && other(after, cout) === y) {
    const ds = c.consumers.get(after.outputs[0]) ?? [];
    const d: Node | undefined = ds[0];
    if (d && ds.length === 1 && !c.pinned.has(after.outputs[0]) && std(d, d.opType) && sixth(d, after.outputs[0])) {
      return { act: 'hardswish', params: {}, nodes: [add, clip, after, d], out: d.outputs[0] };
    }
  }
  return null;
}

/** Fuses Conv → activation chains into webjit.FusedConv nodes (top-level graph; run after foldConvAffine). */
export function fuseConvActivation(model: Model): Map<string, number> {
  const stats = new Map<string, number>();
  const c = context(model);
  const { g } = c;
  const opset = model.opsets.get('') ?? 1;
  const replace = new Map<Node, Node | null>();
  const order = topoOrder(g);
  for (const conv of order) {
    if (conv.opType !== 'Conv' || conv.domain !== '' || conv.outputs.length !== 1 || !conv.outputs[0] || replace.has(conv)) continue;
    const y = conv.outputs[0];
    if (c.pinned.has(y)) continue;
    const m = matchActivation(c, y, opset);
    if (!m || m.nodes.some((n) => replace.has(n))) continue;
    // Every intermediate is read only inside the chain.
    const members = new Set([conv, ...m.nodes]);
    const ok = [conv, ...m.nodes].every((n) => n.outputs[0] === m.out || (!c.pinned.has(n.outputs[0]) && (c.consumers.get(n.outputs[0]) ?? []).every((k) => members.has(k))));
    if (!ok) continue;
    const ordered = order.filter((n) => members.has(n));
    const inputs = conv.inputs.filter((x, i) => i < 2 || !!x);
    const inputSet = new Set(inputs);
    const subInits = new Map<string, Tensor>();
    for (const n of m.nodes) for (const x of n.inputs) if (x && !inputSet.has(x) && g.initializers.has(x)) subInits.set(x, g.initializers.get(x)!);
    const sub: Graph = {
      name: `fused_conv_${conv.name || y}`,
      nodes: ordered.map((n) => ({ ...n, attrs: new Map(n.attrs) })),
      inputs: inputs.map((name) => ({ name, type: null })),
      outputs: [{ name: m.out, type: null }],
      initializers: subInits,
      valueInfo: new Map(),
    };
    const attrs = new Map<string, Attribute>(conv.attrs);
    attrs.set('activation', { name: 'activation', type: 'string', value: m.act });
    for (const [k, v] of Object.entries(m.params)) attrs.set(k, { name: k, type: 'float', value: v });
    attrs.set('graph', { name: 'graph', type: 'graph', value: sub });
    const fused: Node = { name: sub.name, opType: FUSED_CONV, domain: 'webjit', inputs, outputs: [m.out], attrs };
    const last = ordered[ordered.length - 1];
    for (const n of ordered) replace.set(n, n === last ? fused : null);
    stats.set(m.act, (stats.get(m.act) ?? 0) + 1);
  }
  if (replace.size === 0) return stats;
  replaceNodes(model, replace);
  return stats;
}

/** Both conv passes, in order. */
export function fuseConv(model: Model): FuseConvStats {
  const folded = foldConvAffine(model);
  return { folded, activations: fuseConvActivation(model) };
}
