// Reference executor: runs a graph node by node on the TypeScript kernels, freeing values after last use.
import { atNode, GraphError, TimeoutError, UnsupportedError } from '../../errors.js';
import type { Attribute, FunctionDef, Graph, Node } from '../../graph/ir.js';
import { functionKey } from '../../graph/ir.js';
import { lastUses, subgraphsOf, topoOrder } from '../../graph/topo.js';
import { AttrReader, findKernel, type KernelContext } from '../../ops/registry.js';
import type { Value } from '../../tensor.js';
import '../../ops/index.js';

export interface ExecEnv {
  opsets: Map<string, number>;
  functions: Map<string, FunctionDef>;
  /** The run in progress must end by `at` (performance.now() ms); set per run by the session's runTimeoutMs. */
  deadline?: { at: number; ms: number };
}

/** Throws TimeoutError when the run in progress has passed its deadline; runners call it before each node. */
export function checkDeadline(env: ExecEnv, node: Node): void {
  const d = env.deadline;
  if (d && performance.now() > d.at) {
    throw new TimeoutError(d.ms, { node: node.name, op: node.opType });
  }
}

export type Scope = (name: string) => Value | undefined;

/** A graph prepared for repeated execution: order and last uses computed once. */
export class GraphExecutor {
  private readonly order: Node[];
  /** For each position in `order`, the values whose last use it is. */
  private readonly frees: string[][];

  constructor(readonly graph: Graph, readonly env: ExecEnv) {
    this.order = topoOrder(graph);
    this.frees = lastUses(graph, this.order);
  }

  run(feeds: Map<string, Value>, outer?: Scope): Value[] {
    const g = this.graph;
    const values = new Map<string, Value>(feeds);
    const lookup: Scope = (name) => values.get(name) ?? g.initializers.get(name) ?? outer?.(name);
    for (let i = 0; i < this.order.length; i++) {
      const node = this.order[i];
      checkDeadline(this.env, node);
      const ins = node.inputs.map((x) => {
        if (!x) return undefined;
        const v = lookup(x);
        if (v === undefined) {
          throw new GraphError(`value '${x}' is used but never produced`, { node: node.name, op: node.opType, input: x });
        }
        return v;
      });
      const outs = runNode(node, ins, this.env, lookup);
      for (let k = 0; k < node.outputs.length; k++) {
        const name = node.outputs[k];
        if (name && outs[k] !== undefined) values.set(name, outs[k]);
      }
      for (const x of this.frees[i]) values.delete(x);
    }
    return g.outputs.map((o) => {
      const v = lookup(o.name);
      if (v === undefined) throw new GraphError(`graph output '${o.name}' is never produced`, { input: o.name });
      return v;
    });
  }
}

const executorCache = new WeakMap<Graph, GraphExecutor>();
function executorFor(g: Graph, env: ExecEnv): GraphExecutor {
  let e = executorCache.get(g);
  if (!e || e.env !== env) { e = new GraphExecutor(g, env); executorCache.set(g, e); }
  return e;
}

/** Runs one node: a registered kernel, or a model-local function expanded in place. */
export function runNode(node: Node, ins: (Value | undefined)[], env: ExecEnv, scope: Scope): Value[] {
  const kernel = findKernel(node.domain, node.opType);
  const fn = env.functions.get(functionKey(node.domain, node.opType));
  if (!kernel && !fn) {
    throw new UnsupportedError(`operator ${node.domain ? node.domain + '.' : ''}${node.opType} is not implemented`,
      { node: node.name, op: node.opType }, 'webjit does not support this operator yet; please report it');
  }
  try {
    if (!kernel) return runFunction(fn!, node, ins, env);
    const ctx: KernelContext = {
      node,
      opset: env.opsets.get(node.domain) ?? (node.domain === '' ? 1 : 1),
      attr: new AttrReader(node, node.attrs),
      runSubgraph: (sub, subIns) => {
        const feeds = new Map<string, Value>();
        sub.inputs.forEach((vi, i) => { const v = subIns[i]; if (v !== undefined) feeds.set(vi.name, v); });
        checkDeadline(env, node);
        return executorFor(sub, env).run(feeds, scope);
      },
    };
    const outs = kernel(ins, ctx);
    return outs;
  } catch (e) {
    // A deadline met inside a subgraph (a Loop body) is reported at the node the graph above was running.
    if (e instanceof TimeoutError && e.where.node !== node.name && subgraphsOf(node).length) {
      throw new TimeoutError(e.limitMs, { node: node.name, op: node.opType }, e.where);
    }
    throw atNode(e, node.name, node.opType);
  }
}

/** Expands a FunctionProto call: binds inputs, outputs and attribute references, runs the body. */
function runFunction(fn: FunctionDef, call: Node, ins: (Value | undefined)[], env: ExecEnv): Value[] {
  const bindAttr = (a: Attribute): Attribute | undefined => {
    if (a.refAttrName === undefined) return a;
    const v = call.attrs.get(a.refAttrName) ?? fn.attributeDefaults.get(a.refAttrName);
    return v ? { ...v, name: a.name } : undefined;
  };
  const nodes: Node[] = fn.nodes.map((n) => {
    const attrs = new Map<string, Attribute>();
    for (const [k, a] of n.attrs) { const b = bindAttr(a); if (b) attrs.set(k, b); }
    return { ...n, attrs };
  });
  const body: Graph = {
    name: fn.name, nodes, initializers: new Map(), valueInfo: new Map(),
    inputs: fn.inputs.map((name) => ({ name, type: null })),
    outputs: fn.outputs.map((name) => ({ name, type: null })),
  };
  const opsets = new Map(env.opsets);
  for (const [d, v] of fn.opsets) opsets.set(d, v);
  const feeds = new Map<string, Value>();
  fn.inputs.forEach((name, i) => { const v = ins[i]; if (v !== undefined) feeds.set(name, v); });
  return new GraphExecutor(body, { opsets, functions: env.functions, deadline: env.deadline }).run(feeds);
}
