// InferenceSession: the public API, shaped like onnxruntime-web's (create, inputNames, run, release).
import { InputError, UnsupportedError } from './errors.js';
import { GraphExecutor } from './backends/reference/executor.js';
import type { Model, ValueInfo } from './graph/ir.js';
import { formatType } from './graph/ir.js';
import { optimizeGraph } from './graph/passes.js';
import { loadModel, type LoadOptions, type ModelSource } from './onnx/load.js';
import { Tensor, type Value } from './tensor.js';

export type BackendName = 'reference' | 'wasm' | 'webgpu';

export interface SessionOptions extends LoadOptions {
  /** Which backend runs the kernels (default 'reference' until the fast backends land). */
  backend?: BackendName;
  /** Graph passes (constant folding, dead-node and identity removal); default true. */
  optimize?: boolean;
}

export type Feeds = Record<string, Tensor>;
export type Outputs = Record<string, Tensor>;

export class InferenceSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  readonly backend: BackendName;
  private executor: GraphExecutor | null;

  private constructor(readonly model: Model, backend: BackendName, private readonly inputs: ValueInfo[]) {
    this.backend = backend;
    this.inputNames = inputs.map((i) => i.name);
    this.outputNames = model.graph.outputs.map((o) => o.name);
    this.executor = new GraphExecutor(model.graph, { opsets: model.opsets, functions: model.functions });
  }

  static async create(src: ModelSource, opts: SessionOptions = {}): Promise<InferenceSession> {
    const backend = opts.backend ?? 'reference';
    if (backend !== 'reference') {
      throw new UnsupportedError(`backend '${backend}' is not available in this build`, {}, "use backend 'reference'");
    }
    const model = await loadModel(src, opts);
    const g = model.graph;
    // Graph inputs that also have an initializer are overridable constants, not required feeds.
    const inputs = g.inputs.filter((i) => !g.initializers.has(i.name));
    if (opts.optimize !== false) optimizeGraph(model);
    return new InferenceSession(model, backend, inputs);
  }

  /** Declared input metadata: name, dtype and shape (symbolic dims as names). */
  get inputMetadata(): { name: string; type: string }[] {
    return this.inputs.map((i) => ({ name: i.name, type: formatType(i.type) }));
  }

  async run(feeds: Feeds, fetches?: readonly string[]): Promise<Outputs> {
    return this.runSync(feeds, fetches);
  }

  /** Synchronous run on the reference backend (tests, CLI). */
  runSync(feeds: Feeds, fetches?: readonly string[]): Outputs {
    if (!this.executor) throw new InputError('the session was released', {}, 'create a new session');
    const map = this.checkFeeds(feeds);
    const values = this.executor.run(map);
    const out: Outputs = {};
    const want = fetches ? new Set(fetches) : null;
    this.outputNames.forEach((name, i) => {
      if (want && !want.has(name)) return;
      const v = values[i];
      if (!(v instanceof Tensor)) throw new UnsupportedError(`output '${name}' is a ${v.constructor.name}; only tensor outputs are returned by run()`);
      out[name] = v;
    });
    return out;
  }

  /** Runs with any value kind (sequences, optionals) in graph order: used by the conformance runner. */
  runValues(feeds: Map<string, Value>): Value[] {
    if (!this.executor) throw new InputError('the session was released', {}, 'create a new session');
    return this.executor.run(feeds);
  }

  private checkFeeds(feeds: Feeds): Map<string, Value> {
    if (feeds === null || typeof feeds !== 'object') throw new InputError('feeds must be an object of name → Tensor');
    const map = new Map<string, Value>();
    for (const name of Object.keys(feeds)) {
      if (!this.inputNames.includes(name) && !this.model.graph.initializers.has(name)) {
        throw new InputError(`unknown input '${name}'`, { input: name }, `the model's inputs are: ${this.inputNames.join(', ')}`);
      }
    }
    for (const vi of this.inputs) {
      const t = feeds[vi.name];
      if (t === undefined) throw new InputError('input is missing', { input: vi.name }, `feed all of: ${this.inputNames.join(', ')}`);
      if (!(t instanceof Tensor)) throw new InputError(`expected a webjit Tensor, got ${typeof t}`, { input: vi.name });
      checkAgainst(vi, t);
      map.set(vi.name, t);
    }
    for (const [name, t] of Object.entries(feeds)) if (!map.has(name)) map.set(name, t);
    return map;
  }

  async release(): Promise<void> {
    this.executor = null;
  }
}

function checkAgainst(vi: ValueInfo, t: Tensor): void {
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
    });
  }
}
