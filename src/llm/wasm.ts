// The LLM runtime on WebAssembly: weights re-laid out once into Wasm memory (wasm_pack.ts), a preallocated KV cache,
// and one generated module that runs a whole decoder step in one launch over the runtime's threads (wasm_kernels.ts).
import { WasmRuntime } from '../backends/wasm/runtime.js';
import { SHARED_MEMORY } from '../codegen/wasm/builder.js';
import { UnsupportedError } from '../errors.js';
import { registerLlmBackend } from './registry.js';
import { checkForward, checkTruncate, ropeTables } from './reference.js';
import { checkWeights, type ActivationsFallback, type LlamaConfig, type LlmRunner, type LlmWeights } from './types.js';
import {
  G_SLOT, GLOBAL_SLOTS, L_SLOT, LAYER_SLOTS, llmKernel, matrixBlocks, META_BYTES, PHASE_BYTES, phaseCount, privateLayout, TILE_BLOCKS, tilesOf,
  WAIT_SLOTS, X_BYTES, type LlmKernelSpec,
} from './wasm_kernels.js';
import { commonFmt, gateUpRows, packRows, plainRows, qkNormRows, qkvBiasRows, qkvRows, type MatFmt, type PackedMatrix } from './wasm_pack.js';

export interface WasmLlmOptions {
  capacity?: number;
  /** Threads including the calling one (default: all). */
  threads?: number;
  /**
   * 'int8': the inputs of 4-bit matrices rounded to 8 bits per group and multiplied by relaxed SIMD's int8 dot
   * product (W4A8, ~2x fewer instructions a weight), where the engine has relaxed SIMD (Chrome since 114; Node 20 with
   * --experimental-wasm-relaxed-simd); elsewhere, and by default, int16 codes (within 1e-3 of the f32 reference).
   */
  activations?: 'f32' | 'int8';
}

/** Whether this thread may block in Atomics.wait (not a browser's main thread): then the kernel's waits may sleep. */
const CAN_WAIT = SHARED_MEMORY && (() => {
  try { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 1, 0); return true; } catch { return false; }
})();

/** Most tokens one launch takes; longer inputs run in chunks of this many (chunked prefill). */
export const WASM_LLM_TMAX = 64;

/** A quantized format the kernels read as it is (codes in 8-k loads, int16 sums of a group within i32), else f32. */
function kernelFmt(f: MatFmt): MatFmt {
  return f.kind === 'q' && f.group % 8 === 0 && f.group <= 256 ? f : { kind: 'f32' };
}

export class WasmLlm implements LlmRunner {
  readonly backend = 'wasm' as const;
  readonly config: LlamaConfig;
  private len = 0;
  private released = false;

  /** The activations decode runs with ('int8' where asked for, the engine has relaxed SIMD and a matrix is 4-bit). */
  readonly activations: 'f32' | 'int8';
  /** Why int8 activations asked for are not what it runs (null when they run or were not asked for). */
  int8Fallback: ActivationsFallback | null = null;

  private constructor(private readonly rt: WasmRuntime, readonly capacity: number, private readonly spec: LlmKernelSpec,
    private readonly kernel: number, private readonly ptrs: number[], private readonly buf: Record<keyof typeof G_SLOT | 'tab', number>,
    private readonly w: LlmWeights) {
    this.config = w.config;
    this.activations = spec.int8 ? 'int8' : 'f32';
  }

