// Wasm reductions and normalizations (f32): Reduce{Sum,Mean,Max,Min} over any axes, Softmax/LogSoftmax along the last
// axis, LayerNormalization/RMSNormalization, InstanceNormalization (row kernels) and inference BatchNormalization (a
// broadcast elementwise program with the per-channel factors hoisted out of the inner loop).
import { type FunctionBuilder, type Local, ModuleBuilder, OP, type ValType } from '../../../codegen/wasm/builder.js';
import type { Node } from '../../../graph/ir.js';
import { sizeOf } from '../../../tensor.js';
import { keyOf } from '../kernels/elementwise.js';
import { V, Vec, vexp, vlog } from '../kernels/math.js';
import { type KernelSource, type OpPlan, type PlanContext, type ValueDesc, registerWasmOp, taskCount } from '../kernel.js';
import { EwProgram } from '../../../codegen/ew.js';
import { planProgram } from './elementwise.js';
import { type ParamMode, reduceAxes, reduceShape, rowParam, wantedOutputs } from '../../op_attrs.js';
import { type Fault, type Params, enumerate, spaceSize, type TuneSite, withDefault } from '../../../tune/site.js';
import { emitF16Round, faultOf, raggedByValue } from '../tune.js';

/**
 * Tunable choices of the row kernels (reductions, softmax, norms): accumulators of the vectorised row reduction (its
 * unroll), and the task split (at most `split` tasks per thread, at least `minW` elements per task). `fault` plants a
 * deliberate bug for the tuner's rejection test (never set by a space); each kernel below says how.
 */
interface RowTune { acc: number; split: number; minW: number; fault?: Fault; /** a plain reduction (its barrier fault is in vreduce) */ plain?: boolean }
const ROW_DEFAULT: Params = { acc: 4, split: 4, minW: 4096 };
const ROW_AXES = { acc: [1, 2, 4, 8], split: [1, 2, 4, 8], minW: [1024, 4096, 16384] };

/** The reduce-family site of a row kernel over R rows of L elements; returns the choice to use. */
function pickRow(ctx: PlanContext, sig: string, R: number, L: number, ragged: TuneSite['ragged']): RowTune {
  const serial = ctx.threads <= 1 || R * L < 1 << 14;
  const site: TuneSite = {
    family: 'reduce',
    sig: `${sig}:T${ctx.threads}`,
    default: ROW_DEFAULT,
    space: () => ({
      before: spaceSize(ROW_AXES),
      candidates: withDefault(ROW_DEFAULT, enumerate(ROW_AXES, (c) => {
        // More accumulators than vectors in a row fall back to one; one task makes the split moot.
        if ((c.acc as number) > 1 && 4 * (c.acc as number) > L) return false;
        if (serial && (c.split !== ROW_DEFAULT.split || c.minW !== ROW_DEFAULT.minW)) return false;
        return true;
      })),
    }),
    ragged,
  };
  const p = ctx.pick(site);
  const n = (k: string) => (typeof p[k] === 'number' ? (p[k] as number) : (ROW_DEFAULT[k] as number));
  return { acc: Math.max(1, n('acc')), split: Math.max(1, n('split')), minW: Math.max(1, n('minW')), fault: faultOf(p) };
}

type RKind = 'sum' | 'max' | 'min';
const IDENTITY: Record<RKind, number> = { sum: 0, max: -Infinity, min: Infinity };
const RCODE: Record<RKind, number> = { sum: V.f32x4_add, max: V.f32x4_max, min: V.f32x4_min };

const attrI = (n: Node, name: string, d: number) => { const a = n.attrs.get(name); return a && a.type === 'int' ? (a.value as number) : d; };
const attrF = (n: Node, name: string, d: number) => { const a = n.attrs.get(name); return a && a.type === 'float' ? (a.value as number) : d; };
const memarg = (f: FunctionBuilder, code: number, align: number, offset: number) => { f.code.u8(0xfd).u32(code).u32(align).u32(offset); };

