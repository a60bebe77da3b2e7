// Registers the Wasm backend's ops (each module calls registerWasmOp at import).
import './matmul.js';
