"""What every optimizer shares: reading params and grads, the step counter, the learning rate in use."""
from __future__ import annotations

from ._engine import check_grads
from ._tree import flatten, same_structure, to_torch_leaf
from ._validate import lr_value


def params_and_grads(params, grads):
    """Flatten ``params`` and ``grads`` (same structure), check them, and return
    ``(param leaves, structure, torch params, torch grads)``."""
    p_leaves, spec = flatten(params)
    g_leaves, gspec = flatten(grads)
    same_structure(spec, gspec, "grads")
    ps = [to_torch_leaf(p) for p in p_leaves]
    gs = [to_torch_leaf(g) for g in g_leaves]
    check_grads(ps, gs)
    return p_leaves, spec, ps, gs


class Optimizer:
    """Base of the object-form optimizers; subclasses set ``self.lr`` and ``self.state`` and define ``step``."""

    lr: object
    state: object

    @property
    def step_count(self) -> int:
        """Updates done so far."""
        return self.state.step

    def current_lr(self) -> float:
        """The learning rate the next :meth:`step` will use."""
        return lr_value(self.lr, self.state.step)
