// Ops that only change a tensor's dims (Reshape, Squeeze, Unsqueeze, Flatten, Identity): the fast backends run them as
// views of the same buffer; this is their shape rule, shared.
import type { Node } from '../graph/ir.js';
import { sizeOf } from '../tensor.js';

export const VIEW_OPS: ReadonlySet<string> = new Set(['Reshape', 'Squeeze', 'Unsqueeze', 'Flatten', 'Identity']);

/** Whether the view's dims depend on the values of input 1 (shape or axes), which the caller must read first. */
export function viewReadsInput1(node: Node, opset: number): boolean {
  return (node.opType === 'Reshape' && opset >= 5) || ((node.opType === 'Squeeze' || node.opType === 'Unsqueeze') && opset >= 13);
}

/**
 * The output dims of a view op, given the input's dims and the values of input 1 where viewReadsInput1 (else null);
 * null when the node is not a valid pure view (the reference kernel then reports the error).
 */
export function viewDims(node: Node, dims: number[], opset: number, input1: number[] | null): number[] | null {
  switch (node.opType) {
    case 'Identity': return dims;
    case 'Reshape': {
      if (opset < 5 || !input1) return null;
      const allowzero = node.attrs.get('allowzero')?.value === 1;
      const out = input1.map((d, k) => (d === 0 && !allowzero ? dims[k] : d));
      const known = out.reduce((p, d) => (d === -1 ? p : p * d), 1);
      const k = out.indexOf(-1);
      if (k >= 0) out[k] = known === 0 ? 0 : sizeOf(dims) / known;
      if (out.some((d) => !Number.isInteger(d) || d < 0) || sizeOf(out) !== sizeOf(dims)) return null;
      return out;
    }
    case 'Flatten': {
      const r = dims.length;
      let ax = (node.attrs.get('axis')?.value as number | undefined) ?? 1;
      if (ax < 0) ax += r;
      if (ax < 0 || ax > r) return null;
      return [sizeOf(dims.slice(0, ax)), sizeOf(dims.slice(ax))];
    }
    case 'Squeeze': case 'Unsqueeze': {
      const axes = opset >= 13 ? input1 : ((node.attrs.get('axes')?.value as number[] | undefined) ?? null);
      if (node.opType === 'Squeeze') {
        const r = dims.length;
        const set = new Set((axes ?? dims.map((d, k) => (d === 1 ? k : -1)).filter((k) => k >= 0)).map((a) => (a < 0 ? a + r : a)));
        if ([...set].some((a) => dims[a] !== 1)) return null;
        return dims.filter((_, k) => !set.has(k));
      }
      if (!axes) return null;
      const r = dims.length + axes.length;
      const set = new Set(axes.map((a) => (a < 0 ? a + r : a)));
      if (set.size !== axes.length || [...set].some((a) => a < 0 || a >= r)) return null;
      const out: number[] = [];
      let j = 0;
      for (let k = 0; k < r; k++) out.push(set.has(k) ? 1 : dims[j++]);
      return out;
    }
    default: return null;
  }
}
