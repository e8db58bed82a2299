"""A warp-specialised persistent GEMM for Hopper (sm_90), written in Gluon: C = A·B for bf16/fp16
A [M, K] and B as [K, N] or as Wᵀ with W [N, K], and for fp8 (e4m3/e5m2) A and Wᵀ with scales,
fp32 accumulation.

One program per SM walks output tiles of BLOCK_M × BLOCK_N in grouped order (GROUP_M row blocks
share their B columns in L2). A producer warp streams A and B blocks through a ring of STAGES
shared-memory buffers with TMA; two consumer warpgroups each own 64 rows of the tile, keep one
wgmma in flight while the previous one retires, and release each stage as soon as the product
that read it has completed. A tile's epilogue is the Triton kernels' own (``epilogue.py``: bias,
activation, residual, pre-activation), then a cast, shared-memory staging and a TMA store that is
not waited for: it drains while the consumers start the next tile's products, and is waited for
only before its buffer is written again.

On Hopper the matmul entry points choose it for plain bf16/fp16 products with at least one tile
per SM and outputs narrower than 16384 (H200: 1.00-1.15x cuBLAS); with a fused epilogue or fp8
operands the Triton kernels stay the default and the tuner times this one beside them.
``TESSERA_GLUON_GEMM=0`` turns it off.

Example:
    >>> from tessera.kernels.matmul import gluon_ws
    >>> gluon_ws.config()["BLOCK_N"]
    256
"""
from __future__ import annotations

import os

import torch

from ..hopper_gluon import FP8, available, compile_gluon, shared_layout, sm_count, tma_compatible
from .epilogue import ACTIVATIONS, torch_epilogue

_ACTIVATION_NAMES = {code: name for name, code in ACTIVATIONS.items()}

if available():
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                                  warpgroup_mma_wait)
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    from ..hopper_gluon import barriers, ring, tma_load, tma_store, warpgroup_mma_layout
    from .epilogue import apply_epilogue

ROWS_PER_CONSUMER = 64
# 128 x 256 tiles, 64-deep K blocks: a stage holds 48 KB (A 16 KB, B 32 KB); three stages and
# the two consumers' 32 KB output buffers take 208 KB of shared memory. SPLIT_N=2 stores each
# output in two column halves through 16 KB buffers, which leaves room for a fourth stage (224 KB).
CONFIG = dict(BLOCK_N=256, BLOCK_K=64, STAGES=3, GROUP_M=16, SPLIT_N=1)
MAXNREG = 168  # at launch; the partitions then take 240 (consumers) and 24 (producer)


def config(fp8: bool = False, **overrides) -> dict:
    """Compile-time parameters (``None`` overrides keep the default); fp8 operands read 128-deep
    K blocks (the same 128 bytes a row as 64 bf16)."""
    cfg = dict(CONFIG, BLOCK_K=128) if fp8 else dict(CONFIG)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return cfg


