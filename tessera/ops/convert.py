"""Storage conversions, including the narrow float formats that torch cannot hold.

fp6/fp4 tensors are stored one code per byte (``uint8``); conversions go through
``ml_dtypes`` so that rounding is exact (round to nearest even, saturating formats).

Example:
    >>> import torch, tessera as ts
    >>> from tessera.ops.convert import convert_storage
    >>> codes = convert_storage(torch.tensor([0.5, 1.0, 6.0]), ts.fp4_e2m1)
    >>> convert_storage(codes, ts.f32, source=ts.fp4_e2m1).tolist()
    [0.5, 1.0, 6.0]
"""
from __future__ import annotations

import numpy as np
import torch

from .. import dtypes as dt


def codes_to_numpy(codes: np.ndarray, dtype: dt.DType) -> np.ndarray:
    """uint8 codes of a storage-only format viewed as its ml_dtypes array."""
    return codes.astype(np.uint8).view(dtype.numpy_dtype)


def convert_storage(x: torch.Tensor, dtype: dt.DType, source: dt.DType = None) -> torch.Tensor:
    """Convert torch storage ``x`` (of ``source``, default its own torch dtype) to ``dtype``'s storage."""
    if source is not None and source.torch_dtype is None:
        values = torch.from_numpy(codes_to_numpy(x.cpu().numpy(), source).astype(np.float32)).to(x.device)
        return values if dtype is dt.f32 else convert_storage(values, dtype)
    if dtype.torch_dtype is not None:
        return x.to(dtype.torch_dtype)
    arr = x.detach().to(torch.float32).cpu().numpy().astype(dtype.numpy_dtype)
    return torch.from_numpy(arr.view(np.uint8).copy()).to(x.device)
