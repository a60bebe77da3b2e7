// The decoder-LLM runtimes behind one factory: 'reference' (TypeScript, anywhere), 'wasm' and 'webgpu' (generated
// kernels; each registers itself from its own module).
import { UnsupportedError } from '../errors.js';
import { LLM_BACKENDS, type LlmOptions } from './registry.js';
import type { ActivationsFallback, LlmRunner, LlmWeights } from './types.js';
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

/**
 * Why int8 activations asked for run as f32 on this runner, or null when they run: the runner's own reason (it knows
 * what its engine, device and kernels took), else its backend's having none.
 */
export function int8Unavailable(asked: 'f32' | 'int8' | undefined, r: LlmRunner): ActivationsFallback | null {
  if (asked !== 'int8' || activationsOf(r) === 'int8') return null;
  return (r as { int8Fallback?: ActivationsFallback | null }).int8Fallback
    ?? { message: `int8 activations: the ${r.backend} backend computes in f32`, hint: 'use --backend wasm or webgpu' };
}

export * from './types.js';
export { loadLlm, decodeLlm, encodeLlm, isWebjitLlm } from './model_io.js';
export { quantizeRtn, quantizeMatrix, dequantizeLlm, quantBits } from './quantize.js';
export { perplexity } from './perplexity.js';
export { ReferenceLlm } from './reference.js';
export { WasmLlm } from './wasm.js';
export { WebGpuLlm } from './webgpu.js';
