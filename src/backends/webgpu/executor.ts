// Runs a graph on the WebGPU backend. Tensors live in pooled GPU buffers, reused as soon as their last reader is
// recorded; every node's WGSL kernels go into one command encoder per run (pipelines compile asynchronously and in
// parallel while the run is recorded); small integer shape computations run on the CPU, where they are already; nodes
// no GPU op covers read their inputs back and run on the reference kernels. A run ends with one readback of all outputs.
import { checkDeadline, runNode, type ExecEnv } from '../reference/executor.js';
import { atNode, DeviceLostError, ExecutionError, GraphError, InputError, ResourceLimitError, UnsupportedError } from '../../errors.js';
import { GpuTensor } from './gpu_tensor.js';
import { DEFAULTS_ONLY, type TuneOptions } from '../../tune/site.js';
import type { Graph, Node } from '../../graph/ir.js';
import { freeVariables, lastUses, subgraphsOf, topoOrder } from '../../graph/topo.js';
import { sizeOf, Tensor, type DType, type Value } from '../../tensor.js';
import { VALUE_INPUTS, rangeLength } from '../value_inputs.js';
import { VIEW_OPS, viewDims, viewReadsInput1 } from '../view_ops.js';
import { checkLost, type GpuContext } from './device.js';
import { findGpuOp, type Dispatch, type GpuConstant, type GpuOpPlan, type GpuPlanContext, type GpuValueDesc } from './kernel.js';
import { mathPrelude } from '../../codegen/wgsl/math.js';
import { fromStorage, gpuBytes, outputArray, storable, toStorage, writePadded } from './storage.js';
import { deriveConstant } from './derive.js';
import { envInt } from '../../util/node.js';
import './ops/index.js';

const USAGE_STORAGE = 0x80 | 0x04 | 0x08; // STORAGE | COPY_SRC | COPY_DST
const USAGE_READBACK = 0x01 | 0x08; // MAP_READ | COPY_DST
const MAP_READ = 1;

/** A tensor in a GPU buffer. Views (Reshape …) share the GBuf and its reference count. */
interface GBuf { buffer: GPUBuffer; bytes: number; refs: number; constant: boolean; pool: 'main' | 'upload' | 'none' }
interface Slot { buf?: GBuf; dtype: DType; dims: number[]; js?: Value }

/** A value on the host (a feed, a CPU node's result) as a slot. */
const hostSlot = (v: Value): Slot => ({ dtype: v instanceof Tensor ? v.type : 'float32', dims: v instanceof Tensor ? [...v.dims] : [], js: v });

/** Nodes whose inputs are all on the CPU and this small run there (shape arithmetic, masks, position ids). */
const CPU_MAX_ELEMS = 16384;
const VALUE_MAX_ELEMS = 16;
const FLOAT: ReadonlySet<DType> = new Set(['float32', 'float16', 'bfloat16', 'float64']);
const MAX_PLANS_PER_NODE = 64;
/**
 * Recorded dispatches that are submitted at once, so the GPU works while the rest of the run is recorded
 * (WEBJIT_SUBMIT_EVERY overrides it, for benchmarks).
 */
const SUBMIT_EVERY = envInt('WEBJIT_SUBMIT_EVERY', 48);
/** A replay submits this many dispatches first (the GPU starts sooner), then SUBMIT_EVERY at a time (WEBJIT_REPLAY_FIRST). */
const REPLAY_FIRST = envInt('WEBJIT_REPLAY_FIRST', 16);
/** CPU nodes whose inputs are all this small are memoised (their inputs compared by value). */
const MEMO_MAX_ELEMS = 256;
/** Ops whose result depends on more than their inputs. */
const NOT_PURE = new Set(['RandomNormal', 'RandomUniform', 'RandomNormalLike', 'RandomUniformLike', 'Multinomial', 'Bernoulli']);

export interface GpuRunnerOptions extends TuneOptions {
  /** When false, a node without a GPU kernel is an UnsupportedError instead of a reference fallback. */
  fallback?: boolean;
  /** Compute in f16 where ops allow it (needs shader-f16). */
  f16?: boolean;
  /** f32 GEMMs with constant weights on the tensor cores with split operands ('high'; default 'highest'). */
  matmulPrecision?: 'highest' | 'high';
  /** The most bytes of GPU memory the weights may take. */
  memoryLimitBytes?: number;
  /** Replay steady-state runs from a trace (default true; see Trace). */
  replay?: boolean;
}

export interface GpuRunStats {
  gpuNodes: number;
  /** Small nodes run on the CPU because their inputs were there (shape arithmetic). */
  cpuNodes: number;
  fallbackNodes: number;
  fallbackOps: Map<string, number>;
  /** GPU→CPU readbacks in the middle of runs (each one waits for the GPU). */
  midRunReads: number;
  runs: number;
  /** Bind groups created (a steady-state run reuses the last run's). */
  bindGroupsMade: number;
  /**
   * Where run() spends its time, summed over runs (ms): recording (planning, CPU shape nodes, encoding); the last submit to the read-back mapped (the GPU
   * finishing); converting the mapped bytes to tensors; the error scopes popped after.
   */
  phaseMs: { record: number; wait: number; convert: number; scopes: number };
  /** Runs replayed from a trace (see Trace). */
  replays: number;
  /** Dispatches per run in the last timeRuns (every dispatch of the graph, replayed). */
  timedDispatches: number;
}

/** WEBJIT_PROFILE=1: GPU time per op and kernel from timestamp queries (one pass per dispatch), printed at exit. */
const PROFILE = typeof process !== 'undefined' && !!process.env?.WEBJIT_PROFILE;
const gpuProfile = new Map<string, { ns: number; n: number }>();
const runProfile = { recordMs: 0, totalMs: 0, runs: 0 };
if (PROFILE) {
  process.on('exit', () => {
    const rows = [...gpuProfile].sort((a, b) => b[1].ns - a[1].ns);
    const total = rows.reduce((t, [, e]) => t + e.ns, 0);
    const runs = Math.max(1, runProfile.runs);
    process.stderr.write(`webgpu profile: ${runs} runs; per run: GPU busy ${(total / 1e6 / runs).toFixed(2)} ms, recording ${(runProfile.recordMs / runs).toFixed(2)} ms, run() ${(runProfile.totalMs / runs).toFixed(2)} ms\n`);
    // By op type and kernel grid first (where the time goes), then the slowest single kernels.
    const byOp = new Map<string, { ns: number; n: number }>();
    for (const [k, e] of rows) {
      const op = k.split(' ', 2).join(' ');
      const t = byOp.get(op) ?? { ns: 0, n: 0 };
      t.ns += e.ns; t.n += e.n;
      byOp.set(op, t);
    }
    for (const [k, e] of [...byOp].sort((a, b) => b[1].ns - a[1].ns).slice(0, 20)) {
      process.stderr.write(`  ${(100 * e.ns / total).toFixed(1).padStart(5)}% ${(e.ns / 1e3 / runs).toFixed(1).padStart(9)} µs/run x${e.n / runs}/run  ${k}\n`);
    }
    for (const [k, e] of rows.slice(0, Number(process.env.WEBJIT_PROFILE) > 1 ? Number(process.env.WEBJIT_PROFILE) : 10)) {
      process.stderr.write(`  ${(100 * e.ns / total).toFixed(1).padStart(5)}% ${(e.ns / 1e3 / e.n).toFixed(1).padStart(9)} µs x${e.n / runs}/run  ${k}\n`);
    }
  });
}

/** WEBJIT_GPU_DISABLE=Op1,Op2: those ops run on the reference fallback (bisecting a wrong result). */
const DISABLED = new Set(typeof process !== 'undefined' ? (process.env?.WEBJIT_GPU_DISABLE ?? '').split(',').filter(Boolean) : []);

/** Buffer size classes: powers of two up to 4 KiB, then steps of 1/8 of the power of two (≤ 12.5% slack). */
function sizeClass(bytes: number): number {
  const b = Math.max(16, Math.ceil(bytes / 16) * 16);
  if (b <= 4096) return 2 ** Math.ceil(Math.log2(b));
  const step = 2 ** (Math.floor(Math.log2(b)) - 3);
  return Math.ceil(b / step) * step;
}

