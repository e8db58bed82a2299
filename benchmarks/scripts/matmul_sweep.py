"""GEMM config sweep on the GPU: the skinny TMA kernel and the weight-only kernels at decode
shapes, warp-specialised variants of the persistent kernel at large shapes, and the host time
of the entry points and of each way to launch a kernel (``host``); every config checked against
float64 and timed against cuBLAS in the same run.

    PYTHONPATH=. python benchmarks/scripts/matmul_sweep.py [--only bf16,wo[,wogrid|woswap],big,square,fp8,gluon,ab,ab8,host,entry,clean] [--fmts F,..] [--ms M,..] [--budget S] [--out DIR]

Prints, per shape, the fastest configs with their time, and a summary table last; writes
``decode_sweep.json`` under --out. In ``gluon`` rows, "default us" is the Triton kernel's entry
point and "best" the fastest Gluon config.
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import time
from dataclasses import replace

import torch
import triton
import triton.testing

import tessera.quant as quant
from tessera.bench.common import bench_ms
from tessera.kernels.matmul import matmul, wo_matmul
from tessera.kernels.matmul.configs import Config, Problem, skinny_config, split_k_for

SHAPES = [(1, 4096, 4096), (16, 4096, 4096), (64, 4096, 4096), (128, 4096, 4096),
          (1, 8192, 8192), (16, 8192, 8192), (64, 8192, 8192), (128, 8192, 8192)]


def bench(fn):
    return bench_ms(fn, warmup=10, rep=60)


def rel(out, ref):
    out = out.double()
    return float("inf") if not torch.isfinite(out).all() else ((out - ref).norm() / ref.norm()).item()


def time_configs(configs, call, ref, tol, deadline):
    """[(ms, config, err)], fastest first: each config checked against ``ref`` (``call(cfg, False)``
    returns the output), then timed as a bare launch (``call(cfg, True)`` returns it)."""
    timings = []
    for cfg in configs:
        if time.time() > deadline:
            break
        try:
            err = rel(call(cfg, False), ref)
            ms = bench(call(cfg, True)) if err < tol else float("inf")
        except Exception as e:  # noqa: BLE001 - a config that cannot run counts as infinitely slow
            err, ms = repr(e)[:80], float("inf")
        timings.append((ms, cfg, err))
    return sorted(timings, key=lambda t: t[0])


def report(timings, tol, rate=lambda ms: ""):
    """Print the five fastest configs and the first failures; return the failures."""
    for ms, cfg, err in timings[:5]:
        print(f"   {ms * 1e3:7.1f}us  {rate(ms)}{cfg}  err {err}", flush=True)
    bad = [(c, e) for ms, c, e in timings if not isinstance(e, float) or e >= tol]
    for c, e in bad[:3]:
        print(f"   FAIL {c}: {e}", flush=True)
    return bad


def skinny_space(M, N, K, sms):
    p = Problem(M, N, K, 1, 2, True, False, sms)
    tiles = [(64, 128, 4, 4), (64, 128, 6, 4), (64, 256, 3, 4), (64, 256, 4, 4), (128, 128, 4, 4), (128, 64, 6, 4),
             (32, 256, 4, 4), (32, 128, 6, 4)]
    if M >= 64:
        # Wider N tiles (fewer re-reads of the activations) and half-size pipelines (96 KB at 128
        # rows, two programs per SM): both slower than the default on the H100 (results/matmul.md)
        tiles += [(128, 128, 3, 4), (128, 128, 3, 8), (256, 64, 4, 8), (256, 64, 3, 8),
                  (64, 128, 2, 4), (64, 64, 4, 4)]
    out = []
    for BN, BK, st, warps in tiles:
        d = skinny_config(p, BN, BK, st, warps=warps)
        for split in sorted({d.split_k, min(16, d.split_k * 2), max(1, d.split_k // 2)}):
            out.append(replace(d, split_k=split))
    d = skinny_config(p)
    out += [replace(d, swap=False), replace(d, warps=8)]
    return list(dict.fromkeys(out))


def sweep_bf16(budget, t0, results, ms=None):
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for M, N, K in SHAPES:
        if ms and M not in ms:
            continue
        x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
        ref = x.double() @ w.double().t()
        t_cb = bench(lambda: torch.matmul(x, w.t()))
        t_def = bench(lambda: matmul(x, w.t()))
        timings = time_configs(skinny_space(M, N, K, sms),
                               lambda cfg, launcher: matmul(x, w.t(), _config=cfg, _launcher=launcher),
                               ref, 1e-2, t0 + budget)
        nbytes = (M * K + N * K + M * N) * 2
        best = timings[0] if timings else (float("inf"), None, None)
        print(f"bf16 M={M} N={N} K={K}: cuBLAS {t_cb * 1e3:.1f}us ({nbytes / t_cb / 1e9:.2f} TB/s), "
              f"default {t_def * 1e3:.1f}us", flush=True)
        bad = report(timings, 1e-2)
        results.append({"kind": "bf16", "M": M, "N": N, "K": K, "cublas_us": t_cb * 1e3, "default_us": t_def * 1e3,
                        "best_us": best[0] * 1e3, "best": str(best[1]), "tb_s_best": nbytes / best[0] / 1e9,
                        "tb_s_cublas": nbytes / t_cb / 1e9, "fails": len(bad)})


def wo_grid(M, N, KP, sms):
    """The packed-decode fp4 kernel over BN x BK x warps x stages x split (TMA loads)."""
    out = []
    for BN in (64, 128):
        for BK in (128, 256):
            split = split_k_for(-(-N // BN), KP, BK, 4 * sms - 1, 2)
            for warps in (2, 4, 8):
                for stages in (3, 5):
                    for sp in (split, 2 * split):
                        out.append(Config("wo", 16, BN, BK, 1, stages, warps, sp, tma_loads=True))
    return out


def wo_swap_space(M, N, KP, sms):
    """The swapped product (decoded weight as the MMA's register operand) over BN x BK x split,
    by TMA at 3 and 4 stages and by pointer loads at 3, beside the default. (Eight rows, a
    wgmma 8 wide, compile to mma.sync with a shared-memory round trip: not swept.)"""
    from tessera.kernels.matmul.wo import _default

    out = [_default(M, N, KP, 4, sms, False)]
    for BN in (64, 128):
        for BK in (128, 256):
            split = split_k_for(-(-N // BN), KP, BK, 4 * sms - 1, 2)
            for sp in (split, 2 * split):
                out.append(Config("wo", 16, BN, BK, 1, 3, 4, sp, tma_loads=True, swap=True))
                out.append(Config("wo", 16, BN, BK, 1, 4, 4, sp, tma_loads=True, swap=True))
                out.append(Config("wo", 16, BN, BK, 1, 3, 4, sp, swap=True))
    return out


def wo_space(M, N, KP, bits, sms, grid=False, swap=False):
    if swap:
        return wo_swap_space(M, N, KP, sms)
    if grid and bits == 4:
        return wo_grid(M, N, KP, sms)
    # the fp32-decode kernel at the previous default, for the same-run comparison
    split = split_k_for(-(-N // 64), KP, 128, 4 * sms - 1, 2)
    out = [Config("wo", 16, 64, 128, 1, 4, 4, split, tma_loads=True, packed=False)]
    for BN in (64, 128):
        for BK in ((128, 256, 512) if bits == 4 else (128, 256)):
            split = split_k_for(-(-N // BN), KP, BK, 4 * sms - 1, 2)  # the weight-only default's rule
            for sp in sorted({split, split * 2}):
                out.append(Config("wo", 16, BN, BK, 1, 4, 4, sp, tma_loads=True))
                if bits == 6:
                    out.append(Config("wo", 16, BN, BK, 1, 3, 4, sp, tma_loads=True))
                if M == 1 and BK == 256:
                    out.append(Config("wo", 1, BN, BK, 1, 4, 4, sp, tma_loads=True))
            out.append(Config("wo", 16, BN, BK, 1, 3, 4, split))
    return list(dict.fromkeys(out))


def sweep_wo(budget, t0, results, fmts=("fp4_e2m1", "fp6_e2m3"), grid=False, swap=False):
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for fmt in fmts:
        for M, N, K in [(1, 4096, 4096), (1, 8192, 8192)] if grid else \
                [(1, 4096, 4096), (16, 4096, 4096), (1, 8192, 8192), (16, 8192, 8192)]:
            w = torch.randn(K, N, device="cuda") / K ** 0.5
            qw = quant.quantize(w, fmt)
            x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
            ref = x.double() @ quant.dequantize(qw).double()
            wb = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
            t_cb = bench(lambda: torch.matmul(x, wb.t()))
            t_def = bench(lambda: wo_matmul(x, qw))
            timings = time_configs(wo_space(M, N, qw.k_padded, qw.fmt.bits, sms, grid, swap),
                                   lambda cfg, launcher: wo_matmul(x, qw, _config=cfg, _launcher=launcher),
                                   ref, 2e-2, t0 + budget)
            best = timings[0] if timings else (float("inf"), None, None)
            print(f"wo {fmt} M={M} N=K={N}: cuBLAS bf16 {t_cb * 1e3:.1f}us, default {t_def * 1e3:.1f}us, "
                  f"packed {qw.nbytes() / 1e6:.1f} MB", flush=True)
            bad = report(timings, 2e-2, lambda ms: f"{qw.nbytes() / ms / 1e9:.2f} TB/s  ")
            for ms, cfg, err in timings:
                if not cfg.packed:
                    print(f"   fp32-decode baseline {ms * 1e3:7.1f}us  {cfg}  err {err}", flush=True)
            results.append({"kind": fmt, "M": M, "N": N, "K": K, "cublas_us": t_cb * 1e3, "default_us": t_def * 1e3,
                            "best_us": best[0] * 1e3, "best": str(best[1]), "fails": len(bad)})


# (BM, BN, BK, stages, warps, warp-specialised, sub-tiled epilogue, group) of the persistent kernel
BIG_CONFIGS = [(128, 256, 64, 3, 8, True, False, 8), (128, 256, 64, 4, 8, True, True, 8),
               (128, 256, 64, 4, 8, True, True, 16), (128, 256, 64, 4, 8, True, True, 4),
               (256, 128, 64, 4, 8, True, True, 8), (128, 256, 128, 2, 8, True, True, 8)]


# More variants of the warp-specialised kernel for 8192^3 alone (``--only square``)
SQUARE_CONFIGS = [(128, 256, 64, 3, 8, True, False, 8), (128, 256, 64, 3, 8, True, False, 16),
                  (128, 256, 64, 3, 8, True, False, 4), (128, 256, 64, 3, 8, True, True, 8),
                  (256, 128, 64, 3, 8, True, False, 8), (128, 256, 64, 4, 8, True, True, 8),
                  (128, 128, 64, 4, 8, True, False, 8), (128, 256, 128, 2, 8, True, False, 8)]


def record_large(results, kind, M, N, K, t_peer, timings, default):
    """Print every config's time of a large GEMM sweep and add its summary row (default vs best)."""
    for ms, cfg, err in timings:
        print(f"   {kind} {M}x{N}x{K} {ms * 1e3:8.1f}us {2 * M * N * K / ms / 1e9:6.0f} TFLOP/s  {cfg} err {err}",
              flush=True)
    first = next(t for t in timings if t[1] == default)
    results.append({"kind": kind, "M": M, "N": N, "K": K, "cublas_us": t_peer * 1e3, "default_us": first[0] * 1e3,
                    "best_us": timings[0][0] * 1e3, "best": str(timings[0][1])})


def sweep_big(results, square=False):
    shapes = [(8192, 8192, 8192)] if square else \
        [(8192, 8192, 8192), (8192, 4096, 4096), (4096, 4096, 4096), (8192, 16384, 4096), (8192, 4096, 16384),
         (8192, 12288, 4096)]
    for M, N, K in shapes:
        a = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
        ref = (a[:256].double() @ w.double().t())
        t_cb = bench(lambda: torch.matmul(a, w.t()))
        configs = [Config("tma", BM, BN, BK, g, st, wp, subtile=sub, warp_spec=ws)
                   for BM, BN, BK, st, wp, ws, sub, g in (SQUARE_CONFIGS if square else BIG_CONFIGS)]
        timings = time_configs(configs, lambda cfg, launcher: matmul(a, w.t(), _config=cfg, _launcher=launcher)
                               if launcher else matmul(a, w.t(), _config=cfg)[:256], ref, 1e-2, float("inf"))
        record_large(results, "big", M, N, K, t_cb, timings, configs[0])


GLUON_CONFIGS = [dict(STAGES=3, GROUP_M=8), dict(STAGES=3, GROUP_M=16), dict(STAGES=3, GROUP_M=4),
                 dict(STAGES=4, SPLIT_N=2, GROUP_M=8), dict(STAGES=4, SPLIT_N=2, GROUP_M=16)]


def sweep_gluon(results):
    """The warp-specialised Gluon GEMM (``gluon_ws``) at the large shapes, both weight layouts,
    against the default Triton kernel and cuBLAS in the same run; every config checked first."""
    from tessera.kernels.matmul import gluon_ws

    for M, N, K in [(8192, 8192, 8192), (4096, 4096, 4096), (8192, 4096, 4096), (8192, 12288, 4096),
                    (8192, 16384, 4096), (8192, 4096, 16384)]:
        a = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        for layout in ("kn", "nt"):
            b = torch.randn(K, N, device="cuda", dtype=torch.bfloat16) if layout == "kn" else \
                torch.randn(N, K, device="cuda", dtype=torch.bfloat16).t()
            ref = a[:256].double() @ b.double()
            t_cb = bench(lambda: torch.matmul(a, b))
            t_triton = bench(lambda: matmul(a, b))
            timings = []
            for over in GLUON_CONFIGS:
                try:
                    err = rel(gluon_ws.matmul_ws(a, b, **over)[:256], ref)
                    ms = bench(lambda: gluon_ws.matmul_ws(a, b, **over)) if err < 1e-2 else float("inf")
                except Exception as e:  # noqa: BLE001 - a config that cannot run counts as infinitely slow
                    err, ms = repr(e)[:80], float("inf")
                timings.append((ms, over, err))
                print(f"   gluon {layout} {M}x{N}x{K} {ms * 1e3:8.1f}us {2 * M * N * K / ms / 1e9:6.0f} TFLOP/s "
                      f"{over} err {err}", flush=True)
            timings.sort(key=lambda t: t[0])
            results.append({"kind": f"gluon {layout}", "M": M, "N": N, "K": K, "cublas_us": t_cb * 1e3,
                            "default_us": t_triton * 1e3, "best_us": timings[0][0] * 1e3, "best": str(timings[0][1])})
    # linear + bias + GELU (the suite's fused row): cuBLAS column = torch eager's matmul + bias + gelu
    M, N, K = 8192, 16384, 4096
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(K, N, device="cuda", dtype=torch.bfloat16)
    bias = torch.randn(N, device="cuda", dtype=torch.bfloat16)
    ref = torch.nn.functional.gelu(x[:256].double() @ w.double() + bias.double())
    err = rel(gluon_ws.matmul_ws(x, w, bias=bias, activation="gelu")[:256], ref)
    t_gl = bench(lambda: gluon_ws.matmul_ws(x, w, bias=bias, activation="gelu")) if err < 1e-2 else float("inf")
    t_eager = bench(lambda: torch.nn.functional.gelu(x @ w + bias))
    t_triton = bench(lambda: matmul(x, w, bias=bias, activation="gelu"))
    print(f"   gluon fused bias+gelu {M}x{N}x{K}: gluon {t_gl * 1e3:.1f}us (err {err}), triton {t_triton * 1e3:.1f}us, "
          f"eager {t_eager * 1e3:.1f}us", flush=True)
    results.append({"kind": "gluon bias+gelu", "M": M, "N": N, "K": K, "cublas_us": t_eager * 1e3,
                    "default_us": t_triton * 1e3, "best_us": t_gl * 1e3, "best": "default"})
    # fp8 e4m3 8192^3: cuBLAS column = torch._scaled_mm, default = Tessera's Triton scaled_matmul
    from tessera.kernels.matmul import quantize_fp8, scaled_matmul

    n = 8192
    x, w = torch.randn(n, n, device="cuda"), torch.randn(n, n, device="cuda")
    for label, axis in (("per-tensor", None), ("row/col", 1)):
        (qa, sa), (qw, sw) = (quantize_fp8(x), quantize_fp8(w)) if axis is None else \
            (quantize_fp8(x, axis=1), quantize_fp8(w, axis=1))
        b, sb = qw.t(), (sw if axis is None else sw.t())
        ref = (qa[:256].double() * sa.double().reshape(-1, 1)[:256]) @ (b.double() * sb.double())
        err = rel(gluon_ws.scaled_matmul_ws(qa, b, sa, sb)[:256], ref)
        t_gl = bench(lambda: gluon_ws.scaled_matmul_ws(qa, b, sa, sb)) if err < 1e-2 else float("inf")
        t_cb = bench(lambda: torch._scaled_mm(qa, b, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16))
        t_tr = bench(lambda: scaled_matmul(qa, b, sa, sb))
        print(f"   gluon fp8 {label} {n}^3: gluon {2 * n ** 3 / t_gl / 1e9:.0f} TFLOP/s (err {err}), "
              f"triton {2 * n ** 3 / t_tr / 1e9:.0f}, _scaled_mm {2 * n ** 3 / t_cb / 1e9:.0f}", flush=True)
        results.append({"kind": f"gluon fp8 {label}", "M": n, "N": n, "K": n, "cublas_us": t_cb * 1e3,
                        "default_us": t_tr * 1e3, "best_us": t_gl * 1e3, "best": "default"})


def interleaved(label, variants, gflop, rounds):
    """Time ``variants`` (name -> callable) in ``rounds`` alternating rounds; print each one's
    TFLOP/s (median of the rounds, range in brackets) and return the median ms per variant."""
    times = {k: [] for k in variants}
    for _ in range(rounds):
        for k, fn in variants.items():
            times[k].append(bench(fn))
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    print(f"   {label}: " + ", ".join(f"{k} {gflop / v:.0f} ({min(gflop / t for t in times[k]):.0f}-"
                                      f"{max(gflop / t for t in times[k]):.0f})" for k, v in med.items())
          + " TFLOP/s", flush=True)
    return med


def ab_rounds(results, rounds=5):
    """cuBLAS, the Triton kernel's default and the Gluon kernel's default at the suite's large
    shapes (its layouts), timed in interleaved rounds: the median of the rounds' medians, so that
    the card's drift between moments does not decide a comparison."""
    from tessera.kernels.matmul.configs import GLUON_DEFAULT, default_config

    for name, M, N, K, tb in [("square", 4096, 4096, 4096, False), ("square", 8192, 8192, 8192, False),
                              ("qkv", 8192, 12288, 4096, True), ("out", 8192, 4096, 4096, True),
                              ("mlp-up", 8192, 16384, 4096, True), ("mlp-down", 8192, 4096, 16384, True)]:
        a = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(N, K, device="cuda", dtype=torch.bfloat16).t() if tb else \
            torch.randn(K, N, device="cuda", dtype=torch.bfloat16)
        triton_cfg = default_config(Problem(M, N, K, 1, 2, True, False, torch.cuda.get_device_properties(0)
                                            .multi_processor_count))
        variants = {"cuBLAS": lambda: torch.matmul(a, b),
                    "triton": matmul(a, b, _config=triton_cfg, _launcher=True),
                    "gluon": matmul(a, b, _config=GLUON_DEFAULT, _launcher=True)}
        ref = a[:256].double() @ b.double()
        for label in ("triton", "gluon"):
            cfg = triton_cfg if label == "triton" else GLUON_DEFAULT
            assert rel(matmul(a, b, _config=cfg)[:256], ref) < 1e-2, (label, M, N, K)
        med = interleaved(f"ab {name} {M}x{N}x{K}", variants, 2 * M * N * K / 1e9, rounds)
        best = min(("triton", "gluon"), key=lambda k: med[k])
        results.append({"kind": f"ab {name}", "M": M, "N": N, "K": K, "cublas_us": med["cuBLAS"] * 1e3,
                        "default_us": med["triton"] * 1e3, "best_us": med[best] * 1e3,
                        "best": f"{best} (gluon {med['gluon'] * 1e3:.1f}us)"})


FP8_CONFIGS = [(128, 256, 128, 3, False, True, True), (128, 256, 128, 3, True, False, False),
               (128, 256, 128, 3, True, True, False), (128, 256, 64, 4, True, False, False),
               (128, 256, 64, 4, True, True, False), (128, 128, 128, 4, True, False, False),
               (256, 128, 128, 3, True, True, False)]  # (BM, BN, BK, stages, warp_spec, subtile, flatten)


def sweep_fp8(results):
    """fp8 e4m3 8192^3, per-tensor and row/column scales: warp-specialised variants against the
    default (flattened, sub-tiled epilogue) and torch._scaled_mm in the same run."""
    from tessera.kernels.matmul import quantize_fp8, scaled_matmul

    n = 8192
    a = torch.randn(n, n, device="cuda")
    w = torch.randn(n, n, device="cuda")
    configs = [Config("tma", BM, BN, BK, 8, st, 8, warp_spec=ws, subtile=sub, flatten=fl)
               for BM, BN, BK, st, ws, sub, fl in FP8_CONFIGS]
    for label, axis in (("per-tensor", None), ("row/col", 1)):
        (qa, sa), (qw, sw) = (quantize_fp8(a), quantize_fp8(w)) if axis is None else \
            (quantize_fp8(a, axis=1), quantize_fp8(w, axis=1))
        b, sb = qw.t(), (sw if axis is None else sw.t())
        ref = (qa[:256].double() * sa.double().reshape(-1, 1)[:256]) @ (b.double() * sb.double())
        t_cb = bench(lambda: torch._scaled_mm(qa, b, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16))
        timings = time_configs(configs, lambda cfg, launcher: (lambda: scaled_matmul(qa, b, sa, sb, _config=cfg))
                               if launcher else scaled_matmul(qa, b, sa, sb, _config=cfg)[:256], ref, 1e-2,
                               float("inf"))
        print(f"   fp8 {label} torch._scaled_mm {t_cb * 1e3:8.1f}us {2 * n ** 3 / t_cb / 1e9:6.0f} TFLOP/s", flush=True)
        record_large(results, f"fp8 {label}", n, n, n, t_cb, timings, configs[0])


def ab_fp8(results, rounds=5):
    """fp8 e4m3 8192^3, per-tensor and row/column scales: torch._scaled_mm, the Triton kernel's
    default and the Gluon kernel in interleaved rounds, each checked against float64 first."""
    from tessera.kernels.matmul import gluon_ws, quantize_fp8, scaled_matmul

    n = 8192
    a = torch.randn(n, n, device="cuda")
    w = torch.randn(n, n, device="cuda")
    for label, axis in (("per-tensor", None), ("row/col", 1)):
        (qa, sa), (qw, sw) = (quantize_fp8(a, axis=axis), quantize_fp8(w, axis=axis))
        b, sb = qw.t(), (sw if axis is None else sw.t())
        ref = (qa[:256].double() * sa.double().reshape(-1, 1)[:256]) @ (b.double() * sb.double())
        variants = {"_scaled_mm": lambda: torch._scaled_mm(qa, b, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16),
                    "triton": lambda: scaled_matmul(qa, b, sa, sb),
                    "gluon": lambda: gluon_ws.scaled_matmul_ws(qa, b, sa, sb)}
        for k in ("triton", "gluon"):
            assert rel(variants[k]()[:256], ref) < 1e-2, (k, label)
        med = interleaved(f"ab fp8 {label}", variants, 2 * n ** 3 / 1e9, rounds)
        best = min(("triton", "gluon"), key=lambda k: med[k])
        results.append({"kind": f"ab fp8 {label}", "M": n, "N": n, "K": n, "cublas_us": med["_scaled_mm"] * 1e3,
                        "default_us": med["triton"] * 1e3, "best_us": med[best] * 1e3,
                        "best": f"{best} (gluon {med['gluon'] * 1e3:.1f}us)"})


def per_call_us(fn, n=500):
    """Host µs per call of ``fn`` (no sync inside the timed loop)."""
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    host = (time.perf_counter() - t) / n
    torch.cuda.synchronize()
    return host * 1e6


@contextlib.contextmanager
def launch_path(fast: bool):
    """Within: the entry points' plans start afresh and may relaunch the compiled kernel directly
    (``fast``) or go through Triton's launch path; after: plans dropped, the variable as it was."""
    from tessera.kernels.matmul import api, wo

    before = os.environ.get("TESSERA_FAST_LAUNCH")
    os.environ["TESSERA_FAST_LAUNCH"] = "1" if fast else "0"
    api._PLANS.clear()
    wo._PLANS.clear()
    try:
        yield
    finally:
        api._PLANS.clear()
        wo._PLANS.clear()
        if before is None:
            del os.environ["TESSERA_FAST_LAUNCH"]
        else:
            os.environ["TESSERA_FAST_LAUNCH"] = before


def host_overhead():
    """Host time per call of the entry points at decode shapes, with plans that relaunch the
    compiled kernel directly and with plans that go through Triton's launch path; then a profile
    of the bf16 entry point."""
    x = torch.randn(1, 4096, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(4096, device="cuda", dtype=torch.bfloat16)
    qw = quant.quantize(torch.randn(4096, 4096, device="cuda"), "fp4_e2m1")
    rows = [("torch.matmul", lambda: torch.matmul(x, w.t())), ("empty torch op (x.add_(0))", lambda: x.add_(0))]
    for fast in (False, True):
        tag = "relaunch" if fast else "Triton launch"
        with launch_path(fast):
            ref = matmul(x, w.t()), wo_matmul(x, qw), matmul(x, w.t(), bias=b)
            again = matmul(x, w.t()), wo_matmul(x, qw), matmul(x, w.t(), bias=b)
            print(f"{tag}: repeated calls match the first:", all(torch.equal(r, g) for r, g in zip(ref, again)),
                  flush=True)
            for name, fn in ((f"tessera matmul ({tag})", lambda: matmul(x, w.t())),
                             (f"tessera matmul + bias ({tag})", lambda: matmul(x, w.t(), bias=b)),
                             (f"tessera wo_matmul fp4 ({tag})", lambda: wo_matmul(x, qw))):
                print(f"host {name}: {per_call_us(fn):.1f} us per call", flush=True)
    for name, fn in rows[:2]:
        print(f"host {name}: {per_call_us(fn):.1f} us per call", flush=True)
    host_breakdown(x, w)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(1000):
        matmul(x, w.t())
    prof.disable()
    torch.cuda.synchronize()
    pstats.Stats(prof).sort_stats("tottime").print_stats(22)


def host_breakdown(x, w):
    """Host µs of each step of a planned bf16 call (signature, output allocation, stream query,
    Triton's scratch allocator, the compiled kernel's launch)."""
    from tessera.kernels import triton_launch
    from tessera.kernels.matmul import api

    wt = w.t()
    matmul(x, wt)
    sig = api._signature(x, wt, None, None, None, None, torch.float32, False)
    plan = api._PLANS.get(sig)
    relaunch = next((c.cell_contents for c in plan.__closure__
                     if isinstance(c.cell_contents, triton_launch.Relaunch)), None)
    out = torch.empty(1, w.shape[0], device="cuda", dtype=torch.bfloat16)
    stream = torch.cuda.current_stream().cuda_stream
    steps = [("signature", lambda: api._signature(x, wt, None, None, None, None, torch.float32, False)),
             ("plan lookup", lambda: api._PLANS.get(sig)),
             ("torch.empty out", lambda: torch.empty((1, w.shape[0]), dtype=torch.bfloat16, device="cuda")),
             ("launch context", triton_launch._launch_context),
             ("scratch allocator", lambda: triton_launch._scratch(1024, 128, stream))]
    if relaunch is not None:
        relaunch.launch(a=x, b=wt, out=out)
        runner, args = relaunch._runner, list(relaunch._args)
        steps += [("relaunch.launch", lambda: relaunch.launch(a=x, b=wt, out=out)),
                  ("compiled runner", lambda: runner(*args, stream=stream))]
    for name, fn in steps:
        print(f"host step {name}: {per_call_us(fn, 2000):.2f} us", flush=True)


def bench_clean_l2(fn, reps=100):
    """Median µs of ``fn`` after L2 is evicted by *reading* 256 MB, so no dirty lines are left
    to write back (``do_bench`` evicts by writing, which leaves ~50 MB dirty in L2)."""
    buf = torch.ones(64 * 2 ** 20, dtype=torch.float32, device="cuda")
    fn()
    times = []
    for _ in range(reps):
        buf.sum()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return sorted(times)[len(times) // 2]


def clean_l2(results):
    """Decode GEMMs, cuBLAS bf16 vs weight-only fp4 (default config), timed with do_bench and
    with a clean L2 (:func:`bench_clean_l2`)."""
    for n in (4096, 8192):
        qw = quant.quantize(torch.randn(n, n, device="cuda") / n ** 0.5, "fp4_e2m1")
        x = torch.randn(1, n, device="cuda", dtype=torch.bfloat16)
        wb = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        cb, wo = (lambda: torch.matmul(x, wb.t())), wo_matmul(x, qw, _launcher=True)
        d_cb, d_wo = bench(cb) * 1e3, bench(wo) * 1e3
        c_cb, c_wo = bench_clean_l2(cb), bench_clean_l2(wo)
        print(f"clean-L2 1x{n}x{n}: do_bench cuBLAS bf16 {d_cb:.1f} fp4 {d_wo:.1f} ({d_cb / d_wo:.2f}x); "
              f"clean L2 cuBLAS bf16 {c_cb:.1f} fp4 {c_wo:.1f} ({c_cb / c_wo:.2f}x)", flush=True)
        results.append({"kind": "clean-L2 fp4", "M": 1, "N": n, "K": n, "cublas_us": c_cb, "default_us": c_wo,
                        "best_us": c_wo, "best": f"do_bench: cuBLAS {d_cb:.1f} fp4 {d_wo:.1f}"})


def entry_points(results):
    """Decode shapes through the public entry points (default configs, plan cache warm) vs cuBLAS."""
    for M, N, K in SHAPES:
        x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
        t_cb = bench(lambda: torch.matmul(x, w.t()))
        t_ts = bench(lambda: matmul(x, w.t()))
        t_k = bench(matmul(x, w.t(), _launcher=True))
        print(f"entry bf16 {M}x{N}x{K}: tessera {t_ts * 1e3:.1f}us (kernel {t_k * 1e3:.1f}) cuBLAS {t_cb * 1e3:.1f}us",
              flush=True)
        results.append({"kind": "entry", "M": M, "N": N, "K": K, "cublas_us": t_cb * 1e3, "default_us": t_ts * 1e3,
                        "best_us": t_k * 1e3, "best": "default config, bare launch"})
    for n in (4096, 8192):
        qw = quant.quantize(torch.randn(n, n, device="cuda") / n ** 0.5, "fp4_e2m1")
        x = torch.randn(1, n, device="cuda", dtype=torch.bfloat16)
        wb = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        t_cb = bench(lambda: torch.matmul(x, wb.t()))
        t_ts = bench(lambda: wo_matmul(x, qw))
        t_k = bench(wo_matmul(x, qw, _launcher=True))
        print(f"entry wo fp4 1x{n}x{n}: tessera {t_ts * 1e3:.1f}us (kernel {t_k * 1e3:.1f}) cuBLAS bf16 "
              f"{t_cb * 1e3:.1f}us", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=400)
    ap.add_argument("--only", default="bf16,wo")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--fmts", default="fp4_e2m1,fp6_e2m3", help="weight-only formats to sweep")
    ap.add_argument("--ms", default="", help="bf16 decode rows to sweep, e.g. 64,128 (default: all)")
    a = ap.parse_args()
    only = set(a.only.split(","))
    print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, flush=True)
    t0 = time.time()
    results = []
    try:
        if "bf16" in only:
            sweep_bf16(a.budget * (0.55 if "wo" in only else 1.0), t0, results,
                       {int(m) for m in a.ms.split(",") if m})
        if "wo" in only:
            sweep_wo(a.budget, t0, results, a.fmts.split(","), grid="wogrid" in only, swap="woswap" in only)
        if "host" in only:
            host_overhead()
        if "clean" in only:
            clean_l2(results)
        if "entry" in only:
            entry_points(results)
        if "big" in only:
            sweep_big(results)
        if "square" in only:
            sweep_big(results, square=True)
        if "fp8" in only:
            sweep_fp8(results)
        if "gluon" in only:
            sweep_gluon(results)
        if "ab" in only:
            ab_rounds(results)
        if "ab8" in only:
            ab_fp8(results)
    finally:
        with open(os.path.join(a.out, "decode_sweep.json"), "w") as f:
            json.dump(results, f, indent=1)
        print(f"\n{'workload':34s} {'cuBLAS us':>10s} {'default us':>10s} {'best us':>9s} {'x cuBLAS':>8s}  best config")
        for r in results:
            print(f"{r['kind'] + ' ' + str(r['M']) + 'x' + str(r['N']) + 'x' + str(r['K']):34s} {r['cublas_us']:10.1f} "
                  f"{r['default_us']:10.1f} {r['best_us']:9.1f} {r['cublas_us'] / r['best_us']:8.2f}  {r['best']}")
        print(f"total {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
