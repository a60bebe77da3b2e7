// f32 GEMM code generator: packed-B panels, an mr x nr SIMD register tile, and a fused epilogue, specialised on shapes.
import { FunctionBuilder, type Local, ModuleBuilder, OP, SIMD, call } from '../../../codegen/wasm/builder.js';
import type { KernelSource } from '../kernel.js';
import type { Fault } from '../../../tune/site.js';
import { emitF16Round } from '../tune.js';
import { packBWasm } from './pack_host.js';

/** Elementwise activation applied in the epilogue. `gelu` is the exact (erf) form, `gelu_tanh` the tanh approximation. */
export type GemmActivation = 'none' | 'relu' | 'gelu' | 'gelu_tanh' | 'sigmoid' | 'tanh' | 'silu';

/**
 * Fused epilogue: out = post(act(scale*acc + biasScale*bias[n] + residualScale*R[m,n])), where `post` adds the
 * residual instead when `residualAfterAct` is set.
 */
export interface GemmEpilogue {
  scale?: number;
  /** A bias along N at the `bias` pointer; biasStride 0 broadcasts one scalar. */
  bias?: boolean;
  biasStride?: 0 | 1;
  biasScale?: number;
  act?: GemmActivation;
  /** A residual R[m, n] at the `res` pointer, element (m, n) at m*residualStrideM + n*residualStrideN. */
  residual?: boolean;
  residualStrideM?: number;
  residualStrideN?: 0 | 1;
  residualScale?: number;
  residualAfterAct?: boolean;
  /**
   * Extra elementwise code applied after `act` (before a residualAfterAct add), e.g. a conv's clip or hardswish:
   * `emit` replaces the v128 in local v; `key` must capture everything it emits.
   */
  postAct?: { key: string; emit: (f: FunctionBuilder, v: Local, t: ActTemps) => void };
}

/** The register/cache tile of one kernel. */
export interface GemmTile {
  mr: number;
  /** Panel width (a multiple of 4); B must be packed with the same nr. */
  nr: number;
  /** Rows per task block (a multiple of mr). */
  mb: number;
  /** K block (accumulators are stored to C between K blocks). */
  kb: number;
  /** Unroll of the K loop. */
  unroll: number;
  /** Panels of nr columns per task. */
  panelsPerTask: number;
  /**
   * Separate the unrolled K steps by a never-taken branch: V8 schedules a basic block's loads first, so without it an
   * unrolled body keeps every step's A and B values live at once and spills accumulators.
   */
  barrier?: boolean;
}

/** Batch dimensions of the output with each operand's element stride per dim (0 where it broadcasts). */
export interface GemmBatch {
  dims: number[];
  /** Strides of A in elements. */
  a: number[];
  /** Strides of packed B in elements (use packedBSize per B matrix). */
  b: number[];
  /** Strides of the residual in elements (when the epilogue has one). */
  r?: number[];
}

export interface GemmParams {
  M: number;
  N: number;
  K: number;
  /** A element (m, k) at A + m*sAm + k*sAk (elements). */
  sAm: number;
  sAk: number;
  /** Row stride of C (default N); C batches are contiguous: M*ldc apart. */
  ldc?: number;
  batch?: GemmBatch;
  tile: GemmTile;
  relaxed?: boolean;
  epilogue?: GemmEpilogue;
  /**
   * B is made by the kernel instead of read packed (an im2col): `emit` adds unfold(src, PK, j0, j1) to the module,
   * writing panels j0 ≤ j < j1 at PK + j*K*nr*4. The kernel is then run(A, src, C, bias, res, scratch, t0, t1): task t
   * takes groupsPerTask groups of tile.panelsPerTask panels in turn, unfolds each group into its own slot of scratch
   * (gemmUnfoldSlotBytes; gemmTasks slots in all) and computes its rows on it while it is in cache. With rowSplits
   * > 1 (few groups, many rows), tasks also split the row blocks: each unfolds its groups and computes a share of the
   * rows. No batch.
   */
  unfoldB?: { key: string; emit: (mod: ModuleBuilder) => number; groupsPerTask: number; rowSplits?: number };
  /** A deliberate bug for the tuner's rejection test (see FAULTS in buildGemm); never set by a search space. */
  fault?: Fault;
}

/** Scratch bytes per task of a GEMM with unfoldB: one group of panels. */
export function gemmUnfoldSlotBytes(p: GemmParams): number {
  return Math.ceil((p.tile.panelsPerTask * p.K * p.tile.nr * 4) / 64) * 64;
}

/** Floats of one packed B matrix: ceil(N/nr) panels of K rows of nr floats. */
export function packedBSize(K: number, N: number, nr: number): number {
  return Math.ceil(N / nr) * nr * K;
}

