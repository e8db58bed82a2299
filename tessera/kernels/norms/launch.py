"""Launchers shared by layer_norm, rms_norm and their residual-add forms: checks, planning, grids.

Example:
    >>> from tessera.kernels.norms.launch import bwd_programs
    >>> bwd_programs(rows=10, rows_per_program=4, sms=132) <= 3
    True
"""
from __future__ import annotations

from typing import Optional

import torch
import triton

from ...errors import TesseraShapeError, TesseraValueError
from .._membound import (RowPlan, as_rows, check_rows, check_same, check_tensor, check_vector, max_fused_cols,
                         num_sms, row_plan)
from ._kernels import (col_sum_kernel, norm_bwd_blocked_kernel, norm_bwd_fused_kernel,
                       norm_fwd_blocked_kernel, norm_fwd_fused_kernel)

# programs per SM of the persistent backward grid (its weight-gradient partials are [programs, cols]):
# 2 for programs of 8+ warps (H100, 4096 cols: 2.68 TB/s vs 2.58 with 4, 2.04 with 1), more for small ones
BWD_PROGRAMS_PER_SM = 2
# backward launch shape by block width: (rows per iteration, warps, programs per SM), the fastest
# of 4-6 candidates each on H100 bf16 (benchmarks/results/membound.md); other widths follow
# row_plan(backward=True) and _default_per_sm
# width -> (rows per block, warps, programs per SM, prefetch the next rows' loads)
# H100 (benchmarks/results/membound.md): prefetching the next rows' loads took rms_norm backward from
# 1.94 / 2.70 / 2.61 to 2.35 / 2.85 / 2.95 TB/s at 1024 / 4096 / 8192 columns.
BWD_CONFIG = {1024: (2, 4, 4, True), 4096: (1, 8, 2, True), 8192: (1, 16, 1, True)}
EVICT_FWD = ""  # measured on H100: evict_first loads cost ~1% in the forward
EVICT_BWD = ""  # and ~1.5% in the backward (4096 cols: 2.70 vs 2.66 TB/s)


def check_eps(eps, op: str) -> float:
    if not isinstance(eps, (int, float)) or not eps >= 0:
        raise TesseraValueError(f"{op}: eps must be a number >= 0, got {eps!r}")
    return float(eps)


def bwd_programs(rows: int, rows_per_program: int, sms: int, per_sm: Optional[int] = None) -> int:
    """Programs in the persistent backward grid: enough to fill the card, no more than there is work."""
    return max(1, min(triton.cdiv(rows, rows_per_program), sms * (per_sm or BWD_PROGRAMS_PER_SM)))


def _default_per_sm(plan: RowPlan) -> int:
    return 8 if plan.warps <= 4 else BWD_PROGRAMS_PER_SM


def norm_fwd(op: str, x, residual, weight, bias, eps, is_rms: bool, plan: Optional[RowPlan] = None):
    """Returns (y, s or None, mean or None, rstd), shaped like ``x`` (stats: [rows] fp32)."""
    check_tensor(x, "x", op)
    check_rows(x, "x", op)
    eps = check_eps(eps, op)
    n = x.shape[-1]
    if residual is not None:
        check_tensor(residual, "residual", op)
        check_same(x, residual, "x", "residual", op)
    check_vector(weight, "weight", n, x, op)
    check_vector(bias, "bias", n, x, op)
    x2 = as_rows(x)
    m = x2.shape[0]
    r2 = as_rows(residual) if residual is not None else x2
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    s = torch.empty((m, n), dtype=x.dtype, device=x.device) if residual is not None else y
    rstd = torch.empty(m, dtype=torch.float32, device=x.device)
    mean = torch.empty(m, dtype=torch.float32, device=x.device) if not is_rms else rstd
    w = weight if weight is not None else x2
    b = bias if bias is not None else x2
    if m > 0:
        plan = plan or row_plan(n, x.element_size())
        flags = dict(IS_RMS=is_rms, HAS_RES=residual is not None, HAS_W=weight is not None,
                     HAS_B=bias is not None, BLOCK_N=plan.block, num_warps=plan.warps)
        args = (x2, r2, w, b, y, s, mean, rstd, m, n, x2.stride(0), r2.stride(0), y.stride(0), s.stride(0), eps)
        if plan.fused:
            norm_fwd_fused_kernel[(triton.cdiv(m, plan.rows),)](*args, ROWS=plan.rows, EVICT=EVICT_FWD, **flags)
        else:
            norm_fwd_blocked_kernel[(m,)](*args, **flags)
    shape = x.shape
    return (y.view(shape), s.view(shape) if residual is not None else None,
            None if is_rms else mean, rstd)


