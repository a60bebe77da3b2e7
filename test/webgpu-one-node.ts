// Test helper: one node run on the WebGPU backend (no fallback) and on the reference kernels, for kernel tests.
import { GpuGraphRunner } from '../src/backends/webgpu/executor.js';
import { acquireGpu } from '../src/backends/webgpu/device.js';
import { runNode } from '../src/backends/reference/executor.js';
import { Tensor } from '../src/tensor.js';
import { attrsOf, oneNodeGraph, type AttrVal, type In } from './wasm-one-node.js';

export { attrsOf, type AttrVal, type In };

/**
 * The node's outputs from the WebGPU backend (`got`) and from the reference kernels (`want`). `domain` 'webjit' for
 * fused nodes. `stats` says how the node ran: a test of a GPU kernel should see gpuNodes ≥ 1 and no fallback.
 */
export async function runOneNodeGpu(opType: string, ins: (In | undefined)[], attrs: Record<string, AttrVal> = {}, nOut = 1,
  opset = 17, domain = '', opts: { f16?: boolean } = {}): Promise<{ got: Tensor[]; want: Tensor[]; gpuNodes: number }> {
  const { node, graph, feeds, env } = oneNodeGraph(opType, ins, attrs, nOut, opset, domain);
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
