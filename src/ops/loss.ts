// Reference kernels: loss family (being written).
