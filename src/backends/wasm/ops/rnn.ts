// Wasm LSTM, GRU and RNN (f32, default activations, no sequence_lens): plan kernels/rnn.ts for the node's shapes.
import { type LstmParams, gatesOf, genLstm, lstmScratch, lstmTasks, rnnPackedR } from '../kernels/rnn.js';
import { genFill } from '../kernels/data.js';
import type { Node } from '../../../graph/ir.js';
import { type Launch, type OpPlan, type PlanContext, type ValueDesc, registerWasmOp } from '../kernel.js';
import { type GemmParams, gemmTasks, genGemm, packBHost, packedBSize } from '../kernels/gemm.js';
import { chooseGemmTile } from './matmul.js';

/**
 * The input projections X·W_dᵀ of every step as one GEMM per direction (before the recurrence, on all threads), when W
 * is a model constant and H a multiple of 4; null otherwise (the recurrence computes them per step).
 */
function inputProjection(p: LstmParams, w: ValueDesc, gates: number, ctx: PlanContext):
  { bytes: number; launch: (xPtr: number, out: number) => Launch } | null {
  const wc = w.constant;
  if (!wc || !(wc.data instanceof Float32Array) || p.H % 4 !== 0) return null;
  const rows = p.T * p.B, N = gates * p.H, K = p.I;
  const tile = chooseGemmTile(rows, N, K, p.dirs, ctx.threads, ctx.relaxedSimd);
  const psize = packedBSize(K, N, tile.nr);
  const data = wc.data;
  // B = W_dᵀ: element (k, n) at W + d*N*K + n*K + k.
  const packed = ctx.constant(w.name, `rnnWt:nr${tile.nr}:${p.dirs}x${N}x${K}`, () => {
    const out = new Float32Array(p.dirs * psize);
    for (let d = 0; d < p.dirs; d++) packBHost(data, d * N * K, K, N, 1, K, tile.nr, out, d * psize);
    return new Uint8Array(out.buffer);
  });
  const params: GemmParams = {
    M: rows, N, K, sAm: K, sAk: 1, tile, relaxed: ctx.relaxedSimd,
    batch: p.dirs > 1 ? { dims: [p.dirs], a: [0], b: [psize] } : undefined,
  };
  const kernel = genGemm(params);
  const tasks = gemmTasks(params);
  return { bytes: Math.ceil((p.dirs * rows * N * 4) / 64) * 64, launch: (xPtr, out) => ({ kernel, args: [xPtr, packed, out, 0, 0], tasks }) };
}

/** Hidden size from which one recurrence is split over threads (smaller steps cost less than the threads' handshake). */
const MIN_SLICED_H = 64;
/**
 * Multiply-adds of h·Rᵀ over all steps from which splitting pays for a launch on several threads (~20 µs; a single
 * task runs at once on the calling thread): Silero VAD's one-step LSTM stays on one thread.
 */
const MIN_SLICED_MACS = 1 << 19;

/**
 * Threads per recurrence: when there are fewer recurrences (directions × batch groups) than threads and the input
 * projections are precomputed, each step's hidden units split over the spare threads.
 */
export function slicesPerUnit(p: LstmParams, threads: number): number {
  const units = p.dirs * Math.ceil(p.B / p.rowsPerTask);
  const gates = gatesOf(p);
  if (p.linearBeforeReset === false) return 1;
  if (!p.xproj || p.H % 4 !== 0 || p.H < MIN_SLICED_H || units >= threads) return 1;
  if (p.T * gates * p.H * p.H < MIN_SLICED_MACS) return 1;
  return Math.max(1, Math.min(Math.floor(threads / units), Math.floor(p.H / 32)));
}

/**
 * With several batch rows per task, a constant R and precomputed projections, each step's h·Rᵀ runs on the GEMM
 * micro-kernel over R packed once at load: sets p.packedR and returns the packed R's pointer (else null).
 */
function packRecurrence(p: LstmParams, r: ValueDesc, ctx: PlanContext): number | null {
  const rc = r.constant;
  if (!rc || !(rc.data instanceof Float32Array) || !p.xproj || (p.chunks ?? 1) > 1 || p.H % 8 !== 0) return null;
  if (p.linearBeforeReset === false) return null;
  if (Math.min(p.rowsPerTask, p.B) < 2) return null;
  const data = rc.data;
  p.packedR = true;
  return ctx.constant(r.name, `rnnRp:${p.kind ?? 'lstm'}:${p.dirs}x${p.H}`, () => new Uint8Array(rnnPackedR(data, p).buffer));
}

/**
 * The recurrence's launches for given buffers: the projection GEMM (if any), zeroing the slices' control words, then
 * the kernel. `args` are the kernel's arguments before the scratch pointer.
 */
