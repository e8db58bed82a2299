"""Reverse-mode autodiff over the tape that dispatch records.

Two forms, both spelled ``ts.grad``:

* ``ts.grad(loss, wrt)`` inside a ``@ts.function`` (the tape is on there): the gradient
  of the scalar ``loss`` with respect to a tensor, or a list/tuple/dict of tensors.
* ``ts.grad(f, argnums=0)`` / ``ts.value_and_grad(f, argnums=0)``: transforms that
  return a new function; they compose with ``ts.jit``.

VJPs are written with Tessera ops, so the backward pass is itself recorded when a tape
is on (higher derivatives) and traced under ``ts.jit``.

Example:
    >>> import tessera as ts
    >>> with ts.device("cpu"):
    ...     g = ts.grad(lambda x: (x * x).sum())(ts.arange(3, dtype=ts.f32))
    >>> g.tolist()
    [0.0, 2.0, 4.0]
"""
from __future__ import annotations

import contextvars
import functools
from typing import Callable, Sequence, Union

from ..errors import TesseraAutodiffError, TesseraTypeError
from .dispatch import tape_state
from .tensor import Tensor


class recording:
    """Context manager that turns the tape on (nestable)."""

    def __enter__(self):
        tape_state.depth += 1
        return self

    def __exit__(self, *exc):
        tape_state.depth -= 1


def _toposort(root: Tensor, stop: set):
    """Tape nodes reachable from ``root`` (not past the tensors in ``stop``), consumers first."""
    order, seen = [], set()
    stack = [(root._producer[0], False)] if root._producer else []
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for x in node.inputs:
            p = getattr(x, "_producer", None)
            if p is not None and id(p[0]) not in seen and id(x) not in stop:
                stack.append((p[0], False))
    order.reverse()
    return order


_needed: contextvars.ContextVar = contextvars.ContextVar("tessera_vjp_needed", default=None)


def needs_cotangent(i: int) -> bool:
    """Inside a primitive's ``vjp``: whether input ``i``'s cotangent can reach a tensor that
    ``ts.grad`` was asked about (a vjp may return None for the others and skip their work).

    Example:
        >>> needs_cotangent(0)  # outside a backward pass every input counts
        True
    """
    needed = _needed.get()
    return needed is None or needed[i]


def _relevance(order, wrt_ids: set):
    """For each node (producers before consumers in ``order``), which of its inputs lead to ``wrt``."""
    leads = set(wrt_ids)  # ids of tensors on a path to a wrt tensor
    needed = {}
    for node in order:
        flags = tuple(isinstance(x, Tensor) and id(x) in leads for x in node.inputs)
        needed[id(node)] = flags
        if any(flags):
            for i, o in enumerate(node.outputs):
                o = node.output(i)
                if o is not None:
                    leads.add(id(o))
    return needed


def backward(loss: Tensor, wrt: Sequence[Tensor]):
    """Cotangents of ``wrt`` for a scalar ``loss`` (zeros for tensors it does not depend on)."""
    from ..ops import api

    if not isinstance(loss, Tensor):
        raise TesseraTypeError(f"ts.grad: loss must be a tensor, got {type(loss).__name__}")
    if loss.ndim != 0 and loss.numel() != 1:
        raise TesseraAutodiffError(
            f"ts.grad: the loss must be a scalar, but it has shape {tuple(loss.shape)}; "
            "reduce it first, e.g. loss.mean() or loss.sum()")
    if not loss.dtype.is_floating:
        raise TesseraAutodiffError(f"ts.grad: the loss has dtype {loss.dtype.name}; gradients need a float loss")
    if loss._producer is None and not any(w is loss for w in wrt):
        raise TesseraAutodiffError(
            "ts.grad(loss, wrt): no tape recorded how the loss was computed. Compute it inside a "
            "@ts.function (which records a tape), or use the transform form ts.grad(f)(*args).")
    cts = {id(loss): (loss, api.ones_like(loss))}
    wrt_ids = {id(w) for w in wrt}
    order = _toposort(loss, wrt_ids)
    needed = _relevance(reversed(order), wrt_ids)
    for node in order:
        outs = [node.output(i) for i in range(len(node.outputs))]
        out_cts = [cts.pop(id(o), (None, None))[1] if o is not None else None for o in outs]
        if all(c is None for c in out_cts) or not any(needed[id(node)]):
            continue  # no cotangent arrives, or none of its inputs leads to wrt
        token = _needed.set(needed[id(node)])
        try:
            in_cts = node.prim.vjp(out_cts, node.inputs, outs, **node.attrs)
        finally:
            _needed.reset(token)
        for x, ct in zip(node.inputs, in_cts):
            if ct is None or not isinstance(x, Tensor) or not x.dtype.is_floating:
                continue
            if ct.dtype != x.dtype:
                ct = ct.to(x.dtype)
            prev = cts.get(id(x))
            cts[id(x)] = (x, ct if prev is None else prev[1] + ct)
    return [cts[id(w)][1] if id(w) in cts else api.zeros_like(w) for w in wrt]


