"""One GPU session for the memory-bound kernels: check each swept variant against a reference,
time launch-shape variants of the norm, softmax and activation kernels next to Liger-Kernel
in the same run, then run the ``membound`` suite.

``--sweep``: the broad first sweep (forward rows/warps/eviction, backward programs/warps, softmax,
gelu blocks). ``--tune``: the narrower backward sweep; it installs the fastest backward launch
shape per width in ``launch.BWD_CONFIG`` before the suite runs, and prints it.

    PYTHONPATH=. python benchmarks/scripts/membound_gpu.py [--sweep] [--tune] [--ceiling] [--suite quick|full] [--out DIR]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import traceback

import torch
import triton
import triton.language as tl
import triton.testing

from tessera.kernels import _membound, activations, norms
from tessera.kernels import softmax as sm
from tessera.kernels.norms import launch

M = 32768
DT = torch.bfloat16


def ms(fn):
    return float(triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median"))


def rel(a, b):
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm()).item()


def tb(passes, n, t):
    return passes * M * n * 2 / (t * 1e-3) / 1e12


def liger():
    try:
        from liger_kernel.ops.layer_norm import LigerLayerNormFunction
        from liger_kernel.ops.rms_norm import LigerRMSNormFunction
        from liger_kernel.ops.softmax import LigerSoftmaxFunction
        return LigerRMSNormFunction.apply, LigerLayerNormFunction.apply, LigerSoftmaxFunction.apply
    except Exception as exc:
        print("liger unavailable:", exc)
        return None


def sweep(log):
    lg = liger()
    res = {}
    # ---- rms_norm / layer_norm forward: rows per program x warps (x eviction hint at 4096)
    for n, rows_c in ((1024, (4, 2, 8)), (4096, (1, 2, 4)), (8192, (1, 2))):
        x = torch.randn(M, n, device="cuda", dtype=DT)
        w = torch.randn(n, device="cuda", dtype=DT)
        b = torch.randn(n, device="cuda", dtype=DT)
        ref = torch.nn.functional.rms_norm(x.float(), (n,), w.float(), 1e-6)
        out = []
        for evict in (("", "evict_first") if n == 4096 else ("evict_first",)):
            launch.EVICT_FWD = evict
            for rows in rows_c:
                for warps in (4, 8, 16):
                    plan = _membound.RowPlan(triton.next_power_of_2(n), rows, warps, True)
                    y = launch.norm_fwd("rms", x, None, w, None, 1e-6, True, plan)[0]
                    err = rel(y, ref)
                    t = ms(lambda: launch.norm_fwd("rms", x, None, w, None, 1e-6, True, plan))
                    out.append((tb(2, n, t), f"rms fwd n={n} rows={rows} warps={warps} evict={evict or '-'}", err))
        launch.EVICT_FWD = "evict_first"
        default = _membound.row_plan(n, 2)
        t_ln = ms(lambda: norms.layer_norm_fwd(x, w, b))
        out.append((tb(2, n, t_ln), f"ln fwd n={n} default {default}", 0.0))
        if lg:
            out.append((tb(2, n, ms(lambda: lg[0](x, w, 1e-6))), f"LIGER rms fwd n={n}", 0.0))
            out.append((tb(2, n, ms(lambda: lg[1](x, w, b, 1e-5))), f"LIGER ln fwd n={n}", 0.0))
        # softmax forward: the default plan and two neighbours
        sref = torch.softmax(x.float(), -1)
        for rows in rows_c[:2]:
            for warps in (4, 8, 16):
                plan = _membound.RowPlan(triton.next_power_of_2(n), rows, warps, True)
                err = rel(sm._fwd("s", x, False, plan), sref)
                out.append((tb(2, n, ms(lambda: sm._fwd("s", x, False, plan))),
                            f"softmax fwd n={n} rows={rows} warps={warps}", err))
        if lg:
            out.append((tb(2, n, ms(lambda: lg[2](x))), f"LIGER softmax fwd n={n}", 0.0))
        # norm backward: programs per SM x warps (default rows per program)
        dy = torch.randn(M, n, device="cuda", dtype=DT)
        y, rstd = norms.rms_norm_fwd(x, w)
        xr = x.float().requires_grad_()
        wr = w.float().requires_grad_()
        torch.nn.functional.rms_norm(xr, (n,), wr, 1e-6).backward(dy.float())
        bplan = _membound.row_plan(n, 2, max_fused=8192, backward=True)
        for per_sm in ((1, 2, 4) if n == 4096 else (2,)):
            for warps in ((8, 16, 32) if n == 4096 else (bplan.warps,)):
                plan = _membound.RowPlan(bplan.block, bplan.rows, warps, True)
                dx, dw, _ = launch.norm_bwd("b", dy, x, w, None, None, rstd, True, plan, per_sm)
                err = max(rel(dx, xr.grad), rel(dw, wr.grad))
                t = ms(lambda: launch.norm_bwd("b", dy, x, w, None, None, rstd, True, plan, per_sm))
                out.append((tb(3, n, t), f"rms bwd n={n} rows={bplan.rows} per_sm={per_sm} warps={warps}", err))
        t_f = ms(lambda: norms.rms_norm_fwd(x, w))
        t_b = ms(lambda: norms.rms_norm_bwd(dy, x, w, rstd))
        out.append((tb(5, n, t_f + t_b), f"rms fwd+bwd n={n} default", 0.0))
        if lg:
            xl = x.detach().clone().requires_grad_()
            wl = w.detach().clone().requires_grad_()
            t_l = float(triton.testing.do_bench(lambda: lg[0](xl, wl, 1e-6).backward(dy), warmup=10, rep=50,
                                                grad_to_none=[xl, wl], return_mode="median"))
            out.append((tb(5, n, t_l), f"LIGER rms fwd+bwd n={n}", 0.0))
        out.sort(key=lambda r: -r[0])
        for r in out:
            line = f"{r[0]:6.3f} TB/s  {r[1]}  err={r[2]:.1e}"
            print(line)
            log.write(line + "\n")
        res[n] = out
        del x, dy, xr, wr
        torch.cuda.empty_cache()
    # ---- activations: block x warps
    x = torch.randn(M, 4096, device="cuda", dtype=DT)
    ref = torch.nn.functional.gelu(x.float())
    out = []
    for block in (1024, 2048, 4096, 8192):
        for warps in (4, 8):
            activations.BLOCK, activations.WARPS = block, warps
            err = rel(activations.gelu_fwd(x), ref)
            out.append((tb(2, 4096, ms(lambda: activations.gelu_fwd(x))), f"gelu fwd block={block} warps={warps}", err))
    activations.BLOCK, activations.WARPS = 4096, 8
    out.append((tb(2, 4096, ms(lambda: x.clone())), "torch clone (copy ceiling)", 0.0))
    out.sort(key=lambda r: -r[0])
    for r in out:
        line = f"{r[0]:6.3f} TB/s  {r[1]}  err={r[2]:.1e}"
        print(line)
        log.write(line + "\n")
    return res


BWD_CANDIDATES = {  # (rows, warps, programs per SM, prefetch)
    1024: [(1, 8, 4, False), (1, 8, 4, True), (1, 4, 8, True), (2, 4, 4, True)],
    4096: [(1, 8, 2, False), (1, 8, 2, True), (1, 16, 2, True), (1, 8, 3, True), (1, 4, 4, True), (2, 8, 2, True)],
    8192: [(1, 32, 1, False), (1, 32, 1, True), (1, 16, 2, True), (1, 16, 1, True)],
}


def tune(log):
    """Backward launch shapes per width (rms_norm, bf16, 32768 rows), checked and timed; installs the best."""
    chosen = {}
    for n, cands in BWD_CANDIDATES.items():
        x = torch.randn(M, n, device="cuda", dtype=DT)
        w = torch.randn(n, device="cuda", dtype=DT)
        dy = torch.randn(M, n, device="cuda", dtype=DT)
        y, rstd = norms.rms_norm_fwd(x, w)
        xr, wr = x.float().requires_grad_(), w.float().requires_grad_()
        torch.nn.functional.rms_norm(xr, (n,), wr, 1e-6).backward(dy.float())
        out = []
        for rows, warps, per_sm, pf in cands:
            plan = _membound.RowPlan(n, rows, warps, True)
            dx, dw, _ = launch.norm_bwd("b", dy, x, w, None, None, rstd, True, plan, per_sm, prefetch=pf)
            err = max(rel(dx, xr.grad), rel(dw, wr.grad))
            t = ms(lambda: launch.norm_bwd("b", dy, x, w, None, None, rstd, True, plan, per_sm, prefetch=pf))
            out.append((tb(3, n, t) if err < 1e-2 else 0.0, (rows, warps, per_sm, pf), err))
        out.sort(key=lambda r: -r[0])
        for r in out:
            line = f"{r[0]:6.3f} TB/s  rms bwd n={n} rows,warps,per_sm,prefetch={r[1]} err={r[2]:.1e}"
            print(line)
            log.write(line + "\n")
        chosen[n] = out[0][1]
        del x, dy, xr, wr
        torch.cuda.empty_cache()
    launch.BWD_CONFIG.update(chosen)
    print(f"CHOSEN BWD_CONFIG = {chosen}", flush=True)
    log.write(f"CHOSEN BWD_CONFIG = {chosen}\n")


@triton.jit
def _copy_flat(X, Y, numel, BLOCK: tl.constexpr, EVEN: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    if EVEN:
        tl.store(Y + offs, tl.load(X + offs))
    else:
        tl.store(Y + offs, tl.load(X + offs, mask=offs < numel), mask=offs < numel)


@triton.jit
def _copy_tma(xd, yd, tiles, tiles_c, BR: tl.constexpr, BC: tl.constexpr, STAGES: tl.constexpr):
    for t in tl.range(tl.program_id(0), tiles, tl.num_programs(0), num_stages=STAGES):
        r = (t // tiles_c) * BR
        c = (t % tiles_c) * BC
        yd.store([r, c], xd.load([r, c]))


def ceiling(log, rounds=3):
    """How fast this card moves a 32768 x 4096 bf16 tensor (one read, one write) in the ways a
    kernel can: torch's copies, flat Triton copies, TMA tile copies (one program per tile and
    persistent), beside Tessera's and Liger's rms_norm forward, in interleaved rounds."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    n = 4096
    x = torch.randn(M, n, device="cuda", dtype=DT)
    y = torch.empty_like(x)
    w = torch.randn(n, device="cuda", dtype=DT)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    variants = {"torch clone": lambda: x.clone(), "torch copy_": lambda: y.copy_(x)}
    for block, warps in ((2048, 4), (4096, 4), (4096, 8), (8192, 8), (8192, 16), (16384, 16)):
        variants[f"flat B{block} w{warps}"] = (lambda b=block, nw=warps: _copy_flat[(x.numel() // b,)](
            x, y, x.numel(), BLOCK=b, EVEN=True, num_warps=nw))
    for br, bc, per_sm, stages in ((8, 256, 0, 1), (16, 256, 0, 1), (32, 256, 0, 1), (64, 128, 0, 1),
                                   (32, 256, 2, 3), (32, 256, 4, 2), (16, 256, 4, 4), (64, 256, 1, 3)):
        xd, yd = TensorDescriptor.from_tensor(x, [br, bc]), TensorDescriptor.from_tensor(y, [br, bc])
        tiles = (M // br) * (n // bc)
        grid = tiles if per_sm == 0 else per_sm * sms
        variants[f"tma {br}x{bc} " + ("per tile" if per_sm == 0 else f"{per_sm}/SM s{stages}")] = (
            lambda xd=xd, yd=yd, g=grid, br=br, bc=bc, st=stages, t=tiles: _copy_tma[(g,)](
                xd, yd, t, n // bc, BR=br, BC=bc, STAGES=st, num_warps=4))
    variants["tessera rms_norm"] = lambda: norms.rms_norm_fwd(x, w, 1e-6)
    lg = liger()
    if lg is not None:
        variants["liger rms_norm"] = lambda: lg[0](x, w, 1e-6)
    for name, fn in variants.items():  # every copy must copy
        if not name.endswith("rms_norm"):
            y.zero_()
            out = fn()
            got = out if name == "torch clone" else y
            assert torch.equal(got, x), name
    times = {k: [] for k in variants}
    for _ in range(rounds):
        for k, fn in variants.items():
            times[k].append(ms(fn))
    for k, v in times.items():
        med = statistics.median(v)
        line = f"{k:28s} {tb(2, n, med):6.3f} TB/s  ({tb(2, n, max(v)):.3f}-{tb(2, n, min(v)):.3f})"
        print(line, flush=True)
        log.write(line + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--tune", action="store_true")
    ap.add_argument("--ceiling", action="store_true", help="copy rates beside the rms_norm forwards")
    ap.add_argument("--suite", choices=["none", "quick", "full"], default="quick")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    a = ap.parse_args()
    print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, flush=True)
    t0 = time.time()
    if a.sweep:
        with open(os.path.join(a.out, "membound_sweep.txt"), "w") as log:
            try:
                sweep(log)
            except Exception:  # the suite below still runs
                traceback.print_exc()
        print(f"sweep took {time.time() - t0:.0f}s", flush=True)
    if a.ceiling:
        with open(os.path.join(a.out, "membound_ceiling.txt"), "w") as log:
            ceiling(log)
    if a.tune:
        with open(os.path.join(a.out, "membound_tune.txt"), "w") as log:
            try:
                tune(log)
            except Exception:
                traceback.print_exc()
        print(f"tune done at {time.time() - t0:.0f}s", flush=True)
    if a.suite != "none":
        from tessera.bench.common import format_table, write_json
        from tessera.bench.suites import membound

        rows = membound.run(argparse.Namespace(quick=a.suite == "quick"))
        write_json(rows, os.path.join(a.out, "membound.json"))
        table = format_table(rows)
        with open(os.path.join(a.out, "membound_table.txt"), "w") as f:
            f.write(table + "\n")
        print(table)
    print(f"total {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
