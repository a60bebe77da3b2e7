// Wasm Conv (f32, NCHW, 1-D and 2-D): direct depthwise, channel-vector kernel for tiny output planes, 1x1 as a GEMM on the input, im2col + GEMM otherwise.
import type { Node } from '../../../graph/ir.js';
import {
  type ConvActivation, type Geom2, NO_ACT, actKey, emitConvAct, convGemmTasks, packConvA, convGemmTile, depthwisePadding, depthwiseTasks, genConvGemm, genDepthwise,
  genIm2col, im2colTasks, emitIm2colPacked, geomKey, genConvNarrow, narrowSupported, narrowTasks, narrowTile, packBiasNarrow, packConvNarrow,
} from '../kernels/conv.js';
import { type Launch, type OpPlan, type PlanContext, type ValueDesc, registerWasmOp, taskCount } from '../kernel.js';
import { type GemmEpilogue, type GemmParams, gemmTasks, gemmUnfoldSlotBytes, genGemm, genPackB, packBTasks, packedBSize } from '../kernels/gemm.js';
import { pickGemm } from './matmul.js';
import { raggedSize, type TuneSite } from '../../../tune/site.js';
import { attrInt, attrInts, attrStr, convWindow } from '../../op_attrs.js';

export { attrInt, attrInts, attrStr };

/** Spatial geometry shared by Conv and the pools: returns null for what the kernels do not cover (3-D). */
export interface SpatialGeom { g: Geom2; outSpatial: number[]; padEnd: [number, number] }

/** Conv output geometry, as the reference computes it (rank 3 or 4 input); null when invalid or unsupported. */
export function convGeom(node: Node, inS: number[], kS: number[]): SpatialGeom | null {
  const sp = inS.length;
  if (sp < 1 || sp > 2) return null;
  const w = convWindow(node, inS, kS, 1);
  if (!w) return null;
  const { strides, dils, pads, outS: out } = w;
  return { g: geom2(inS, kS, out, strides, pads.slice(0, sp), dils), outSpatial: out, padEnd: sp === 1 ? [0, pads[1]] : [pads[2], pads[3]] };
}

export function geom2(inS: number[], kS: number[], outS: number[], strides: number[], padB: number[], dils: number[]): Geom2 {
  const two = (v: number[], fill: number) => (v.length === 1 ? [fill, v[0]] : v);
  const [iH, iW] = two(inS, 1), [kH, kW] = two(kS, 1), [oH, oW] = two(outS, 1);
  const [sH, sW] = two(strides, 1), [pH, pW] = two(padB, 0), [dH, dW] = two(dils, 1);
  return { iH, iW, kH, kW, oH, oW, sH, sW, pH, pW, dH, dW };
}

const prod = (v: readonly number[]) => v.reduce((a, b) => a * b, 1);

