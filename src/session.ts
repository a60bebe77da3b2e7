// InferenceSession: the public API, shaped like onnxruntime-web's (create, inputNames, run, release).
import { DeviceLostError, ExecutionError, InputError, UnsupportedError } from './errors.js';
import { GraphExecutor, type ExecEnv } from './backends/reference/executor.js';
import { WasmGraphRunner } from './backends/wasm/executor.js';
import { WasmRuntime } from './backends/wasm/runtime.js';
import { GpuGraphRunner, type GpuRunStats } from './backends/webgpu/executor.js';
import { acquireGpu } from './backends/webgpu/device.js';
import { GpuTensor } from './backends/webgpu/gpu_tensor.js';
import type { Model, ValueInfo } from './graph/ir.js';
import { formatType } from './graph/ir.js';
import { optimizeGraph } from './graph/passes.js';
import { fuseElementwise } from './graph/fuse.js';
import { foldAttentionTransposes, fuseAttention } from './graph/fuse_attention.js';
import { fuseMatMul } from './graph/fuse_matmul.js';
import { fuseLayerNorm } from './graph/fuse_norm.js';
import { fuseConv } from './graph/fuse_conv.js';
import { loadModel, type LoadOptions, type ModelSource } from './onnx/load.js';
import { DTYPES, sizeOf, Tensor, type TypedArray, type Value } from './tensor.js';
import { entryKey, sharedCache, saveCache, TuneCache } from './tune/cache.js';
import { cacheHooks, Tuner, type SiteUse, type TuneProgress, type TuneReport, type TuneRunOptions, type TuneTarget } from './tune/tuner.js';
import { gpuTarget, wasmTarget } from './tune/targets.js';
import { DEFAULTS_ONLY, type SiteRecord } from './tune/site.js';
import { interleaved, median, medianRatio } from './util/stats.js';

export type BackendName = 'reference' | 'wasm' | 'webgpu';

export interface SessionOptions extends LoadOptions {
  /** Which backend runs the kernels (default 'reference'). */
  backend?: BackendName;
  /** Wasm backend: threads including the calling one (default: all hardware threads). */
  threads?: number;
  /** Fast backends: run nodes they have no kernel for on the reference backend (default true). */
  fallback?: boolean;
  /** Graph passes (constant folding, dead-node and identity removal); default true. */
  optimize?: boolean;
  /**
   * WebGPU backend: 'f16' stores constant GEMM weights (MatMul, Gemm, FusedMatMul) as f16 where the adapter has
   * shader-f16, halving their bytes; products and sums stay f32 (default 'f32').
   */
  precision?: 'f32' | 'f16';
  /**
   * WebGPU backend, f32 GEMMs with constant weights (as PyTorch's float32 matmul precision): 'highest' (default) on
   * the f32 units; 'high' on the tensor cores where the adapter has subgroup matrices (NVIDIA through Dawn), each f32
   * operand split into two halves (about 22 significant bits; errors ~1e-5 of max|C|, where TF32 gives ~1e-3).
   * Elsewhere, and for products of fewer than 256 rows (where the f32 kernels were faster on the H100), 'high' runs
   * the 'highest' kernels. An activation past 65504 in magnitude fails the run with an InputError.
   * With precision 'f16', GEMMs use the tensor cores on halves in any case.
   */
  matmulPrecision?: 'highest' | 'high';
  /**
   * WebGPU backend: replay steady-state runs (default true). From the second run() with feeds of the same names,
   * dtypes and dims, a run is recorded once and then replayed: only the CPU work that reads the feeds' data is done
   * again, and the recorded dispatches are submitted as they are. Off, every run plans and records every node.
   */
  replay?: boolean;
  /**
   * Kernel tuning (fast backends): 'cache' (default) runs the winners cached for this device and otherwise the
   * defaults; 'background' also tunes the kernels of the first run in the background (budget `tuneBudgetMs`) and
   * swaps winners in when ready; 'off' uses the defaults only and touches no cache.
   */
  tuning?: 'cache' | 'background' | 'off';
  /** Budget of background tuning (default 10 000 ms). */
  tuneBudgetMs?: number;
  /** Progress of background tuning. */
  onTuneProgress?: (p: TuneProgress) => void;
  /**
   * Each run must end within this many milliseconds, or it rejects with TimeoutError naming the node it reached
   * (checked before every node and every Loop iteration; default: no limit).
   */
  runTimeoutMs?: number;
  /**
   * NaN and ±Inf: 'allow' (default) passes them through; 'reject-inputs' rejects a run whose float inputs hold one
   * (InputError naming the input and the element); 'reject' also rejects a run whose float outputs hold one
   * (ExecutionError naming the output), so a non-finite result is never returned quietly.
   */
  nonFinite?: 'allow' | 'reject-inputs' | 'reject';
  /**
   * Fast backends: the most bytes the model's weights may take on the device; a larger model gets a
   * ResourceLimitError at creation with both numbers. Wasm is bounded by its 4 GiB address space in any case.
   */
  memoryLimitBytes?: number;
  /**
   * WebGPU backend: what a lost device does to runs. 'throw' (default): this and every later run rejects with
   * DeviceLostError (create the session again). 'wasm': the run that met the loss and all later ones run on the
   * Wasm backend instead (session.backend then says 'wasm'); runs fed GpuTensors still reject.
   */
  onDeviceLost?: 'throw' | 'wasm';
}

