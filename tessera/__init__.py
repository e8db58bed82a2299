"""Tessera: typed tensors with symbolic shapes, eager and compiled functions, autodiff, Triton kernels.

Example:
    >>> import tessera as ts
    >>> @ts.function
    ... def f(x: ts.Tensor["B", "D", ts.f32]) -> ts.Tensor["B", ts.f32]:
    ...     return (x * x).sum(dim=-1)
    >>> with ts.device("cpu"):
    ...     ts.jit(f)(ts.ones(2, 3)).tolist()
    [3.0, 3.0]
"""
from . import dtypes, interop
from .core.autodiff import grad, value_and_grad
from .core.device import Device, device
from .core.primitive import use_kernels
from .core.tensor import Tensor
from .dtypes import (ALL_DTYPES, DType, accum, bf16, bool_, f16, f32, f64, fp4_e2m1, fp6_e2m3, fp6_e3m2, fp8_e4m3,
                     fp8_e5m2, int8, int16, int32, int64, promote_types, uint8)
from .errors import (TesseraAnnotationError, TesseraAutodiffError, TesseraCacheError, TesseraCompileError,
                     TesseraDeviceError, TesseraDTypeError, TesseraError, TesseraShapeError, TesseraTraceError,
                     TesseraTypeError, TesseraValueError)
from .function import Function, function
from .ops.api import (abs, add, arange, argmax, argmin, cat, cos, div, empty, empty_like, erf, exp, full, full_like,
                      log, manual_seed, matmul, max, maximum, mean, min, minimum, mul, ones, ones_like, permute, pow,
                      rand, randint, randn, reshape, rsqrt, sigmoid, sin, split, sqrt, stack, sub, sum, take, tanh,
                      tensor, transpose, where, zeros, zeros_like)
from .ops.fp8_ops import quantize_fp8
from .types.annotations import Dict
from . import memory, nn, optim, tile  # noqa: E402
from .tile import Tile, kernel  # noqa: E402
from .compiler.jit import jit  # noqa: E402
from .interop import from_dlpack  # noqa: E402

float64, float32, float16, bfloat16 = f64, f32, f16, bf16


def _register_kernels() -> None:
    import os

    import torch

    if torch.cuda.is_available() and os.environ.get("TESSERA_KERNELS", "1") != "0":
        from .kernels import lowerings  # noqa: F401  (registers the CUDA lowerings)


_register_kernels()
__version__ = "0.1.0"
