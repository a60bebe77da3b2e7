// The op suite: single ops (or a short chain a model would fuse) by category, as ONNX models every ONNX engine
// loads, and the same computation in TensorFlow.js where it has the op. Outputs are checked against
// onnxruntime-node before any time counts.
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { Tensor } from '../tensor.js';
import { mulberry32 } from '../util/random.js';
import type { Engine, EngineSession, Feeds } from './engines.js';
import { type WGraph, writeModel } from './onnx_writer.js';

/** What TF.js needs of a case: inputs in its layout (converted once), the computation, the output in ONNX layout. */
export interface TfCase {
  /** Feeds in TF.js's layout (e.g. NHWC), as plain arrays and dims. */
  inputs(feeds: Feeds): Record<string, { data: Float32Array | Int32Array; dims: number[]; dtype: 'float32' | 'int32' }>;
  /** Weights in TF.js's layout, made once at create. */
  weights?(g: WGraph): Record<string, { data: Float32Array | Int32Array; dims: number[]; dtype?: 'float32' | 'int32' }>;
  run(tf: Tf, x: Record<string, TfTensor>, w: Record<string, TfTensor>): TfTensor;
  /** The output in the ONNX case's layout (for the check only, untimed). */
  toOnnx?(tf: Tf, y: TfTensor): TfTensor;
}

export interface OpCase {
  category: 'MatMul' | 'Conv' | 'Attention' | 'Norm' | 'Softmax' | 'Elementwise' | 'Reduce' | 'Data movement';
  name: string;
  graph: WGraph;
  feeds: () => Feeds;
  /** Floating-point operations of one run (GFLOP/s), or bytes it must move at least (GB/s). */
  flops?: number;
  bytes?: number;
  tf?: TfCase;
}

// Minimal structural types of the TF.js API used here (it is an optional peer, loaded at run time).
export interface TfTensor { dispose(): void; data(): Promise<Float32Array | Int32Array>; shape: number[] }
export type Tf = Record<string, (...a: never[]) => TfTensor> & {
  tensor(data: Float32Array | Int32Array, shape: number[], dtype?: string): TfTensor;
  tidy<T>(f: () => T): T;
  scalar(v: number): TfTensor;
};

const rnd = (dims: number[], seed: number, scale = 1) => {
  const r = mulberry32(seed);
  return new Tensor('float32', Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, () => (r() * 2 - 1) * scale), dims);
};
const f32 = (t: Tensor) => t.data as Float32Array;
const prod = (d: number[]) => d.reduce((a, b) => a * b, 1);

/** NCHW → NHWC (or OIHW → HWIO with perm [2,3,1,0]) of a float array. */
function permute(data: Float32Array, dims: number[], perm: number[]): Float32Array {
  const out = new Float32Array(data.length);
  const od = perm.map((p) => dims[p]);
  const st = dims.map((_, i) => prod(dims.slice(i + 1)));
  const idx = new Array(dims.length).fill(0);
  for (let o = 0; o < out.length; o++) {
    let src = 0;
    for (let k = 0; k < perm.length; k++) src += idx[k] * st[perm[k]];
    out[o] = data[src];
    for (let k = od.length - 1; k >= 0; k--) { if (++idx[k] < od[k]) break; idx[k] = 0; }
  }
  return out;
}

function matmul(name: string, M: number, K: number, N: number, seed: number): OpCase {
  const w = rnd([K, N], seed + 1, 0.05);
  return {
    category: 'MatMul', name,
    graph: { nodes: [{ op: 'MatMul', inputs: ['x', 'w'], outputs: ['y'] }], inputs: [{ name: 'x', dtype: 'float32', dims: [M, K] }], outputs: [{ name: 'y', dtype: 'float32' }], initializers: { w } },
    feeds: () => ({ x: rnd([M, K], seed) }),
    flops: 2 * M * K * N,
    ...(M <= 16 ? { bytes: 4 * (K * N + M * K + M * N) } : {}),
    tf: {
      inputs: (f) => ({ x: { data: f32(f.x), dims: [M, K], dtype: 'float32' } }),
      weights: () => ({ w: { data: f32(w), dims: [K, N] } }),
      run: (tf, x, ww) => tf.matMul(x.x as never, ww.w as never),
    },
  };
}

