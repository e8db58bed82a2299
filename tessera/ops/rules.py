"""Helpers shared by shape rules: broadcasting, axes, and error text with operand names."""
from __future__ import annotations

from typing import Sequence, Tuple

from ..errors import TesseraDTypeError, TesseraShapeError
from ..types.dims import Dim, format_dims


def shape_str(shape) -> str:
    return format_dims(shape) if any(isinstance(d, Dim) and not d.is_constant for d in shape) else \
        str(tuple(int(d.constant_value) if isinstance(d, Dim) else int(d) for d in shape))


def is_scalar(x) -> bool:
    return isinstance(x, (bool, int, float))


def shape_of(x) -> Tuple[Dim, ...]:
    return () if is_scalar(x) else x.shape


def broadcast_shapes(op: str, *shapes, names: Sequence[str] = ()) -> Tuple[Dim, ...]:
    """NumPy broadcasting on symbolic dims; a mismatch names the operands and the dim."""
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(ndim):
        dim = None
        for k, s in enumerate(shapes):
            j = i - (ndim - len(s))
            if j < 0:
                continue
            d = Dim.of(s[j])
            if dim is None or dim.terms == d.terms:  # equal as written: no guard needed
                dim = d
                continue
            if d == 1:
                continue
            if dim == 1 or dim == d:
                dim = d
                continue
            labels = list(names) + [f"operand {n}" for n in range(len(names), len(shapes))]
            desc = ", ".join(f"{labels[n]} has shape {shape_str(sh)}" for n, sh in enumerate(shapes))
            raise TesseraShapeError(
                f"{op}: shapes cannot be broadcast together at dim {i - ndim} ({dim} vs {d}): {desc}. "
                "Sizes must match or be 1; reshape or slice one operand.")
        dim = Dim.const(1) if dim is None else dim
        out.append(dim)
    return tuple(out)


def normalize_axis(op: str, axis: int, ndim: int, arg: str = "dim") -> int:
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise TesseraShapeError(f"{op}: {arg} must be an int, got {axis!r}")
    if not -ndim <= axis < max(ndim, 1):
        raise TesseraShapeError(f"{op}: {arg}={axis} is out of range for a tensor of rank {ndim} "
                                f"(valid: {-ndim}..{ndim - 1})")
    return axis % ndim if ndim else 0


def normalize_axes(op: str, axes, ndim: int) -> Tuple[int, ...]:
    if axes is None:
        return tuple(range(ndim))
    if isinstance(axes, int):
        axes = (axes,)
    out = tuple(sorted({normalize_axis(op, a, ndim) for a in axes}))
    return out


def require_float(op: str, x, name: str = "x") -> None:
    if not x.dtype.is_floating:
        raise TesseraDTypeError(f"{op}: {name} must be a float tensor, got {x.dtype.name}; use {name}.to(ts.f32)")


def require_same_dtype(op: str, x, name_x: str, y, name_y: str) -> None:
    """Raise when ``y`` is stored in another dtype than ``x`` (operands that a kernel reads together)."""
    if x.dtype.storage != y.dtype.storage:
        raise TesseraDTypeError(f"{op}: {name_x} is {x.dtype.name} but {name_y} is {y.dtype.name}; "
                                f"convert with {name_y}.to(ts.{x.dtype.name})")


def dims_product(dims) -> Dim:
    p = Dim.const(1)
    for d in dims:
        p = p * Dim.of(d)
    return p
