# Sourced on the GPU machine before anything in .bundle-llm runs: unpacks what bundle-llm.sh compressed (Dawn, the
# large bundles, onnxruntime-web's wasm into /tmp/ort) and sets $NODE (.carry/on-device.sh).
dawn=.carry/webgpu/dist/linux-x64/dawn.node
[ -f "$dawn.xz" ] && xz -dc "$dawn.xz" > "$dawn"
for f in .bundle-llm/*.mjs.xz; do [ -f "$f" ] && xz -dc "$f" > "${f%.xz}"; done
source .carry/on-device.sh >/dev/null 2>&1
mkdir -p /tmp/ort
cp .bundle-llm/ort/*.mjs /tmp/ort/
for f in .bundle-llm/ort/*.xz; do xz -dc "$f" > "/tmp/ort/$(basename "$f" .xz)"; done
