// Graph passes: Constant nodes to initializers, identity elimination, constant folding, dead-node removal.
import { runNode, type ExecEnv } from '../backends/reference/executor.js';
import { WebjitError } from '../errors.js';
import type { Graph, Model, Node } from './ir.js';
import { freeVariables, subgraphsOf, topoOrder } from './topo.js';
import { findKernel } from '../ops/registry.js';
import { inferShapes } from './shapes.js';
import { sizeOf, Tensor } from '../tensor.js';

export interface PassStats {
  constantsLifted: number;
  identitiesRemoved: number;
  folded: number;
  deadRemoved: number;
}

/** Ops whose result is not a function of their inputs, or not worth materialising as a constant. */
const NO_FOLD = new Set([
  'RandomNormal', 'RandomUniform', 'RandomNormalLike', 'RandomUniformLike', 'Bernoulli', 'Multinomial', 'Dropout',
  'If', 'Loop', 'Scan', 'SequenceMap', 'Expand', 'Tile', 'Range', 'EyeLike', 'OneHot', 'Upsample', 'Resize', 'Pad',
]);
/** Largest tensor constant folding may create (elements). */
const FOLD_LIMIT = 1 << 20;

export function optimizeGraph(model: Model): PassStats {
  const env: ExecEnv = { opsets: model.opsets, functions: model.functions };
  const g = model.graph;
  const stats: PassStats = { constantsLifted: 0, identitiesRemoved: 0, folded: 0, deadRemoved: 0 };
  stats.identitiesRemoved = eliminateIdentities(g);
  const f = foldConstants(g, env);
  stats.constantsLifted = f.lifted;
  stats.folded = f.folded;
  stats.deadRemoved = removeDeadNodes(g);
  // Subgraphs (If/Loop/Scan bodies) get the same passes, on their own constants and those of the enclosing graphs
  // (Silero VAD slices and concatenates its LSTM weights inside If branches: 1 MB of copies per run otherwise).
  const visit = (gr: Graph, outer: ReadonlyMap<string, Tensor>) => {
    const visible = new Map(outer);
    for (const k of constantNames(gr)) visible.set(k, gr.initializers.get(k)!);
    for (const n of gr.nodes) {
      for (const sub of subgraphsOf(n)) {
        const r = foldConstants(sub, env, visible);
        stats.constantsLifted += r.lifted;
        stats.folded += r.folded;
        stats.deadRemoved += removeDeadNodes(sub);
        visit(sub, visible);
      }
    }
  };
  visit(g, new Map());
  inferShapes(model);
  return stats;
}

/** Values the graph reads but that are not constants: graph inputs (even those with a default initializer). */
function constantNames(g: Graph): Set<string> {
  const inputs = new Set(g.inputs.map((i) => i.name));
  return new Set([...g.initializers.keys()].filter((k) => !inputs.has(k)));
}

/** Identity(x) → x: consumers read x directly. Kept where the output is a graph output. */
export function eliminateIdentities(g: Graph): number {
  const outputs = new Set(g.outputs.map((o) => o.name));
  const rename = new Map<string, string>();
  const keep: Node[] = [];
  for (const n of g.nodes) {
    if (n.opType === 'Identity' && n.domain === '' && n.inputs[0] && n.outputs[0] && !outputs.has(n.outputs[0])) {
      rename.set(n.outputs[0], n.inputs[0]);
    } else keep.push(n);
  }
  if (rename.size === 0) return 0;
  const resolve = (x: string) => { let y = x; while (rename.has(y)) y = rename.get(y)!; return y; };
  // Subgraphs read outer values by name: an identity whose output a subgraph reads must stay.
  const readBySubgraphs = new Set<string>();
  for (const n of keep) for (const s of subgraphsOf(n)) for (const v of freeVariables(s)) readBySubgraphs.add(v);
  let removed = 0;
  for (const [out] of rename) {
    if (readBySubgraphs.has(out)) {
      rename.delete(out);
    }
  }
  g.nodes = g.nodes.filter((n) => {
    const drop = n.opType === 'Identity' && n.domain === '' && rename.has(n.outputs[0]);
    if (drop) removed++;
    return !drop;
  });
  for (const n of g.nodes) n.inputs = n.inputs.map((x) => (x ? resolve(x) : x));
  return removed;
}

