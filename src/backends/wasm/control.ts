// Layout of the control block shared by the runtime and its worker threads (an Int32Array on a SharedArrayBuffer).
export const C = {
  GEN: 0, // launch generation; workers wait on it
  CMD: 1, // what the current generation asks: RUN, YIELD (return to the event loop for new modules), EXIT
  KERNEL: 2,
  NTASKS: 3,
  NEXT: 4, // (generation tag << 20) | next task index: stale workers never take a task of a newer launch
  DONE: 5, // tasks finished in this launch
  NARGS: 6,
  ERROR: 7,
  SLEEPERS: 8, // workers blocked in Atomics.wait: only then does a launch pay for a notify
  ARGS: 9,
  SIZE: 48,
} as const;
export const CMD_RUN = 1, CMD_YIELD = 2, CMD_EXIT = 3;
export const TAG_SHIFT = 20;
export const TAG_MASK = 0x7ff;
export const MAX_TASKS = 1 << TAG_SHIFT;

/** Takes the next task of generation `gen`, or -1 when none is left (or a newer launch began). */
export function takeTask(ctrl: Int32Array, gen: number, ntasks: number): number {
  const tag = (gen & TAG_MASK) << TAG_SHIFT;
  for (;;) {
    const cur = Atomics.load(ctrl, C.NEXT);
    if ((cur & ~(MAX_TASKS - 1)) !== tag) return -1;
    const idx = cur & (MAX_TASKS - 1);
    if (idx >= ntasks) return -1;
    if (Atomics.compareExchange(ctrl, C.NEXT, cur, cur + 1) === cur) return idx;
  }
}

/**
 * How long a worker polls for the next launch before it sleeps (launches come in bursts, a model's nodes, with the
 * calling thread's own work between them: a decode step's cache updates take a few hundred µs, and a sleeping worker
 * costs a wake-up of tens of µs and a late start at every launch after such a gap).
 */
export const SPIN_MS = 3;
