"""LayerNorm over the last dim: forward and backward.

Example:
    >>> import torch
    >>> from tessera.kernels.norms import layer_norm_fwd, layer_norm_bwd
    >>> x = torch.randn(8, 4096, device="cuda", dtype=torch.bfloat16)   # doctest: +SKIP
    >>> y, mean, rstd = layer_norm_fwd(x, torch.ones(4096, device="cuda", dtype=torch.bfloat16))  # doctest: +SKIP
"""
from __future__ import annotations

from .launch import norm_bwd, norm_fwd


def layer_norm_fwd(x, weight=None, bias=None, eps=1e-5):
    """``y = (x - mean) * rstd * weight + bias`` over the last dim; returns ``(y, mean, rstd)``,
    ``mean``/``rstd`` float32 with one value per row (leading dims flattened).

    Example:
        >>> y, mean, rstd = layer_norm_fwd(x, w, b)   # doctest: +SKIP
    """
    y, _, mean, rstd = norm_fwd("layer_norm_fwd", x, None, weight, bias, eps, is_rms=False)
    return y, mean, rstd


def layer_norm_bwd(dy, x, weight, bias, mean, rstd):
    """Gradients of :func:`layer_norm_fwd`: ``(dx, dweight or None, dbias or None)``.
    ``dweight``/``dbias`` come from per-program partial sums reduced in a second kernel.

    Example:
        >>> dx, dw, db = layer_norm_bwd(dy, x, w, b, mean, rstd)   # doctest: +SKIP
    """
    return norm_bwd("layer_norm_bwd", dy, x, weight, bias, mean, rstd, is_rms=False)
