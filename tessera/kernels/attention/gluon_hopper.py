"""Shared pieces of the Gluon attention kernels for Hopper (``hopper_ws``, ``hopper_ws_bwd``):
whether this Triton has Gluon's Hopper API, TMA descriptors, mbarrier rings and shared buffers,
wgmma layouts, the input conditions the kernels share, and compilation for sm_90 without a GPU.

Gluon is Triton's experimental layer and its names move between releases (the TMA copies were
renamed after Triton 3.6), so they are resolved here once.

Example:
    >>> from tessera.kernels.attention import gluon_hopper
    >>> isinstance(gluon_hopper.available(), bool)
    True
"""
from __future__ import annotations

import functools
import os

import torch

try:  # Gluon ships with Triton >= 3.5; older Tritons simply lack these kernels
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    # Triton 3.6 names the TMA copies async_copy_*; later Tritons renamed them (same arguments).
    tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
    tma_store = getattr(tma, "async_store", None) or tma.async_copy_shared_to_global
    _GLUON = True
except ImportError:  # pragma: no cover - depends on the installed Triton
    _GLUON = False

LOG2E = 1.4426950408889634


def available() -> bool:
    """True when this Triton has the Gluon Hopper API the kernels are written in."""
    return _GLUON


if _GLUON:

    @gluon.constexpr_function
    def warpgroup_mma_layout(n):
        """The accumulator layout of one warpgroup's [64, n] wgmma product (bf16/fp16 operands)."""
        return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, n, 16])

    @gluon.constexpr_function
    def register_operand_layout(acc_layout):
        """The layout of a 16-bit A operand held in registers for a product into ``acc_layout``."""
        return gl.DotOperandLayout(operand_index=0, parent=acc_layout, k_width=2)

    @gluon.jit
    def barriers(N: gl.constexpr, COUNT: gl.constexpr):
        """N mbarriers in shared memory, each completing a phase after COUNT arrivals."""
        bars = gl.allocate_shared_memory(gl.int64, [N, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(N):
            mbarrier.init(bars.index(i), count=COUNT)
        return bars

    @gluon.jit
    def ring(desc, N: gl.constexpr):
        """N shared-memory buffers shaped and laid out as ``desc``'s TMA blocks."""
        return gl.allocate_shared_memory(desc.dtype, [N] + desc.block_type.shape, desc.layout)

    @gluon.jit
    def key_blocks(start_m, SEQ_Q, SEQ_K, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, CAUSAL: gl.constexpr):
        """How many BLOCK_N key blocks query rows [start_m, start_m + BLOCK_M) attend to (at least
        one, so that rows seeing no key still produce their zeros)."""
        hi = SEQ_K
        if CAUSAL:
            hi = gl.minimum(SEQ_K, start_m + BLOCK_M + SEQ_K - SEQ_Q)
        return gl.maximum(gl.cdiv(hi, BLOCK_N), 1)


def descriptor(t: torch.Tensor, rows: int):
    """A Gluon TMA descriptor over a [B, H, S, D] tensor with [1, 1, rows, D] blocks."""
    return TensorDescriptor(t, list(t.shape), list(t.stride()), [1, 1, rows, t.shape[-1]],
                            _block_layout(rows, t.shape[-1], t.dtype))


@functools.lru_cache(maxsize=None)
def _block_layout(rows: int, D: int, dtype: torch.dtype):
    # the same few layouts serve every launch; building them is pure Python on the launch path
    element = gl.bfloat16 if dtype == torch.bfloat16 else gl.float16
    return gl.NVMMASharedLayout.get_default_for([1, 1, rows, D], element)


def enabled() -> bool:
    """False when ``TESSERA_ATTENTION_WS=0`` asks for the portable kernel everywhere."""
    return os.environ.get("TESSERA_ATTENTION_WS", "1") != "0"


def tma_ready(*tensors) -> bool:
    """Whether the kernels can read these ``[B, H, S, D]`` tensors on their device: Gluon present
    and enabled, sm_90, one dtype (bf16/fp16), non-empty, unit-stride rows and 16-byte aligned
    strides (TMA).

    Example:
        >>> import torch
        >>> tma_ready(*[torch.zeros(1, 1, 8, 64)] * 4)  # fp32 on the CPU
        False
    """
    first = tensors[0]
    if not (_GLUON and enabled()) or first.dtype not in (torch.bfloat16, torch.float16) or not first.is_cuda:
        return False
    if torch.cuda.get_device_capability(first.device) != (9, 0):
        return False
    for t in tensors:
        if t.dtype != first.dtype or t.numel() == 0 or t.stride(-1) != 1 or t.data_ptr() % 16:
            return False
        if any((s * t.element_size()) % 16 for s in t.stride()[:-1]):
            return False
    return True


def with_overrides(table: dict, D: int, overrides: dict) -> dict:
    """``table[D]`` with ``HEAD_DIM`` and the ``overrides`` that are not ``None``."""
    cfg = dict(table[D], HEAD_DIM=D)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return cfg


@functools.lru_cache(maxsize=None)
def sm_count(device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def compile_gluon(kernel, consts: dict, descs: dict, ptrs: dict, fp32_args, maxnreg: int):
    """Compile a Gluon kernel for sm_90 (4 warps in the default partition): ``consts`` are its
    constexprs, ``descs`` example descriptors by argument, ``ptrs`` element types of its pointer
    arguments; the rest are fp32 scalars (``fp32_args``) or int32 scalars."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource
    from triton.runtime.jit import mangle_type

    sig, attrs = {}, {}
    for i, name in enumerate(kernel.arg_names):
        if name in consts:
            sig[name] = "constexpr"
        elif name in descs:
            sig[name] = mangle_type(descs[name])
        elif name in ptrs:
            sig[name], attrs[(i,)] = "*" + ptrs[name], [["tt.divisibility", 16]]
        else:
            sig[name] = "fp32" if name in fp32_args else "i32"
    src = GluonASTSource(kernel, sig, consts, attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "maxnreg": maxnreg})
