// The decoder-LLM runtimes behind one factory: 'reference' (TypeScript, anywhere), 'wasm' and 'webgpu' (generated
// kernels; each registers itself from its own module).
import { UnsupportedError } from '../errors.js';
import { LLM_BACKENDS, type LlmOptions } from './registry.js';
import { LAYER_MATRICES, type LlmRunner, type LlmWeights } from './types.js';
import './wasm.js';
import './webgpu.js';

export { registerLlmBackend, type LlmBackend, type LlmOptions, type LlmFactory } from './registry.js';

/** A runner of the weights on a backend (default wasm). */
export async function createLlm(w: LlmWeights, o: LlmOptions = {}): Promise<LlmRunner> {
  const backend = o.backend ?? 'wasm';
  const f = LLM_BACKENDS.get(backend);
  if (!f) throw new UnsupportedError(`the LLM runtime has no '${backend}' backend (it has ${[...LLM_BACKENDS.keys()].join(', ')})`, {}, 'use --backend reference');
  if (o.capacity !== undefined && (!Number.isInteger(o.capacity) || o.capacity < 1 || o.capacity > w.config.maxPositions)) {
    throw new UnsupportedError(`a KV cache of ${o.capacity} positions: the model was trained for ${w.config.maxPositions}`, {}, `give a capacity between 1 and ${w.config.maxPositions}`);
  }
  return f(w, o);
}

/** The activations a runner decodes with: 'int8' where they were asked for and its backend can, else 'f32'. */
export function activationsOf(r: LlmRunner): 'f32' | 'int8' {
  return (r as { activations?: 'f32' | 'int8' }).activations ?? 'f32';
}

/** Why int8 activations asked for run as f32 on this runner of w (message and what to do), or null when they run. */
export function int8Unavailable(asked: 'f32' | 'int8' | undefined, r: LlmRunner, w: LlmWeights): { message: string; hint: string } | null {
  if (asked !== 'int8' || activationsOf(r) === 'int8') return null;
  const b = r.backend;
  const q4 = [...w.layers.flatMap((L) => LAYER_MATRICES.map((m) => L[m])), w.lmHead].some((m) => m.kind === 'q' && m.bits === 4);
  if ((b === 'wasm' || b === 'webgpu') && !q4) {
    return { message: `int8 activations on ${b}: they apply to 4-bit matrices and this model has none`, hint: 'quantize it to 4 bits (--quant q4), or leave --activations out' };
  }
  return b === 'wasm'
    ? { message: 'int8 activations on wasm: this engine has no relaxed SIMD', hint: 'run node with --experimental-wasm-relaxed-simd (Chrome has it by default), or leave --activations out' }
    : b === 'webgpu'
      ? { message: 'int8 activations on webgpu: this device has no dot4I8Packed', hint: 'leave --activations out' }
      : { message: `int8 activations: the ${b} backend computes in f32`, hint: 'use --backend wasm or webgpu' };
}

export * from './types.js';
export { loadLlm, decodeLlm, encodeLlm, isWebjitLlm } from './model_io.js';
export { quantizeRtn, quantizeMatrix, dequantizeLlm, quantBits } from './quantize.js';
export { perplexity } from './perplexity.js';
export { ReferenceLlm } from './reference.js';
export { WasmLlm } from './wasm.js';
export { WebGpuLlm } from './webgpu.js';
