"""fp8 (e4m3) attention forward: q, k, v quantised per tensor, fp32 accumulation, bf16 output.

Scores are ``(q8 · k8ᵀ) · q_scale · k_scale · softmax_scale``; the probabilities are cast to e4m3
(scaled by 2⁸ first, so small ones keep mantissa bits) for the product with v8, and the output is
multiplied by ``v_scale``. Inference only: there is no fp8 backward.

Example (on a Hopper GPU):
    >>> import torch
    >>> from tessera.kernels.matmul import quantize_fp8
    >>> from tessera.kernels.attention import flash_attention_fp8_fwd
    >>> x = torch.randn(2, 8, 1024, 128, device="cuda")  # doctest: +SKIP
    >>> (q, sq), (k, sk), (v, sv) = quantize_fp8(x), quantize_fp8(x), quantize_fp8(x)  # doctest: +SKIP
    >>> o, lse = flash_attention_fp8_fwd(q, k, v, sq, sk, sv, causal=True)  # doctest: +SKIP
"""
from __future__ import annotations

import torch

from ...errors import TesseraDeviceError, TesseraDTypeError, TesseraShapeError
from ..matmul.checks import check_scale
from .checks import check_kernel_device, check_options, check_qkv
from .launch import Problem, default_scale, run_forward

FP8_HEAD_DIMS = (64, 128, 256)
_FN = "flash_attention_fp8_fwd"


def _scale_tensor(name, s, device):
    if not isinstance(s, torch.Tensor):
        s = torch.tensor(float(s), dtype=torch.float32)
    check_scale(name, s, 1, 1, "row", fn=_FN)
    return s.reshape(()).to(device=device, dtype=torch.float32)


def flash_attention_fp8_fwd(q, k, v, q_scale, k_scale, v_scale, *, causal=False, scale=None):
    """Attention over e4m3 ``q [B, H, Sq, D]``, ``k``/``v [B, Hkv, Sk, D]``; returns ``(o, lse)``.

    ``*_scale`` are the per-tensor dequantisation multipliers (``x ≈ x8 * scale``, as returned by
    ``quantize_fp8``): floats or one-element tensors. ``o`` is bf16, ``lse`` float32 ``[B, H, Sq]``
    as in :func:`flash_attention_fwd`. D must be 64, 128 or 256; causal is bottom-right aligned.
    The kernel reads V sequence-contiguous: pass ``v`` as ``v_t.transpose(2, 3)`` of a
    ``[B, Hkv, D, Sk]`` tensor (e.g. a KV cache kept in that layout), or it is copied per call.

    Example:
        >>> o, lse = flash_attention_fp8_fwd(q8, k8, v8, sq, sk, sv)  # doctest: +SKIP
    """
    B, H, Sq, D, Hkv, Sk = check_qkv(q, k, v)
    if q.dtype != torch.float8_e4m3fn:
        raise TesseraDTypeError(f"{_FN}: `q`, `k`, `v` must be torch.float8_e4m3fn, got {q.dtype}; quantize them "
                                "with tessera.kernels.matmul.quantize_fp8 (or call flash_attention_fwd in bf16)")
    if D not in FP8_HEAD_DIMS:
        raise TesseraShapeError(f"{_FN}: head dim D={D} is not supported in fp8; use one of {FP8_HEAD_DIMS} "
                                "or flash_attention_fwd in bf16")
    check_options(scale, 0.0)
    check_kernel_device(q)
    if q.is_cuda and torch.cuda.get_device_capability(q.device) < (9, 0):
        raise TesseraDeviceError(f"{_FN}: the fp8 kernel is built for Hopper (compute capability 9.0: fp8 "
                                 f"wgmma, 228 KB of shared memory); {torch.cuda.get_device_name(q.device)} has "
                                 f"{'.'.join(map(str, torch.cuda.get_device_capability(q.device)))}; use "
                                 "flash_attention_fwd in bf16")
    descale = torch.stack([_scale_tensor(n, s, q.device)
                           for n, s in (("q_scale", q_scale), ("k_scale", k_scale), ("v_scale", v_scale))])
    prob = Problem(B, H, Hkv, Sq, Sk, D, bool(causal), default_scale(D, scale))
    return run_forward(q, k, v, None, prob, descale=descale)
