"""Triton helpers shared by the attention kernels: sequence bounds, tile loads, score masks.

Every tile helper takes ``USE_TMA``: 0 loads through masked pointers (any strides; runs in the
Triton interpreter); 1 through per-program device-side tensor descriptors over one head's
[rows, D] matrix; 2 through host-built 4-D descriptors over [B, H, S, D] passed as kernel
arguments. Both descriptor kinds use Hopper's bulk copy engine and zero-fill outside the
sequence.
"""
from __future__ import annotations

import triton
import triton.language as tl

LOG2E_HOST = 1.4426950408889634
LOG2E = tl.constexpr(LOG2E_HOST)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def seq_bounds(CU, b, SEQ, VARLEN: tl.constexpr):
    """(start, length) of batch entry b: from the offsets CU when VARLEN, else (0, SEQ)."""
    if VARLEN:
        start = tl.load(CU + b)
        length = tl.load(CU + b + 1) - start
    else:
        start = b * 0
        length = SEQ + b * 0
    return start, length


@triton.jit
def query_program(CU_Q, CU_K, H, GROUP, SEQ_Q, SEQ_K, BLOCK_M: tl.constexpr, CAUSAL: tl.constexpr,
                  VARLEN: tl.constexpr):
    """(b, h, kv head, q start, q length, k start, k length, first query row) of a program over
    (query block, batch x head). Causal grids run the heaviest query blocks (most keys) first, so
    the tail of the grid is short."""
    pid_m = tl.program_id(0)
    if CAUSAL:
        pid_m = tl.num_programs(0) - 1 - pid_m
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    q_start, seqlen_q = seq_bounds(CU_Q, b, SEQ_Q, VARLEN)
    k_start, seqlen_k = seq_bounds(CU_K, b, SEQ_K, VARLEN)
    return b, h, h // GROUP, q_start, seqlen_q, k_start, seqlen_k, pid_m * BLOCK_M