/** Loads 4 floats at p+off, or `lanes` of them over a splat of `fill`. */
function load(f: FunctionBuilder, v: Vec, p: Local, off: number, lanes = 4, fill = 0): Local {
  if (lanes === 4) { f.get(p); f.v128_load(off, 2); return v.save(); }
  f.f32x4_const(fill);
  const acc = v.save();
  for (let l = 0; l < lanes; l++) { f.get(p); f.get(acc); memarg(f, V.load32_lane, 2, off + l * 4); f.code.u8(l); f.set(acc); }
  return acc;
}

function store(f: FunctionBuilder, p: Local, off: number, x: Local, lanes = 4): void {
  if (lanes === 4) { f.get(p); f.get(x); f.v128_store(off, 2); return; }
  for (let l = 0; l < lanes; l++) { f.get(p); f.get(x); memarg(f, V.store32_lane, 2, off + l * 4); f.code.u8(l); }
}

const add = (f: FunctionBuilder, l: Local, n: number) => { f.get(l); f.i32(n); f.op(OP.i32_add); f.set(l); };

/** Lane mask with the first `lanes` lanes set. */
const laneMask = (lanes: number) => ({ bytes: new Uint8Array(new Int32Array([0, 1, 2, 3].map((l) => (l < lanes ? -1 : 0))).buffer) });

/**
 * Reduces L contiguous floats at `ptr` (after `map`) with `kind`; returns the result splat over 4 lanes.
 * Four accumulators hide the add latency; the ragged tail is masked back to the identity after `map`.
 */
function vreduce(f: FunctionBuilder, v: Vec, ptr: Local, L: number, kind: RKind, map?: (x: Local) => Local, tune?: RowTune): Local {
  const id = IDENTITY[kind], code = RCODE[kind];
  const p = f.local('i32'), i = f.local('i32');
  f.get(ptr); f.set(p);
  const want = tune?.acc ?? 4, fault = tune?.fault;
  const nAcc = L >= 4 * want ? want : 1, blk = 4 * nAcc;
  const acc = Array.from({ length: nAcc }, () => { f.f32x4_const(id); return v.save(); });
  const step = (k: number, off: number, lanes = 4) => {
    let x = load(f, v, p, off, lanes, id);
    if (map) {
      x = map(x);
      if (lanes < 4) { v.f.v128_const(laneMask(lanes).bytes); const m = v.save(); x = v.sel(m, x, id); }
    }
    f.get(acc[k]); f.get(x); f.simd(code); f.set(acc[k]);
    // Fault f16acc: the partial sums (maxima) rounded to f16 precision at every step.
    if (fault === 'f16acc') emitF16Round(f, acc[k]);
  };
  const nBlk = Math.floor(L / blk);
  if (nBlk > 0) {
    f.for_(i, () => f.i32(0), () => f.i32(nBlk), 1, () => {
      for (let k = 0; k < nAcc; k++) step(k, k * 16);
      add(f, p, blk * 4);
    });
  }
  const rem = Math.floor((L % blk) / 4);
  for (let j = 0; j < rem; j++) step(j % nAcc, j * 16);
  // Fault edge: the ragged tail's bound is one short (its last element is left out).
  if (L % 4) step(0, rem * 16, L % 4 - (fault === 'edge' ? 1 : 0));
  let r = acc[0];
  for (let k = 1; k < nAcc; k++) r = v.op2(code, r, acc[k]);
  // Fault barrier (plain reductions, where the cross-lane combination is the only join): its last step is skipped,
  // as if lanes 1 and 3 had not been joined in.
  const shuffles = [[8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7], [4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11]];
  for (const sh of fault === 'barrier' && tune?.plain ? shuffles.slice(0, 1) : shuffles) {
    f.get(r); f.get(r); f.i8x16_shuffle(sh); const s = v.save();
    r = v.op2(code, r, s);
  }
  return r;
}

