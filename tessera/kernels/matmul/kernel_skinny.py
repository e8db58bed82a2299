"""Skinny GEMM for decode shapes (M up to a few dozen rows): the weight is streamed once.

With few rows, ``a @ b`` is bound by reading ``b``; the kernel's job is to keep enough of it in
flight. Each program owns a [BN] slice of N and a slice of K (split-K when N alone gives too few
programs), and reads its ``b`` tiles with TMA copies pipelined ``num_stages`` deep. The product
is computed swapped, ``acc[BN, BM] = b_tileᵀ · a_tileᵀ``, so the weight tile is the MMA's wide
operand (wgmma needs 64 rows; ``a`` has as few as one). Split-K partial sums meet in an fp32
workspace (:func:`~.splitk.finish_tile`).
"""
from __future__ import annotations

import triton
import triton.language as tl

from .splitk import finish_tile, split_tile
from .tiles import load_operands, operand_descs


@triton.jit
def skinny_matmul_kernel(a_ptr, b_ptr, c_ptr, sa_ptr, sb_ptr, bias_ptr, res_ptr, pre_ptr, ws_ptr, cnt_ptr,
                         M, N, K, lda, ldb, stride_rm, stride_rn,
                         A_KMAJOR: tl.constexpr, B_KMAJOR: tl.constexpr,
                         BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, SPLIT_K: tl.constexpr,
                         STAGES: tl.constexpr, SWAP: tl.constexpr,
                         SCALE_A: tl.constexpr, SCALE_B: tl.constexpr, HAS_BIAS: tl.constexpr,
                         ACT: tl.constexpr, HAS_RES: tl.constexpr, STORE_PRE: tl.constexpr):
    a_desc, b_desc = operand_descs(a_ptr, b_ptr, M, N, K, lda, ldb, A_KMAJOR, B_KMAJOR, BM, BN, BK)
    tile, split, pid_m, pid_n = split_tile(tl.program_id(0), N, BN, SPLIT_K)
    om = pid_m * BM
    on = pid_n * BN
    k_tiles = tl.cdiv(K, BK)
    per_split = tl.cdiv(k_tiles, SPLIT_K)
    k_lo = split * per_split
    k_hi = tl.minimum(k_tiles, k_lo + per_split)
    if SWAP:
        acc_t = tl.zeros((BN, BM), dtype=tl.float32)
    else:
        acc = tl.zeros((BM, BN), dtype=tl.float32)
    for ki in tl.range(k_lo, k_hi, num_stages=STAGES):
        ok = ki * BK
        a, b = load_operands(a_desc, b_desc, om, on, ok, A_KMAJOR, B_KMAJOR)
        if SWAP:
            acc_t = tl.dot(b.T, a.T, acc_t)
        else:
            acc = tl.dot(a, b, acc)
    if SWAP:
        acc = acc_t.T

    offs_m = om + tl.arange(0, BM)
    offs_n = on + tl.arange(0, BN)
    finish_tile(acc, tile, split, offs_m, offs_n, M, N, c_ptr, ws_ptr, cnt_ptr, sa_ptr, sb_ptr, bias_ptr, res_ptr,
                pre_ptr, stride_rm, stride_rn, BM, BN, SPLIT_K, SCALE_A, SCALE_B, HAS_BIAS, ACT, HAS_RES, STORE_PRE)
