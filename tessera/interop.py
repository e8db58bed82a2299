"""Moving between Tessera tensors and torch tensors without copies.

Kernels and optimizers work on torch storage; these two functions cross the boundary.

Example:
    >>> import torch, tessera as ts
    >>> t = torch.ones(2)
    >>> ts.interop.to_torch(ts.interop.from_torch(t)) is t
    True
"""
from __future__ import annotations


def to_torch(x):
    """The torch tensor behind a ``ts.Tensor`` (the same object for a torch tensor)."""
    import torch

    if isinstance(x, torch.Tensor):
        return x
    data = getattr(x, "_data", None)
    if isinstance(data, torch.Tensor):
        return data
    from .errors import TesseraTypeError

    raise TesseraTypeError(f"expected a ts.Tensor or torch.Tensor, got {type(x).__name__}")


def from_torch(t, dtype=None):
    """Wrap a torch tensor as a ``ts.Tensor`` sharing its storage."""
    from .core.tensor import Tensor

    return Tensor._from_torch(t, dtype)


def from_dlpack(obj, dtype=None):
    """A ``ts.Tensor`` sharing memory with any DLPack producer (torch, numpy, JAX, CuPy).

    Example:
        >>> import numpy as np, tessera as ts
        >>> a = np.arange(3, dtype=np.float32)
        >>> t = ts.from_dlpack(a)
        >>> a[0] = 7.0
        >>> t.tolist()
        [7.0, 1.0, 2.0]
    """
    import torch

    from .core.tensor import Tensor

    if isinstance(obj, Tensor):
        return obj
    t = obj if isinstance(obj, torch.Tensor) else torch.from_dlpack(obj)
    return Tensor._from_torch(t, dtype)
