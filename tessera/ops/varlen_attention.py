"""Packed variable-length attention as primitives: sequences laid end to end in ``[total, heads, D]``
tensors and described by cumulative offsets (``cu_seqlens``), with no padding.

Example:
    >>> from tessera.core.primitive import registry
    >>> registry["flash_attention_varlen"].nondiff_outputs
    (1,)
"""
from __future__ import annotations

import torch

from .. import dtypes as dt
from ..core.dispatch import bind
from ..core.primitive import Aval, Primitive
from ..errors import TesseraDTypeError, TesseraShapeError
from ..types.dims import Dim
from .attention_reference import varlen_reference
from .nn_ops import check_qkv
from .rules import shape_str

_ATTRS = (("causal", False), ("scale", None), ("max_seqlen_q", 0), ("max_seqlen_k", 0))


def _check_varlen(q, k, v, cu_q, cu_k) -> None:
    op = "flash_attention_varlen"
    check_qkv(op, q, k, v, 3, "[total_tokens, heads, D]")
    if not (q.shape[2] == k.shape[2]) or not (Dim.of(q.shape[1]) % Dim.of(k.shape[1]) == 0):
        raise TesseraShapeError(f"{op}: q has shape {shape_str(q.shape)} and k {shape_str(k.shape)}; the head dims "
                                "(dim 2) must match and q's heads must be a multiple of k's (grouped-query attention)")
    for name, cu in (("cu_seqlens_q", cu_q), ("cu_seqlens_k", cu_k)):
        if cu.ndim != 1 or cu.dtype.kind not in ("int", "uint"):
            raise TesseraDTypeError(f"{op}: {name} must be a 1-D integer tensor of sequence offsets [batch + 1], got "
                                    f"{cu.dtype.name} of shape {shape_str(cu.shape)}")
    if not (cu_q.shape[0] == cu_k.shape[0]):
        raise TesseraShapeError(f"{op}: cu_seqlens_q has {cu_q.shape[0]} entries but cu_seqlens_k {cu_k.shape[0]}; "
                                "both are batch + 1 offsets")


class FlashAttentionVarlen(Primitive):
    """Outputs (o like q, lse ``[H, total_q]`` float32); the lse is a by-product for the backward."""

    name = "flash_attention_varlen"
    attrs = _ATTRS
    multiple_results = True
    nondiff_outputs = (1,)

    def shape(self, q, k, v, cu_q, cu_k, **attrs):
        _check_varlen(q, k, v, cu_q, cu_k)
        return Aval(q.shape, q.dtype), Aval((q.shape[1], q.shape[0]), dt.f64 if q.dtype == dt.f64 else dt.f32)

    def reference(self, q, k, v, cu_q, cu_k, *, causal, scale, max_seqlen_q, max_seqlen_k):
        return varlen_reference(q, k, v, cu_q, cu_k, causal=causal, scale=scale)

    def vjp(self, cts, ins, outs, **attrs):
        q, k, v, cu_q, cu_k = ins
        dq, dk, dv = bind(FLASH_ATTENTION_VARLEN_BWD, cts[0], q, k, v, outs[0], outs[1], cu_q, cu_k, **attrs)
        return dq, dk, dv, None, None


class FlashAttentionVarlenBwd(Primitive):
    """(dq, dk, dv) of :class:`FlashAttentionVarlen` from dO and the forward's (o, lse)."""

    name = "flash_attention_varlen_bwd"
    attrs = _ATTRS
    multiple_results = True
    differentiable = False  # second derivatives of packed attention are not provided

    def shape(self, do, q, k, v, o, lse, cu_q, cu_k, **attrs):
        _check_varlen(q, k, v, cu_q, cu_k)
        return Aval(q.shape, q.dtype), Aval(k.shape, k.dtype), Aval(v.shape, v.dtype)

    def reference(self, do, q, k, v, o, lse, cu_q, cu_k, *, causal, scale, max_seqlen_q, max_seqlen_k):
        with torch.enable_grad():
            qs, ks, vs = (t.detach().requires_grad_(True) for t in (q, k, v))
            out, _ = varlen_reference(qs, ks, vs, cu_q, cu_k, causal=causal, scale=scale)
            return torch.autograd.grad(out, (qs, ks, vs), do.to(out.dtype))


FLASH_ATTENTION_VARLEN, FLASH_ATTENTION_VARLEN_BWD = FlashAttentionVarlen(), FlashAttentionVarlenBwd()
