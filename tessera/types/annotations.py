"""Tensor annotations: ``ts.Tensor["B", "S", "D", ts.bf16]`` and ``ts.Dict[str, ts.Tensor]``.

An annotation is made once, when the function is defined; every dimension string is
parsed then by the safe grammar of :mod:`tessera.types.dims`, so a malformed one fails
at definition time, never at a call.

Example:
    >>> import tessera as ts
    >>> spec = ts.Tensor["B", "3*D", ts.bf16]
    >>> spec.dims, spec.dtype
    (('B', '3*D'), bf16)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

from ..dtypes import DType
from ..errors import TesseraAnnotationError
from .dims import Dim, parse_dim


@dataclass(frozen=True)
class TensorSpec:
    """A tensor annotation: dims (a leading ``...`` allows any batch dims) and a dtype."""

    parsed: Tuple[Union[Dim, type(Ellipsis)], ...]
    dtype: Optional[DType]
    source: Tuple[object, ...]

    @property
    def dims(self):
        """The dims as written (strings and ints)."""
        return tuple("..." if d is Ellipsis else d for d in self.source)

    @property
    def has_ellipsis(self) -> bool:
        return any(d is Ellipsis for d in self.parsed)

    def __repr__(self) -> str:
        items = [repr(d) if not isinstance(d, type(Ellipsis)) else "..." for d in self.source]
        if self.dtype is not None:
            items.append(repr(self.dtype))
        return f"Tensor[{', '.join(items)}]"


def make_tensor_spec(items, kind: str = "Tensor") -> TensorSpec:
    """Build a :class:`TensorSpec` from the items of ``ts.Tensor[...]``."""
    if not isinstance(items, tuple):
        items = (items,)
    dtype = None
    if items and isinstance(items[-1], DType):
        dtype, items = items[-1], items[:-1]
    parsed = []
    for i, item in enumerate(items):
        if isinstance(item, DType):
            raise TesseraAnnotationError(f"ts.{kind}[...]: the dtype {item!r} must be the last item")
        if item is Ellipsis or item == "...":
            if any(p is Ellipsis for p in parsed):
                raise TesseraAnnotationError(f"ts.{kind}[...]: at most one '...' is allowed")
            parsed.append(Ellipsis)
            continue
        try:
            parsed.append(parse_dim(item))
        except TesseraAnnotationError as e:
            raise TesseraAnnotationError(f"ts.{kind}[...], dimension {i}: {e}") from None
    return TensorSpec(tuple(parsed), dtype, tuple(Ellipsis if i == "..." else i for i in items))


@dataclass(frozen=True)
class DictSpec:
    """``ts.Dict[str, ts.Tensor]``: a dict of tensors (values may also be annotated)."""

    value: object = None

    def __repr__(self) -> str:
        return f"Dict[str, {self.value!r}]"


class _DictFactory:
    """``ts.Dict[str, V]``, the annotation of a dict returned by a function."""

    def __getitem__(self, items) -> DictSpec:
        if not isinstance(items, tuple) or len(items) != 2 or items[0] is not str:
            raise TesseraAnnotationError("ts.Dict takes a key and a value type: ts.Dict[str, ts.Tensor]")
        return DictSpec(items[1])

    def __repr__(self) -> str:
        return "ts.Dict"


Dict = _DictFactory()
