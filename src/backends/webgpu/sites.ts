// Helpers the WebGPU op planners share to describe their tunable choices as TuneSites (src/tune/site.ts): signatures
// from a node's inputs and attributes, and ragged input shapes that keep the op's broadcast relations.
import type { Node } from '../../graph/ir.js';
import { raggedSize } from '../../tune/site.js';
import type { GpuValueDesc } from './kernel.js';

/** A node's attributes as stable text (tensors by dtype, dims and a checksum of their first values). */
export function attrsKey(node: Node): string {
  const parts: string[] = [];
  for (const name of [...node.attrs.keys()].sort()) {
    const v = node.attrs.get(name)!.value as unknown;
    let s: string;
    if (v && typeof v === 'object' && 'dims' in (v as object) && 'data' in (v as object)) {
      const t = v as { type?: string; dims: number[]; data: ArrayLike<number | bigint> };
      const head = Array.from({ length: Math.min(16, t.data.length) }, (_, i) => String(t.data[i])).join('/');
      s = `T(${t.type ?? ''}[${t.dims.join('x')}]${head})`;
    } else s = JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? x.toString() : x));
    parts.push(`${name}=${s}`);
  }
  return parts.join(';');
}

/** Op, domain, input dtypes and dims, attributes and `extra`: what a generic kernel's code depends on. */
export function nodeSig(family: string, node: Node, inputs: (GpuValueDesc | undefined)[], extra = ''): string {
  const ins = inputs.map((x) => (x ? `${x.dtype}[${x.dims.join('x')}]` : '-')).join(',');
  return `${family}:${node.domain ? `${node.domain}.` : ''}${node.opType}(${ins}){${attrsKey(node)}}${extra ? `:${extra}` : ''}`;
}

/** A ragged size that stays a multiple of 4 (but not of 8) when `n` is one, so vec4 kernels stay vec4. */
export function raggedKeep4(n: number): number {
  return n % 4 === 0 && n >= 8 ? 4 * raggedSize(n / 4) : raggedSize(n);
}

/**
 * Ragged dims for inputs that broadcast against each other (right-aligned, numpy rules): every output axis gets one
 * new size (raggedKeep4 for the innermost when `keep4`), each input's dim on that axis becomes it unless it is 1.
 * `fixed(axis, rank)` keeps an output axis as it is.
 */
export function raggedBroadcast(dims: number[][], keep4 = true, fixed: (axis: number, rank: number) => boolean = () => false): number[][] {
  const rank = Math.max(0, ...dims.map((d) => d.length));
  const out = new Array<number>(rank).fill(1);
  for (const d of dims) d.forEach((n, i) => { const a = rank - d.length + i; if (n !== 1) out[a] = n; });
  const mapped = out.map((n, a) => (fixed(a, rank) || n <= 1 ? n : a === rank - 1 && keep4 ? raggedKeep4(n) : raggedSize(n)));
  return dims.map((d) => d.map((n, i) => (n === 1 ? 1 : mapped[rank - d.length + i])));
}

/** Powers of two from lo to hi. */
export function pow2(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let x = lo; x <= hi; x *= 2) out.push(x);
  return out;
}

export const np2 = (n: number): number => 2 ** Math.ceil(Math.log2(Math.max(1, n)));
