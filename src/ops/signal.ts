// Reference kernels: signal family (being written).