/** Free GPU buffers by size class, last in first out, so a steady-state run gets the same buffers (and bind groups). */
class BufferPool {
  private readonly free = new Map<number, GPUBuffer[]>();
  /** Buffers by creation order: the free lists are put in this order between runs. */
  private readonly all = new Map<GPUBuffer, number>();
  private serial = 0;
  private destroyed = false;
  constructor(private readonly device: GPUDevice, private readonly usage: number) {}
  get count(): number { return this.all.size; }
  get bytes(): number { let n = 0; for (const b of this.all.keys()) n += b.size; return n; }
  /**
   * Between runs: every free list in creation order, so that each run takes the same buffers in the same order as
   * the last one, and the bind groups made for it are found again.
   */
  canonicalize(): void {
    for (const list of this.free.values()) list.sort((a, b) => this.all.get(b)! - this.all.get(a)!);
  }
  take(bytes: number): GPUBuffer {
    if (!Number.isSafeInteger(bytes) || bytes < 0) {
      throw new ExecutionError(`invalid allocation of ${bytes} bytes of GPU memory`, {}, 'a node computed an invalid output shape: the model is malformed');
    }
    const c = sizeClass(bytes);
    const list = this.free.get(c);
    if (list?.length) return list.pop()!;
    const b = this.device.createBuffer({ size: c, usage: this.usage });
    this.all.set(b, this.serial++);
    return b;
  }
  give(b: GPUBuffer): void {
    const c = b.size;
    let list = this.free.get(c);
    if (!list) { list = []; this.free.set(c, list); }
    list.push(b);
  }
  /** The buffer leaves the pool (handed to the caller of runGpu). */
  detach(b: GPUBuffer): void { this.all.delete(b); }
  /** A detached buffer comes back (false if the pool was destroyed since). */
  adopt(b: GPUBuffer): boolean {
    if (this.destroyed) return false;
    this.all.set(b, this.serial++);
    return true;
  }
  destroy(): void { for (const b of this.all.keys()) b.destroy(); this.all.clear(); this.free.clear(); this.destroyed = true; }
}

interface PipelineEntry { promise: Promise<GPUComputePipeline>; pipeline?: GPUComputePipeline }
/** Pipelines by WGSL text, per device: shared by the sessions of a process. */
const pipelineCaches = new WeakMap<GPUDevice, Map<string, PipelineEntry>>();

interface Recorded { dispatch: Dispatch; buffers: GPUBuffer[]; entry: PipelineEntry; node: Node; faultAt?: FaultAt }
/** The binding of a dispatch that takes the node's fault words, and their offset in the page. */
interface FaultAt { binding: number; offset: number }
type Command = Recorded | { copy: [GPUBuffer, number, GPUBuffer, number, number] };

/**
 * A steady-state run, recorded to be replayed (like a CUDA graph): while the feeds keep their names, dtypes and dims,
 * every plan, buffer and bind group of a run is the same as the last one's, and only the values computed from the
 * feeds' data change. A replay redoes just that host work (the CPU nodes that read feed data, and the uploads of
 * what they and the feeds hold) and submits the recorded dispatches, skipping the planning, shape arithmetic and
 * bookkeeping of the other few hundred nodes.
 */
interface Trace {
  sig: string;
  /** In order: a CPU node to run again (its inputs: names of per-run values, or the values that never change), or an upload. */
  steps: ({ node: number; ins: (string | Value | undefined)[]; outs: { name: string; dims: number[] }[] } | { upload: string; buffer: GPUBuffer })[];
  cmds: Recorded[];
  outs: Slot[];
  /** Upload buffers the trace took out of the upload pool: per-run values', and those of values that never change. */
  buffers: GPUBuffer[];
  gpuNodes: number;
  cpuNodes: number;
}

/** A trace being recorded: the values computed from feed data so far (by name); `ok` false once something can't be replayed. */
interface Capture { perRun: Set<string>; trace: Trace; ok: boolean; why?: string }

/** Feeds' names, dtypes and dims: the key a trace is replayed under. */
function feedSignature(feeds: Map<string, Value | GpuTensor>): string | null {
  const parts: string[] = [];
  for (const [k, v] of feeds) {
    if (!(v instanceof Tensor)) return null;
    parts.push(`${k}:${v.type}[${v.dims.join(',')}]`);
  }
  return parts.join(';');
}

/** The end of the last queued run on each device (runs of all sessions on a device are serialised). */
const deviceChains = new WeakMap<GPUDevice, Promise<unknown>>();

/** Per plan, the inputs its dispatches bind (computed once; record() runs for every node of every run). */
const boundInputs = new WeakMap<GpuOpPlan, Set<number>>();


export class GpuGraphRunner {
  private readonly order: Node[];
  private readonly frees: string[][];
  private readonly consts = new Map<string, Slot>();
  private readonly constGpu = new Map<string, GBuf>();
  private readonly transformed = new Map<string, { c: GpuConstant; buffer: GPUBuffer }>();
  private readonly constById = new Map<number, GPUBuffer>();
  /**
   * Fault words per node whose kernels can meet data only the GPU sees (Gather indices, GEMM inputs past the f16 range):
   * u32[4] at an aligned offset of a shared page (FAULT_SLOTS nodes per page, so a read-back copies one range per page
   * rather than one per node), zero when clean.
   */
  private readonly faultSlots = new Map<Node, { page: number; offset: number }>();
  private readonly faultPages: GPUBuffer[] = [];
  /** The fault words read after a runGpu (which reads nothing back), checked at the next run or checkFaults(). */
  private faultCheck: Promise<Fault[]> | null = null;
  private readonly plans: Map<string, GpuOpPlan | null>[];
  private readonly eligible: boolean[];
  private readonly lastPlan: ({ ins: ({ dtype: DType; dims: number[] } | undefined)[]; plan: GpuOpPlan | null } | undefined)[] = [];
  private readonly memo: ({ ins: (Tensor | undefined)[]; outs: Value[] } | undefined)[] = [];
  /**
   * Nodes whose CPU run made a large output from small inputs (an embedding Gather of token type ids, an Expand):
   * they run on the GPU from then on, since computing and uploading their output every run costs more.
   */
  private readonly bigOnCpu: boolean[] = [];
  private readonly pool: BufferPool;
  private readonly uploads: BufferPool;
  private readonly readbacks: BufferPool;
  private readonly pipelines: Map<string, PipelineEntry>;
  private readonly bindGroups = new WeakMap<Dispatch, { buffers: GPUBuffer[]; group: GPUBindGroup }>();
  private cmds: Command[] = [];
  /** timeRuns records whole runs to replay them: nothing may be submitted while it records. */
  private holdSubmits = false;
  private uploadsInRun: GPUBuffer[] = [];
  private disposed = false;
  /** The replayable run (see Trace), the feed signature of the last run, and the trace being recorded. */
  private trace: Trace | null = null;
  private lastSig: string | null = null;
  private capture: Capture | null = null;

  constructor(readonly graph: Graph, readonly env: ExecEnv, readonly gpu: GpuContext, readonly opts: GpuRunnerOptions = {},
    readonly stats: GpuRunStats = { gpuNodes: 0, cpuNodes: 0, fallbackNodes: 0, fallbackOps: new Map(), midRunReads: 0, runs: 0, bindGroupsMade: 0, phaseMs: { record: 0, wait: 0, convert: 0, scopes: 0 }, replays: 0, timedDispatches: 0 }) {
    const device = gpu.device;
    this.pool = new BufferPool(device, USAGE_STORAGE);
    this.uploads = new BufferPool(device, USAGE_STORAGE);
    this.readbacks = new BufferPool(device, USAGE_READBACK);
    let pc = pipelineCaches.get(device);
    if (!pc) { pc = new Map(); pipelineCaches.set(device, pc); }
    this.pipelines = pc;
    this.order = topoOrder(graph);
    this.plans = this.order.map(() => new Map());
    this.eligible = this.order.map((n) => (n.domain === '' || n.domain === 'webjit') && (n.domain === 'webjit' || subgraphsOf(n).length === 0));
    this.frees = lastUses(graph, this.order);
    const maxBind = gpu.caps.maxBindingSize;
    let need = 0;
    for (const t of graph.initializers.values()) if (storable(t)) need += gpuBytes(t.type, t.dims);
    if (opts.memoryLimitBytes !== undefined && need > opts.memoryLimitBytes) {
      throw new ResourceLimitError(`the model's weights need ${need} bytes of GPU memory; memoryLimitBytes is ${opts.memoryLimitBytes}`, {},
        'use a smaller or quantized model, or raise memoryLimitBytes');
    }
    for (const [name, t] of graph.initializers) {
      if (storable(t) && gpuBytes(t.type, t.dims) > maxBind) {
        throw new ResourceLimitError(`initializer '${name}' needs ${gpuBytes(t.type, t.dims)} bytes on the GPU; the adapter binds at most ${maxBind}`,
          { input: name }, "use backend 'wasm'");
      }
      this.consts.set(name, { dtype: t.type, dims: [...t.dims], js: t });
    }
  }

