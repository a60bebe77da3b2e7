// The contract between the WebGPU runtime and its op implementations (one file per op family in ops/), and the small
// WGSL helpers they share: storage types per dtype, exact literals, workgroup grids past the 65535 limit.
import type { TuneHooks } from '../../tune/site.js';
import type { Node } from '../../graph/ir.js';
import type { DType, Tensor } from '../../tensor.js';
import type { GpuCaps } from './device.js';

/** A value on the GPU as an op sees it at plan time. */
export interface GpuValueDesc {
  dtype: DType;
  dims: number[];
  /** Graph value name (stable key for constant transforms). */
  name: string;
  /** Set when the value is a model constant: ops may pre-transform it once (ctx.constant). */
  constant?: Tensor;
  /** The value of a small integer input computed in the graph (starts, axes …), read at plan time; plans are keyed by it. */
  value?: Tensor;
}

/** Where a dispatch's binding comes from. Bindings are numbered in this order, @group(0) @binding(i). */
export type Binding =
  | { input: number }
  | { output: number }
  /** Scratch buffer k of the plan (scratchBytes[k]), live during the node only. */
  | { scratch: number }
  /** A constant made by ctx.constant. */
  | { constant: GpuConstant }
  /**
   * The node's fault words (u32[4], read_write): a kernel that meets invalid data only the GPU sees (an index out of
   * range) sets word 0 to 1 and word 1 to the offending value; the run then fails with an InputError naming the node.
   */
  | { fault: true };

export interface GpuConstant { readonly id: number; readonly bytes: number }

/**
 * A constant computed once on the GPU, where the host would take too long (a weight split into halves: ~85 ms per
 * BERT-base weight in JS). `code` (one @compute entry point `main`) runs over `groups` with binding 0 `source` (read
 * storage, uploaded for it), binding 1 `params` (a uniform) and binding 2 the constant (`bytes`, read_write, zeroed).
 */
export interface GpuDerivation {
  source: ArrayBufferView;
  params: Int32Array | Uint32Array;
  bytes: number;
  code: string;
  groups: [number, number, number];
}

export interface Dispatch {
  /** WGSL source with one @compute entry point `main`; pipelines are cached by the text. */
  code: string;
  bindings: Binding[];
  /** Workgroups in x, y, z (each within the device's maxComputeWorkgroupsPerDimension). */
  groups: [number, number, number];
}

export interface GpuOpPlan {
  outputs: { dtype: DType; dims: number[] }[];
  /** Output i is a view of input alias[i] (same buffer: Reshape …). */
  alias?: (number | undefined)[];
  scratchBytes?: number[];
  dispatches: Dispatch[];
}

export interface GpuPlanContext extends TuneHooks {
  caps: GpuCaps;
  /** The session computes in f16 where the op allows it (storage of activations stays f32 at op boundaries). */
  f16: boolean;
  /**
   * f32 GEMMs with a constant B: 'highest' on the f32 units; 'high' on the tensor cores with operands split into two
   * halves each (about 22 significant bits, errors ~1e-5 of max|C|), where the device has subgroup matrices and the
   * product has 256 rows or more.
   */
  matmulPrecision?: 'highest' | 'high';
  /**
   * A model constant transformed once (a repacked weight, a folded bias): `make` returns the bytes, cached under
   * (value name, transform key).
   */
  constant(name: string, transform: string, make: () => ArrayBufferView): GpuConstant;
  /** A model constant derived on the GPU (GpuDerivation), once, cached as constant() is; its upload is released. */
  derivedConstant(name: string, transform: string, make: () => GpuDerivation): GpuConstant;
}

/** A WebGPU op: plans a node for concrete input shapes, or returns null (the node then falls back to the reference kernel). */
export type GpuOp = (node: Node, inputs: (GpuValueDesc | undefined)[], ctx: GpuPlanContext, opset: number) => GpuOpPlan | null;

const OPS = new Map<string, GpuOp>();

export function registerGpuOp(opType: string, op: GpuOp): void {
  OPS.set(opType, op);
}

export function findGpuOp(opType: string): GpuOp | undefined {
  return OPS.get(opType);
}

export function gpuOps(): string[] {
  return [...OPS.keys()];
}

/** Scalar type a dtype is stored as on the GPU (one 4-byte word per element except f16), or null if it stays on the CPU. */
export type WgslScalar = 'f32' | 'f16' | 'i32' | 'u32';
export function storageType(dtype: DType): WgslScalar | null {
  switch (dtype) {
    case 'float32': return 'f32';
    case 'float16': return 'f16';
    case 'int32': case 'int64': case 'int8': case 'int16': case 'uint8': case 'uint16': return 'i32';
    case 'uint32': case 'bool': return 'u32';
    default: return null;
  }
}

/** Bytes per element of a dtype as stored on the GPU. */
export function storageBytes(dtype: DType): number {
  return dtype === 'float16' ? 2 : 4;
}

/** An exact f32 literal; ±Inf and NaN (which WGSL has no literal for) as a bit pattern through wj_f32bits. */
export function f32Lit(x: number): string {
  const f = Math.fround(x);
  if (Number.isInteger(f) && Math.abs(f) < 1e7) return `${f}.0`;
  if (Number.isFinite(f)) {
    const s = f.toPrecision(9);
    if (Math.fround(Number(s)) === f) return s.includes('e') || s.includes('.') ? s : `${s}.0`;
  }
  // WGSL constant expressions reject ±Inf and NaN: a call of a (non-const) helper makes it a run-time value. The
  // executor adds the helper's definition (mathPrelude) to every kernel that calls it.
  const u = new Uint32Array(new Float32Array([f]).buffer)[0];
  return `wj_f32bits(${u}u)`;
}

export function i32Lit(x: number): string {
  const v = x | 0;
  return v === -2147483648 ? 'i32(-2147483647 - 1)' : `${v}`;
}

/** Workgroup grid for `n` workgroups: x up to the per-dimension limit, then y. Pair with `linearGroup` in WGSL. */
export function grid(n: number, maxPerDim = 65535): [number, number, number] {
  if (n <= maxPerDim) return [Math.max(1, n), 1, 1];
  const y = Math.ceil(n / maxPerDim);
  if (y > maxPerDim) throw new RangeError(`too many workgroups (${n})`);
  return [Math.ceil(n / y), y, 1];
}

/** WGSL entry-point parameters and the linear workgroup index for a `grid` dispatch. */
export const GRID_PARAMS = '@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32';
export const LINEAR_GROUP = 'let group = wg.y * nwg.x + wg.x;';

/** `var<storage>` declarations in binding order: reads first, then writes. */
export function storageDecls(vars: { name: string; type: WgslScalar | string; write?: boolean; atomic?: boolean }[]): string {
  return vars.map((v, i) => `@group(0) @binding(${i}) var<storage, ${v.write ? 'read_write' : 'read'}> ${v.name}: array<${v.type}>;`).join('\n');
}

/** `enable f16;` when a shader uses f16. */
export function enables(code: string): string {
  return /\bf16\b/.test(code) ? `enable f16;\n${code}` : code;
}

/** Elements per thread and threads per workgroup for a 1-D kernel over n elements. */
export function linearLaunch(n: number, wgSize = 256, maxPerDim = 65535): { groups: [number, number, number]; wgSize: number } {
  return { groups: grid(Math.ceil(n / wgSize), maxPerDim), wgSize };
}
