// Registers the Wasm backend's ops (each module calls registerWasmOp at import).
import './matmul.js';
import './conv.js';
import './attention.js';
import './pool.js';
import './elementwise.js';
import './reduce.js';
import './rnn.js';
import './data.js';
import './fused_matmul.js';
import './conv_transpose.js';
