"""``@ts.kernel``: Tessera's tile-level kernel language, compiled to Triton.

A kernel is a Python function over ``ts.Tile[...]`` parameters written with the
``ts.tile.*`` ops; the compiler reads its source (Python AST -> Tile IR -> Triton)
and launches it on CUDA tensors, or through Triton's interpreter on CPU tensors.
docs/tile.md gives the semantics.

Example:
    >>> import torch, tessera.tile as tile
    >>> @tile.kernel
    ... def scale_rows(X: tile.Tile["M", "N"], Y: tile.Tile["M", "N"], s: float):
    ...     for r in tile.range(X.shape[0]):
    ...         tile.store(Y[r, :], tile.load(X[r, :]) * s)
    >>> x = torch.ones(3, 5); y = torch.empty(3, 5)
    >>> scale_rows(x, y, 2.0); y.sum().item()
    30.0
"""
from .annotations import Tile, TileSpec, constexpr
from .kernel import Kernel, Lowered, kernel
from .ops import *  # noqa: F401,F403  (the ts.tile.* ops)
from .ops import OP_DOCS

__all__ = ["kernel", "Kernel", "Lowered", "Tile", "TileSpec", "constexpr"] + list(OP_DOCS)
