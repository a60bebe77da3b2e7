// webjit's public API: sessions, tensors, typed errors, the PP-OCR text recognizer, and text generation.
export { InferenceSession, type SessionOptions, type BackendName, type Feeds, type Outputs } from './session.js';
export { sharedCache as tuningCache, saveCache as saveTuningCache, TuneCache, type TuneCacheJson, type TuneEntry } from './tune/cache.js';
export type { TuneReport, TuneRow, TuneProgress, TuneRunOptions } from './tune/tuner.js';
export { GpuTensor } from './backends/webgpu/gpu_tensor.js';
export { Tensor, TensorSequence, OptionalValue, type DType, type TensorData, type Value } from './tensor.js';
export {
  WebjitError, ModelFormatError, UnsupportedError, GraphError, InputError, ExecutionError, ResourceLimitError, DeviceLostError, TimeoutError,
} from './errors.js';
export { TextRecognizer, recInput, ctcDecode, parseDict, type RgbaImage, type Recognition } from './apps/ocr.js';
export type { Model, Graph, Node, ValueInfo, ValueType, Dim } from './graph/ir.js';
export {
  TextGenerator, Generation, type ChatPrompt, type GenerateOptions, type GeneratedToken, type GenerationStats, type SpeculativeStats, type SpeculationOptions, type CreateOptions,
} from './generate/generate.js';
export { ChatSession, type ChatSessionOptions } from './generate/chat.js';
export { LlmCausalLM, openCausalLM, type CausalLM, type GenerationModel } from './generate/causal_lm.js';
export { verifyDraftToken, residual } from './generate/speculative.js';
export { CausalDecoder, decoderLayout, type DecoderLayout } from './generate/decoder.js';
export { Sampler, tokenDistribution, argmax, type SamplingOptions, type TokenDistribution } from './generate/sampler.js';
export { TextTokenizer, TextStreamer, type ChatMessage, type ChatTemplateOptions } from './generate/tokenizer.js';
// webjit's LLM runtime (Llama architecture): weights from a Hugging Face folder or webjit's quantized format, runners on
// reference / wasm / webgpu, the quantizer, held-out perplexity, and the same weights as an ONNX decoder for onnxruntime.
export {
  loadLlm, decodeLlm, encodeLlm, isWebjitLlm, createLlm, activationsOf, int8Unavailable, quantizeRtn, dequantizeLlm, perplexity,
  type LlmWeights, type LlamaConfig, type LlmRunner, type LlmOptions, type LlmBackend, type ActivationsFallback,
} from './llm/index.js';
export { exportOnnx as exportLlmOnnx } from './llm/onnx_export.js';
/** The seeded generator webjit's CLI, benchmarks and tests make random inputs with (apps can reproduce them). */
export { mulberry32 } from './util/random.js';
