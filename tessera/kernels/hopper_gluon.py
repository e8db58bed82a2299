"""Shared pieces of the Gluon kernels for Hopper (sm_90): whether this Triton has Gluon's Hopper
API, the TMA copies under their version's names, mbarrier rings and shared buffers, wgmma
layouts, and compilation for sm_90 without a GPU. The attention kernels
(``kernels/attention/hopper_ws*.py``) and the GEMM (``kernels/matmul/gluon_ws.py``) use them.

Gluon is Triton's experimental layer and its names move between releases (the TMA copies were
renamed after Triton 3.6), so they are resolved here once.

Example:
    >>> from tessera.kernels import hopper_gluon
    >>> isinstance(hopper_gluon.available(), bool)
    True
"""
from __future__ import annotations

import functools

import torch

try:  # Gluon ships with Triton >= 3.5; older Tritons simply lack these kernels
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma
    # Triton 3.6 names the TMA copies async_copy_*; later Tritons renamed them (same arguments).
    tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
    tma_store = getattr(tma, "async_store", None) or tma.async_copy_shared_to_global
    _GLUON = True
except ImportError:  # pragma: no cover - depends on the installed Triton
    _GLUON = False

if _GLUON:
    from triton._C.libtriton import ir as _ir
    from triton.language.core import builtin as _builtin

    @_builtin
    def _tma_reduce_add(tensor_desc, coord, src, _semantic=None):
        """TMA reduce-add of a shared-memory block into global memory (``cp.reduce.async.bulk``),
        through the builder call that later Tritons expose as ``tma.async_atomic_add``."""
        coord = _semantic._convert_to_ir_values(coord, require_i64=False)
        _semantic.builder.create_async_tma_reduce(_ir.DESCRIPTOR_REDUCE_KIND.ADD, tensor_desc.handle, coord,
                                                  src.handle)

    # asynchronous like tma_store: tma.store_wait(n) waits for its reads of shared memory
    tma_reduce_add = getattr(tma, "async_atomic_add", None) or _tma_reduce_add


def available() -> bool:
    """True when this Triton has the Gluon Hopper API the kernels are written in."""
    return _GLUON


if _GLUON:

    @gluon.constexpr_function
    def warpgroup_mma_layout(n, operand_bits=16):
        """The accumulator layout of one warpgroup's [64, n] wgmma product (16-bit operands, or
        8-bit ones, whose instructions are 32 deep)."""
        return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                         instr_shape=[16, n, 256 // operand_bits])

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


def _element(dtype: torch.dtype):
    return {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16, torch.float8_e4m3fn: gl.float8e4nv,
            torch.float8_e5m2: gl.float8e5, torch.float32: gl.float32}[dtype]


@functools.lru_cache(maxsize=None)
def shared_layout(block: tuple, dtype: torch.dtype):
    """The swizzled shared-memory layout of a TMA block of bf16/fp16/fp8/fp32 elements (cached:
    the same few serve every launch, and building one is pure Python on the launch path)."""
    return gl.NVMMASharedLayout.get_default_for(list(block), _element(dtype))


SIXTEEN_BIT = (torch.bfloat16, torch.float16)
FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)


def tma_compatible(*tensors, dtypes=SIXTEEN_BIT) -> bool:
    """Whether Gluon's Hopper kernels can read these tensors through TMA: Gluon present, sm_90,
    one dtype (one of ``dtypes``), non-empty, unit-stride last dim, 16-byte aligned base and
    strides.

    Example:
        >>> import torch
        >>> tma_compatible(torch.zeros(8, 64))  # fp32 on the CPU
        False
    """
    first = tensors[0]
    if not _GLUON or first.dtype not in dtypes or not first.is_cuda:
        return False
    if torch.cuda.get_device_capability(first.device) != (9, 0):
        return False
    for t in tensors:
        if t.dtype != first.dtype or t.numel() == 0 or t.stride(-1) != 1 or t.data_ptr() % 16:
            return False
        if any((s * t.element_size()) % 16 for s in t.stride()[:-1]):
            return False
    return True


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
