// Reference kernels: reduce family (being written).
