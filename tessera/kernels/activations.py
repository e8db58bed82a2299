"""Elementwise activations, forward and backward: GELU (exact erf and tanh forms), SiLU, SwiGLU.

Each is one flat pass: inputs read once, outputs written once, math in fp32.

Example:
    >>> import torch
    >>> from tessera.kernels.activations import swiglu_fwd
    >>> y = swiglu_fwd(torch.randn(8, 11008, device="cuda"), torch.randn(8, 11008, device="cuda"))  # doctest: +SKIP
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..errors import TesseraValueError
from ._membound import FLOAT_DTYPES, check_same, check_tensor, flat_block, interpreting

GELU_ERF, GELU_TANH, SILU = 0, 1, 2
BLOCK = 4096
WARPS = 8


@triton.jit
def _offsets(BLOCK: tl.constexpr, BIG: tl.constexpr):
    """This program's element offsets; 64-bit only for tensors past 2**31 elements (cheaper address math)."""
    if BIG:
        start = tl.program_id(0).to(tl.int64) * BLOCK
    else:
        start = tl.program_id(0) * BLOCK
    return start + tl.arange(0, BLOCK)


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(z):
    return 2.0 * _sigmoid(2.0 * z) - 1.0


@triton.jit
def _act(x, KIND: tl.constexpr):
    if KIND == 0:
        y = 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
    elif KIND == 1:
        y = 0.5 * x * (1.0 + _tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))
    else:
        y = x * _sigmoid(x)
    return y


@triton.jit
def _act_grad(x, KIND: tl.constexpr):
    if KIND == 0:
        d = 0.5 * (1.0 + tl.math.erf(x * 0.7071067811865476)) + x * 0.3989422804014327 * tl.exp(-0.5 * x * x)
    elif KIND == 1:
        t = _tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))
        d = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 0.134145 * x * x)
    else:
        s = _sigmoid(x)
        d = s * (1.0 + x * (1.0 - s))
    return d


