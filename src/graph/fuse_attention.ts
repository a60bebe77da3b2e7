// Graph pass: scaled dot-product attention written as primitive ops becomes one webjit.FusedAttention node.
import type { Attribute, Graph, Model, Node } from './ir.js';
import { freeVariables, subgraphsOf } from './topo.js';
import { Tensor } from '../tensor.js';
import { keepsLastAxis } from '../ops/util.js';

/** Domain and op type of the fused node (its reference kernel is src/ops/fused_attention.ts). */
export const FUSED_DOMAIN = 'webjit';
export const FUSED_ATTENTION = 'FusedAttention';

/**
 * Attributes of a FusedAttention node, inputs (Q, K, V, mask?):
 * - transpose_k (int): 1 when input K is the operand before a Transpose (perm in k_perm, absent = reversed dims),
 *   0 when K is the MatMul's right operand itself (already [..., D, Skv]).
 * - scale (float): the effective multiplier of the scores (1/c for a Div by c); 1 when there is no scaling.
 * - scale_op ('Mul' | 'Div'), scale_on ('q' | 'scores'), scale_tensor (tensor): the original scaling, replayed
 *   exactly by the reference kernel (absent when there is none).
 * - softmax_axis (int): the Softmax's axis attribute when it had one.
 * - onnx_opset (int): the ai.onnx opset the original ops ran under.
 * - q_perm, v_perm, out_perm (ints, from foldAttentionTransposes only): Q and V are the operands before a Transpose
 *   with that perm; the output is the attention's result transposed by out_perm.
 */
export interface FuseAttentionStats {
  fused: number;
}

interface Uses {
  count: Map<string, number>;
  protectedNames: Set<string>;
}

function uses(g: Graph): Uses {
  const count = new Map<string, number>();
  const bump = (x: string) => { if (x) count.set(x, (count.get(x) ?? 0) + 1); };
  for (const n of g.nodes) {
    for (const x of n.inputs) bump(x);
    for (const s of subgraphsOf(n)) for (const v of freeVariables(s)) bump(v);
  }
  const protectedNames = new Set(g.outputs.map((o) => o.name));
  return { count, protectedNames };
}

/** A scalar (one-element) constant: an initializer that is not a graph input, or a Constant node's value. */
function scalarConstant(g: Graph, name: string, producer: Map<string, Node>, inputs: Set<string>): Tensor | null {
  let t: Tensor | undefined;
  if (g.initializers.has(name) && !inputs.has(name)) t = g.initializers.get(name);
  else {
    const p = producer.get(name);
    if (p && p.opType === 'Constant' && p.domain === '') {
      const v = p.attrs.get('value')?.value;
      if (v instanceof Tensor) t = v;
    }
  }
  if (!t || t.size !== 1 || !(t.data instanceof Float32Array || t.data instanceof Float64Array)) return null;
  return t;
}

const attr = (name: string, type: Attribute['type'], value: Attribute['value']): Attribute => ({ name, type, value });

/**
 * Replaces each MatMul(Q, Kᵀ) [→ Mul/Div by a scalar constant] [→ Add mask] → Softmax(last axis) → MatMul(·, V)
 * chain (scaling may also sit on Q before the first MatMul) whose intermediates have no other reader by one
 * FusedAttention node. Works on the top-level graph; returns how many chains it fused.
 */
