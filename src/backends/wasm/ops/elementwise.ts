// Wasm elementwise ops (and FusedElementwise groups): ONNX nodes translated into one SSA program over broadcast
// inputs, compiled by kernels/elementwise.ts into a single loop nest specialised to the shapes.
import type { Node } from '../../../graph/ir.js';
import { sizeOf, type DType } from '../../../tensor.js';
import { EwUnsupported, ewLayout, genElementwise, keyOf } from '../kernels/elementwise.js';
import { EW_OPS, EwProgram, type EwVal, fusedProgram, nodeProgram } from '../../../codegen/ew.js';
import { type OpPlan, type PlanContext, type ValueDesc, registerWasmOp } from '../kernel.js';
import { FAULTS, enumerate, type Params, spaceSize, type TuneSite, withDefault } from '../../../tune/site.js';
import { faultOf, raggedByValue } from '../tune.js';

const EW_DEFAULT: Params = { split: 4, chunk: 8192, unroll: 1 };
const EW_AXES = { split: [1, 2, 4, 8], chunk: [2048, 8192, 32768], unroll: [1, 2, 4] };

/**
 * Plans a program whose outputs are `outs`: one launch over the walk, split into tasks. Tunable: at most `split` tasks
 * per thread of at least `chunk` elements, and the unroll of the contiguous loop. The ragged case maps every size by
 * value (broadcast relations hold: sizes equal before are equal after, 1 stays 1).
 */
export function planProgram(P: EwProgram, outs: EwVal[], ctx: PlanContext, ragged: TuneSite['ragged'] = (d) => raggedByValue(d)): OpPlan | null {
  const s = P.spec(outs);
  if (!s) return null;
  const outputs = s.spec.outputs.map((o) => ({ dtype: o.dtype as DType, dims: s.dims }));
  if (sizeOf(s.dims) === 0) return { outputs, launches: () => [] };
  const shape = s.spec.shape, total = sizeOf(shape), L = shape[shape.length - 1];
  const scalar = s.spec.inputs.some((x) => x.dtype === 'int64') || s.spec.instrs.some((x) => x.dtype === 'int64');
  const serial = ctx.threads <= 1 || total < 1 << 15;
  const c = ctx.pick({
    family: 'elementwise',
    sig: `ew:${keyOf(s.spec)}:T${ctx.threads}`,
    default: EW_DEFAULT,
    space: () => ({
      before: spaceSize(EW_AXES),
      candidates: withDefault(EW_DEFAULT, enumerate(EW_AXES, (p) => {
        // One task makes the split moot; unrolling needs vectors (not the int64 scalar path) and rows of that many.
        if (serial && (p.split !== EW_DEFAULT.split || p.chunk !== EW_DEFAULT.chunk)) return false;
        if ((p.unroll as number) > 1 && (scalar || L < 4 * (p.unroll as number))) return false;
        return true;
      })),
    }),
    ragged,
    // The one-task 'barrier' fault reuses a row's inputs for the next rows: it needs two rows. The short tail of
    // 'edge' is on the vector path.
    faults: () => FAULTS.filter((f) => (f !== 'barrier' || total / L >= 2) && (f !== 'edge' || !scalar)),
  });
  const n = (k: string) => (typeof c[k] === 'number' ? (c[k] as number) : (EW_DEFAULT[k] as number));
  const fault = faultOf(c);
  const R = total / L;
  const base = fault === 'barrier' ? { rowsPerTask: Math.max(R, 1), colBlock: L, tasks: 1 } : ewLayout(shape, ctx.threads, Math.max(1, n('split')), Math.max(1, n('chunk')));
  const u = n('unroll');
  const layout = { ...base, ...(u === 2 || u === 4 ? { unroll: u } : {}), ...(fault ? { fault } : {}) };
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