/** For L contiguous elements: out[j] = fn(in_k[j] ...); pointers advance by 16 bytes per vector. */
function vmap(f: FunctionBuilder, v: Vec, L: number, ins: Local[], out: Local, fn: (x: Local[]) => Local): void {
  const ps = ins.map((q) => { const p = f.local('i32'); f.get(q); f.set(p); return p; });
  const po = f.local('i32'), i = f.local('i32');
  f.get(out); f.set(po);
  const nv = Math.floor(L / 4);
  if (nv > 0) {
    f.for_(i, () => f.i32(0), () => f.i32(nv), 1, () => {
      store(f, po, 0, fn(ps.map((p) => load(f, v, p, 0))));
      for (const p of ps) add(f, p, 16);
      add(f, po, 16);
    });
  }
  if (L % 4) store(f, po, 0, fn(ps.map((p) => load(f, v, p, 0, L % 4))), L % 4);
}

/** Splits R rows into tasks of whole rows. */
function rowTasks(R: number, L: number, threads: number, tune?: RowTune): { rpt: number; tasks: number } {
  const split = tune?.split ?? 4, minW = tune?.minW ?? 4096;
  const minRows = Math.max(1, Math.ceil(minW / Math.max(L, 1)));
  const want = R * L < 1 << 14 ? 1 : split === 4 ? taskCount(R, threads, minRows) : threads <= 1 ? 1 : Math.max(1, Math.min(Math.ceil(R / minRows), threads * split));
  const rpt = Math.max(1, Math.ceil(R / want));
  return { rpt, tasks: Math.ceil(R / rpt) };
}

/**
 * A kernel over rows: run(ptrs..., t0, t1) calls `body(row, ptrs)` for each row of the task's range.
 * `body` gets the row index local and the raw pointer params.
 */
function rowKernel(key: string, nPtrs: number, R: number, rpt: number, body: (f: FunctionBuilder, v: Vec, row: Local, ptrs: Local[]) => void): KernelSource {
  let bytes: Uint8Array | undefined;
  return {
    key,
    bytes: () => {
      if (bytes) return bytes;
      const mb = new ModuleBuilder();
      const f = mb.func('run', new Array<ValType>(nPtrs + 2).fill('i32'));
      const v = new Vec(f);
      const ptrs = Array.from({ length: nPtrs }, (_, k) => f.param(k));
      const t = f.local('i32'), row = f.local('i32'), end = f.local('i32');
      f.for_(t, () => f.get(f.param(nPtrs)), () => f.get(f.param(nPtrs + 1)), 1, () => {
        f.get(t); f.i32(rpt); f.op(OP.i32_mul); f.set(row);
        f.get(row); f.i32(rpt); f.op(OP.i32_add); f.i32(R); f.get(row); f.i32(rpt); f.op(OP.i32_add); f.i32(R); f.op(OP.i32_lt_s); f.select(); f.set(end);
        f.for_(row, () => f.get(row), () => f.get(end), 1, () => body(f, v, row, ptrs));
      });
      bytes = mb.build();
      return bytes;
    },
  };
}

/** Pushes base + row*stride (bytes). */
function rowPtr(f: FunctionBuilder, base: Local, row: Local, strideBytes: number): Local {
  const p = f.local('i32');
  f.get(base); f.get(row); f.i32(strideBytes); f.op(OP.i32_mul); f.op(OP.i32_add); f.set(p);
  return p;
}

/** Iterates every coordinate of `levels` (count, byte stride), pointer advanced from `base`. */
function nest(f: FunctionBuilder, levels: { n: number; stride: number }[], base: Local, body: (p: Local) => void): void {
  if (levels.length === 0) { body(base); return; }
  const [lv, ...rest] = levels;
  const p = f.local('i32'), i = f.local('i32');
  f.get(base); f.set(p);
  f.for_(i, () => f.i32(0), () => f.i32(lv.n), 1, () => { nest(f, rest, p, body); add(f, p, lv.stride); });
}

// --- Reduce* ---------------------------------------------------------------------------------------


