// Wasm runtime: one shared memory, compiled kernels, and a pool of worker threads that split each launch's tasks.
import { SHARED_MEMORY } from '../../codegen/wasm/builder.js';
import { ExecutionError, UnsupportedError } from '../../errors.js';
import { C, CMD_EXIT, CMD_RUN, CMD_YIELD, MAX_TASKS, TAG_MASK, TAG_SHIFT, takeTask } from './control.js';
import { hasRelaxedSimd, hasSimd, threadsAvailable } from './features.js';
import type { KernelSource } from './kernel.js';
import { WasmMemory } from './memory.js';
import { importNode } from '../../util/node.js';

type RunFn = (...args: number[]) => void;

interface WorkerLike {
  postMessage(m: unknown): void;
  terminate(): unknown;
  /** Lets the process exit while this (idle) worker lives; ref() while a reply from it is awaited. */
  unref(): void;
  ref(): void;
  /** Replaces the one message handler (each worker has at most one message awaited at a time). */
  onMessage(f: (m: { type: string }) => void): void;
}

export interface RuntimeOptions {
  /** Threads including the calling one; default: all hardware threads. */
  threads?: number;
}

export class WasmRuntime {
  readonly mem: WasmMemory;
  readonly relaxedSimd: boolean;
  /** Why fewer threads than asked are used, if so. */
  readonly threadsNote?: string;
  private readonly ctrl: Int32Array;
  private readonly kernels: RunFn[] = [];
  /** Kernels whose tasks wait for each other (KernelSource.wholeRange). */
  private readonly whole = new Set<number>();
  private readonly byKey = new Map<string, number>();
  private unsynced: { id: number; module: WebAssembly.Module }[] = [];
  private readonly modules: { id: number; module: WebAssembly.Module }[] = [];
  private gen = 0;
  private workers: WorkerLike[] = [];

  private constructor(readonly threads: number, note?: string) {
    this.mem = new WasmMemory(SHARED_MEMORY);
    this.relaxedSimd = hasRelaxedSimd();
    this.threadsNote = note;
    const sab = SHARED_MEMORY ? new SharedArrayBuffer(C.SIZE * 4) : new ArrayBuffer(C.SIZE * 4);
    this.ctrl = new Int32Array(sab);
  }

  /**
   * The runtime the sessions of this process share for a thread count: one memory, one worker pool and one set of
   * instantiated kernels, so a session created after another (OCR's detector, classifier and recogniser; a model
   * reloaded) runs its first inference on warm workers with kernels they already hold. Give it back with
   * releaseShared(); the last one out disposes it after SHARED_LINGER_MS unless a new session takes it first.
   */
  static acquire(opts: RuntimeOptions = {}): Promise<WasmRuntime> {
    const key = opts.threads ?? 0;
    let e = SHARED.get(key);
    if (!e) {
      const entry: SharedEntry = { rt: WasmRuntime.create(opts), users: 0 };
      entry.rt.catch(() => { if (SHARED.get(key) === entry) SHARED.delete(key); });
      SHARED.set(key, entry);
      e = entry;
    }
    if (e.timer) { clearTimeout(e.timer); e.timer = undefined; }
    e.users++;
    const entry = e;
    return e.rt.then((rt) => { rt.sharedEntry = { key, entry }; return rt; });
  }

  private sharedEntry?: { key: number; entry: SharedEntry };

  /** A session is done with a runtime from acquire() (its buffers must already be released). */
  releaseShared(): void {
    const s = this.sharedEntry;
    if (!s) { void this.dispose(); return; }
    const e = s.entry;
    if (--e.users > 0) return;
    e.timer = setTimeout(() => {
      if (e.users > 0) return;
      if (SHARED.get(s.key) === e) SHARED.delete(s.key);
      void this.dispose();
    }, SHARED_LINGER_MS);
    (e.timer as { unref?: () => void }).unref?.();
  }

