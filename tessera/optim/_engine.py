"""In-place update steps over flat lists of torch tensors: the fused multi-tensor kernel where it applies,
otherwise per-tensor torch ops written to match torch.optim's single-tensor code operation for operation."""
from __future__ import annotations

from typing import List, Optional

import torch

from ..errors import TesseraDeviceError, TesseraDTypeError, TesseraShapeError, TesseraValueError
from ..kernels.optim import fused_available, multi_tensor_adam, multi_tensor_sgd


def check_grads(params: List[torch.Tensor], grads: List[Optional[torch.Tensor]]) -> None:
    for i, (p, g) in enumerate(zip(params, grads)):
        if g is None:
            continue
        if g.shape != p.shape:
            raise TesseraShapeError(f"grads leaf {i} has shape {tuple(g.shape)} but its parameter {tuple(p.shape)}")
        if g.device != p.device:
            raise TesseraDeviceError(f"grads leaf {i} is on {g.device} but its parameter on {p.device}")
        if not g.is_floating_point():
            raise TesseraDTypeError(f"grads leaf {i} has dtype {g.dtype}; gradients must be floating point")


def split_fused(params, grads, fused: Optional[bool]):
    """Indices updated by the fused kernel and by torch ops. ``fused=True`` demands the kernel for all."""
    use_k, use_t = [], []
    for i, (p, g) in enumerate(zip(params, grads)):
        if g is None:
            continue
        ok = fused is not False and fused_available(p) and fused_available(g) and p.is_contiguous()
        if fused and not ok:
            raise TesseraValueError(f"fused=True but parameter {i} ({p.dtype}, {p.device}, contiguous="
                                    f"{p.is_contiguous()}) cannot use the fused kernel; pass fused=None")
        (use_k if ok else use_t).append(i)
    return use_k, use_t


def _pick(lst, idx):
    return None if lst is None else [lst[i] for i in idx]


def adam_step(params, grads, exp_avgs, exp_avg_sqs, masters, *, lr, beta1, beta2, eps, weight_decay, step,
              adamw, fused=None):
    """Apply Adam/AdamW step number ``step`` (from 1) in place to every parameter whose grad is not None."""
    use_k, use_t = split_fused(params, grads, fused)
    if use_k:
        gk = [grads[i] if grads[i].is_contiguous() else grads[i].contiguous() for i in use_k]
        multi_tensor_adam(_pick(params, use_k), gk, _pick(exp_avgs, use_k), _pick(exp_avg_sqs, use_k),
                          _pick(masters, use_k), lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                          weight_decay=weight_decay, step=step, adamw=adamw)
    for i in use_t:
        w = masters[i] if masters is not None and masters[i] is not None else params[i]
        m, v = exp_avgs[i], exp_avg_sqs[i]
        g = grads[i].to(m.dtype)
        if weight_decay != 0:
            if adamw:
                w.mul_(1 - lr * weight_decay)
            else:
                g = g.add(w.to(m.dtype), alpha=weight_decay)
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        step_size = lr / bias_correction1
        denom = (v.sqrt() / bias_correction2 ** 0.5).add_(eps)
        if w.dtype == m.dtype:
            w.addcdiv_(m, denom, value=-step_size)
        else:
            w.copy_(w.to(m.dtype).addcdiv_(m, denom, value=-step_size))
        if w is not params[i]:
            params[i].copy_(w)


def sgd_step(params, grads, bufs, masters, *, lr, momentum, dampening, nesterov, weight_decay, first, fused=None):
    """Apply one SGD step in place; ``first`` means the momentum buffers are fresh (they take d_p as is)."""
    use_k, use_t = split_fused(params, grads, fused)
    if use_k:
        gk = [grads[i] if grads[i].is_contiguous() else grads[i].contiguous() for i in use_k]
        multi_tensor_sgd(_pick(params, use_k), gk, _pick(bufs, use_k), _pick(masters, use_k), lr=lr,
                         momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=weight_decay,
                         first=first)
    for i in use_t:
        w = masters[i] if masters is not None and masters[i] is not None else params[i]
        d_p = grads[i].to(w.dtype)
        if weight_decay != 0:
            d_p = d_p.add(w, alpha=weight_decay)
        if momentum != 0:
            buf = bufs[i]
            if first:
                buf.copy_(d_p)
            else:
                buf.mul_(momentum).add_(d_p.to(buf.dtype), alpha=1 - dampening)
            d_p = d_p.add(buf.to(w.dtype), alpha=momentum) if nesterov else buf.to(w.dtype)
        w.add_(d_p, alpha=-lr)
        if w is not params[i]:
            params[i].copy_(w)
