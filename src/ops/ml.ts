// Reference kernels: ai.onnx.ml (ArrayFeatureExtractor, Binarizer, LabelEncoder, TreeEnsemble).
import { InputError, UnsupportedError } from '../errors.js';
import { DTYPES, isBig, Tensor, type DType } from '../tensor.js';
import { registerOp, type KernelContext } from './registry.js';
import { allocData, fromNumbers, input, numbers } from './util.js';

const ML = 'ai.onnx.ml';
const where = (ctx: KernelContext) => ({ node: ctx.node.name, op: ctx.node.opType });

// --- ArrayFeatureExtractor ---------------------------------------------------------------------

registerOp('ArrayFeatureExtractor', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const y = input(inputs, 1, ctx);
  if (y.type !== 'int64' && y.type !== 'int32') throw new InputError(`Y must be int64, got ${y.type}`, where(ctx));
  const idx = numbers(y);
  const r = x.dims.length;
  if (r === 0) throw new InputError('X must have rank >= 1', where(ctx));
  const last = x.dims[r - 1];
  const k = idx.length;
  for (let i = 0; i < k; i++) {
    if (!(idx[i] >= 0 && idx[i] < last)) throw new InputError(`index ${idx[i]} is out of range [0, ${last})`, where(ctx));
  }
  const outer = x.size / Math.max(last, 1);
  const rows = last === 0 ? 0 : outer;
  const outDims = r === 1 ? [1, k] : [...x.dims.slice(0, -1), k];
  const out = allocData(x.type, (r === 1 ? 1 : rows) * k);
  const src = x.data as ArrayLike<unknown>;
  const dst = out as unknown as { [i: number]: unknown };
  for (let o = 0; o < (r === 1 ? 1 : rows); o++) for (let j = 0; j < k; j++) dst[o * k + j] = src[o * last + idx[j]];
  return [new Tensor(x.type, out, outDims)];
}, ML);

// --- Binarizer ---------------------------------------------------------------------------------

registerOp('Binarizer', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  if (x.type === 'string' || x.type === 'bool') throw new InputError(`X must be numeric, got ${x.type}`, where(ctx));
  const th = ctx.attr.float('threshold', 0);
  if (isBig(x.type)) {
    const s = x.data as BigInt64Array;
    const out = DTYPES[x.type].make(s.length) as BigInt64Array;
    for (let i = 0; i < s.length; i++) out[i] = Number(s[i]) > th ? 1n : 0n;
    return [new Tensor(x.type, out, x.dims)];
  }
  const v = numbers(x);
  const o = new Float64Array(v.length);
  for (let i = 0; i < v.length; i++) o[i] = v[i] > th ? 1 : 0;
  return [fromNumbers(x.type, x.dims, o)];
}, ML);

// --- LabelEncoder ------------------------------------------------------------------------------

type Key = string | number;

/** Key of an input element: strings as is, numbers (NaN equal to NaN by Map semantics). */
function keysOf(t: Tensor): ArrayLike<Key> {
  if (t.type === 'string') return t.data as string[];
  if (isBig(t.type)) return Array.from(t.data as BigInt64Array, Number);
  return numbers(t);
}

registerOp('LabelEncoder', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const a = ctx.attr;
  let keys: Key[];
  if (a.has('keys_tensor')) keys = Array.from(keysOf(a.tensor('keys_tensor')!));
  else if (a.has('keys_strings')) keys = a.strings('keys_strings');
  else if (a.has('keys_int64s')) keys = a.ints('keys_int64s');
  else if (a.has('keys_floats')) keys = a.floats('keys_floats');
  else throw new InputError('one of keys_tensor, keys_strings, keys_int64s, keys_floats is required', where(ctx));

  let outType: DType;
  let values: Key[];
  let dflt: Key;
  if (a.has('values_tensor')) {
    const vt = a.tensor('values_tensor')!;
    outType = vt.type;
    values = Array.from(keysOf(vt));
    const dt = a.tensor('default_tensor');
    if (dt) {
      if (dt.type !== outType) throw new InputError(`default_tensor is ${dt.type}, values_tensor is ${outType}`, where(ctx));
      dflt = keysOf(dt)[0];
    } else dflt = outType === 'string' ? '_Unused' : (outType === 'float32' || outType === 'float64' || outType === 'float16') ? -0 : -1;
  } else if (a.has('values_strings')) {
    outType = 'string'; values = a.strings('values_strings'); dflt = a.string('default_string', '_Unused');
  } else if (a.has('values_int64s')) {
    outType = 'int64'; values = a.ints('values_int64s'); dflt = a.int('default_int64', -1);
  } else if (a.has('values_floats')) {
    outType = 'float32'; values = a.floats('values_floats'); dflt = a.float('default_float', -0);
  } else throw new InputError('one of values_tensor, values_strings, values_int64s, values_floats is required', where(ctx));
  if (keys.length !== values.length) throw new InputError(`${keys.length} keys but ${values.length} values`, where(ctx));
  if ((x.type === 'string') !== (typeof keys[0] === 'string') && keys.length) {
    throw new InputError(`input of type ${x.type} does not match the keys' type`, where(ctx));
  }
  const map = new Map<Key, Key>();
  for (let i = 0; i < keys.length; i++) map.set(keys[i], values[i]);
  const xs = keysOf(x);
  const n = xs.length;
  if (outType === 'string') {
    const out = new Array<string>(n);
    for (let i = 0; i < n; i++) { const v = map.get(xs[i]); out[i] = String(v === undefined ? dflt : v); }
    return [new Tensor('string', out, x.dims)];
  }
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) { const v = map.get(xs[i]); out[i] = Number(v === undefined ? dflt : v); }
  return [fromNumbers(outType, x.dims, out)];
}, ML);