function recurrence(p: LstmParams): (scratch: number, args: number[], pre: Launch[]) => Launch[] {
  const kernel = genLstm(p);
  const tasks = lstmTasks(p);
  const { ctrlBytes } = lstmScratch(p);
  const fill = ctrlBytes ? genFill(4, new Uint8Array(4), ctrlBytes / 4, ctrlBytes / 4) : null;
  return (scratch, args, pre) => [
    ...pre,
    ...(fill ? [{ kernel: fill, args: [scratch], tasks: 1 }] : []),
    { kernel, args: [...args, scratch], tasks },
  ];
}

/** Batch rows per task: enough tasks for the threads when there are fewer directions than threads, at most 4. */
function rowsPerTask(B: number, dirs: number, threads: number): number {
  return threads > 1 ? Math.max(1, Math.min(4, Math.ceil(B / Math.ceil(threads / dirs)))) : Math.min(B, 4);
}

/** Largest input/hidden size the unrolled dot products are generated for. */
const MAX_SIZE = 1024;

const DEFAULT_ACTS = ['sigmoid', 'tanh', 'tanh'];

const isF32 = (v: ValueDesc | undefined) => !v || v.dtype === 'float32';
const dimsAre = (v: ValueDesc | undefined, dims: number[]) => !v || v.dims.join(',') === dims.join(',');

/** The attributes and sizes LSTM and GRU share; null when the kernels do not cover them (layout, direction, activations). */
function rnnGeometry(node: Node, x: ValueDesc, w: ValueDesc, r: ValueDesc, acts1: string[]):
  { T: number; B: number; I: number; H: number; dirs: 1 | 2; layout: 0 | 1; direction: string; st: number[] } | null {
  const attr = (name: string) => node.attrs.get(name)?.value;
  const layout = (attr('layout') as number | undefined) ?? 0;
  const direction = (attr('direction') as string | undefined) ?? 'forward';
  if ((layout !== 0 && layout !== 1) || !['forward', 'reverse', 'bidirectional'].includes(direction)) return null;
  const dirs = direction === 'bidirectional' ? 2 : 1;
  const acts = attr('activations') as string[] | undefined;
  if (acts && acts.length) {
    const want = dirs === 2 && acts.length === 2 * acts1.length ? [...acts1, ...acts1] : acts1;
    if (acts.length !== want.length || acts.some((s, i) => s.toLowerCase() !== want[i])) return null;
  }
  if (x.dims.length !== 3 || w.dims.length !== 3 || r.dims.length !== 3) return null;
  const [T, B, I] = layout === 0 ? x.dims : [x.dims[1], x.dims[0], x.dims[2]];
  const H = (attr('hidden_size') as number | undefined) ?? r.dims[2];
  return { T, B, I, H, dirs, layout, direction, st: layout === 0 ? [dirs, B, H] : [B, dirs, H] };
}

registerWasmOp('LSTM', (node, inputs, ctx) => {
  if (node.domain !== '') return null;
  const [x, w, r, bias, seqLens, h0, c0, peep] = inputs;
  if (!x || !w || !r || seqLens) return null;
  if (![x, w, r, bias, h0, c0, peep].every(isF32)) return null;
  const a = (name: string) => node.attrs.get(name)?.value;
  const geo = rnnGeometry(node, x, w, r, DEFAULT_ACTS);
  if (!geo) return null;
  const { T, B, I, H, dirs, layout, direction, st } = geo;
  if (!dimsAre(w, [dirs, 4 * H, I]) || !dimsAre(r, [dirs, 4 * H, H]) || !dimsAre(bias, [dirs, 8 * H]) || !dimsAre(peep, [dirs, 3 * H])) return null;
  if (!dimsAre(h0, st) || !dimsAre(c0, st)) return null;
  if (T === 0 || B === 0 || H === 0 || I === 0 || I > MAX_SIZE || H > MAX_SIZE) return null;
  const clipA = a('clip') as number | undefined;
  const threads = ctx.threads;
  const p: LstmParams = {
    T, B, I, H, dirs, reverse: direction === 'reverse', layout,
    hasBias: !!bias, hasH0: !!h0, hasC0: !!c0, hasP: !!peep,
    clip: clipA === undefined ? Infinity : clipA,
    inputForget: ((a('input_forget') as number | undefined) ?? 0) !== 0,
    rowsPerTask: rowsPerTask(B, dirs, threads), relaxed: ctx.relaxedSimd,
  };
  const xp = inputProjection(p, w, 4, ctx);
  p.xproj = !!xp;
  p.chunks = slicesPerUnit(p, threads);
  const rp = packRecurrence(p, r, ctx);
  const run = recurrence(p);
  const yDims = layout === 0 ? [T, dirs, B, H] : [B, T, dirs, H];
  const nOut = Math.min(3, Math.max(1, node.outputs.length));
  const outputs = [{ dtype: 'float32' as const, dims: yDims }, { dtype: 'float32' as const, dims: st }, { dtype: 'float32' as const, dims: st }].slice(0, nOut);
  const own = lstmScratch(p).bytes;
  const stateBytes = Math.ceil((dirs * B * H * 4) / 64) * 64;
  // Final states nobody asked for go to scratch.
  const spare = 3 - nOut;
  return {
    outputs,
    scratchBytes: own + spare * stateBytes + (xp?.bytes ?? 0),
    launches: (b) => {
      const extra = (k: number) => b.scratch + own + k * stateBytes;
      const yh = nOut > 1 ? b.outputs[1] : extra(0);
      const yc = nOut > 2 ? b.outputs[2] : extra(nOut > 1 ? 0 : 1);
      const ins = b.inputs;
      const xw = extra(spare);
      return run(b.scratch,
        [xp ? xw : ins[0], ins[1], rp ?? ins[2], bias ? ins[3] : 0, h0 ? ins[5] : 0, c0 ? ins[6] : 0, peep ? ins[7] : 0, b.outputs[0], yh, yc],
        xp ? [xp.launch(ins[0], xw)] : []);
    },
  };
});