/** Packs B (element (k, n) at src[off + k*sBk + n*sBn]) into panels, zero-padded at the ragged edge. */
export function packBHost(src: ArrayLike<number>, off: number, K: number, N: number, sBk: number, sBn: number, nr: number,
  dst: Float32Array = new Float32Array(packedBSize(K, N, nr)), dOff = 0): Float32Array {
  // Large row-major weights pack in WebAssembly (the loop below runs at ~10 ns per float).
  if (src instanceof Float32Array && sBn === 1 && K * N >= 1 << 15 && packBWasm(src, off, K, N, sBk, nr, dst, dOff)) return dst;
  const nP = Math.ceil(N / nr);
  for (let p = 0; p < nP; p++) {
    const n0 = p * nr, w = Math.min(nr, N - n0);
    let d = dOff + p * K * nr;
    for (let k = 0; k < K; k++, d += nr) {
      const s = off + k * sBk + n0 * sBn;
      for (let j = 0; j < w; j++) dst[d + j] = src[s + j * sBn];
      for (let j = w; j < nr; j++) dst[d + j] = 0;
    }
  }
  return dst;
}

export interface PackBParams {
  K: number;
  N: number;
  /** B element (k, n) at B + k*sBk + n*sBn (elements). */
  sBk: number;
  sBn: number;
  nr: number;
  /** Number of B matrices, `stride` elements apart in the source; packed ones are packedBSize apart. */
  count?: number;
  stride?: number;
  /** Panels per task. */
  panelsPerTask?: number;
}

/** Tasks of a packB launch. */
export function packBTasks(p: PackBParams): number {
  const nP = Math.ceil(p.N / p.nr);
  return (p.count ?? 1) * Math.ceil(nP / (p.panelsPerTask ?? 8));
}

/** A kernel `run(B, P, t0, t1)` packing B into panels at P (for non-constant B). */
export function genPackB(p: PackBParams): KernelSource {
  const { K, N, sBk, sBn, nr } = p;
  const count = p.count ?? 1, stride = p.stride ?? 0, ppt = p.panelsPerTask ?? 8;
  const key = `packB:${K}x${N}:s${sBk},${sBn}:nr${nr}:c${count},${stride}:ppt${ppt}`;
  return {
    key,
    bytes: () => {
      const mod = new ModuleBuilder();
      const f = mod.func('run', ['i32', 'i32', 'i32', 'i32']);
      const [B, P, t0, t1] = [0, 1, 2, 3].map((i) => f.param(i));
      const nP = Math.ceil(N / nr), fullP = Math.floor(N / nr), tail = N % nr;
      const nG = Math.ceil(nP / ppt);
      const t = f.local('i32'), bi = f.local('i32'), g = f.local('i32'), pn = f.local('i32'), pEnd = f.local('i32');
      const src = f.local('i32'), dst = f.local('i32'), k = f.local('i32');
      const psize = packedBSize(K, N, nr) * 4;
      // One panel: rows k of nr floats, from src (column n0 of row 0) to dst.
      const panel = (w: number) => {
        if (K === 0) return;
        f.for_(k, () => f.i32(0), () => f.i32(K), 1, () => {
          if (sBn === 1) {
            let j = 0;
            for (; j + 4 <= w; j += 4) { f.get(dst); f.get(src); f.v128_load(j * 4, 0); f.v128_store(j * 4, 0); }
            for (; j < w; j++) { f.get(dst); f.get(src); f.f32_load(j * 4); f.f32_store(j * 4); }
          } else {
            for (let j = 0; j < w; j++) { f.get(dst); f.get(src); f.f32_load(j * sBn * 4); f.f32_store(j * 4); }
          }
          for (let j = w; j < nr; j++) { f.get(dst); f.f32c(0); f.f32_store(j * 4); }
          f.get(src); f.i32(sBk * 4); f.op(OP.i32_add); f.set(src);
          f.get(dst); f.i32(nr * 4); f.op(OP.i32_add); f.set(dst);
        });
      };
      f.for_(t, () => f.get(t0), () => f.get(t1), 1, () => {
        f.get(t); f.i32(nG); f.op(OP.i32_div_u); f.set(bi);
        f.get(t); f.i32(nG); f.op(OP.i32_rem_u); f.set(g);
        // pEnd = min((g+1)*ppt, fullP)
        f.get(g); f.i32(1); f.op(OP.i32_add); f.i32(ppt); f.op(OP.i32_mul); f.tee(pEnd);
        f.i32(fullP); f.get(pEnd); f.i32(fullP); f.op(OP.i32_lt_s); f.select(); f.set(pEnd);
        const setPtrs = () => {
          // src = B + (bi*stride + pn*nr*sBn)*4; dst = P + bi*psize + pn*K*nr*4
          f.get(B); f.get(bi); f.i32(stride * 4); f.op(OP.i32_mul); f.op(OP.i32_add);
          f.get(pn); f.i32(nr * sBn * 4); f.op(OP.i32_mul); f.op(OP.i32_add); f.set(src);
          f.get(P); f.get(bi); f.i32(psize); f.op(OP.i32_mul); f.op(OP.i32_add);
          f.get(pn); f.i32(K * nr * 4); f.op(OP.i32_mul); f.op(OP.i32_add); f.set(dst);
        };
        const pl = f.local('i32');
        f.for_(pl, () => { f.get(g); f.i32(ppt); f.op(OP.i32_mul); }, () => f.get(pEnd), 1, () => {
          f.get(pl); f.set(pn); setPtrs(); panel(nr);
        });
        if (tail) {
          f.get(g); f.i32(nG - 1); f.op(OP.i32_eq);
          f.if_(() => { f.i32(fullP); f.set(pn); setPtrs(); panel(tail); });
        }
      });
      return mod.build();
    },
  };
}