function planReduce(kind: RKind | 'mean', inputFrom: number) {
  return (node: Node, inputs: (ValueDesc | undefined)[], ctx: PlanContext, opset: number): OpPlan | null => {
    const x = inputs[0];
    if (!x || x.dtype !== 'float32') return null;
    const keep = attrI(node, 'keepdims', 1) !== 0;
    const noop = opset >= inputFrom && attrI(node, 'noop_with_empty_axes', 0) !== 0;
    const axes = reduceAxes(node, inputs, opset, inputFrom);
    if (axes === 'dynamic') return null;
    if (axes === null && noop) {
      const P = new EwProgram();
      const v = P.external(0, x);
      return v ? planProgram(P, [{ id: P.emit('cast', [v.id], 'float32'), dims: x.dims }], ctx, (d) => raggedByValue(d, (i) => i > 0)) : null;
    }
    const shape = reduceShape(x.dims, axes, keep);
    if (!shape) return null; // the reference reports the error
    const { reduced: red, outDims, count } = shape;
    const outN = sizeOf(outDims);
    const outputs = [{ dtype: 'float32' as const, dims: outDims }];
    if (outN === 0) return { outputs, launches: () => [] };
    if (count === 0) {
      const P = new EwProgram();
      const fill = kind === 'sum' ? 0 : kind === 'mean' ? NaN : IDENTITY[kind];
      return planProgram(P, [{ id: P.emit('const', [], 'float32', [fill]), dims: outDims }], ctx, (d) => raggedByValue(d, (i) => i > 0));
    }
    // Merge neighbouring dims of the same kind (unit dims dropped); the input is dense.
    const runs: { n: number; red: boolean }[] = [];
    x.dims.forEach((d, i) => {
      if (d === 1) return;
      const last = runs[runs.length - 1];
      if (last && last.red === red[i]) last.n *= d; else runs.push({ n: d, red: red[i] });
    });
    if (runs.length === 0) runs.push({ n: 1, red: true });
    const strides: number[] = [];
    let acc = 4;
    for (let i = runs.length - 1; i >= 0; i--) { strides[i] = acc; acc *= runs[i].n; }
    const rk: RKind = kind === 'mean' ? 'sum' : kind;
    const scale = kind === 'mean' ? 1 / count : 1;
    const last = runs[runs.length - 1];
    const kept = runs.map((r, i) => ({ ...r, stride: strides[i] })).filter((r) => !r.red);
    const redLv = runs.map((r, i) => ({ n: r.n, stride: strides[i], red: r.red })).filter((r) => r.red);
    const key = `reduce:${keyOf([kind, runs, count])}`;
    if (last.red) {
      // Each output element reduces contiguous runs of last.n, over every coordinate of the other reduced dims.
      const L = last.n;
      const outer = redLv.slice(0, -1).map(({ n, stride }) => ({ n, stride }));
      // Tuning: the rows are the outputs, each of `count` elements; the ragged case keeps the axes input.
      const tune = { ...pickRow(ctx, `${node.opType}:${key}`, outN, count, (d) => raggedByValue(d, (i) => i > 0)), plain: true };
      const { rpt, tasks } = rowTasks(outN, count, ctx.threads, tune);
      const kernel = rowKernel(`${key}:${rpt}:a${tune.acc}${tune.fault ? `:F${tune.fault}` : ''}`, 2, outN, rpt, (f, v, row, [xp, op]) => {
        // Input base of output element `row`: decompose over the kept dims.
        const base = f.local('i32'), rem = f.local('i32');
        // Fault epilogue (a reduction has none): the row is read from one element off.
        f.get(xp); if (tune.fault === 'epilogue') { f.i32(4); f.op(OP.i32_add); } f.set(base); f.get(row); f.set(rem);
        for (let k = kept.length - 1; k >= 0; k--) {
          f.get(base); f.get(rem); f.i32(kept[k].n); f.op(OP.i32_rem_u); f.i32(kept[k].stride); f.op(OP.i32_mul); f.op(OP.i32_add); f.set(base);
          f.get(rem); f.i32(kept[k].n); f.op(OP.i32_div_u); f.set(rem);
        }
        f.f32x4_const(IDENTITY[rk]);
        const total = v.save();
        nest(f, outer, base, (p) => {
          const r = vreduce(f, v, p, L, rk, undefined, tune);
          f.get(total); f.get(r); f.simd(RCODE[rk]); f.set(total);
        });
        const res = scale !== 1 ? v.div(total, count) : total;
        f.get(op); f.get(row); f.i32(4); f.op(OP.i32_mul); f.op(OP.i32_add); f.get(res); f.f32x4_extract_lane(0); f.f32_store(0, 2);
      });
      return { outputs, launches: (b) => [{ kernel, args: [b.inputs[0], b.outputs[0]], tasks }] };
    }
    // The last dim B is kept: each output row of B accumulates B-wide slices over the reduced coordinates.
    const B = last.n;
    const keptOuter = kept.slice(0, -1);
    const rows = outN / B;
    const CH = 16;
    const nCh = Math.ceil(B / CH);
    const { rpt, tasks } = rowTasks(rows * nCh, CH * count, ctx.threads);
    const redLevels = redLv.map(({ n, stride }) => ({ n, stride }));
    const kernel = rowKernel(`${key}:c${rpt}`, 2, rows * nCh, rpt, (f, v, item, [xp, op]) => {
      const row = f.local('i32'), ch = f.local('i32'), base = f.local('i32'), rem = f.local('i32'), o = f.local('i32');
      f.get(item); f.i32(nCh); f.op(OP.i32_div_u); f.set(row);
      f.get(item); f.i32(nCh); f.op(OP.i32_rem_u); f.set(ch);
      f.get(xp); f.get(ch); f.i32(CH * 4); f.op(OP.i32_mul); f.op(OP.i32_add); f.set(base);
      f.get(row); f.set(rem);
      for (let k = keptOuter.length - 1; k >= 0; k--) {
        f.get(base); f.get(rem); f.i32(keptOuter[k].n); f.op(OP.i32_rem_u); f.i32(keptOuter[k].stride); f.op(OP.i32_mul); f.op(OP.i32_add); f.set(base);
        f.get(rem); f.i32(keptOuter[k].n); f.op(OP.i32_div_u); f.set(rem);
      }
      f.get(op); f.get(row); f.i32(B * 4); f.op(OP.i32_mul); f.op(OP.i32_add); f.get(ch); f.i32(CH * 4); f.op(OP.i32_mul); f.op(OP.i32_add); f.set(o);
      const chunk = (width: number) => {
        const nv = Math.ceil(width / 4);
        const lanes = (j: number) => Math.min(4, width - 4 * j);
        const accs = Array.from({ length: nv }, () => { f.f32x4_const(IDENTITY[rk]); return v.save(); });
        nest(f, redLevels, base, (p) => {
          for (let j = 0; j < nv; j++) {
            const x = load(f, v, p, j * 16, lanes(j), IDENTITY[rk]);
            f.get(accs[j]); f.get(x); f.simd(RCODE[rk]); f.set(accs[j]);
          }
        });
        for (let j = 0; j < nv; j++) store(f, o, j * 16, scale !== 1 ? v.div(accs[j], count) : accs[j], lanes(j));
      };
      if (B % CH === 0) chunk(CH);
      else {
        f.get(ch); f.i32(nCh - 1); f.op(OP.i32_eq);
        f.if_(() => chunk(B % CH), () => { if (nCh > 1) chunk(CH); });
      }
    });
    return { outputs, launches: (b) => [{ kernel, args: [b.inputs[0], b.outputs[0]], tasks }] };
  };
}

