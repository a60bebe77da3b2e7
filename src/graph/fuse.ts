// Elementwise fusion: trees of elementwise nodes whose intermediates have one consumer become one FusedElementwise node
// (domain 'webjit') carrying the original nodes as its 'graph' attribute; the Wasm backend compiles each into one loop.
import type { Attribute, Graph, Model, Node, ValueType } from './ir.js';
import { inferShapes } from './shapes.js';
import { nodeDeps, replaceNodes, subgraphsOf, topoOrder } from './topo.js';

/** Op types the fused kernel translates (kept in step with backends/wasm/ops/elementwise.ts). */
export const FUSIBLE_OPS: ReadonlySet<string> = new Set([
  'Add', 'Sub', 'Mul', 'Div', 'Pow', 'Max', 'Min', 'Sum', 'Neg', 'Abs', 'Sqrt', 'Reciprocal', 'Exp', 'Log', 'Tanh', 'Erf',
  'Sigmoid', 'Relu', 'LeakyRelu', 'Elu', 'HardSigmoid', 'HardSwish', 'Clip', 'Gelu', 'Softplus', 'Floor', 'Ceil', 'Where',
  'Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'Not', 'And', 'Or', 'Xor', 'Cast', 'CastLike',
]);

/** Dtypes a fused group may carry (int64 and the rest run faster unfused, or not at all in the fused kernel). */
const FUSIBLE_DTYPES: ReadonlySet<string> = new Set(['float32', 'bool', 'int32']);

export interface FuseStats {
  groups: number;
  nodesFused: number;
}

/** Replaces each fusible group of two or more nodes in the main graph by one FusedElementwise node. */
export function fuseElementwise(model: Model): FuseStats {
  const g = model.graph;
  let types: Map<string, ValueType>;
  try { types = inferShapes(model); } catch { types = new Map(); }
  const dtypeOk = (name: string) => {
    if (!name) return true;
    if (g.initializers.has(name)) return FUSIBLE_DTYPES.has(g.initializers.get(name)!.type);
    const t = types.get(name) ?? g.valueInfo.get(name)?.type;
    return !!t && t.kind === 'tensor' && !!t.dtype && FUSIBLE_DTYPES.has(t.dtype);
  };
  const fusible = (n: Node) => n.domain === '' && FUSIBLE_OPS.has(n.opType) && subgraphsOf(n).length === 0 &&
    n.outputs.length === 1 && !!n.outputs[0] && !n.attrs.has('broadcast') && n.inputs.every(dtypeOk) && dtypeOk(n.outputs[0]);

  const order = topoOrder(g);
  const producer = new Map<string, Node>();
  for (const n of order) for (const o of n.outputs) if (o) producer.set(o, n);
  const uses = new Map<string, number>();
  for (const n of order) for (const d of new Set(nodeDeps(n))) uses.set(d, (uses.get(d) ?? 0) + 1);
  const outputs = new Set(g.outputs.map((o) => o.name));

  // Union-find over nodes, merging a producer into its only consumer.
  const parent = new Map<Node, Node>();
  const find = (n: Node): Node => { let r = n; while (parent.get(r) !== r) r = parent.get(r)!; parent.set(n, r); return r; };
  for (const n of order) if (fusible(n)) parent.set(n, n);
  for (const n of order) {
    if (!parent.has(n)) continue;
    for (const x of new Set(n.inputs)) {
      const p = x ? producer.get(x) : undefined;
      if (!p || !parent.has(p) || uses.get(x) !== 1 || outputs.has(x)) continue;
      parent.set(find(p), find(n));
    }
  }
  const groups = new Map<Node, Node[]>();
  for (const n of order) {
    if (!parent.has(n)) continue;
    const r = find(n);
    if (!groups.has(r)) groups.set(r, []);
    groups.get(r)!.push(n);
  }

  const stats: FuseStats = { groups: 0, nodesFused: 0 };
  const replace = new Map<Node, Node | null>();
  for (const members of groups.values()) {
    if (members.length < 2) continue;
    const inside = new Set(members.flatMap((m) => m.outputs));
    // The root is the member whose output leaves the group (members are in topological order: the last one).
    const root = members[members.length - 1];
    const ext: string[] = [];
    for (const m of members) for (const x of m.inputs) if (x && !inside.has(x) && !ext.includes(x)) ext.push(x);
    const sub: Graph = {
      name: `fused_${root.name || root.outputs[0]}`,
      nodes: members.map((m) => ({ ...m, attrs: new Map(m.attrs) })),
      inputs: ext.map((name) => ({ name, type: types.get(name) ?? null })),
      outputs: [{ name: root.outputs[0], type: types.get(root.outputs[0]) ?? null }],
      initializers: new Map(),
      valueInfo: new Map(),
    };
    const attr: Attribute = { name: 'graph', type: 'graph', value: sub };
    const fused: Node = {
      name: sub.name, opType: 'FusedElementwise', domain: 'webjit', inputs: ext, outputs: [root.outputs[0]],
      attrs: new Map([['graph', attr]]),
    };
    for (const m of members) replace.set(m, m === root ? fused : null);
    stats.groups++;
    stats.nodesFused += members.length;
  }
  if (stats.groups === 0) return stats;
  replaceNodes(model, replace);
  return stats;
}