function conv(name: string, C: number, H: number, M: number, k: number, opts: { group?: number; stride?: number }, seed: number): OpCase {
  const group = opts.group ?? 1, s = opts.stride ?? 1, pad = (k - 1) >> 1;
  const w = rnd([M, C / group, k, k], seed + 1, 0.1), b = rnd([M], seed + 2, 0.1);
  const oH = Math.floor((H + 2 * pad - k) / s) + 1;
  const depthwise = group === C && group === M;
  return {
    category: 'Conv', name,
    graph: {
      nodes: [{ op: 'Conv', inputs: ['x', 'w', 'b'], outputs: ['y'], attrs: { pads: [pad, pad, pad, pad], strides: [s, s], group } }],
      inputs: [{ name: 'x', dtype: 'float32', dims: [1, C, H, H] }], outputs: [{ name: 'y', dtype: 'float32' }], initializers: { w, b },
    },
    feeds: () => ({ x: rnd([1, C, H, H], seed) }),
    flops: 2 * M * (C / group) * k * k * oH * oH,
    tf: group === 1 || depthwise ? {
      inputs: (f) => ({ x: { data: permute(f32(f.x), [1, C, H, H], [0, 2, 3, 1]), dims: [1, H, H, C], dtype: 'float32' } }),
      // OIHW → HWIO (depthwise: [k, k, C, 1]).
      weights: () => ({ w: { data: permute(f32(w), [M, C / group, k, k], [2, 3, 1, 0]), dims: depthwise ? [k, k, C, 1] : [k, k, C, M] }, b: { data: f32(b), dims: [M] } }),
      run: (tf, x, ww) => {
        // ONNX's symmetric pads, explicitly ('same' pads at the end only when the stride is 2).
        const pads = [[0, 0], [pad, pad], [pad, pad], [0, 0]];
        const y = depthwise ? tf.depthwiseConv2d(x.x as never, ww.w as never, s as never, pads as never) : tf.conv2d(x.x as never, ww.w as never, s as never, pads as never);
        return tf.add(y as never, ww.b as never);
      },
      toOnnx: (tf, y) => tf.transpose(y as never, [0, 3, 1, 2] as never),
    } : undefined,
  };
}

function attention(name: string, H: number, S: number, D: number, causal: boolean, seed: number): OpCase {
  const scale = 1 / Math.sqrt(D);
  const mask = new Tensor('float32', new Float32Array(S * S), [1, 1, S, S]);
  if (causal) for (let i = 0; i < S; i++) for (let j = i + 1; j < S; j++) f32(mask)[i * S + j] = -1e9;
  const nodes = [
    { op: 'MatMul', inputs: ['q', 'kt'], outputs: ['s0'] },
    { op: 'Mul', inputs: ['s0', 'scale'], outputs: ['s1'] },
    ...(causal ? [{ op: 'Add', inputs: ['s1', 'mask'], outputs: ['s2'] }] : []),
    { op: 'Softmax', inputs: [causal ? 's2' : 's1'], outputs: ['p'], attrs: { axis: -1 } },
    { op: 'MatMul', inputs: ['p', 'v'], outputs: ['y'] },
  ];
  const initializers: Record<string, Tensor> = { scale: new Tensor('float32', new Float32Array([scale]), []) };
  if (causal) initializers.mask = mask;
  return {
    category: 'Attention', name,
    graph: {
      nodes, initializers, outputs: [{ name: 'y', dtype: 'float32' }],
      inputs: [{ name: 'q', dtype: 'float32', dims: [1, H, S, D] }, { name: 'kt', dtype: 'float32', dims: [1, H, D, S] }, { name: 'v', dtype: 'float32', dims: [1, H, S, D] }],
    },
    feeds: () => ({ q: rnd([1, H, S, D], seed), kt: rnd([1, H, D, S], seed + 1), v: rnd([1, H, S, D], seed + 2) }),
    flops: 4 * H * S * S * D,
    tf: {
      inputs: (f) => ({ q: { data: f32(f.q), dims: [H, S, D], dtype: 'float32' }, kt: { data: f32(f.kt), dims: [H, D, S], dtype: 'float32' }, v: { data: f32(f.v), dims: [H, S, D], dtype: 'float32' } }),
      weights: () => {
        const w: Record<string, { data: Float32Array; dims: number[] }> = {};
        if (causal) w.mask = { data: f32(mask), dims: [1, S, S] };
        return w;
      },
      run: (tf, x, w) => {
        let s = tf.mul(tf.matMul(x.q as never, x.kt as never) as never, tf.scalar(scale) as never);
        if (causal) s = tf.add(s as never, w.mask as never);
        return tf.matMul(tf.softmax(s as never) as never, x.v as never);
      },
      toOnnx: (tf, y) => tf.reshape(y as never, [1, H, S, D] as never),
    },
  };
}

