// Reference kernel of webjit.FusedAttention (made by graph/fuse_attention.ts): replays the original primitive ops.
import { UnsupportedError } from '../errors.js';
import type { Attribute, Node } from '../graph/ir.js';
import type { Tensor, Value } from '../tensor.js';
import { AttrReader, findKernel, registerOp, type KernelContext } from './registry.js';
import { input, optInput } from './util.js';

/**
 * Runs [Transpose Q, V] → Transpose → [Mul/Div] → MatMul → [Mul/Div] → [Add] → Softmax → MatMul with the very kernels, attributes and
 * opset of the ops the pass replaced (then [Transpose]), so a fused graph computes bit for bit what the unfused one did.
 */
function fusedAttention(inputs: (Value | undefined)[], ctx: KernelContext): Value[] {
  // Transposes folded into the node for strided kernels (foldAttentionTransposes) run first (Q, V) and last (output).
  const perm = (name: string) => [{ name: 'perm', type: 'ints' as const, value: ctx.attr.ints(name) }];
  const permuted = (t: Tensor, name: string) => (ctx.attr.has(name) ? step('Transpose', [t], perm(name)) : t);
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
  const q0 = permuted(input(inputs, 0, ctx), 'q_perm'), k0 = input(inputs, 1, ctx), v = permuted(input(inputs, 2, ctx), 'v_perm');
  let k = k0;
  if (ctx.attr.int('transpose_k', 0)) {
    k = step('Transpose', [k0], ctx.attr.has('k_perm') ? perm('k_perm') : []);
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
  return [permuted(step('MatMul', [p, v]), 'out_perm')];
}

registerOp('FusedAttention', fusedAttention, 'webjit');
