"""One device run for the matmul kernels: GPU correctness checks on awkward shapes, then the
``matmul`` benchmark suite (tuned when TESSERA_AUTOTUNE=1), with the tuning records dumped.

    PYTHONPATH=. python benchmarks/scripts/matmul_gpu.py [--quick] [--skip-checks] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback

import torch

try:
    import tessera  # noqa: F401
except Exception:  # the package root may be mid-edit; the kernels need only its small modules
    import types

    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tessera")
    pkg = types.ModuleType("tessera")
    pkg.__path__ = [os.path.abspath(root)]
    pkg.__version__ = "0.1.0"
    sys.modules["tessera"] = pkg
    print("note: `import tessera` failed; using the package's submodules directly")

import tessera.quant as quant  # noqa: E402
from tessera.kernels.matmul import matmul, quantize_fp8, scaled_matmul, wo_matmul  # noqa: E402
from tessera.kernels.matmul.configs import Config  # noqa: E402
from tessera.kernels.matmul.launch import major  # noqa: E402

FAILS = []
T0 = time.time()
BUDGET = float(os.environ.get("MATMUL_CHECK_BUDGET", "150"))


def rel(out, ref):
    out = out.double()
    if not torch.isfinite(out).all():
        return math.inf
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def check(name, out, ref, tol):
    r = rel(out, ref)
    ok = r <= tol
    if not ok:
        FAILS.append(name)
    print(f"  {'ok ' if ok else 'BAD'} {name}: rel {r:.2e} (tol {tol:.0e})", flush=True)


def ref_epilogue(acc, bias, act, res):
    import torch.nn.functional as F
    x = acc + (bias.double() if bias is not None else 0)
    pre = x
    if act == "gelu":
        x = F.gelu(x)
    elif act == "gelu_tanh":
        x = F.gelu(x, approximate="tanh")
    elif act == "silu":
        x = F.silu(x)
    elif act == "relu":
        x = F.relu(x)
    if res is not None:
        x = x + res.double()
    return x, pre


def checks():
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(int(time.time()))
    rnd = lambda *s, dt=torch.bfloat16: torch.randn(*s, device=dev, generator=g).to(dt)  # noqa: E731
    print("== correctness (fresh random inputs)")
    for section in (_check_wo, _check_fp8, _check_shapes, _check_epilogues):
        try:
            section(rnd, dev)
        except Exception:
            traceback.print_exc()
            FAILS.append(f"{section.__name__} crashed")


def _check_wo(rnd, dev):
    for fmt in ("fp4_e2m1", "fp6_e2m3", "fp6_e3m2"):
        for M, N, K in [(1, 4096, 4096), (5, 100, 200), (16, 1000, 1000), (33, 512, 4096)]:
            w = rnd(K, N, dt=torch.float32)
            qw = quant.quantize(w, fmt, 32)
            x = rnd(M, K)
            ref = x.double() @ quant.dequantize(qw).double()
            check(f"wo {fmt} {M}x{N}x{K}", wo_matmul(x, qw), ref, 1e-2)
            cfg = Config("wo", 1 if M == 1 else 16 if M <= 16 else 64, 64, 128, 1, 3, 4, 1)
            check(f"wo {fmt} {M}x{N}x{K} nosplit", wo_matmul(x, qw, _config=cfg), ref, 1e-2)


def _check_fp8(rnd, dev):
    for M, N, K in [(1, 64, 128), (1000, 1032, 2048), (4096, 4096, 4096)]:
        for axis_a, axis_b in ((None, None), (1, 0)):
            for dtb in (torch.float8_e4m3fn, torch.float8_e5m2):
                x, w = rnd(M, K, dt=torch.float32), rnd(N, K, dt=torch.float32)
                qa, sa = quantize_fp8(x, axis=axis_a)
                qw, sw = quantize_fp8(w, dtb, axis=1 if axis_b is not None else None)
                b, sb = qw.t(), (sw.t() if axis_b is not None else sw)
                ref = (qa.double() * sa.double()) @ (b.double() * sb.double())
                for cfg in (None, Config("ptr", 64, 64, 64, 8, 3, 4)):
                    check(f"fp8 a=e4m3 b={dtb} {M}x{N}x{K} scales={axis_a},{axis_b} cfg={cfg and cfg.kernel}",
                          scaled_matmul(qa, b, sa, sb, _config=cfg), ref, 1e-2)


def _check_shapes(rnd, dev):
    cfgs = [None, Config("ptr", 64, 64, 64, 8, 3, 4), Config("ptr", 16, 64, 128, 8, 4, 4, 4),
            Config("tma", 128, 256, 64, 8, 3, 8, subtile=True), Config("tma", 128, 128, 64, 8, 4, 8)]
    plan = [(torch.bfloat16, 1e-2, s, cfgs) for s in [(17, 129, 64), (1000, 777, 4096), (300, 5000, 3000)]]
    plan += [(torch.bfloat16, 1e-2, s, cfgs[:1]) for s in [(1, 17, 100), (100, 1000, 1000), (5, 4096, 4096)]]
    plan += [(torch.float16, 5e-3, s, [cfgs[0], cfgs[3]]) for s in [(1000, 777, 4096)]]
    for dt, tol, (M, N, K), cfgs_here in plan:
        if time.time() - T0 > BUDGET:
            print("  (check budget spent: skipping the rest of the shape sweep)")
            break
        for ta, tb in ((False, False), (True, True), (False, True)):
            a = rnd(K, M, dt=dt).t() if ta else rnd(M, K, dt=dt)
            b = rnd(N, K, dt=dt).t() if tb else rnd(K, N, dt=dt)
            ref = a.double() @ b.double()
            for cfg in cfgs_here:
                if cfg is not None and cfg.kernel == "tma" and (major(a) is None or major(b) is None):
                    continue  # TMA cannot read this layout in place; the dispatcher never picks it
                try:
                    check(f"{dt} {M}x{N}x{K} ta={ta} tb={tb} cfg={cfg and (cfg.kernel, cfg.BM, cfg.BN, cfg.split_k, cfg.subtile)}",
                          matmul(a, b, _config=cfg), ref, tol)
                except Exception as e:
                    FAILS.append(f"{M}x{N}x{K} {cfg}")
                    print(f"  ERR {M}x{N}x{K} {cfg}: {type(e).__name__}: {str(e)[:300]}")


def _check_epilogues(rnd, dev):
    cfgs = [None, Config("ptr", 64, 64, 64, 8, 3, 4), Config("ptr", 16, 64, 128, 8, 4, 4, 4),
            Config("tma", 128, 256, 64, 8, 3, 8, subtile=True), Config("tma", 128, 128, 64, 8, 4, 8)]
    plan = [(torch.bfloat16, 1e-2, s, cfgs) for s in [(17, 129, 64), (1000, 777, 4096), (300, 5000, 3000)]]
    # epilogues, preact, broadcast residual, batched
    for cfg in [cfgs[0], cfgs[1], cfgs[3]]:
        for act in (("gelu", "gelu_tanh", "silu", "relu") if cfg is None else ("gelu",)):
            M, N, K = 333, 520, 256
            a, b, bias, res = rnd(M, K), rnd(K, N), rnd(N), rnd(1, N)
            out, pre = matmul(a, b, bias=bias, activation=act, residual=res, return_preact=True, _config=cfg)
            r, p = ref_epilogue(a.double() @ b.double(), bias, act, res)
            check(f"epilogue {act} cfg={cfg and cfg.kernel}", out, r, 1e-2)
            check(f"preact {act} cfg={cfg and cfg.kernel}", pre, p, 1e-2)
    a, b = rnd(3, 1, 70, 48), rnd(2, 48, 40)
    check("batched broadcast", matmul(a, b), a.double() @ b.double(), 1e-2)
    a, b, res = rnd(4, 100, 256), rnd(256, 136), rnd(100, 136)
    check("folded batch + residual [M,N]", matmul(a, b, residual=res), a.double() @ b.double() + res.double(), 1e-2)
    a, b = rnd(1000, 512, dt=torch.float16), rnd(512, 1000, dt=torch.float16)
    check("fp16 accumulate", matmul(a, b, acc_dtype=torch.float16), a.double() @ b.double(), 5e-3)
    a, b = rnd(300, 256), rnd(256, 136)
    o = matmul(a, b, out_dtype=torch.float32)
    check(f"fp32 out ({o.dtype})", o if o.dtype == torch.float32 else o * math.nan, a.double() @ b.double(), 1e-2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-checks", action="store_true")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    print(torch.cuda.get_device_name(), torch.__version__, __import__("triton").__version__, flush=True)
    t0 = time.time()
    import signal

    def _term(*_):
        raise SystemExit("terminated")
    signal.signal(signal.SIGTERM, _term)
    tune = os.environ.pop("TESSERA_AUTOTUNE", None)  # the checks run the heuristic configs
    if not args.skip_checks:
        try:
            checks()
        except Exception:
            traceback.print_exc()
            FAILS.append("checks crashed")
    print(f"checks done in {time.time() - t0:.0f}s; failures: {len(FAILS)} {FAILS[:10]}", flush=True)
    from tessera.bench.common import format_table, write_json
    from tessera.bench.suites import matmul as suite

    if tune is not None:
        os.environ["TESSERA_AUTOTUNE"] = tune
    rows = []
    try:
        suite.run(args, rows)
    finally:
        dump(args, rows, t0)


def dump(args, rows, t0):
    from tessera.bench.common import format_table, write_json
    write_json(rows, os.path.join(args.out, "matmul_suite.json"))
    # dump the tuning records
    from tessera.kernels.matmul.autotune import _cache
    recs = []
    for root, _, files in os.walk(_cache().dir):
        for f in files:
            if f.endswith(".json"):
                with open(os.path.join(root, f)) as fh:
                    recs.append(json.load(fh))
    with open(os.path.join(args.out, "matmul_tuning.json"), "w") as fh:
        json.dump(recs, fh)
    for r in recs:
        k, v = r["key"], r["value"]
        ts = sorted([t for t in v["timings"] if t[0] is not None], key=lambda t: t[0])
        desc = lambda c: f"{c['kernel']} {c['BM']}x{c['BN']}x{c['BK']} s{c['stages']} w{c['warps']} sk{c['split_k']}{' sub' if c['subtile'] else ''}{' flat' if c['flatten'] else ''}"  # noqa: E731
        print(f"tuned {k.get('op')} {k.get('bucket') or (k.get('m'), k.get('n'), k.get('k'))} {k.get('layout', '')}: "
              + "; ".join(f"{desc(c)} {ms * 1e3:.0f}us" for ms, c in ts[:6]))
    print(f"total {time.time() - t0:.0f}s; check failures: {len(FAILS)}")
    print(format_table(rows))


if __name__ == "__main__":
    main()
