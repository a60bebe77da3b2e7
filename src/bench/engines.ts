// Engines a benchmark compares: webjit's backends and the peers (onnxruntime-web wasm and WebGPU, onnxruntime-node).
// Peers in another process (onnxruntime's Python build, PyTorch) are in python_peer.ts.
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { GpuTensor } from '../backends/webgpu/gpu_tensor.js';
import { gpuBytes, toStorage, writePadded } from '../backends/webgpu/storage.js';
import { InferenceSession, type BackendName } from '../session.js';
import { Tensor, type DType } from '../tensor.js';

export type Feeds = Record<string, Tensor>;

export interface EngineSession {
  run(feeds: Feeds): Promise<Record<string, Tensor>>;
  release(): Promise<void>;
  /** A warm run as this engine is timed, where that differs from run() (inputs and outputs left on the GPU). */
  warm?(feeds: Feeds): Promise<void>;
  /** Engines in another process time themselves: a round trip through the pipe must not count. */
  selfTimed?: {
    createMs: number;
    /** The time of the last run() as the engine measured it. */
    lastRunMs(): number;
    timeRuns(feeds: Feeds, opts: { warmupMs: number; minRuns: number; minMs: number }): Promise<number[]>;
  };
}

export interface Engine {
  name: string;
  create(model: string | Uint8Array): Promise<EngineSession>;
}

/** Engines whose inputs and outputs stay on the device between runs carry this suffix; they are compared only with each other. */
export const RESIDENT = ' resident';

export function webjitEngine(backend: BackendName, threads: number): Engine {
  return {
    name: `webjit ${backend}${backend === 'wasm' ? ` ${threads}t` : ''}`,
    async create(model) {
      const s = await InferenceSession.create(model, { backend, threads });
      return { run: (f) => s.run(f), release: () => s.release() };
    },
  };
}

/**
 * webjit on WebGPU with its inputs uploaded once and its outputs left on the GPU (runGpu), timed to the GPU's
 * completion: what a chain of runs (a decoder loop) pays per run, to compare with PyTorch on CUDA tensors.
 */
export function webjitResident(): Engine {
  return {
    name: `webjit webgpu${RESIDENT}`,
    async create(model) {
      const s = await InferenceSession.create(model, { backend: 'webgpu' });
      let uploaded: { feeds: Feeds; gpu: Record<string, GpuTensor> } | null = null;
      const free = () => { for (const t of Object.values(uploaded?.gpu ?? {})) { t.buffer.destroy(); t.dispose(); } uploaded = null; };
      return {
        run: (f) => s.run(f),
        async warm(feeds) {
          if (uploaded?.feeds !== feeds) {
            // The device is the session's: take it from one output of a first runGpu.
            const first = await s.runGpu(feeds);
            const device = Object.values(first)[0].device;
            for (const t of Object.values(first)) t.dispose();
            free();
            const gpu: Record<string, GpuTensor> = {};
            for (const [k, t] of Object.entries(feeds)) {
              const buf = device.createBuffer({ size: gpuBytes(t.type, t.dims), usage: 0x80 | 0x04 | 0x08 }); // STORAGE | COPY_SRC | COPY_DST
              writePadded(device, buf, toStorage(t));
              gpu[k] = GpuTensor.fromBuffer(buf, { type: t.type, dims: t.dims, device });
            }
            uploaded = { feeds, gpu };
          }
          const outs = await s.runGpu(uploaded.gpu);
          const ts = Object.values(outs);
          await ts[0].device.queue.onSubmittedWorkDone();
          for (const t of ts) t.dispose();
        },
        async release() { free(); await s.release(); },
      };
    },
  };
}

type OrtTensor = { type: string; data: unknown; dims: readonly number[] };
type OrtModule = {
  env: { wasm: { numThreads: number; wasmPaths?: string } };
  Tensor: new (type: string, data: unknown, dims: readonly number[]) => OrtTensor;
  InferenceSession: { create(m: string | Uint8Array, o?: object): Promise<{ run(f: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>; release(): Promise<void> }> };
};

const require = createRequire(import.meta.url);

function peer(name: string): OrtModule {
  try {
    return require(name) as OrtModule;
  } catch {
    throw new Error(`benchmark peer '${name}' is not installed: run npm install (it is a devDependency)`);
  }
}

function ortEngine(label: string, mod: () => OrtModule | Promise<OrtModule>, opts: object, setup?: (m: OrtModule) => void, copy = false): Engine {
  return {
    name: label,
    async create(model) {
      const ort = await mod();
      setup?.(ort);
      const s = await ort.InferenceSession.create(model, opts);
      return {
        async run(feeds) {
          const f: Record<string, OrtTensor> = {};
          for (const [k, t] of Object.entries(feeds)) {
            // onnxruntime-web copies into its own heap; a copy here keeps it from sharing our buffers.
            const data = copy ? (t.data as Float32Array).slice() : t.data;
            f[k] = new ort.Tensor(t.type, data, t.dims);
          }
          const r = await s.run(f);
          const out: Record<string, Tensor> = {};
          for (const [k, t] of Object.entries(r)) out[k] = new Tensor(t.type as DType, t.data as Float32Array, t.dims);
          return out;
        },
        release: () => s.release(),
      };
    },
  };
}

export const ortWebWasm = (threads: number): Engine =>
  ortEngine(`onnxruntime-web wasm ${threads}t`, () => peer('onnxruntime-web'), { executionProviders: ['wasm'] },
    (m) => { m.env.wasm.numThreads = threads; }, true);

export const ortNode = (threads: number): Engine =>
  ortEngine(`onnxruntime-node ${threads}t`, () => peer('onnxruntime-node'), { intraOpNumThreads: threads, interOpNumThreads: 1 });

/** Whether onnxruntime-node loads here (the GPU machine's bundle leaves it out: its library is 45 MB). */
export function hasOrtNode(): boolean {
  try { require('onnxruntime-node'); return true; } catch { return false; }
}

/**
 * onnxruntime-web's WebGPU build (the ESM file and its Wasm from `WEBJIT_ORT_WEB_DIR`, default the installed package),
 * on the process's navigator.gpu (see gpu_env.ts).
 */
export function ortWebGpu(): Engine {
  let loaded: Promise<OrtModule> | null = null;
  const load = () => loaded ??= (async () => {
    const dir = process.env.WEBJIT_ORT_WEB_DIR ?? path.dirname(require.resolve('onnxruntime-web'));
    const m = (await import(pathToFileURL(path.join(dir, 'ort.webgpu.mjs')).href)) as OrtModule;
    m.env.wasm.wasmPaths = `${dir}${path.sep}`;
    m.env.wasm.numThreads = 1;
    return m;
  })();
  return ortEngine('onnxruntime-web webgpu', load, { executionProviders: ['webgpu'] }, undefined, true);
}
