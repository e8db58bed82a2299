"""Warp-specialised flash attention forward for Hopper (sm_90), written in Gluon.

A tile is 64·CONSUMERS query rows of one (batch, head); each program works through tiles (one
per SM, persistent) and runs these partitions:

* a producer warp issues TMA copies of Q and of each K and V block into a ring of shared-memory
  stages, waiting on per-stage "empty" barriers and arming "ready" barriers (for causal
  launches it also claims the next tile and hands its index to the consumers);
* CONSUMERS warpgroups (2, or 3 at d64) own 64 rows each and never synchronise with one
  another, so one's exponentials overlap another's tensor-core work;
* inside a consumer, the scores of key block j+1 are issued asynchronously before the softmax of
  block j runs, and P_j·V_j is issued before that softmax's wait (intra-warpgroup overlap); the
  probabilities reach the second product as a register operand.

This is the FlashAttention-3 schedule. It serves dense bf16/fp16 inputs without a mask or
dropout at head dims 64 (from 2048 keys), 128 and 256; everything else runs the portable
kernel in ``forward.py`` (so does everything when ``TESSERA_ATTENTION_WS=0``). The pieces it
shares with the backward kernels live in ``gluon_hopper``.
"""
from __future__ import annotations

import math

import torch

from .gluon_hopper import LOG2E, available, compile_gluon, descriptor, sm_count, tma_ready, with_overrides

if available():
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                                  warpgroup_mma_wait)

    from .gluon_hopper import (barriers, claim_tile, consumer_tile, key_blocks, publish_tile, register_operand_layout,
                               ring, tile_queue, tma_load, tma_store, warpgroup_mma_layout)

ROWS_PER_WARPGROUP = 64
# Per head dim: BLOCK_N keys per block, STAGES of K and V (they and Q fit in 227 KB of shared
# memory), CONSUMERS warpgroups of 64 query rows each.
# OWN_OUT gives the output its own staging buffers (d256 has no room: it reuses Q's). PERSISTENT
# launches one program per SM, so a tile's prologue overlaps the previous tile's epilogue (d128
# S1024: 637 vs 534 TFLOP/s). Non-causal programs stride over the tiles; causal tiles differ in
# cost (a static stride gave some programs only the longest ones: d128 S4096 causal 510 vs 541
# with one program per tile), so causal programs claim tiles from a counter as they finish.
CONFIGS = {64: dict(BLOCK_N=128, STAGES=4, CONSUMERS=3, OWN_OUT=True, PERSISTENT=True),
           128: dict(BLOCK_N=128, STAGES=2, CONSUMERS=2, OWN_OUT=True, PERSISTENT=True),
           256: dict(BLOCK_N=64, STAGES=2, CONSUMERS=2, OWN_OUT=False, PERSISTENT=True)}
# Kernel-wide register cap per thread by consumer count: 168 x 12 warps leaves 240 to each of two
# consumer warpgroups (and 24 to the producer); 128 x 16 warps leaves 160-168 to each of three.
MAXNREG = {2: 168, 3: 128}
# Below these key lengths the portable kernel is faster (d64 S1024: 409 vs 400 TFLOP/s; causal
# 313 vs 193 with three consumers, which spill a little once the tile loop is added).
MIN_KEYS = {64: 2048}


