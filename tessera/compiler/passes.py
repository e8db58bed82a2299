"""Graph → Graph simplification passes, composed in one pipeline list.

Each pass is a small pure function. With ``TESSERA_DEBUG=1`` the IR verifier runs after each.

Example:
    >>> import tessera as ts
    >>> def f(x):
    ...     unused = ts.exp(x)
    ...     return x.T.T + x.reshape(-1).reshape(*x.shape)
    >>> with ts.device("cpu"):
    ...     g = ts.jit(f).lower(ts.ones(2, 3)).graph
    >>> [n.prim.name for n in g.nodes]
    ['add']
"""
from __future__ import annotations

import os
from typing import Callable, Dict, List

from ..types.dims import Dim
from .ir import Graph, Node, Value


def _uses(graph: Graph) -> Dict[int, int]:
    counts: Dict[int, int] = {}
    for n in graph.nodes:
        for i in n.inputs:
            if isinstance(i, Value):
                counts[id(i)] = counts.get(id(i), 0) + 1
    for o in graph.outputs:
        if isinstance(o, Value):
            counts[id(o)] = counts.get(id(o), 0) + 1
    return counts


def _substitute(graph: Graph, mapping: Dict[int, Value], nodes: List[Node]) -> Graph:
    def sub(x):
        while isinstance(x, Value) and id(x) in mapping:
            x = mapping[id(x)]
        return x

    new_nodes = [Node(n.prim, tuple(sub(i) for i in n.inputs), n.attrs, n.outputs) for n in nodes]
    return graph.replace(nodes=tuple(new_nodes), outputs=tuple(sub(o) for o in graph.outputs))


def eliminate_dead_code(graph: Graph) -> Graph:
    """Drop nodes none of whose outputs is used (and unused constants)."""
    live = {id(o) for o in graph.outputs if isinstance(o, Value)}
    kept = []
    for n in reversed(graph.nodes):
        if any(id(o) in live for o in n.outputs):
            kept.append(n)
            live.update(id(i) for i in n.inputs if isinstance(i, Value))
    constants = tuple((v, t) for v, t in graph.constants if id(v) in live)
    return graph.replace(nodes=tuple(reversed(kept)), constants=constants)


def eliminate_common_subexpressions(graph: Graph) -> Graph:
    """Merge nodes that apply the same primitive to the same operands with the same attributes."""
    seen: Dict[tuple, Node] = {}
    mapping: Dict[int, Value] = {}
    nodes = []
    for n in graph.nodes:
        n = Node(n.prim, tuple(mapping.get(id(i), i) if isinstance(i, Value) else i for i in n.inputs),
                 n.attrs, n.outputs)
        if not n.prim.differentiable and n.prim.name in ("dropout",):
            nodes.append(n)
            continue
        key = n.key()
        prev = seen.get(key)
        if prev is not None:
            for a, b in zip(n.outputs, prev.outputs):
                mapping[id(a)] = b
            continue
        seen[key] = n
        nodes.append(n)
    return _substitute(graph, mapping, nodes)


def _same_shape(a, b) -> bool:
    return len(a) == len(b) and all(Dim.of(x).terms == Dim.of(y).terms for x, y in zip(a, b))


def fold_layout_ops(graph: Graph) -> Graph:
    """reshape∘reshape → reshape; permute∘permute → permute; identity reshapes/permutes/casts and
    contiguous → their input."""
    producers: Dict[int, Node] = {}
    mapping: Dict[int, Value] = {}
    nodes = []
    for n in graph.nodes:
        ins = tuple(mapping.get(id(i), i) if isinstance(i, Value) else i for i in n.inputs)
        name = n.prim.name
        src = ins[0] if ins else None
        prod = producers.get(id(src)) if isinstance(src, Value) else None
        attrs = n.attr_dict()
        if name == "reshape":
            if prod is not None and prod.prim.name == "reshape":
                ins = prod.inputs
                src = ins[0]
            if _same_shape(src.aval.shape, attrs["shape"]):
                mapping[id(n.outputs[0])] = src
                continue
        elif name == "permute":
            perm = attrs["perm"]
            if prod is not None and prod.prim.name == "permute":
                inner = prod.attr_dict()["perm"]
                perm = tuple(inner[p] for p in perm)
                ins = prod.inputs
                src = ins[0]
            if perm == tuple(range(len(perm))):
                mapping[id(n.outputs[0])] = src
                continue
            n = Node(n.prim, ins, n.prim.make_attrs(perm=perm), n.outputs)
        elif name == "contiguous" or (name == "cast" and src.aval.dtype == attrs["dtype"]):
            mapping[id(n.outputs[0])] = src
            continue
        n = Node(n.prim, ins, n.attrs, n.outputs)
        nodes.append(n)
        for o in n.outputs:
            producers[id(o)] = n
    return _substitute(graph, mapping, nodes)


def fuse_linear_activation(graph: Graph) -> Graph:
    """linear followed by gelu/silu on its output → one linear with the activation in its epilogue.

    The fused node still outputs the pre-activation (as its by-product), so backward nodes that
    read it keep working.
    """
    producers: Dict[int, Node] = {}
    fused: Dict[int, Node] = {}  # id(linear node) -> replacement
    drop = set()
    for n in graph.nodes:
        for o in n.outputs:
            producers[id(o)] = n
    for n in graph.nodes:
        if n.prim.name != "activation" or not isinstance(n.inputs[0], Value):
            continue
        lin = producers.get(id(n.inputs[0]))
        if lin is None or lin.prim.name != "linear" or id(lin) in fused or lin.outputs[0] is not n.inputs[0]:
            continue
        attrs = lin.attr_dict()
        if attrs["activation"] is not None or attrs.get("out_dtype") is not None or \
                (len(lin.inputs) > 3 and lin.inputs[3] is not None):
            continue  # the activation would apply after the residual add or the cast
        attrs["activation"] = n.attr_dict()["kind"]
        fused[id(lin)] = Node(lin.prim, lin.inputs, lin.prim.make_attrs(**attrs), (n.outputs[0], lin.outputs[0]))
        drop.add(id(n))
    if not fused:
        return graph
    nodes = tuple(fused.get(id(n), n) for n in graph.nodes if id(n) not in drop)
    return graph.replace(nodes=nodes)


PIPELINE: List[Callable[[Graph], Graph]] = [
    fold_layout_ops,
    fuse_linear_activation,
    eliminate_common_subexpressions,
    eliminate_dead_code,
]


def simplify(graph: Graph) -> Graph:
    """Run :data:`PIPELINE` (verifying after each pass when ``TESSERA_DEBUG=1``)."""
    debug = os.environ.get("TESSERA_DEBUG") == "1"
    for p in PIPELINE:
        graph = p(graph)
        if debug:
            graph.verify()
    return graph
