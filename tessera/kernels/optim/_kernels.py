"""Multi-tensor Triton kernels: one launch updates every tensor of a group.

A group's tensors are described by an int64 address table ``ADDR[T, 5]`` (param, grad, state A, state B,
fp32 master) and ``NUMEL[T]``; program ``i`` updates block ``BLK_I[i]`` of tensor ``BLK_T[i]``. Full blocks take
an unmasked path so that loads and stores stay 16 bytes wide; only each tensor's last block is masked. A
program walks ITERS consecutive blocks, so that its table look-ups are paid once for several blocks.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _ptr(ADDR, base, k: tl.constexpr, TY: tl.constexpr, ALIGNED: tl.constexpr):
    p = tl.load(ADDR + base + k).to(tl.pointer_type(TY))
    if ALIGNED:
        # the hint must sit on the pointer itself; on the integer it is lost in the cast
        p = tl.multiple_of(p, 16)
    return p


@triton.jit
def _ld(p, offs, mask, MASKED: tl.constexpr):
    if MASKED:
        return tl.load(p + offs, mask=mask, other=0.0).to(tl.float32)
    return tl.load(p + offs).to(tl.float32)


@triton.jit
def _st(p, offs, val, mask, MASKED: tl.constexpr):
    if MASKED:
        tl.store(p + offs, val.to(p.dtype.element_ty), mask=mask)
    else:
        tl.store(p + offs, val.to(p.dtype.element_ty))


@triton.jit
def _ld_weight(P, W, offs, mask, HAS_MASTER: tl.constexpr, MASKED: tl.constexpr):
    """The weight being updated: the fp32 master copy when there is one, else the parameter."""
    if HAS_MASTER:
        return _ld(W, offs, mask, MASKED)
    return _ld(P, offs, mask, MASKED)


@triton.jit
def _st_weight(P, W, offs, w, mask, HAS_MASTER: tl.constexpr, MASKED: tl.constexpr):
    if HAS_MASTER:
        _st(W, offs, w, mask, MASKED)
    _st(P, offs, w, mask, MASKED)


@triton.jit
def _span(NUMEL, BLK_T, BLK_I, BLOCK: tl.constexpr, ITERS: tl.constexpr):
    """(row of the address table, first element, length of the tensor) of this program's blocks."""
    pid = tl.program_id(0)
    tid = tl.load(BLK_T + pid).to(tl.int64)
    start = tl.load(BLK_I + pid).to(tl.int64) * (BLOCK * ITERS)
    return tid * 5, start, tl.load(NUMEL + tid)


@triton.jit
def _block_offsets(start, it, BLOCK: tl.constexpr, ALIGNED: tl.constexpr):
    lo = start + it * BLOCK
    offs = lo + tl.arange(0, BLOCK)
    if ALIGNED:
        offs = tl.max_contiguous(tl.multiple_of(offs, BLOCK), BLOCK)
    return lo, offs


@triton.jit
def _adam_block(P, G, M, S, W, offs, mask, lr, beta1, beta2, eps, wd, step_size, bc2_sqrt,
                ADAMW: tl.constexpr, HAS_WD: tl.constexpr, HAS_MASTER: tl.constexpr, MASKED: tl.constexpr):
    g = _ld(G, offs, mask, MASKED)
    w = _ld_weight(P, W, offs, mask, HAS_MASTER, MASKED)
    if HAS_WD:
        if ADAMW:
            w = w * (1.0 - lr * wd)
        else:
            g = g + wd * w
    m = _ld(M, offs, mask, MASKED)
    v = _ld(S, offs, mask, MASKED)
    m = m + (1.0 - beta1) * (g - m)
    v = beta2 * v + (1.0 - beta2) * g * g
    w = w - step_size * tl.div_rn(m, tl.div_rn(tl.sqrt_rn(v), bc2_sqrt) + eps)
    _st(M, offs, m, mask, MASKED)
    _st(S, offs, v, mask, MASKED)
    _st_weight(P, W, offs, w, mask, HAS_MASTER, MASKED)


