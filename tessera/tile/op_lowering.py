"""Lowering of the ``ts.tile.*`` calls to Tile IR: one ``op_<name>`` method per op (a mixin of the frontend).

Example:
    >>> from tessera.tile.op_lowering import OpLowering
    >>> hasattr(OpLowering, "op_online_softmax")
    True
"""
from __future__ import annotations

import ast
import builtins
import math

from .. import dtypes as _dt
from . import ir
from .values import AxisMask, ContextV, Scalar, TensorP, TileV, View, _is_pow2, next_pow2


class OpLowering:
    """``op_<name>(call, env)`` builds the IR of ``ts.tile.<name>(...)``; helpers come from the frontend."""

    def shape_args(self, e, env):
        dims = []
        for a in e.args:
            x = self.expr(a, env)
            if isinstance(x, tuple):
                dims += [(d, a) for d in x]
            else:
                dims.append((x, a))
        shape = []
        for d, node in dims:
            n = self.static_int(d, node, "a tile dim")
            if not _is_pow2(n):
                raise self.err(node, f"tile dims must be powers of two (Triton's tiles are), got {n}",
                               f"use {next_pow2(n)} and mask the tail")
            shape.append(n)
        if not shape:
            raise self.err(e, "a tile needs at least one dim", "e.g. alloc_register(128, 64, dtype=ts.f32)")
        self.max_tile = max(self.max_tile, math.prod(shape))
        return tuple(shape)

    def dtype_kw(self, e, env, default):
        for k in e.keywords:
            if k.arg == "dtype":
                d = self.expr(k.value, env)
                try:
                    return _dt.as_dtype(d)
                except Exception:
                    raise self.err(k.value, f"{d!r} is not a dtype", "use ts.f32, ts.bf16, X.dtype, ...") from None
            raise self.err(k.value, f"unknown keyword {k.arg!r}", "only dtype= is accepted here")
        return default

    def op_context(self, e, env):
        return ContextV()

    def op_program_id(self, e, env):
        if self.axes:
            raise self.err(e, "program_id cannot be used in a kernel with parallel loops (they own the grid)",
                           "use the parallel loop's variable instead")
        a = self.args(e, env, ["axis"], {"axis": 0})
        self.uses_program_id = True
        return Scalar(self.emit("program_id", [], e, axis=self.static_int(*a["axis"], "axis")))

    def op_num_programs(self, e, env):
        a = self.args(e, env, ["axis"], {"axis": 0})
        self.uses_program_id = True
        return Scalar(self.emit("num_programs", [], e, axis=self.static_int(*a["axis"], "axis")))

    def op_range(self, e, env):
        raise self.err(e, "ts.tile.range() is only allowed as a for-loop's iterable",
                       "write `for i in ts.tile.range(...)`")

    def _alloc(self, e, env, default):
        shape = self.shape_args(e, env)
        dt = self.dtype_kw(e, env, default)
        return TileV(self.emit("full", [], e, shape=shape, value=0, dtype=dt), (None,) * len(shape))

    def op_alloc_shared(self, e, env):
        return self._alloc(e, env, _dt.f32)

    def op_alloc_register(self, e, env):
        return self._alloc(e, env, _dt.f32)

    def op_zeros(self, e, env):
        return self._alloc(e, env, _dt.f32)

    def op_full(self, e, env):
        a = self.args(e, env, ["shape", "value", "dtype"], {"dtype": _dt.f32})
        shp = a["shape"][0] if isinstance(a["shape"][0], tuple) else (a["shape"][0],)
        shape = tuple(self.static_int(d, a["shape"][1], "a tile dim") for d in shp)
        for n in shape:
            if not _is_pow2(n):
                raise self.err(a["shape"][1], f"tile dims must be powers of two, got {n}", f"use {next_pow2(n)}")
        val = a["value"][0]
        if not self.is_static(val):
            raise self.err(a["value"][1], "full() needs a constant value", "use a number")
        return TileV(self.emit("full", [], e, shape=shape, value=val, dtype=_dt.as_dtype(a["dtype"][0])),
                     (None,) * len(shape))

    def op_arange(self, e, env):
        a = self.args(e, env, ["n"])
        n = self.static_int(*a["n"], "arange's length")
        if not _is_pow2(n):
            raise self.err(a["n"][1], f"arange's length must be a power of two, got {n}", f"use {next_pow2(n)}")
        return TileV(self.emit("arange", [], e, n=n), (None,))

    def _target_name(self, e, what):
        if not e.args or not isinstance(e.args[0], ast.Name):
            raise self.err(e, f"{what}'s first argument must be a buffer's name (the op rebinds it)",
                           f"e.g. ts.tile.{what}(buf, ...)")
        return e.args[0].id

    def op_fill(self, e, env):
        name = self._target_name(e, "fill")
        a = self.args(e, env, ["buf", "value"])
        buf, val = a["buf"][0], a["value"][0]
        if not isinstance(buf, TileV):
            raise self.err(e.args[0], f"`{name}` is not a tile buffer", "allocate it with ts.tile.alloc_register(...)")
        if not self.is_static(val):
            raise self.err(a["value"][1], "fill() needs a constant value", "use a number such as 0.0 or -float('inf')")
        v = self.emit("full", [], e, hint=name, shape=buf.shape, value=val, dtype=buf.dtype)
        env[name] = TileV(v, (None,) * len(buf.shape))
        return env[name]

    def load_view(self, view: View, node, other=0.0):
        """Access pattern of a view: per-dim (kind, start operand, block), starts, tile shape, tail masks."""
        t = view.t
        access, starts, block, axis_masks = [], [], [], []
        dim0 = 1 if t.batch else 0
        for d, ent in enumerate(view.entries, start=dim0):
            size_static, dim_expr = t.shape[d], t.spec.dims[d]
            if ent[0] == "index":
                starts.append(self.scalar(ent[1], ent[2]))
                access.append(("i", len(starts) - 1, 1))
                continue
            if ent[0] == "full":
                self.probe(["dim", t.name, d])
                n = next_pow2(size_static)
                access.append(("f", None, n))
                start_v = None
                need = n != size_static
            else:
                start, n = ent[1], ent[2]
                starts.append(self.scalar(start, ent[3]))
                start_v = starts[-1]
                access.append(("s", len(starts) - 1, n))
                need = True
                al = start.align if isinstance(start, Scalar) else None
                if start == 0 and isinstance(start, int):
                    al = (n, dim_expr)
                if al is not None and al[0] % n == 0 and al[1] == dim_expr:
                    p = ["divisible", ["dim", t.name, d], n]
                    self.probe(p)
                    need = size_static % n != 0
            block.append(n)
            if need:
                size_v = self.emit("dim", [t.v], node, hint=f"{t.name}_size{d}", axis=d)
                sv = start_v if start_v is not None else self.const(0)
                mv = self.emit("axis_mask", [sv, size_v], node, n=n)
                axis_masks.append(AxisMask(mv, other == 0))
            else:
                axis_masks.append(None)
        self.max_tile = max(self.max_tile, math.prod(block) if block else 1)
        return access, starts, tuple(block), axis_masks

    def _access(self, view, node, user_mask, other):
        access, starts, block, masks = self.load_view(view, node, other=other)
        operands = [view.t.v] + starts + [m.v for m in masks if m is not None]
        mask_axes = tuple(i for i, m in enumerate(masks) if m is not None)
        um = None
        if user_mask is not None:
            um = self.val(user_mask, node)
            operands.append(um)
        return operands, dict(access=tuple(access), block=block, mask_axes=mask_axes,
                              user_mask=um is not None, batch=view.t.batch), masks

    def _view_arg(self, x, node, what):
        if isinstance(x, TensorP):
            x = self.view(x, [], {}, node)
        if not isinstance(x, View):
            raise self.err(node, f"{what} needs a Tile parameter or a slice of one, e.g. X[i:i+128]",
                           "pass X[...] of a kernel parameter")
        return x

    def op_load(self, e, env):
        a = self.args(e, env, ["src", "mask", "other"], {"mask": None, "other": 0.0})
        view = self._view_arg(*a["src"], "load()")
        other = a["other"][0]
        if not self.is_static(other):
            raise self.err(a["other"][1], "other= must be a constant", "e.g. other=0.0 or other=-float('inf')")
        operands, attrs, masks = self._access(view, e, a["mask"][0], other)
        if self.loop_depth > len(self.axes):
            self.has_loop_loads = True
        v = self.emit("load", operands, e, other=other, **attrs)
        return TileV(v, tuple(masks))

    def op_load_async(self, e, env):
        name = self._target_name(e, "load_async")
        a = self.args(e, env, ["buf", "src"])
        buf = a["buf"][0]
        view = self._view_arg(*a["src"], "load_async()")
        if not isinstance(buf, TileV):
            raise self.err(e.args[0], f"`{name}` is not a tile buffer", "allocate it with ts.tile.alloc_shared(...)")
        operands, attrs, masks = self._access(view, e, None, 0.0)
        if tuple(attrs["block"]) != tuple(buf.shape):
            raise self.err(e, f"load_async: the source tile {view.t.name}[...] is {list(attrs['block'])} but the "
                           f"buffer `{name}` is {list(buf.shape)}",
                           f"allocate `{name}` with shape {tuple(attrs['block'])} (e.g. use {view.t.name}.shape[i] "
                           "for a whole dim)")
        if view.t.dtype != buf.dtype:
            raise self.err(e, f"load_async: {view.t.name} holds {view.t.dtype.name} but the buffer `{name}` is "
                           f"{buf.dtype.name}", f"allocate `{name}` with dtype={view.t.name}.dtype")
        if self.loop_depth > len(self.axes):
            self.has_loop_loads = True
        v = self.emit("load", operands, e, hint=name, other=0.0, **attrs)
        env[name] = TileV(v, tuple(masks))
        return env[name]

    def _store(self, e, env, opname):
        a = self.args(e, env, ["dst", "value", "mask"], {"mask": None})
        view = self._view_arg(*a["dst"], f"{opname}()")
        if not view.t.writable:
            raise self.err(a["dst"][1], f"`{view.t.name}` is read-only (declared .readonly, or not listed in "
                           "outputs=) and cannot be written", f"write to an output parameter, or list "
                           f"'{view.t.name}' in @ts.kernel(outputs=...)")
        val = a["value"][0]
        if not isinstance(val, (TileV, Scalar, int, float)):
            self.val(val, a["value"][1])
        operands, attrs, masks = self._access(view, e, a["mask"][0], 0.0)
        vv = self.val(val, a["value"][1])
        vshape = vv.type.shape if isinstance(vv.type, ir.TileType) else ()
        if ir.broadcast_shapes(vshape, attrs["block"]) != tuple(attrs["block"]):
            raise self.err(e, f"{opname}: the value's shape {list(vshape)} does not fit the destination "
                           f"{view.t.name}[...] of shape {list(attrs['block'])}",
                           "slice the destination to the value's shape, e.g. O[i:i+BLOCK_M] for a BLOCK_M-row tile")
        if opname == "atomic_add" and not vv.type.dtype.is_floating and view.t.dtype.is_floating:
            vv = self.emit("cast", [vv], e, dtype=_dt.f32)
        operands.insert(1, vv)
        self.emit(opname, operands, e, **attrs)
        return None

    def op_store(self, e, env):
        return self._store(e, env, "store")

    def op_atomic_add(self, e, env):
        return self._store(e, env, "atomic_add")

    def op_barrier(self, e, env):
        return None

    def op_matmul(self, e, env):
        a = self.args(e, env, ["a", "b", "acc"], {"acc": None})
        x, y, acc = a["a"][0], a["b"][0], a["acc"][0]
        for n, t in (("a", x), ("b", y)):
            if not isinstance(t, TileV):
                self.val(t, a[n][1])
                raise self.err(a[n][1], f"matmul's {n} must be a tile", "load it first")
        if x.dtype != y.dtype:
            small = {_dt.f16, _dt.bf16}
            if x.dtype == _dt.f32 and y.dtype in small:
                x = TileV(self.emit("cast", [x.v], e, dtype=y.dtype), x.masks)
            elif y.dtype == _dt.f32 and x.dtype in small:
                y = TileV(self.emit("cast", [y.v], e, dtype=x.dtype), y.masks)
            else:
                raise self.err(e, f"matmul operands have dtypes {x.dtype.name} and {y.dtype.name}; tensor cores "
                               "need one input dtype", f"cast one side: ts.tile.cast(b, {x.dtype.name})")
        if len(x.shape) == 2 and len(y.shape) == 2:
            mx, my = x.masks[1], y.masks[0]
            if mx is not None and not mx.zero and not (my is not None and my.zero):
                x = self.where_mask(x, 1, 0.0, e)
        ops_ = [x.v, y.v]
        if acc is not None:
            if not isinstance(acc, TileV):
                raise self.err(a["acc"][1], "acc= must be a tile", "e.g. acc = ts.tile.zeros(BM, BN)")
            ops_.append(acc.v)
        v = self.emit("dot", ops_, e)
        if len(x.shape) == 2:
            self.max_dot = max(self.max_dot, x.shape[0] * y.shape[1])
        masks = (x.masks[0], y.masks[1])
        if acc is not None:
            return TileV(v, tuple(m1 or m2 for m1, m2 in zip(masks, acc.masks)))
        return TileV(v, masks)

    def op_online_softmax(self, e, env):
        a = self.args(e, env, ["scores", "m", "l"])
        s, m, l = (a[k][0] for k in ("scores", "m", "l"))
        for k, t in (("scores", s), ("m", m), ("l", l)):
            if not isinstance(t, TileV):
                raise self.err(a[k][1], f"online_softmax's {k} must be a tile", "see docs/tile.md")
        sv, mv, lv = s.v, m.v, l.v
        if s.dtype != _dt.f32:
            sv = self.emit("cast", [sv], e, dtype=_dt.f32)
        ops_ = [sv, mv, lv]
        if len(s.shape) == 2 and s.masks[1] is not None:
            ops_.append(s.masks[1].v)
        m_new, l_new, p = self.emit("online_softmax", ops_, e)
        row = s.masks[0] if len(s.masks) == 2 else None
        pm = (row, None if len(s.masks) < 2 or s.masks[1] is None else AxisMask(s.masks[1].v, True))
        return TileV(m_new, (row,)), TileV(l_new, (row,)), TileV(p, pm)

    def op_update_accumulator(self, e, env):
        name = self._target_name(e, "update_accumulator")
        a = self.args(e, env, ["acc", "pv", "m_old", "m_new", "l_old", "l_new"], {"l_old": None, "l_new": None})
        vals = {k: a[k][0] for k in a}
        for k in ("acc", "pv", "m_old", "m_new"):
            if not isinstance(vals[k], TileV):
                raise self.err(a[k][1], f"update_accumulator's {k} must be a tile", "see docs/tile.md")
        for k in ("l_old", "l_new"):
            if vals[k] is not None and (not isinstance(vals[k], TileV) or vals[k].shape != vals["m_old"].shape):
                raise self.err(a[k][1], f"update_accumulator's {k} must be a tile shaped like m_old",
                               "pass the l_state values from online_softmax")
        acc = vals["acc"]
        v = self.emit("update_accumulator", [acc.v, vals["pv"].v, vals["m_old"].v, vals["m_new"].v], e, hint=name)
        env[name] = TileV(v, tuple(m1 or m2 for m1, m2 in zip(acc.masks, vals["pv"].masks)))
        return env[name]

    # elementwise math
    def _un(self, fn):
        def h(e, env):
            a = self.args(e, env, ["x"])
            return self.unary(fn, a["x"][0], e)
        return h

    def __getattr__(self, item):
        if item.startswith("op_") and item[3:] in ("exp", "exp2", "log", "log2", "sqrt", "rsqrt", "abs", "erf",
                                                     "sigmoid", "tanh"):
            return self._un(item[3:])
        raise AttributeError(item)

    def op_gelu(self, e, env):
        a = self.args(e, env, ["x", "approximate"], {"approximate": "none"})
        ap = a["approximate"][0]
        if ap not in ("none", "tanh"):
            raise self.err(a["approximate"][1], f"approximate must be 'none' or 'tanh', got {ap!r}",
                           "use approximate='tanh' or leave it out")
        return self.unary("gelu" if ap == "none" else "gelu_tanh", a["x"][0], e)

    def op_maximum(self, e, env):
        a = self.args(e, env, ["a", "b"])
        x, y = a["a"][0], a["b"][0]
        if self.is_static(x) and self.is_static(y):
            return builtins.max(x, y)
        return self.arith("maximum", x, y, e)

    def op_minimum(self, e, env):
        a = self.args(e, env, ["a", "b"])
        x, y = a["a"][0], a["b"][0]
        if self.is_static(x) and self.is_static(y):
            return builtins.min(x, y)
        return self.arith("minimum", x, y, e)

    def op_where(self, e, env):
        a = self.args(e, env, ["cond", "a", "b"])
        c, x, y = a["cond"][0], a["a"][0], a["b"][0]
        vals = [self.val(c, a["cond"][1]), self.weak(x, y, a["a"][1]), self.weak(y, x, a["b"][1])]
        if vals[0].type.dtype != _dt.bool_:
            raise self.err(a["cond"][1], "where's condition must be a boolean tile (a comparison)",
                           "e.g. ts.tile.where(cols < N, x, 0.0)")
        v = self.emit("where", vals, e)
        if not isinstance(v.type, ir.TileType):
            return Scalar(v)
        rank = len(v.type.shape)
        first = self.merge_masks("where", x, y, rank, e)
        return TileV(v, tuple(AxisMask(m.v, False) if m else None for m in first))

    def op_cast(self, e, env):
        a = self.args(e, env, ["x", "dtype"])
        try:
            dt = _dt.as_dtype(a["dtype"][0])
        except Exception:
            raise self.err(a["dtype"][1], f"{a['dtype'][0]!r} is not a dtype", "use ts.f32, ts.bf16, X.dtype") from None
        x = a["x"][0]
        if self.is_static(x):
            return Scalar(self.const(x, dt))
        v = self.emit("cast", [self.val(x, a["x"][1])], e, dtype=dt)
        return TileV(v, x.masks) if isinstance(x, TileV) else Scalar(v)

    def _reduce(self, e, env, kind):
        a = self.args(e, env, ["x", "axis"])
        x = a["x"][0]
        if not isinstance(x, TileV):
            raise self.err(a["x"][1], f"{kind}() reduces a tile", "pass a tile")
        axis = self.static_int(*a["axis"], "axis")
        if axis < 0:
            axis += len(x.shape)
        if not 0 <= axis < len(x.shape):
            raise self.err(a["axis"][1], f"axis {axis} is out of range for a {len(x.shape)}-D tile",
                           f"use 0..{len(x.shape) - 1}")
        m = x.masks[axis]
        if m is not None and not (kind == "sum" and m.zero):
            if kind == "sum":
                fill = 0.0
            else:
                fill = float("-inf") if kind == "max" else float("inf")
                if not x.dtype.is_floating:
                    fill = -(2 ** 31) if kind == "max" else 2 ** 31 - 1
            x = self.where_mask(x, axis, fill, e)
        xv = x.v
        if kind == "sum" and x.dtype.is_floating and x.dtype.bits < 32:
            xv = self.emit("cast", [xv], e, dtype=_dt.f32)
        v = self.emit("reduce", [xv], e, kind=kind, axis=axis)
        masks = tuple(mm for j, mm in enumerate(x.masks) if j != axis)
        return TileV(v, masks) if masks else Scalar(v)

    def op_sum(self, e, env):
        return self._reduce(e, env, "sum")

    def op_max(self, e, env):
        return self._reduce(e, env, "max")

    def op_min(self, e, env):
        return self._reduce(e, env, "min")

    def op_cdiv(self, e, env):
        a = self.args(e, env, ["a", "b"])
        x, y = a["a"][0], a["b"][0]
        if self.is_static(x) and self.is_static(y):
            return -(-x // y)
        return self.binop(ast.FloorDiv, self.binop(ast.Sub, self.binop(ast.Add, x, y, e), 1, e), y, e)
