// What preparing one weight for the tensor-core GEMM costs a session, at BERT-base's shapes: splitB in JS (how
// sessions split before session 12) against the exponent scan plus the split derived on the GPU (deriveConstant:
// the host's part, then until the GPU is done), for 'high' (3) and 'f16' (1). Medians of 7 after a warm-up; the
// GPU figure means nothing on a software driver. Usage: node split-cost.mjs (bundled) or tsx bench/gpu/split-cost.ts
import { acquireGpu } from '../../src/backends/webgpu/device.js';
import { deriveConstant } from '../../src/backends/webgpu/derive.js';
import { splitOnGpu } from '../../src/backends/webgpu/ops/matmul.js';
import { splitB, splitExponent } from '../../src/codegen/wgsl/matmul_tc.js';

const { device, caps } = await acquireGpu();
console.log(`adapter: ${caps.name}${caps.software ? ' (software: GPU times are not the GPU\'s)' : ''}`);
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const time = async (f: () => unknown, reps = 7): Promise<number> => {
  await f();
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) { const t0 = performance.now(); await f(); ts.push(performance.now() - t0); }
  return med(ts);
};
console.log('K×N        passes  splitB ms  ns/weight   exponent ms  ns/weight   GPU split: host ms  to done ms');
for (const [K, N] of [[768, 768], [768, 3072], [3072, 768]]) {
  const b = Float32Array.from({ length: K * N }, () => (Math.random() - 0.5) * 0.2);
  for (const passes of [3, 1] as const) {
    const exp = splitExponent(b, passes)!;
    const js = await time(() => splitB(b, K, N, passes, exp), 5);
    const scan = await time(() => splitExponent(b, passes));
    const host: number[] = [];
    const done = await time(async () => {
      const t0 = performance.now();
      const out = deriveConstant(device, splitOnGpu(b, K, N, passes, exp, caps.maxWorkgroupsPerDim));
      host.push(performance.now() - t0);
      await device.queue.onSubmittedWorkDone();
      out.destroy();
    });
    const submitted = med(host.slice(1));
    const ns = (ms: number) => ((ms * 1e6) / (K * N)).toFixed(2).padStart(9);
    console.log(`${`${K}×${N}`.padEnd(10)} ${String(passes).padStart(6)}  ${js.toFixed(1).padStart(9)} ${ns(js)}   ${scan.toFixed(2).padStart(11)} ${ns(scan)}   ${submitted.toFixed(2).padStart(18)}  ${done.toFixed(2).padStart(10)}`);
  }
}