// --- TreeEnsemble (ai.onnx.ml opset 5) ---------------------------------------------------------

const LEQ = 0, LT = 1, GTE = 2, GT = 3, EQ = 4, NEQ = 5, MEMBER = 6;

function tensorNums(ctx: KernelContext, name: string, required: boolean): Float64Array | undefined {
  const t = ctx.attr.tensor(name);
  if (!t) {
    if (required) throw new InputError(`attribute '${name}' is required`, where(ctx));
    return undefined;
  }
  return Float64Array.from(numbers(t));
}

/** Inverse error function (Giles' single-precision approximation refined by two Newton steps). */
function erfinv(x: number): number {
  if (x <= -1) return x === -1 ? -Infinity : NaN;
  if (x >= 1) return x === 1 ? Infinity : NaN;
  let w = -Math.log((1 - x) * (1 + x)), p: number;
  if (w < 5) {
    w -= 2.5;
    p = 2.81022636e-08; p = 3.43273939e-07 + p * w; p = -3.5233877e-06 + p * w; p = -4.39150654e-06 + p * w;
    p = 0.00021858087 + p * w; p = -0.00125372503 + p * w; p = -0.00417768164 + p * w; p = 0.246640727 + p * w; p = 1.50140941 + p * w;
  } else {
    w = Math.sqrt(w) - 3;
    p = -0.000200214257; p = 0.000100950558 + p * w; p = 0.00134934322 + p * w; p = -0.00367342844 + p * w;
    p = 0.00573950773 + p * w; p = -0.0076224613 + p * w; p = 0.00943887047 + p * w; p = 1.00167406 + p * w; p = 2.83297682 + p * w;
  }
  let y = p * x;
  for (let k = 0; k < 2; k++) {
    const e = erf(y) - x;
    y -= e / ((2 / Math.sqrt(Math.PI)) * Math.exp(-y * y));
  }
  return y;
}

function erf(x: number): number {
  // Abramowitz-Stegun 7.1.26 is too coarse; use a series / continued fraction split.
  const ax = Math.abs(x);
  let r: number;
  if (ax < 2.5) {
    let sum = ax, term = ax;
    const x2 = ax * ax;
    for (let n = 1; n < 60; n++) {
      term *= -x2 / n;
      const d = term / (2 * n + 1);
      sum += d;
      if (Math.abs(d) < 1e-17 * Math.abs(sum)) break;
    }
    r = (2 / Math.sqrt(Math.PI)) * sum;
  } else {
    // erfc continued fraction (Lentz)
    let f = ax, C = ax, D = 0;
    for (let n = 1; n < 200; n++) {
      const an = n / 2;
      D = ax + an * D; D = D === 0 ? 1e-300 : 1 / D;
      C = ax + an / C; if (C === 0) C = 1e-300;
      const delta = C * D;
      f *= delta;
      if (Math.abs(delta - 1) < 1e-16) break;
    }
    r = 1 - Math.exp(-ax * ax) / (f * Math.sqrt(Math.PI));
  }
  return x < 0 ? -r : r;
}