/** Plans a Conv node with an optional fused activation (the fusion pass calls this with act set). */
export function planConv(node: Node, inputs: (ValueDesc | undefined)[], ctx: PlanContext, act: ConvActivation = NO_ACT): OpPlan | null {
  const [x, w, b] = inputs;
  if (!x || !w || x.dtype !== 'float32' || w.dtype !== 'float32') return null;
  if (b && (b.dtype !== 'float32' || prod(b.dims) !== w.dims[0])) return null;
  const r = x.dims.length;
  if ((r !== 3 && r !== 4) || w.dims.length !== r) return null;
  const [N, C] = x.dims, M = w.dims[0];
  const group = attrInt(node, 'group', 1);
  if (group < 1 || C % group !== 0 || M % group !== 0 || w.dims[1] * group !== C) return null;
  const kS = w.dims.slice(2);
  const ks = attrInts(node, 'kernel_shape');
  if (ks && (ks.length !== kS.length || ks.some((k, i) => k !== kS[i]))) return null;
  const geo = convGeom(node, x.dims.slice(2), kS);
  if (!geo) return null;
  const { g } = geo;
  const outDims = [N, M, ...geo.outSpatial];
  const outputs = [{ dtype: 'float32' as const, dims: outDims }];
  if (prod(outDims) === 0) return { outputs, launches: () => [] };
  const inPlane = g.iH * g.iW, P = g.oH * g.oW;
  const Cg = C / group, Mg = M / group, KK = g.kH * g.kW, R = Cg * KK;
  const hasBias = !!b;
  if (prod(x.dims) === 0 || R === 0) return null;
  // Tuning (the GEMM paths): the signature names the conv; the ragged case keeps batch, kernel and, when grouped, the
  // channels (divisibility), and makes the channels (group 1) and the spatial sizes odd.
  const convDesc = (path: string) => `Conv:${path}:x${x.dims.join(',')}:w${w.dims.join(',')}:${geomKey(g)}:g${group}:${hasBias ? 'b' : ''}:${actKey(act)}`;
  const ragged: TuneSite['ragged'] = (d) => {
    const [xd, wd] = d;
    const rc = (n: number) => (group === 1 ? raggedSize(n) : n);
    const C2 = rc(xd[1]), M2 = rc(wd[0]);
    const sp = xd.slice(2).map((n, i) => {
      const k = wd[2 + i], dil = xd.length === 3 ? g.dW : i === 0 ? g.dH : g.dW;
      return Math.max(raggedSize(n), dil * (k - 1) + 1);
    });
    const out = [[xd[0], C2, ...sp], [M2, group === 1 ? C2 : wd[1], ...wd.slice(2)]];
    if (d[2]) out.push([M2]);
    return out;
  };

  if (Cg === 1 && Mg === 1) {
    const planes = N * C;
    const tasks = taskCount(planes * P * KK, ctx.threads, 1 << 15);
    const ppt = Math.ceil(planes / Math.min(tasks, planes));
    const nt0 = Math.ceil(planes / ppt);
    // Small planes (borders a large share of the work) run on zero-padded copies in per-task scratch.
    const { slotBytes } = depthwisePadding(g);
    const padded = slotBytes * nt0 <= 8 * 1024 * 1024;
    const dw = { planes, C, g, bias: hasBias, act, relaxed: ctx.relaxedSimd, ppt, padded };
    const kernel = genDepthwise(dw);
    const nt = depthwiseTasks(dw);
    return {
      outputs,
      scratchBytes: padded ? slotBytes * nt : 0,
      launches: (bf) => [{ kernel, args: [bf.inputs[0], bf.inputs[1], hasBias ? bf.inputs[2] : 0, bf.outputs[0], bf.scratch], tasks: nt }],
    };
  }

  const narrow = planNarrow(node, inputs, ctx, act, g, outputs);
  if (narrow) return narrow;

  const pointwise = KK === 1 && g.sH === 1 && g.sW === 1 && g.pH === 0 && g.pW === 0 && g.oH === g.iH && g.oW === g.iW;
  if (pointwise && group === 1 && P >= POINTWISE_GEMM_MIN_P) {
    return planPointwise(N, C, M, P, hasBias, act, ctx, outputs, (tm, tn, tk, tb) => pickGemm(ctx, 'conv', convDesc('pointwise'), tm, tn, tk, tb, ragged));
  }
  if (pointwise) {
    // Grouped (or narrow-plane) 1x1: the conv GEMM reads the input in place.
    const tile = convGemmTile(Mg, R, P, N * group, ctx.threads);
    // Constant weights are packed once into tiles of mr rows (one contiguous stream per register tile).
    const wc = w.constant;
    let packedW = -1;
    if (wc && wc.data instanceof Float32Array && tile.mr > 1) {
      const data = wc.data;
      packedW = ctx.constant(w.name, `convA:g${group}:${Mg}x${R}:mr${tile.mr}`, () => new Uint8Array(packConvA(data, group, Mg, R, tile.mr).buffer));
    }
    const packedA = packedW >= 0;
    const aStride = packedA ? Math.ceil(Mg / tile.mr) * tile.mr * R : Mg * R;
    const p = {
      M: Mg, K: R, P, lda: R, ldb: P, ldc: P, ...tile, bias: hasBias, act, relaxed: ctx.relaxedSimd, packedA,
      batch: { dims: [N, group], a: [0, aStride], b: [C * P, Cg * P], c: [M * P, Mg * P], bias: [0, Mg] },
    };
    const kernel = genConvGemm(p);
    const tasks = convGemmTasks(p);
    return {
      outputs,
      launches: (bf) => [{ kernel, args: [packedA ? packedW : bf.inputs[1], bf.inputs[0], bf.outputs[0], hasBias ? bf.inputs[2] : 0], tasks }],
    };
  }
  // The unfolded input in the GEMM's B panels, times W_g [Mg x R]: COL_g [R x P] per group and batch item; the bias
  // enters as a residual constant along P.
  const { tile: gt, relaxed, fault } = pickGemm(ctx, 'conv', convDesc(group === 1 ? 'unfold' : 'im2col'), Mg, P, R, group, ragged);
  const psize = packedBSize(R, P, gt.nr);
  const epilogue: GemmEpilogue = {};
  if (hasBias) Object.assign(epilogue, { residual: true, residualStrideM: 1, residualStrideN: 0 });
  if (act.kind !== 'none') epilogue.postAct = { key: actKey(act), emit: (f, v, t) => emitConvAct(f, act, v, t) };
  const gp: GemmParams = {
    M: Mg, N: P, K: R, sAm: R, sAk: 1, tile: gt, relaxed, epilogue, fault,
    batch: group > 1 ? { dims: [group], a: [Mg * R], b: [psize], r: [Mg] } : undefined,
  };
  if (group === 1) {
    // One kernel: each task unfolds a group of output positions straight into GEMM panels in its own cache-sized
    // slot and multiplies every output channel on them (the unfolded input is never all in memory).
    const nPanels = Math.ceil(P / gt.nr);
    const panelBytes = R * gt.nr * 4;
    const ppt = Math.max(1, Math.min(nPanels, Math.floor(UNFOLD_SLOT_BYTES / panelBytes)));
    const nGroups = Math.ceil(nPanels / ppt);
    const tasks = taskCount(nGroups, ctx.threads, 1);
    // Few groups (a short 1-D signal, a small plane) for the threads: tasks also split the output channels.
    const nRB = Math.ceil(M / gt.mb);
    const rowSplits = ctx.threads > 1 && nGroups < 2 * ctx.threads ? Math.min(nRB, Math.ceil((2 * ctx.threads) / nGroups)) : 1;
    const fused: GemmParams = {
      ...gp, tile: { ...gt, panelsPerTask: ppt },
      unfoldB: {
        key: `im2colpk:${C}:${geomKey(g)}`, emit: (mod) => emitIm2colPacked(mod, C, g, gt.nr),
        groupsPerTask: rowSplits > 1 ? 1 : Math.ceil(nGroups / tasks), rowSplits,
      },
    };
    const fk = genGemm(fused);
    const fTasks = gemmTasks(fused);
    return {
      outputs,
      scratchBytes: fTasks * gemmUnfoldSlotBytes(fused),
      launches: (bf) => {
        const ls: Launch[] = [];
        for (let n = 0; n < N; n++) {
          ls.push({ kernel: fk, args: [bf.inputs[1], bf.inputs[0] + n * C * inPlane * 4, bf.outputs[0] + n * M * P * 4, 0, hasBias ? bf.inputs[2] : 0, bf.scratch], tasks: fTasks });
        }
        return ls;
      },
    };
  }
  // Grouped: unfold all channels, then pack each group's rows into panels.
  const colBytes = C * KK * P * 4;
  if (colBytes > 512 * 1024 * 1024) return null;
  const gk = genGemm(gp);
  const gTasks = gemmTasks(gp);
  const pp = { K: R, N: P, sBk: P, sBn: 1, nr: gt.nr, count: group, stride: R * P };
  const pack = genPackB(pp);
  const packTasks = packBTasks(pp);
  const itasks = taskCount(C * KK * P, ctx.threads, 1 << 14);
  const cpt = Math.ceil(C / Math.min(itasks, C));
  const im2col = genIm2col(C, g, cpt);
  const nIm = im2colTasks(C, cpt);
  const packOff = Math.ceil(colBytes / 64) * 64;
  return {
    outputs,
    scratchBytes: packOff + group * psize * 4,
    launches: (bf) => {
      const ls: Launch[] = [];
      const packed = bf.scratch + packOff;
      for (let n = 0; n < N; n++) {
        ls.push({ kernel: im2col, args: [bf.inputs[0] + n * C * inPlane * 4, bf.scratch], tasks: nIm });
        ls.push({ kernel: pack, args: [bf.scratch, packed], tasks: packTasks });
        ls.push({ kernel: gk, args: [bf.inputs[1], packed, bf.outputs[0] + n * M * P * 4, 0, hasBias ? bf.inputs[2] : 0], tasks: gTasks });
      }
      return ls;
    },
  };
}

