"""Adam and AdamW: functional (``adamw_init`` / ``adamw_update``) and object (``AdamW(params).step(grads)``) forms.

Parameters and gradients are a tensor or any nesting of lists/tuples/dicts of tensors (torch or ``ts.Tensor``).
On CUDA one fused multi-tensor kernel updates all parameters of a dtype in one launch.

Example:
    >>> import torch
    >>> params = {"w": torch.ones(3), "b": [torch.zeros(2)]}
    >>> state = adamw_init(params)
    >>> grads = {"w": torch.ones(3), "b": [torch.ones(2)]}
    >>> params, state = adamw_update(params, grads, state, lr=0.1, weight_decay=0.0)
    >>> state.step, round(params["w"][0].item(), 4)
    (1, 0.9)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..errors import TesseraTypeError
from ._engine import adam_step
from ._tree import flatten, same_structure, to_torch_leaf, unflatten
from ._validate import betas as check_betas
from ._validate import finite_nonneg, lr_arg, lr_value
from .base import Optimizer, params_and_grads
from .state import make_like, masters_for, rewrap


@dataclass
class AdamState:
    """Adam/AdamW state: the number of updates done, the moments, and fp32 master weights (or None).

    ``exp_avg``, ``exp_avg_sq`` and ``master`` have the structure of the params.

    Example:
        >>> import torch
        >>> state = adam_init({"w": torch.ones(2)})
        >>> state.step, state.exp_avg["w"].tolist(), state.master
        (0, [0.0, 0.0], None)
    """

    step: int
    exp_avg: Any
    exp_avg_sq: Any
    master: Any = None


def adam_init(params, *, master_weights: bool = False, state_dtype: Optional[torch.dtype] = None) -> AdamState:
    """Zero moments shaped like ``params``.

    ``master_weights=True`` keeps an fp32 copy of every bf16/fp16 parameter and fp32 moments; the update is
    computed on the copy and rounded into the parameter. ``state_dtype`` overrides the moments' dtype (default:
    the parameter's, as torch.optim; fp32 with master weights).

    Example:
        >>> import torch
        >>> s = adam_init([torch.ones(2, dtype=torch.bfloat16)], master_weights=True)
        >>> s.exp_avg[0].dtype, s.master[0].dtype
        (torch.float32, torch.float32)
    """
    leaves, spec = flatten(params)
    ps = [to_torch_leaf(p) for p in leaves]
    masters = masters_for(ps, master_weights)
    sdt = state_dtype if state_dtype is not None else (torch.float32 if master_weights else None)
    return AdamState(0, unflatten(spec, make_like(ps, sdt)), unflatten(spec, make_like(ps, sdt)),
                     None if masters is None else unflatten(spec, masters))


adamw_init = adam_init


def _update(params, grads, state: AdamState, *, lr, betas, eps, weight_decay, adamw, inplace, fused):
    if not isinstance(state, AdamState):
        raise TesseraTypeError(f"state must be an AdamState from adam_init/adamw_init, got {type(state).__name__}")
    b1, b2 = check_betas(betas)
    eps = finite_nonneg("eps", eps)
    weight_decay = finite_nonneg("weight_decay", weight_decay)
    lr_now = lr_value(lr, state.step)
    p_leaves, spec, ps, gs = params_and_grads(params, grads)
    ms, mspec = flatten(state.exp_avg)
    vs, _ = flatten(state.exp_avg_sq)
    same_structure(spec, mspec, "state.exp_avg")
    ws = flatten(state.master)[0] if state.master is not None else None
    if not inplace:
        ps = [p.clone() for p in ps]
        ms, vs = [m.clone() for m in ms], [v.clone() for v in vs]
        ws = None if ws is None else [None if w is None else w.clone() for w in ws]
    step = state.step + 1
    adam_step(ps, gs, ms, vs, ws, lr=lr_now, beta1=b1, beta2=b2, eps=eps, weight_decay=weight_decay, step=step,
              adamw=adamw, fused=fused)
    if inplace:
        state.step = step
        return params, state
    new_state = AdamState(step, unflatten(spec, ms), unflatten(spec, vs), None if ws is None else unflatten(spec, ws))
    return unflatten(spec, rewrap(p_leaves, ps)), new_state


def adam_update(params, grads, state: AdamState, *, lr=1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                weight_decay: float = 0.0, inplace: bool = False, fused: Optional[bool] = None):
    """One Adam step (L2 weight decay added to the gradient, as torch.optim.Adam). Returns ``(params, state)``.

    ``lr`` is a number or a schedule ``lr(step)``. ``inplace=True`` updates ``params`` and ``state`` in place and
    returns them; otherwise new tensors are returned and the inputs are untouched.

    Example:
        >>> import torch
        >>> p = torch.ones(2); s = adam_init(p)
        >>> p2, s = adam_update(p, torch.ones(2), s, lr=0.5)
        >>> round(p2[0].item(), 4), p.tolist()
        (0.5, [1.0, 1.0])
    """
    return _update(params, grads, state, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, adamw=False,
                   inplace=inplace, fused=fused)


def adamw_update(params, grads, state: AdamState, *, lr=1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, inplace: bool = False, fused: Optional[bool] = None):
    """One AdamW step (decoupled weight decay, as torch.optim.AdamW). Returns ``(params, state)``.

    Example:
        >>> import torch
        >>> p = [torch.ones(2)]; s = adamw_init(p)
        >>> p, s = adamw_update(p, [torch.ones(2)], s, lr=0.1, weight_decay=0.1)
        >>> round(p[0][0].item(), 4)
        0.89
    """
    return _update(params, grads, state, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, adamw=True,
                   inplace=inplace, fused=fused)


class Adam(Optimizer):
    """Adam that updates ``params`` in place: ``opt = Adam(params, lr=1e-3); opt.step(grads)``.

    Example:
        >>> import torch
        >>> p = [torch.ones(2)]
        >>> opt = Adam(p, lr=0.5)
        >>> opt.step([torch.ones(2)]); round(p[0][0].item(), 4)
        0.5
    """

    _adamw = False
    _default_wd = 0.0

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: Optional[float] = None,
                 *, master_weights: bool = False, state_dtype: Optional[torch.dtype] = None,
                 fused: Optional[bool] = None):
        self.params = params
        self.lr = lr_arg(lr)
        self.betas = check_betas(betas)
        self.eps = finite_nonneg("eps", eps)
        self.weight_decay = finite_nonneg("weight_decay", self._default_wd if weight_decay is None else weight_decay)
        self.fused = fused
        self.state = adam_init(params, master_weights=master_weights, state_dtype=state_dtype)

    def step(self, grads) -> None:
        """Update the parameters in place from ``grads`` (same structure as the params; None leaves are skipped)."""
        _update(self.params, grads, self.state, lr=self.lr, betas=self.betas, eps=self.eps,
                weight_decay=self.weight_decay, adamw=self._adamw, inplace=True, fused=self.fused)


class AdamW(Adam):
    """AdamW (decoupled weight decay, default 1e-2) updating ``params`` in place.

    Example:
        >>> import torch
        >>> p = {"w": torch.ones(2, dtype=torch.bfloat16)}
        >>> opt = AdamW(p, lr=1e-2, master_weights=True)
        >>> opt.step({"w": torch.ones(2, dtype=torch.bfloat16)}); opt.step_count
        1
    """

    _adamw = True
    _default_wd = 1e-2
