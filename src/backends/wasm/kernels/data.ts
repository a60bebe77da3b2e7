// Data-movement kernel generators for any dtype by byte width: strided copy, fill, gather, table gather, constants.
import { type FunctionBuilder, type Local, ModuleBuilder, OP } from '../../../codegen/wasm/builder.js';
import type { KernelSource } from '../kernel.js';

export type Width = 1 | 2 | 4 | 8;

const add = (f: FunctionBuilder) => f.op(OP.i32_add);
const mul = (f: FunctionBuilder) => f.op(OP.i32_mul);
const UNREACHABLE = 0x00;
const I64_LT_S = 0x53, I64_LT_U = 0x54, I64_ADD = 0x7c, I32_WRAP_I64 = 0xa7, I64_EXTEND_I32_S = 0xac;

function minConst(f: FunctionBuilder, push: () => void, c: number, tmp: Local): void {
  push(); f.tee(tmp); f.i32(c); f.get(tmp); f.i32(c); f.op(OP.i32_lt_s); f.select();
}

/** One element of width w: push address, then load (value on stack). */
function loadW(f: FunctionBuilder, w: Width, off = 0): void {
  if (w === 1) f.i32_load8_u(off);
  else if (w === 2) f.i32_load16_u(off);
  else if (w === 4) f.i32_load(off);
  else f.i64_load(off);
}
function storeW(f: FunctionBuilder, w: Width, off = 0): void {
  if (w === 1) f.i32_store8(off);
  else if (w === 2) f.i32_store16(off);
  else if (w === 4) f.i32_store(off);
  else f.i64_store(off);
}

/** Copies n bytes (a constant) from src to dst; advances neither local. */
function copyBytes(f: FunctionBuilder, dst: Local, src: Local, n: number, d: Local, s: Local, e: Local): void {
  const nv = Math.floor(n / 16);
  let off = 0;
  if (nv > 4) {
    // 4 vectors per iteration (large copies of weights are bandwidth-bound; fewer branches help), then the rest.
    const nv4 = Math.floor(nv / 4) * 4;
    f.get(dst); f.set(d); f.get(src); f.set(s);
    f.get(dst); f.i32(nv4 * 16); add(f); f.set(e);
    f.loop(() => {
      for (let u = 0; u < 4; u++) { f.get(d); f.get(s); f.v128_load(u * 16, 0); f.v128_store(u * 16, 0); }
      f.get(s); f.i32(64); add(f); f.set(s);
      f.get(d); f.i32(64); add(f); f.tee(d); f.get(e); f.op(OP.i32_ne); f.br_if(0);
    });
    for (let u = nv4; u < nv; u++) { f.get(dst); f.get(src); f.v128_load(u * 16, 0); f.v128_store(u * 16, 0); }
    off = nv * 16;
  } else {
    for (let i = 0; i < nv; i++) { f.get(dst); f.get(src); f.v128_load(off, 0); f.v128_store(off, 0); off += 16; }
  }
  for (const w of [8, 4, 2, 1] as Width[]) {
    while (n - off >= w) { f.get(dst); f.get(src); loadW(f, w, off); storeW(f, w, off); off += w; }
  }
}

/** Pushes Σ_a ((row / inner_a) % dims_a) * scale_a over the outer dims (row a local). */
function rowOffset(f: FunctionBuilder, row: Local, dims: number[], strides: number[], w: number): void {
  f.i32(0);
  let inner = 1;
  for (let a = dims.length - 1; a >= 0; a--) {
    if (strides[a] !== 0 && dims[a] > 1) {
      f.get(row); if (inner > 1) { f.i32(inner); f.op(OP.i32_div_u); }
      if (a > 0) { f.i32(dims[a]); f.op(OP.i32_rem_u); }
      f.i32(strides[a] * w); mul(f); add(f);
    }
    inner *= dims[a];
  }
}

// --- strided copy --------------------------------------------------------------------------------

export interface CopyParams {
  w: Width;
  /** Iteration space (row-major), rank >= 1. */
  dims: number[];
  /** Element strides of source and destination per dim (may be 0 or negative). */
  src: number[];
  dst: number[];
  /** Rows (all dims but the last) per task. */
  rpt: number;
}

