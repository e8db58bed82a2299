"""The attention kernels' own Gluon pieces for Hopper (``hopper_ws``, ``hopper_ws_bwd``): TMA
descriptors over [B, H, S, D] tensors, the key-block count of a query block, the input conditions
both directions share, and config overrides. The pieces every Gluon kernel shares (barriers,
rings, wgmma layouts, TMA names, compilation) live in ``tessera.kernels.hopper_gluon`` and are
re-exported here.

Example:
    >>> from tessera.kernels.attention import gluon_hopper
    >>> isinstance(gluon_hopper.available(), bool)
    True
"""
from __future__ import annotations

import os

import torch

from ..hopper_gluon import available, compile_gluon, shared_layout, sm_count, tma_compatible  # noqa: F401

if available():
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    from ..hopper_gluon import (barriers, register_operand_layout, ring, tma_load, tma_reduce_add,  # noqa: F401
                                tma_store, warpgroup_mma_layout)

LOG2E = 1.4426950408889634


if available():

    @gluon.jit
    def key_blocks(start_m, SEQ_Q, SEQ_K, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, CAUSAL: gl.constexpr):
        """How many BLOCK_N key blocks query rows [start_m, start_m + BLOCK_M) attend to (at least
        one, so that rows seeing no key still produce their zeros)."""
        hi = SEQ_K
        if CAUSAL:
            hi = gl.minimum(SEQ_K, start_m + BLOCK_M + SEQ_K - SEQ_Q)
        return gl.maximum(gl.cdiv(hi, BLOCK_N), 1)


def descriptor(t: torch.Tensor, rows: int, cols: int = None):
    """A Gluon TMA descriptor over a [B, H, S, D] tensor with [1, 1, rows, cols] blocks (cols: all
    of D unless given)."""
    block = (1, 1, rows, cols or t.shape[-1])
    return TensorDescriptor(t, list(t.shape), list(t.stride()), list(block), shared_layout(block, t.dtype))


def enabled() -> bool:
    """False when ``TESSERA_ATTENTION_WS=0`` asks for the portable kernel everywhere."""
    return os.environ.get("TESSERA_ATTENTION_WS", "1") != "0"


def tma_ready(*tensors) -> bool:
    """Whether the kernels can read these ``[B, H, S, D]`` tensors on their device: enabled, and
    :func:`tessera.kernels.hopper_gluon.tma_compatible`.

    Example:
        >>> import torch
        >>> tma_ready(*[torch.zeros(1, 1, 8, 64)] * 4)  # fp32 on the CPU
        False
    """
    return enabled() and tma_compatible(*tensors)


def with_overrides(table: dict, D: int, overrides: dict) -> dict:
    """``table[D]`` with ``HEAD_DIM`` and the ``overrides`` that are not ``None``."""
    cfg = dict(table[D], HEAD_DIM=D)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return cfg