if available():

    @gluon.jit
    def _tile(t, n_mblocks, H, GROUP, SEQ_Q, SEQ_K, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
              CAUSAL: gl.constexpr):
        """(b, h, kv head, first query row, key blocks) of work tile t. The query blocks of one
        head are adjacent, so programs running together share its K and V in L2; causal heads
        run their longest (last) query block first."""
        bh = t // n_mblocks
        m_idx = t % n_mblocks
        if CAUSAL:
            m_idx = n_mblocks - 1 - m_idx
        b = bh // H
        h = bh % H
        start_m = m_idx * BLOCK_M
        return b, h, h // GROUP, start_m, key_blocks(start_m, SEQ_Q, SEQ_K, BLOCK_M, BLOCK_N, CAUSAL)

    @gluon.jit
    def _producer(loads, bufs, bars, BLOCK_N: gl.constexpr, STAGES: gl.constexpr, CONSUMERS: gl.constexpr,
                  CAUSAL: gl.constexpr, DYNAMIC: gl.constexpr):
        q_desc, k_desc, v_desc, n_mblocks, BH, H, GROUP, SEQ_Q, SEQ_K, COUNTER = loads
        q_smem, k_smem, v_smem, o_smem, queue = bufs
        q_ready, q_empty, k_ready, k_empty, v_ready, v_empty = bars
        it = 0  # position in the K/V ring, continued across tiles
        tc = 0  # tiles done by this program
        t = gl.program_id(0)
        while t < n_mblocks * BH:
            if DYNAMIC:
                publish_tile(t, tc, queue)
            b, h, hk, start_m, n_blocks = _tile(t, n_mblocks, H, GROUP, SEQ_Q, SEQ_K, 64 * CONSUMERS, BLOCK_N,
                                                CAUSAL)
            for w in gl.static_range(CONSUMERS):
                # Fresh barriers count as completed in phase 1, so the first waits do not block.
                mbarrier.wait(q_empty.index(w), (tc & 1) ^ 1)
                mbarrier.expect(q_ready.index(w), q_desc.block_type.nbytes)
                tma_load(q_desc, [b, h, start_m + w * 64, 0], q_ready.index(w), q_smem.index(w))
            for j in range(n_blocks):
                s = (it + j) % STAGES
                phase = ((it + j) // STAGES) & 1
                mbarrier.wait(k_empty.index(s), phase ^ 1)
                mbarrier.expect(k_ready.index(s), k_desc.block_type.nbytes)
                tma_load(k_desc, [b, hk, j * BLOCK_N, 0], k_ready.index(s), k_smem.index(s))
                mbarrier.wait(v_empty.index(s), phase ^ 1)
                mbarrier.expect(v_ready.index(s), v_desc.block_type.nbytes)
                tma_load(v_desc, [b, hk, j * BLOCK_N, 0], v_ready.index(s), v_smem.index(s))
            it += n_blocks
            tc += 1
            t = claim_tile(t, COUNTER, DYNAMIC)
        if DYNAMIC:  # past the last tile: tells the consumers to stop
            publish_tile(t, tc, queue)

    @gluon.jit
    def _softmax_step(s, m_i, l_i, qk_scale, rows, cols, seqlen_k, diag, MASKED: gl.constexpr,
                      CAUSAL: gl.constexpr):
        """Scaled, masked scores -> (p, new row max, new row sum, rescale factor), base 2."""
        if MASKED:
            keep = cols[None, :] < seqlen_k
            if CAUSAL:
                keep = keep & (cols[None, :] <= rows[:, None] + diag)
            s = gl.where(keep, s * qk_scale, float("-inf"))
            m_new = gl.maximum(m_i, gl.max(s, 1))
            # A row with no visible key yet keeps m = -inf; shift it by 0 so exp2 gives 0, not NaN.
            m_use = gl.where(m_new == float("-inf"), 0.0, m_new)
            p = gl.exp2(s - m_use[:, None])
        else:
            m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
            m_use = m_new
            p = gl.exp2(s * qk_scale - m_use[:, None])
        alpha = gl.exp2(m_i - m_use)
        l_i = l_i * alpha + gl.sum(p, 1)
        return p, m_new, l_i, alpha

    @gluon.jit
    def _consumer(bufs, bars, args, W: gl.constexpr, HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr,
                  STAGES: gl.constexpr, CAUSAL: gl.constexpr, CONSUMERS: gl.constexpr, DYNAMIC: gl.constexpr):
        q_smem, k_smem, v_smem, o_smem, queue = bufs
        q_ready, q_empty, k_ready, k_empty, v_ready, v_empty = bars
        o_desc, LSE, n_mblocks, BH, H, GROUP, seqlen_q, seqlen_k, s_lb, s_lh, qk_scale = args
        ROWS: gl.constexpr = 64
        # With a buffer of its own the output does not hold up the next tile's Q.
        OWN_OUT: gl.constexpr = o_smem.shape[0] == CONSUMERS
        s_layout: gl.constexpr = warpgroup_mma_layout(BLOCK_N)
        o_layout: gl.constexpr = warpgroup_mma_layout(HEAD_DIM)
        p_layout: gl.constexpr = register_operand_layout(o_layout)
        row_s: gl.constexpr = gl.SliceLayout(1, s_layout)
        row_o: gl.constexpr = gl.SliceLayout(1, o_layout)
        dtype: gl.constexpr = q_smem.dtype
        q = q_smem.index(W).reshape([ROWS, HEAD_DIM])
        col_base = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
        diag = seqlen_k - seqlen_q
        s = gl.zeros([ROWS, BLOCK_N], gl.float32, layout=s_layout)
        it = 0  # position in the K/V ring, continued across tiles
        tc = 0  # tiles done by this program
        t = consumer_tile(gl.program_id(0), tc, queue, DYNAMIC)
        while t < n_mblocks * BH:
            b, h, hk, start_m, n_blocks = _tile(t, n_mblocks, H, GROUP, seqlen_q, seqlen_k, ROWS * CONSUMERS,
                                                BLOCK_N, CAUSAL)
            row0 = start_m + W * ROWS
            rows = row0 + gl.arange(0, ROWS, layout=row_s)
            # Key blocks from n_full on hold keys past the end or above this warpgroup's diagonal.
            n_full = seqlen_k // BLOCK_N
            if CAUSAL:
                n_full = gl.minimum(n_full, gl.maximum(row0 + diag + 1, 0) // BLOCK_N)
            m_i = gl.full([ROWS], float("-inf"), gl.float32, layout=row_s)
            l_i = gl.zeros([ROWS], gl.float32, layout=row_s)
            acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, layout=o_layout)

            mbarrier.wait(q_ready.index(W), tc & 1)
            s0 = it % STAGES
            mbarrier.wait(k_ready.index(s0), (it // STAGES) & 1)
            s_tok = warpgroup_mma(q, k_smem.index(s0).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0)), s,
                                  use_acc=False, is_async=True)
            s = warpgroup_mma_wait(0, deps=(s_tok, ))
            mbarrier.arrive(k_empty.index(s0), count=1)
            if n_full > 0:
                p, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, rows, col_base, seqlen_k, diag, False,
                                                   CAUSAL)
            else:
                p, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, rows, col_base, seqlen_k, diag, True,
                                                   CAUSAL)
            p_op = gl.convert_layout(p.to(dtype), p_layout)

            for j in range(1, n_blocks):
                sj = (it + j) % STAGES
                sp = (it + j - 1) % STAGES
                mbarrier.wait(k_ready.index(sj), ((it + j) // STAGES) & 1)
                s_tok = warpgroup_mma(q, k_smem.index(sj).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0)), s,
                                      use_acc=False, is_async=True)
                mbarrier.wait(v_ready.index(sp), ((it + j - 1) // STAGES) & 1)
                o_tok = warpgroup_mma(p_op, v_smem.index(sp).reshape([BLOCK_N, HEAD_DIM]), acc, is_async=True)
                s = warpgroup_mma_wait(1, deps=(s_tok, ))
                mbarrier.arrive(k_empty.index(sj), count=1)
                cols = j * BLOCK_N + col_base
                if j < n_full:
                    p, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, rows, cols, seqlen_k, diag, False,
                                                       CAUSAL)
                else:
                    p, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, rows, cols, seqlen_k, diag, True,
                                                       CAUSAL)
                acc, p_op = warpgroup_mma_wait(0, deps=(o_tok, p_op))
                mbarrier.arrive(v_empty.index(sp), count=1)
                acc = acc * gl.convert_layout(alpha, row_o)[:, None]
                p_op = gl.convert_layout(p.to(dtype), p_layout)

            if OWN_OUT:  # every score product of the tile has completed: Q may be reloaded
                mbarrier.arrive(q_empty.index(W), count=1)
            sl = (it + n_blocks - 1) % STAGES
            mbarrier.wait(v_ready.index(sl), ((it + n_blocks - 1) // STAGES) & 1)
            o_tok = warpgroup_mma(p_op, v_smem.index(sl).reshape([BLOCK_N, HEAD_DIM]), acc, is_async=True)
            acc, p_op = warpgroup_mma_wait(0, deps=(o_tok, p_op))
            mbarrier.arrive(v_empty.index(sl), count=1)

            empty = l_i == 0.0
            l_safe = gl.where(empty, 1.0, l_i)
            lse = gl.where(empty, float("-inf"), (m_i + gl.log2(l_safe)) * 0.6931471805599453)
            lse_ptrs = LSE + b.to(gl.int64) * s_lb + h.to(gl.int64) * s_lh + rows
            gl.store(lse_ptrs, lse, mask=rows < seqlen_q)
            o = acc * gl.convert_layout(1.0 / l_safe, row_o)[:, None]
            if OWN_OUT:
                out = o_smem.index(W)
                tma.store_wait(0)  # the previous tile's output has left the buffer
            else:
                out = q_smem.index(W)  # Q's buffer is free once the last score product completed
            out.reshape([ROWS, HEAD_DIM]).store(o.to(dtype))
            fence_async_shared()
            tma_store(o_desc, [b, h, row0, 0], out)
            if not OWN_OUT:
                tma.store_wait(0)
                mbarrier.arrive(q_empty.index(W), count=1)
            it += n_blocks
            tc += 1
            t = consumer_tile(t + gl.num_programs(0), tc, queue, DYNAMIC)
        tma.store_wait(0)

    @gluon.jit
    def _fwd_ws_kernel(q_desc, k_desc, v_desc, o_desc, LSE, COUNTER, BH, H, GROUP, SEQ_Q, SEQ_K, s_lb, s_lh,
                       qk_scale, HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
                       CAUSAL: gl.constexpr, CONSUMERS: gl.constexpr, OWN_OUT: gl.constexpr,
                       DYNAMIC: gl.constexpr):
        """Programs stride over the (query block, batch x head) tiles, or with DYNAMIC claim the
        next one from the zeroed counter COUNTER as they finish; a grid of one program per tile is
        the non-persistent launch."""
        n_mblocks = gl.cdiv(SEQ_Q, 64 * CONSUMERS)
        q_smem = ring(q_desc, CONSUMERS)
        k_smem = ring(k_desc, STAGES)
        v_smem = ring(v_desc, STAGES)
        o_smem = ring(o_desc, CONSUMERS if OWN_OUT else 1)
        queue = tile_queue(CONSUMERS)
        q_ready = barriers(CONSUMERS, 1)
        q_empty = barriers(CONSUMERS, 1)
        k_ready = barriers(STAGES, 1)
        v_ready = barriers(STAGES, 1)
        # each stage is released by every consumer warpgroup
        k_empty = barriers(STAGES, CONSUMERS)
        v_empty = barriers(STAGES, CONSUMERS)

        bufs = (q_smem, k_smem, v_smem, o_smem, queue)
        bars = (q_ready, q_empty, k_ready, k_empty, v_ready, v_empty)
        args = (o_desc, LSE, n_mblocks, BH, H, GROUP, SEQ_Q, SEQ_K, s_lb, s_lh, qk_scale)
        loads = (q_desc, k_desc, v_desc, n_mblocks, BH, H, GROUP, SEQ_Q, SEQ_K, COUNTER)
        # Registers (setmaxnreg, per thread): the producer warp 24; consumers share the rest.
        if CONSUMERS == 2:
            gl.warp_specialize([
                (_consumer, (bufs, bars, args, 0, HEAD_DIM, BLOCK_N, STAGES, CAUSAL, CONSUMERS, DYNAMIC)),
                (_consumer, (bufs, bars, args, 1, HEAD_DIM, BLOCK_N, STAGES, CAUSAL, CONSUMERS, DYNAMIC)),
                (_producer, (loads, bufs, bars, BLOCK_N, STAGES, CONSUMERS, CAUSAL, DYNAMIC)),
            ], [4, 1], [240, 24])
        else:
            gl.warp_specialize([
                (_consumer, (bufs, bars, args, 0, HEAD_DIM, BLOCK_N, STAGES, CAUSAL, CONSUMERS, DYNAMIC)),
                (_consumer, (bufs, bars, args, 1, HEAD_DIM, BLOCK_N, STAGES, CAUSAL, CONSUMERS, DYNAMIC)),
                (_consumer, (bufs, bars, args, 2, HEAD_DIM, BLOCK_N, STAGES, CAUSAL, CONSUMERS, DYNAMIC)),
                (_producer, (loads, bufs, bars, BLOCK_N, STAGES, CONSUMERS, CAUSAL, DYNAMIC)),
            ], [4, 4, 1], [160, 160, 24])


def supported(q, k, v, o) -> bool:
    """Whether the kernel serves these dense ``[B, H, S, D]`` tensors: a head dim in ``CONFIGS``,
    enough keys (``MIN_KEYS``) and tensors TMA can read on sm_90 (:func:`gluon_hopper.tma_ready`).
    Masks, dropout, varlen and fp8 are the caller's to exclude.

    Example:
        >>> import torch
        >>> supported(*[torch.zeros(1, 1, 8, 64)] * 4)  # fp32 on the CPU
        False
    """
    D = q.shape[-1]
    return D in CONFIGS and k.shape[2] >= MIN_KEYS.get(D, 1) and tma_ready(q, k, v, o)


def config(D: int, **overrides) -> dict:
    """The kernel's compile-time parameters for head dim ``D``, with ``overrides`` (upper-case
    names, ``None`` keeps the default).

    Example:
        >>> config(128, STAGES=3)["STAGES"], config(128)["BLOCK_N"]
        (3, 128)
    """
    return with_overrides(CONFIGS, D, overrides)


def run_forward_ws(q, k, v, o, lse, H: int, Hkv: int, Sq: int, Sk: int, scale: float, causal: bool, **overrides):
    """Launch the kernel into ``o`` ([B, H, Sq, D]) and ``lse`` ([B, H, Sq] fp32); ``overrides``
    change the head dim's config (see :func:`config`)."""
    cfg = config(q.shape[-1], **overrides)
    persistent = cfg.pop("PERSISTENT")
    tiles = math.ceil(Sq / (ROWS_PER_WARPGROUP * cfg["CONSUMERS"])) * q.shape[0] * H
    grid = (min(tiles, sm_count(q.device)) if persistent else tiles, )
    # Causal tiles differ in cost: persistent programs claim them one by one from a counter.
    dynamic = persistent and causal and grid[0] < tiles
    counter = torch.zeros(1, dtype=torch.int32, device=q.device) if dynamic else lse
    _fwd_ws_kernel[grid](
        descriptor(q, ROWS_PER_WARPGROUP), descriptor(k, cfg["BLOCK_N"]), descriptor(v, cfg["BLOCK_N"]),
        descriptor(o, ROWS_PER_WARPGROUP), lse, counter, q.shape[0] * H, H, H // Hkv, Sq, Sk, lse.stride(0),
        lse.stride(1), scale * LOG2E, CAUSAL=causal, DYNAMIC=dynamic, **cfg, num_warps=4,
        maxnreg=MAXNREG[cfg["CONSUMERS"]])
    return o, lse


def compile_sm90(D: int, causal: bool, dtype=torch.bfloat16, **overrides):
    """Compile the kernel for sm_90 without a GPU (the result's ``asm`` holds PTX and cubin).

    Example:
        >>> k = compile_sm90(128, causal=True)  # doctest: +SKIP
        >>> "setmaxnreg" in k.asm["ptx"]  # doctest: +SKIP
        True
    """
    consts = dict(config(D, **overrides), CAUSAL=causal)
    consts["DYNAMIC"] = consts.pop("PERSISTENT") and causal
    like = torch.empty(1, 1, 128, D, dtype=dtype)
    descs = {"q_desc": descriptor(like, ROWS_PER_WARPGROUP), "k_desc": descriptor(like, consts["BLOCK_N"]),
             "v_desc": descriptor(like, consts["BLOCK_N"]), "o_desc": descriptor(like, ROWS_PER_WARPGROUP)}
    return compile_gluon(_fwd_ws_kernel, consts, descs, {"LSE": "fp32", "COUNTER": "i32"}, ("qk_scale", ),
                         MAXNREG[consts["CONSUMERS"]])


