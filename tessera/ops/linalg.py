"""Matrix products: ``matmul`` (batched, broadcasting) and ``linear`` (with fused epilogues).

Both honour a precision policy: ``ts.bf16 @ ts.accum(ts.f32)`` accumulates in f32 (the
default for 16-bit floats); an fp8 operand is dequantised to the other operand's dtype.

Example:
    >>> import tessera as ts
    >>> with ts.device("cpu"):
    ...     (ts.ones(2, 3) @ ts.ones(3, 4)).shape
    (2, 4)
"""
from __future__ import annotations

import torch

from .. import dtypes as dt
from ..core.dispatch import bind
from ..core.primitive import Aval, Primitive
from ..core.tensor import Tensor
from ..errors import TesseraDTypeError, TesseraShapeError, TesseraValueError
from .rules import broadcast_shapes, shape_str

_FP8 = ("fp8_e4m3", "fp8_e5m2")


def matmul_dtype(op: str, a, b, names=("a", "b")) -> dt.DType:
    """The result dtype of a product; mixed standard floats are an error with the fix."""
    sa, sb = a.dtype.storage, b.dtype.storage
    if sa is dt.bool_ or sb is dt.bool_:
        raise TesseraDTypeError(f"{op}: boolean operands are not supported; convert with .to(ts.f32)")
    if sa == sb:
        return dt.bf16 if sa.name in _FP8 else a.dtype
    if sa.name in _FP8 and sb.is_floating:
        return b.dtype
    if sb.name in _FP8 and sa.is_floating:
        return a.dtype
    raise TesseraDTypeError(f"{op}: {names[0]} is {sa.name} but {names[1]} is {sb.name}; convert one so both match, "
                            f"e.g. {names[1]}.to(ts.{sa.name})")


def check_accum(op: str, dtype: dt.DType, accum) -> None:
    """A product of ``dtype`` operands may accumulate in f32 (always) or in f16 (f16 operands only)."""
    if accum is None or accum == dt.f32 or (accum == dt.f16 and dtype.storage == dt.f16):
        return
    raise TesseraDTypeError(f"{op}: {dtype.storage.name} operands cannot accumulate in {accum.name}; use "
                            f"ts.{dtype.storage.name} @ ts.accum(ts.f32)"
                            + (", or f16 operands with ts.accum(ts.f16)" if accum == dt.f16 else ""))


def _align(a: torch.Tensor, b: torch.Tensor):
    if a.dtype == b.dtype and a.dtype not in (torch.float8_e4m3fn, torch.float8_e5m2):
        return a, b
    target = torch.bfloat16
    for t in (a, b):
        if t.dtype not in (torch.float8_e4m3fn, torch.float8_e5m2):
            target = t.dtype
    return a.to(target), b.to(target)


class Matmul(Primitive):
    name = "matmul"
    attrs = (("accum", None),)

    def shape(self, a, b, *, accum):
        if a.ndim < 2 or b.ndim < 2:
            raise TesseraShapeError("matmul: operands must have rank >= 2 here (vectors are handled by ts.matmul)")
        if not (a.shape[-1] == b.shape[-2]):
            raise TesseraShapeError(
                f"matmul: inner dimensions differ: a has shape {shape_str(a.shape)} and b has shape "
                f"{shape_str(b.shape)}, so a's last dim ({a.shape[-1]}) must equal b's second-to-last "
                f"({b.shape[-2]}); transpose or reshape one operand")
        batch = broadcast_shapes("matmul (batch dims)", a.shape[:-2], b.shape[:-2], names=("a", "b"))
        dtype = matmul_dtype("matmul", a, b)
        check_accum("matmul", dtype, accum)
        return Aval(batch + (a.shape[-2], b.shape[-1]), dtype)

    def reference(self, a, b, *, accum):
        a, b = _align(a, b)
        return torch.matmul(a, b)

    def vjp(self, cts, ins, outs, *, accum):
        from .elementwise import unbroadcast
        from .shape import transpose

        from ..core.autodiff import needs_cotangent

        a, b = ins
        ct = cts[0]
        da = unbroadcast(matmul(ct, transpose(b, -1, -2).to(ct.dtype)), a.shape) if needs_cotangent(0) else None
        db = unbroadcast(matmul(transpose(a, -1, -2).to(ct.dtype), ct), b.shape) if needs_cotangent(1) else None
        return da, db


MATMUL = Matmul()


def matmul(a, b):
    """Matrix product with NumPy/PyTorch semantics (batched, broadcasting, 1-D operands as vectors).

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     ts.matmul(ts.ones(5, 2, 3), ts.ones(3)).shape
        (5, 2)
    """
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, Tensor):
            raise TesseraShapeError(f"matmul: {name} must be a tensor, got {type(x).__name__}")
    if a.dtype is b.dtype and a.ndim >= 2 and b.ndim >= 2:  # the common case, kept short
        return bind(MATMUL, a, b, accum=a.dtype.accum)
    for name, x in (("a", a), ("b", b)):
        if x.ndim == 0:
            raise TesseraShapeError(f"matmul: {name} is a scalar (0-d); use * for scaling")
    squeeze = []
    if a.ndim == 1:
        a = a.reshape(1, a.shape[0])
        squeeze.append(-2)
    if b.ndim == 1:
        b = b.reshape(b.shape[0], 1)
        squeeze.append(-1)
    matmul_dtype("matmul", a, b)
    accum = a.dtype.accum or b.dtype.accum
    out = bind(MATMUL, a, b, accum=accum)
    if squeeze:
        shape = list(out.shape)
        for s in sorted(squeeze):
            del shape[len(shape) + s if s == -1 else len(shape) - 2]
        out = out.reshape(*shape) if shape else out.reshape()
    return out


