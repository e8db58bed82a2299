"""Tessera's GEMM kernels for Hopper (and any CUDA GPU, and the CPU interpreter).

- :func:`matmul`: bf16/fp16 GEMM with fused bias / activation / residual epilogue.
- :func:`supports`: whether :func:`matmul` takes these arguments (else fall back to torch).
- :func:`scaled_matmul`, :func:`quantize_fp8`: fp8 GEMM with per-tensor / per-row / per-column scales.
- :func:`wo_matmul`: weight-only quantized GEMM (fp6 / fp4 weights from :mod:`tessera.quant`).

Example:
    >>> import torch
    >>> from tessera.kernels.matmul import supports
    >>> supports(torch.ones(2, 3), torch.ones(4, 5))
    False
"""
from .api import matmul, supports
from .fp8 import quantize_fp8, scaled_matmul
from .wo import wo_matmul

__all__ = ["matmul", "supports", "scaled_matmul", "quantize_fp8", "wo_matmul"]
