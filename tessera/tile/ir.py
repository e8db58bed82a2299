"""Tile IR: a typed SSA IR with structured loops, its type rules, verifier and printer.

A :class:`Function` holds parameters and a :class:`Block` of :class:`Op`; a ``for``
op owns a body block whose arguments are the induction variable and the values the
loop carries; ``yield`` ends a body. Every op's result type comes from one rule
(:func:`infer_types`), which the frontend uses to build ops and :func:`verify`
re-checks.

Example:
    >>> from tessera.tile import ir
    >>> from tessera import dtypes
    >>> f = ir.Function("k", [], ir.Block([], []))
    >>> b = ir.Builder(f.body)
    >>> x = b.op("full", [], shape=(4,), value=1.0, dtype=dtypes.f32)
    >>> y = b.op("unary", [x], fn="exp")
    >>> ir.verify(f); print(ir.print_function(f).splitlines()[2].strip())
    %1 = unary(%0) {fn=exp} : tile<4xf32>
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .. import dtypes as _dt
from ..errors import TesseraCompileError

i1, i32, i64, f32 = _dt.bool_, _dt.int32, _dt.int64, _dt.f32


@dataclass(frozen=True)
class ScalarType:
    """A scalar of a dtype."""
    dtype: _dt.DType

    def __str__(self):
        return self.dtype.name


@dataclass(frozen=True)
class TileType:
    """A block of values with a static, power-of-two shape."""
    shape: Tuple[int, ...]
    dtype: _dt.DType

    def __str__(self):
        return f"tile<{'x'.join(map(str, self.shape))}x{self.dtype.name}>"


@dataclass(frozen=True)
class TensorType:
    """A kernel's tensor parameter: a pointer with runtime sizes and strides."""
    rank: int
    dtype: _dt.DType
    writable: bool = True

    def __str__(self):
        return f"tensor<rank{self.rank}x{self.dtype.name}{'' if self.writable else ', readonly'}>"


_ids = itertools.count()


class Value:
    """An SSA value: an id, a type and an optional name hint."""

    __slots__ = ("id", "type", "hint")

    def __init__(self, type_, hint: str = ""):
        self.id = next(_ids)
        self.type = type_
        self.hint = hint


@dataclass
class Block:
    """Block arguments and a list of ops."""
    args: List[Value]
    ops: List["Op"]


@dataclass
class Op:
    """One operation: a name, operand values, typed attributes, results and nested blocks."""
    name: str
    operands: List[Value]
    attrs: Dict[str, Any]
    results: List[Value] = field(default_factory=list)
    regions: List[Block] = field(default_factory=list)
    line: Optional[int] = None


@dataclass
class Param:
    """A kernel parameter: kind is 'tensor', 'scalar' or 'constexpr'."""
    name: str
    kind: str
    value: Optional[Value]
    const: Any = None


@dataclass
class Function:
    """A kernel in Tile IR."""
    name: str
    params: List[Param]
    body: Block
    attrs: Dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- type rules
UNARY_FLOAT = {"exp", "exp2", "log", "log2", "sqrt", "rsqrt", "erf", "sigmoid", "tanh", "gelu", "gelu_tanh"}
UNARY_ANY = {"neg", "abs", "not"}
ARITH = {"add", "sub", "mul", "div", "floordiv", "mod", "maximum", "minimum"}
COMPARE = {"lt", "le", "gt", "ge", "eq", "ne"}
LOGIC = {"and", "or"}


def _shape(t) -> Tuple[int, ...]:
    return t.shape if isinstance(t, TileType) else ()


def broadcast_shapes(a: Tuple[int, ...], b: Tuple[int, ...]) -> Optional[Tuple[int, ...]]:
    """Numpy broadcasting of two static shapes, or None when they do not broadcast."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    out = []
    for x, y in zip(a, b):
        if x != y and 1 not in (x, y):
            return None
        out.append(max(x, y))
    return tuple(out)


def _mk(shape, dtype):
    return TileType(tuple(shape), dtype) if shape else ScalarType(dtype)


def promote(a: _dt.DType, b: _dt.DType) -> _dt.DType:
    """Binary-op dtype promotion inside kernels (floats win; bf16 with f16 gives f32)."""
    if a == b:
        return a
    return _dt.promote_types(a.storage, b.storage)


class TypeRuleError(Exception):
    """An op's operands break its type rule; the frontend turns this into a caret error."""


