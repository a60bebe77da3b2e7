// Reference kernel: LinearAttention (opset 27) — recurrent linear attention with optional gating
// (decay), delta-rule correction (beta, erase_gate), GQA/MQA head sharing and a carried state.
//
// Per batch b and key/value head h, with state S[dk, dv] (past_state or zeros):
//   gated:  S *= exp(decay_t)                      (decay per head or per key dim)
//   delta:  v_t <- beta_t * (v_t - S^T (erase_t ⊙ k_t))
//   write:  S += k_t ⊗ v_t
//   read:   o_t[hq] = scale * q_t[hq] S            for every query head hq of the group of h
// Computed in float32 for float32/float16/bfloat16 (as the ONNX reference does, so float16 results
// round the same way) and in float64 for float64.
import { InputError, UnsupportedError } from '../errors.js';
import { Tensor, type DType, type Value } from '../tensor.js';
import { registerOp, type KernelContext } from './registry.js';
import { fromNumbers, input, numbers, optInput } from './util.js';

const FLOATS: ReadonlySet<DType> = new Set<DType>(['float32', 'float16', 'bfloat16', 'float64']);
const RULES: ReadonlySet<string> = new Set(['linear', 'gated', 'delta', 'gated_delta']);

type Work = Float32Array | Float64Array;

function where(ctx: KernelContext, inputIndex?: number) {
  return inputIndex === undefined
    ? { node: ctx.node.name, op: ctx.node.opType }
    : { node: ctx.node.name, op: ctx.node.opType, input: ctx.node.inputs[inputIndex] };
}

function floatValues(t: Tensor, what: string, ctx: KernelContext, idx: number): ArrayLike<number> {
  if (!FLOATS.has(t.type)) {
    throw new UnsupportedError(`LinearAttention ${what} of type ${t.type} is not supported (float types only)`, where(ctx, idx));
  }
  return numbers(t) as Float32Array | Float64Array;
}

const identity = (x: number) => x;

