// Reference kernels: sequence family (being written).
