// Graph pass: MatMul by a constant weight → Add(bias) → [activation] → [residual Add] becomes one webjit.FusedMatMul node.
import type { Attribute, Dim, Graph, Model, Node, ValueType } from './ir.js';
import { inferShapes } from './shapes.js';
import { freeVariables, replaceNodes, subgraphsOf, topoOrder } from './topo.js';
import type { Tensor } from '../tensor.js';

/** Domain and op type of the fused node (reference kernel: src/ops/fused_matmul.ts; Wasm: backends/wasm/ops/fused_matmul.ts). */
export const FUSED_MATMUL = 'FusedMatMul';

/** Activations the fused node names in its 'activation' attribute (the GEMM epilogue's names). */
export type FusedMatMulActivation = 'none' | 'relu' | 'sigmoid' | 'tanh' | 'gelu' | 'gelu_tanh' | 'silu';

/**
 * A FusedMatMul node has inputs (A, B [K, N] constant, bias constant broadcast along the last dim, residual?) and
 * attributes:
 * - activation (string): one of FusedMatMulActivation, applied after the bias;
 * - graph (graph): the original nodes, inputs (A, B, bias, residual?), replayed by the reference kernel so that the
 *   fused node computes exactly what they did. Scalar constants of the activation pattern are its initializers.
 * The residual, when present, is added after the activation.
 */
export interface FuseMatMulStats {
  fused: number;
  /** Fused chains by activation. */
  activations: Map<string, number>;
  residuals: number;
}

interface Chain {
  act: FusedMatMulActivation;
  /** Member nodes after the bias Add, in the order they were found. */
  nodes: Node[];
  out: string;
}

const near = (x: number, y: number) => Math.abs(x - y) <= 1e-6 * Math.max(1, Math.abs(y));

/**
 * Fuses every MatMul(A, B) → Add(·, bias) → optional activation (Relu, Sigmoid, Tanh, Gelu, the Erf-GELU and tanh-GELU
 * patterns as PyTorch exports them, x·sigmoid(x)) → optional Add with a residual, where B is a float32 [K, N]
 * initializer, bias a float32 initializer broadcast along the last dim, and every intermediate is read only inside the
 * chain and is no graph output. Works on the top-level graph; run it before fuseElementwise.
 */
