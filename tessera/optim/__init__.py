"""Optimizers over tensors or nested lists/dicts of tensors, learning-rate schedules and gradient clipping.

Functional: ``state = adamw_init(params)``; ``params, state = adamw_update(params, grads, state, lr=...)``.
Object: ``opt = AdamW(params, lr=...)``; ``opt.step(grads)`` updates in place. On CUDA a fused multi-tensor
kernel updates every parameter of a dtype in one launch; bf16/fp16 parameters may keep fp32 master weights.

Example:
    >>> import torch
    >>> import tessera.optim as optim
    >>> params = [torch.ones(4), torch.ones(2)]
    >>> opt = optim.AdamW(params, lr=optim.CosineWarmup(warmup=2, total=10, peak_lr=1e-2))
    >>> grads = [torch.ones(4), torch.ones(2)]
    >>> norm = optim.clip_grad_norm(grads, 1.0)
    >>> opt.step(grads); opt.step(grads); opt.step_count
    2
"""
from .adam import Adam, AdamState, AdamW, adam_init, adam_update, adamw_init, adamw_update
from .clip import clip_grad_norm
from .schedules import CosineWarmup, LinearWarmup, cosine_warmup, linear_warmup
from .sgd import SGD, SGDState, sgd_init, sgd_update

__all__ = ["Adam", "AdamW", "SGD", "AdamState", "SGDState", "adam_init", "adam_update", "adamw_init",
           "adamw_update", "sgd_init", "sgd_update", "clip_grad_norm", "cosine_warmup", "linear_warmup",
           "CosineWarmup", "LinearWarmup"]
