// The operands of webjit.FusedAttention (graph/fuse_attention.ts) as a kernel sees them: Q, Kᵀ (through k_perm), V
// and the mask as batch strides aligned to the broadcast batch, shared by the Wasm and WebGPU planners.
import type { Node } from '../graph/ir.js';
import type { Tensor } from '../tensor.js';
import { alignStrides, attrOf, broadcast, contiguous } from './op_attrs.js';
import { isPermutation, keepsLastAxis } from '../ops/util.js';

/** `dims` read through `perm` (a folded Transpose): the permuted dims and their strides into the contiguous buffer. */
function permuted(dims: number[], perm: number[]): { dims: number[]; str: number[] } {
  const c = contiguous(dims);
  return { dims: perm.map((a) => dims[a]), str: perm.map((a) => c[a]) };
}

interface Desc { dtype: string; dims: number[] }

export interface AttentionOperands {
  batch: number[];
  Sq: number; Skv: number; D: number; Dv: number;
  /** Per batch dim, element strides of Q, Kᵀ and V (0 where broadcast). */
  qb: number[]; kb: number[]; vb: number[];
  /** Kᵀ's strides along keys and along the head dim. */
  kKey: number; kD: number;
  /** Q's stride between rows and V's between keys (D and Dv unless q_perm / v_perm); their head dims are contiguous. */
  qRow: number; vKey: number;
  /** The output: its dims as the node writes them (out_perm applied), batch strides and row stride of the result. */
  outDims: number[]; ob: number[]; oRow: number;
  mask?: { b: number[]; row: number; key: 0 | 1 };
  /** The scaling constant (a Mul or Div on Q or on the scores, as the graph had it). */
  scaleTensor?: Tensor;
  scaleOp: string;
  scaleOn: string;
}

/** Null when a layout is not one the kernels cover (they fall back to the reference kernel). */
export function attentionOperands(node: Node, inputs: (Desc | undefined)[], maxD: number): AttentionOperands | null {
  if (node.domain !== 'webjit') return null;
  const [q, k, v, m] = inputs;
  if (!q || !k || !v || q.dtype !== 'float32' || k.dtype !== 'float32' || v.dtype !== 'float32') return null;
  if (m && m.dtype !== 'float32') return null;
  if (node.inputs.length > 4) return null;
  // Q and V as the attention sees them: through q_perm / v_perm (folded Transposes that keep the last axis last).
  const view = (d: number[], name: string): { dims: number[]; str: number[] } | null => {
    const p = attrOf(node, name) as number[] | undefined;
    if (!p) return { dims: d, str: contiguous(d) };
    return keepsLastAxis(p, d.length) ? permuted(d, p) : null;
  };
  const qv = view(q.dims, 'q_perm'), vv = view(v.dims, 'v_perm');
  if (!qv || !vv) return null;
  const qd = qv.dims, vd = vv.dims;
  if (qd.length < 2 || vd.length < 2 || k.dims.length < 2) return null;
  // Kᵀ as the MatMul saw it: dims and strides into K's buffer.
  let ktDims = [...k.dims], ktStr = contiguous(k.dims);
  if (attrOf(node, 'transpose_k') === 1) {
    const r = k.dims.length;
    const perm = (attrOf(node, 'k_perm') as number[] | undefined) ?? [...Array(r).keys()].reverse();
    if (!isPermutation(perm, r)) return null;
    ({ dims: ktDims, str: ktStr } = permuted(k.dims, perm));
  }
  const Sq = qd[qd.length - 2], D = qd[qd.length - 1];
  if (ktDims[ktDims.length - 2] !== D) return null;
  const Skv = ktDims[ktDims.length - 1];
  if (vd[vd.length - 2] !== Skv || Skv === 0 || D === 0 || D > maxD) return null;
  const Dv = vd[vd.length - 1];
  if (Dv > maxD) return null;
  // Scaling broadcasts like any Mul/Div: a constant of higher rank would change the shape.
  const scaleTensor = attrOf(node, 'scale_tensor') as Tensor | undefined;
  const scaleOp = String(attrOf(node, 'scale_op') ?? 'Mul'), scaleOn = String(attrOf(node, 'scale_on') ?? 'scores');
  if (scaleTensor && scaleTensor.dims.length > (scaleOn === 'q' ? qd.length : Math.max(qd.length, ktDims.length))) return null;
  const qb = qd.slice(0, -2), kb = ktDims.slice(0, -2), vb = vd.slice(0, -2);
  const sBatch = broadcast(qb, kb);
  if (!sBatch) return null;
  let scoreBatch = sBatch;
  let mb: number[] = [], mStr: number[] = [];
  let mask: AttentionOperands['mask'];
  if (m) {
    const md = m.dims;
    if (md.length < 1) return null;
    const mLast = md[md.length - 1], mRow = md.length >= 2 ? md[md.length - 2] : 1;
    if ((mLast !== 1 && mLast !== Skv) || (mRow !== 1 && mRow !== Sq)) return null;
    mb = md.slice(0, -2);
    const bb = broadcast(sBatch, mb);
    if (!bb) return null;
    scoreBatch = bb;
    const ms = contiguous(md);
    mStr = ms.slice(0, -2);
    mask = { b: [], row: md.length >= 2 && mRow !== 1 ? ms[md.length - 2] : 0, key: mLast === 1 ? 0 : 1 };
  }
  // Softmax must run over the last axis of the scores (before opset 13 an axis coerces to 2-D: the last one only).
  const rank = scoreBatch.length + 2;
  const opset = (attrOf(node, 'onnx_opset') as number | undefined) ?? 18;
  let axis = (attrOf(node, 'softmax_axis') as number | undefined) ?? (opset >= 13 ? -1 : 1);
  if (axis < 0) axis += rank;
  if (axis !== rank - 1) return null;
  const batch = broadcast(scoreBatch, vb);
  if (!batch) return null;
  const qs = qv.str, vs = vv.str;
  if (mask) mask.b = alignStrides(mb, mStr, batch);
  // The result [...batch, Sq, Dv], written transposed by out_perm: logical axis p[k] lands on the output's axis k.
  const res = [...batch, Sq, Dv];
  const op = attrOf(node, 'out_perm') as number[] | undefined;
  let outDims = res, os = contiguous(res);
  if (op) {
    const r = res.length;
    if (!keepsLastAxis(op, r)) return null;
    outDims = op.map((a) => res[a]);
    const fs = contiguous(outDims);
    os = new Array<number>(r);
    op.forEach((a, k) => { os[a] = fs[k]; });
  }
  return {
    batch, Sq, Skv, D, Dv,
    qb: alignStrides(qb, qs.slice(0, -2), batch),
    kb: alignStrides(kb, ktStr.slice(0, -2), batch), kKey: ktStr[ktStr.length - 1], kD: ktStr[ktStr.length - 2],
    vb: alignStrides(vb, vs.slice(0, -2), batch),
    qRow: qs[qs.length - 2], vKey: vs[vs.length - 2],
    outDims, ob: os.slice(0, -2), oRow: os[os.length - 2],
    mask, scaleTensor, scaleOp, scaleOn,
  };
}
