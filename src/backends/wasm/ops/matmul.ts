// Wasm MatMul and Gemm (f32): plan the packed-B GEMM kernels of kernels/gemm.ts for the node's concrete shapes.
import type { Node } from '../../../graph/ir.js';
import { type GemmBatch, type GemmEpilogue, type GemmParams, type GemmTile, epKey, gemmTasks, genGemm, genPackB, packBHost, packBTasks, packedBSize } from '../kernels/gemm.js';
import { faultOf, gemmDefaultParams, gemmSpace, gemmTileOf, raggedByValue } from '../tune.js';
import type { Fault, TuneSite } from '../../../tune/site.js';
import { type Launch, type OpPlan, type PlanContext, type ValueDesc, registerWasmOp } from '../kernel.js';
import { tryBroadcastShape } from '../../../ops/util.js';

/**
 * The register and cache tile for an M x N x K product, from the tile search of bench/wasm-matmul.mjs (Xeon/V8):
 * V8 hoists a basic block's loads, so mr*(nr/4) + mr + nr/4 must fit the 15 usable XMM registers: 3x12 with fused
 * multiply-add (relaxed SIMD), 4x8 with mul+add; K unrolled by 2 behind a scheduling barrier. Narrow M (decode) takes
 * panels of 16 columns and one to three rows.
 */
export function chooseGemmTile(M: number, N: number, K: number, batch: number, threads: number, relaxed = false): GemmTile {
  let mr = relaxed ? 3 : 4, nr = relaxed ? 12 : 8;
  if (M === 1) { mr = 1; nr = N > 8 ? 16 : 8; }
  else if (M === 2) { mr = 2; nr = N > 8 ? 16 : 8; }
  else if (M === 3) { mr = 3; nr = N > 8 ? 12 : 8; }
  const kb = K <= 1024 ? K : 512;
  const mb = Math.min(Math.ceil(M / mr) * mr, mr * Math.ceil(64 / mr));
  const nP = Math.ceil(N / nr), nRB = Math.ceil(M / mb);
  // A task's group of B panels stays in L2 (~512 KiB of it) while consecutive tasks walk the row blocks.
  const l2Panels = Math.max(1, Math.floor((512 * 1024) / (Math.max(1, K) * nr * 4)));
  // Enough tasks for the runtime's dynamic scheduler to balance the threads.
  const want = threads > 1 ? threads * 8 : 1;
  const ppt = Math.max(1, Math.min(nP, l2Panels, Math.ceil((nP * nRB * batch) / want)));
  return { mr, nr, mb, kb, unroll: 2, barrier: true, panelsPerTask: ppt };
}

/**
 * The matmul tuning site of an M x N x K product over `batch` matrices, asked of the context: returns the tile (the
 * default is exactly chooseGemmTile's), whether to use relaxed SIMD, and a planted fault when the tuner forces one.
 * `desc` must name everything else the kernel depends on (op, strides, batch layout, B constant or packed per run,
 * epilogue). Candidates are valid at every shape: gemmTileOf fits any tile to any M, N, K.
 */
export function pickGemm(ctx: PlanContext, family: 'matmul' | 'conv', desc: string, M: number, N: number, K: number, batch: number,
  ragged: TuneSite['ragged']): { tile: GemmTile; relaxed: boolean; fault?: Fault } {
  const def = gemmDefaultParams(M, N, K, ctx.relaxedSimd);
  const site: TuneSite = {
    family,
    sig: `${desc}:${M}x${N}x${K}:b${batch}:T${ctx.threads}${ctx.relaxedSimd ? 'R' : ''}`,
    default: def,
    space: () => gemmSpace(M, N, K, batch, ctx.threads, ctx.relaxedSimd, def),
    ragged,
  };
  const p = ctx.pick(site);
  const { tile, relaxed } = gemmTileOf(p, M, N, K, batch, ctx.threads);
  return { tile, relaxed: relaxed && ctx.relaxedSimd, fault: faultOf(p) };
}

interface Operands {
  M: number; N: number; K: number;
  sAm: number; sAk: number; sBk: number; sBn: number;
  batchDims: number[];
  /** Batch strides (elements) of A, and of B in matrices. */
  aStrides: number[];
  bMatStrides: number[];
  bCount: number;
  outDims: number[];
}


