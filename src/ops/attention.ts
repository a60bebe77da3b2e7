// Reference kernels: attention family (Attention, RotaryEmbedding, FlexAttention).
import { InputError, UnsupportedError } from '../errors.js';
import { Tensor, type DType, type Value } from '../tensor.js';
import { registerOp, type KernelContext } from './registry.js';
import { fromNumbers, input, numbers, optInput } from './util.js';

type Num = ArrayLike<number>;

const FLOATS: ReadonlySet<DType> = new Set<DType>(['float32', 'float16', 'bfloat16', 'float64']);

function where(ctx: KernelContext) {
  return { node: ctx.node.name, op: ctx.node.opType };
}

function requireFloat(t: Tensor, what: string, ctx: KernelContext): void {
  if (!FLOATS.has(t.type)) throw new UnsupportedError(`${what} of type ${t.type} is not supported (float types only)`, where(ctx));
}

/** Float values of a tensor as float64 (decoded for f16/bf16). */
function f64(t: Tensor): Float64Array {
  const v = numbers(t);
  return v instanceof Float64Array ? v : Float64Array.from(v);
}

/**
 * A [B, S, H*D] tensor (3D attention layout) as a [B, H, S, D] float64 array; a 4D one is copied as is.
 */
function toBHSD(t: Tensor, heads: number, what: string, ctx: KernelContext): { data: Float64Array; B: number; H: number; S: number; D: number } {
  const v = numbers(t);
  if (t.dims.length === 4) {
    const [B, H, S, D] = t.dims;
    return { data: v instanceof Float64Array ? v : Float64Array.from(v), B, H, S, D };
  }
  if (t.dims.length !== 3) throw new InputError(`${what} must be 3D or 4D, got [${t.dims.join(',')}]`, where(ctx));
  const [B, S, hidden] = t.dims;
  if (!(heads > 0) || hidden % heads !== 0) {
    throw new InputError(`${what} hidden size ${hidden} is not divisible by the number of heads ${heads}`, where(ctx));
  }
  const D = hidden / heads;
  const out = new Float64Array(B * heads * S * D);
  for (let b = 0; b < B; b++)
    for (let s = 0; s < S; s++)
      for (let h = 0; h < heads; h++) {
        const src = ((b * S + s) * heads + h) * D;
        const dst = ((b * heads + h) * S + s) * D;
        for (let d = 0; d < D; d++) out[dst + d] = v[src + d];
      }
  return { data: out, B, H: heads, S, D };
}

/** Concatenates past [B,H,P,D] and current [B,H,S,D] along the sequence axis. */
function concatSeq(past: Num | undefined, P: number, cur: Float64Array, B: number, H: number, S: number, D: number): Float64Array {
  if (!past || P === 0) return cur;
  const T = P + S;
  const out = new Float64Array(B * H * T * D);
  for (let bh = 0; bh < B * H; bh++) {
    const dst = bh * T * D;
    for (let i = 0; i < P * D; i++) out[dst + i] = past[bh * P * D + i];
    out.set(cur.subarray(bh * S * D, (bh + 1) * S * D), dst + P * D);
  }
  return out;
}

/** Row-wise numerically stable softmax in place; a row whose entries are all -inf becomes all zeros. */
function softmaxRows(x: Float64Array, rows: number, n: number, start = 0): void {
  for (let r = 0; r < rows; r++) {
    const o = start + r * n;
    let m = -Infinity;
    for (let j = 0; j < n; j++) if (x[o + j] > m) m = x[o + j];
    if (m === -Infinity) { for (let j = 0; j < n; j++) x[o + j] = 0; continue; }
    if (Number.isNaN(m)) { for (let j = 0; j < n; j++) x[o + j] = NaN; continue; }
    let s = 0;
    for (let j = 0; j < n; j++) { const e = Math.exp(x[o + j] - m); x[o + j] = e; s += e; }
    const inv = 1 / s;
    for (let j = 0; j < n; j++) x[o + j] *= inv;
  }
}

// --- Attention (opset 23, 24) ------------------------------------------------------------------

