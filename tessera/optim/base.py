"""What every optimizer object shares: its state's step counter and the learning rate it will use."""
from __future__ import annotations

from ._validate import lr_value


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