/** Per output batch dim, the element stride of an operand whose batch dims are `own` (right-aligned). */
function batchStrides(own: readonly number[], out: readonly number[], matrix: number): number[] {
  const s: number[] = new Array(out.length).fill(0);
  let stride = matrix;
  for (let i = own.length - 1; i >= 0; i--) {
    const o = out.length - own.length + i;
    s[o] = own[i] === 1 ? 0 : stride;
    stride *= own[i];
  }
  return s;
}

function planOperands(ad: readonly number[], bd: readonly number[]): Operands | null {
  if (ad.length === 0 || bd.length === 0) return null;
  const a2 = ad.length === 1 ? [1, ad[0]] : [...ad];
  const b2 = bd.length === 1 ? [bd[0], 1] : [...bd];
  const M = a2[a2.length - 2], K = a2[a2.length - 1], K2 = b2[b2.length - 2], N = b2[b2.length - 1];
  if (K !== K2) return null;
  const ba = a2.slice(0, -2), bb = b2.slice(0, -2);
  const batch = tryBroadcastShape(ba, bb);
  if (!batch) return null;
  const outDims = [...batch];
  if (ad.length > 1) outDims.push(M);
  if (bd.length > 1) outDims.push(N);
  const bCount = bb.reduce((x, y) => x * y, 1);
  const aCount = ba.reduce((x, y) => x * y, 1);
  const outCount = batch.reduce((x, y) => x * y, 1);
  if (bCount === 1 && aCount === outCount) {
    // B is shared by every batch: fold the batch into M (A's rows are contiguous).
    return { M: M * aCount, N, K, sAm: K, sAk: 1, sBk: N, sBn: 1, batchDims: [], aStrides: [], bMatStrides: [], bCount: 1, outDims };
  }
  return {
    M, N, K, sAm: K, sAk: 1, sBk: N, sBn: 1, batchDims: batch,
    aStrides: batchStrides(ba, batch, M * K), bMatStrides: batchStrides(bb, batch, 1), bCount, outDims,
  };
}

interface GemmPlanIn {
  /** The op and what of its attributes the kernel depends on, for the tuning signature. */
  op: string;
  ops: Operands;
  b: ValueDesc;
  transB: boolean;
  epilogue?: GemmEpilogue;
}

/** The launches of one (batched) GEMM: pack B (at plan time when constant, else in scratch), then compute. */
function planGemm(x: GemmPlanIn, ctx: PlanContext, inputIndex: { a: number; b: number; bias?: number; res?: number }): OpPlan {
  const { ops } = x;
  const { M, N, K } = ops;
  const outputs = [{ dtype: 'float32' as const, dims: ops.outDims }];
  const batchCount = ops.batchDims.reduce((p, q) => p * q, 1);
  if (M === 0 || N === 0 || batchCount === 0) return { outputs, launches: () => [] };
  const c0 = x.b.constant;
  const desc = `${x.op}:a${ops.sAm},${ops.sAk}:b${ops.sBk},${ops.sBn}${c0 && c0.data instanceof Float32Array ? 'c' : ''}:B${ops.batchDims.join(',')}/${ops.aStrides.join(',')}/${ops.bMatStrides.join(',')}:${epKey(x.epilogue)}`;
  const { tile, relaxed, fault } = pickGemm(ctx, 'matmul', desc, M, N, K, batchCount, (d) => raggedByValue(d));
  const psize = packedBSize(K, N, tile.nr);
  const batch: GemmBatch | undefined = ops.batchDims.length
    ? { dims: ops.batchDims, a: ops.aStrides, b: ops.bMatStrides.map((s) => s * psize) }
    : undefined;
  const params: GemmParams = { M, N, K, sAm: ops.sAm, sAk: ops.sAk, batch, tile, relaxed, epilogue: x.epilogue, fault };
  const kernel = genGemm(params);
  const tasks = gemmTasks(params);
  const bytes = ops.bCount * psize * 4;
  const c = x.b.constant;
  let packed = -1;
  if (c && c.data instanceof Float32Array) {
    const data = c.data;
    packed = ctx.constant(x.b.name, `packB:nr${tile.nr}:t${x.transB ? 1 : 0}:${K}x${N}`, () => {
      const out = new Float32Array(ops.bCount * psize);
      for (let i = 0; i < ops.bCount; i++) packBHost(data, i * K * N, K, N, ops.sBk, ops.sBn, tile.nr, out, i * psize);
      return new Uint8Array(out.buffer);
    });
  }
  const pack = packed < 0
    ? { kernel: genPackB({ K, N, sBk: ops.sBk, sBn: ops.sBn, nr: tile.nr, count: ops.bCount, stride: K * N }), tasks: packBTasks({ K, N, sBk: ops.sBk, sBn: ops.sBn, nr: tile.nr, count: ops.bCount }) }
    : undefined;
  return {
    outputs,
    scratchBytes: pack ? bytes : 0,
    launches: (bufs) => {
      const bp = pack ? bufs.scratch : packed;
      const ls: Launch[] = [];
      if (pack) ls.push({ kernel: pack.kernel, args: [bufs.inputs[inputIndex.b], bp], tasks: pack.tasks });
      const bias = inputIndex.bias !== undefined ? bufs.inputs[inputIndex.bias] : 0;
      const res = inputIndex.res !== undefined ? bufs.inputs[inputIndex.res] : 0;
      ls.push({ kernel, args: [bufs.inputs[inputIndex.a], bp, bufs.outputs[0], bias, res], tasks });
      return ls;
    },
  };
}