export function fuseAttention(model: Model): FuseAttentionStats {
  const g = model.graph;
  const opset = model.opsets.get('') ?? 1;
  const graphInputs = new Set(g.inputs.map((i) => i.name));
  let fused = 0;
  for (;;) {
    const producer = new Map<string, Node>();
    for (const n of g.nodes) for (const o of n.outputs) if (o) producer.set(o, n);
    const u = uses(g);
    // An intermediate may disappear when only the chain reads it.
    const single = (x: string) => !!x && u.count.get(x) === 1 && !u.protectedNames.has(x) && producer.has(x);
    const std = (n: Node | undefined, op: string): n is Node => !!n && n.opType === op && n.domain === '';
    let done = false;
    for (const sm of g.nodes) {
      if (!std(sm, 'Softmax') || !single(sm.outputs[0] ?? '')) continue;
      const out = sm.outputs[0];
      const mm2 = g.nodes.find((n) => std(n, 'MatMul') && n.inputs[0] === out);
      if (!mm2 || mm2.inputs[1] === out || !mm2.inputs[1]) continue;
      // Softmax over the last axis: opset ≥ 13 defaults to -1; before 13 the default axis 1 is last only in 2-D.
      const axisAttr = sm.attrs.get('axis');
      const axis = axisAttr && typeof axisAttr.value === 'number' ? axisAttr.value : opset >= 13 ? -1 : 1;
      // A non-negative axis is checked against the rank at run time (the rank may be unknown here).
      if (axis < -1) continue;
      const removed: Node[] = [sm, mm2];
      // The scores: [Add(mask)] over [Mul/Div by a scalar] over MatMul(Q, Kᵀ).
      const parseScores = (x: string) => {
        const rm: Node[] = [];
        let p = producer.get(x);
        let sc: { op: 'Mul' | 'Div'; t: Tensor; on: 'q' | 'scores'; name: string } | undefined;
        if ((std(p, 'Mul') || std(p, 'Div')) && single(x)) {
          const [a, b] = p.inputs;
          const cb = scalarConstant(g, b, producer, graphInputs);
          const ca = p.opType === 'Mul' ? scalarConstant(g, a, producer, graphInputs) : null;
          if (cb) { sc = { op: p.opType as 'Mul' | 'Div', t: cb, on: 'scores', name: b }; x = a; }
          else if (ca) { sc = { op: 'Mul', t: ca, on: 'scores', name: a }; x = b; }
          else return null;
          rm.push(p);
          p = producer.get(x);
        }
        if (!std(p, 'MatMul') || !single(x) || !p.inputs[0] || !p.inputs[1]) return null;
        rm.push(p);
        return { mm1: p, scale: sc, rm };
      };
      let mask = '';
      let parsed = parseScores(sm.inputs[0]);
      const add = producer.get(sm.inputs[0]);
      if (!parsed && std(add, 'Add') && single(sm.inputs[0])) {
        const [a, b] = add.inputs;
        parsed = parseScores(a);
        if (parsed) mask = b;
        else { parsed = parseScores(b); if (parsed) mask = a; }
        if (parsed) removed.push(add);
      }
      if (!parsed) continue;
      removed.push(...parsed.rm);
      const mm1 = parsed.mm1;
      let scale = parsed.scale;
      let q = mm1.inputs[0];
      const kt = mm1.inputs[1];
      // Scaling on Q instead (Q·c)·Kᵀ.
      if (!scale) {
        const pq = producer.get(q);
        if ((std(pq, 'Mul') || std(pq, 'Div')) && single(q)) {
          const [a, b] = pq.inputs;
          const cb = scalarConstant(g, b, producer, graphInputs);
          const ca = pq.opType === 'Mul' ? scalarConstant(g, a, producer, graphInputs) : null;
          if (cb) { scale = { op: pq.opType as 'Mul' | 'Div', t: cb, on: 'q', name: b }; q = a; removed.push(pq); }
          else if (ca) { scale = { op: 'Mul', t: ca, on: 'q', name: a }; q = b; removed.push(pq); }
        }
      }
      // K: look through a Transpose that only this chain reads.
      let k = kt;
      let perm: number[] | undefined;
      let transposeK = 0;
      const pk = producer.get(kt);
      if (std(pk, 'Transpose') && single(kt) && pk.inputs[0]) {
        k = pk.inputs[0];
        transposeK = 1;
        const pa = pk.attrs.get('perm');
        if (pa) perm = [...(pa.value as number[])];
        removed.push(pk);
      }
      const v = mm2.inputs[1];
      const attrs = new Map<string, Attribute>();
      attrs.set('transpose_k', attr('transpose_k', 'int', transposeK));
      if (perm) attrs.set('k_perm', attr('k_perm', 'ints', perm));
      const s = scale ? Number((scale.t.data as Float32Array | Float64Array)[0]) : 1;
      const eff = scale ? (scale.op === 'Div' ? 1 / s : s) : 1;
      attrs.set('scale', attr('scale', 'float', eff));
      if (scale) {
        attrs.set('scale_op', attr('scale_op', 'string', scale.op));
        attrs.set('scale_on', attr('scale_on', 'string', scale.on));
        attrs.set('scale_tensor', attr('scale_tensor', 'tensor', scale.t));
      }
      if (axisAttr) attrs.set('softmax_axis', attr('softmax_axis', 'int', axis));
      attrs.set('onnx_opset', attr('onnx_opset', 'int', opset));
      const node: Node = {
        name: `${mm2.name || 'attention'}/FusedAttention`,
        opType: FUSED_ATTENTION,
        domain: FUSED_DOMAIN,
        inputs: mask ? [q, k, v, mask] : [q, k, v],
        outputs: [...mm2.outputs],
        attrs,
      };
      const gone = new Set(removed);
      const at = g.nodes.indexOf(mm2);
      g.nodes[at] = node;
      g.nodes = g.nodes.filter((n) => !gone.has(n));
      for (const n of removed) for (const o of n.outputs) if (o && o !== mm2.outputs[0]) g.valueInfo.delete(o);
      // A Constant node that fed only the scaling is now dead.
      if (scale && !g.initializers.has(scale.name)) {
        const still = g.nodes.some((n) => n.inputs.includes(scale!.name)) || u.protectedNames.has(scale.name);
        if (!still) g.nodes = g.nodes.filter((n) => !(n.opType === 'Constant' && n.outputs[0] === scale!.name));
      }
      fused++;
      done = true;
      break;
    }
    if (!done) break;
  }
  if (fused && !model.opsets.has(FUSED_DOMAIN)) model.opsets.set(FUSED_DOMAIN, 1);
  return { fused };
}

