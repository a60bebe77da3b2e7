#!/usr/bin/env bash
# The GPU suite in one go on the GPU machine (no Node, no network there): unpacks what .carry and .bundle bring,
# runs the cuBLAS and PyTorch references, the matmul sweep and the model bench, and leaves the reports in $OUT.
# Prepare here: ../shared/gpu/prepare-carry.sh && bash bench/gpu/bundle.sh; then run with carry [".carry", ".bundle"].
set -u
dawn=.carry/webgpu/dist/linux-x64/dawn.node
[ -f "$dawn.xz" ] && xz -dc "$dawn.xz" > "$dawn"
source .carry/on-device.sh >/dev/null 2>&1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/ort /tmp/m
cp .bundle/ort/*.mjs /tmp/ort/
for f in .bundle/ort/*.xz; do xz -dc "$f" > "/tmp/ort/$(basename "$f" .xz)"; done
what=${1:-all}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/device.txt"
if [ "$what" = suite ]; then
  # webjit bench --suite gpu: the op and model suites against onnxruntime-web WebGPU, TensorFlow.js WebGPU, onnxruntime's
  # native CPU build (Python's; also the oracle) and PyTorch CUDA; base-size models made here with PyTorch.
  python3 scripts/make_fixtures.py /tmp/m --size base > "$OUT/make_fixtures.txt" 2>&1
  WEBJIT_ROOT=$PWD WEBJIT_OCR_MODELS=.bundle WEBJIT_VAD_MODELS=.bundle WEBJIT_BENCH_MODELS=/tmp/m WEBJIT_ORT_WEB_DIR=/tmp/ort \
    WEBJIT_COMMIT=$(cat .bundle/commit) WEBJIT_PEER_PY=bench/peer.py WEBJIT_PYTHON=$(command -v python3) $NODE .bundle/webjit.mjs bench --suite gpu --rounds "${ROUNDS:-3}" ${2:+--only $2} \
    --json "$OUT/gpu-suite${2:+-$2}.json" --html "$OUT/gpu-suite${2:+-$2}.html" > "$OUT/gpu-suite${2:+-$2}.txt" 2> /tmp/suite.err
  grep -v "^Warning\|round [0-9]*/\|^W:onnxruntime" /tmp/suite.err | tail -30 > "$OUT/gpu-suite-stderr.txt"
fi
if [ "$what" = all ] || [ "$what" = matmul ]; then
  python3 bench/gpu/torch_matmul.py > "$OUT/torch_matmul.txt" 2>&1
  $NODE .bundle/matmul-sweep.mjs > "$OUT/sweep.txt" 2>&1
fi
if [ "$what" = all ] || [ "$what" = models ]; then
  python3 bench/gpu/torch_bert.py /tmp/m > "$OUT/torch_bert.txt" 2>&1
  $NODE .bundle/models.mjs /tmp/ort bert:/tmp/m/encoder-base.onnx:1:128 bert:/tmp/m/encoder-base.onnx:8:128 ocr:.bundle/ch_PP-OCRv4_rec_infer.onnx:320 2>&1 | grep -v "W:onnxruntime\|^Warning" > "$OUT/models.txt"
fi
if [ "$what" = all ] || [ "$what" = tune ] || [ "$what" = tc+tune ]; then
  [ -f /tmp/m/encoder-base.onnx ] || python3 bench/gpu/torch_bert.py /tmp/m > "$OUT/torch_bert.txt" 2>&1
  for b in 1 8; do WEBJIT_TUNE_CACHE=/tmp/tune.json RUNS=50 $NODE .bundle/tune.mjs webgpu /tmp/m/encoder-base.onnx $b 128 ${TUNE_BUDGET:-10000}; done > "$OUT/tune.txt" 2>&1
  cp /tmp/tune.json "$OUT/tuning-cache.json" 2>/dev/null
fi
if [ "$what" = ar ]; then
  python3 bench/gpu/torch_matmul.py > "$OUT/torch_matmul.txt" 2>&1
  $NODE .bundle/matmul-sweep.mjs ar > "$OUT/sweep-ar.txt" 2>&1
fi
if [ "$what" = tc ] || [ "$what" = tc+tune ]; then
  python3 bench/gpu/torch_matmul.py > "$OUT/torch_matmul.txt" 2>&1
  $NODE .bundle/matmul-sweep.mjs tc ${2:-} > "$OUT/tc.txt" 2>&1
  python3 bench/gpu/torch_matmul.py > "$OUT/torch_matmul_after.txt" 2>&1
