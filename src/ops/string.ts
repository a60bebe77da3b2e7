// Reference kernels: strings (StringNormalizer, StringConcat, StringSplit, RegexFullMatch, TfIdfVectorizer).
import { InputError, UnsupportedError } from '../errors.js';
import { sizeOf, Tensor } from '../tensor.js';
import { registerOp, type KernelContext } from './registry.js';
import { broadcastIndex, broadcastShape, input, numbers } from './util.js';

const where = (ctx: KernelContext) => ({ node: ctx.node.name, op: ctx.node.opType });

function strInput(inputs: Parameters<typeof input>[0], i: number, ctx: KernelContext): Tensor {
  const t = input(inputs, i, ctx);
  if (t.type !== 'string') throw new InputError(`input ${i} must be a string tensor, got ${t.type}`, { ...where(ctx), input: ctx.node.inputs[i] });
  return t;
}

// --- StringNormalizer --------------------------------------------------------------------------

function safeLocale(f: () => string, dflt: () => string): string {
  try { return f(); } catch { return dflt(); }
}

registerOp('StringNormalizer', (inputs, ctx) => {
  const x = strInput(inputs, 0, ctx);
  const action = ctx.attr.string('case_change_action', 'NONE');
  if (action !== 'NONE' && action !== 'LOWER' && action !== 'UPPER') {
    throw new InputError(`case_change_action '${action}' must be NONE, LOWER or UPPER`, where(ctx));
  }
  const sensitive = ctx.attr.int('is_case_sensitive', 0) !== 0;
  const locale = ctx.attr.has('locale') ? ctx.attr.string('locale') : undefined;
  const stop = ctx.attr.strings('stopwords', []);
  const lower = (s: string) => (locale ? safeLocale(() => s.toLocaleLowerCase(locale), () => s.toLowerCase()) : s.toLowerCase());
  const upper = (s: string) => (locale ? safeLocale(() => s.toLocaleUpperCase(locale), () => s.toUpperCase()) : s.toUpperCase());
  const stopSet = new Set(sensitive ? stop : stop.map(lower));
  const dims = x.dims;
  let cols: number;
  if (dims.length === 1) cols = dims[0];
  else if (dims.length === 2 && dims[0] === 1) cols = dims[1];
  else throw new InputError(`input must have shape [C] or [1, C], got [${dims.join(',')}]`, where(ctx));
  const data = x.data as string[];
  const out: string[] = [];
  for (let i = 0; i < cols; i++) {
    const s = data[i];
    if (stopSet.size && stopSet.has(sensitive ? s : lower(s))) continue;
    out.push(action === 'LOWER' ? lower(s) : action === 'UPPER' ? upper(s) : s);
  }
  if (out.length === 0) out.push('');
  return [new Tensor('string', out, dims.length === 1 ? [out.length] : [1, out.length])];
});

// --- StringConcat ------------------------------------------------------------------------------

registerOp('StringConcat', (inputs, ctx) => {
  const a = strInput(inputs, 0, ctx), b = strInput(inputs, 1, ctx);
  const dims = broadcastShape(a.dims, b.dims);
  const n = sizeOf(dims);
  const ia = broadcastIndex(a.dims, dims), ib = broadcastIndex(b.dims, dims);
  const da = a.data as string[], db = b.data as string[];
  const out = new Array<string>(n);
  for (let i = 0; i < n; i++) out[i] = da[ia[i]] + db[ib[i]];
  return [new Tensor('string', out, dims)];
});

// --- StringSplit -------------------------------------------------------------------------------

/** Python str.split(delim, maxsplit). */
function splitDelim(s: string, delim: string, maxsplit: number): string[] {
  const out: string[] = [];
  let start = 0;
  while (maxsplit < 0 || out.length < maxsplit) {
    const k = s.indexOf(delim, start);
    if (k < 0) break;
    out.push(s.slice(start, k));
    start = k + delim.length;
  }
  out.push(s.slice(start));
  return out;
}

const isWs = (c: number) => c === 32 || (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x1f) || c === 0x85 || c === 0xa0 ||
  c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000;

