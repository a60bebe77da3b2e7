// Reference kernels: elementwise family (being written).
