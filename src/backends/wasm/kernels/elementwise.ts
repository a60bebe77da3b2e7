// Elementwise kernel generator: an SSA program over broadcast inputs compiled into one loop nest (f32x4 lanes, or
// scalar lanes when int64 is involved), with row-invariant work hoisted out of the contiguous inner loop.
import { type FunctionBuilder, type Local, ModuleBuilder, OP, type ValType } from '../../../codegen/wasm/builder.js';
import type { KernelSource } from '../kernel.js';
import type { EwDType, EwInstr, EwSpec } from '../../../codegen/ew.js';
import { type Arg, V, Vec, vexp, vexpm1, vlog, vlog1p, vOnePlusErf, verf, vsigmoid, vtanh } from './math.js';
import type { Fault } from '../../../tune/site.js';
import { emitF16Round } from '../tune.js';

export interface EwLayout {
  /** Rows (all walk dims but the last) per task when rows are split; 1 when columns are split. */
  rowsPerTask: number;
  /** Columns per task (a multiple of 16 unless it is the whole row). */
  colBlock: number;
  tasks: number;
  /** Vectors per iteration of the contiguous inner loop (1, 2 or 4; default 1). */
  unroll?: number;
  /** A deliberate bug for the tuner's rejection test (see FAULTS in build); never set by a search space. */
  fault?: Fault;
}

export class EwUnsupported extends Error {}

const ES: Record<EwDType, number> = { float32: 4, int32: 4, uint8: 1, bool: 1, int64: 8 };
const SHIFT: Record<EwDType, number> = { float32: 2, int32: 2, uint8: 0, bool: 0, int64: 3 };

/** Splits the walk into tasks: whole rows when there are enough of them, else column blocks of each row. */
export function ewLayout(shape: readonly number[], threads: number, split = 4, chunk = 8192): EwLayout {
  const L = shape[shape.length - 1];
  const R = shape.slice(0, -1).reduce((a, b) => a * b, 1);
  const total = R * L;
  if (threads <= 1 || total < 1 << 15) return { rowsPerTask: Math.max(R, 1), colBlock: L, tasks: 1 };
  const want = Math.min(threads * split, Math.ceil(total / chunk));
  if (R >= want) {
    const rpt = Math.ceil(R / want);
    return { rowsPerTask: rpt, colBlock: L, tasks: Math.ceil(R / rpt) };
  }
  const nCB = Math.ceil(want / R);
  const cb = Math.ceil(Math.ceil(L / nCB) / 16) * 16;
  if (cb >= L) return { rowsPerTask: 1, colBlock: L, tasks: R };
  return { rowsPerTask: 1, colBlock: cb, tasks: R * Math.ceil(L / cb) };
}

/** Hoisting level of each instruction: 0 = once per launch, 1 = once per row, 2 = per element. */
function levels(spec: EwSpec): number[] {
  const m = spec.shape.length;
  const inLevel = spec.inputs.map((x) => (x.strides.every((s) => s === 0) ? 0 : x.strides[m - 1] === 0 ? 1 : 2));
  const lv: number[] = [];
  for (const ins of spec.instrs) {
    if (ins.op === 'in') lv.push(inLevel[ins.p![0]]);
    else if (ins.op === 'const') lv.push(0);
    else lv.push(Math.max(0, ...ins.args.map((a) => lv[a])));
  }
  return lv;
}

export function genElementwise(spec: EwSpec, layout: EwLayout): KernelSource {
  const scalar = spec.inputs.some((x) => x.dtype === 'int64') || spec.instrs.some((x) => x.dtype === 'int64');
  const key = `ew:${scalar ? 's' : 'v'}:${keyOf([spec, layout])}`;
  // Build (and so validate) now so that unsupported programs fail at plan time, not at compile time; programs already
  // built in this process (by an earlier node or session) are not built again.
  let bytes = BUILT.get(key);
  if (!bytes) {
    bytes = build(spec, layout, scalar);
    if (BUILT.size >= MAX_BUILT) BUILT.delete(BUILT.keys().next().value as string);
    BUILT.set(key, bytes);
  }
  const out = bytes;
  return { key, bytes: () => out };
}

const BUILT = new Map<string, Uint8Array>();
const MAX_BUILT = 2048;

/** JSON with the numbers JSON cannot tell apart (±Infinity, NaN, -0) spelled out. */
export function keyOf(x: unknown): string {
  return JSON.stringify(x, (_k, val: unknown) => (typeof val === 'number' && (!Number.isFinite(val) || Object.is(val, -0)) ? `#${String(Object.is(val, -0) ? '-0' : val)}` : val));
}

