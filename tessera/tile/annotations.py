"""``ts.Tile[...]`` parameter annotations and the ``constexpr`` marker.

A ``Tile["B*H", "S", "D", ts.bf16]`` parameter is a global tensor seen by the kernel:
its dims are symbolic sizes (parsed by :func:`tessera.types.dims.parse_dim`), its dtype
optional (absent: any float dtype).

Example:
    >>> from tessera.tile import Tile
    >>> from tessera import dtypes
    >>> spec = Tile["B*H", "S", "D", dtypes.bf16]
    >>> spec.rank, str(spec.dims[0]), spec.dtype
    (3, 'B*H', bf16)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from .. import dtypes as _dt
from ..errors import TesseraAnnotationError
from ..types.dims import Dim, parse_dim


@dataclass(frozen=True)
class TileSpec:
    """What a ``Tile[...]`` annotation says: the dims (as :class:`Dim`) and the dtype (or None)."""

    dims: Tuple[Dim, ...]
    dtype: Optional[_dt.DType]
    read_only: bool = False

    @property
    def readonly(self) -> "TileSpec":
        """The same annotation for a parameter the kernel may not write: ``ts.Tile["N", ts.f16].readonly``."""
        return TileSpec(self.dims, self.dtype, True)

    @property
    def rank(self) -> int:
        return len(self.dims)

    def __repr__(self) -> str:
        inner = ", ".join(repr(str(d)) for d in self.dims)
        return f"Tile[{inner}{', ' + self.dtype.name if self.dtype else ''}]{'.readonly' if self.read_only else ''}"


class Tile:
    """Annotation of a kernel's tensor parameter: ``Tile["M", "N", ts.f16]`` (see module docstring).

    Example:
        >>> import tessera as ts
        >>> spec = ts.Tile["M", "N", ts.f16]
        >>> spec, spec.rank, spec.readonly
        (Tile['M', 'N', f16], 2, Tile['M', 'N', f16].readonly)
    """

    def __class_getitem__(cls, items) -> TileSpec:
        if not isinstance(items, tuple):
            items = (items,)
        dtype = None
        if items and not isinstance(items[-1], (str, int)):
            dtype = _dt.as_dtype(items[-1])
            items = items[:-1]
        if not items:
            raise TesseraAnnotationError("ts.Tile[...] needs at least one dim, e.g. ts.Tile['M', 'N', ts.f16]")
        dims = []
        for it in items:
            if not isinstance(it, (str, int)) or isinstance(it, bool):
                raise TesseraAnnotationError(
                    f"ts.Tile[...]: {it!r} is not a dim; write dims as strings ('S', 'B*H') or ints, the dtype last")
            dims.append(parse_dim(it))
        return TileSpec(tuple(dims), dtype)

    def __init__(self, *a, **k):
        raise TesseraAnnotationError("ts.Tile is an annotation: write ts.Tile['M', 'N', ts.f16] on a kernel parameter")


class constexpr:
    """Marks a kernel parameter as a compile-time constant (tile sizes): ``BLOCK_M: ts.tile.constexpr = 128``.

    Example:
        >>> from tessera.tile import constexpr
        >>> constexpr.__name__
        'constexpr'
    """