fi
if [ "$what" = llm ]; then
  # The WebGPU LLM runtime: decode tokens/s and GB/s of a random 1.1B-shaped q4 Llama, the GEMV kernel alone with a
  # shape sweep, and the PyTorch peers (copy bandwidth, cuBLAS f16 GEMV, int4 tinygemm) of the same shapes.
  python3 bench/gpu/torch_gemv.py > "$OUT/torch_gemv.txt" 2>&1
  $NODE .bundle/llm-decode.mjs > "$OUT/llm.txt" 2>&1
fi
if [ "$what" = tcsplit ]; then
  # f32 GEMMs on the tensor cores (matmulPrecision 'high') against the f32 kernel, then BERT-base in three precisions.
  $NODE .bundle/tc-split.mjs > "$OUT/tc-split.txt" 2>&1
  python3 bench/gpu/torch_bert.py /tmp/m > "$OUT/torch_bert.txt" 2>&1
  WEBJIT_VARIANTS=f32,high,f16 RUNS=50 $NODE .bundle/models.mjs /tmp/ort bert:/tmp/m/encoder-base.onnx:1:128 bert:/tmp/m/encoder-base.onnx:8:128 2>&1 | grep "^BERT" > "$OUT/models.txt"
fi
if [ "$what" = tcbert ]; then
  # Tensor-core GEMMs at BERT-base's shapes: A split while staged against A split first into halves in memory.
  $NODE .bundle/tc-bert-lab.mjs 2>&1 | grep -v -E "^\s+(let|\^|subgroupMatrix)|^$|warning|Compilation log|^Warning" > "$OUT/tc-bert-lab.txt"
fi
if [ "$what" = transfer ]; then
  $NODE .bundle/transfer.mjs > "$OUT/transfer.txt" 2>&1
fi
if [ "$what" = shapes ]; then
  $NODE .bundle/matmul-sweep.mjs shapes > "$OUT/shapes.txt" 2>&1
fi
if [ "$what" = f16 ]; then
  python3 bench/gpu/torch_bert.py /tmp/m > "$OUT/torch_bert.txt" 2>&1
  for p in f32 f16; do
    WEBJIT_ONLY=1 WEBJIT_PRECISION=$p RUNS=100 $NODE .bundle/models.mjs /tmp/ort bert:/tmp/m/encoder-base.onnx:1:128 bert:/tmp/m/encoder-base.onnx:8:128 ocr:.bundle/ch_PP-OCRv4_rec_infer.onnx:320 2>&1 | grep -v "^Warning"
  done > "$OUT/f16.txt"
fi
if [ "$what" = cpuprof ]; then
  python3 bench/gpu/torch_bert.py /tmp/m > "$OUT/torch_bert.txt" 2>&1
  rm -rf /tmp/prof && WEBJIT_ONLY=1 RUNS=300 $NODE --cpu-prof --cpu-prof-dir=/tmp/prof .bundle/models.mjs /tmp/ort bert:/tmp/m/encoder-base.onnx:1:128 > "$OUT/cpuprof-run.txt" 2>&1
  $NODE bench/gpu/cpuprof-summary.mjs /tmp/prof 300 > "$OUT/cpuprof.txt" 2>&1
fi
if [ "$what" = profile ]; then
  python3 bench/gpu/torch_bert.py /tmp/m > "$OUT/torch_bert.txt" 2>&1
  WEBJIT_ONLY=1 WEBJIT_PROFILE=1 $NODE .bundle/models.mjs /tmp/ort bert:/tmp/m/encoder-base.onnx:${2:-1}:128 2>&1 | grep -v "^Warning" > "$OUT/profile.txt"
  WEBJIT_ONLY=1 WEBJIT_PROFILE=1 $NODE .bundle/models.mjs /tmp/ort ocr:.bundle/ch_PP-OCRv4_rec_infer.onnx:320 2>&1 | grep -v "^Warning" > "$OUT/profile-ocr.txt"
fi
for f in "$OUT"/*.txt; do echo "== $f"; grep -v "^Warning" "$f" | sort -t' ' -k1,1 -s | tail -40; done
