// The contract between the Wasm runtime and its op implementations (one file per op family in ops/).
import type { TuneHooks } from '../../tune/site.js';
import type { Node } from '../../graph/ir.js';
import type { DType, Tensor } from '../../tensor.js';

/** A value in Wasm memory as an op sees it at plan time. */
export interface ValueDesc {
  dtype: DType;
  dims: number[];
  /** Set when the value is a model constant (initializer): ops may pre-transform it (e.g. pack B). */
  constant?: Tensor;
  /** Graph value name (stable key for constant transforms). */
  name: string;
  /**
   * The current value of a small integer input that is computed in the graph (starts, shape, axes, pads …), read at
   * plan time for the ops that take such inputs (the executor keys their plans by it). Never use it for ctx.constant.
   */
  value?: Tensor;
}

/**
 * Generated kernel source: `bytes()` builds a module that imports env.memory and exports
 * `run(...args: i32, t0: i32, t1: i32)`, which does tasks t0 ≤ t < t1 of the launch.
 * Modules with the same `key` are compiled once and shared.
 */
export interface KernelSource {
  key: string;
  bytes: () => Uint8Array;
  /**
   * Threads of the launch cooperate inside the kernel (they wait for each other's tasks), so a thread running
   * several tasks alone must get them as one call run(…, t0, t1) rather than one call per task.
   */
  wholeRange?: boolean;
}

export interface Launch {
  kernel: KernelSource;
  /** i32 arguments before (t0, t1): pointers and sizes. */
  args: number[];
  /** Number of independent tasks; the runtime spreads them over threads. */
  tasks: number;
}

/** Pointers (byte offsets in Wasm memory) of a node's buffers for one run. */
export interface Buffers {
  inputs: number[];
  outputs: number[];
  /** Scratch space of `OpPlan.scratchBytes`, 64-byte aligned, valid during the node only. */
  scratch: number;
}

export interface OpPlan {
  outputs: { dtype: DType; dims: number[] }[];
  /** Output i is a view of input alias[i] (same bytes: Reshape, Squeeze, Flatten …). */
  alias?: (number | undefined)[];
  scratchBytes?: number;
  launches(b: Buffers): Launch[];
}

export interface PlanContext extends TuneHooks {
  threads: number;
  relaxedSimd: boolean;
  /**
   * A model constant transformed once at load (e.g. a packed weight panel): `make` returns the bytes,
   * cached under (value name, transform key); returns the pointer in Wasm memory.
   */
  constant(name: string, transform: string, make: () => Uint8Array): number;
}

/** A Wasm op: plans a node for concrete input shapes, or returns null to fall back to the reference kernel. */
export type WasmOp = (node: Node, inputs: (ValueDesc | undefined)[], ctx: PlanContext, opset: number) => OpPlan | null;

const OPS = new Map<string, WasmOp>();

export function registerWasmOp(opType: string, op: WasmOp): void {
  OPS.set(opType, op);
}

export function findWasmOp(opType: string): WasmOp | undefined {
  return OPS.get(opType);
}

export function wasmOps(): string[] {
  return [...OPS.keys()];
}

/** Number of tasks to split `work` units into: enough for balance, not so many that overhead shows. */
export function taskCount(work: number, threads: number, minPerTask = 1): number {
  if (threads <= 1) return 1;
  return Math.max(1, Math.min(Math.ceil(work / minPerTask), threads * 4));
}