/** Bytes of unfolded input a conv task keeps at once (its GEMM panels stay in the core's L2 while every row uses them). */
const UNFOLD_SLOT_BYTES = 160 * 1024;

/** From this many output positions a pointwise conv runs on the packed-B GEMM (narrower planes waste its 8-wide panels). */
const POINTWISE_GEMM_MIN_P = 16;

/**
 * A 1x1, stride 1, unpadded, group 1 conv is Y[n] = W[M x C] · X[n][C x P] (+ bias[m] per row): the input is packed
 * into the GEMM's B panels per run, the weights are read in place as A, and the bias enters as a residual that is
 * constant along N (stride 0). The activation runs in the GEMM's epilogue.
 */
function planPointwise(N: number, C: number, M: number, P: number, hasBias: boolean, act: ConvActivation, _ctx: PlanContext,
  outputs: OpPlan['outputs'], pick: (M: number, N: number, K: number, batch: number) => ReturnType<typeof pickGemm>): OpPlan {
  const { tile, relaxed, fault } = pick(M, P, C, N);
  const psize = packedBSize(C, P, tile.nr);
  const epilogue: GemmEpilogue = {};
  if (hasBias) Object.assign(epilogue, { residual: true, residualStrideM: 1, residualStrideN: 0 });
  if (act.kind !== 'none') epilogue.postAct = { key: actKey(act), emit: (f, v, t) => emitConvAct(f, act, v, t) };
  const params: GemmParams = {
    M, N: P, K: C, sAm: C, sAk: 1, tile, relaxed, epilogue, fault,
    batch: N > 1 ? { dims: [N], a: [0], b: [psize], r: [0] } : undefined,
  };
  const kernel = genGemm(params);
  const tasks = gemmTasks(params);
  const pp = { K: C, N: P, sBk: P, sBn: 1, nr: tile.nr, count: N, stride: C * P };
  const pack = genPackB(pp);
  const packTasks = packBTasks(pp);
  return {
    outputs,
    scratchBytes: N * psize * 4,
    launches: (bf) => [
      { kernel: pack, args: [bf.inputs[0], bf.scratch], tasks: packTasks },
      { kernel, args: [bf.inputs[1], bf.scratch, bf.outputs[0], 0, hasBias ? bf.inputs[2] : 0], tasks },
    ],
  };
}