function build(spec: EwSpec, layout: EwLayout, scalar: boolean): Uint8Array {
  const { shape, inputs, instrs, outputs } = spec;
  const m = shape.length;
  const L = shape[m - 1];
  const R = shape.slice(0, -1).reduce((a, b) => a * b, 1);
  const W = scalar ? 1 : 4;
  // FAULTS (the tuner's rejection test):
  // - edge: a ragged row tail loads one lane short (its last element is computed from zeros);
  // - barrier: the kernel has no phases; the nearest ordering bug is the row advance of the inputs left out, so the
  //   rows after a task's first read that first row's inputs (the planner makes the launch one task of all rows);
  // - epilogue: a broadcast input (the first with a stride-0 axis, else the last input) is read one element off;
  // - f16acc: no sums here; float outputs are rounded to f16 precision before they are stored.
  const fault = layout.fault;
  const uf = scalar ? 1 : Math.max(1, layout.unroll ?? 1);
  const bcIn = inputs.findIndex((x) => x.strides.some((st, d) => st === 0 && shape[d] > 1));
  const epInput = fault !== 'epilogue' ? -1 : bcIn >= 0 ? bcIn : inputs.length - 1;
  const split = layout.colBlock < L;
  const nCB = Math.ceil(L / layout.colBlock);
  const lv = levels(spec);
  const mb = new ModuleBuilder();
  const nIn = inputs.length, nOut = outputs.length;
  const f = mb.func('run', new Array<ValType>(nIn + nOut + 2).fill('i32'));
  const inP = (k: number) => f.param(k), outP = (j: number) => f.param(nIn + j);
  const T0 = f.param(nIn + nOut), T1 = f.param(nIn + nOut + 1);
  const v = new Vec(f);
  const t = f.local('i32'), row = f.local('i32'), rowEnd = f.local('i32'), c0 = f.local('i32'), c1 = f.local('i32'), c = f.local('i32');
  const coords = shape.slice(0, -1).map(() => f.local('i32'));
  const rb = inputs.map(() => f.local('i32'));
  const p = inputs.map(() => f.local('i32'));
  const op = outputs.map(() => f.local('i32'));
  const vals: (Local | undefined)[] = new Array(instrs.length);
  const inLevel = inputs.map((x) => (x.strides.every((s) => s === 0) ? 0 : x.strides[m - 1] === 0 ? 1 : 2));
  const inBase = (k: number) => { f.get(inP(k)); if (k === epInput) { f.i32(ES[inputs[k].dtype]); f.op(OP.i32_add); } };

  const emitLevel = (level: number, load: (k: number, dt: EwDType) => Local) => {
    instrs.forEach((ins, i) => {
      if (lv[i] !== level) return;
      if (ins.op === 'in') vals[i] = load(ins.p![0], inputs[ins.p![0]].dtype);
      else {
        const args = ins.args.map((a) => vals[a]!);
        const types = ins.args.map((a) => instrs[a].dtype);
        vals[i] = scalar ? emitScalar(f, ins, args, types) : emitVec(v, ins, args, types);
      }
    });
  };
  // Loads: at level 0 and 1 broadcast loads (the pointer is the param / the row base), at level 2 full or tail loads.
  const splatLoad = (addr: () => void, dt: EwDType): Local => (scalar ? scalarLoad(f, addr, dt) : vecSplatLoad(f, v, addr, dt));

  emitLevel(0, (k, dt) => splatLoad(() => inBase(k), dt));

  f.for_(t, () => f.get(T0), () => f.get(T1), 1, () => {
    if (split) {
      f.get(t); f.i32(nCB); f.op(OP.i32_div_u); f.set(row);
      f.get(t); f.i32(nCB); f.op(OP.i32_rem_u); f.i32(layout.colBlock); f.op(OP.i32_mul); f.set(c0);
      f.get(c0); f.i32(layout.colBlock); f.op(OP.i32_add); f.i32(L); f.get(c0); f.i32(layout.colBlock); f.op(OP.i32_add); f.i32(L);
      f.op(OP.i32_lt_s); f.select(); f.set(c1);
      f.get(row); f.i32(1); f.op(OP.i32_add); f.set(rowEnd);
    } else {
      f.get(t); f.i32(layout.rowsPerTask); f.op(OP.i32_mul); f.set(row);
      f.get(row); f.i32(layout.rowsPerTask); f.op(OP.i32_add); f.i32(R); f.get(row); f.i32(layout.rowsPerTask); f.op(OP.i32_add); f.i32(R);
      f.op(OP.i32_lt_s); f.select(); f.set(rowEnd);
    }
    // Coordinates of the first row and the row base pointer of every input.
    if (m > 1) {
      f.get(row); f.set(c);
      for (let d = m - 2; d >= 0; d--) {
        f.get(c); f.i32(shape[d]); f.op(OP.i32_rem_u); f.set(coords[d]);
        f.get(c); f.i32(shape[d]); f.op(OP.i32_div_u); f.set(c);
      }
    }
    inputs.forEach((x, k) => {
      if (inLevel[k] === 0) return;
      inBase(k);
      for (let d = 0; d < m - 1; d++) {
        if (x.strides[d] === 0) continue;
        f.get(coords[d]); f.i32(x.strides[d] * ES[x.dtype]); f.op(OP.i32_mul); f.op(OP.i32_add);
      }
      f.set(rb[k]);
    });
    f.block(() => f.loop(() => {
      emitLevel(1, (k, dt) => splatLoad(() => f.get(rb[k]), dt));
      outputs.forEach((o, j) => {
        f.get(outP(j)); f.get(row); f.i32(L); f.op(OP.i32_mul);
        if (split) { f.get(c0); f.op(OP.i32_add); }
        if (SHIFT[o.dtype]) { f.i32(SHIFT[o.dtype]); f.op(OP.i32_shl); }
        f.op(OP.i32_add); f.set(op[j]);
      });
      inputs.forEach((x, k) => {
        if (inLevel[k] !== 2) return;
        f.get(rb[k]);
        if (split) { f.get(c0); if (SHIFT[x.dtype]) { f.i32(SHIFT[x.dtype]); f.op(OP.i32_shl); } f.op(OP.i32_add); }
        f.set(p[k]);
      });
      const body = (lanes: number, loadLanes = lanes) => {
        emitLevel(2, (k, dt) => (scalar ? scalarLoad(f, () => f.get(p[k]), dt) : vecLoad(f, v, p[k], dt, loadLanes)));
        outputs.forEach((o, j) => {
          let x = vals[o.value]!;
          if (fault === 'f16acc' && o.dtype === 'float32') { f.get(x); x = v.save(); emitF16Round(f, x); }
          if (scalar) scalarStore(f, op[j], x, o.dtype);
          else vecStore(f, v, op[j], x, o.dtype, lanes);
        });
      };
      const step = () => {
        body(W);
        inputs.forEach((x, k) => { if (inLevel[k] === 2) { f.get(p[k]); f.i32(W * ES[x.dtype]); f.op(OP.i32_add); f.set(p[k]); } });
        outputs.forEach((o, j) => { f.get(op[j]); f.i32(W * ES[o.dtype]); f.op(OP.i32_add); f.set(op[j]); });
      };
      // The vectors of the task's columns, `uf` per iteration, then the rest one at a time (W * uf is a power of 2).
      const vecEnd = (w: number) => () => {
        if (split) { f.get(c1); f.get(c0); f.op(OP.i32_sub); f.i32(~(w - 1)); f.op(OP.i32_and); } else f.i32(L - (L % w));
      };
      if (uf > 1) f.for_(c, () => f.i32(0), vecEnd(W * uf), W * uf, () => { for (let u = 0; u < uf; u++) step(); });
      f.for_(c, uf > 1 ? () => f.get(c) : () => f.i32(0), vecEnd(W), W, step);
      if (L % W) {
        const tail = () => body(L % W, L % W - (fault === 'edge' ? 1 : 0));
        if (split) { f.get(c1); f.i32(L); f.op(OP.i32_eq); f.if_(tail); } else tail();
      }
      // Next row: advance the odometer and the row bases.
      f.get(row); f.i32(1); f.op(OP.i32_add); f.tee(row); f.get(rowEnd); f.op(OP.i32_ge_s); f.br_if(1);
      if (m > 1 && fault !== 'barrier') advance(f, shape, inputs, inLevel, coords, rb, m - 2);
      f.br(0);
    }));
  });
  return mb.build();
}