  /**
   * GPU time of one run of the graph, in ms, for each of `rounds` rounds: the run is recorded once per feed set
   * (rotated, so caches don't flatter), then its dispatches are encoded `reps` times per round into one pass,
   * timed by timestamp queries where the adapter has them, else by the wall clock to the queue's completion.
   */
  timeRuns(feedSets: Map<string, Value>[], reps: number, rounds: number): Promise<number[]> {
    return this.serial(() => this.timeRunsOnce(feedSets, reps, rounds));
  }

  private async timeRunsOnce(feedSets: Map<string, Value>[], reps: number, rounds: number): Promise<number[]> {
    const rec = await this.recordTimed(feedSets);
    this.stats.timedDispatches = rec.lists[0]?.length ?? 0;
    try {
      return (await timeLists([{ runner: this, lists: rec.lists }], reps, rounds)).map((t) => t[0]);
    } finally {
      rec.release();
    }
  }

  /**
   * Runs recorded for timing, one dispatch list per feed set (nothing submitted), and how to release what they hold.
   * Call inside serial().
   */
  private async recordTimed(feedSets: Map<string, Value>[]): Promise<{ lists: Recorded[][]; release(): void }> {
    if (this.disposed) throw new ExecutionError('the session was released');
    checkLost(this.gpu);
    const lists: Recorded[][] = [];
    const held: Slot[] = [];
    const release = () => {
      for (const s of held) this.release(s);
      for (const b of this.uploadsInRun) this.uploads.give(b);
      this.uploadsInRun = [];
      this.cmds = [];
    };
    try {
      for (const feeds of feedSets) {
        const slots = new Map<string, Slot>();
        for (const [k, v] of feeds) slots.set(k, hostSlot(v));
        this.holdSubmits = true;
        const outs = await this.runSlots(slots).finally(() => { this.holdSubmits = false; });
        held.push(...outs);
        if (this.cmds.some((c) => 'copy' in c)) throw new UnsupportedError('timing a graph with copies between passes is not supported');
        lists.push(this.cmds.splice(0) as Recorded[]);
      }
      return { lists, release };
    } catch (e) {
      release();
      throw e;
    }
  }

  /**
   * GPU time of one run of each runner's graph (ms), measured together: every round puts each runner's `reps` runs in
   * a pass of its own, all in one submit, so that they meet the GPU in the same clock state (a GPU that idled runs at
   * a fraction of its clocks for its first tenths of a second of work: times taken apart are not comparable). The
   * first round warms up and is not counted. Runners of one device. Returns, per round, the ms of each runner.
   */
  static timeTogether(runners: GpuGraphRunner[], feedSets: Map<string, Value>[], reps: number, rounds: number): Promise<number[][]> {
    return runners[0].serial(() => timeRecordings(runners.map((runner) => () => runner.recordTimed(feedSets).then((r) => ({ runner, ...r }))), reps, rounds));
  }

  /**
   * Tuning: plans every node for these feeds and starts compiling their kernels, without waiting for the compiles or
   * running anything (the tuner starts many candidates' compiles at once: they proceed in parallel on Dawn's workers).
   */
  prepare(feeds: Map<string, Value>): Promise<void> {
    return this.serial(async () => (await this.recordTimed([feeds])).release());
  }

  /**
   * Benchmarks only: the GPU time (ms per run, `rounds` rounds) of the recorded trace's dispatches that `keep`
   * selects, replayed `reps` times in one pass on whatever the buffers hold; what a kind of kernel costs inside the
   * model, without the one-pass-per-dispatch profile's overheads. Null without a trace (before the third run).
   */
  timeTrace(keep: (node: Node, d: Dispatch) => boolean, reps: number, rounds: number): Promise<number[] | null> {
    return this.serial(async () => {
      const t = this.trace;
      return t ? (await timeLists([{ runner: this, lists: [t.cmds.filter((c) => keep(c.node, c.dispatch))] }], reps, rounds)).map((x) => x[0]) : null;
    });
  }

  /** Benchmarks only: the recorded trace's dispatches and their nodes (null before the third run). */
  traceDispatches(): { node: Node; dispatch: Dispatch }[] | null {
    return this.trace?.cmds.map((c) => ({ node: c.node, dispatch: c.dispatch })) ?? null;
  }

  /** Plans from now on with these tuning hooks (the session's end-to-end check of tuned kernels). */
  setTuning(hooks: TuneOptions['tune']): void {
    (this.opts as GpuRunnerOptions).tune = hooks;
    this.invalidatePlans();
  }

  /**
   * GPU time of a run of the graph planned with each of these tuning hooks, measured together as timeTogether does
   * (each round one submit with a pass per hooks; the first round a warm-up): per round, ms per hooks. Planning ends
   * with the last hooks.
   */
  timeWithHooks(hooks: NonNullable<TuneOptions['tune']>[], feedSets: Map<string, Value>[], reps: number, rounds: number): Promise<number[][]> {
    // Each recording holds its outputs only: the lists may share intermediate buffers, which timing allows.
    return this.serial(() => timeRecordings(hooks.map((h) => () => {
      this.setTuning(h);
      return this.recordTimed(feedSets).then((r) => ({ runner: this, ...r }));
    }), reps, rounds));
  }

  /** Forgets every plan (tuned parameters changed): the next run plans again; pipelines stay cached by their code. */
  invalidatePlans(): void {
    for (const m of this.plans) m.clear();
    this.lastPlan.length = 0;
    this.dropTrace();
  }

  /** GPU memory the runner holds: pooled activations, constants and staging buffers. */
  get memory(): { buffers: number; bytes: number } {
    let bytes = this.pool.bytes + this.uploads.bytes + this.readbacks.bytes, buffers = this.pool.count + this.uploads.count + this.readbacks.count;
    for (const b of this.trace?.buffers ?? []) { bytes += b.size; buffers++; }
    for (const g of this.constGpu.values()) { bytes += g.buffer.size; buffers++; }
    for (const t of this.transformed.values()) { bytes += t.buffer.size; buffers++; }
    return { buffers, bytes };
  }

  /**
   * Runs are serialised per device: a session's runs share its buffers, and the device's error scopes are one stack
   * that interleaved runs (other sessions, background tuning) would pop for each other.
   */
  private serial<T>(f: () => Promise<T>): Promise<T> {
    const device = this.gpu.device;
    const p = (deviceChains.get(device) ?? Promise.resolve()).then(f);
    deviceChains.set(device, p.catch(() => undefined));
    return p;
  }

  run(feeds: Map<string, Value | GpuTensor>): Promise<Value[]> {
    return this.serial(() => this.runOnce(feeds, false) as Promise<Value[]>);
  }

  /** A run whose outputs stay on the GPU (no readback): the caller owns them until it disposes them. */
  runGpu(feeds: Map<string, Value | GpuTensor>): Promise<GpuTensor[]> {
    return this.serial(() => this.runOnce(feeds, true) as Promise<GpuTensor[]>);
  }

  /** A fed GPU tensor's slot: bound as it is, never written, never pooled. */
  private feedSlot(name: string, v: GpuTensor): Slot {
    if (v.disposed) throw new InputError('the GPU tensor was disposed', { input: name }, 'feed a GPU tensor before disposing it');
    if (v.device !== this.gpu.device) {
      throw new InputError("the GPU tensor belongs to another GPU device", { input: name }, 'download() it and feed the Tensor, or create it on this session\'s device');
    }
    return { dtype: v.type, dims: [...v.dims], buf: { buffer: v.buffer, bytes: v.buffer.size, refs: 1, constant: true, pool: 'none' } };
  }

