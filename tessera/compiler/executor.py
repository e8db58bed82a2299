"""Executing a graph: each node through the registry (fast lowering where registered).

The executable is a flat list of steps made once per graph; a call binds the symbolic
sizes from the inputs' shapes, resolves symbolic attributes, and runs the steps.

Example:
    >>> import tessera as ts
    >>> from tessera.compiler.tracer import trace_function
    >>> from tessera.compiler.executor import Executable
    >>> with ts.device("cpu"):
    ...     t = trace_function(lambda x: x * 2, (ts.ones(3),), {})
    ...     Executable(t.graph, t.input_dims).run([ts.ones(4).torch()])[0].tolist()
    [2.0, 2.0, 2.0, 2.0]
"""
from __future__ import annotations

from typing import Dict, List

from ..errors import TesseraShapeError
from ..types.dims import Dim, has_symbolic
from .ir import Graph, Literal, Value


def _resolve(x, env):
    if isinstance(x, Dim):
        return x.evaluate(env)
    if isinstance(x, tuple):
        return tuple(_resolve(v, env) for v in x)
    if isinstance(x, list):
        return [_resolve(v, env) for v in x]
    if isinstance(x, dict):
        return {k: _resolve(v, env) for k, v in x.items()}
    return x


def _plain(x):
    if isinstance(x, Dim):
        return x.constant_value
    if isinstance(x, tuple):
        return tuple(_plain(v) for v in x)
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x


class Executable:
    """A graph made ready to run: slots for values, steps in order."""

    def __init__(self, graph: Graph, input_dims):
        self.graph = graph
        slot: Dict[int, int] = {}
        for v in graph.inputs:
            slot[id(v)] = len(slot)
        self.n_inputs = len(slot)
        self.constants = []
        for v, t in graph.constants:
            slot[id(v)] = len(slot)
            self.constants.append(t)
        self.steps = []
        for n in graph.nodes:
            ins = []
            for i in n.inputs:
                if isinstance(i, Value):
                    ins.append((True, slot[id(i)]))
                else:
                    ins.append((False, i.value if isinstance(i, Literal) else None))
            outs = []
            for o in n.outputs:
                slot[id(o)] = len(slot)
                outs.append(slot[id(o)])
            attrs = n.attr_dict()
            dynamic = has_symbolic(attrs)
            self.steps.append((n.prim, tuple(ins), tuple(outs), attrs if dynamic else _plain(attrs), dynamic))
        self.n_slots = len(slot)
        self.outputs = [(True, slot[id(o)]) if isinstance(o, Value) else (False, getattr(o, "value", None))
                        for o in graph.outputs]
        self.releases = self._plan_releases()
        self.input_dims = input_dims
        self.symbols = sorted({s for dims in input_dims for d in dims for s in d.free_symbols()})

    def _plan_releases(self):
        """For each step, the slots read for the last time there (freed right after, so that
        intermediates do not outlive their last use). Inputs, constants and outputs are kept."""
        keep = set(range(self.n_inputs + len(self.constants))) | {i for is_slot, i in self.outputs if is_slot}
        last = {}
        for k, (_, ins, outs, _, _) in enumerate(self.steps):
            for is_slot, i in ins:
                if is_slot:
                    last[i] = k
            for o in outs:
                last.setdefault(o, k)  # an output nobody reads is dropped at once
        releases = [[] for _ in self.steps]
        for i, k in last.items():
            if i not in keep:
                releases[k].append(i)
        return [tuple(r) for r in releases]

    def bind_sizes(self, inputs) -> Dict[str, int]:
        """Sizes of the symbols from the input shapes (each bare symbol's first occurrence)."""
        env: Dict[str, int] = {}
        for dims, t in zip(self.input_dims, inputs):
            for d, size in zip(dims, t.shape):
                name = d.symbol_name
                if name is not None and name not in env:
                    env[name] = size
        for dims, t in zip(self.input_dims, inputs):
            if len(dims) != t.dim():
                raise TesseraShapeError(f"compiled {self.graph.name}: an input has rank {t.dim()}, expected {len(dims)}")
            for d, size in zip(dims, t.shape):
                if d.free_symbols() <= env.keys() and d.evaluate(env) != size:
                    raise TesseraShapeError(f"compiled {self.graph.name}: an input dim of size {size} should be {d} = "
                                            f"{d.evaluate(env)}")
        return env

    def run(self, inputs, env: Dict[str, int] = None) -> List[object]:
        """Run on torch tensors; returns the output torch tensors (or literals)."""
        if env is None:
            env = self.bind_sizes(inputs)
        slots = [None] * self.n_slots
        slots[:self.n_inputs] = inputs
        slots[self.n_inputs:self.n_inputs + len(self.constants)] = self.constants
        for (prim, ins, outs, attrs, dynamic), release in zip(self.steps, self.releases):
            args = [slots[i] if is_slot else i for is_slot, i in ins]
            kw = _resolve(attrs, env) if dynamic else attrs
            device_type = next((a.device.type for a in args if hasattr(a, "device")), "cpu")
            impl = prim.implementation(device_type, args, kw) if prim.lowerings else prim.reference
            out = impl(*args, **kw)
            if len(outs) == 1 and not prim.multiple_results:
                slots[outs[0]] = out
            else:
                for o, r in zip(outs, out):
                    slots[o] = r
            for i in release:
                slots[i] = None
        return [slots[i] if is_slot else i for is_slot, i in self.outputs]