function advance(f: FunctionBuilder, shape: readonly number[], inputs: EwSpec['inputs'], inLevel: number[], coords: Local[], rb: Local[], d: number): void {
  const bump = (delta: (s: number) => number) => inputs.forEach((x, k) => {
    if (inLevel[k] === 0 || x.strides[d] === 0) return;
    f.get(rb[k]); f.i32(delta(x.strides[d]) * ES[x.dtype]); f.op(OP.i32_add); f.set(rb[k]);
  });
  f.get(coords[d]); f.i32(1); f.op(OP.i32_add); f.tee(coords[d]);
  bump((s) => s);
  if (d === 0) { f.drop(); return; }
  f.i32(shape[d]); f.op(OP.i32_eq);
  f.if_(() => {
    f.i32(0); f.set(coords[d]);
    bump((s) => -s * shape[d]);
    advance(f, shape, inputs, inLevel, coords, rb, d - 1);
  });
}

// --- vector lanes ----------------------------------------------------------------------------------

const memarg = (f: FunctionBuilder, code: number, align: number, offset: number) => { f.code.u8(0xfd).u32(code).u32(align).u32(offset); };

/** Widens 4 bytes in lanes 0..3 of the i8x16 on the stack to i32 lanes (zero-extended). */
function widenBytes(f: FunctionBuilder): void { f.simd(V.i16x8_extend_low_i8x16_u); f.simd(V.i32x4_extend_low_i16x8_u); }

