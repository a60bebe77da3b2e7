#!/usr/bin/env bash
# LLM decode on the GPU machine: webjit's WebGPU LLM runtime against onnxruntime-web WebGPU on the same weights, on the
# trained pair (test/fixtures/lm) and on larger random-weight Llamas. Prepare here: ../shared/gpu/prepare-carry.sh &&
# bash bench/gpu/bundle-llm.sh; run there with carry [".carry", ".bundle-llm"]: bash bench/gpu/run-llm.sh [what].
set -u
source bench/gpu/unpack-llm.sh
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/device.txt"
export WEBJIT_ORT_WEB_DIR=/tmp/ort WEBJIT_COMMIT=$(cat .bundle-llm/commit)
cli() { $NODE .bundle-llm/webjit.mjs "$@"; }
# The runtime alone: decode tokens/s and GB/s against the roofline on a 1.1B-shaped q4 model, and the GEMV kernel.
[ "${DECODE:-1}" = 1 ] && LLM_SWEEP=${LLM_SWEEP:-0} $NODE .bundle-llm/llm-decode.mjs > "$OUT/llm-decode.txt" 2>&1
F=test/fixtures/lm
ROUNDS=${ROUNDS:-3}
for spec in ${MODELS:-trained random:hidden=2048,layers=16,heads=16,intermediate=5632,vocab=32000}; do
  name=$(echo "$spec" | tr ':=,' '___')
  if [ "$spec" = trained ]; then
    cli bench-llm $F/target.q4.safetensors --backend webgpu --quant q4 --draft $F/draft.q4.safetensors --rounds "$ROUNDS" --tokens 128 \
      --prompt "$F/valid-sample.txt" --tokenizer $F/tokenizer.json --json "$OUT/llm-trained.json" > "$OUT/llm-trained.txt" 2> "$OUT/llm-trained.err"
  else
    cli bench-llm "$spec" --backend webgpu --quant q4 --rounds "$ROUNDS" --tokens 64 --json "$OUT/llm-$name.json" > "$OUT/llm-$name.txt" 2> "$OUT/llm-$name.err"
  fi
done
for f in "$OUT"/*.err; do grep -v "^Warning\|W:onnxruntime\|round [0-9]" "$f" | tail -20 > "$f.tail"; rm "$f"; done
