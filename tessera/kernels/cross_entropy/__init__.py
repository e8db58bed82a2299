"""Fused cross-entropy kernels (loss and gradient in one pass) and linear cross-entropy for large vocabularies.

Example:
    >>> import torch
    >>> from tessera.kernels.cross_entropy import cross_entropy_fwd, cross_entropy_reference
    >>> x = torch.randn(4, 9); t = torch.tensor([1, 2, 3, -100])
    >>> loss, g = cross_entropy_fwd(x, t)
    >>> bool(torch.allclose(loss, cross_entropy_reference(x, t), atol=1e-5))
    True
"""
from .api import cross_entropy_bwd, cross_entropy_fwd, supports
from .linear import linear_cross_entropy
from .reference import cross_entropy_reference

__all__ = ["cross_entropy_fwd", "cross_entropy_bwd", "linear_cross_entropy", "supports", "cross_entropy_reference"]
