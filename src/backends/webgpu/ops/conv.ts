// WebGPU Conv, FusedConv and ConvTranspose (f32, NCHW, 1-D and 2-D): an implicit GEMM with shared-memory tiles and
// register tiles for dense and grouped convs, a direct kernel for depthwise, a gather kernel for ConvTranspose.
// Every size is baked into the WGSL; bias and the fused activation are applied in the store.
import type { Node } from '../../../graph/ir.js';
import { sizeOf } from '../../../tensor.js';
import { convTransposeShape } from '../../../ops/conv.js';
import { attrInt, attrInts, attrStr, convWindow } from '../../op_attrs.js';
import { activationExpr, mathPrelude } from '../../../codegen/wgsl/math.js';
import { GRID_PARAMS, LINEAR_GROUP, f32Lit, grid, registerGpuOp, storageDecls, type Binding, type Dispatch, type GpuOpPlan, type GpuPlanContext,
  type GpuValueDesc } from '../kernel.js';
import { enumerate, raggedSize, spaceSize, withDefault, type Params, type TuneSite } from '../../../tune/site.js';
import { FMA_ASSIGN, dropBarrier, f16Accumulate, faultOf, replaceAll, replaceFirst, withoutFault } from '../faults.js';
import { nodeSig, np2 } from '../sites.js';

/** A 2-D convolution's geometry (1-D convs have iH = kH = oH = 1). */
export interface ConvGeom2 {
  iH: number; iW: number; kH: number; kW: number; oH: number; oW: number;
  sH: number; sW: number; pH: number; pW: number; dH: number; dW: number;
}

/** The fused activation of a FusedConv (graph/fuse_conv.ts): a WGSL expression of `v` via math.ts. */
export interface ConvAct { kind: string; alpha: number; beta: number }
const NO_ACT: ConvAct = { kind: 'none', alpha: 0, beta: 0 };

export { attrInt, attrInts, attrStr };

/** Folds 1-D (length-1 lists) into 2-D with a unit leading axis. */
function two(v: readonly number[], fill: number): [number, number] {
  return v.length === 1 ? [fill, v[0]] : [v[0], v[1]];
}

const u = (n: number) => `${n}u`;
const i = (n: number) => `${n}i`;

/** Conv output geometry as the reference computes it; null for what is invalid or not 1-D / 2-D. */
function convGeometry(node: Node, inS: number[], kS: number[]): { g: ConvGeom2; outS: number[] } | null {
  const sp = inS.length;
  if (sp < 1 || sp > 2) return null;
  const w = convWindow(node, inS, kS, 0);
  if (!w) return null;
  const { strides, dils, pads, outS } = w;
  const [iH, iW] = two(inS, 1), [kH, kW] = two(kS, 1), [oH, oW] = two(outS, 1);
  const [sH, sW] = two(strides, 1), [dH, dW] = two(dils, 1), [pH, pW] = two(pads.slice(0, sp), 0);
  return { g: { iH, iW, kH, kW, oH, oW, sH, sW, pH, pW, dH, dW }, outS };
}

/** `fn epilogue(v, m)`: bias of output channel m, then the activation. */
function epilogueFn(hasBias: boolean, act: ConvAct): string {
  const body = act.kind === 'clip' ? clipExpr('r', act.alpha, act.beta) : activationExpr(act.kind, 'r', act.alpha, act.beta);
  if (body === null) throw new RangeError(`no WGSL for conv activation ${act.kind}`);
  return `fn epilogue(v: f32, m: u32) -> f32 {
  let r = v${hasBias ? ' + bias[m]' : ''};
  return ${body};
}`;
}

/** Clip with an open side (±Inf bound) left out: an infinite WGSL constant does not compile. */
function clipExpr(x: string, lo: number, hi: number): string {
  let e = x;
  if (lo !== -Infinity) e = `max(${e}, ${f32Lit(lo)})`;
  if (hi !== Infinity) e = `min(${e}, ${f32Lit(hi)})`;
  return e;
}

/** A kernel with its math helpers prepended. */
const withPrelude = (code: string) => `${mathPrelude(code)}\n${code}`;

// --- weight packing -------------------------------------------------------------------------------

/**
 * A repacking of a weight tensor, done on the CPU for constants and by a kernel for weights computed in the graph:
 * packed element o reads source element src(o), or 0 where src gives -1 (padding).
 */
interface WeightPack {
  key: string;
  count: number;
  /** Source index on the CPU. */
  src(o: number): number;
  /** The same as WGSL statements that set `s: i32` from `o: u32`. */
  wgsl: string;
}

function packOnCpu(p: WeightPack, w: Float32Array): Float32Array {
  const out = new Float32Array(p.count);
  for (let o = 0; o < p.count; o++) { const s = p.src(o); if (s >= 0) out[o] = w[s]; }
  return out;
}

function packKernel(p: WeightPack): string {
  const WG = 256;
  return `${storageDecls([{ name: 'w', type: 'f32' }, { name: 'packed', type: 'f32', write: true }])}
@compute @workgroup_size(${WG})
fn main(${GRID_PARAMS}) {
  ${LINEAR_GROUP}
  let o = group * ${u(WG)} + lid;
  if (o >= ${u(p.count)}) { return; }
  var s = -1i;
  ${p.wgsl}
  packed[o] = select(0.0, w[u32(max(s, 0i))], s >= 0i);
}`;
}

/**
 * The weights as a binding: a constant packed once, or (weights computed in the graph) a scratch buffer that a first
 * dispatch fills. Returns the binding and the dispatches that must run first.
 */
