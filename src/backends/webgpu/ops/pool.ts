// WebGPU pool ops (being written).
export {};