/** Inputs by name: CPU Tensors, or (WebGPU backend) GpuTensors from an earlier runGpu() or an app's own buffers. */
export type Feeds = Record<string, Tensor | GpuTensor>;
export type Outputs = Record<string, Tensor>;

export class InferenceSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  private currentBackend: BackendName;
  /** The backend running this session's kernels ('wasm' after a WebGPU session fell back on a lost device). */
  get backend(): BackendName { return this.currentBackend; }
  /** Set when a lost GPU device moved this session to Wasm (onDeviceLost: 'wasm'): the loss's message. */
  deviceLoss: string | null = null;
  private onDeviceLost: 'throw' | 'wasm' = 'throw';
  private wasmOpts: { threads?: number; fallback?: boolean; memoryLimitBytes?: number } = {};
  private switching: Promise<void> | null = null;
  private executor: GraphExecutor | null;
  private wasm: { runner: WasmGraphRunner; rt: WasmRuntime } | null = null;
  private gpu: GpuGraphRunner | null = null;
  private tuneTarget: TuneTarget | null = null;
  private tuneCache: TuneCache | null = null;
  /** The last run()'s feeds (host tensors): the whole model is timed on them after tuning. */
  private lastFeeds: Map<string, Value> | null = null;
  /** Distinct kernels the runs so far planned (the tuner's work list). */
  private readonly sites = new Map<string, SiteUse>();
  private tuningMode: 'cache' | 'background' | 'off' = 'cache';
  private tuneOpts: Pick<SessionOptions, 'tuneBudgetMs' | 'onTuneProgress'> = {};
  /** Background tuning, once started (resolves to its report). */
  tuning: Promise<TuneReport> | null = null;

  /** The executors' environment, shared by every runner of this session; carries each run's deadline. */
  private readonly env: ExecEnv;
  private runTimeoutMs = 0;
  private nonFinite: NonNullable<SessionOptions['nonFinite']> = 'allow';

  private constructor(readonly model: Model, backend: BackendName, private readonly inputs: ValueInfo[]) {
    this.currentBackend = backend;
    this.inputNames = inputs.map((i) => i.name);
    this.outputNames = model.graph.outputs.map((o) => o.name);
    this.env = { opsets: model.opsets, functions: model.functions };
    this.executor = new GraphExecutor(model.graph, this.env);
  }

  static async create(src: ModelSource, opts: SessionOptions = {}): Promise<InferenceSession> {
    const backend = opts.backend ?? 'reference';
    if (backend !== 'reference' && backend !== 'wasm' && backend !== 'webgpu') {
      throw new UnsupportedError(`unknown backend '${String(backend)}'`, {}, "use 'webgpu', 'wasm' or 'reference'");
    }
    if (opts.runTimeoutMs !== undefined && !(opts.runTimeoutMs > 0)) {
      throw new InputError(`runTimeoutMs must be a positive number of milliseconds, got ${opts.runTimeoutMs}`);
    }
    if (opts.nonFinite !== undefined && !['allow', 'reject-inputs', 'reject'].includes(opts.nonFinite)) {
      throw new InputError(`nonFinite must be 'allow', 'reject-inputs' or 'reject', got '${String(opts.nonFinite)}'`);
    }
    // Worker threads boot, or the GPU device opens, while the model loads.
    const rtP = backend === 'wasm' ? WasmRuntime.acquire({ threads: opts.threads }) : null;
    const gpuP = backend === 'webgpu' ? acquireGpu() : null;
    gpuP?.catch(() => undefined);
    let model: Model;
    try {
      model = await loadModel(src, opts);
      if (opts.optimize !== false) {
        optimizeGraph(model);
        // Fusion serves the generated kernels; the reference backend stays op-by-op, the oracle.
        if (backend === 'wasm' || backend === 'webgpu') {
          fuseLayerNorm(model);
          fuseAttention(model);
          fuseMatMul(model);
          fuseConv(model);
          fuseElementwise(model);
        }
      }
    } catch (e) {
      if (rtP) void rtP.then((rt) => rt.releaseShared(), () => undefined);
      throw e;
    }
    const g = model.graph;
    // Graph inputs that also have an initializer are overridable constants, not required feeds.
    const inputs = g.inputs.filter((i) => !g.initializers.has(i.name));
    const s = new InferenceSession(model, backend, inputs);
    s.tuningMode = opts.tuning ?? 'cache';
    s.tuneOpts = { tuneBudgetMs: opts.tuneBudgetMs, onTuneProgress: opts.onTuneProgress };
    s.runTimeoutMs = opts.runTimeoutMs ?? 0;
    s.nonFinite = opts.nonFinite ?? 'allow';
    s.wasmOpts = { threads: opts.threads, fallback: opts.fallback, memoryLimitBytes: opts.memoryLimitBytes };
    if (rtP) await s.attachWasm(await rtP);
    if (gpuP) {
      const gpu = await gpuP;
      const f16 = opts.precision === 'f16' && gpu.caps.f16;
      s.tuneTarget = gpuTarget(gpu, f16, opts.matmulPrecision ?? 'highest');
      s.tuneCache = s.tuningMode === 'off' ? null : await sharedCache();
      // The GPU's attention reads Q and V and writes its result through strides: the Transposes around it fold in.
      s.gpu = new GpuGraphRunner(foldAttentionTransposes(model.graph).graph, s.env, gpu, { fallback: opts.fallback, f16: opts.precision === 'f16', matmulPrecision: opts.matmulPrecision, memoryLimitBytes: opts.memoryLimitBytes, replay: opts.replay, ...s.tuneHooks() });
      s.onDeviceLost = opts.onDeviceLost ?? 'throw';
    }
    return s;
  }

  /** Runs this session on the Wasm runtime `rt` from now on; `rt` is released again if the runner cannot be made. */
  private async attachWasm(rt: WasmRuntime): Promise<void> {
    try {
      this.tuneTarget = await wasmTarget(rt);
      this.tuneCache = this.tuningMode === 'off' ? null : await sharedCache();
      const { fallback, memoryLimitBytes } = this.wasmOpts;
      this.wasm = { rt, runner: new WasmGraphRunner(this.model.graph, this.env, rt, { fallback, memoryLimitBytes, ...this.tuneHooks() }) };
    } catch (e) {
      rt.releaseShared();
      throw e;
    }
  }

  private tuneHooks() {
    return {
      tune: cacheHooks(this.tuneCache, this.tuneTarget!.device),
      onSite: (r: SiteRecord) => {
        const k = entryKey(r.site.family, r.site.sig);
        let u = this.sites.get(k);
        if (!u) { u = { record: r, nodes: new Set() }; this.sites.set(k, u); }
        u.nodes.add(r.node.name);
      },
    };
  }

  /**
   * Tunes the kernels this session's runs have used (or those of a run on `feeds`): candidates verified against the
   * reference backend, timed on this device, winners cached and swapped in for the next run.
   */
  async tune(opts: TuneRunOptions & { feeds?: Feeds } = {}): Promise<TuneReport> {
    if (!this.tuneTarget || (!this.wasm && !this.gpu)) {
      throw new UnsupportedError(`tuning needs the wasm or webgpu backend; this session runs on '${this.backend}'`, {}, "create the session with { backend: 'wasm' } or { backend: 'webgpu' }");
    }
    if (opts.feeds) await this.run(opts.feeds);
    if (this.sites.size === 0) throw new InputError('nothing to tune yet: no run has planned a kernel', {}, 'run the session once first, or pass { feeds }');
    const cache = this.tuneCache ?? new TuneCache();
    // A tenth of the budget is kept for timing the whole model after (checkTunedModel).
    const budgetMs = (opts.budgetMs ?? 30_000) * 0.9;
    const report = await new Tuner(this.tuneTarget, cache).tune([...this.sites.values()], { ...opts, budgetMs, stop: () => this.released || !!opts.stop?.() });
    this.gpu?.invalidatePlans();
    this.wasm?.runner.invalidatePlans();
    if (this.lastFeeds && cache === this.tuneCache && report.rows.some((r) => r.changed) && !this.released) {
      report.model = await this.checkTunedModel(report, cache, opts.keepBelow ?? (this.gpu ? 0.99 : 0.97), (opts.budgetMs ?? 30_000) * 0.1);
    }
    if (this.tuneCache) await saveCache(this.tuneCache).catch(() => undefined);
    return report;
  }

  /**
   * The whole model with the tuned kernels against its defaults, on the last run's feeds: on WebGPU the GPU time of
   * both in the same submits, on Wasm wall times in alternating rounds. Kernels faster alone can be slower in the
   * model (caches, the kernels around them): a tuned model that is not faster gets its defaults back, in the cache too.
   */
  private async checkTunedModel(report: TuneReport, cache: TuneCache, keepBelow: number, maxMs: number): Promise<NonNullable<TuneReport['model']>> {
    const tuned = cacheHooks(cache, this.tuneTarget!.device);
    let defaultMs: number, tunedMs: number;
    if (this.gpu) {
      // Both plans in every submit (one pass each), so that they meet the GPU in the same clock state.
      const feeds = [this.lastFeeds!];
      const [[one]] = await this.gpu.timeWithHooks([tuned], feeds, 1, 1);
      const reps = Math.max(2, Math.min(50, Math.round(20 / Math.max(one, 0.05))));
      const rounds = await this.gpu.timeWithHooks([DEFAULTS_ONLY, tuned], feeds, reps, 5);
      defaultMs = median(rounds.map((r) => r[0]));
      tunedMs = median(rounds.map((r) => r[1]));
    } else {
      // Wasm: wall time of a run with each (after a run that plans), 3 to 15 pairs within maxMs.
      const r = this.wasm!.runner, feeds = this.lastFeeds!;
      const once = async (hooks: typeof tuned) => {
        r.setTuning(hooks);
        await r.run(feeds);
        const t = performance.now();
        await r.run(feeds);
        return performance.now() - t;
      };
      // Judged by the median of the pairs' ratios (a pair meets one state of the machine).
      const end = performance.now() + maxMs;
      const [d, t] = await interleaved([() => once(DEFAULTS_ONLY), () => once(tuned)], (k) => k < 15 && (k < 3 || performance.now() < end));
      defaultMs = median(d);
      tunedMs = defaultMs * medianRatio(t, d);
    }
    const kept = tunedMs < defaultMs * keepBelow;
    if (!kept) {
      for (const row of report.rows) {
        if (!row.changed) continue;
        const e = cache.get(this.tuneTarget!.device, row.family, row.sig);
        if (e) cache.set(this.tuneTarget!.device, row.family, row.sig, { ...e, params: row.defaultParams, tunedMs: e.defaultMs });
        row.params = row.defaultParams;
        row.tunedMs = row.defaultMs;
        row.changed = false;
      }
    }
    if (this.gpu) this.gpu.setTuning(tuned); else this.wasm!.runner.setTuning(tuned);
    return { defaultMs, tunedMs, kept };
  }

  /** Wasm backend: threads in use and why fewer than asked, if so. */
  get threads(): { threads: number; note?: string } {
    return this.wasm ? { threads: this.wasm.rt.threads, note: this.wasm.rt.threadsNote } : { threads: 1 };
  }

  /** Wasm backend: nodes that ran as generated kernels vs on the reference fallback, over all runs so far. */
  get stats(): WasmGraphRunner['stats'] | undefined {
    return this.wasm?.runner.stats;
  }

  /** WebGPU backend: nodes run as GPU kernels, on the CPU (small shape arithmetic) and on the reference fallback, and mid-run readbacks. */
  get gpuStats(): GpuRunStats | undefined {
    return this.gpu?.stats;
  }

  /** WebGPU backend: the adapter, its features, and the GPU memory this session holds. */
  get gpuInfo(): { adapter: string; f16: boolean; subgroups: boolean; subgroupMatrix: boolean; memory: { buffers: number; bytes: number } } | undefined {
    if (!this.gpu) return undefined;
    const c = this.gpu.gpu.caps;
    return { adapter: c.name, f16: c.f16, subgroups: c.subgroups, subgroupMatrix: c.subgroupMatrix.length > 0, memory: this.gpu.memory };
  }

  /** Declared input metadata: name, dtype and shape (symbolic dims as names). */
  get inputMetadata(): { name: string; type: string }[] {
    return this.inputs.map((i) => ({ name: i.name, type: formatType(i.type) }));
  }

  async run(feeds: Feeds, fetches?: readonly string[]): Promise<Outputs> {
    if (!this.wasm && !this.gpu) return this.runSync(feeds, fetches);
    const feedMap = this.checkFeeds(feeds);
    if ([...feedMap.values()].every((v) => v instanceof Tensor)) this.lastFeeds = feedMap as Map<string, Value>;
    this.armDeadline();
    // checkFeeds lets GpuTensors through to the WebGPU backend only.
    let values: Value[];
    try {
      values = await (this.gpu ? this.gpu.run(feedMap) : this.wasm!.runner.run(feedMap as Map<string, Value>));
    } catch (e) {
      if (!(e instanceof DeviceLostError) || this.onDeviceLost !== 'wasm' || [...feedMap.values()].some((v) => v instanceof GpuTensor)) throw e;
      await this.fallBackToWasm(e);
      values = await this.wasm!.runner.run(feedMap as Map<string, Value>);
    }
    if (this.tuningMode === 'background' && !this.tuning) {
      this.tuning = this.tune({ budgetMs: this.tuneOpts.tuneBudgetMs ?? 10_000, onProgress: this.tuneOpts.onTuneProgress, stop: () => this.released });
      this.tuning.catch(() => undefined);
    }
    return this.collect(values, fetches);
  }

  /**
   * WebGPU backend: a run whose outputs stay on the GPU, as GpuTensors the caller owns (dispose() each when done;
   * download() reads one back). Feeding them to the next run chains runs with no GPU→CPU synchronisation.
   */
  /**
   * WebGPU backend: throws the InputError of an earlier runGpu whose kernels met invalid data only the GPU saw (an
   * index out of range). run() checks this itself, and so does the next runGpu; call it after downloading a runGpu
   * output to know that output is valid. One small read-back when a check is pending; nothing on other backends.
   */
  async checkGpuFaults(): Promise<void> {
    await this.gpu?.checkFaults();
  }

  async runGpu(feeds: Feeds, fetches?: readonly string[]): Promise<Record<string, GpuTensor>> {
    if (!this.gpu) throw new UnsupportedError(`runGpu needs the webgpu backend; this session runs on '${this.backend}'`, {}, "create the session with { backend: 'webgpu' }, or use run()");
    const fm = this.checkFeeds(feeds);
    this.armDeadline();
    const outs = await this.gpu.runGpu(fm);
    const want = fetches ? new Set(fetches) : null;
    const result: Record<string, GpuTensor> = {};
    this.outputNames.forEach((name, i) => {
      if (want && !want.has(name)) outs[i].dispose();
      else result[name] = outs[i];
    });
    return result;
  }

  /** Synchronous run on the reference backend (tests, CLI). */
  runSync(feeds: Feeds, fetches?: readonly string[]): Outputs {
    if (!this.executor) throw new InputError('the session was released', {}, 'create a new session');
    if (this.wasm || this.gpu) throw new UnsupportedError('runSync is only available on the reference backend', {}, 'use await session.run()');
    const fm = this.checkFeeds(feeds) as Map<string, Value>;
    this.armDeadline();
    return this.collect(this.executor.run(fm), fetches);
  }

  /** onDeviceLost 'wasm': moves the session to a Wasm runner (once, however many runs met the loss). */
  private fallBackToWasm(cause: DeviceLostError): Promise<void> {
    this.switching ??= (async () => {
      await this.attachWasm(await WasmRuntime.acquire({ threads: this.wasmOpts.threads }));
      try { this.gpu?.dispose(); } catch { /* the device is gone; its buffers with it */ }
      this.gpu = null;
      this.currentBackend = 'wasm';
      this.deviceLoss = cause.message;
    })();
    return this.switching;
  }

  private armDeadline(): void {
    this.env.deadline = this.runTimeoutMs ? { at: performance.now() + this.runTimeoutMs, ms: this.runTimeoutMs } : undefined;
  }

  private collect(values: Value[], fetches?: readonly string[]): Outputs {
    const out: Outputs = {};
    const want = fetches ? new Set(fetches) : null;
    this.outputNames.forEach((name, i) => {
      if (want && !want.has(name)) return;
      const v = values[i];
      if (!(v instanceof Tensor)) throw new UnsupportedError(`output '${name}' is a ${v.constructor.name}; only tensor outputs are returned by run()`);
      if (this.nonFinite === 'reject') {
        const bad = firstNonFinite(v);
        if (bad >= 0) {
          throw new ExecutionError(`output '${name}' holds ${describeAt(v, bad)}`, { input: name },
            "nonFinite: 'reject' is set; check the inputs' range, or compare with backend 'reference' to tell a model overflow from a kernel fault");
        }
      }
      out[name] = v;
    });
    return out;
  }

  /** Runs with any value kind (sequences, optionals) in graph order: used by the conformance runner. */
  async runValues(feeds: Map<string, Value>): Promise<Value[]> {
    if (!this.executor) throw new InputError('the session was released', {}, 'create a new session');
    this.armDeadline();
    if (this.gpu) return this.gpu.run(feeds);
    return this.wasm ? this.wasm.runner.run(feeds) : this.executor.run(feeds);
  }

  private checkFeeds(feeds: Feeds): Map<string, Value | GpuTensor> {
    if (feeds === null || typeof feeds !== 'object') throw new InputError('feeds must be an object of name → Tensor');
    const map = new Map<string, Value | GpuTensor>();
    for (const name of Object.keys(feeds)) {
      if (!this.inputNames.includes(name) && !this.model.graph.initializers.has(name)) {
        throw new InputError(`unknown input '${name}'`, { input: name }, `the model's inputs are: ${this.inputNames.join(', ')}`);
      }
    }
    const symbols = new Map<string, { input: string; value: number }>();
    for (const vi of this.inputs) {
      const t = feeds[vi.name];
      if (t === undefined) throw new InputError('input is missing', { input: vi.name }, `feed all of: ${this.inputNames.join(', ')}`);
      if (t instanceof GpuTensor) {
        if (!this.gpu) throw new InputError(`a GpuTensor was fed to a session on the '${this.backend}' backend`, { input: vi.name }, 'feed await gpuTensor.download() instead');
      } else if (!(t instanceof Tensor)) throw new InputError(`expected a webjit Tensor, got ${t === null ? 'null' : typeof t}`, { input: vi.name });
      else checkData(vi.name, t, this.nonFinite !== 'allow');
      checkAgainst(vi, t, symbols);
      map.set(vi.name, t);
    }
    for (const [name, t] of Object.entries(feeds)) if (!map.has(name)) map.set(name, t);
    return map;
  }

  private released = false;

  async release(): Promise<void> {
    // Background tuning stops at its next candidate; its runners use the backend this release gives up.
    this.released = true;
    if (this.tuning) await this.tuning.catch(() => undefined);
    this.executor = null;
    if (this.wasm) {
      this.wasm.runner.dispose();
      this.wasm.rt.releaseShared();
      this.wasm = null;
    }
    if (this.gpu) {
      this.gpu.dispose();
      this.gpu = null;
    }
  }
}