def infer_types(name: str, ins: List[Any], attrs: Dict[str, Any]) -> List[Any]:
    """The result types of op ``name`` for operand types ``ins`` (raises TypeRuleError)."""
    if name == "const":
        return [ScalarType(attrs["dtype"])]
    if name in ("program_id", "num_programs"):
        return [ScalarType(i32)]
    if name in ("dim", "stride"):
        return [ScalarType(i64 if attrs.get("wide") else i32)]
    if name == "arange":
        return [TileType((attrs["n"],), i32)]
    if name == "full":
        return [_mk(attrs["shape"], attrs["dtype"])]
    if name == "axis_mask":  # (start, size) -> start + arange(n) < size
        return [TileType((attrs["n"],), i1)]
    if name == "unary":
        t = ins[0]
        if attrs["fn"] in UNARY_FLOAT and not t.dtype.is_floating:
            raise TypeRuleError(f"{attrs['fn']} needs a float operand, got {t.dtype.name}")
        return [_mk(_shape(t), i1 if attrs["fn"] == "not" else t.dtype)]
    if name == "binary":
        a, b = ins
        shape = broadcast_shapes(_shape(a), _shape(b))
        if shape is None:
            raise TypeRuleError(f"shapes {_shape(a)} and {_shape(b)} do not broadcast")
        op = attrs["op"]
        if op in COMPARE or op in LOGIC:
            return [_mk(shape, i1)]
        dt = promote(a.dtype, b.dtype)
        if op == "div" and not dt.is_floating:
            dt = f32
        return [_mk(shape, dt)]
    if name == "where":
        c, a, b = ins
        shape = broadcast_shapes(_shape(c), broadcast_shapes(_shape(a), _shape(b)) or (-1,))
        if shape is None or -1 in shape:
            raise TypeRuleError("where(): condition and branches do not broadcast")
        return [_mk(shape, promote(a.dtype, b.dtype))]
    if name == "cast":
        return [_mk(_shape(ins[0]), attrs["dtype"])]
    if name == "expand":
        s = list(_shape(ins[0]))
        s.insert(attrs["axis"], 1)
        return [TileType(tuple(s), ins[0].dtype)]
    if name == "broadcast":
        return [TileType(tuple(attrs["shape"]), ins[0].dtype)]
    if name == "trans":
        s = _shape(ins[0])
        if len(s) != 2:
            raise TypeRuleError(f".T needs a 2-D tile, got shape {s}")
        return [TileType((s[1], s[0]), ins[0].dtype)]
    if name == "reduce":
        s = list(_shape(ins[0]))
        if not 0 <= attrs["axis"] < len(s):
            raise TypeRuleError(f"axis {attrs['axis']} is out of range for a tile of shape {tuple(s)}")
        del s[attrs["axis"]]
        return [_mk(s, ins[0].dtype)]
    if name == "dot":
        a, b = ins[0], ins[1]
        sa, sb = _shape(a), _shape(b)
        if len(sa) != 2 or len(sb) != 2 or sa[1] != sb[0]:
            raise TypeRuleError(f"matmul needs [M, K] @ [K, N] tiles, got {sa} @ {sb}")
        if min(sa[0], sa[1], sb[1]) < 16:
            raise TypeRuleError(f"matmul tiles need every dim >= 16 (tensor cores), got {sa} @ {sb}")
        if a.dtype != b.dtype:
            raise TypeRuleError(f"matmul operands have dtypes {a.dtype.name} and {b.dtype.name}")
        out_dt = f32 if a.dtype.is_floating else _dt.int32
        if len(ins) == 3 and (ins[2].shape != (sa[0], sb[1]) or ins[2].dtype != out_dt):
            raise TypeRuleError(f"matmul acc= must be a {sa[0]}x{sb[1]} {out_dt.name} tile, got {ins[2]}")
        return [TileType((sa[0], sb[1]), out_dt)]
    if name in ("load",):
        return [TileType(tuple(attrs["block"]), ins[0].dtype)]
    if name in ("store", "atomic_add"):
        if not ins[0].writable:
            raise TypeRuleError("stores into a read-only parameter")
        return []
    if name == "online_softmax":  # (s, m, l[, colmask]) -> m_new, l_new, p
        s, m, l = ins[:3]
        if len(_shape(s)) != 2 or _shape(m) != (_shape(s)[0],) or _shape(l) != (_shape(s)[0],):
            raise TypeRuleError(f"online_softmax needs scores [M, N] with m and l of shape [M]; got "
                                f"{_shape(s)}, {_shape(m)}, {_shape(l)}")
        return [TileType(_shape(m), f32), TileType(_shape(l), f32), TileType(_shape(s), f32)]
    if name == "update_accumulator":  # (acc, pv, m_old, m_new) -> acc'
        acc, pv, mo, mn = ins[:4]
        if _shape(acc) != _shape(pv) or len(_shape(acc)) != 2 or _shape(mo) != (_shape(acc)[0],) \
                or _shape(mn) != _shape(mo):
            raise TypeRuleError(f"update_accumulator needs acc and pv of one shape [M, N] and m_old, m_new of "
                                f"shape [M]; got {_shape(acc)}, {_shape(pv)}, {_shape(mo)}, {_shape(mn)}")
        return [TileType(_shape(acc), f32)]
    if name == "for":
        return list(ins[3:])
    if name == "yield":
        return []
    raise TypeRuleError(f"unknown op {name!r}")


