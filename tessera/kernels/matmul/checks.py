"""Argument checks for the GEMM entry points: each failure is a typed error naming the operand
and the fix."""
from __future__ import annotations

import weakref

import torch

from ...errors import TesseraDeviceError, TesseraDTypeError, TesseraShapeError, TesseraTypeError, TesseraValueError
from ...runtime.checks import may_read_values
from .epilogue import ACTIVATIONS

FLOAT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
FP8_DTYPES = tuple(d for d in (getattr(torch, "float8_e4m3fn", None), getattr(torch, "float8_e5m2", None)) if d)


def check_tensor(name: str, x, fn: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TesseraTypeError(f"{fn}: {name} must be a torch.Tensor, got {type(x).__name__}")


def check_operands(a, b, fn: str = "matmul") -> tuple:
    """(M, N, K) of ``a [..., M, K] @ b [..., K, N]``; raises on rank, inner dims or batch dims."""
    check_tensor("a", a, fn)
    check_tensor("b", b, fn)
    if a.dim() < 2 or b.dim() < 2:
        bad = "a" if a.dim() < 2 else "b"
        raise TesseraShapeError(
            f"{fn}: {bad} must have at least 2 dims ([..., rows, cols]), got shape {tuple((a if bad == 'a' else b).shape)}; "
            f"use {bad}.unsqueeze(0) for a vector")
    if a.shape[-1] != b.shape[-2]:
        raise TesseraShapeError(
            f"{fn}: inner dims differ: a is {tuple(a.shape)} (K={a.shape[-1]}), b is {tuple(b.shape)} "
            f"(K={b.shape[-2]}); a's last dim must equal b's second-to-last (transpose b?)")
    try:
        if a.dim() > 2 and b.dim() > 2:
            torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except RuntimeError:
        raise TesseraShapeError(
            f"{fn}: batch dims of a {tuple(a.shape[:-2])} and b {tuple(b.shape[:-2])} do not broadcast") from None
    if a.device != b.device:
        raise TesseraDeviceError(f"{fn}: a is on {a.device}, b on {b.device}; move both to one device")
    return a.shape[-2], b.shape[-1], a.shape[-1]


def check_matmul_args(a, b, bias, activation, residual, out_dtype, acc_dtype) -> tuple:
    M, N, K = check_operands(a, b)
    if a.dtype in FP8_DTYPES or b.dtype in FP8_DTYPES:
        raise TesseraDTypeError(
            f"matmul: fp8 operands ({a.dtype}, {b.dtype}) need scales; use tessera.kernels.matmul.scaled_matmul")
    if a.dtype not in FLOAT_DTYPES or a.dtype != b.dtype:
        raise TesseraDTypeError(
            f"matmul: unsupported operand dtypes a={a.dtype}, b={b.dtype}; both must be one of "
            f"bfloat16/float16/float32 and equal (cast one with .to())")
    if out_dtype is not None and out_dtype not in FLOAT_DTYPES:
        raise TesseraDTypeError(f"matmul: out_dtype={out_dtype} must be torch.bfloat16, float16 or float32")
    if acc_dtype not in (torch.float32, torch.float16):
        raise TesseraDTypeError(f"matmul: acc_dtype={acc_dtype} must be torch.float32 or torch.float16")
    if acc_dtype == torch.float16 and a.dtype != torch.float16:
        raise TesseraDTypeError(
            f"matmul: acc_dtype=torch.float16 needs float16 operands, got {a.dtype}; "
            f"use acc_dtype=torch.float32 or cast a and b to float16")
    if activation not in ACTIVATIONS:
        raise TesseraValueError(
            f"matmul: activation={activation!r} is not one of {[k for k in ACTIVATIONS if k]} or None")
    if bias is not None:
        check_tensor("bias", bias, "matmul")
        if bias.dim() != 1 or bias.shape[0] != N:
            raise TesseraShapeError(f"matmul: bias must have shape [N]=[{N}], got {tuple(bias.shape)}")
        if bias.device != a.device:
            raise TesseraDeviceError(f"matmul: bias is on {bias.device}, a on {a.device}; move bias to {a.device}")
        if not bias.is_floating_point():
            raise TesseraDTypeError(f"matmul: bias must be floating point, got {bias.dtype}")
    if a.dim() == 2 and b.dim() == 2:
        out_shape = (M, N)
    elif b.dim() == 2:
        out_shape = tuple(a.shape[:-2]) + (M, N)
    elif a.dim() == 2:
        out_shape = tuple(b.shape[:-2]) + (M, N)
    else:
        out_shape = tuple(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])) + (M, N)
    if residual is not None:
        check_tensor("residual", residual, "matmul")
        try:
            if torch.broadcast_shapes(residual.shape, out_shape) != torch.Size(out_shape):
                raise RuntimeError
        except RuntimeError:
            raise TesseraShapeError(
                f"matmul: residual of shape {tuple(residual.shape)} does not broadcast to the output shape "
                f"{out_shape}") from None
        if residual.device != a.device:
            raise TesseraDeviceError(f"matmul: residual is on {residual.device}, a on {a.device}")
        if not residual.is_floating_point():
            raise TesseraDTypeError(f"matmul: residual must be floating point, got {residual.dtype}")
    return M, N, K, out_shape


