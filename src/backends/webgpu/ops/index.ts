// Registers the WebGPU backend's ops (each module calls registerGpuOp at import).
import './elementwise.js';
import './matmul.js';
import './conv.js';
import './pool.js';
import './resize.js';
import './reduce.js';
import './attention.js';
import './data.js';
