"""Flash attention backward (FA2 schedule) in three launches, without atomics.

1. ``_delta_kernel``: delta_i = sum_d dO_id * O_id (fp32), the softmax-gradient row term.
2. ``_dkdv_kernel``: one program per (key block, batch, kv head) holds dK, dV in registers
   and streams every query block of every query head of its group, so GQA groups are summed
   in registers and each dK/dV row is written once.
3. ``_dq_kernel``: one program per (query block, batch, head) streams the key blocks.

Probabilities are recomputed from the saved lse; dropout regenerates the forward's mask
from the same philox offsets. Blocks wholly visible under causality skip mask arithmetic.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .tiles import (LOG2E, dropout_keep, head_offset, key_range, load_tile, query_program, seq_bounds, store_tile,
                    tile_source, user_mask, visible)


@triton.jit
def _delta_kernel(O, DO, DELTA, CU_Q, s_ob, s_oh, s_os, s_od, s_db, s_dh, s_ds, s_dd, s_lb, s_lh,
                  H, SEQ_Q, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr,
                  VARLEN: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    q_start, seqlen_q = seq_bounds(CU_Q, b, SEQ_Q, VARLEN)
    start_m = pid_m * BLOCK_M
    if start_m >= seqlen_q:
        return
    o_base = tile_source(O, b, h, q_start, s_ob, s_oh, s_os, seqlen_q, BLOCK_M, HEAD_DIM, D_PAD, 0)
    do_base = tile_source(DO, b, h, q_start, s_db, s_dh, s_ds, seqlen_q, BLOCK_M, HEAD_DIM, D_PAD, 0)
    o = load_tile(o_base, b, h, start_m, seqlen_q, s_os, s_od, BLOCK_M, HEAD_DIM, D_PAD, 0, True)
    do = load_tile(do_base, b, h, start_m, seqlen_q, s_ds, s_dd, BLOCK_M, HEAD_DIM, D_PAD, 0, True)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    tl.store(DELTA + head_offset(b, h, s_lb, s_lh) + q_start + offs_m, delta, mask=offs_m < seqlen_q)


@triton.jit
def _row_stats(LSE, DELTA, row_base, offs_m, seqlen_q):
    """lse in base 2 (+inf for rows with no visible key, so their p is 0) and delta."""
    ok = offs_m < seqlen_q
    lse = tl.load(LSE + row_base + offs_m, mask=ok, other=0.0)
    lse2 = tl.where(lse == float("-inf"), float("inf"), lse * LOG2E)
    delta = tl.load(DELTA + row_base + offs_m, mask=ok, other=0.0)
    return lse2, delta


@triton.jit
def _probs(s, lse2, offs_m, offs_n, seqlen_q, seqlen_k, mask_base, s_mq, s_mk,
           EDGE: tl.constexpr, CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr):
    """The forward's probabilities P [M, N] from scores ``s`` (base 2) and the rows' base-2 lse,
    masked exactly as the forward masked them."""
    if MASK_KIND == 2:
        s += user_mask(mask_base, offs_m, offs_n, s_mq, s_mk, seqlen_q, seqlen_k, MASK_KIND) * LOG2E
    p = tl.math.exp2(s - lse2[:, None])
    if EDGE:
        p = tl.where(visible(offs_m, offs_n, seqlen_q, seqlen_k, CAUSAL), p, 0.0)
    if MASK_KIND == 1:
        p = tl.where(user_mask(mask_base, offs_m, offs_n, s_mq, s_mk, seqlen_q, seqlen_k, MASK_KIND), p, 0.0)
    return p


@triton.jit
def _dkdv_step(dk, dv, k, v, q_desc, do_desc, b, h, LSE, DELTA, row_base, start_m, offs_n, seqlen_q, seqlen_k,
               s_qs, s_qd, s_ds, s_dd, qk_scale, mask_base, s_mq, s_mk, seed, drop_base, SEQ_K, dropout_p,
               HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr,
               EDGE: tl.constexpr, CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, DROPOUT: tl.constexpr,
               USE_TMA: tl.constexpr):
    """Add query block [start_m, start_m + BLOCK_M)'s share to dK, dV.

    Tiles are [M, N] so that k and v are only ever the shared-memory operand of a product;
    P and dS are transposed on their way into the dV and dK products."""
    offs_m = start_m + tl.arange(0, BLOCK_M)
    q = load_tile(q_desc, b, h, start_m, seqlen_q, s_qs, s_qd, BLOCK_M, HEAD_DIM, D_PAD, USE_TMA, True)
    do = load_tile(do_desc, b, h, start_m, seqlen_q, s_ds, s_dd, BLOCK_M, HEAD_DIM, D_PAD, USE_TMA, True)
    lse2, delta = _row_stats(LSE, DELTA, row_base, offs_m, seqlen_q)
    p = _probs(tl.dot(q, tl.trans(k)) * qk_scale, lse2, offs_m, offs_n, seqlen_q, seqlen_k, mask_base, s_mq, s_mk,
               EDGE, CAUSAL, MASK_KIND)
    dp = tl.dot(do, tl.trans(v))
    if DROPOUT:
        keep = dropout_keep(seed, drop_base, offs_m, offs_n, SEQ_K, dropout_p)
        inv_keep = 1.0 / (1.0 - dropout_p)
        dv = tl.dot(tl.trans(tl.where(keep, p * inv_keep, 0.0).to(do.dtype)), do, dv)
        dp = tl.where(keep, dp * inv_keep, 0.0)
    else:
        dv = tl.dot(tl.trans(p.to(do.dtype)), do, dv)
    ds = p * (dp - delta[:, None])
    dk = tl.dot(tl.trans(ds.to(q.dtype)), q, dk)
    return dk, dv


@triton.jit
def _dkdv_kernel(Q, K, V, DO, LSE, DELTA, MASK, DK, DV, CU_Q, CU_K,
                 s_qb, s_qh, s_qs, s_qd, s_kb, s_kh, s_ks, s_kd, s_vb, s_vh, s_vs, s_vd,
                 s_db, s_dh, s_ds, s_dd, s_dkb, s_dkh, s_dks, s_dkd, s_dvb, s_dvh, s_dvs, s_dvd,
                 s_lb, s_lh, s_mb, s_mh, s_mq, s_mk,
                 H, HKV, GROUP, SEQ_Q, SEQ_K, qk_scale, sm_scale, dropout_p, seed,
                 HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, DROPOUT: tl.constexpr, VARLEN: tl.constexpr,
                 USE_TMA: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // HKV
    hk = pid_bh % HKV
    q_start, seqlen_q = seq_bounds(CU_Q, b, SEQ_Q, VARLEN)
    k_start, seqlen_k = seq_bounds(CU_K, b, SEQ_K, VARLEN)
    start_n = pid_n * BLOCK_N
    if start_n >= seqlen_k:
        return
    b64 = b.to(tl.int64)
    k_base = tile_source(K, b, hk, k_start, s_kb, s_kh, s_ks, seqlen_k, BLOCK_N, HEAD_DIM, D_PAD, 0)
    v_base = tile_source(V, b, hk, k_start, s_vb, s_vh, s_vs, seqlen_k, BLOCK_N, HEAD_DIM, D_PAD, 0)
    # Rows past the end of the keys come in as zeros; their dK/dV rows are never stored.
    k = load_tile(k_base, b, hk, start_n, seqlen_k, s_ks, s_kd, BLOCK_N, HEAD_DIM, D_PAD, 0, True)
    v = load_tile(v_base, b, hk, start_n, seqlen_k, s_vs, s_vd, BLOCK_N, HEAD_DIM, D_PAD, 0, True)
    offs_n = start_n + tl.arange(0, BLOCK_N)
    dk = tl.zeros([BLOCK_N, D_PAD], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, D_PAD], dtype=tl.float32)

    # Query blocks before m_lo see none of these keys; from m_full on they see all of them.
    if CAUSAL:
        diag = seqlen_k - seqlen_q
        m_lo = tl.maximum(start_n - diag, 0) // BLOCK_M * BLOCK_M
        m_full = (tl.maximum(start_n + BLOCK_N - 1 - diag, 0) + BLOCK_M - 1) // BLOCK_M * BLOCK_M
        m_full = tl.minimum(m_full, (seqlen_q + BLOCK_M - 1) // BLOCK_M * BLOCK_M)
    else:
        m_lo = 0
        m_full = 0
    for g in range(0, GROUP):
        h = hk * GROUP + g
        q_desc = tile_source(Q, b, h, q_start, s_qb, s_qh, s_qs, seqlen_q, BLOCK_M, HEAD_DIM, D_PAD, USE_TMA)
        do_desc = tile_source(DO, b, h, q_start, s_db, s_dh, s_ds, seqlen_q, BLOCK_M, HEAD_DIM, D_PAD, USE_TMA)
        row_base = head_offset(b, h, s_lb, s_lh) + q_start
        mask_base = MASK + head_offset(b, h, s_mb, s_mh)
        drop_base = (b64 * H + h) * SEQ_Q * SEQ_K
        for start_m in range(m_lo, m_full, BLOCK_M):
            dk, dv = _dkdv_step(dk, dv, k, v, q_desc, do_desc, b, h, LSE, DELTA, row_base, start_m, offs_n, seqlen_q,
                                seqlen_k, s_qs, s_qd, s_ds, s_dd, qk_scale, mask_base, s_mq, s_mk, seed, drop_base,
                                SEQ_K, dropout_p, HEAD_DIM, D_PAD, BLOCK_M, True, CAUSAL, MASK_KIND, DROPOUT,
                                USE_TMA)
        for start_m in range(m_full, seqlen_q, BLOCK_M):
            dk, dv = _dkdv_step(dk, dv, k, v, q_desc, do_desc, b, h, LSE, DELTA, row_base, start_m, offs_n, seqlen_q,
                                seqlen_k, s_qs, s_qd, s_ds, s_dd, qk_scale, mask_base, s_mq, s_mk, seed, drop_base,
                                SEQ_K, dropout_p, HEAD_DIM, D_PAD, BLOCK_M, False, CAUSAL, MASK_KIND, DROPOUT,
                                USE_TMA)
    dk = dk * sm_scale
    dk_base = tile_source(DK, b, hk, k_start, s_dkb, s_dkh, s_dks, seqlen_k, BLOCK_N, HEAD_DIM, D_PAD, 0)
    dv_base = tile_source(DV, b, hk, k_start, s_dvb, s_dvh, s_dvs, seqlen_k, BLOCK_N, HEAD_DIM, D_PAD, 0)
    store_tile(dk_base, dk.to(DK.dtype.element_ty), b, hk, start_n, seqlen_k, s_dks, s_dkd, BLOCK_N, HEAD_DIM, D_PAD, 0)
    store_tile(dv_base, dv.to(DV.dtype.element_ty), b, hk, start_n, seqlen_k, s_dvs, s_dvd, BLOCK_N, HEAD_DIM, D_PAD, 0)


@triton.jit
def _dq_step(dq, q, do, lse2, delta, k_desc, v_desc, b, hk, start_n, offs_m, seqlen_q, seqlen_k, s_ks, s_kd, s_vs, s_vd,
             qk_scale, mask_base, s_mq, s_mk, seed, drop_base, SEQ_K, dropout_p,
             HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_N: tl.constexpr,
             EDGE: tl.constexpr, CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, DROPOUT: tl.constexpr,
             USE_TMA: tl.constexpr):
    """Add key block [start_n, start_n + BLOCK_N)'s share to dQ."""
    offs_n = start_n + tl.arange(0, BLOCK_N)
    k = load_tile(k_desc, b, hk, start_n, seqlen_k, s_ks, s_kd, BLOCK_N, HEAD_DIM, D_PAD, USE_TMA, EDGE)
    v = load_tile(v_desc, b, hk, start_n, seqlen_k, s_vs, s_vd, BLOCK_N, HEAD_DIM, D_PAD, USE_TMA, EDGE)
    p = _probs(tl.dot(q, tl.trans(k)) * qk_scale, lse2, offs_m, offs_n, seqlen_q, seqlen_k, mask_base, s_mq, s_mk,
               EDGE, CAUSAL, MASK_KIND)
    dp = tl.dot(do, tl.trans(v))
    if DROPOUT:
        keep = dropout_keep(seed, drop_base, offs_m, offs_n, SEQ_K, dropout_p)
        dp = tl.where(keep, dp * (1.0 / (1.0 - dropout_p)), 0.0)
    ds = p * (dp - delta[:, None])
    dq = tl.dot(ds.to(k.dtype), k, dq)
    return dq


