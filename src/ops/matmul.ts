// Reference kernels: matmul family (being written).
