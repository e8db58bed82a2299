"""``ts.Tensor``: a concrete tensor on the CPU or a CUDA GPU, wrapping torch storage.

Its operators and methods all go through the primitive registry, so the same code
runs eagerly, records an autodiff tape, or is traced by ``ts.jit`` (where the tensor
is a :class:`~tessera.core.tracer.Tracer`, a subclass). ``ts.Tensor[...]`` is also the
annotation syntax.

Example:
    >>> import tessera as ts
    >>> with ts.device("cpu"):
    ...     x = ts.arange(6, dtype=ts.f32).reshape(2, 3)
    >>> x.T.shape, f"{x.sum():.1f}", x[0, 1:].tolist()
    ((3, 2), '15.0', [1.0, 2.0])
"""
from __future__ import annotations

import numpy as np
import torch

from .. import dtypes as _dt
from ..errors import TesseraDTypeError, TesseraTypeError
from ..types.annotations import make_tensor_spec
from .device import Device

_ops = None  # tessera.ops.api, bound on first use (it imports this module)


def _api():
    global _ops
    if _ops is None:
        from ..ops import api

        _ops = api
    return _ops


class Tensor:
    """A typed tensor: ``shape`` (ints; symbolic dims while tracing), ``dtype``, ``device``.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     x = ts.Tensor([[1, 2], [3, 4]], dtype=ts.f32)
        >>> x.shape, x.dtype, x.device, (x @ x).tolist()
        ((2, 2), f32, cpu, [[7.0, 10.0], [15.0, 22.0]])
    """

    __slots__ = ("_data", "_dtype", "_producer", "__weakref__")
    __array_priority__ = 1000  # numpy defers to our reflected operators

    def __init__(self, data, dtype=None, device=None):
        """Make a tensor from nested lists, a numpy array, a torch tensor or a scalar (copied)."""
        from .device import torch_device

        tdtype = None if dtype is None else _dt.as_dtype(dtype)
        if isinstance(data, Tensor):
            data = data._data
        if isinstance(data, torch.Tensor):
            t = data.detach().clone()
        else:
            arr = np.asarray(data)
            if arr.dtype == np.float64 and tdtype is None:
                arr = arr.astype(np.float32)
            t = torch.from_numpy(np.ascontiguousarray(arr))
        t = t.to(torch_device(device))
        if tdtype is not None and tdtype.torch_dtype is not None:
            t = t.to(tdtype.torch_dtype)
        self._data = t
        self._dtype = tdtype.storage if tdtype is not None and tdtype.torch_dtype is not None else _dt.from_torch(t.dtype)
        self._producer = None
        if tdtype is not None and tdtype.torch_dtype is None:
            converted = self.to(tdtype)
            self._data, self._dtype = converted._data, converted._dtype

    @classmethod
    def _from_torch(cls, t: torch.Tensor, dtype: "_dt.DType" = None) -> "Tensor":
        self = object.__new__(cls)
        self._data = t
        self._dtype = dtype if dtype is not None else _dt._BY_TORCH[t.dtype]
        self._producer = None
        return self

    def __class_getitem__(cls, items):
        return make_tensor_spec(items, "Tensor")

    # ---------------------------------------------------------------- properties
    @property
    def shape(self):
        return tuple(self._data.shape)

    @property
    def dtype(self) -> "_dt.DType":
        return self._dtype

    @property
    def device(self) -> Device:
        return Device(self._data.device)

    @property
    def ndim(self) -> int:
        return len(self.shape) if self._data is None else self._data.dim()

    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n = n * s
        return n

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TesseraTypeError("len() of a 0-d tensor")
        return self.shape[0]

    # ---------------------------------------------------------------- interop
    def _require_numeric_storage(self, what: str):
        if self._dtype.torch_dtype is None:
            raise TesseraDTypeError(f"{what} of a {self._dtype.name} tensor: convert it first with .to(ts.f32)")

    def numpy(self) -> np.ndarray:
        """A numpy array with the tensor's values (copied off the GPU; bf16/fp8 as ml_dtypes)."""
        if self._dtype.torch_dtype is None:
            from ..ops.convert import codes_to_numpy

            return codes_to_numpy(self._data.cpu().numpy(), self._dtype)
        t = self._data.detach().cpu()
        if t.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
            return t.view(torch.uint8 if t.element_size() == 1 else torch.int16).numpy().view(self._dtype.numpy_dtype)
        return t.numpy()

    def item(self):
        """The value of a one-element tensor as a Python number."""
        self._require_numeric_storage("item()")
        return self._data.item()

    def tolist(self):
        self._require_numeric_storage("tolist()")
        return self._data.tolist()

    def torch(self) -> torch.Tensor:
        """The torch tensor behind this one (shared storage)."""
        return self._data

    def __dlpack__(self, *args, **kwargs):
        return self._data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self._data.__dlpack_device__()

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a.astype(dtype) if dtype is not None else a

    def __format__(self, spec: str) -> str:
        if self.numel() == 1 and spec:
            return format(self.item(), spec)
        return format(repr(self), spec)

    def __repr__(self) -> str:
        body = np.array2string(self.numpy().astype(np.float64) if self._dtype.kind == "float" else self.numpy(),
                               precision=4, threshold=50, edgeitems=3, separator=", ", prefix="ts.Tensor(")
        return f"ts.Tensor({body}, dtype={self._dtype!r}, device={self.device})"

    def __bool__(self) -> bool:
        return bool(self._data)

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self._dtype.kind not in ("int", "uint"):
            raise TesseraTypeError("only integer tensors can be used as an index")
        return int(self.item())

    __hash__ = object.__hash__

    # ---------------------------------------------------------------- conversion
    def to(self, target, *, copy: bool = False):
        """Convert to a dtype (``x.to(ts.bf16)``) or move to a device (``x.to("cuda")``)."""
        if isinstance(target, (_dt.DType, torch.dtype)) or (isinstance(target, str) and target in _dt._BY_NAME):
            return _api().cast(self, _dt.as_dtype(target))
        return _api().to_device(self, Device(target))

    def astype(self, dtype):
        return self.to(dtype)

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    # ---------------------------------------------------------------- arithmetic
    def __add__(self, o): return _api().add(self, o)
    def __radd__(self, o): return _api().add(o, self)
    def __sub__(self, o): return _api().sub(self, o)
    def __rsub__(self, o): return _api().sub(o, self)
    def __mul__(self, o): return _api().mul(self, o)
    def __rmul__(self, o): return _api().mul(o, self)
    def __truediv__(self, o): return _api().div(self, o)
    def __rtruediv__(self, o): return _api().div(o, self)
    def __pow__(self, o): return _api().pow(self, o)
    def __rpow__(self, o): return _api().pow(o, self)
    def __neg__(self): return _api().neg(self)
    def __pos__(self): return self
    def __abs__(self): return _api().abs(self)
    def __matmul__(self, o): return _api().matmul(self, o)
    def __rmatmul__(self, o): return _api().matmul(o, self)
    def __eq__(self, o): return _api().equal(self, o)
    def __ne__(self, o): return _api().not_equal(self, o)
    def __lt__(self, o): return _api().less(self, o)
    def __le__(self, o): return _api().less_equal(self, o)
    def __gt__(self, o): return _api().greater(self, o)
    def __ge__(self, o): return _api().greater_equal(self, o)
    def __and__(self, o): return _api().logical_and(self, o)
    def __or__(self, o): return _api().logical_or(self, o)
    def __invert__(self): return _api().logical_not(self)

    # ---------------------------------------------------------------- shape
    def reshape(self, *shape):
        """Reshape (one dim may be -1): ``x.reshape(B, S, H, D // H)``."""
        return _api().reshape(self, *shape)

    def view(self, *shape):
        return _api().reshape(self, *shape)

    def transpose(self, dim0=None, dim1=None):
        """Swap two dims, or with no arguments reverse all dims (``w.transpose()``)."""
        return _api().transpose(self, dim0, dim1)

    @property
    def T(self):
        return _api().transpose(self)

    def permute(self, *dims):
        return _api().permute(self, *dims)

    def contiguous(self):
        return _api().contiguous(self)

    def flatten(self, start_dim: int = 0, end_dim: int = -1):
        return _api().flatten(self, start_dim, end_dim)

    def unsqueeze(self, dim: int):
        return _api().expand_dims(self, dim)

    def squeeze(self, dim=None):
        return _api().squeeze(self, dim)

    def broadcast_to(self, *shape):
        return _api().broadcast_to(self, *shape)

    def __getitem__(self, index):
        return _api().getitem(self, index)

    # ---------------------------------------------------------------- reductions and math
    def sum(self, dim=None, keepdim: bool = False): return _api().sum(self, dim, keepdim)
    def mean(self, dim=None, keepdim: bool = False): return _api().mean(self, dim, keepdim)
    def max(self, dim=None, keepdim: bool = False): return _api().max(self, dim, keepdim)
    def min(self, dim=None, keepdim: bool = False): return _api().min(self, dim, keepdim)
    def argmax(self, dim=None, keepdim: bool = False): return _api().argmax(self, dim, keepdim)
    def argmin(self, dim=None, keepdim: bool = False): return _api().argmin(self, dim, keepdim)
    def var(self, dim=None, keepdim: bool = False): return _api().var(self, dim, keepdim)
    def exp(self): return _api().exp(self)
    def log(self): return _api().log(self)
    def sqrt(self): return _api().sqrt(self)
    def rsqrt(self): return _api().rsqrt(self)
    def tanh(self): return _api().tanh(self)
    def abs(self): return _api().abs(self)
    def square(self): return _api().mul(self, self)