def norm_bwd(op: str, dy, x, weight, bias, mean, rstd, is_rms: bool, plan: Optional[RowPlan] = None,
             per_sm: Optional[int] = None, dres=None, x_name: str = "x", prefetch: Optional[bool] = None):
    """Returns (dx, dweight or None, dbias or None); ``dres`` (optional) is added into ``dx``."""
    check_tensor(dy, "dy", op)
    check_tensor(x, x_name, op)
    check_rows(x, x_name, op)
    check_same(x, dy, x_name, "dy", op)
    if dres is not None:
        check_tensor(dres, "ds", op)
        check_same(x, dres, x_name, "ds", op)
    n = x.shape[-1]
    check_vector(weight, "weight", n, x, op)
    check_vector(bias, "bias", n, x, op)
    rows = x.numel() // n
    for name, t in (("mean", mean), ("rstd", rstd)):
        if t is None and (name == "rstd" or not is_rms):
            raise TesseraShapeError(f"{op}: '{name}' is None; pass the '{name}' returned by the forward")
        if t is not None and (t.numel() != rows or t.dtype != torch.float32):
            raise TesseraShapeError(f"{op}: '{name}' must be float32 with {rows} elements (one per row), "
                                    f"got {t.dtype} with {t.numel()}; pass the forward's '{name}'")
    x2, dy2 = as_rows(x), as_rows(dy)
    dr2 = as_rows(dres) if dres is not None else dy2
    m = x2.shape[0]
    dx = torch.empty((m, n), dtype=x.dtype, device=x.device)
    if plan is None:
        plan = row_plan(n, x.element_size(), max_fused=_bwd_limit(), backward=True)
        if plan.fused and plan.block in BWD_CONFIG:
            rows_, warps_, per_sm_, prefetch_ = BWD_CONFIG[plan.block]
            prefetch = prefetch_ if prefetch is None else prefetch
            plan = RowPlan(plan.block, rows_, warps_, True)
            per_sm = per_sm or per_sm_
        per_sm = per_sm or _default_per_sm(plan)
    g = bwd_programs(m, plan.rows if plan.fused else 1, num_sms(x.device), per_sm)
    alloc = torch.empty if plan.fused and m > 0 else torch.zeros
    dw_part = alloc((g, n), dtype=torch.float32, device=x.device) if weight is not None else None
    db_part = alloc((g, n), dtype=torch.float32, device=x.device) if bias is not None else None
    rstd_c = rstd.reshape(-1).contiguous()
    mean_c = mean.reshape(-1).contiguous() if mean is not None else rstd_c
    w = weight if weight is not None else x2
    if m > 0:
        args = (dy2, x2, w, mean_c, rstd_c, dx, dw_part if dw_part is not None else dx,
                db_part if db_part is not None else dx, dr2, m, n, dy2.stride(0), x2.stride(0), dx.stride(0),
                dr2.stride(0))
        flags = dict(IS_RMS=is_rms, HAS_W=weight is not None, HAS_B=bias is not None,
                     HAS_DRES=dres is not None, BLOCK_N=plan.block, num_warps=plan.warps)
        if plan.fused:
            norm_bwd_fused_kernel[(g,)](*args, ROWS=plan.rows, EVICT=EVICT_BWD, PREFETCH=bool(prefetch), **flags)
        else:
            norm_bwd_blocked_kernel[(g,)](*args, **flags)
    dweight = _reduce(dw_part, weight, g, n) if weight is not None else None
    dbias = _reduce(db_part, bias, g, n) if bias is not None else None
    return dx.view(x.shape), dweight, dbias


def _bwd_limit() -> int:
    return min(8192, max_fused_cols())


def _reduce(part, like, g, n):
    out = torch.empty(n, dtype=like.dtype, device=like.device)
    if g * n == 0:
        return out.zero_()
    block_c = 64
    block_g = min(64, triton.next_power_of_2(g))
    col_sum_kernel[(triton.cdiv(n, block_c),)](part, out, g, n, BLOCK_G=block_g, BLOCK_C=block_c, num_warps=4)
    return out
