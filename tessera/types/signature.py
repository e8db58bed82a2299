"""Checking a call against a function's tensor annotations.

Names bind left to right on the first argument that uses them as a bare dim; every
other use — expressions such as ``"3*D"`` included — must agree. Works on concrete
sizes (ints) and on symbolic dims while tracing.

Example:
    >>> import tessera as ts
    >>> from tessera.types.signature import SignatureChecker
    >>> def f(x: ts.Tensor["B", "D"], w: ts.Tensor["D", "3*D"]): ...
    >>> with ts.device("cpu"):
    ...     SignatureChecker(f).check_call((ts.ones(2, 4), ts.ones(4, 12)), {})[0]
    {'B': 2, 'D': 4}
"""
from __future__ import annotations

import inspect
import typing
from typing import Dict, Tuple

from ..errors import TesseraDTypeError, TesseraShapeError, TesseraTypeError
from .annotations import DictSpec, TensorSpec
from .dims import Dim


def _dim_text(d: Dim) -> str:
    return str(d.constant_value) if d.is_constant else repr(str(d))


def _spec_text(spec: TensorSpec) -> str:
    return "(" + ", ".join("..." if d is Ellipsis else _dim_text(d) for d in spec.parsed) + \
        ("," if len(spec.parsed) == 1 else "") + ")"


def _shape_text(shape) -> str:
    return "(" + ", ".join(str(int(s)) if isinstance(s, int) or (isinstance(s, Dim) and s.is_constant) else str(s)
                           for s in shape) + ("," if len(shape) == 1 else "") + ")"


