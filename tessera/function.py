"""``@ts.function``: eager execution with annotation checks and an autodiff tape.

Example:
    >>> import tessera as ts
    >>> @ts.function
    ... def scale(x: ts.Tensor["B", "D", ts.f32]) -> ts.Tensor["B", "D", ts.f32]:
    ...     return x * 2
    >>> with ts.device("cpu"):
    ...     scale(ts.ones(2, 3)).shape
    (2, 3)
"""
from __future__ import annotations

import functools
import types

from .core.autodiff import _detach
from .core.dispatch import tape_state
from .types.signature import SignatureChecker

_GRAD_NAMES = {"grad", "value_and_grad", "vjp"}


def _mentions_grad(code: types.CodeType) -> bool:
    if _GRAD_NAMES & set(code.co_names):
        return True
    return any(isinstance(c, types.CodeType) and _mentions_grad(c) for c in code.co_consts)


class Function:
    """A checked, tape-recording Python function (what ``@ts.function`` returns).

    Example:
        >>> import tessera as ts
        >>> @ts.function
        ... def double(x: ts.Tensor["N", ts.f32]):
        ...     return x * 2
        >>> with ts.device("cpu"):
        ...     isinstance(double, ts.Function), double, double(ts.ones(2)).tolist()
        (True, <ts.function double>, [2.0, 2.0])
    """

    def __init__(self, fn, tape="auto"):
        if isinstance(fn, Function):
            fn = fn.fn
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.checker = SignatureChecker(fn)
        code = getattr(fn, "__code__", None)
        # The tape keeps intermediates alive, so by default it runs only for functions that take gradients.
        self.records_tape = bool(tape) if tape != "auto" else (code is None or _mentions_grad(code))

    def __call__(self, *args, **kwargs):
        env, bound = self.checker.check_call(args, kwargs)
        if self.records_tape:
            tape_state.depth += 1
        try:
            out = self.fn(*bound.args, **bound.kwargs)
        finally:
            if self.records_tape:
                tape_state.depth -= 1
        self.checker.check_result(out, env)
        if self.records_tape and tape_state.depth == 0:
            _detach(out)
        return out

    def __get__(self, obj, objtype=None):
        return self if obj is None else functools.partial(self, obj)

    def __repr__(self) -> str:
        return f"<ts.function {self.checker.name}>"


def function(fn=None, *, tape="auto"):
    """Make ``fn`` a Tessera function: annotations are checked on every call, and a tape is
    recorded so that ``ts.grad(loss, wrt)`` works inside it (``tape=True``/``False`` to force;
    by default it records when the function's code mentions ``grad``).

    Example:
        >>> import tessera as ts
        >>> @ts.function
        ... def f(x: ts.Tensor["N", ts.f32]):
        ...     return x.sum()
        >>> with ts.device("cpu"):
        ...     f(ts.ones(3, dtype=ts.f64))
        Traceback (most recent call last):
        ...
        tessera.errors.TesseraDTypeError: f: argument x has dtype f64, but its annotation requires f32; convert it with x.to(ts.f32)
    """
    if fn is None:
        return lambda f: Function(f, tape=tape)
    return Function(fn, tape=tape)