registerOp('TreeEnsemble', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  if (x.type !== 'float32' && x.type !== 'float64' && x.type !== 'float16') {
    throw new InputError(`X must be float, double or float16, got ${x.type}`, where(ctx));
  }
  const a = ctx.attr;
  const splits = tensorNums(ctx, 'nodes_splits', true)!;
  const featureIds = a.ints('nodes_featureids');
  const modes = tensorNums(ctx, 'nodes_modes', true)!;
  const trueIds = a.ints('nodes_truenodeids');
  const falseIds = a.ints('nodes_falsenodeids');
  const trueLeaf = a.ints('nodes_trueleafs');
  const falseLeaf = a.ints('nodes_falseleafs');
  const leafTargets = a.ints('leaf_targetids');
  const leafWeights = tensorNums(ctx, 'leaf_weights', true)!;
  const roots = a.ints('tree_roots');
  const post = a.int('post_transform', 0);
  const agg = a.int('aggregate_function', 1);
  const missingTrue = a.ints('nodes_missing_value_tracks_true', []);
  const members = tensorNums(ctx, 'membership_values', false);
  const nTargets = a.int('n_targets');
  const nNodes = splits.length;
  for (const [name, arr] of [['nodes_featureids', featureIds], ['nodes_modes', modes], ['nodes_truenodeids', trueIds],
    ['nodes_falsenodeids', falseIds], ['nodes_trueleafs', trueLeaf], ['nodes_falseleafs', falseLeaf]] as const) {
    if (arr.length !== nNodes) throw new InputError(`${name} has ${arr.length} entries, nodes_splits has ${nNodes}`, where(ctx));
  }
  if (leafTargets.length !== leafWeights.length) throw new InputError('leaf_targetids and leaf_weights differ in length', where(ctx));
  // Set-membership nodes take their members from membership_values in node order, NaN-delimited.
  const memberSets: (Set<number> | undefined)[] = new Array(nNodes);
  let mp = 0;
  for (let i = 0; i < nNodes; i++) {
    const m = modes[i];
    if (m < LEQ || m > MEMBER) throw new UnsupportedError(`node mode ${m} is not supported`, where(ctx));
    if (m !== MEMBER) continue;
    if (!members) throw new InputError('a set-membership node needs membership_values', where(ctx));
    const s = new Set<number>();
    while (mp < members.length && !Number.isNaN(members[mp])) s.add(members[mp++]);
    if (mp >= members.length) throw new InputError('membership_values has fewer NaN-delimited sets than set-membership nodes', where(ctx));
    mp++;
    memberSets[i] = s;
  }
  if (x.dims.length !== 2) throw new InputError(`X must be 2-D [N, F], got [${x.dims.join(',')}]`, where(ctx));
  const [N, F] = x.dims;
  for (let i = 0; i < nNodes; i++) {
    if (featureIds[i] < 0 || featureIds[i] >= F) throw new InputError(`node ${i} uses feature ${featureIds[i]}, X has ${F}`, where(ctx));
  }
  const xv = numbers(x);
  const res = new Float64Array(N * nTargets);
  if (agg === 2) res.fill(Infinity); else if (agg === 3) res.fill(-Infinity);
  else if (agg !== 0 && agg !== 1) throw new UnsupportedError(`aggregate_function ${agg} is not supported`, where(ctx));
  const touched = new Uint8Array(N * nTargets);
  const maxSteps = nNodes + 1;
  for (let n = 0; n < N; n++) {
    for (const root of roots) {
      let node = root, steps = 0, leaf = -1;
      for (;;) {
        if (node < 0 || node >= nNodes) throw new InputError(`node index ${node} is out of range`, where(ctx));
        if (++steps > maxSteps) throw new InputError('the tree has a cycle', where(ctx));
        const v = xv[n * F + featureIds[node]];
        const s = splits[node];
        let go: boolean;
        if (Number.isNaN(v) && missingTrue[node]) go = true;
        else {
          switch (modes[node]) {
            case LEQ: go = v <= s; break;
            case LT: go = v < s; break;
            case GTE: go = v >= s; break;
            case GT: go = v > s; break;
            case EQ: go = v === s; break;
            case NEQ: go = v !== s; break;
            default: go = memberSets[node]!.has(v);
          }
        }
        const next = go ? trueIds[node] : falseIds[node];
        if (go ? trueLeaf[node] : falseLeaf[node]) { leaf = next; break; }
        node = next;
      }
      if (leaf < 0 || leaf >= leafWeights.length) throw new InputError(`leaf index ${leaf} is out of range`, where(ctx));
      const tgt = leafTargets[leaf];
      if (tgt < 0 || tgt >= nTargets) throw new InputError(`leaf target ${tgt} is out of range [0, ${nTargets})`, where(ctx));
      const o = n * nTargets + tgt, w = leafWeights[leaf];
      touched[o] = 1;
      if (agg === 1 || agg === 0) res[o] += w;
      else if (agg === 2) res[o] = Math.min(res[o], w);
      else res[o] = Math.max(res[o], w);
    }
  }
  if (agg === 0 && roots.length) for (let i = 0; i < res.length; i++) res[i] /= roots.length;
  if (agg === 2 || agg === 3) for (let i = 0; i < res.length; i++) if (!touched[i]) res[i] = 0;
  // Post transform, row by row.
  if (post === 1 || post === 3) {
    for (let n = 0; n < N; n++) {
      const b = n * nTargets;
      let mx = -Infinity;
      for (let j = 0; j < nTargets; j++) if ((post === 1 || res[b + j] !== 0) && res[b + j] > mx) mx = res[b + j];
      let sum = 0;
      for (let j = 0; j < nTargets; j++) {
        const e = post === 3 && res[b + j] === 0 ? 0 : Math.exp(res[b + j] - mx);
        res[b + j] = e; sum += e;
      }
      for (let j = 0; j < nTargets; j++) res[b + j] = sum > 0 ? res[b + j] / sum : 0;
    }
  } else if (post === 2) {
    for (let i = 0; i < res.length; i++) res[i] = 1 / (1 + Math.exp(-res[i]));
  } else if (post === 4) {
    for (let i = 0; i < res.length; i++) res[i] = Math.SQRT2 * erfinv(2 * res[i] - 1);
  } else if (post !== 0) {
    throw new UnsupportedError(`post_transform ${post} is not supported`, where(ctx));
  }
  return [fromNumbers(x.type, [N, nTargets], res)];
}, ML);