/** The suite. Sizes are those of the models in the model suite (BERT-base widths, ResNet/MobileNet convs). */
export function opCases(): OpCase[] {
  const R = 128, Wd = 768;
  const ln = (() => {
    const g = rnd([Wd], 31), b = rnd([Wd], 32);
    return {
      category: 'Norm', name: `LayerNormalization [${R},${Wd}]`,
      graph: { nodes: [{ op: 'LayerNormalization', inputs: ['x', 'g', 'b'], outputs: ['y'], attrs: { axis: -1, epsilon: { float: 1e-5 } } }], inputs: [{ name: 'x', dtype: 'float32', dims: [R, Wd] }], outputs: [{ name: 'y', dtype: 'float32' }], initializers: { g, b } },
      feeds: () => ({ x: rnd([R, Wd], 30, 3) }),
      bytes: 2 * 4 * R * Wd,
      tf: {
        inputs: (f) => ({ x: { data: f32(f.x), dims: [R, Wd], dtype: 'float32' } }),
        weights: () => ({ g: { data: f32(g), dims: [Wd] }, b: { data: f32(b), dims: [Wd] } }),
        run: (tf, x, w) => {
          const m = tf.mean(x.x as never, -1 as never, true as never);
          const d = tf.sub(x.x as never, m as never);
          const v = tf.mean(tf.square(d as never) as never, -1 as never, true as never);
          return tf.add(tf.mul(tf.mul(d as never, tf.rsqrt(tf.add(v as never, tf.scalar(1e-5) as never) as never) as never) as never, w.g as never) as never, w.b as never);
        },
      },
    } satisfies OpCase;
  })();
  const gelu: OpCase = {
    category: 'Elementwise', name: `GELU (Erf form, 5 ops) [${R},${4 * Wd}]`,
    graph: {
      nodes: [
        { op: 'Div', inputs: ['x', 'sqrt2'], outputs: ['a'] }, { op: 'Erf', inputs: ['a'], outputs: ['e'] },
        { op: 'Add', inputs: ['e', 'one'], outputs: ['p'] }, { op: 'Mul', inputs: ['x', 'p'], outputs: ['q'] }, { op: 'Mul', inputs: ['q', 'half'], outputs: ['y'] },
      ],
      inputs: [{ name: 'x', dtype: 'float32', dims: [R, 4 * Wd] }], outputs: [{ name: 'y', dtype: 'float32' }],
      initializers: { sqrt2: new Tensor('float32', new Float32Array([Math.SQRT2]), []), one: new Tensor('float32', new Float32Array([1]), []), half: new Tensor('float32', new Float32Array([0.5]), []) },
    },
    feeds: () => ({ x: rnd([R, 4 * Wd], 40, 3) }),
    bytes: 2 * 4 * R * 4 * Wd,
    tf: {
      inputs: (f) => ({ x: { data: f32(f.x), dims: [R, 4 * Wd], dtype: 'float32' } }),
      run: (tf, x) => tf.mul(tf.mul(x.x as never, tf.add(tf.erf(tf.div(x.x as never, tf.scalar(Math.SQRT2) as never) as never) as never, tf.scalar(1) as never) as never) as never, tf.scalar(0.5) as never),
    },
  };
  const addMul: OpCase = (() => {
    const b = rnd([Wd], 51), c = rnd([Wd], 52);
    return {
      category: 'Elementwise', name: `(x + b) · c, b and c broadcast [${R},${Wd}]`,
      graph: { nodes: [{ op: 'Add', inputs: ['x', 'b'], outputs: ['t'] }, { op: 'Mul', inputs: ['t', 'c'], outputs: ['y'] }], inputs: [{ name: 'x', dtype: 'float32', dims: [R, Wd] }], outputs: [{ name: 'y', dtype: 'float32' }], initializers: { b, c } },
      feeds: () => ({ x: rnd([R, Wd], 50) }),
      bytes: 2 * 4 * R * Wd,
      tf: {
        inputs: (f) => ({ x: { data: f32(f.x), dims: [R, Wd], dtype: 'float32' } }),
        weights: () => ({ b: { data: f32(b), dims: [Wd] }, c: { data: f32(c), dims: [Wd] } }),
        run: (tf, x, w) => tf.mul(tf.add(x.x as never, w.b as never) as never, w.c as never),
      },
    } satisfies OpCase;
  })();
  const softmax: OpCase = {
    category: 'Softmax', name: 'Softmax [12,128,128] last axis',
    graph: { nodes: [{ op: 'Softmax', inputs: ['x'], outputs: ['y'], attrs: { axis: -1 } }], inputs: [{ name: 'x', dtype: 'float32', dims: [12, 128, 128] }], outputs: [{ name: 'y', dtype: 'float32' }] },
    feeds: () => ({ x: rnd([12, 128, 128], 60, 5) }),
    bytes: 2 * 4 * 12 * 128 * 128,
    tf: { inputs: (f) => ({ x: { data: f32(f.x), dims: [12, 128, 128], dtype: 'float32' } }), run: (tf, x) => tf.softmax(x.x as never) },
  };
  const reduce: OpCase = {
    category: 'Reduce', name: 'ReduceSum [512,1024] last axis',
    graph: { nodes: [{ op: 'ReduceSum', inputs: ['x', 'axes'], outputs: ['y'], attrs: { keepdims: 1 } }], inputs: [{ name: 'x', dtype: 'float32', dims: [512, 1024] }], outputs: [{ name: 'y', dtype: 'float32' }], initializers: { axes: new Tensor('int64', BigInt64Array.of(-1n), [1]) } },
    feeds: () => ({ x: rnd([512, 1024], 70) }),
    bytes: 4 * 512 * 1024,
    tf: { inputs: (f) => ({ x: { data: f32(f.x), dims: [512, 1024], dtype: 'float32' } }), run: (tf, x) => tf.sum(x.x as never, -1 as never, true as never) },
  };
  const transpose: OpCase = {
    category: 'Data movement', name: 'Transpose [128,12,64] → [12,128,64]',
    graph: { nodes: [{ op: 'Transpose', inputs: ['x'], outputs: ['y'], attrs: { perm: [1, 0, 2] } }], inputs: [{ name: 'x', dtype: 'float32', dims: [128, 12, 64] }], outputs: [{ name: 'y', dtype: 'float32' }] },
    feeds: () => ({ x: rnd([128, 12, 64], 80) }),
    bytes: 2 * 4 * 128 * 12 * 64,
    tf: { inputs: (f) => ({ x: { data: f32(f.x), dims: [128, 12, 64], dtype: 'float32' } }), run: (tf, x) => tf.transpose(x.x as never, [1, 0, 2] as never) },
  };
  const table = rnd([30000, Wd], 90);
  const gather: OpCase = {
    category: 'Data movement', name: `Gather: embedding [30000,${Wd}] × 128 ids`,
    graph: { nodes: [{ op: 'Gather', inputs: ['t', 'ids'], outputs: ['y'], attrs: { axis: 0 } }], inputs: [{ name: 'ids', dtype: 'int64', dims: [128] }], outputs: [{ name: 'y', dtype: 'float32' }], initializers: { t: table } },
    feeds: () => { const r = mulberry32(91); return { ids: new Tensor('int64', BigInt64Array.from({ length: 128 }, () => BigInt(Math.floor(r() * 30000))), [128]) }; },
    bytes: 2 * 4 * 128 * Wd,
    tf: {
      inputs: (f) => ({ ids: { data: Int32Array.from(f.ids.data as BigInt64Array, Number), dims: [128], dtype: 'int32' } }),
      weights: () => ({ t: { data: f32(table), dims: [30000, Wd] } }),
      run: (tf, x, w) => tf.gather(w.t as never, x.ids as never),
    },
  };
  return [
    matmul('MatMul 1024×1024×1024', 1024, 1024, 1024, 1),
    matmul('MatMul 128×768×768 (encoder projection)', 128, 768, 768, 3),
    matmul('MatMul 128×768×3072 (encoder MLP)', 128, 768, 3072, 5),
    matmul('MatMul decode 1×768×3072', 1, 768, 3072, 7),
    matmul('MatMul decode 4×768×768', 4, 768, 768, 9),
    {
      category: 'MatMul', name: 'MatMul batched [12,128,64]×[12,64,128]',
      graph: { nodes: [{ op: 'MatMul', inputs: ['a', 'b'], outputs: ['y'] }], inputs: [{ name: 'a', dtype: 'float32', dims: [12, 128, 64] }, { name: 'b', dtype: 'float32', dims: [12, 64, 128] }], outputs: [{ name: 'y', dtype: 'float32' }] },
      feeds: () => ({ a: rnd([12, 128, 64], 11), b: rnd([12, 64, 128], 12) }),
      flops: 2 * 12 * 128 * 64 * 128,
      tf: { inputs: (f) => ({ a: { data: f32(f.a), dims: [12, 128, 64], dtype: 'float32' }, b: { data: f32(f.b), dims: [12, 64, 128], dtype: 'float32' } }), run: (tf, x) => tf.matMul(x.a as never, x.b as never) },
    },
    conv('Conv 3×3 64→64 at 56×56 (ResNet)', 64, 56, 64, 3, {}, 13),
    conv('Conv 3×3 s2 32→64 at 112×112', 32, 112, 64, 3, { stride: 2 }, 15),
    conv('Conv 1×1 128→256 at 28×28', 128, 28, 256, 1, {}, 17),
    conv('Depthwise 3×3 at 32×112×112 (MobileNet)', 32, 112, 32, 3, { group: 32 }, 19),
    attention('Attention H12 S128 D64', 12, 128, 64, false, 21),
    attention('Attention causal H12 S128 D64', 12, 128, 64, true, 24),
    ln, softmax, gelu, addMul, reduce, transpose, gather,
  ];
}

