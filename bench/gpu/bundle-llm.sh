#!/usr/bin/env bash
# A slim bundle for the LLM benchmarks on the GPU machine (bench/gpu/run-llm.sh): the webjit CLI without TensorFlow.js
# and onnxruntime-web's WebGPU build, in .bundle-llm/ (git-ignored; unpacked there by bench/gpu/unpack-llm.sh). The tree sent there (checkout with the trained
# pair, ~30 MiB, + .carry ~26 MiB + this ~6 MiB) must stay under 64 MiB.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
rm -rf .bundle-llm && mkdir -p .bundle-llm/ort
npx esbuild bench/gpu/webjit-cli.ts --bundle --platform=node --format=esm --target=node20 --external:webgpu --external:onnxruntime-node \
  --external:onnxruntime-web '--external:@tensorflow/*' --outfile=.bundle-llm/webjit.mjs --log-level=warning \
  --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);"
for b in llm-decode llm-shapes dispatch-cost tc-split tc-timing-probe models tune gemv-lab llm-int8-check llm-variants llm-stream layout-lab tlb-lab; do
  npx esbuild bench/gpu/$b.ts --bundle --platform=node --format=esm --target=node20 --external:webgpu --outfile=.bundle-llm/$b.mjs --log-level=warning \
    --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);"
done
# The large bundles travel compressed (bench/gpu/unpack-llm.sh unpacks them there).
for f in .bundle-llm/*.mjs; do [ "$(stat -c %s "$f")" -gt 500000 ] && xz -T2 -6 "$f"; done
echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src bench scripts || echo +dirty)" > .bundle-llm/commit
d=node_modules/onnxruntime-web/dist
cp "$d/ort.webgpu.mjs" "$d/ort-wasm-simd-threaded.asyncify.mjs" .bundle-llm/ort/
xz -T2 -9 -c "$d/ort-wasm-simd-threaded.asyncify.wasm" > .bundle-llm/ort/ort-wasm-simd-threaded.asyncify.wasm.xz
dawn=.carry/webgpu/dist/linux-x64/dawn.node
if [ -f "$dawn" ]; then xz -T2 -6 -c "$dawn" > "$dawn.xz" && rm "$dawn"; fi
du -sh .bundle-llm .carry
echo "tracked: $(git ls-files -z | xargs -0 du -bc | tail -1 | cut -f1) bytes"