if available():

    @gluon.jit
    def _tile_coords(tile, num_pid_m, num_pid_n, GROUP_M: gl.constexpr):
        """(row block, column block) of ``tile`` in grouped order."""
        in_group = GROUP_M * num_pid_n
        first_m = (tile // in_group) * GROUP_M
        size_m = gl.minimum(num_pid_m - first_m, GROUP_M)
        return first_m + (tile % in_group) % size_m, (tile % in_group) // size_m

    @gluon.jit
    def _producer(descs, bufs, bars, shape, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
                  STAGES: gl.constexpr, GROUP_M: gl.constexpr, B_TRANSPOSED: gl.constexpr):
        a_desc, b_desc, c_desc = descs
        a_smem, b_smem, c_smem = bufs
        ready, empty = bars
        M, N, K = shape
        num_pid_m = gl.cdiv(M, BLOCK_M)
        num_pid_n = gl.cdiv(N, BLOCK_N)
        k_steps = gl.cdiv(K, BLOCK_K)
        it = 0
        for tile in range(gl.program_id(0), num_pid_m * num_pid_n, gl.num_programs(0)):
            pid_m, pid_n = _tile_coords(tile, num_pid_m, num_pid_n, GROUP_M)
            for kk in range(k_steps):
                s = it % STAGES
                mbarrier.wait(empty.index(s), ((it // STAGES) & 1) ^ 1)
                mbarrier.expect(ready.index(s), a_desc.block_type.nbytes + b_desc.block_type.nbytes)
                tma_load(a_desc, [pid_m * BLOCK_M, kk * BLOCK_K], ready.index(s), a_smem.index(s))
                if B_TRANSPOSED:
                    tma_load(b_desc, [pid_n * BLOCK_N, kk * BLOCK_K], ready.index(s), b_smem.index(s))
                else:
                    tma_load(b_desc, [kk * BLOCK_K, pid_n * BLOCK_N], ready.index(s), b_smem.index(s))
                it += 1

    @gluon.jit
    def _epilogue(part, offs_m, col0, M, N, epi, SCALE_A: gl.constexpr, SCALE_B: gl.constexpr,
                  HAS_BIAS: gl.constexpr, ACT: gl.constexpr, HAS_RES: gl.constexpr, STORE_PRE: gl.constexpr):
        """The Triton kernels' epilogue on a column slice of the tile, in the slice's layout (the
        identity when every flag is off)."""
        sa_ptr, sb_ptr, bias_ptr, res_ptr, pre_ptr, stride_rm, stride_rn = epi
        offs_n = col0 + gl.arange(0, part.shape[1], layout=gl.SliceLayout(0, part.type.layout))
        return apply_epilogue(part, offs_m, offs_n, M, N, sa_ptr, sb_ptr, bias_ptr, res_ptr, pre_ptr,
                              stride_rm, stride_rn, N, SCALE_A, SCALE_B, HAS_BIAS, ACT, HAS_RES, STORE_PRE)

    @gluon.jit
    def _store(c_desc, buf, value, row, col):
        """Stage ``value`` in ``buf`` and store it by TMA, not waited for (only the buffer's
        previous store is)."""
        tma.store_wait(0)
        buf.store(value.to(c_desc.dtype))
        fence_async_shared()
        tma_store(c_desc, [row, col], buf)

    @gluon.jit
    def _consumer(descs, bufs, bars, shape, epi, W: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                  BLOCK_K: gl.constexpr, STAGES: gl.constexpr, GROUP_M: gl.constexpr, SPLIT_N: gl.constexpr,
                  B_TRANSPOSED: gl.constexpr, SCALE_A: gl.constexpr, SCALE_B: gl.constexpr,
                  HAS_BIAS: gl.constexpr, ACT: gl.constexpr, HAS_RES: gl.constexpr, STORE_PRE: gl.constexpr):
        a_desc, b_desc, c_desc = descs
        a_smem, b_smem, c_smem = bufs
        EPILOGUE: gl.constexpr = SCALE_A != 0 or SCALE_B != 0 or HAS_BIAS or ACT != 0 or HAS_RES or STORE_PRE
        ready, empty = bars
        M, N, K = shape
        ROWS: gl.constexpr = BLOCK_M // 2
        acc_layout: gl.constexpr = warpgroup_mma_layout(BLOCK_N, a_desc.dtype.primitive_bitwidth)
        num_pid_m = gl.cdiv(M, BLOCK_M)
        num_pid_n = gl.cdiv(N, BLOCK_N)
        k_steps = gl.cdiv(K, BLOCK_K)
        out = c_smem.index(W)
        it = 0
        for tile in range(gl.program_id(0), num_pid_m * num_pid_n, gl.num_programs(0)):
            pid_m, pid_n = _tile_coords(tile, num_pid_m, num_pid_n, GROUP_M)
            acc = gl.zeros([ROWS, BLOCK_N], gl.float32, layout=acc_layout)
            for kk in range(k_steps):
                s = it % STAGES
                mbarrier.wait(ready.index(s), (it // STAGES) & 1)
                a_rows = a_smem.index(s).slice(W * ROWS, ROWS, dim=0)
                if B_TRANSPOSED:
                    b_tile = b_smem.index(s).permute((1, 0))
                else:
                    b_tile = b_smem.index(s)
                acc = warpgroup_mma(a_rows, b_tile, acc, is_async=True)
                # the previous product has retired: its stage can be refilled
                acc = warpgroup_mma_wait(1, deps=(acc, ))
                if kk > 0:
                    mbarrier.arrive(empty.index((it - 1) % STAGES), count=1)
                it += 1
            acc = warpgroup_mma_wait(0, deps=(acc, ))
            mbarrier.arrive(empty.index((it - 1) % STAGES), count=1)
            row0 = pid_m * BLOCK_M + W * ROWS
            col0 = pid_n * BLOCK_N
            if EPILOGUE or SPLIT_N == 2:
                # two column halves, each through the epilogue on its own (half the live
                # temporaries), stored whole or through a half-size buffer (room for a fourth stage)
                HALF: gl.constexpr = BLOCK_N // 2
                lo, hi = gl.split(gl.permute(gl.reshape(acc, [ROWS, 2, HALF]), (0, 2, 1)))
                offs_m = row0 + gl.arange(0, ROWS, layout=gl.SliceLayout(1, lo.type.layout))
                lo = _epilogue(lo, offs_m, col0, M, N, epi, SCALE_A, SCALE_B, HAS_BIAS, ACT, HAS_RES, STORE_PRE)
                if SPLIT_N == 2:
                    _store(c_desc, out, lo, row0, col0)
                else:
                    tma.store_wait(0)  # the previous tile's store has left this buffer
                    out.slice(0, HALF, dim=1).store(lo.to(c_desc.dtype))
                hi = _epilogue(hi, offs_m, col0 + HALF, M, N, epi, SCALE_A, SCALE_B, HAS_BIAS, ACT, HAS_RES, STORE_PRE)
                if SPLIT_N == 2:
                    _store(c_desc, out, hi, row0, col0 + HALF)
                else:
                    out.slice(HALF, HALF, dim=1).store(hi.to(c_desc.dtype))
                    fence_async_shared()
                    tma_store(c_desc, [row0, col0], out)
            else:
                _store(c_desc, out, acc, row0, col0)
        tma.store_wait(0)

    @gluon.jit
    def _gemm_ws_kernel(a_desc, b_desc, c_desc, sa_ptr, sb_ptr, bias_ptr, res_ptr, pre_ptr, M, N, K, stride_rm,
                        stride_rn, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, STAGES: gl.constexpr,
                        GROUP_M: gl.constexpr, SPLIT_N: gl.constexpr, B_TRANSPOSED: gl.constexpr, SCALE_A: gl.constexpr,
                        SCALE_B: gl.constexpr, HAS_BIAS: gl.constexpr, ACT: gl.constexpr, HAS_RES: gl.constexpr,
                        STORE_PRE: gl.constexpr):
        BLOCK_M: gl.constexpr = 128
        a_smem = ring(a_desc, STAGES)
        b_smem = ring(b_desc, STAGES)
        c_smem = ring(c_desc, 2)  # one output buffer per consumer
        ready = barriers(STAGES, 1)
        empty = barriers(STAGES, 2)  # released by both consumers
        descs = (a_desc, b_desc, c_desc)
        bufs = (a_smem, b_smem, c_smem)
        bars = (ready, empty)
        shape = (M, N, K)
        epi = (sa_ptr, sb_ptr, bias_ptr, res_ptr, pre_ptr, stride_rm, stride_rn)
        gl.warp_specialize([
            (_consumer, (descs, bufs, bars, shape, epi, 0, BLOCK_M, BLOCK_N, BLOCK_K, STAGES, GROUP_M, SPLIT_N,
                         B_TRANSPOSED, SCALE_A, SCALE_B, HAS_BIAS, ACT, HAS_RES, STORE_PRE)),
            (_consumer, (descs, bufs, bars, shape, epi, 1, BLOCK_M, BLOCK_N, BLOCK_K, STAGES, GROUP_M, SPLIT_N,
                         B_TRANSPOSED, SCALE_A, SCALE_B, HAS_BIAS, ACT, HAS_RES, STORE_PRE)),
            (_producer, (descs, bufs, bars, shape, BLOCK_M, BLOCK_N, BLOCK_K, STAGES, GROUP_M, B_TRANSPOSED)),
        ], [4, 1], [240, 24])


def _descriptor(t: torch.Tensor, block):
    return TensorDescriptor(t, list(t.shape), list(t.stride()), list(block), shared_layout(tuple(block), t.dtype))


def _descriptors(a, b, c, b_transposed: bool, cfg: dict):
    BN, BK = cfg["BLOCK_N"], cfg["BLOCK_K"]
    b_block = (BN, BK) if b_transposed else (BK, BN)
    c_block = (ROWS_PER_CONSUMER, BN // cfg["SPLIT_N"])
    return _descriptor(a, (128, BK)), _descriptor(b, b_block), _descriptor(c, c_block)


def supported(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the kernel serves ``a @ b`` for these 2-D tensors: sm_90 with Gluon, one dtype
    (bf16/fp16, or fp8 with ``b`` the transpose of a K-major [N, K] tensor, as fp8 products need),
    rows TMA can read (unit stride, 16-byte aligned) in ``a``, in ``b`` or ``b.T``, and in the
    [M, N] 16-bit output.

    Example:
        >>> import torch
        >>> supported(torch.zeros(8, 16), torch.zeros(16, 8))  # fp32 on the CPU
        False
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0] or b.shape[1] % 8:
        return False
    if a.dtype in FP8:
        return tma_compatible(a, b.t(), dtypes=FP8)
    return tma_compatible(a, b) or tma_compatible(a, b.t())


def scaled_matmul_ws(a, b, scale_a, scale_b, out_dtype=torch.bfloat16, bias=None, **overrides):
    """``(a * scale_a) @ (b * scale_b) + bias`` for fp8 ``a`` [M, K] and ``b`` = ``w.t()`` of a
    K-major fp8 ``w`` [N, K]: scales as :func:`tessera.kernels.matmul.scaled_matmul` takes them
    (a scalar tensor, or [M, 1] / [1, N]). Call only where :func:`supported` holds.

    Example (on an H100/H200):
        >>> from tessera.kernels.matmul import quantize_fp8
        >>> (qa, sa), (qw, sw) = quantize_fp8(x), quantize_fp8(w)          # doctest: +SKIP
        >>> y = scaled_matmul_ws(qa, qw.t(), sa, sw)                         # doctest: +SKIP
    """
    M, N = a.shape[0], b.shape[1]
    c = torch.empty(M, N, device=a.device, dtype=out_dtype)
    modes = [1 if s.numel() == 1 else 2 for s in (scale_a, scale_b)]
    sa, sb = (s.reshape(-1).float().contiguous() for s in (scale_a, scale_b))
    launch(a, b, c, bias, 0, None, None, (sa, sb, *modes), **overrides)
    return c


def overrides_of(cfg) -> dict:
    """The compile-time parameters of a tuner ``Config`` of kind "gluon" (its ``subtile`` flag
    stores the output in two column halves).

    Example:
        >>> from tessera.kernels.matmul.configs import GLUON_DEFAULT
        >>> overrides_of(GLUON_DEFAULT)["SPLIT_N"]
        1
    """
    return dict(BLOCK_N=cfg.BN, BLOCK_K=cfg.BK, STAGES=cfg.stages, GROUP_M=cfg.GROUP_M,
                SPLIT_N=2 if cfg.subtile else 1)


def enabled() -> bool:
    """Whether the matmul entry points may choose this kernel (on Hopper): yes unless
    ``TESSERA_GLUON_GEMM=0`` keeps them on the Triton kernels.

    Example:
        >>> import os
        >>> enabled() == (os.environ.get("TESSERA_GLUON_GEMM", "1") != "0")
        True
    """
    return os.environ.get("TESSERA_GLUON_GEMM", "1") != "0"


def launch(a, b, c, bias=None, act: int = 0, residual=None, pre=None, scales=None, **overrides) -> None:
    """Write ``act(a @ b + bias) + residual`` into ``c`` (and ``a @ b + bias`` into ``pre`` when
    given); ``act`` is an ``epilogue.ACTIVATIONS`` code; ``scales`` = (sa, sb, mode_a, mode_b) for
    fp8 operands (fp32 scales, modes as ``epilogue.apply_epilogue``'s). The caller has checked
    :func:`supported` and that ``c`` (and ``pre``) are [M, N] tensors with 16-byte aligned rows."""
    cfg = config(fp8=a.dtype in FP8, **overrides)
    M, K = a.shape
    N = b.shape[1]
    if c.numel() == 0:
        return
    if K == 0:  # nothing to multiply: the epilogue of a zero product (TMA cannot describe empty rows)
        zero = torch.zeros(M, N, dtype=torch.float32, device=c.device)
        got = torch_epilogue(zero, bias, _ACTIVATION_NAMES[act], residual, c.dtype, pre is not None)
        for dst, src in zip((c, pre) if pre is not None else (c, ), got if pre is not None else (got, )):
            dst.copy_(src)
        return
    b_transposed = b.stride(-1) != 1
    b_data = b.t() if b_transposed else b
    res = c if residual is None else residual.expand(M, N)
    sa, sb, mode_a, mode_b = scales if scales is not None else (c, c, 0, 0)
    tiles = -(-M // 128) * -(-N // cfg["BLOCK_N"])
    grid = (min(tiles, sm_count(a.device)), )
    _gemm_ws_kernel[grid](*_descriptors(a, b_data, c, b_transposed, cfg), sa, sb, c if bias is None else bias, res,
                          c if pre is None else pre, M, N, K, res.stride(0), res.stride(1), **cfg,
                          B_TRANSPOSED=b_transposed, SCALE_A=mode_a, SCALE_B=mode_b, HAS_BIAS=bias is not None,
                          ACT=act, HAS_RES=residual is not None, STORE_PRE=pre is not None, num_warps=4,
                          maxnreg=MAXNREG)


def matmul_ws(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor = None, bias=None, activation=None,
              residual=None, return_preact: bool = False, **overrides):
    """``act(a @ b + bias) + residual`` by the warp-specialised kernel (the Triton kernels'
    epilogue: ``activation`` one of ``epilogue.ACTIVATIONS``; with ``return_preact`` also
    ``a @ b + bias``). ``b`` may be a [K, N] tensor or the transpose of an [N, K] one (read in
    place). Call only where :func:`supported` holds.

    Example (on an H100/H200):
        >>> a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)  # doctest: +SKIP
        >>> w = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)  # doctest: +SKIP
        >>> c = matmul_ws(a, w.t(), activation="gelu")  # doctest: +SKIP
    """
    M, N = a.shape[0], b.shape[1]
    c = torch.empty(M, N, device=a.device, dtype=a.dtype) if out is None else out
    if c.shape != (M, N) or c.dtype != a.dtype or (c.numel() and not tma_compatible(c)):
        raise ValueError(f"matmul_ws: out must be a [{M}, {N}] {a.dtype} tensor with 16-byte aligned rows")
    pre = torch.empty_like(c) if return_preact else None
    launch(a, b, c, bias, ACTIVATIONS[activation], residual, pre, **overrides)
    return (c, pre) if return_preact else c


def compile_sm90(b_transposed: bool = False, dtype=torch.bfloat16, bias=False, activation=None, residual=False,
                 return_preact=False, scales=(0, 0), out_dtype=None, **overrides):
    """Compile the kernel for sm_90 without a GPU (the result's ``asm`` holds PTX and cubin)."""
    cfg = config(fp8=dtype in FP8, **overrides)
    a = torch.empty(256, 256, dtype=dtype)
    c = torch.empty(256, 256, dtype=out_dtype or dtype)
    descs = dict(zip(("a_desc", "b_desc", "c_desc"), _descriptors(a, a, c, b_transposed, cfg)))
    element = "bf16" if c.dtype == torch.bfloat16 else "fp16"
    consts = dict(cfg, B_TRANSPOSED=b_transposed, SCALE_A=scales[0], SCALE_B=scales[1], HAS_BIAS=bias,
                  ACT=ACTIVATIONS[activation], HAS_RES=residual, STORE_PRE=return_preact)
    ptrs = {n: element for n in ("bias_ptr", "res_ptr", "pre_ptr")}
    ptrs.update(sa_ptr="fp32", sb_ptr="fp32")
    return compile_gluon(_gemm_ws_kernel, consts, descs, ptrs, (), MAXNREG)