function attention(inputs: (Value | undefined)[], ctx: KernelContext): Value[] {
  const q = input(inputs, 0, ctx);
  const k = input(inputs, 1, ctx);
  const v = input(inputs, 2, ctx);
  const mask = optInput(inputs, 3);
  const pastK = optInput(inputs, 4);
  const pastV = optInput(inputs, 5);
  const nonpad = ctx.opset >= 24 ? optInput(inputs, 6) : undefined;
  requireFloat(q, 'Q', ctx); requireFloat(k, 'K', ctx); requireFloat(v, 'V', ctx);
  const rank = q.dims.length;
  if (k.dims.length !== rank || v.dims.length !== rank) {
    throw new InputError(`Q, K and V must have the same rank, got [${q.dims.join(',')}], [${k.dims.join(',')}], [${v.dims.join(',')}]`, where(ctx));
  }
  const isCausal = ctx.attr.int('is_causal', 0) !== 0;
  const qkMode = ctx.attr.int('qk_matmul_output_mode', 0);
  const softcap = ctx.attr.float('softcap', 0);
  let qHeads = ctx.attr.int('q_num_heads', 0);
  let kvHeads = ctx.attr.int('kv_num_heads', 0);
  if (rank === 3 && (qHeads <= 0 || kvHeads <= 0)) {
    throw new InputError('3D inputs need the q_num_heads and kv_num_heads attributes', where(ctx));
  }
  const Q = toBHSD(q, qHeads, 'Q', ctx);
  const K = toBHSD(k, kvHeads, 'K', ctx);
  const Vv = toBHSD(v, kvHeads, 'V', ctx);
  qHeads = Q.H; kvHeads = K.H;
  const B = Q.B, S = Q.S, Dq = Q.D, Dv = Vv.D;
  if (K.B !== B || Vv.B !== B) throw new InputError('Q, K and V batch sizes differ', where(ctx));
  if (K.D !== Dq) throw new InputError(`Q head size ${Dq} and K head size ${K.D} differ`, where(ctx));
  if (Vv.H !== kvHeads || Vv.S !== K.S) throw new InputError('K and V must have the same number of heads and sequence length', where(ctx));
  if (qHeads % kvHeads !== 0) throw new InputError(`q_num_heads ${qHeads} is not a multiple of kv_num_heads ${kvHeads}`, where(ctx));
  const group = qHeads / kvHeads;

  // Key/value cache.
  let P = 0;
  if ((pastK === undefined) !== (pastV === undefined)) throw new InputError('past_key and past_value must be given together', where(ctx));
  if (pastK && pastV) {
    if (pastK.dims.length !== 4 || pastK.dims[0] !== B || pastK.dims[1] !== kvHeads || pastK.dims[3] !== Dq) {
      throw new InputError(`past_key shape [${pastK.dims.join(',')}] does not match [${B},${kvHeads},*,${Dq}]`, where(ctx));
    }
    if (pastV.dims.length !== 4 || pastV.dims[0] !== B || pastV.dims[1] !== kvHeads || pastV.dims[2] !== pastK.dims[2] || pastV.dims[3] !== Dv) {
      throw new InputError(`past_value shape [${pastV.dims.join(',')}] does not match [${B},${kvHeads},${pastK.dims[2]},${Dv}]`, where(ctx));
    }
    P = pastK.dims[2];
  }
  const T = P + K.S;
  const kAll = concatSeq(pastK ? numbers(pastK) : undefined, P, K.data, B, kvHeads, K.S, Dq);
  const vAll = concatSeq(pastV ? numbers(pastV) : undefined, P, Vv.data, B, kvHeads, Vv.S, Dv);

  // Mask: broadcast to [B, Hq, S, T]; the last axis is padded (masked) when shorter than T.
  let maskVals: Num | undefined;
  let mIsBool = false;
  const mStr = [0, 0, 0, 0];
  let mLast = T;
  if (mask) {
    if (mask.type === 'bool') mIsBool = true;
    else requireFloat(mask, 'attn_mask', ctx);
    const md = mask.dims;
    if (md.length < 1 || md.length > 4) throw new InputError(`attn_mask must have rank 1..4, got [${md.join(',')}]`, where(ctx));
    const full = [1, 1, 1, 1];
    for (let i = 0; i < md.length; i++) full[4 - md.length + i] = md[i];
    const target = [B, qHeads, S, T];
    for (let i = 0; i < 3; i++) {
      if (full[i] !== 1 && full[i] !== target[i]) {
        throw new InputError(`attn_mask shape [${md.join(',')}] cannot be broadcast to [${target.join(',')}]`, where(ctx));
      }
    }
    if (full[3] > T) throw new InputError(`attn_mask last dimension ${full[3]} exceeds the total sequence length ${T}`, where(ctx));
    mLast = full[3];
    let acc = 1;
    for (let i = 3; i >= 0; i--) { mStr[i] = full[i] === 1 && i < 3 ? 0 : acc; acc *= full[i]; }
    maskVals = mask.type === 'bool' ? (mask.data as Uint8Array) : numbers(mask);
  }
  let padLens: Num | undefined;
  if (nonpad) {
    if (nonpad.size !== B) throw new InputError(`nonpad_kv_seqlen must have ${B} elements, got ${nonpad.size}`, where(ctx));
    padLens = numbers(nonpad);
  }

  const scale = ctx.attr.has('scale') ? ctx.attr.float('scale') : 1 / Math.sqrt(Dq);
  const wantQk = ctx.node.outputs.length > 3 && !!ctx.node.outputs[3];
  const probs = new Float64Array(B * qHeads * S * T);
  const qkOut = wantQk && qkMode !== 3 ? new Float64Array(B * qHeads * S * T) : undefined;
  const Y = new Float64Array(B * qHeads * S * Dv);
  for (let b = 0; b < B; b++) {
    // Causal frontier: key j is visible to query i iff j <= i + offset.
    let offset = 0;
    if (pastK) offset = P;
    else if (padLens) offset = padLens[b] - S;
    const valid = padLens ? padLens[b] : T;
    for (let h = 0; h < qHeads; h++) {
      const kh = Math.floor(h / group);
      const kBase = (b * kvHeads + kh) * T * Dq;
      const vBase = (b * kvHeads + kh) * T * Dv;
      for (let i = 0; i < S; i++) {
        const qOff = ((b * qHeads + h) * S + i) * Dq;
        const row = ((b * qHeads + h) * S + i) * T;
        const mRow = b * mStr[0] + h * mStr[1] + i * mStr[2];
        for (let j = 0; j < T; j++) {
          let dot = 0;
          const kOff = kBase + j * Dq;
          for (let d = 0; d < Dq; d++) dot += Q.data[qOff + d] * kAll[kOff + d];
          let s = dot * scale;
          if (softcap > 0) s = softcap * Math.tanh(s / softcap);
          if (qkOut && qkMode !== 2) qkOut[row + j] = s;
          let bias = 0;
          if (maskVals) {
            if (j >= mLast) bias = -Infinity;
            else {
              const mv = maskVals[mRow + j * mStr[3]];
              bias = mIsBool ? (mv ? 0 : -Infinity) : mv;
            }
          }
          if (isCausal && j > i + offset) bias += -Infinity;
          if (j >= valid) bias += -Infinity;
          s += bias;
          if (qkOut && qkMode === 2) qkOut[row + j] = s;
          probs[row + j] = s;
        }
        softmaxRows(probs, 1, T, row);
        const yOff = ((b * qHeads + h) * S + i) * Dv;
        for (let j = 0; j < T; j++) {
          const p = probs[row + j];
          const vOff = vBase + j * Dv;
          for (let d = 0; d < Dv; d++) Y[yOff + d] += p * vAll[vOff + d];
        }
      }
    }
  }

  let yDims: number[] = [B, qHeads, S, Dv];
  let yData: Float64Array = Y;
  if (rank === 3) {
    yDims = [B, S, qHeads * Dv];
    yData = new Float64Array(Y.length);
    for (let b = 0; b < B; b++)
      for (let h = 0; h < qHeads; h++)
        for (let i = 0; i < S; i++) {
          const src = ((b * qHeads + h) * S + i) * Dv;
          const dst = ((b * S + i) * qHeads + h) * Dv;
          for (let d = 0; d < Dv; d++) yData[dst + d] = Y[src + d];
        }
  }
  const outs: Value[] = [fromNumbers(q.type, yDims, yData)];
  const n = ctx.node.outputs.length;
  if (n > 1) outs.push(fromNumbers(k.type, [B, kvHeads, T, Dq], kAll));
  if (n > 2) outs.push(fromNumbers(v.type, [B, kvHeads, T, Dv], vAll));
  if (n > 3) outs.push(fromNumbers(q.type, [B, qHeads, S, T], qkMode === 3 ? probs : (qkOut ?? new Float64Array(B * qHeads * S * T))));
  return outs;
}