function toMask(f: FunctionBuilder): void { f.v128_const(new Uint8Array(16)); f.simd(V.i32x4_ne); }

function vecSplatLoad(f: FunctionBuilder, v: Vec, addr: () => void, dt: EwDType): Local {
  addr();
  if (dt === 'float32' || dt === 'int32') memarg(f, V.load32_splat, 2, 0);
  else { f.i32_load8_u(0); f.simd(V.i32x4_splat); if (dt === 'bool') toMask(f); }
  return v.save();
}

function vecLoad(f: FunctionBuilder, v: Vec, p: Local, dt: EwDType, lanes: number): Local {
  const wide = dt === 'float32' || dt === 'int32';
  if (lanes === 4) {
    f.get(p);
    if (wide) f.v128_load(0, 2);
    else { memarg(f, V.load32_zero, 0, 0); widenBytes(f); }
  } else {
    f.v128_const(new Uint8Array(16));
    const acc = v.save();
    for (let l = 0; l < lanes; l++) {
      f.get(p); f.get(acc);
      if (wide) { memarg(f, V.load32_lane, 2, l * 4); f.code.u8(l); } else { memarg(f, V.load8_lane, 0, l); f.code.u8(l); }
      f.set(acc);
    }
    f.get(acc);
    if (!wide) widenBytes(f);
  }
  if (dt === 'bool') toMask(f);
  return v.save();
}

function vecStore(f: FunctionBuilder, v: Vec, p: Local, x: Local, dt: EwDType, lanes: number): void {
  const wide = dt === 'float32' || dt === 'int32';
  let val = x;
  if (!wide) {
    // bool masks narrow (signed) to 0xff bytes, then & 1; uint8 values are reduced mod 256 first (narrowing saturates).
    f.get(x);
    if (dt === 'uint8') { f.v128_const(new Uint8Array(new Int32Array([255, 255, 255, 255]).buffer)); f.simd(V.and); }
    const n = v.save();
    f.get(n); f.get(n); f.simd(dt === 'bool' ? V.i16x8_narrow_i32x4_s : V.i16x8_narrow_i32x4_u);
    const h = v.save();
    f.get(h); f.get(h); f.simd(dt === 'bool' ? V.i8x16_narrow_i16x8_s : V.i8x16_narrow_i16x8_u);
    if (dt === 'bool') { f.v128_const(new Uint8Array(16).fill(1)); f.simd(V.and); }
    val = v.save();
  }
  if (lanes === 4) {
    f.get(p); f.get(val);
    if (wide) f.v128_store(0, 2); else { memarg(f, V.store32_lane, 0, 0); f.code.u8(0); }
    return;
  }
  for (let l = 0; l < lanes; l++) {
    f.get(p); f.get(val);
    if (wide) { memarg(f, V.store32_lane, 2, l * 4); f.code.u8(l); } else { memarg(f, V.store8_lane, 0, l); f.code.u8(l); }
  }
}

const FLT_MAX = 3.4028234663852886e38;
const TWO31 = 2 ** 31;

