"""Fused cross-entropy on torch tensors: loss and d(loss)/d(logits) in one kernel, then upstream scaling.

Example:
    >>> import torch
    >>> from tessera.kernels.cross_entropy import cross_entropy_fwd, cross_entropy_bwd
    >>> x = torch.randn(5, 17); t = torch.randint(0, 17, (5,))
    >>> loss, g = cross_entropy_fwd(x, t)          # on CPU without the interpreter: plain torch
    >>> g = cross_entropy_bwd(torch.tensor(2.0), g, "mean")
    >>> loss.shape, g.shape
    (torch.Size([]), torch.Size([5, 17]))
"""
from __future__ import annotations

import math
import os
from typing import Optional, Tuple

import torch

from ...errors import TesseraDeviceError, TesseraDTypeError, TesseraShapeError, TesseraValueError
from ...runtime.checks import may_read_values

_FLOATS = (torch.float32, torch.float16, torch.bfloat16)
_INTS = (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8)
_REDUCTIONS = ("mean", "sum", "none")


def _use_triton(t: torch.Tensor) -> bool:
    return t.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


def supports(logits, targets) -> bool:
    """Whether the fused kernel handles these inputs (float logits ``[..., V]``, integer targets ``[...]``).

    Example:
        >>> import torch
        >>> supports(torch.randn(3, 5, device="cpu"), torch.zeros(3, dtype=torch.long)) in (True, False)
        True
    """
    return (isinstance(logits, torch.Tensor) and isinstance(targets, torch.Tensor)
            and logits.dtype in _FLOATS and targets.dtype in _INTS and logits.dim() >= 1
            and tuple(logits.shape[:-1]) == tuple(targets.shape) and logits.shape[-1] >= 1
            and logits.device == targets.device and _use_triton(logits))


def validate_targets(targets: torch.Tensor, V: int, ignore_index: int, name: str = "targets") -> None:
    """Raise TesseraValueError when a target is outside ``[0, V)`` and is not ``ignore_index``."""
    t = targets.reshape(-1)
    bad = ((t < 0) | (t >= V)) & (t != ignore_index)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise TesseraValueError(
            f"{name}[{i}] = {int(t[i])} is outside [0, {V}) and is not ignore_index={ignore_index}; "
            f"fix the labels or mark padding with ignore_index")


def check_args(logits, targets, ignore_index, label_smoothing, z_loss, reduction, lname="logits") -> None:
    if not isinstance(logits, torch.Tensor) or logits.dtype not in _FLOATS:
        raise TesseraDTypeError(f"{lname} must be a float32/float16/bfloat16 torch tensor, got "
                                f"{getattr(logits, 'dtype', type(logits).__name__)}; cast it first")
    if not isinstance(targets, torch.Tensor) or targets.dtype not in _INTS:
        raise TesseraDTypeError(f"targets must be an integer torch tensor, got "
                                f"{getattr(targets, 'dtype', type(targets).__name__)}; use targets.long()")
    if logits.device != targets.device:
        raise TesseraDeviceError(f"{lname} is on {logits.device} but targets on {targets.device}; move both to one device")
    if reduction not in _REDUCTIONS:
        raise TesseraValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if not (isinstance(label_smoothing, (int, float)) and 0.0 <= label_smoothing <= 1.0):
        raise TesseraValueError(f"label_smoothing must be a number in [0, 1], got {label_smoothing!r}")
    if not (isinstance(z_loss, (int, float)) and math.isfinite(z_loss) and z_loss >= 0.0):
        raise TesseraValueError(f"z_loss must be a finite number >= 0, got {z_loss!r}")
    if not isinstance(ignore_index, int):
        raise TesseraValueError(f"ignore_index must be an int, got {ignore_index!r}")


