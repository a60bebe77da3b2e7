// Wasm GEMM kernels against a float64 JS matmul: ragged, batched/broadcast, transposed shapes, epilogues; NaN-poisoned outputs.
import { DEFAULTS_ONLY } from '../src/tune/site.js';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SHARED_MEMORY } from '../src/codegen/wasm/builder.js';
import type { Node } from '../src/graph/ir.js';
import { findWasmOp, type KernelSource, type PlanContext, type ValueDesc } from '../src/backends/wasm/kernel.js';
import '../src/backends/wasm/ops/matmul.js';
import { type GemmActivation, type GemmTile, genGemm, genPackB, packBHost, packedBSize } from '../src/backends/wasm/kernels/gemm.js';
import { Tensor } from '../src/tensor.js';

/** A bump allocator on a plain WebAssembly.Memory, compiling kernels directly (no runtime). */
class Harness {
  readonly memory = new WebAssembly.Memory({ initial: 64, maximum: 65536, shared: SHARED_MEMORY } as WebAssembly.MemoryDescriptor);
  private top = 64;
  private cache = new Map<string, (...a: number[]) => void>();
  alloc(bytes: number): number {
    const p = this.top;
    this.top = Math.ceil((p + bytes + 64) / 64) * 64;
    const need = this.top - this.memory.buffer.byteLength;
    if (need > 0) this.memory.grow(Math.ceil(need / 65536));
    return p;
  }
  f32(p: number, n: number): Float32Array { return new Float32Array(this.memory.buffer, p, n); }
  put(data: Float32Array): number { const p = this.alloc(data.length * 4); this.f32(p, data.length).set(data); return p; }
  run(k: KernelSource, args: number[], tasks: number): void {
    let fn = this.cache.get(k.key);
    if (!fn) {
      const inst = new WebAssembly.Instance(new WebAssembly.Module(k.bytes() as BufferSource), { env: { memory: this.memory } });
      fn = inst.exports.run as (...a: number[]) => void;
      this.cache.set(k.key, fn);
    }
    // Uneven task chunks, as threads would take them.
    for (let t = 0; t < tasks;) { const e = Math.min(tasks, t + 1 + (t % 3)); fn(...args, t, e); t = e; }
  }
}

let seed = 12345;
function rand(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) { seed = (seed * 1103515245 + 12345) >>> 0; a[i] = (seed / 2 ** 32) * 2 - 1; }
  return a;
}

/** out[b, m, n] = sum_k A(b, m, k) B(b, k, n) in float64, via element accessors. */
function refMatmul(M: number, N: number, K: number, a: (m: number, k: number) => number, b: (k: number, n: number) => number): Float64Array {
  const out = new Float64Array(M * N);
  for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) {
    let s = 0;
    for (let k = 0; k < K; k++) s += a(m, k) * b(k, n);
    out[m * N + n] = s;
  }
  return out;
}

function assertClose(got: Float32Array, ref: ArrayLike<number>, what: string, tol = 1e-5): void {
  assert.equal(got.length, ref.length, `${what}: length`);
  let max = 0;
  for (let i = 0; i < ref.length; i++) max = Math.max(max, Math.abs(ref[i]));
  const lim = tol * Math.max(max, 1e-6);
  for (let i = 0; i < ref.length; i++) {
    if (!(Math.abs(got[i] - ref[i]) <= lim)) assert.fail(`${what}: element ${i} is ${got[i]}, expected ${ref[i]} (max|ref| ${max})`);
  }
}

const SIZES = [1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 65, 100];
const TILES: GemmTile[] = [
  { mr: 4, nr: 8, mb: 16, kb: 32, unroll: 4, panelsPerTask: 2 },
  { mr: 1, nr: 24, mb: 4, kb: 1000, unroll: 3, panelsPerTask: 1 },
  { mr: 3, nr: 12, mb: 6, kb: 17, unroll: 2, panelsPerTask: 3 },
  { mr: 2, nr: 16, mb: 2, kb: 64, unroll: 1, panelsPerTask: 1 },
];

