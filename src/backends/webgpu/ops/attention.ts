// WebGPU attention ops (being written).
export {};
