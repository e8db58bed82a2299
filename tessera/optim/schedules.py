"""Learning-rate schedules, as plain functions of the step and as objects usable as ``lr=``.

``step`` counts updates already done (0 for the first update). Warm-up rises linearly from 0 at step 0 to
``peak_lr`` at step ``warmup``; after ``total`` steps the rate stays at ``min_lr``.

Example:
    >>> cosine_warmup(0, warmup=10, total=100, peak_lr=1.0)
    0.0
    >>> cosine_warmup(10, warmup=10, total=100, peak_lr=1.0)
    1.0
    >>> round(CosineWarmup(warmup=10, total=100, peak_lr=1.0, min_lr=0.1)(55), 4)
    0.55
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from ..errors import TesseraValueError
from ._validate import finite_nonneg


def _check(warmup, total, peak_lr, min_lr):
    if not isinstance(warmup, int) or warmup < 0:
        raise TesseraValueError(f"warmup must be an int >= 0, got {warmup!r}")
    if total is not None and (not isinstance(total, int) or total < warmup):
        raise TesseraValueError(f"total must be an int >= warmup ({warmup}), got {total!r}")
    finite_nonneg("peak_lr", peak_lr)
    finite_nonneg("min_lr", min_lr)
    if min_lr > peak_lr:
        raise TesseraValueError(f"min_lr ({min_lr}) must not exceed peak_lr ({peak_lr})")


def _step(step) -> int:
    if not isinstance(step, int) or step < 0:
        raise TesseraValueError(f"step must be an int >= 0, got {step!r}")
    return step


def cosine_warmup(step: int, *, warmup: int, total: int, peak_lr: float, min_lr: float = 0.0) -> float:
    """Linear warm-up to ``peak_lr``, then a half cosine down to ``min_lr`` at step ``total``.

    Example:
        >>> cosine_warmup(100, warmup=10, total=100, peak_lr=3e-4, min_lr=3e-5)
        3e-05
    """
    _check(warmup, total, peak_lr, min_lr)
    step = _step(step)
    if step < warmup:
        return peak_lr * step / warmup
    if step >= total:
        return float(min_lr)
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def linear_warmup(step: int, *, warmup: int, peak_lr: float, total: Optional[int] = None, min_lr: float = 0.0) -> float:
    """Linear warm-up to ``peak_lr``; then constant (``total=None``) or a straight line down to ``min_lr`` at ``total``.

    Example:
        >>> linear_warmup(5, warmup=10, peak_lr=1.0), linear_warmup(50, warmup=10, peak_lr=1.0)
        (0.5, 1.0)
        >>> linear_warmup(55, warmup=10, total=100, peak_lr=1.0)
        0.5
    """
    _check(warmup, total, peak_lr, min_lr)
    step = _step(step)
    if step < warmup:
        return peak_lr * step / warmup
    if total is None:
        return float(peak_lr)
    if step >= total:
        return float(min_lr)
    progress = (step - warmup) / max(1, total - warmup)
    return peak_lr + (min_lr - peak_lr) * progress


@dataclass(frozen=True)
class CosineWarmup:
    """:func:`cosine_warmup` as an object: ``AdamW(params, lr=CosineWarmup(warmup=100, total=1000, peak_lr=3e-4))``.

    Example:
        >>> sched = CosineWarmup(warmup=2, total=10, peak_lr=1.0)
        >>> [round(sched(step), 4) for step in (0, 1, 2, 6, 10, 20)]
        [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    """

    warmup: int
    total: int
    peak_lr: float
    min_lr: float = 0.0

    def __post_init__(self):
        _check(self.warmup, self.total, self.peak_lr, self.min_lr)

    def __call__(self, step: int) -> float:
        return cosine_warmup(step, warmup=self.warmup, total=self.total, peak_lr=self.peak_lr, min_lr=self.min_lr)


@dataclass(frozen=True)
class LinearWarmup:
    """:func:`linear_warmup` as an object: ``SGD(params, lr=LinearWarmup(warmup=10, peak_lr=0.1))``.

    Example:
        >>> sched = LinearWarmup(warmup=4, peak_lr=0.1)
        >>> [round(sched(step), 4) for step in (0, 2, 4, 100)]
        [0.0, 0.05, 0.1, 0.1]
    """

    warmup: int
    peak_lr: float
    total: Optional[int] = None
    min_lr: float = 0.0

    def __post_init__(self):
        _check(self.warmup, self.total, self.peak_lr, self.min_lr)

    def __call__(self, step: int) -> float:
        return linear_warmup(step, warmup=self.warmup, peak_lr=self.peak_lr, total=self.total, min_lr=self.min_lr)