  /**
   * The outputs as GPU tensors. An output alone in a pooled buffer leaves the pool for the caller (and comes back when
   * disposed); one that shares its buffer, lives in a fed or constant buffer, or was computed on the CPU is copied.
   */
  private handOut(outs: Slot[]): GpuTensor[] {
    const device = this.gpu.device;
    const given = new Set<GBuf>();
    const copies: Command[] = [];
    const back = (b: GPUBuffer) => { if (!this.disposed && this.pool.adopt(b)) this.pool.give(b); else b.destroy(); };
    const result = outs.map((s) => {
      const bytes = gpuBytes(s.dtype, s.dims);
      let buffer: GPUBuffer;
      if (s.buf && s.buf.pool === 'main' && s.buf.refs === 1 && !given.has(s.buf)) {
        buffer = s.buf.buffer;
        this.pool.detach(buffer);
        s.buf.pool = 'none';
        given.add(s.buf);
      } else {
        buffer = this.pool.take(bytes);
        this.pool.detach(buffer);
        if (s.buf) copies.push({ copy: [s.buf.buffer, 0, buffer, 0, bytes] });
        else {
          if (!storable(s.js as Value)) throw new UnsupportedError(`an output is a ${(s.js as Value).constructor.name} of dtype ${s.dtype}, which has no GPU form`, {}, 'use run() for this model');
          writePadded(device, buffer, toStorage(s.js as Tensor));
        }
      }
      return new GpuTensor(s.dtype, s.dims, buffer, device, back);
    });
    this.cmds.push(...copies);
    return result;
  }

  private async runOnce(feeds: Map<string, Value | GpuTensor>, onGpu: boolean): Promise<Value[] | GpuTensor[]> {
    if (this.disposed) throw new ExecutionError('the session was released');
    checkLost(this.gpu);
    await this.checkFaults();
    const device = this.gpu.device;
    device.pushErrorScope('out-of-memory');
    device.pushErrorScope('validation');
    let outs: Slot[] = [];
    let result: Value[] | GpuTensor[] | undefined;
    let failure: unknown;
    // Replays (see Trace): run() with host feeds of the last run's signature records a trace, later ones replay it.
    // runGpu hands pooled buffers to its caller, which a trace may bind: the trace goes.
    const sig = onGpu || PROFILE || this.opts.poison || this.opts.replay === false ? null : feedSignature(feeds);
    if (onGpu) this.dropTrace();
    const replay = sig !== null && this.trace?.sig === sig ? this.trace : null;
    this.capture = !replay && sig !== null && sig === this.lastSig
      ? { perRun: new Set(feeds.keys()), trace: { sig, steps: [], cmds: [], outs: [], buffers: [], gpuNodes: 0, cpuNodes: 0 }, ok: true }
      : null;
    this.lastSig = sig;
    const before = { gpu: this.stats.gpuNodes, cpu: this.stats.cpuNodes, reads: this.stats.midRunReads };
    try {
      const t0 = performance.now();
      let t1 = t0;
      if (replay) {
        const replayed = await this.replay(replay, feeds as Map<string, Value>);
        if (replayed) { result = replayed.values; t1 = replayed.encoded; } else this.dropTrace();
      }
      if (!result) {
        const slots = new Map<string, Slot>();
        for (const [k, v] of feeds) {
          slots.set(k, v instanceof GpuTensor ? this.feedSlot(k, v) : hostSlot(v));
        }
        outs = await this.runSlots(slots);
        t1 = performance.now();
        if (onGpu) {
          result = this.handOut(outs);
          await this.flush();
          if (this.faultPages.length) this.faultCheck = this.readFaults();
        } else {
          result = await this.readAll(outs);
          this.keepTrace(outs, before);
        }
      }
      this.stats.phaseMs.record += t1 - t0;
      if (PROFILE && this.stats.runs >= 2) { runProfile.recordMs += t1 - t0; runProfile.totalMs += performance.now() - t0; runProfile.runs++; }
      this.stats.runs++;
    } catch (e) {
      failure = e;
    } finally {
      this.capture = null;
      for (const s of outs) this.release(s);
      this.cmds = [];
      for (const b of this.uploadsInRun) this.uploads.give(b);
      this.uploadsInRun = [];
      this.pool.canonicalize();
      this.uploads.canonicalize();
    }
    const t2 = performance.now();
    const validation = await device.popErrorScope().catch(() => null);
    const oom = await device.popErrorScope().catch(() => null);
    this.stats.phaseMs.scopes += performance.now() - t2;
    if (this.gpu.lost) throw this.lostError();
    if (failure) throw failure;
    if (oom) throw new ResourceLimitError(`the GPU ran out of memory: ${oom.message}`, {}, "use a smaller input, or backend 'wasm'");
    if (validation) throw new ExecutionError(`a generated GPU kernel was rejected: ${validation.message}`, {}, 'this is a bug in webjit; please report it with the model');
    return result!;
  }

  /**
   * Replays a trace: the CPU nodes that read feed data run again and their values and the feeds are uploaded into the
   * trace's buffers, then the recorded dispatches are submitted and the outputs read back; also when the last dispatch
   * was submitted (the replay's "recording" time). Null when one of those CPU values came out with other dims than
   * when recorded (the caller runs the graph the normal way).
   */
  private async replay(t: Trace, feeds: Map<string, Value>): Promise<{ values: Value[]; encoded: number } | null> {
    const device = this.gpu.device;
    const vals = new Map<string, Value>(feeds);
    for (const st of t.steps) {
      if ('upload' in st) { writePadded(device, st.buffer, toStorage(vals.get(st.upload) as Tensor)); continue; }
      const node = this.order[st.node];
      let outs: Value[];
      try {
        outs = runNode(node, st.ins.map((x) => (typeof x === 'string' ? vals.get(x) : x)), this.env, () => undefined);
      } catch (e) {
        throw atNode(e, node.name, node.opType);
      }
      for (let k = 0; k < st.outs.length; k++) {
        const { name, dims } = st.outs[k];
        if (!name) continue;
        const o = outs[k];
        if (!(o instanceof Tensor) || o.dims.length !== dims.length || o.dims.some((d, j) => d !== dims[j])) return null;
        vals.set(name, o);
      }
    }
    // The GPU starts on a first small batch while the rest is encoded.
    for (let i = 0, n = REPLAY_FIRST; i < t.cmds.length; i += n, n = SUBMIT_EVERY) this.encode(t.cmds.slice(i, i + n));
    const encoded = performance.now();
    this.stats.gpuNodes += t.gpuNodes;
    this.stats.cpuNodes += t.cpuNodes;
    this.stats.replays++;
    return { values: await this.readAll(t.outs), encoded };
  }

  /** After a normal run() that recorded a trace: keeps it if nothing in the run stands in the way of replaying it. */
  private keepTrace(outs: Slot[], before: { gpu: number; cpu: number; reads: number }): void {
    const c = this.capture;
    if (!c) return;
    if (this.stats.midRunReads !== before.reads) { c.ok = false; c.why = 'a GPU value was read back in the middle of the run'; }
    if (!outs.every((o) => o.buf && o.js === undefined)) { c.ok = false; c.why = 'an output was computed on the CPU'; }
    if (!c.ok) return;
    const t = c.trace;
    t.outs = outs.map((o) => ({ ...o }));
    t.gpuNodes = this.stats.gpuNodes - before.gpu;
    t.cpuNodes = this.stats.cpuNodes - before.cpu;
    // Its upload buffers leave the pool: values that never change are not uploaded again.
    const keep = new Set(t.buffers);
    this.uploadsInRun = this.uploadsInRun.filter((b) => !keep.has(b));
    for (const b of keep) this.uploads.detach(b);
    this.dropTrace();
    this.trace = t;
  }

  /** Forgets the trace; its upload buffers go back to the pool. */
  private dropTrace(): void {
    const t = this.trace;
    if (!t) return;
    this.trace = null;
    for (const b of t.buffers) if (this.uploads.adopt(b)) this.uploads.give(b); else b.destroy();
  }

  /**
   * While a trace is recorded: a CPU node that reads a value computed from feed data (or a feed) becomes a step of the
   * trace and its outputs such values; one that does not gives the same values every run and is left out.
   */
  private captureCpu(i: number, node: Node, ins: (Slot | undefined)[], outs: Slot[]): void {
    const c = this.capture;
    if (!c) return;
    if (subgraphsOf(node).length || NOT_PURE.has(node.opType)) { c.ok = false; c.why = `${node.opType} on the CPU`; return; }
    if (!node.inputs.some((x) => x && c.perRun.has(x))) return;
    if (ins.some((x) => x?.js === undefined && x !== undefined)) { c.ok = false; c.why = 'a CPU node read a GPU value'; return; }
    c.trace.steps.push({
      node: i,
      ins: node.inputs.map((x, k) => (x && c.perRun.has(x) ? x : ins[k]?.js)),
      outs: node.outputs.map((name, k) => ({ name, dims: [...(outs[k]?.dims ?? [])] })),
    });
    for (const o of node.outputs) if (o) c.perRun.add(o);
  }

