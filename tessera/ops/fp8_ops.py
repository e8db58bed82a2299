"""Low-precision primitives: fp8 quantisation with scales, the scaled (fp8 × fp8) linear, and the
weight-only quantized (fp6/fp4 weight) linear.

A scale is the dequantisation multiplier: ``x ≈ x_fp8 * scale``. Current scaling derives it
from the tensor's own amax; delayed scaling passes an ``amax`` carried from earlier steps.

Example:
    >>> import tessera as ts
    >>> with ts.device("cpu"):
    ...     q, s = ts.quantize_fp8(ts.tensor([[1.0, -2.0], [4.0, 0.5]]), axis=-1)
    >>> q.dtype, s.shape
    (fp8_e4m3, (2, 1))
"""
from __future__ import annotations


import torch

from .. import dtypes as dt
from ..core.dispatch import aval_of, bind
from ..core.primitive import Aval, Primitive
from ..errors import TesseraDTypeError, TesseraShapeError, TesseraTypeError, TesseraValueError
from ..types.dims import Dim
from .rules import shape_str

_FP8 = ("fp8_e4m3", "fp8_e5m2")


class QuantizeFp8(Primitive):
    name = "quantize_fp8"
    attrs = (("dtype", dt.fp8_e4m3), ("axis", None))
    multiple_results = True
    differentiable = False

    def shape(self, x, amax, *, dtype, axis):
        if not x.dtype.is_floating or x.dtype.name in _FP8:
            raise TesseraDTypeError(f"quantize_fp8: x must be a float tensor wider than fp8, got {x.dtype.name}")
        if dtype.name not in _FP8:
            raise TesseraDTypeError(f"quantize_fp8: dtype must be ts.fp8_e4m3 or ts.fp8_e5m2, got {dtype.name}")
        scale_shape = () if axis is None else tuple(Dim.const(1) if i == axis % x.ndim else d
                                                     for i, d in enumerate(x.shape))
        return Aval(x.shape, dtype), Aval(scale_shape, dt.f32)

    def reference(self, x, amax, *, dtype, axis):
        fmax = torch.finfo(dtype.torch_dtype).max
        xf = x.float()
        if amax is None:
            amax = xf.abs().amax() if axis is None else xf.abs().amax(dim=axis, keepdim=True)
        amax = amax.float()
        if not bool(torch.isfinite(amax).all()):
            raise TesseraValueError("quantize_fp8: amax is not finite (the input holds inf/NaN); fix the input "
                                    "or pass a finite amax")
        scale = torch.where(amax > 0, amax / fmax, torch.ones_like(amax))
        q = (xf / scale).clamp(-fmax, fmax).to(dtype.torch_dtype)
        return q, scale


class ScaledLinear(Primitive):
    """``(x_fp8 * x_scale) @ (w_fp8 * w_scale) + bias`` with fp32 accumulation."""

    name = "scaled_linear"
    attrs = (("out_dtype", dt.bf16),)
    differentiable = False

    def shape(self, x, w, x_scale, w_scale, bias, *, out_dtype):
        for name, t in (("x", x), ("w", w)):
            if t.dtype.name not in _FP8:
                raise TesseraDTypeError(f"fp8_linear: {name} must be fp8, got {t.dtype.name}; quantize it with "
                                        "ts.quantize_fp8")
        if w.ndim != 2 or not (x.shape[-1] == w.shape[0]):
            raise TesseraShapeError(f"fp8_linear: x has shape {shape_str(x.shape)} and w {shape_str(w.shape)}; w is "
                                    "[in, out] and x's last dim must equal w's first")
        rows = tuple(x.shape[:-1])
        if x_scale.ndim not in (0, x.ndim) or (x_scale.ndim and not (x_scale.shape[-1] == 1)):
            raise TesseraShapeError(f"fp8_linear: x_scale has shape {shape_str(x_scale.shape)}; use a scalar (per "
                                    f"tensor) or shape {shape_str(rows + (Dim.const(1),))} (per row)")
        if w_scale.ndim not in (0, 2) or (w_scale.ndim and not (w_scale.shape[0] == 1 and w_scale.shape[1] == w.shape[1])):
            raise TesseraShapeError(f"fp8_linear: w_scale has shape {shape_str(w_scale.shape)}; use a scalar (per "
                                    f"tensor) or shape (1, {w.shape[1]}) (per output column)")
        return Aval(rows + (w.shape[1],), out_dtype)

    def reference(self, x, w, x_scale, w_scale, bias, *, out_dtype):
        for name, s in (("x_scale", x_scale), ("w_scale", w_scale)):
            if not bool(torch.isfinite(s).all()) or bool((s <= 0).any()):
                raise TesseraValueError(f"fp8_linear: {name} must be finite and positive")
        y = (x.float() * x_scale.float()) @ (w.float() * w_scale.float())
        if bias is not None:
            y = y + bias.float()
        return y.to(out_dtype.torch_dtype)


