"""Variable-length (packed) flash attention: sequences laid end to end, described by
cumulative offsets, with no padding.

Example (on a CUDA machine):
    >>> import torch
    >>> from tessera.kernels.attention import flash_attention_varlen_fwd
    >>> q = torch.randn(10, 4, 64, device="cuda", dtype=torch.bfloat16)  # doctest: +SKIP
    >>> cu = torch.tensor([0, 3, 10], dtype=torch.int32, device="cuda")  # doctest: +SKIP
    >>> o, lse = flash_attention_varlen_fwd(q, q, q, cu, cu, 7, 7, causal=True)  # doctest: +SKIP
    >>> tuple(lse.shape)  # doctest: +SKIP
    (4, 10)
"""
from __future__ import annotations

from ...errors import TesseraShapeError
from .checks import check_kernel_device, check_options, check_varlen
from .launch import Problem, default_scale, run_backward, run_forward


def _problem(q, k, v, cu_q, cu_k, max_q, max_k, causal, scale) -> Problem:
    check_varlen(q, k, v, cu_q, cu_k)
    check_options(scale, 0.0)
    check_kernel_device(q)
    D = q.shape[2]
    return Problem(cu_q.shape[0] - 1, q.shape[1], k.shape[1], int(max_q), int(max_k), D, bool(causal),
                   default_scale(D, scale), varlen=True, cu_q=cu_q.to(q.device), cu_k=cu_k.to(q.device))


def flash_attention_varlen_fwd(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *,
                               causal=False, scale=None):
    """Packed attention forward: q ``[total_q, H, D]``, k/v ``[total_k, Hkv, D]``; sequence b
    holds tokens ``cu_seqlens[b]:cu_seqlens[b+1]`` (int32 ``[batch+1]``). Returns o like q and
    lse float32 ``[H, total_q]``; causal is bottom-right aligned per sequence.

    Example:
        >>> o, lse = flash_attention_varlen_fwd(q, k, v, cu_q, cu_k, 128, 256)  # doctest: +SKIP
    """
    prob = _problem(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, scale)
    return run_forward(q, k, v, None, prob)


def flash_attention_varlen_bwd(do, q, k, v, o, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *,
                               causal=False, scale=None):
    """Gradients ``(dq, dk, dv)`` of :func:`flash_attention_varlen_fwd`.

    Example:
        >>> dq, dk, dv = flash_attention_varlen_bwd(do, q, k, v, o, lse, cu_q, cu_k, 128, 256)  # doctest: +SKIP
    """
    prob = _problem(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, scale)
    if tuple(lse.shape) != (q.shape[1], q.shape[0]):
        raise TesseraShapeError(f"flash_attention_varlen_bwd: `lse` has shape {tuple(lse.shape)}, expected "
                                f"{(q.shape[1], q.shape[0])} as returned by flash_attention_varlen_fwd")
    return run_backward(do, q, k, v, o, lse.float(), None, prob)
