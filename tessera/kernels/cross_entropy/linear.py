"""Linear + cross-entropy fused over token chunks, never holding the full [N, V] logits.

Per chunk of tokens: logits = h_c @ w (+ bias); the row kernel turns them into the loss and, in the same
buffer, d(loss)/d(logits); then dh_c = g @ w.T and dw += h_c.T @ g (accumulated in fp32 when torch can write a
bf16/fp16 product into an fp32 buffer, once there are more than two chunks).

Example:
    >>> import torch
    >>> from tessera.kernels.cross_entropy import linear_cross_entropy
    >>> h = torch.randn(6, 4); w = torch.randn(4, 11); t = torch.randint(0, 11, (6,))
    >>> loss, dh, dw, db = linear_cross_entropy(h, w, t, chunk_size=4)
    >>> dh.shape, dw.shape, db
    (torch.Size([6, 4]), torch.Size([4, 11]), None)
"""
from __future__ import annotations

from typing import Optional

import torch

from ...errors import TesseraDTypeError, TesseraShapeError, TesseraValueError
from ...runtime.checks import may_read_values
from .api import _torch_rows, _use_triton, check_args, launch_rows, validate_targets

_FP32_ACCUM_OK: dict = {}


def default_chunk(N: int, V: int) -> int:
    """Tokens per chunk: about 2**29 logits (1 GiB in bf16) at a time, a multiple of 128, at most N.

    Large chunks keep the dw GEMM's inner dimension long and the number of passes over dw small.
    """
    c = max(128, ((1 << 29) // max(V, 1)) // 128 * 128)
    return max(1, min(N, c))


def _accumulate_dw(dw, a, b, first: bool):
    """dw += a @ b (dw = a @ b when ``first``), with dw possibly fp32 while a, b are bf16/fp16."""
    beta = 0.0 if first else 1.0
    if dw.dtype == a.dtype:
        dw.addmm_(a, b, beta=beta)
        return
    torch.addmm(dw, a, b, dw.dtype, beta=beta, out=dw)


def _fp32_accum_ok(device, dtype) -> bool:
    """Whether torch.addmm writes a bf16/fp16 product into an fp32 buffer here (probed once per device, dtype)."""
    key = (str(device), dtype)
    if key not in _FP32_ACCUM_OK:
        try:
            acc = torch.full((2, 2), float("nan"), dtype=torch.float32, device=device)
            a = torch.ones(2, 3, dtype=dtype, device=device)
            torch.addmm(acc, a, a.t(), torch.float32, beta=0.0, out=acc)
            torch.addmm(acc, a, a.t(), torch.float32, beta=1.0, out=acc)
            _FP32_ACCUM_OK[key] = bool(torch.allclose(acc, torch.full_like(acc, 6.0)))
        except Exception:
            _FP32_ACCUM_OK[key] = False
    return _FP32_ACCUM_OK[key]


def linear_cross_entropy(h, w, targets, *, bias=None, ignore_index: int = -100, label_smoothing: float = 0.0,
                         z_loss: float = 0.0, reduction: str = "mean", chunk_size: Optional[int] = None,
                         _config: Optional[dict] = None, _dw_fp32: Optional[bool] = None):
    """Cross-entropy of ``h @ w (+ bias)`` with its gradients: ``(loss, dh, dw, dbias | None)``.

    ``h [N, D]``, ``w [D, V]`` (``[in, out]``), ``targets [N]``. Memory beyond the outputs is one chunk of logits
    (``chunk_size x V``; by default about 1 GiB in bf16), plus an fp32 ``dw`` accumulator when a bf16/fp16 ``w``
    needs more than two chunks. For ``reduction="none"`` the gradients are those of ``loss.sum()``.

    Example:
        >>> import torch
        >>> h = torch.randn(5, 3); w = torch.randn(3, 7); t = torch.tensor([0, 1, 2, -100, 6])
        >>> loss, dh, dw, db = linear_cross_entropy(h, w, t, bias=torch.zeros(7), label_smoothing=0.1)
        >>> db.shape
        torch.Size([7])
    """
    if not isinstance(h, torch.Tensor) or not isinstance(w, torch.Tensor):
        raise TesseraDTypeError("h and w must be torch tensors; convert with tessera.interop.to_torch")
    check_args(h, targets, ignore_index, label_smoothing, z_loss, reduction, lname="h")
    if h.dim() != 2 or w.dim() != 2 or w.shape[0] != h.shape[1]:
        raise TesseraShapeError(f"h must be [N, D] and w [D, V]; got h {tuple(h.shape)} and w {tuple(w.shape)} "
                                f"(w is laid out [in, out]; pass w.t() for a torch [out, in] weight)")
    if w.dtype != h.dtype or w.device != h.device:
        raise TesseraDTypeError(f"h ({h.dtype}, {h.device}) and w ({w.dtype}, {w.device}) must share dtype and device")
    N, D = h.shape
    V = w.shape[1]
    if targets.shape != (N,):
        raise TesseraShapeError(f"targets must have shape ({N},) to match h, got {tuple(targets.shape)}")
    if bias is not None and (bias.shape != (V,) or bias.dtype != h.dtype):
        raise TesseraShapeError(f"bias must be [{V}] in {h.dtype}, got {tuple(bias.shape)} {bias.dtype}")
    if V == 0:
        raise TesseraShapeError("w has zero output columns (V = 0)")
    if chunk_size is None:
        chunk_size = default_chunk(N, V)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise TesseraValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if may_read_values(h):
        validate_targets(targets, V, ignore_index)

    dev = h.device
    t1d = targets.contiguous()
    rows = torch.empty(N, dtype=torch.float32, device=dev)
    # the mean's divisor; a batch whose targets are all ignored has loss 0 and zero gradients, not NaN
    valid = (t1d != ignore_index).sum(dtype=torch.float32).clamp_(min=1)
    mean = reduction == "mean"
    dh = torch.empty_like(h)
    C = min(chunk_size, max(N, 1))
    n_chunks = -(-N // C)
    # With at most two chunks dw is rounded to w's dtype at most once more than a single GEMM would; beyond
    # that an fp32 accumulator (D x V x 4 bytes) keeps the sum exact to fp32.
    want_fp32 = n_chunks > 2 if _dw_fp32 is None else _dw_fp32
    acc_dtype = w.dtype
    if w.dtype != torch.float32 and want_fp32 and _fp32_accum_ok(dev, w.dtype):
        acc_dtype = torch.float32
    dw = torch.empty((D, V), dtype=acc_dtype, device=dev) if N > 0 else torch.zeros((D, V), dtype=w.dtype, device=dev)
    db = torch.zeros(V, dtype=torch.float32, device=dev) if bias is not None else None
    buf = torch.empty((C, V), dtype=h.dtype, device=dev)
    triton_ok = _use_triton(h)
    for c0 in range(0, N, C):
        c1 = min(N, c0 + C)
        hc = h[c0:c1]
        logits = buf[: c1 - c0]
        torch.mm(hc, w, out=logits)
        if bias is not None:
            logits += bias
        if triton_ok:
            launch_rows(logits, t1d[c0:c1], rows[c0:c1], logits, valid, ignore_index=ignore_index,
                        label_smoothing=label_smoothing, z_loss=z_loss, mean=mean, config=_config)
        else:
            r, g = _torch_rows(logits, t1d[c0:c1], ignore_index, label_smoothing, z_loss, True)
            rows[c0:c1] = r
            logits.copy_(g / valid if mean else g)
        torch.mm(logits, w.t(), out=dh[c0:c1])
        _accumulate_dw(dw, hc.t(), logits, first=c0 == 0)
        if db is not None:
            db += logits.sum(0, dtype=torch.float32)
    if reduction == "none":
        loss = rows
    elif reduction == "sum":
        loss = rows.sum()
    else:
        loss = rows.sum() / valid
    dw = dw.to(w.dtype)
    return loss, dh, dw, (None if db is None else db.to(bias.dtype))
