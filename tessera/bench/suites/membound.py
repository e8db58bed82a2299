"""Memory-bound ops: norms, add+norm, softmax, activations, dropout, rotary, embedding backward.

Each op forward and forward+backward, Tessera vs torch eager, torch.compile and Liger-Kernel
(where Liger has the op), in TB/s of the bytes that must move (each input read once, each
output written once; fp32 statistics and weights included), bf16, 32768 rows x {1024, 4096,
8192} columns (``--quick``: 4096). Extra rows give each fwd+bwd's peak memory above what was
allocated before it (``torch.cuda.max_memory_allocated`` delta, MB, outputs and gradients
included).

Environment knobs (to fit a time budget): ``TESSERA_MEMBOUND_OPS`` (comma list of op names),
``TESSERA_MEMBOUND_COMPILE`` (comma list of widths at which torch.compile is measured; default all).

Example:
    >>> from tessera.bench.suites.membound import OP_NAMES
    >>> "rms_norm" in OP_NAMES
    True
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from ..common import Row, bench_ms, tbps

ROWS = 32768
DEVICE = "cuda"  # a dry run on the CPU (Triton interpreter) sets "cpu" and a small ROWS
VOCAB = 32000
HEAD_DIM = 128
P_DROP = 0.1


@dataclass
class Op:
    name: str
    make: Callable  # (m, n, dtype) -> dict of tensors
    tessera_fwd: Callable
    tessera_fwdbwd: Callable
    torch_fwd: Optional[Callable]  # eager/compile: (t) -> output or tuple; None: no torch peer
    liger_fwd: Optional[Callable]
    passes_fwd: float  # bytes moved, in units of one [rows, cols] tensor of the input dtype
    passes_fwdbwd: float
    grads: Callable  # (t) -> list of upstream gradients matching torch_fwd's outputs
    leaves: tuple  # names of tensors that need gradients in the torch peers
    fwd_only: bool = False


def _ops() -> List[Op]:
    import torch
    import torch.nn.functional as F

    from ...kernels import activations as act
    from ...kernels import norms
    from ...kernels import softmax as sm
    from ...kernels.dropout import dropout_bwd, dropout_fwd
    from ...kernels.embedding import embedding_bwd
    from ...kernels.membound_reference import rotary_ref
    from ...kernels.rotary import rope_frequencies, rotary_bwd, rotary_fwd

    lg = _liger()

    def rows(m, n, dt, *names, w=False, b=False):
        t = {k: torch.randn(m, n, device=DEVICE, dtype=dt) for k in names}
        if w:
            t["w"] = torch.randn(n, device=DEVICE, dtype=dt)
        if b:
            t["b"] = torch.randn(n, device=DEVICE, dtype=dt)
        return t

    def ln_fb(t):
        y, mean, rstd = norms.layer_norm_fwd(t["x"], t["w"], t["b"])
        return norms.layer_norm_bwd(t["dy"], t["x"], t["w"], t["b"], mean, rstd)

    def rms_fb(t):
        y, rstd = norms.rms_norm_fwd(t["x"], t["w"])
        return norms.rms_norm_bwd(t["dy"], t["x"], t["w"], rstd)

    def aln_fb(t):
        y, s, mean, rstd = norms.add_layer_norm_fwd(t["x"], t["r"], t["w"], t["b"])
        return norms.add_layer_norm_bwd(t["dy"], t["ds"], s, t["w"], t["b"], mean, rstd)

    def arms_fb(t):
        y, s, rstd = norms.add_rms_norm_fwd(t["x"], t["r"], t["w"])
        return norms.add_rms_norm_bwd(t["dy"], t["ds"], s, t["w"], rstd)

    def sm_fb(fwd, bwd):
        return lambda t: bwd(t["dy"], fwd(t["x"]))

    def rope_make(m, n, dt):
        h = n // HEAD_DIM
        cos, sin = rope_frequencies(m, HEAD_DIM, device=DEVICE)
        # [B, S, H, D] storage, the layout a QKV projection leaves
        return {"x": torch.randn(1, m, h, HEAD_DIM, device=DEVICE, dtype=dt),
                "dy": torch.randn(1, m, h, HEAD_DIM, device=DEVICE, dtype=dt), "cos": cos, "sin": sin}

    def rope_torch(t):
        return rotary_ref(t["x"], t["cos"], t["sin"], seq_dim=1)

    def emb_make(m, n, dt):
        return {"dy": torch.randn(m, n, device=DEVICE, dtype=dt),
                "ids": torch.randint(0, VOCAB, (m,), device=DEVICE)}

    def emb_torch(t):
        return torch.ops.aten.embedding_dense_backward(t["dy"], t["ids"], VOCAB, -1, False)

    def gelu_torch(approx):
        return lambda t: F.gelu(t["x"], approximate=approx)

    ops = [
        Op("layer_norm", lambda m, n, dt: rows(m, n, dt, "x", "dy", w=True, b=True),
           lambda t: norms.layer_norm_fwd(t["x"], t["w"], t["b"]), ln_fb,
           lambda t: F.layer_norm(t["x"], t["x"].shape[-1:], t["w"], t["b"], 1e-5),
           lg and (lambda t: lg["ln"](t["x"], t["w"], t["b"], 1e-5)), 2, 5,
           lambda t: [t["dy"]], ("x", "w", "b")),
        Op("rms_norm", lambda m, n, dt: rows(m, n, dt, "x", "dy", w=True),
           lambda t: norms.rms_norm_fwd(t["x"], t["w"]), rms_fb,
           lambda t: F.rms_norm(t["x"], t["x"].shape[-1:], t["w"], 1e-6),
           lg and (lambda t: lg["rms"](t["x"], t["w"], 1e-6)), 2, 5, lambda t: [t["dy"]], ("x", "w")),
        Op("add_layer_norm", lambda m, n, dt: rows(m, n, dt, "x", "r", "dy", "ds", w=True, b=True),
           lambda t: norms.add_layer_norm_fwd(t["x"], t["r"], t["w"], t["b"]), aln_fb,
           lambda t: _add_then(F.layer_norm, t, t["w"], t["b"], 1e-5), None, 4, 8,
           lambda t: [t["dy"], t["ds"]], ("x", "r", "w", "b")),
        Op("add_rms_norm", lambda m, n, dt: rows(m, n, dt, "x", "r", "dy", "ds", w=True),
           lambda t: norms.add_rms_norm_fwd(t["x"], t["r"], t["w"]), arms_fb,
           lambda t: _add_then(F.rms_norm, t, t["w"], 1e-6),
           lg and (lambda t: lg["add_rms"](t["x"], t["r"], t["w"], 1e-6)), 4, 8,
           lambda t: [t["dy"], t["ds"]], ("x", "r", "w")),
        Op("softmax", lambda m, n, dt: rows(m, n, dt, "x", "dy"), lambda t: sm.softmax_fwd(t["x"]),
           sm_fb(sm.softmax_fwd, sm.softmax_bwd), lambda t: torch.softmax(t["x"], -1),
           lg and (lambda t: lg["softmax"](t["x"])), 2, 5, lambda t: [t["dy"]], ("x",)),
        Op("log_softmax", lambda m, n, dt: rows(m, n, dt, "x", "dy"), lambda t: sm.log_softmax_fwd(t["x"]),
           sm_fb(sm.log_softmax_fwd, sm.log_softmax_bwd), lambda t: torch.log_softmax(t["x"], -1), None, 2, 5,
           lambda t: [t["dy"]], ("x",)),
        Op("gelu", lambda m, n, dt: rows(m, n, dt, "x", "dy"), lambda t: act.gelu_fwd(t["x"]),
           lambda t: (act.gelu_fwd(t["x"]), act.gelu_bwd(t["dy"], t["x"])), gelu_torch("none"), None, 2, 5,
           lambda t: [t["dy"]], ("x",)),
        Op("gelu_tanh", lambda m, n, dt: rows(m, n, dt, "x", "dy"), lambda t: act.gelu_fwd(t["x"], "tanh"),
           lambda t: (act.gelu_fwd(t["x"], "tanh"), act.gelu_bwd(t["dy"], t["x"], "tanh")), gelu_torch("tanh"),
           None, 2, 5, lambda t: [t["dy"]], ("x",)),
        Op("silu", lambda m, n, dt: rows(m, n, dt, "x", "dy"), lambda t: act.silu_fwd(t["x"]),
           lambda t: (act.silu_fwd(t["x"]), act.silu_bwd(t["dy"], t["x"])), lambda t: F.silu(t["x"]), None, 2, 5,
           lambda t: [t["dy"]], ("x",)),
        Op("swiglu", lambda m, n, dt: rows(m, n, dt, "g", "u", "dy"), lambda t: act.swiglu_fwd(t["g"], t["u"]),
           lambda t: (act.swiglu_fwd(t["g"], t["u"]), act.swiglu_bwd(t["dy"], t["g"], t["u"])),
           lambda t: F.silu(t["g"]) * t["u"], lg and (lambda t: lg["swiglu"](t["g"], t["u"])), 3, 8,
           lambda t: [t["dy"]], ("g", "u")),
        Op("dropout", lambda m, n, dt: rows(m, n, dt, "x", "dy"), lambda t: dropout_fwd(t["x"], P_DROP, 1234),
           lambda t: (dropout_fwd(t["x"], P_DROP, 1234), dropout_bwd(t["dy"], P_DROP, 1234)),
           lambda t: F.dropout(t["x"], P_DROP, training=True), None, 2, 4, lambda t: [t["dy"]], ("x",)),
        Op("rotary", rope_make, lambda t: rotary_fwd(t["x"], t["cos"], t["sin"], seq_dim=1),
           lambda t: (rotary_fwd(t["x"], t["cos"], t["sin"], seq_dim=1),
                      rotary_bwd(t["dy"], t["cos"], t["sin"], seq_dim=1)),
           rope_torch, lg and (lambda t: lg["rope"](t["x"], t["cos"], t["sin"])), 2, 4,
           lambda t: [t["dy"]], ("x",)),
        Op("embedding_bwd", emb_make, lambda t: embedding_bwd(t["dy"], t["ids"], VOCAB), None, emb_torch, None,
           1 + VOCAB / ROWS, 0, lambda t: [], (), fwd_only=True),
    ]
    return ops


OP_NAMES = ("layer_norm", "rms_norm", "add_layer_norm", "add_rms_norm", "softmax", "log_softmax", "gelu",
            "gelu_tanh", "silu", "swiglu", "dropout", "rotary", "embedding_bwd")


def _add_then(norm, t, *args):
    s = t["x"] + t["r"]
    return norm(s, s.shape[-1:], *args), s


def _liger() -> Optional[Dict[str, Callable]]:
    try:
        from liger_kernel.ops.fused_add_rms_norm import LigerFusedAddRMSNormFunction
        from liger_kernel.ops.layer_norm import LigerLayerNormFunction
        from liger_kernel.ops.rms_norm import LigerRMSNormFunction
        from liger_kernel.ops.rope import LigerRopeFunction
        from liger_kernel.ops.softmax import LigerSoftmaxFunction
        from liger_kernel.ops.swiglu import LigerSiLUMulFunction
    except Exception as exc:  # Liger absent or broken: its column stays empty
        print(f"  (Liger-Kernel unavailable: {type(exc).__name__}: {exc})")
        return None

    def rope(x, cos, sin):
        # Liger takes [B, H, S, D] views of [B, S, H, D] storage and rotates q and k together, in
        # place; k is a one-head sliver, so the bytes moved stay x's
        q = x.transpose(1, 2)
        q, _ = LigerRopeFunction.apply(q, q[:, :1], cos, sin, None, 1, 2 * cos.shape[-1])
        return q.transpose(1, 2)

    return {"ln": LigerLayerNormFunction.apply, "rms": LigerRMSNormFunction.apply,
            "add_rms": LigerFusedAddRMSNormFunction.apply, "softmax": LigerSoftmaxFunction.apply,
            "swiglu": LigerSiLUMulFunction.apply, "rope": rope}


def _ms(fn, grad_to_none=None) -> Optional[float]:
    try:
        if DEVICE != "cuda":
            fn()
            return 1.0
        return bench_ms(fn, warmup=10, rep=60, grad_to_none=grad_to_none)
    except Exception as exc:  # a peer's failure must not stop the suite
        print(f"  (skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:160]})")
        return None


def _extra_mb(fn) -> Optional[float]:
    import torch

    if DEVICE != "cuda":
        fn()
        return 0.0
    try:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = fn()
        torch.cuda.synchronize()
        del out
        return (torch.cuda.max_memory_allocated() - base) / 1e6
    except Exception:
        return None


def _autograd_fwdbwd(f, t, op):
    import torch

    def run():
        outs = f(t)
        outs = outs if isinstance(outs, tuple) else (outs,)
        grads = op.grads(t)
        torch.autograd.backward(list(outs[:len(grads)]), grads)
    return run


def run(args) -> List[Row]:
    import torch

    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("  membound: needs a CUDA GPU; no rows")
        return []
    only = os.environ.get("TESSERA_MEMBOUND_OPS")
    compile_widths = os.environ.get("TESSERA_MEMBOUND_COMPILE")
    widths = [4096] if getattr(args, "quick", False) else [1024, 4096, 8192]
    dtype = torch.bfloat16
    rows: List[Row] = []
    for op in _ops():
        if only and op.name not in only.split(","):
            continue
        compiled = torch.compile(op.torch_fwd, dynamic=False) if op.torch_fwd and DEVICE == "cuda" else None
        for n in widths:
            t = op.make(ROWS, n, dtype)
            unit = ROWS * n * dtype.itemsize
            use_compile = compiled is not None and (not compile_widths or str(n) in compile_widths.split(","))
            label = "fwd" if not op.fwd_only else ""
            fwd = {"tessera": _ms(lambda: op.tessera_fwd(t))}
            fwd["eager"] = _ms(lambda: op.torch_fwd(t)) if op.torch_fwd else None
            fwd["compile"] = _ms(lambda: compiled(t)) if use_compile else None
            fwd["liger"] = _ms(lambda: op.liger_fwd(t)) if op.liger_fwd else None
            rows.append(_row(f"{op.name} {label} {ROWS}x{n}".replace("  ", " "), fwd, op.passes_fwd * unit))
            print(f"  {rows[-1].workload}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in fwd.items()), flush=True)
            if op.fwd_only:
                continue
            leaves = [t[k] for k in op.leaves]
            tg = {k: (v.detach().requires_grad_() if k in op.leaves else v) for k, v in t.items()}
            gl = [tg[k] for k in op.leaves]
            fb_fns = {"tessera": lambda: op.tessera_fwdbwd(t),
                      "eager": _autograd_fwdbwd(op.torch_fwd, tg, op),
                      "compile": _autograd_fwdbwd(compiled, tg, op) if use_compile else None,
                      "liger": _autograd_fwdbwd(op.liger_fwd, tg, op) if op.liger_fwd else None}
            fb = {k: (_ms(f, gl if k != "tessera" else None) if f else None) for k, f in fb_fns.items()}
            rows.append(_row(f"{op.name} fwd+bwd {ROWS}x{n}", fb, op.passes_fwdbwd * unit))
            print(f"  {rows[-1].workload}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in fb.items()), flush=True)
            mem = {}
            for k, f in fb_fns.items():
                for g in gl:
                    g.grad = None
                mem[k] = _extra_mb(f) if f else None
            rows.append(Row("membound", f"{op.name} fwd+bwd {ROWS}x{n} extra memory", "MB", mem.pop("tessera"),
                            mem, higher_is_better=False))
            del t, tg, leaves, gl
            if DEVICE == "cuda":
                torch.cuda.empty_cache()
    return rows


def _fmt(ms):
    return "-" if ms is None else f"{ms * 1e3:.0f}us"


def _row(workload, ms: Dict[str, Optional[float]], nbytes: float) -> Row:
    return Row("membound", workload, "TB/s", tbps(nbytes, ms["tessera"]),
               {k: tbps(nbytes, v) for k, v in ms.items() if k != "tessera"},
               notes=f"{nbytes / 1e9:.3f} GB counted")
