// A graph of one node, for running a kernel alone: the tuner's verification and timing, and the kernel tests.
import type { Graph, Node } from '../graph/ir.js';
import type { Tensor } from '../tensor.js';

/** A node input: a feed, or a model constant (initializer) when `constant`. */
export interface In { t: Tensor; constant?: boolean }

/**
 * The node alone (inputs renamed in0…, outputs out0…, attributes and domain kept): constant inputs become
 * initializers, the others feeds.
 */
export function graphOfNode(src: Pick<Node, 'opType' | 'domain' | 'attrs'> & { name?: string }, ins: (In | undefined)[], nOut: number, opset: number) {
  const node: Node = {
    name: src.name ?? src.opType, opType: src.opType, domain: src.domain, attrs: src.attrs,
    inputs: ins.map((x, i) => (x ? `in${i}` : '')), outputs: Array.from({ length: nOut }, (_, i) => `out${i}`),
  };
  const graph: Graph = {
    name: 'g', nodes: [node], valueInfo: new Map(), initializers: new Map(),
    inputs: [], outputs: node.outputs.map((name) => ({ name, type: null })),
  };
  const feeds = new Map<string, Tensor>();
  ins.forEach((x, i) => {
    if (!x) return;
    if (x.constant) graph.initializers.set(`in${i}`, x.t);
    else { graph.inputs.push({ name: `in${i}`, type: null }); feeds.set(`in${i}`, x.t); }
  });
  const opsets = new Map([['', opset]]);
  if (src.domain && src.domain !== 'webjit') opsets.set(src.domain, 1);
  const env = { opsets, functions: new Map() };
  return { node, graph, feeds, env };
}