# ---------------------------------------------------------------- builder
class Builder:
    """Appends ops to a block, computing result types from the type rules."""

    def __init__(self, block: Block, line: Optional[int] = None):
        self.block = block
        self.line = line

    def op(self, name: str, operands: List[Value], hint: str = "", **attrs) -> Optional[Value]:
        types = infer_types(name, [v.type for v in operands], attrs)
        o = Op(name, list(operands), attrs, [Value(t, hint) for t in types], line=self.line)
        self.block.ops.append(o)
        return o.results[0] if len(o.results) == 1 else (o.results or None)

    def ops(self, name: str, operands: List[Value], **attrs) -> List[Value]:
        types = infer_types(name, [v.type for v in operands], attrs)
        o = Op(name, list(operands), attrs, [Value(t) for t in types], line=self.line)
        self.block.ops.append(o)
        return o.results


# ---------------------------------------------------------------- verifier
def verify(fn: Function) -> None:
    """Check SSA dominance, the type rules of every op and loop structure; raise TesseraCompileError."""
    defined = {p.value.id for p in fn.params if p.value is not None}

    def fail(op, msg):
        raise TesseraCompileError(f"Tile IR verification failed in '{fn.name}' at op {op.name}"
                                  f"{f' (line {op.line})' if op.line else ''}: {msg}")

    def walk(block: Block, scope: set):
        scope = set(scope) | {a.id for a in block.args}
        for op in block.ops:
            for v in op.operands:
                if v.id not in scope:
                    fail(op, f"operand %{v.id} is used before it is defined")
            try:
                types = infer_types(op.name, [v.type for v in op.operands], op.attrs)
            except TypeRuleError as e:
                fail(op, str(e))
            if [r.type for r in op.results] != types:
                fail(op, f"result types {[str(r.type) for r in op.results]} differ from the rule's "
                         f"{[str(t) for t in types]}")
            if op.name == "for":
                body = op.regions[0]
                if len(body.args) != 1 + len(op.operands) - 3:
                    fail(op, "the body's arguments must be the induction variable and one per carried value")
                if not body.ops or body.ops[-1].name != "yield":
                    fail(op, "a loop body must end with yield")
                ys = body.ops[-1].operands
                if [y.type for y in ys] != [r.type for r in op.results]:
                    fail(op, "yielded types differ from the carried types")
                if op.attrs.get("parallel") and op.results:
                    fail(op, "a parallel loop carries no values")
                walk(body, scope)
            scope |= {r.id for r in op.results}

    walk(fn.body, defined)


# ---------------------------------------------------------------- printer
def _fmt_attr(v):
    if isinstance(v, _dt.DType):
        return v.name
    if isinstance(v, float):
        return repr(v)
    return str(v).replace(" ", "")


def print_function(fn: Function) -> str:
    """The Tile IR as text, one op a line, loops indented; values numbered %0, %1, ... in order."""
    num: Dict[int, int] = {}

    def n(v: Value) -> str:
        if v.id not in num:
            num[v.id] = len(num)
        return f"%{num[v.id]}"

    lines = []
    ps = []
    for p in fn.params:
        if p.kind == "constexpr":
            ps.append(f"{p.name}: constexpr = {p.const!r}")
        else:
            ps.append(f"{n(p.value)} {p.name}: {p.value.type}")
    head = f"tile.func @{fn.name}({', '.join(ps)})"
    if fn.attrs:
        head += " {" + ", ".join(f"{k}={_fmt_attr(v)}" for k, v in sorted(fn.attrs.items())) + "}"
    lines.append(head + " {")

    def ops(block: Block, ind: str):
        for op in block.ops:
            args = ", ".join(n(v) for v in op.operands)
            attrs = {k: v for k, v in op.attrs.items()}
            at = (" {" + ", ".join(f"{k}={_fmt_attr(v)}" for k, v in attrs.items()) + "}") if attrs else ""
            res = ", ".join(n(r) for r in op.results)
            tys = ", ".join(str(r.type) for r in op.results)
            if op.name == "for":
                body = op.regions[0]
                lo, hi, st = (n(v) for v in op.operands[:3])
                iv = n(body.args[0])
                carried = ", ".join(f"{n(a)}={n(v)}" for a, v in zip(body.args[1:], op.operands[3:]))
                lines.append(f"{ind}{res + ' = ' if res else ''}for {iv} in {lo} to {hi} step {st}"
                             f"{at}{' iter(' + carried + ')' if carried else ''} {{")
                ops(body, ind + "  ")
                lines.append(ind + "}")
            else:
                lines.append(f"{ind}{res + ' = ' if res else ''}{op.name}({args}){at}{' : ' + tys if tys else ''}")

    ops(fn.body, "  ")
    lines.append("}")
    return "\n".join(lines)
