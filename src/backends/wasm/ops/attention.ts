// Wasm attention (f32): webjit.FusedAttention (from graph/fuse_attention.ts) and ONNX Attention, on kernels/attention.ts.
import { type AttentionParams, attentionScratchPerTask, attentionTasks, genAttention } from '../kernels/attention.js';
import { type OpPlan, type PlanContext, registerWasmOp, taskCount } from '../kernel.js';
import { attrOf, contiguous } from '../../op_attrs.js';
import { attentionOperands } from '../../attention_operands.js';
import { FAULTS, enumerate, type Params, spaceSize, type TuneSite, withDefault } from '../../../tune/site.js';
import { faultOf, raggedByValue } from '../tune.js';

const prod = (d: readonly number[]) => d.reduce((a, b) => a * b, 1);


/**
 * Query rows per unit (the score block kept in scratch) and units per task, so each task is a sizeable share of the
 * work and threads balance: at most `split` tasks per thread (the default 4 is taskCount's).
 */
function schedule(Sq: number, Skv: number, D: number, Dv: number, batch: number, threads: number, rowsP = 8, split = 4): { rows: number; upt: number } {
  const rows = Math.max(1, Math.min(rowsP, Sq));
  const units = batch * Math.ceil(Sq / rows);
  if (threads <= 1) return { rows, upt: units };
  const unitFlops = 2 * rows * Skv * (D + Dv);
  const minUnits = Math.max(1, Math.ceil((1 << 16) / unitFlops));
  const tasks = split === 4 ? taskCount(units, threads, minUnits) : Math.max(1, Math.min(Math.ceil(units / minUnits), threads * split));
  return { rows, upt: Math.ceil(units / tasks) };
}

const ATTN_AXES = { rows: [1, 2, 4, 8, 12, 16], split: [1, 2, 4, 8] };
/** The score block (rows x Skv) and Kᵀ of a task stay within this share of L2. */
const ATTN_SCRATCH_MAX = 512 * 1024;

/** The attention tuning site: rows per unit and tasks per thread; faults are planted by the kernel. */
function attentionSite(p: Omit<AttentionParams, 'rows' | 'unitsPerTask' | 'relaxed'>, desc: string, ctx: PlanContext, ragged: TuneSite['ragged']): TuneSite {
  const def: Params = { rows: 8, split: 4 };
  return {
    family: 'attention',
    sig: `${desc}:${genAttention({ ...p, rows: 0, unitsPerTask: 0, relaxed: ctx.relaxedSimd }).key}:T${ctx.threads}`,
    default: def,
    space: () => {
      const firstAbove = ATTN_AXES.rows.find((r) => r >= p.Sq);
      const cands = enumerate(ATTN_AXES, (c) => {
        const rows = c.rows as number;
        // Row counts of at least Sq all make one block: keep the smallest.
        if (rows > p.Sq && rows !== firstAbove) return false;
        if (attentionScratchPerTask({ ...p, rows: Math.min(rows, p.Sq), unitsPerTask: 1, relaxed: false }) > ATTN_SCRATCH_MAX) return false;
        return ctx.threads > 1 || c.split === def.split;
      });
      return { candidates: withDefault(def, cands), before: spaceSize(ATTN_AXES) };
    },
    ragged,
    // The 'barrier' fault reuses one head's Kᵀ for the next: it needs two heads.
    faults: () => FAULTS.filter((f) => f !== 'barrier' || prod(p.batch) >= 2),
  };
}

function plan(p: Omit<AttentionParams, 'rows' | 'unitsPerTask' | 'relaxed'>, outDims: number[], ctx: PlanContext, desc: string, ragged: TuneSite['ragged']): OpPlan {
  const outputs = [{ dtype: 'float32' as const, dims: outDims }];
  const batch = prod(p.batch);
  if (batch === 0 || p.Sq === 0 || p.Dv === 0) return { outputs, launches: () => [] };
  const c = ctx.pick(attentionSite(p, desc, ctx, ragged));
  const fault = faultOf(c);
  const { rows, upt } = schedule(p.Sq, p.Skv, p.D, p.Dv, batch, ctx.threads, typeof c.rows === 'number' ? c.rows : 8, typeof c.split === 'number' ? c.split : 4);
  // The barrier fault reads a stale Kᵀ only when one task moves between heads: run every unit in one task.
  const params: AttentionParams = { ...p, rows, unitsPerTask: fault === 'barrier' ? batch * Math.ceil(p.Sq / rows) : upt, relaxed: ctx.relaxedSimd, fault };
  const tasks = attentionTasks(params);
  const kernel = genAttention(params);
  return {
    outputs,
    scratchBytes: tasks * attentionScratchPerTask(params),
    launches: (b) => [{ kernel, args: [b.inputs[0], b.inputs[1], b.inputs[2], p.mask ? b.inputs[3] : 0, b.outputs[0], b.scratch], tasks }],
  };
}

/** Largest head size the unrolled dot products are generated for. */
const MAX_D = 1024;

