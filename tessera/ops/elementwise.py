"""Elementwise primitives: unary math, binary arithmetic and comparisons, where, cast.

Example:
    >>> import tessera as ts
    >>> with ts.device("cpu"):
    ...     ts.maximum(ts.arange(3, dtype=ts.f32), 1.0).tolist()
    [1.0, 1.0, 2.0]
"""
from __future__ import annotations

import math

import torch

from .. import dtypes as dt
from ..core.dispatch import bind
from ..core.primitive import Aval, Primitive
from ..dtypes import result_type
from .rules import broadcast_shapes, is_scalar, shape_of


def unbroadcast(ct, shape):
    """Sum ``ct`` down to ``shape`` (the VJP of broadcasting)."""
    from .reduction import sum as _sum

    if ct is None:
        return None
    extra = ct.ndim - len(shape)
    axes = list(range(extra)) + [extra + i for i, d in enumerate(shape) if d == 1 and not (ct.shape[extra + i] == 1)]
    if axes:
        ct = _sum(ct, axes, keepdim=True)
    if extra:
        ct = ct.reshape(*shape) if shape else ct.reshape()
    return ct


# ------------------------------------------------------------------------ unary
class Unary(Primitive):
    torch_fn = None
    float_result = True  # integer inputs give the default float dtype

    def shape(self, x):
        dtype = x.dtype if (x.dtype.is_floating or not self.float_result) else dt.DEFAULT_FLOAT
        return Aval(x.shape, dtype)

    def reference(self, x):
        if self.float_result and not x.is_floating_point():
            x = x.to(torch.float32)
        return type(self).torch_fn(x)


def _unary(name, fn, vjp, float_result=True, differentiable=True):
    cls = type(name.capitalize(), (Unary,), {
        "name": name, "torch_fn": staticmethod(fn), "float_result": float_result,
        "differentiable": differentiable,
        "vjp": (lambda self, cts, ins, outs: (vjp(cts[0], ins[0], outs[0]),)) if vjp else Unary.vjp,
    })
    prim = cls()
    return prim


NEG = _unary("neg", torch.neg, lambda ct, x, y: -ct, float_result=False)
EXP = _unary("exp", torch.exp, lambda ct, x, y: ct * y)
LOG = _unary("log", torch.log, lambda ct, x, y: ct / x)
SQRT = _unary("sqrt", torch.sqrt, lambda ct, x, y: ct * 0.5 / y)
RSQRT = _unary("rsqrt", torch.rsqrt, lambda ct, x, y: ct * (-0.5) * y / x)
TANH = _unary("tanh", torch.tanh, lambda ct, x, y: ct * (1.0 - y * y))
ERF = _unary("erf", torch.erf, lambda ct, x, y: ct * (2.0 / math.sqrt(math.pi)) * exp(-(x * x)))
SIN = _unary("sin", torch.sin, lambda ct, x, y: ct * cos(x))
COS = _unary("cos", torch.cos, lambda ct, x, y: -(ct * sin(x)))
SIGMOID = _unary("sigmoid", torch.sigmoid, lambda ct, x, y: ct * y * (1.0 - y))
ABS = _unary("abs", torch.abs, lambda ct, x, y: ct * sign(x), float_result=False)
SIGN = _unary("sign", torch.sign, None, float_result=False, differentiable=False)


class LogicalNot(Primitive):
    name = "logical_not"
    differentiable = False

    def shape(self, x):
        return Aval(x.shape, dt.bool_)

    def reference(self, x):
        return torch.logical_not(x)


LOGICAL_NOT = LogicalNot()


def neg(x): return bind(NEG, x)
def exp(x): return bind(EXP, x)
def log(x): return bind(LOG, x)
def sqrt(x): return bind(SQRT, x)
def rsqrt(x): return bind(RSQRT, x)
def tanh(x): return bind(TANH, x)
def erf(x): return bind(ERF, x)
def sin(x): return bind(SIN, x)
def cos(x): return bind(COS, x)
def sigmoid(x): return bind(SIGMOID, x)
def abs(x): return bind(ABS, x)
def sign(x): return bind(SIGN, x)
def logical_not(x): return bind(LOGICAL_NOT, x)