class Fp8TrainingLinear(Primitive):
    """``x @ w + bias`` on fp8 tensor cores from wider ``x`` and ``w`` (the training recipe): both
    are quantised to e4m3 with one scale per tensor (current scaling); the backward quantises the
    output's gradient to e5m2 and computes dx and dw as fp8 products too. Quantisation passes
    gradients straight through, so dx and dw are the gradients of the product of the quantised
    operands. Outputs (y, x_fp8, x_scale, w_fp8, w_scale): the quantised operands are by-products
    the backward reuses."""

    name = "fp8_training_linear"
    attrs = (("out_dtype", dt.bf16),)
    multiple_results = True
    nondiff_outputs = (1, 2, 3, 4)

    def shape(self, x, w, bias, *, out_dtype):
        for name, t in (("x", x), ("w", w)):
            if not t.dtype.is_floating or t.dtype.name in _FP8:
                raise TesseraDTypeError(f"fp8_linear: {name} is {t.dtype.name}; training on fp8 takes wider float x "
                                        "and w (bf16/f16/f32) and quantises them itself, or pass fp8 tensors with "
                                        "their scales")
        if w.ndim != 2 or not (x.shape[-1] == w.shape[0]):
            raise TesseraShapeError(f"fp8_linear: x has shape {shape_str(x.shape)} and w {shape_str(w.shape)}; w is "
                                    "[in, out] and x's last dim must equal w's first")
        if bias is not None and (bias.ndim != 1 or not (bias.shape[0] == w.shape[1])):
            raise TesseraShapeError(f"fp8_linear: bias has shape {shape_str(bias.shape)}; it must be ({w.shape[1]},)")
        scale = Aval((), dt.f32)
        return (Aval(tuple(x.shape[:-1]) + (w.shape[1],), out_dtype), Aval(x.shape, dt.fp8_e4m3), scale,
                Aval(w.shape, dt.fp8_e4m3), scale)

    def reference(self, x, w, bias, *, out_dtype):
        (qx, sx), (qw, sw) = (QUANTIZE_FP8.reference(t, None, dtype=dt.fp8_e4m3, axis=None) for t in (x, w))
        return SCALED_LINEAR.reference(qx, qw, sx, sw, bias, out_dtype=out_dtype), qx, sx, qw, sw

    def vjp(self, cts, ins, outs, *, out_dtype):
        from .reduction import sum as _sum
        from .shape import transpose

        x, w, bias = ins
        _, qx, sx, qw, sw = outs  # the forward's quantised operands
        k, n = w.shape
        ct = cts[0].reshape(-1, n)
        qdy, sdy = quantize_fp8(ct, dt.fp8_e5m2)
        dx = bind(SCALED_LINEAR, qdy, transpose(qw), sdy, sw, None, out_dtype=x.dtype).reshape(*x.shape)
        dw = bind(SCALED_LINEAR, transpose(qx.reshape(-1, k)), qdy, sx, sdy, None, out_dtype=w.dtype)
        db = None if bias is None else _sum(ct.to(dt.f32), 0).to(bias.dtype)
        return dx, dw, db


QUANTIZE_FP8, SCALED_LINEAR, FP8_TRAINING_LINEAR = QuantizeFp8(), ScaledLinear(), Fp8TrainingLinear()


def quantize_fp8(x, dtype=dt.fp8_e4m3, axis=None, amax=None):
    """``(x_fp8, scale)`` with ``x ≈ x_fp8 * scale``: per tensor (``axis=None``) or along ``axis``
    (``axis=-1``: one scale per row); ``amax`` for delayed scaling.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     q, s = ts.quantize_fp8(ts.tensor([3.0, -448.0]))
        >>> q.to(ts.f32).tolist(), float(s)
        ([3.0, -448.0], 1.0)
    """
    dtype = dt.as_dtype(dtype)
    if axis is not None and not isinstance(axis, int):
        raise TesseraValueError(f"quantize_fp8: axis must be an int or None, got {axis!r}")
    return bind(QUANTIZE_FP8, x, amax, dtype=dtype, axis=axis)


