"""Triton kernels of the fused cross-entropy: loss and d(loss)/d(logits) per row, and the upstream scaling.

One program owns one row. A row that fits one block is read once and kept in registers; a longer row is
swept twice: the first sweep keeps a per-lane running max and sum of exponentials (one exp2 per element),
the second recomputes the softmax from the logsumexp and writes the gradient, walking the row backwards so
that the chunks read last by the first sweep, still in L2, are read first.
"""
from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


@triton.jit
def _row_loss(lse, x_t, sum_x, t_ok, V, eps, z, SMOOTH: tl.constexpr, ZLOSS: tl.constexpr):
    # An out-of-range target makes the loss NaN rather than a silently wrong number.
    loss = lse - x_t
    if SMOOTH:
        loss = lse - (1.0 - eps) * x_t - eps * (sum_x / V)
    if ZLOSS:
        loss = loss + z * lse * lse
    return tl.where(t_ok, loss, float("nan"))


@triton.jit
def _grad_chunk(x2, cols, t, lse2, c1, smooth_term, hit_term, SMOOTH: tl.constexpr):
    g = tl.exp2(x2 - lse2) * c1
    if SMOOTH:
        g = g - smooth_term
    return tl.where(cols == t, g - hit_term, g)


@triton.jit
def _ld_row(ptr, mask, other, FIRST: tl.constexpr, EVICT: tl.constexpr):
    # EVICT: keep the first sweep's lines in L2 for the second sweep, and let the second sweep's go.
    if EVICT:
        if FIRST:
            return tl.load(ptr, mask=mask, other=other, eviction_policy="evict_last")
        return tl.load(ptr, mask=mask, other=other, eviction_policy="evict_first")
    return tl.load(ptr, mask=mask, other=other)


@triton.jit
def _st_row(ptr, val, mask, EVICT: tl.constexpr):
    if EVICT:
        tl.store(ptr, val, mask=mask, eviction_policy="evict_first")
    else:
        tl.store(ptr, val, mask=mask)


@triton.jit
def ce_fwd_kernel(X, stride_x, T, LOSS, G, stride_g, COUNT, N, V, ignore_index, eps, z,
                  HAS_GRAD: tl.constexpr, SMOOTH: tl.constexpr, ZLOSS: tl.constexpr, MEAN: tl.constexpr,
                  ONE_BLOCK: tl.constexpr, REVERSE: tl.constexpr, BLOCK: tl.constexpr,
                  PERSISTENT: tl.constexpr, EVICT: tl.constexpr):
    # PERSISTENT: a grid of a few programs per SM walks the rows, so that few rows are in flight at once and
    # a long row read by the first sweep is still in L2 for the second.
    if PERSISTENT:
        for row in range(tl.program_id(0), N, tl.num_programs(0)):
            _ce_row(row + tl.zeros([], dtype=tl.int64), X, stride_x, T, LOSS, G, stride_g, COUNT, V, ignore_index, eps, z,
                    HAS_GRAD, SMOOTH, ZLOSS, MEAN, ONE_BLOCK, REVERSE, BLOCK, EVICT)
    else:
        _ce_row(tl.program_id(0).to(tl.int64), X, stride_x, T, LOSS, G, stride_g, COUNT, V, ignore_index, eps, z,
                HAS_GRAD, SMOOTH, ZLOSS, MEAN, ONE_BLOCK, REVERSE, BLOCK, EVICT)