/** Merges adjacent dims that are contiguous in both source and destination, and drops dims of size 1. */
export function simplifyCopy(dims: number[], src: number[], dst: number[]): { dims: number[]; src: number[]; dst: number[] } {
  const D: number[] = [], S: number[] = [], T: number[] = [];
  for (let a = 0; a < dims.length; a++) {
    if (dims[a] === 1) continue;
    const k = D.length - 1;
    if (k >= 0 && S[k] === src[a] * dims[a] && T[k] === dst[a] * dims[a]) {
      D[k] *= dims[a]; S[k] = src[a]; T[k] = dst[a];
    } else { D.push(dims[a]); S.push(src[a]); T.push(dst[a]); }
  }
  if (D.length === 0) return { dims: [1], src: [1], dst: [1] };
  return { dims: D, src: S, dst: T };
}

export function copyTasks(p: CopyParams): number {
  return Math.ceil(p.dims.slice(0, -1).reduce((a, b) => a * b, 1) / p.rpt);
}

/** `run(S, D, t0, t1)`: D[Σ i_a dst_a] = S[Σ i_a src_a] over the iteration space. */
export function genCopy(p: CopyParams): KernelSource {
  return { key: `copy:w${p.w}:${p.dims}:${p.src}:${p.dst}:${p.rpt}`, bytes: () => buildCopy(p) };
}

function buildCopy(p: CopyParams): Uint8Array {
  const { w, dims, src, dst, rpt } = p;
  const r = dims.length;
  const n = dims[r - 1], ss = src[r - 1], ds = dst[r - 1];
  const rows = dims.slice(0, -1).reduce((a, b) => a * b, 1);
  const mod = new ModuleBuilder();
  const f = mod.func('run', ['i32', 'i32', 'i32', 'i32']);
  const [S, D, t0, t1] = [0, 1, 2, 3].map((i) => f.param(i));
  const row = f.local('i32'), rEnd = f.local('i32'), tmp = f.local('i32'), sp = f.local('i32'), dp = f.local('i32');
  const d = f.local('i32'), s = f.local('i32'), e = f.local('i32'), v = f.local(w === 8 ? 'i64' : 'i32');
  f.get(t0); f.i32(rpt); mul(f); f.set(row);
  minConst(f, () => { f.get(t1); f.i32(rpt); mul(f); }, rows, tmp); f.set(rEnd);
  f.block(() => {
    f.get(row); f.get(rEnd); f.op(OP.i32_ge_s); f.br_if(0);
    f.loop(() => {
      f.get(S); rowOffset(f, row, dims.slice(0, -1), src.slice(0, -1), w); add(f); f.set(sp);
      f.get(D); rowOffset(f, row, dims.slice(0, -1), dst.slice(0, -1), w); add(f); f.set(dp);
      if (ss === 1 && ds === 1) copyBytes(f, dp, sp, n * w, d, s, e);
      else if (ss === 0) {
        f.get(sp); loadW(f, w); f.set(v);
        f.get(dp); f.set(d); f.get(dp); f.i32(n * ds * w); add(f); f.set(e);
        f.loop(() => {
          f.get(d); f.get(v); storeW(f, w);
          f.get(d); f.i32(ds * w); add(f); f.tee(d); f.get(e); f.op(OP.i32_ne); f.br_if(0);
        });
      } else {
        f.get(sp); f.set(s); f.get(dp); f.set(d); f.get(dp); f.i32(n * ds * w); add(f); f.set(e);
        // unrolled by 4 where possible
        const n4 = Math.floor(n / 4);
        if (n4 > 0) {
          const e4 = f.local('i32');
          f.get(dp); f.i32(n4 * 4 * ds * w); add(f); f.set(e4);
          f.loop(() => {
            for (let k = 0; k < 4; k++) { f.get(d); f.get(s); loadW(f, w, 0); storeW(f, w, 0); f.get(s); f.i32(ss * w); add(f); f.set(s); f.get(d); f.i32(ds * w); add(f); f.set(d); }
            f.get(d); f.get(e4); f.op(OP.i32_ne); f.br_if(0);
          });
        }
        for (let k = 0; k < n - n4 * 4; k++) { f.get(d); f.get(s); loadW(f, w, 0); storeW(f, w, 0); f.get(s); f.i32(ss * w); add(f); f.set(s); f.get(d); f.i32(ds * w); add(f); f.set(d); }
      }
      f.get(row); f.i32(1); add(f); f.tee(row); f.get(rEnd); f.op(OP.i32_lt_s); f.br_if(0);
    });
  });
  return mod.build();
}