registerWasmOp('ReduceSum', planReduce('sum', 13));
registerWasmOp('ReduceMean', planReduce('mean', 18));
registerWasmOp('ReduceMax', planReduce('max', 18));
registerWasmOp('ReduceMin', planReduce('min', 18));

// --- Softmax / LogSoftmax -----------------------------------------------------------------------

function planSoftmax(log: boolean) {
  return (node: Node, inputs: (ValueDesc | undefined)[], ctx: PlanContext, opset: number): OpPlan | null => {
    const x = inputs[0];
    if (!x || x.dtype !== 'float32') return null;
    const rank = x.dims.length;
    let R = 1, L = 1;
    if (opset < 13) {
      const a = attrI(node, 'axis', 1);
      const axis = a < 0 ? a + rank : a;
      if (axis < 0 || axis > rank) return null;
      x.dims.forEach((d, i) => { if (i < axis) R *= d; else L *= d; });
    } else {
      const a = attrI(node, 'axis', -1);
      const axis = a < 0 ? a + rank : a;
      if (axis < 0 || axis >= Math.max(rank, 1)) return null;
      if (x.dims.slice(axis + 1).some((d) => d !== 1)) return null; // only the innermost axis
      x.dims.forEach((d, i) => { if (i < axis) R *= d; });
      L = rank === 0 ? 1 : x.dims[axis];
    }
    const outputs = [{ dtype: 'float32' as const, dims: [...x.dims] }];
    if (R * L === 0) return { outputs, launches: () => [] };
    const sig = `softmax:${log ? 'log' : ''}:${R}x${L}`;
    const tune = pickRow(ctx, sig, R, L, (d) => raggedByValue(d));
    const fault = tune.fault;
    const { rpt, tasks } = rowTasks(R, L, ctx.threads, tune);
    // Faults: edge and f16acc in vreduce; barrier: the last pass does not wait for the one before it (the log-sum, or
    // the sum, is still its initial value); epilogue: the last pass reads its input one element off.
    const kernel = rowKernel(`${sig}:${rpt}:a${tune.acc}${fault ? `:F${fault}` : ''}`, 2, R, rpt, (f, v, row, [xp, op]) => {
      const xr = rowPtr(f, xp, row, L * 4), orow = rowPtr(f, op, row, L * 4);
      const mx = vreduce(f, v, xr, L, 'max', undefined, tune);
      const shift = mx; // as the reference: an infinite max gives NaN (inf - inf)
      const off = (q: Local) => { if (fault !== 'epilogue') return q; const r = f.local('i32'); f.get(q); f.i32(4); f.op(OP.i32_add); f.set(r); return r; };
      if (log) {
        const s = vreduce(f, v, xr, L, 'sum', (q) => vexp(v, v.sub(q, shift)), tune);
        const ls = fault === 'barrier' ? v.sub(s, s) : vlog(v, s);
        vmap(f, v, L, [off(xr)], orow, ([q]) => v.sub(v.sub(q, mx), ls));
      } else {
        // One exp per element: the numerators go to the output, then their sum scales them in place.
        vmap(f, v, L, [xr], orow, ([q]) => vexp(v, v.sub(q, shift)));
        const s = vreduce(f, v, orow, L, 'sum', undefined, tune);
        const inv = fault === 'barrier' ? v.div(s, s) : v.div(1, s);
        vmap(f, v, L, [off(orow)], orow, ([q]) => v.mul(q, inv));
      }
    });
    return { outputs, launches: (b) => [{ kernel, args: [b.inputs[0], b.outputs[0]], tasks }] };
  };
}

