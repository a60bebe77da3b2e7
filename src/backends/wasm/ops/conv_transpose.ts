// Wasm ConvTranspose (f32, NCHW, 1-D and 2-D, grouped, strided, dilated, padded): per batch item and group one GEMM
// COL[Mg*kk, H*W] = W_gᵀ · X_g (the packed-B GEMM), then col2im gathers the taps of each output row and adds the bias.
import { convTransposeShape } from '../../../ops/conv.js';
import { col2imTasks, genCol2im } from '../kernels/conv.js';
import { type GemmParams, gemmTasks, genGemm, genPackB, packBTasks, packedBSize } from '../kernels/gemm.js';
import { type Launch, type OpPlan, type PlanContext, type ValueDesc, registerWasmOp } from '../kernel.js';
import type { Node } from '../../../graph/ir.js';
import { chooseGemmTile } from './matmul.js';
import { attrInt, attrInts, attrStr } from './conv.js';

const align64 = (n: number) => Math.ceil(n / 64) * 64;

registerWasmOp('ConvTranspose', planConvTranspose);

function planConvTranspose(node: Node, inputs: (ValueDesc | undefined)[], ctx: PlanContext): OpPlan | null {
  const [x, w, b] = inputs;
  if (!x || !w || x.dtype !== 'float32' || w.dtype !== 'float32' || (b && b.dtype !== 'float32')) return null;
  const r = x.dims.length;
  if (r !== 3 && r !== 4) return null;
  if (w.dims.length !== r) return null;
  const sp = r - 2;
  const [N, C] = x.dims;
  const group = attrInt(node, 'group', 1);
  if (group < 1 || w.dims[0] !== C || C % group !== 0) return null;
  const Mg = w.dims[1], M = Mg * group, Cg = C / group;
  if (b && (b.dims.length !== 1 || b.dims[0] !== M)) return null;
  const inS = x.dims.slice(2), kS = w.dims.slice(2);
  const ks = attrInts(node, 'kernel_shape');
  if (ks && ks.join() !== kS.join()) return null;
  const strides = attrInts(node, 'strides') ?? new Array(sp).fill(1);
  const dils = attrInts(node, 'dilations') ?? new Array(sp).fill(1);
  const outPad = attrInts(node, 'output_padding') ?? new Array(sp).fill(0);
  if (strides.length !== sp || dils.length !== sp || outPad.length !== sp || [...strides, ...dils].some((v) => v < 1)) return null;
  const { pads, outS } = convTransposeShape(inS, kS, {
    strides, dils, outPad, autoPad: attrStr(node, 'auto_pad', 'NOTSET'), outShape: attrInts(node, 'output_shape'), pads: attrInts(node, 'pads'),
  });
  if (pads.length !== 2 * sp || outS.length !== sp || outS.some((o) => !(o >= 0))) return null;
  const two = (v: number[], fill: number) => (v.length === 1 ? [fill, v[0]] : v);
  const [H, W] = two(inS, 1), [kH, kW] = two(kS, 1), [oH, oW] = two(outS, 1);
  const [sH, sW] = two(strides, 1), [dH, dW] = two(dils, 1), [pH, pW] = two(pads.slice(0, sp), 0);
  const outputs = [{ dtype: 'float32' as const, dims: [N, M, ...outS] }];
  const HW = H * W, kk = kH * kW;
  if (N === 0 || M === 0 || oH * oW === 0) return { outputs, launches: () => [] };
  // No input channels or pixels (the output is the bias alone): the reference kernel covers it.
  if (Cg === 0 || HW === 0) return null;
  const Kg = Cg, Mrows = Mg * kk;
  const tile = chooseGemmTile(Mrows, HW, Math.max(Kg, 1), N * group, ctx.threads, ctx.relaxedSimd);
  const psize = packedBSize(Kg, HW, tile.nr);
  const gemm: GemmParams = {
    M: Mrows, N: HW, K: Kg, sAm: 1, sAk: Mrows, tile, relaxed: ctx.relaxedSimd,
    batch: { dims: [N, group], a: [0, Cg * Mrows], b: [group * psize, psize] },
  };
  const colBytes = N * group * Mrows * HW * 4;
  const packBytes = N * group * psize * 4;
  const pack = { K: Kg, N: HW, sBk: HW, sBn: 1, nr: tile.nr, count: N * group, stride: Cg * HW };
  const c2i = { planes: N * M, H, W, kH, kW, oH, oW, sH, sW, pH, pW, dH, dW, M, bias: !!b, rpt: 1 };
  c2i.rpt = Math.max(1, Math.ceil((N * M * oH) / (ctx.threads > 1 ? ctx.threads * 8 : 1)));
  const col2im = genCol2im(c2i), packKernel = genPackB(pack), gemmKernel = genGemm(gemm);
  return {
    outputs,
    scratchBytes: align64(packBytes) + colBytes,
    launches: (bufs) => {
      const packed = bufs.scratch, col = bufs.scratch + align64(packBytes);
      const ls: Launch[] = [
        { kernel: packKernel, args: [bufs.inputs[0], packed], tasks: packBTasks(pack) },
        { kernel: gemmKernel, args: [bufs.inputs[1], packed, col, 0, 0], tasks: gemmTasks(gemm) },
        { kernel: col2im, args: [col, b ? bufs.inputs[2] : 0, bufs.outputs[0]], tasks: col2imTasks(c2i) },
      ];
      return ls;
    },
  };
}
