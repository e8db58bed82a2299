"""Layout primitives: reshape, permute, broadcast, slice, take (gather), concatenate.

Shapes given to these ops may hold symbolic dims while tracing (``x.reshape(B, S, H, D // H)``).

Example:
    >>> import tessera as ts
    >>> with ts.device("cpu"):
    ...     x = ts.arange(24, dtype=ts.f32).reshape(2, 3, 4)
    ...     x.transpose(0, 2).shape, x[..., 1].shape, ts.cat([x, x], dim=1).shape
    ((4, 3, 2), (2, 3), (2, 6, 4))
"""
from __future__ import annotations

import builtins
from typing import Sequence

import torch

from ..core.dispatch import bind
from ..core.primitive import Aval, Primitive
from ..core.tensor import Tensor
from ..errors import TesseraError, TesseraShapeError, TesseraTypeError
from ..types.dims import Dim
from .rules import broadcast_shapes, dims_product, normalize_axis, shape_str


def _ints(dims):
    return tuple(int(d) for d in dims)


# ------------------------------------------------------------------------ reshape
class Reshape(Primitive):
    name = "reshape"
    attrs = (("shape", ()),)

    def shape(self, x, *, shape):
        if any(isinstance(d, int) and d == -1 for d in shape):  # eager calls leave -1 for torch to infer
            known = dims_product([d for d in shape if not (isinstance(d, int) and d == -1)])
            total = dims_product(x.shape)
            if known == 0 or not (total % known == 0):
                raise TesseraShapeError(f"reshape: cannot reshape a tensor of shape {shape_str(x.shape)} ({total} "
                                        f"elements) to {tuple(shape)}: {total} is not a multiple of {known}, the "
                                        "product of the other sizes")
            shape = tuple(total // known if (isinstance(d, int) and d == -1) else d for d in shape)
        new = tuple(Dim.of(d) for d in shape)
        if not (dims_product(new) == dims_product(x.shape)):
            raise TesseraShapeError(f"reshape: cannot reshape a tensor of shape {shape_str(x.shape)} "
                                    f"({dims_product(x.shape)} elements) to {shape_str(new)} ({dims_product(new)} elements)")
        return Aval(new, x.dtype)

    def reference(self, x, *, shape):
        return x.reshape(_ints(shape))

    def vjp(self, cts, ins, outs, *, shape):
        return (cts[0].reshape(*ins[0].shape),)


RESHAPE = Reshape()


def _shape_args(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def reshape(x, *shape):
    """Reshape ``x``; one entry may be -1 (inferred). Symbolic dims are welcome.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     ts.reshape(ts.ones(2, 6), 3, -1).shape
        (3, 4)
    """
    shape = _shape_args(shape)
    if type(x) is Tensor:
        if shape == x.shape:
            return x
        if all(type(d) is int and d >= -1 for d in shape) and shape.count(-1) <= 1:
            return bind(RESHAPE, x, shape=shape)  # eager: torch infers -1 and checks the size
    for d in shape:
        if not isinstance(d, (int, Dim)) or isinstance(d, bool):
            raise TesseraTypeError(f"reshape: sizes must be ints (or symbolic dims), got {d!r}")
    if builtins.sum(1 for d in shape if isinstance(d, int) and d == -1) > 1:
        raise TesseraShapeError("reshape: at most one size may be -1")
    if any(isinstance(d, int) and d == -1 for d in shape):
        known = dims_product([d for d in shape if not (isinstance(d, int) and d == -1)])
        total = dims_product(x.shape)
        if known == 0:
            raise TesseraShapeError(f"reshape: cannot infer -1 in {shape} with a zero-sized dim")
        inferred = total // known
        shape = tuple(inferred if (isinstance(d, int) and d == -1) else d for d in shape)
    if tuple(shape) == tuple(x.shape) and all(isinstance(d, int) for d in shape):
        return x
    return bind(RESHAPE, x, shape=tuple(shape))


# ------------------------------------------------------------------------ permute
class Permute(Primitive):
    name = "permute"
    attrs = (("perm", ()),)

    def shape(self, x, *, perm):
        if sorted(perm) != list(range(x.ndim)):
            raise TesseraShapeError(f"permute: {perm} is not a permutation of the {x.ndim} dims of a "
                                    f"tensor of shape {shape_str(x.shape)}")
        return Aval(tuple(x.shape[p] for p in perm), x.dtype)

    def reference(self, x, *, perm):
        return x.permute(perm)

    def vjp(self, cts, ins, outs, *, perm):
        inverse = [0] * len(perm)
        for i, p in enumerate(perm):
            inverse[p] = i
        return (permute(cts[0], *inverse),)


PERMUTE = Permute()


def permute(x, *dims):
    """Reorder dims: ``x.permute(0, 2, 1, 3)``.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     x = ts.zeros(2, 3, 4)
        >>> ts.permute(x, 2, 0, 1).shape, x.permute(0, 2, 1).shape
        ((4, 2, 3), (2, 4, 3))
    """
    dims = _shape_args(dims)
    n = x.ndim
    if all(type(d) is int and 0 <= d < n for d in dims):
        dims = tuple(dims)
    else:
        dims = tuple(normalize_axis("permute", d, n) for d in dims)
    if dims == tuple(range(n)):
        return x
    return bind(PERMUTE, x, perm=dims)


def transpose(x, dim0=None, dim1=None):
    """Swap ``dim0`` and ``dim1``; with neither given, reverse every dim (``w.transpose()``).

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     ts.ones(2, 3, 4).transpose(1, 2).shape, ts.ones(2, 3).transpose().shape
        ((2, 4, 3), (3, 2))
    """
    if dim0 is None and dim1 is None:
        n = x.ndim
        return x if n < 2 else bind(PERMUTE, x, perm=tuple(range(n - 1, -1, -1)))
    if dim0 is None or dim1 is None:
        raise TesseraTypeError("transpose: give both dims (x.transpose(1, 2)) or neither (reverse all)")
    n = x.ndim
    a, b = normalize_axis("transpose", dim0, n), normalize_axis("transpose", dim1, n)
    if a == b:
        return x
    perm = list(range(n))
    perm[a], perm[b] = b, a
    return bind(PERMUTE, x, perm=tuple(perm))


class Contiguous(Primitive):
    name = "contiguous"

    def shape(self, x):
        return x

    def reference(self, x):
        return x.contiguous()

    def vjp(self, cts, ins, outs):
        return (cts[0],)


CONTIGUOUS = Contiguous()


def contiguous(x):
    """A row-major copy of ``x`` (a no-op when it already is)."""
    return bind(CONTIGUOUS, x)


# ------------------------------------------------------------------------ broadcast
class BroadcastTo(Primitive):
    name = "broadcast_to"
    attrs = (("shape", ()),)

    def shape(self, x, *, shape):
        shape = tuple(Dim.of(d) for d in shape)
        out = broadcast_shapes("broadcast_to", x.shape, shape, names=("x", "target"))
        if len(out) != len(shape) or not all(a == b for a, b in zip(out, shape)):
            raise TesseraShapeError(f"broadcast_to: shape {shape_str(x.shape)} cannot broadcast to {shape_str(shape)}")
        return Aval(shape, x.dtype)

    def reference(self, x, *, shape):
        return x.expand(_ints(shape))

    def vjp(self, cts, ins, outs, *, shape):
        from .elementwise import unbroadcast

        return (unbroadcast(cts[0], ins[0].shape),)


BROADCAST_TO = BroadcastTo()


def broadcast_to(x, *shape):
    """Broadcast ``x`` to ``shape`` (NumPy rules)."""
    shape = _shape_args(shape)
    if tuple(shape) == tuple(x.shape):
        return x
    return bind(BROADCAST_TO, x, shape=tuple(shape))


def expand_dims(x, dim: int):
    """Insert a size-1 dim at ``dim``."""
    dim = normalize_axis("unsqueeze", dim, x.ndim + 1)
    shape = list(x.shape)
    shape.insert(dim, 1)
    return bind(RESHAPE, x, shape=tuple(shape))


def squeeze(x, dim=None):
    """Remove size-1 dims (all of them, or the one at ``dim``)."""
    if dim is None:
        shape = [d for d in x.shape if not (d == 1)]
    else:
        dim = normalize_axis("squeeze", dim, x.ndim)
        if not (x.shape[dim] == 1):
            raise TesseraShapeError(f"squeeze: dim {dim} has size {x.shape[dim]}, not 1")
        shape = [d for i, d in enumerate(x.shape) if i != dim]
    return bind(RESHAPE, x, shape=tuple(shape)) if len(shape) != x.ndim else x


def flatten(x, start_dim: int = 0, end_dim: int = -1):
    """Merge dims ``start_dim..end_dim`` into one."""
    if x.ndim == 0:
        return reshape(x, 1)
    s, e = normalize_axis("flatten", start_dim, x.ndim), normalize_axis("flatten", end_dim, x.ndim)
    shape = list(x.shape[:s]) + [dims_product(x.shape[s:e + 1])] + list(x.shape[e + 1:])
    return reshape(x, *shape)


# ------------------------------------------------------------------------ slice
class Slice(Primitive):
    name = "slice"
    attrs = (("starts", ()), ("stops", ()), ("steps", ()))

    def shape(self, x, *, starts, stops, steps):
        out = []
        for d, a, b, s in zip(x.shape, starts, stops, steps):
            n = (Dim.of(b) - Dim.of(a) + (s - 1)) // s
            out.append(n)
        return Aval(tuple(out), x.dtype)

    def reference(self, x, *, starts, stops, steps):
        return x[tuple(builtins.slice(int(a), int(b), int(s)) for a, b, s in zip(starts, stops, steps))]

    def vjp(self, cts, ins, outs, *, starts, stops, steps):
        return (bind(SLICE_GRAD, cts[0], shape=tuple(ins[0].shape), starts=starts, stops=stops, steps=steps),)


class SliceGrad(Primitive):
    """Scatter a slice's cotangent into zeros of the original shape."""

    name = "slice_grad"
    attrs = (("shape", ()), ("starts", ()), ("stops", ()), ("steps", ()))

    def shape(self, ct, *, shape, starts, stops, steps):
        return Aval(tuple(Dim.of(d) for d in shape), ct.dtype)

    def reference(self, ct, *, shape, starts, stops, steps):
        out = ct.new_zeros(_ints(shape))
        out[tuple(builtins.slice(int(a), int(b), int(s)) for a, b, s in zip(starts, stops, steps))] = ct
        return out

    def vjp(self, cts, ins, outs, *, shape, starts, stops, steps):
        return (bind(SLICE, cts[0], starts=starts, stops=stops, steps=steps),)


SLICE, SLICE_GRAD = Slice(), SliceGrad()


def _clamp(v, lo, hi):
    if v < lo:
        return lo
    if v > hi:
        return hi
    return v


def _normalize_slice(s: builtins.slice, size):
    step = 1 if s.step is None else s.step
    if not isinstance(step, int) or step <= 0:
        raise TesseraShapeError(f"slicing: step must be a positive int, got {s.step!r}")
    start = 0 if s.start is None else s.start
    stop = size if s.stop is None else s.stop
    if isinstance(start, int) and start < 0:
        start = start + size
    if isinstance(stop, int) and stop < 0:
        stop = stop + size
    start = _clamp(start, 0, size)
    stop = _clamp(stop, start, size)
    return start, stop, step


def _same(a, b) -> bool:
    """Equal as written (no guard is taken under tracing)."""
    if isinstance(a, Dim) or isinstance(b, Dim):
        return Dim.of(a).terms == Dim.of(b).terms
    return a == b


def slice_dims(x, slices):
    """Slice every dim of ``x`` by a Python slice (one per dim)."""
    starts, stops, steps = [], [], []
    trivial = True
    for s, size in zip(slices, x.shape):
        a, b, st = _normalize_slice(s, size)
        trivial = trivial and _same(a, 0) and _same(b, size) and st == 1
        starts.append(a)
        stops.append(b)
        steps.append(st)
    if trivial:
        return x
    return bind(SLICE, x, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))


# ------------------------------------------------------------------------ take / gather
class Take(Primitive):
    name = "take"
    attrs = (("axis", 0),)

    def shape(self, x, idx, *, axis):
        if idx.dtype.kind not in ("int", "uint"):
            from ..errors import TesseraDTypeError

            raise TesseraDTypeError(f"take: indices must be integers, got {idx.dtype.name}; use idx.to(ts.int64)")
        return Aval(tuple(x.shape[:axis]) + tuple(idx.shape) + tuple(x.shape[axis + 1:]), x.dtype)

    def reference(self, x, idx, *, axis):
        flat = torch.index_select(x, axis, idx.reshape(-1).to(torch.int64))
        return flat.reshape(x.shape[:axis] + idx.shape + x.shape[axis + 1:])

    def vjp(self, cts, ins, outs, *, axis):
        x, idx = ins
        return (bind(TAKE_GRAD, cts[0], idx, axis=axis, size=x.shape[axis]), None)


class TakeGrad(Primitive):
    """Sum a take's cotangent back into the rows it came from (deterministic scatter-add)."""

    name = "take_grad"
    attrs = (("axis", 0), ("size", 0))

    def shape(self, ct, idx, *, axis, size):
        k = len(idx.shape)
        return Aval(tuple(ct.shape[:axis]) + (Dim.of(size),) + tuple(ct.shape[axis + k:]), ct.dtype)

    def reference(self, ct, idx, *, axis, size):
        k = idx.dim()
        flat_shape = ct.shape[:axis] + (idx.numel(),) + ct.shape[axis + k:]
        out_shape = ct.shape[:axis] + (int(size),) + ct.shape[axis + k:]
        out = torch.zeros(out_shape, dtype=torch.float32 if ct.dtype in (torch.float16, torch.bfloat16) else ct.dtype,
                          device=ct.device)
        out.index_add_(axis, idx.reshape(-1).to(torch.int64), ct.reshape(flat_shape).to(out.dtype))
        return out.to(ct.dtype)

    def vjp(self, cts, ins, outs, *, axis, size):
        return (bind(TAKE, cts[0], ins[1], axis=axis), None)


TAKE, TAKE_GRAD = Take(), TakeGrad()


def take(x, indices, dim: int = 0):
    """Gather slices of ``x`` along ``dim`` at integer ``indices`` (any shape).

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     table = ts.arange(6, dtype=ts.f32).reshape(3, 2)
        ...     ts.take(table, ts.tensor([2, 0]), 0).tolist()
        [[4.0, 5.0], [0.0, 1.0]]
    """
    return bind(TAKE, x, indices, axis=normalize_axis("take", dim, x.ndim))


# ------------------------------------------------------------------------ concatenate
class Concatenate(Primitive):
    name = "concatenate"
    attrs = (("axis", 0),)

    def shape(self, *xs, axis):
        first = xs[0]
        for i, x in enumerate(xs[1:], 1):
            if x.ndim != first.ndim or not all(a == b for k, (a, b) in enumerate(zip(x.shape, first.shape)) if k != axis):
                raise TesseraShapeError(f"cat: tensor {i} has shape {shape_str(x.shape)} but tensor 0 has "
                                        f"{shape_str(first.shape)}; all dims but dim {axis} must match")
            if x.dtype.storage != first.dtype.storage:
                from ..errors import TesseraDTypeError

                raise TesseraDTypeError(f"cat: tensor {i} is {x.dtype.name} but tensor 0 is {first.dtype.name}; convert with .to()")
        total = Dim.const(0)
        for x in xs:
            total = total + Dim.of(x.shape[axis])
        return Aval(tuple(total if k == axis else d for k, d in enumerate(first.shape)), first.dtype)

    def reference(self, *xs, axis):
        return torch.cat(xs, dim=axis)

    def vjp(self, cts, ins, outs, *, axis):
        ct = cts[0]
        grads, start = [], Dim.const(0)
        for x in ins:
            stop = start + Dim.of(x.shape[axis])
            sl = [builtins.slice(None)] * x.ndim
            sl[axis] = builtins.slice(_plain(start), _plain(stop))
            grads.append(ct[tuple(sl)])
            start = stop
        return tuple(grads)


CONCATENATE = Concatenate()


def _plain(d):
    return d.constant_value if isinstance(d, Dim) and d.is_constant else d


def cat(tensors: Sequence, dim: int = 0):
    """Concatenate tensors along ``dim``.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     ts.cat([ts.ones(1, 2), ts.zeros(2, 2)], dim=0).shape
        (3, 2)
    """
    tensors = list(tensors)
    if not tensors:
        raise TesseraShapeError("cat: needs at least one tensor")
    if len(tensors) == 1:
        return tensors[0]
    return bind(CONCATENATE, *tensors, axis=normalize_axis("cat", dim, tensors[0].ndim))


def stack(tensors: Sequence, dim: int = 0):
    """Stack tensors of one shape along a new dim ``dim``.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     ts.stack([ts.ones(3), ts.zeros(3)], dim=1).tolist()
        [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]
    """
    tensors = list(tensors)
    if not tensors:
        raise TesseraShapeError("stack: needs at least one tensor")
    dim = normalize_axis("stack", dim, tensors[0].ndim + 1)
    return cat([expand_dims(t, dim) for t in tensors], dim=dim)


def split(x, sections=None, dim: int = -1, *, split_size=None):
    """Split ``x`` along ``dim`` into ``sections`` equal parts (an int) or parts of the given sizes (a list).

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     q, k, v = ts.split(ts.ones(2, 12), dim=-1, sections=3)
        >>> q.shape
        (2, 4)
    """
    if sections is None:
        raise TesseraTypeError("split: give sections= (a count or a list of sizes)")
    dim = normalize_axis("split", dim, x.ndim)
    size = x.shape[dim]
    if isinstance(sections, int):
        if sections <= 0:
            raise TesseraShapeError(f"split: sections must be positive, got {sections}")
        part = Dim.of(size) // sections
        if not (part * sections == Dim.of(size)):
            raise TesseraShapeError(f"split: dim {dim} has size {size}, which does not divide into {sections} equal "
                                    "sections; pass a list of sizes instead")
        sizes = [part] * sections
    else:
        sizes = [Dim.of(s) for s in sections]
        if not (dims_sum(sizes) == Dim.of(size)):
            raise TesseraShapeError(f"split: sizes {list(sections)} add up to {dims_sum(sizes)}, not to the size {size} of dim {dim}")
    out, start = [], Dim.const(0)
    for s in sizes:
        sl = [builtins.slice(None)] * x.ndim
        sl[dim] = builtins.slice(_plain(start), _plain(start + s))
        out.append(x[tuple(sl)])
        start = start + s
    return tuple(out)


def dims_sum(dims) -> Dim:
    total = Dim.const(0)
    for d in dims:
        total = total + Dim.of(d)
    return total


# ------------------------------------------------------------------------ indexing
class BasicIndex(Primitive):
    """``x[index]`` with ints, slices, ``...`` and ``None`` on a concrete tensor (the eager fast path;
    tracing lowers indexing to ``slice``/``reshape`` instead)."""

    name = "basic_index"
    attrs = (("index", ()),)

    def shape(self, x, *, index):
        out = torch.empty(tuple(int(d) for d in x.shape), device="meta")[index].shape
        return Aval(tuple(Dim.const(d) for d in out), x.dtype)

    def reference(self, x, *, index):
        return x[index]

    def vjp(self, cts, ins, outs, *, index):
        return (bind(BASIC_INDEX_GRAD, cts[0], shape=tuple(ins[0].shape), index=index),)


class BasicIndexGrad(Primitive):
    name = "basic_index_grad"
    attrs = (("shape", ()), ("index", ()))

    def shape(self, ct, *, shape, index):
        return Aval(tuple(Dim.of(d) for d in shape), ct.dtype)

    def reference(self, ct, *, shape, index):
        out = ct.new_zeros(_ints(shape))
        out[index] = ct
        return out

    def vjp(self, cts, ins, outs, *, shape, index):
        return (bind(BASIC_INDEX, cts[0], index=index),)


BASIC_INDEX, BASIC_INDEX_GRAD = BasicIndex(), BasicIndexGrad()
_BASIC = (int, builtins.slice, type(Ellipsis), type(None))


def _is_basic(index) -> bool:
    for i in index:
        if isinstance(i, bool) or not isinstance(i, _BASIC):
            return False
        if isinstance(i, builtins.slice) and not all(v is None or (isinstance(v, int) and not isinstance(v, bool))
                                                   for v in (i.start, i.stop, i.step)):
            return False
        if isinstance(i, builtins.slice) and i.step is not None and i.step <= 0:
            return False
    return True


def getitem(x, index):
    """``x[index]`` for ints, slices, ``...``, ``None`` and one integer tensor."""
    if not isinstance(index, tuple):
        index = (index,)
    if type(x) is Tensor and _is_basic(index):
        try:
            return bind(BASIC_INDEX, x, index=index)
        except TesseraError:
            pass  # the general path below reports the mistake precisely
    return _general_index(x, index)


def _general_index(x, index):
    n_real = builtins.sum(1 for i in index if i is not None and i is not Ellipsis)
    if builtins.sum(1 for i in index if i is Ellipsis) > 1:
        raise TesseraShapeError("indexing: at most one '...' is allowed")
    if n_real > x.ndim:
        raise TesseraShapeError(f"indexing: too many indices ({n_real}) for a tensor of rank {x.ndim}")
    expanded = []
    for i in index:
        if i is Ellipsis:
            expanded.extend([builtins.slice(None)] * (x.ndim - n_real))
        else:
            expanded.append(i)
    tensor_idx = [(k, i) for k, i in enumerate(expanded) if isinstance(i, Tensor)]
    if len(tensor_idx) > 1:
        raise TesseraShapeError("indexing: at most one tensor index is supported; use ts.take for the rest")
    slices, squeeze_dims, insert_dims, dim = [], [], [], 0
    for k, i in enumerate(expanded):
        if i is None:
            insert_dims.append(k)
            continue
        size = x.shape[dim]
        if isinstance(i, Tensor):
            slices.append(builtins.slice(None))
        elif isinstance(i, builtins.slice):
            slices.append(i)
        elif isinstance(i, (int, Dim)) and not isinstance(i, bool):
            j = i
            if isinstance(j, int):
                if not -size <= j < size:
                    raise TesseraShapeError(f"indexing: index {i} is out of range for dim {dim} of size {size}")
                j = j + size if j < 0 else j
            slices.append(builtins.slice(j, j + 1))
            squeeze_dims.append(dim)
        else:
            raise TesseraTypeError(f"indexing: unsupported index {i!r}; use ints, slices, ..., None or an int tensor")
        dim += 1
    slices.extend([builtins.slice(None)] * (x.ndim - len(slices)))
    out = slice_dims(x, slices)
    if squeeze_dims:
        out = bind(RESHAPE, out, shape=tuple(d for k, d in enumerate(out.shape) if k not in squeeze_dims))
    if tensor_idx:
        pos = tensor_idx[0][0] - builtins.sum(1 for j in range(tensor_idx[0][0]) if expanded[j] is None)
        pos -= builtins.sum(1 for s in squeeze_dims if s < pos)
        out = take(out, tensor_idx[0][1], pos)
    for k in insert_dims:
        out = expand_dims(out, k)
    return out
