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
 * Helpers that round a value to f16 precision: with shader-f16 through the f16 type (the running sum is held as an
 * f16), else through pack2x16float/unpack2x16float (the same rounding without the extension).
 */
function f16Helpers(hasF16: boolean): string {
  if (hasF16) {
    return `
fn wj_h1(v: f32) -> f32 { return f32(f16(v)); }
fn wj_h2(v: vec2f) -> vec2f { return vec2f(vec2<f16>(v)); }
fn wj_h4(v: vec4f) -> vec4f { return vec4f(vec4<f16>(v)); }`;
  }
  return `
fn wj_h1(v: f32) -> f32 { return unpack2x16float(pack2x16float(vec2f(v, 0.0))).x; }
fn wj_h2(v: vec2f) -> vec2f { return unpack2x16float(pack2x16float(v)); }
fn wj_h4(v: vec4f) -> vec4f { return vec4f(unpack2x16float(pack2x16float(v.xy)), unpack2x16float(pack2x16float(v.zw))); }`;
}

/**
 * Accumulation in f16: every assignment matched by `re` (groups: 1 = target, 2 = right-hand side) becomes
 * `target = wj_hN(rhs)`, so the running sum is rounded to f16 at each step. `n` is the accumulator's width.
 */
export function f16Accumulate(code: string, re: RegExp, n: 1 | 2 | 4, hasF16: boolean): string {
  return withF16Helpers(replaceAll(code, re, (_m, target, rhs) => `${target} = wj_h${n}(${rhs});`, 'f16 accumulation'), hasF16);
}

/** The code with the wj_h1/2/4 rounding helpers (and `enable f16` where they use the f16 type). */
export function withF16Helpers(code: string, hasF16: boolean): string {
  const body = `${code}\n${f16Helpers(hasF16)}\n`;
  return hasF16 && !/^\s*enable f16;/m.test(body) ? `enable f16;\n${body}` : body;
}

/** Matches `x = fma(...);` with target group 1 and right-hand side group 2 (one statement per line). */
export const FMA_ASSIGN = (target: string): RegExp => new RegExp(`(${target}) = (fma\\([^;\\n]*\\));`, 'g');