// --- the GEMM kernel -----------------------------------------------------------------------------

export type Phase = 'only' | 'first' | 'mid' | 'last';

/** Number of tasks of a genGemm launch. */
export function gemmTasks(p: GemmParams): number {
  const { M, N, tile } = p;
  if (p.unfoldB) return Math.ceil(Math.ceil(Math.ceil(N / tile.nr) / tile.panelsPerTask) / p.unfoldB.groupsPerTask) * (p.unfoldB.rowSplits ?? 1);
  const batch = (p.batch?.dims ?? []).reduce((a, b) => a * b, 1);
  return batch * Math.ceil(M / tile.mb) * Math.ceil(Math.ceil(N / tile.nr) / tile.panelsPerTask);
}

export function epKey(e: GemmEpilogue | undefined): string {
  if (!e) return '';
  return [e.scale ?? 1, e.bias ? `b${e.biasStride ?? 1}*${e.biasScale ?? 1}` : '', e.act ?? 'none',
    e.residual ? `r${e.residualStrideM},${e.residualStrideN ?? 1}*${e.residualScale ?? 1}${e.residualAfterAct ? 'a' : ''}` : '',
    ...(e.postAct ? [`p(${e.postAct.key})`] : [])].join(':');
}

/**
 * A kernel `run(A, Bpacked, C, bias, res, t0, t1)` computing C = epilogue(A·B) for the concrete sizes in `p`.
 * Pointers are byte offsets; B is packed (packBHost / genPackB) with the same nr; unused pointers may be 0.
 */
export function genGemm(p: GemmParams): KernelSource {
  const { M, N, K, sAm, sAk, tile } = p;
  const ldc = p.ldc ?? N;
  const bt = p.batch;
  const key = `gemm:${M}x${N}x${K}:a${sAm},${sAk}:c${ldc}:` +
    (bt ? `B${bt.dims.join(',')}/${bt.a.join(',')}/${bt.b.join(',')}/${(bt.r ?? []).join(',')}:` : '') +
    `t${tile.mr},${tile.nr},${tile.mb},${tile.kb},${tile.unroll}${tile.barrier ? 'b' : ''},${tile.panelsPerTask}:${p.relaxed ? 'R' : ''}:${epKey(p.epilogue)}` +
    (p.unfoldB ? `:u${p.unfoldB.groupsPerTask}r${p.unfoldB.rowSplits ?? 1}(${p.unfoldB.key})` : '') + (p.fault ? `:F${p.fault}` : '');
  return { key, bytes: () => buildGemm(p) };
}

