"""Norm kernels: layer_norm, rms_norm and their fused residual-add forms, forward and backward.

Example:
    >>> import torch
    >>> from tessera.kernels import norms
    >>> norms.supports("rms_norm_fwd", torch.randn(2, 3))   # a CPU tensor without the interpreter
    False
"""
from __future__ import annotations

from .._membound import FLOAT_DTYPES, interpreting
from .add_norm import add_layer_norm_bwd, add_layer_norm_fwd, add_rms_norm_bwd, add_rms_norm_fwd
from .layer_norm import layer_norm_bwd, layer_norm_fwd
from .rms_norm import rms_norm_bwd, rms_norm_fwd

OPS = ("layer_norm_fwd", "layer_norm_bwd", "rms_norm_fwd", "rms_norm_bwd", "add_layer_norm_fwd",
       "add_layer_norm_bwd", "add_rms_norm_fwd", "add_rms_norm_bwd")


def supports(name, *tensors) -> bool:
    """True when op ``name`` has a kernel here for these tensors (CUDA, or the interpreter; float dtypes;
    None entries, e.g. an absent weight, are ignored).

    Example:
        >>> supports("layer_norm_fwd", x, w)   # doctest: +SKIP
        True
    """
    if name not in OPS:
        return False
    ts = [t for t in tensors if t is not None]
    return all(getattr(t, "dtype", None) in FLOAT_DTYPES and (t.is_cuda or interpreting()) and t.numel() > 0
               for t in ts)


__all__ = list(OPS) + ["supports"]
