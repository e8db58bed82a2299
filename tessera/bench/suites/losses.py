"""Suite ``losses``: fused cross-entropy (forward, and forward+backward) and linear cross-entropy against torch
eager, torch.compile and Liger-Kernel, in the same run. TB/s counts the logits read once plus, with the backward,
the gradient written once.

Example:
    python -m tessera.bench losses --quick
"""
from __future__ import annotations

from typing import Callable, List, Optional

from ..common import Row, tbps, tflops, try_bench


def _liger():
    try:
        from liger_kernel.transformers import LigerCrossEntropyLoss, LigerFusedLinearCrossEntropyLoss

        return LigerCrossEntropyLoss, LigerFusedLinearCrossEntropyLoss
    except Exception as exc:  # not installed here
        print(f"  (Liger-Kernel unavailable: {type(exc).__name__})")
        return None, None


def peak_extra_gb(fn: Callable[[], object], keep_bytes: int = 0) -> Optional[float]:
    """GB allocated by one call of ``fn`` at its peak, beyond what existed before and ``keep_bytes`` (outputs)."""
    import torch

    try:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        del out
        return max(0.0, (peak - base - keep_bytes) / 1e9)
    except Exception as exc:
        print(f"  (memory probe failed: {type(exc).__name__})")
        return None


def ce_callables(N: int, V: int, dtype=None, backward: bool = True):
    """(inputs, {name: callable}) for one cross-entropy shape: forward and backward (each callable
    returns the gradient), or with ``backward=False`` the loss alone."""
    import torch
    import torch.nn.functional as F

    from ...kernels.cross_entropy import cross_entropy_bwd, cross_entropy_fwd

    dtype = dtype or torch.bfloat16
    x = torch.randn(N, V, device="cuda", dtype=dtype)
    t = torch.randint(0, V, (N,), device="cuda")
    t[::17] = -100
    one = torch.ones((), device="cuda")

    def run(loss_fn, logits):
        if not backward:
            return loss_fn(logits, t)
        xr = logits.detach().requires_grad_()
        loss_fn(xr, t).backward()
        return xr.grad

    def tessera():
        loss, g = cross_entropy_fwd(x, t, compute_grad=backward)
        return cross_entropy_bwd(one, g, "mean") if backward else loss

    compiled_loss = torch.compile(lambda a, b: F.cross_entropy(a, b), dynamic=False)
    fns = {"tessera": tessera, "torch": lambda: run(F.cross_entropy, x),
           "torch.compile": lambda: run(compiled_loss, x)}
    liger_ce, _ = _liger()
    if liger_ce is not None:
        mod = liger_ce()
        xl = x.clone()  # Liger writes the gradient into its input
        fns["liger"] = lambda: run(mod, xl)
    return (x, t), fns


def bench_ce(N: int, V: int, backward: bool = True) -> Row:
    import torch

    (x, t), fns = ce_callables(N, V, backward=backward)
    logit_bytes = x.numel() * x.element_size()
    nbytes = (2 if backward else 1) * logit_bytes  # logits read (and the gradient written)
    ms = {name: try_bench(fn) for name, fn in fns.items()}
    keep = logit_bytes if backward else 0
    mem = {name: peak_extra_gb(fn, keep_bytes=0 if name == "liger" else keep) for name, fn in fns.items()}
    del x, t, fns
    torch.cuda.empty_cache()
    notes = "extra GB " + ", ".join(f"{k}={v:.2f}" for k, v in mem.items() if v is not None)
    return Row("losses", f"ce {'fwd+bwd' if backward else 'fwd'} {N}x{V} bf16", "TB/s", tbps(nbytes, ms["tessera"]),
               {k: tbps(nbytes, v) for k, v in ms.items() if k != "tessera"}, notes)


def lce_callables(N: int, D: int, V: int, chunk_size: Optional[int] = None):
    """(inputs, {name: callable}) for linear cross-entropy, loss and all gradients (h, w)."""
    import torch
    import torch.nn.functional as F

    from ...kernels.cross_entropy import linear_cross_entropy

    h = torch.randn(N, D, device="cuda", dtype=torch.bfloat16)
    w = (torch.randn(D, V, device="cuda") / D ** 0.5).to(torch.bfloat16)
    t = torch.randint(0, V, (N,), device="cuda")

    def tessera():
        return linear_cross_entropy(h, w, t, chunk_size=chunk_size)

    def materialised(loss_fn):
        hr, wr = h.detach().requires_grad_(), w.detach().requires_grad_()
        loss_fn(hr, wr, t).backward()
        return hr.grad, wr.grad

    def loss(a, b, c):
        return F.cross_entropy((a @ b).float(), c)

    compiled = torch.compile(loss, dynamic=False)
    fns = {"tessera": tessera, "torch": lambda: materialised(loss), "torch.compile": lambda: materialised(compiled)}
    _, liger_flce = _liger()
    if liger_flce is not None:
        mod = liger_flce()
        w_vd = w.t().contiguous()  # Liger takes the torch [out, in] weight

        def liger():
            hr, wr = h.detach().requires_grad_(), w_vd.detach().requires_grad_()
            mod(wr, hr, t).backward()
            return hr.grad, wr.grad

        fns["liger"] = liger
    return (h, w, t), fns


def bench_lce(N: int, D: int, V: int) -> Row:
    import torch

    _, fns = lce_callables(N, D, V)
    ms = {name: try_bench(fn, warmup=1, rep=300) for name, fn in fns.items()}
    mem = {name: peak_extra_gb(fn, keep_bytes=(N * D + D * V) * 2) for name, fn in fns.items()}
    del fns
    torch.cuda.empty_cache()
    flops = 6.0 * N * D * V
    notes = "extra GB " + ", ".join(f"{k}={v:.2f}" for k, v in mem.items() if v is not None)
    return Row("losses", f"linear ce {N}x{D}x{V} bf16", "TFLOP/s", tflops(flops, ms["tessera"]),
               {k: tflops(flops, v) for k, v in ms.items() if k != "tessera"}, notes)


def run(args) -> List[Row]:
    """All cross-entropy rows (``--quick``: the 32k vocabulary and a smaller linear case)."""
    rows = [bench_ce(8192, 32000, backward=False), bench_ce(8192, 32000)]
    if not args.quick:
        rows += [bench_ce(8192, 128256, backward=False), bench_ce(8192, 128256)]
        rows.append(bench_lce(8192, 4096, 128256))
    else:
        rows.append(bench_lce(2048, 2048, 32000))
    return rows
