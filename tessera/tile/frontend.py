"""Python AST -> Tile IR.

The frontend reads an ``@ts.kernel`` function's source, evaluates what is static
(tile sizes, constexpr parameters, shapes that must be constants), builds typed
SSA ops for everything else, decides which loops are parallel, and tracks which
rows and columns of every tile are padding (the tail of a dimension that is not a
multiple of the tile), so that reductions, ``online_softmax`` and stores ignore it.

Example:
    >>> import torch, tessera.tile as tile
    >>> @tile.kernel
    ... def double(X: tile.Tile["N"], Y: tile.Tile["N"], BLOCK: tile.constexpr = 64):
    ...     for i in tile.range(X.shape[0], step=BLOCK):
    ...         tile.store(Y[i:i + BLOCK], tile.load(X[i:i + BLOCK]) * 2)
    >>> "for" in double.lower(torch.ones(100), torch.empty(100)).as_tile_ir()
    True
"""
from __future__ import annotations

import ast
import builtins
import math
import types
from typing import Any, Dict, List, Optional

from .. import dtypes as _dt
from . import ir, ops as _ops
from .analysis import exposed_reads, op_name, stmt_writes
from .errors import SourceInfo
from .op_lowering import OpLowering
from .values import (AxisMask, ContextV, LoweredIR, OpRef, ParallelAxis, Poisoned, Scalar, ShapeP, TensorP, TileV,
                     View, _is_pow2, next_pow2)

MAX_UNROLL = 64