  /** While a trace is recorded: a plan or view that reads the data of a per-run value can't be replayed. */
  private capturePlanRead(name: string): void {
    const c = this.capture;
    if (c?.perRun.has(name)) { c.ok = false; c.why = `a kernel's plan depends on the data of '${name}'`; }
  }

  private lostError(): DeviceLostError {
    try { checkLost(this.gpu); } catch (e) { return e as DeviceLostError; }
    return new DeviceLostError('the WebGPU device was lost');
  }

  private async runSlots(feeds: Map<string, Slot>): Promise<Slot[]> {
    const values = new Map<string, Slot>(feeds);
    const lookup = (name: string): Slot | undefined => values.get(name) ?? this.consts.get(name);
    try {
      for (let i = 0; i < this.order.length; i++) {
        const node = this.order[i];
        checkDeadline(this.env, node);
        const ins = node.inputs.map((x) => {
          if (!x) return undefined;
          const s = lookup(x);
          if (!s) throw new GraphError(`value '${x}' is used but never produced`, { node: node.name, op: node.opType, input: x });
          return s;
        });
        let outs: Slot[];
        try {
          outs = await this.runNode(i, node, ins, lookup);
        } catch (e) {
          // An unexpected exception in a planner (a malformed node) becomes a typed error naming the node.
          throw atNode(e, node.name, node.opType);
        }
        node.outputs.forEach((name, k) => {
          if (!name) { this.release(outs[k]); return; }
          if (outs[k]) values.set(name, outs[k]);
        });
        for (const x of this.frees[i]) { this.release(values.get(x)); values.delete(x); }
      }
      return this.graph.outputs.map((o) => {
        const s = lookup(o.name);
        if (!s) throw new GraphError(`graph output '${o.name}' is never produced`, { input: o.name });
        if (s.buf && !s.buf.constant) s.buf.refs++;
        return s;
      });
    } finally {
      for (const s of values.values()) this.release(s);
    }
  }

  private release(s: Slot | undefined): void {
    const b = s?.buf;
    if (!b || b.constant) return;
    if (--b.refs === 0) {
      if (b.pool === 'main') this.pool.give(b.buffer);
      // Upload buffers go back to their pool at the end of the run (queue.writeBuffer is not ordered with recorded work).
    }
  }

  private async runNode(i: number, node: Node, ins: (Slot | undefined)[], lookup: (n: string) => Slot | undefined): Promise<Slot[]> {
    const onCpu = ins.every((s) => !s || s.js !== undefined);
    if (node.domain === '' && (node.opType === 'Shape' || node.opType === 'Size') && ins[0]) {
      this.stats.cpuNodes++;
      const t = shapeValue(node, ins[0].dims);
      return [{ dtype: t.type, dims: [...t.dims], js: t }];
    }
    // A view of a value on the CPU stays on the CPU (a later GPU reader uploads it once).
    if (onCpu && node.domain === '' && VIEW_OPS.has(node.opType)) {
      this.stats.cpuNodes++;
      const outs = await this.runReference(node, ins, lookup);
      this.captureCpu(i, node, ins, outs);
      return outs;
    }
    if (this.eligible[i]) {
      // Shape arithmetic: small integer values (and small constants) already on the CPU stay there.
      const small = ins.every((s, k) => !s || (sizeOf(s.dims) <= CPU_MAX_ELEMS && (!FLOAT.has(s.dtype) || this.consts.get(node.inputs[k]) === s)));
      if (onCpu && small && !this.bigOnCpu[i]) {
        this.stats.cpuNodes++;
        const outs = await this.runMemo(i, node, ins, lookup);
        if (outs.some((o) => sizeOf(o.dims) > CPU_MAX_ELEMS)) this.bigOnCpu[i] = true;
        this.captureCpu(i, node, ins, outs);
        return outs;
      }
      if (ins.every((s) => !s || s.buf || storable(s.js as Value))) {
        const view = await this.viewOp(node, ins);
        if (view) { this.stats.gpuNodes++; return view; }
        const plan = await this.plan(i, node, ins);
        if (plan) { this.stats.gpuNodes++; return this.record(node, plan, ins); }
      }
    }
    if (this.opts.fallback === false) {
      throw new UnsupportedError(`the WebGPU backend has no kernel for this node (${describe(ins)})`, { node: node.name, op: node.opType },
        'allow the reference fallback, or use another backend');
    }
    this.stats.fallbackNodes++;
    this.stats.fallbackOps.set(node.opType, (this.stats.fallbackOps.get(node.opType) ?? 0) + 1);
    const outs = await this.runReference(node, ins, lookup);
    this.captureCpu(i, node, ins, outs);
    return outs;
  }

  /** CPU shape arithmetic repeats run after run: inputs equal to the last run's give the last run's outputs. */
  private async runMemo(i: number, node: Node, ins: (Slot | undefined)[], lookup: (n: string) => Slot | undefined): Promise<Slot[]> {
    const m = this.memo[i];
    if (m && m.ins.length === ins.length && m.ins.every((t, k) => sameSmall(t, ins[k]?.js))) {
      return m.outs.map(hostSlot);
    }
    const outs = await this.runReference(node, ins, lookup);
    const memoable = subgraphsOf(node).length === 0 && !NOT_PURE.has(node.opType) && ins.every((s) => !s || (s.js instanceof Tensor && s.js.size <= MEMO_MAX_ELEMS));
    this.memo[i] = memoable ? { ins: ins.map((s) => s?.js as Tensor | undefined), outs: outs.map((o) => o.js!) } : undefined;
    return outs;
  }

  private async runReference(node: Node, ins: (Slot | undefined)[], lookup: (n: string) => Slot | undefined): Promise<Slot[]> {
    const inputs: (Value | undefined)[] = [];
    for (const s of ins) inputs.push(s ? await this.toJs(s) : undefined);
    // Subgraphs (If, Loop) read enclosing values by name: those on the GPU are read back first.
    const outer = new Map<string, Value>();
    for (const sg of subgraphsOf(node)) {
      for (const v of freeVariables(sg)) {
        const s = lookup(v);
        if (s && !outer.has(v)) outer.set(v, await this.toJs(s));
      }
    }
    const outs = runNode(node, inputs, this.env, (name) => outer.get(name));
    return outs.map(hostSlot);
  }

  /** Metadata-only ops on a GPU value: a new Slot on the same buffer. */
  private async viewOp(node: Node, ins: (Slot | undefined)[]): Promise<Slot[] | null> {
    const x = ins[0];
    if (!x?.buf || !VIEW_OPS.has(node.opType) || node.domain !== '') return null;
    const opset = this.env.opsets.get('') ?? 1;
    let input1: number[] | null = null;
    if (viewReadsInput1(node, opset) && ins[1]) {
      this.capturePlanRead(node.inputs[1]);
      input1 = Array.from((await this.toJs(ins[1]) as Tensor).data as ArrayLike<number | bigint>, Number);
    }
    const dims = viewDims(node, x.dims, opset, input1);
    if (!dims) return null;
    if (!x.buf.constant) x.buf.refs++;
    return [{ buf: x.buf, dtype: x.dtype, dims }];
  }

  private async plan(i: number, node: Node, ins: (Slot | undefined)[]): Promise<GpuOpPlan | null> {
    const valueIdx = node.domain === '' ? VALUE_INPUTS[node.opType] : undefined;
    let values: (Tensor | undefined)[] | undefined;
    if (valueIdx) {
      for (const k of valueIdx) {
        const s = ins[k];
        if (!s || this.consts.get(node.inputs[k]) === s || (s.dtype !== 'int64' && s.dtype !== 'int32') || sizeOf(s.dims) > VALUE_MAX_ELEMS) continue;
        this.capturePlanRead(node.inputs[k]);
        (values ??= [])[k] = (await this.toJs(s)) as Tensor;
      }
    }
    // Fast path: the same input dtypes and dims as this node's last run (every steady-state run).
    const last = this.lastPlan[i];
    if (!values && last && last.ins.length === ins.length && ins.every((s, k) => sameShape(s, last.ins[k]))) return last.plan;
    const rangeN = node.opType === 'Range' ? rangeLength(values) : null;
    const keys = ins.map((s, k) => {
      if (!s) return '-';
      const base = `${s.dtype}[${s.dims.join(',')}]`;
      if (rangeN !== null) return `${base}#${rangeN}`;
      const v = values?.[k];
      return v ? `${base}=${Array.from(v.data as ArrayLike<number | bigint>).join(',')}` : base;
    });
    const key = keys.join(';');
    const cache = this.plans[i];
    const remember = (plan: GpuOpPlan | null) => {
      this.lastPlan[i] = values ? undefined : { ins: ins.map((s) => s && { dtype: s.dtype, dims: [...s.dims] }), plan };
      return plan;
    };
    if (cache.has(key)) return remember(cache.get(key)!);
    const op = DISABLED.has(node.opType) ? undefined : findGpuOp(node.opType);
    let plan: GpuOpPlan | null = null;
    if (op) {
      const descs: (GpuValueDesc | undefined)[] = ins.map((s, k) => s && {
        dtype: s.dtype, dims: s.dims, name: node.inputs[k],
        constant: this.consts.get(node.inputs[k]) === s ? (s.js as Tensor) : undefined,
        value: values?.[k],
      });
      try {
        plan = op(node, descs, this.planContext(node, descs), this.env.opsets.get('') ?? 1);
      } catch (e) {
        if (e instanceof RangeError) plan = null; // a grid past the device's limits: the reference kernel runs it
        else throw e;
      }
    }
    if (cache.size >= MAX_PLANS_PER_NODE) cache.clear();
    cache.set(key, plan);
    return remember(plan);
  }

