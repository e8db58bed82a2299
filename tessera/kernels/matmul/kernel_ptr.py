"""General GEMM through pointer loads: any strides, up to three broadcast batch dims, masks for
any M/N/K, optional split-K for small-M (decode) shapes. Runs on any CUDA GPU and the interpreter.

Split-K (batch 1 only): program ``s`` of ``SPLIT_K`` sums its slice of K; the slices meet in
an fp32 workspace (:func:`~.splitk.finish_tile`).
"""
from __future__ import annotations

import triton
import triton.language as tl

from .splitk import finish_tile
from .tiles import grouped_tile


@triton.jit
def ptr_matmul_kernel(a_ptr, b_ptr, c_ptr, sa_ptr, sb_ptr, bias_ptr, res_ptr, pre_ptr, ws_ptr, cnt_ptr,
                      M, N, K, B1, B2,
                      sa0, sa1, sa2, sam, sak, sb0, sb1, sb2, sbk, sbn,
                      sr0, sr1, sr2, srm, srn,
                      BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
                      SPLIT_K: tl.constexpr, ACC_F16: tl.constexpr, IEEE: tl.constexpr,
                      SCALE_A: tl.constexpr, SCALE_B: tl.constexpr, HAS_BIAS: tl.constexpr,
                      ACT: tl.constexpr, HAS_RES: tl.constexpr, STORE_PRE: tl.constexpr):
    pid = tl.program_id(0)
    bid = tl.program_id(1)
    num_pid_m = tl.cdiv(M, BM)
    num_pid_n = tl.cdiv(N, BN)
    tile = pid // SPLIT_K
    split = pid % SPLIT_K
    pid_m, pid_n = grouped_tile(tile, num_pid_m, num_pid_n, GROUP_M)

    i2 = (bid % B2).to(tl.int64)
    i1 = ((bid // B2) % B1).to(tl.int64)
    i0 = (bid // (B1 * B2)).to(tl.int64)
    a_ptr += i0 * sa0 + i1 * sa1 + i2 * sa2
    b_ptr += i0 * sb0 + i1 * sb1 + i2 * sb2
    res_ptr += i0 * sr0 + i1 * sr1 + i2 * sr2
    c_off = bid.to(tl.int64) * M * N
    c_ptr += c_off
    pre_ptr += c_off

    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_k = tl.arange(0, BK)
    # Clamp rows/cols instead of masking them: loads stay in bounds, and the extra rows
    # (duplicates) are dropped at the store.
    rm = tl.where(offs_m < M, offs_m, 0)
    rn = tl.where(offs_n < N, offs_n, 0)
    k_per_split = tl.cdiv(tl.cdiv(K, BK), SPLIT_K) * BK
    k_lo = split * k_per_split
    k_hi = tl.minimum(K, k_lo + k_per_split)
    a_ptrs = a_ptr + rm[:, None] * sam + (k_lo + offs_k)[None, :] * sak
    b_ptrs = b_ptr + (k_lo + offs_k)[:, None] * sbk + rn[None, :] * sbn
    if ACC_F16:
        acc = tl.zeros((BM, BN), dtype=tl.float16)
    else:
        acc = tl.zeros((BM, BN), dtype=tl.float32)
    for ki in range(0, tl.cdiv(k_hi - k_lo, BK)):
        kmask = (k_lo + ki * BK + offs_k) < k_hi
        a = tl.load(a_ptrs, mask=kmask[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=kmask[:, None], other=0.0)
        if IEEE:
            acc = tl.dot(a, b, acc, input_precision="ieee")
        elif ACC_F16:
            acc = tl.dot(a, b, acc, out_dtype=tl.float16)
        else:
            acc = tl.dot(a, b, acc)
        a_ptrs += BK * sak
        b_ptrs += BK * sbk
    acc = acc.to(tl.float32)

    finish_tile(acc, tile, split, offs_m, offs_n, M, N, c_ptr, ws_ptr, cnt_ptr, sa_ptr, sb_ptr, bias_ptr, res_ptr,
                pre_ptr, srm, srn, BM, BN, SPLIT_K, SCALE_A, SCALE_B, HAS_BIAS, ACT, HAS_RES, STORE_PRE)
