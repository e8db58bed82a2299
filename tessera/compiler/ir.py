"""The graph IR: immutable values and nodes with typed attributes; printable and verifiable.

A :class:`Graph` is what ``ts.jit`` traces a function into. Values are identified by
object (their ``id`` is only for printing); attributes are the primitive's frozen
attrs dataclass; shapes are symbolic (:class:`~tessera.types.dims.Dim`).

Example:
    >>> import tessera as ts
    >>> with ts.device("cpu"):
    ...     text = ts.jit(lambda x: ts.exp(x) + 1.0).lower(ts.ones(2, 3)).as_text()
    >>> "exp" in text and "add" in text
    True
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple, Union

from ..core.primitive import Aval, Primitive
from ..errors import TesseraError
from ..types.dims import Dim


@dataclass(frozen=True, eq=False)
class Value:
    """An SSA value: produced once (by a node, or as a graph input or constant)."""

    id: int
    aval: Aval

    def __repr__(self) -> str:
        return f"%{self.id}"


@dataclass(frozen=True)
class Literal:
    """A Python scalar used directly as an operand."""

    value: Union[int, float, bool]

    def __repr__(self) -> str:
        return repr(self.value)


Operand = Optional[Union[Value, Literal]]


@dataclass(frozen=True, eq=False)
class Node:
    """One primitive application."""

    prim: Primitive
    inputs: Tuple[Operand, ...]
    attrs: object  # the primitive's attrs dataclass instance
    outputs: Tuple[Value, ...]

    def attr_dict(self) -> dict:
        return {f.name: getattr(self.attrs, f.name) for f in dataclasses.fields(self.attrs)}

    def key(self):
        """Structural identity for common-subexpression elimination."""
        return (self.prim.name, tuple(id(i) if isinstance(i, Value) else i for i in self.inputs),
                _hashable(self.attr_dict()))


def _hashable(x):
    if isinstance(x, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in x.items()))
    if isinstance(x, (list, tuple)):
        return tuple(_hashable(v) for v in x)
    if isinstance(x, Dim):
        return ("dim", x.terms)
    return x


@dataclass(frozen=True, eq=False)
class Graph:
    """A traced function: inputs, constants, nodes in order, outputs."""

    name: str
    inputs: Tuple[Value, ...]
    constants: Tuple[Tuple[Value, object], ...]  # (value, torch tensor)
    nodes: Tuple[Node, ...]
    outputs: Tuple[Operand, ...]

    def replace(self, **kw) -> "Graph":
        return dataclasses.replace(self, **kw)

    def as_text(self) -> str:
        """A readable listing: one line per node with output avals and attributes."""
        def fmt_attr(v):
            if isinstance(v, tuple):
                return "(" + ", ".join(fmt_attr(x) for x in v) + ("," if len(v) == 1 else "") + ")"
            if isinstance(v, Dim):
                return str(v)
            return repr(v)

        lines = [f"graph {self.name}(" + ", ".join(f"{v}: {v.aval}" for v in self.inputs) + ") {"]
        for v, t in self.constants:
            lines.append(f"  {v}: {v.aval} = constant")
        for n in self.nodes:
            outs = ", ".join(f"{v}: {v.aval}" for v in n.outputs)
            attrs = ", ".join(f"{k}={fmt_attr(v)}" for k, v in n.attr_dict().items())
            args = ", ".join("None" if i is None else repr(i) for i in n.inputs)
            lines.append(f"  {outs} = {n.prim.name}({args}{'; ' + attrs if attrs else ''})")
        lines.append("  return " + ", ".join(repr(o) for o in self.outputs))
        lines.append("}")
        return "\n".join(lines)

    __str__ = as_text

    def verify(self) -> None:
        """Check SSA form: every operand defined before use, every value defined once."""
        defined = set(map(id, self.inputs)) | {id(v) for v, _ in self.constants}
        if len(defined) != len(self.inputs) + len(self.constants):
            raise TesseraError(f"IR verifier: graph {self.name} defines an input or constant twice")
        for n in self.nodes:
            for i in n.inputs:
                if isinstance(i, Value) and id(i) not in defined:
                    raise TesseraError(f"IR verifier: {n.prim.name} uses {i} before it is defined")
            for o in n.outputs:
                if id(o) in defined:
                    raise TesseraError(f"IR verifier: {o} is defined twice")
                defined.add(id(o))
        for o in self.outputs:
            if isinstance(o, Value) and id(o) not in defined:
                raise TesseraError(f"IR verifier: output {o} is never defined")