/** Python str.split(None, maxsplit): runs of whitespace separate, leading/trailing whitespace ignored. */
function splitWhitespace(s: string, maxsplit: number): string[] {
  const out: string[] = [];
  let i = 0;
  const n = s.length;
  for (;;) {
    while (i < n && isWs(s.charCodeAt(i))) i++;
    if (i >= n) break;
    if (maxsplit >= 0 && out.length >= maxsplit) {
      let e = n;
      while (e > i && isWs(s.charCodeAt(e - 1))) e--;
      out.push(s.slice(i, e));
      break;
    }
    const st = i;
    while (i < n && !isWs(s.charCodeAt(i))) i++;
    out.push(s.slice(st, i));
  }
  return out;
}

registerOp('StringSplit', (inputs, ctx) => {
  const x = strInput(inputs, 0, ctx);
  const delim = ctx.attr.has('delimiter') ? ctx.attr.string('delimiter') : '';
  const maxsplit = ctx.attr.has('maxsplit') ? ctx.attr.int('maxsplit') : -1;
  const data = x.data as string[];
  const parts: string[][] = new Array<string[]>(data.length);
  let width = 0;
  for (let i = 0; i < data.length; i++) {
    const p = delim === '' ? splitWhitespace(data[i], maxsplit) : splitDelim(data[i], delim, maxsplit);
    parts[i] = p;
    if (p.length > width) width = p.length;
  }
  const out = new Array<string>(data.length * width).fill('');
  const lens = new BigInt64Array(data.length);
  for (let i = 0; i < data.length; i++) {
    const p = parts[i];
    lens[i] = BigInt(p.length);
    for (let j = 0; j < p.length; j++) out[i * width + j] = p[j];
  }
  return [new Tensor('string', out, [...x.dims, width]), new Tensor('int64', lens, x.dims)];
});

// --- RegexFullMatch ----------------------------------------------------------------------------

const RE_CACHE = new Map<string, RegExp>();