function attrNum(node: Node, name: string, dflt: number): number {
  const a = node.attrs.get(name);
  return a && typeof a.value === 'number' ? a.value : dflt;
}

registerWasmOp('MatMul', (_node, inputs, ctx) => {
  const [a, b] = inputs;
  if (!a || !b || a.dtype !== 'float32' || b.dtype !== 'float32') return null;
  const ops = planOperands(a.dims, b.dims);
  if (!ops) return null;
  return planGemm({ op: 'MatMul', ops, b, transB: false }, ctx, { a: 0, b: 1 });
});

registerWasmOp('Gemm', (node, inputs, ctx) => {
  const [a, b, c] = inputs;
  if (!a || !b || a.dtype !== 'float32' || b.dtype !== 'float32' || a.dims.length !== 2 || b.dims.length !== 2) return null;
  if (c && c.dtype !== 'float32') return null;
  const transA = attrNum(node, 'transA', 0) !== 0, transB = attrNum(node, 'transB', 0) !== 0;
  const alpha = attrNum(node, 'alpha', 1), beta = attrNum(node, 'beta', 1);
  const M = transA ? a.dims[1] : a.dims[0], K = transA ? a.dims[0] : a.dims[1];
  const K2 = transB ? b.dims[1] : b.dims[0], N = transB ? b.dims[0] : b.dims[1];
  if (K !== K2) return null;
  const ops: Operands = {
    M, N, K, sAm: transA ? 1 : K, sAk: transA ? M : 1, sBk: transB ? 1 : N, sBn: transB ? K : 1,
    batchDims: [], aStrides: [], bMatStrides: [], bCount: 1, outDims: [M, N],
  };
  const epilogue: GemmEpilogue = { scale: alpha };
  const idx: { a: number; b: number; bias?: number; res?: number } = { a: 0, b: 1 };
  const hasC = !!c && beta !== 0 && c.dims.reduce((p, q) => p * q, 1) > 0;
  if (hasC) {
    const cd = c.dims;
    if (cd.length > 2) return null;
    const cm = cd.length === 2 ? cd[0] : 1, cn = cd.length >= 1 ? cd[cd.length - 1] : 1;
    if ((cm !== 1 && cm !== M) || (cn !== 1 && cn !== N)) return null;
    if (cm === 1) {
      Object.assign(epilogue, { bias: true, biasStride: cn === 1 ? 0 : 1, biasScale: beta });
      idx.bias = 2;
    } else {
      Object.assign(epilogue, { residual: true, residualStrideM: cn, residualStrideN: cn === 1 ? 0 : 1, residualScale: beta });
      idx.res = 2;
    }
  }
  const plan = planGemm({ op: `Gemm${transA ? 'tA' : ''}${transB ? 'tB' : ''}`, ops, b, transB, epilogue }, ctx, idx);
  return plan;
});