def fp8_linear(x, w, bias=None, *, w_scale=None, x_scale=None, out_dtype=dt.bf16):
    """A linear layer on fp8 tensor cores, for inference or training.

    Inference: ``w`` is fp8 ``[in, out]`` with its ``w_scale`` (scalar or per output column
    ``(1, out)``); ``x`` is fp8 with ``x_scale`` (delayed scaling), or a wider float that is
    quantised here, one scale per row (current scaling). Training: ``w`` (and ``x``) are wider
    floats (e.g. bf16 master weights) and no scales are passed; both are quantised to e4m3 per
    tensor, and ``ts.grad`` computes dx and dw on fp8 tensor cores from the gradient quantised to
    e5m2.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     w, sw = ts.quantize_fp8(ts.randn(16, 8), axis=0)
        ...     y = ts.nn.fp8_linear(ts.randn(4, 16), w, w_scale=sw)
        ...     x, w32 = ts.randn(4, 16), ts.randn(16, 8)
        ...     dw = ts.grad(lambda w32: ts.nn.fp8_linear(x, w32).to(ts.f32).sum())(w32)
        >>> y.shape, y.dtype, dw.shape
        ((4, 8), bf16, (16, 8))
    """
    if w.dtype.name not in _FP8:
        if w_scale is not None or x_scale is not None:
            raise TesseraDTypeError(f"fp8_linear: w is {w.dtype.name} but scales were passed; quantize w (and x) "
                                    "with ts.quantize_fp8, or drop the scales to train from the wider w")
        out_dtype = dt.as_dtype(out_dtype)
        return bind(FP8_TRAINING_LINEAR, x, w, bias, out_dtype=out_dtype)[0]
    if w_scale is None:
        raise TesseraValueError("fp8_linear: w is fp8, so pass its w_scale (the dequantisation multiplier)")
    if x.dtype.name not in _FP8:
        if x_scale is not None:
            raise TesseraValueError("fp8_linear: x_scale is for an fp8 x; a wider x is quantised here")
        x, x_scale = quantize_fp8(x, axis=-1)
    elif x_scale is None:
        raise TesseraValueError("fp8_linear: x is fp8, so pass its x_scale (the dequantisation multiplier)")
    args, out_dtype = (x, w, x_scale, w_scale, bias), dt.as_dtype(out_dtype)
    SCALED_LINEAR.shape(*(aval_of(a) for a in args), out_dtype=out_dtype)  # torch would broadcast a wrong scale
    return bind(SCALED_LINEAR, *args, out_dtype=out_dtype)




# ------------------------------------------------------------------------ weight-only quantized linear
class WeightOnlyLinear(Primitive):
    """``x @ dequantize(w) + bias`` for an fp6/fp4 weight stored packed with per-group scales
    (:mod:`tessera.quant`); on GPU the weight is dequantised inside the GEMM."""

    name = "weight_only_linear"
    attrs = (("fmt", "fp4_e2m1"), ("group_size", 32), ("k", 0), ("n", 0))
    differentiable = False

    def shape(self, x, data, scales, bias, *, fmt, group_size, k, n):
        if not x.dtype.is_floating or x.dtype.name in ("fp8_e4m3", "fp8_e5m2"):
            raise TesseraDTypeError(f"quantized_linear: x must be bf16/f16/f32, got {x.dtype.name}")
        if not (x.shape[-1] == k):
            raise TesseraShapeError(f"quantized_linear: x has shape {shape_str(x.shape)} but the weight is [{k}, {n}]; "
                                    f"x's last dim must be {k}")
        if bias is not None and (bias.ndim != 1 or not (bias.shape[0] == n)):
            raise TesseraShapeError(f"quantized_linear: bias has shape {shape_str(bias.shape)}; it must be ({n},)")
        return Aval(tuple(x.shape[:-1]) + (Dim.const(n),), x.dtype)

    def reference(self, x, data, scales, bias, *, fmt, group_size, k, n):
        from ..quant import QuantizedWeight, dequantize, get_format

        w = dequantize(QuantizedWeight(data, scales, get_format(fmt), group_size, (k, n)), dtype=torch.float32)
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        y = x.to(acc) @ w.to(acc)
        if bias is not None:
            y = y + bias.to(acc)
        return y.to(x.dtype)


WEIGHT_ONLY_LINEAR = WeightOnlyLinear()


def quantized_linear(x, qw, bias=None):
    """``x @ w + bias`` where ``w`` is a :class:`tessera.quant.QuantizedWeight` (fp6/fp4 codes with
    per-group scales, from :func:`tessera.quant.quantize`).

    Example:
        >>> import tessera as ts
        >>> from tessera.quant import quantize
        >>> with ts.device("cpu"):
        ...     w = ts.randn(64, 16)
        ...     qw = quantize(w.torch(), "fp4_e2m1", group_size=32)
        ...     y = ts.nn.quantized_linear(ts.randn(3, 64), qw)
        >>> y.shape
        (3, 16)
    """
    from ..core.tensor import Tensor
    from ..quant import QuantizedWeight

    if not isinstance(qw, QuantizedWeight):
        raise TesseraTypeError(f"quantized_linear: qw must be a tessera.quant.QuantizedWeight (made by "
                               f"tessera.quant.quantize), got {type(qw).__name__}")
    data, scales = Tensor._from_torch(qw.data), Tensor._from_torch(qw.scales)
    attrs = dict(fmt=qw.fmt.name, group_size=qw.group_size, k=int(qw.shape[0]), n=int(qw.shape[1]))
    args = (x, data, scales, bias)
    WEIGHT_ONLY_LINEAR.shape(*(aval_of(a) for a in args), **attrs)
    return bind(WEIGHT_ONLY_LINEAR, *args, **attrs)
