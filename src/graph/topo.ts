// Graph ordering: topological sort (with subgraph free variables as implicit inputs), cycle detection.
import { GraphError } from '../errors.js';
import type { Graph, Node } from './ir.js';

const freeCache = new WeakMap<Graph, Set<string>>();

/** Names a graph (and its nested subgraphs) reads from enclosing scopes. */
export function freeVariables(g: Graph): Set<string> {
  const cached = freeCache.get(g);
  if (cached) return cached;
  const defined = new Set<string>([...g.inputs.map((i) => i.name), ...g.initializers.keys()]);
  for (const n of g.nodes) for (const o of n.outputs) if (o) defined.add(o);
  const free = new Set<string>();
  for (const n of g.nodes) {
    for (const x of n.inputs) if (x && !defined.has(x)) free.add(x);
    for (const s of subgraphsOf(n)) for (const x of freeVariables(s)) if (!defined.has(x)) free.add(x);
  }
  for (const o of g.outputs) if (!defined.has(o.name)) free.add(o.name);
  freeCache.set(g, free);
  return free;
}

export function subgraphsOf(n: Node): Graph[] {
  const out: Graph[] = [];
  for (const a of n.attrs.values()) {
    if (a.type === 'graph') out.push(a.value as Graph);
    else if (a.type === 'graphs') out.push(...(a.value as Graph[]));
  }
  return out;
}

/** Inputs of a node including the outer values its subgraphs read. */
export function nodeDeps(n: Node): string[] {
  const deps = n.inputs.filter(Boolean);
  for (const s of subgraphsOf(n)) deps.push(...freeVariables(s));
  return deps;
}

/** Nodes in an order where each runs after the producers of its inputs (Kahn's algorithm, stable). */
export function topoOrder(g: Graph): Node[] {
  const producer = new Map<string, number>();
  g.nodes.forEach((n, i) => {
    for (const o of n.outputs) {
      if (!o) continue;
      if (producer.has(o)) throw new GraphError(`value '${o}' is produced by two nodes`, { node: n.name, op: n.opType });
      producer.set(o, i);
    }
  });
  const indeg = new Array<number>(g.nodes.length).fill(0);
  const users: number[][] = g.nodes.map(() => []);
  g.nodes.forEach((n, i) => {
    for (const d of new Set(nodeDeps(n))) {
      const p = producer.get(d);
      if (p !== undefined) {
        if (p === i) throw new GraphError(`node consumes its own output '${d}'`, { node: n.name, op: n.opType });
        indeg[i]++;
        users[p].push(i);
      }
    }
  });
  const order: Node[] = [];
  const ready: number[] = [];
  indeg.forEach((d, i) => { if (d === 0) ready.push(i); });
  // Process in original order where possible: a min-heap is overkill; the ready list is sorted lazily.
  while (ready.length) {
    ready.sort((a, b) => b - a);
    const i = ready.pop()!;
    order.push(g.nodes[i]);
    for (const u of users[i]) if (--indeg[u] === 0) ready.push(u);
  }
  if (order.length !== g.nodes.length) {
    const stuck = g.nodes.find((_, i) => indeg[i] > 0)!;
    throw new GraphError('the graph has a cycle', { node: stuck.name, op: stuck.opType }, 'the model is invalid; re-export it');
  }
  return order;
}

/**
 * Rewrites g.nodes after a fusion pass: a node mapped to a node is replaced by it, one mapped to null is dropped, the
 * rest stay in order. Registers the 'webjit' domain the fused nodes live in.
 */
export function replaceNodes(model: { graph: Graph; opsets: Map<string, number> }, replace: Map<Node, Node | null>): void {
  const nodes: Node[] = [];
  for (const n of model.graph.nodes) {
    const r = replace.get(n);
    if (r === undefined) nodes.push(n);
    else if (r) nodes.push(r);
  }
  model.graph.nodes = nodes;
  if (!model.opsets.has('webjit')) model.opsets.set('webjit', 1);
}

/**
 * The readers of each value of g's top level, and the values a fusion must keep (graph outputs and values read inside
 * subgraphs).
 */
export function consumersOf(g: Graph): { consumers: Map<string, Node[]>; pinned: Set<string> } {
  const consumers = new Map<string, Node[]>();
  const pinned = new Set(g.outputs.map((o) => o.name));
  for (const n of g.nodes) {
    for (const x of new Set(n.inputs)) if (x) { if (!consumers.has(x)) consumers.set(x, []); consumers.get(x)!.push(n); }
    for (const s of subgraphsOf(n)) for (const v of freeVariables(s)) pinned.add(v);
  }
  return { consumers, pinned };
}

/**
 * For each position of `order`, the values whose last read (by a node or a subgraph of it) happens there and that are
 * neither graph outputs nor initializers: what an executor frees after running that node.
 */
export function lastUses(graph: Graph, order: readonly Node[]): string[][] {
  const outputs = new Set(graph.outputs.map((o) => o.name));
  const last = new Map<string, number>();
  order.forEach((n, i) => {
    for (const x of n.inputs) if (x) last.set(x, i);
    for (const s of subgraphsOf(n)) for (const v of freeVariables(s)) last.set(v, i);
  });
  const frees: string[][] = order.map(() => []);
  for (const [name, i] of last) if (!outputs.has(name) && !graph.initializers.has(name)) frees[i].push(name);
  return frees;
}