/** Largest output plane (oH*oW) the narrow kernel takes; wider planes fill the GEMM's vectors along P. */
const NARROW_MAX_P = 4;
/** Below this many multiply-adds a narrow conv runs as one task: waking the other threads costs more. */
const NARROW_SPLIT_MACS = 1 << 20;

/** Few output positions, constant weights (packed once), group 1: vectors across output channels. */
function planNarrow(node: Node, inputs: (ValueDesc | undefined)[], ctx: PlanContext, act: ConvActivation, g: Geom2,
  outputs: OpPlan['outputs']): OpPlan | null {
  const [x, w, b] = inputs;
  if (!x || !w || attrInt(node, 'group', 1) !== 1) return null;
  const P = g.oH * g.oW;
  if (P > NARROW_MAX_P || !narrowSupported(g)) return null;
  const wc = w.constant, bc = b?.constant;
  if (!wc || !(wc.data instanceof Float32Array) || (b && !(bc && bc.data instanceof Float32Array))) return null;
  const [N, C] = x.dims, M = w.dims[0];
  const R = C * g.kH * g.kW;
  const mt = narrowTile(P, M);
  const units = N * Math.ceil(M / mt);
  const macs = N * M * P * R;
  const tasks = macs < NARROW_SPLIT_MACS ? 1 : Math.min(units, taskCount(macs, ctx.threads, NARROW_SPLIT_MACS / 4));
  const p = { N, C, M, g, mt, upt: Math.ceil(units / tasks), bias: !!b, act, relaxed: ctx.relaxedSimd };
  const wData = wc.data;
  const wp = ctx.constant(w.name, `convNarrow:${M}x${R}:mt${mt}`, () => new Uint8Array(packConvNarrow(wData, M, R, mt).buffer));
  const bData = bc?.data as Float32Array | undefined;
  const bp = bData ? ctx.constant(b!.name, `convNarrowBias:${M}:mt${mt}`, () => new Uint8Array(packBiasNarrow(bData, M, mt).buffer)) : 0;
  const kernel = genConvNarrow(p);
  const nt = narrowTasks(p);
  return { outputs, launches: (bf) => [{ kernel, args: [bf.inputs[0], wp, bp, bf.outputs[0]], tasks: nt }] };
}

registerWasmOp('Conv', (node, inputs, ctx) => (node.domain === '' ? planConv(node, inputs, ctx) : null));

/** webjit.FusedConv (graph/fuse_conv.ts): the conv kernels apply the activation as they store. */
registerWasmOp('FusedConv', (node, inputs, ctx) => {
  if (node.domain !== 'webjit') return null;
  const num = (k: string) => { const v = node.attrs.get(k)?.value; return typeof v === 'number' ? v : NaN; };
  let act: ConvActivation;
  switch (node.attrs.get('activation')?.value) {
    case 'relu': act = { kind: 'relu' }; break;
    case 'sigmoid': act = { kind: 'sigmoid' }; break;
    case 'hardswish': act = { kind: 'hardswish' }; break;
    case 'clip': act = { kind: 'clip', min: num('act_min'), max: num('act_max') }; break;
    case 'hardsigmoid': act = { kind: 'hardsigmoid', alpha: num('act_alpha'), beta: num('act_beta') }; break;
    default: return null;
  }
  if (Object.values(act).some((v) => typeof v === 'number' && Number.isNaN(v))) return null;
  return planConv(node, inputs, ctx, act);
});