registerWasmOp('Softmax', planSoftmax(false));
registerWasmOp('LogSoftmax', planSoftmax(true));

// --- LayerNormalization / RMSNormalization / InstanceNormalization ----------------------------------


/**
 * Normalizes R rows of L: y = (x - mean) * inv * scale + bias, inv = 1/sqrt(var + eps) (mean = 0 for RMS).
 * Scale/bias are per element of the row ('row'), one value ('scalar'), or per row modulo C ('chan').
 */
function normKernel(R: number, L: number, eps: number, rms: boolean, sm: ParamMode, bm: ParamMode, C: number, stats: boolean, ctx: PlanContext,
  ragged: TuneSite['ragged']) {
  const sig = `norm:${keyOf([R, L, eps, rms, sm, bm, C, stats])}`;
  const tune = pickRow(ctx, sig, R, L, ragged);
  const fault = tune.fault;
  const { rpt, tasks } = rowTasks(R, L, ctx.threads, tune);
  const key = `norm:${keyOf([R, L, eps, rms, sm, bm, C, stats, rpt, tune.acc, fault ?? ''])}`;
  // Faults: edge and f16acc in vreduce; barrier: the normalisation does not wait for the statistics pass (the mean is
  // still 0, or for RMS the inverse deviation is still 1); epilogue: scale and bias read one element (channel) off.
  const kernel = rowKernel(key, 6, R, rpt, (f, v, row, [xp, sp0, bp0, yp, mp, ip]) => {
    const xr = rowPtr(f, xp, row, L * 4), yr = rowPtr(f, yp, row, L * 4);
    const shifted = (q: Local) => { if (fault !== 'epilogue') return q; const r = f.local('i32'); f.get(q); f.i32(4); f.op(OP.i32_add); f.set(r); return r; };
    const sp = shifted(sp0), bp = shifted(bp0);
    let mean: Local | number = 0;
    if (!rms && fault !== 'barrier') mean = v.div(vreduce(f, v, xr, L, 'sum', undefined, tune), L);
    const m = mean;
    const ss = vreduce(f, v, xr, L, 'sum', (q) => { const d = m === 0 ? q : v.sub(q, m); return v.mul(d, d); }, tune);
    const inv = rms && fault === 'barrier' ? v.div(ss, ss) : v.div(1, v.sqrt(v.add(v.div(ss, L), eps)));
    const param = (mode: ParamMode, p: Local): Local | null => {
      if (mode === 'scalar') { f.get(p); memarg(f, V.load32_splat, 2, 0); return v.save(); }
      if (mode === 'chan') { f.get(p); f.get(row); f.i32(C); f.op(OP.i32_rem_u); f.i32(4); f.op(OP.i32_mul); f.op(OP.i32_add); memarg(f, V.load32_splat, 2, 0); return v.save(); }
      return null;
    };
    const sv = param(sm, sp), bv = param(bm, bp);
    const ins = [xr];
    if (sm === 'row') ins.push(sp);
    if (bm === 'row') ins.push(bp);
    vmap(f, v, L, ins, yr, (q) => {
      let y = v.mul(m === 0 ? q[0] : v.sub(q[0], m), inv);
      let k = 1;
      if (sm !== 'none') y = v.mul(y, sm === 'row' ? q[k++] : sv!);
      if (bm !== 'none') y = v.add(y, bm === 'row' ? q[k++] : bv!);
      return y;
    });
    if (stats) {
      for (const [p, val] of [[mp, m === 0 ? v.sub(inv, inv) : m], [ip, inv]] as const) {
        f.get(p); f.get(row); f.i32(4); f.op(OP.i32_mul); f.op(OP.i32_add); f.get(val as Local); f.f32x4_extract_lane(0); f.f32_store(0, 2);
      }
    }
  });
  return { kernel, tasks };
}