registerOp('Attention', attention);

// --- RotaryEmbedding (opset 23) -----------------------------------------------------------------

function rotaryEmbedding(inputs: (Value | undefined)[], ctx: KernelContext): Value[] {
  const x = input(inputs, 0, ctx);
  const cosT = input(inputs, 1, ctx);
  const sinT = input(inputs, 2, ctx);
  const pos = optInput(inputs, 3);
  requireFloat(x, 'input', ctx);
  const interleaved = ctx.attr.int('interleaved', 0) !== 0;
  let rd = ctx.attr.int('rotary_embedding_dim', 0);
  const numHeadsAttr = ctx.attr.int('num_heads', 0);
  let B: number, S: number, H: number, D: number;
  // Strides of (b, s, h) in the input/output layout.
  let sb: number, ss: number, sh: number;
  if (x.dims.length === 4) {
    [B, H, S, D] = x.dims;
    sb = H * S * D; sh = S * D; ss = D;
  } else if (x.dims.length === 3) {
    [B, S] = x.dims;
    const hidden = x.dims[2];
    H = numHeadsAttr;
    if (H <= 0) throw new InputError('3D input needs the num_heads attribute', where(ctx));
    if (hidden % H !== 0) throw new InputError(`hidden size ${hidden} is not divisible by num_heads ${H}`, where(ctx));
    D = hidden / H;
    sb = S * hidden; ss = hidden; sh = D;
  } else {
    throw new InputError(`input must be 3D or 4D, got [${x.dims.join(',')}]`, where(ctx));
  }
  if (rd === 0) rd = D;
  if (rd > D || rd % 2 !== 0) throw new InputError(`rotary_embedding_dim ${rd} must be even and at most the head size ${D}`, where(ctx));
  const half = rd / 2;
  const cd = cosT.dims;
  if (cd[cd.length - 1] !== half || sinT.dims.join(',') !== cd.join(',')) {
    throw new InputError(`cos_cache/sin_cache shapes [${cd.join(',')}]/[${sinT.dims.join(',')}] must agree and end in ${half}`, where(ctx));
  }
  let posIds: Num | undefined;
  if (pos) {
    if (cd.length !== 2) throw new InputError(`with position_ids, cos_cache must be 2D, got [${cd.join(',')}]`, where(ctx));
    if (pos.size !== B * S) throw new InputError(`position_ids must have shape [${B},${S}], got [${pos.dims.join(',')}]`, where(ctx));
    posIds = numbers(pos);
    for (let i = 0; i < posIds.length; i++) {
      const p = posIds[i];
      if (!(p >= 0 && p < cd[0])) throw new InputError(`position id ${p} is out of range [0, ${cd[0]})`, where(ctx));
    }
  } else if (cd.length !== 3 || cd[0] !== B || cd[1] !== S) {
    throw new InputError(`without position_ids, cos_cache must have shape [${B},${S},${half}], got [${cd.join(',')}]`, where(ctx));
  }
  const xv = numbers(x);
  const cv = numbers(cosT);
  const sv = numbers(sinT);
  const out = new Float64Array(xv.length);
  for (let b = 0; b < B; b++)
    for (let s = 0; s < S; s++) {
      const cRow = (posIds ? posIds[b * S + s] : b * S + s) * half;
      for (let h = 0; h < H; h++) {
        const o = b * sb + s * ss + h * sh;
        for (let kk = 0; kk < half; kk++) {
          const c = cv[cRow + kk], sn = sv[cRow + kk];
          const i1 = interleaved ? o + 2 * kk : o + kk;
          const i2 = interleaved ? o + 2 * kk + 1 : o + kk + half;
          const x1 = xv[i1], x2 = xv[i2];
          out[i1] = c * x1 - sn * x2;
          out[i2] = sn * x1 + c * x2;
        }
        for (let d = rd; d < D; d++) out[o + d] = xv[o + d];
      }
    }
  return [fromNumbers(x.type, x.dims, out)];
}

