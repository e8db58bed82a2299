"""Shared helpers of the memory-bound kernels: argument checks, row planning, launch shapes.

The row kernels (norms, softmax) view their input as ``[rows, cols]`` (leading dims
flattened, the last dim contiguous). :func:`row_plan` picks, from the row length, whether
a row fits one block of registers (one pass over HBM) or is walked in blocks, how many
rows one program takes, and the warps per program.

Example:
    >>> from tessera.kernels._membound import row_plan
    >>> row_plan(4096, 2).fused
    True
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import triton

from ..errors import TesseraDeviceError, TesseraDTypeError, TesseraShapeError, TesseraTypeError

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def interpreting() -> bool:
    """True when Triton kernels run on the CPU through ``TRITON_INTERPRET=1``."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def max_fused_cols() -> int:
    """The longest row kept whole in registers; longer rows are walked in blocks."""
    return 4096 if interpreting() else 16384


def check_tensor(t, name: str, op: str, *, float_only: bool = True) -> torch.Tensor:
    """Raise a typed error unless ``t`` is a tensor the kernels can run on."""
    if not isinstance(t, torch.Tensor):
        raise TesseraTypeError(f"{op}: '{name}' must be a torch.Tensor, got {type(t).__name__}")
    if float_only and t.dtype not in FLOAT_DTYPES:
        raise TesseraDTypeError(
            f"{op}: '{name}' has dtype {t.dtype}; use float16, bfloat16 or float32 (e.g. {name}.float())")
    if not (t.is_cuda or interpreting()):
        raise TesseraDeviceError(
            f"{op}: '{name}' is on {t.device}; these kernels need a CUDA tensor "
            f"(or TRITON_INTERPRET=1 on the CPU); move it with {name}.cuda()")
    return t


def check_same(a: torch.Tensor, b: torch.Tensor, na: str, nb: str, op: str) -> None:
    """Raise unless ``a`` and ``b`` share shape, dtype and device."""
    if a.shape != b.shape:
        raise TesseraShapeError(f"{op}: '{nb}' has shape {tuple(b.shape)} but '{na}' has {tuple(a.shape)}; "
                                f"they must match")
    if a.dtype != b.dtype:
        raise TesseraDTypeError(f"{op}: '{nb}' is {b.dtype} but '{na}' is {a.dtype}; cast one to the other")
    if a.device != b.device:
        raise TesseraDeviceError(f"{op}: '{nb}' is on {b.device} but '{na}' on {a.device}; move them together")


def check_vector(w: Optional[torch.Tensor], name: str, n: int, ref: torch.Tensor, op: str) -> None:
    """Raise unless ``w`` is None or a float vector of length ``n`` on ``ref``'s device."""
    if w is None:
        return
    check_tensor(w, name, op)
    if w.dim() != 1 or w.shape[0] != n:
        raise TesseraShapeError(f"{op}: '{name}' has shape {tuple(w.shape)}; it must be [{n}], "
                                f"the size of the normalised (last) dim")
    if w.device != ref.device:
        raise TesseraDeviceError(f"{op}: '{name}' is on {w.device} but the input on {ref.device}")


def check_rows(x: torch.Tensor, name: str, op: str) -> None:
    if x.dim() == 0:
        raise TesseraShapeError(f"{op}: '{name}' is a scalar; it needs at least one dim (the row)")
    if x.shape[-1] == 0:
        raise TesseraShapeError(f"{op}: '{name}' has an empty last dim; rows need at least one element")


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a 2-D ``[rows, cols]`` tensor whose rows are contiguous (copied only if needed)."""
    x2 = x.reshape(-1, x.shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    return x2


def num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


@dataclass(frozen=True)
class RowPlan:
    """How a row kernel walks ``[rows, cols]``: ``block`` columns at a time (whole row when ``fused``),
    ``rows`` rows per program, ``warps`` warps per program."""

    block: int
    rows: int
    warps: int
    fused: bool


def row_plan(cols: int, itemsize: int, *, max_fused: Optional[int] = None, backward: bool = False) -> RowPlan:
    """Pick the block shape of a row kernel for rows of ``cols`` elements of ``itemsize`` bytes.

    Short rows share a program (about 8-16 KB of input per program), so that every
    program moves enough bytes; long rows get more warps, keeping each thread at
    16-32 fp32 values (backward: 8-16, it holds twice the live values and the weight-gradient
    accumulators); rows over ``max_fused`` are walked in blocks of 4096.

    Example:
        >>> row_plan(1024, 2)
        RowPlan(block=1024, rows=4, warps=8, fused=True)
    """
    limit = max_fused or max_fused_cols()
    if cols > limit:
        return RowPlan(block=min(4096, limit), rows=1, warps=8, fused=False)
    block = triton.next_power_of_2(cols)
    if backward:  # one row per iteration from 1024 columns up: its reductions stay inside few warps
        rows = max(1, min(16, 1024 // block))
        warps = max(4, min(32, (block * rows) // 256))
    else:
        rows = max(1, min(16, 4096 // block))
        warps = max(4, min(16, (block * rows) // 512))
    return RowPlan(block=block, rows=rows, warps=warps, fused=True)


def flat_block(n: int) -> int:
    """Block size of the elementwise kernels: 4096 elements, fewer for tiny tensors."""
    return max(16, min(4096, triton.next_power_of_2(max(n, 1))))