  static async create(opts: RuntimeOptions = {}): Promise<WasmRuntime> {
    if (!hasSimd()) throw new UnsupportedError('this runtime has no WebAssembly SIMD128', {}, 'use a browser or Node.js from 2021 or later');
    let threads = opts.threads ?? (await defaultThreads());
    let note: string | undefined;
    if (threads > 1) {
      const t = threadsAvailable();
      if (!t.ok) { note = `running on one thread: ${t.why}`; threads = 1; }
    }
    const rt = new WasmRuntime(Math.max(1, threads), note);
    // Workers boot in the background: until the first sync() (the end of the first run) this thread works alone.
    if (rt.threads > 1) {
      rt.booting = rt.startWorkers(rt.threads - 1);
      rt.booting.then(() => { rt.booted = true; }, () => undefined);
    }
    return rt;
  }

  private booting: Promise<WorkerLike[]> | null = null;
  private booted = false;

  private startWorkers(n: number): Promise<WorkerLike[]> {
    // Workers boot in parallel; each is ready once it waits on the control block.
    return Promise.all(Array.from({ length: n }, async () => {
      const w = await spawnWorker();
      const ready = this.nextMessage(w, 'ready');
      w.postMessage({ type: 'init', memory: this.mem.memory, ctrl: this.ctrl.buffer });
      await ready;
      return w;
    }));
  }

  private nextMessage(w: WorkerLike, type: string): Promise<void> {
    // An awaited reply must keep the process alive; an idle pool must not.
    w.ref();
    return new Promise((resolve) => {
      w.onMessage((m) => { if (m.type === type) { w.unref(); resolve(); } });
    });
  }

  /** Kernels with an id below this are instantiated in every worker. */
  private synced = 0;

  /** Kernels compiled (instantiated) in this runtime so far: a test that no run compiles counts them. */
  get kernelCount(): number {
    return this.kernels.length;
  }

  /** The id of an already compiled kernel, if any (the fast path of every run after the first). */
  lookup(key: string): number | undefined {
    return this.byKey.get(key);
  }

  /** Whether kernels compiled since the last sync(), or workers still booting, wait to be brought in. */
  get needsSync(): boolean {
    return this.unsynced.length > 0 || this.booting !== null;
  }

  /** Compiles (once per key) and instantiates a kernel; returns its id for launch(). */
  async compile(src: KernelSource): Promise<number> {
    return this.compileSync(src);
  }

  /**
   * Compiles and instantiates a kernel synchronously: kernels are a few KB, which every engine compiles at once
   * (Liftoff), and no await per node keeps a first run short. Returns the id for launch().
   */
  compileSync(src: KernelSource): number {
    const known = this.byKey.get(src.key);
    if (known !== undefined) return known;
    const module = compiledModule(src);
    const inst = new WebAssembly.Instance(module, { env: { memory: this.mem.memory } });
    const id = this.kernels.length;
    this.kernels.push(inst.exports.run as RunFn);
    if (src.wholeRange) this.whole.add(id);
    this.byKey.set(src.key, id);
    this.unsynced.push({ id, module });
    this.modules.push({ id, module });
    return id;
  }

  /** Workers finished booting and wait to be brought in by sync(). */
  get workersWaiting(): boolean {
    return this.booted;
  }

  /** Waits for the workers to boot and take every kernel compiled so far (benchmarks: all threads from the start). */
  async ready(): Promise<void> {
    if (this.booting) await this.booting;
    await this.sync();
  }

  /** A sync in progress: launches meanwhile run on the calling thread (another session may launch while one syncs). */
  private syncing: Promise<void> | null = null;

  /** Sends newly compiled kernels to the workers (they leave their wait loop to take them). One at a time. */
  async sync(): Promise<void> {
    while (this.syncing) await this.syncing;
    this.syncing = this.syncNow().finally(() => { this.syncing = null; });
    return this.syncing;
  }

