"""Rotary position embedding (RoPE), forward and backward.

``x`` has the head dim last and a sequence dim at ``seq_dim`` (``-2`` for ``[B, H, S, D]``,
``1`` for ``[B, S, H, D]``); ``cos``/``sin`` are ``[S, R]`` with ``R <= D // 2`` (``R < D // 2``:
partial rotary, the dims past ``2 * R`` pass through). Rotate-half pairs ``(i, i + R)``
(GPT-NeoX); ``interleaved=True`` pairs ``(2i, 2i + 1)`` (GPT-J). The backward is the rotation
by the opposite angle.

Example:
    >>> import torch
    >>> from tessera.kernels.rotary import rope_frequencies, rotary_fwd
    >>> cos, sin = rope_frequencies(2048, 128, device="cuda")             # doctest: +SKIP
    >>> q = rotary_fwd(torch.randn(2, 16, 2048, 128, device="cuda"), cos, sin)   # doctest: +SKIP
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..errors import TesseraShapeError, TesseraValueError
from ._membound import FLOAT_DTYPES, check_tensor, interpreting

ROW_ELEMS = 4096  # elements of x per program


@triton.jit
def _rotary_kernel(X, COS, SIN, Y, R, S, inner, D, RH, stride_c, stride_s, SIGN: tl.constexpr,
                   INTERLEAVED: tl.constexpr, BLOCK_H: tl.constexpr, PASS: tl.constexpr,
                   BLOCK_P: tl.constexpr, ROWS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    rmask = rows < R
    pos = ((rows // inner) % S).to(tl.int64)
    h = tl.arange(0, BLOCK_H)
    mask = rmask[:, None] & (h < RH)[None, :]
    c = tl.load(COS + pos[:, None] * stride_c + h[None, :], mask=mask, other=0.0).to(tl.float32)
    s = tl.load(SIN + pos[:, None] * stride_s + h[None, :], mask=mask, other=0.0).to(tl.float32) * SIGN
    base = rows.to(tl.int64)[:, None] * D
    if INTERLEAVED:
        i1 = 2 * h
        i2 = 2 * h + 1
    else:
        i1 = h
        i2 = h + RH
    x1 = tl.load(X + base + i1[None, :], mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(X + base + i2[None, :], mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + base + i1[None, :], (x1 * c - x2 * s).to(Y.dtype.element_ty), mask=mask)
    tl.store(Y + base + i2[None, :], (x2 * c + x1 * s).to(Y.dtype.element_ty), mask=mask)
    if PASS:
        p = 2 * RH + tl.arange(0, BLOCK_P)
        pm = rmask[:, None] & (p < D)[None, :]
        tl.store(Y + base + p[None, :], tl.load(X + base + p[None, :], mask=pm, other=0.0), mask=pm)


def _apply(op, x, name, cos, sin, interleaved, seq_dim, sign):
    check_tensor(x, name, op)
    check_tensor(cos, "cos", op)
    check_tensor(sin, "sin", op)
    if x.dim() < 2:
        raise TesseraShapeError(f"{op}: '{name}' has shape {tuple(x.shape)}; it needs a sequence dim and a head dim")
    if not -x.dim() <= seq_dim < x.dim() - 1 or seq_dim == -1:
        raise TesseraValueError(f"{op}: seq_dim={seq_dim} must name a dim of '{name}' other than the last "
                                f"(e.g. -2 for [B, H, S, D], 1 for [B, S, H, D])")
    k = seq_dim % x.dim()
    d, seq = x.shape[-1], x.shape[k]
    if cos.dim() != 2 or cos.shape != sin.shape:
        raise TesseraShapeError(f"{op}: cos and sin must both be [S, R], got {tuple(cos.shape)} and "
                                f"{tuple(sin.shape)}; build them with rope_frequencies")
    rh = cos.shape[1]
    if cos.shape[0] < seq or rh == 0 or 2 * rh > d:
        raise TesseraShapeError(f"{op}: cos/sin are {tuple(cos.shape)} but '{name}' has S={seq}, D={d}; "
                                f"they need at least S rows and 1..D//2={d // 2} columns")
    if cos.device != x.device:
        raise TesseraShapeError(f"{op}: cos is on {cos.device} but '{name}' on {x.device}")
    xc = x.contiguous()
    cos = cos if cos.stride(-1) == 1 else cos.contiguous()
    sin = sin if sin.stride(-1) == 1 else sin.contiguous()
    y = torch.empty_like(xc)
    rows = xc.numel() // d
    inner = 1
    for s in x.shape[k + 1:-1]:
        inner *= s
    if rows:
        rows_per = max(1, min(64, ROW_ELEMS // triton.next_power_of_2(d)))
        block_p = triton.next_power_of_2(max(1, d - 2 * rh))
        _rotary_kernel[(triton.cdiv(rows, rows_per),)](
            xc, cos, sin, y, rows, seq, inner, d, rh, cos.stride(0), sin.stride(0), SIGN=sign,
            INTERLEAVED=bool(interleaved), BLOCK_H=triton.next_power_of_2(rh), PASS=2 * rh < d,
            BLOCK_P=block_p, ROWS=rows_per, num_warps=4)
    return y


def rotary_fwd(x, cos, sin, interleaved=False, seq_dim=-2):
    """Rotate pairs of ``x``'s last dim by the angles whose cosines and sines are ``cos``/``sin``.

    Example:
        >>> y = rotary_fwd(q, cos, sin)                    # q: [B, H, S, D]   # doctest: +SKIP
        >>> y = rotary_fwd(q, cos, sin, seq_dim=1)         # q: [B, S, H, D]   # doctest: +SKIP
    """
    return _apply("rotary_fwd", x, "x", cos, sin, interleaved, seq_dim, 1.0)


def rotary_bwd(dy, cos, sin, interleaved=False, seq_dim=-2):
    """Gradient of :func:`rotary_fwd`: the rotation by the opposite angle.

    Example:
        >>> dx = rotary_bwd(dy, cos, sin)   # doctest: +SKIP
    """
    return _apply("rotary_bwd", dy, "dy", cos, sin, interleaved, seq_dim, -1.0)


def rope_frequencies(seq_len, dim, base=10000.0, *, device=None, dtype=torch.float32):
    """``(cos, sin)``, each ``[seq_len, dim // 2]``: angle ``t * base ** (-2i / dim)`` at position ``t``.

    Example:
        >>> cos, sin = rope_frequencies(4, 8)
        >>> tuple(cos.shape), float(cos[0, 0])
        ((4, 4), 1.0)
    """
    if seq_len < 0 or dim < 2:
        raise TesseraValueError(f"rope_frequencies: need seq_len >= 0 and dim >= 2, got {seq_len}, {dim}")
    inv = base ** (-torch.arange(0, dim // 2, dtype=torch.float64, device=device) * 2.0 / dim)
    ang = torch.arange(seq_len, dtype=torch.float64, device=device)[:, None] * inv[None, :]
    return ang.cos().to(dtype), ang.sin().to(dtype)


OPS = ("rotary_fwd", "rotary_bwd")


def supports(name, *tensors) -> bool:
    """True when op ``name`` has a kernel here for these tensors.

    Example:
        >>> supports("rotary_fwd", q, cos, sin)   # doctest: +SKIP
        True
    """
    return name in OPS and all(t.dtype in FLOAT_DTYPES and (t.is_cuda or interpreting())
                               for t in tensors if isinstance(t, torch.Tensor))