registerOp('RotaryEmbedding', rotaryEmbedding);

// --- FlexAttention (ai.onnx.preview 1) ----------------------------------------------------------

/** An int64 index tensor 0..n-1 laid out along `axis` of a rank-4 shape (other dims 1). */
function indexTensor(n: number, axis: number): Tensor {
  const data = new BigInt64Array(n);
  for (let i = 0; i < n; i++) data[i] = BigInt(i);
  const dims = [1, 1, 1, 1];
  dims[axis] = n;
  return new Tensor('int64', data, dims);
}

function runMod(ctx: KernelContext, name: string, cur: Float64Array, dims: number[], dtype: DType, isMask: boolean): Float64Array {
  const g = ctx.attr.graph(name);
  const t = fromNumbers(dtype, dims, cur);
  const idx = [indexTensor(dims[0], 0), indexTensor(dims[1], 1), indexTensor(dims[2], 2), indexTensor(dims[3], 3)];
  let args: (Value | undefined)[];
  const nIn = g.inputs.length;
  if (nIn === 1) args = [t];
  else if (nIn === 4 && isMask) args = idx;
  else if (nIn === 5) args = [t, ...idx];
  else throw new UnsupportedError(`${name} subgraph with ${nIn} inputs is not supported`, where(ctx));
  const res = ctx.runSubgraph(g, args)[0];
  if (!(res instanceof Tensor)) throw new InputError(`${name} subgraph must return a tensor`, where(ctx));
  const n = cur.length;
  const out = new Float64Array(n);
  // The result may broadcast to the scores shape.
  const rd = res.dims;
  if (rd.length > 4) throw new InputError(`${name} result has rank ${rd.length} > 4`, where(ctx));
  const full = [1, 1, 1, 1];
  for (let i = 0; i < rd.length; i++) full[4 - rd.length + i] = rd[i];
  const st = [0, 0, 0, 0];
  let acc = 1;
  for (let i = 3; i >= 0; i--) {
    if (full[i] !== 1 && full[i] !== dims[i]) throw new InputError(`${name} result shape [${rd.join(',')}] does not match [${dims.join(',')}]`, where(ctx));
    st[i] = full[i] === 1 ? 0 : acc; acc *= full[i];
  }
  const rv = res.type === 'bool' ? (res.data as Uint8Array) : numbers(res);
  const maskResult = isMask && res.type === 'bool';
  let p = 0;
  for (let a = 0; a < dims[0]; a++)
    for (let b = 0; b < dims[1]; b++)
      for (let c = 0; c < dims[2]; c++)
        for (let d = 0; d < dims[3]; d++, p++) {
          const r = rv[a * st[0] + b * st[1] + c * st[2] + d * st[3]];
          out[p] = maskResult ? (r ? cur[p] : -Infinity) : r;
        }
  return out;
}

