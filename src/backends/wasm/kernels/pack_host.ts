// Packing weights into GEMM B panels at load time, in WebAssembly: the JavaScript loop runs at ~8-15 ns per float
// (BERT-base's 85 M weights took over a second of session start); this module copies whole panel rows with SIMD in a
// private memory of its own (not the runtime's), at about 1 ns per float including the copies in and out.
import { ModuleBuilder, OP } from '../../../codegen/wasm/builder.js';

/** Rows of K handled per sweep over the panels, so the rows read stay in cache while every panel takes its part. */
const KB = 16;

type PackFn = (src: number, dst: number, K: number, N: number, sBk: number) => void;

let memory: WebAssembly.Memory | null = null;
const packers = new Map<number, PackFn>();

/** `run(src, dst, K, N, sBk)`: B (k, n) at src + (k*sBk + n)*4 into panels of nr at dst (zeros past N). */
function packer(nr: number): PackFn {
  let fn = packers.get(nr);
  if (fn) return fn;
  memory ??= new WebAssembly.Memory({ initial: 1, maximum: 65536 });
  const mb = new ModuleBuilder({ min: 1, max: 65536 }, false);
  const f = mb.func('run', ['i32', 'i32', 'i32', 'i32', 'i32']);
  const [src, dst, K, N, sBk] = [0, 1, 2, 3, 4].map((i) => f.param(i));
  const k0 = f.local('i32'), k1 = f.local('i32'), k = f.local('i32'), p = f.local('i32'), nP = f.local('i32'), full = f.local('i32');
  const s = f.local('i32'), d = f.local('i32'), w = f.local('i32'), j = f.local('i32');
  const add = () => f.op(OP.i32_add), mul = () => f.op(OP.i32_mul);
  // nP = ceil(N / nr); full = floor(N / nr)
  f.get(N); f.i32(nr - 1); add(); f.i32(nr); f.op(OP.i32_div_u); f.set(nP);
  f.get(N); f.i32(nr); f.op(OP.i32_div_u); f.set(full);
  f.for_(k0, () => f.i32(0), () => f.get(K), KB, () => {
    f.get(k0); f.i32(KB); add(); f.tee(k1); f.get(K); f.get(k1); f.get(K); f.op(OP.i32_lt_s); f.select(); f.set(k1);
    f.for_(p, () => f.i32(0), () => f.get(nP), 1, () => {
      // s = src + (k0*sBk + p*nr)*4; d = dst + (p*K + k0)*nr*4
      f.get(src); f.get(k0); f.get(sBk); mul(); f.get(p); f.i32(nr); mul(); add(); f.i32(4); mul(); add(); f.set(s);
      f.get(dst); f.get(p); f.get(K); mul(); f.get(k0); add(); f.i32(nr * 4); mul(); add(); f.set(d);
      f.get(p); f.get(full); f.op(OP.i32_lt_s);
      f.if_(() => {
        f.for_(k, () => f.get(k0), () => f.get(k1), 1, () => {
          for (let v = 0; v < nr / 4; v++) { f.get(d); f.get(s); f.v128_load(v * 16, 0); f.v128_store(v * 16, 0); }
          f.get(s); f.get(sBk); f.i32(4); mul(); add(); f.set(s);
          f.get(d); f.i32(nr * 4); add(); f.set(d);
        });
      }, () => {
        // The ragged last panel: w = N - p*nr columns, then zeros.
        f.get(N); f.get(p); f.i32(nr); mul(); f.op(OP.i32_sub); f.set(w);
        f.for_(k, () => f.get(k0), () => f.get(k1), 1, () => {
          f.for_(j, () => f.i32(0), () => f.i32(nr), 1, () => {
            f.get(d); f.get(j); f.i32(4); mul(); add();
            f.get(s); f.get(j); f.i32(4); mul(); add(); f.f32_load(0);
            f.f32c(0); f.get(j); f.get(w); f.op(OP.i32_lt_s); f.select();
            f.f32_store(0);
          });
          f.get(s); f.get(sBk); f.i32(4); mul(); add(); f.set(s);
          f.get(d); f.i32(nr * 4); add(); f.set(d);
        });
      });
    });
  });
  const inst = new WebAssembly.Instance(new WebAssembly.Module(mb.build() as BufferSource), { env: { memory } });
  fn = inst.exports.run as PackFn;
  packers.set(nr, fn);
  return fn;
}

/**
 * Packs a row-major Float32Array B [K, N] (row stride sBk, from element `off`) into `dst` at dOff, as packBHost does;
 * false when it does not apply (too large for one private memory, or nr not a multiple of 4).
 */
export function packBWasm(src: Float32Array, off: number, K: number, N: number, sBk: number, nr: number, dst: Float32Array, dOff: number): boolean {
  if (nr % 4 !== 0 || K === 0 || N === 0) return false;
  // The rows read: up to the last element of row K-1 (a ragged last panel may read past N inside its row or one
  // more row's worth: keep a panel's width of slack).
  const srcFloats = (K - 1) * sBk + N + nr;
  const dstFloats = Math.ceil(N / nr) * nr * K;
  const bytes = (srcFloats + dstFloats) * 4 + 64;
  if (bytes > 3 * 2 ** 30) return false;
  const fn = packer(nr);
  const m = memory!;
  const need = Math.ceil(bytes / 65536) - m.buffer.byteLength / 65536;
  if (need > 0) m.grow(need);
  const n = Math.min(src.length - off, srcFloats);
  new Float32Array(m.buffer, 0, n).set(src.subarray(off, off + n));
  new Float32Array(m.buffer, n * 4, srcFloats - n).fill(0);
  const dstPtr = Math.ceil((srcFloats * 4) / 64) * 64;
  fn(0, dstPtr, K, N, sBk);
  dst.set(new Float32Array(m.buffer, dstPtr, dstFloats), dOff);
  // A memory grown for a big matrix (an LM head) is not kept for the life of the process.
  if (m.buffer.byteLength > KEEP_BYTES) { memory = null; packers.clear(); }
  return true;
}

/** Largest private memory kept between calls. */
const KEEP_BYTES = 64 * 2 ** 20;