/** Runs genGemm on row-major A[M,K] (or transposed) and B packed from [K,N] (or [N,K]); returns C[M,N]. */
function runGemm(h: Harness, M: number, N: number, K: number, tile: GemmTile, o: {
  transA?: boolean; transB?: boolean; relaxed?: boolean; hostPack?: boolean;
  a?: Float32Array; b?: Float32Array; epilogue?: Parameters<typeof genGemm>[0]['epilogue']; bias?: Float32Array; res?: Float32Array;
} = {}): { c: Float32Array; a: Float32Array; b: Float32Array } {
  const a = o.a ?? rand(M * K), b = o.b ?? rand(K * N);
  const sBk = o.transB ? 1 : N, sBn = o.transB ? K : 1;
  const pa = h.put(a);
  let pb: number;
  if (o.hostPack ?? true) {
    pb = h.put(packBHost(b, 0, K, N, sBk, sBn, tile.nr));
  } else {
    const src = h.put(b);
    pb = h.alloc(packedBSize(K, N, tile.nr) * 4);
    h.f32(pb, packedBSize(K, N, tile.nr)).fill(NaN);
    const pk = { K, N, sBk, sBn, nr: tile.nr, panelsPerTask: 2 };
    h.run(genPackB(pk), [src, pb], Math.ceil(Math.ceil(N / tile.nr) / 2));
  }
  const pc = h.alloc(M * N * 4);
  h.f32(pc, M * N).fill(NaN);
  const pbias = o.bias ? h.put(o.bias) : 0, pres = o.res ? h.put(o.res) : 0;
  const params = { M, N, K, sAm: o.transA ? 1 : K, sAk: o.transA ? M : 1, tile, relaxed: o.relaxed, epilogue: o.epilogue };
  const k = genGemm(params);
  const tasks = Math.ceil(M / tile.mb) * Math.ceil(Math.ceil(N / tile.nr) / tile.panelsPerTask);
  h.run(k, [pa, pb, pc, pbias, pres], tasks);
  return { c: h.f32(pc, M * N).slice(), a, b };
}

test('genGemm matches float64 matmul at ragged sizes over several tiles', () => {
  const h = new Harness();
  let n = 0;
  for (const M of SIZES) for (const N of SIZES) for (const K of [1, 3, 8, 17, 33, 100]) {
    const tile = TILES[n++ % TILES.length];
    const { c, a, b } = runGemm(h, M, N, K, tile);
    const ref = refMatmul(M, N, K, (m, k) => a[m * K + k], (k, j) => b[k * N + j]);
    assertClose(c, ref, `${M}x${N}x${K} tile ${JSON.stringify(tile)}`);
  }
});

test('genGemm K sizes across blocking, transposed A/B, Wasm-side packing', () => {
  const h = new Harness();
  let n = 0;
  for (const K of SIZES) for (const [M, N] of [[5, 9], [17, 33], [64, 65], [1, 31]]) {
    const tile = TILES[n++ % TILES.length];
    const transA = n % 2 === 0, transB = n % 3 === 0;
    const { c, a, b } = runGemm(h, M, N, K, tile, { transA, transB, hostPack: n % 2 === 1 });
    const ref = refMatmul(M, N, K, (m, k) => (transA ? a[k * M + m] : a[m * K + k]), (k, j) => (transB ? b[j * K + k] : b[k * N + j]));
    assertClose(c, ref, `${M}x${N}x${K} tA${transA} tB${transB}`);
  }
});

test('genGemm with relaxed madd validates where relaxed SIMD exists', () => {
  const k = genGemm({ M: 4, N: 8, K: 4, sAm: 4, sAk: 1, tile: TILES[0], relaxed: true });
  if (!WebAssembly.validate(k.bytes() as BufferSource)) return; // no relaxed SIMD in this engine
  const h = new Harness();
  const { c, a, b } = runGemm(h, 33, 17, 65, TILES[0], { relaxed: true });
  assertClose(c, refMatmul(33, 17, 65, (m, k2) => a[m * 65 + k2], (k2, j) => b[k2 * 17 + j]), 'relaxed');
});

const ACTS: Record<GemmActivation, (x: number) => number> = {
  none: (x) => x,
  relu: (x) => Math.max(0, x),
  sigmoid: (x) => 1 / (1 + Math.exp(-x)),
  silu: (x) => x / (1 + Math.exp(-x)),
  tanh: (x) => Math.tanh(x),
  gelu_tanh: (x) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3))),
  gelu: (x) => 0.5 * x * (1 + erf(x / Math.SQRT2)),
};

function erf(x: number): number {
  // Series / continued fraction accurate to ~1e-12 for the test's range.
  const s = Math.sign(x), z = Math.abs(x);
  if (z < 3) {
    let sum = 0, term = z;
    for (let n = 0; n < 60; n++) { sum += term / (2 * n + 1); term *= -z * z / (n + 1); }
    return s * (2 / Math.sqrt(Math.PI)) * sum;
  }
  return s * (1 - Math.exp(-z * z) / (z * Math.sqrt(Math.PI)) * (1 - 1 / (2 * z * z) + 3 / (4 * z ** 4)));
}

