// Reference kernels: rnn family (being written).
