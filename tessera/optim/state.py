"""Allocating optimizer state shaped like the parameters, and handing results back as the caller's tensor type.

Example:
    >>> import torch
    >>> make_like([torch.ones(2, dtype=torch.bfloat16)], torch.float32)[0].dtype
    torch.float32
"""
from __future__ import annotations

from typing import List, Optional

import torch

from ..errors import TesseraDTypeError

_LOW = (torch.bfloat16, torch.float16)


def make_like(ps: List[torch.Tensor], dtype: Optional[torch.dtype]) -> List[torch.Tensor]:
    """Zeros shaped like each parameter (contiguous), in ``dtype`` or the parameter's dtype."""
    out = []
    for i, p in enumerate(ps):
        if p is None or not p.is_floating_point():
            raise TesseraDTypeError(f"params leaf {i} must be a floating-point tensor, got "
                                    f"{None if p is None else p.dtype}")
        out.append(torch.zeros(p.shape, dtype=dtype or p.dtype, device=p.device))
    return out


def masters_for(ps: List[torch.Tensor], master_weights: bool):
    """fp32 copies of the bf16/fp16 parameters (None for the others), or None without master weights."""
    if not master_weights:
        return None
    return [p.detach().to(torch.float32, copy=True).contiguous() if p.dtype in _LOW else None for p in ps]


def rewrap(originals, results: List[torch.Tensor]):
    """Return results as ``ts.Tensor`` where the original leaf was one."""
    out = []
    for o, r in zip(originals, results):
        if isinstance(o, torch.Tensor) or o is None:
            out.append(r)
        else:
            from ..interop import from_torch

            out.append(from_torch(r))
    return out
