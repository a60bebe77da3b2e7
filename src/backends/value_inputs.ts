// Inputs that the fast backends read at plan time (small integer shape-like values), shared by Wasm and WebGPU.
import { rangeCount } from '../ops/shape.js';
import type { Tensor } from '../tensor.js';

/**
 * Inputs (by op type) that are small integer shape-like values: when the graph computes them, the executor reads their
 * values at plan time, hands them to the op as ValueDesc.value, and keys the plan by them.
 */
export const VALUE_INPUTS: Record<string, readonly number[]> = {
  Slice: [1, 2, 3, 4], Expand: [1], Tile: [1], Pad: [1, 3], ConstantOfShape: [0], Split: [1],
  ReduceSum: [1], ReduceMean: [1], ReduceMax: [1], ReduceMin: [1], ReduceProd: [1], ReduceL1: [1], ReduceL2: [1],
  ReduceLogSum: [1], ReduceLogSumExp: [1], ReduceSumSquare: [1], Range: [0, 1, 2],
};

/** Integer Range's length from its read values, or null: its plans are keyed by the length, not the values. */
export function rangeLength(values: (Tensor | undefined)[] | undefined): number | null {
  if (!values || !values[0] || !values[1] || !values[2]) return null;
  const [s, l, d] = values.map((t) => Number((t!.data as ArrayLike<number | bigint>)[0]));
  if (d === 0 || !Number.isFinite(s) || !Number.isFinite(l)) return null;
  return rangeCount(s, l, d);
}