# ------------------------------------------------------------------------ binary
class Binary(Primitive):
    torch_fn = None
    compare = False

    def __init__(self):
        super().__init__()
        if type(self).reference is Binary.reference:
            self.reference = type(self).torch_fn  # the eager hot path calls torch directly

    def shape(self, a, b):
        shape = broadcast_shapes(self.name, shape_of(a), shape_of(b), names=("lhs", "rhs"))
        return Aval(shape, dt.bool_ if self.compare else result_type(a, b))

    def reference(self, a, b):
        return type(self).torch_fn(a, b)


def _scalar_ok(a, b):
    return a if not is_scalar(a) else b


class Add(Binary):
    name, torch_fn = "add", staticmethod(torch.add)

    def vjp(self, cts, ins, outs):
        ct = cts[0]
        return tuple(None if is_scalar(x) else unbroadcast(ct, x.shape) for x in ins)


class Sub(Binary):
    name, torch_fn = "sub", staticmethod(torch.sub)

    def vjp(self, cts, ins, outs):
        a, b = ins
        ct = cts[0]
        return (None if is_scalar(a) else unbroadcast(ct, a.shape),
                None if is_scalar(b) else unbroadcast(-ct, b.shape))


class Mul(Binary):
    name, torch_fn = "mul", staticmethod(torch.mul)

    def vjp(self, cts, ins, outs):
        a, b = ins
        ct = cts[0]
        return (None if is_scalar(a) else unbroadcast(ct * b, a.shape),
                None if is_scalar(b) else unbroadcast(ct * a, b.shape))


class Div(Binary):
    name = "div"

    def reference(self, a, b):
        return torch.div(a, b)

    def shape(self, a, b):
        aval = super().shape(a, b)
        return aval if aval.dtype.is_floating else Aval(aval.shape, dt.DEFAULT_FLOAT)

    def vjp(self, cts, ins, outs):
        a, b = ins
        ct = cts[0]
        return (None if is_scalar(a) else unbroadcast(ct / b, a.shape),
                None if is_scalar(b) else unbroadcast(-(ct * outs[0]) / b, b.shape))


class Pow(Binary):
    name, torch_fn = "pow", staticmethod(torch.pow)

    def vjp(self, cts, ins, outs):
        a, b = ins
        ct = cts[0]
        if is_scalar(b) and b in (1, 2):
            return (unbroadcast(ct if b == 1 else ct * a * 2.0, a.shape), None)
        da = None if is_scalar(a) else unbroadcast(ct * b * pow(a, b - 1), a.shape)
        db = None if is_scalar(b) else unbroadcast(ct * outs[0] * log(a), b.shape)
        return da, db


class Maximum(Binary):
    name, torch_fn = "maximum", staticmethod(lambda a, b: torch.maximum(*_as_tensors(a, b)))

    def vjp(self, cts, ins, outs):
        a, b = ins
        ct = cts[0]
        take_a = a >= b
        return (None if is_scalar(a) else unbroadcast(where(take_a, ct, 0.0), a.shape),
                None if is_scalar(b) else unbroadcast(where(take_a, 0.0, ct), b.shape))


class Minimum(Binary):
    name, torch_fn = "minimum", staticmethod(lambda a, b: torch.minimum(*_as_tensors(a, b)))

    def vjp(self, cts, ins, outs):
        a, b = ins
        ct = cts[0]
        take_a = a <= b
        return (None if is_scalar(a) else unbroadcast(where(take_a, ct, 0.0), a.shape),
                None if is_scalar(b) else unbroadcast(where(take_a, 0.0, ct), b.shape))


def _as_tensors(a, b):
    if is_scalar(a):
        a = torch.tensor(a, dtype=b.dtype if not (isinstance(a, float) and not b.is_floating_point()) else torch.float32,
                         device=b.device)
    if is_scalar(b):
        b = torch.tensor(b, dtype=a.dtype if not (isinstance(b, float) and not a.is_floating_point()) else torch.float32,
                         device=a.device)
    return a, b