  private async syncNow(): Promise<void> {
    if (this.booting) {
      // Never wait for booting workers (a first run would wait tens of ms, longer than it computes): one turn of the
      // event loop lets a finished boot report in (runs that only await microtasks would never see it); if not
      // booted yet, they join at a later node or run.
      if (!this.booted) await nextTurn();
      if (!this.booted) return;
      // Workers that just booted take every kernel compiled so far.
      const fresh = await this.booting;
      this.booting = null;
      this.booted = false;
      const all = this.kernels.length;
      const modules = this.modules.slice(0, all);
      const ready = fresh.map((w) => this.nextMessage(w, 'ready'));
      for (const w of fresh) w.postMessage({ type: 'modules', modules });
      await Promise.all(ready);
      this.workers = fresh;
      this.unsynced = [];
      this.synced = all;
      return;
    }
    if (this.unsynced.length === 0 || this.workers.length === 0) { this.unsynced = []; this.synced = this.kernels.length; return; }
    const modules = this.unsynced;
    this.unsynced = [];
    const upTo = this.kernels.length;
    const yielded = this.workers.map((w) => this.nextMessage(w, 'yielded'));
    Atomics.store(this.ctrl, C.CMD, CMD_YIELD);
    this.bump();
    await Promise.all(yielded);
    const ready = this.workers.map((w) => this.nextMessage(w, 'ready'));
    for (const w of this.workers) w.postMessage({ type: 'modules', modules });
    await Promise.all(ready);
    this.synced = Math.max(this.synced, upTo);
  }

  private bump(): void {
    this.gen = (this.gen + 1) | 0;
    Atomics.store(this.ctrl, C.GEN, this.gen);
    // Polling workers see the new generation by themselves; a wake-up syscall only for sleeping ones.
    if (Atomics.load(this.ctrl, C.SLEEPERS) > 0) Atomics.notify(this.ctrl, C.GEN);
  }

  /** Runs tasks [0, tasks) of kernel `id` over all threads and returns when all are done. */
  launch(id: number, args: number[], tasks: number): void {
    const fn = this.kernels[id];
    const n = args.length;
    if (tasks <= 0) return;
    if (tasks > MAX_TASKS) throw new ExecutionError(`a launch of ${tasks} tasks exceeds ${MAX_TASKS}`);
    const all = new Array<number>(n + 2);
    for (let i = 0; i < n; i++) all[i] = args[i];
    // Kernels the workers have not received yet (a first run) run on this thread alone.
    if (tasks === 1 || this.workers.length === 0 || id >= this.synced || this.syncing) {
      try {
        if (this.whole.has(id)) { all[n] = 0; all[n + 1] = tasks; fn(...all); }
        else for (let t = 0; t < tasks; t++) { all[n] = t; all[n + 1] = t + 1; fn(...all); }
      } catch (e) {
        throw trapError(e);
      }
      return;
    }
    const c = this.ctrl;
    c[C.KERNEL] = id;
    c[C.NTASKS] = tasks;
    c[C.NARGS] = n;
    for (let i = 0; i < n; i++) c[C.ARGS + i] = args[i];
    Atomics.store(c, C.DONE, 0);
    Atomics.store(c, C.ERROR, 0);
    Atomics.store(c, C.CMD, CMD_RUN);
    const gen = (this.gen + 1) | 0;
    Atomics.store(c, C.NEXT, (gen & TAG_MASK) << TAG_SHIFT);
    this.bump();
    let done = 0;
    let trap: unknown;
    for (let t = takeTask(c, gen, tasks); t >= 0; t = takeTask(c, gen, tasks)) {
      all[n] = t; all[n + 1] = t + 1;
      // A trap still counts the task as done, so the wait below ends; the error is raised after it.
      try { fn(...all); } catch (e) { trap ??= e; }
      done++;
    }
    if (done) Atomics.add(c, C.DONE, done);
    // Wait for the workers' share: spin briefly (they are usually close), then sleep on the counter.
    for (let spin = 0; ; spin++) {
      const d = Atomics.load(c, C.DONE);
      if (d >= tasks) break;
      if (spin > MAIN_SPINS) {
        try { Atomics.wait(c, C.DONE, d, 50); } catch { /* a browser main thread cannot wait: keep spinning */ }
      }
    }
    if (trap !== undefined) throw trapError(trap);
    if (Atomics.load(c, C.ERROR)) throw trapError(undefined);
  }

