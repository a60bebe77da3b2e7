// Reference kernels: cast family (being written).