// --- fill ----------------------------------------------------------------------------------------

/** `run(D, t0, t1)`: n elements of the w-byte pattern `value` (little-endian bytes), `ept` elements per task. */
export function genFill(w: Width, value: Uint8Array, n: number, ept: number): KernelSource {
  const hex = Array.from(value.subarray(0, w), (b) => b.toString(16).padStart(2, '0')).join('');
  return { key: `fill:w${w}:${hex}:${n}:${ept}`, bytes: () => buildFill(w, value.subarray(0, w), n, ept) };
}

export function fillTasks(n: number, ept: number): number { return Math.ceil(n / ept); }

function buildFill(w: Width, value: Uint8Array, n: number, ept: number): Uint8Array {
  const mod = new ModuleBuilder();
  const f = mod.func('run', ['i32', 'i32', 'i32']);
  const [D, t0, t1] = [0, 1, 2].map((i) => f.param(i));
  const pat = new Uint8Array(16);
  for (let i = 0; i < 16; i++) pat[i] = value[i % w];
  const dv = new DataView(pat.buffer);
  const d = f.local('i32'), e = f.local('i32'), ev = f.local('i32'), tmp = f.local('i32');
  // d = D + t0*ept*w; e = D + min(t1*ept, n)*w
  f.get(D); f.get(t0); f.i32(ept * w); mul(f); add(f); f.set(d);
  f.get(D); minConst(f, () => { f.get(t1); f.i32(ept); mul(f); }, n, tmp); f.i32(w); mul(f); add(f); f.set(e);
  // vector part: while d + 16 <= e
  f.get(e); f.i32(16); f.op(OP.i32_sub); f.set(ev);
  f.block(() => f.loop(() => {
    f.get(d); f.get(ev); f.op(OP.i32_gt_s); f.br_if(1);
    f.get(d); f.v128_const(pat); f.v128_store(0, 0);
    f.get(d); f.i32(16); add(f); f.set(d); f.br(0);
  }));
  f.block(() => f.loop(() => {
    f.get(d); f.get(e); f.op(OP.i32_ge_u); f.br_if(1);
    f.get(d);
    if (w === 8) f.i64(dv.getBigInt64(0, true));
    else if (w === 4) f.i32(dv.getInt32(0, true));
    else if (w === 2) f.i32(dv.getUint16(0, true));
    else f.i32(pat[0]);
    storeW(f, w);
    f.get(d); f.i32(w); add(f); f.set(d); f.br(0);
  }));
  return mod.build();
}

// --- constants -------------------------------------------------------------------------------------

/** `run(S, Dl, Y, t0, t1)`: Y[i] = S + i*Dl for i < n, integers of w bytes (start and delta read from memory). */
export function genRange(w: 4 | 8, n: number): KernelSource {
  return {
    key: `range:${w}:${n}`,
    bytes: () => {
      const mod = new ModuleBuilder();
      const f = mod.func('run', ['i32', 'i32', 'i32', 'i32', 'i32']);
      const [S, Dl, Y] = [0, 1, 2].map((i) => f.param(i));
      const t = w === 8 ? 'i64' : 'i32';
      const v = f.local(t), d = f.local(t), y = f.local('i32'), end = f.local('i32');
      const load = () => (w === 8 ? f.i64_load(0) : f.i32_load(0));
      f.get(S); load(); f.set(v);
      f.get(Dl); load(); f.set(d);
      f.get(Y); f.i32(n * w); add(f); f.set(end);
      f.for_(y, () => f.get(Y), () => f.get(end), w, () => {
        f.get(y); f.get(v); if (w === 8) f.i64_store(0); else f.i32_store(0);
        f.get(v); f.get(d); f.op(w === 8 ? OP.i64_add : OP.i32_add); f.set(v);
      });
      return mod.build();
    },
  };
}