  static async create(w: LlmWeights, o: WasmLlmOptions = {}): Promise<WasmLlm> {
    const c = w.config;
    checkWeights(w);
    const capacity = o.capacity ?? c.maxPositions;
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > c.maxPositions) {
      throw new UnsupportedError(`a KV cache of ${capacity} positions: the model was trained for ${c.maxPositions}`, {}, `give a capacity between 1 and ${c.maxPositions}`);
    }
    for (const [what, n] of [['head_dim', c.headDim], ['hidden_size', c.hidden], ['intermediate_size', c.intermediate]] as const) {
      if (n % 4) throw new UnsupportedError(`the Wasm LLM runtime needs ${what} to be a multiple of 4 (it is ${n})`, {}, 'use the reference backend');
    }
    const L0 = w.layers[0];
    const spec: LlmKernelSpec = {
      D: c.hidden, H: c.heads, KVH: c.kvHeads, hd: c.headDim, F: c.intermediate, vocab: c.vocab, layers: c.layers, cap: capacity,
      eps: c.rmsEps, tmax: WASM_LLM_TMAX,
      qkv: kernelFmt(commonFmt([L0.q, L0.k, L0.v])), o: kernelFmt(commonFmt([L0.o])), gu: kernelFmt(commonFmt([L0.gate, L0.up])),
      down: kernelFmt(commonFmt([L0.down])), head: kernelFmt(commonFmt([w.lmHead])),
    };
    // q/k/v biases and q/k norms (Qwen3: a phase of their own that also rotates q and k) as the config says (checkWeights:
    // every layer has them then); a model without runs Llama's module, byte for byte
    if (c.qkvBias) spec.qkvBias = true;
    if (c.qkNorm) spec.qkNorm = true;
    const rt = await WasmRuntime.acquire({ threads: o.threads });
    const q4 = [spec.qkv, spec.o, spec.gu, spec.down, spec.head].some((f) => f.kind === 'q' && f.bits === 4);
    spec.int8 = o.activations === 'int8' && rt.relaxedSimd && q4;
    // The model's cause first: on an engine with relaxed SIMD it would still run f32.
    const int8Fallback: ActivationsFallback | null = o.activations !== 'int8' || spec.int8 ? null : !q4
      ? { message: 'int8 activations on wasm: they apply to 4-bit matrices and this model has none (the kernels read a role\'s matrices as 4-bit where every layer stores them alike)', hint: 'quantize it to 4 bits (--quant q4), or leave --activations out' }
      : { message: 'int8 activations on wasm: this engine has no relaxed SIMD', hint: 'run node with --experimental-wasm-relaxed-simd (Chrome has it by default), or leave --activations out' };
    const ptrs: number[] = [];
    try {
      const mem = rt.mem;
      const alloc = (bytes: number, zero = false) => {
        const p = mem.alloc(bytes);
        ptrs.push(p);
        if (zero) mem.u8.fill(0, p, p + bytes);
        return p;
      };
      const put = (data: ArrayBufferView) => {
        const p = alloc(data.byteLength);
        mem.u8.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), p);
        return p;
      };
      const putMatrix = (m: PackedMatrix) => [put(m.w), m.s ? put(m.s) : 0, m.z ? put(m.z) : 0];
      const rowsMul = TILE_BLOCKS * 4;
      const blocks = matrixBlocks(spec);
      const { D, H, hd, F, tmax } = spec;
      const qd = H * hd;
      const Np = tilesOf(blocks.head) * TILE_BLOCKS * 4;
      const groups = (f: MatFmt, K: number) => (f.kind === 'q' ? K / f.group : 0);
      const maxG = Math.max(groups(spec.qkv, D), groups(spec.o, qd), groups(spec.gu, D), groups(spec.down, F), groups(spec.head, D), 1);
      const buf = {
        tab: alloc((GLOBAL_SLOTS + LAYER_SLOTS * c.layers) * 4, true),
        x: alloc(tmax * D * 4), hf: alloc(tmax * D * 4), xq: alloc(tmax * Math.max(D, qd, F) * X_BYTES), xm: alloc(tmax * maxG * META_BYTES),
        qb: alloc(tmax * qd * 4), att: alloc(tmax * qd * 4), g: alloc(tmax * F * 4), logits: alloc(tmax * Np * 4),
        rope: put(ropeTable(c, capacity)), ctl: alloc(phaseCount(spec) * PHASE_BYTES, true),
        norm: put(w.norm), headW: 0, headS: 0, headZ: 0, priv: alloc(rt.threads * privateLayout(spec).bytes),
      };
      [buf.headW, buf.headS, buf.headZ] = putMatrix(packRows(plainRows(w.lmHead, rowsMul), D, spec.head));
      const tab = new Int32Array(GLOBAL_SLOTS + LAYER_SLOTS * c.layers);
      for (const [k, slot] of Object.entries(G_SLOT)) tab[slot] = buf[k as keyof typeof G_SLOT];
      const cacheBytes = (c.kvHeads * capacity + 4) * hd * 4;
      w.layers.forEach((L, l) => {
        const base = GLOBAL_SLOTS + l * LAYER_SLOTS;
        const set = (slot: number, p: number) => { tab[base + slot] = p; };
        set(L_SLOT.attnNorm, put(L.attnNorm));
        set(L_SLOT.mlpNorm, put(L.mlpNorm));
        const same = (a: MatFmt, ms: Parameters<typeof commonFmt>[0]) => {
          const f = kernelFmt(commonFmt(ms));
          if (JSON.stringify(f) !== JSON.stringify(a)) throw new UnsupportedError(`layer ${l}: its matrices are stored unlike layer 0's (${JSON.stringify(f)} vs ${JSON.stringify(a)})`, {}, 'quantize every layer alike');
        };
        same(spec.qkv, [L.q, L.k, L.v]); same(spec.o, [L.o]); same(spec.gu, [L.gate, L.up]); same(spec.down, [L.down]);
        const qkv = qkvRows(L.q, L.k, L.v, hd, rowsMul);
        const bias = L.qkvBias ? qkvBiasRows(L.qkvBias, hd, rowsMul) : undefined;
        const norms = L.qkNorm ? qkNormRows(L.qkNorm, hd) : undefined;
        const [qW, qS, qZ] = putMatrix(packRows(qkv, D, spec.qkv, bias, norms));
        set(L_SLOT.qkvW, qW); set(L_SLOT.qkvS, qS); set(L_SLOT.qkvZ, qZ);
        const [oW, oS, oZ] = putMatrix(packRows(plainRows(L.o, rowsMul), qd, spec.o));
        set(L_SLOT.oW, oW); set(L_SLOT.oS, oS); set(L_SLOT.oZ, oZ);
        const [gW, gS, gZ] = putMatrix(packRows(gateUpRows(L.gate, L.up, rowsMul), D, spec.gu));
        set(L_SLOT.guW, gW); set(L_SLOT.guS, gS); set(L_SLOT.guZ, gZ);
        const [dW, dS, dZ] = putMatrix(packRows(plainRows(L.down, rowsMul), F, spec.down));
        set(L_SLOT.dW, dW); set(L_SLOT.dS, dS); set(L_SLOT.dZ, dZ);
        set(L_SLOT.kc, alloc(cacheBytes, true));
        set(L_SLOT.vc, alloc(cacheBytes, true));
      });
      mem.u8.set(new Uint8Array(tab.buffer), buf.tab);
      const kernel = rt.compileSync(llmKernel(spec));
      await rt.ready();
      const r = new WasmLlm(rt, capacity, spec, kernel, ptrs, buf, w);
      r.int8Fallback = int8Fallback;
      return r;
    } catch (e) {
      for (const p of ptrs) rt.mem.release(p);
      rt.releaseShared();
      throw e;
    }
  }

  get length(): number { return this.len; }

  /** The Wasm runtime it runs on (shared with the sessions of the same thread count). */
  get runtime(): WasmRuntime { return this.rt; }

  truncate(length: number): void {
    checkTruncate(this.len, length);
    this.len = length;
  }

  async forward(ids: readonly number[], allLogits = false): Promise<Float32Array> {
    if (this.released) throw new UnsupportedError('forward() after release()', {}, 'create a new runner');
    const c = this.config, s = this.spec;
    checkForward(c, this.len, this.capacity, ids);
    const n = ids.length, D = c.hidden, V = c.vocab;
    const Np = tilesOf(matrixBlocks(s).head) * TILE_BLOCKS * 4;
    const out = new Float32Array((allLogits ? n : 1) * V);
    const buffer = this.rt.mem.memory.buffer;
    const x = new Float32Array(buffer, this.buf.x, s.tmax * D);
    const ctl = new Int32Array(buffer, this.buf.ctl, (phaseCount(s) * PHASE_BYTES) / 4);
    const embed = this.w.embed;
    let p0 = this.len;
    for (let c0 = 0; c0 < n; c0 += s.tmax) {
      const T = Math.min(s.tmax, n - c0);
      const rows = allLogits ? T : c0 + T === n ? 1 : 0;
      for (let t = 0; t < T; t++) x.set(embed.subarray(ids[c0 + t] * D, (ids[c0 + t] + 1) * D), t * D);
      ctl.fill(0);
      this.rt.launch(this.kernel, [this.buf.tab, T, p0, rows, CAN_WAIT ? 1 : 0], this.rt.threads);
      if (rows) {
        const logits = new Float32Array(buffer, this.buf.logits, rows * Np);
        for (let r = 0; r < rows; r++) out.set(logits.subarray(r * Np, r * Np + V), (allLogits ? c0 + r : 0) * V);
      }
      p0 += T;
    }
    this.len = p0;
    return out;
  }

  /**
   * How the threads waited for each other in the last launch: spins and sleeps summed over its phases and
   * participants (sleeps of up to 0.2 ms each mean a thread waited for another that was not running).
   */
  waitStats(): { spins: number; sleeps: number; phases: number } {
    const ctl = new Int32Array(this.rt.mem.memory.buffer, this.buf.ctl, (phaseCount(this.spec) * PHASE_BYTES) / 4);
    let spins = 0, sleeps = 0, phases = 0;
    for (let p = 0; p < phaseCount(this.spec); p++) {
      const b = (p * PHASE_BYTES) / 4;
      if (ctl[b] === 0) continue;
      phases++;
      for (let t = 0; t < WAIT_SLOTS; t++) { spins += ctl[b + 24 + 2 * t]; sleeps += ctl[b + 25 + 2 * t]; }
    }
    return { spins, sleeps, phases };
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    for (const p of this.ptrs) this.rt.mem.release(p);
    this.rt.releaseShared();
  }
}