def vjp_by_decomposition(prim, cts, ins, attrs):
    """Input cotangents of ``prim`` by differentiating its ``decompose`` (Tessera ops) on the tape."""
    from ..ops import api

    aliases = [Tensor._from_torch(x._data, x._dtype) if type(x) is Tensor else x for x in ins]
    with recording():
        outs = prim.decompose(*aliases, **attrs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        total = None
        for y, ct in zip(outs, cts):
            if y is None or ct is None:
                continue
            term = api.sum(y * ct.to(y.dtype))
            total = term if total is None else total + term
    wrt = [x for i, x in enumerate(aliases) if isinstance(x, Tensor) and x.dtype.is_floating and needs_cotangent(i)]
    if total is None or not wrt:
        return tuple(None for _ in ins)
    grads = dict(zip(map(id, wrt), backward(total, wrt)))
    return tuple(grads.get(id(x)) for x in aliases)


def _flatten_wrt(wrt):
    from ..compiler import pytree

    if not isinstance(wrt, (Tensor, list, tuple, dict)):
        raise TesseraTypeError(f"ts.grad: wrt must be a tensor or a list/tuple/dict of tensors, got {type(wrt).__name__}")
    leaves, tree = pytree.flatten(wrt)
    return leaves, lambda gs: pytree.unflatten(tree, gs)


def grad_of(loss: Tensor, wrt):
    """``ts.grad(loss, wrt)``: the gradient of ``loss`` with respect to ``wrt`` (same structure)."""
    items, rebuild = _flatten_wrt(wrt)
    for i, w in enumerate(items):
        if not isinstance(w, Tensor):
            raise TesseraTypeError(f"ts.grad: wrt item {i} is a {type(w).__name__}, not a tensor")
        if not w.dtype.is_floating:
            raise TesseraAutodiffError(f"ts.grad: wrt item {i} has dtype {w.dtype.name}; only float tensors have gradients")
    return rebuild(backward(loss, items))


def _argnums_tuple(argnums):
    return (argnums,) if isinstance(argnums, int) else tuple(argnums)


def value_and_grad(f: Callable, argnums: Union[int, Sequence[int]] = 0, has_aux: bool = False):
    """A function returning ``(f(*args), gradient of f w.r.t. args[argnums])``.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     v, g = ts.value_and_grad(lambda x: (x ** 2).sum())(ts.ones(2))
        >>> float(v), g.tolist()
        (2.0, [2.0, 2.0])
    """
    nums = _argnums_tuple(argnums)

    @functools.wraps(f)
    def wrapped(*args, **kwargs):
        for n in nums:
            if n >= len(args):
                raise TesseraTypeError(f"ts.grad({getattr(f, '__name__', 'f')}): argnums {n} but only {len(args)} positional arguments")
        with recording():
            out = f(*args, **kwargs)
            value, aux = (out if has_aux else (out, None))
            grads = grad_of(value, tuple(args[n] for n in nums))
        g = grads[0] if isinstance(argnums, int) else grads
        if tape_state.depth == 0:
            _detach((value, aux, g))
        return ((value, aux), g) if has_aux else (value, g)

    return wrapped


def grad(f_or_loss, wrt=None, *, argnums: Union[int, Sequence[int]] = 0, has_aux: bool = False):
    """Gradients: ``ts.grad(loss, wrt)`` on the tape, or ``ts.grad(f, argnums=0)`` as a transform.

    Example:
        >>> import tessera as ts
        >>> @ts.function
        ... def step(w):
        ...     loss = (w * w).sum()
        ...     return ts.grad(loss, w)
        >>> with ts.device("cpu"):
        ...     step(ts.ones(3)).tolist()
        [2.0, 2.0, 2.0]
    """
    if callable(f_or_loss) and not isinstance(f_or_loss, Tensor):
        if wrt is not None:
            raise TesseraTypeError("ts.grad(f, ...): pass argnums=..., not a second positional argument")
        vg = value_and_grad(f_or_loss, argnums, has_aux)

        @functools.wraps(f_or_loss)
        def grad_f(*args, **kwargs):
            (value, aux), g = vg(*args, **kwargs) if has_aux else ((None, None), vg(*args, **kwargs)[1])
            return (g, aux) if has_aux else g

        return grad_f
    if wrt is None:
        raise TesseraTypeError("ts.grad(loss, wrt): say which tensors to differentiate with respect to")
    return grad_of(f_or_loss, wrt)


def _detach(tree) -> None:
    """Drop tape links from returned tensors so that the tape's intermediates can be freed."""
    if isinstance(tree, Tensor):
        tree._producer = None
    elif isinstance(tree, (list, tuple)):
        for t in tree:
            _detach(t)
    elif isinstance(tree, dict):
        for t in tree.values():
            _detach(t)
