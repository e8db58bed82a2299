"""Block shapes per head dim for the attention kernels (H100 first; tuned with the
``benchmarks/scripts/attention_device.py`` sweep), and smaller ones under the interpreter.

Example:
    >>> from tessera.kernels.attention.configs import fwd_config
    >>> sorted(fwd_config(128, False, interpreted=False))
    ['BLOCK_M', 'BLOCK_N', 'num_stages', 'num_warps']
"""
from __future__ import annotations

import os


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def pad_head_dim(D: int) -> int:
    """The power of two the kernels use for a head dim (96 runs as 128 with masked columns)."""
    p = 16
    while p < D:
        p *= 2
    return p


# (BLOCK_M, BLOCK_N, num_warps, num_stages[, maxnreg]) by padded head dim. One warpgroup per program (4
# warps) at d64/d128 lets two programs share an SM, so one's softmax overlaps the other's GEMMs:
# d128 S16384 546 vs 522 TFLOP/s with 8 warps; dK/dV d128 causal 363 vs 329, d64 335 vs 306.
FWD = {32: (128, 64, 8, 3), 64: (128, 64, 4, 3, 168), 128: (128, 64, 4, 2), 256: (128, 64, 8, 2)}
# fp8 (e4m3) forward: tiles take half the shared memory, so deeper pipelines or wider key blocks
# fit (H100 with V sequence-contiguous: d128 S4096 726 TFLOP/s with 3 stages vs 686 with 2;
# d256 BN128 890 vs 797 BN64; d64 BN128 520 vs 495 BN64).
FWD_FP8 = {64: (128, 128, 4, 3), 128: (128, 64, 4, 3), 256: (128, 128, 8, 3)}
# With 8 warps, a score tile that feeds a second product gets all warps along its rows, so
# BLOCK_M 64 would make both warpgroups compute the same scores: 8-warp configs use BLOCK_M 128.
# dK/dV kernel: BLOCK_N keys resident, BLOCK_M queries streamed. At d256, BLOCK_N 64 with one
# stage (some spilling) beats BLOCK_N 32, whose [32, 256] dK/dV products fall back to mma.sync
# (d256 S4096 causal backward 304 vs 206 TFLOP/s), and beats running dV and dK as two
# launches with one accumulator each (240).
BWD_DKDV = {32: (128, 64, 8, 2), 64: (64, 64, 4, 2), 128: (64, 64, 4, 2), 256: (128, 64, 8, 1)}
# dQ kernel: BLOCK_M queries resident, BLOCK_N keys streamed.
BWD_DQ = {32: (64, 64, 4, 2), 64: (64, 64, 4, 2), 128: (64, 64, 4, 2), 256: (128, 32, 8, 2)}


# Under the interpreter small blocks keep CPU tests fast and cross several block edges.
INTERPRETER = {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1}


def block_config(t) -> dict:
    """A config dict from a (BLOCK_M, BLOCK_N, num_warps, num_stages[, maxnreg]) tuple.

    Example:
        >>> block_config((64, 64, 4, 2, 168))["maxnreg"]
        168
    """
    d = {"BLOCK_M": t[0], "BLOCK_N": t[1], "num_warps": t[2], "num_stages": t[3]}
    if len(t) > 4:  # a register cap per thread, for one more program per SM
        d["maxnreg"] = t[4]
    return d


def fwd_config(D: int, causal: bool, interpreted: bool | None = None, fp8: bool = False) -> dict:
    """Launch parameters of the forward kernel for head dim ``D`` (``fp8``: e4m3 inputs)."""
    if _interpreting(interpreted):
        return dict(INTERPRETER)
    return block_config((FWD_FP8 if fp8 else FWD)[pad_head_dim(D)])


def bwd_configs(D: int, causal: bool, interpreted: bool | None = None) -> tuple:
    """(dK/dV config, dQ config) of the backward kernels for head dim ``D``."""
    if _interpreting(interpreted):
        return dict(INTERPRETER), dict(INTERPRETER)
    p = pad_head_dim(D)
    return block_config(BWD_DKDV[p]), block_config(BWD_DQ[p])


def _interpreting(flag) -> bool:
    return interpreted() if flag is None else bool(flag)
