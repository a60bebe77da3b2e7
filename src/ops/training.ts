// Reference kernels: training family (being written).
