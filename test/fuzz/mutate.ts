// Byte-level mutations of model files for fuzzing: bit flips, truncation, overwrites, insertions, splices.
import { mulberry32 } from '../../src/util/random.js';

/** Case numbers are spread over the generator's seeds. */
const prng = (seed: number) => mulberry32(Math.imul(seed, 2654435761));

export type Mutation = 'bitflip' | 'truncate' | 'overwrite' | 'varint' | 'insert' | 'splice' | 'zero-run';
export const MUTATIONS: Mutation[] = ['bitflip', 'truncate', 'overwrite', 'varint', 'insert', 'splice', 'zero-run'];

/** A deterministic mutant of `src` for case number `seed`. */
export function mutate(src: Uint8Array, seed: number): { bytes: Uint8Array; kind: Mutation } {
  const r = prng(seed);
  const kind = MUTATIONS[seed % MUTATIONS.length];
  const n = src.length;
  // Bias positions to the start of the file, where the graph structure (not weight bytes) usually lives.
  const pos = () => (r() < 0.6 ? Math.floor(r() * Math.min(n, 4096)) : Math.floor(r() * n));
  let out: Uint8Array;
  switch (kind) {
    case 'bitflip': {
      out = src.slice();
      const k = 1 + Math.floor(r() * 8);
      for (let i = 0; i < k; i++) { const p = pos(); out[p] ^= 1 << Math.floor(r() * 8); }
      break;
    }
    case 'truncate':
      out = src.slice(0, Math.floor(r() * n));
      break;
    case 'overwrite': {
      out = src.slice();
      const p = pos(), len = 1 + Math.floor(r() * 16);
      for (let i = p; i < Math.min(n, p + len); i++) out[i] = Math.floor(r() * 256);
      break;
    }
    case 'varint': {
      // Huge lengths and counts: a run of 0xff bytes makes a 10-byte varint near 2^64.
      out = src.slice();
      const p = pos(), len = 2 + Math.floor(r() * 9);
      for (let i = p; i < Math.min(n, p + len); i++) out[i] = i === p + len - 1 ? 0x01 : 0xff;
      break;
    }
    case 'insert': {
      const p = pos(), len = 1 + Math.floor(r() * 32);
      out = new Uint8Array(n + len);
      out.set(src.subarray(0, p));
      for (let i = 0; i < len; i++) out[p + i] = Math.floor(r() * 256);
      out.set(src.subarray(p), p + len);
      break;
    }
    case 'splice': {
      // Copy one region over another: duplicated fields, nodes and tags in odd places.
      out = src.slice();
      const a = pos(), b = pos(), len = 1 + Math.floor(r() * 256);
      out.set(src.subarray(a, Math.min(n, a + len)).subarray(0, Math.max(0, n - b)), b);
      break;
    }
    case 'zero-run': {
      out = src.slice();
      const p = pos(), len = 1 + Math.floor(r() * 64);
      out.fill(0, p, Math.min(n, p + len));
      break;
    }
  }
  return { bytes: out, kind };
}
