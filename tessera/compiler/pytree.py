"""Flattening nested lists/tuples/dicts of tensors (arguments and results of jitted functions).

Example:
    >>> from tessera.compiler import pytree
    >>> leaves, tree = pytree.flatten({"a": [1, 2], "b": (3,)})
    >>> leaves, pytree.unflatten(tree, [x * 10 for x in leaves])
    ([1, 2, 3], {'a': [10, 20], 'b': (30,)})
"""
from __future__ import annotations

import inspect
from typing import Any, List, Tuple


def flatten(obj) -> Tuple[List[Any], tuple]:
    leaves: List[Any] = []

    def walk(x):
        if isinstance(x, tuple) and not hasattr(x, "_fields"):
            return ("tuple", tuple(walk(v) for v in x))
        if isinstance(x, list):
            return ("list", tuple(walk(v) for v in x))
        if isinstance(x, dict):
            keys = tuple(x.keys())
            return ("dict", keys, tuple(walk(x[k]) for k in keys))
        leaves.append(x)
        return ("leaf",)

    return leaves, walk(obj)


def unflatten(tree: tuple, leaves) -> Any:
    it = iter(leaves)

    def build(t):
        kind = t[0]
        if kind == "leaf":
            return next(it)
        if kind == "tuple":
            return tuple(build(c) for c in t[1])
        if kind == "list":
            return [build(c) for c in t[1]]
        return {k: build(c) for k, c in zip(t[1], t[2])}

    return build(tree)


def paths(args, kwargs, fn=None) -> List[Tuple[tuple, Any]]:
    """(path, leaf) for every leaf of ``(args, kwargs)`` in flatten order; a path starts with the
    parameter's name when ``fn``'s signature tells it."""
    try:
        params = list(inspect.signature(fn).parameters) if fn is not None else []
    except (TypeError, ValueError):
        params = []
    out: List[Tuple[tuple, Any]] = []

    def walk(x, path):
        if isinstance(x, (tuple, list)) and not hasattr(x, "_fields"):
            for i, v in enumerate(x):
                walk(v, path + (i,))
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(v, path + (k,))
        else:
            out.append((path, x))

    for i, a in enumerate(args):
        walk(a, (params[i] if i < len(params) else f"arg{i}",))
    for k, v in kwargs.items():
        walk(v, (k,))
    return out
