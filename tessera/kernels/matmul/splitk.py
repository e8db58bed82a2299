"""The end of a GEMM tile shared by the split-K kernels: reduce the partial sums, epilogue, store.

With ``SPLIT_K > 1``, program ``split`` of a tile writes its fp32 partial sums to the tile's
slot of the workspace and takes a ticket from the tile's counter; the last to arrive adds the
slots, runs the epilogue, stores the tile, and resets the counter to 0 for the next call.
"""
import triton
import triton.language as tl

from .epilogue import apply_epilogue


@triton.jit
def split_tile(pid, N, BN: tl.constexpr, SPLIT_K: tl.constexpr):
    """(tile, split, pid_m, pid_n) of program ``pid``: SPLIT_K consecutive programs share a tile."""
    tile = pid // SPLIT_K
    num_pid_n = tl.cdiv(N, BN)
    return tile, pid % SPLIT_K, tile // num_pid_n, tile % num_pid_n


@triton.jit
def finish_tile(acc, tile, split, offs_m, offs_n, M, N, c_ptr, ws_ptr, cnt_ptr,
                sa_ptr, sb_ptr, bias_ptr, res_ptr, pre_ptr, stride_rm, stride_rn,
                BM: tl.constexpr, BN: tl.constexpr, SPLIT_K: tl.constexpr,
                SCALE_A: tl.constexpr, SCALE_B: tl.constexpr, HAS_BIAS: tl.constexpr,
                ACT: tl.constexpr, HAS_RES: tl.constexpr, STORE_PRE: tl.constexpr):
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    last = True
    if SPLIT_K > 1:
        tile_ws = ws_ptr + tile.to(tl.int64) * (SPLIT_K * BM * BN)
        loc = tl.arange(0, BM)[:, None] * BN + tl.arange(0, BN)[None, :]
        tl.store(tile_ws + split * (BM * BN) + loc, acc)
        tl.debug_barrier()  # every thread's partial sums are stored before the ticket is taken
        ticket = tl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel")
        last = ticket == SPLIT_K - 1
        if last:
            acc = tl.zeros((BM, BN), dtype=tl.float32)
            for s in range(SPLIT_K):
                acc += tl.load(tile_ws + s * (BM * BN) + loc, cache_modifier=".cg")
            tl.store(cnt_ptr + tile, 0)
    if last:
        acc = apply_epilogue(acc, offs_m, offs_n, M, N, sa_ptr, sb_ptr, bias_ptr, res_ptr, pre_ptr,
                             stride_rm, stride_rn, N, SCALE_A, SCALE_B, HAS_BIAS, ACT, HAS_RES, STORE_PRE)
        tl.store(c_ptr + offs_m[:, None] * N + offs_n[None, :], acc.to(c_ptr.dtype.element_ty), mask=mask)
