"""Creating tensors: zeros, ones, full, arange, empty, random, and ``*_like``.

Shapes may be given as ``ts.zeros(2, 3)`` or ``ts.zeros((2, 3))``; dtypes default to
f32 for floats (``randint`` to int32, as the seed's training example expects).

Example:
    >>> import tessera as ts
    >>> with ts.device("cpu"):
    ...     ts.manual_seed(0)
    ...     x = ts.randn(2, 3, dtype=ts.bf16)
    ...     ts.zeros_like(x).dtype, ts.randint(0, 10, (4,)).dtype, ts.full((2,), 7.0).tolist()
    (bf16, int32, [7.0, 7.0])
"""
from __future__ import annotations

import torch

from .. import dtypes as dt
from ..core.device import torch_device
from ..core.dispatch import bind
from ..core.primitive import Aval, Primitive
from ..core.tensor import Tensor
from ..errors import TesseraTraceError, TesseraTypeError, TesseraValueError
from ..types.dims import Dim, has_symbolic


def _shape(args, fn: str):
    shape = tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else tuple(args)
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, (int, Dim)):
            raise TesseraTypeError(f"ts.{fn}: sizes must be ints, got {d!r}")
        if isinstance(d, int) and d < 0:
            raise TesseraValueError(f"ts.{fn}: size {d} is negative")
    return shape


def _concrete(shape):
    return tuple(int(d) for d in shape)


class Full(Primitive):
    """A tensor filled with one value (the creation op that tracing records)."""

    name = "full"
    attrs = (("shape", ()), ("value", 0.0), ("dtype", dt.f32), ("device", "cpu"))
    differentiable = False
    nullary = True

    def shape(self, *, shape, value, dtype, device):
        return Aval(tuple(Dim.of(d) for d in shape), dtype)

    def reference(self, *, shape, value, dtype, device):
        return torch.full(_concrete(shape), value, dtype=dtype.torch_dtype, device=device)


class DimValue(Primitive):
    """A 0-d tensor holding a (possibly symbolic) size, e.g. the divisor of a mean under tracing."""

    name = "dim_value"
    attrs = (("dim", 0), ("dtype", dt.f32), ("device", "cpu"))
    differentiable = False
    nullary = True

    def shape(self, *, dim, dtype, device):
        return Aval((), dtype)

    def reference(self, *, dim, dtype, device):
        return torch.tensor(int(dim), dtype=dtype.torch_dtype, device=device)