function linearAttention(inputs: (Value | undefined)[], ctx: KernelContext): Value[] {
  const q = input(inputs, 0, ctx);
  const k = input(inputs, 1, ctx);
  const v = input(inputs, 2, ctx);
  const past = optInput(inputs, 3);
  const decay = optInput(inputs, 4);
  const beta = optInput(inputs, 5);
  const erase = optInput(inputs, 6);

  const rule = ctx.attr.string('update_rule', 'gated_delta');
  if (!RULES.has(rule)) {
    throw new UnsupportedError(`LinearAttention update_rule '${rule}' is not one of linear, gated, delta, gated_delta`, where(ctx));
  }
  const hq = ctx.attr.int('q_num_heads');
  const hkv = ctx.attr.int('kv_num_heads');
  if (!(hq > 0) || !(hkv > 0) || hq % hkv !== 0) {
    throw new InputError(`LinearAttention q_num_heads (${hq}) must be a positive multiple of kv_num_heads (${hkv})`, where(ctx));
  }
  const gating = rule === 'gated' || rule === 'gated_delta';
  const deltaRule = rule === 'delta' || rule === 'gated_delta';
  if (gating && !decay) throw new InputError(`LinearAttention update_rule '${rule}' requires the decay input`, where(ctx));
  if (!gating && decay) throw new InputError(`LinearAttention update_rule '${rule}' does not take a decay input`, where(ctx, 4));
  if (deltaRule && !beta) throw new InputError(`LinearAttention update_rule '${rule}' requires the beta input`, where(ctx));
  if (!deltaRule && beta) throw new InputError(`LinearAttention update_rule '${rule}' does not take a beta input`, where(ctx, 5));
  if (!deltaRule && erase) throw new InputError(`LinearAttention update_rule '${rule}' does not take an erase_gate input`, where(ctx, 6));

  const names = ['query', 'key', 'value'];
  [q, k, v].forEach((t, i) => {
    if (t.dims.length !== 3) throw new InputError(`LinearAttention ${names[i]} must be rank 3 (B, T, H*D), got [${t.dims.join(',')}]`, where(ctx, i));
  });
  const [B, T, qHidden] = q.dims;
  if (k.dims[0] !== B || k.dims[1] !== T || v.dims[0] !== B || v.dims[1] !== T) {
    throw new InputError(`LinearAttention query [${q.dims.join(',')}], key [${k.dims.join(',')}] and value [${v.dims.join(',')}] must agree in batch and sequence length`, where(ctx));
  }
  if (qHidden % hq !== 0) throw new InputError(`LinearAttention query hidden size ${qHidden} is not divisible by q_num_heads ${hq}`, where(ctx, 0));
  const dk = qHidden / hq;
  if (k.dims[2] !== hkv * dk) throw new InputError(`LinearAttention key hidden size ${k.dims[2]} must be kv_num_heads*d_k = ${hkv}*${dk}`, where(ctx, 1));
  if (v.dims[2] % hkv !== 0) throw new InputError(`LinearAttention value hidden size ${v.dims[2]} is not divisible by kv_num_heads ${hkv}`, where(ctx, 2));
  const dv = v.dims[2] / hkv;
  const group = hq / hkv;

  const outType = q.type;
  const stateType = past ? past.type : outType;
  // Work precision: float64 only when every float operand is float64; float32 otherwise (reference).
  const wide = [q, k, v, past, decay, beta, erase].every((t) => !t || t.type === 'float64');
  const rnd: (x: number) => number = wide ? identity : Math.fround;
  const mk = (n: number): Work => (wide ? new Float64Array(n) : new Float32Array(n));

  const qv = floatValues(q, 'query', ctx, 0);
  const kv = floatValues(k, 'key', ctx, 1);
  const vv = floatValues(v, 'value', ctx, 2);

  const state = mk(B * hkv * dk * dv);
  if (past) {
    const pd = past.dims;
    if (pd.length !== 4 || pd[0] !== B || pd[1] !== hkv || pd[2] !== dk || pd[3] !== dv) {
      throw new InputError(`LinearAttention past_state shape [${pd.join(',')}] must be [${B},${hkv},${dk},${dv}]`, where(ctx, 3));
    }
    state.set(floatValues(past, 'past_state', ctx, 3));
  }

  let dec: ArrayLike<number> | undefined;
  let decayPerDim = false;
  if (decay) {
    const dd = decay.dims;
    if (dd.length !== 3 || dd[0] !== B || dd[1] !== T || (dd[2] !== hkv && dd[2] !== hkv * dk)) {
      throw new InputError(`LinearAttention decay shape [${dd.join(',')}] must be [${B},${T},${hkv}] or [${B},${T},${hkv * dk}]`, where(ctx, 4));
    }
    decayPerDim = dd[2] !== hkv;
    dec = floatValues(decay, 'decay', ctx, 4);
  }
  let bet: ArrayLike<number> | undefined;
  let betaPerHead = false;
  if (beta) {
    const bd = beta.dims;
    if (bd.length !== 3 || bd[0] !== B || bd[1] !== T || (bd[2] !== hkv && bd[2] !== 1)) {
      throw new InputError(`LinearAttention beta shape [${bd.join(',')}] must be [${B},${T},${hkv}] or [${B},${T},1]`, where(ctx, 5));
    }
    betaPerHead = bd[2] === hkv && hkv !== 1;
    bet = floatValues(beta, 'beta', ctx, 5);
  }
  let era: ArrayLike<number> | undefined;
  if (erase) {
    const ed = erase.dims;
    if (ed.length !== 3 || ed[0] !== B || ed[1] !== T || ed[2] !== hkv * dk) {
      throw new InputError(`LinearAttention erase_gate shape [${ed.join(',')}] must be [${B},${T},${hkv * dk}]`, where(ctx, 6));
    }
    era = floatValues(erase, 'erase_gate', ctx, 6);
  }

  const scaleAttr = ctx.attr.float('scale', 0);
  const scale = rnd(scaleAttr === 0 ? 1 / Math.sqrt(dk) : scaleAttr);

  const out = mk(B * T * hq * dv);
  const expG = mk(dk);
  const kErase = mk(dk);
  const vt = mk(dv);
  const acc = mk(dv);

  const qRow = hq * dk, kRow = hkv * dk, vRow = hkv * dv, oRow = hq * dv;
  const decRow = decay ? decay.dims[2] : 0;
  const betRow = beta ? beta.dims[2] : 0;

  for (let b = 0; b < B; b++) {
    for (let h = 0; h < hkv; h++) {
      const s0 = (b * hkv + h) * dk * dv;
      for (let t = 0; t < T; t++) {
        const bt = b * T + t;
        const kOff = bt * kRow + h * dk;
        const vOff = bt * vRow + h * dv;
        // Gating: S[i, :] *= exp(g_i).
        if (dec) {
          const dOff = bt * decRow + (decayPerDim ? h * dk : h);
          if (decayPerDim) for (let i = 0; i < dk; i++) expG[i] = Math.exp(dec[dOff + i]);
          else expG.fill(Math.exp(dec[dOff]));
          for (let i = 0; i < dk; i++) {
            const e = expG[i];
            const row = s0 + i * dv;
            for (let m = 0; m < dv; m++) state[row + m] = rnd(state[row + m] * e);
          }
        }
        // Value to write: v_t, or beta * (v_t - S^T k_erase) under the delta rule.
        if (bet) {
          if (era) for (let i = 0; i < dk; i++) kErase[i] = rnd(era[kOff + i] * kv[kOff + i]);
          else for (let i = 0; i < dk; i++) kErase[i] = kv[kOff + i];
          acc.fill(0);
          for (let i = 0; i < dk; i++) {
            const ki = kErase[i];
            const row = s0 + i * dv;
            for (let m = 0; m < dv; m++) acc[m] += state[row + m] * ki;
          }
          const bval = bet[bt * betRow + (betaPerHead ? h : 0)];
          for (let m = 0; m < dv; m++) vt[m] = rnd(bval * rnd(vv[vOff + m] - acc[m]));
        } else {
          for (let m = 0; m < dv; m++) vt[m] = vv[vOff + m];
        }
        // Write: S += k_t ⊗ v_t.
        for (let i = 0; i < dk; i++) {
          const ki = kv[kOff + i];
          const row = s0 + i * dv;
          for (let m = 0; m < dv; m++) state[row + m] = rnd(state[row + m] + rnd(ki * vt[m]));
        }
        // Read for every query head sharing this key/value head.
        for (let g = 0; g < group; g++) {
          const hh = h * group + g;
          const qOff = bt * qRow + hh * dk;
          acc.fill(0);
          for (let i = 0; i < dk; i++) {
            const qi = qv[qOff + i];
            const row = s0 + i * dv;
            for (let m = 0; m < dv; m++) acc[m] += qi * state[row + m];
          }
          const oOff = bt * oRow + hh * dv;
          for (let m = 0; m < dv; m++) out[oOff + m] = scale * acc[m];
        }
      }
    }
  }

  return [
    fromNumbers(outType, [B, T, hq * dv], out),
    fromNumbers(stateType, [B, hkv, dk, dv], state),
  ];
}

registerOp('LinearAttention', linearAttention);