  async dispose(): Promise<void> {
    if (this.booting) { this.workers = await this.booting; this.booting = null; }
    if (this.workers.length) {
      Atomics.store(this.ctrl, C.CMD, CMD_EXIT);
      this.bump();
      await Promise.all(this.workers.map((w) => w.terminate()));
      this.workers = [];
    }
  }
}

/**
 * Compiled kernel modules of this process by key: modules import the memory rather than own it, so every runtime
 * (session) instantiates the same module, and a later session of the same or a similar model (OCR's detector,
 * classifier and recogniser share most kernels) skips code generation and compilation, and gets the engine's
 * optimised code at once. Bounded: the oldest entries go first.
 */
const MODULES = new Map<string, WebAssembly.Module>();
const MAX_CACHED_MODULES = 4096;

function compiledModule(src: KernelSource): WebAssembly.Module {
  let module = MODULES.get(src.key);
  if (module) return module;
  module = new WebAssembly.Module(src.bytes() as BufferSource);
  if (MODULES.size >= MAX_CACHED_MODULES) MODULES.delete(MODULES.keys().next().value as string);
  MODULES.set(src.key, module);
  return module;
}

interface SharedEntry { rt: Promise<WasmRuntime>; users: number; timer?: ReturnType<typeof setTimeout> }
const SHARED = new Map<number, SharedEntry>();
/** How long a shared runtime outlives its last session (its idle workers do not keep the process alive). */
const SHARED_LINGER_MS = 10_000;

/**
 * Polls of the done counter before the launching thread sleeps on it. The workers are finishing the launch's last
 * tasks (up to one task long, tens of µs), and a sleep costs a wake-up of tens of µs on top; spinning costs nothing
 * but this thread's otherwise idle core.
 */
const MAIN_SPINS = 1 << 17;

/** Kernels trap (unreachable) on data they must not run on, such as an out-of-range gather index. */
function trapError(e: unknown): ExecutionError {
  const what = e instanceof Error ? e.message : 'a worker thread trapped';
  return new ExecutionError(`a Wasm kernel stopped: ${what}`, {},
    'check the input data (for example indices out of range); if the data is valid, this is a bug in webjit: please report it with the model');
}

/** Resolves after the event loop has handled what is pending (worker messages included). */
function nextTurn(): Promise<void> {
  const g = globalThis as { setImmediate?: (f: () => void) => void };
  return new Promise((resolve) => (g.setImmediate ? g.setImmediate(resolve) : setTimeout(resolve, 0)));
}

async function defaultThreads(): Promise<number> {
  if (typeof process !== 'undefined' && process.versions?.node) {
    const os = await importNode<typeof import('node:os')>('node:os');
    return os.availableParallelism();
  }
  const nav = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator;
  return Math.max(1, nav?.hardwareConcurrency ?? 1);
}

async function spawnWorker(): Promise<WorkerLike> {
  if (typeof process !== 'undefined' && process.versions?.node) {
    const { Worker } = await importNode<typeof import('node:worker_threads')>('node:worker_threads');
    const workerUrl = new URL(import.meta.url.endsWith('.ts') ? './worker.ts' : './worker.js', import.meta.url);
    // From TypeScript sources (development and tests under tsx), register tsx in the worker first.
    const w = workerUrl.pathname.endsWith('.ts')
      ? new Worker(`import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(workerUrl.href)}); })`, { eval: true })
      : new Worker(workerUrl);
    let handler: (m: { type: string }) => void = () => {};
    w.on('message', (m) => handler(m));
    return { postMessage: (m) => w.postMessage(m), terminate: () => w.terminate(), unref: () => w.unref(), ref: () => w.ref(), onMessage: (f) => { handler = f; } };
  }
  // This exact form (a literal URL relative to import.meta.url, type 'module') is what bundlers (Vite, webpack 5,
  // Parcel) recognise to emit the worker as its own chunk: keep it literal.
  const w = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  let handler: (m: { type: string }) => void = () => {};
  w.addEventListener('message', (e: MessageEvent<{ type: string }>) => handler(e.data));
  return { postMessage: (m) => w.postMessage(m), terminate: () => w.terminate(), unref: () => {}, ref: () => {}, onMessage: (f) => { handler = f; } };
}
