// WebGPU data ops (being written).
export {};
