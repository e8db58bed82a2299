"""Persistent GEMM with device-side TMA descriptors (Hopper), grouped tile order, fused epilogue.

One program per SM walks tiles ``start, start + NUM_SMS, ...``. Operands are read through
``tl.make_tensor_descriptor`` in place: a K-major operand (K contiguous) is loaded as is, an
M- or N-major one as its transpose. Out-of-range rows/columns of a tile are zero-filled by the
copy engine, so M, N, K need no padding. Also runs under the interpreter (CPU tests).
"""
from __future__ import annotations

import triton
import triton.language as tl

from .epilogue import apply_epilogue
from .tiles import grouped_tile, load_operands, operand_descs


@triton.jit
def _store_tile(c_desc, c_ptr, acc, offs_m, offs_n, M, N, om, on, TMA_STORE: tl.constexpr):
    if TMA_STORE:
        c_desc.store([om, on], acc.to(c_desc.dtype))
    else:
        mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
        tl.store(c_ptr + offs_m[:, None] * N + offs_n[None, :], acc.to(c_ptr.dtype.element_ty), mask=mask)


@triton.jit
def tma_matmul_kernel(a_ptr, b_ptr, c_ptr, sa_ptr, sb_ptr, bias_ptr, res_ptr, pre_ptr,
                      M, N, K, lda, ldb, stride_rm, stride_rn,
                      A_KMAJOR: tl.constexpr, B_KMAJOR: tl.constexpr,
                      BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
                      NUM_SMS: tl.constexpr, SUBTILE: tl.constexpr, FLATTEN: tl.constexpr,
                      WARP_SPEC: tl.constexpr, TMA_STORE: tl.constexpr, ACC_F16: tl.constexpr,
                      SCALE_A: tl.constexpr, SCALE_B: tl.constexpr, HAS_BIAS: tl.constexpr,
                      ACT: tl.constexpr, HAS_RES: tl.constexpr, STORE_PRE: tl.constexpr):
    a_desc, b_desc = operand_descs(a_ptr, b_ptr, M, N, K, lda, ldb, A_KMAJOR, B_KMAJOR, BM, BN, BK)
    SN: tl.constexpr = BN // 2 if SUBTILE else BN
    if TMA_STORE:
        c_desc = tl.make_tensor_descriptor(c_ptr, shape=[M, N], strides=[N, 1], block_shape=[BM, SN])
    else:
        c_desc = a_desc  # unused: rows of C are not 16-byte aligned, stores go through pointers

    start = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BM)
    num_pid_n = tl.cdiv(N, BN)
    num_tiles = num_pid_m * num_pid_n
    k_tiles = tl.cdiv(K, BK)
    # The epilogue recomputes its tile's coordinates from its own counter so that the
    # compiler need not keep the main loop's indices alive across the flattened loop.
    tile_c = start - NUM_SMS
    for tile_id in tl.range(start, num_tiles, NUM_SMS, flatten=FLATTEN, warp_specialize=WARP_SPEC):
        pid_m, pid_n = grouped_tile(tile_id, num_pid_m, num_pid_n, GROUP_M)
        om = pid_m * BM
        on = pid_n * BN
        if ACC_F16:
            acc = tl.zeros((BM, BN), dtype=tl.float16)
        else:
            acc = tl.zeros((BM, BN), dtype=tl.float32)
        for ki in range(k_tiles):
            ok = ki * BK
            a, b = load_operands(a_desc, b_desc, om, on, ok, A_KMAJOR, B_KMAJOR)
            if ACC_F16:
                acc = tl.dot(a, b, acc, out_dtype=tl.float16)
            else:
                acc = tl.dot(a, b, acc)

        tile_c += NUM_SMS
        pid_m, pid_n = grouped_tile(tile_c, num_pid_m, num_pid_n, GROUP_M)
        om = pid_m * BM
        on = pid_n * BN
        offs_m = om + tl.arange(0, BM)
        acc = acc.to(tl.float32)
        if SUBTILE:
            acc2 = tl.reshape(acc, (BM, 2, SN))
            acc2 = tl.permute(acc2, (0, 2, 1))
            acc0, acc1 = tl.split(acc2)
            offs_n0 = on + tl.arange(0, SN)
            acc0 = apply_epilogue(acc0, offs_m, offs_n0, M, N, sa_ptr, sb_ptr, bias_ptr, res_ptr, pre_ptr,
                                  stride_rm, stride_rn, N, SCALE_A, SCALE_B, HAS_BIAS, ACT, HAS_RES, STORE_PRE)
            _store_tile(c_desc, c_ptr, acc0, offs_m, offs_n0, M, N, om, on, TMA_STORE)
            offs_n1 = on + SN + tl.arange(0, SN)
            acc1 = apply_epilogue(acc1, offs_m, offs_n1, M, N, sa_ptr, sb_ptr, bias_ptr, res_ptr, pre_ptr,
                                  stride_rm, stride_rn, N, SCALE_A, SCALE_B, HAS_BIAS, ACT, HAS_RES, STORE_PRE)
            _store_tile(c_desc, c_ptr, acc1, offs_m, offs_n1, M, N, om, on + SN, TMA_STORE)
        else:
            offs_n = on + tl.arange(0, BN)
            acc = apply_epilogue(acc, offs_m, offs_n, M, N, sa_ptr, sb_ptr, bias_ptr, res_ptr, pre_ptr,
                                 stride_rm, stride_rn, N, SCALE_A, SCALE_B, HAS_BIAS, ACT, HAS_RES, STORE_PRE)
            _store_tile(c_desc, c_ptr, acc, offs_m, offs_n, M, N, om, on, TMA_STORE)
