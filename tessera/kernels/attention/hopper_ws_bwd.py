"""Warp-specialised backward kernels for Hopper (sm_90), written in Gluon: dK/dV and dQ as two
launches (FlashAttention-2's split, without atomics), each with FlashAttention-3's producer warp
and consumer warpgroups; at d64 and d128 the dK/dV kernel computes dQ too (``FUSE_DQ``:
FlashAttention-3's fp32 accumulation by TMA reduce-adds) and the dQ kernel does not run (it serves d256).

In the dK/dV kernel a work tile is 64·CONSUMERS keys of one (batch, kv head); launches are
persistent (one program per SM walks its tiles, so a tile's first Q/dO loads overlap the previous
tile's dK/dV stores; causal tiles, which differ in length, are claimed from a counter). A producer warp loads each consumer's K and V rows once per tile,
then streams [BLOCK_M, D] blocks of Q and dO of every query head of
the group through a ring of shared-memory stages, with each block's base-2 lse and delta beside
them (so the consumers hold those rows' statistics in registers only while they use them: at d128
that halved the spills and made the backward 4-11% faster). Each consumer warpgroup keeps dK and dV for
its 64 keys in registers and works in the transposed orientation, so both probability-shaped
tiles feed the next products as register operands:

    Sᵀ = K·Qᵀ,  dPᵀ = V·dOᵀ,  Pᵀ = exp2(Sᵀ·scale − lse),  dV += Pᵀ·dO,
    dSᵀ = Pᵀ ∘ (dPᵀ − delta),  dK += dSᵀ·Q

The score products of a block are issued asynchronously and Pᵀ is computed while dPᵀ runs.
The dQ kernel is the mirror image: 64 query rows per consumer, K and V blocks streamed,
S = Q·Kᵀ and dP = dO·Vᵀ, then dQ += dS·K with dS as the register operand.

Example:
    >>> from tessera.kernels.attention import hopper_ws_bwd
    >>> hopper_ws_bwd.config(128)["BLOCK_M"]
    64
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
                               ring, tile_queue, tma_load, tma_reduce_add, tma_store, warpgroup_mma_layout)

KEYS_PER_WARPGROUP = 64
# the kernels' fp32 pointer arguments, for compiling them without a GPU
POINTER_ARGS = {"LSE": "fp32", "DELTA": "fp32", "COUNTER": "i32"}
# BLOCK_M query rows per streamed block, STAGES of Q and dO in flight, CONSUMERS warpgroups.
# FUSE_DQ: the dK/dV kernel also accumulates dQ (each block's dS·K, reduced into an fp32 buffer
# by TMA reduce-adds), and no dQ kernel recomputes S and dP. H200, whole backward, with the rows'
# statistics staged in shared memory (benchmarks/results/attention.md item 28): fused against the
# dK/dV and dQ kernels d64 1.01-1.05x, d128 1.02-1.10x at 1024 keys; the fused kernel against the
# portable backward at d64 S1024 1.03-1.12x, so these kernels serve every length. d64 streams
# 128-query blocks (half the meetings per product; two stages fit): 1.03-1.10x 64-query blocks.
# PERSISTENT: one program per SM walks the key tiles (causal ones, which differ in length, are
# claimed from a counter).
CONFIGS = {64: dict(BLOCK_M=128, STAGES=2, CONSUMERS=2, FUSE_DQ=True, PERSISTENT=True),
           128: dict(BLOCK_M=64, STAGES=2, CONSUMERS=2, FUSE_DQ=True, PERSISTENT=True)}
DQ_CHUNK = 32  # fp32 columns per TMA reduce: 128 bytes, the swizzle span
MAXNREG = {2: 168}


def config(D: int, **overrides) -> dict:
    """Compile-time parameters for head dim ``D`` (``None`` overrides keep the default)."""
    return with_overrides(CONFIGS, D, overrides)


if available():

    @gluon.jit
    def _key_tile(t, n_ntiles, HKV, SEQ_Q, SEQ_K, BLOCK_N: gl.constexpr, BLOCK_M: gl.constexpr,
                  CAUSAL: gl.constexpr):
        """(b, kv head, first key, first query row, query blocks per head) of work tile t. The key
        tiles of one head are adjacent, so programs running together share its Q and dO in L2."""
        bh = t // n_ntiles
        start_n = (t % n_ntiles) * BLOCK_N
        m_lo = 0
        if CAUSAL:  # query blocks before m_lo see none of these keys
            m_lo = gl.maximum(start_n - (SEQ_K - SEQ_Q), 0) // BLOCK_M * BLOCK_M
        return bh // HKV, bh % HKV, start_n, m_lo, gl.maximum(gl.cdiv(SEQ_Q - m_lo, BLOCK_M), 0)

    @gluon.jit
    def _load_kv(k_desc, v_desc, k_smem, v_smem, kv_bars, kv_free, b, hk, start_n, tc,
                 CONSUMERS: gl.constexpr):
        """Producer: each consumer's K and V rows of the tc-th tile, once the previous tile's dK and
        dV (staged in the same buffers) have been stored."""
        mbarrier.wait(kv_free, (tc & 1) ^ 1)  # fresh barriers count as completed in phase 1
        for w in gl.static_range(CONSUMERS):
            mbarrier.expect(kv_bars.index(w), 2 * k_desc.block_type.nbytes)
            tma_load(k_desc, [b, hk, start_n + w * 64, 0], kv_bars.index(w), k_smem.index(w))
            tma_load(v_desc, [b, hk, start_n + w * 64, 0], kv_bars.index(w), v_smem.index(w))

    @gluon.jit
    def _bwd_producer(loads, bufs, bars, stats, BLOCK_M: gl.constexpr, STAGES: gl.constexpr,
                      CONSUMERS: gl.constexpr, CAUSAL: gl.constexpr, DYNAMIC: gl.constexpr):
        q_desc, do_desc, k_desc, v_desc, GROUP, tiles, n_ntiles, HKV, SEQ_Q, SEQ_K, rows_stats, COUNTER = loads
        k_smem, v_smem, q_smem, do_smem, queue = bufs
        kv_bars, kv_free, ready, empty = bars
        it = 0  # position in the Q/dO ring, continued across tiles
        tc = 0  # tiles done by this program
        t = gl.program_id(0)
        while t < tiles:
            if DYNAMIC:
                publish_tile(t, tc, queue)
            b, hk, start_n, m_lo, n_mblocks = _key_tile(t, n_ntiles, HKV, SEQ_Q, SEQ_K, 64 * CONSUMERS, BLOCK_M,
                                                        CAUSAL)
            total = GROUP * n_mblocks
            # the first blocks' Q and dO load while the previous tile's dK and dV drain; K and V after
            kv_at = gl.minimum(total, STAGES)
            for i in range(total):
                if i == kv_at:
                    _load_kv(k_desc, v_desc, k_smem, v_smem, kv_bars, kv_free, b, hk, start_n, tc, CONSUMERS)
                s = (it + i) % STAGES
                mbarrier.wait(empty.index(s), (((it + i) // STAGES) & 1) ^ 1)
                h = hk * GROUP + i // n_mblocks
                m0 = m_lo + (i % n_mblocks) * BLOCK_M
                mbarrier.expect(ready.index(s), q_desc.block_type.nbytes + do_desc.block_type.nbytes)
                tma_load(q_desc, [b, h, m0, 0], ready.index(s), q_smem.index(s))
                tma_load(do_desc, [b, h, m0, 0], ready.index(s), do_smem.index(s))
                _stage_stats(rows_stats, stats, s, b, h, m0, BLOCK_M)
            if kv_at == total:
                _load_kv(k_desc, v_desc, k_smem, v_smem, kv_bars, kv_free, b, hk, start_n, tc, CONSUMERS)
            it += total
            tc += 1
            t = claim_tile(t, COUNTER, DYNAMIC)
        if DYNAMIC:  # past the last tile: tells the consumers to stop
            publish_tile(t, tc, queue)

    @gluon.jit
    def _stage_stats(rows_stats, stats, s, b, h, m0, BLOCK_M: gl.constexpr):
        """Producer: the block's base-2 lse (+inf for rows with no visible key, so their
        probabilities are 0) and delta into stage ``s`` of the stats ring, then its barrier. Kept
        in shared memory, the consumers hold them in registers only while they use them."""
        LSE, DELTA, seqlen_q, s_lb, s_lh = rows_stats
        stats_smem, stats_ready = stats
        layout: gl.constexpr = gl.BlockedLayout([BLOCK_M // 32], [32], [1], [0])
        rows = m0 + gl.arange(0, BLOCK_M, layout=layout)
        base = b.to(gl.int64) * s_lb + h.to(gl.int64) * s_lh
        in_q = rows < seqlen_q
        lse = gl.load(LSE + base + rows, mask=in_q, other=0.0)
        delta = gl.load(DELTA + base + rows, mask=in_q, other=0.0)
        stats_smem.index(2 * s).store(gl.where(lse == float("-inf"), float("inf"), lse * 1.4426950408889634))
        stats_smem.index(2 * s + 1).store(delta)
        mbarrier.arrive(stats_ready.index(s), count=1)

    @gluon.jit
    def _dq_product(ds_smem, k_smem, slot, W: gl.constexpr, CONSUMERS: gl.constexpr, HEAD_DIM: gl.constexpr,
                    BLOCK_M: gl.constexpr):
        """Issue dQ[:, W's columns] = Σ_w dS_w·K_w[:, W's columns] over every warpgroup's dSᵀ tile
        in ``slot`` (asynchronous: the caller waits)."""
        DQ_COLS: gl.constexpr = HEAD_DIM // CONSUMERS
        dq = gl.zeros([BLOCK_M, DQ_COLS], gl.float32, layout=warpgroup_mma_layout(DQ_COLS))
        for w in gl.static_range(CONSUMERS):
            k_cols = k_smem.index(w).reshape([64, HEAD_DIM]).slice(W * DQ_COLS, DQ_COLS, dim=1)
            dq = warpgroup_mma(ds_smem.index(slot * CONSUMERS + w).permute((1, 0)), k_cols, dq, use_acc=w > 0,
                               is_async=True)
        return dq

    @gluon.jit
    def _reduce_dq(dq_desc, dq_smem, dq, b, h, m0, W: gl.constexpr):
        """Add a [BLOCK_M, DQ_COLS] share of dQ (columns from W·DQ_COLS) into the fp32 buffer by TMA
        reduce-adds of DQ_CHUNK columns each; they drain while the next block's products run."""
        BLOCK_M: gl.constexpr = dq.shape[0]
        DQ_COLS: gl.constexpr = dq.shape[1]
        CHUNK: gl.constexpr = dq_desc.block_type.shape[3]
        tma.store_wait(0)  # the previous block's adds have read these buffers
        if DQ_COLS == 2 * CHUNK:
            lo, hi = gl.split(gl.permute(gl.reshape(dq, [BLOCK_M, 2, CHUNK]), (0, 2, 1)))
            dq_smem.index(2 * W).reshape([BLOCK_M, CHUNK]).store(lo)
            dq_smem.index(2 * W + 1).reshape([BLOCK_M, CHUNK]).store(hi)
            fence_async_shared()
            tma_reduce_add(dq_desc, [b, h, m0, W * DQ_COLS], dq_smem.index(2 * W))
            tma_reduce_add(dq_desc, [b, h, m0, W * DQ_COLS + CHUNK], dq_smem.index(2 * W + 1))
        else:
            gl.static_assert(DQ_COLS == CHUNK, "dQ shares of one or two 32-column chunks")
            dq_smem.index(W).reshape([BLOCK_M, CHUNK]).store(dq)
            fence_async_shared()
            tma_reduce_add(dq_desc, [b, h, m0, W * DQ_COLS], dq_smem.index(W))

    @gluon.jit
    def _bwd_consumer(bufs, bars, args, fused, stats, W: gl.constexpr, HEAD_DIM: gl.constexpr,
                      BLOCK_M: gl.constexpr, STAGES: gl.constexpr, CAUSAL: gl.constexpr, CONSUMERS: gl.constexpr,
                      FUSE_DQ: gl.constexpr, DYNAMIC: gl.constexpr):
        k_smem, v_smem, q_smem, do_smem, queue = bufs
        kv_bars, kv_free, ready, empty = bars
        dk_desc, dv_desc, GROUP, tiles, n_ntiles, HKV, seqlen_q, seqlen_k, qk_scale, sm_scale = args
        KEYS: gl.constexpr = 64
        k_tile = k_smem.index(W).reshape([KEYS, HEAD_DIM])
        v_tile = v_smem.index(W).reshape([KEYS, HEAD_DIM])
        it = 0  # position in the Q/dO ring, continued across tiles
        tc = 0  # tiles done by this program
        t = consumer_tile(gl.program_id(0), tc, queue, DYNAMIC)
        while t < tiles:
            b, hk, start_n, m_lo, n_mblocks = _key_tile(t, n_ntiles, HKV, seqlen_q, seqlen_k, KEYS * CONSUMERS,
                                                        BLOCK_M, CAUSAL)
            n0 = start_n + W * KEYS
            mbarrier.wait(kv_bars.index(W), tc & 1)
            dk, dv = _key_tile_grads(bufs[:4], (ready, empty), fused, stats, k_tile, v_tile, b, hk, n0, m_lo, n_mblocks,
                                     it, (GROUP, seqlen_q, seqlen_k, qk_scale, sm_scale), W, HEAD_DIM, BLOCK_M,
                                     STAGES, CAUSAL, CONSUMERS, FUSE_DQ)
            it += GROUP * n_mblocks
            if FUSE_DQ:  # every warpgroup's dQ products have read all K tiles before any is overwritten
                done = fused[4]
                mbarrier.arrive(done, count=1)
                mbarrier.wait(done, tc & 1)
            # K and V rows are no longer read: they stage the outputs.
            k_out = k_smem.index(W)
            v_out = v_smem.index(W)
            k_out.reshape([KEYS, HEAD_DIM]).store((dk * sm_scale).to(k_out.dtype))
            v_out.reshape([KEYS, HEAD_DIM]).store(dv.to(v_out.dtype))
            fence_async_shared()
            tma_store(dk_desc, [b, hk, n0, 0], k_out)
            tma_store(dv_desc, [b, hk, n0, 0], v_out)
            tma.store_wait(0)
            mbarrier.arrive(kv_free, count=1)
            tc += 1
            t = consumer_tile(t + gl.num_programs(0), tc, queue, DYNAMIC)

    @gluon.jit
    def _key_tile_grads(bufs, bars, fused, stats, k_tile, v_tile, b, hk, n0, m_lo, n_mblocks, it, rows,
                        W: gl.constexpr, HEAD_DIM: gl.constexpr, BLOCK_M: gl.constexpr, STAGES: gl.constexpr,
                        CAUSAL: gl.constexpr, CONSUMERS: gl.constexpr, FUSE_DQ: gl.constexpr):
        """One consumer's dK and dV (fp32, unscaled dK) for its 64 keys from n0, over the tile's
        query blocks, which start at position ``it`` of the Q/dO ring."""
        k_smem, v_smem, q_smem, do_smem = bufs
        ready, empty = bars
        GROUP, seqlen_q, seqlen_k, qk_scale, sm_scale = rows
        stats_smem, stats_ready = stats
        KEYS: gl.constexpr = 64
        s_layout: gl.constexpr = warpgroup_mma_layout(BLOCK_M)
        acc_layout: gl.constexpr = warpgroup_mma_layout(HEAD_DIM)
        op_layout: gl.constexpr = register_operand_layout(acc_layout)
        col_layout: gl.constexpr = gl.SliceLayout(0, s_layout)
        dtype: gl.constexpr = q_smem.dtype

        keys = n0 + gl.arange(0, KEYS, layout=gl.SliceLayout(1, s_layout))
        col_base = gl.arange(0, BLOCK_M, layout=col_layout)
        diag = seqlen_k - seqlen_q
        # Query blocks from m_full on see all of this warpgroup's keys (causal); the last block may
        # run past the queries. Both need masking; the rest do not.
        m_full = m_lo
        if CAUSAL:
            m_full = gl.maximum(n0 + KEYS - 1 - diag, 0)
        m_tail = seqlen_q // BLOCK_M * BLOCK_M

        dk = gl.zeros([KEYS, HEAD_DIM], gl.float32, layout=acc_layout)
        dv = gl.zeros([KEYS, HEAD_DIM], gl.float32, layout=acc_layout)
        s = gl.zeros([KEYS, BLOCK_M], gl.float32, layout=s_layout)
        dp = gl.zeros([KEYS, BLOCK_M], gl.float32, layout=s_layout)
        for i in range(GROUP * n_mblocks):
            st = (it + i) % STAGES
            phase = ((it + i) // STAGES) & 1
            mbarrier.wait(ready.index(st), phase)
            h = hk * GROUP + i // n_mblocks
            m0 = m_lo + (i % n_mblocks) * BLOCK_M
            q_tile = q_smem.index(st).reshape([BLOCK_M, HEAD_DIM])
            do_tile = do_smem.index(st).reshape([BLOCK_M, HEAD_DIM])
            s_tok = warpgroup_mma(k_tile, q_tile.permute((1, 0)), s, use_acc=False, is_async=True)
            dp_tok = warpgroup_mma(v_tile, do_tile.permute((1, 0)), dp, use_acc=False, is_async=True)
            cols = m0 + col_base
            in_q = cols < seqlen_q
            mbarrier.wait(stats_ready.index(st), phase)
            lse2 = stats_smem.index(2 * st).load(col_layout)
            s = warpgroup_mma_wait(1, deps=(s_tok, ))
            p = gl.exp2(s * qk_scale - lse2[None, :])
            if (m0 < m_full) | (m0 >= m_tail):
                keep = in_q[None, :]
                if CAUSAL:
                    keep = keep & (keys[:, None] <= cols[None, :] + diag)
                p = gl.where(keep, p, 0.0)
            p_op = gl.convert_layout(p.to(dtype), op_layout)
            dv_tok = warpgroup_mma(p_op, do_tile, dv, is_async=True)
            dp = warpgroup_mma_wait(1, deps=(dp_tok, ))
            delta = stats_smem.index(2 * st + 1).load(col_layout)
            ds = (p * (dp - delta[None, :])).to(dtype)
            ds_op = gl.convert_layout(ds, op_layout)
            dk_tok = warpgroup_mma(ds_op, q_tile, dk, is_async=True)
            if FUSE_DQ:
                # dQ of this block over all CONSUMERS·64 keys: every warpgroup publishes its dSᵀ
                # (two slots deep: a slot is rewritten only after both have passed the next block's
                # meeting), then multiplies all of them by its share of K's columns.
                ds_smem, dq_smem, ds_bars, dq_desc, done = fused
                slot = (it + i) % 2
                ds_smem.index(slot * CONSUMERS + W).store(ds)
                fence_async_shared()
                mbarrier.arrive(ds_bars.index(slot), count=1)
                mbarrier.wait(ds_bars.index(slot), ((it + i) // 2) & 1)
                dq = _dq_product(ds_smem, k_smem, slot, W, CONSUMERS, HEAD_DIM, BLOCK_M)
                dv, dk, dq, p_op, ds_op = warpgroup_mma_wait(0, deps=(dv_tok, dk_tok, dq, p_op, ds_op))
                _reduce_dq(dq_desc, dq_smem, dq * sm_scale, b, h, m0, W)
            else:
                dv, dk, p_op, ds_op = warpgroup_mma_wait(0, deps=(dv_tok, dk_tok, p_op, ds_op))
            mbarrier.arrive(empty.index(st), count=1)
        return dk, dv

    @gluon.jit
    def _dkdv_ws_kernel(q_desc, k_desc, v_desc, do_desc, dk_desc, dv_desc, dq_desc, LSE, DELTA, COUNTER, HKV,
                        GROUP, SEQ_Q, SEQ_K, BHKV, s_lb, s_lh, qk_scale, sm_scale, HEAD_DIM: gl.constexpr,
                        BLOCK_M: gl.constexpr, STAGES: gl.constexpr, CAUSAL: gl.constexpr, CONSUMERS: gl.constexpr,
                        FUSE_DQ: gl.constexpr, DYNAMIC: gl.constexpr):
        """Tiles of 64·CONSUMERS keys of one of the BHKV (batch, kv head) pairs, key tiles of a head
        adjacent (causal: the longest first); program p takes tiles p, p + num_programs, ..., or
        with DYNAMIC claims the next one from the zeroed counter COUNTER as it finishes (on a
        persistent grid, one tile's first Q/dO loads run while the previous tile's dK and dV are
        stored)."""
        BLOCK_N: gl.constexpr = 64 * CONSUMERS
        n_ntiles = gl.cdiv(SEQ_K, BLOCK_N)
        tiles = n_ntiles * BHKV

        k_smem = ring(k_desc, CONSUMERS)
        v_smem = ring(v_desc, CONSUMERS)
        q_smem = ring(q_desc, STAGES)
        do_smem = ring(do_desc, STAGES)
        kv_bars = barriers(CONSUMERS, 1)
        kv_free = barriers(1, CONSUMERS).index(0)  # released by every consumer after its dK/dV store
        ready = barriers(STAGES, 1)
        empty = barriers(STAGES, CONSUMERS)  # released by every consumer warpgroup
        if FUSE_DQ:  # every warpgroup's dSᵀ, two blocks deep, and its dQ share's staging buffers
            ds_smem = gl.allocate_shared_memory(q_desc.dtype, [2 * CONSUMERS, 64, BLOCK_M],
                                                gl.NVMMASharedLayout.get_default_for([64, BLOCK_M], q_desc.dtype))
            dq_smem = ring(dq_desc, HEAD_DIM // dq_desc.block_type.shape[3])
            fused = (ds_smem, dq_smem, barriers(2, CONSUMERS), dq_desc, barriers(1, CONSUMERS).index(0))
        else:  # the consumers do not touch it
            fused = (dq_desc, )

        # each stage's base-2 lse and delta, written by the producer warp
        stats_smem = gl.allocate_shared_memory(gl.float32, [2 * STAGES, BLOCK_M],
                                               gl.SwizzledSharedLayout(1, 1, 1, [0]))
        stats = (stats_smem, barriers(STAGES, 1))

        bufs = (k_smem, v_smem, q_smem, do_smem, tile_queue(CONSUMERS))
        bars = (kv_bars, kv_free, ready, empty)
        args = (dk_desc, dv_desc, GROUP, tiles, n_ntiles, HKV, SEQ_Q, SEQ_K, qk_scale, sm_scale)
        rows_stats = (LSE, DELTA, SEQ_Q, s_lb, s_lh)  # where the producer reads them
        loads = (q_desc, do_desc, k_desc, v_desc, GROUP, tiles, n_ntiles, HKV, SEQ_Q, SEQ_K, rows_stats, COUNTER)
        gl.warp_specialize([
            (_bwd_consumer, (bufs, bars, args, fused, stats, 0, HEAD_DIM, BLOCK_M, STAGES, CAUSAL, CONSUMERS,
                             FUSE_DQ, DYNAMIC)),
            (_bwd_consumer, (bufs, bars, args, fused, stats, 1, HEAD_DIM, BLOCK_M, STAGES, CAUSAL, CONSUMERS,
                             FUSE_DQ, DYNAMIC)),
            (_bwd_producer, (loads, bufs, bars, stats, BLOCK_M, STAGES, CONSUMERS, CAUSAL, DYNAMIC)),
        ], [4, 1], [240, 24])


    @gluon.jit
    def _dq_producer(loads, bufs, bars, BLOCK_N: gl.constexpr, STAGES: gl.constexpr, CONSUMERS: gl.constexpr):
        q_desc, do_desc, k_desc, v_desc, b, h, hk, start_m, n_blocks = loads
        q_smem, do_smem, k_smem, v_smem = bufs
        q_bars, ready, empty = bars
        for w in gl.static_range(CONSUMERS):
            mbarrier.expect(q_bars.index(w), 2 * q_desc.block_type.nbytes)
            tma_load(q_desc, [b, h, start_m + w * 64, 0], q_bars.index(w), q_smem.index(w))
            tma_load(do_desc, [b, h, start_m + w * 64, 0], q_bars.index(w), do_smem.index(w))
        for j in range(n_blocks):
            s = j % STAGES
            mbarrier.wait(empty.index(s), ((j // STAGES) & 1) ^ 1)
            mbarrier.expect(ready.index(s), k_desc.block_type.nbytes + v_desc.block_type.nbytes)
            tma_load(k_desc, [b, hk, j * BLOCK_N, 0], ready.index(s), k_smem.index(s))
            tma_load(v_desc, [b, hk, j * BLOCK_N, 0], ready.index(s), v_smem.index(s))

    @gluon.jit
    def _dq_consumer(bufs, bars, args, W: gl.constexpr, HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr,
                     STAGES: gl.constexpr, CAUSAL: gl.constexpr):
        q_smem, do_smem, k_smem, v_smem = bufs
        q_bars, ready, empty = bars
        dq_desc, LSE, DELTA, b, h, start_m, n_blocks, seqlen_q, seqlen_k, s_lb, s_lh, qk_scale, sm_scale = args
        ROWS: gl.constexpr = 64
        s_layout: gl.constexpr = warpgroup_mma_layout(BLOCK_N)
        acc_layout: gl.constexpr = warpgroup_mma_layout(HEAD_DIM)
        op_layout: gl.constexpr = register_operand_layout(acc_layout)
        row_layout: gl.constexpr = gl.SliceLayout(1, s_layout)
        dtype: gl.constexpr = q_smem.dtype

        row0 = start_m + W * ROWS
        rows = row0 + gl.arange(0, ROWS, layout=row_layout)
        col_base = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
        diag = seqlen_k - seqlen_q
        # Key blocks from n_full on hold keys past the end or above this warpgroup's diagonal.
        n_full = seqlen_k // BLOCK_N
        if CAUSAL:
            n_full = gl.minimum(n_full, gl.maximum(row0 + diag + 1, 0) // BLOCK_N)
        in_q = rows < seqlen_q
        row_base = b.to(gl.int64) * s_lb + h.to(gl.int64) * s_lh
        lse = gl.load(LSE + row_base + rows, mask=in_q, other=0.0)
        delta = gl.load(DELTA + row_base + rows, mask=in_q, other=0.0)
        # rows with no visible key have lse = -inf: +inf makes their probabilities 0
        lse2 = gl.where(lse == float("-inf"), float("inf"), lse * 1.4426950408889634)

        q_tile = q_smem.index(W).reshape([ROWS, HEAD_DIM])
        do_tile = do_smem.index(W).reshape([ROWS, HEAD_DIM])
        dq = gl.zeros([ROWS, HEAD_DIM], gl.float32, layout=acc_layout)
        s = gl.zeros([ROWS, BLOCK_N], gl.float32, layout=s_layout)
        dp = gl.zeros([ROWS, BLOCK_N], gl.float32, layout=s_layout)
        mbarrier.wait(q_bars.index(W), 0)
        for j in range(n_blocks):
            st = j % STAGES
            mbarrier.wait(ready.index(st), (j // STAGES) & 1)
            k_tile = k_smem.index(st).reshape([BLOCK_N, HEAD_DIM])
            s_tok = warpgroup_mma(q_tile, k_tile.permute((1, 0)), s, use_acc=False, is_async=True)
            dp_tok = warpgroup_mma(do_tile, v_smem.index(st).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0)), dp,
                                   use_acc=False, is_async=True)
            s = warpgroup_mma_wait(1, deps=(s_tok, ))
            p = gl.exp2(s * qk_scale - lse2[:, None])  # while dP runs
            if j >= n_full:
                cols = j * BLOCK_N + col_base
                keep = cols[None, :] < seqlen_k
                if CAUSAL:
                    keep = keep & (cols[None, :] <= rows[:, None] + diag)
                p = gl.where(keep, p, 0.0)
            dp = warpgroup_mma_wait(0, deps=(dp_tok, ))
            ds_op = gl.convert_layout((p * (dp - delta[:, None])).to(dtype), op_layout)
            dq_tok = warpgroup_mma(ds_op, k_tile, dq, is_async=True)
            dq, ds_op = warpgroup_mma_wait(0, deps=(dq_tok, ds_op))
            mbarrier.arrive(empty.index(st), count=1)
        # Q's rows are no longer read: they stage the output.
        out = q_smem.index(W)
        out.reshape([ROWS, HEAD_DIM]).store((dq * sm_scale).to(dtype))
        fence_async_shared()
        tma_store(dq_desc, [b, h, row0, 0], out)
        tma.store_wait(0)

    @gluon.jit
    def _dq_ws_kernel(q_desc, k_desc, v_desc, do_desc, dq_desc, LSE, DELTA, H, GROUP, SEQ_Q, SEQ_K, s_lb, s_lh,
                      qk_scale, sm_scale, HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
                      CAUSAL: gl.constexpr):
        BLOCK_M: gl.constexpr = 128
        pid_m = gl.program_id(0)
        if CAUSAL:  # heaviest query blocks first, so the tail of the grid is short
            pid_m = gl.num_programs(0) - 1 - pid_m
        pid_bh = gl.program_id(1)
        b = pid_bh // H
        h = pid_bh % H
        start_m = pid_m * BLOCK_M
        n_blocks = key_blocks(start_m, SEQ_Q, SEQ_K, BLOCK_M, BLOCK_N, CAUSAL)

        q_smem = ring(q_desc, 2)
        do_smem = ring(do_desc, 2)
        k_smem = ring(k_desc, STAGES)
        v_smem = ring(v_desc, STAGES)
        q_bars = barriers(2, 1)
        ready = barriers(STAGES, 1)
        empty = barriers(STAGES, 2)  # released by both consumer warpgroups

        bufs = (q_smem, do_smem, k_smem, v_smem)
        bars = (q_bars, ready, empty)
        args = (dq_desc, LSE, DELTA, b, h, start_m, n_blocks, SEQ_Q, SEQ_K, s_lb, s_lh, qk_scale, sm_scale)
        loads = (q_desc, do_desc, k_desc, v_desc, b, h, h // GROUP, start_m, n_blocks)
        gl.warp_specialize([
            (_dq_consumer, (bufs, bars, args, 0, HEAD_DIM, BLOCK_N, STAGES, CAUSAL)),
            (_dq_consumer, (bufs, bars, args, 1, HEAD_DIM, BLOCK_N, STAGES, CAUSAL)),
            (_dq_producer, (loads, bufs, bars, BLOCK_N, STAGES, 2)),
        ], [4, 1], [240, 24])


def supported(q, k, v, do, dk, dv) -> bool:
    """Whether the dK/dV kernel serves these dense tensors (the forward's conditions and a head
    dim in ``CONFIGS``)."""
    return q.shape[-1] in CONFIGS and tma_ready(q, k, v, do, dk, dv)


def supported_dq(q, k, v, do, dq) -> bool:
    """Whether the dQ kernel serves these dense tensors (a head dim in ``DQ_CONFIGS``)."""
    return q.shape[-1] in DQ_CONFIGS and tma_ready(q, k, v, do, dq)


def fuses_dq(D: int, **overrides) -> bool:
    """Whether the dK/dV kernel also computes dQ at head dim ``D`` (then no dQ kernel runs).

    Example:
        >>> fuses_dq(128) == bool(CONFIGS[128]["FUSE_DQ"])
        True
    """
    return D in CONFIGS and bool(config(D, **overrides)["FUSE_DQ"])


def run_dkdv_ws(q, k, v, do, dk, dv, lse, delta, H: int, Hkv: int, Sq: int, Sk: int, scale: float, causal: bool,
                dq=None, **overrides):
    """Launch the kernel: dK, dV ([B, Hkv, Sk, D]) from q, k, v, do and the rows' lse and delta;
    where it fuses dQ (``FUSE_DQ``), also ``dq`` ([B, H, Sq, D]), through an fp32 buffer that its
    TMA reduce-adds accumulate into. Returns (dk, dv, dq), dq None when a dQ kernel must run."""
    D = q.shape[-1]
    cfg = config(D, **overrides)
    BM = cfg["BLOCK_M"]
    dk_desc = descriptor(dk, KEYS_PER_WARPGROUP)
    if cfg["FUSE_DQ"]:
        if dq is None:
            raise ValueError("run_dkdv_ws: the dK/dV kernel with FUSE_DQ needs the dq output")
        acc = torch.zeros(q.shape[0], H, Sq, D, dtype=torch.float32, device=q.device)
        dq_desc = descriptor(acc, BM, DQ_CHUNK)
    else:
        dq_desc = dk_desc  # not read
    persistent = cfg.pop("PERSISTENT")
    tiles = math.ceil(Sk / (KEYS_PER_WARPGROUP * cfg["CONSUMERS"])) * q.shape[0] * Hkv
    grid = (min(tiles, sm_count(q.device)) if persistent else tiles, )
    # Causal tiles differ in cost: persistent programs claim them one by one from a counter.
    dynamic = persistent and causal and grid[0] < tiles
    counter = torch.zeros(1, dtype=torch.int32, device=q.device) if dynamic else lse
    _dkdv_ws_kernel[grid](
        descriptor(q, BM), descriptor(k, KEYS_PER_WARPGROUP), descriptor(v, KEYS_PER_WARPGROUP),
        descriptor(do, BM), dk_desc, descriptor(dv, KEYS_PER_WARPGROUP), dq_desc, lse, delta, counter,
        Hkv, H // Hkv, Sq, Sk, q.shape[0] * Hkv, lse.stride(0), lse.stride(1), scale * LOG2E, scale,
        CAUSAL=causal, DYNAMIC=dynamic, **cfg, num_warps=4, maxnreg=MAXNREG[cfg["CONSUMERS"]])
    if not cfg["FUSE_DQ"]:
        return dk, dv, None
    return dk, dv, dq.copy_(acc)


# dQ kernel: 128 query rows per program (two consumers), BLOCK_N keys per streamed block.
# At d256, Q and dO of 128 rows take 128 KB, so 32-key blocks keep two stages in shared memory.
DQ_CONFIGS = {64: dict(BLOCK_N=128, STAGES=3), 128: dict(BLOCK_N=64, STAGES=3), 256: dict(BLOCK_N=32, STAGES=2)}


def dq_config(D: int, **overrides) -> dict:
    """Compile-time parameters of the dQ kernel for head dim ``D``."""
    return with_overrides(DQ_CONFIGS, D, overrides)


def run_dq_ws(q, k, v, do, dq, lse, delta, H: int, Hkv: int, Sq: int, Sk: int, scale: float, causal: bool,
              **overrides):
    """Launch the dQ kernel: dq ([B, H, Sq, D]) from q, k, v, do and the rows' lse and delta."""
    cfg = dq_config(q.shape[-1], **overrides)
    grid = (math.ceil(Sq / 128), q.shape[0] * H)
    _dq_ws_kernel[grid](
        descriptor(q, 64), descriptor(k, cfg["BLOCK_N"]), descriptor(v, cfg["BLOCK_N"]), descriptor(do, 64),
        descriptor(dq, 64), lse, delta, H, H // Hkv, Sq, Sk, lse.stride(0), lse.stride(1), scale * LOG2E, scale,
        CAUSAL=causal, **cfg, num_warps=4, maxnreg=MAXNREG[2])
    return dq


def compile_dq_sm90(D: int, causal: bool, dtype=torch.bfloat16, **overrides):
    """Compile the dQ kernel for sm_90 without a GPU."""
    consts = dict(dq_config(D, **overrides), CAUSAL=causal)
    like = torch.empty(1, 1, 128, D, dtype=dtype)
    descs = {n: descriptor(like, consts["BLOCK_N"] if n in ("k_desc", "v_desc") else 64)
             for n in ("q_desc", "k_desc", "v_desc", "do_desc", "dq_desc")}
    return compile_gluon(_dq_ws_kernel, consts, descs, POINTER_ARGS, ("qk_scale", "sm_scale"), MAXNREG[2])


def compile_sm90(D: int, causal: bool, dtype=torch.bfloat16, **overrides):
    """Compile the kernel for sm_90 without a GPU (the result's ``asm`` holds PTX and cubin)."""
    consts = dict(config(D, **overrides), CAUSAL=causal)
    consts["DYNAMIC"] = consts.pop("PERSISTENT") and causal
    like = torch.empty(1, 1, 128, D, dtype=dtype)
    descs = {n: descriptor(like, consts["BLOCK_M"] if n in ("q_desc", "do_desc") else KEYS_PER_WARPGROUP)
             for n in ("q_desc", "k_desc", "v_desc", "do_desc", "dk_desc", "dv_desc")}
    acc = torch.empty(1, 1, 128, D, dtype=torch.float32)
    descs["dq_desc"] = descriptor(acc, consts["BLOCK_M"], DQ_CHUNK) if consts["FUSE_DQ"] else descs["dk_desc"]
    return compile_gluon(_dkdv_ws_kernel, consts, descs, POINTER_ARGS, ("qk_scale", "sm_scale"),
                         MAXNREG[consts["CONSUMERS"]])