/** `run(D, t0, t1)`: writes `bytes` at D (a few values, e.g. Shape's dims). */
export function genStoreBytes(bytes: Uint8Array): KernelSource {
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  return {
    key: `store:${hex}`,
    bytes: () => {
      const mod = new ModuleBuilder();
      const f = mod.func('run', ['i32', 'i32', 'i32']);
      const D = f.param(0);
      const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      let off = 0;
      for (; off + 8 <= bytes.length; off += 8) { f.get(D); f.i64(dv.getBigInt64(off, true)); f.i64_store(off); }
      for (; off < bytes.length; off++) { f.get(D); f.i32(bytes[off]); f.i32_store8(off); }
      return mod.build();
    },
  };
}

// --- gather ----------------------------------------------------------------------------------------

export interface GatherParams {
  w: Width;
  outer: number;
  /** Length of the gathered axis of the data. */
  axisLen: number;
  nIdx: number;
  /** Elements per gathered slice. */
  inner: number;
  idx64: boolean;
  /** Units (outer x index pairs) per task. */
  upt: number;
}

export function gatherTasks(p: GatherParams): number { return Math.ceil((p.outer * p.nIdx) / p.upt); }

/**
 * `run(Data, Idx, Out, t0, t1)`: Out[o, j, :] = Data[o, idx[j], :]; a negative index counts from the end, and one
 * out of range traps (the runtime reports an ExecutionError) before anything is read or written for it.
 */
export function genGather(p: GatherParams): KernelSource {
  return { key: `gather:w${p.w}:${p.outer},${p.axisLen},${p.nIdx},${p.inner}:${p.idx64 ? 64 : 32}:${p.upt}`, bytes: () => buildGather(p) };
}

function buildGather(p: GatherParams): Uint8Array {
  const { w, outer, axisLen: L, nIdx, inner, idx64, upt } = p;
  const B = inner * w;
  const mod = new ModuleBuilder();
  const f = mod.func('run', ['i32', 'i32', 'i32', 'i32', 'i32']);
  const [Dt, I, O, t0, t1] = [0, 1, 2, 3, 4].map((i) => f.param(i));
  const u = f.local('i32'), uEnd = f.local('i32'), tmp = f.local('i32'), j = f.local('i32'), ix = f.local('i32');
  const src = f.local('i32'), dst = f.local('i32'), d = f.local('i32'), s = f.local('i32'), e = f.local('i32');
  const v64 = f.local('i64');
  f.get(t0); f.i32(upt); mul(f); f.set(u);
  minConst(f, () => { f.get(t1); f.i32(upt); mul(f); }, outer * nIdx, tmp); f.set(uEnd);
  f.block(() => {
    f.get(u); f.get(uEnd); f.op(OP.i32_ge_s); f.br_if(0);
    f.loop(() => {
      f.get(u); f.i32(nIdx); f.op(OP.i32_rem_u); f.set(j);
      if (idx64) {
        f.get(I); f.get(j); f.i32(8); mul(f); add(f); f.i64_load(); f.set(v64);
        // v += L when negative; trap unless 0 <= v < L (unsigned compare)
        f.get(v64); f.i64(BigInt(L)); f.op(I64_ADD); f.get(v64); f.get(v64); f.i64(0n); f.op(I64_LT_S); f.select(); f.set(v64);
        f.get(v64); f.i64(BigInt(L)); f.op(I64_LT_U); f.op(OP.i32_eqz); f.if_(() => f.op(UNREACHABLE));
        f.get(v64); f.op(I32_WRAP_I64); f.set(ix);
      } else {
        f.get(I); f.get(j); f.i32(4); mul(f); add(f); f.i32_load(); f.set(ix);
        f.get(ix); f.i32(L); add(f); f.get(ix); f.get(ix); f.i32(0); f.op(OP.i32_lt_s); f.select(); f.set(ix);
        f.get(ix); f.i32(L); f.op(OP.i32_lt_u); f.op(OP.i32_eqz); f.if_(() => f.op(UNREACHABLE));
      }
      // src = Dt + ((u / nIdx) * L + ix) * B; dst = O + u * B
      f.get(Dt); f.get(u); f.i32(nIdx); f.op(OP.i32_div_u); f.i32(L); mul(f); f.get(ix); add(f); f.i32(B); mul(f); add(f); f.set(src);
      f.get(O); f.get(u); f.i32(B); mul(f); add(f); f.set(dst);
      copyBytes(f, dst, src, B, d, s, e);
      f.get(u); f.i32(1); add(f); f.tee(u); f.get(uEnd); f.op(OP.i32_lt_s); f.br_if(0);
    });
  });
  void I64_EXTEND_I32_S;
  return mod.build();
}