function planRowNorm(rms: boolean) {
  return (node: Node, inputs: (ValueDesc | undefined)[], ctx: PlanContext): OpPlan | null => {
    const x = inputs[0], scale = inputs[1], bias = rms ? undefined : inputs[2];
    if (!x || !scale || x.dtype !== 'float32') return null;
    const rank = x.dims.length;
    const a = attrI(node, 'axis', -1);
    const axis = a < 0 ? a + rank : a;
    if (axis < 0 || axis >= Math.max(rank, 1)) return null;
    const eps = attrF(node, 'epsilon', 1e-5);
    let R = 1, L = 1;
    x.dims.forEach((d, i) => { if (i < axis) R *= d; else L *= d; });
    const sm = rowParam(scale, x.dims, L), bm = rowParam(bias, x.dims, L);
    if (!sm || !bm || sm === 'none') return null;
    const stats = !rms && wantedOutputs(node) > 1;
    if (stats && attrI(node, 'stash_type', 1) !== 1) return null;
    const statDims = x.dims.map((d, i) => (i < axis ? d : 1));
    const outputs = [{ dtype: 'float32' as const, dims: [...x.dims] }];
    if (stats) outputs.push({ dtype: 'float32', dims: statDims }, { dtype: 'float32', dims: statDims });
    if (R * L === 0) return { outputs, launches: () => [] };
    const { kernel, tasks } = normKernel(R, L, eps, rms, sm, bm, 1, stats, ctx, (d) => raggedByValue(d));
    return {
      outputs,
      launches: (b) => [{ kernel, args: [b.inputs[0], b.inputs[1], bias ? b.inputs[2] : 0, b.outputs[0], b.outputs[1] ?? 0, b.outputs[2] ?? 0], tasks }],
    };
  };
}

