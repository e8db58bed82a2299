"""Dispatch: the one path every op call takes.

``bind(prim, *args, **attrs)`` runs the primitive eagerly on torch storage (its fast
lowering where registered, else its reference), or — when an argument is a tracer —
adds it to the trace in progress; then, when a tape is recording, links the outputs to
their producer so that ``ts.grad`` can walk back. Eager calls are checked by the same
shape rule as traced ones, before they run, so that bad input raises the typed error
the rule gives instead of computing something; each primitive remembers the signatures
(shapes, dtypes, attrs) it has accepted, so a training loop pays for the rule once.

Example:
    >>> import tessera as ts
    >>> from tessera.core.dispatch import bind
    >>> from tessera.core.primitive import registry
    >>> with ts.device("cpu"):
    ...     bind(registry["add"], ts.ones(2), 1.0).tolist()
    [2.0, 2.0]
"""
from __future__ import annotations

import os
import weakref

from ..errors import TesseraDeviceError, TesseraDTypeError, TesseraError
from ..types.dims import Dim, has_symbolic
from .primitive import Aval, Primitive
from .tensor import Tensor
from .userframe import user_location


class _TapeState:
    """How many recording scopes are open (``@ts.function`` with a tape, ``ts.grad(f)``)."""

    __slots__ = ("depth",)

    def __init__(self):
        self.depth = 0


tape_state = _TapeState()


class TapeNode:
    """One recorded op application: the primitive, its inputs, attrs and outputs."""

    __slots__ = ("prim", "inputs", "attrs", "outputs")

    def __init__(self, prim: Primitive, inputs, attrs, outputs):
        self.prim, self.inputs, self.attrs = prim, inputs, attrs
        # differentiable outputs are held weakly (they point back here); by-products strongly
        self.outputs = [o if (o is None or i in prim.nondiff_outputs) else weakref.ref(o)
                        for i, o in enumerate(outputs)]

    def output(self, i: int):
        o = self.outputs[i]
        return o if (o is None or i in self.prim.nondiff_outputs) else o()


def _record(prim: Primitive, args, attrs, outs) -> None:
    node = TapeNode(prim, args, attrs, outs if prim.multiple_results else (outs,))
    if prim.multiple_results:
        for i, o in enumerate(outs):
            if o is not None and i not in prim.nondiff_outputs:
                o._producer = (node, i)
    else:
        outs._producer = (node, 0)


def bind(prim: Primitive, *args, **attrs):
    """Apply ``prim`` to ``args`` (tensors, tracers, Python scalars or None) with ``attrs``."""
    trace = None
    for a in args:
        tr = getattr(a, "_trace", None)
        if tr is not None:
            trace = tr
            break
    if trace is None and active_traces and (prim.nullary or has_symbolic(attrs)):
        trace = active_traces[-1]  # concrete inputs with symbolic sizes: record, with the inputs as constants
    if trace is not None:
        outs = trace.emit(prim, args, attrs)
    else:
        outs = _eager(prim, args, attrs)
    if tape_state.depth and prim.differentiable:
        _record(prim, args, attrs, outs)
    return outs


_MEMO_LIMIT = 4096  # accepted signatures kept per primitive


def _signature(args, attrs):
    """A hashable key of what the shape rule reads, or None where an argument is neither a tensor nor a
    scalar (a list, say) or an attribute is unhashable: such calls are checked every time."""
    key = []
    for a in args:
        if isinstance(a, Tensor):
            key.append((a._data.shape, a._dtype))
        elif a is None or isinstance(a, (bool, int, float, str)):
            key.append((type(a), a))
        else:
            return None
    items = tuple(attrs.items())
    try:
        hash(items)
    except TypeError:  # e.g. an index with slices (unhashable before Python 3.12)
        items = _frozen(items)
        if items is None:
            return None
    key.append(items)
    return tuple(key)


def _frozen(v):
    """``v`` with slices spelled as tuples, or None when something else in it is unhashable."""
    if isinstance(v, slice):
        return (slice, v.start, v.stop, v.step)
    if isinstance(v, tuple):
        parts = tuple(_frozen(x) for x in v)
        return None if any(p is None and x is not None for p, x in zip(parts, v)) else parts
    try:
        hash(v)
    except TypeError:
        return None
    return v


def check_eager(prim: Primitive, args, attrs) -> None:
    """Run ``prim``'s shape rule on concrete ``args`` unless this signature passed it before;
    a rejection raises the rule's typed error at the user's line."""
    key = _signature(args, attrs)
    if key is not None and key in prim.accepted:
        return
    try:
        prim.shape(*[aval_of(a) for a in args], **attrs)
    except TesseraError as typed:
        typed.args = (f"{typed.args[0]}{user_location()}",)
        raise typed from None
    except Exception:  # a rule that cannot read these concrete inputs: the run below decides
        return
    if key is not None:
        if len(prim.accepted) >= _MEMO_LIMIT:
            prim.accepted.clear()
        prim.accepted.add(key)


def _eager(prim: Primitive, args, attrs):
    check_eager(prim, args, attrs)
    targs = []
    for a in args:
        if isinstance(a, Tensor):
            if a._dtype.torch_dtype is None and not prim.accepts_packed:
                raise TesseraDTypeError(
                    f"{prim.name}: an operand is {a._dtype.name}, a storage-only format; "
                    f"convert it first, e.g. x.to(ts.bf16){user_location()}")
            targs.append(a._data)
        else:
            targs.append(a)
    impl = prim.reference
    if prim.lowerings:
        device_type = next((t.device.type for t in targs if hasattr(t, "device")), "cpu")
        impl = prim.implementation(device_type, targs, attrs)
    try:
        try:
            out = impl(*targs, **attrs)
        except TesseraError:
            raise
        except Exception as exc:
            if impl is prim.reference or os.environ.get("TESSERA_STRICT_KERNELS", "0") == "1":
                raise
            prim.warn_kernel_failure(device_type, exc)
            out = prim.reference(*targs, **attrs)
    except TesseraError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise diagnose(prim, args, attrs, exc) from None
    if prim.multiple_results:
        return tuple(None if o is None else Tensor._from_torch(o) for o in out)
    return Tensor._from_torch(out, prim.result_dtype(attrs) if prim.overrides_dtype else None)


def aval_of(x):
    """The aval of a tensor (concrete sizes as constant dims); scalars and None pass through."""
    if isinstance(x, Tensor):
        shape = x.shape
        return Aval(tuple(s if isinstance(s, Dim) else Dim.const(s) for s in shape), x.dtype)
    return x


def diagnose(prim: Primitive, args, attrs, exc: Exception) -> TesseraError:
    """Turn a failure inside an implementation into the typed error the shape rule gives."""
    devices = {a._data.device for a in args if isinstance(a, Tensor) and a._data is not None}
    if len(devices) > 1:
        return TesseraDeviceError(
            f"{prim.name}: operands are on different devices ({', '.join(sorted(map(str, devices)))}); "
            f"move them with .to(device){user_location()}")
    try:
        prim.shape(*[aval_of(a) for a in args], **attrs)
    except TesseraError as typed:
        typed.args = (f"{typed.args[0]}{user_location()}",)
        return typed
    except Exception:
        pass
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return TesseraError(f"{prim.name} failed: {first}{user_location()}")


active_traces: list = []  # traces in progress (innermost last); nullary ops are recorded into the innermost
