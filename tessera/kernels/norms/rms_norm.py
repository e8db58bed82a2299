"""RMSNorm over the last dim: forward and backward.

Example:
    >>> import torch
    >>> from tessera.kernels.norms import rms_norm_fwd
    >>> y, rstd = rms_norm_fwd(torch.randn(8, 4096, device="cuda"))   # doctest: +SKIP
"""
from __future__ import annotations

from .launch import norm_bwd, norm_fwd


def rms_norm_fwd(x, weight=None, eps=1e-6):
    """``y = x * rsqrt(mean(x**2) + eps) * weight`` over the last dim; returns ``(y, rstd)``,
    ``rstd`` float32 with one value per row.

    Example:
        >>> y, rstd = rms_norm_fwd(x, w)   # doctest: +SKIP
    """
    y, _, _, rstd = norm_fwd("rms_norm_fwd", x, None, weight, None, eps, is_rms=True)
    return y, rstd


def rms_norm_bwd(dy, x, weight, rstd):
    """Gradients of :func:`rms_norm_fwd`: ``(dx, dweight or None)``.

    Example:
        >>> dx, dw = rms_norm_bwd(dy, x, w, rstd)   # doctest: +SKIP
    """
    dx, dw, _ = norm_bwd("rms_norm_bwd", dy, x, weight, None, None, rstd, is_rms=True)
    return dx, dw