@triton.jit
def _ce_row(row, X, stride_x, T, LOSS, G, stride_g, COUNT, V, ignore_index, eps, z,
            HAS_GRAD: tl.constexpr, SMOOTH: tl.constexpr, ZLOSS: tl.constexpr, MEAN: tl.constexpr,
            ONE_BLOCK: tl.constexpr, REVERSE: tl.constexpr, BLOCK: tl.constexpr, EVICT: tl.constexpr):
    x_row = X + row * stride_x
    g_row = G + row * stride_g
    t = tl.load(T + row).to(tl.int32)
    offs = tl.arange(0, BLOCK)
    if t == ignore_index:
        tl.store(LOSS + row, 0.0)
        if HAS_GRAD:
            zero = tl.zeros([BLOCK], dtype=G.dtype.element_ty)
            for off in range(0, V, BLOCK):
                cols = off + offs
                tl.store(g_row + cols, zero, mask=cols < V)
    else:
        t_ok = (t >= 0) & (t < V)
        x_t = tl.load(x_row + t, mask=t_ok, other=0.0).to(tl.float32)
        scale = 1.0
        if MEAN:
            scale = 1.0 / tl.load(COUNT)
        if ONE_BLOCK:
            mask = offs < V
            x = tl.load(x_row + offs, mask=mask, other=-float("inf")).to(tl.float32)
            x2 = x * 1.4426950408889634
            m2 = tl.max(x2, axis=0)
            lse2 = m2 + tl.log2(tl.sum(tl.exp2(x2 - m2), axis=0))
            lse = lse2 * 0.6931471805599453
            sum_x = 0.0
            if SMOOTH:
                sum_x = tl.sum(tl.where(mask, x, 0.0), axis=0)
            tl.store(LOSS + row, _row_loss(lse, x_t, sum_x, t_ok, V, eps, z, SMOOTH, ZLOSS))
            if HAS_GRAD:
                c1 = scale
                if ZLOSS:
                    c1 = scale * (1.0 + 2.0 * z * lse)
                g = _grad_chunk(x2, offs, t, lse2, c1, scale * eps / V, scale * (1.0 - eps), SMOOTH)
                tl.store(g_row + offs, g.to(G.dtype.element_ty), mask=mask)
        else:
            m = tl.full([BLOCK], -1.0e30, dtype=tl.float32)
            s = tl.zeros([BLOCK], dtype=tl.float32)
            sx = tl.zeros([BLOCK], dtype=tl.float32)
            for off in range(0, V, BLOCK):
                cols = off + offs
                mask = cols < V
                x = _ld_row(x_row + cols, mask, -float("inf"), True, EVICT).to(tl.float32)
                x2 = x * 1.4426950408889634
                bigger = x2 > m
                d = tl.exp2(-tl.abs(x2 - m))
                s = tl.where(bigger, s * d + 1.0, s + d)
                m = tl.where(bigger, x2, m)
                if SMOOTH:
                    sx += tl.where(mask, x, 0.0)
            m2 = tl.max(m, axis=0)
            lse2 = m2 + tl.log2(tl.sum(s * tl.exp2(m - m2), axis=0))
            lse = lse2 * 0.6931471805599453
            sum_x = 0.0
            if SMOOTH:
                sum_x = tl.sum(sx, axis=0)
            tl.store(LOSS + row, _row_loss(lse, x_t, sum_x, t_ok, V, eps, z, SMOOTH, ZLOSS))
            if HAS_GRAD:
                c1 = scale
                if ZLOSS:
                    c1 = scale * (1.0 + 2.0 * z * lse)
                smooth_term = scale * eps / V
                hit_term = scale * (1.0 - eps)
                n_blocks = tl.cdiv(V, BLOCK)
                for i in range(0, n_blocks):
                    if REVERSE:
                        off = (n_blocks - 1 - i) * BLOCK
                    else:
                        off = i * BLOCK
                    cols = off + offs
                    mask = cols < V
                    x2 = _ld_row(x_row + cols, mask, 0.0, False, EVICT).to(tl.float32) * 1.4426950408889634
                    g = _grad_chunk(x2, cols, t, lse2, c1, smooth_term, hit_term, SMOOTH)
                    _st_row(g_row + cols, g.to(G.dtype.element_ty), mask, EVICT)


@triton.jit
def scale_rows_kernel(G, stride_g, S, V, PER_ROW: tl.constexpr, BLOCK: tl.constexpr):
    """Multiply row ``r`` of G by S[r] (PER_ROW) or by S[0]; a factor of exactly 1 costs no memory traffic."""
    row = tl.program_id(0).to(tl.int64)
    if PER_ROW:
        s = tl.load(S + row).to(tl.float32)
    else:
        s = tl.load(S).to(tl.float32)
    if s != 1.0:
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < V
        ptr = G + row * stride_g + cols
        g = tl.load(ptr, mask=mask, other=0.0).to(tl.float32)
        tl.store(ptr, (g * s).to(G.dtype.element_ty), mask=mask)