@triton.jit
def _dq_kernel(Q, K, V, DO, LSE, DELTA, MASK, DQ, CU_Q, CU_K,
               s_qb, s_qh, s_qs, s_qd, s_kb, s_kh, s_ks, s_kd, s_vb, s_vh, s_vs, s_vd,
               s_db, s_dh, s_ds, s_dd, s_dqb, s_dqh, s_dqs, s_dqd,
               s_lb, s_lh, s_mb, s_mh, s_mq, s_mk,
               H, GROUP, SEQ_Q, SEQ_K, qk_scale, sm_scale, dropout_p, seed,
               HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, DROPOUT: tl.constexpr, VARLEN: tl.constexpr,
               USE_TMA: tl.constexpr):
    b, h, hk, q_start, seqlen_q, k_start, seqlen_k, start_m = query_program(CU_Q, CU_K, H, GROUP, SEQ_Q, SEQ_K,
                                                                             BLOCK_M, CAUSAL, VARLEN)
    if start_m >= seqlen_q:
        return
    q_base = tile_source(Q, b, h, q_start, s_qb, s_qh, s_qs, seqlen_q, BLOCK_M, HEAD_DIM, D_PAD, 0)
    do_base = tile_source(DO, b, h, q_start, s_db, s_dh, s_ds, seqlen_q, BLOCK_M, HEAD_DIM, D_PAD, 0)
    k_desc = tile_source(K, b, hk, k_start, s_kb, s_kh, s_ks, seqlen_k, BLOCK_N, HEAD_DIM, D_PAD, USE_TMA)
    v_desc = tile_source(V, b, hk, k_start, s_vb, s_vh, s_vs, seqlen_k, BLOCK_N, HEAD_DIM, D_PAD, USE_TMA)
    mask_base = MASK + head_offset(b, h, s_mb, s_mh)
    drop_base = (b.to(tl.int64) * H + h) * SEQ_Q * SEQ_K
    offs_m = start_m + tl.arange(0, BLOCK_M)
    q = load_tile(q_base, b, h, start_m, seqlen_q, s_qs, s_qd, BLOCK_M, HEAD_DIM, D_PAD, 0, True)
    do = load_tile(do_base, b, h, start_m, seqlen_q, s_ds, s_dd, BLOCK_M, HEAD_DIM, D_PAD, 0, True)
    lse2, delta = _row_stats(LSE, DELTA, head_offset(b, h, s_lb, s_lh) + q_start, offs_m, seqlen_q)
    dq = tl.zeros([BLOCK_M, D_PAD], dtype=tl.float32)
    full_end, hi = key_range(start_m, seqlen_q, seqlen_k, BLOCK_M, BLOCK_N, CAUSAL)
    for start_n in range(0, full_end, BLOCK_N):
        dq = _dq_step(dq, q, do, lse2, delta, k_desc, v_desc, b, hk, start_n, offs_m, seqlen_q, seqlen_k, s_ks, s_kd,
                      s_vs, s_vd, qk_scale, mask_base, s_mq, s_mk, seed, drop_base, SEQ_K, dropout_p,
                      HEAD_DIM, D_PAD, BLOCK_N, False, CAUSAL, MASK_KIND, DROPOUT, USE_TMA)
    for start_n in range(full_end, hi, BLOCK_N):
        dq = _dq_step(dq, q, do, lse2, delta, k_desc, v_desc, b, hk, start_n, offs_m, seqlen_q, seqlen_k, s_ks, s_kd,
                      s_vs, s_vd, qk_scale, mask_base, s_mq, s_mk, seed, drop_base, SEQ_K, dropout_p,
                      HEAD_DIM, D_PAD, BLOCK_N, True, CAUSAL, MASK_KIND, DROPOUT, USE_TMA)
    dq = dq * sm_scale
    dq_base = tile_source(DQ, b, h, q_start, s_dqb, s_dqh, s_dqs, seqlen_q, BLOCK_M, HEAD_DIM, D_PAD, 0)
    store_tile(dq_base, dq.to(DQ.dtype.element_ty), b, h, start_m, seqlen_q, s_dqs, s_dqd, BLOCK_M, HEAD_DIM, D_PAD, 0)
