// Reference kernels: pool family (being written).
