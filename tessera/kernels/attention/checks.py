"""Argument checks shared by the attention entry points: typed errors that name the argument.

Example:
    >>> import torch
    >>> from tessera.kernels.attention.checks import check_qkv
    >>> check_qkv(torch.zeros(1, 4, 3, 8), torch.zeros(1, 2, 5, 8), torch.zeros(1, 2, 5, 8))
    (1, 4, 3, 8, 2, 5)
"""
from __future__ import annotations

import torch

from ...errors import TesseraDeviceError, TesseraDTypeError, TesseraShapeError, TesseraTypeError, TesseraValueError

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
KERNEL_HEAD_DIMS = (32, 64, 96, 128, 256)


def _need_tensor(name, x):
    if not isinstance(x, torch.Tensor):
        raise TesseraTypeError(f"attention: `{name}` must be a torch.Tensor, got {type(x).__name__}")


def check_qkv(q, k, v):
    """Check q ``[B, H, Sq, D]`` and k/v ``[B, Hkv, Sk, D]``; return (B, H, Sq, D, Hkv, Sk)."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        _need_tensor(name, x)
        if x.dim() != 4:
            raise TesseraShapeError(f"attention: `{name}` must be 4-D [B, H, S, D], got shape {tuple(x.shape)}; "
                                    "transpose a [B, S, H, D] tensor with .transpose(1, 2)")
    B, H, Sq, D = q.shape
    if k.shape != v.shape:
        raise TesseraShapeError(f"attention: `k` {tuple(k.shape)} and `v` {tuple(v.shape)} must have the same shape")
    if k.shape[0] != B or k.shape[3] != D:
        raise TesseraShapeError(f"attention: `k` {tuple(k.shape)} must be [B={B}, Hkv, Sk, D={D}] to match `q` "
                                f"{tuple(q.shape)}")
    Hkv, Sk = k.shape[1], k.shape[2]
    if Hkv == 0 or H % Hkv != 0:
        raise TesseraShapeError(f"attention: query heads H={H} must be a multiple of key/value heads Hkv={Hkv}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TesseraDTypeError(f"attention: `q`, `k`, `v` must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}; "
                                "cast them with .to(...)")
    if not q.dtype.is_floating_point:
        raise TesseraDTypeError(f"attention: `q` must be floating point, got {q.dtype}")
    if not (q.device == k.device == v.device):
        raise TesseraDeviceError(f"attention: `q`, `k`, `v` are on {q.device}, {k.device}, {v.device}; move them to one device")
    return B, H, Sq, D, Hkv, Sk


def check_mask(mask, B, H, Sq, Sk):
    """Check that ``mask`` is bool or float and broadcasts to [B, H, Sq, Sk]."""
    if mask is None:
        return
    _need_tensor("mask", mask)
    if mask.dtype != torch.bool and not mask.dtype.is_floating_point:
        raise TesseraDTypeError(f"attention: `mask` must be bool (True = may attend) or an additive float, "
                                f"got {mask.dtype}")
    try:
        if mask.dim() > 4 or torch.broadcast_shapes(mask.shape, (B, H, Sq, Sk)) != (B, H, Sq, Sk):
            raise RuntimeError
    except RuntimeError:
        raise TesseraShapeError(f"attention: `mask` of shape {tuple(mask.shape)} does not broadcast to "
                                f"[B, H, Sq, Sk] = {[B, H, Sq, Sk]}; use e.g. [B, 1, 1, Sk] for key padding") from None


def check_options(scale, dropout_p):
    if scale is not None and not (float(scale) > 0 or float(scale) < 0):
        raise TesseraValueError(f"attention: `scale` must be a finite non-zero number or None, got {scale}")
    if not (0.0 <= float(dropout_p) < 1.0):
        raise TesseraValueError(f"attention: `dropout_p` must lie in [0, 1), got {dropout_p}")


def check_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k):
    """Check packed q ``[total_q, H, D]``, k/v ``[total_k, Hkv, D]`` and the int32 offsets."""
    for name, x in (("q", q), ("k", k), ("v", v), ("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        _need_tensor(name, x)
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.dim() != 3:
            raise TesseraShapeError(f"attention varlen: `{name}` must be 3-D [total, heads, D], got {tuple(x.shape)}")
    if k.shape != v.shape or k.shape[2] != q.shape[2] or q.shape[1] % max(k.shape[1], 1) != 0 or k.shape[1] == 0:
        raise TesseraShapeError(f"attention varlen: k {tuple(k.shape)} / v {tuple(v.shape)} do not fit q {tuple(q.shape)}: "
                                "need equal k/v shapes, the same D, and H a multiple of Hkv")
    if not (q.dtype == k.dtype == v.dtype):
        raise TesseraDTypeError(f"attention varlen: q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    for name, cu in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        if cu.dim() != 1:
            raise TesseraShapeError(f"attention varlen: `{name}` must be 1-D (batch + 1 offsets), got shape "
                                    f"{tuple(cu.shape)}")
        if cu.dtype != torch.int32:
            raise TesseraDTypeError(f"attention varlen: `{name}` must be int32, got {cu.dtype}; use "
                                    f"{name}.to(torch.int32)")
    if cu_seqlens_q.shape != cu_seqlens_k.shape:
        raise TesseraShapeError("attention varlen: `cu_seqlens_q` and `cu_seqlens_k` must both have batch+1 entries")


def _interpreter_built() -> bool:
    from .forward import _fwd_kernel

    return type(_fwd_kernel).__name__ == "InterpretedFunction"


def check_kernel_device(q):
    """The kernels run on CUDA tensors, or on CPU tensors when built for Triton's interpreter."""
    if not q.is_cuda and not _interpreter_built():
        raise TesseraDeviceError(f"attention kernels: `q` is on {q.device}, but the Triton kernels need CUDA tensors "
                                 "(or TRITON_INTERPRET=1 set before import); on the CPU call attention_reference")


def supports(q, k, v, mask=None, dropout_p=0.0) -> bool:
    """True when the Triton kernels handle these inputs; False means: use the reference.

    Needs fp16/bf16 CUDA tensors and D in {32, 64, 96, 128, 256}; under the Triton interpreter
    (``TRITON_INTERPRET=1``) CPU tensors in fp16/fp32 as well. fp32 on the GPU goes to the
    reference (the kernels' fp32 products would run in tf32).

    Example:
        >>> import torch
        >>> supports(torch.zeros(1, 1, 4, 64), torch.zeros(1, 1, 4, 64), torch.zeros(1, 1, 4, 64))  # doctest: +SKIP
        False
    """
    try:
        if q.dim() == 4:
            B, H, Sq, D, Hkv, Sk = check_qkv(q, k, v)
            check_mask(mask, B, H, Sq, Sk)
        elif q.dim() == 3 and k.dim() == 3:
            D = q.shape[-1]
        else:
            return False
        check_options(None, dropout_p)
    except Exception:
        return False
    if q.dtype not in KERNEL_DTYPES or D not in KERNEL_HEAD_DIMS:
        return False
    if mask is not None and mask.device != q.device:
        return False
    if q.is_cuda:
        return q.dtype in (torch.float16, torch.bfloat16)
    # CPU tensors run only where the kernels were built for Triton's interpreter (which
    # mishandles bf16).
    return bool(_interpreter_built() and q.dtype in (torch.float16, torch.float32))