/** GRU (either linear_before_reset) and RNN (tanh): default activations, no sequence_lens; a hidden state only. */
function planStateOnly(kind: 'gru' | 'rnn') {
  const gates = kind === 'gru' ? 3 : 1;
  const acts = kind === 'gru' ? ['sigmoid', 'tanh'] : ['tanh'];
  return (node: Node, inputs: (ValueDesc | undefined)[], ctx: PlanContext): OpPlan | null => {
    if (node.domain !== '') return null;
    const [x, w, r, bias, seqLens, h0] = inputs;
    if (!x || !w || !r || seqLens || inputs.length > 6) return null;
    if (![x, w, r, bias, h0].every(isF32)) return null;
    const a = (name: string) => node.attrs.get(name)?.value;
    const geo = rnnGeometry(node, x, w, r, acts);
    if (!geo) return null;
    const { T, B, I, H, dirs, layout, direction, st } = geo;
    if (!dimsAre(w, [dirs, gates * H, I]) || !dimsAre(r, [dirs, gates * H, H]) || !dimsAre(bias, [dirs, 2 * gates * H])) return null;
    if (!dimsAre(h0, st)) return null;
    if (T === 0 || B === 0 || H === 0 || I === 0 || I > MAX_SIZE || H > MAX_SIZE) return null;
    const clipA = a('clip') as number | undefined;
    const threads = ctx.threads;
    const p: LstmParams = {
      kind, T, B, I, H, dirs, reverse: direction === 'reverse', layout,
      hasBias: !!bias, hasH0: !!h0, hasC0: false, hasP: false,
      clip: clipA === undefined ? Infinity : clipA, inputForget: false, rowsPerTask: rowsPerTask(B, dirs, threads), relaxed: ctx.relaxedSimd,
    };
    if (kind === 'gru') p.linearBeforeReset = ((a('linear_before_reset') as number | undefined) ?? 0) !== 0;
    const xp = inputProjection(p, w, gates, ctx);
    p.xproj = !!xp;
    p.chunks = slicesPerUnit(p, threads);
    const rp = packRecurrence(p, r, ctx);
    const run = recurrence(p);
    const yDims = layout === 0 ? [T, dirs, B, H] : [B, T, dirs, H];
    const nOut = Math.min(2, Math.max(1, node.outputs.length));
    const outputs = [{ dtype: 'float32' as const, dims: yDims }, { dtype: 'float32' as const, dims: st }].slice(0, nOut);
    const own = lstmScratch(p).bytes;
    const stateBytes = Math.ceil((dirs * B * H * 4) / 64) * 64;
    return {
      outputs,
      scratchBytes: own + stateBytes + (xp?.bytes ?? 0),
      launches: (b) => {
        const yh = nOut > 1 ? b.outputs[1] : b.scratch + own;
        const ins = b.inputs;
        const xw = b.scratch + own + stateBytes;
        return run(b.scratch, [xp ? xw : ins[0], ins[1], rp ?? ins[2], bias ? ins[3] : 0, h0 ? ins[5] : 0, 0, 0, b.outputs[0], yh, 0],
          xp ? [xp.launch(ins[0], xw)] : []);
      },
    };
  };
}

registerWasmOp('GRU', planStateOnly('gru'));
registerWasmOp('RNN', planStateOnly('rnn'));