function buildGemm(p: GemmParams): Uint8Array {
  const { M, N, K, sAm, sAk, tile } = p;
  const { mr, nr, mb, unroll, panelsPerTask: ppt } = tile;
  if (nr % 4 !== 0 || mb % mr !== 0) throw new Error(`bad GEMM tile ${JSON.stringify(tile)}`);
  const ldc = p.ldc ?? N;
  const bt = p.batch;
  const ep = p.epilogue ?? {};
  // FAULTS (the tuner's rejection test; one place here and one in emitMicro):
  // - edge: edge tiles (a row or column tail) skip the last K step of each K block (an off-by-one in their K bound);
  // - barrier: two K phases (kb = ceil(K/2)) and the last one does not wait for the partial sums the first stored in C:
  //   it starts from zero, as a consumer that skipped the join between the phases would;
  // - epilogue: the bias and the residual are read one element off, and ragged column tails store lane l+1 as lane l;
  // - f16acc: the accumulators are rounded to f16 precision after every multiply-add.
  const fault = p.fault;
  const kb = fault === 'barrier' && K >= 2 ? Math.ceil(K / 2) : Math.max(1, Math.min(tile.kb, K));
  const mod = new ModuleBuilder();
  const micros = new Map<string, { f: FunctionBuilder }>();

  const microFor = (rows: number, cols: number, klen: number, phase: Phase): FunctionBuilder => {
    const k = `${rows},${cols},${klen},${phase}`;
    let m = micros.get(k);
    if (!m) {
      const f = mod.func(`m${micros.size}`, ['i32', 'i32', 'i32', 'i32', 'i32']);
      const kl = fault === 'edge' && (rows < mr || cols < nr) && klen > 1 ? klen - 1 : klen;
      emitMicro(f, { rows, cols, klen: kl, phase, nr, unroll, barrier: tile.barrier, sAm, sAk, ldc, relaxed: !!p.relaxed, ep, fault });
      m = { f };
      micros.set(k, m);
    }
    return m.f;
  };

  const U = p.unfoldB;
  if (U && bt) throw new Error('a GEMM that unfolds its B has no batch');
  const run = mod.func('run', new Array(U ? 8 : 7).fill('i32'));
  const f = run;
  const [A, B, Cp, bias, res] = [0, 1, 2, 3, 4].map((i) => f.param(i));
  const [S, t0, t1] = U ? [f.param(5), f.param(6), f.param(7)] : [null, f.param(5), f.param(6)];
  const nP = Math.ceil(N / nr), fullP = Math.floor(N / nr), colTail = N % nr;
  const nRB = Math.ceil(M / mb), nG = Math.ceil(nP / ppt);
  const fullM = Math.floor(M / mr) * mr, rowTail = M % mr;
  const t = f.local('i32'), bi = f.local('i32'), rb = f.local('i32'), g = f.local('i32');
  const aB = f.local('i32'), bB = f.local('i32'), cB = f.local('i32'), rB = f.local('i32');
  const m = f.local('i32'), mEnd = f.local('i32'), pn = f.local('i32'), pEnd = f.local('i32'), k0 = f.local('i32');
  const rsm = ep.residualStrideM ?? ldc, rsn = ep.residualStrideN ?? 1;
  const bsn = ep.biasStride ?? 1;
  const add = () => f.op(OP.i32_add);
  const mul = () => f.op(OP.i32_mul);

  // Calls micro(rows, cols) for row m and panel pn at K offset k0 (a local, or a constant when kConst is set).
  const callMicro = (rows: number, cols: number, klen: number, phase: Phase, kConst?: number) => {
    const mf = microFor(rows, cols, klen, phase);
    const kOff = (scale: number) => {
      if (kConst !== undefined) { if (kConst) { f.i32(kConst * scale); add(); } } else { f.get(k0); f.i32(scale); mul(); add(); }
    };
    // pa = aB + m*sAm*4 + k0*sAk*4
    f.get(aB); f.get(m); f.i32(sAm * 4); mul(); add(); kOff(sAk * 4);
    // pb = bB + pn*K*nr*4 + k0*nr*4
    f.get(bB); f.get(pn); f.i32(K * nr * 4); mul(); add(); kOff(nr * 4);
    // pc = cB + m*ldc*4 + pn*nr*4
    f.get(cB); f.get(m); f.i32(ldc * 4); mul(); add(); f.get(pn); f.i32(nr * 4); mul(); add();
    f.get(bias); if (bsn) { f.get(pn); f.i32(nr * 4); mul(); add(); }
    f.get(rB); f.get(m); f.i32(rsm * 4); mul(); add(); if (rsn) { f.get(pn); f.i32(nr * 4); mul(); add(); }
    call(f, mod.indexOf(mf));
  };

  // All strips of the task's row block for panel pn.
  const strips = (cols: number, klen: number, phase: Phase, kConst?: number) => {
    f.for_(m, () => { f.get(rb); f.i32(mb); mul(); }, () => f.get(mEnd), mr, () => callMicro(mr, cols, klen, phase, kConst));
    if (rowTail) {
      f.get(rb); f.i32(nRB - 1); f.op(OP.i32_eq);
      f.if_(() => { f.i32(fullM); f.set(m); callMicro(rowTail, cols, klen, phase, kConst); });
    }
  };

  const kBlock = (klen: number, phase: Phase, kConst?: number) => {
    const pl = f.local('i32');
    f.for_(pl, () => { f.get(g); f.i32(ppt); mul(); }, () => f.get(pEnd), 1, () => {
      f.get(pl); f.set(pn); strips(nr, klen, phase, kConst);
    });
    if (colTail) {
      f.get(g); f.i32(nG - 1); f.op(OP.i32_eq);
      f.if_(() => { f.i32(fullP); f.set(pn); strips(colTail, klen, phase, kConst); });
    }
  };

  // Batch offset (elements) of an operand from the flat batch index bi.
  const batchOffset = (strides: number[] | undefined) => {
    f.i32(0);
    if (!bt || !strides) return;
    let inner = 1;
    for (let d = bt.dims.length - 1; d >= 0; d--) {
      const dim = bt.dims[d];
      if (strides[d] && dim > 1) {
        f.get(bi); if (inner > 1) { f.i32(inner); f.op(OP.i32_div_u); }
        f.i32(dim); f.op(OP.i32_rem_u); f.i32(strides[d]); mul(); add();
      }
      inner *= dim;
    }
  };

  const kBlocks = () => {
    const nKB = Math.max(1, Math.ceil(K / kb));
    if (nKB === 1) {
      kBlock(K, 'only', 0);
    } else {
      const lastLen = K - (nKB - 1) * kb;
      kBlock(kb, 'first', 0);
      if (nKB > 2) {
        f.for_(k0, () => f.i32(kb), () => f.i32((nKB - 1) * kb), kb, () => kBlock(kb, 'mid'));
      }
      kBlock(lastLen, 'last', (nKB - 1) * kb);
    }
  };
  // mEnd = min(rb*mb + mb, fullM); pEnd = min(g*ppt + ppt, fullP)
  const ends = () => {
    f.get(rb); f.i32(mb); mul(); f.i32(mb); add(); f.tee(mEnd); f.i32(fullM); f.get(mEnd); f.i32(fullM); f.op(OP.i32_lt_s); f.select(); f.set(mEnd);
    f.get(g); f.i32(ppt); mul(); f.i32(ppt); add(); f.tee(pEnd); f.i32(fullP); f.get(pEnd); f.i32(fullP); f.op(OP.i32_lt_s); f.select(); f.set(pEnd);
  };

  if (U) {
    const unfold = U.emit(mod);
    const slotBytes = gemmUnfoldSlotBytes(p), gpt = U.groupsPerTask;
    const rs = Math.max(1, Math.min(U.rowSplits ?? 1, nRB)), rbPer = Math.ceil(nRB / rs);
    const slot = f.local('i32'), gEnd = f.local('i32'), gt = f.local('i32'), rb0 = f.local('i32'), rbEnd = f.local('i32');
    f.get(A); f.set(aB); f.get(Cp); f.set(cB); f.get(res); f.set(rB);
    f.for_(t, () => f.get(t0), () => f.get(t1), 1, () => {
      f.get(S!); f.get(t); f.i32(slotBytes); mul(); add(); f.set(slot);
      // Task t: groups of gt = t / rs, row blocks of share t % rs.
      f.get(t); f.i32(rs); f.op(OP.i32_div_u); f.set(gt);
      f.get(t); f.i32(rs); f.op(OP.i32_rem_u); f.i32(rbPer); mul(); f.set(rb0);
      f.get(rb0); f.i32(rbPer); add(); f.tee(rbEnd); f.i32(nRB); f.get(rbEnd); f.i32(nRB); f.op(OP.i32_lt_s); f.select(); f.set(rbEnd);
      f.get(gt); f.i32(gpt); mul(); f.i32(gpt); add(); f.tee(gEnd); f.i32(nG); f.get(gEnd); f.i32(nG); f.op(OP.i32_lt_s); f.select(); f.set(gEnd);
      f.for_(g, () => { f.get(gt); f.i32(gpt); mul(); }, () => f.get(gEnd), 1, () => {
        // The group's panels land in the slot: bB is offset so that panel pn is at bB + pn*K*nr*4.
        f.get(slot); f.get(g); f.i32(ppt * K * nr * 4); mul(); f.op(OP.i32_sub); f.set(bB);
        f.get(B); f.get(bB);
        f.get(g); f.i32(ppt); mul();
        f.get(g); f.i32(ppt); mul(); f.i32(ppt); add(); f.tee(pEnd); f.i32(nP); f.get(pEnd); f.i32(nP); f.op(OP.i32_lt_s); f.select();
        call(f, unfold);
        f.for_(rb, () => f.get(rb0), () => f.get(rbEnd), 1, () => { ends(); kBlocks(); });
      });
    });
    return mod.build();
  }

  const perBatch = nRB * nG;
  f.for_(t, () => f.get(t0), () => f.get(t1), 1, () => {
    f.get(t); f.i32(perBatch); f.op(OP.i32_div_u); f.set(bi);
    f.get(t); f.i32(perBatch); f.op(OP.i32_rem_u); f.tee(g); f.i32(nRB); f.op(OP.i32_rem_u); f.set(rb);
    f.get(g); f.i32(nRB); f.op(OP.i32_div_u); f.set(g);
    f.get(A); batchOffset(bt?.a); f.i32(4); mul(); add(); f.set(aB);
    f.get(B); batchOffset(bt?.b); f.i32(4); mul(); add(); f.set(bB);
    f.get(Cp); f.get(bi); f.i32(M * ldc * 4); mul(); add(); f.set(cB);
    f.get(res); batchOffset(bt?.r); f.i32(4); mul(); add(); f.set(rB);
    ends();
    kBlocks();
  });
  return mod.build();
}

