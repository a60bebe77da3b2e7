// Wasm elementwise ops (and FusedElementwise groups): ONNX nodes translated into one SSA program over broadcast
// inputs, compiled by kernels/elementwise.ts into a single loop nest specialised to the shapes.
import type { Node } from '../../../graph/ir.js';
import { sizeOf, type DType } from '../../../tensor.js';
import { EwUnsupported, ewLayout, genElementwise } from '../kernels/elementwise.js';
import { EW_OPS, EwProgram, type EwVal, fusedProgram, nodeProgram } from '../../../codegen/ew.js';
import { type OpPlan, type PlanContext, type ValueDesc, registerWasmOp } from '../kernel.js';

/** Plans a program whose outputs are `outs`: one launch over the walk, split into tasks. */
export function planProgram(P: EwProgram, outs: EwVal[], ctx: PlanContext): OpPlan | null {
  const s = P.spec(outs);
  if (!s) return null;
  const outputs = s.spec.outputs.map((o) => ({ dtype: o.dtype as DType, dims: s.dims }));
  if (sizeOf(s.dims) === 0) return { outputs, launches: () => [] };
  const layout = ewLayout(s.spec.shape, ctx.threads);
  let kernel;
  try {
    kernel = genElementwise(s.spec, layout);
  } catch (e) {
    if (e instanceof EwUnsupported) return null;
    throw e;
  }
  return {
    outputs,
    launches: (b) => [{ kernel, args: [...s.inputIndex.map((i) => b.inputs[i]), ...b.outputs.slice(0, outs.length)], tasks: layout.tasks }],
  };
}

function planNode(node: Node, inputs: (ValueDesc | undefined)[], ctx: PlanContext, opset: number): OpPlan | null {
  const prog = nodeProgram(node, inputs, opset);
  return prog ? planProgram(prog.P, prog.outs, ctx) : null;
}

for (const op of EW_OPS) registerWasmOp(op, planNode);

/** FusedElementwise (domain webjit): the 'graph' attribute's nodes compiled into one kernel. */
registerWasmOp('FusedElementwise', (node, inputs, ctx, opset) => {
  const prog = fusedProgram(node, inputs, opset);
  return prog ? planProgram(prog.P, prog.outs, ctx) : null;
});