export function fuseMatMul(model: Model): FuseMatMulStats {
  const g = model.graph;
  const stats: FuseMatMulStats = { fused: 0, activations: new Map(), residuals: 0 };
  let types: Map<string, ValueType>;
  try { types = inferShapes(model); } catch { types = new Map(); }
  const shapeOf = (x: string): Dim[] | null => {
    const t = types.get(x);
    return t && t.kind === 'tensor' ? t.shape : null;
  };
  const dtypeOf = (x: string): string | null => {
    if (g.initializers.has(x)) return g.initializers.get(x)!.type;
    const t = types.get(x);
    return t && t.kind === 'tensor' ? t.dtype : null;
  };
  const graphInputs = new Set(g.inputs.map((i) => i.name));
  const graphOutputs = new Set(g.outputs.map((o) => o.name));
  const constant = (x: string): Tensor | null => (x && g.initializers.has(x) && !graphInputs.has(x) ? g.initializers.get(x)! : null);
  const scalar = (x: string): number | null => {
    const t = constant(x);
    if (!t || t.size !== 1 || t.dims.length > 1 || !(t.data instanceof Float32Array)) return null;
    return t.data[0];
  };

  const order = topoOrder(g);
  const consumers = new Map<string, Node[]>();
  /** Values read by subgraphs (If/Loop bodies) count as uses that cannot be fused away. */
  const outerReads = new Set<string>();
  for (const n of order) {
    for (const x of new Set(n.inputs)) if (x) { if (!consumers.has(x)) consumers.set(x, []); consumers.get(x)!.push(n); }
    for (const s of subgraphsOf(n)) for (const v of freeVariables(s)) outerReads.add(v);
  }
  const cons = (x: string): Node[] => consumers.get(x) ?? [];
  const std = (n: Node | undefined, op: string): boolean => !!n && n.opType === op && n.domain === '' && n.outputs.length >= 1;
  /** The only consumer of x, when it is a standard `op` node. */
  const only = (x: string, op: string): Node | null => {
    const c = cons(x);
    return c.length === 1 && std(c[0], op) ? c[0] : null;
  };
  /** The other input of binary node n, when one input is x. */
  const other = (n: Node, x: string): string | null => {
    if (n.inputs.length !== 2) return null;
    if (n.inputs[0] === x) return n.inputs[1];
    if (n.inputs[1] === x) return n.inputs[0];
    return null;
  };
  const isScalar = (x: string | null, v: number) => { const s = x === null ? null : scalar(x); return s !== null && near(s, v); };
  const opsetAi = model.opsets.get('') ?? 1;

  /** Tail of both GELU patterns from a = 1 + f(x): 0.5·x·a as Mul(Mul(x, a), 0.5), Mul(Mul(x, 0.5), a) or Mul(x, Mul(a, 0.5)). */
  const geluTail = (x: string, a: string, extra: Node[]): { nodes: Node[]; out: string } | null => {
    const m = only(a, 'Mul');
    if (!m) return null;
    const o = other(m, a);
    if (o === null) return null;
    if (o === x) {
      const h = only(m.outputs[0], 'Mul');
      if (!h || !isScalar(other(h, m.outputs[0]), 0.5)) return null;
      return { nodes: [...extra, m, h], out: h.outputs[0] };
    }
    if (isScalar(o, 0.5)) {
      const h = only(m.outputs[0], 'Mul');
      if (!h || other(h, m.outputs[0]) !== x) return null;
      return { nodes: [...extra, m, h], out: h.outputs[0] };
    }
    const half = cons(x).find((n) => std(n, 'Mul') && n.outputs[0] === o && isScalar(other(n, x), 0.5));
    if (!half) return null;
    return { nodes: [...extra, half, m], out: m.outputs[0] };
  };

  const erfGelu = (x: string): Chain | null => {
    for (const d of cons(x)) {
      const ok = (std(d, 'Div') && d.inputs[0] === x && isScalar(d.inputs[1], Math.SQRT2)) ||
        (std(d, 'Mul') && isScalar(other(d, x), Math.SQRT1_2));
      if (!ok) continue;
      const e = only(d.outputs[0], 'Erf');
      if (!e) continue;
      const a = only(e.outputs[0], 'Add');
      if (!a || !isScalar(other(a, e.outputs[0]), 1)) continue;
      const t = geluTail(x, a.outputs[0], [d, e, a]);
      if (t) return { act: 'gelu', ...t };
    }
    return null;
  };

  const tanhGelu = (x: string): Chain | null => {
    // x³ as Pow(x, 3) or Mul(x, Mul(x, x)).
    const cubes: { nodes: Node[]; out: string }[] = [];
    for (const n of cons(x)) {
      if (std(n, 'Pow') && n.inputs[0] === x && isScalar(n.inputs[1], 3)) cubes.push({ nodes: [n], out: n.outputs[0] });
      if (std(n, 'Mul') && n.inputs[0] === x && n.inputs[1] === x) {
        const c = only(n.outputs[0], 'Mul');
        if (c && other(c, n.outputs[0]) === x) cubes.push({ nodes: [n, c], out: c.outputs[0] });
      }
    }
    for (const cube of cubes) {
      const k = only(cube.out, 'Mul');
      if (!k || !isScalar(other(k, cube.out), 0.044715)) continue;
      const s = only(k.outputs[0], 'Add');
      if (!s || other(s, k.outputs[0]) !== x) continue;
      const r = only(s.outputs[0], 'Mul');
      if (!r || !isScalar(other(r, s.outputs[0]), Math.sqrt(2 / Math.PI))) continue;
      const th = only(r.outputs[0], 'Tanh');
      if (!th) continue;
      const a = only(th.outputs[0], 'Add');
      if (!a || !isScalar(other(a, th.outputs[0]), 1)) continue;
      const t = geluTail(x, a.outputs[0], [...cube.nodes, k, s, r, th, a]);
      if (t) return { act: 'gelu_tanh', ...t };
    }
    return null;
  };

  const silu = (x: string): Chain | null => {
    for (const n of cons(x)) {
      let pre: Node[] = [];
      let sig: Node | null = null;
      if (std(n, 'Sigmoid')) sig = n;
      else if (std(n, 'Mul') && isScalar(other(n, x), 1)) { sig = only(n.outputs[0], 'Sigmoid'); pre = [n]; }
      if (!sig) continue;
      const m = only(sig.outputs[0], 'Mul');
      if (!m || other(m, sig.outputs[0]) !== x) continue;
      return { act: 'silu', nodes: [...pre, sig, m], out: m.outputs[0] };
    }
    return null;
  };

  const unary = (x: string): Chain | null => {
    const c = cons(x);
    if (c.length !== 1 || c[0].domain !== '' || c[0].inputs[0] !== x || c[0].outputs.length !== 1) return null;
    const n = c[0];
    const simple: Record<string, FusedMatMulActivation> = { Relu: 'relu', Sigmoid: 'sigmoid', Tanh: 'tanh' };
    if (simple[n.opType]) return { act: simple[n.opType], nodes: [n], out: n.outputs[0] };
    if (n.opType === 'Gelu' && opsetAi >= 20) {
      const approx = n.attrs.get('approximate')?.value ?? 'none';
      if (approx === 'none' || approx === 'tanh') return { act: approx === 'none' ? 'gelu' : 'gelu_tanh', nodes: [n], out: n.outputs[0] };
    }
    return null;
  };

  const fusedNodes = new Map<Node, Node | null>();
  const taken = new Set<Node>();
  for (const mm of order) {
    if (!std(mm, 'MatMul') || taken.has(mm) || mm.inputs.length !== 2 || !mm.outputs[0]) continue;
    const [a, b] = mm.inputs;
    const w = constant(b);
    if (!a || !w || w.type !== 'float32' || w.dims.length !== 2) continue;
    const aType = dtypeOf(a);
    if (aType !== null && aType !== 'float32') continue;
    const N = w.dims[1];
    const mmOut = mm.outputs[0];
    const add = only(mmOut, 'Add');
    if (!add) continue;
    const biasName = other(add, mmOut);
    const bias = biasName === null ? null : constant(biasName);
    if (!bias || biasName === mmOut || bias.type !== 'float32' || bias.dims.length === 0) continue;
    const bd = bias.dims;
    const last = bd[bd.length - 1];
    if ((last !== N && last !== 1) || bd.slice(0, -1).some((d) => d !== 1)) continue;
    // The bias may not raise the rank beyond the product's (a 1-D A gives a 1-D product).
    const aShape = shapeOf(a);
    const outRank = aShape ? Math.max(1, aShape.length) : null;
    if (bd.length > 1 && (outRank === null || bd.length > outRank)) continue;
    const x = add.outputs[0];
    if (!x) continue;
    let chain: Chain = { act: 'none', nodes: [], out: x };
    const actChain = unary(x) ?? erfGelu(x) ?? tanhGelu(x) ?? silu(x);
    if (actChain) chain = actChain;
    const members = [mm, add, ...chain.nodes];
    let out = chain.out;
    let residual: string | undefined;
    // Residual: Add(out, R) with R of the output's shape, produced outside the chain.
    const r = only(out, 'Add');
    if (r) {
      const R = other(r, out);
      const inside = new Set(members.flatMap((n) => n.outputs));
      if (R !== null && R && R !== out && !inside.has(R) && (dtypeOf(R) === null || dtypeOf(R) === 'float32') && sameShape(shapeOf(R), shapeOf(out))) {
        members.push(r);
        residual = R;
        out = r.outputs[0];
      }
    }
    if (members.some((n) => taken.has(n) || n.outputs.length !== 1)) continue;
    // Every intermediate is read only inside the chain and is no graph output.
    const memberSet = new Set(members);
    const ok = members.every((n) => {
      const o = n.outputs[0];
      if (o === out) return true;
      return !graphOutputs.has(o) && !outerReads.has(o) && cons(o).every((c) => memberSet.has(c));
    });
    if (!ok) continue;

    const inputNames = [a, b, biasName!, ...(residual ? [residual] : [])];
    const inputSet = new Set(inputNames);
    const subInits = new Map<string, Tensor>();
    for (const n of members) for (const i of n.inputs) if (i && !inputSet.has(i) && g.initializers.has(i)) subInits.set(i, g.initializers.get(i)!);
    const ordered = order.filter((n) => memberSet.has(n));
    const sub: Graph = {
      name: `fused_matmul_${mm.name || mmOut}`,
      nodes: ordered.map((n) => ({ ...n, attrs: new Map(n.attrs) })),
      inputs: inputNames.map((name) => ({ name, type: types.get(name) ?? null })),
      outputs: [{ name: out, type: types.get(out) ?? null }],
      initializers: subInits,
      valueInfo: new Map(),
    };
    const attrs = new Map<string, Attribute>([
      ['activation', { name: 'activation', type: 'string', value: chain.act }],
      ['graph', { name: 'graph', type: 'graph', value: sub }],
    ]);
    const fused: Node = { name: sub.name, opType: FUSED_MATMUL, domain: 'webjit', inputs: inputNames, outputs: [out], attrs };
    const lastMember = ordered[ordered.length - 1];
    for (const n of members) { taken.add(n); fusedNodes.set(n, n === lastMember ? fused : null); }
    stats.fused++;
    stats.activations.set(chain.act, (stats.activations.get(chain.act) ?? 0) + 1);
    if (residual) stats.residuals++;
  }
  if (stats.fused === 0) return stats;
  replaceNodes(model, fusedNodes);
  return stats;
}

/** Shapes that may be equal: same rank and no two known dims (numbers or the same symbol) that differ. */
function sameShape(a: Dim[] | null, b: Dim[] | null): boolean {
  if (!a || !b) return true; // unknown: the Wasm kernel checks the concrete dims and otherwise falls back
  if (a.length !== b.length) return false;
  return a.every((d, i) => !(typeof d === 'number' && typeof b[i] === 'number' && d !== b[i]));
}