interface MicroSpec {
  rows: number; cols: number; klen: number; phase: Phase; nr: number; unroll: number; barrier?: boolean;
  sAm: number; sAk: number; ldc: number; relaxed: boolean; ep: GemmEpilogue;
  /** 'barrier', 'epilogue' and 'f16acc' act here (see buildGemm); other faults are ignored. */
  fault?: Fault;
}

/** micro(pa, pb, pc, pbias, pres): the rows x cols register tile over klen steps of K. */
export function emitMicro(f: FunctionBuilder, s: MicroSpec): void {
  const { rows, cols, klen, phase, nr, sAm, sAk, ldc, relaxed, ep } = s;
  const u = Math.max(1, s.unroll);
  const [pa, pb, pc, pbias, pres] = [0, 1, 2, 3, 4].map((i) => f.param(i));
  const nv = Math.ceil(cols / 4);
  const lanes = (j: number) => Math.min(4, cols - 4 * j);
  const acc: Local[][] = [];
  for (let i = 0; i < rows; i++) { acc.push([]); for (let j = 0; j < nv; j++) acc[i].push(f.local('v128')); }
  const bv: Local[] = []; for (let j = 0; j < nv; j++) bv.push(f.local('v128'));
  const av = f.local('v128');

  // Loads lanes [0, n) of a vector (the rest 0) from ptr+off without touching memory beyond them.
  const loadLanes = (ptr: Local, off: number, n: number, stride: 0 | 1 = 1) => {
    if (stride === 0) { f.get(ptr); f.v128_load32_splat(off); return; }
    if (n === 4) { f.get(ptr); f.v128_load(off, 0); return; }
    f.f32x4_const(0);
    for (let l = 0; l < n; l++) { f.get(ptr); f.f32_load(off + l * 4); f.f32x4_replace_lane(l); }
  };

  // Initial accumulators.
  for (let i = 0; i < rows; i++) for (let j = 0; j < nv; j++) {
    if (phase === 'only' || phase === 'first' || (s.fault === 'barrier' && phase === 'last')) f.f32x4_const(0);
    else loadLanes(pc, (i * ldc + j * 4) * 4, lanes(j));
    f.set(acc[i][j]);
  }

  const step = (kk: number) => {
    for (let j = 0; j < nv; j++) { f.get(pb); f.v128_load((kk * nr + j * 4) * 4, 0); f.set(bv[j]); }
    for (let i = 0; i < rows; i++) {
      f.get(pa); f.v128_load32_splat((i * sAm + kk * sAk) * 4); f.set(av);
      for (let j = 0; j < nv; j++) {
        if (relaxed) { f.get(av); f.get(bv[j]); f.get(acc[i][j]); f.simd(SIMD.f32x4_relaxed_madd); }
        else { f.get(acc[i][j]); f.get(av); f.get(bv[j]); f.simd(SIMD.f32x4_mul); f.simd(SIMD.f32x4_add); }
        f.set(acc[i][j]);
        if (s.fault === 'f16acc') emitF16Round(f, acc[i][j]);
      }
    }
  };

  const iters = Math.floor(klen / u), rem = klen - iters * u;
  if (iters === 1) {
    for (let kk = 0; kk < u; kk++) step(kk);
    if (rem) { f.get(pa); f.i32(u * sAk * 4); f.op(OP.i32_add); f.set(pa); f.get(pb); f.i32(u * nr * 4); f.op(OP.i32_add); f.set(pb); }
  } else if (iters > 1) {
    const pe = f.local('i32');
    f.get(pb); f.i32(iters * u * nr * 4); f.op(OP.i32_add); f.set(pe);
    f.block(() => f.loop(() => {
      for (let kk = 0; kk < u; kk++) {
        step(kk);
        if (s.barrier && kk < u - 1) { f.get(pb); f.op(OP.i32_eqz); f.br_if(1); }
      }
      f.get(pa); f.i32(u * sAk * 4); f.op(OP.i32_add); f.set(pa);
      f.get(pb); f.i32(u * nr * 4); f.op(OP.i32_add); f.tee(pb);
      f.get(pe); f.op(OP.i32_ne); f.br_if(0);
    }));
  }
  for (let kk = 0; kk < rem; kk++) step(kk);

  // Store, with the epilogue on the final K block.
  const final = phase === 'only' || phase === 'last';
  const act = final ? ep.act ?? 'none' : 'none';
  const scale = final ? ep.scale ?? 1 : 1;
  const useBias = final && !!ep.bias, useRes = final && !!ep.residual;
  const bsn = ep.biasStride ?? 1, rsm = ep.residualStrideM ?? ldc, rsn = ep.residualStrideN ?? 1;
  const epOff = s.fault === 'epilogue' ? 4 : 0;
  const biasV: Local[] = [];
  if (useBias) {
    for (let j = 0; j < nv; j++) {
      const l = f.local('v128');
      loadLanes(pbias, (bsn ? j * 16 : 0) + epOff, lanes(j), bsn);
      if ((ep.biasScale ?? 1) !== 1) { f.f32x4_const(ep.biasScale!); f.simd(SIMD.f32x4_mul); }
      f.set(l);
      biasV.push(l);
    }
  }
  const post = final ? ep.postAct : undefined;
  const tmp = act !== 'none' || useRes || post ? new ActTemps(f) : undefined;
  const addRes = (i: number, j: number, v: Local) => {
    f.get(v); loadLanes(pres, (i * rsm + (rsn ? j * 4 : 0)) * 4 + epOff, lanes(j), rsn);
    if ((ep.residualScale ?? 1) !== 1) { f.f32x4_const(ep.residualScale!); f.simd(SIMD.f32x4_mul); }
    f.simd(SIMD.f32x4_add); f.set(v);
  };
  for (let i = 0; i < rows; i++) for (let j = 0; j < nv; j++) {
    const v = acc[i][j];
    if (scale !== 1) { f.get(v); f.f32x4_const(scale); f.simd(SIMD.f32x4_mul); f.set(v); }
    if (useBias) { f.get(v); f.get(biasV[j]); f.simd(SIMD.f32x4_add); f.set(v); }
    if (useRes && !ep.residualAfterAct) addRes(i, j, v);
    if (act !== 'none') emitActivation(f, act, v, tmp!);
    if (post) post.emit(f, v, tmp!);
    if (useRes && ep.residualAfterAct) addRes(i, j, v);
    const off = (i * ldc + j * 4) * 4, n = lanes(j);
    if (n === 4) { f.get(pc); f.get(v); f.v128_store(off, 0); }
    else for (let l = 0; l < n; l++) { f.get(pc); f.get(v); f.f32x4_extract_lane(final && epOff ? l + 1 : l); f.f32_store(off + l * 4); }
  }
}