/** The data of a fed tensor: the dtype's array type, as many elements as its dims (a detached buffer has none), and finite floats when asked. */
function checkData(name: string, t: Tensor, finite: boolean): void {
  const d = t.data as unknown;
  if (t.type === 'string') {
    if (!Array.isArray(d)) throw new InputError(`a string tensor's data must be an array of strings, got ${tag(d)}`, { input: name });
  } else {
    const want = tag(DTYPES[t.type].make(0));
    if (tag(d) !== want) {
      throw new InputError(`a ${t.type} tensor's data must be a ${want}, got ${tag(d)}`, { input: name },
        t.type === 'float16' ? 'float16 data is a Uint16Array of bit patterns' : t.type === 'int64' ? 'int64 data is a BigInt64Array' : undefined);
    }
  }
  const n = (t.type === 'complex64' || t.type === 'complex128' ? 2 : 1) * sizeOf(t.dims);
  const len = (d as { length: number }).length;
  if (len !== n) {
    const detached = len === 0 && (d as TypedArray).buffer?.byteLength === 0;
    throw new InputError(`dims [${t.dims.join(',')}] need ${n} elements, the data now holds ${len}`, { input: name },
      detached ? "the tensor's buffer was detached (transferred to a worker or to the GPU): make a new Tensor" : 'the data was resized after the Tensor was made: make a new Tensor');
  }
  if (finite) {
    const bad = firstNonFinite(t);
    if (bad >= 0) {
      throw new InputError(`holds ${describeAt(t, bad)}`, { input: name }, "nonFinite is set to reject it: clean the input, or create the session with nonFinite: 'allow'");
    }
  }
}

