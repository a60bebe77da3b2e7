// Reference kernels: control family (being written).
