// MatMul / Gemm (being written).
