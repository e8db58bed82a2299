"""Residual add fused with a norm: ``s = x + residual`` (the new residual stream) and
``y = norm(s)`` in one pass. Their backward takes both upstream gradients, ``dy`` (of ``y``)
and ``ds`` (of ``s``, the residual path), and returns the one gradient that ``x`` and
``residual`` share, ``ds + norm_bwd(dy)``, again in one pass.

Example:
    >>> from tessera.kernels.norms import add_rms_norm_fwd
    >>> y, s, rstd = add_rms_norm_fwd(x, residual, w)   # doctest: +SKIP
"""
from __future__ import annotations

from .launch import norm_bwd, norm_fwd


def add_layer_norm_fwd(x, residual, weight=None, bias=None, eps=1e-5):
    """``s = x + residual``; ``y = layer_norm(s)``. Returns ``(y, s, mean, rstd)``.

    Example:
        >>> y, s, mean, rstd = add_layer_norm_fwd(x, residual, w, b)   # doctest: +SKIP
    """
    return norm_fwd("add_layer_norm_fwd", x, residual, weight, bias, eps, is_rms=False)


def add_rms_norm_fwd(x, residual, weight=None, eps=1e-6):
    """``s = x + residual``; ``y = rms_norm(s)``. Returns ``(y, s, rstd)``.

    Example:
        >>> y, s, rstd = add_rms_norm_fwd(x, residual, w)   # doctest: +SKIP
    """
    y, s, _, rstd = norm_fwd("add_rms_norm_fwd", x, residual, weight, None, eps, is_rms=True)
    return y, s, rstd


def add_layer_norm_bwd(dy, ds, s, weight, bias, mean, rstd):
    """Gradients of :func:`add_layer_norm_fwd` given ``dy`` and the residual stream's ``ds``
    (None: no upstream gradient on ``s``): ``(dx, dweight or None, dbias or None)``, where ``dx``
    is the gradient of both ``x`` and ``residual``.

    Example:
        >>> dx, dw, db = add_layer_norm_bwd(dy, ds, s, w, b, mean, rstd)   # doctest: +SKIP
    """
    return norm_bwd("add_layer_norm_bwd", dy, s, weight, bias, mean, rstd, is_rms=False, dres=ds, x_name="s")


def add_rms_norm_bwd(dy, ds, s, weight, rstd):
    """Gradients of :func:`add_rms_norm_fwd`: ``(dx, dweight or None)``; ``dx`` serves ``x`` and ``residual``.

    Example:
        >>> dx, dw = add_rms_norm_bwd(dy, ds, s, w, rstd)   # doctest: +SKIP
    """
    dx, dw, _ = norm_bwd("add_rms_norm_bwd", dy, s, weight, None, None, rstd, is_rms=True, dres=ds, x_name="s")
    return dx, dw
