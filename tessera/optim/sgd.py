"""SGD with momentum, Nesterov momentum and weight decay: functional and object forms (torch.optim.SGD semantics).

Example:
    >>> import torch
    >>> p = [torch.ones(2)]; s = sgd_init(p)
    >>> p, s = sgd_update(p, [torch.ones(2)], s, lr=0.1, momentum=0.9)
    >>> p[0].tolist(), s.momentum_buffer[0].tolist()
    ([0.8999999761581421, 0.8999999761581421], [1.0, 1.0])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..errors import TesseraTypeError, TesseraValueError
from ._engine import sgd_step
from ._tree import flatten, to_torch_leaf, unflatten
from ._validate import finite_nonneg, lr_arg, lr_value
from .base import Optimizer, params_and_grads
from .state import make_like, masters_for, rewrap


@dataclass
class SGDState:
    """SGD state: updates done, momentum buffers (None until momentum is first used) and fp32 masters (or None).

    Example:
        >>> import torch
        >>> state = sgd_init([torch.ones(2)])
        >>> _, state = sgd_update([torch.ones(2)], [torch.ones(2)], state, lr=0.1, momentum=0.9)
        >>> state.step, state.momentum_buffer[0].tolist(), state.master
        (1, [1.0, 1.0], None)
    """

    step: int
    momentum_buffer: Any = None
    master: Any = None
    state_dtype: Optional[torch.dtype] = None


def sgd_init(params, *, master_weights: bool = False, state_dtype: Optional[torch.dtype] = None) -> SGDState:
    """State for :func:`sgd_update`; momentum buffers are created by the first update that uses momentum.

    Example:
        >>> import torch
        >>> sgd_init([torch.ones(2)]).step
        0
    """
    leaves, spec = flatten(params)
    ps = [to_torch_leaf(p) for p in leaves]
    make_like(ps, None)[:0]  # dtype check only
    masters = masters_for(ps, master_weights)
    sdt = state_dtype if state_dtype is not None else (torch.float32 if master_weights else None)
    return SGDState(0, None, None if masters is None else unflatten(spec, masters), sdt)


def _check_hyper(momentum, dampening, nesterov, weight_decay):
    momentum = finite_nonneg("momentum", momentum)
    dampening = finite_nonneg("dampening", dampening)
    weight_decay = finite_nonneg("weight_decay", weight_decay)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise TesseraValueError("nesterov=True needs momentum > 0 and dampening = 0")
    return momentum, dampening, bool(nesterov), weight_decay


def sgd_update(params, grads, state: SGDState, *, lr, momentum: float = 0.0, dampening: float = 0.0,
               nesterov: bool = False, weight_decay: float = 0.0, inplace: bool = False,
               fused: Optional[bool] = None):
    """One SGD step; returns ``(params, state)`` (the same objects, updated, with ``inplace=True``).

    Example:
        >>> import torch
        >>> p, s = sgd_update(torch.ones(2), torch.ones(2), sgd_init(torch.ones(2)), lr=0.5)
        >>> p.tolist()
        [0.5, 0.5]
    """
    if not isinstance(state, SGDState):
        raise TesseraTypeError(f"state must be an SGDState from sgd_init, got {type(state).__name__}")
    momentum, dampening, nesterov, weight_decay = _check_hyper(momentum, dampening, nesterov, weight_decay)
    lr_now = lr_value(lr, state.step)
    p_leaves, spec, ps, gs = params_and_grads(params, grads)
    ws = flatten(state.master)[0] if state.master is not None else None
    first = False
    bufs = None
    if momentum != 0:
        if state.momentum_buffer is None:
            bufs, first = make_like(ps, state.state_dtype), True
        else:
            bufs = flatten(state.momentum_buffer)[0]
            if not inplace:
                bufs = [b.clone() for b in bufs]
    if not inplace:
        ps = [p.clone() for p in ps]
        ws = None if ws is None else [None if w is None else w.clone() for w in ws]
    sgd_step(ps, gs, bufs, ws, lr=lr_now, momentum=momentum, dampening=dampening, nesterov=nesterov,
             weight_decay=weight_decay, first=first, fused=fused)
    new_bufs = state.momentum_buffer if bufs is None else unflatten(spec, bufs)
    if inplace:
        state.step += 1
        state.momentum_buffer = new_bufs
        return params, state
    new_state = SGDState(state.step + 1, new_bufs, None if ws is None else unflatten(spec, ws), state.state_dtype)
    return unflatten(spec, rewrap(p_leaves, ps)), new_state


class SGD(Optimizer):
    """SGD updating ``params`` in place: ``opt = SGD(params, lr=0.1, momentum=0.9); opt.step(grads)``.

    Example:
        >>> import torch
        >>> p = [torch.ones(2)]
        >>> SGD(p, lr=0.5).step([torch.ones(2)]); p[0].tolist()
        [0.5, 0.5]
    """

    def __init__(self, params, lr, momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, *, master_weights: bool = False, state_dtype: Optional[torch.dtype] = None,
                 fused: Optional[bool] = None):
        self.params = params
        self.lr = lr_arg(lr)
        self.momentum, self.dampening, self.nesterov, self.weight_decay = _check_hyper(
            momentum, dampening, nesterov, weight_decay)
        self.fused = fused
        self.state = sgd_init(params, master_weights=master_weights, state_dtype=state_dtype)

    def step(self, grads) -> None:
        """Update the parameters in place from ``grads`` (same structure as the params)."""
        sgd_update(self.params, grads, self.state, lr=self.lr, momentum=self.momentum, dampening=self.dampening,
                   nesterov=self.nesterov, weight_decay=self.weight_decay, inplace=True, fused=self.fused)