@triton.jit
def _fwd_kernel(X, Y, n, KIND: tl.constexpr, BLOCK: tl.constexpr, BIG: tl.constexpr):
    offs = _offsets(BLOCK, BIG)
    mask = offs < n
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + offs, _act(x, KIND).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_kernel(DY, X, DX, n, KIND: tl.constexpr, BLOCK: tl.constexpr, BIG: tl.constexpr):
    offs = _offsets(BLOCK, BIG)
    mask = offs < n
    dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(DX + offs, (dy * _act_grad(x, KIND)).to(DX.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_fwd_kernel(G, U, Y, n, BLOCK: tl.constexpr, BIG: tl.constexpr):
    offs = _offsets(BLOCK, BIG)
    mask = offs < n
    g = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + offs, (g * _sigmoid(g) * u).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_bwd_kernel(DY, G, U, DG, DU, n, BLOCK: tl.constexpr, BIG: tl.constexpr):
    offs = _offsets(BLOCK, BIG)
    mask = offs < n
    dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + offs, mask=mask, other=0.0).to(tl.float32)
    s = _sigmoid(g)
    tl.store(DU + offs, (dy * g * s).to(DU.dtype.element_ty), mask=mask)
    tl.store(DG + offs, (dy * u * s * (1.0 + g * (1.0 - s))).to(DG.dtype.element_ty), mask=mask)


def _grid(n, block):
    return (max(1, triton.cdiv(n, block)),)


def _big(n):
    return n + BLOCK >= 2**31


def _block(n):
    return min(BLOCK, flat_block(n))


def _gelu_kind(approximate, op):
    if approximate == "none":
        return GELU_ERF
    if approximate == "tanh":
        return GELU_TANH
    raise TesseraValueError(f"{op}: approximate must be 'none' or 'tanh', got {approximate!r}")


def _unary_fwd(op, x, kind):
    check_tensor(x, "x", op)
    xc = x.contiguous()
    y = torch.empty_like(xc)
    n = xc.numel()
    if n:
        _fwd_kernel[_grid(n, _block(n))](xc, y, n, KIND=kind, BLOCK=_block(n), BIG=_big(n), num_warps=WARPS)
    return y


def _unary_bwd(op, dy, x, kind):
    check_tensor(dy, "dy", op)
    check_tensor(x, "x", op)
    check_same(x, dy, "x", "dy", op)
    xc, dyc = x.contiguous(), dy.contiguous()
    dx = torch.empty_like(xc)
    n = xc.numel()
    if n:
        _bwd_kernel[_grid(n, _block(n))](dyc, xc, dx, n, KIND=kind, BLOCK=_block(n), BIG=_big(n), num_warps=WARPS)
    return dx


def gelu_fwd(x, approximate="none"):
    """GELU: ``x * Phi(x)`` (``approximate="none"``, erf) or its tanh approximation (``"tanh"``).

    Example:
        >>> y = gelu_fwd(x, approximate="tanh")   # doctest: +SKIP
    """
    return _unary_fwd("gelu_fwd", x, _gelu_kind(approximate, "gelu_fwd"))


def gelu_bwd(dy, x, approximate="none"):
    """Gradient of :func:`gelu_fwd` with respect to ``x``.

    Example:
        >>> dx = gelu_bwd(dy, x)   # doctest: +SKIP
    """
    return _unary_bwd("gelu_bwd", dy, x, _gelu_kind(approximate, "gelu_bwd"))


def silu_fwd(x):
    """SiLU (swish): ``x * sigmoid(x)``.

    Example:
        >>> y = silu_fwd(x)   # doctest: +SKIP
    """
    return _unary_fwd("silu_fwd", x, SILU)


def silu_bwd(dy, x):
    """Gradient of :func:`silu_fwd`: ``dy * s * (1 + x * (1 - s))`` with ``s = sigmoid(x)``.

    Example:
        >>> dx = silu_bwd(dy, x)   # doctest: +SKIP
    """
    return _unary_bwd("silu_bwd", dy, x, SILU)


def swiglu_fwd(gate, up):
    """SwiGLU's gating: ``silu(gate) * up``.

    Example:
        >>> y = swiglu_fwd(gate, up)   # doctest: +SKIP
    """
    check_tensor(gate, "gate", "swiglu_fwd")
    check_tensor(up, "up", "swiglu_fwd")
    check_same(gate, up, "gate", "up", "swiglu_fwd")
    g, u = gate.contiguous(), up.contiguous()
    y = torch.empty_like(g)
    n = g.numel()
    if n:
        _swiglu_fwd_kernel[_grid(n, _block(n))](g, u, y, n, BLOCK=_block(n), BIG=_big(n), num_warps=WARPS)
    return y


def swiglu_bwd(dy, gate, up):
    """Gradients of :func:`swiglu_fwd`: ``(dgate, dup)``.

    Example:
        >>> dgate, dup = swiglu_bwd(dy, gate, up)   # doctest: +SKIP
    """
    op = "swiglu_bwd"
    for name, t in (("dy", dy), ("gate", gate), ("up", up)):
        check_tensor(t, name, op)
    check_same(gate, up, "gate", "up", op)
    check_same(gate, dy, "gate", "dy", op)
    g, u, d = gate.contiguous(), up.contiguous(), dy.contiguous()
    dg, du = torch.empty_like(g), torch.empty_like(u)
    n = g.numel()
    if n:
        _swiglu_bwd_kernel[_grid(n, _block(n))](d, g, u, dg, du, n, BLOCK=_block(n), BIG=_big(n), num_warps=WARPS)
    return dg, du


OPS = ("gelu_fwd", "gelu_bwd", "silu_fwd", "silu_bwd", "swiglu_fwd", "swiglu_bwd")


def supports(name, *tensors) -> bool:
    """True when op ``name`` has a kernel here for these tensors.

    Example:
        >>> supports("silu_fwd", x)   # doctest: +SKIP
        True
    """
    return name in OPS and all(t.dtype in FLOAT_DTYPES and (t.is_cuda or interpreting())
                               for t in tensors if isinstance(t, torch.Tensor))
