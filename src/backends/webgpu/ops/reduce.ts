// WebGPU reduce ops (being written).
export {};
