"""Flash attention forward (FA2 schedule): one program per (query block, batch, head).

Scores live only in registers: each program streams K/V blocks, keeps a running row max and
row sum in base 2 (the softmax scale folded into log2(e)), and rescales its accumulator.
Key blocks wholly visible under causality run without any mask arithmetic; only the blocks
that straddle the diagonal or the sequence end are masked, and blocks above the diagonal are
skipped. The same kernel serves dense ``[B, H, S, D]`` and packed variable-length inputs.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .tiles import (LN2, LOG2E, dropout_keep, head_offset, key_range, load_tile, load_tile_t, query_program,
                    store_tile, tile_source, user_mask, visible)

# fp8 probabilities are scaled by 2^8 before the e4m3 cast, so that small ones keep mantissa
# bits (e4m3's smallest normal is 2^-6); the output is scaled back at the end.
P_SCALE = tl.constexpr(256.0)


@triton.jit
def _attend(acc, l_i, m_i, q, k_desc, v_desc, b, hk, start_n, offs_m, seqlen_q, seqlen_k,
            s_ks, s_kd, s_vs, s_vd, qk_scale, mask_base, s_mq, s_mk, seed, drop_base, SEQ_K, dropout_p,
            HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_N: tl.constexpr,
            EDGE: tl.constexpr, CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, DROPOUT: tl.constexpr,
            USE_TMA: tl.constexpr, FP8: tl.constexpr):
    """Fold key block [start_n, start_n + BLOCK_N) into the running (acc, l, m).

    EDGE blocks may hold keys past the end or above the diagonal and are masked. With FP8, V is
    read as [D, S] tiles (fp8 products need the reduced dim contiguous in both operands)."""
    k = load_tile(k_desc, b, hk, start_n, seqlen_k, s_ks, s_kd, BLOCK_N, HEAD_DIM, D_PAD, USE_TMA, EDGE)
    qk = tl.dot(q, tl.trans(k))
    offs_n = start_n + tl.arange(0, BLOCK_N)
    if EDGE or MASK_KIND != 0:
        s = qk * qk_scale
        if MASK_KIND == 2:
            s += user_mask(mask_base, offs_m, offs_n, s_mq, s_mk, seqlen_q, seqlen_k, MASK_KIND) * LOG2E
        if EDGE:
            s = tl.where(visible(offs_m, offs_n, seqlen_q, seqlen_k, CAUSAL), s, float("-inf"))
        if MASK_KIND == 1:
            s = tl.where(user_mask(mask_base, offs_m, offs_n, s_mq, s_mk, seqlen_q, seqlen_k, MASK_KIND),
                         s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # A row that has seen no visible key keeps m = -inf; shift it by 0 so exp2 gives 0, not NaN.
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_use[:, None])
    else:
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        m_use = m_new
        p = tl.math.exp2(qk * qk_scale - m_use[:, None])
    alpha = tl.math.exp2(m_i - m_use)
    l_i = l_i * alpha + tl.sum(p, 1)
    if DROPOUT:
        p = tl.where(dropout_keep(seed, drop_base, offs_m, offs_n, SEQ_K, dropout_p), p, 0.0)
    acc = acc * alpha[:, None]
    if FP8:
        vt = load_tile_t(v_desc, b, hk, start_n, seqlen_k, s_vs, s_vd, BLOCK_N, D_PAD, USE_TMA, EDGE)
        acc = tl.dot((p * P_SCALE).to(vt.dtype), tl.trans(vt), acc)
    else:
        v = load_tile(v_desc, b, hk, start_n, seqlen_k, s_vs, s_vd, BLOCK_N, HEAD_DIM, D_PAD, USE_TMA, EDGE)
        acc = tl.dot(p.to(v.dtype), v, acc)
    return acc, l_i, m_new


@triton.jit
def _fwd_kernel(Q, K, V, O, LSE, MASK, CU_Q, CU_K, DESCALE,
                s_qb, s_qh, s_qs, s_qd, s_kb, s_kh, s_ks, s_kd, s_vb, s_vh, s_vs, s_vd,
                s_ob, s_oh, s_os, s_od, s_lb, s_lh, s_mb, s_mh, s_mq, s_mk,
                H, GROUP, SEQ_Q, SEQ_K, qk_scale, dropout_p, seed,
                HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, DROPOUT: tl.constexpr, VARLEN: tl.constexpr,
                USE_TMA: tl.constexpr, FP8: tl.constexpr = False):
    b, h, hk, q_start, seqlen_q, k_start, seqlen_k, start_m = query_program(CU_Q, CU_K, H, GROUP, SEQ_Q, SEQ_K,
                                                                             BLOCK_M, CAUSAL, VARLEN)
    if start_m >= seqlen_q:
        return
    b64 = b.to(tl.int64)
    q_desc = tile_source(Q, b, h, q_start, s_qb, s_qh, s_qs, seqlen_q, BLOCK_M, HEAD_DIM, D_PAD, USE_TMA)
    k_desc = tile_source(K, b, hk, k_start, s_kb, s_kh, s_ks, seqlen_k, BLOCK_N, HEAD_DIM, D_PAD, USE_TMA)
    v_desc = tile_source(V, b, hk, k_start, s_vb, s_vh, s_vs, seqlen_k, BLOCK_N, HEAD_DIM, D_PAD, USE_TMA)
    o_desc = tile_source(O, b, h, q_start, s_ob, s_oh, s_os, seqlen_q, BLOCK_M, HEAD_DIM, D_PAD, USE_TMA)
    mask_base = MASK + head_offset(b, h, s_mb, s_mh)
    drop_base = (b64 * H + h) * SEQ_Q * SEQ_K

    if FP8:  # DESCALE holds the dequantisation multipliers of q, k, v
        qk_scale = qk_scale * tl.load(DESCALE) * tl.load(DESCALE + 1)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    q = load_tile(q_desc, b, h, start_m, seqlen_q, s_qs, s_qd, BLOCK_M, HEAD_DIM, D_PAD, USE_TMA, True)
    acc = tl.zeros([BLOCK_M, D_PAD], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)

    full_end, hi = key_range(start_m, seqlen_q, seqlen_k, BLOCK_M, BLOCK_N, CAUSAL)
    for start_n in range(0, full_end, BLOCK_N):
        acc, l_i, m_i = _attend(acc, l_i, m_i, q, k_desc, v_desc, b, hk, start_n, offs_m, seqlen_q, seqlen_k,
                                s_ks, s_kd, s_vs, s_vd, qk_scale, mask_base, s_mq, s_mk, seed, drop_base, SEQ_K,
                                dropout_p, HEAD_DIM, D_PAD, BLOCK_N, False, CAUSAL, MASK_KIND, DROPOUT, USE_TMA, FP8)
    for start_n in range(full_end, hi, BLOCK_N):
        acc, l_i, m_i = _attend(acc, l_i, m_i, q, k_desc, v_desc, b, hk, start_n, offs_m, seqlen_q, seqlen_k,
                                s_ks, s_kd, s_vs, s_vd, qk_scale, mask_base, s_mq, s_mk, seed, drop_base, SEQ_K,
                                dropout_p, HEAD_DIM, D_PAD, BLOCK_N, True, CAUSAL, MASK_KIND, DROPOUT, USE_TMA, FP8)

    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    inv = 1.0 / l_safe
    if DROPOUT:
        inv = inv / (1.0 - dropout_p)
    if FP8:
        inv = inv * (tl.load(DESCALE + 2) / P_SCALE)
    o = acc * inv[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(l_safe)) * LN2)
    tl.store(LSE + head_offset(b, h, s_lb, s_lh) + q_start + offs_m, lse, mask=offs_m < seqlen_q)
    if FP8:
        o = o.to(tl.bfloat16)
    else:
        o = o.to(q.dtype)
    store_tile(o_desc, o, b, h, start_m, seqlen_q, s_os, s_od, BLOCK_M, HEAD_DIM, D_PAD, USE_TMA)
