// Picks the next token from a row of logits: greedy, or seeded sampling with temperature, top-k and top-p (nucleus).
import { InputError } from '../errors.js';
import { mulberry32 } from '../util/random.js';

export interface SamplingOptions {
  /** 0 (the default) is greedy; above 0, logits are divided by it before the softmax. */
  temperature?: number;
  /** Keep only the k most likely tokens (0, the default, keeps all); 1 is greedy whatever the temperature. */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p (1, the default, keeps all). */
  topP?: number;
  /** Seed of the sampling generator: the same seed, logits and options give the same tokens (default: a random one). */
  seed?: number;
}

/** The distribution sampling draws from: candidate token ids, most likely first, and their probabilities (sum 1). */
export interface TokenDistribution {
  ids: Int32Array;
  probs: Float64Array;
}

/** Checks sampling options; bad values are an InputError naming the option. */
export function checkSamplingOptions(o: SamplingOptions): void {
  const { temperature = 0, topK = 0, topP = 1, seed } = o;
  if (!(Number.isFinite(temperature) && temperature >= 0)) {
    throw new InputError(`temperature must be a finite number ≥ 0, got ${temperature}`, {}, 'use 0 for greedy decoding, or e.g. 0.8');
  }
  if (!(Number.isInteger(topK) && topK >= 0)) throw new InputError(`topK must be an integer ≥ 0, got ${topK}`, {}, 'use 0 to keep every token');
  if (!(topP > 0 && topP <= 1)) throw new InputError(`topP must be in (0, 1], got ${topP}`, {}, 'use 1 to keep every token');
  if (seed !== undefined && !Number.isInteger(seed)) throw new InputError(`seed must be an integer, got ${seed}`);
}

/** Index of the largest logit (the first one on ties, as numpy's argmax). */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

const isGreedy = (o: SamplingOptions) => !o.temperature || o.topK === 1;

/**
 * The filtered, renormalised distribution of softmax(logits / temperature): top-k first, then top-p over what is
 * left. Greedy options give the argmax with probability 1. The ids come most likely first, unless `anyOrder` and
 * nothing is filtered: then they are 0 … n−1 and no sort is paid (what the sampler draws from).
 */
export function tokenDistribution(logits: ArrayLike<number>, o: SamplingOptions, anyOrder = false): TokenDistribution {
  checkSamplingOptions(o);
  if (logits.length === 0) throw new InputError('the logits row is empty');
  if (isGreedy(o)) return { ids: Int32Array.of(argmax(logits)), probs: Float64Array.of(1) };
  const T = o.temperature!;
  const topK = o.topK ?? 0, topP = o.topP ?? 1;
  const n = logits.length;
  let ids = anyOrder && (topK === 0 || topK >= n) && topP === 1 ? Int32Array.from({ length: n }, (_, i) => i) : byLogitDescending(logits);
  const max = logits[argmax(logits)];
  if (topK > 0 && topK < n) ids = ids.slice(0, topK);
  if (!Number.isFinite(max)) throw new InputError(`the largest logit is ${max}`, {}, 'the model produced non-finite logits; check it on the reference backend');
  let probs = new Float64Array(ids.length);
  let sum = 0;
  for (let i = 0; i < ids.length; i++) { probs[i] = Math.exp((logits[ids[i]] - max) / T); sum += probs[i]; }
  for (let i = 0; i < probs.length; i++) probs[i] /= sum;
  if (topP < 1) {
    let cum = 0, keep = probs.length;
    for (let i = 0; i < probs.length; i++) {
      cum += probs[i];
      if (cum >= topP) { keep = i + 1; break; }
    }
    ids = ids.slice(0, keep);
    probs = probs.slice(0, keep);
    const s = probs.reduce((a, b) => a + b, 0);
    for (let i = 0; i < probs.length; i++) probs[i] /= s;
  }
  return { ids, probs };
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/**
 * Token ids by logit, largest first, equal logits in id order (so ties resolve the same way on every run). Float32
 * rows (a model's logits) sort as one native Float64Array sort of keys packing the float's order (32 bits) above the id
 * (21 bits): several times faster than a comparator sort, which sampling pays for every token.
 */
function byLogitDescending(logits: ArrayLike<number>): Int32Array {
  const n = logits.length;
  const ids = new Int32Array(n);
  if (!(logits instanceof Float32Array) || n > 1 << 21) {
    for (let i = 0; i < n; i++) ids[i] = i;
    ids.sort((a, b) => (logits[b] - logits[a]) || (a - b));
    return ids;
  }
  const keys = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    f32[0] = logits[i];
    const b = u32[0] === 0x80000000 ? 0 : u32[0]; // −0 ties with 0
    // Bits that order as the float does (negatives flipped, positives above them), then inverted: descending.
    const asc = b & 0x80000000 ? ~b >>> 0 : (b | 0x80000000) >>> 0;
    keys[i] = (0xffffffff - asc) * 2097152 + i;
  }
  keys.sort();
  for (let i = 0; i < n; i++) ids[i] = keys[i] % 2097152;
  return ids;
}

/**
 * A seeded sampler: each call draws one token from tokenDistribution(logits, options). distribution(), draw() and
 * uniform() expose the steps so that speculative decoding can compare the target's and the draft's processed
 * distributions and draw from the same seeded stream.
 */
export class Sampler {
  private readonly rng: () => number;
  constructor(readonly options: SamplingOptions = {}) {
    checkSamplingOptions(options);
    this.rng = mulberry32(options.seed ?? Math.floor(Math.random() * 2 ** 32));
  }

  get greedy(): boolean { return isGreedy(this.options); }

  /** The distribution a token is drawn from: after temperature, top-k and top-p (greedy: the argmax, probability 1). */
  distribution(logits: ArrayLike<number>): TokenDistribution {
    return tokenDistribution(logits, this.options, true);
  }

  /** The next number of the seeded stream, in [0, 1). */
  uniform(): number {
    return this.rng();
  }

  /** Draws from a distribution (ids and probabilities); greedy options take the first id and draw no number. */
  draw(d: TokenDistribution): number {
    if (this.greedy) return d.ids[0];
    return pick(d, this.rng());
  }

  sample(logits: ArrayLike<number>): number {
    if (this.greedy) return argmax(logits);
    return this.draw(tokenDistribution(logits, this.options, true));
  }
}

/** The id whose cumulative probability first exceeds u (the last one when rounding leaves u above the total). */
export function pick(d: TokenDistribution, u: number): number {
  let cum = 0;
  for (let i = 0; i < d.ids.length; i++) {
    cum += d.probs[i];
    if (u < cum) return d.ids[i];
  }
  return d.ids[d.ids.length - 1];
}
