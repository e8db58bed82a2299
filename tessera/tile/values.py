"""The frontend's compile-time values: tiles with their padding masks, scalars, Tile parameters, views.

Example:
    >>> from tessera.tile.values import next_pow2
    >>> next_pow2(100)
    128
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

from .. import dtypes as _dt
from ..types.dims import Dim
from . import ir
@dataclass
class AxisMask:
    """Which positions along one tile axis are real (not padding); ``zero``: padding holds 0."""
    v: ir.Value
    zero: bool


@dataclass
class TileV:
    """A tile value and, per axis, its padding mask (None: every position is real)."""
    v: ir.Value
    masks: Tuple[Optional[AxisMask], ...]

    @property
    def shape(self):
        return self.v.type.shape

    @property
    def dtype(self):
        return self.v.type.dtype


@dataclass
class Scalar:
    """A runtime scalar; ``static``/``host`` when its value is known at launch (shapes, int args)."""
    v: ir.Value
    static: Any = None
    host: Any = None  # a JSON host expression evaluating the value at launch
    dim: Optional[Dim] = None  # the annotation dim it equals (for X.shape[i])
    align: Optional[Tuple[int, Dim]] = None  # an induction variable: (multiple of, bounded by dim)

    @property
    def dtype(self):
        return self.v.type.dtype


@dataclass
class TensorP:
    """A Tile parameter."""
    name: str
    spec: Any
    v: ir.Value
    shape: Tuple[int, ...]
    dtype: _dt.DType
    batch: bool
    writable: bool


@dataclass
class View:
    """``X[...]`` before it is loaded or stored: one entry per addressed dim."""
    t: TensorP
    entries: List[tuple]
    node: ast.AST


@dataclass
class ShapeP:
    t: TensorP


@dataclass
class OpRef:
    name: str


@dataclass
class Poisoned:
    """A name written inside a loop whose value after the loop is undefined (a parallel loop, or a
    sequential loop that never reads it, so does not carry it)."""
    loop: ast.For
    parallel: bool = True


class ContextV:
    """What ``ts.tile.context()`` returns: a handle with no state of its own."""


@dataclass
class ParallelAxis:
    count: Any  # host expression
    node: ast.AST


@dataclass
class LoweredIR:
    """The frontend's result: the IR function plus what launching it needs."""
    fn: ir.Function
    axes: List[ParallelAxis]
    batch: Optional[str]
    probes: List[Any]
    uses_program_id: bool
    max_dot: int = 0
    max_tile: int = 0
    has_loop_loads: bool = False


def _is_pow2(n) -> bool:
    return isinstance(n, int) and n > 0 and (n & (n - 1)) == 0


def next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()
