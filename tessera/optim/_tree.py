"""Flatten nested lists/tuples/dicts of tensors (torch or ``ts.Tensor``) into leaves and back.

Example:
    >>> import torch
    >>> leaves, spec = flatten({"a": [torch.ones(1), torch.zeros(2)], "b": torch.ones(3)})
    >>> len(leaves), unflatten(spec, leaves)["b"].shape
    (3, torch.Size([3]))
"""
from __future__ import annotations

from typing import Any, List, Tuple

import torch

from ..errors import TesseraShapeError, TesseraTypeError


def _is_leaf(x) -> bool:
    return x is None or isinstance(x, torch.Tensor) or isinstance(getattr(x, "_data", None), torch.Tensor)


def flatten(tree) -> Tuple[List[Any], Any]:
    """Leaves in a fixed order (dict keys in insertion order) and a spec that rebuilds the structure."""
    leaves: List[Any] = []

    def go(x):
        if _is_leaf(x):
            leaves.append(x)
            return ("leaf",)
        if isinstance(x, dict):
            return ("dict", tuple(x.keys()), tuple(go(v) for v in x.values()))
        if isinstance(x, (list, tuple)):
            return (type(x).__name__, len(x), tuple(go(v) for v in x))
        raise TesseraTypeError(f"expected a tensor or a (nested) list/tuple/dict of tensors, found "
                               f"{type(x).__name__}; wrap it with torch.as_tensor or remove it")

    return leaves, go(tree)


def unflatten(spec, leaves: List[Any]):
    """Inverse of :func:`flatten`."""
    it = iter(leaves)

    def go(s):
        if s[0] == "leaf":
            return next(it)
        if s[0] == "dict":
            return {k: go(c) for k, c in zip(s[1], s[2])}
        seq = [go(c) for c in s[2]]
        return tuple(seq) if s[0] == "tuple" else seq

    return go(spec)


def same_structure(spec_a, spec_b, what: str) -> None:
    """Raise TesseraShapeError when two trees differ in structure."""
    if spec_a != spec_b:
        raise TesseraShapeError(f"{what} must have the same structure (lists, dicts, keys) as the params; "
                                f"pass gradients laid out like the parameters")


def to_torch_leaf(x):
    """The torch tensor behind a leaf (None stays None)."""
    if x is None or isinstance(x, torch.Tensor):
        return x
    from ..interop import to_torch

    return to_torch(x)