class SignatureChecker:
    """Validates the arguments and the result of one function against its annotations."""

    def __init__(self, fn):
        self.fn = fn
        self.name = getattr(fn, "__name__", "function")
        self.signature = inspect.signature(fn)
        try:
            hints = inspect.get_annotations(fn, eval_str=True)
        except Exception:
            hints = getattr(fn, "__annotations__", {})
        self.specs = {k: v for k, v in hints.items() if k != "return" and isinstance(v, TensorSpec)}
        self.result_spec = hints.get("return")

    # -------------------------------------------------------------- binding
    def bind(self, args, kwargs) -> inspect.BoundArguments:
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as e:
            params = ", ".join(self.signature.parameters)
            raise TesseraTypeError(f"{self.name}: {e}; its parameters are ({params})") from None
        bound.apply_defaults()
        return bound

    def check_call(self, args, kwargs) -> Tuple[Dict[str, object], inspect.BoundArguments]:
        """Bind ``args``/``kwargs`` and check every annotated tensor; returns (sizes by name, bound args)."""
        bound = self.bind(args, kwargs)
        env: Dict[str, object] = {}
        binder: Dict[str, str] = {}
        items = [(name, spec, bound.arguments.get(name)) for name, spec in self.specs.items()
                 if name in bound.arguments]
        for name, spec, value in items:
            self._check_kind(f"argument {name}", spec, value)
        for name, spec, value in items:
            self._bind_bare(name, spec, value, env, binder)
        for name, spec, value in items:
            self._bind_solvable(name, spec, value, env, binder)
        for name, spec, value in items:
            self._verify(f"argument {name}", spec, value, env, binder)
            if spec.dtype is not None and spec.dtype.accum is not None and value.dtype != spec.dtype:
                bound.arguments[name] = value.to(spec.dtype)  # the annotation's precision policy applies inside
        return env, bound

    def check_result(self, out, env: Dict[str, object]) -> None:
        """Check the returned value against the return annotation (binding any new names)."""
        spec = self.result_spec
        if spec is None:
            return
        binder = {k: "the arguments" for k in env}
        self._check_result(spec, out, env, binder, "the return value")

    def _check_result(self, spec, out, env, binder, what):
        from ..core.tensor import Tensor

        if isinstance(spec, TensorSpec):
            self._check_kind(what, spec, out, is_result=True)
            self._bind_bare(what, spec, out, env, binder)
            self._bind_solvable(what, spec, out, env, binder)
            self._verify(what, spec, out, env, binder)
        elif isinstance(spec, DictSpec):
            if not isinstance(out, dict):
                raise TesseraTypeError(f"{self.name}: the return value is annotated ts.Dict[str, ...] but is a "
                                       f"{type(out).__name__}; return a dict")
            for k, v in out.items():
                if not isinstance(k, str):
                    raise TesseraTypeError(f"{self.name}: the returned dict has a non-string key {k!r}")
                if isinstance(spec.value, TensorSpec):
                    self._check_result(spec.value, v, env, binder, f"the returned dict's entry {k!r}")
                elif spec.value is Tensor and not isinstance(v, (Tensor, dict, list, tuple)):
                    raise TesseraTypeError(f"{self.name}: the returned dict's entry {k!r} is a {type(v).__name__}, "
                                           "not a tensor")
        elif typing.get_origin(spec) is tuple:
            items = typing.get_args(spec)
            if not isinstance(out, tuple):
                raise TesseraTypeError(f"{self.name}: the return value is annotated as a tuple but is a {type(out).__name__}")
            if items and items[-1] is not Ellipsis and len(items) != len(out):
                raise TesseraTypeError(f"{self.name}: the return annotation has {len(items)} items but "
                                       f"{len(out)} values were returned")
            for i, (s, v) in enumerate(zip(items, out)):
                if isinstance(s, (TensorSpec, DictSpec)):
                    self._check_result(s, v, env, binder, f"return item {i}")

    # -------------------------------------------------------------- steps
    def _check_kind(self, what, spec: TensorSpec, value, is_result=False):
        from ..core.tensor import Tensor

        if not isinstance(value, Tensor):
            hint = " (ts.tensor(...) or ts.from_dlpack(...) converts it)" if hasattr(value, "__array__") or \
                hasattr(value, "__dlpack__") else ""
            raise TesseraTypeError(f"{self.name}: {what} is annotated {spec!r} but is a {type(value).__name__}; "
                                   f"pass a ts.Tensor{hint}")
        if spec.dtype is not None and value.dtype.storage != spec.dtype.storage:
            fix = "" if is_result else f"; convert it with {what.split()[-1]}.to(ts.{spec.dtype.storage.name})"
            raise TesseraDTypeError(f"{self.name}: {what} has dtype {value.dtype.name}, but its annotation requires "
                                    f"{spec.dtype.storage.name}{fix}")
        ndim = len(value.shape)
        need = len(spec.parsed) - (1 if spec.has_ellipsis else 0)
        if (ndim != need and not spec.has_ellipsis) or ndim < need:
            raise TesseraShapeError(f"{self.name}: {what} has shape {_shape_text(value.shape)} (rank {ndim}), but its "
                                    f"annotation {_spec_text(spec)} requires rank {need}{' or more' if spec.has_ellipsis else ''}")

    @staticmethod
    def _aligned(spec: TensorSpec, shape):
        """Pairs (dim expression, actual size), skipping the dims an ellipsis covers."""
        if not spec.has_ellipsis:
            return list(zip(spec.parsed, shape))
        k = spec.parsed.index(Ellipsis)
        head, tail = spec.parsed[:k], spec.parsed[k + 1:]
        return list(zip(head, shape[:k])) + list(zip(tail, shape[len(shape) - len(tail):]))

    def _bind_bare(self, what, spec, value, env, binder):
        for d, actual in self._aligned(spec, value.shape):
            name = d.symbol_name
            if name is not None and name not in env:
                env[name] = actual
                binder[name] = what.replace("argument ", "")

    def _bind_solvable(self, what, spec, value, env, binder):
        """Bind a name that appears only inside a linear expression, e.g. S from "S+1"."""
        for d, actual in self._aligned(spec, value.shape):
            free = [s for s in d.free_symbols() if s not in env]
            if len(free) != 1 or not isinstance(actual, int):
                continue
            s = free[0]
            at0 = d.evaluate({**{k: int(v) for k, v in env.items() if isinstance(v, int)}, s: 0}) if \
                d.free_symbols() - {s} <= {k for k, v in env.items() if isinstance(v, int)} else None
            if at0 is None:
                continue
            at1 = d.evaluate({**{k: int(v) for k, v in env.items() if isinstance(v, int)}, s: 1})
            slope = at1 - at0
            if slope > 0 and (actual - at0) % slope == 0 and d.evaluate({**env, s: (actual - at0) // slope}) == actual:
                env[s] = (actual - at0) // slope
                binder[s] = what.replace("argument ", "")

    def _verify(self, what, spec, value, env, binder):
        expected, ok = [], True
        for d, actual in self._aligned(spec, value.shape):
            e = self._evaluate(d, env)
            expected.append(e)
            if e is not None and not (actual == e):
                ok = False
        if ok:
            return
        names = sorted({s for d in spec.parsed if d is not Ellipsis for s in d.free_symbols()})
        bound = ", ".join(f"{n}={env[n]} (bound by {binder[n]})" if binder.get(n) != what.replace("argument ", "")
                          else f"{n}={env[n]}" for n in names if n in env)
        req = list(value.shape)
        aligned = self._aligned(spec, value.shape)
        offset = 0 if not spec.has_ellipsis else len(value.shape) - (len(spec.parsed) - 1) if spec.parsed.index(Ellipsis) == 0 else 0
        for i, ((d, _), e) in enumerate(zip(aligned, expected)):
            req[i + offset] = e if e is not None else req[i + offset]
        raise TesseraShapeError(f"{self.name}: {what} has shape {_shape_text(value.shape)}, but its annotation "
                                f"{_spec_text(spec)}{' with ' + bound if bound else ''} requires {_shape_text(req)}")

    @staticmethod
    def _evaluate(d: Dim, env):
        if not d.free_symbols() <= env.keys():
            return None
        if all(isinstance(env[s], int) for s in d.free_symbols()):
            return d.evaluate(env)
        return d.substitute({s: Dim.of(env[s]) for s in d.free_symbols()})
