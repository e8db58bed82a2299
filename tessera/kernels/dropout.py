"""Dropout with a counter-based mask that is never stored.

Element ``i`` (row-major flat index of the contiguous tensor) is kept iff
``tessera.runtime.philox.uniform(seed, i) >= p``; kept values are scaled by ``1 / (1 - p)``.
The backward regenerates the same mask from ``(seed, i)``.

Example:
    >>> import torch
    >>> from tessera.kernels.dropout import dropout_fwd
    >>> y = dropout_fwd(torch.randn(4, 1024, device="cuda"), 0.1, seed=42)   # doctest: +SKIP
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.random import philox

from ..errors import TesseraTypeError, TesseraValueError
from ._membound import FLOAT_DTYPES, check_tensor, flat_block, interpreting

BLOCK = 4096
WARPS = 8


@triton.jit
def _dropout_kernel(X, Y, n, p, scale, seed, BLOCK: tl.constexpr, BIG: tl.constexpr):
    if BIG:
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        # the 64-bit counter split into Philox's first two words, as the reference does
        c0 = (offs & 0xFFFFFFFF).to(tl.uint32)
        c1 = (offs >> 32).to(tl.uint32)
        zero = c0 * 0
    else:
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        c0 = offs.to(tl.uint32, bitcast=True)
        zero = c0 * 0
        c1 = zero
    mask = offs < n
    r, _, _, _ = philox(seed, c0, c1, zero, zero)
    r = r.to(tl.int32, bitcast=True)
    u = tl.where(r < 0, -r - 1, r).to(tl.float32) * 4.6566127342e-10
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    y = tl.where(u >= p, x * scale, 0.0)
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)


def _check(op, p, seed):
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not (0.0 <= p < 1.0):
        raise TesseraValueError(f"{op}: p must be a number in [0, 1), got {p!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TesseraTypeError(f"{op}: seed must be a Python int, got {type(seed).__name__}")
    if not 0 <= seed < 2**63:
        raise TesseraValueError(f"{op}: seed must be in [0, 2**63), got {seed}")


def _apply(op, x, name, p, seed):
    check_tensor(x, name, op)
    _check(op, p, seed)
    xc = x.contiguous()
    y = torch.empty_like(xc)
    n = xc.numel()
    if n:
        block = min(BLOCK, flat_block(n))
        _dropout_kernel[(triton.cdiv(n, block),)](xc, y, n, float(p), 1.0 / (1.0 - p), seed, BLOCK=block,
                                                  BIG=n + block >= 2**31, num_warps=WARPS)
    return y


def dropout_fwd(x, p, seed):
    """Zero each element with probability ``p`` (mask from ``(seed, flat index)``), scale the rest
    by ``1 / (1 - p)``.

    Example:
        >>> y = dropout_fwd(x, 0.1, seed=1234)   # doctest: +SKIP
    """
    return _apply("dropout_fwd", x, "x", p, seed)


def dropout_bwd(dy, p, seed):
    """Gradient of :func:`dropout_fwd` with the same ``p`` and ``seed`` (the same mask, regenerated).

    Example:
        >>> dx = dropout_bwd(dy, 0.1, seed=1234)   # doctest: +SKIP
    """
    return _apply("dropout_bwd", dy, "dy", p, seed)


OPS = ("dropout_fwd", "dropout_bwd")


def supports(name, *tensors) -> bool:
    """True when op ``name`` has a kernel here for these tensors.

    Example:
        >>> supports("dropout_fwd", x)   # doctest: +SKIP
        True
    """
    return name in OPS and all(t.dtype in FLOAT_DTYPES and (t.is_cuda or interpreting())
                               for t in tensors if isinstance(t, torch.Tensor))