# ------------------------------------------------------------------------ linear
ACTIVATIONS = (None, "gelu", "gelu_tanh", "silu", "relu")


def _act_reference(y: torch.Tensor, activation):
    f = torch.nn.functional
    if activation is None:
        return y
    if activation == "gelu":
        return f.gelu(y)
    if activation == "gelu_tanh":
        return f.gelu(y, approximate="tanh")
    if activation == "silu":
        return f.silu(y)
    return torch.relu(y)


class Linear(Primitive):
    """``act(x @ w + bias) + residual``, stored as ``out_dtype`` (default: the product's dtype);
    outputs (out, pre-activation) — the latter a by-product for the backward."""

    name = "linear"
    attrs = (("activation", None), ("accum", None), ("out_dtype", None))
    multiple_results = True
    nondiff_outputs = (1,)

    def shape(self, x, w, bias, residual=None, *, activation, accum, out_dtype=None):
        if activation not in ACTIVATIONS:
            raise TesseraValueError(f"linear: activation {activation!r} is not one of {ACTIVATIONS}")
        if w.ndim != 2:
            raise TesseraShapeError(f"linear: w must be 2-D [in, out], got shape {shape_str(w.shape)}")
        if x.ndim < 1 or not (x.shape[-1] == w.shape[0]):
            raise TesseraShapeError(
                f"linear: x has shape {shape_str(x.shape)} but w has shape {shape_str(w.shape)}; w is laid out "
                f"[in, out], so x's last dim ({x.shape[-1] if x.ndim else '-'}) must equal w's first ({w.shape[0]}). "
                "If w is [out, in], pass w.T")
        if bias is not None and (bias.ndim != 1 or not (bias.shape[0] == w.shape[1])):
            raise TesseraShapeError(f"linear: bias has shape {shape_str(bias.shape)}; it must be ({w.shape[1]},)")
        dtype = matmul_dtype("linear", x, w, names=("x", "w"))
        check_accum("linear", dtype, accum)
        rows = tuple(x.shape[:-1]) + (w.shape[1],)
        if residual is not None:
            tail = rows[len(rows) - residual.ndim:] if residual.ndim <= len(rows) else None
            if tail is None or not all(r == 1 or r == o for r, o in zip(residual.shape, tail)):
                raise TesseraShapeError(f"linear: residual has shape {shape_str(residual.shape)} but the output is "
                                        f"{shape_str(rows)}; the residual must broadcast to the output")
            if not residual.dtype.is_floating:
                raise TesseraDTypeError(f"linear: residual must be a float tensor, got {residual.dtype.name}")
        if out_dtype is not None and (not out_dtype.is_floating or out_dtype.name in _FP8):
            raise TesseraDTypeError(f"linear: out_dtype must be f32, f16 or bf16, got {out_dtype.name}")
        out = Aval(rows, out_dtype or dtype)
        return out, out

    def reference(self, x, w, bias, residual=None, *, activation, accum, out_dtype=None):
        x, w = _align(x, w)
        y = torch.matmul(x, w)
        if bias is not None:
            y = y + bias.to(y.dtype)
        out = _act_reference(y, activation)
        if residual is not None:  # added in fp32 (f64 for f64) and rounded once, as the kernel's epilogue does
            acc = torch.float64 if out.dtype == torch.float64 else torch.float32
            out = (out.to(acc) + residual.to(acc)).to(out.dtype)
        if out_dtype is not None:
            out, y = out.to(out_dtype.torch_dtype), y.to(out_dtype.torch_dtype)
        return out, (y if activation is not None else None)

    def vjp(self, cts, ins, outs, *, activation, accum, out_dtype=None):
        from ..core.autodiff import needs_cotangent
        from .elementwise import unbroadcast
        from .nn_ops import activation_grad
        from .reduction import sum as _sum
        from .shape import transpose

        x, w, bias = ins[:3]
        residual = ins[3] if len(ins) > 3 else None
        ct = cts[0]
        dres = None if residual is None or not needs_cotangent(3) else unbroadcast(ct, residual.shape).to(residual.dtype)
        if activation is not None:
            ct = activation_grad(ct, outs[1], activation)
        ct = ct.to(x.dtype if x.dtype.name not in _FP8 else w.dtype)
        k, n = w.shape
        ct2 = ct.reshape(-1, n)
        # an input that leads to no requested gradient (a model's input, a frozen weight) costs no GEMM
        dx = matmul(ct2, transpose(w).to(ct.dtype)).reshape(*x.shape) if needs_cotangent(0) else None
        dw = matmul(transpose(x.reshape(-1, k)).to(ct.dtype), ct2) if needs_cotangent(1) else None
        db = None if bias is None or not needs_cotangent(2) else _sum(ct2, 0)
        return (dx, dw, db) if len(ins) == 3 else (dx, dw, db, dres)


LINEAR = Linear()
