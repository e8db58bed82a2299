"""The definition of attention's semantics, in plain torch (any device, any dtype): the registry's
reference for ``flash_attention`` and the kernels' tests both use it.

Scores are computed in float32 (float64 when the inputs are float64); the output is cast
back to the input dtype and the log-sum-exp stays float32 (float64 for float64 inputs).

Example:
    >>> import torch
    >>> from tessera.ops.attention_reference import attention_reference
    >>> q = k = v = torch.randn(1, 2, 5, 8)
    >>> o, lse = attention_reference(q, k, v, causal=True)
    >>> tuple(o.shape), tuple(lse.shape)
    ((1, 2, 5, 8), (1, 2, 5))
"""
from __future__ import annotations

import math

import torch

from ..runtime.philox import dropout_keep_mask


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def allowed_positions(Sq: int, Sk: int, causal: bool, device) -> torch.Tensor:
    """Bool ``[Sq, Sk]``: True where query i may see key j (bottom-right causal alignment)."""
    if not causal:
        return torch.ones(Sq, Sk, dtype=torch.bool, device=device)
    i = torch.arange(Sq, device=device)[:, None]
    j = torch.arange(Sk, device=device)[None, :]
    return j <= i + (Sk - Sq)


def attention_reference(q, k, v, mask=None, *, causal=False, scale=None, dropout_p=0.0, seed=0):
    """Attention ``softmax(q kᵀ·scale + mask) v`` with GQA, masks, causal and dropout.

    q ``[B, H, Sq, D]``, k/v ``[B, Hkv, Sk, D]`` with ``H % Hkv == 0``; ``mask`` is bool
    (True = may attend) or additive float, broadcastable to ``[B, H, Sq, Sk]``. Rows with no
    visible key give ``o = 0`` and ``lse = -inf``. Dropout keeps element (b, h, i, j) iff
    ``philox.uniform(seed, ((b*H + h)*Sq + i)*Sk + j) >= dropout_p``. Differentiable (torch
    autograd) and NaN-free, also for fully masked rows.

    Returns ``(o, lse)``: o like q, lse float32 ``[B, H, Sq]`` (natural log).

    Example:
        >>> import torch
        >>> from tessera.ops.attention_reference import attention_reference
        >>> q = torch.randn(2, 4, 3, 16); kv = torch.randn(2, 2, 7, 16)
        >>> o, lse = attention_reference(q, kv, kv, torch.ones(2, 1, 1, 7, dtype=torch.bool))
        >>> o.shape
        torch.Size([2, 4, 3, 16])
    """
    B, H, Sq, D = q.shape
    Hkv, Sk = k.shape[1], k.shape[2]
    cdt = _compute_dtype(q.dtype)
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    group = H // Hkv
    kf = k.to(cdt).repeat_interleave(group, dim=1)
    vf = v.to(cdt).repeat_interleave(group, dim=1)
    s = torch.matmul(q.to(cdt), kf.transpose(-1, -2)) * scale
    allowed = allowed_positions(Sq, Sk, causal, q.device).expand(B, H, Sq, Sk)
    if mask is not None:
        if mask.dtype == torch.bool:
            allowed = allowed & mask
        else:
            s = s + mask.to(cdt)
    s = s.masked_fill(~allowed, float("-inf"))
    # Softmax with a detached, finite shift so that fully masked rows give p = 0 and no NaN
    # reaches the gradient.
    m = s.detach().amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)
    l = e.sum(dim=-1, keepdim=True)
    nonzero = l > 0
    p = e / torch.where(nonzero, l, torch.ones_like(l))
    with torch.no_grad():
        lse = torch.where(nonzero, m + torch.log(torch.where(nonzero, l, torch.ones_like(l))),
                          torch.full_like(l, float("-inf"))).squeeze(-1)
    if dropout_p > 0.0:
        keep = dropout_keep_mask(seed, (B, H, Sq, Sk), dropout_p, device=q.device)
        p = p * keep.to(cdt) / (1.0 - dropout_p)
    o = torch.matmul(p, vf)
    lse_dtype = torch.float64 if cdt == torch.float64 else torch.float32
    return o.to(q.dtype), lse.to(lse_dtype)


def attention_mask(Sq: int, Sk: int, causal: bool, mask, device):
    """The boolean "may attend" matrix and the additive bias (or None) for the reference."""
    allowed = allowed_positions(Sq, Sk, causal, device)
    bias = None
    if mask is not None:
        if mask.dtype == torch.bool:
            allowed = allowed & mask
        else:
            bias = mask
            allowed = allowed & (mask > float("-inf"))
    return allowed, bias


def attention_bwd_reference(do, q, k, v, o, lse, mask=None, *, causal=False, scale=None, dropout_p=0.0, seed=0):
    """Gradients (dq, dk, dv) of :func:`attention_reference` (by torch autograd on it)."""
    with torch.enable_grad():
        qs, ks, vs = (t.detach().requires_grad_(True) for t in (q, k, v))
        out, _ = attention_reference(qs, ks, vs, mask, causal=causal, scale=scale, dropout_p=dropout_p, seed=seed)
        dq, dk, dv = torch.autograd.grad(out, (qs, ks, vs), do.to(out.dtype))
    return dq, dk, dv


def varlen_reference(q, k, v, cu_seqlens_q, cu_seqlens_k, *, causal=False, scale=None):
    """Variable-length attention by looping :func:`attention_reference` over sequences.

    q ``[total_q, H, D]``, k/v ``[total_k, Hkv, D]``; returns o ``[total_q, H, D]`` and
    lse ``[H, total_q]``.

    Example:
        >>> import torch
        >>> from tessera.ops.attention_reference import varlen_reference
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
