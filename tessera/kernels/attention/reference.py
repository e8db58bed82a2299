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

import torch

from ...ops.attention_reference import allowed_positions, attention_reference  # noqa: F401


def varlen_reference(q, k, v, cu_seqlens_q, cu_seqlens_k, *, causal=False, scale=None):
    """Variable-length attention by looping :func:`attention_reference` over sequences.

    q ``[total_q, H, D]``, k/v ``[total_k, Hkv, D]``; returns o ``[total_q, H, D]`` and
    lse ``[H, total_q]``.

    Example:
        >>> import torch
        >>> q = torch.randn(5, 2, 8); kv = torch.randn(6, 1, 8)
        >>> cu = torch.tensor([0, 2, 5], dtype=torch.int32); cuk = torch.tensor([0, 4, 6], dtype=torch.int32)
        >>> o, lse = varlen_reference(q, kv, kv, cu, cuk)
        >>> tuple(lse.shape)
        (2, 5)
    """
    outs, lses = [], []
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for b in range(len(cq) - 1):
        qb = q[cq[b]:cq[b + 1]].transpose(0, 1).unsqueeze(0)
        kb = k[ck[b]:ck[b + 1]].transpose(0, 1).unsqueeze(0)
        vb = v[ck[b]:ck[b + 1]].transpose(0, 1).unsqueeze(0)
        o, lse = attention_reference(qb, kb, vb, causal=causal, scale=scale)
        outs.append(o[0].transpose(0, 1))
        lses.append(lse[0])
    return torch.cat(outs, 0), torch.cat(lses, 1)
