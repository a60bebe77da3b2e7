// Reference kernel of webjit.FusedAttention (made by graph/fuse_attention.ts): replays the original primitive ops.
import { UnsupportedError } from '../errors.js';
import type { Attribute, Node } from '../graph/ir.js';
import type { Tensor, Value } from '../tensor.js';
import { AttrReader, findKernel, registerOp, type KernelContext } from './registry.js';
import { input, optInput } from './util.js';

/**
 * Runs Transpose → [Mul/Div] → MatMul → [Mul/Div] → [Add] → Softmax → MatMul with the very kernels, attributes and
 * opset of the ops the pass replaced, so a fused graph computes bit for bit what the unfused one did.
 */
function fusedAttention(inputs: (Value | undefined)[], ctx: KernelContext): Value[] {
  const q0 = input(inputs, 0, ctx), k0 = input(inputs, 1, ctx), v = input(inputs, 2, ctx);
  const mask = optInput(inputs, 3);
  const opset = ctx.attr.int('onnx_opset', 18);
  const step = (op: string, ins: Tensor[], attrs: Attribute[] = []): Tensor => {
    const kernel = findKernel('', op);
    if (!kernel) throw new UnsupportedError(`FusedAttention needs the ${op} kernel`, { node: ctx.node.name, op: ctx.node.opType });
    const node: Node = {
      name: `${ctx.node.name}/${op}`, opType: op, domain: '', inputs: ins.map((_, i) => `in${i}`), outputs: ['out'],
      attrs: new Map(attrs.map((a) => [a.name, a])),
    };
    const sub: KernelContext = { node, opset, attr: new AttrReader(node, node.attrs), runSubgraph: ctx.runSubgraph };
    return kernel(ins, sub)[0] as Tensor;
  };
  let k = k0;
  if (ctx.attr.int('transpose_k', 0)) {
    const perm = ctx.attr.has('k_perm') ? [{ name: 'perm', type: 'ints' as const, value: ctx.attr.ints('k_perm') }] : [];
    k = step('Transpose', [k0], perm);
  }
  const scaleT = ctx.attr.tensor('scale_tensor');
  const scaleOp = scaleT ? ctx.attr.string('scale_op', 'Mul') : '';
  const scaleOn = scaleT ? ctx.attr.string('scale_on', 'scores') : '';
  let q = q0;
  if (scaleT && scaleOn === 'q') q = step(scaleOp, [q0, scaleT]);
  let s = step('MatMul', [q, k]);
  if (scaleT && scaleOn === 'scores') s = step(scaleOp, [s, scaleT]);
  if (mask) s = step('Add', [s, mask]);
  const axis = ctx.attr.has('softmax_axis') ? [{ name: 'axis', type: 'int' as const, value: ctx.attr.int('softmax_axis') }] : [];
  const p = step('Softmax', [s], axis);
  return [step('MatMul', [p, v])];
}

registerOp('FusedAttention', fusedAttention, 'webjit');
