#!/usr/bin/env bash
# Runs a command with a WebGPU adapter for Dawn: the machine's own Vulkan driver when one is configured or an NVIDIA
# device exists, else Mesa's lavapipe (a software driver, for correctness only) from ../shared/gpu/software-vulkan.sh.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${VK_ICD_FILENAMES:-}${VK_DRIVER_FILES:-}" ] && ! ls /dev/nvidia0 >/dev/null 2>&1; then
  sv="$here/../shared/gpu/software-vulkan.sh"
  if [ -x "$sv" ] || [ -f "$sv" ]; then
    eval "$(bash "$sv")"
  else
    echo "with-gpu: no GPU driver and no $sv: WebGPU tests will fail for want of an adapter" >&2
  fi
fi
exec "$@"
