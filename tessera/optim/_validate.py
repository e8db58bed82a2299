"""Hyperparameter checks shared by the optimizers: typed errors that name the argument and the fix."""
from __future__ import annotations

import math

from ..errors import TesseraValueError


def finite_nonneg(name: str, value) -> float:
    """``value`` as a float, or TesseraValueError unless it is a finite number >= 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TesseraValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0.0:
        raise TesseraValueError(f"{name} must be finite and >= 0, got {value!r}; pass e.g. {name}=1e-3")
    return v


def beta(name: str, value) -> float:
    """A beta/momentum-style coefficient in [0, 1)."""
    v = finite_nonneg(name, value)
    if v >= 1.0:
        raise TesseraValueError(f"{name} must lie in [0, 1), got {value!r}; typical values are 0.9 or 0.999")
    return v


def betas(value) -> tuple:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TesseraValueError(f"betas must be a pair (beta1, beta2), got {value!r}")
    return beta("betas[0]", value[0]), beta("betas[1]", value[1])


def lr_value(lr, step: int) -> float:
    """The learning rate for ``step`` (0-based count of updates done): a number or a schedule ``lr(step)``."""
    v = lr(step) if callable(lr) else lr
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise TesseraValueError(f"lr must be a number or a schedule returning one, got {v!r}") from None
    if not math.isfinite(f) or f < 0.0:
        where = f" (the schedule gave it at step {step})" if callable(lr) else ""
        raise TesseraValueError(f"lr must be finite and >= 0, got {v!r}{where}; check the schedule's peak_lr/min_lr")
    return f


def lr_arg(lr):
    """Check a learning rate argument up front (numbers now; schedules at each step)."""
    if callable(lr):
        return lr
    lr_value(lr, 0)
    return lr
