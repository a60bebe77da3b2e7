// Reference kernels: indexing family (being written).
