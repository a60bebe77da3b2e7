// Reference kernels: conv family (being written).