  private planContext(node: Node, descs: (GpuValueDesc | undefined)[]): GpuPlanContext {
    return {
      pick: (site) => {
        this.opts.onSite?.({ site, node, inputs: descs.map((d) => d && { dtype: d.dtype, dims: [...d.dims], constant: d.constant }), opset: this.env.opsets.get('') ?? 1 });
        return (this.opts.tune ?? DEFAULTS_ONLY).pick(site);
      },
      caps: this.gpu.caps,
      f16: !!this.opts.f16 && this.gpu.caps.f16,
      matmulPrecision: this.opts.matmulPrecision ?? 'highest',
      constant: (name, transform, make) => this.transformedConstant(`${name}|${transform}`, () => {
        const data = make();
        const buffer = this.gpu.device.createBuffer({ size: Math.max(4, Math.ceil(data.byteLength / 4) * 4), usage: USAGE_STORAGE });
        writePadded(this.gpu.device, buffer, data);
        return buffer;
      }),
      derivedConstant: (name, transform, make) => this.transformedConstant(`${name}|${transform}`, () => deriveConstant(this.gpu.device, make())),
    };
  }

  /** A transformed constant made once per key (value name and transform) by `create`. */
  private transformedConstant(key: string, create: () => GPUBuffer): GpuConstant {
    let e = this.transformed.get(key);
    if (!e) {
      const buffer = create();
      const c: GpuConstant = { id: this.transformed.size + 1, bytes: buffer.size };
      e = { c, buffer };
      this.transformed.set(key, e);
      this.constById.set(c.id, buffer);
    }
    return e.c;
  }

  /** The GPU buffer of a slot: a constant's copy is made once; CPU values are uploaded for this run. */
  private gpuOf(s: Slot, name: string): GBuf {
    if (s.buf) return s.buf;
    const t = s.js as Tensor;
    if (this.consts.get(name) === s) {
      let g = this.constGpu.get(name);
      if (!g) {
        const buffer = this.gpu.device.createBuffer({ size: gpuBytes(t.type, t.dims), usage: USAGE_STORAGE });
        writePadded(this.gpu.device, buffer, toStorage(t));
        g = { buffer, bytes: buffer.size, refs: 1, constant: true, pool: 'none' };
        this.constGpu.set(name, g);
      }
      return g;
    }
    const buffer = this.uploads.take(gpuBytes(t.type, t.dims));
    writePadded(this.gpu.device, buffer, toStorage(t));
    this.uploadsInRun.push(buffer);
    const c = this.capture;
    if (c) {
      c.trace.buffers.push(buffer);
      if (c.perRun.has(name)) c.trace.steps.push({ upload: name, buffer });
    }
    // The slot now has a GPU copy for later readers in this run.
    s.buf = { buffer, bytes: buffer.size, refs: 1, constant: false, pool: 'upload' };
    return s.buf;
  }

  private record(node: Node, plan: GpuOpPlan, ins: (Slot | undefined)[]): Slot[] {
    // Only inputs a dispatch binds go to the GPU (a weight replaced by a transformed constant stays on the host).
    let used = boundInputs.get(plan);
    if (!used) {
      used = new Set<number>();
      for (const d of plan.dispatches) for (const b of d.bindings) if ('input' in b) used.add(b.input);
      boundInputs.set(plan, used);
    }
    const inBufs = ins.map((s, k) => (s && used.has(k) ? this.gpuOf(s, node.inputs[k]).buffer : undefined));
    const outs: Slot[] = plan.outputs.map((o, k) => {
      const a = plan.alias?.[k];
      if (a !== undefined && ins[a]) {
        const b = this.gpuOf(ins[a]!, node.inputs[a]);
        if (!b.constant) b.refs++;
        return { buf: b, dtype: o.dtype, dims: o.dims };
      }
      const buffer = this.pool.take(gpuBytes(o.dtype, o.dims));
      // Verification: an output the kernel fails to write stays NaN. (Queue writes land before this run's submits:
      // sound for the one-node graphs the tuner poisons, not for a buffer an earlier unsubmitted node still uses.)
      if (this.opts.poison) this.gpu.device.queue.writeBuffer(buffer, 0, new Uint32Array(buffer.size / 4).fill(0x7fc00000));
      return { buf: { buffer, bytes: buffer.size, refs: 1, constant: false, pool: 'main' as const }, dtype: o.dtype, dims: o.dims };
    });
    const scratch = (plan.scratchBytes ?? []).map((b) => this.pool.take(b));
    for (const d of plan.dispatches) {
      let faultAt: FaultAt | undefined;
      const buffers = d.bindings.map((b, binding) => {
        let buf: GPUBuffer | undefined;
        if ('input' in b) buf = inBufs[b.input];
        else if ('output' in b) buf = outs[b.output].buf!.buffer;
        else if ('scratch' in b) buf = scratch[b.scratch];
        else if ('fault' in b) {
          const f = this.faultOf(node);
          buf = this.faultPages[f.page];
          faultAt = { binding, offset: f.offset };
        } else buf = this.constById.get(b.constant.id);
        if (!buf) throw new ExecutionError('a kernel binding has no buffer', { node: node.name, op: node.opType });
        return buf;
      });
      const cmd: Recorded = { dispatch: d, buffers, entry: this.pipeline(d.code, node), node, faultAt };
      this.cmds.push(cmd);
      this.capture?.trace.cmds.push(cmd);
    }
    // The GPU starts on the first nodes while the rest of the run is recorded.
    if (this.cmds.length >= SUBMIT_EVERY && !PROFILE && !this.holdSubmits && this.cmds.every((c) => !('entry' in c) || c.entry.pipeline)) this.encode(this.cmds.splice(0));
    for (const b of scratch) this.pool.give(b);
    return outs;
  }

  private pipeline(code: string, node: Node): PipelineEntry {
    let e = this.pipelines.get(code);
    if (!e) {
      const device = this.gpu.device;
      // Helpers a kernel calls without defining (wj_f32bits from f32Lit …) are added here.
      const prelude = mathPrelude(code);
      const full = prelude ? `${hoistEnables(prelude, code)}` : code;
      const promise = device.createComputePipelineAsync({ layout: 'auto', compute: { module: device.createShaderModule({ code: full }), entryPoint: 'main' } })
        .catch((err: Error) => {
          this.pipelines.delete(code);
          throw new ExecutionError(`the generated WGSL kernel does not compile: ${err.message}`, { node: node.name, op: node.opType },
            'this is a bug in webjit; please report it with the model');
        });
      const entry: PipelineEntry = { promise };
      void promise.then((p) => { entry.pipeline = p; }, () => undefined);
      this.pipelines.set(code, entry);
      e = entry;
    }
    return e;
  }

  /** Submits everything recorded so far in one command encoder (one compute pass between copies). */
  private async flush(extraCopies: Command[] = []): Promise<void> {
    const cmds = this.cmds.concat(extraCopies);
    this.cmds = [];
    if (cmds.length === 0) return;
    await Promise.all(cmds.map((c) => ('entry' in c && !c.entry.pipeline ? c.entry.promise : null)));
    const stamps = this.encode(cmds);
    if (stamps) await this.readStamps(stamps);
  }

