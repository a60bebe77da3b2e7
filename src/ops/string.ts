// Reference kernels: string family (being written).
