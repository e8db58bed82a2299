"""Softmax and log-softmax over the last dim, forward and backward.

Rows up to a few thousand columns stay whole in registers (one read, one write); longer
rows are walked in blocks: an online pass (running max and rescaled sum) and a write pass.

Example:
    >>> import torch
    >>> from tessera.kernels.softmax import softmax_fwd
    >>> y = softmax_fwd(torch.randn(4, 1000, device="cuda", dtype=torch.bfloat16))   # doctest: +SKIP
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ._membound import FLOAT_DTYPES, RowPlan, as_rows, check_rows, check_same, check_tensor, interpreting, row_plan

EVICT = ""  # measured on H100: evict_first loads cost ~1% in the norm forward


@triton.jit
def _fwd_fused(X, Y, M, N, stride_x, stride_y, LOG: tl.constexpr, BLOCK_N: tl.constexpr,
               ROWS: tl.constexpr, EVICT: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_N)
    mask = (rows < M)[:, None] & (cols < N)[None, :]
    r64 = rows.to(tl.int64)[:, None]
    x = tl.load(X + r64 * stride_x + cols[None, :], mask=mask, other=-float("inf"),
                eviction_policy=EVICT).to(tl.float32)
    m = tl.max(x, axis=1)
    z = (x - m[:, None]) * 1.4426950408889634  # log2 units: exp2 is the native instruction
    e = tl.exp2(z)
    s = tl.sum(e, axis=1)
    if LOG:
        y = (z - tl.log2(s)[:, None]) * 0.6931471805599453
    else:
        y = e * (1.0 / s)[:, None]
    tl.store(Y + r64 * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _fwd_blocked(X, Y, N, stride_x, stride_y, LOG: tl.constexpr, BLOCK_N: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols0 = tl.arange(0, BLOCK_N)
    m = -float("inf")
    s = 0.0
    for start in range(0, N, BLOCK_N):
        cols = start + cols0
        x = tl.load(X + row * stride_x + cols, mask=cols < N, other=-float("inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, axis=0))  # finite once a block had a finite value
        s = s * tl.exp2((m - m_new) * 1.4426950408889634) + tl.sum(
            tl.exp2((x - m_new) * 1.4426950408889634), axis=0)
        m = m_new
    log_s = tl.log(s)
    for start in range(0, N, BLOCK_N):
        cols = start + cols0
        cmask = cols < N
        x = tl.load(X + row * stride_x + cols, mask=cmask, other=0.0, eviction_policy="evict_first").to(tl.float32)
        if LOG:
            y = x - m - log_s
        else:
            y = tl.exp2((x - m) * 1.4426950408889634) / s
        tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=cmask)


@triton.jit
def _bwd_fused(DY, Y, DX, M, N, stride_dy, stride_y, stride_dx, LOG: tl.constexpr, BLOCK_N: tl.constexpr,
               ROWS: tl.constexpr, EVICT: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_N)
    mask = (rows < M)[:, None] & (cols < N)[None, :]
    r64 = rows.to(tl.int64)[:, None]
    dy = tl.load(DY + r64 * stride_dy + cols[None, :], mask=mask, other=0.0, eviction_policy=EVICT).to(tl.float32)
    y = tl.load(Y + r64 * stride_y + cols[None, :], mask=mask, other=0.0, eviction_policy=EVICT).to(tl.float32)
    if LOG:
        dx = dy - tl.exp(y) * tl.sum(dy, axis=1)[:, None]
    else:
        dx = y * (dy - tl.sum(dy * y, axis=1)[:, None])
    tl.store(DX + r64 * stride_dx + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_blocked(DY, Y, DX, N, stride_dy, stride_y, stride_dx, LOG: tl.constexpr, BLOCK_N: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols0 = tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, N, BLOCK_N):
        cols = start + cols0
        cmask = cols < N
        dy = tl.load(DY + row * stride_dy + cols, mask=cmask, other=0.0).to(tl.float32)
        if LOG:
            acc += dy
        else:
            acc += dy * tl.load(Y + row * stride_y + cols, mask=cmask, other=0.0).to(tl.float32)
    total = tl.sum(acc, axis=0)
    for start in range(0, N, BLOCK_N):
        cols = start + cols0
        cmask = cols < N
        dy = tl.load(DY + row * stride_dy + cols, mask=cmask, other=0.0).to(tl.float32)
        y = tl.load(Y + row * stride_y + cols, mask=cmask, other=0.0).to(tl.float32)
        if LOG:
            dx = dy - tl.exp(y) * total
        else:
            dx = y * (dy - total)
        tl.store(DX + row * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=cmask)


def _fwd(op, x, log: bool, plan: Optional[RowPlan] = None):
    check_tensor(x, "x", op)
    check_rows(x, "x", op)
    x2 = as_rows(x)
    m, n = x2.shape
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    if m > 0:
        plan = plan or row_plan(n, x.element_size())
        if plan.fused:
            _fwd_fused[(triton.cdiv(m, plan.rows),)](x2, y, m, n, x2.stride(0), y.stride(0), LOG=log,
                                                     BLOCK_N=plan.block, ROWS=plan.rows, EVICT=EVICT,
                                                     num_warps=plan.warps)
        else:
            _fwd_blocked[(m,)](x2, y, n, x2.stride(0), y.stride(0), LOG=log, BLOCK_N=plan.block,
                               num_warps=plan.warps)
    return y.view(x.shape)


def _bwd(op, dy, y, log: bool, plan: Optional[RowPlan] = None):
    check_tensor(dy, "dy", op)
    check_tensor(y, "y", op)
    check_rows(y, "y", op)
    check_same(y, dy, "y", "dy", op)
    y2, dy2 = as_rows(y), as_rows(dy)
    m, n = y2.shape
    dx = torch.empty((m, n), dtype=y.dtype, device=y.device)
    if m > 0:
        plan = plan or row_plan(n, y.element_size())
        if plan.fused:
            _bwd_fused[(triton.cdiv(m, plan.rows),)](dy2, y2, dx, m, n, dy2.stride(0), y2.stride(0), dx.stride(0),
                                                     LOG=log, BLOCK_N=plan.block, ROWS=plan.rows, EVICT=EVICT,
                                                     num_warps=plan.warps)
        else:
            _bwd_blocked[(m,)](dy2, y2, dx, n, dy2.stride(0), y2.stride(0), dx.stride(0), LOG=log,
                               BLOCK_N=plan.block, num_warps=plan.warps)
    return dx.view(y.shape)


def softmax_fwd(x):
    """Softmax over the last dim (computed in fp32, returned in ``x``'s dtype).

    Example:
        >>> y = softmax_fwd(x)   # doctest: +SKIP
    """
    return _fwd("softmax_fwd", x, log=False)


def softmax_bwd(dy, y):
    """Gradient of :func:`softmax_fwd` from its output: ``dx = y * (dy - sum(dy * y))``.

    Example:
        >>> dx = softmax_bwd(dy, y)   # doctest: +SKIP
    """
    return _bwd("softmax_bwd", dy, y, log=False)


def log_softmax_fwd(x):
    """Log-softmax over the last dim.

    Example:
        >>> y = log_softmax_fwd(x)   # doctest: +SKIP
    """
    return _fwd("log_softmax_fwd", x, log=True)


def log_softmax_bwd(dy, y):
    """Gradient of :func:`log_softmax_fwd` from its output: ``dx = dy - exp(y) * sum(dy)``.

    Example:
        >>> dx = log_softmax_bwd(dy, y)   # doctest: +SKIP
    """
    return _bwd("log_softmax_bwd", dy, y, log=True)


OPS = ("softmax_fwd", "softmax_bwd", "log_softmax_fwd", "log_softmax_bwd")


def supports(name, *tensors) -> bool:
    """True when op ``name`` has a kernel here for these tensors.

    Example:
        >>> supports("softmax_fwd", x)   # doctest: +SKIP
        True
    """
    return name in OPS and all(
        t.dtype in FLOAT_DTYPES and (t.is_cuda or interpreting()) and t.dim() > 0 and t.numel() > 0
        for t in tensors if t is not None)
