// Wasm webjit.FusedMatMul (f32): one packed-B GEMM whose epilogue adds the bias, applies the activation and adds the residual.
import type { GemmActivation, GemmEpilogue, GemmParams } from '../kernels/gemm.js';
import { gemmTasks, genGemm, genPackB, packBHost, packBTasks, packedBSize } from '../kernels/gemm.js';
import { type Launch, registerWasmOp } from '../kernel.js';
import { pickGemm } from './matmul.js';
import { epKey } from '../kernels/gemm.js';
import { raggedByValue } from '../tune.js';
import { tryBroadcastShape as broadcast } from '../../../ops/util.js';
import { sizeOf } from '../../../tensor.js';

const ACTIVATIONS: ReadonlySet<string> = new Set(['none', 'relu', 'sigmoid', 'tanh', 'gelu', 'gelu_tanh', 'silu']);


registerWasmOp('FusedMatMul', (node, inputs, ctx) => {
  if (node.domain !== 'webjit') return null;
  const [a, b, bias, res] = inputs;
  if (!a || !b || !bias || inputs.length > 4) return null;
  if ([a, b, bias, res].some((v) => v && v.dtype !== 'float32')) return null;
  const actAttr = node.attrs.get('activation')?.value ?? 'none';
  if (typeof actAttr !== 'string' || !ACTIVATIONS.has(actAttr)) return null;
  const act = actAttr as GemmActivation;
  if (a.dims.length === 0 || b.dims.length !== 2) return null;
  const [K, N] = b.dims;
  if (a.dims[a.dims.length - 1] !== K || K === 0) return null;
  // B is shared by every row of A: the leading dims fold into M.
  const mmDims = a.dims.length === 1 ? [N] : [...a.dims.slice(0, -1), N];
  const M = a.dims.length === 1 ? 1 : sizeOf(a.dims.slice(0, -1));
  // The bias is 1 along every dim but the last (N, or 1 to broadcast a scalar).
  const bd = bias.dims;
  if (bd.length === 0 || bd.slice(0, -1).some((d) => d !== 1)) return null;
  const bLast = bd[bd.length - 1];
  if (bLast !== N && bLast !== 1) return null;
  let outDims = broadcast(mmDims, bd);
  if (!outDims || sizeOf(outDims) !== sizeOf(mmDims)) return null;
  if (res) {
    const od = broadcast(outDims, res.dims);
    // Only a residual with the output's full shape (row-major [M, N]) fuses.
    if (!od || od.length !== res.dims.length || od.some((d, i) => d !== res.dims[i]) || sizeOf(od) !== sizeOf(mmDims)) return null;
    outDims = od;
  }
  const outputs = [{ dtype: 'float32' as const, dims: outDims }];
  if (M === 0 || N === 0) return { outputs, launches: () => [] };

  const epilogue: GemmEpilogue = { bias: true, biasStride: bLast === N ? 1 : 0, act };
  if (res) Object.assign(epilogue, { residual: true, residualStrideM: N, residualStrideN: 1, residualAfterAct: true });
  const bConst = !!b.constant && b.constant.data instanceof Float32Array;
  const { tile, relaxed, fault } = pickGemm(ctx, 'matmul', `FusedMatMul${bConst ? 'c' : ''}:${epKey(epilogue)}`, M, N, K, 1, (d) => raggedByValue(d));
  const params: GemmParams = { M, N, K, sAm: K, sAk: 1, tile, relaxed, epilogue, fault };
  const kernel = genGemm(params);
  const tasks = gemmTasks(params);
  const psize = packedBSize(K, N, tile.nr);
  const c = b.constant;
  let packed = -1;
  if (c && c.data instanceof Float32Array) {
    const data = c.data;
    // The same transform key as the MatMul op's, so one packed copy serves both.
    packed = ctx.constant(b.name, `packB:nr${tile.nr}:t0:${K}x${N}`, () => new Uint8Array(packBHost(data, 0, K, N, N, 1, tile.nr).buffer));
  }
  const pack = packed < 0
    ? { kernel: genPackB({ K, N, sBk: N, sBn: 1, nr: tile.nr }), tasks: packBTasks({ K, N, sBk: N, sBn: 1, nr: tile.nr }) }
    : undefined;
  return {
    outputs,
    scratchBytes: pack ? psize * 4 : 0,
    launches: (bufs) => {
      const bp = pack ? bufs.scratch : packed;
      const ls: Launch[] = [];
      if (pack) ls.push({ kernel: pack.kernel, args: [bufs.inputs[1], bp], tasks: pack.tasks });
      ls.push({ kernel, args: [bufs.inputs[0], bp, bufs.outputs[0], bufs.inputs[2], res ? bufs.inputs[3] : 0], tasks });
      return ls;
    },
  };
});