@triton.jit
def key_range(start_m, seqlen_q, seqlen_k, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr):
    """(full_end, hi): keys [0, full_end) are visible to every row of the query block, [full_end, hi)
    need masking (diagonal or sequence end), keys from hi on are skipped (above the diagonal)."""
    if CAUSAL:
        diag = seqlen_k - seqlen_q
        hi = tl.minimum(seqlen_k, start_m + BLOCK_M + diag)
        full_end = tl.maximum(start_m + diag + 1, 0) // BLOCK_N * BLOCK_N
        full_end = tl.minimum(full_end, seqlen_k // BLOCK_N * BLOCK_N)
    else:
        hi = seqlen_k
        full_end = seqlen_k // BLOCK_N * BLOCK_N
    return full_end, hi


@triton.jit
def head_offset(b, h, s_b, s_h):
    """64-bit element offset of head (b, h) in a tensor with batch stride s_b and head stride s_h."""
    return b.to(tl.int64) * s_b + h.to(tl.int64) * s_h


@triton.jit
def make_desc(base, rows, s_row, BLOCK_R: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
              USE_TMA: tl.constexpr):
    """A [rows, HEAD_DIM] tensor descriptor with [BLOCK_R, D_PAD] blocks, or the base pointer itself."""
    if USE_TMA == 1:
        return tl.make_tensor_descriptor(base, shape=[rows, HEAD_DIM], strides=[s_row, 1],
                                         block_shape=[BLOCK_R, D_PAD])
    else:
        return base


@triton.jit
def tile_source(T, b, h, start, s_b, s_h, s_row, rows, BLOCK_R: tl.constexpr, HEAD_DIM: tl.constexpr,
                D_PAD: tl.constexpr, USE_TMA: tl.constexpr):
    """What :func:`load_tile` reads head (b, h) from: the host descriptor T itself (USE_TMA 2), a
    device descriptor (1), or the head's base pointer (0); ``start`` is the sequence's first row."""
    if USE_TMA == 2:
        return T
    else:
        base = T + head_offset(b, h, s_b, s_h) + start.to(tl.int64) * s_row
        return make_desc(base, rows, s_row, BLOCK_R, HEAD_DIM, D_PAD, USE_TMA)


@triton.jit
def load_tile(desc, b, h, row0, rows, s_row, s_d, BLOCK_R: tl.constexpr, HEAD_DIM: tl.constexpr,
              D_PAD: tl.constexpr, USE_TMA: tl.constexpr, CHECK_ROWS: tl.constexpr):
    """Rows [row0, row0 + BLOCK_R) of head (b, h)'s [rows, HEAD_DIM] matrix, zero outside it."""
    if USE_TMA == 2:
        return desc.load([b, h, row0, 0]).reshape(BLOCK_R, D_PAD)
    elif USE_TMA == 1:
        return desc.load([row0, 0])
    else:
        # 64-bit row base, 32-bit offsets inside the tile (fewer registers).
        offs_r = tl.arange(0, BLOCK_R)
        offs_d = tl.arange(0, D_PAD)
        ptrs = (desc + tl.cast(row0, tl.int64) * s_row) + (offs_r[:, None] * s_row + offs_d[None, :] * s_d)
        offs_r = offs_r + row0
        if CHECK_ROWS:
            if HEAD_DIM == D_PAD:
                return tl.load(ptrs, mask=offs_r[:, None] < rows, other=0.0)
            else:
                return tl.load(ptrs, mask=(offs_r[:, None] < rows) & (offs_d[None, :] < HEAD_DIM), other=0.0)
        else:
            if HEAD_DIM == D_PAD:
                return tl.load(ptrs)
            else:
                return tl.load(ptrs, mask=offs_d[None, :] < HEAD_DIM, other=0.0)


@triton.jit
def load_tile_t(desc, b, h, col0, cols, s_col, s_d, BLOCK_C: tl.constexpr, D_PAD: tl.constexpr,
                USE_TMA: tl.constexpr, CHECK_COLS: tl.constexpr):
    """Columns [col0, col0 + BLOCK_C) of head (b, h)'s [D, cols] matrix (a sequence-contiguous
    layout, as fp8 products need for V), zero outside it. USE_TMA 2 or 0 only."""
    if USE_TMA == 2:
        return desc.load([b, h, 0, col0]).reshape(D_PAD, BLOCK_C)
    else:
        offs_c = tl.arange(0, BLOCK_C)
        offs_d = tl.arange(0, D_PAD)
        ptrs = (desc + tl.cast(col0, tl.int64) * s_col) + (offs_d[:, None] * s_d + offs_c[None, :] * s_col)
        if CHECK_COLS:
            return tl.load(ptrs, mask=(offs_c[None, :] + col0) < cols, other=0.0)
        else:
            return tl.load(ptrs)


@triton.jit
def store_tile(desc, value, b, h, row0, rows, s_row, s_d, BLOCK_R: tl.constexpr, HEAD_DIM: tl.constexpr,
               D_PAD: tl.constexpr, USE_TMA: tl.constexpr):
    """Store a [BLOCK_R, D_PAD] tile at rows row0.. of head (b, h), clipped to [rows, HEAD_DIM]."""
    if USE_TMA == 2:
        desc.store([b, h, row0, 0], value.reshape(1, 1, BLOCK_R, D_PAD))
    elif USE_TMA == 1:
        desc.store([row0, 0], value)
    else:
        offs_r = tl.arange(0, BLOCK_R)
        offs_d = tl.arange(0, D_PAD)
        ptrs = (desc + tl.cast(row0, tl.int64) * s_row) + (offs_r[:, None] * s_row + offs_d[None, :] * s_d)
        offs_r = offs_r + row0
        tl.store(ptrs, value, mask=(offs_r[:, None] < rows) & (offs_d[None, :] < HEAD_DIM))


@triton.jit
def visible(offs_m, offs_n, seqlen_q, seqlen_k, CAUSAL: tl.constexpr):
    """Bool [M, N] tile: key n exists and (if causal) n <= m + seqlen_k - seqlen_q."""
    ok = offs_n[None, :] < seqlen_k
    if CAUSAL:
        ok = ok & (offs_n[None, :] <= offs_m[:, None] + (seqlen_k - seqlen_q))
    return ok


@triton.jit
def user_mask(mask_base, offs_m, offs_n, s_mq, s_mk, seqlen_q, seqlen_k, MASK_KIND: tl.constexpr):
    """The user's mask tile in [M, N]: for MASK_KIND 1 (bool) a keep tile, for 2 the additive values."""
    inb = (offs_m[:, None] < seqlen_q) & (offs_n[None, :] < seqlen_k)
    ptrs = mask_base + offs_m[:, None].to(tl.int64) * s_mq + offs_n[None, :].to(tl.int64) * s_mk
    if MASK_KIND == 1:
        return tl.load(ptrs, mask=inb, other=0) != 0
    else:
        return tl.load(ptrs, mask=inb, other=0.0).to(tl.float32)


@triton.jit
def dropout_keep(seed, drop_base, offs_m, offs_n, SEQ_K, dropout_p):
    """Keep tile [M, N]: philox uniform at ((b*H + h)*Sq + m)*Sk + n is >= dropout_p."""
    offs = drop_base + offs_m[:, None].to(tl.int64) * SEQ_K + offs_n[None, :].to(tl.int64)
    return tl.rand(seed, offs) >= dropout_p
