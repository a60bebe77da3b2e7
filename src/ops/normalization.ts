// Reference kernels: normalization family (being written).
