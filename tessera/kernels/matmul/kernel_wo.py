"""Weight-only quantized GEMM kernel: ``x [M, K] @ dequant(q) [K, N]`` decoding fp6/fp4 codes in
registers. Built for decode shapes (small M), where reading the packed weight is the whole cost.

The packed bytes are read by pointer loads or, where the row pitch allows (``USE_TMA``), by
TMA copies pipelined ``STAGES`` deep. The packed weight is stored per output column (``q[n, bytes along K]``, fp6 as three byte
planes), so a program reads ``BN`` rows of contiguous bytes, viewed as
[BN, groups, packs per group] so each group's scale multiplies by broadcast. Each pack of PER
codes (2 for fp4, 4 for fp6) covers K positions ``PER * p + j``; the matching x columns are read
with stride PER, so the products need no interleaving.

Decoding costs a shift, an or and a conversion: a code's exponent and mantissa bits are moved
to the top of an fp16's exponent/mantissa fields, which makes that fp16 equal to the code's
value times ``2**(BIAS - 15)`` (subnormal codes become fp16 subnormals, converted exactly);
the constant is folded into the group scale. Split-K slices meet in :func:`~.splitk.finish_tile`.
With BM == 1 (one activation row) the product is a multiply and
reduce in fp32 instead of a tensor-core dot.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .splitk import finish_tile, split_tile


@triton.jit
def _decode_scaled(c, s3, EBITS: tl.constexpr, MBITS: tl.constexpr):
    """int32 codes -> float32 values times the (pre-multiplied) scales ``s3``."""
    NB: tl.constexpr = EBITS + MBITS
    bits = ((c & ((1 << NB) - 1)) << (10 - MBITS)) | ((c >> NB) << 15)
    h = bits.to(tl.int16).to(tl.float16, bitcast=True)
    return h.to(tl.float32) * s3


@triton.jit
def _partial(acc, x_ptr, sxm, sxk, rm, k_pos, K, w_codes, s3, BN: tl.constexpr, BKP: tl.constexpr,
             EBITS: tl.constexpr, MBITS: tl.constexpr, GEMV: tl.constexpr):
    x = tl.load(x_ptr + rm[:, None] * sxm + k_pos[None, :] * sxk, mask=(k_pos < K)[None, :], other=0.0)
    w = tl.reshape(_decode_scaled(w_codes, s3, EBITS, MBITS), (BN, BKP))
    if GEMV:  # one row of x: multiply and reduce, no tensor cores
        return acc + tl.sum(w * x.to(tl.float32), axis=1)[None, :]
    else:
        return tl.dot(x, tl.trans(w.to(x.dtype)), acc)


@triton.jit
def wo_matmul_kernel(x_ptr, q_ptr, s_ptr, bias_ptr, out_ptr, ws_ptr, cnt_ptr,
                     M, N, K, KP, ldq, lds, sxm, sxk,
                     BITS: tl.constexpr, EBITS: tl.constexpr, MBITS: tl.constexpr, GS: tl.constexpr,
                     BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, SPLIT_K: tl.constexpr,
                     HAS_BIAS: tl.constexpr, USE_TMA: tl.constexpr, STAGES: tl.constexpr):
    PER: tl.constexpr = 2 if BITS == 4 else 4
    BKP: tl.constexpr = BK // PER  # packs per K block
    NGB: tl.constexpr = BK // GS  # groups per K block
    GP: tl.constexpr = GS // PER  # packs per group
    BIAS: tl.constexpr = (1 << (EBITS - 1)) - 1
    FOLD: tl.constexpr = float(2 ** (15 - BIAS))
    tile, split, pid_m, pid_n = split_tile(tl.program_id(0), N, BN, SPLIT_K)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    rm = tl.where(offs_m < M, offs_m, 0)
    rn = tl.where(offs_n < N, offs_n, 0)
    offs_g = tl.arange(0, NGB)
    offs_p3 = offs_g[None, :, None] * GP + tl.arange(0, GP)[None, None, :]  # [1, NGB, GP] pack index
    offs_p = tl.arange(0, BKP)
    k_per_split = tl.cdiv(tl.cdiv(KP, BK), SPLIT_K) * BK
    k_lo = split * k_per_split
    k_hi = tl.minimum(KP, k_lo + k_per_split)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    q_row = q_ptr + rn[:, None, None].to(tl.int64) * ldq
    s_row = s_ptr + rn[:, None] * lds
    PLANE = KP // 4
    if USE_TMA:  # rows past N and bytes past the end read as zeros; codes past KP meet zero scales
        q_desc = tl.make_tensor_descriptor(q_ptr, shape=[N, KP * BITS // 8], strides=[ldq, 1], block_shape=[BN, BKP])
    for ki in tl.range(0, tl.cdiv(k_hi - k_lo, BK), num_stages=STAGES):
        k0 = k_lo + ki * BK
        g = k0 // GS + offs_g
        s = tl.load(s_row + g[None, :], mask=(g < KP // GS)[None, :], other=0.0).to(tl.float32) * FOLD
        s3 = s[:, :, None]
        pk = k0 // PER + offs_p3
        pmask = pk < KP // PER
        k_base = k0 + PER * offs_p
        if BITS == 4:
            if USE_TMA:
                byte = tl.reshape(q_desc.load([pid_n * BN, k0 // PER]), (BN, NGB, GP)).to(tl.int32)
            else:
                byte = tl.load(q_row + pk, mask=pmask, other=0).to(tl.int32)
            acc = _partial(acc, x_ptr, sxm, sxk, rm, k_base, K, byte & 15, s3, BN, BKP, EBITS, MBITS, BM == 1)
            acc = _partial(acc, x_ptr, sxm, sxk, rm, k_base + 1, K, byte >> 4, s3, BN, BKP, EBITS, MBITS, BM == 1)
        else:
            if USE_TMA:
                b0 = tl.reshape(q_desc.load([pid_n * BN, k0 // PER]), (BN, NGB, GP)).to(tl.int32)
                b1 = tl.reshape(q_desc.load([pid_n * BN, PLANE + k0 // PER]), (BN, NGB, GP)).to(tl.int32)
                b2 = tl.reshape(q_desc.load([pid_n * BN, 2 * PLANE + k0 // PER]), (BN, NGB, GP)).to(tl.int32)
            else:
                b0 = tl.load(q_row + pk, mask=pmask, other=0).to(tl.int32)
                b1 = tl.load(q_row + PLANE + pk, mask=pmask, other=0).to(tl.int32)
                b2 = tl.load(q_row + 2 * PLANE + pk, mask=pmask, other=0).to(tl.int32)
            acc = _partial(acc, x_ptr, sxm, sxk, rm, k_base, K, b0 & 63, s3, BN, BKP, EBITS, MBITS, BM == 1)
            acc = _partial(acc, x_ptr, sxm, sxk, rm, k_base + 1, K, (b0 >> 6) | ((b1 & 15) << 2), s3, BN, BKP,
                           EBITS, MBITS, BM == 1)
            acc = _partial(acc, x_ptr, sxm, sxk, rm, k_base + 2, K, (b1 >> 4) | ((b2 & 3) << 4), s3, BN, BKP,
                           EBITS, MBITS, BM == 1)
            acc = _partial(acc, x_ptr, sxm, sxk, rm, k_base + 3, K, b2 >> 2, s3, BN, BKP, EBITS, MBITS, BM == 1)

    finish_tile(acc, tile, split, offs_m, offs_n, M, N, out_ptr, ws_ptr, cnt_ptr, out_ptr, out_ptr, bias_ptr,
                out_ptr, out_ptr, 0, 0, BM, BN, SPLIT_K, 0, 0, HAS_BIAS, 0, False, False)
