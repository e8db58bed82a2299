"""Tracing: running a Python function on :class:`Tracer` tensors to build a :class:`Graph`.

A tracer has a symbolic shape and a dtype but no values; every op on it adds a node.
Comparisons between symbolic sizes are decided on the first call's sizes and guarded.

Example:
    >>> import tessera as ts
    >>> from tessera.compiler.tracer import trace_function
    >>> with ts.device("cpu"):
    ...     t = trace_function(lambda x: x.reshape(-1), (ts.ones(2, 3),), {})
    >>> [n.prim.name for n in t.graph.nodes]
    ['reshape']
"""
from __future__ import annotations

import itertools
from typing import Dict, List

from ..core.dispatch import active_traces
from ..core.primitive import Aval, Primitive
from ..core.tensor import Tensor
from ..core.userframe import user_location
from ..errors import TesseraTraceError
from ..types.dims import Dim, ShapeEnv
from . import pytree
from .ir import Graph, Literal, Node, Value


class Tracer(Tensor):
    """A tensor under ``ts.jit`` tracing: symbolic shape, dtype, no values."""

    __slots__ = ("_aval", "_trace", "_value")

    @property
    def shape(self):
        return self._aval.shape

    @property
    def dtype(self):
        return self._aval.dtype

    @property
    def device(self):
        return self._trace.device

    def _no_value(self, what: str):
        raise TesseraTraceError(
            f"{what} needs the value of a traced tensor, which ts.jit does not know while tracing{user_location()}\n"
            "Use ts.where(cond, a, b) for a data-dependent choice, compute the value outside the jitted "
            "function, or call the function without ts.jit.")

    def __bool__(self):
        self._no_value("a Python branch (if/while/and/or/bool())")

    def item(self):
        self._no_value(".item()")

    def tolist(self):
        self._no_value(".tolist()")

    def numpy(self):
        self._no_value(".numpy()")

    def __float__(self):
        self._no_value("float()")

    def __int__(self):
        self._no_value("int()")

    def __index__(self):
        self._no_value("using a tensor as an index")

    def __format__(self, spec):
        return repr(self)

    def __repr__(self) -> str:
        return f"Tracer({self._aval})"

    def torch(self):
        self._no_value(".torch()")

    def __dlpack__(self, *a, **k):
        self._no_value("DLPack export")


class Trace:
    """The graph under construction for one trace."""

    def __init__(self, env: ShapeEnv, device):
        self.env = env
        self.device = device
        self.nodes: List[Node] = []
        self.constants: Dict[int, tuple] = {}
        self._ids = itertools.count()

    def new_value(self, aval: Aval) -> Value:
        return Value(next(self._ids), aval)

    def new_tracer(self, aval: Aval, value: Value = None) -> Tracer:
        t = object.__new__(Tracer)
        t._data, t._dtype, t._producer = None, aval.dtype, None
        t._aval, t._trace, t._value = aval, self, value if value is not None else self.new_value(aval)
        return t

    def const(self, x: Tensor) -> Value:
        entry = self.constants.get(id(x))
        if entry is None:
            aval = Aval(tuple(Dim.const(s) for s in x.shape), x.dtype)
            entry = (self.new_value(aval), x._data, x)
            self.constants[id(x)] = entry
        return entry[0]

    def operand(self, a):
        if isinstance(a, Tracer):
            if a._trace is not self:
                raise TesseraTraceError("a tracer from another ts.jit trace leaked into this one; return tensors "
                                        "from jitted functions instead of storing them")
            return a._value, a._aval
        if isinstance(a, Tensor):
            v = self.const(a)
            return v, v.aval
        if a is None:
            return None, None
        return Literal(a), a

    def emit(self, prim: Primitive, args, attrs):
        ins, avals = zip(*(self.operand(a) for a in args)) if args else ((), ())
        with self.env:
            out_avals = prim.shape(*avals, **attrs)
        multiple = prim.multiple_results
        out_avals = tuple(out_avals) if multiple else (out_avals,)
        if self.env.aliases:
            out_avals = tuple(None if a is None else Aval(tuple(self.env.canonical(d) for d in a.shape), a.dtype)
                              for a in out_avals)
        outs = tuple(self.new_value(a) if a is not None else self.new_value(Aval((), avals[0].dtype))
                     for a in out_avals)
        self.nodes.append(Node(prim, tuple(ins), prim.make_attrs(**attrs), outs))
        tracers = tuple(self.new_tracer(v.aval, v) for v in outs)
        return tracers if multiple else tracers[0]


