#!/usr/bin/env bash
# Bundles the on-demand fuzzer (test/fuzz/main.ts and its worker) and its seed models into .bundle/fuzz/ (git-ignored),
# for a machine with many cores and no checkout of node_modules: the GPU machine, through the device tool.
#   ../shared/gpu/prepare-carry.sh && bash bench/fuzz-bundle.sh
#   run with carry [".carry", ".bundle"]:  source .carry/on-device.sh; bash bench/fuzz-device.sh 500000 0
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
out=.bundle/fuzz
rm -rf "$out" && mkdir -p "$out/corpus"
for e in main worker; do
  npx esbuild "test/fuzz/$e.ts" --bundle --platform=node --format=esm --target=node20 --external:webgpu --external:onnxruntime-node \
    --banner:js="import { createRequire as __webjitRequire } from 'node:module'; const require = __webjitRequire(import.meta.url);" \
    --outfile="$out/$e.js" --log-level=warning
done
echo '{"type":"module"}' > "$out/package.json"
# The seed models, numbered in fuzzCorpus() order so that case numbers mean the same mutants as here.
npm run -s build >/dev/null
node -e "
import('./dist/test/fuzz/harness.js').then(({ fuzzCorpus }) => {
  const fs = require('fs'), path = require('path');
  fuzzCorpus().forEach((f, i) => fs.copyFileSync(f, path.join('$out/corpus', String(i).padStart(3, '0') + '-' + path.basename(path.dirname(f)) + '-' + path.basename(f))));
});"
du -sh "$out"
