// The tuner's view of each fast backend: one-node runners forced to given parameters, timed the backend's way, and
// the device identity its winners are cached under.
import { type ResidentFeeds, WasmGraphRunner } from '../backends/wasm/executor.js';
import type { WasmRuntime } from '../backends/wasm/runtime.js';
import { GpuGraphRunner } from '../backends/webgpu/executor.js';
import type { GpuContext } from '../backends/webgpu/device.js';
import type { Value } from '../tensor.js';
import type { TuneRunner, TuneTarget } from './tuner.js';
import { importNode } from '../util/node.js';
import { interleaved, median } from '../util/stats.js';

/** Bumped when generators change so that old winners no longer describe today's kernels. */
export const TUNE_VERSION = 1;

async function cpuModel(): Promise<string> {
  if (typeof process !== 'undefined' && process.versions?.node) {
    const os = await importNode<typeof import('node:os')>('node:os');
    return `${os.cpus()[0]?.model?.trim() ?? 'cpu'} x${os.cpus().length}`;
  }
  return `cpu x${typeof navigator !== 'undefined' ? navigator.hardwareConcurrency : 1}`;
}

export async function wasmDeviceId(rt: WasmRuntime): Promise<string> {
  return `webjit${TUNE_VERSION}|wasm|${await cpuModel()}|${rt.threads}t|${rt.relaxedSimd ? 'relaxed-simd' : 'simd128'}`;
}

export function gpuDeviceId(gpu: GpuContext, f16: boolean, matmulPrecision: 'highest' | 'high' = 'highest'): string {
  const c = gpu.caps;
  return `webjit${TUNE_VERSION}|webgpu|${c.name}|${f16 ? 'f16w' : 'f32'}${matmulPrecision === 'high' ? '+mm-high' : ''}|sg${c.subgroups ? 1 : 0}`;
}

/** Rounds of a Wasm timeTogether: at least this many, and more while the time allowed lasts (up to MAX). */
const WASM_MIN_ROUNDS = 7, WASM_MAX_ROUNDS = 41;

export async function wasmTarget(rt: WasmRuntime): Promise<TuneTarget> {
  return {
    backend: 'wasm',
    device: await wasmDeviceId(rt),
    /**
     * The runners' runs interleaved (util/stats interleaved): timed one after the other, a candidate looked 1.3×
     * faster than its default and was no faster inside the model.
     */
    async timeTogether(trs, feedSets, maxMs) {
      // A run that plans and compiles (run() brings the workers in after it), then one warm run each.
      for (const r of trs) await r.run(feedSets[0]);
      for (const r of trs) await r.timedRun!(feedSets[0]);
      const t0 = performance.now();
      const more = (i: number) => i < WASM_MIN_ROUNDS || (i < WASM_MAX_ROUNDS && performance.now() - t0 < maxMs);
      return (await interleaved(trs.map((r) => (i: number) => r.timedRun!(feedSets[i % feedSets.length])), more)).map(median);
    },
    runner(graph, env, opts): TuneRunner {
      const r = new WasmGraphRunner(graph, env, rt, { ...opts, fallback: false });
      // Each feed set uploaded once: the kernels are timed, not the one-node graph's upload and read-back (a
      // model's kernels find their inputs in memory).
      const residents = new Map<Map<string, Value>, ResidentFeeds>();
      const timedRun = async (feeds: Map<string, Value>): Promise<number> => {
        let x = residents.get(feeds);
        if (!x) { x = r.resident(feeds); residents.set(feeds, x); }
        const s = performance.now();
        await r.runResident(x);
        return performance.now() - s;
      };
      return {
        run: (feeds) => r.run(feeds),
        timedRun,
        async time(feedSets: Map<string, Value>[], maxMs: number) {
          await r.run(feedSets[0]);
          const ts: number[] = [];
          const t0 = performance.now();
          for (let i = 0; ts.length < 5 || (ts.length < 31 && performance.now() - t0 < maxMs); i++) ts.push(await timedRun(feedSets[i % feedSets.length]));
          return median(ts);
        },
        dispose: () => {
          for (const x of residents.values()) r.releaseResident(x);
          r.dispose();
        },
      };
    },
  };
}

export function gpuTarget(gpu: GpuContext, f16: boolean, matmulPrecision: 'highest' | 'high' = 'highest'): TuneTarget {
  const runners = new WeakMap<TuneRunner, GpuGraphRunner>();
  return {
    backend: 'webgpu',
    device: gpuDeviceId(gpu, f16, matmulPrecision),
    f16,
    async timeTogether(trs, feedSets, maxMs) {
      const rs = trs.map((t) => runners.get(t)!);
      // Enough runs per pass that a round of all of them takes about a fifth of the time allowed.
      const [[one]] = await GpuGraphRunner.timeTogether([rs[0]], feedSets, 3, 1);
      const reps = Math.max(3, Math.min(500, Math.round(maxMs / 5 / rs.length / Math.max(one, 1e-3))));
      const rounds = await GpuGraphRunner.timeTogether(rs, feedSets, reps, 5);
      return rs.map((_, k) => median(rounds.map((row) => row[k])));
    },
    async prepare(graph, env, opts, feeds) {
      const r = new GpuGraphRunner(graph, env, gpu, { ...opts, fallback: false, f16, matmulPrecision });
      try { await r.prepare(feeds); } catch { /* verification or timing reports it */ } finally { r.dispose(); }
    },
    runner(graph, env, opts): TuneRunner {
      const r = new GpuGraphRunner(graph, env, gpu, { ...opts, fallback: false, f16, matmulPrecision });
      const tr: TuneRunner = {
        run: (feeds) => r.run(feeds),
        async time(feedSets: Map<string, Value>[], maxMs: number) {
          // Calibrate: enough dispatches per submit that one round takes about a fifth of the time allowed.
          const repsFor = (ms: number) => Math.max(3, Math.min(500, Math.round(maxMs / 5 / Math.max(ms, 1e-3))));
          let [one] = await r.timeRuns(feedSets, 3, 1);
          // The GPU leaves its low-power state only after sustained work: on the H100 a GEMM timed after the GPU
          // idled (compiling, the reference on the CPU) measured 3–5× slower for its first 0.1–0.4 s. Rounds until
          // one stops improving (within the time allowed), then the measurement.
          const t0 = performance.now();
          for (let w = 0; w < 8 && performance.now() - t0 < maxMs; w++) {
            const [t] = await r.timeRuns(feedSets, repsFor(one), 1);
            const better = t < one * 0.95;
            one = Math.min(one, t);
            if (!better && w > 0) break;
          }
          return median(await r.timeRuns(feedSets, repsFor(one), 5));
        },
        dispose: () => r.dispose(),
      };
      runners.set(tr, r);
      return tr;
    },
  };
}