const tag = (x: unknown): string => Object.prototype.toString.call(x).slice(8, -1);

/** Index of the first NaN or ±Inf element of a float tensor, or -1. */
function firstNonFinite(t: Tensor): number {
  const d = t.data;
  if (t.type === 'float32' || t.type === 'float64') {
    const a = d as Float32Array;
    for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return i;
  } else if (t.type === 'float16' || t.type === 'bfloat16') {
    const a = d as Uint16Array, mask = t.type === 'float16' ? 0x7c00 : 0x7f80;
    for (let i = 0; i < a.length; i++) if ((a[i] & mask) === mask) return i;
  }
  return -1;
}

function describeAt(t: Tensor, i: number): string {
  const what = t.type === 'float32' || t.type === 'float64' ? String((t.data as Float32Array)[i]) : 'NaN or ±Inf';
  const idx: number[] = [];
  for (let k = t.dims.length - 1, r = i; k >= 0; k--) { idx.unshift(r % t.dims[k]); r = Math.floor(r / t.dims[k]); }
  return `${what} at [${idx.join(',')}] (element ${i})`;
}

function checkAgainst(vi: ValueInfo, t: Tensor | GpuTensor, symbols: Map<string, { input: string; value: number }>): void {
  const ty = vi.type;
  if (!ty || ty.kind !== 'tensor') return;
  if (ty.dtype && ty.dtype !== t.type) {
    throw new InputError(`expected dtype ${ty.dtype}, got ${t.type}`, { input: vi.name });
  }
  if (ty.shape) {
    if (ty.shape.length !== t.dims.length) {
      throw new InputError(`expected rank ${ty.shape.length} [${ty.shape.map((d) => d ?? '?').join(',')}], got dims [${t.dims.join(',')}]`, { input: vi.name });
    }
    ty.shape.forEach((d, i) => {
      if (typeof d === 'number' && d !== t.dims[i]) {
        throw new InputError(`dim ${i} must be ${d}, got ${t.dims[i]} (dims [${t.dims.join(',')}])`, { input: vi.name });
      }
      // A named dim ('batch', 'sequence') must take one value across all inputs of a run.
      if (typeof d === 'string' && d) {
        const seen = symbols.get(d);
        if (!seen) symbols.set(d, { input: vi.name, value: t.dims[i] });
        else if (seen.value !== t.dims[i]) {
          throw new InputError(`dim ${i} ('${d}') is ${t.dims[i]}, but input '${seen.input}' gave '${d}' = ${seen.value} (dims [${t.dims.join(',')}])`,
            { input: vi.name }, `feed the same '${d}' to every input that has it`);
        }
      }
    });
  }
}