function flexAttention(inputs: (Value | undefined)[], ctx: KernelContext): Value[] {
  const q = input(inputs, 0, ctx);
  const k = input(inputs, 1, ctx);
  const v = input(inputs, 2, ctx);
  requireFloat(q, 'Q', ctx); requireFloat(k, 'K', ctx); requireFloat(v, 'V', ctx);
  if (q.dims.length !== 4 || k.dims.length !== 4 || v.dims.length !== 4) {
    throw new InputError('Q, K and V must be 4D', where(ctx));
  }
  const [B, Hq, S, D] = q.dims;
  const [Bk, Hk, T, Dk] = k.dims;
  const [Bv, Hv, Tv, Dv] = v.dims;
  if (Bk !== B || Bv !== B || Dk !== D || Hv !== Hk || Tv !== T) {
    throw new InputError(`incompatible shapes Q [${q.dims.join(',')}], K [${k.dims.join(',')}], V [${v.dims.join(',')}]`, where(ctx));
  }
  if (Hq % Hk !== 0) throw new InputError(`Q heads ${Hq} is not a multiple of K/V heads ${Hk}`, where(ctx));
  const group = Hq / Hk;
  const scale = ctx.attr.has('scale') ? ctx.attr.float('scale') : 1 / Math.sqrt(D);
  const qv = f64(q), kv = f64(k), vv = f64(v);
  const dims = [B, Hq, S, T];
  let scores: Float64Array = new Float64Array(B * Hq * S * T);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < Hq; h++) {
      const kBase = (b * Hk + Math.floor(h / group)) * T * D;
      for (let i = 0; i < S; i++) {
        const qOff = ((b * Hq + h) * S + i) * D;
        const row = ((b * Hq + h) * S + i) * T;
        for (let j = 0; j < T; j++) {
          let dot = 0;
          const kOff = kBase + j * D;
          for (let d = 0; d < D; d++) dot += qv[qOff + d] * kv[kOff + d];
          scores[row + j] = dot * scale;
        }
      }
    }
  if (ctx.attr.has('score_mod')) scores = runMod(ctx, 'score_mod', scores, dims, q.type, false);
  if (ctx.attr.has('mask_mod')) scores = runMod(ctx, 'mask_mod', scores, dims, q.type, true);
  softmaxRows(scores, B * Hq * S, T);
  if (ctx.attr.has('prob_mod')) scores = runMod(ctx, 'prob_mod', scores, dims, q.type, false);
  const Y = new Float64Array(B * Hq * S * Dv);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < Hq; h++) {
      const vBase = (b * Hk + Math.floor(h / group)) * T * Dv;
      for (let i = 0; i < S; i++) {
        const row = ((b * Hq + h) * S + i) * T;
        const yOff = ((b * Hq + h) * S + i) * Dv;
        for (let j = 0; j < T; j++) {
          const p = scores[row + j];
          const vOff = vBase + j * Dv;
          for (let d = 0; d < Dv; d++) Y[yOff + d] += p * vv[vOff + d];
        }
      }
    }
  return [fromNumbers(v.type, [B, Hq, S, Dv], Y)];
}

registerOp('FlexAttention', flexAttention, 'ai.onnx.preview');