  /** Encodes and submits commands whose pipelines are ready: one compute pass between copies. */
  private encode(cmds: Command[]): { buffer: GPUBuffer; timed: Recorded[]; qs: GPUQuerySet } | null {
    checkLost(this.gpu);
    const device = this.gpu.device;
    const enc = device.createCommandEncoder();
    let pass: GPUComputePassEncoder | null = null;
    const timed = PROFILE && this.gpu.caps.timestamps ? cmds.filter((c): c is Recorded => 'entry' in c) : [];
    const qs = timed.length ? device.createQuerySet({ type: 'timestamp', count: 2 * timed.length }) : null;
    let qi = 0;
    for (const c of cmds) {
      if ('copy' in c) {
        if (pass) { pass.end(); pass = null; }
        const [src, so, dst, dof, size] = c.copy;
        enc.copyBufferToBuffer(src, so, dst, dof, size);
        continue;
      }
      if (qs) {
        if (pass) pass.end();
        pass = enc.beginComputePass({ timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 2 * qi, endOfPassWriteIndex: 2 * qi + 1 } });
        qi++;
      }
      pass ??= enc.beginComputePass();
      const pipeline = c.entry.pipeline!;
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, this.bindGroup(c.dispatch, pipeline, c.buffers, c.faultAt));
      pass.dispatchWorkgroups(...c.dispatch.groups);
    }
    if (pass) pass.end();
    let stamps: GPUBuffer | null = null;
    if (qs) {
      const resolve = device.createBuffer({ size: 16 * timed.length, usage: 0x200 | 0x04 }); // QUERY_RESOLVE | COPY_SRC
      stamps = device.createBuffer({ size: 16 * timed.length, usage: USAGE_READBACK });
      enc.resolveQuerySet(qs, 0, 2 * timed.length, resolve, 0);
      enc.copyBufferToBuffer(resolve, 0, stamps, 0, 16 * timed.length);
    }
    device.queue.submit([enc.finish()]);
    return stamps ? { buffer: stamps, timed, qs: qs! } : null;
  }

  private async readStamps({ buffer: stamps, timed, qs }: { buffer: GPUBuffer; timed: Recorded[]; qs: GPUQuerySet }): Promise<void> {
    {
      await stamps.mapAsync(MAP_READ);
      const t = new BigUint64Array(stamps.getMappedRange());
      timed.forEach((c, k) => {
        const key = `${c.node.opType} ${c.dispatch.groups.join('x')} ${c.node.name}`;
        const e = gpuProfile.get(key) ?? { ns: 0, n: 0 };
        if (this.stats.runs >= 2) { e.ns += Number(t[2 * k + 1] - t[2 * k]); e.n++; }
        gpuProfile.set(key, e);
      });
      stamps.destroy();
      qs.destroy();
    }
  }

  /** The bind group of a recorded dispatch (timeLists). */
  bindGroupFor(c: Recorded): GPUBindGroup {
    return this.bindGroup(c.dispatch, c.entry.pipeline!, c.buffers, c.faultAt);
  }

  private bindGroup(d: Dispatch, pipeline: GPUComputePipeline, buffers: GPUBuffer[], faultAt?: FaultAt): GPUBindGroup {
    // A node's fault slot never moves, so the buffers alone key the cache.
    const cached = this.bindGroups.get(d);
    if (cached && cached.buffers.length === buffers.length && cached.buffers.every((b, k) => b === buffers[k])) return cached.group;
    this.stats.bindGroupsMade++;
    const group = this.gpu.device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: buffers.map((buffer, binding) => ({ binding, resource: binding === faultAt?.binding ? { buffer, offset: faultAt.offset, size: 16 } : { buffer } })),
    });
    this.bindGroups.set(d, { buffers, group });
    return group;
  }

  /** The host value of a slot; a GPU value is read back (a synchronisation with the GPU). */
  private async toJs(s: Slot): Promise<Value> {
    if (s.js !== undefined) return s.js;
    const [t] = await this.readBack([s]);
    this.stats.midRunReads++;
    return t;
  }

  private async readAll(outs: Slot[]): Promise<Value[]> {
    const gpu = outs.filter((s) => s.js === undefined);
    const read = gpu.length ? await this.readBack(gpu) : [];
    let k = 0;
    return outs.map((s) => (s.js !== undefined ? s.js : read[k++]));
  }

  /** Copies the slots into one staging buffer, submits, maps it and converts each to a Tensor. */
  private async readBack(slots: Slot[]): Promise<Tensor[]> {
    const sizes = slots.map((s) => gpuBytes(s.dtype, s.dims));
    const offsets: number[] = [];
    let total = 0;
    for (const b of sizes) { offsets.push(total); total += Math.ceil(b / 256) * 256; }
    // The fault words come back with the outputs (one copy per page): a run that met invalid data fails instead of
    // returning zeros.
    const faultAt = total;
    total += FAULT_PAGE * this.faultPages.length;
    const staging = this.readbacks.take(total);
    const copies: Command[] = slots.map((s, k) => ({ copy: [s.buf!.buffer, 0, staging, offsets[k], sizes[k]] as [GPUBuffer, number, GPUBuffer, number, number] }));
    this.faultPages.forEach((b, k) => copies.push({ copy: [b, 0, staging, faultAt + FAULT_PAGE * k, this.faultBytes(k)] }));
    await this.flush(copies);
    // The host arrays are made while the GPU works (see outputArray).
    const into = slots.map((s) => outputArray(s.dtype, s.dims));
    const t0 = performance.now();
    try {
      await staging.mapAsync(MAP_READ, 0, total);
      this.stats.phaseMs.wait += performance.now() - t0;
    } catch (e) {
      if (this.gpu.lost) throw this.lostError();
      throw new ExecutionError(`reading results back from the GPU failed: ${(e as Error).message}`);
    }
    let faults: Fault[];
    try {
      const data = staging.getMappedRange(0, total);
      faults = this.faultsIn(new Int32Array(data, faultAt, (FAULT_PAGE / 4) * this.faultPages.length));
      if (!faults.length) {
        const t1 = performance.now();
        const out = slots.map((s, k) => fromStorage(s.dtype, s.dims, data, offsets[k], into[k]));
        this.stats.phaseMs.convert += performance.now() - t1;
        return out;
      }
    } finally {
      staging.unmap();
      this.readbacks.give(staging);
    }
    throw this.faultError(faults);
  }

  /** The node's fault words (zeroed at creation, and again after each reported fault): page and byte offset. */
  private faultOf(node: Node): { page: number; offset: number } {
    let f = this.faultSlots.get(node);
    if (!f) {
      const n = this.faultSlots.size, page = Math.floor(n / FAULT_SLOTS);
      // STORAGE | COPY_SRC | COPY_DST, zero-filled at creation.
      if (page === this.faultPages.length) this.faultPages.push(this.gpu.device.createBuffer({ size: FAULT_PAGE, usage: 0x80 | 0x04 | 0x08 }));
      f = { page, offset: (n % FAULT_SLOTS) * FAULT_STRIDE };
      this.faultSlots.set(node, f);
    }
    return f;
  }

  /** The bytes of fault page k that hold slots: a read-back copies no more (one Gather node: 16 bytes, not a page). */
  private faultBytes(k: number): number {
    return (Math.min(FAULT_SLOTS, this.faultSlots.size - k * FAULT_SLOTS) - 1) * FAULT_STRIDE + 16;
  }

  /** The faults in read-back fault pages (all pages, in order). */
  private faultsIn(words: Int32Array): Fault[] {
    const out: Fault[] = [];
    for (const [node, f] of this.faultSlots) {
      const w = (f.page * FAULT_PAGE + f.offset) / 4;
      if (words[w]) out.push({ node, kind: words[w], value: words[w + 1] });
    }
    return out;
  }

  /** Reads every node's fault words (after a runGpu); resolves to the faults found (none on a failed read). Never rejects. */
  private async readFaults(): Promise<Fault[]> {
    const pages = [...this.faultPages];
    const device = this.gpu.device;
    const staging = device.createBuffer({ size: FAULT_PAGE * pages.length, usage: USAGE_READBACK });
    try {
      const enc = device.createCommandEncoder();
      pages.forEach((b, k) => enc.copyBufferToBuffer(b, 0, staging, FAULT_PAGE * k, this.faultBytes(k)));
      device.queue.submit([enc.finish()]);
      await staging.mapAsync(MAP_READ);
      return this.faultsIn(new Int32Array(staging.getMappedRange()));
    } catch {
      return [];
    } finally {
      staging.destroy();
    }
  }

  /** Throws the fault of an earlier runGpu, if its kernels met invalid data (one small read-back when one is pending). */
  async checkFaults(): Promise<void> {
    const p = this.faultCheck;
    if (!p) return;
    this.faultCheck = null;
    const faults = await p;
    if (faults.length) throw this.faultError(faults, ' (found after runGpu: its outputs are not valid)');
  }

  /** The typed error for faulted nodes; their words are zeroed so that the session goes on. */
  private faultError(faults: Fault[], where = ''): InputError {
    for (const f of faults) {
      const slot = this.faultSlots.get(f.node)!;
      this.gpu.device.queue.writeBuffer(this.faultPages[slot.page], slot.offset, new Uint32Array(4));
    }
    const { node: n, value, kind } = faults[0];
    if (kind === FAULT_HALF_RANGE) {
      const v = new Float32Array(new Int32Array([value]).buffer)[0];
      return new InputError(`an element of ${n.inputs[0]} is ${v} in magnitude, past the f16 range (65504) of the tensor-core GEMM${where}`,
        { node: n.name, op: n.opType, input: n.inputs[0] },
        "create the session with matmulPrecision: 'highest' (and precision 'f32'): this model's activations need the f32 GEMM");
    }
    return new InputError(`index ${value} is out of range${where}`, { node: n.name, op: n.opType, input: n.inputs[1] },
      'check the input data (for example token or position ids past the model\'s vocabulary or context length)');
  }

  dispose(): void {
    this.disposed = true;
    this.dropTrace();
    this.pool.destroy();
    this.uploads.destroy();
    this.readbacks.destroy();
    for (const g of this.constGpu.values()) g.buffer.destroy();
    for (const t of this.transformed.values()) t.buffer.destroy();
    this.constGpu.clear();
    this.transformed.clear();
    for (const b of this.faultPages) b.destroy();
    this.faultPages.length = 0;
    this.faultSlots.clear();
  }
}

