// Engines a benchmark compares: webjit's backends and the peers (onnxruntime-web wasm, onnxruntime-node).
import { createRequire } from 'node:module';
import { InferenceSession, type BackendName } from '../session.js';
import { Tensor, type DType } from '../tensor.js';

export type Feeds = Record<string, Tensor>;

export interface EngineSession {
  run(feeds: Feeds): Promise<Record<string, Tensor>>;
  release(): Promise<void>;
}

export interface Engine {
  name: string;
  create(model: string | Uint8Array): Promise<EngineSession>;
}

export function webjitEngine(backend: BackendName, threads: number): Engine {
  return {
    name: `webjit ${backend}${backend === 'wasm' ? ` ${threads}t` : ''}`,
    async create(model) {
      const s = await InferenceSession.create(model, { backend, threads });
      return { run: (f) => s.run(f), release: () => s.release() };
    },
  };
}

type OrtTensor = { type: string; data: unknown; dims: readonly number[] };
type OrtModule = {
  env: { wasm: { numThreads: number } };
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

function ortEngine(label: string, mod: () => OrtModule, opts: object, setup?: (m: OrtModule) => void, copy = false): Engine {
  return {
    name: label,
    async create(model) {
      const ort = mod();
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
