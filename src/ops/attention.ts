// Reference kernels: attention family (being written).
