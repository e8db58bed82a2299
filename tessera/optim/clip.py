"""Gradient clipping by global norm.

Example:
    >>> import torch
    >>> g = [torch.full((4,), 3.0), torch.full((1,), 4.0)]
    >>> float(clip_grad_norm(g, 1.0)) > 1.0, round(float(torch.cat(g).norm()), 4)
    (True, 1.0)
"""
from __future__ import annotations

import torch

from ..errors import TesseraValueError
from ._tree import flatten, to_torch_leaf
from ._validate import finite_nonneg


def clip_grad_norm(grads, max_norm: float, *, norm_type: float = 2.0, eps: float = 1e-6) -> torch.Tensor:
    """Scale ``grads`` (a tensor or nested list/dict) in place so their global norm is at most ``max_norm``.

    Returns the total norm before clipping (an fp32 0-d tensor on the grads' device; no host sync). A
    non-finite norm is returned as is and the gradients become non-finite, as in torch.

    Example:
        >>> import torch
        >>> g = {"w": torch.ones(4)}
        >>> float(clip_grad_norm(g, 10.0)), g["w"][0].item()
        (2.0, 1.0)
    """
    max_norm = finite_nonneg("max_norm", max_norm)
    if max_norm == 0.0:
        raise TesseraValueError("max_norm must be > 0; to zero the gradients use g.zero_()")
    norm_type = float(norm_type)
    if not (norm_type > 0):
        raise TesseraValueError(f"norm_type must be > 0 or inf, got {norm_type!r}")
    leaves, _ = flatten(grads)
    gs = [to_torch_leaf(g) for g in leaves if g is not None]
    gs = [g for g in gs if g.numel() > 0]
    if not gs:
        return torch.zeros((), dtype=torch.float32)
    by_dev = {}
    for g in gs:
        by_dev.setdefault(g.device, []).append(g)
    dev0 = gs[0].device
    norms = []
    for dev, lst in by_dev.items():
        per = torch._foreach_norm(lst, norm_type)
        norms.append(torch.linalg.vector_norm(torch.stack([n.float() for n in per]), norm_type).to(dev0))
    total = torch.linalg.vector_norm(torch.stack(norms), norm_type)
    coef = torch.clamp(max_norm / (total + eps), max=1.0)
    for dev, lst in by_dev.items():
        torch._foreach_mul_(lst, coef.to(dev))
    return total