class Arange(Primitive):
    """``start, start+step, ...`` below ``stop`` (traceable with a symbolic ``stop``)."""

    name = "arange"
    attrs = (("start", 0), ("stop", 0), ("step", 1), ("dtype", dt.int64), ("device", "cpu"))
    differentiable = False
    nullary = True

    def shape(self, *, start, stop, step, dtype, device):
        return Aval(((Dim.of(stop) - Dim.of(start) + (step - 1)) // step,), dtype)

    def reference(self, *, start, stop, step, dtype, device):
        return torch.arange(int(start), int(stop), step, dtype=dtype.torch_dtype, device=device)


FULL, DIM_VALUE, ARANGE = Full(), DimValue(), Arange()


def dim_value(dim, dtype=dt.f32, device=None):
    from ..core.device import default_device

    return bind(DIM_VALUE, dim=dim, dtype=dtype, device=str(torch_device(device) if device else default_device()))


def _dtype(dtype, default):
    d = default if dtype is None else dt.as_dtype(dtype)
    if d.torch_dtype is None:
        raise TesseraTypeError(f"cannot create {d.name} tensors directly; create f32 and convert with .to(ts.{d.name})")
    return d


def full(*shape, fill_value=None, dtype=None, device=None):
    """A tensor of ``shape`` filled with ``fill_value``: ``ts.full((2, 3), 1.5)``.

    The dtype follows the value (bool, int64 or f32) unless ``dtype`` is given.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     ts.full((2, 2), 1.5).tolist(), ts.full((3,), 7).dtype
        ([[1.5, 1.5], [1.5, 1.5]], int64)
    """
    if fill_value is None and len(shape) == 2 and isinstance(shape[0], (tuple, list)):
        shape, fill_value = (shape[0],), shape[1]
    shape = _shape(shape, "full")
    if fill_value is None:
        raise TesseraTypeError("ts.full: give fill_value (ts.full((2, 3), 1.5))")
    default = dt.bool_ if isinstance(fill_value, bool) else (dt.int64 if isinstance(fill_value, int) else dt.f32)
    d = _dtype(dtype, default)
    dev = torch_device(device)
    if has_symbolic(shape):
        return bind(FULL, shape=shape, value=fill_value, dtype=d, device=str(dev))
    return Tensor._from_torch(torch.full(_concrete(shape), fill_value, dtype=d.torch_dtype, device=dev), d)


def zeros(*shape, dtype=None, device=None):
    """A tensor of zeros: ``ts.zeros(2, 3, dtype=ts.bf16)``.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     z = ts.zeros(2, 3, dtype=ts.bf16)
        >>> z.shape, z.dtype, z.sum().item()
        ((2, 3), bf16, 0.0)
    """
    return full(_shape(shape, "zeros"), fill_value=0, dtype=_dtype(dtype, dt.f32), device=device)


def ones(*shape, dtype=None, device=None):
    """A tensor of ones: ``ts.ones(2, 3)``.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     ts.ones((2, 3)).tolist()
        [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    return full(_shape(shape, "ones"), fill_value=1, dtype=_dtype(dtype, dt.f32), device=device)


def empty(*shape, dtype=None, device=None):
    """An uninitialised tensor (fast; read nothing before writing).

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     buf = ts.empty(4, 8, dtype=ts.f16)
        >>> buf.shape, buf.dtype
        ((4, 8), f16)
    """
    shape = _shape(shape, "empty")
    if has_symbolic(shape):
        return zeros(shape, dtype=dtype, device=device)
    d = _dtype(dtype, dt.f32)
    return Tensor._from_torch(torch.empty(_concrete(shape), dtype=d.torch_dtype, device=torch_device(device)), d)


def _like(x, dtype, device):
    return dict(dtype=x.dtype if dtype is None else dtype, device=x.device if device is None else device)


def zeros_like(x, dtype=None, device=None):
    """Zeros with ``x``'s shape, dtype and device (unless ``dtype`` or ``device`` is given).

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     z = ts.zeros_like(ts.randn(2, 3, dtype=ts.bf16))
        >>> z.shape, z.dtype, z.abs().max().item()
        ((2, 3), bf16, 0.0)
    """
    return zeros(x.shape, **_like(x, dtype, device))


def ones_like(x, dtype=None, device=None):
    """Ones with ``x``'s shape, dtype and device (unless ``dtype`` or ``device`` is given).

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     ts.ones_like(ts.arange(3)).tolist(), ts.ones_like(ts.arange(3), dtype=ts.f32).dtype
        ([1, 1, 1], f32)
    """
    return ones(x.shape, **_like(x, dtype, device))


def full_like(x, fill_value, dtype=None, device=None):
    """``fill_value`` in ``x``'s shape, dtype and device (unless ``dtype`` or ``device`` is given).

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     ts.full_like(ts.zeros(2, 2), -1.5).tolist()
        [[-1.5, -1.5], [-1.5, -1.5]]
    """
    return full(x.shape, fill_value=fill_value, **_like(x, dtype, device))


def empty_like(x, dtype=None, device=None):
    """An uninitialised tensor like ``x`` (its shape; its dtype and device unless given).

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     e = ts.empty_like(ts.zeros(4, 2), dtype=ts.int32)
        >>> e.shape, e.dtype
        ((4, 2), int32)
    """
    return empty(x.shape, **_like(x, dtype, device))


def arange(start, stop=None, step=1, *, dtype=None, device=None):
    """``ts.arange(5)``, ``ts.arange(2, 10, 3)``; int64 for ints unless ``dtype`` says otherwise.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     ts.arange(5).tolist(), ts.arange(2, 10, 3).tolist(), ts.arange(0, 1, 0.25).dtype
        ([0, 1, 2, 3, 4], [2, 5, 8], f32)
    """
    if stop is None:
        start, stop = 0, start
    default = dt.int64 if all(isinstance(v, (int, Dim)) for v in (start, stop, step)) else dt.f32
    d = _dtype(dtype, default)
    if has_symbolic((start, stop)):
        if not isinstance(step, int) or step <= 0:
            raise TesseraValueError("ts.arange with a symbolic size needs a positive integer step")
        return bind(ARANGE, start=start, stop=stop, step=step, dtype=d, device=str(torch_device(device)))
    start, stop = [int(v) if isinstance(v, Dim) else v for v in (start, stop)]
    return Tensor._from_torch(torch.arange(start, stop, step, dtype=d.torch_dtype, device=torch_device(device)), d)


def _random_shape(shape, fn):
    shape = _shape(shape, fn)
    if has_symbolic(shape):
        raise TesseraTraceError(f"ts.{fn} with symbolic sizes cannot run under ts.jit; create the random tensor "
                                "outside and pass it in as an argument")
    return _concrete(shape)


def randn(*shape, dtype=None, device=None):
    """Standard-normal samples: ``ts.randn(B, S, D, dtype=ts.bf16)`` (seed with ``ts.manual_seed``).

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     ts.manual_seed(0)
        ...     x = ts.randn(2, 3, dtype=ts.bf16)
        >>> x.shape, x.dtype
        ((2, 3), bf16)
    """
    d = _dtype(dtype, dt.f32)
    t = torch.randn(_random_shape(shape, "randn"), dtype=torch.float32 if d.kind != "float" else d.torch_dtype,
                    device=torch_device(device))
    return Tensor._from_torch(t.to(d.torch_dtype), d)


def rand(*shape, dtype=None, device=None):
    """Uniform samples in [0, 1).

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     ts.manual_seed(0)
        ...     u = ts.rand(1000)
        >>> u.shape, 0.0 <= u.min().item() <= u.max().item() < 1.0
        ((1000,), True)
    """
    d = _dtype(dtype, dt.f32)
    t = torch.rand(_random_shape(shape, "rand"), dtype=d.torch_dtype, device=torch_device(device))
    return Tensor._from_torch(t, d)


def randint(low, high=None, size=None, *, dtype=None, device=None):
    """Integers uniform in [low, high): ``ts.randint(0, 50000, (B, S))`` (int32 by default).

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     ts.manual_seed(0)
        ...     ids = ts.randint(0, 10, (2, 5))
        >>> ids.shape, ids.dtype, 0 <= ids.min().item() <= ids.max().item() < 10
        ((2, 5), int32, True)
    """
    if high is None:
        low, high = 0, low
    if size is None:
        raise TesseraTypeError("ts.randint: give a size, e.g. ts.randint(0, 10, (4, 5))")
    if high <= low:
        raise TesseraValueError(f"ts.randint: high ({high}) must be greater than low ({low})")
    d = _dtype(dtype, dt.int32)
    t = torch.randint(low, high, _random_shape(size if isinstance(size, (tuple, list)) else (size,), "randint"),
                      dtype=d.torch_dtype, device=torch_device(device))
    return Tensor._from_torch(t, d)


def manual_seed(seed: int) -> None:
    """Seed Tessera's random tensors on every device.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     ts.manual_seed(42); a = ts.randn(3)
        ...     ts.manual_seed(42); b = ts.randn(3)
        >>> a.tolist() == b.tolist()
        True
    """
    torch.manual_seed(int(seed))


def tensor(data, dtype=None, device=None):
    """A tensor from Python data, numpy, or a torch tensor (copied): ``ts.tensor([1, 2, 3])``.

    Python floats become f32 and ints int64 unless ``dtype`` is given.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     x = ts.tensor([[1.0, 2.0], [3.0, 4.0]])
        >>> x.shape, x.dtype, ts.tensor([1, 2, 3]).dtype, ts.tensor([1, 2], dtype=ts.bf16).tolist()
        ((2, 2), f32, int64, [1.0, 2.0])
    """
    return Tensor(data, dtype=dtype, device=device)
