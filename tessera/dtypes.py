"""Tessera dtypes, precision policies and promotion.

A :class:`DType` names a storage format. ``dtype @ ts.accum(ts.f32)`` attaches an
accumulation policy, giving a dtype that is used anywhere a dtype is accepted:
storage is unchanged, and matmul-like ops accumulate in the policy's dtype.

Example:
    >>> import tessera as ts
    >>> p = ts.bf16 @ ts.accum(ts.f32)
    >>> p.storage is ts.bf16, p.accum is ts.f32
    (True, True)
    >>> ts.promote_types(ts.bf16, ts.f16)
    f32
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import ml_dtypes
import numpy as np
import torch

from .errors import TesseraDTypeError


@dataclass(frozen=True, eq=False)
class DType:
    """A storage dtype, optionally carrying an accumulation policy (``accum``).

    Example:
        >>> import tessera as ts
        >>> isinstance(ts.bf16, ts.DType), ts.bf16.bits, ts.bf16.itemsize, ts.int8.kind
        (True, 16, 2, 'int')
        >>> ts.bf16 @ ts.accum(ts.f32)
        bf16 @ accum(f32)
    """

    name: str
    kind: str  # "float", "int", "uint" or "bool"
    bits: int
    exponent_bits: int = 0
    mantissa_bits: int = 0
    torch_dtype: Optional[torch.dtype] = None  # None: stored as uint8 codes (fp6/fp4)
    numpy_dtype: Optional[np.dtype] = None
    accum: Optional["DType"] = None

    @property
    def storage(self) -> "DType":
        """The dtype without its precision policy."""
        return _BY_NAME[self.name]

    @property
    def is_floating(self) -> bool:
        return self.kind == "float"

    @property
    def itemsize(self) -> int:
        """Bytes per element as stored (fp6/fp4 codes take one byte unpacked)."""
        return max(1, self.bits // 8) if self.torch_dtype is not None else 1

    def __matmul__(self, policy: "Accum") -> "DType":
        if not isinstance(policy, Accum):
            raise TesseraDTypeError(
                f"{self.name} @ {policy!r}: the right side of '@' on a dtype must be a "
                f"precision policy, e.g. {self.name} @ ts.accum(ts.f32)"
            )
        fields = {k: v for k, v in self.__dict__.items() if k != "_hash"}
        return DType(**{**fields, "accum": policy.dtype})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DType) and other.name == self.name and other.accum is self.accum

    def __hash__(self) -> int:  # cached: eager dispatch hashes dtypes on every call
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.name, self.accum.name if self.accum else None))
            object.__setattr__(self, "_hash", h)
        return h

    def __repr__(self) -> str:
        return self.name if self.accum is None else f"{self.name} @ accum({self.accum.name})"


@dataclass(frozen=True)
class Accum:
    """An accumulation policy: ``ts.accum(ts.f32)``. Combine with a dtype by ``@``."""

    dtype: DType

    def __repr__(self) -> str:
        return f"accum({self.dtype.name})"


def accum(dtype: DType) -> Accum:
    """Make a precision policy that accumulates in ``dtype``.

    Example:
        >>> import tessera as ts
        >>> ts.bf16 @ ts.accum(ts.f32)
        bf16 @ accum(f32)
    """
    if not isinstance(dtype, DType) or not dtype.is_floating:
        raise TesseraDTypeError(f"ts.accum({dtype!r}): the accumulation dtype must be a float dtype such as ts.f32")
    return Accum(dtype.storage)


def _f(name, bits, e, m, t, n):
    return DType(name, "float", bits, e, m, t, np.dtype(n))


f64 = _f("f64", 64, 11, 52, torch.float64, np.float64)
f32 = _f("f32", 32, 8, 23, torch.float32, np.float32)
f16 = _f("f16", 16, 5, 10, torch.float16, np.float16)
bf16 = _f("bf16", 16, 8, 7, torch.bfloat16, ml_dtypes.bfloat16)
fp8_e4m3 = _f("fp8_e4m3", 8, 4, 3, torch.float8_e4m3fn, ml_dtypes.float8_e4m3fn)
fp8_e5m2 = _f("fp8_e5m2", 8, 5, 2, torch.float8_e5m2, ml_dtypes.float8_e5m2)
fp6_e2m3 = _f("fp6_e2m3", 6, 2, 3, None, ml_dtypes.float6_e2m3fn)
fp6_e3m2 = _f("fp6_e3m2", 6, 3, 2, None, ml_dtypes.float6_e3m2fn)
fp4_e2m1 = _f("fp4_e2m1", 4, 2, 1, None, ml_dtypes.float4_e2m1fn)
int8 = DType("int8", "int", 8, torch_dtype=torch.int8, numpy_dtype=np.dtype(np.int8))
int16 = DType("int16", "int", 16, torch_dtype=torch.int16, numpy_dtype=np.dtype(np.int16))
int32 = DType("int32", "int", 32, torch_dtype=torch.int32, numpy_dtype=np.dtype(np.int32))
int64 = DType("int64", "int", 64, torch_dtype=torch.int64, numpy_dtype=np.dtype(np.int64))
uint8 = DType("uint8", "uint", 8, torch_dtype=torch.uint8, numpy_dtype=np.dtype(np.uint8))
bool_ = DType("bool", "bool", 1, torch_dtype=torch.bool, numpy_dtype=np.dtype(np.bool_))

ALL_DTYPES = (f64, f32, f16, bf16, fp8_e4m3, fp8_e5m2, fp6_e2m3, fp6_e3m2, fp4_e2m1,
              int8, int16, int32, int64, uint8, bool_)
_BY_NAME = {d.name: d for d in ALL_DTYPES}
_BY_TORCH = {d.torch_dtype: d for d in ALL_DTYPES if d.torch_dtype is not None}
_BY_NUMPY = {d.numpy_dtype: d for d in ALL_DTYPES}
_STANDARD_FLOATS = (f16, bf16, f32, f64)
_INT_ORDER = (uint8, int8, int16, int32, int64)
DEFAULT_FLOAT = f32
DEFAULT_INT = int32


def from_torch(dtype: torch.dtype) -> DType:
    """The Tessera dtype of a torch dtype.

    Example:
        >>> import torch, tessera as ts
        >>> ts.dtypes.from_torch(torch.bfloat16)
        bf16
    """
    try:
        return _BY_TORCH[dtype]
    except KeyError:
        raise TesseraDTypeError(f"torch dtype {dtype} has no Tessera equivalent; convert it with .to(torch.float32) first") from None


def from_numpy(dtype) -> DType:
    """The Tessera dtype of a numpy (or ml_dtypes) dtype.

    Example:
        >>> import numpy as np, tessera as ts
        >>> ts.dtypes.from_numpy(np.float16)
        f16
    """
    try:
        return _BY_NUMPY[np.dtype(dtype)]
    except KeyError:
        raise TesseraDTypeError(f"numpy dtype {dtype} has no Tessera equivalent") from None


def as_dtype(value) -> DType:
    """Accept a Tessera, torch or numpy dtype, or a dtype name, and return a Tessera dtype.

    Example:
        >>> import tessera as ts
        >>> ts.dtypes.as_dtype("bf16")
        bf16
    """
    if isinstance(value, DType):
        return value
    if isinstance(value, torch.dtype):
        return from_torch(value)
    if isinstance(value, str):
        if value in _BY_NAME:
            return _BY_NAME[value]
        raise TesseraDTypeError(f"unknown dtype name {value!r}; known: {', '.join(_BY_NAME)}")
    if value is float:
        return DEFAULT_FLOAT
    if value is int:
        return int64
    if value is bool:
        return bool_
    try:
        return from_numpy(value)
    except (TypeError, TesseraDTypeError):
        raise TesseraDTypeError(f"{value!r} is not a dtype; use one such as ts.f32 or ts.bf16") from None


def _dominates(a: DType, b: DType) -> bool:
    return a.exponent_bits >= b.exponent_bits and a.mantissa_bits >= b.mantissa_bits


def promote_types(a: DType, b: DType) -> DType:
    """The dtype that both ``a`` and ``b`` convert to for a binary op.

    Floats beat integers; among floats the result holds both ranges and precisions
    (``bf16`` with ``f16`` gives ``f32``); among integers the wider wins. Policies
    are kept when both sides agree.

    Example:
        >>> import tessera as ts
        >>> ts.promote_types(ts.int32, ts.bf16), ts.promote_types(ts.fp8_e4m3, ts.bf16)
        (bf16, bf16)
    """
    sa, sb = a.storage, b.storage
    if sa is sb:
        return a if a.accum is b.accum else sa
    if sa.kind == "float" and sb.kind == "float":
        if _dominates(sa, sb):
            return sa
        if _dominates(sb, sa):
            return sb
        return next(f for f in _STANDARD_FLOATS if _dominates(f, sa) and _dominates(f, sb))
    if sa.kind == "float":
        return sa
    if sb.kind == "float":
        return sb
    if sa is bool_:
        return sb
    if sb is bool_:
        return sa
    if {sa, sb} == {uint8, int8}:
        return int16
    return max(sa, sb, key=_INT_ORDER.index)


def result_type(*values) -> DType:
    """Promote tensors and Python scalars; scalars are weak and adopt the tensor's kind.

    Example:
        >>> import tessera as ts
        >>> ts.dtypes.result_type(ts.ones(2, dtype=ts.bf16), 2.0)
        bf16
    """
    tensor_dtypes = [v.dtype for v in values if hasattr(v, "dtype") and isinstance(v.dtype, DType)]
    scalars = [v for v in values if isinstance(v, (bool, int, float))]
    if tensor_dtypes:
        out = tensor_dtypes[0]
        for d in tensor_dtypes[1:]:
            out = promote_types(out, d)
    else:
        out = None
    for s in scalars:
        kind = bool_ if isinstance(s, bool) else (int64 if isinstance(s, int) else DEFAULT_FLOAT)
        if out is None:
            out = kind
        elif kind.kind == "float" and out.kind != "float":
            out = DEFAULT_FLOAT
        elif kind.kind == "int" and out is bool_:
            out = int64
    if out is None:
        raise TesseraDTypeError("result_type() needs at least one tensor or scalar")
    return out
