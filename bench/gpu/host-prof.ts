// Where the host's time goes in warm BERT-base runs on the GPU: a V8 CPU profile of the main thread over steady-state
// runs only (started after the warm-up, through the inspector), summarised by self time per function, ms per run.
// Usage (GPU machine): node host-prof.mjs model.onnx [batch] [seq] [precision f32|high|f16] [runs]
import fs from 'node:fs';
import { Session } from 'node:inspector/promises';
import { InferenceSession, Tensor } from '../../src/index.js';

const [path, bArg, sArg, prec = 'f16', runsArg] = process.argv.slice(2);
const B = Number(bArg ?? 8), S = Number(sArg ?? 128), runs = Number(runsArg ?? 200);
const s = await InferenceSession.create(new Uint8Array(fs.readFileSync(path)), {
  backend: 'webgpu', precision: prec === 'f16' ? 'f16' : 'f32', matmulPrecision: prec === 'high' ? 'high' : 'highest',
});
const n = B * S;
const feeds = {
  input_ids: new Tensor('int64', BigInt64Array.from({ length: n }, (_, i) => BigInt((i * 7919 + 13) % Number(process.env.VOCAB ?? 30000))), [B, S]),
  attention_mask: new Tensor('int64', BigInt64Array.from({ length: n }, (_, i) => (i % S < S - 3 ? 1n : 0n)), [B, S]),
  token_type_ids: new Tensor('int64', new BigInt64Array(n), [B, S]),
};
for (let i = 0; i < 30; i++) await s.run(feeds);
const ins = new Session();
ins.connect();
await ins.post('Profiler.enable');
await ins.post('Profiler.setSamplingInterval', { interval: 50 });
await ins.post('Profiler.start');
const t0 = performance.now();
for (let i = 0; i < runs; i++) await s.run(feeds);
const wall = (performance.now() - t0) / runs;
const { profile } = (await ins.post('Profiler.stop')) as { profile: { nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }[]; samples: number[]; timeDeltas: number[] } };
const byId = new Map(profile.nodes.map((x) => [x.id, x]));
const self = new Map<string, number>();
profile.samples.forEach((id, i) => {
  const c = byId.get(id)!.callFrame;
  const k = `${c.functionName || '(anon)'} ${c.url.split('/').pop()}:${c.lineNumber + 1}`;
  self.set(k, (self.get(k) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1e3);
});
console.log(`${path.split('/').pop()} b${B} s${S} ${prec}: ${wall.toFixed(3)} ms per warm run over ${runs} runs; main thread self time, ms per run:`);
for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log(`  ${(v / runs).toFixed(3).padStart(7)}  ${k}`);
await s.release();
