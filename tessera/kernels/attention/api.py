"""Dense flash attention entry points: forward, backward and ``supports``.

Example (on a CUDA machine):
    >>> import torch
    >>> from tessera.kernels.attention import flash_attention_fwd, flash_attention_bwd
    >>> q = torch.randn(2, 8, 1000, 64, device="cuda", dtype=torch.bfloat16)  # doctest: +SKIP
    >>> o, lse = flash_attention_fwd(q, q, q, causal=True)  # doctest: +SKIP
    >>> dq, dk, dv = flash_attention_bwd(torch.randn_like(o), q, q, q, o, lse, causal=True)  # doctest: +SKIP
"""
from __future__ import annotations

from ...errors import TesseraShapeError
from .checks import check_kernel_device, check_mask, check_options, check_qkv
from .launch import Problem, default_scale, run_backward, run_forward


def _problem(q, k, v, mask, causal, scale, dropout_p, seed) -> Problem:
    B, H, Sq, D, Hkv, Sk = check_qkv(q, k, v)
    check_mask(mask, B, H, Sq, Sk)
    check_options(scale, dropout_p)
    check_kernel_device(q)
    return Problem(B, H, Hkv, Sq, Sk, D, bool(causal), default_scale(D, scale), float(dropout_p), int(seed))


def flash_attention_fwd(q, k, v, mask=None, *, causal=False, scale=None, dropout_p=0.0, seed=0):
    """Attention forward with the Triton kernel; returns ``(o, lse)``.

    q ``[B, H, Sq, D]``, k/v ``[B, Hkv, Sk, D]`` (any strides; ``H % Hkv == 0``), ``mask``
    bool (True = may attend) or additive, broadcastable to ``[B, H, Sq, Sk]``; causal is
    bottom-right aligned. o is like q; lse is float32 ``[B, H, Sq]`` (natural log of the
    undropped softmax denominator; ``-inf`` on rows with no visible key, whose o is 0).

    Example:
        >>> q = torch.randn(1, 4, 17, 64, device="cuda", dtype=torch.float16)  # doctest: +SKIP
        >>> o, lse = flash_attention_fwd(q, q[:, :2], q[:, :2], causal=True)  # doctest: +SKIP
    """
    prob = _problem(q, k, v, mask, causal, scale, dropout_p, seed)
    return run_forward(q, k, v, mask, prob)


def flash_attention_bwd(do, q, k, v, o, lse, mask=None, *, causal=False, scale=None, dropout_p=0.0, seed=0):
    """Gradients ``(dq, dk, dv)`` of attention given dO, the inputs and the forward's (o, lse).

    The options must equal the forward's; dropout regenerates the same mask from ``seed``.
    dk/dv are summed over the query heads that share each kv head.

    Example:
        >>> dq, dk, dv = flash_attention_bwd(torch.randn_like(o), q, k, v, o, lse)  # doctest: +SKIP
    """
    prob = _problem(q, k, v, mask, causal, scale, dropout_p, seed)
    for name, x in (("do", do), ("o", o)):
        if tuple(x.shape) != tuple(q.shape):
            raise TesseraShapeError(f"flash_attention_bwd: `{name}` has shape {tuple(x.shape)}, expected q's "
                                    f"{tuple(q.shape)}")
    if tuple(lse.shape) != (prob.B, prob.H, prob.Sq):
        raise TesseraShapeError(f"flash_attention_bwd: `lse` has shape {tuple(lse.shape)}, expected "
                                f"{(prob.B, prob.H, prob.Sq)} as returned by flash_attention_fwd")
    return run_backward(do, q, k, v, o, lse.float(), mask, prob)