const require = createRequire(import.meta.url);
const tfLoaded = new Map<string, Promise<Tf>>();

/**
 * TensorFlow.js on its wasm backend (one thread in Node: its threaded build needs browser workers) or its WebGPU
 * backend (on navigator.gpu: see gpu_env.ts). One backend per process: the GPU suite loads only webgpu.
 */
function loadTf(backend: 'wasm' | 'webgpu'): Promise<Tf> {
  let p = tfLoaded.get(backend);
  if (!p) {
    p = (async () => {
      type TfCore = Tf & { setBackend(b: string): Promise<boolean>; ready(): Promise<void> };
      let tf: TfCore;
      // import() with literal names: a bundle (the GPU machine's) carries TF.js inside it.
      const cjs = <T>(m: { default?: T }) => (m.default ?? m) as T;
      try {
        tf = cjs<TfCore>(await import('@tensorflow/tfjs-core' as string));
        if (backend === 'wasm') {
          const wasm = cjs<{ setWasmPaths(p: string): void }>(await import('@tensorflow/tfjs-backend-wasm' as string));
          wasm.setWasmPaths(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm')) + path.sep);
        } else {
          await import('@tensorflow/tfjs-backend-webgpu' as string);
        }
      } catch {
        throw new Error(`benchmark peer TensorFlow.js ${backend} is not installed: run npm install (it is a devDependency)`);
      }
      if (!(await tf.setBackend(backend))) throw new Error(`TensorFlow.js could not start its ${backend} backend`);
      await tf.ready();
      return tf;
    })();
    tfLoaded.set(backend, p);
  }
  return p;
}

/** TensorFlow.js as an Engine of op cases: create() takes the case instead of model bytes. */
export function tfjsOpEngine(c: OpCase, backend: 'wasm' | 'webgpu' = 'wasm'): Engine {
  return {
    name: backend === 'wasm' ? 'TensorFlow.js wasm 1t' : 'TensorFlow.js webgpu',
    async create(): Promise<EngineSession> {
      if (!c.tf) throw new Error('TensorFlow.js has no equivalent here');
      const tfc = c.tf;
      const tf = await loadTf(backend);
      const w: Record<string, TfTensor> = {};
      for (const [k, v] of Object.entries(tfc.weights?.(c.graph) ?? {})) w[k] = tf.tensor(v.data, v.dims, v.dtype ?? 'float32');
      let prepared: { feeds: Feeds; x: ReturnType<TfCase['inputs']> } | null = null;
      let calls = 0;
      return {
        async run(feeds) {
          if (!prepared || prepared.feeds !== feeds) prepared = { feeds, x: tfc.inputs(feeds) };
          const xin = prepared.x;
          // The first run is the one checked: only it converts the output to the ONNX layout (untimed work).
          const convert = calls++ === 0 && !!tfc.toOnnx;
          // Inputs upload and the output downloads inside the timed run, as for the ONNX engines.
          const out = tf.tidy(() => {
            const x: Record<string, TfTensor> = {};
            for (const [k, v] of Object.entries(xin)) x[k] = tf.tensor(v.data, v.dims, v.dtype);
            const y = tfc.run(tf, x, w);
            return convert ? tfc.toOnnx!(tf, y) : y;
          });
          // data(), not dataSync(): TF.js's WebGPU backend reads synchronously only through OffscreenCanvas.
          const data = await out.data();
          const dims = out.shape;
          out.dispose();
          return { [c.graph.outputs[0].name]: new Tensor('float32', data instanceof Float32Array ? data : Float32Array.from(data), dims) };
        },
        async release() { for (const t of Object.values(w)) t.dispose(); },
      };
    },
  };
}

/** The ONNX bytes of a case (cached per case). */
const bytesOf = new WeakMap<OpCase, Uint8Array>();
export function opModel(c: OpCase): Uint8Array {
  let b = bytesOf.get(c);
  if (!b) { b = writeModel(c.graph); bytesOf.set(c, b); }
  return b;
}