registerWasmOp('LayerNormalization', planRowNorm(false));
registerWasmOp('RMSNormalization', planRowNorm(true));

registerWasmOp('InstanceNormalization', (node, inputs, ctx) => {
  const [x, scale, bias] = inputs;
  if (!x || !scale || !bias || x.dtype !== 'float32' || scale.dtype !== 'float32' || bias.dtype !== 'float32') return null;
  if (x.dims.length < 2) return null;
  const [N, C] = x.dims;
  if (sizeOf(scale.dims) !== C || sizeOf(bias.dims) !== C) return null;
  const L = sizeOf(x.dims.slice(2));
  const outputs = [{ dtype: 'float32' as const, dims: [...x.dims] }];
  if (N * C * L === 0) return { outputs, launches: () => [] };
  const { kernel, tasks } = normKernel(N * C, L, attrF(node, 'epsilon', 1e-5), false, 'chan', 'chan', C, false, ctx, (d) => raggedByValue(d));
  return { outputs, launches: (b) => [{ kernel, args: [b.inputs[0], b.inputs[1], b.inputs[2], b.outputs[0], 0, 0], tasks }] };
});

// --- BatchNormalization (inference) -------------------------------------------------------------

registerWasmOp('BatchNormalization', (node, inputs, ctx, opset) => {
  const [x, scale, bias, mean, variance] = inputs;
  if (!x || !scale || !bias || !mean || !variance || x.dtype !== 'float32') return null;
  if ([scale, bias, mean, variance].some((t) => t.dtype !== 'float32')) return null;
  if (opset >= 14 ? attrI(node, 'training_mode', 0) !== 0 : opset < 7 ? attrI(node, 'is_test', 0) === 0 && wantedOutputs(node) > 1 : false) return null;
  if (opset < 9 && attrI(node, 'spatial', 1) === 0) return null;
  if (wantedOutputs(node) > 1) return null;
  const C = x.dims.length > 1 ? x.dims[1] : 1;
  if ([scale, bias, mean, variance].some((t) => sizeOf(t.dims) !== C)) return null;
  // Parameters read as [C, 1, ...] against x: y = (x - mean) * (scale / sqrt(var + eps)) + bias.
  const pd = x.dims.length > 1 ? [C, ...x.dims.slice(2).map(() => 1)] : [C];
  const P = new EwProgram();
  const xv = P.external(0, x);
  const [s, bb, m, va] = [1, 2, 3, 4].map((i) => P.external(i, inputs[i]!, pd));
  if (!xv || !s || !bb || !m || !va) return null;
  const eps = P.emit('const', [], 'float32', [attrF(node, 'epsilon', 1e-5)]);
  const a = P.emit('div', [s.id, P.emit('sqrt', [P.emit('add', [va.id, eps], 'float32')], 'float32')], 'float32');
  const y = P.emit('add', [P.emit('mul', [P.emit('sub', [xv.id, m.id], 'float32'), a], 'float32'), bb.id], 'float32');
  return planProgram(P, [{ id: y, dims: [...x.dims] }], ctx);
});