/** A run recorded for timing (recordTimed) and its runner. */
interface TimedRecording { runner: GpuGraphRunner; lists: Recorded[][]; release(): void }

/**
 * Records each in turn, then times them all together (timeLists) with a first round of warm-up left out; releases
 * what was recorded whatever happens. Per round, the ms of each recording.
 */
async function timeRecordings(record: (() => Promise<TimedRecording>)[], reps: number, rounds: number): Promise<number[][]> {
  const recs: TimedRecording[] = [];
  try {
    for (const r of record) recs.push(await r());
    return (await timeLists(recs, reps, rounds + 1)).slice(1);
  } finally {
    for (const r of recs) r.release();
  }
}

/**
 * GPU time of each runner's command lists (rotated), `reps` of them in a pass per runner, all runners' passes in one
 * submit per round: ms per list run, per round and runner. Timestamp queries where the adapter has them, else the
 * wall clock to the queue's completion (then one runner at a time).
 */
async function timeLists(entries: { runner: GpuGraphRunner; lists: Recorded[][] }[], reps: number, rounds: number): Promise<number[][]> {
  const gpu = entries[0].runner.gpu;
  const device = gpu.device;
  const all = entries.flatMap((e) => e.lists.flat());
  await Promise.all(all.map((c) => c.entry.promise));
  for (const c of all) c.entry.pipeline ??= await c.entry.promise;
  const stamps = gpu.caps.timestamps;
  const times: number[][] = [];
  const encodeRuns = (pass: GPUComputePassEncoder, e: { runner: GpuGraphRunner; lists: Recorded[][] }) => {
    for (let i = 0; i < reps; i++) {
      for (const c of e.lists[i % e.lists.length]) {
        pass.setPipeline(c.entry.pipeline!);
        pass.setBindGroup(0, e.runner.bindGroupFor(c));
        pass.dispatchWorkgroups(...c.dispatch.groups);
      }
    }
  };
  for (let r = 0; r < rounds; r++) {
    if (!stamps) {
      const row: number[] = [];
      for (const e of entries) {
        const enc = device.createCommandEncoder();
        const pass = enc.beginComputePass();
        encodeRuns(pass, e);
        pass.end();
        const t0 = performance.now();
        device.queue.submit([enc.finish()]);
        await device.queue.onSubmittedWorkDone();
        row.push((performance.now() - t0) / reps);
      }
      times.push(row);
      continue;
    }
    const n = entries.length;
    const enc = device.createCommandEncoder();
    const qs = device.createQuerySet({ type: 'timestamp', count: 2 * n });
    entries.forEach((e, k) => {
      const pass = enc.beginComputePass({ timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 2 * k, endOfPassWriteIndex: 2 * k + 1 } });
      encodeRuns(pass, e);
      pass.end();
    });
    const resolve = device.createBuffer({ size: 16 * n, usage: 0x200 | 0x04 });
    const read = device.createBuffer({ size: 16 * n, usage: USAGE_READBACK });
    enc.resolveQuerySet(qs, 0, 2 * n, resolve, 0);
    enc.copyBufferToBuffer(resolve, 0, read, 0, 16 * n);
    const t0 = performance.now();
    device.queue.submit([enc.finish()]);
    await device.queue.onSubmittedWorkDone();
    const wall = performance.now() - t0;
    await read.mapAsync(MAP_READ);
    const t = new BigUint64Array(read.getMappedRange());
    times.push(entries.map((_, k) => {
      const ns = Number(t[2 * k + 1] - t[2 * k]);
      return ns > 0 ? ns / 1e6 / reps : wall / n / reps;
    }));
    read.unmap(); read.destroy(); resolve.destroy(); qs.destroy();
  }
  checkLost(gpu);
  return times;
}

/** Fault word 0: 1 an index out of range (word 1 the index); 2 a GEMM input past the f16 range (word 1 its f32 bits). */
const FAULT_HALF_RANGE = 2;
/** A node whose kernel met invalid data: the kind and value (fault words 0 and 1). */
interface Fault { node: Node; kind: number; value: number }

/** Fault slots: 256 bytes apart (WebGPU's storage-binding offset alignment), 64 per page. */
const FAULT_STRIDE = 256;
const FAULT_SLOTS = 64;
const FAULT_PAGE = FAULT_STRIDE * FAULT_SLOTS;

function sameShape(s: Slot | undefined, t: { dtype: DType; dims: number[] } | undefined): boolean {
  if (!s || !t) return s === t;
  if (s.dtype !== t.dtype || s.dims.length !== t.dims.length) return false;
  for (let k = 0; k < s.dims.length; k++) if (s.dims[k] !== t.dims[k]) return false;
  return true;
}

/** The prelude after the kernel's `enable` directives, which must come first. */
function hoistEnables(prelude: string, code: string): string {
  const m = code.match(/^(\s*enable [^;]+;\s*)+/);
  return m ? `${m[0]}${prelude}\n${code.slice(m[0].length)}` : `${prelude}\n${code}`;
}

/** Same small tensor: the same object, or equal dtype, dims and values. */
function sameSmall(a: Tensor | undefined, b: Value | undefined): boolean {
  if (a === b) return true;
  if (!a || !(b instanceof Tensor) || a.type !== b.type || a.dims.length !== b.dims.length || a.size !== b.size || a.size > MEMO_MAX_ELEMS) return false;
  for (let k = 0; k < a.dims.length; k++) if (a.dims[k] !== b.dims[k]) return false;
  const x = a.data as ArrayLike<unknown>, y = b.data as ArrayLike<unknown>;
  for (let k = 0; k < x.length; k++) if (x[k] !== y[k] && !(Number.isNaN(x[k]) && Number.isNaN(y[k]))) return false;
  return true;
}


/** Shape (with opset 15's start and end) and Size from the dims alone. */
function shapeValue(node: Node, dims: readonly number[]): Tensor {
  if (node.opType === 'Size') return new Tensor('int64', BigInt64Array.of(BigInt(sizeOf(dims))), []);
  const r = dims.length;
  const clamp = (v: number) => Math.min(r, Math.max(0, v < 0 ? v + r : v));
  const start = clamp((node.attrs.get('start')?.value as number | undefined) ?? 0);
  const end = clamp((node.attrs.get('end')?.value as number | undefined) ?? r);
  const out = dims.slice(start, Math.max(start, end));
  return new Tensor('int64', BigInt64Array.from(out, BigInt), [out.length]);
}

function describe(ins: (Slot | undefined)[]): string {
  return ins.map((s) => (s ? `${s.dtype}[${s.dims.join(',')}]` : '-')).join(', ');
}