def default_config(V: int, elem_size: int) -> dict:
    """Block size, warps, row order, L2 hints and grid shape, from measurements on an H100 (bf16, 8192 rows).

    A short row is held in registers whole. Otherwise the first sweep asks L2 to keep the row and the second
    (backwards) sweep lets it go; past 64k classes one program per SM walks the rows, so that the rows in flight
    (132 x 256 KB at 128k classes) fit in L2 for the second sweep: 2.56 TB/s against 2.18 with one program per
    row and no hints (benchmarks/results/losses_optim.md).
    """
    if V <= 8192:
        block = triton_next_pow2(V)
        warps = 4 if block <= 2048 else 8
        return dict(BLOCK=block, num_warps=warps, ONE_BLOCK=True, REVERSE=False, PERSISTENT=False, EVICT=False,
                    CTAS_PER_SM=1)
    if V <= 65536:
        return dict(BLOCK=8192, num_warps=32, ONE_BLOCK=False, REVERSE=True, PERSISTENT=False, EVICT=True,
                    CTAS_PER_SM=1)
    return dict(BLOCK=16384, num_warps=32, ONE_BLOCK=False, REVERSE=True, PERSISTENT=True, EVICT=True,
                CTAS_PER_SM=1)


def triton_next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def launch_rows(x2d, t1d, loss_rows, grad2d, count, *, ignore_index, label_smoothing, z_loss, mean,
                config: Optional[dict] = None) -> None:
    """Run the row kernel: per-row losses into ``loss_rows`` and, if ``grad2d`` is given, the gradient.

    ``count`` is a 0-d fp32 device tensor holding the mean's divisor (read only when ``mean``). ``grad2d`` may be
    ``x2d`` itself: each chunk is read before it is overwritten.
    """
    from ._kernels import ce_fwd_kernel

    N, V = x2d.shape
    if N == 0:
        return
    cfg = dict(default_config(V, x2d.element_size()))
    if config:
        cfg.update(config)
    if cfg["ONE_BLOCK"] and cfg["BLOCK"] < V:
        cfg["ONE_BLOCK"] = False
    g = grad2d if grad2d is not None else x2d
    grid = N
    if cfg["PERSISTENT"]:
        grid = min(N, _sm_count(x2d.device) * cfg["CTAS_PER_SM"])
    ce_fwd_kernel[(grid,)](
        x2d, x2d.stride(0), t1d, loss_rows, g, g.stride(0), count, N, V, int(ignore_index),
        float(label_smoothing), float(z_loss),
        HAS_GRAD=grad2d is not None, SMOOTH=label_smoothing != 0.0, ZLOSS=z_loss != 0.0, MEAN=bool(mean),
        ONE_BLOCK=cfg["ONE_BLOCK"], REVERSE=cfg["REVERSE"], BLOCK=cfg["BLOCK"], PERSISTENT=cfg["PERSISTENT"],
        EVICT=cfg["EVICT"], num_warps=cfg["num_warps"])


def _sm_count(device) -> int:
    if device.type != "cuda":
        return 4
    return torch.cuda.get_device_properties(device).multi_processor_count


def _torch_rows(x2d, t1d, ignore_index, label_smoothing, z_loss, compute_grad):
    """CPU path without Triton: per-row losses and per-row gradients (upstream 1) in float32."""
    from .reference import cross_entropy_reference

    x = x2d.float().detach().requires_grad_(compute_grad)
    rows = cross_entropy_reference(x, t1d, ignore_index=ignore_index, label_smoothing=label_smoothing,
                                   z_loss=z_loss, reduction="none")
    if not compute_grad:
        return rows.detach(), None
    (g,) = torch.autograd.grad(rows.sum(), x)
    return rows.detach(), g


