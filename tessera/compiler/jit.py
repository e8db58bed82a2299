"""``ts.jit``: trace once per (ranks, dtypes, static arguments), simplify, execute through the registry.

Sizes are symbolic while tracing (named after the function's annotations when it has
them), so one trace serves every batch and sequence length; a comparison between sizes
that the trace relied on becomes a guard, and a call that breaks a guard traces again.
Tracing, simplification and execution are separate stages.

Example:
    >>> import tessera as ts
    >>> @ts.jit
    ... def f(x: ts.Tensor["B", "D", ts.f32]):
    ...     B, D = x.shape
    ...     return x.reshape(B, 2, D // 2).sum(dim=-1)
    >>> with ts.device("cpu"):
    ...     [tuple(f(ts.ones(b, 8)).shape) for b in (2, 5)], f.trace_count
    ([(2, 2), (5, 2)], 1)
"""
from __future__ import annotations

import functools
from typing import Dict, List

from ..core.tensor import Tensor
from ..function import Function
from . import pytree
from .executor import Executable
from .passes import simplify
from .tracer import TraceResult, trace_function


class Lowered:
    """A traced and simplified graph (``.graph``, ``.as_text()``), ready to ``compile()``."""

    def __init__(self, result: TraceResult):
        self.result = result
        self.graph = result.graph

    def as_text(self) -> str:
        return self.graph.as_text()

    def compile(self) -> Executable:
        return Executable(self.graph, self.result.input_dims)

    def __repr__(self) -> str:
        return self.as_text()


class _Entry:
    __slots__ = ("result", "executable", "out_dtypes")

    def __init__(self, result: TraceResult):
        self.result = result
        self.executable = Executable(result.graph, result.input_dims)
        self.out_dtypes = [getattr(getattr(o, "aval", None), "dtype", None) for o in result.graph.outputs]


def _static_key(x):
    try:
        hash(x)
        return (type(x).__name__, x)
    except TypeError:
        return (type(x).__name__, repr(x))


class Jitted:
    """A compiled function (what ``ts.jit`` returns)."""

    def __init__(self, fn):
        functools.update_wrapper(self, fn.fn if isinstance(fn, Function) else fn)
        self.target = fn
        self.checker = fn.checker if isinstance(fn, Function) else None
        self._cache: Dict[tuple, List[_Entry]] = {}
        self.trace_count = 0

    def _key(self, leaves, tree):
        parts = []
        for x in leaves:
            if isinstance(x, Tensor):
                parts.append(("T", x.dtype.name, x.ndim, x._data.device.type))
            else:
                parts.append(("S", _static_key(x)))
        return (tree, tuple(parts))

    def _trace(self, args, kwargs) -> TraceResult:
        self.trace_count += 1
        fn = self.target.fn if isinstance(self.target, Function) else self.target
        result = trace_function(self.target, args, kwargs, name=getattr(fn, "__name__", "f"), checker=self.checker)
        result.graph = simplify(result.graph)
        return result

    def lower(self, *args, **kwargs) -> Lowered:
        """Trace and simplify for these arguments; ``.as_text()`` prints the IR."""
        return Lowered(self._trace(args, kwargs))

    def __call__(self, *args, **kwargs):
        if self.checker is not None:
            self.checker.check_call(args, kwargs)
        leaves, tree = pytree.flatten((args, kwargs))
        tensors = [x._data for x in leaves if isinstance(x, Tensor)]
        key = self._key(leaves, tree)
        entries = self._cache.setdefault(key, [])
        for entry in entries:
            try:
                sizes = entry.executable.bind_sizes(tensors)
            except Exception:
                continue
            if entry.result.env.check(sizes):
                return self._run(entry, tensors, sizes)
        entry = _Entry(self._trace(args, kwargs))
        entries.append(entry)
        return self._run(entry, tensors, entry.executable.bind_sizes(tensors))

    def _run(self, entry: _Entry, tensors, sizes):
        outs = entry.executable.run(tensors, sizes)
        wrapped = [Tensor._from_torch(o, d) if d is not None and o is not None and not isinstance(o, (int, float, bool))
                   else o for o, d in zip(outs, entry.out_dtypes)]
        return pytree.unflatten(entry.result.out_tree, wrapped)

    def __repr__(self) -> str:
        return f"<ts.jit {getattr(self, '__name__', 'f')}>"


def jit(fn=None):
    """Compile ``fn`` (a Python function or a ``@ts.function``); usable as ``@ts.jit``.

    A ``@ts.kernel`` passed here returns its compiled kernel.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     ts.jit(lambda a, b: a @ b + 1.0)(ts.ones(2, 3), ts.ones(3, 2)).tolist()
        [[4.0, 4.0], [4.0, 4.0]]
    """
    if fn is None:
        return jit
    if hasattr(fn, "__tessera_jit__"):
        return fn.__tessera_jit__()
    if isinstance(fn, Jitted):
        return fn
    return Jitted(fn)