// --- vector math for epilogues (shared with elementwise kernels later) ----------------------------

export class ActTemps {
  readonly a: Local; readonly b: Local; readonly c: Local; readonly d: Local;
  constructor(f: FunctionBuilder) { this.a = f.local('v128'); this.b = f.local('v128'); this.c = f.local('v128'); this.d = f.local('v128'); }
}

const splat = (f: FunctionBuilder, x: number) => f.f32x4_const(x);

/** Pushes exp(x) of the v128 in local x (Cephes-style range reduction, degree-6 polynomial; ~1 ulp on [-87, 88]). Uses t.a, t.b. */
export function emitExp(f: FunctionBuilder, x: Local, t: ActTemps): void {
  const r = t.a, n = t.b;
  // r = clamp(x); n = floor(r*log2e + 0.5)
  f.get(x); splat(f, -87); f.simd(SIMD.f32x4_pmax); splat(f, 88); f.simd(SIMD.f32x4_pmin); f.tee(r);
  splat(f, Math.LOG2E); f.simd(SIMD.f32x4_mul); splat(f, 0.5); f.simd(SIMD.f32x4_add); f.simd(SIMD.f32x4_floor); f.set(n);
  // r = r - n*C1 - n*C2
  f.get(r); f.get(n); splat(f, 0.693359375); f.simd(SIMD.f32x4_mul); f.simd(SIMD.f32x4_sub);
  f.get(n); splat(f, -2.12194440e-4); f.simd(SIMD.f32x4_mul); f.simd(SIMD.f32x4_sub); f.set(r);
  // p(r)
  const c = [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1];
  splat(f, c[0]);
  for (let i = 1; i < c.length; i++) { f.get(r); f.simd(SIMD.f32x4_mul); splat(f, c[i]); f.simd(SIMD.f32x4_add); }
  // y = p*r*r + r + 1
  f.get(r); f.simd(SIMD.f32x4_mul); f.get(r); f.simd(SIMD.f32x4_mul); f.get(r); f.simd(SIMD.f32x4_add); splat(f, 1); f.simd(SIMD.f32x4_add);
  // * 2^n
  f.get(n); f.simd(SIMD.i32x4_trunc_sat_f32x4_s); f.v128_const(new Uint8Array(new Int32Array([127, 127, 127, 127]).buffer));
  f.simd(SIMD.i32x4_add); f.i32(23); f.simd(SIMD.i32x4_shl);
  f.simd(SIMD.f32x4_mul);
}