function packedWeights(w: GpuValueDesc, p: WeightPack, ctx: GpuPlanContext, wInput: number, scratch: number):
  { binding: Binding; pre: Dispatch[]; scratchBytes?: number } {
  const c = w.constant;
  if (c && c.data instanceof Float32Array) {
    const data = c.data;
    return { binding: { constant: ctx.constant(w.name, p.key, () => packOnCpu(p, data)) }, pre: [] };
  }
  return {
    binding: { scratch },
    pre: [{ code: packKernel(p), bindings: [{ input: wInput }, { scratch }], groups: grid(Math.ceil(p.count / 256), ctx.caps.maxWorkgroupsPerDim) }],
    scratchBytes: p.count * 4,
  };
}

// --- Conv as an implicit GEMM -----------------------------------------------------------------------

/**
 * Tile of the implicit GEMM: a workgroup computes BM output positions × BN output channels, a thread RM consecutive
 * positions (RM/4 vec4 reads of the A tile) × 4 consecutive channels (one vec4 of the packed weights).
 */
export interface GemmTile { BM: number; BN: number; BK: number; RM: number }

export interface ConvGemmParams {
  N: number; C: number; M: number; group: number; g: ConvGeom2; tile: GemmTile; hasBias: boolean; act: ConvAct;
  /** Split-K slices (default 1: the kernel applies the epilogue itself). */
  splits?: number;
}

/** Rows of the packed weights per group (K rounded up to BK) and channels per row (Mg rounded up to BN). */
function gemmPackDims(K: number, Mg: number, t: GemmTile): { KP: number; MGP: number } {
  return { KP: Math.ceil(K / t.BK) * t.BK, MGP: Math.ceil(Mg / t.BN) * t.BN };
}

/** W [M, Cg, kH, kW] as [group][KP][MGP]: one row of output channels per reduction index k (vec4 reads along N). */
function gemmWeightPack(M: number, group: number, K: number, t: GemmTile): WeightPack {
  const Mg = M / group;
  const { KP, MGP } = gemmPackDims(K, Mg, t);
  return {
    key: `convgemm:g${group}:${Mg}x${K}:kp${KP}:mp${MGP}`,
    count: group * KP * MGP,
    src: (o) => {
      const mp = o % MGP, r = Math.floor(o / MGP), kp = r % KP, g = Math.floor(r / KP);
      return kp < K && mp < Mg ? (g * Mg + mp) * K + kp : -1;
    },
    wgsl: `let mp = o % ${u(MGP)}; let r = o / ${u(MGP)}; let kp = r % ${u(KP)}; let g = r / ${u(KP)};
  if (kp < ${u(K)} && mp < ${u(Mg)}) { s = i32((g * ${u(Mg)} + mp) * ${u(K)} + kp); }`,
  };
}

/** A 1×1, stride 1, unpadded conv reads the input as the GEMM's A matrix in place (no window arithmetic). */
function isPointwise(g: ConvGeom2): boolean {
  return g.kH === 1 && g.kW === 1 && g.sH === 1 && g.sW === 1 && g.pH === 0 && g.pW === 0 && g.oH === g.iH && g.oW === g.iW;
}

/**
 * Per reduction index k = (c, kh, kw): the input offset from the window origin and the window row / column, so the
 * A-tile loads need no division. Indices past K get a row offset that fails the bounds check (they read 0).
 */
function kTable(Cg: number, g: ConvGeom2, KP: number): Int32Array {
  const K = Cg * g.kH * g.kW, KK = g.kH * g.kW;
  const t = new Int32Array(4 * KP);
  for (let k = 0; k < KP; k++) {
    if (k >= K) { t[4 * k + 1] = 1 << 30; continue; }
    const c = Math.floor(k / KK), r = k % KK, dh = Math.floor(r / g.kW) * g.dH, dw = (r % g.kW) * g.dW;
    t[4 * k] = c * g.iH * g.iW + dh * g.iW + dw;
    t[4 * k + 1] = dh;
    t[4 * k + 2] = dw;
  }
  return t;
}

/** The A-tile element (reduction index `k`) of this thread's position, as WGSL statements setting `v`. */
function gemmLoadA(p: ConvGemmParams): string {
  const { g } = p;
  const K = (p.C / p.group) * g.kH * g.kW;
  const kOk = K % p.tile.BK === 0 ? '' : ` && k < ${u(K)}`;
  if (isPointwise(g)) return `if (aOk${kOk}) { v = x[xBase + k * ${u(g.iH * g.iW)} + ap]; }`;
  return `let e = ktab[k];
      let ih = ih0 + e.y;
      let iw = iw0 + e.z;
      if (aOk && u32(ih) < ${u(g.iH)} && u32(iw) < ${u(g.iW)}) { v = x[u32(xOrg + e.x)]; }`;
}

/**
 * The implicit-GEMM conv kernel: bindings x, packed w (vec4), the k table (unless pointwise), then bias? and y, or
 * (split K) the partial sums: workgroup z = (n·group + g)·splits + s sums k-tiles [s·per, (s+1)·per) into part[s].
 */
