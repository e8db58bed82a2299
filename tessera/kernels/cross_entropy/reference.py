"""Plain-torch cross-entropy with the fused kernel's semantics (ignore_index, label smoothing, z-loss).

Differentiable and dtype-preserving: pass float64 logits for a float64 reference.

Example:
    >>> import torch
    >>> x = torch.randn(4, 7, dtype=torch.float64); t = torch.tensor([0, 3, -100, 6])
    >>> ref = cross_entropy_reference(x, t)
    >>> bool(torch.allclose(ref, torch.nn.functional.cross_entropy(x, t)))
    True
"""
from __future__ import annotations

import torch


def cross_entropy_reference(logits, targets, *, ignore_index=-100, label_smoothing=0.0, z_loss=0.0,
                            reduction="mean"):
    """Loss of ``logits [..., V]`` against integer ``targets [...]`` (PyTorch semantics, plus z-loss).

    Per row: ``lse - (1-eps)*x[t] - eps*mean(x) + z_loss*lse**2``; ignored rows give 0; ``mean`` divides by the
    number of non-ignored targets.

    Example:
        >>> import torch
        >>> round(cross_entropy_reference(torch.zeros(2, 4), torch.tensor([1, 2]), reduction="sum").item(), 4)
        2.7726
    """
    V = logits.shape[-1]
    x = logits.reshape(-1, V)
    t = targets.reshape(-1).long()
    valid = t != ignore_index
    lse = torch.logsumexp(x, dim=-1)
    x_t = x.gather(1, torch.where(valid, t, torch.zeros_like(t)).unsqueeze(1)).squeeze(1)
    loss = lse - (1.0 - label_smoothing) * x_t
    if label_smoothing:
        loss = loss - label_smoothing * x.mean(dim=-1)
    if z_loss:
        loss = loss + z_loss * lse * lse
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    if reduction == "none":
        return loss.reshape(targets.shape)
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / valid.sum().clamp(min=1)