/** Replaces the v128 in local v by act(v). Uses all of t. */
export function emitActivation(f: FunctionBuilder, act: GemmActivation, v: Local, t: ActTemps): void {
  const F = SIMD;
  switch (act) {
    case 'none': return;
    case 'relu':
      f.get(v); splat(f, 0); f.simd(F.f32x4_pmax); f.set(v); return;
    case 'sigmoid':
    case 'silu': {
      // 1 / (1 + exp(-v))
      f.get(v); f.simd(F.f32x4_neg); f.set(t.c); emitExp(f, t.c, t); f.set(t.c);
      splat(f, 1); splat(f, 1); f.get(t.c); f.simd(F.f32x4_add); f.simd(F.f32x4_div);
      if (act === 'silu') { f.get(v); f.simd(F.f32x4_mul); }
      f.set(v); return;
    }
    case 'tanh':
      f.get(v); f.set(t.c); emitTanh(f, t); f.set(v); return;
    case 'gelu_tanh': {
      // 0.5 v (1 + tanh(u)), u = sqrt(2/pi) (v + 0.044715 v^3); tanh(u) = u P(u^2) / Q(u^2) on u clamped to +-7.905 (the
      // rational form of Eigen's ptanh_float, |error| < 4e-7), the 0.5 folded into P: v (0.5 + u P'(u^2) / Q(u^2)).
      const c = Math.sqrt(2 / Math.PI);
      f.get(v); f.get(v); f.simd(F.f32x4_mul); splat(f, c * 0.044715); f.simd(F.f32x4_mul); splat(f, c); f.simd(F.f32x4_add);
      f.get(v); f.simd(F.f32x4_mul);
      splat(f, -TANH_CLAMP); f.simd(F.f32x4_pmax); splat(f, TANH_CLAMP); f.simd(F.f32x4_pmin); f.tee(t.a);
      f.get(t.a); f.simd(F.f32x4_mul); f.set(t.b);
      emitPoly(f, t.b, TANH_P.map((x) => 0.5 * x)); f.get(t.a); f.simd(F.f32x4_mul);
      emitPoly(f, t.b, TANH_Q); f.simd(F.f32x4_div);
      splat(f, 0.5); f.simd(F.f32x4_add); f.get(v); f.simd(F.f32x4_mul);
      f.set(v); return;
    }
    case 'gelu': {
      // 0.5 v (1 + erf(v/sqrt2)); erf(x) = x P(x^2) / Q(x^2) on x clamped to +-4 (the rational form of Eigen's / XLA's
      // f32 erf, |error| < 5e-7), with x = v/sqrt2 and the 0.5 folded into the coefficients: v (0.5 + v P'(v^2) / Q'(v^2)).
      splat(f, -4 * Math.SQRT2); f.get(v); f.simd(F.f32x4_pmax); f.set(t.a);
      f.get(t.a); splat(f, 4 * Math.SQRT2); f.simd(F.f32x4_pmin); f.tee(t.a);
      f.get(t.a); f.simd(F.f32x4_mul); f.set(t.b);
      // P(x^2) with x^2 = v^2/2: the coefficient of v^(2i) is alpha_i / 2^i; times x = v/sqrt2 and 0.5.
      const n = ERF_P.length, m = ERF_Q.length;
      emitPoly(f, t.b, ERF_P.map((a, i) => (0.5 * Math.SQRT1_2 * a) / 2 ** (n - 1 - i))); f.get(t.a); f.simd(F.f32x4_mul);
      emitPoly(f, t.b, ERF_Q.map((b, i) => b / 2 ** (m - 1 - i))); f.simd(F.f32x4_div);
      splat(f, 0.5); f.simd(F.f32x4_add); f.get(v); f.simd(F.f32x4_mul);
      f.set(v); return;
    }
  }
}

