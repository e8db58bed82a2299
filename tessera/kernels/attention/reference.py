"""Attention references for the kernels' tests: :func:`attention_reference` (the registry's definition,
:mod:`tessera.ops.attention_reference`) and :func:`varlen_reference` for packed sequences.

Example:
    >>> import torch
    >>> from tessera.kernels.attention.reference import attention_reference
    >>> q = k = v = torch.randn(1, 2, 5, 8)
    >>> o, lse = attention_reference(q, k, v, causal=True)
    >>> tuple(o.shape), tuple(lse.shape)
    ((1, 2, 5, 8), (1, 2, 5))
"""
from __future__ import annotations

from ...ops.attention_reference import allowed_positions, attention_reference, varlen_reference  # noqa: F401
