"""Reductions: sum, max, min, argmax, argmin (and mean/var built on them).

Example:
    >>> import tessera as ts
    >>> with ts.device("cpu"):
    ...     x = ts.arange(6, dtype=ts.f32).reshape(2, 3)
    ...     x.sum(dim=1).tolist(), x.max(dim=0).tolist(), x.mean().item()
    ([3.0, 12.0], [3.0, 4.0, 5.0], 2.5)
"""
from __future__ import annotations

import torch

from .. import dtypes as dt
from ..core.dispatch import bind
from ..core.primitive import Aval, Primitive
from ..types.dims import Dim
from .rules import normalize_axes


def _reduced_shape(shape, axes, keepdim):
    if keepdim:
        return tuple(Dim.const(1) if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


class Reduce(Primitive):
    attrs = (("axes", ()), ("keepdim", False))

    def shape(self, x, *, axes, keepdim):
        normalize_axes(self.name, axes, x.ndim)
        return Aval(_reduced_shape(x.shape, axes, keepdim), self.out_dtype(x.dtype))

    def out_dtype(self, dtype):
        return dtype


class Sum(Reduce):
    name = "sum"

    def out_dtype(self, dtype):
        return dt.int64 if dtype.kind in ("int", "uint", "bool") else dtype

    def reference(self, x, *, axes, keepdim):
        if not axes:  # torch.sum(dim=()) would reduce every dim
            return x.to(torch.int64) if not (x.is_floating_point() or x.is_complex()) else x.clone()
        return torch.sum(x, dim=axes, keepdim=keepdim)

    def vjp(self, cts, ins, outs, *, axes, keepdim):
        (x,) = ins
        ct = cts[0]
        if not keepdim:
            ct = ct.reshape(*_reduced_shape(x.shape, axes, True))
        return (ct.broadcast_to(*x.shape),)


class MaxMin(Reduce):
    def reference(self, x, *, axes, keepdim):
        fn = torch.amax if self.name == "max" else torch.amin
        return fn(x, dim=axes, keepdim=keepdim) if axes else x.clone()

    def vjp(self, cts, ins, outs, *, axes, keepdim):
        from .elementwise import where

        (x,), (y,), ct = ins, outs, cts[0]
        if not keepdim:
            shape = _reduced_shape(x.shape, axes, True)
            y, ct = y.reshape(*shape), ct.reshape(*shape)
        hit = (x == y)
        count = sum(hit.to(x.dtype), axes, keepdim=True)
        return (where(hit, ct / count, 0.0),)


class Max(MaxMin):
    name = "max"


class Min(MaxMin):
    name = "min"


class ArgReduce(Reduce):
    differentiable = False

    def out_dtype(self, dtype):
        return dt.int64

    def shape(self, x, *, axes, keepdim):
        if len(axes) != 1:
            from ..errors import TesseraShapeError

            raise TesseraShapeError(f"{self.name}: reduces exactly one dim; pass dim=... (or None for the flattened index)")
        return super().shape(x, axes=axes, keepdim=keepdim)

    def reference(self, x, *, axes, keepdim):
        fn = torch.argmax if self.name == "argmax" else torch.argmin
        return fn(x, dim=axes[0], keepdim=keepdim)


class Argmax(ArgReduce):
    name = "argmax"


class Argmin(ArgReduce):
    name = "argmin"


SUM, MAX, MIN, ARGMAX, ARGMIN = Sum(), Max(), Min(), Argmax(), Argmin()


def _axes(op, x, dim):
    return normalize_axes(op, dim, x.ndim)


def sum(x, dim=None, keepdim: bool = False):
    """Sum over ``dim`` (an int, a tuple of ints, or None for all dims).

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     ts.sum(ts.ones(2, 3), dim=-1).tolist()
        [3.0, 3.0]
    """
    return bind(SUM, x, axes=_axes("sum", x, dim), keepdim=keepdim)


def max(x, dim=None, keepdim: bool = False):
    """Largest value over ``dim`` (values only; use ``argmax`` for positions).

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     x = ts.tensor([[1.0, 5.0], [4.0, 2.0]])
        >>> ts.max(x).item(), ts.max(x, dim=1).tolist(), ts.max(x, dim=0, keepdim=True).shape
        (5.0, [5.0, 4.0], (1, 2))
    """
    return bind(MAX, x, axes=_axes("max", x, dim), keepdim=keepdim)


def min(x, dim=None, keepdim: bool = False):
    """Smallest value over ``dim``.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     ts.min(ts.tensor([[3, -1], [0, 7]]), dim=0).tolist()
        [0, -1]
    """
    return bind(MIN, x, axes=_axes("min", x, dim), keepdim=keepdim)


def _arg(prim, x, dim, keepdim):
    if dim is None:
        return bind(prim, x.reshape(-1), axes=(0,), keepdim=False)
    return bind(prim, x, axes=_axes(prim.name, x, dim), keepdim=keepdim)


def argmax(x, dim=None, keepdim: bool = False):
    """Index of the largest value along ``dim`` (of the flattened tensor when None).

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     x = ts.tensor([[1.0, 5.0], [4.0, 2.0]])
        >>> ts.argmax(x).item(), ts.argmax(x, dim=0).tolist()
        (1, [1, 0])
    """
    return _arg(ARGMAX, x, dim, keepdim)


def argmin(x, dim=None, keepdim: bool = False):
    """Index of the smallest value along ``dim``.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     ts.argmin(ts.tensor([[3.0, 0.5, 2.0]]), dim=-1).tolist()
        [1]
    """
    return _arg(ARGMIN, x, dim, keepdim)


def _count(x, axes):
    n = Dim.const(1)
    for a in axes:
        n = n * Dim.of(x.shape[a])
    return n


def mean(x, dim=None, keepdim: bool = False):
    """Mean over ``dim``; integer tensors give the default float dtype.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     ts.mean(ts.arange(4, dtype=ts.f32)).item()
        1.5
    """
    axes = _axes("mean", x, dim)
    if not x.dtype.is_floating:
        x = x.to(dt.DEFAULT_FLOAT)
    n = _count(x, axes)
    return sum(x, axes, keepdim) / (n.constant_value if n.is_constant else _dim_scalar(n, x))


def var(x, dim=None, keepdim: bool = False, correction: int = 0):
    """Variance over ``dim`` (population variance by default, ``correction=1`` for sample)."""
    axes = _axes("var", x, dim)
    mu = mean(x, axes, keepdim=True)
    d = x - mu
    n = _count(x, axes) - correction
    return sum(d * d, axes, keepdim) / (n.constant_value if n.is_constant else _dim_scalar(n, x))


def _dim_scalar(n: Dim, like):
    """A symbolic size as a 0-d tensor (under tracing)."""
    from .creation import dim_value

    return dim_value(n, like.dtype)
