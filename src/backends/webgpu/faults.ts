// Deliberately wrong kernels for the test that shows the tuner's verification rejects them (src/tune/site.ts, Fault).
// A candidate's Params may carry `fault`; the family's planner generates its usual WGSL and passes it through one of
// the small text mutations below. Every mutation asserts that it changed the code (a generator that drifted away from
// the pattern throws instead of silently planting nothing). Search spaces never produce a fault.
import type { Fault, Params } from '../../tune/site.js';

/** The fault a candidate asks for, if any. */
export function faultOf(p: Params): Fault | undefined {
  const f = p.fault;
  return f === 'edge' || f === 'barrier' || f === 'epilogue' || f === 'f16acc' ? f : undefined;
}

/** Parameters without the fault (what the planner validates and generates from). */
export function withoutFault(p: Params): Params {
  if (!('fault' in p)) return p;
  const { fault: _f, ...rest } = p;
  return rest;
}

function changed(before: string, after: string, what: string): string {
  if (after === before) throw new Error(`fault injection: ${what} did not match the generated WGSL`);
  return after;
}

/** Replaces the first match of `re` (a non-global RegExp, or a literal string) by `by`. */
export function replaceFirst(code: string, re: RegExp | string, by: string | ((...m: string[]) => string), what: string): string {
  return changed(code, code.replace(re, by as (...m: string[]) => string), what);
}

/** Replaces every match of `re` (a global RegExp). */
export function replaceAll(code: string, re: RegExp, by: string | ((...m: string[]) => string), what: string): string {
  return changed(code, code.replace(re, by as (...m: string[]) => string), what);
}

/** Removes the n-th (0-based) `workgroupBarrier();` of the code. */
export function dropBarrier(code: string, n = 0): string {
  let k = -1, at = -1;
  for (let i = 0; i <= n; i++) {
    at = code.indexOf('workgroupBarrier();', k + 1);
    if (at < 0) throw new Error(`fault injection: no workgroupBarrier #${n} in the generated WGSL`);
    k = at;
  }
  return `${code.slice(0, at)}/* barrier removed (fault) */${code.slice(at + 'workgroupBarrier();'.length)}`;
}

/**
 * Helpers that round a value to f16 precision (10 mantissa bits, round to nearest even; f16's narrower exponent range
 * is not modelled) by bit arithmetic, on every adapter. Neither obvious form survives lavapipe: a conversion through
 * the f16 type may legally keep higher precision (and did: results bit for bit those of f32), and its compiler folds
 * unpack2x16float(pack2x16float(x)) back to x.
 */
function f16Helpers(): string {
  const round = (t: string, u: string, c: (x: string) => string) =>
    `{ let b = bitcast<${u}>(v); return bitcast<${t}>((b + ${c('0xfffu')} + ((b >> ${c('13u')}) & ${c('1u')})) & ${c('0xffffe000u')}); }`;
  return `
fn wj_h1(v: f32) -> f32 ${round('f32', 'u32', (x) => x)}
fn wj_h2(v: vec2f) -> vec2f ${round('vec2f', 'vec2u', (x) => `vec2u(${x})`)}
fn wj_h4(v: vec4f) -> vec4f ${round('vec4f', 'vec4u', (x) => `vec4u(${x})`)}`;
}

/**
 * Accumulation in f16: every assignment matched by `re` (groups: 1 = target, 2 = right-hand side) becomes
 * `target = wj_hN(rhs)`, so the running sum is rounded to f16 at each step. `n` is the accumulator's width.
 */
export function f16Accumulate(code: string, re: RegExp, n: 1 | 2 | 4, hasF16: boolean): string {
  return withF16Helpers(replaceAll(code, re, (_m, target, rhs) => `${target} = wj_h${n}(${rhs});`, 'f16 accumulation'), hasF16);
}

/**
 * The code with the wj_h1/2/4 rounding helpers. `hasF16` (the adapter's shader-f16) does not change them: see
 * f16Helpers; it stays in the signature for a generator that wants real f16 arithmetic on hardware that rounds.
 */
export function withF16Helpers(code: string, _hasF16: boolean): string {
  return `${code}\n${f16Helpers()}\n`;
}

/** Matches `x = fma(...);` with target group 1 and right-hand side group 2 (one statement per line). */
export const FMA_ASSIGN = (target: string): RegExp => new RegExp(`(${target}) = (fma\\([^;\\n]*\\));`, 'g');
