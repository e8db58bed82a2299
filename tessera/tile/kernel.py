"""The ``@ts.kernel`` decorator and the :class:`Kernel` object: lower, compile, cache, launch, autotune.

Example:
    >>> import torch, tessera.tile as tile
    >>> @tile.kernel
    ... def add_one(X: tile.Tile["N"], Y: tile.Tile["N"], BLOCK: tile.constexpr = 32):
    ...     for i in tile.range(X.shape[0], step=BLOCK):
    ...         tile.store(Y[i:i + BLOCK], tile.load(X[i:i + BLOCK]) + 1.0)
    >>> x = torch.arange(40, dtype=torch.float32); y = torch.empty(40)
    >>> add_one(x, y); bool((y == x + 1).all())
    True
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import itertools
import math
import os
import tempfile
import textwrap
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from .. import dtypes as _dt
from ..errors import (TesseraCompileError, TesseraDeviceError, TesseraDTypeError, TesseraShapeError,
                      TesseraTypeError, TesseraValueError)
from ..runtime.disk_cache import DiskCache, default_root
from . import codegen, ir
from .annotations import TileSpec, constexpr
from .errors import SourceInfo
from .frontend import Frontend, LoweredIR

#: bump when the generated code for the same kernel source changes
COMPILER_VERSION = 3


def _compiler_hash() -> str:
    """A hash of the compiler's own source, so that a changed compiler never reuses stale generated code."""
    h = hashlib.sha256(str(COMPILER_VERSION).encode())
    d = os.path.dirname(os.path.abspath(__file__))
    for name in sorted(os.listdir(d)):
        if name.endswith(".py"):
            with open(os.path.join(d, name), "rb") as f:
                h.update(name.encode() + b"\0" + f.read())
    return h.hexdigest()


_COMPILER_HASH = _compiler_hash()
_TUNING_KEYS = ("num_warps", "num_stages")