/** Per position and pair of rotary dims (i, i+1): C = [cos_i, cos_i+1, cos_i, cos_i+1], S = [-sin_i, -sin_i+1, sin_i, sin_i+1]. */
function ropeTable(c: LlamaConfig, capacity: number): Float32Array {
  const half = c.headDim / 2, bph = c.headDim / 4;
  const { cos, sin } = ropeTables(c, capacity);
  const t = new Float32Array(capacity * bph * 8);
  for (let p = 0; p < capacity; p++) {
    for (let b = 0; b < bph; b++) {
      const i = 2 * b, o = (p * bph + b) * 8, r = p * half + i;
      t.set([cos[r], cos[r + 1], cos[r], cos[r + 1], -sin[r], -sin[r + 1], sin[r], sin[r + 1]], o);
    }
  }
  return t;
}

registerLlmBackend('wasm', (w, o) => {
  if (o.kvCache === 'f16') throw new UnsupportedError('an f16 KV cache on wasm: the Wasm runtime keeps its cache in f32', {}, "leave kvCache out (--kv-cache f32), or use backend 'webgpu'");
  if (o.prefill === 'f16') throw new UnsupportedError('an f16 prefill on wasm: the Wasm runtime multiplies in f32', {}, "leave prefill out (--prefill f32), or use backend 'webgpu'");
  return WasmLlm.create(w, { capacity: o.capacity, threads: o.threads, activations: o.activations });
});
