// Test helper: one node run on the Wasm backend (no fallback) and on the reference kernels, for kernel tests.
import { WasmGraphRunner } from '../src/backends/wasm/executor.js';
import type { WasmRuntime } from '../src/backends/wasm/runtime.js';
import { runNode } from '../src/backends/reference/executor.js';
import type { Attribute } from '../src/graph/ir.js';
import { graphOfNode, type In } from '../src/tune/one_node.js';
import { Tensor } from '../src/tensor.js';

export type AttrVal = number | number[] | string | Tensor;
export type { In };

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
  return graphOfNode({ opType, domain, attrs: attrsOf(attrs) }, ins, nOut, opset);
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
