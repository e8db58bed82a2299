"""Triton kernels shared by layer_norm and rms_norm (``IS_RMS`` picks), with an optional fused
residual add (``HAS_RES``), optional weight and bias.

Two shapes of each: *fused* keeps ``ROWS`` whole rows in registers (one pass over HBM);
*blocked* walks one long row in ``BLOCK_N`` slices (two passes: statistics, then output).
``HAS_DRES`` adds the residual stream's own upstream gradient into ``dx`` (add+norm backward).
The backward kernels run on a persistent grid; each program sums its rows' weight and
bias gradients in registers (or in its own row of the partial buffer, when blocked) and
:func:`col_sum_kernel` reduces the partials, so no two programs touch the same address.
"""
import triton
import triton.language as tl


@triton.jit
def norm_fwd_fused_kernel(X, R, W, B, Y, S, MEAN, RSTD, M, N,
                          stride_x, stride_r, stride_y, stride_s, eps,
                          IS_RMS: tl.constexpr, HAS_RES: tl.constexpr, HAS_W: tl.constexpr,
                          HAS_B: tl.constexpr, BLOCK_N: tl.constexpr, ROWS: tl.constexpr,
                          EVICT: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_N)
    rmask = rows < M
    cmask = cols < N
    mask = rmask[:, None] & cmask[None, :]
    r64 = rows.to(tl.int64)[:, None]
    x = tl.load(X + r64 * stride_x + cols[None, :], mask=mask, other=0.0, eviction_policy=EVICT).to(tl.float32)
    if HAS_RES:
        r = tl.load(R + r64 * stride_r + cols[None, :], mask=mask, other=0.0, eviction_policy=EVICT)
        s = (x + r.to(tl.float32)).to(S.dtype.element_ty)
        tl.store(S + r64 * stride_s + cols[None, :], s, mask=mask)
        x = s.to(tl.float32)  # normalise the stored residual stream, exactly what backward reads
    if IS_RMS:
        rstd = tl.rsqrt(tl.sum(x * x, axis=1) / N + eps)
        xhat = x * rstd[:, None]
    else:
        mean = tl.sum(x, axis=1) / N
        xc = tl.where(mask, x - mean[:, None], 0.0)
        rstd = tl.rsqrt(tl.sum(xc * xc, axis=1) / N + eps)
        xhat = xc * rstd[:, None]
        tl.store(MEAN + rows, mean, mask=rmask)
    tl.store(RSTD + rows, rstd, mask=rmask)
    y = xhat
    if HAS_W:
        y = y * tl.load(W + cols, mask=cmask, other=0.0, eviction_policy="evict_last").to(tl.float32)[None, :]
    if HAS_B:
        y = y + tl.load(B + cols, mask=cmask, other=0.0, eviction_policy="evict_last").to(tl.float32)[None, :]
    tl.store(Y + r64 * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def norm_fwd_blocked_kernel(X, R, W, B, Y, S, MEAN, RSTD, M, N,
                            stride_x, stride_r, stride_y, stride_s, eps,
                            IS_RMS: tl.constexpr, HAS_RES: tl.constexpr, HAS_W: tl.constexpr,
                            HAS_B: tl.constexpr, BLOCK_N: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = X + row * stride_x
    s_row = S + row * stride_s
    cols0 = tl.arange(0, BLOCK_N)
    # pass 1: statistics; layer norm merges per-block (count, mean, M2) as in Chan et al.
    sq = tl.zeros([BLOCK_N], dtype=tl.float32)
    mean = 0.0
    m2 = 0.0
    count = 0.0
    for start in range(0, N, BLOCK_N):
        cols = start + cols0
        cmask = cols < N
        x = tl.load(x_row + cols, mask=cmask, other=0.0).to(tl.float32)
        if HAS_RES:
            r = tl.load(R + row * stride_r + cols, mask=cmask, other=0.0).to(tl.float32)
            s = (x + r).to(S.dtype.element_ty)
            tl.store(s_row + cols, s, mask=cmask)
            x = s.to(tl.float32)
        if IS_RMS:
            sq += x * x
        else:
            nb = tl.minimum(N - start, BLOCK_N).to(tl.float32)
            mean_b = tl.sum(x, axis=0) / nb
            d = tl.where(cmask, x - mean_b, 0.0)
            m2_b = tl.sum(d * d, axis=0)
            total = count + nb
            delta = mean_b - mean
            mean = mean + delta * (nb / total)
            m2 = m2 + m2_b + delta * delta * (count * nb / total)
            count = total
    if IS_RMS:
        rstd = tl.rsqrt(tl.sum(sq, axis=0) / N + eps)
        mean = 0.0
    else:
        rstd = tl.rsqrt(m2 / N + eps)
        tl.store(MEAN + row, mean)
    tl.store(RSTD + row, rstd)
    # pass 2: normalise; with a residual, read back the stream this program just wrote
    for start in range(0, N, BLOCK_N):
        cols = start + cols0
        cmask = cols < N
        if HAS_RES:
            x = tl.load(s_row + cols, mask=cmask, other=0.0).to(tl.float32)
        else:
            x = tl.load(x_row + cols, mask=cmask, other=0.0, eviction_policy="evict_first").to(tl.float32)
        y = (x - mean) * rstd
        if HAS_W:
            y = y * tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
        if HAS_B:
            y = y + tl.load(B + cols, mask=cmask, other=0.0).to(tl.float32)
        tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=cmask)


@triton.jit
def _load_dy_x(DY, X, blk, M, stride_dy, stride_x, cols, cmask, ROWS: tl.constexpr, EVICT: tl.constexpr):
    """Rows [blk * ROWS, (blk + 1) * ROWS) of dy and x, in their own dtype (rows past M read as 0)."""
    rows = blk * ROWS + tl.arange(0, ROWS)
    mask = (rows < M)[:, None] & cmask[None, :]
    r64 = rows.to(tl.int64)[:, None]
    dy = tl.load(DY + r64 * stride_dy + cols[None, :], mask=mask, other=0.0, eviction_policy=EVICT)
    x = tl.load(X + r64 * stride_x + cols[None, :], mask=mask, other=0.0, eviction_policy=EVICT)
    return dy, x


@triton.jit
def norm_bwd_fused_kernel(DY, X, W, MEAN, RSTD, DX, DW_PART, DB_PART, DRES, M, N,
                          stride_dy, stride_x, stride_dx, stride_dres,
                          IS_RMS: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                          HAS_DRES: tl.constexpr, BLOCK_N: tl.constexpr, ROWS: tl.constexpr,
                          EVICT: tl.constexpr, PREFETCH: tl.constexpr):
    pid = tl.program_id(0)
    n_prog = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_N)
    cmask = cols < N
    if HAS_W:
        w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
    # 2-D accumulators: the sum over this program's rows is taken once, after the loop,
    # instead of a cross-warp reduction in every iteration
    dw = tl.zeros([ROWS, BLOCK_N], dtype=tl.float32)
    db = tl.zeros([ROWS, BLOCK_N], dtype=tl.float32)
    n_blocks = tl.cdiv(M, ROWS)
    if PREFETCH:  # the next block's loads are in flight during this block's reductions (barriers)
        dy_n, x_n = _load_dy_x(DY, X, pid, M, stride_dy, stride_x, cols, cmask, ROWS, EVICT)
    for blk in range(pid, n_blocks, n_prog):
        rows = blk * ROWS + tl.arange(0, ROWS)
        rmask = rows < M
        mask = rmask[:, None] & cmask[None, :]
        r64 = rows.to(tl.int64)[:, None]
        if PREFETCH:
            dy = dy_n.to(tl.float32)
            x = x_n.to(tl.float32)
            dy_n, x_n = _load_dy_x(DY, X, blk + n_prog, M, stride_dy, stride_x, cols, cmask, ROWS, EVICT)
        else:
            dy_r, x_r = _load_dy_x(DY, X, blk, M, stride_dy, stride_x, cols, cmask, ROWS, EVICT)
            dy = dy_r.to(tl.float32)
            x = x_r.to(tl.float32)
        rstd = tl.load(RSTD + rows, mask=rmask, other=0.0)
        if IS_RMS:
            xhat = x * rstd[:, None]
        else:
            mean = tl.load(MEAN + rows, mask=rmask, other=0.0)
            xhat = (x - mean[:, None]) * rstd[:, None]
        if HAS_W:
            wdy = dy * w[None, :]
        else:
            wdy = dy
        c1 = tl.sum(xhat * wdy, axis=1) / N
        if IS_RMS:
            dx = (wdy - xhat * c1[:, None]) * rstd[:, None]
        else:
            c2 = tl.sum(wdy, axis=1) / N
            dx = (wdy - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
        if HAS_DRES:
            dx += tl.load(DRES + r64 * stride_dres + cols[None, :], mask=mask, other=0.0,
                          eviction_policy=EVICT).to(tl.float32)
        tl.store(DX + r64 * stride_dx + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)
        if HAS_W:
            dw += dy * xhat
        if HAS_B:
            db += dy
    if HAS_W:
        tl.store(DW_PART + pid.to(tl.int64) * N + cols, tl.sum(dw, axis=0), mask=cmask)
    if HAS_B:
        tl.store(DB_PART + pid.to(tl.int64) * N + cols, tl.sum(db, axis=0), mask=cmask)


@triton.jit
def norm_bwd_blocked_kernel(DY, X, W, MEAN, RSTD, DX, DW_PART, DB_PART, DRES, M, N,
                            stride_dy, stride_x, stride_dx, stride_dres,
                            IS_RMS: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                            HAS_DRES: tl.constexpr, BLOCK_N: tl.constexpr):
    pid = tl.program_id(0)
    n_prog = tl.num_programs(0)
    cols0 = tl.arange(0, BLOCK_N)
    part_row = pid.to(tl.int64) * N
    for row in range(pid, M, n_prog):
        row64 = tl.cast(row, tl.int64)
        rstd = tl.load(RSTD + row)
        if IS_RMS:
            mean = 0.0
        else:
            mean = tl.load(MEAN + row)
        c1v = tl.zeros([BLOCK_N], dtype=tl.float32)
        c2v = tl.zeros([BLOCK_N], dtype=tl.float32)
        for start in range(0, N, BLOCK_N):
            cols = start + cols0
            cmask = cols < N
            dy = tl.load(DY + row64 * stride_dy + cols, mask=cmask, other=0.0).to(tl.float32)
            x = tl.load(X + row64 * stride_x + cols, mask=cmask, other=0.0).to(tl.float32)
            wdy = dy
            if HAS_W:
                wdy = dy * tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
            c1v += (x - mean) * rstd * wdy
            c2v += wdy
        c1 = tl.sum(c1v, axis=0) / N
        c2 = tl.sum(c2v, axis=0) / N
        for start in range(0, N, BLOCK_N):
            cols = start + cols0
            cmask = cols < N
            dy = tl.load(DY + row64 * stride_dy + cols, mask=cmask, other=0.0).to(tl.float32)
            x = tl.load(X + row64 * stride_x + cols, mask=cmask, other=0.0).to(tl.float32)
            xhat = (x - mean) * rstd
            wdy = dy
            if HAS_W:
                wdy = dy * tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
            if IS_RMS:
                dx = (wdy - xhat * c1) * rstd
            else:
                dx = (wdy - (xhat * c1 + c2)) * rstd
            if HAS_DRES:
                dx += tl.load(DRES + row64 * stride_dres + cols, mask=cmask, other=0.0).to(tl.float32)
            tl.store(DX + row64 * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=cmask)
            # each program owns its row of the partial buffers: no other program writes there
            if HAS_W:
                p = tl.load(DW_PART + part_row + cols, mask=cmask, other=0.0)
                tl.store(DW_PART + part_row + cols, p + dy * xhat, mask=cmask)
            if HAS_B:
                p = tl.load(DB_PART + part_row + cols, mask=cmask, other=0.0)
                tl.store(DB_PART + part_row + cols, p + dy, mask=cmask)


@triton.jit
def col_sum_kernel(PART, OUT, G, N, BLOCK_G: tl.constexpr, BLOCK_C: tl.constexpr):
    """OUT[c] = sum over g of PART[g, c], in a fixed order (deterministic)."""
    pid = tl.program_id(0)
    cols = pid * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < N
    acc = tl.zeros([BLOCK_G, BLOCK_C], dtype=tl.float32)
    for g0 in range(0, G, BLOCK_G):
        g = g0 + tl.arange(0, BLOCK_G)
        m = (g < G)[:, None] & cmask[None, :]
        acc += tl.load(PART + g.to(tl.int64)[:, None] * N + cols[None, :], mask=m, other=0.0)
    tl.store(OUT + cols, tl.sum(acc, axis=0).to(OUT.dtype.element_ty), mask=cmask)
