// Reference kernels: random family (being written).
