// Test helper: one node run on the Wasm backend (no fallback) and on the reference kernels, for kernel tests.
import { WasmGraphRunner } from '../src/backends/wasm/executor.js';
import type { WasmRuntime } from '../src/backends/wasm/runtime.js';
import { runNode } from '../src/backends/reference/executor.js';
import type { Attribute, Graph, Node } from '../src/graph/ir.js';
import { Tensor } from '../src/tensor.js';

export type AttrVal = number | number[] | string | Tensor;
/** A node input: a feed, or a model constant (initializer) when `constant`. */
export interface In { t: Tensor; constant?: boolean }

export function attrsOf(a: Record<string, AttrVal>): Map<string, Attribute> {
  const m = new Map<string, Attribute>();
  for (const [name, value] of Object.entries(a)) {
    const type = value instanceof Tensor ? 'tensor' : typeof value === 'string' ? 'string' : Array.isArray(value) ? 'ints' : Number.isInteger(value) ? 'int' : 'float';
    m.set(name, { name, type, value });
  }
  return m;
}

/** A graph of one node (inputs in0…, outputs out0…): constant inputs become initializers, the others feeds. */
export function oneNodeGraph(opType: string, ins: (In | undefined)[], attrs: Record<string, AttrVal>, nOut: number, opset: number, domain = '') {
  const node: Node = {
    name: opType, opType, domain, attrs: attrsOf(attrs),
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
  const env = { opsets: new Map([['', opset]]), functions: new Map() };
  return { node, graph, feeds, env };
}

/** The node's outputs from the Wasm backend (`got`) and from the reference kernels (`want`). */
export async function runOneNode(rt: WasmRuntime, opType: string, ins: (In | undefined)[], attrs: Record<string, AttrVal> = {}, nOut = 1,
  opset = 17): Promise<{ got: Tensor[]; want: Tensor[] }> {
  const { node, graph, feeds, env } = oneNodeGraph(opType, ins, attrs, nOut, opset);
  const runner = new WasmGraphRunner(graph, env, rt, { fallback: false });
  try {
    const got = (await runner.run(feeds)) as Tensor[];
    const want = runNode(node, ins.map((x) => x?.t), env, () => undefined) as Tensor[];
    return { got, want };
  } finally {
    runner.dispose();
  }
}
