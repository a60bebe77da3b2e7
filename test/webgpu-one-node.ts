// Test helper: one node run on the WebGPU backend (no fallback) and on the reference kernels, for kernel tests.
import { GpuGraphRunner } from '../src/backends/webgpu/executor.js';
import { acquireGpu } from '../src/backends/webgpu/device.js';
import { runNode } from '../src/backends/reference/executor.js';
import type { Graph, Node } from '../src/graph/ir.js';
import { Tensor } from '../src/tensor.js';
import { attrsOf, type AttrVal, type In } from './wasm-one-node.js';

export { attrsOf, type AttrVal, type In };

/**
 * The node's outputs from the WebGPU backend (`got`) and from the reference kernels (`want`). `domain` 'webjit' for
 * fused nodes. `stats` says how the node ran: a test of a GPU kernel should see gpuNodes ≥ 1 and no fallback.
 */
export async function runOneNodeGpu(opType: string, ins: (In | undefined)[], attrs: Record<string, AttrVal> = {}, nOut = 1,
  opset = 17, domain = '', opts: { f16?: boolean } = {}): Promise<{ got: Tensor[]; want: Tensor[]; gpuNodes: number }> {
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
  const gpu = await acquireGpu();
  const runner = new GpuGraphRunner(graph, env, gpu, { fallback: false, f16: opts.f16 });
  try {
    const got = (await runner.run(feeds)) as Tensor[];
    const want = runNode(node, ins.map((x) => x?.t), env, () => undefined) as Tensor[];
    return { got, want, gpuNodes: runner.stats.gpuNodes };
  } finally {
    runner.dispose();
  }
}

/** max |got - want| / max(1, max |want|) over all elements; NaN where the NaN patterns differ. */
export function relErr(got: Tensor, want: Tensor): number {
  const a = got.data as ArrayLike<number>, b = want.data as ArrayLike<number>;
  if (a.length !== b.length) return NaN;
  let md = 0, mx = 0;
  for (let i = 0; i < a.length; i++) {
    const x = Number(a[i]), y = Number(b[i]);
    if (Number.isNaN(x) !== Number.isNaN(y)) return NaN;
    if (Number.isNaN(y)) continue;
    if (x !== y) md = Math.max(md, Math.abs(x - y));
    mx = Math.max(mx, Math.abs(y));
  }
  return md / Math.max(1, mx);
}