class Frontend(OpLowering):
    """Lowers one kernel for one specialization (argument dtypes, shapes and constexpr values)."""

    def __init__(self, src: SourceInfo, fdef: ast.FunctionDef, globals_: dict, params: List[dict],
                 batch: Optional[bool], kernel_obj: Any = None, default_stages: int = 3):
        self.src, self.fdef, self.globals, self.kernel_obj = src, fdef, globals_, kernel_obj
        self.params = params
        self.want_batch = batch
        self.default_stages = default_stages
        self.probes: List[Any] = []
        self.axes: List[ParallelAxis] = []
        self.parallel_done = False
        self.uses_program_id = False
        self.max_dot = 0
        self.max_tile = 0
        self.has_loop_loads = False
        self.loop_depth = 0

    # ---- errors and helpers
    def err(self, node, msg, fix=None):
        return self.src.error(node, msg, fix)

    def probe(self, p) -> None:
        if p not in self.probes:
            self.probes.append(p)

    def emit(self, name, operands, node=None, hint="", **attrs):
        self.b.line = None if node is None else self.src.line_of(node)
        try:
            return self.b.op(name, operands, hint=hint, **attrs)
        except ir.TypeRuleError as e:
            raise self.err(node, str(e)) from None

    def const(self, value, dtype=None) -> ir.Value:
        if dtype is None:
            dtype = _dt.bool_ if isinstance(value, bool) else (_dt.int32 if isinstance(value, int) else _dt.f32)
        return self.emit("const", [], value=value, dtype=dtype)

    # ---- entry
    def run(self) -> LoweredIR:
        env: Dict[str, Any] = {}
        fparams = []
        tensors = [p for p in self.params if p["kind"] == "tensor"]
        self.batch_name = self._decide_batch(tensors)
        for p in self.params:
            if p["kind"] == "tensor":
                t = ir.TensorType(len(p["shape"]), p["dtype"], p["writable"])
                v = ir.Value(t, p["name"])
                fparams.append(ir.Param(p["name"], "tensor", v))
                env[p["name"]] = TensorP(p["name"], p["spec"], v, tuple(p["shape"]), p["dtype"],
                                         self.batch_name is not None, p["writable"])
            elif p["kind"] == "scalar":
                v = ir.Value(ir.ScalarType(p["dtype"]), p["name"])
                fparams.append(ir.Param(p["name"], "scalar", v))
                host = ["arg", p["name"]] if p["dtype"].kind == "int" else None
                env[p["name"]] = Scalar(v, static=p.get("value"), host=host)
            else:
                fparams.append(ir.Param(p["name"], "constexpr", None, p["value"]))
                env[p["name"]] = p["value"]
        self.fn = ir.Function(self.fdef.name, fparams, ir.Block([], []))
        self.b = ir.Builder(self.fn.body)
        self.block(self.fdef.body, env, top=True)
        if self.batch_name:
            self.fn.attrs["batch"] = self.batch_name
        if self.axes:
            self.fn.attrs["parallel_axes"] = len(self.axes)
        return LoweredIR(self.fn, self.axes, self.batch_name, self.probes, self.uses_program_id,
                         self.max_dot, self.max_tile, self.has_loop_loads)

    def _decide_batch(self, tensors) -> Optional[str]:
        """The batch rule of docs/tile.md: a shared leading dim that no subscript addresses."""
        if self.want_batch is False or not tensors:
            return None
        lead = {str(t["spec"].dims[0]) for t in tensors}
        names = {t["name"]: t for t in tensors}
        partial = True
        for node in ast.walk(self.fdef):
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in names:
                n = len(node.slice.elts) if isinstance(node.slice, ast.Tuple) else 1
                if n > len(names[node.value.id]["shape"]) - 2:
                    partial = False
            if isinstance(node, ast.Call) and op_name(node) in ("program_id", "num_programs"):
                partial = False
        ok = len(lead) == 1 and all(len(t["shape"]) >= 2 for t in tensors) and partial
        if self.want_batch is True and not ok:
            raise self.err(self.fdef, "batch=True needs every Tile parameter to share its leading dim and every "
                           "subscript to leave it out", "drop batch=True, or index the leading dim explicitly")
        return tensors[0]["name"] if ok else None

    # ---- statements
    def block(self, stmts, env, top=False):
        for s in stmts:
            self.stmt(s, env, top)

    def stmt(self, s, env, top=False):
        if isinstance(s, ast.Expr):
            if isinstance(s.value, ast.Constant) and isinstance(s.value.value, str):
                return
            self.expr(s.value, env, stmt=True)
        elif isinstance(s, ast.Assign):
            val = self.expr(s.value, env)
            for t in s.targets:
                self.assign(t, val, env, s)
        elif isinstance(s, ast.AnnAssign) and s.value is not None:
            self.assign(s.target, self.expr(s.value, env), env, s)
        elif isinstance(s, ast.AugAssign):
            if not isinstance(s.target, ast.Name):
                raise self.err(s, "augmented assignment needs a plain name on the left",
                               "write `x = x + y` with x a local name; write tensors with ts.tile.store")
            cur = self.name(s.target.id, env, s.target)
            val = self.binop(type(s.op), cur, self.expr(s.value, env), s)
            self.assign(s.target, val, env, s)
        elif isinstance(s, ast.For):
            self.for_(s, env, top)
        elif isinstance(s, ast.If):
            cond = self.expr(s.test, env)
            if not isinstance(cond, (bool, int, float, type(None))):
                raise self.err(s.test, "an `if` on a runtime value cannot be compiled (branches must be decided "
                               "at compile time)", "select values with ts.tile.where(cond, a, b), or branch on a "
                               "constexpr parameter")
            self.block(s.body if cond else s.orelse, env)
        elif isinstance(s, ast.Pass):
            return
        elif isinstance(s, ast.Return):
            if s.value is not None:
                raise self.err(s, "a kernel returns nothing; it writes its results",
                               "write the result with ts.tile.store(Out[...], value)")
        elif isinstance(s, ast.While):
            raise self.err(s, "`while` loops are not supported in kernels (their trip count depends on data)",
                           "use `for i in ts.tile.range(start, stop, step=...)` with bounds known at launch")
        elif isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            raise self.err(s, "functions and classes cannot be defined inside a kernel",
                           "define helpers as ts.tile ops inline, or move them out of the kernel")
        else:
            raise self.err(s, f"`{type(s).__name__}` statements are not supported in kernels",
                           "use assignments, ts.tile.range loops, compile-time ifs and ts.tile ops")

    def assign(self, target, val, env, node):
        if isinstance(target, ast.Name):
            if isinstance(val, (View, ShapeP, OpRef)):
                env[target.id] = val
                return
            if isinstance(val, (TileV, Scalar)) and not val.v.hint:
                val.v.hint = target.id
            env[target.id] = val
        elif isinstance(target, ast.Tuple):
            if not isinstance(val, tuple) or len(val) != len(target.elts):
                raise self.err(node, f"cannot unpack into {len(target.elts)} names",
                               "match the number of names to the values on the right")
            for t, v in zip(target.elts, val):
                self.assign(t, v, env, node)
        else:
            raise self.err(target, "only names can be assigned in a kernel",
                           "write into tensors with ts.tile.store(X[...], value)")

    # ---- loops
    def for_(self, s: ast.For, env, top):
        it = s.iter
        if s.orelse:
            raise self.err(s, "`for ... else` is not supported", "remove the else branch")
        if not isinstance(s.target, ast.Name):
            raise self.err(s.target, "a loop variable must be a single name", "write `for i in ts.tile.range(...)`")
        fn = self.expr(it.func, env) if isinstance(it, ast.Call) else None
        if fn is builtins.range:
            return self.static_for(s, env)
        if not (isinstance(fn, OpRef) and fn.name == "range"):
            raise self.err(it, "kernels loop over ts.tile.range(...) (or a builtin range with constant bounds)",
                           "write `for i in ts.tile.range(start, stop, step=...)`")
        args = [self.expr(a, env) for a in it.args]
        kw = {k.arg: (self.expr(k.value, env), k.value) for k in it.keywords}
        for k in kw:
            if k not in ("step", "num_stages", "parallel"):
                raise self.err(it, f"ts.tile.range() has no keyword {k!r}", "use step=, num_stages= or parallel=")
        if len(args) == 1:
            lo, hi, step = 0, args[0], None
        elif len(args) in (2, 3):
            lo, hi = args[0], args[1]
            step = args[2] if len(args) == 3 else None
        else:
            raise self.err(it, "ts.tile.range takes (stop) or (start, stop[, step])", "e.g. ts.tile.range(N, step=128)")
        if "step" in kw:
            step = kw["step"][0]
        step = 1 if step is None else self.static_int(step, kw.get("step", (None, it))[1] or it, "the loop step")
        if step <= 0:
            raise self.err(it, f"the loop step must be positive, got {step}", "use a positive step")
        par = kw.get("parallel", (None,))[0]
        auto = (top or getattr(self, "_sole_in_parallel", False)) and not self.parallel_done and par is None
        if par is True or (auto and self.loop_depth == len(self.axes)):
            return self.parallel_for(s, env, lo, hi, step, top)
        stages = kw.get("num_stages", (None,))[0]
        stages = self.default_stages if stages is None else self.static_int(stages, it, "num_stages")
        return self.seq_for(s, env, lo, hi, step, stages)

    def static_for(self, s, env):
        vals = [self.static_int(self.expr(a, env), a, "a builtin range bound") for a in s.iter.args]
        rng = builtins.range(*vals)
        if len(rng) > MAX_UNROLL:
            raise self.err(s.iter, f"a builtin range is unrolled at compile time; {len(rng)} iterations is too many",
                           "use ts.tile.range(...) for long loops")
        for i in rng:
            env[s.target.id] = i
            self.block(s.body, env)

    def host_of(self, x, node, what):
        if isinstance(x, int) and not isinstance(x, bool):
            return ["const", x]
        if isinstance(x, Scalar) and x.host is not None:
            return x.host
        raise self.err(node, f"{what} of a parallel loop must be known at launch (shapes, int parameters, "
                       "constants)", "compute the bound from X.shape[...] or int parameters, or pass parallel=False")

    def parallel_for(self, s, env, lo, hi, step, top):
        if self.parallel_done:
            raise self.err(s, "a kernel has one nest of parallel loops; this loop starts a second one",
                           "nest it inside the first, or write parallel=False to run it sequentially")
        if self.uses_program_id:
            raise self.err(s, "a kernel that reads ts.tile.program_id cannot also have parallel loops",
                           "drop program_id and let the parallel loop index the work")
        if len(self.axes) >= 3:
            raise self.err(s, "at most 3 parallel loops can be nested", "make the innermost loops sequential")
        it = s.iter
        count = ["cdiv", ["sub", self.host_of(hi, it, "the stop"), self.host_of(lo, it, "the start")], ["const", step]]
        axis = len(self.axes)
        self.axes.append(ParallelAxis(count, s))
        # iterations run concurrently: nothing may flow from one iteration into the next
        outer = {k for k, v in env.items() if not isinstance(v, Poisoned)}
        writes = set()
        for st in s.body:
            writes.update(stmt_writes(st))
        for name, node in exposed_reads(s.body, {s.target.id}):
            if name in writes and name in outer:
                raise self.err(node, f"`{name}` is read here before this iteration of the parallel loop "
                               f"`for {s.target.id} in ...` (line {self.src.line_of(s)}) assigns it, so it would "
                               "carry a value from one tile to the next; parallel iterations run at once and share "
                               "nothing", f"initialise `{name}` inside the loop body (move its alloc/fill below "
                               f"line {self.src.line_of(s)}), so each tile starts from its own state")
        lo_v = self.scalar(lo, it)
        iv_v = self.emit("for", [lo_v, self.scalar(hi, it), self.const(step)], s, parallel=True, axis=axis)
        op = self.b.block.ops[-1]
        body = ir.Block([ir.Value(ir.ScalarType(_dt.int32), s.target.id)], [])
        op.regions.append(body)
        inner = dict(env)
        hi_dim = hi.dim if isinstance(hi, Scalar) else None
        align = (step, hi_dim) if lo == 0 and hi_dim is not None else None
        inner[s.target.id] = Scalar(body.args[0], align=align)
        saved, self.b = self.b, ir.Builder(body)
        prev_sole = getattr(self, "_sole_in_parallel", False)
        real = [st for st in s.body if not (isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant))]
        self._sole_in_parallel = len(real) == 1 and isinstance(real[0], ast.For)
        self.loop_depth += 1
        try:
            self.block(s.body, inner)
        finally:
            self.loop_depth -= 1
            self._sole_in_parallel = prev_sole
        self.b.block.ops.append(ir.Op("yield", [], {}, [], line=self.src.line_of(s)))
        self.b = saved
        if axis == 0:
            self.parallel_done = True
        for k, v in inner.items():
            if k not in env or env[k] is not v:
                env[k] = Poisoned(s)

    def seq_for(self, s, env, lo, hi, step, stages):
        it = s.iter
        writes = []
        for st in s.body:
            for w in stmt_writes(st):
                if w not in writes:
                    writes.append(w)
        exposed = {n for n, _ in exposed_reads(s.body, {s.target.id})}
        carried = [w for w in writes if w in env and w in exposed and w != s.target.id and not isinstance(env[w], bool)
                   and isinstance(env[w], (TileV, Scalar, int, float))]
        inits = []
        for w in carried:
            v = env[w]
            if not isinstance(v, (TileV, Scalar)):
                v = Scalar(self.const(v))
            inits.append(v)
        lo_v, hi_v = self.scalar(lo, it), self.scalar(hi, it)
        self.b.line = self.src.line_of(s)
        o = ir.Op("for", [lo_v, hi_v, self.const(step)] + [v.v for v in inits],
                  {"parallel": False, "num_stages": stages}, [ir.Value(v.v.type, w) for v, w in zip(inits, carried)],
                  line=self.src.line_of(s))
        body = ir.Block([ir.Value(ir.ScalarType(_dt.int32), s.target.id)] +
                        [ir.Value(v.v.type, w) for v, w in zip(inits, carried)], [])
        o.regions.append(body)
        inner = dict(env)
        hi_dim = hi.dim if isinstance(hi, Scalar) else None
        align = (step, hi_dim) if lo == 0 and hi_dim is not None else None
        inner[s.target.id] = Scalar(body.args[0], align=align)
        for w, v, a in zip(carried, inits, body.args[1:]):
            inner[w] = TileV(a, v.masks) if isinstance(v, TileV) else Scalar(a)
        saved, self.b = self.b, ir.Builder(body)
        self.loop_depth += 1
        try:
            self.block(s.body, inner)
        finally:
            self.loop_depth -= 1
        outs = []
        for w, v0 in zip(carried, inits):
            v = inner[w]
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                v = Scalar(self.const(v, v0.v.type.dtype))
            if not isinstance(v, (TileV, Scalar)) or v.v.type != v0.v.type:
                got = v.v.type if isinstance(v, (TileV, Scalar)) else type(v).__name__
                raise self.err(s, f"`{w}` enters this loop as {v0.v.type} but the body rebinds it to {got}; a value "
                               "carried by a loop keeps its type", f"cast it: `{w} = ts.tile.cast(..., dtype)`, or "
                               "give its initial value the same shape and dtype")
            outs.append(v)
        self.b.block.ops.append(ir.Op("yield", [v.v for v in outs], {}, [], line=self.src.line_of(s)))
        self.b = saved
        self.b.block.ops.append(o)
        inner_ids = self._ids_in(body)
        for w, v, r, v0 in zip(carried, outs, o.results, inits):
            if isinstance(v, TileV):
                masks = tuple(m if m is not None and m.v.id not in inner_ids else None for m in v.masks)
                env[w] = TileV(r, masks)
            else:
                env[w] = Scalar(r)
        for k, v in inner.items():
            if k != s.target.id and k not in carried and (k not in env or env[k] is not v):
                env[k] = v if isinstance(v, (int, float, bool, _dt.DType)) and env.get(k, v) == v else Poisoned(s, False)

    @staticmethod
    def _ids_in(block) -> set:
        """Ids of every value defined inside ``block`` (arguments and results, nested blocks too)."""
        ids = set()

        def walk(b):
            ids.update(a.id for a in b.args)
            for o in b.ops:
                ids.update(r.id for r in o.results)
                for r in o.regions:
                    walk(r)
        walk(block)
        return ids

    # ---- expressions
    def name(self, ident, env, node):
        if ident in env:
            v = env[ident]
            if isinstance(v, Poisoned) and not v.parallel:
                raise self.err(node, f"`{ident}` is assigned inside the loop at line {self.src.line_of(v.loop)} "
                               "but the loop never reads it, so it does not carry it out of the loop",
                               f"read `{ident}` inside the loop where it is computed, or initialise it before the "
                               "loop and update it from its previous value")
            if isinstance(v, Poisoned):
                lp = v.loop
                raise self.err(node, f"`{ident}` is assigned inside the parallel loop `for "
                               f"{getattr(lp.target, 'id', '?')} in ...` (line {self.src.line_of(lp)}), whose "
                               "iterations are separate tiles; after the loop it has no single value",
                               "use it inside the loop: e.g. store each tile's result there, "
                               f"ts.tile.store(O[{getattr(lp.target, 'id', 'i')}:{getattr(lp.target, 'id', 'i')}+BLOCK],"
                               " value), indexed by the loop variable")
            return v
        if ident in self.globals:
            return self.resolve(self.globals[ident], ident, node)
        if hasattr(builtins, ident):
            return self.resolve(getattr(builtins, ident), ident, node)
        raise self.err(node, f"name `{ident}` is not defined in the kernel",
                       "define it above, or pass it as a parameter")

    def resolve(self, obj, ident, node):
        import torch

        if self.kernel_obj is not None and (obj is self.kernel_obj or obj is getattr(self.kernel_obj, "fn", None)):
            raise self.err(node, f"the kernel calls itself (`{ident}`); recursion cannot be compiled",
                           "write the recursion as a ts.tile.range loop")
        if isinstance(obj, torch.Tensor) or hasattr(obj, "_data") and isinstance(getattr(obj, "_data"), torch.Tensor):
            raise self.err(node, f"the kernel reads the tensor `{ident}` from the enclosing scope; kernels only see "
                           "tensors passed as parameters", f"add `{ident}: ts.Tile[...]` to the kernel's parameters "
                           "and pass the tensor when calling it")
        for op in _ops.OP_DOCS:
            if obj is getattr(_ops, op):
                return OpRef(op)
        return obj

    def expr(self, e, env, stmt=False):
        if isinstance(e, ast.Constant):
            return e.value
        if isinstance(e, ast.Name):
            return self.name(e.id, env, e)
        if isinstance(e, ast.Attribute):
            return self.attribute(e, env)
        if isinstance(e, ast.Subscript):
            return self.subscript(e, env)
        if isinstance(e, ast.BinOp):
            return self.binop(type(e.op), self.expr(e.left, env), self.expr(e.right, env), e)
        if isinstance(e, ast.UnaryOp):
            x = self.expr(e.operand, env)
            if isinstance(e.op, ast.USub):
                return -x if self.is_static(x) else self.binop(ast.Sub, 0, x, e) if isinstance(x, Scalar) \
                    else self.unary("neg", x, e)
            if isinstance(e.op, ast.UAdd):
                return x
            if isinstance(e.op, ast.Not) and self.is_static(x):
                return not x
            if isinstance(e.op, (ast.Not, ast.Invert)):
                return self.unary("not", x, e)
        if isinstance(e, ast.Compare):
            if len(e.ops) != 1:
                raise self.err(e, "chained comparisons are not supported", "split them: (a < b) & (b < c)")
            return self.binop(type(e.ops[0]), self.expr(e.left, env), self.expr(e.comparators[0], env), e)
        if isinstance(e, ast.BoolOp):
            vals = [self.expr(v, env) for v in e.values]
            if all(self.is_static(v) for v in vals):
                r = vals[0]
                for v in vals[1:]:
                    r = (r and v) if isinstance(e.op, ast.And) else (r or v)
                return r
            r = vals[0]
            for v in vals[1:]:
                r = self.binop(ast.BitAnd if isinstance(e.op, ast.And) else ast.BitOr, r, v, e)
            return r
        if isinstance(e, ast.IfExp):
            c = self.expr(e.test, env)
            if not self.is_static(c):
                raise self.err(e, "a conditional expression on a runtime value cannot be compiled",
                               "use ts.tile.where(cond, a, b)")
            return self.expr(e.body if c else e.orelse, env)
        if isinstance(e, ast.Tuple):
            return tuple(self.expr(x, env) for x in e.elts)
        if isinstance(e, ast.Call):
            return self.call(e, env, stmt)
        if isinstance(e, (ast.Lambda, ast.ListComp, ast.GeneratorExp, ast.DictComp, ast.SetComp)):
            raise self.err(e, f"`{type(e).__name__}` is not supported in kernels (closures and comprehensions "
                           "cannot be compiled)", "write the computation with ts.tile ops directly")
        raise self.err(e, f"`{type(e).__name__}` expressions are not supported in kernels",
                       "use names, numbers, arithmetic, subscripts and ts.tile ops")

    @staticmethod
    def is_static(x):
        return isinstance(x, (int, float, bool)) or x is None

    def attribute(self, e, env):
        base = self.expr(e.value, env)
        a = e.attr
        if isinstance(base, types.ModuleType):
            if not hasattr(base, a):
                raise self.err(e, f"module {base.__name__} has no attribute {a!r}", "check the spelling")
            return self.resolve(getattr(base, a), a, e)
        if isinstance(base, TensorP):
            if a == "shape":
                return ShapeP(base)
            if a == "dtype":
                return base.dtype
            raise self.err(e, f"a Tile parameter has .shape and .dtype, not .{a}", "use X.shape[i] or X.dtype")
        if isinstance(base, TileV):
            if a == "T":
                return self.transpose(base, e)
            if a == "dtype":
                return base.dtype
            if a == "shape":
                return base.shape
            raise self.err(e, f"a tile has .T, .shape and .dtype, not .{a}", "use ts.tile ops on tiles")
        if isinstance(base, ContextV):
            raise self.err(e, "the tile context has no attributes; read ids with ts.tile.program_id(axis)",
                           "call ts.tile.program_id(axis) / ts.tile.num_programs(axis)")
        if not isinstance(base, (TileV, Scalar, View, ShapeP, OpRef, Poisoned, tuple)) and hasattr(base, a):
            return self.resolve(getattr(base, a), a, e)  # compile-time objects: dtypes, namespaces, numbers
        raise self.err(e, f"cannot take .{a} of this value in a kernel", "use ts.tile ops")

    def transpose(self, t: TileV, node):
        v = self.emit("trans", [t.v], node)
        return TileV(v, tuple(reversed(t.masks)))

    def subscript(self, e, env):
        base = self.expr(e.value, env)
        items = e.slice.elts if isinstance(e.slice, ast.Tuple) else [e.slice]
        if isinstance(base, TensorP):
            return self.view(base, items, env, e)
        if isinstance(base, ShapeP):
            i = self.static_int(self.expr(e.slice, env), e.slice, "a shape index")
            t = base.t
            if not -len(t.shape) <= i < len(t.shape):
                raise self.err(e, f"{t.name}.shape has {len(t.shape)} dims; index {i} is out of range",
                               f"use an index in 0..{len(t.shape) - 1}")
            i %= len(t.shape)
            v = self.emit("dim", [t.v], e, hint=f"{t.name}_size{i}", axis=i)
            return Scalar(v, static=t.shape[i], host=["dim", t.name, i], dim=t.spec.dims[i])
        if isinstance(base, TileV):
            out = base
            axis = 0
            n_none = sum(1 for it in items if isinstance(it, ast.Constant) and it.value is None)
            if len(items) - n_none != len(base.shape):
                raise self.err(e, f"a tile of shape {base.shape} takes one ':' per axis plus None for new axes",
                               "write t[:, None] or t[None, :]")
            for it in items:
                if isinstance(it, ast.Constant) and it.value is None:
                    v = self.emit("expand", [out.v], e, axis=axis)
                    m = list(out.masks)
                    m.insert(axis, None)
                    out = TileV(v, tuple(m))
                    axis += 1
                elif isinstance(it, ast.Slice) and it.lower is None and it.upper is None and it.step is None:
                    axis += 1
                else:
                    raise self.err(it, "tiles cannot be indexed or sliced inside a kernel, only expanded with None",
                                   "load the part you need from the Tile parameter, e.g. ts.tile.load(X[i:i+64])")
            return out
        if isinstance(base, tuple):
            return base[self.static_int(self.expr(e.slice, env), e.slice, "a tuple index")]
        raise self.err(e, "this value cannot be subscripted in a kernel", "subscript Tile parameters and tiles only")

    def view(self, t: TensorP, items, env, e):
        dims = len(t.shape) - (1 if t.batch else 0)
        if len(items) > dims:
            raise self.err(e, f"{t.name} has {dims} addressable dims{' (after its batch dim)' if t.batch else ''}, "
                           f"got {len(items)} subscripts", "drop the extra subscripts")
        entries = []
        for it in items:
            if isinstance(it, ast.Slice):
                if it.step is not None:
                    raise self.err(it, "strided slices are not supported", "load a contiguous tile: X[i:i+BLOCK]")
                if it.lower is None and it.upper is None:
                    entries.append(("full",))
                    continue
                start = 0 if it.lower is None else self.expr(it.lower, env)
                length = self.slice_length(it, env)
                if not _is_pow2(length):
                    raise self.err(it, f"a tile's length must be a power of two (Triton's tiles are), got {length}",
                                   f"use {next_pow2(length)}; the tail past the tensor's end is masked")
                entries.append(("slice", start, length, it))
            else:
                x = self.expr(it, env)
                if not isinstance(x, (int, Scalar)) or isinstance(x, bool) or (isinstance(x, Scalar)
                                                                               and x.dtype.kind != "int"):
                    raise self.err(it, "a subscript must be an int index or a slice start:start+LENGTH",
                                   "e.g. X[row, :] or X[i:i+128]")
                entries.append(("index", x, it))
        while len(entries) < dims:
            entries.append(("full",))
        return View(t, entries, e)

    def slice_length(self, sl: ast.Slice, env) -> int:
        up = sl.upper
        if sl.lower is None:
            return self.static_int(self.expr(up, env), up, "a slice's stop")
        lo = self.expr(sl.lower, env)
        if up is not None and isinstance(up, ast.BinOp) and isinstance(up.op, ast.Add) and \
                ast.dump(up.left) == ast.dump(sl.lower):
            return self.static_int(self.expr(up.right, env), up.right, "a slice's length")
        hi = self.expr(up, env) if up is not None else None
        if isinstance(lo, int) and isinstance(hi, int):
            return hi - lo
        raise self.err(sl, "a slice's length must be a compile-time constant",
                       "write it as X[i:i+BLOCK] with BLOCK a constant or constexpr parameter")

    def static_int(self, x, node, what):
        if isinstance(x, bool) or not isinstance(x, (int, Scalar)):
            raise self.err(node, f"{what} must be a compile-time int, got {type(x).__name__}",
                           "use an int constant or a constexpr parameter")
        if isinstance(x, int):
            return x
        if x.static is None or x.host is None or not isinstance(x.static, int):
            raise self.err(node, f"{what} must be known at compile time", "use a constant or a constexpr parameter")
        self.probe(x.host)
        return x.static

    def scalar(self, x, node) -> ir.Value:
        if isinstance(x, Scalar):
            return x.v
        if isinstance(x, (int, float)):
            return self.const(x)
        raise self.err(node, f"expected a scalar, got {type(x).__name__}", "pass an int or float")

    def val(self, x, node):
        """Any operand as an IR value (python numbers become constants)."""
        if isinstance(x, (TileV, Scalar)):
            return x.v
        if isinstance(x, (int, float, bool)):
            return self.const(x)
        if isinstance(x, View):
            raise self.err(node, f"`{x.t.name}[...]` is a view of a tensor in memory, not a tile",
                           f"load it first: ts.tile.load({x.t.name}[...])")
        if isinstance(x, TensorP):
            raise self.err(node, f"`{x.name}` is a tensor in memory, not a tile",
                           f"load a tile of it: ts.tile.load({x.name}[i:i+BLOCK])")
        raise self.err(node, f"{type(x).__name__} is not a value a kernel can compute with", "use tiles and numbers")

    def weak(self, x, other, node):
        """``x`` as a value; a Python number takes the dtype of the value it meets (as in torch)."""
        if isinstance(x, (int, float)) and not isinstance(x, bool) and isinstance(other, (TileV, Scalar)):
            dt = other.dtype
            if isinstance(x, float) and not dt.is_floating:
                dt = _dt.f32
            if dt.kind in ("float", "int"):
                return self.const(x, dt)
        return self.val(x, node)

    # ---- arithmetic
    _BIN = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.FloorDiv: "floordiv",
            ast.Mod: "mod", ast.Lt: "lt", ast.LtE: "le", ast.Gt: "gt", ast.GtE: "ge", ast.Eq: "eq", ast.NotEq: "ne",
            ast.BitAnd: "and", ast.BitOr: "or"}
    _PY = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
           "div": lambda a, b: a / b, "floordiv": lambda a, b: a // b, "mod": lambda a, b: a % b,
           "lt": lambda a, b: a < b, "le": lambda a, b: a <= b, "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b,
           "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "and": lambda a, b: a & b, "or": lambda a, b: a | b}

    def binop(self, optype, a, b, node):
        op = self._BIN.get(optype)
        if op is None:
            raise self.err(node, f"operator {optype.__name__} is not supported in kernels", "use + - * / // % and comparisons")
        if self.is_static(a) and self.is_static(b):
            return self._PY[op](a, b)
        if isinstance(a, _dt.DType) or isinstance(b, _dt.DType):
            raise self.err(node, "dtypes cannot be combined arithmetically", "use ts.tile.cast(x, dtype)")
        return self.arith(op, a, b, node)

    def arith(self, op, a, b, node):
        if isinstance(a, TileV) and isinstance(b, TileV) and {len(a.shape), len(b.shape)} == {1, 2}:
            one, two = (a, b) if len(a.shape) == 1 else (b, a)
            name = ast.unparse(node.left if one is a else node.right) if isinstance(node, ast.BinOp) else "v"
            raise self.err(node, f"combining a {list(one.shape)} tile with a {list(two.shape)} tile is ambiguous "
                           "(per row or per column?)",
                           f"write {name}[:, None] to apply it to each row, or {name}[None, :] for each column")
        va, vb = self.weak(a, b, node), self.weak(b, a, node)
        v = self.emit("binary", [va, vb], node, op=op)
        if not isinstance(a, TileV) and not isinstance(b, TileV):
            ha = a.host if isinstance(a, Scalar) else (["const", a] if isinstance(a, int) else None)
            hb = b.host if isinstance(b, Scalar) else (["const", b] if isinstance(b, int) else None)
            host = [op, ha, hb] if ha is not None and hb is not None and op in ("add", "sub", "mul", "floordiv") else None
            static = None
            sa = a.static if isinstance(a, Scalar) else a
            sb = b.static if isinstance(b, Scalar) else b
            if host is not None and isinstance(sa, int) and isinstance(sb, int) and not (op == "floordiv" and sb == 0):
                static = self._PY[op](sa, sb)
            return Scalar(v, static=static, host=host)
        return TileV(v, self.merge_masks(op, a, b, len(v.type.shape), node))

    def merge_masks(self, op, a, b, rank, node):
        def padded(x):
            if not isinstance(x, TileV):
                return (None,) * rank
            return (None,) * (rank - len(x.masks)) + tuple(
                m if s != 1 else None for m, s in zip(x.masks, x.shape))
        ma, mb = padded(a), padded(b)
        out = []
        for x, y in zip(ma, mb):
            if x is None and y is None:
                out.append(None)
            elif x is None or y is None or x.v is y.v:
                m = x or y
                if op == "mul":
                    zero = (x is not None and x.zero) or (y is not None and y.zero)
                elif op in ("add", "sub"):
                    zero = x is not None and y is not None and x.zero and y.zero
                else:
                    zero = False
                out.append(AxisMask(m.v, zero))
            else:
                v = self.emit("binary", [x.v, y.v], node, op="and")
                out.append(AxisMask(v, False))
        return tuple(out)

    def unary(self, fn, x, node):
        if isinstance(x, (int, float)) and fn in ("exp", "log", "sqrt", "erf", "tanh"):
            return getattr(math, fn)(x)
        if not isinstance(x, (TileV, Scalar)):
            x = Scalar(self.val(x, node))
        v = x.v
        if fn not in ("neg", "abs", "not") and v.type.dtype.is_floating and v.type.dtype.bits < 32:
            v = self.emit("cast", [v], node, dtype=_dt.f32)
        if fn not in ("neg", "abs", "not") and not v.type.dtype.is_floating:
            v = self.emit("cast", [v], node, dtype=_dt.f32)
        r = self.emit("unary", [v], node, fn=fn)
        if isinstance(x, TileV):
            return TileV(r, tuple(None if m is None else AxisMask(m.v, m.zero and fn in ("neg", "abs", "sqrt",
                                                                                          "erf", "tanh", "gelu",
                                                                                          "gelu_tanh"))
                                  for m in x.masks))
        return Scalar(r)

    def where_mask(self, t: TileV, axis: int, fill, node) -> TileV:
        """Replace the padding of ``t`` along ``axis`` by ``fill``."""
        m = t.masks[axis]
        if m is None:
            return t
        mv = m.v
        rank = len(t.shape)
        for j in range(rank):
            if j != axis:
                mv = self.emit("expand", [mv], node, axis=j if j < axis else j)
        v = self.emit("where", [mv, t.v, self.const(fill, t.dtype if t.dtype.is_floating else _dt.int32)], node)
        masks = list(t.masks)
        masks[axis] = AxisMask(m.v, fill == 0)
        return TileV(v, tuple(masks))

    # ---- calls
    def call(self, e: ast.Call, env, stmt):
        fn = self.expr(e.func, env)
        if isinstance(fn, OpRef):
            handler = getattr(self, "op_" + fn.name)
            return handler(e, env)
        if fn in (builtins.float, builtins.int, builtins.abs, builtins.min, builtins.max, builtins.bool) or \
                (callable(fn) and getattr(fn, "__module__", None) == "math"):
            args = [self.expr(a, env) for a in e.args]
            if all(self.is_static(a) or isinstance(a, str) for a in args) and not e.keywords:
                return fn(*args)
            raise self.err(e, f"`{ast.unparse(e.func)}` is evaluated at compile time and needs constant arguments",
                           "use ts.tile ops (ts.tile.maximum, ts.tile.cast, ts.tile.exp, ...) on runtime values")
        if fn is builtins.range:
            raise self.err(e, "range() is only allowed as a for-loop's iterable", "loop with ts.tile.range(...)")
        if isinstance(fn, _dt.DType):
            raise self.err(e, "dtypes are not callable in kernels", f"use ts.tile.cast(x, {fn.name})")
        if callable(fn):
            raise self.err(e, f"`{ast.unparse(e.func)}` is a Python function; only ts.tile ops can be called in a "
                           "kernel (helper calls, recursion and closures are not compiled)",
                           "inline its body into the kernel using ts.tile ops")
        raise self.err(e, f"`{ast.unparse(e.func)}` is not callable", "call ts.tile ops")

    def args(self, e, env, names, defaults=None):
        """Bind a call's positional and keyword arguments to ``names``."""
        defaults = defaults or {}
        vals = {}
        if len(e.args) > len(names):
            raise self.err(e, f"ts.tile.{op_name(e)}() takes at most {len(names)} positional arguments",
                           f"signature: ({', '.join(names)})")
        for n, a in zip(names, e.args):
            vals[n] = (self.expr(a, env), a)
        for k in e.keywords:
            if k.arg not in names:
                raise self.err(k.value, f"ts.tile.{op_name(e)}() has no argument {k.arg!r}",
                               f"signature: ({', '.join(names)})")
            vals[k.arg] = (self.expr(k.value, env), k.value)
        for n in names:
            if n not in vals:
                if n not in defaults:
                    raise self.err(e, f"ts.tile.{op_name(e)}() is missing its argument {n!r}",
                                   f"signature: ({', '.join(names)})")
                vals[n] = (defaults[n], e)
        return vals
