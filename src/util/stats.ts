// Small statistics shared by the tuner, the session's whole-model check and the benchmarks.

/** The median of xs (the upper one of an even count); xs is not changed. */
export const median = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1];
