"""Plain-torch references of the norms (any device, any float dtype; compute in the input's dtype,
so pass float64 for a precise reference).

Example:
    >>> import torch
    >>> from tessera.kernels.norms.reference import rms_norm_ref
    >>> round(rms_norm_ref(torch.ones(2, 3, dtype=torch.float64))[0, 0].item(), 6)
    1.0
"""
from __future__ import annotations

import torch


def layer_norm_ref(x, weight=None, bias=None, eps=1e-5):
    """LayerNorm over the last dim."""
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    y = (x - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def rms_norm_ref(x, weight=None, eps=1e-6):
    """RMSNorm over the last dim."""
    y = x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)
    return y * weight if weight is not None else y


def add_layer_norm_ref(x, residual, weight=None, bias=None, eps=1e-5):
    """``(layer_norm(x + residual), x + residual)``."""
    s = x + residual
    return layer_norm_ref(s, weight, bias, eps), s


def add_rms_norm_ref(x, residual, weight=None, eps=1e-6):
    """``(rms_norm(x + residual), x + residual)``."""
    s = x + residual
    return rms_norm_ref(s, weight, eps), s