/**
 * For backends whose attention kernel reads and writes through strides (WebGPU): the graph with each FusedAttention
 * node taking Q and V from before a Transpose that only it reads (attributes q_perm, v_perm) and writing the layout
 * of a Transpose that is its output's only reader (out_perm), those Transposes gone. Only permutations that keep the
 * last axis last (head size contiguous), as BERT's [B,S,H,D] ↔ [B,H,S,D] are. Returns a new Graph sharing the
 * initializers; the input graph is not changed (the Wasm backend, which may take over a session, keeps it).
 */
export function foldAttentionTransposes(g: Graph): { graph: Graph; folded: number } {
  const u = uses(g);
  const producer = new Map<string, Node>();
  for (const n of g.nodes) for (const o of n.outputs) if (o) producer.set(o, n);
  const readers = new Map<string, Node[]>();
  for (const n of g.nodes) for (const x of n.inputs) if (x) readers.set(x, [...(readers.get(x) ?? []), n]);
  const single = (x: string) => !!x && u.count.get(x) === 1 && !u.protectedNames.has(x);
  const keepsLast = (p: number[] | undefined): p is number[] => !!p && p.length >= 2 && keepsLastAxis(p, p.length);
  const permOf = (t: Node) => t.attrs.get('perm')?.value as number[] | undefined;
  const gone = new Set<Node>();
  const replaced = new Map<Node, Node>();
  let folded = 0;
  for (const n of g.nodes) {
    if (n.domain !== FUSED_DOMAIN || n.opType !== FUSED_ATTENTION) continue;
    const inputs = [...n.inputs], outputs = [...n.outputs];
    const attrs = new Map(n.attrs);
    for (const [i, name] of [[0, 'q_perm'], [2, 'v_perm']] as const) {
      const t = producer.get(inputs[i]);
      if (!t || t.opType !== 'Transpose' || t.domain !== '' || gone.has(t) || !single(inputs[i]) || attrs.has(name)) continue;
      const p = permOf(t);
      if (!keepsLast(p) || !t.inputs[0]) continue;
      inputs[i] = t.inputs[0];
      attrs.set(name, attr(name, 'ints', [...p]));
      gone.add(t);
      folded++;
    }
    const out = outputs[0];
    const r = readers.get(out);
    if (out && r?.length === 1 && single(out) && r[0].opType === 'Transpose' && r[0].domain === '' && r[0].outputs[0]) {
      const p = permOf(r[0]);
      if (keepsLast(p)) {
        outputs[0] = r[0].outputs[0];
        attrs.set('out_perm', attr('out_perm', 'ints', [...p]));
        gone.add(r[0]);
        folded++;
      }
    }
    if (attrs.size !== n.attrs.size) replaced.set(n, { ...n, inputs, outputs, attrs });
  }
  if (!folded) return { graph: g, folded };
  const nodes = g.nodes.filter((n) => !gone.has(n)).map((n) => replaced.get(n) ?? n);
  return { graph: { ...g, nodes }, folded };
}