# ---------------------------------------------------------------- host expressions
def host_eval(e, env: dict):
    """Evaluate a launch-time expression (``["cdiv", ["dim", "Q", 1], ["const", 128]]``) on a call's values."""
    k = e[0]
    if k == "const":
        return e[1]
    if k == "dim":
        return env["shapes"][e[1]][e[2]]
    if k == "arg":
        return env["scalars"][e[1]]
    if k == "divisible":
        return host_eval(e[1], env) % e[2] == 0
    a, b = host_eval(e[1], env), host_eval(e[2], env)
    if k == "add":
        return a + b
    if k == "sub":
        return a - b
    if k == "mul":
        return a * b
    if k == "floordiv":
        return a // b
    if k == "cdiv":
        return max(0, -(-a // b))
    raise TesseraValueError(f"unknown host expression {k!r}")


# ---------------------------------------------------------------- generated source files
def _src_dir() -> str:
    return os.path.join(default_root(), "tile_src")


def _load_module(source: str, fn_name: str):
    """Write ``source`` to a content-addressed file (atomically; a corrupt file is rewritten) and import it."""
    digest = hashlib.sha256(source.encode()).hexdigest()
    d = _src_dir()
    path = os.path.join(d, f"k_{digest[:32]}.py")
    ok = False
    try:
        with open(path, "r", encoding="utf-8") as f:
            ok = hashlib.sha256(f.read().encode()).hexdigest() == digest
    except OSError:
        ok = False
    if not ok:
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(source)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(f"tessera_tile_{digest[:24]}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, fn_name), path


# ---------------------------------------------------------------- results of lowering
@dataclass
class Lowered:
    """A kernel lowered for one specialization: its Tile IR, its Triton source and how to launch it.

    Example:
        >>> import torch, tessera.tile as tile
        >>> @tile.kernel
        ... def neg(X: tile.Tile["N"], Y: tile.Tile["N"]):
        ...     for i in tile.range(X.shape[0], step=16):
        ...         tile.store(Y[i:i + 16], -tile.load(X[i:i + 16]))
        >>> low = neg.lower(torch.ones(20), torch.ones(20))
        >>> "tl.load" in low.as_triton(), "load(" in low.as_tile_ir()
        (True, True)
    """
    plan: Dict[str, Any]
    ir_fn: Optional[ir.Function] = None
    _jit: Any = None
    _interp: Any = None
    grid: Optional[tuple] = None

    def as_triton(self) -> str:
        """The generated Triton source."""
        return self.plan["source"]

    def as_tile_ir(self) -> str:
        """The Tile IR as text (re-lowered if this came from the disk cache)."""
        return self.plan.get("tile_ir", "") if self.ir_fn is None else ir.print_function(self.ir_fn)

    def __str__(self):
        return self.as_tile_ir()

    @property
    def num_warps(self) -> int:
        return self.plan["num_warps"]

    @property
    def num_stages(self) -> int:
        return self.plan["num_stages"]

    def function(self, on_cpu: bool):
        """The Triton kernel object: interpreted on the CPU, JIT-compiled on CUDA."""
        if on_cpu:
            if self._interp is None:
                from triton.runtime.interpreter import InterpretedFunction

                fn, _ = _load_module(self.plan["source"], self.plan["fn_name"])
                self._interp = InterpretedFunction(fn)
            return self._interp
        if self._jit is None:
            import triton

            fn, _ = _load_module(self.plan["source"], self.plan["fn_name"])
            self._jit = triton.jit(fn)
        return self._jit


@dataclass
class _Call:
    tensors: Dict[str, Any]
    scalars: Dict[str, Any]
    constexprs: Dict[str, Any]
    tuning: Dict[str, Any]
    device: Any
    env: Dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- the kernel
class Kernel:
    """A tile kernel written in Python (see docs/tile.md). Call it like a function on tensors.

    ``kernel(*args, grid=None, **constexprs)`` launches it: tensors may be ``ts.Tensor`` or torch
    tensors; on CUDA tensors it runs the compiled Triton kernel, on CPU tensors the same
    kernel runs through Triton's interpreter. ``kernel.lower(*args)`` returns a :class:`Lowered`
    whose ``as_triton()`` / ``as_tile_ir()`` show the generated code.
    """

    def __init__(self, fn, autotune: Optional[Dict[str, list]] = None, num_warps: Optional[int] = None,
                 num_stages: Optional[int] = None, batch: Optional[bool] = None, outputs=None,
                 cache_dir: Optional[str] = None):
        self.fn = fn
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        self.num_warps, self.num_stages, self.batch = num_warps, num_stages, batch
        self.cache_dir = cache_dir
        try:
            raw = inspect.getsource(fn)
            filename = inspect.getsourcefile(fn) or "<kernel>"
            first = fn.__code__.co_firstlineno
        except (OSError, TypeError):
            raise TesseraCompileError(f"@ts.kernel needs the source of '{fn.__name__}' (define it in a file, not "
                                      "in an interactive prompt or exec)") from None
        lines = raw.splitlines()
        dedent = len(lines[0]) - len(lines[0].lstrip())
        src = textwrap.dedent(raw)
        tree = ast.parse(src)
        fdef = tree.body[0]
        if not isinstance(fdef, ast.FunctionDef):
            raise TesseraCompileError("@ts.kernel decorates a function")
        self._fdef = fdef
        self._src = SourceInfo(filename, first, src.splitlines(), dedent, fn.__name__)
        self._hash = hashlib.sha256(f"{_COMPILER_HASH}\n{src}".encode()).hexdigest()
        self._params = self._read_params(fn, outputs)
        self.autotune = self._check_autotune(autotune or {})
        self._probes: Dict[str, list] = {}
        self._variants: Dict[str, Lowered] = {}
        self._tuned: Dict[str, dict] = {}
        self.tune_log: Dict[str, list] = {}  # autotune key -> [(ms, config), ...] of the last tuning run

    # ---- signature
    def _read_params(self, fn, outputs):
        sig = inspect.signature(fn)
        out = []
        names = list(sig.parameters)
        if outputs is not None:
            outputs = (outputs,) if isinstance(outputs, str) else tuple(outputs)
            for o in outputs:
                if o not in names:
                    raise TesseraValueError(f"@ts.kernel(outputs=...): '{fn.__name__}' has no parameter {o!r}")
        for name, p in sig.parameters.items():
            a = p.annotation
            node = next(x for x in self._fdef.args.args if x.arg == name) if any(
                x.arg == name for x in self._fdef.args.args) else self._fdef
            if isinstance(a, str):
                a = self._annotation_from_text(fn, name, a, node)
            if isinstance(a, TileSpec):
                writable = not a.read_only and (outputs is None or name in outputs)
                out.append(dict(name=name, kind="tensor", spec=a, writable=writable))
            elif a is float or a is int:
                out.append(dict(name=name, kind="scalar", py=a))
            elif a is constexpr or a is bool:
                default = None if p.default is inspect.Parameter.empty else p.default
                out.append(dict(name=name, kind="constexpr", default=default))
            else:
                raise self._src.error(node, f"parameter '{name}' needs an annotation: ts.Tile[...], float, int, or "
                                      "ts.tile.constexpr", f"e.g. `{name}: ts.Tile['M', 'N', ts.bf16]` or "
                                      f"`{name}: ts.tile.constexpr = 128`")
        return out

    def _annotation_from_text(self, fn, name, text, node):
        """Resolve a string annotation (``from __future__ import annotations``) without eval: names,
        attributes, subscripts and constants only."""
        scope = {**fn.__globals__, **_closure_vars(fn)}

        def ev(e):
            if isinstance(e, ast.Constant):
                return e.value
            if isinstance(e, ast.Name):
                if e.id in scope:
                    return scope[e.id]
                import builtins

                if hasattr(builtins, e.id):
                    return getattr(builtins, e.id)
                raise KeyError(e.id)
            if isinstance(e, ast.Attribute):
                return getattr(ev(e.value), e.attr)
            if isinstance(e, ast.Subscript):
                return ev(e.value)[ev(e.slice)]
            if isinstance(e, ast.Tuple):
                return tuple(ev(x) for x in e.elts)
            raise ValueError(type(e).__name__)

        try:
            return ev(ast.parse(text, mode="eval").body)
        except Exception:
            raise self._src.error(node, f"parameter '{name}' has the annotation {text!r}, which is not a "
                                  "ts.Tile[...], float, int or ts.tile.constexpr made of module-level names",
                                  f"write e.g. `{name}: ts.Tile['M', 'N', ts.bf16]`, with `ts` imported at module "
                                  "level") from None

    def _check_autotune(self, space):
        cx = {p["name"] for p in self._params if p["kind"] == "constexpr"}
        for k, vals in space.items():
            if k not in cx and k not in _TUNING_KEYS:
                raise TesseraValueError(f"@ts.kernel(autotune=...): {k!r} is neither a constexpr parameter of "
                                        f"'{self.__name__}' nor one of {_TUNING_KEYS}; declare `{k}: "
                                        "ts.tile.constexpr` or drop it")
            if not isinstance(vals, (list, tuple)) or not vals:
                raise TesseraValueError(f"@ts.kernel(autotune=...): {k!r} needs a non-empty list of values")
        return {k: list(v) for k, v in space.items()}

    # ---- argument binding
    def _bind(self, args, kwargs) -> _Call:
        from ..interop import to_torch

        ps = self._params
        if len(args) > len(ps):
            raise TesseraTypeError(f"{self.__name__}() takes {len(ps)} arguments, got {len(args)}")
        given = {p["name"]: a for p, a in zip(ps, args)}
        for k, v in kwargs.items():
            if k in given:
                raise TesseraTypeError(f"{self.__name__}() got argument {k!r} twice")
            if k not in {p["name"] for p in ps} and k not in _TUNING_KEYS:
                raise TesseraTypeError(f"{self.__name__}() has no parameter {k!r}; parameters: "
                                       f"{', '.join(p['name'] for p in ps)}")
            given[k] = v
        tensors, scalars, cx, tuning = {}, {}, {}, {}
        for k in _TUNING_KEYS:
            if k in given:
                tuning[k] = int(given.pop(k))
        bound: Dict[str, int] = {}
        device = None
        for p in ps:
            name = p["name"]
            if p["kind"] == "constexpr":
                if name in given:
                    cx[name] = given[name]
                elif name in self.autotune:
                    cx[name] = None  # chosen by the tuner
                elif p["default"] is not None:
                    cx[name] = p["default"]
                else:
                    raise TesseraTypeError(f"{self.__name__}(): constexpr parameter {name!r} needs a value; pass "
                                           f"{name}=... or give it a default")
                continue
            if name not in given:
                raise TesseraTypeError(f"{self.__name__}() is missing argument {name!r}")
            v = given[name]
            if p["kind"] == "scalar":
                if p["py"] is int and (not isinstance(v, int) or isinstance(v, bool)):
                    raise TesseraTypeError(f"{self.__name__}(): {name!r} is an int parameter, got {type(v).__name__}")
                if p["py"] is float and (not isinstance(v, (int, float)) or isinstance(v, bool)):
                    raise TesseraTypeError(f"{self.__name__}(): {name!r} is a float parameter, got {type(v).__name__}")
                scalars[name] = float(v) if p["py"] is float else v
                continue
            try:
                t = to_torch(v)
            except Exception:
                raise TesseraTypeError(f"{self.__name__}(): {name!r} must be a ts.Tensor or torch.Tensor, got "
                                       f"{type(v).__name__}") from None
            spec: TileSpec = p["spec"]
            if t.dim() != spec.rank:
                raise TesseraShapeError(f"{self.__name__}(): {name!r} is annotated {spec} ({spec.rank} dims) but has "
                                        f"shape {tuple(t.shape)}; reshape it to {spec.rank} dims")
            dt = _dt.from_torch(t.dtype)
            if spec.dtype is not None and dt != spec.dtype.storage:
                raise TesseraDTypeError(f"{self.__name__}(): {name!r} is annotated {spec.dtype.name} but has dtype "
                                        f"{dt.name}; convert it with .to({spec.dtype.name})")
            for d, (dim, size) in enumerate(zip(spec.dims, t.shape)):
                key = str(dim)
                syms = dim.free_symbols()
                if dim.is_constant:
                    if dim.constant_value != size:
                        raise TesseraShapeError(f"{self.__name__}(): {name!r} dim {d} must be {dim.constant_value}, "
                                                f"got {size}")
                elif syms and all(s in bound for s in syms):
                    want = dim.evaluate(bound)
                    if want != size:
                        raise TesseraShapeError(f"{self.__name__}(): {name!r} dim {d} is {key} = {want} (bound by "
                                                f"earlier arguments) but has size {size}")
                elif key in bound:
                    if bound[key] != size:
                        raise TesseraShapeError(f"{self.__name__}(): {name!r} dim {d} is {key} = {bound[key]} (bound "
                                                f"by earlier arguments) but has size {size}")
                else:
                    bound[key] = size
            if device is None:
                device = t.device
            elif t.device != device:
                raise TesseraDeviceError(f"{self.__name__}(): {name!r} is on {t.device} but earlier tensors are on "
                                         f"{device}; move them to one device")
            tensors[name] = t
        call = _Call(tensors, scalars, cx, tuning, device)
        call.env = {"shapes": {k: tuple(t.shape) for k, t in tensors.items()}, "scalars": scalars}
        return call

    # ---- specialization keys
    def _sig(self, call: _Call, config: dict) -> str:
        parts = {
            "tensors": {k: [_dt.from_torch(t.dtype).name, t.dim(), t.numel() >= 2 ** 31] for k, t in
                        call.tensors.items()},
            "scalars": {k: type(v).__name__ for k, v in call.scalars.items()},
            "config": {k: repr(v) for k, v in sorted(config.items())},
            "batch": self.batch,
        }
        import json

        return json.dumps(parts, sort_keys=True)

    def _cache(self) -> DiskCache:
        return DiskCache("tile", root=self.cache_dir)

    def _frontend_params(self, call: _Call, config: dict):
        out = []
        for p in self._params:
            if p["kind"] == "tensor":
                t = call.tensors[p["name"]]
                out.append(dict(name=p["name"], kind="tensor", spec=p["spec"], shape=tuple(t.shape),
                                dtype=_dt.from_torch(t.dtype), writable=p["writable"]))
            elif p["kind"] == "scalar":
                dt = _dt.f32 if p["py"] is float else _dt.int32
                out.append(dict(name=p["name"], kind="scalar", dtype=dt, value=call.scalars[p["name"]]))
            else:
                out.append(dict(name=p["name"], kind="constexpr", value=config[p["name"]]))
        return out

    def _lower_ir(self, call: _Call, config: dict) -> LoweredIR:
        fe = Frontend(self._src, self._fdef, self.fn.__globals__ | _closure_vars(self.fn),
                      self._frontend_params(call, config), self.batch, kernel_obj=self,
                      default_stages=config.get("num_stages") or 3)
        low = fe.run()
        ir.verify(low.fn)
        return low

    def _plan(self, low: LoweredIR, call: _Call, config: dict) -> dict:
        wide = {k: t.numel() >= 2 ** 31 for k, t in call.tensors.items()}
        source, args = codegen.generate(low.fn, wide)
        warps = config.get("num_warps") or self._default_warps(low)
        stages = config.get("num_stages") or (3 if low.has_loop_loads else 2)
        return {"source": source, "fn_name": low.fn.name, "args": args, "counts": [a.count for a in low.axes],
                "batch": low.batch, "num_warps": warps, "num_stages": stages,
                "uses_program_id": low.uses_program_id, "probes": low.probes,
                "tile_ir": ir.print_function(low.fn)}

    def _default_warps(self, low: LoweredIR) -> int:
        if self.num_warps:
            return self.num_warps
        if low.max_dot:
            return 8 if low.max_dot >= 128 * 128 else 4
        t = low.max_tile
        return 16 if t >= 16384 else 8 if t >= 2048 else 4

    def _config(self, call: _Call, choice: Optional[dict] = None) -> dict:
        cfg = dict(call.constexprs)
        choice = choice or {}
        for k, vals in self.autotune.items():
            if k in choice:
                cfg[k] = choice[k]
            elif cfg.get(k) is None:
                cfg[k] = vals[0]
        for k in _TUNING_KEYS:
            if k in call.tuning:
                cfg[k] = call.tuning[k]
            elif k not in cfg:
                v = self.num_warps if k == "num_warps" else self.num_stages
                if v is not None:
                    cfg[k] = v
        return cfg

    def _variant(self, call: _Call, config: dict) -> Lowered:
        sig = self._sig(call, config)
        cache = self._cache()
        probes = self._probes.get(sig)
        if probes is None:
            probes = cache.get({"kernel": self._hash, "sig": sig, "what": "probes"})
        if probes is not None:
            key = sig + "|" + repr([host_eval(p, call.env) for p in probes])
            v = self._variants.get(key)
            if v is not None:
                return v
            plan = cache.get({"kernel": self._hash, "key": key})
            if plan is not None and isinstance(plan, dict) and "source" in plan:
                v = Lowered(plan)
                self._variants[key] = v
                self._probes[sig] = probes
                return v
        low = self._lower_ir(call, config)
        plan = self._plan(low, call, config)
        probes = low.probes
        key = sig + "|" + repr([host_eval(p, call.env) for p in probes])
        self._probes[sig] = probes
        cache.put({"kernel": self._hash, "sig": sig, "what": "probes"}, probes)
        cache.put({"kernel": self._hash, "key": key}, plan)
        v = Lowered(plan, low.fn)
        self._variants[key] = v
        return v

    # ---- public API
    def lower(self, *args, **kwargs) -> Lowered:
        """Lower for these arguments (no launch): ``kernel.lower(q, k, v, o, 0.1).as_triton()``.

        Example:
            >>> import torch, tessera.tile as tile
            >>> @tile.kernel
            ... def cp(X: tile.Tile["N"], Y: tile.Tile["N"]):
            ...     for i in tile.range(X.shape[0], step=16):
            ...         tile.store(Y[i:i + 16], tile.load(X[i:i + 16]))
            >>> cp.lower(torch.ones(3), torch.ones(3)).grid
            (1, 1)
        """
        grid = kwargs.pop("grid", None)
        call = self._bind(args, kwargs)
        config = self._config(call, self._tuned.get(self._tune_key(call)))
        v = self._variant(call, config)
        if v.ir_fn is None:  # from the disk cache: lower again to show the IR
            v = Lowered(v.plan, self._lower_ir(call, config).fn, v._jit, v._interp)
        v.grid = self._grid(v.plan, call, grid) if grid is not None or not v.plan["uses_program_id"] else None
        return v

    def _grid(self, plan, call: _Call, grid):
        if grid is not None:
            if callable(grid):
                grid = grid(call.env)
            grid = tuple(grid) if isinstance(grid, (tuple, list)) else (grid,)
            if plan["counts"] or plan["batch"]:
                raise TesseraValueError(f"{self.__name__}: grid= is only for kernels without parallel loops (their "
                                        "grid comes from the loops); drop grid=")
            return grid
        if plan["uses_program_id"]:
            raise TesseraValueError(f"{self.__name__} reads ts.tile.program_id, so its grid cannot be derived; pass "
                                    "grid=(n,) when calling it")
        counts = [host_eval(c, call.env) for c in plan["counts"]]
        n = math.prod(counts) if counts else 1
        b = call.tensors[plan["batch"]].shape[0] if plan["batch"] else 1
        if b > 65535:
            raise TesseraValueError(f"{self.__name__}: the batch dim is {b}, above the grid limit 65535; reshape so "
                                    "the batch is smaller or loop over it with ts.tile.range")
        return (n, b)

    def _launch(self, v: Lowered, call: _Call, grid):
        if any(g == 0 for g in grid):
            return
        counts = [host_eval(c, call.env) for c in v.plan["counts"]]
        args = []
        for a in v.plan["args"]:
            if a[0] == "ptr":
                args.append(call.tensors[a[1]])
            elif a[0] == "size":
                args.append(call.tensors[a[1]].shape[a[2]])
            elif a[0] == "stride":
                args.append(call.tensors[a[1]].stride(a[2]))
            elif a[0] == "scalar":
                args.append(call.scalars[a[1]])
            else:
                args.append(counts[a[1]])
        on_cpu = call.device is None or call.device.type == "cpu"
        fn = v.function(on_cpu)
        fn[grid](*args, num_warps=v.plan["num_warps"], num_stages=v.plan["num_stages"])

    def _tune_key(self, call: _Call) -> str:
        import json

        return json.dumps({"shapes": call.env["shapes"], "dtypes": {k: str(t.dtype) for k, t in call.tensors.items()},
                           "cx": {k: repr(v) for k, v in call.constexprs.items() if v is not None}}, sort_keys=True)

    def _autotune(self, call: _Call) -> dict:
        import torch

        key = self._tune_key(call)
        if key in self._tuned:
            return self._tuned[key]
        dev = torch.cuda.get_device_name(call.device) if call.device.type == "cuda" else "cpu"
        dkey = {"kernel": self._hash, "tune": key, "device": dev}
        cache = DiskCache("tile_autotune", root=self.cache_dir)
        best = cache.get(dkey)
        if best is None:
            import triton.testing

            names = list(self.autotune)
            outs = {k: t.clone() for k, t in call.tensors.items() if any(p["name"] == k and p["writable"]
                                                                          for p in self._params)}
            timings = []
            for combo in itertools.product(*(self.autotune[k] for k in names)):
                choice = dict(zip(names, combo))
                try:
                    v = self._variant(call, self._config(call, choice))
                    grid = self._grid(v.plan, call, None)
                    ms = triton.testing.do_bench(lambda: self._launch(v, call, grid), warmup=5, rep=25,
                                                 return_mode="median")
                except Exception:  # a config that fails to compile or run is infinitely slow
                    ms = float("inf")
                timings.append((ms, choice))
            for k, t in outs.items():
                call.tensors[k].copy_(t)
            self.tune_log[key] = timings
            ms, best = min(timings, key=lambda x: x[0])
            if math.isinf(ms):
                raise TesseraCompileError(f"{self.__name__}: every autotune config failed; run one config alone "
                                          f"(pass its values as keywords) to see its error")
            cache.put(dkey, best)
        self._tuned[key] = best
        return best

    def __call__(self, *args, grid=None, **kwargs):
        call = self._bind(args, kwargs)
        choice = None
        if self.autotune and call.device is not None and call.device.type == "cuda" and \
                any(call.constexprs.get(k) is None for k in self.autotune if k not in _TUNING_KEYS) | \
                any(k in _TUNING_KEYS and k not in call.tuning for k in self.autotune):
            choice = self._autotune(call)
        v = self._variant(call, self._config(call, choice))
        self._launch(v, call, self._grid(v.plan, call, grid))

    def __getitem__(self, grid):
        """``kernel[grid](*args)``: launch with an explicit grid (kernels that read program_id)."""
        return lambda *a, **k: self(*a, grid=grid, **k)

    def __tessera_jit__(self):
        """What ``ts.jit(kernel)`` returns: the kernel itself, which compiles per specialization on first call."""
        return self

    def __repr__(self):
        return f"<ts.kernel {self.__name__}>"


def _closure_vars(fn) -> dict:
    if not fn.__closure__:
        return {}
    out = {}
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__):
        try:
            out[name] = cell.cell_contents
        except ValueError:
            pass
    return out


def kernel(fn=None, *, autotune: Optional[Dict[str, list]] = None, num_warps: Optional[int] = None,
           num_stages: Optional[int] = None, batch: Optional[bool] = None, outputs=None,
           cache_dir: Optional[str] = None):
    """Decorate a function written in the tile language (docs/tile.md) as a :class:`Kernel`.

    ``@ts.kernel`` or ``@ts.kernel(autotune={"BLOCK_M": [64, 128], "num_warps": [4, 8]})``.

    Example:
        >>> import tessera.tile as tile
        >>> @tile.kernel(num_warps=4)
        ... def noop(X: tile.Tile["N"]):
        ...     pass
        >>> noop
        <ts.kernel noop>
    """
    def wrap(f):
        return Kernel(f, autotune=autotune, num_warps=num_warps, num_stages=num_stages, batch=batch,
                      outputs=outputs, cache_dir=cache_dir)

    return wrap(fn) if fn is not None else wrap
