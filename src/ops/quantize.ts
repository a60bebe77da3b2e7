// Reference kernels: quantize family (being written).
