// WebGPU conv ops (being written).
export {};