/** One instruction on f32x4 / i32x4 / mask lanes. */
function emitVec(v: Vec, ins: EwInstr, a: Local[], types: EwDType[]): Local {
  const p = ins.p ?? [];
  const t0 = types[0];
  const isF = t0 === 'float32';
  const isI = t0 === 'int32' || t0 === 'uint8';
  const need = (ok: boolean) => { if (!ok) throw new EwUnsupported(`${ins.op} on ${types.join(',')}`); };
  switch (ins.op) {
    case 'const':
      if (ins.dtype === 'float32') return splatConst(v, p[0]);
      if (ins.dtype === 'bool') return splatI(v, p[0] ? -1 : 0);
      need(ins.dtype === 'int32' || ins.dtype === 'uint8');
      return splatI(v, p[0]);
    case 'add': need(isF || t0 === 'int32'); return isF ? v.add(a[0], a[1]) : v.iadd(a[0], a[1]);
    case 'sub': need(isF || t0 === 'int32'); return isF ? v.sub(a[0], a[1]) : v.isub(a[0], a[1]);
    case 'mul': need(isF || t0 === 'int32'); return isF ? v.mul(a[0], a[1]) : v.op2(V.i32x4_mul, a[0], a[1]);
    case 'div': need(isF); return v.div(a[0], a[1]);
    case 'max': need(isF || t0 === 'int32'); return isF ? v.max(a[0], a[1]) : v.op2(V.i32x4_max_s, a[0], a[1]);
    case 'min': need(isF || t0 === 'int32'); return isF ? v.min(a[0], a[1]) : v.op2(V.i32x4_min_s, a[0], a[1]);
    case 'neg': need(isF || t0 === 'int32'); return isF ? v.neg(a[0]) : v.op1(V.i32x4_neg, a[0]);
    case 'abs': need(isF || t0 === 'int32'); return isF ? v.abs(a[0]) : v.op1(V.i32x4_abs, a[0]);
    case 'relu': need(isF || t0 === 'int32'); return isF ? v.max(a[0], 0) : v.op2(V.i32x4_max_s, a[0], { i: 0 });
    case 'eq': case 'lt': case 'gt': case 'le': case 'ge': {
      if (t0 === 'bool') {
        need(ins.op === 'eq');
        return v.not(v.xor(a[0], a[1]));
      }
      if (isF) return v.op2({ eq: V.f32x4_eq, lt: V.f32x4_lt, gt: V.f32x4_gt, le: V.f32x4_le, ge: V.f32x4_ge }[ins.op], a[0], a[1]);
      need(isI);
      return v.op2({ eq: V.i32x4_eq, lt: V.i32x4_lt_s, gt: V.i32x4_gt_s, le: V.i32x4_le_s, ge: V.i32x4_ge_s }[ins.op], a[0], a[1]);
    }
    case 'not': need(t0 === 'bool'); return v.not(a[0]);
    case 'and': need(t0 === 'bool'); return v.and(a[0], a[1]);
    case 'or': need(t0 === 'bool'); return v.or(a[0], a[1]);
    case 'xor': need(t0 === 'bool'); return v.xor(a[0], a[1]);
    case 'where': return v.sel(a[0], a[1], a[2]);
    case 'cast': return vecCast(v, a[0], t0, ins.dtype);
    default: break;
  }
  need(isF);
  const x = a[0];
  switch (ins.op) {
    case 'sqrt': return v.sqrt(x);
    case 'recip': return v.div(1, x);
    case 'exp': return vexp(v, x);
    case 'log': return vlog(v, x);
    case 'tanh': return vtanh(v, x);
    case 'erf': return verf(v, x);
    case 'sigmoid': return vsigmoid(v, x);
    case 'floor': return v.op1(V.f32x4_floor, x);
    case 'ceil': return v.op1(V.f32x4_ceil, x);
    case 'leakyrelu': return v.sel(v.lt(x, 0), v.mul(x, p[0]), x);
    case 'elu': return v.sel(v.lt(x, 0), v.mul(vexpm1(v, x), p[0]), x);
    case 'hardsigmoid': return v.max(v.min(v.add(v.mul(x, p[0]), p[1]), 1), 0);
    case 'hardswish': return v.mul(x, v.max(v.min(v.add(v.mul(x, Math.fround(1 / 6)), 0.5), 1), 0));
    case 'softplus': return v.add(v.max(x, 0), vlog1p(v, vexp(v, v.neg(v.abs(x)))));
    case 'gelu': return v.mul(v.mul(x, 0.5), vOnePlusErf(v, v.mul(x, Math.SQRT1_2)));
    case 'gelu_tanh': {
      // 0.5 x (1 + tanh(u)) = x sigmoid(2u): no cancellation for negative x.
      const u = v.mul(v.add(v.mul(v.mul(v.mul(x, x), x), 0.044715), x), Math.fround(2 * Math.sqrt(2 / Math.PI)));
      return v.mul(x, vsigmoid(v, u));
    }
    case 'clip': {
      // a = x < lo ? lo : x; a > hi ? hi : a (the reference's order: NaN passes, lo > hi gives hi).
      let r: Local = x;
      if (p[0] !== -Infinity) r = v.pmax(r, p[0]);
      if (p[1] !== Infinity) r = v.pmin(r, p[1]);
      return r === x ? v.or(x, x) : r;
    }
    case 'clip2': return v.pmin(v.pmax(x, a[1]), a[2]); // bounds from inputs
    case 'clip_lo': return v.pmax(x, a[1]);
    case 'clip_hi': return v.pmin(x, a[1]);
    case 'pow': return vpow(v, x, a[1]);
    case 'powc': return vpowConst(v, x, p[0]);
    default: throw new EwUnsupported(`no vector kernel for ${ins.op}`);
  }
}

