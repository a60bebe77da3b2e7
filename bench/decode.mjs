// Decoding cost of ONNX files: webjit's hand-written decoder vs protobufjs (via onnx-proto), one process each.
// Both end with every float initializer as a Float32Array (view when aligned, else one copy).
// Usage: node bench/decode.mjs MODEL... (needs `npm run build`; onnx-proto is resolved from ONNX_PROTO_DIR).
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';

const [mode, file] = process.argv.slice(2);
if (mode === 'webjit' || mode === 'protobufjs') {
  const bytes = new Uint8Array(fs.readFileSync(file));
  const before = process.memoryUsage();
  const t0 = performance.now();
  let tensors = 0;
  if (mode === 'webjit') {
    const { decodeModel } = await import('../dist/src/onnx/decode.js');
    const m = decodeModel(bytes);
    tensors = m.graph.initializers.size;
  } else {
    const require = createRequire(process.env.ONNX_PROTO_DIR + '/');
    const { onnx } = require('onnx-proto');
    const m = onnx.ModelProto.decode(bytes);
    // Same end state as webjit's decoder: every float initializer as a usable Float32Array
    // (a view where raw_data is 4-byte aligned, a copy otherwise).
    for (const t of m.graph.initializer) {
      const r = t.rawData;
      if (t.dataType === 1 && r && r.length) {
        const f = r.byteOffset % 4 === 0 ? new Float32Array(r.buffer, r.byteOffset, r.length / 4) : new Float32Array(r.slice().buffer);
        tensors += f.length > 0 ? 1 : 0;
      } else tensors++;
    }
  }
  const ms = performance.now() - t0;
  const after = process.memoryUsage();
  console.log(JSON.stringify({ ms, tensors, extraMiB: (after.rss - before.rss) / 1048576, heapMiB: (after.heapUsed - before.heapUsed) / 1048576 }));
} else {
  console.log('model                              size MiB | webjit ms | protobufjs ms | protobufjs/webjit');
  for (const f of process.argv.slice(2)) {
    const run = (m) => JSON.parse(execFileSync(process.execPath, ['--max-old-space-size=8192', new URL(import.meta.url).pathname, m, f], { encoding: 'utf8' }));
    const best = (m) => [run(m), run(m), run(m)].sort((a, b) => a.ms - b.ms)[0];
    const w = best('webjit'), p = best('protobufjs');
    console.log(`${f.split('/').pop().padEnd(34)} ${(fs.statSync(f).size / 1048576).toFixed(1).padStart(8)} | ${w.ms.toFixed(1).padStart(9)} | ${p.ms.toFixed(1).padStart(13)} | ${(p.ms / w.ms).toFixed(1)}x`);
  }
}