registerWasmOp('FusedAttention', (node, inputs, ctx) => {
  const o = attentionOperands(node, inputs, MAX_D);
  if (!o) return null;
  const { batch, Sq, Skv, D, Dv } = o;
  return plan({
    batch, Sq, Skv, D, Dv,
    q: { b: o.qb, row: o.qRow },
    k: { b: o.kb, key: o.kKey, d: o.kD },
    v: { b: o.vb, key: o.vKey },
    mask: o.mask,
    o: { b: o.ob, row: o.oRow },
    scale: (attrOf(node, 'scale') as number | undefined) ?? 1,
  }, o.outDims, ctx, 'FusedAttention', (d) => raggedByValue(d));
});

registerWasmOp('Attention', (node, inputs, ctx, opset) => {
  const [q, k, v, m] = inputs;
  if (node.domain !== '' || opset < 23 || !q || !k || !v || q.dtype !== 'float32' || k.dtype !== 'float32' || v.dtype !== 'float32') return null;
  // Only the output Y: no KV cache, no causal/softcap/padding variants.
  if (inputs.slice(4).some((x) => x) || node.outputs.slice(1).some((o) => o)) return null;
  if ((attrOf(node, 'is_causal') ?? 0) !== 0 || (attrOf(node, 'softcap') ?? 0) !== 0) return null;
  if (m && m.dtype !== 'float32') return null;
  const rank = q.dims.length;
  if (k.dims.length !== rank || v.dims.length !== rank || (rank !== 3 && rank !== 4)) return null;
  let B: number, Hq: number, Hkv: number, Sq: number, Skv: number, D: number, Dv: number;
  if (rank === 4) {
    [B, Hq, Sq, D] = q.dims;
    Hkv = k.dims[1]; Skv = k.dims[2];
    if (k.dims[0] !== B || k.dims[3] !== D || v.dims[0] !== B || v.dims[1] !== Hkv || v.dims[2] !== Skv) return null;
    Dv = v.dims[3];
  } else {
    Hq = (attrOf(node, 'q_num_heads') as number | undefined) ?? 0;
    Hkv = (attrOf(node, 'kv_num_heads') as number | undefined) ?? 0;
    if (Hq <= 0 || Hkv <= 0) return null;
    [B, Sq] = q.dims;
    Skv = k.dims[1];
    if (q.dims[2] % Hq || k.dims[2] % Hkv || v.dims[2] % Hkv) return null;
    D = q.dims[2] / Hq; Dv = v.dims[2] / Hkv;
    if (k.dims[0] !== B || v.dims[0] !== B || v.dims[1] !== Skv || k.dims[2] / Hkv !== D) return null;
  }
  if (Hq % Hkv !== 0 || Skv === 0 || D > MAX_D) return null;
  const G = Hq / Hkv;
  const batch = [B, Hkv, G];
  let mask: AttentionParams['mask'];
  if (m) {
    const md = m.dims;
    if (md.length < 1 || md.length > 4) return null;
    const full = [1, 1, 1, 1];
    md.forEach((d, i) => { full[4 - md.length + i] = d; });
    const target = [B, Hq, Sq, Skv];
    // A shorter last axis is padded with -inf by the reference: leave that case to it.
    if (full[3] !== Skv || full.some((d, i) => d !== 1 && d !== target[i])) return null;
    const ms = contiguous(full);
    const hs = full[1] === 1 ? 0 : ms[1];
    mask = { b: [full[0] === 1 ? 0 : ms[0], G * hs, hs], row: full[2] === 1 ? 0 : ms[2], key: 1 };
  }
  const scale = (attrOf(node, 'scale') as number | undefined) ?? 1 / Math.sqrt(D);
  const outDims = rank === 4 ? [B, Hq, Sq, Dv] : [B, Sq, Hq * Dv];
  const p = rank === 4
    ? {
      q: { b: [Hq * Sq * D, G * Sq * D, Sq * D], row: D },
      k: { b: [Hkv * Skv * D, Skv * D, 0], key: D, d: 1 },
      v: { b: [Hkv * Skv * Dv, Skv * Dv, 0], key: Dv },
      o: { b: [Hq * Sq * Dv, G * Sq * Dv, Sq * Dv], row: Dv },
    }
    : {
      q: { b: [Sq * Hq * D, G * D, D], row: Hq * D },
      k: { b: [Skv * Hkv * D, D, 0], key: Hkv * D, d: 1 },
      v: { b: [Skv * Hkv * Dv, Dv, 0], key: Hkv * Dv },
      o: { b: [Sq * Hq * Dv, G * Dv, Dv], row: Hq * Dv },
    };
  // Rank 3 packs heads into the last axis (Hq*D): keep it so the head counts still divide it.
  return plan({ batch, Sq, Skv, D, Dv, ...p, mask, scale }, outDims, ctx, `Attention${rank}`, (d) => raggedByValue(d, (i, a) => rank === 3 && i < 3 && a === 2));
});
