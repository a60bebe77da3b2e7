// `webjit quantize MODEL --bits 4|8 [--group 32|64|128] [--calib FILE] [--out FILE] [--onnx FILE]`: a Hugging Face
// Llama folder (or a webjit LLM file) to webjit's quantized format; round to nearest, or activation-aware with a
// calibration text. --onnx also writes the same weights as an ONNX decoder (MatMulNBits) for onnxruntime.
import fs from 'node:fs/promises';
import path from 'node:path';
import { InputError } from '../errors.js';
import { TextTokenizer } from '../generate/tokenizer.js';
import { quantizeAwq } from '../llm/awq.js';
import { decodeLlm, encodeLlm, loadLlm } from '../llm/model_io.js';
import { exportOnnx } from '../llm/onnx_export.js';
import { quantizeRtn } from '../llm/quantize.js';
import { bytesPerToken, denseBytesPerToken, type QBits } from '../llm/types.js';

export interface QuantizeArgs {
  bits: string;
  group: string;
  headBits?: string;
  calib?: string;
  calibTokens: string;
  tokenizer?: string;
  out?: string;
  onnx?: string;
  f32?: boolean;
}

const bitsOf = (s: string, what: string): QBits => {
  if (s !== '4' && s !== '8') throw new InputError(`${what} ${s}: webjit quantizes to 4 or 8 bits`, {}, `use ${what} 4 or ${what} 8`);
  return Number(s) as QBits;
};

export async function quantizeCommand(model: string, a: QuantizeArgs): Promise<number> {
  const bits = bitsOf(a.bits, '--bits');
  const group = Number(a.group);
  const headBits = a.headBits ? bitsOf(a.headBits, '--head-bits') : undefined;
  const t0 = performance.now();
  // Round to nearest quantizes a Hugging Face folder's matrices as they are read (the model is never whole in f32);
  // activation-aware quantization runs the f32 model over the calibration text, so it loads it whole.
  const folder = (await fs.stat(model).catch(() => null))?.isDirectory() ?? false;
  const streamed = folder && !a.calib;
  const w = await loadLlm(model, streamed ? { quantize: { bits, group, headBits } } : {});
  const before = streamed ? denseBytesPerToken(w.config) : bytesPerToken(w);
  let out;
  if (a.calib) {
    const tokPath = a.tokenizer ?? path.join(model, 'tokenizer.json');
    let tok: TextTokenizer;
    try { tok = await TextTokenizer.fromFile(tokPath); } catch (e) {
      throw new InputError(`--calib needs a tokenizer: ${tokPath}: ${(e as Error).message}`, {}, 'pass --tokenizer FILE (the model\'s tokenizer.json)');
    }
    const want = Number(a.calibTokens);
    const text = await fs.readFile(a.calib, 'utf8');
    const calib = tok.encode(text.slice(0, want * 16), { addSpecialTokens: false }).slice(0, want);
    if (calib.length < want) console.error(`calibration: the text gives ${calib.length} tokens (asked ${want})`);
    let last = 0;
    const { weights, report } = await quantizeAwq(w, {
      bits, group, headBits, calib,
      onProgress: (d, n, what) => { const now = performance.now(); if (now - last > 2000 || d === n) { last = now; console.error(`  ${what}: ${d}/${n}`); } },
    });
    const mean = (f: (s: typeof report.sites[number]) => number) => report.sites.filter((s) => Number.isFinite(f(s))).reduce((x, s, _, all) => x + f(s) / all.length, 0);
    console.error(`activation-aware: mean relative output error ${(100 * mean((s) => s.rtnError)).toFixed(3)}% (round to nearest) -> ${(100 * mean((s) => s.error)).toFixed(3)}% on ${calib.length} calibration tokens`);
    out = weights;
  } else {
    out = quantizeRtn(w, { bits, group, headBits });
  }
  const file = a.out ?? `${model.replace(/\/+$/, '')}.q${bits}.safetensors`;
  const bytes = encodeLlm(out, { f32: a.f32 });
  await fs.writeFile(file, bytes);
  const after = bytesPerToken(out);
  console.log(`${file}: ${out.quant}, ${(bytes.byteLength / 1e6).toFixed(2)} MB; weights read per token ${(before / 1e6).toFixed(1)} MB -> ${(after / 1e6).toFixed(1)} MB; ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  if (a.onnx) {
    // From the file as written (its 8-bit embedding included), so the twin runs exactly what webjit loads.
    const onnx = exportOnnx(decodeLlm(bytes, file));
    await fs.writeFile(a.onnx, onnx);
    console.log(`${a.onnx}: the same weights as an ONNX decoder with a KV cache (MatMulNBits), ${(onnx.byteLength / 1e6).toFixed(2)} MB`);
  }
  return 0;
}
