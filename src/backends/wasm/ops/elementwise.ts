// Wasm elementwise ops (and FusedElementwise groups): ONNX nodes translated into one SSA program over broadcast
// inputs, compiled by kernels/elementwise.ts into a single loop nest specialised to the shapes.
import type { Graph, Node } from '../../../graph/ir.js';
import { sizeOf, type DType } from '../../../tensor.js';
import { EwUnsupported, ewLayout, genElementwise } from '../kernels/elementwise.js';
import { EW_OPS, EwProgram, type EwVal, translate } from '../../../codegen/ew.js';
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
  const P = new EwProgram();
  const args: (EwVal | undefined)[] = [];
  for (let i = 0; i < inputs.length; i++) {
    const d = inputs[i];
    if (!d) { args.push(undefined); continue; }
    const v = P.external(i, d);
    if (!v) return null;
    args.push(v);
  }
  const out = translate(P, node, args, opset);
  if (!out) return null;
  if (node.outputs.length !== 1) return null;
  return planProgram(P, [out], ctx);
}

for (const op of EW_OPS) registerWasmOp(op, planNode);

/** FusedElementwise (domain webjit): the 'graph' attribute's nodes compiled into one loop. */
registerWasmOp('FusedElementwise', (node, inputs, ctx, opset) => {
  const g = node.attrs.get('graph');
  if (!g || g.type !== 'graph') return null;
  const sub = g.value as Graph;
  if (sub.inputs.length !== inputs.length || sub.outputs.length !== node.outputs.length) return null;
  const P = new EwProgram();
  const vals = new Map<string, EwVal>();
  for (let i = 0; i < inputs.length; i++) {
    const d = inputs[i];
    if (!d) return null;
    const v = P.external(i, d);
    if (!v) return null;
    vals.set(sub.inputs[i].name, v);
  }
  for (const n of sub.nodes) {
    const args = n.inputs.map((x) => (x ? vals.get(x) : undefined));
    if (n.inputs.some((x, k) => x && !args[k])) return null;
    if (n.outputs.length !== 1) return null;
    const out = translate(P, n, args, opset);
    if (!out) return null;
    vals.set(n.outputs[0], out);
  }
  const outs = sub.outputs.map((o) => vals.get(o.name));
  if (outs.some((o) => !o)) return null;
  return planProgram(P, outs as EwVal[], ctx);
});
