// Reference kernels: resize family (being written).