def _compare(name, fn):
    return type(name.capitalize(), (Binary,), {"name": name, "torch_fn": staticmethod(fn), "compare": True,
                                              "differentiable": False})()


ADD, SUB, MUL, DIV, POW = Add(), Sub(), Mul(), Div(), Pow()
MAXIMUM, MINIMUM = Maximum(), Minimum()
EQUAL = _compare("equal", torch.eq)
NOT_EQUAL = _compare("not_equal", torch.ne)
LESS = _compare("less", torch.lt)
LESS_EQUAL = _compare("less_equal", torch.le)
GREATER = _compare("greater", torch.gt)
GREATER_EQUAL = _compare("greater_equal", torch.ge)
LOGICAL_AND = _compare("logical_and", lambda a, b: torch.logical_and(*_as_tensors(a, b)))
LOGICAL_OR = _compare("logical_or", lambda a, b: torch.logical_or(*_as_tensors(a, b)))


def add(a, b): return bind(ADD, a, b)
def sub(a, b): return bind(SUB, a, b)
def mul(a, b): return bind(MUL, a, b)
def div(a, b): return bind(DIV, a, b)
def pow(a, b): return bind(POW, a, b)
def maximum(a, b): return bind(MAXIMUM, a, b)
def minimum(a, b): return bind(MINIMUM, a, b)
def equal(a, b): return bind(EQUAL, a, b)
def not_equal(a, b): return bind(NOT_EQUAL, a, b)
def less(a, b): return bind(LESS, a, b)
def less_equal(a, b): return bind(LESS_EQUAL, a, b)
def greater(a, b): return bind(GREATER, a, b)
def greater_equal(a, b): return bind(GREATER_EQUAL, a, b)
def logical_and(a, b): return bind(LOGICAL_AND, a, b)
def logical_or(a, b): return bind(LOGICAL_OR, a, b)


# ------------------------------------------------------------------------ docstrings of the one-line ops
def _document(fn, summary: str, args: str, result: str) -> None:
    """Give the one-line op ``fn`` its docstring: ``summary`` and a CPU example calling ``ts.<name>(args)``,
    which prints the result's dtype and values (rounded to 4 places) as ``result``."""
    fn.__doc__ = f"""{summary}

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     y = ts.{fn.__name__}({args})
        >>> y.dtype, [round(v, 4) for v in y.tolist()]
        {result}
    """