@triton.jit
def adam_mt_kernel(ADDR, NUMEL, BLK_T, BLK_I, lr, beta1, beta2, eps, wd, step_size, bc2_sqrt,
                   P_TY: tl.constexpr, G_TY: tl.constexpr, S_TY: tl.constexpr, ADAMW: tl.constexpr,
                   HAS_WD: tl.constexpr, HAS_MASTER: tl.constexpr, ALIGNED: tl.constexpr, BLOCK: tl.constexpr,
                   ITERS: tl.constexpr):
    base, start, n = _span(NUMEL, BLK_T, BLK_I, BLOCK, ITERS)
    P = _ptr(ADDR, base, 0, P_TY, ALIGNED)
    G = _ptr(ADDR, base, 1, G_TY, ALIGNED)
    M = _ptr(ADDR, base, 2, S_TY, ALIGNED)
    S = _ptr(ADDR, base, 3, S_TY, ALIGNED)
    W = _ptr(ADDR, base, 4, tl.float32, ALIGNED)
    for it in range(ITERS):
        lo, offs = _block_offsets(start, it, BLOCK, ALIGNED)
        if lo + BLOCK <= n:
            _adam_block(P, G, M, S, W, offs, None, lr, beta1, beta2, eps, wd, step_size, bc2_sqrt,
                        ADAMW, HAS_WD, HAS_MASTER, False)
        elif lo < n:
            _adam_block(P, G, M, S, W, offs, offs < n, lr, beta1, beta2, eps, wd, step_size, bc2_sqrt,
                        ADAMW, HAS_WD, HAS_MASTER, True)


@triton.jit
def _sgd_block(P, G, B, W, offs, mask, lr, momentum, dampening, wd, first,
               HAS_MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr, HAS_WD: tl.constexpr,
               HAS_MASTER: tl.constexpr, MASKED: tl.constexpr):
    g = _ld(G, offs, mask, MASKED)
    w = _ld_weight(P, W, offs, mask, HAS_MASTER, MASKED)
    if HAS_WD:
        g = g + wd * w
    if HAS_MOMENTUM:
        if first:
            b = g
        else:
            b = momentum * _ld(B, offs, mask, MASKED) + (1.0 - dampening) * g
        _st(B, offs, b, mask, MASKED)
        if NESTEROV:
            g = g + momentum * b
        else:
            g = b
    w = w - lr * g
    _st_weight(P, W, offs, w, mask, HAS_MASTER, MASKED)


@triton.jit
def sgd_mt_kernel(ADDR, NUMEL, BLK_T, BLK_I, lr, momentum, dampening, wd, first,
                  P_TY: tl.constexpr, G_TY: tl.constexpr, S_TY: tl.constexpr, HAS_MOMENTUM: tl.constexpr,
                  NESTEROV: tl.constexpr, HAS_WD: tl.constexpr, HAS_MASTER: tl.constexpr,
                  ALIGNED: tl.constexpr, BLOCK: tl.constexpr, ITERS: tl.constexpr):
    base, start, n = _span(NUMEL, BLK_T, BLK_I, BLOCK, ITERS)
    P = _ptr(ADDR, base, 0, P_TY, ALIGNED)
    G = _ptr(ADDR, base, 1, G_TY, ALIGNED)
    B = _ptr(ADDR, base, 2, S_TY, ALIGNED)
    W = _ptr(ADDR, base, 4, tl.float32, ALIGNED)
    for it in range(ITERS):
        lo, offs = _block_offsets(start, it, BLOCK, ALIGNED)
        if lo + BLOCK <= n:
            _sgd_block(P, G, B, W, offs, None, lr, momentum, dampening, wd, first,
                       HAS_MOMENTUM, NESTEROV, HAS_WD, HAS_MASTER, False)
        elif lo < n:
            _sgd_block(P, G, B, W, offs, offs < n, lr, momentum, dampening, wd, first,
                       HAS_MOMENTUM, NESTEROV, HAS_WD, HAS_MASTER, True)
