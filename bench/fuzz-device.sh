#!/usr/bin/env bash
# Runs CASES fuzz cases from case FIRST on every core of the machine, with the bundle made by bench/fuzz-bundle.sh.
set -euo pipefail
cases=${1:-100000}; first=${2:-0}
export WEBJIT_FUZZ_CORPUS=.bundle/fuzz/corpus
node .bundle/fuzz/main.js --cases "$cases" --first "$first" --jobs "$(nproc)" --json "${OUT:-/tmp}/fuzz-$first.json"