function splatConst(v: Vec, x: number): Local { v.f.f32x4_const(x); return v.save(); }
function splatI(v: Vec, x: number): Local { v.push({ i: x }); return v.save(); }

/** C pow semantics on f32 lanes (as the reference's powf): exp(y log|x|) with the sign and special cases fixed up. */
function vpow(v: Vec, x: Arg, y: Arg): Local {
  const ax = v.abs(x);
  let r = vexp(v, v.mul(y, vlog(v, ax)));
  const yr = v.nearest(y);
  const yInt = v.eq(yr, y);
  const half = v.mul(y, 0.5);
  const yOdd = v.andnot(yInt, v.eq(v.nearest(half), half));
  const negX = v.lt(x, 0);
  // Odd integer powers keep the sign of x (including -0); negative finite x with non-integer y is NaN.
  r = v.sel(yOdd, v.copySign(r, x), r);
  r = v.sel(v.andnot(v.and(negX, v.gt(x, -Infinity)), yInt), NaN, r);
  // |x| = 1 with y = ±inf, y = 0 and x = 1 give 1.
  const one = v.or(v.or(v.eq(y, 0), v.eq(x, 1)), v.and(v.eq(ax, 1), v.eq(v.abs(y), Infinity)));
  return v.sel(one, 1, r);
}

function vpowConst(v: Vec, x: Local, y: number): Local {
  switch (y) {
    case 1: return v.or(x, x);
    case 2: return v.mul(x, x);
    case 3: return v.mul(v.mul(x, x), x);
    case 4: { const s = v.mul(x, x); return v.mul(s, s); }
    case -1: return v.div(1, x);
    case 0.5: return v.sel(v.eq(x, -Infinity), Infinity, v.sqrt(x));
    case -0.5: return v.sel(v.eq(x, -Infinity), 0, v.div(1, v.sqrt(x)));
    default: return vpow(v, x, y);
  }
}

function vecCast(v: Vec, x: Local, from: EwDType, to: EwDType): Local {
  const intLike = (d: EwDType) => d === 'int32' || d === 'uint8';
  if (from === to) return x;
  if (from === 'float32') {
    if (to === 'bool') return v.ne(x, 0);
    const inRange = v.and(v.ge(x, -TWO31), v.lt(x, TWO31));
    if (to === 'int32') return v.sel(inRange, v.toInt(x), { i: -TWO31 });
    if (to === 'uint8') return v.and(v.and(v.toInt(x), inRange), { i: 255 });
  } else if (intLike(from)) {
    if (to === 'float32') return v.toF32(x);
    if (to === 'bool') return v.op2(V.i32x4_ne, x, { i: 0 });
    if (to === 'uint8') return v.and(x, { i: 255 });
    if (to === 'int32') return x;
  } else if (from === 'bool') {
    if (to === 'float32') return v.and(x, 1);
    if (to === 'int32' || to === 'uint8') return v.and(x, { i: 1 });
  }
  throw new EwUnsupported(`cast ${from} → ${to}`);
}

// --- scalar lanes (int64 programs) ----------------------------------------------------------------

