// The LLM backends by name. A module of its own so that backend modules can register themselves while index.ts
// imports them (index → backend → index would reach the map before it exists).
import { ReferenceLlm } from './reference.js';
import type { LlmRunner, LlmWeights } from './types.js';

export type LlmBackend = LlmRunner['backend'];

export interface LlmOptions {
  backend?: LlmBackend;
  /** KV cache positions (default and most: the model's max_position_embeddings). */
  capacity?: number;
  /** Wasm: threads including the calling one (default: all). */
  threads?: number;
  /**
   * 'int8' decodes 4-bit matrices with x rounded to 8 bits per group (W4A8): on WebGPU where the device has
   * dot4I8Packed (webgpu.ts), on Wasm where the engine has relaxed SIMD (wasm.ts); else the default, 'f32'.
   */
  activations?: 'f32' | 'int8';
  /**
   * The KV cache's element type (default 'f32'). 'f16' halves its memory and attention's reads: WebGPU (with
   * shader-f16) and the reference, which rounds keys and values to f16 as they are stored; Wasm refuses it.
   */
  kvCache?: 'f32' | 'f16';
  /**
   * The prefill GEMM's precision (default 'f32'). 'f16': on the tensor cores where the WebGPU device has subgroup
   * matrices (x and the dequantised weights rounded to f16, f32 sums; ~2.3× faster prompts at 7B shapes on the H100);
   * elsewhere on WebGPU the f32 GEMM runs. Wasm refuses it; the reference ignores it (f32).
   */
  prefill?: 'f32' | 'f16';
}

export type LlmFactory = (w: LlmWeights, o: LlmOptions) => Promise<LlmRunner>;

export const LLM_BACKENDS = new Map<LlmBackend, LlmFactory>([['reference', async (w, o) => new ReferenceLlm(w, o.capacity, o.kvCache)]]);

export function registerLlmBackend(name: LlmBackend, f: LlmFactory): void {
  LLM_BACKENDS.set(name, f);
}