/** Odd numerator / even denominator coefficients (highest power first) of the rational f32 erf (Eigen, XLA). */
const ERF_P = [-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
  -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02];
const ERF_Q = [-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
  -1.42647390514189e-02];
/** The same for tanh (Eigen's ptanh_float), valid on |x| <= TANH_CLAMP (beyond it tanh rounds to +-1). */
const TANH_CLAMP = 7.90531110763549805;
const TANH_P = [-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
  1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03];
const TANH_Q = [1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03];

/** Pushes the polynomial c[0] z^(n-1) + ... + c[n-1] of the v128 in local z (Horner). */
function emitPoly(f: FunctionBuilder, z: Local, c: readonly number[]): void {
  splat(f, c[0]);
  for (let i = 1; i < c.length; i++) { f.get(z); f.simd(SIMD.f32x4_mul); splat(f, c[i]); f.simd(SIMD.f32x4_add); }
}

/** Pushes tanh(t.c) = 1 - 2 / (exp(2x) + 1). Uses t.a, t.b, t.c. */
function emitTanh(f: FunctionBuilder, t: ActTemps): void {
  f.get(t.c); f.get(t.c); f.simd(SIMD.f32x4_add); f.set(t.c);
  emitExp(f, t.c, t); splat(f, 1); f.simd(SIMD.f32x4_add); f.set(t.c);
  splat(f, 1); splat(f, 2); f.get(t.c); f.simd(SIMD.f32x4_div); f.simd(SIMD.f32x4_sub);
}