const S = {
  i64_load: 0x29, i64_eqz: 0x50, i64_eq: 0x51, i64_ne: 0x52, i64_lt_s: 0x53, i64_gt_s: 0x55, i64_le_s: 0x57, i64_ge_s: 0x59,
  i64_add: 0x7c, i64_sub: 0x7d, i64_mul: 0x7e, i64_div_s: 0x7f, i32_wrap_i64: 0xa7, i64_extend_i32_s: 0xac, i64_extend_i32_u: 0xad,
  f64_convert_i64_s: 0xb9,
} as const;

const wasmType = (d: EwDType): ValType => (d === 'float32' ? 'f32' : d === 'int64' ? 'i64' : 'i32');

function scalarLoad(f: FunctionBuilder, addr: () => void, dt: EwDType): Local {
  addr();
  switch (dt) {
    case 'float32': f.f32_load(0, 0); break;
    case 'int32': f.i32_load(0, 0); break;
    case 'int64': f.i64_load(0, 0); break;
    case 'uint8': f.i32_load8_u(0); break;
    case 'bool': f.i32_load8_u(0); f.i32(0); f.op(OP.i32_ne); break;
  }
  const l = f.local(wasmType(dt));
  f.set(l);
  return l;
}

function scalarStore(f: FunctionBuilder, p: Local, x: Local, dt: EwDType): void {
  f.get(p); f.get(x);
  switch (dt) {
    case 'float32': f.f32_store(0, 0); break;
    case 'int32': f.i32_store(0, 0); break;
    case 'int64': f.i64_store(0, 0); break;
    case 'uint8': case 'bool': f.i32_store8(0); break;
  }
}

/** One instruction on scalar f32 / i32 / i64 / bool (0 or 1) values. Covers what int64 programs need. */
function emitScalar(f: FunctionBuilder, ins: EwInstr, a: Local[], types: EwDType[]): Local {
  const p = ins.p ?? [];
  const t0 = types[0];
  const out = () => { const l = f.local(wasmType(ins.dtype)); f.set(l); return l; };
  const need = (ok: boolean) => { if (!ok) throw new EwUnsupported(`${ins.op} on ${types.join(',')} (scalar)`); };
  const get2 = () => { f.get(a[0]); f.get(a[1]); };
  const kind = t0 === 'float32' ? 'f' : t0 === 'int64' ? 'l' : t0 === 'int32' ? 'i' : 'b';
  switch (ins.op) {
    case 'const':
      if (ins.dtype === 'float32') f.f32c(p[0]);
      else if (ins.dtype === 'int64') f.i64(BigInt(p[0]));
      else f.i32(ins.dtype === 'bool' ? (p[0] ? 1 : 0) : p[0]);
      return out();
    case 'add': case 'sub': case 'mul': {
      need(kind === 'f' || kind === 'l' || kind === 'i');
      const codes = { f: [OP.f32_add, OP.f32_sub, OP.f32_mul], l: [S.i64_add, S.i64_sub, S.i64_mul], i: [OP.i32_add, OP.i32_sub, OP.i32_mul] }[kind as 'f'];
      get2(); f.op(codes[['add', 'sub', 'mul'].indexOf(ins.op)]); return out();
    }
    case 'div': {
      need(kind === 'f' || kind === 'l');
      if (kind === 'f') { get2(); f.op(OP.f32_div); return out(); }
      // The reference: y = 0 gives 0; INT64_MIN / -1 wraps. Neither may reach i64.div_s (it traps).
      const isY = (c: bigint) => { f.get(a[1]); f.i64(c); f.op(S.i64_eq); };
      f.i64(0n); f.get(a[0]); f.op(S.i64_sub); // -x for y = -1
      f.get(a[0]); f.i64(1n); f.get(a[1]); isY(0n); isY(-1n); f.op(OP.i32_or); f.select(); f.op(S.i64_div_s);
      isY(-1n); f.select();
      const r = out();
      f.i64(0n); f.get(r); isY(0n); f.select();
      return out();
    }
    case 'max': case 'min': {
      need(kind === 'f' || kind === 'l' || kind === 'i');
      get2();
      if (kind === 'f') { f.op(ins.op === 'max' ? OP.f32_max : OP.f32_min); return out(); }
      get2(); f.op(kind === 'l' ? (ins.op === 'max' ? S.i64_gt_s : S.i64_lt_s) : (ins.op === 'max' ? OP.i32_gt_s : OP.i32_lt_s));
      f.select(); return out();
    }
    case 'neg': case 'abs': case 'relu': {
      need(kind === 'f' || kind === 'l' || kind === 'i');
      if (kind === 'f') {
        f.get(a[0]);
        if (ins.op === 'relu') { f.f32c(0); f.op(OP.f32_max); } else f.op(ins.op === 'neg' ? OP.f32_neg : OP.f32_abs);
        return out();
      }
      const zero = () => (kind === 'l' ? f.i64(0n) : f.i32(0));
      const sub = kind === 'l' ? S.i64_sub : OP.i32_sub;
      if (ins.op === 'neg') { zero(); f.get(a[0]); f.op(sub); return out(); }
      // abs: x >= 0 ? x : -x; relu: x > 0 ? x : 0
      f.get(a[0]);
      if (ins.op === 'abs') { zero(); f.get(a[0]); f.op(sub); } else zero();
      f.get(a[0]); zero(); f.op(kind === 'l' ? S.i64_gt_s : OP.i32_gt_s);
      f.select(); return out();
    }
    case 'eq': case 'lt': case 'gt': case 'le': case 'ge': {
      const k = ['eq', 'lt', 'gt', 'le', 'ge'].indexOf(ins.op);
      const codes = {
        f: [OP.f32_eq, OP.f32_lt, OP.f32_gt, OP.f32_le, OP.f32_ge],
        l: [S.i64_eq, S.i64_lt_s, S.i64_gt_s, S.i64_le_s, S.i64_ge_s],
        i: [OP.i32_eq, OP.i32_lt_s, OP.i32_gt_s, OP.i32_le_s, OP.i32_ge_s],
        b: [OP.i32_eq],
      }[kind];
      need(k < codes.length);
      get2(); f.op(codes[k]); return out();
    }
    case 'not': need(kind === 'b'); f.get(a[0]); f.op(OP.i32_eqz); return out();
    case 'and': case 'or': case 'xor':
      need(kind === 'b'); get2(); f.op(ins.op === 'and' ? OP.i32_and : ins.op === 'or' ? OP.i32_or : OP.i32_xor); return out();
    case 'where': f.get(a[1]); f.get(a[2]); f.get(a[0]); f.select(); return out();
    case 'cast': scalarCast(f, a[0], t0, ins.dtype); return out();
    default: throw new EwUnsupported(`no scalar kernel for ${ins.op}`);
  }
}