test('genGemm fused epilogues: scale, bias (vector and scalar), activations, residual before/after', () => {
  const h = new Harness();
  const M = 19, N = 21, K = 37;
  let n = 0;
  for (const act of Object.keys(ACTS) as GemmActivation[]) {
    for (const variant of [0, 1, 2]) {
      const tile = TILES[n++ % TILES.length];
      const bias = rand(N).map((x) => x * 2), res = rand(M * N);
      const scale = 1.7, biasScale = variant === 1 ? 0.5 : 1, resScale = variant === 2 ? -0.25 : 1;
      const biasStride = variant === 1 ? 0 : 1;
      const after = variant === 2;
      const epilogue = { scale, bias: true, biasStride, biasScale, act, residual: variant > 0, residualStrideM: N, residualStrideN: 1 as const, residualScale: resScale, residualAfterAct: after } as const;
      const { c, a, b } = runGemm(h, M, N, K, tile, { epilogue, bias, res });
      const ref = refMatmul(M, N, K, (m, k) => a[m * K + k], (k, j) => b[k * N + j]);
      const f = ACTS[act];
      for (let m = 0; m < M; m++) for (let j = 0; j < N; j++) {
        let v = scale * ref[m * N + j] + biasScale * bias[biasStride ? j : 0];
        if (variant > 0 && !after) v += resScale * res[m * N + j];
        v = f(v);
        if (variant > 0 && after) v += resScale * res[m * N + j];
        ref[m * N + j] = v;
      }
      assertClose(c, ref, `act ${act} variant ${variant}`, 2e-5);
    }
  }
});

// --- through the WasmOp (plan + launches), as the runtime would run them ------------------------------

function planCtx(h: Harness, threads: number): PlanContext {
  const consts = new Map<string, number>();
  return {
    ...DEFAULTS_ONLY,
    threads,
    relaxedSimd: false,
    constant(name, transform, make) {
      const key = `${name}|${transform}`;
      let p = consts.get(key);
      if (p === undefined) { const bytes = make(); p = h.alloc(bytes.length); new Uint8Array(h.memory.buffer, p, bytes.length).set(bytes); consts.set(key, p); }
      return p;
    },
  };
}

function runOp(h: Harness, op: string, inputs: { dims: number[]; data: Float32Array; constant?: boolean }[], attrs: Record<string, number> = {},
  threads = 2): { dims: number[]; data: Float32Array } {
  const node: Node = {
    name: 'n', opType: op, domain: '', inputs: inputs.map((_, i) => `x${i}`), outputs: ['y'],
    attrs: new Map(Object.entries(attrs).map(([name, value]) => [name, { name, type: Number.isInteger(value) ? 'int' : 'float', value }])),
  };
  const descs: ValueDesc[] = inputs.map((x, i) => ({ dtype: 'float32', dims: x.dims, name: `x${i}`, constant: x.constant ? new Tensor('float32', x.data, x.dims) : undefined }));
  const plan = findWasmOp(op)!(node, descs, planCtx(h, threads), 17);
  assert.ok(plan, `${op} planned`);
  const ptrs = inputs.map((x) => h.put(x.data));
  const dims = plan.outputs[0].dims;
  const size = dims.reduce((a, b) => a * b, 1);
  const out = h.alloc(size * 4);
  h.f32(out, size).fill(NaN);
  const scratch = h.alloc(plan.scratchBytes ?? 0);
  for (const l of plan.launches({ inputs: ptrs, outputs: [out], scratch })) h.run(l.kernel, l.args, l.tasks);
  return { dims, data: h.f32(out, size).slice() };
}

/** numpy matmul in float64 with batch broadcasting and 1-D operands. */
function refNumpyMatmul(ad: number[], a: Float32Array, bd: number[], b: Float32Array): { dims: number[]; data: Float64Array } {
  const a2 = ad.length === 1 ? [1, ad[0]] : ad, b2 = bd.length === 1 ? [bd[0], 1] : bd;
  const M = a2[a2.length - 2], K = a2[a2.length - 1], N = b2[b2.length - 1];
  const ba = a2.slice(0, -2), bb = b2.slice(0, -2);
  const r = Math.max(ba.length, bb.length);
  const pa = [...Array(r - ba.length).fill(1), ...ba], pb = [...Array(r - bb.length).fill(1), ...bb];
  const out = pa.map((x, i) => Math.max(x, pb[i]));
  const count = out.reduce((x, y) => x * y, 1);
  const data = new Float64Array(count * M * N);
  for (let bi = 0; bi < count; bi++) {
    let ia = 0, ib = 0, rest = bi;
    const idx = new Array(r);
    for (let d = r - 1; d >= 0; d--) { idx[d] = rest % out[d]; rest = Math.floor(rest / out[d]); }
    for (let d = 0; d < r; d++) { ia = ia * pa[d] + (pa[d] === 1 ? 0 : idx[d]); ib = ib * pb[d] + (pb[d] === 1 ? 0 : idx[d]); }
    const m = refMatmul(M, N, K, (i, k) => a[ia * M * K + i * K + k], (k, j) => b[ib * K * N + k * N + j]);
    data.set(m, bi * M * N);
  }
  const dims = [...out];
  if (ad.length > 1) dims.push(M);
  if (bd.length > 1) dims.push(N);
  return { dims, data };
}