/**
 * Runs nodes whose inputs are all constant once, at load, and stores their outputs as initializers. `outer`: constants
 * of enclosing graphs a subgraph may read (names the subgraph defines itself shadow them).
 */
export function foldConstants(g: Graph, env: ExecEnv, outer: ReadonlyMap<string, Tensor> = new Map()): { lifted: number; folded: number } {
  const consts = constantNames(g);
  const own = new Set([...g.initializers.keys(), ...g.inputs.map((i) => i.name), ...g.nodes.flatMap((n) => n.outputs)]);
  const fromOuter = new Map([...outer].filter(([k]) => !own.has(k)));
  for (const k of fromOuter.keys()) consts.add(k);
  const valueOf = (x: string) => g.initializers.get(x) ?? fromOuter.get(x);
  const outputs = new Set(g.outputs.map((o) => o.name));
  let lifted = 0, folded = 0;
  const keep: Node[] = [];
  for (const n of topoOrder(g)) {
    const isConstNode = n.opType === 'Constant' && n.domain === '';
    const foldable = isConstNode || (
      n.domain === '' && !NO_FOLD.has(n.opType) && subgraphsOf(n).length === 0 && findKernel(n.domain, n.opType) !== undefined &&
      n.inputs.length > 0 && n.inputs.every((x) => !x || consts.has(x)) && n.outputs.every((o) => !outputs.has(o)) &&
      (n.opType !== 'ConstantOfShape' || sizeOf(Array.from(valueOf(n.inputs[0])?.data as ArrayLike<number | bigint> ?? [], Number)) <= FOLD_LIMIT)
    );
    if (!foldable) { keep.push(n); continue; }
    let outs;
    try {
      outs = runNode(n, n.inputs.map((x) => (x ? valueOf(x) : undefined)), env, () => undefined);
    } catch (e) {
      // A node that fails on constants fails the same way at run time, where the error reaches the user.
      if (e instanceof WebjitError) { keep.push(n); continue; }
      throw e;
    }
    // Every named output must have come back as a small tensor (a malformed node may name more outputs than its op makes).
    if (!n.outputs.every((name, i) => !name || (outs[i] instanceof Tensor && (outs[i] as Tensor).size <= FOLD_LIMIT * 16))) { keep.push(n); continue; }
    n.outputs.forEach((name, i) => {
      if (!name) return;
      g.initializers.set(name, outs[i] as Tensor);
      consts.add(name);
    });
    if (isConstNode) lifted++; else folded++;
  }
  g.nodes = keep;
  return { lifted, folded };
}

/** Removes nodes none of whose outputs is used by a node, a subgraph, or the graph's outputs. */
export function removeDeadNodes(g: Graph): number {
  const before = g.nodes.length;
  for (;;) {
    const used = new Set(g.outputs.map((o) => o.name));
    for (const n of g.nodes) {
      for (const x of n.inputs) if (x) used.add(x);
      for (const s of subgraphsOf(n)) for (const v of freeVariables(s)) used.add(v);
    }
    const keep = g.nodes.filter((n) => n.outputs.some((o) => o && used.has(o)));
    if (keep.length === g.nodes.length) break;
    g.nodes = keep;
  }
  const used = new Set(g.outputs.map((o) => o.name));
  for (const n of g.nodes) {
    for (const x of n.inputs) if (x) used.add(x);
    for (const s of subgraphsOf(n)) for (const v of freeVariables(s)) used.add(v);
  }
  const inputs = new Set(g.inputs.map((i) => i.name));
  for (const k of [...g.initializers.keys()]) if (!used.has(k) && !inputs.has(k)) g.initializers.delete(k);
  return before - g.nodes.length;
}