/** Translates an RE2 pattern to a JS RegExp anchored at both ends (RE2 features JS lacks are refused). */
function compileRe2(pattern: string, ctx: KernelContext): RegExp {
  let re = RE_CACHE.get(pattern);
  if (re) return re;
  let src = pattern;
  let flags = '';
  // A leading RE2 flag group, e.g. (?i) or (?s).
  const m = /^\(\?([imsU]+)\)/.exec(src);
  if (m) {
    if (m[1].includes('U')) throw new UnsupportedError(`RE2 flag U (ungreedy) in pattern '${pattern}' is not supported`, where(ctx));
    flags += m[1];
    src = src.slice(m[0].length);
  }
  src = src.replace(/\\A/g, '^').replace(/\\z/g, '$').replace(/\(\?P</g, '(?<');
  if (/\\[CQE]|\[\[:|\(\?[imsU-]+[:)]/.test(src)) {
    throw new UnsupportedError(`RE2 syntax in pattern '${pattern}' (\\C, \\Q..\\E, POSIX classes or inline flags) is not supported`, where(ctx));
  }
  try {
    re = new RegExp(`^(?:${src})$`, flags + 'u');
  } catch {
    try {
      re = new RegExp(`^(?:${src})$`, flags);
    } catch (e) {
      throw new InputError(`invalid regular expression '${pattern}': ${(e as Error).message}`, where(ctx));
    }
  }
  RE_CACHE.set(pattern, re);
  return re;
}

registerOp('RegexFullMatch', (inputs, ctx) => {
  const x = strInput(inputs, 0, ctx);
  const re = compileRe2(ctx.attr.string('pattern'), ctx);
  const data = x.data as string[];
  const out = new Uint8Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = re.test(data[i]) ? 1 : 0;
  return [new Tensor('bool', out, x.dims)];
});

// --- TfIdfVectorizer ---------------------------------------------------------------------------

interface Gram {
  /** 1-based n-gram id; 0 where no n-gram ends at this node. */
  id: number;
  next: Map<string | number, Gram> | null;
}

registerOp('TfIdfVectorizer', (inputs, ctx) => {
  const x = input(inputs, 0, ctx);
  const minN = ctx.attr.int('min_gram_length');
  const maxN = ctx.attr.int('max_gram_length');
  const maxSkip = ctx.attr.int('max_skip_count');
  const mode = ctx.attr.string('mode');
  if (mode !== 'TF' && mode !== 'IDF' && mode !== 'TFIDF') throw new InputError(`mode '${mode}' must be TF, IDF or TFIDF`, where(ctx));
  const counts = ctx.attr.ints('ngram_counts');
  const indexes = ctx.attr.ints('ngram_indexes');
  const weights = ctx.attr.floats('weights', []);
  const isStr = x.type === 'string';
  if (!isStr && x.type !== 'int32' && x.type !== 'int64') throw new InputError(`input must be string, int32 or int64, got ${x.type}`, where(ctx));
  const pool: (string | number)[] = isStr ? ctx.attr.strings('pool_strings', []) : ctx.attr.ints('pool_int64s', []);
  if (!pool.length && (isStr ? ctx.attr.has('pool_int64s') : ctx.attr.has('pool_strings'))) {
    throw new InputError(`the pool's type does not match the ${x.type} input`, where(ctx));
  }
  let outSize = 0;
  for (const v of indexes) if (v + 1 > outSize) outSize = v + 1;

  // The n-gram trie; only sizes within [min_gram_length, max_gram_length] are entered, but all get ids.
  const root = new Map<string | number, Gram>();
  let gid = 1;
  for (let i = 0, size = 1; i < counts.length; i++, size++) {
    const start = counts[i];
    const end = i + 1 < counts.length ? counts[i + 1] : pool.length;
    const items = end - start;
    if (items <= 0) continue;
    const ngrams = Math.floor(items / size);
    if (size < minN || size > maxN) { gid += ngrams; continue; }
    let idx = start;
    for (let g = 0; g < ngrams; g++) {
      let m = root;
      for (let k = 1; idx < pool.length; k++) {
        let p = m.get(pool[idx]);
        if (!p) { p = { id: 0, next: null }; m.set(pool[idx], p); }
        idx++;
        if (k === size) { p.id = gid++; break; }
        if (!p.next) p.next = new Map();
        m = p.next;
      }
    }
  }
  if (gid - 1 > indexes.length) {
    throw new InputError(`ngram_indexes has ${indexes.length} entries, the pool defines ${gid - 1} n-grams`, where(ctx));
  }

  const dims = x.dims;
  let rows: number, C: number, batched = false;
  if (dims.length === 0) { rows = 1; C = 1; }
  else if (dims.length === 1) { rows = 1; C = dims[0]; }
  else if (dims.length === 2) { rows = dims[0]; C = dims[1]; batched = true; }
  else throw new InputError(`input must have shape [C] or [N, C], got [${dims.join(',')}]`, where(ctx));
  const freq = new Float64Array(rows * outSize);
  const vals: ArrayLike<string | number> = isStr ? (x.data as string[]) : numbers(x);
  if (x.size > 0 && root.size > 0) {
    for (let r = 0; r < rows; r++) {
      const base = r * C;
      let startN = minN;
      for (let skip = 1; skip <= maxSkip + 1; skip++) {
        for (let s = 0; s < C; s++) {
          if (s + skip * (startN - 1) >= C) break;
          let m: Map<string | number, Gram> | null = root;
          let item = s;
          for (let n = 1; m && n <= maxN && item < C; n++, item += skip) {
            const p: Gram | undefined = m.get(vals[base + item]);
            if (!p) break;
            if (n >= startN && p.id !== 0) freq[r * outSize + indexes[p.id - 1]] += 1;
            m = p.next;
          }
        }
        if (startN === 1) {
          startN = 2; // unigrams are counted once, independent of the skip distance
          if (startN > maxN) break;
        }
      }
    }
  }
  const y = new Float32Array(rows * outSize);
  for (let i = 0; i < y.length; i++) {
    const f = freq[i];
    const w = weights.length ? weights[i % outSize] : 1;
    y[i] = mode === 'TF' ? f : mode === 'IDF' ? (f > 0 ? w : 0) : w * f;
  }
  return [new Tensor('float32', y, batched ? [rows, outSize] : [outSize])];
});
