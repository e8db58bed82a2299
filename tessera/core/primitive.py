"""Primitives and their registry: each op defined once, in one class.

A primitive holds its attributes (a frozen dataclass made from ``attrs``), its shape and
dtype rule (``shape``: avals in, avals out, working on symbolic dims), its reference
implementation (``reference``: torch tensors in and out, any device), and its VJP
(``vjp``: written with other Tessera ops, so it works eagerly, under tracing and for
higher derivatives). Fast lowerings live in ``tessera/kernels`` and are added with
:meth:`Primitive.register_lowering`; eager dispatch, tracing, autodiff and the compiler
all read this one registry.

Example:
    >>> from tessera.core.primitive import registry
    >>> "matmul" in registry and registry["matmul"].attrs_class.__name__
    'MatmulAttrs'
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Callable, Dict, NamedTuple, Optional, Tuple

from ..dtypes import DType
from ..errors import TesseraError
from ..types.dims import Dim, format_dims

registry: Dict[str, "Primitive"] = {}


class Aval(NamedTuple):
    """An abstract value: a shape (tuple of :class:`Dim`) and a dtype."""

    shape: Tuple[Dim, ...]
    dtype: DType

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return f"{self.dtype.name}{format_dims(self.shape)}"


class Lowering(NamedTuple):
    fn: Callable
    supports: Optional[Callable]
    name: str
    warn_on_fallback: bool = True


class Primitive:
    """Base class of every primitive. Subclasses set ``name``, ``attrs`` and the rules."""

    name: str = ""
    attrs: Tuple[Tuple[str, object], ...] = ()  # (name, default) pairs; defaults may be dataclasses.MISSING
    multiple_results: bool = False
    differentiable: bool = True
    #: outputs that are by-products (e.g. saved statistics) and get no cotangent
    nondiff_outputs: Tuple[int, ...] = ()
    #: whether the op takes no tensor inputs (creation ops): under tracing it is recorded, not run
    nullary: bool = False
    #: whether storage-only dtypes (fp6/fp4 codes) may be passed (conversions do)
    accepts_packed: bool = False
    #: whether the output dtype comes from ``result_dtype(attrs)`` rather than the torch result
    overrides_dtype: bool = False

    def __init__(self):
        fields = [(n, object, dataclasses.field(default=d)) if d is not dataclasses.MISSING else (n, object)
                  for n, d in self.attrs]
        self.attrs_class = dataclasses.make_dataclass(
            "".join(p.capitalize() for p in self.name.split("_")) + "Attrs", fields, frozen=True)
        self.lowerings: Dict[str, Lowering] = {}
        self._warned: set = set()
        self.accepted: set = set()  # signatures whose eager calls passed the shape rule (core/dispatch.py)
        self.attr_names = tuple(n for n, _ in self.attrs)
        registry[self.name] = self

    # the rules (subclasses override) -------------------------------------------
    def shape(self, *avals: Optional[Aval], **attrs):
        """Output aval(s) for input avals; raises a typed error when the inputs do not fit."""
        raise TesseraError(f"primitive {self.name} has no shape rule; define shape() in its class")

    def reference(self, *args, **attrs):
        """Torch implementation on any device: the definition of the op's semantics."""
        raise TesseraError(f"primitive {self.name} has no reference implementation; define reference() in its class")

    def vjp(self, cts, inputs, outputs, **attrs):
        """Cotangents of the inputs (None where zero) from the outputs' cotangents."""
        from ..errors import TesseraAutodiffError

        raise TesseraAutodiffError(f"{self.name} is not differentiable")

    # lowerings ------------------------------------------------------------------
    def register_lowering(self, device_type: str, fn: Callable, supports: Optional[Callable] = None,
                          name: str = "", warn_on_fallback: bool = True) -> None:
        """Use ``fn`` (same signature as :meth:`reference`) on ``device_type`` where ``supports`` says so.

        ``warn_on_fallback=False`` when ``supports`` routes by measured speed rather than capability."""
        self.lowerings[device_type] = Lowering(fn, supports, name or getattr(fn, "__qualname__", "lowering"),
                                               warn_on_fallback)

    def implementation(self, device_type: str, args, attrs) -> Callable:
        """The fast lowering for this device when registered and applicable, else the reference."""
        low = self.lowerings.get(device_type)
        if low is None or not _kernels_enabled[0]:
            return self.reference
        if low.supports is None or low.supports(*args, **attrs):
            return low.fn
        if low.warn_on_fallback and device_type not in self._warned:
            self._warned.add(device_type)
            warnings.warn(f"tessera: {self.name} on {device_type} falls back to the reference implementation "
                          f"for these inputs ({low.name} does not support them); this warning is shown once.",
                          stacklevel=4)
        return self.reference

    def warn_kernel_failure(self, device_type: str, exc: Exception) -> None:
        """Warn once per device type and failure kind that the lowering raised and the reference ran
        instead (dispatch does the fallback; ``TESSERA_STRICT_KERNELS=1`` raises instead)."""
        key = (device_type, type(exc).__name__)
        if key in self._warned:
            return
        self._warned.add(key)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        warnings.warn(f"tessera: {self.name}'s {device_type} kernel ({self.lowerings[device_type].name}) failed on "
                      f"these inputs ({type(exc).__name__}: {first}); the reference implementation ran instead. "
                      "Please report it; TESSERA_STRICT_KERNELS=1 raises the error instead. This warning is "
                      "shown once.", stacklevel=5)

    def result_dtype(self, attrs) -> DType:
        """The output dtype when ``overrides_dtype`` (e.g. a cast to a storage-only format)."""
        return attrs["dtype"]

    def make_attrs(self, **kw):
        return self.attrs_class(**kw)

    def __repr__(self) -> str:
        return f"<primitive {self.name}>"


_kernels_enabled = [True]


def use_kernels(enabled: bool) -> None:
    """Turn registered fast lowerings on or off (off: every op runs its reference).

    Example:
        >>> import tessera as ts
        >>> ts.use_kernels(True)
    """
    _kernels_enabled[0] = bool(enabled)