def cross_entropy_fwd(logits, targets, *, ignore_index: int = -100, label_smoothing: float = 0.0,
                      z_loss: float = 0.0, reduction: str = "mean", compute_grad: bool = True,
                      out: Optional[torch.Tensor] = None, _config: Optional[dict] = None
                      ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Loss (fp32) and, when ``compute_grad``, d(loss)/d(logits) in logits' dtype, in one pass over each row.

    ``logits [..., V]``, ``targets [...]``. ``mean`` divides by the number of non-ignored targets; for
    ``reduction="none"`` the gradient is that of each row's loss (upstream 1). ``out`` (for example ``logits``
    itself) receives the gradient instead of a new tensor.

    Example:
        >>> import torch
        >>> loss, g = cross_entropy_fwd(torch.randn(3, 10), torch.tensor([1, -100, 9]), label_smoothing=0.1)
        >>> g.shape
        torch.Size([3, 10])
    """
    check_args(logits, targets, ignore_index, label_smoothing, z_loss, reduction)
    if tuple(logits.shape[:-1]) != tuple(targets.shape) or logits.dim() == 0:
        raise TesseraShapeError(f"logits {tuple(logits.shape)} must be [..., V] with targets {tuple(targets.shape)} "
                                f"equal to its leading dims; reshape targets to logits.shape[:-1]")
    V = logits.shape[-1]
    if V == 0:
        raise TesseraShapeError("logits has a zero-sized class dim (V = 0); there is nothing to classify")
    if may_read_values(logits):
        validate_targets(targets, V, ignore_index)
    x2d = logits.reshape(-1, V)
    if x2d.stride(-1) != 1:
        x2d = x2d.contiguous()
    t1d = targets.reshape(-1)
    if not t1d.is_contiguous():
        t1d = t1d.contiguous()
    N = x2d.shape[0]
    # a batch whose targets are all ignored has loss 0 and zero gradients, not NaN
    valid = (t1d != ignore_index).sum(dtype=torch.float32).clamp_(min=1) if reduction == "mean" else None

    if not _use_triton(logits):
        rows, g = _torch_rows(x2d, t1d, ignore_index, label_smoothing, z_loss, compute_grad)
        if g is not None:
            if reduction == "mean":
                g = g / valid
            g = g.to(logits.dtype)
            if out is not None:
                out.view(-1, V).copy_(g)
                g = out
    else:
        rows = torch.empty(N, dtype=torch.float32, device=logits.device)
        g = None
        if compute_grad:
            g = out.view(-1, V) if out is not None else torch.empty((N, V), dtype=logits.dtype, device=logits.device)
        count = valid if valid is not None else rows  # unread unless mean
        launch_rows(x2d, t1d, rows, g, count, ignore_index=ignore_index, label_smoothing=label_smoothing,
                    z_loss=z_loss, mean=reduction == "mean", config=_config)
    if reduction == "none":
        loss = rows.reshape(targets.shape)
    elif reduction == "sum":
        loss = rows.sum()
    else:
        loss = rows.sum() / valid
    return loss, (None if g is None else g.reshape(logits.shape))


def cross_entropy_bwd(dloss, dlogits: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Scale the forward's ``dlogits`` by the upstream gradient (in place; returns the same buffer).

    ``dloss`` is a scalar (``mean``/``sum``) or has the shape of the targets (``none``).

    Example:
        >>> import torch
        >>> g = torch.ones(2, 3)
        >>> cross_entropy_bwd(torch.tensor([2.0, 3.0]), g, "none")[:, 0].tolist()
        [2.0, 3.0]
    """
    if reduction not in _REDUCTIONS:
        raise TesseraValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if not isinstance(dlogits, torch.Tensor):
        raise TesseraDTypeError(f"dlogits must be a torch tensor, got {type(dlogits).__name__}")
    V = dlogits.shape[-1]
    if isinstance(dloss, (int, float)):
        if dloss != 1.0:
            dlogits.mul_(float(dloss))
        return dlogits
    per_row = reduction == "none"
    want = tuple(dlogits.shape[:-1]) if per_row else ()
    if tuple(dloss.shape) != want and not (not per_row and dloss.numel() == 1):
        raise TesseraShapeError(f"dloss has shape {tuple(dloss.shape)} but reduction={reduction!r} needs {want}")
    if dloss.device != dlogits.device:
        raise TesseraDeviceError(f"dloss is on {dloss.device} but dlogits on {dlogits.device}")
    g2d = dlogits.view(-1, V)
    if not _use_triton(dlogits) or g2d.stride(-1) != 1 or g2d.shape[0] == 0:
        s = dloss.reshape(-1, 1) if per_row else dloss.reshape(())
        dlogits.mul_(s.view(*dlogits.shape[:-1], 1) if per_row else s)
        return dlogits
    from ._kernels import scale_rows_kernel

    s = dloss.reshape(-1).float().contiguous()
    block = min(8192, triton_next_pow2(V))
    scale_rows_kernel[(g2d.shape[0], -(-V // block))](g2d, g2d.stride(0), s, V, PER_ROW=per_row, BLOCK=block,
                                                      num_warps=8 if block >= 4096 else 4)
    return dlogits
