"""Hand-written Triton kernels. Each subpackage works on torch tensors and is imported
lazily; ``tessera.kernels.lowerings`` registers them as the CUDA lowerings of primitives."""
