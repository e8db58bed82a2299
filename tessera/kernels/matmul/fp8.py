"""fp8 GEMM with scales (``scaled_matmul``) and fp8 quantization with current or delayed scaling.

Hopper's fp8 tensor-core path wants both operands K-major: ``a`` row-major [M, K] and ``b``
column-major [K, N] (``b = w.t()`` for a row-major ``w`` [N, K], as torch._scaled_mm). Other
layouts are copied into that one first.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from ...errors import TesseraDeviceError, TesseraDTypeError, TesseraShapeError, TesseraValueError
from . import gluon_ws
from .api import _capability, _dev_index
from .autotune import choose
from .checks import FP8_DTYPES, check_operands, check_scale, check_tensor
from .configs import Config, Problem, candidates, default_config
from .launch import interpreting, launch_ptr, launch_tma, major, num_sms


def quantize_fp8(x, dtype=torch.float8_e4m3fn, *, axis=None, amax=None):
    """``(x_fp8, scale)`` with ``x ~= x_fp8 * scale``; scale is the dequantisation multiplier.

    Current scaling takes amax from ``x`` (over all of it, or along ``axis`` keeping dims, so
    axis=1 of an [M, K] operand gives a per-row [M, 1] scale and axis=0 of [K, N] a per-column
    [1, N] one). Delayed scaling passes ``amax`` (e.g. from a history of earlier steps).
    Values beyond the range saturate to the largest finite fp8 value.

    Example:
        >>> import torch
        >>> from tessera.kernels.matmul import quantize_fp8
        >>> q, s = quantize_fp8(torch.tensor([[1.0, -448.0], [2.0, 0.5]]), axis=1)
        >>> q.dtype, tuple(s.shape), q.float().mul(s).tolist()[0]
        (torch.float8_e4m3fn, (2, 1), [1.0, -448.0])
    """
    check_tensor("x", x, "quantize_fp8")
    if dtype not in FP8_DTYPES:
        raise TesseraDTypeError(f"quantize_fp8: dtype={dtype} must be torch.float8_e4m3fn or torch.float8_e5m2")
    if not x.is_floating_point():
        raise TesseraDTypeError(f"quantize_fp8: x must be floating point, got {x.dtype}")
    fmax = torch.finfo(dtype).max
    xf = x.float()
    if amax is None:
        amax = xf.abs().amax() if axis is None else xf.abs().amax(dim=axis, keepdim=True)
    else:
        amax = torch.as_tensor(amax, dtype=torch.float32, device=x.device)
        try:
            torch.broadcast_shapes(amax.shape, x.shape)
        except RuntimeError:
            raise TesseraShapeError(
                f"quantize_fp8: amax of shape {tuple(amax.shape)} does not broadcast to x {tuple(x.shape)}") from None
    amax = amax.float()
    if not bool(torch.isfinite(amax).all()):
        raise TesseraValueError("quantize_fp8: amax is NaN or inf; x holds non-finite values or amax history is corrupt")
    scale = torch.where(amax > 0, amax / fmax, torch.ones_like(amax))
    q = (xf / scale).clamp(-fmax, fmax).to(dtype)
    return q, scale


def _scaled_cublas(a, b, sa, sb, out_dtype, bias):
    kw = {"out_dtype": out_dtype}
    if bias is not None:
        kw["bias"] = bias.to(out_dtype)
    return torch._scaled_mm(a, b, scale_a=sa, scale_b=sb, **kw)


def scaled_matmul(a, b, scale_a, scale_b, *, out_dtype=torch.bfloat16, bias=None, _config: Config = None):
    """``(a * scale_a) @ (b * scale_b) + bias`` for fp8 ``a`` [M, K] and ``b`` [K, N].

    scale_a: a scalar tensor (per tensor) or [M, 1] (per row); scale_b: scalar or [1, N] (per column).
    Scales must be finite and positive: a TesseraValueError names the bad one. CPU scales are always
    checked; GPU scales only with ``TESSERA_CHECKS=1``, since reading their values synchronises the
    device (each scale tensor is checked once per version).

    Example:
        >>> import torch
        >>> from tessera.kernels.matmul import quantize_fp8, scaled_matmul
        >>> x = torch.randn(256, 512, device="cuda"); w = torch.randn(1024, 512, device="cuda")  # doctest: +SKIP
        >>> (qa, sa), (qb, sb) = quantize_fp8(x, axis=1), quantize_fp8(w, axis=1)                 # doctest: +SKIP
        >>> y = scaled_matmul(qa, qb.t(), sa, sb.t())                                              # doctest: +SKIP
    """
    M, N, K = check_operands(a, b, "scaled_matmul")
    if a.dim() != 2 or b.dim() != 2:
        raise TesseraShapeError(f"scaled_matmul: a and b must be 2-D, got {tuple(a.shape)} and {tuple(b.shape)}; "
                                f"fold batch dims into M with a.reshape(-1, K)")
    if a.dtype not in FP8_DTYPES or b.dtype not in FP8_DTYPES:
        raise TesseraDTypeError(
            f"scaled_matmul: a and b must be fp8 (float8_e4m3fn, or float8_e5m2 for gradients), got a={a.dtype}, "
            f"b={b.dtype}; quantize them with tessera.kernels.matmul.quantize_fp8")
    if out_dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise TesseraDTypeError(f"scaled_matmul: out_dtype={out_dtype} must be bfloat16, float16 or float32")
    mode_a = check_scale("scale_a", scale_a, M, N, "row")
    mode_b = check_scale("scale_b", scale_b, M, N, "col")
    if bias is not None:
        check_tensor("bias", bias, "scaled_matmul")
        if bias.dim() != 1 or bias.shape[0] != N:
            raise TesseraShapeError(f"scaled_matmul: bias must have shape [N]=[{N}], got {tuple(bias.shape)}")
    interp = interpreting()
    if (interp and a.device.type != "cpu") or (not interp and not a.is_cuda):
        raise TesseraDeviceError(f"scaled_matmul: no Tessera kernel for tensors on {a.device}; use torch._scaled_mm")
    if a.is_cuda and _capability(_dev_index(a)) < (8, 9):
        raise TesseraDeviceError("scaled_matmul: fp8 tensor cores need compute capability 8.9 or newer")
    out = torch.empty(M, N, dtype=out_dtype, device=a.device)
    if K == 0 or out.numel() == 0:
        return out.zero_() if bias is None else out.copy_(bias.expand(M, N))
    if a.stride(1) != 1 or a.data_ptr() % 16:
        a = a.contiguous()
    if b.stride(0) != 1 or b.data_ptr() % 16:
        b = b.t().contiguous().t()
    sa = scale_a.reshape(-1).float().contiguous()
    sb = scale_b.reshape(-1).float().contiguous()
    la, lb = major(a), major(b)
    sms = num_sms(-1 if interp else (a.device.index if a.device.index is not None else torch.cuda.current_device()))
    gluon_ok = not interp and out_dtype != torch.float32 and gluon_ws.enabled() and gluon_ws.supported(a, b)
    p = Problem(M, N, K, 1, 1, la is not None and lb is not None, interp, sms, fp8=True, gluon_ok=gluon_ok,
                epilogue=bias is not None)
    bias_c = bias.contiguous() if bias is not None else None
    kw = dict(sa=sa, sb=sb, scale_a=mode_a, scale_b=mode_b, bias=bias_c)

    def run(cfg: Config):
        if cfg.kernel == "gluon":  # chosen only where Problem.gluon_ok held
            return lambda: gluon_ws.launch(a, b, out, bias_c, scales=(sa, sb, mode_a, mode_b),
                                           **gluon_ws.overrides_of(cfg))
        if cfg.kernel == "tma":
            return lambda: launch_tma(a, b, out, cfg, la, lb, **kw)
        if cfg.kernel == "cublas":
            return lambda: _scaled_cublas(a, b, scale_a.float().reshape(M, 1) if mode_a == 2 else sa.reshape(()),
                                          scale_b.float().reshape(1, N) if mode_b == 2 else sb.reshape(()),
                                          out_dtype, bias)
        return lambda: launch_ptr(a, b, out, cfg, **kw)

    if _config is not None:
        cfg = _config
    else:
        def key():
            arch = "interp" if interp else "sm%d%d" % torch.cuda.get_device_capability(a.device)
            return {"op": "scaled_matmul", "arch": arch, "sms": sms, "a": str(a.dtype), "b": str(b.dtype),
                    "out": str(out_dtype), "bucket": list(p.bucket()), "tma": p.tma_ok, "scales": [mode_a, mode_b],
                    "bias": bias is not None, "gluon": gluon_ok}
        memo = ("fp8", p.bucket(), p.tma_ok, a.dtype, b.dtype, out_dtype, mode_a, mode_b, bias is not None,
                str(a.device), gluon_ok)
        cfg = choose(key, memo, default_config(p), lambda: candidates(p) + [Config("cublas")], run,
                     f"scaled_matmul M={M} N={N} K={K}")
        if cfg.kernel == "gluon" and not gluon_ok:  # remembered before TESSERA_GLUON_GEMM=0 was set
            cfg = default_config(replace(p, gluon_ok=False))
    result = run(cfg)()
    return result if cfg.kernel == "cublas" else out