export function convGemmKernel(p: ConvGemmParams): string {
  const { g, tile: t, group } = p;
  const Cg = p.C / group, Mg = p.M / group, P = g.oH * g.oW, K = Cg * g.kH * g.kW;
  const { KP, MGP } = gemmPackDims(K, Mg, t);
  const S = p.splits ?? 1;
  const kTiles = KP / t.BK, per = Math.ceil(kTiles / S);
  const TX = t.BM / t.RM, TY = t.BN / 4, T = TX * TY, BN4 = t.BN / 4;
  const aLoads = Math.ceil((t.BK * t.BM) / T), bLoads = Math.ceil((t.BK * BN4) / T);
  const aGuard = (t.BK * t.BM) % T !== 0, bGuard = (t.BK * BN4) % T !== 0;
  const pointwise = isPointwise(g);
  const split = S > 1;
  const decls = storageDecls([
    { name: 'x', type: 'f32' }, { name: 'w', type: 'vec4<f32>' }, ...(pointwise ? [] : [{ name: 'ktab', type: 'vec4<i32>' }]),
    ...(p.hasBias && !split ? [{ name: 'bias', type: 'f32' }] : []), { name: 'y', type: 'f32', write: true },
  ]);
  const acc = Array.from({ length: t.RM }, (_, r) => `acc${r}`);
  // Split K: the partial sums of split s go to y[s] (a scratch buffer), the reduce kernel applies the epilogue.
  const store = split
    ? `y[yBase + m * ${u(P)} + p] = a[j];`
    : `y[yBase + m * ${u(P)} + p] = epilogue(a[j], g * ${u(Mg)} + m);`;
  const code = `${decls}
var<workgroup> As: array<vec4<f32>, ${(t.BK * t.BM) / 4}>;
var<workgroup> Bs: array<vec4<f32>, ${t.BK * BN4}>;
${split ? '' : epilogueFn(p.hasBias, p.act)}

@compute @workgroup_size(${T})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let s = wg.z % ${u(S)};
  let ng = wg.z / ${u(S)};
  let n = ng / ${u(group)};
  let g = ng % ${u(group)};
  let p0 = wg.x * ${u(t.BM)};
  let n0 = wg.y * ${u(t.BN)};
  let tx = lid % ${u(TX)};
  let ty = lid / ${u(TX)};
  // Each thread loads the A tile at one fixed position (column am), so its window origin is computed once.
  let am = lid % ${u(t.BM)};
  let ap = p0 + am;
  let aOk = ap < ${u(P)};
  let ih0 = i32(ap / ${u(g.oW)}) * ${i(g.sH)} - ${i(g.pH)};
  let iw0 = i32(ap % ${u(g.oW)}) * ${i(g.sW)} - ${i(g.pW)};
  let xBase = (n * ${u(p.C)} + g * ${u(Cg)}) * ${u(g.iH * g.iW)};
  let xOrg = i32(xBase) + ih0 * ${i(g.iW)} + iw0;
  let wBase = g * ${u(KP * (MGP / 4))} + n0 / 4u;
  ${acc.map((a) => `var ${a} = vec4<f32>(0.0);`).join('\n  ')}
  let kBegin = s * ${u(per * t.BK)};
  let kEnd = min(kBegin + ${u(per * t.BK)}, ${u(KP)});
  for (var k0 = kBegin; k0 < kEnd; k0 += ${u(t.BK)}) {
    for (var t = 0u; t < ${u(aLoads)}; t++) {
      let j = lid + t * ${u(T)};
      ${aGuard ? `if (j < ${u(t.BK * t.BM)}) {` : '{'}
      let k = k0 + j / ${u(t.BM)};
      var v = 0.0;
      ${gemmLoadA(p)}
      As[j / 4u][j % 4u] = v;
      }
    }
    for (var t = 0u; t < ${u(bLoads)}; t++) {
      let j = lid + t * ${u(T)};
      ${bGuard ? `if (j < ${u(t.BK * BN4)}) {` : '{'}
      Bs[j] = w[wBase + (k0 + j / ${u(BN4)}) * ${u(MGP / 4)} + j % ${u(BN4)}];
      }
    }
    workgroupBarrier();
    for (var kk = 0u; kk < ${u(t.BK)}; kk++) {
      let b = Bs[kk * ${u(BN4)} + ty];
      let ab = kk * ${u(t.BM / 4)} + tx * ${u(t.RM / 4)};
      ${Array.from({ length: t.RM / 4 }, (_, q) => `let a${q} = As[ab + ${u(q)}];`).join('\n      ')}
      ${acc.map((a, r) => `${a} = fma(vec4<f32>(a${r >> 2}[${r & 3}]), b, ${a});`).join('\n      ')}
    }
    workgroupBarrier();
  }
  let m0 = n0 + ty * 4u;
  let yBase = ((s * ${u(p.N)} + n) * ${u(p.M)} + g * ${u(Mg)}) * ${u(P)};
  ${acc.map((a, r) => `store(${a}, p0 + tx * ${u(t.RM)} + ${u(r)}, m0, g, yBase);`).join('\n  ')}
}

fn store(a: vec4<f32>, p: u32, m0: u32, g: u32, yBase: u32) {
  if (p >= ${u(P)}) { return; }
  for (var j = 0u; j < 4u; j++) {
    let m = m0 + j;
    if (m < ${u(Mg)}) { ${store} }
  }
}`;
  return withPrelude(code);
}

/** Sums the split-K partials (S slices of `total` outputs) and applies bias and activation. */
function splitReduceKernel(S: number, total: number, P: number, M: number, hasBias: boolean, act: ConvAct): string {
  const WG = 256;
  const decls = storageDecls([{ name: 'part', type: 'f32' }, ...(hasBias ? [{ name: 'bias', type: 'f32' }] : []), { name: 'y', type: 'f32', write: true }]);
  const code = `${decls}
${epilogueFn(hasBias, act)}

@compute @workgroup_size(${WG})
fn main(${GRID_PARAMS}) {
  ${LINEAR_GROUP}
  let idx = group * ${u(WG)} + lid;
  if (idx >= ${u(total)}) { return; }
  var a = part[idx];
  for (var s = 1u; s < ${u(S)}; s++) { a += part[s * ${u(total)} + idx]; }
  y[idx] = epilogue(a, (idx / ${u(P)}) % ${u(M)});
}`;
  return withPrelude(code);
}

/**
 * A thread loads the A tile at one fixed position, which needs the thread count (BM/RM · BN/4) to be a multiple of
 * BM; a thread's positions are whole vec4s.
 */
export function validTile(t: GemmTile): boolean {
  const T = (t.BM / t.RM) * (t.BN / 4);
  return t.RM % 4 === 0 && t.BN % 4 === 0 && t.BM % t.RM === 0 && Number.isInteger(T) && T % t.BM === 0 && T <= 256 && t.BK % 4 === 0;
}

/**
 * A tile for a conv of P positions, Mg channels per group, `units` (batch × groups) independent GEMMs and kTiles
 * reduction tiles. Measured on an H100 (PP-OCRv4 shapes): 4×4 register tiles with 32 channels per workgroup beat
 * larger ones (more workgroups in flight); a long reduction keeps 64 positions and is split across workgroups instead.
 */
function chooseGemmTile(P: number, Mg: number, units: number, kTiles: number): GemmTile {
  const BN = Mg <= 16 ? 16 : 32;
  const wgs64 = Math.ceil(P / 64) * Math.ceil(Mg / BN) * units;
  const BM = P > 32 && (wgs64 >= 128 || kTiles >= 2 * SPLIT_MIN_TILES) ? 64 : 32;
  return { BM, BN, BK: 16, RM: 4 };
}

/** Threads in flight below which a long reduction is split across workgroups (a second pass sums the slices). */
const SPLIT_BELOW_THREADS = 24576;
/** Threads a split-K conv aims for, and the fewest k-tiles a slice gets. */
const SPLIT_TARGET_THREADS = 32768;
const SPLIT_MIN_TILES = 6;

function chooseSplits(wgs: number, threadsPerWg: number, kTiles: number): number {
  const threads = wgs * threadsPerWg;
  if (threads >= SPLIT_BELOW_THREADS) return 1;
  const S = Math.min(Math.ceil(SPLIT_TARGET_THREADS / threads), Math.floor(kTiles / SPLIT_MIN_TILES));
  if (S < 2) return 1;
  // Equal slices: no slice is left empty.
  return Math.ceil(kTiles / Math.ceil(kTiles / S));
}

// --- depthwise (one input channel per group) --------------------------------------------------------

export interface DepthwiseParams {
  N: number; C: number; M: number; g: ConvGeom2; hasBias: boolean; act: ConvAct;
  /** Outputs per thread along W (default depthwiseRun) and threads per workgroup (default 256). */
  RW?: number; WG?: number;
}

/** Outputs a depthwise thread computes along W (they share the input row loads). */
function depthwiseRun(g: ConvGeom2): number {
  return Math.min(4, g.oW);
}

/**
 * Direct depthwise conv (also with a channel multiplier M/C): a thread computes RW consecutive outputs of one row,
 * loading each input row span once and holding it in registers; the tap loops are unrolled.
 */
export function depthwiseKernel(p: DepthwiseParams): string {
  const { g } = p;
  const RW = p.RW ?? depthwiseRun(g);
  const OWB = Math.ceil(g.oW / RW);
  const total = p.N * p.M * g.oH * OWB;
  const mult = p.M / p.C;
  const span = (RW - 1) * g.sW + (g.kW - 1) * g.dW + 1;
  const WG = p.WG ?? 256;
  const rows: string[] = [];
  for (let t = 0; t < span; t++) {
    // Only the span positions some tap reads.
    const used = Array.from({ length: RW }, (_, r) => r * g.sW).some((o) => (t - o) >= 0 && (t - o) % g.dW === 0 && (t - o) / g.dW < g.kW);
    if (!used) continue;
    rows.push(`let iw${t} = iw0 + ${i(t)};
      var x${t} = 0.0;
      if (u32(iw${t}) < ${u(g.iW)}) { x${t} = x[row + u32(iw${t})]; }`);
  }
  const fmas: string[] = [];
  for (let kw = 0; kw < g.kW; kw++) {
    fmas.push(`let w${kw} = w[wRow + ${u(kw)}];`);
    for (let r = 0; r < RW; r++) fmas.push(`a${r} = fma(x${r * g.sW + kw * g.dW}, w${kw}, a${r});`);
  }
  const decls = storageDecls([
    { name: 'x', type: 'f32' }, { name: 'w', type: 'f32' },
    ...(p.hasBias ? [{ name: 'bias', type: 'f32' }] : []), { name: 'y', type: 'f32', write: true },
  ]);
  const code = `${decls}
${epilogueFn(p.hasBias, p.act)}

@compute @workgroup_size(${WG})
fn main(${GRID_PARAMS}) {
  ${LINEAR_GROUP}
  let idx = group * ${u(WG)} + lid;
  if (idx >= ${u(total)}) { return; }
  let owb = idx % ${u(OWB)};
  var rest = idx / ${u(OWB)};
  let oh = rest % ${u(g.oH)};
  rest = rest / ${u(g.oH)};
  let m = rest % ${u(p.M)};
  let n = rest / ${u(p.M)};
  let xb = (n * ${u(p.C)} + m / ${u(mult)}) * ${u(g.iH * g.iW)};
  let ow0 = owb * ${u(RW)};
  let iw0 = i32(ow0) * ${i(g.sW)} - ${i(g.pW)};
  ${Array.from({ length: RW }, (_, r) => `var a${r} = 0.0;`).join('\n  ')}
  for (var kh = 0u; kh < ${u(g.kH)}; kh++) {
    let ih = i32(oh) * ${i(g.sH)} - ${i(g.pH)} + i32(kh) * ${i(g.dH)};
    if (u32(ih) < ${u(g.iH)}) {
      let row = xb + u32(ih) * ${u(g.iW)};
      let wRow = (m * ${u(g.kH)} + kh) * ${u(g.kW)};
      ${rows.join('\n      ')}
      ${fmas.join('\n      ')}
    }
  }
  let yb = ((n * ${u(p.M)} + m) * ${u(g.oH)} + oh) * ${u(g.oW)} + ow0;
  ${Array.from({ length: RW }, (_, r) => (r === 0 ? `y[yb] = epilogue(a0, m);` : `if (ow0 + ${u(r)} < ${u(g.oW)}) { y[yb + ${u(r)}] = epilogue(a${r}, m); }`)).join('\n  ')}
}`;
  return withPrelude(code);
}

// --- planning --------------------------------------------------------------------------------------

/** Plans a Conv (act: the FusedConv activation) or returns null for what the kernels do not cover. */
export function planConv(node: Node, inputs: (GpuValueDesc | undefined)[], ctx: GpuPlanContext, act: ConvAct = NO_ACT,
  tileOverride?: GemmTile): GpuOpPlan | null {
  const [x, w, b] = inputs;
  if (!x || !w || x.dtype !== 'float32' || w.dtype !== 'float32') return null;
  const r = x.dims.length;
  if ((r !== 3 && r !== 4) || w.dims.length !== r) return null;
  const [N, C] = x.dims, M = w.dims[0];
  if (b && (b.dtype !== 'float32' || sizeOf(b.dims) !== M)) return null;
  const group = attrInt(node, 'group', 1);
  if (group < 1 || C % group !== 0 || M % group !== 0 || w.dims[1] * group !== C) return null;
  const kS = w.dims.slice(2);
  const ks = attrInts(node, 'kernel_shape');
  if (ks && (ks.length !== kS.length || ks.some((k, a) => k !== kS[a]))) return null;
  const geo = convGeometry(node, x.dims.slice(2), kS);
  if (!geo) return null;
  const { g } = geo;
  const outputs = [{ dtype: 'float32' as const, dims: [N, M, ...geo.outS] }];
  if (sizeOf(outputs[0].dims) === 0) return { outputs, dispatches: [] };
  const Cg = C / group, Mg = M / group, K = Cg * g.kH * g.kW;
  if (K === 0 || sizeOf(x.dims) === 0) return null;
  const hasBias = !!b;
  const tail: Binding[] = [...(hasBias ? [{ input: 2 }] : []), { output: 0 }];
  const maxDim = ctx.caps.maxWorkgroupsPerDim;

  const P = g.oH * g.oW;
  const BK = 16;
  const kTilesOf = (t: GemmTile) => gemmPackDims(K, Mg, t).KP / t.BK;
  const threadsOf = (t: GemmTile) => (t.BM / t.RM) * (t.BN / 4);
  const wgsOf = (t: GemmTile) => Math.ceil(P / t.BM) * Math.ceil(Mg / t.BN) * N * group;
  const gemmFits = (t: GemmTile) => validTile(t) && threadsOf(t) <= ctx.caps.maxInvocations &&
    (t.BK * t.BM + t.BK * t.BN) * 4 <= ctx.caps.maxWorkgroupStorage;
  const gemmDefault = (): Params => {
    const t = tileOverride && validTile(tileOverride) ? tileOverride : chooseGemmTile(P, Mg, N * group, Math.ceil(K / BK));
    return { kind: 'gemm', ...t, splits: chooseSplits(wgsOf(t), threadsOf(t), kTilesOf(t)) };
  };
  const depthwise = Cg === 1;
  const def: Params = depthwise ? { kind: 'depthwise', RW: depthwiseRun(g), WG: 256 } : gemmDefault();
  const picked = ctx.pick(convSite(node, inputs, act, def, {
    depthwise, P, Mg, oW: g.oW, units: N * group, kTilesOf, gemmFits, wgsOf, maxInv: ctx.caps.maxInvocations,
  }));
  const fault = faultOf(picked);
  let p = withoutFault(picked);
  // Depthwise has no barrier to remove: the barrier fault runs the grouped implicit GEMM (which covers depthwise too).
  if (depthwise && fault === 'barrier') p = gemmDefault();
  const tileOfP = (q: Params): GemmTile => ({ BM: Number(q.BM), BN: Number(q.BN), BK: Number(q.BK), RM: Number(q.RM) });
  const fits = (q: Params) => q.kind === 'depthwise'
    ? depthwise && Number(q.RW) >= 1 && Number(q.WG) >= 1 && Number(q.WG) <= ctx.caps.maxInvocations
    : q.kind === 'gemm' && gemmFits(tileOfP(q)) && Number(q.splits) >= 1;
  if (!fits(p)) p = def;
  const mutate = (code: string, kind: 'gemm' | 'depthwise' | 'reduce', last: boolean): string => {
    if (!fault) return code;
    switch (fault) {
      case 'edge':
        if (kind === 'gemm') return replaceFirst(code, `if (p >= ${u(P)}) { return; }`, `if (p + 1u >= ${u(P)}) { return; }`, 'conv store guard');
        if (kind === 'depthwise') return replaceFirst(code, /if \(idx >= (\d+)u\) \{ return; \}/, 'if (idx + 1u >= $1u) { return; }', 'depthwise guard');
        return code;
      case 'barrier':
        return kind === 'gemm' ? dropBarrier(code, 0) : code;
      case 'epilogue':
        if (!last) return code;
        if (hasBias) return replaceFirst(code, '+ bias[m]', '+ bias[m + 1u]', 'conv bias index');
        return replaceAll(code, /y\[([^\]\n]+)\] = epilogue\(/g, 'y[$1 + 1u] = epilogue(', 'conv output index');
      case 'f16acc':
        if (kind === 'gemm') return f16Accumulate(code, FMA_ASSIGN('acc\\d+'), 4, ctx.caps.f16);
        if (kind === 'depthwise') return f16Accumulate(code, FMA_ASSIGN('a\\d+'), 1, ctx.caps.f16);
        return code;
    }
  };

  if (p.kind === 'depthwise') {
    const RW = Number(p.RW), WG = Number(p.WG);
    const code = mutate(depthwiseKernel({ N, C, M, g, hasBias, act, RW, WG }), 'depthwise', true);
    const threads = N * M * g.oH * Math.ceil(g.oW / RW);
    return { outputs, dispatches: [{ code, bindings: [{ input: 0 }, { input: 1 }, ...tail], groups: grid(Math.ceil(threads / WG), maxDim) }] };
  }

  const tile = tileOfP(p);
  const { KP } = gemmPackDims(K, Mg, tile);
  const kTiles = KP / tile.BK;
  // Equal slices, none empty, at most one per k-tile (a forced split is clamped to the shape).
  let S = Math.max(1, Math.min(Math.floor(Number(p.splits)), kTiles));
  S = Math.ceil(kTiles / Math.ceil(kTiles / S));
  const groups: [number, number, number] = [Math.ceil(P / tile.BM), Math.ceil(Mg / tile.BN), N * group * S];
  if (groups.some((n) => n > maxDim)) return null;
  const total = N * M * P;
  // Scratch 0: the repacked weights when they are computed in the graph; the split-K partials after them.
  const pack = packedWeights(w, gemmWeightPack(M, group, K, tile), ctx, 1, 0);
  const scratchBytes = pack.scratchBytes ? [pack.scratchBytes] : [];
  const kt: Binding[] = isPointwise(g) ? [] : [{ constant: ctx.constant('#conv-ktab', `${Cg}:${JSON.stringify(g)}:${KP}`, () => kTable(Cg, g, KP)) }];
  const code = mutate(convGemmKernel({ N, C, M, group, g, tile, hasBias, act, splits: S }), 'gemm', S === 1);
  const head: Binding[] = [{ input: 0 }, pack.binding, ...kt];
  if (S === 1) {
    return {
      outputs, scratchBytes: scratchBytes.length ? scratchBytes : undefined,
      dispatches: [...pack.pre, { code, bindings: [...head, ...tail], groups }],
    };
  }
  const part = scratchBytes.length;
  scratchBytes.push(S * total * 4);
  return {
    outputs, scratchBytes,
    dispatches: [...pack.pre, { code, bindings: [...head, { scratch: part }], groups }, {
      code: mutate(splitReduceKernel(S, total, P, M, hasBias, act), 'reduce', true),
      bindings: [{ scratch: part }, ...tail],
      groups: grid(Math.ceil(total / 256), maxDim),
    }],
  };
}

const GEMM_AXES = { kind: ['gemm'], BM: [32, 64, 128], BN: [16, 32, 64], BK: [8, 16, 32], RM: [4, 8], splits: [1, 2, 4, 8] };
const DEPTHWISE_AXES = { kind: ['depthwise'], RW: [1, 2, 4, 8], WG: [64, 128, 256] };

interface ConvShape {
  depthwise: boolean; P: number; Mg: number; oW: number; units: number; maxInv: number;
  kTilesOf: (t: GemmTile) => number; gemmFits: (t: GemmTile) => boolean; wgsOf: (t: GemmTile) => number;
}

/**
 * The conv site: kind 'gemm' (implicit-GEMM tile BM, BN, BK, RM and split-K slices) or 'depthwise' (outputs per
 * thread RW, workgroup size WG). Pruned: tiles the kernel or device cannot run, fewer than 64 threads, tiles far past
 * the positions or the channels, splits that leave a slice fewer than 2 k-tiles or of convs that already have the
 * threads in flight the default's split-K rule wants (SPLIT_BELOW_THREADS), runs past the output width.
 */
function convSite(node: Node, inputs: (GpuValueDesc | undefined)[], act: ConvAct, def: Params, sh: ConvShape): TuneSite {
  return {
    family: 'conv',
    sig: nodeSig('conv', node, inputs, `act=${act.kind},${act.alpha},${act.beta}`),
    default: def,
    space: () => {
      if (sh.depthwise) {
        const cands = enumerate(DEPTHWISE_AXES, (q) => Number(q.RW) <= Math.max(1, np2(sh.oW)) && Number(q.WG) <= sh.maxInv);
        return { candidates: withDefault(def, cands), before: spaceSize(DEPTHWISE_AXES) };
      }
      const cands = enumerate(GEMM_AXES, (q) => {
        const t: GemmTile = { BM: Number(q.BM), BN: Number(q.BN), BK: Number(q.BK), RM: Number(q.RM) };
        const S = Number(q.splits);
        const threads = (t.BM / t.RM) * (t.BN / 4);
        return sh.gemmFits(t) && threads >= 64 && t.BM <= Math.max(32, np2(sh.P)) && t.BN <= Math.max(16, np2(sh.Mg)) &&
          (S === 1 || (sh.kTilesOf(t) >= 2 * S && sh.wgsOf(t) * threads < SPLIT_BELOW_THREADS));
      });
      return { candidates: withDefault(def, cands), before: spaceSize(GEMM_AXES) };
    },
    ragged: (dims) => {
      const [x, w, b] = dims;
      const sp = x.length - 2;
      const dils = attrInts(node, 'dilations') ?? new Array(sp).fill(1);
      // Spatial sizes ragged (never below the dilated window); channels too for a dense conv (group 1).
      const xs = x.slice(2).map((n, a) => Math.max(raggedSize(n), (w[2 + a] - 1) * (dils[a] ?? 1) + 1));
      const dense = attrInt(node, 'group', 1) === 1;
      const C2 = dense ? raggedSize(x[1]) : x[1], M2 = dense ? raggedSize(w[0]) : w[0];
      const out = [[x[0], C2, ...xs], [M2, dense ? C2 : w[1], ...w.slice(2)]];
      if (b) out.push(b.map((n) => (n === w[0] ? M2 : n)));
      return out;
    },
  };
}

registerGpuOp('Conv', (node, inputs, ctx) => (node.domain === '' ? planConv(node, inputs, ctx) : null));

/** webjit.FusedConv: the conv kernels apply the activation as they store. */
registerGpuOp('FusedConv', (node, inputs, ctx) => {
  if (node.domain !== 'webjit') return null;
  const num = (k: string) => { const v = node.attrs.get(k)?.value; return typeof v === 'number' ? v : NaN; };
  const kind = node.attrs.get('activation')?.value;
  let act: ConvAct;
  switch (kind) {
    case 'relu': case 'sigmoid': case 'hardswish': act = { kind, alpha: 0, beta: 0 }; break;
    case 'clip': act = { kind, alpha: num('act_min'), beta: num('act_max') }; break;
    case 'hardsigmoid': act = { kind, alpha: num('act_alpha'), beta: num('act_beta') }; break;
    default: return null;
  }
  if (Number.isNaN(act.alpha) || Number.isNaN(act.beta)) return null;
  return planConv(node, inputs, ctx, act);
});

// --- ConvTranspose -----------------------------------------------------------------------------------

export interface ConvTransposeParams { N: number; C: number; M: number; group: number; g: ConvGeom2; hasBias: boolean }

/** W [C, Mg, kH, kW] as [group][kH·kW][Cg][MGP] with MGP = Mg rounded up to 4: a vec4 of output channels per tap and input channel. */
function transposeWeightPack(C: number, Mg: number, group: number, KK: number): WeightPack {
  const Cg = C / group, MGP = Math.ceil(Mg / 4) * 4;
  return {
    key: `convT:g${group}:${Cg}x${Mg}x${KK}`,
    count: group * KK * Cg * MGP,
    src: (o) => {
      const mp = o % MGP, r = Math.floor(o / MGP), cl = r % Cg, r2 = Math.floor(r / Cg), tap = r2 % KK, g = Math.floor(r2 / KK);
      return mp < Mg ? ((g * Cg + cl) * Mg + mp) * KK + tap : -1;
    },
    wgsl: `let mp = o % ${u(MGP)}; let r = o / ${u(MGP)}; let cl = r % ${u(Cg)}; let r2 = r / ${u(Cg)}; let tap = r2 % ${u(KK)}; let g = r2 / ${u(KK)};
  if (mp < ${u(Mg)}) { s = i32(((g * ${u(Cg)} + cl) * ${u(Mg)} + mp) * ${u(KK)} + tap); }`,
  };
}

/**
 * The loop over the taps of one axis that reach output position `o{a}`, defining `k{a}` (tap) and `i{a}` (input
 * index). Without dilation only the taps k ≡ o + pad (mod stride) can reach it: the loop visits those alone, the same
 * count for every thread (no divergence between neighbours of other phases).
 */
function transposeAxisLoop(a: string, k: number, s: number, d: number, p: number, inLen: number): string {
  const o = `i32(o${a})`;
  if (d === 1) {
    const first = s === 1 ? '0i' : `((${o} + ${i(p)}) % ${i(s)} + ${i(s)}) % ${i(s)}`;
    return `let r${a} = ${first};
  for (var j${a} = 0i; j${a} < ${i(Math.ceil(k / s))}; j${a}++) {
    let k${a} = r${a} + j${a} * ${i(s)};
    let t${a} = ${o} + ${i(p)} - k${a};
    if (k${a} >= ${i(k)} || t${a} < 0i) { continue; }
    let i${a} = t${a} / ${i(s)};
    if (i${a} >= ${i(inLen)}) { continue; }`;
  }
  return `for (var k${a} = 0i; k${a} < ${i(k)}; k${a}++) {
    let t${a} = ${o} + ${i(p)} - k${a} * ${i(d)};
    if (t${a} < 0i || t${a} % ${i(s)} != 0i) { continue; }
    let i${a} = t${a} / ${i(s)};
    if (i${a} >= ${i(inLen)}) { continue; }`;
}

/**
 * ConvTranspose as a gather: a thread computes 4 output channels at one output position, summing over the taps that
 * reach it and the group's input channels (one input read per vec4 of weights).
 */
export function convTransposeKernel(p: ConvTransposeParams): string {
  const { g, group } = p;
  const Cg = p.C / group, Mg = p.M / group, MB = Math.ceil(Mg / 4), P = g.oH * g.oW, KK = g.kH * g.kW;
  const total = p.N * group * MB * P;
  const WG = 256;
  const decls = storageDecls([
    { name: 'x', type: 'f32' }, { name: 'w', type: 'vec4<f32>' },
    ...(p.hasBias ? [{ name: 'bias', type: 'f32' }] : []), { name: 'y', type: 'f32', write: true },
  ]);
  const code = `${decls}
${epilogueFn(p.hasBias, NO_ACT)}

fn tapSum(acc: vec4<f32>, xo: u32, wo: u32) -> vec4<f32> {
  var a = acc;
  for (var cl = 0u; cl < ${u(Cg)}; cl++) {
    a = fma(vec4<f32>(x[xo + cl * ${u(g.iH * g.iW)}]), w[wo + cl * ${u(MB)}], a);
  }
  return a;
}

@compute @workgroup_size(${WG})
fn main(${GRID_PARAMS}) {
  ${LINEAR_GROUP}
  let idx = group * ${u(WG)} + lid;
  if (idx >= ${u(total)}) { return; }
  let p = idx % ${u(P)};
  var rest = idx / ${u(P)};
  let mb = rest % ${u(MB)};
  rest = rest / ${u(MB)};
  let g = rest % ${u(group)};
  let n = rest / ${u(group)};
  let oh = p / ${u(g.oW)};
  let ow = p % ${u(g.oW)};
  let xb = (n * ${u(p.C)} + g * ${u(Cg)}) * ${u(g.iH * g.iW)};
  let wb = g * ${u(KK * Cg * MB)} + mb;
  var acc = vec4<f32>(0.0);
  ${transposeAxisLoop('h', g.kH, g.sH, g.dH, g.pH, g.iH)}
  ${transposeAxisLoop('w', g.kW, g.sW, g.dW, g.pW, g.iW)}
    acc = tapSum(acc, xb + u32(ih * ${i(g.iW)} + iw), wb + u32(kh * ${i(g.kW)} + kw) * ${u(Cg * MB)});
  }
  }
  let yb = (n * ${u(p.M)} + g * ${u(Mg)}) * ${u(P)} + p;
  for (var j = 0u; j < 4u; j++) {
    let m = mb * 4u + j;
    if (m < ${u(Mg)}) { y[yb + m * ${u(P)}] = epilogue(acc[j], g * ${u(Mg)} + m); }
  }
}`;
  return withPrelude(code);
}

registerGpuOp('ConvTranspose', (node, inputs, ctx) => {
  if (node.domain !== '') return null;
  const [x, w, b] = inputs;
  if (!x || !w || x.dtype !== 'float32' || w.dtype !== 'float32') return null;
  const r = x.dims.length;
  if ((r !== 3 && r !== 4) || w.dims.length !== r) return null;
  const sp = r - 2;
  const [N, C] = x.dims;
  const group = attrInt(node, 'group', 1);
  if (group < 1 || w.dims[0] !== C || C % group !== 0) return null;
  const Mg = w.dims[1], M = Mg * group;
  if (b && (b.dtype !== 'float32' || sizeOf(b.dims) !== M)) return null;
  const inS = x.dims.slice(2), kS = w.dims.slice(2);
  const ks = attrInts(node, 'kernel_shape');
  if (ks && (ks.length !== sp || ks.some((k, a) => k !== kS[a]))) return null;
  const strides = attrInts(node, 'strides') ?? new Array(sp).fill(1);
  const dils = attrInts(node, 'dilations') ?? new Array(sp).fill(1);
  const outPad = attrInts(node, 'output_padding') ?? new Array(sp).fill(0);
  const padsAttr = attrInts(node, 'pads');
  if (strides.length !== sp || dils.length !== sp || outPad.length !== sp || (padsAttr && padsAttr.length !== 2 * sp)) return null;
  if (strides.some((s) => s < 1) || dils.some((d) => d < 1)) return null;
  const autoPad = attrStr(node, 'auto_pad', 'NOTSET');
  if (!['NOTSET', 'VALID', 'SAME_UPPER', 'SAME_LOWER'].includes(autoPad)) return null;
  const { pads, outS } = convTransposeShape(inS, kS, { strides, dils, outPad, autoPad, outShape: attrInts(node, 'output_shape'), pads: padsAttr });
  if (outS.length !== sp || outS.some((o) => o < 0)) return null;
  const outputs = [{ dtype: 'float32' as const, dims: [N, M, ...outS] }];
  if (sizeOf(outputs[0].dims) === 0) return { outputs, dispatches: [] };
  if (sizeOf(x.dims) === 0 || sizeOf(kS) === 0 || Mg === 0) return null;
  const [iH, iW] = two(inS, 1), [kH, kW] = two(kS, 1), [oH, oW] = two(outS, 1);
  const [sH, sW] = two(strides, 1), [dH, dW] = two(dils, 1), [pH, pW] = two(pads.slice(0, sp), 0);
  const g: ConvGeom2 = { iH, iW, kH, kW, oH, oW, sH, sW, pH, pW, dH, dW };
  const pack = packedWeights(w, transposeWeightPack(C, Mg, group, kH * kW), ctx, 1, 0);
  const code = convTransposeKernel({ N, C, M, group, g, hasBias: !!b });
  const threads = N * group * Math.ceil(Mg / 4) * oH * oW;
  return {
    outputs,
    scratchBytes: pack.scratchBytes ? [pack.scratchBytes] : undefined,
    dispatches: [...pack.pre, {
      code, bindings: [{ input: 0 }, pack.binding, ...(b ? [{ input: 2 }] : []), { output: 0 }],
      groups: grid(Math.ceil(threads / 256), ctx.caps.maxWorkgroupsPerDim),
    }],
  };
});
