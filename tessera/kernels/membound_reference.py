"""Plain-torch references of softmax, activations, dropout, rotary and embedding backward
(any device and float dtype; pass float64 for a precise reference). The norms' references
live in :mod:`tessera.kernels.norms.reference`.

Example:
    >>> import torch
    >>> from tessera.kernels.membound_reference import swiglu_ref
    >>> swiglu_ref(torch.zeros(2), torch.ones(2)).tolist()
    [0.0, 0.0]
"""
from __future__ import annotations

import math

import torch

from ..runtime.philox import dropout_keep_mask


def softmax_ref(x):
    """Softmax over the last dim."""
    e = torch.exp(x - x.amax(-1, keepdim=True))
    return e / e.sum(-1, keepdim=True)


def log_softmax_ref(x):
    """Log-softmax over the last dim."""
    z = x - x.amax(-1, keepdim=True)
    return z - torch.log(torch.exp(z).sum(-1, keepdim=True))


def gelu_ref(x, approximate="none"):
    """GELU, exact (erf) or tanh-approximated."""
    if approximate == "tanh":
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def silu_ref(x):
    """SiLU: x * sigmoid(x)."""
    return x * torch.sigmoid(x)


def swiglu_ref(gate, up):
    """silu(gate) * up."""
    return silu_ref(gate) * up


def dropout_ref(x, p, seed):
    """Dropout with the Philox mask of :func:`tessera.runtime.philox.dropout_keep_mask`."""
    keep = dropout_keep_mask(seed, x.shape, p, device=x.device)
    return torch.where(keep, x / (1 - p), torch.zeros((), dtype=x.dtype, device=x.device))


def rotary_ref(x, cos, sin, interleaved=False, seq_dim=-2):
    """RoPE on the first ``2 * cos.shape[1]`` dims of the last axis; the rest passes through."""
    k = seq_dim % x.dim()
    r = cos.shape[1]
    shape = [1] * x.dim()
    shape[k], shape[-1] = x.shape[k], r
    c = cos[: x.shape[k]].reshape(shape).to(x.dtype)
    s = sin[: x.shape[k]].reshape(shape).to(x.dtype)
    if interleaved:
        x1, x2 = x[..., 0:2 * r:2], x[..., 1:2 * r:2]
        rot = torch.stack([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).flatten(-2)
    else:
        x1, x2 = x[..., :r], x[..., r:2 * r]
        rot = torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)
    return torch.cat([rot, x[..., 2 * r:]], dim=-1)


def embedding_bwd_ref(dy, ids, num_embeddings):
    """dtable[v] = sum of dy rows whose id is v."""
    d = dy.shape[-1]
    out = torch.zeros((num_embeddings, d), dtype=dy.dtype, device=dy.device)
    return out.index_add_(0, ids.reshape(-1), dy.reshape(-1, d))