/** Pushes x (of `from`) converted to `to` with the reference Cast semantics. */
function scalarCast(f: FunctionBuilder, x: Local, from: EwDType, to: EwDType): void {
  f.get(x);
  if (from === to) return;
  const satTrunc = (code: number) => { f.code.u8(0xfc).u32(code); };
  if (from === 'float32') {
    if (to === 'bool') { f.f32c(0); f.op(OP.f32_ne); return; }
    if (to === 'int64') {
      // in range ? trunc : INT64_MIN
      satTrunc(4); f.i64(-(2n ** 63n));
      f.get(x); f.f32c(-(2 ** 63)); f.op(OP.f32_ge); f.get(x); f.f32c(2 ** 63); f.op(OP.f32_lt); f.op(OP.i32_and);
      f.select(); return;
    }
    satTrunc(0); f.i32(to === 'uint8' ? 0 : -TWO31);
    f.get(x); f.f32c(-TWO31); f.op(OP.f32_ge); f.get(x); f.f32c(TWO31); f.op(OP.f32_lt); f.op(OP.i32_and);
    f.select();
    if (to === 'uint8') { f.i32(255); f.op(OP.i32_and); }
    return;
  }
  if (from === 'int64') {
    if (to === 'float32') { f.op(S.f64_convert_i64_s); f.op(OP.f32_demote_f64); return; }
    if (to === 'bool') { f.op(S.i64_eqz); f.op(OP.i32_eqz); return; }
    f.op(S.i32_wrap_i64);
    if (to === 'uint8') { f.i32(255); f.op(OP.i32_and); }
    return;
  }
  // int32, uint8 (0..255) and bool (0/1) in i32
  if (to === 'int64') { f.op(from === 'int32' ? S.i64_extend_i32_s : S.i64_extend_i32_u); return; }
  if (to === 'float32') { f.op(OP.f32_convert_i32_s); return; }
  if (to === 'bool') { f.i32(0); f.op(OP.i32_ne); return; }
  if (to === 'uint8') { f.i32(255); f.op(OP.i32_and); return; }
  // to int32: values already fit
}
