// WebGPU resize ops (being written).
export {};