// --- table gather (nearest resize) -----------------------------------------------------------------

export interface TableGatherParams {
  w: Width;
  /** Output dims (rank >= 1). */
  dims: number[];
  /** Rows (all dims but the last) per task. */
  rpt: number;
}

/** Int32 tables laid out for genTableGather: per axis, the source element offset of each output index. */
export function packTables(tables: Int32Array[]): Uint8Array {
  const n = tables.reduce((a, t) => a + t.length, 0);
  const all = new Int32Array(n);
  let o = 0;
  for (const t of tables) { all.set(t, o); o += t.length; }
  return new Uint8Array(all.buffer);
}

export function tableGatherTasks(p: TableGatherParams): number {
  return Math.ceil(p.dims.slice(0, -1).reduce((a, b) => a * b, 1) / p.rpt);
}

/** `run(X, Y, T, t0, t1)`: Y[i] = X[Σ_a T_a[i_a]] with T the packed per-axis offset tables. */
export function genTableGather(p: TableGatherParams): KernelSource {
  return { key: `tgather:w${p.w}:${p.dims}:${p.rpt}`, bytes: () => buildTableGather(p) };
}

function buildTableGather(p: TableGatherParams): Uint8Array {
  const { w, dims, rpt } = p;
  const r = dims.length;
  const n = dims[r - 1];
  const rows = dims.slice(0, -1).reduce((a, b) => a * b, 1);
  const tabOff: number[] = [];
  let acc = 0;
  for (const d of dims) { tabOff.push(acc); acc += d; }
  const mod = new ModuleBuilder();
  const f = mod.func('run', ['i32', 'i32', 'i32', 'i32', 'i32']);
  const [X, Y, T, t0, t1] = [0, 1, 2, 3, 4].map((i) => f.param(i));
  const row = f.local('i32'), rEnd = f.local('i32'), tmp = f.local('i32'), xr = f.local('i32'), y = f.local('i32');
  const tp = f.local('i32'), te = f.local('i32');
  f.get(t0); f.i32(rpt); mul(f); f.set(row);
  minConst(f, () => { f.get(t1); f.i32(rpt); mul(f); }, rows, tmp); f.set(rEnd);
  f.get(Y); f.get(row); f.i32(n * w); mul(f); add(f); f.set(y);
  f.block(() => {
    f.get(row); f.get(rEnd); f.op(OP.i32_ge_s); f.br_if(0);
    f.loop(() => {
      // xr = X + w * Σ_a T[tabOff_a + i_a]
      f.i32(0);
      let inner = 1;
      for (let a = r - 2; a >= 0; a--) {
        f.get(T);
        f.get(row); if (inner > 1) { f.i32(inner); f.op(OP.i32_div_u); }
        if (a > 0) { f.i32(dims[a]); f.op(OP.i32_rem_u); }
        f.i32(4); mul(f); add(f); f.i32_load(tabOff[a] * 4); add(f);
        inner *= dims[a];
      }
      f.i32(w); mul(f); f.get(X); add(f); f.set(xr);
      f.get(T); f.i32(tabOff[r - 1] * 4); add(f); f.tee(tp); f.i32(n * 4); add(f); f.set(te);
      f.loop(() => {
        f.get(y); f.get(xr); f.get(tp); f.i32_load(); f.i32(w); mul(f); add(f); loadW(f, w); storeW(f, w);
        f.get(y); f.i32(w); add(f); f.set(y);
        f.get(tp); f.i32(4); add(f); f.tee(tp); f.get(te); f.op(OP.i32_ne); f.br_if(0);
      });
      f.get(row); f.i32(1); add(f); f.tee(row); f.get(rEnd); f.op(OP.i32_lt_s); f.br_if(0);
    });
  });
  return mod.build();
}