_VALID: dict = {}


def _known_valid(s: torch.Tensor) -> bool:
    """Whether every entry of ``s`` is finite and positive, remembered per live tensor and version."""
    hit = _VALID.get(id(s))
    if hit is not None and hit[0]() is s and hit[1] == s._version:
        return True
    ok = bool((torch.isfinite(s) & (s > 0)).all())
    if ok:
        if len(_VALID) > 256:
            _VALID.clear()
        _VALID[id(s)] = (weakref.ref(s), s._version)
    return ok


def check_scale_values(name: str, s: torch.Tensor, fn: str = "scaled_matmul") -> None:
    """Raise unless every entry of the scale ``s`` is finite and positive.

    Reading the values of a GPU tensor synchronises the device, so GPU scales are checked only
    with ``TESSERA_CHECKS=1`` (once per tensor and version); CPU scales are always checked."""
    if not may_read_values(s):
        return
    if _known_valid(s):
        return
    flat = s.detach().reshape(-1)
    bad = ~torch.isfinite(flat)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise TesseraValueError(
            f"{fn}: {name} holds NaN or inf ({name}[{i}] = {float(flat[i])}); scales must be finite "
            f"(recompute the amax, e.g. with tessera.kernels.matmul.quantize_fp8)")
    i = int((flat <= 0).nonzero()[0, 0])
    raise TesseraValueError(
        f"{fn}: {name}[{i}] = {float(flat[i])} is not positive; a scale is the dequantisation multiplier "
        f"(x ~= x_fp8 * scale) and must be > 0: take it from tessera.kernels.matmul.quantize_fp8, which uses "
        f"1 where the amax is 0")


def check_scale(name: str, s, rows: int, cols: int, per: str, fn: str = "scaled_matmul") -> int:
    """Scale mode: 1 per-tensor, 2 per-row (a) / per-column (b). Raises on shape, dtype, and on
    non-finite or non-positive values (GPU scales only with ``TESSERA_CHECKS=1``: see
    :func:`check_scale_values`)."""
    check_tensor(name, s, fn)
    if not s.is_floating_point():
        raise TesseraDTypeError(f"{fn}: {name} must be a float tensor, got {s.dtype}")
    shape = tuple(s.shape)
    if s.numel() == 1 and len(shape) <= 2:
        mode = 1
    elif per == "row" and shape == (rows, 1):
        mode = 2
    elif per == "col" and shape == (1, cols):
        mode = 2
    else:
        want = f"[{rows}, 1]" if per == "row" else f"[1, {cols}]"
        raise TesseraShapeError(f"{fn}: {name} has shape {shape}; use a scalar (per tensor) or {want} (per {per})")
    check_scale_values(name, s, fn)
    return mode
