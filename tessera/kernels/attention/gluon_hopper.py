"""The attention kernels' own Gluon pieces for Hopper (``hopper_ws``, ``hopper_ws_bwd``): TMA
descriptors over [B, H, S, D] tensors, the key-block count of a query block, the queue through
which a persistent program's producer warp hands out tiles, the input conditions both directions
share, and config overrides. The pieces every Gluon kernel shares (barriers,
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
    from triton.experimental.gluon.language.nvidia.hopper import mbarrier
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


    @gluon.jit
    def tile_queue(CONSUMERS: gl.constexpr):
        """Two slots through which the producer warp hands tile indices to CONSUMERS warpgroups:
        (indices, ready barriers, empty barriers)."""
        tiles = gl.allocate_shared_memory(gl.int32, [2, 1], gl.SwizzledSharedLayout(1, 1, 1, [0]))
        return tiles, barriers(2, 1), barriers(2, CONSUMERS)

    @gluon.jit
    def publish_tile(t, tc, queue):
        """Producer: hand tile ``t`` (the tc-th of this program) to the consumers."""
        tiles, tile_ready, tile_empty = queue
        slot = tc % 2
        mbarrier.wait(tile_empty.index(slot), ((tc // 2) & 1) ^ 1)
        one: gl.constexpr = gl.BlockedLayout([1], [32], [1], [0])
        tiles.index(slot).store(gl.full([1], t, gl.int32, layout=one))
        mbarrier.arrive(tile_ready.index(slot), count=1)

    @gluon.jit
    def claim_tile(t, COUNTER, DYNAMIC: gl.constexpr):
        """Producer: the tile after ``t`` — t + num_programs, or with DYNAMIC the next unclaimed one
        from the zeroed counter (the first num_programs tiles went out statically)."""
        nxt = t + gl.num_programs(0)
        if DYNAMIC:
            nxt = gl.num_programs(0) + gl.atomic_add(COUNTER, 1, sem="relaxed")
        return nxt

    @gluon.jit
    def consumer_tile(t, tc, queue, DYNAMIC: gl.constexpr):
        """Consumer: its tc-th tile — ``t`` on a static schedule, or with DYNAMIC the tile the
        producer published."""
        if DYNAMIC:
            tiles, tile_ready, tile_empty = queue
            slot = tc % 2
            mbarrier.wait(tile_ready.index(slot), (tc // 2) & 1)
            layout: gl.constexpr = gl.BlockedLayout([1], [32], [4], [0])
            t = gl.max(tiles.index(slot).load(layout), 0)
            mbarrier.arrive(tile_empty.index(slot), count=1)
        return t


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
