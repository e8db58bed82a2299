"""Cross-entropy for long rows, read once: ``SPLIT`` co-resident programs share each row.

A row of 128k classes does not fit one SM, so the two-sweep kernel reads it twice. Here a group of
``SPLIT`` programs holds one row in registers, a ``CHUNK`` each: each program reduces its chunk to a
running max, a sum of exponentials (and a plain sum for label smoothing), publishes them, and waits at a
per-group counter until the whole group has; then every program forms the row's logsumexp from the
``SPLIT`` partials and writes the gradient of its chunk from registers. Groups walk the rows in lockstep,
so the kernel must be launched as a cooperative grid (every program resident at once) — otherwise a
waiting program could hold the SM its partner needs.

Partials live in two slots per group, alternating by iteration: a program can only reach iteration
``i + 2`` after every partner has passed the wait of ``i + 1``, by when all of them have read slot ``i``.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ._kernels import _grad_chunk, _row_loss


@triton.jit
def ce_split_kernel(X, stride_x, T, LOSS, G, stride_g, COUNT, PART, SYNC, N, V, ignore_index, eps, z,
                    HAS_GRAD: tl.constexpr, SMOOTH: tl.constexpr, ZLOSS: tl.constexpr, MEAN: tl.constexpr,
                    SPLIT: tl.constexpr, PEERS: tl.constexpr, CHUNK: tl.constexpr):
    pid = tl.program_id(0)
    j = pid % SPLIT
    grp = pid // SPLIT
    groups = tl.num_programs(0) // SPLIT
    cols = j * CHUNK + tl.arange(0, CHUNK)
    mask = cols < V
    peers = tl.arange(0, PEERS)  # SPLIT rounded up to a power of two
    real = peers < SPLIT
    scale = 1.0
    if MEAN:
        scale = 1.0 / tl.load(COUNT)
    it = 0
    for row in range(grp, N, groups):
        r = row.to(tl.int64)
        t = tl.load(T + r).to(tl.int32)
        t_ok = (t >= 0) & (t < V)
        x_t = tl.load(X + r * stride_x + t, mask=t_ok, other=0.0).to(tl.float32)  # before any gradient lands
        x = tl.load(X + r * stride_x + cols, mask=mask, other=-float("inf")).to(tl.float32)
        x2 = x * 1.4426950408889634
        m = tl.max(x2, axis=0)
        s = tl.where(m == -float("inf"), 0.0, tl.sum(tl.exp2(x2 - m), axis=0))
        sx = 0.0
        if SMOOTH:
            sx = tl.sum(tl.where(mask, x, 0.0), axis=0)
        slot = PART + (grp * 2 + it % 2) * (3 * SPLIT)
        tl.store(slot + j, m)
        tl.store(slot + SPLIT + j, s)
        tl.store(slot + 2 * SPLIT + j, sx)
        tl.debug_barrier()  # the partials are stored before the arrival is counted
        tl.atomic_add(SYNC + grp, 1, sem="release")
        goal = (it + 1) * SPLIT
        while tl.atomic_add(SYNC + grp, 0, sem="acquire") < goal:
            pass
        pm = tl.load(slot + peers, mask=real, other=-float("inf"), cache_modifier=".cg")
        ps = tl.load(slot + SPLIT + peers, mask=real, other=0.0, cache_modifier=".cg")
        mx = tl.max(pm, axis=0)
        lse2 = mx + tl.log2(tl.sum(ps * tl.exp2(pm - mx), axis=0))
        lse = lse2 * 0.6931471805599453
        ignored = t == ignore_index
        if j == 0:
            sum_x = 0.0
            if SMOOTH:
                sum_x = tl.sum(tl.load(slot + 2 * SPLIT + peers, mask=real, other=0.0, cache_modifier=".cg"), axis=0)
            loss = _row_loss(lse, x_t, sum_x, t_ok, V, eps, z, SMOOTH, ZLOSS)
            tl.store(LOSS + r, tl.where(ignored, 0.0, loss))
        if HAS_GRAD:
            c1 = scale
            if ZLOSS:
                c1 = scale * (1.0 + 2.0 * z * lse)
            g = _grad_chunk(x2, cols, t, lse2, c1, scale * eps / V, scale * (1.0 - eps), SMOOTH)
            g = tl.where(ignored, 0.0, g)
            tl.store(G + r * stride_g + cols, g.to(G.dtype.element_ty), mask=mask)
        it += 1
