// WebGPU matmul ops (being written).
export {};
