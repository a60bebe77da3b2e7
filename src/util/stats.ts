// Small statistics shared by the tuner, the session's whole-model check and the benchmarks.

/** The median of xs (the upper one of an even count); xs is not changed. */
export const median = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1];

/** The median of the ratios xs[i] / ys[i]. */
export const medianRatio = (xs: readonly number[], ys: readonly number[]): number => median(xs.map((x, i) => x / ys[i]));

/**
 * Timed measurements taken in rounds of one call of each function, the order reversed every other round, so that a
 * drifting machine (other processes, clocks) meets them alike; rounds go on while `more(round)` holds. Returns each
 * function's results in round order.
 */
export async function interleaved(fns: readonly ((round: number) => Promise<number>)[], more: (round: number) => boolean): Promise<number[][]> {
  const out = fns.map(() => [] as number[]);
  for (let i = 0; more(i); i++) {
    for (let j = 0; j < fns.length; j++) {
      const k = i % 2 ? fns.length - 1 - j : j;
      out[k].push(await fns[k](i));
    }
  }
  return out;
}