class TraceResult:
    """A traced graph with what is needed to call it: the input/output structure and guards."""

    def __init__(self, graph: Graph, in_tree, out_tree, env: ShapeEnv, input_dims):
        self.graph, self.in_tree, self.out_tree, self.env = graph, in_tree, out_tree, env
        self.input_dims = input_dims  # per tensor input: its symbolic shape


def symbolic_shapes(fn, leaves_with_paths, checker=None):
    """Give each tensor input a symbolic shape: annotation names where ``fn`` declares them,
    fresh names elsewhere; unnamed sizes of 1 stay constant (broadcasting depends on them)."""
    names: Dict[str, Dim] = {}
    hints: Dict[str, int] = {}
    shapes = []
    specs = checker.specs if checker is not None else {}
    for path, x in leaves_with_paths:
        spec = specs.get(path[0]) if len(path) == 1 else None
        dims = []
        aligned = None
        if spec is not None and len(spec.parsed) == x.ndim and not spec.has_ellipsis:
            aligned = spec.parsed
        for j, size in enumerate(x.shape):
            d = aligned[j] if aligned is not None else None
            if size == 1 and (d is None or d.is_constant):
                dims.append(Dim.const(1))  # unnamed size-1 dims broadcast: specialise (checked at each call)
                continue
            if d is not None and d.symbol_name is not None and d.symbol_name not in names:
                names[d.symbol_name] = Dim.sym(d.symbol_name)
                hints[d.symbol_name] = size
                dims.append(names[d.symbol_name])
            elif d is not None and d.free_symbols() <= names.keys() and d.substitute(names).evaluate(hints) == size:
                dims.append(d.substitute(names))
            elif d is not None and d.is_constant:
                dims.append(d)
            else:
                fresh = "_".join(str(p) for p in path) + f"_{j}"
                names[fresh] = Dim.sym(fresh)
                hints[fresh] = size
                dims.append(names[fresh])
        shapes.append(tuple(dims))
    return shapes, hints


def trace_function(fn, args, kwargs, name: str = None, checker=None) -> TraceResult:
    """Trace ``fn(*args, **kwargs)``: tensors (anywhere in lists/tuples/dicts) become graph inputs."""
    from ..core.device import default_device

    leaves, in_tree = pytree.flatten((args, kwargs))
    tensor_leaves = [(p, x) for p, x in pytree.paths(args, kwargs, fn) if isinstance(x, Tensor)]
    shapes, hints = symbolic_shapes(fn, tensor_leaves, checker)
    env = ShapeEnv(hints)
    devices = {x.device for _, x in tensor_leaves}
    trace = Trace(env, next(iter(devices)) if devices else default_device())
    inputs = []
    it = iter(shapes)
    new_leaves = []
    for x in leaves:
        if isinstance(x, Tensor):
            t = trace.new_tracer(Aval(next(it), x.dtype))
            inputs.append(t._value)
            new_leaves.append(t)
        else:
            new_leaves.append(x)
    t_args, t_kwargs = pytree.unflatten(in_tree, new_leaves)
    active_traces.append(trace)
    try:
        with env:
            out = fn(*t_args, **t_kwargs)
    finally:
        active_traces.pop()
    out_leaves, out_tree = pytree.flatten(out)
    outputs = []
    for o in out_leaves:
        if isinstance(o, Tracer):
            outputs.append(o._value)
        elif isinstance(o, Tensor):
            outputs.append(trace.const(o))
        else:
            outputs.append(Literal(o) if o is not None else None)
    graph = Graph(name or getattr(fn, "__name__", "f"), tuple(inputs),
                  tuple((v, data) for v, data, _ in trace.constants.values()), tuple(trace.nodes), tuple(outputs))
    return TraceResult(graph, in_tree, out_tree, env, shapes)