for _fn, _summary, _args, _result in (
        (exp, "``e ** x``, elementwise (integer inputs give f32).", "ts.tensor([0, 1])", "(f32, [1.0, 2.7183])"),
        (log, "Natural logarithm, elementwise (``-inf`` at 0, ``nan`` below).", "ts.tensor([1.0, 4.0])",
         "(f32, [0.0, 1.3863])"),
        (sqrt, "Square root, elementwise.", "ts.tensor([4.0, 2.0])", "(f32, [2.0, 1.4142])"),
        (rsqrt, "Reciprocal square root ``1 / sqrt(x)``, elementwise.", "ts.tensor([4.0, 0.25])", "(f32, [0.5, 2.0])"),
        (tanh, "Hyperbolic tangent, elementwise.", "ts.tensor([0.0, 1.0])", "(f32, [0.0, 0.7616])"),
        (erf, "The Gauss error function, elementwise (exact GELU is ``x * (1 + erf(x / sqrt(2))) / 2``).",
         "ts.tensor([0.0, 1.0])", "(f32, [0.0, 0.8427])"),
        (sin, "Sine of an angle in radians, elementwise.", "ts.tensor([0.0, 1.5708])", "(f32, [0.0, 1.0])"),
        (cos, "Cosine of an angle in radians, elementwise.", "ts.tensor([0.0, 3.1416])", "(f32, [1.0, -1.0])"),
        (sigmoid, "Logistic sigmoid ``1 / (1 + exp(-x))``, elementwise.", "ts.tensor([0.0, 2.0])",
         "(f32, [0.5, 0.8808])"),
        (abs, "Absolute value, elementwise; integer dtypes are kept.", "ts.tensor([-2, 3])", "(int64, [2, 3])"),
        (add, "Elementwise ``a + b`` with broadcasting; either side may be a Python scalar.",
         "ts.tensor([1.0, 2.0]), 0.5", "(f32, [1.5, 2.5])"),
        (sub, "Elementwise ``a - b`` with broadcasting; either side may be a Python scalar.",
         "10, ts.tensor([1, 4])", "(int64, [9, 6])"),
        (mul, "Elementwise ``a * b`` with broadcasting; either side may be a Python scalar.",
         "ts.tensor([1.0, 2.0]), ts.tensor([3.0])", "(f32, [3.0, 6.0])"),
        (div, "True division ``a / b`` with broadcasting; integer inputs give f32.",
         "ts.tensor([1, 3]), 2", "(f32, [0.5, 1.5])"),
        (pow, "Elementwise ``a ** b`` with broadcasting; the exponent may be a scalar or a tensor.",
         "ts.tensor([2.0, 3.0]), 2", "(f32, [4.0, 9.0])"),
        (maximum, "The larger of ``a`` and ``b``, elementwise with broadcasting (scalars allowed).",
         "ts.tensor([1.0, 5.0]), ts.tensor([3.0, 2.0])", "(f32, [3.0, 5.0])"),
        (minimum, "The smaller of ``a`` and ``b``, elementwise with broadcasting (scalars allowed).",
         "ts.tensor([1.0, 5.0]), 2.0", "(f32, [1.0, 2.0])")):
    _document(_fn, _summary, _args, _result)
del _fn, _summary, _args, _result


# ------------------------------------------------------------------------ where
class Where(Primitive):
    name = "where"

    def shape(self, cond, a, b):
        shape = broadcast_shapes("where", shape_of(cond), shape_of(a), shape_of(b), names=("cond", "x", "y"))
        return Aval(shape, result_type(a, b))

    def reference(self, cond, a, b):
        if is_scalar(a) and is_scalar(b):
            dtype = torch.float32 if isinstance(a, float) or isinstance(b, float) else torch.int64
            a = torch.tensor(a, dtype=dtype, device=cond.device)
        return torch.where(cond if not is_scalar(cond) else torch.tensor(cond), a, b)

    def vjp(self, cts, ins, outs):
        cond, a, b = ins
        ct = cts[0]
        return (None,
                None if is_scalar(a) else unbroadcast(where(cond, ct, 0.0), a.shape),
                None if is_scalar(b) else unbroadcast(where(cond, 0.0, ct), b.shape))


WHERE = Where()


def where(cond, x, y):
    """Elementwise choice: ``x`` where ``cond`` is true, else ``y`` (broadcasting; scalars allowed).

    This is the traced-friendly form of ``x if cond else y``.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     x = ts.arange(4, dtype=ts.f32) - 1.5
        ...     ts.where(x > 0, x, 0.0).tolist()
        [0.0, 0.0, 0.5, 1.5]
    """
    return bind(WHERE, cond, x, y)


# ------------------------------------------------------------------------ cast
class Cast(Primitive):
    name = "cast"
    attrs = (("dtype", None), ("source", None))
    accepts_packed = True
    overrides_dtype = True

    def shape(self, x, *, dtype, source):
        return Aval(x.shape, dtype)

    def reference(self, x, *, dtype, source):
        from .convert import convert_storage

        return convert_storage(x, dtype, source)

    def vjp(self, cts, ins, outs, *, dtype, source):
        (x,) = ins
        return (cts[0].to(x.dtype) if x.dtype.is_floating and dtype.is_floating else None,)


CAST = Cast()


def cast(x, dtype):
    """Convert ``x`` to ``dtype`` (rounding to nearest; fp6/fp4 are stored as codes)."""
    dtype = dt.as_dtype(dtype)
    if x.dtype == dtype:
        return x
    return bind(CAST, x, dtype=dtype, source=x.dtype.storage)