test('MatMul op: batched, broadcast, 1-D operands, constant and runtime B', () => {
  const h = new Harness();
  const cases: [number[], number[]][] = [
    [[7, 5], [5, 9]], [[2, 3, 17, 33], [33, 16]], [[3, 1, 9, 8], [1, 4, 8, 15]], [[5, 7], [2, 7, 3]],
    [[33], [33, 17]], [[4, 65], [65]], [[31], [31]], [[2, 1, 5, 64], [3, 64, 65]], [[100, 100], [100, 100]],
    [[1, 768], [768, 100]], [[2, 0, 5], [5, 3]],
  ];
  for (const [ad, bd] of cases) for (const constant of [false, true]) for (const threads of [1, 2]) {
    const a = rand(ad.reduce((x, y) => x * y, 1)), b = rand(bd.reduce((x, y) => x * y, 1));
    const got = runOp(h, 'MatMul', [{ dims: ad, data: a }, { dims: bd, data: b, constant }], {}, threads);
    const ref = refNumpyMatmul(ad, a, bd, b);
    assert.deepEqual(got.dims, ref.dims, `dims of [${ad}]x[${bd}]`);
    assertClose(got.data, ref.data, `MatMul [${ad}]x[${bd}] const=${constant} threads=${threads}`);
  }
});

test('Gemm op: transA/transB, alpha, beta, C broadcast forms', () => {
  const h = new Harness();
  const M = 13, N = 29, K = 19;
  for (const transA of [0, 1]) for (const transB of [0, 1]) for (const cd of [null, [N], [1, N], [M, N], [M, 1], [1], [1, 1]]) {
    const a = rand(M * K), b = rand(K * N);
    const alpha = 0.75, beta = 1.5;
    const inputs = [{ dims: transA ? [K, M] : [M, K], data: a }, { dims: transB ? [N, K] : [K, N], data: b, constant: transB === 1 }];
    let c: Float32Array | undefined;
    if (cd) { c = rand(cd.reduce((x, y) => x * y, 1)); inputs.push({ dims: cd, data: c }); }
    const got = runOp(h, 'Gemm', inputs, { transA, transB, alpha, beta });
    const ref = refMatmul(M, N, K, (m, k) => (transA ? a[k * M + m] : a[m * K + k]), (k, j) => (transB ? b[j * K + k] : b[k * N + j]));
    for (let m = 0; m < M; m++) for (let j = 0; j < N; j++) {
      let v = alpha * ref[m * N + j];
      if (c && cd) {
        const cm = cd.length === 2 ? cd[0] : 1, cn = cd[cd.length - 1];
        v += beta * c[(cm === 1 ? 0 : m) * cn + (cn === 1 ? 0 : j)];
      }
      ref[m * N + j] = v;
    }
    assert.deepEqual(got.dims, [M, N]);
    assertClose(got.data, ref, `Gemm tA${transA} tB${transB} C[${cd}]`);
  }
});

test('MatMul op returns null for non-f32', () => {
  const node: Node = { name: 'n', opType: 'MatMul', domain: '', inputs: ['a', 'b'], outputs: ['y'], attrs: new Map() };
  const plan = findWasmOp('MatMul')!(node, [{ dtype: 'float64', dims: [2, 2], name: 'a' }, { dtype: 'float64', dims: [2, 2], name: 'b' }], planCtx(new Harness(), 1), 17);
  assert.equal(plan, null);
});

test('weights pack into B panels in WebAssembly exactly as the JavaScript packer does (ragged panels, strides, offsets)', () => {
  for (const [K, N, nr, sBk, off] of [[768, 3072, 8, 3072, 0], [300, 203, 16, 203, 0], [64, 1000, 12, 1000, 5], [33, 45, 8, 50, 7], [200, 9, 4, 9, 0]]) {
    const src = Float32Array.from({ length: off + K * sBk + 3 }, (_, i) => ((i * 7919) % 1013) / 7 - 60);
    const got = packBHost(src, off, K, N, sBk, 1, nr);
    const want = packBHost(Array.from(src), off, K, N, sBk, 1, nr); // an Array source takes the JavaScript loop
    assert.equal(got.length, want.length);
    for (let i = 0; i < want.length; i++) assert.equal(got[i], want[i], `K ${K} N ${N} nr ${nr}: element ${i}`);
  }
});
