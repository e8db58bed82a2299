"""Benchmark suite ``matmul``: Tessera's GEMMs against cuBLAS (torch.matmul), torch._scaled_mm and
torch eager, all timed in the same run. ``TESSERA_AUTOTUNE=1`` tunes each shape first.

Rows: bf16 GEMM at square and transformer shapes, decode shapes (small M), fused
linear+bias+GELU, fp8 8192^3, weight-only fp4/fp6 at decode shapes. The last row is the
geometric mean of Tessera over cuBLAS on the bf16 rows.
"""
from __future__ import annotations

import math

import torch

from ..common import Row, geomean, tflops, tbps, try_bench

SUITE = "matmul"


def _own_best(key):
    """Fastest own-kernel config from the tuning record of ``key`` (None without one)."""
    from ...kernels.matmul.autotune import cached_choice
    from ...kernels.matmul.configs import Config

    rec = cached_choice(key) if key else None
    if not rec:
        return None
    own = [(ms, c) for ms, c in rec.get("timings", []) if ms is not None and c["kernel"] != "cublas"]
    return Config.from_json(min(own, key=lambda t: t[0])[1]) if own else None


def _gemm_rows(shapes, dev, quick, sink):
    from ...kernels.matmul import matmul
    from ...kernels.matmul.autotune import LAST

    rows = []
    for name, M, N, K, b_kmajor in shapes:
        a = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
        w = torch.randn(N, K, device=dev, dtype=torch.bfloat16) if b_kmajor else None
        b = w.t() if b_kmajor else torch.randn(K, N, device=dev, dtype=torch.bfloat16)
        matmul(a, b)
        cfg, key = LAST
        t_ts = try_bench(lambda: matmul(a, b))
        t_cb = try_bench(lambda: torch.matmul(a, b))
        own = cfg if cfg.kernel != "cublas" else _own_best(key)
        t_own = t_ts if cfg.kernel != "cublas" else (try_bench(lambda: matmul(a, b, _config=own)) if own else None)
        fl = 2.0 * M * N * K
        unit_bw = M <= 128
        notes = f"dispatch={cfg.kernel}; own kernel {own} at {tflops(fl, t_own) or 0:.0f} TFLOP/s"
        if t_own and t_cb:
            notes += f"; own/cuBLAS {t_cb / t_own:.2f}x"
        if unit_bw:
            nbytes = (M * K + K * N + M * N) * 2
            rows.append(Row(SUITE, f"{name} bf16 {M}x{N}x{K}", "TB/s", tbps(nbytes, t_ts), {"cuBLAS": tbps(nbytes, t_cb)}, notes))
        else:
            rows.append(Row(SUITE, f"{name} bf16 {M}x{N}x{K}", "TFLOP/s", tflops(fl, t_ts), {"cuBLAS": tflops(fl, t_cb)}, notes))
        sink.append(rows[-1])
        print("  ", rows[-1].workload, rows[-1].tessera, rows[-1].peers, notes, flush=True)
    return rows


def _fused_row(dev, quick):
    import torch.nn.functional as F

    from ...kernels.matmul import matmul

    M, N, K = (4096, 8192, 4096) if quick else (8192, 16384, 4096)
    x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
    w = torch.randn(N, K, device=dev, dtype=torch.bfloat16) / math.sqrt(K)
    bias = torch.randn(N, device=dev, dtype=torch.bfloat16)
    t_ts = try_bench(lambda: matmul(x, w.t(), bias=bias, activation="gelu"))
    t_eager = try_bench(lambda: F.gelu(x @ w.t() + bias))
    t_lin = try_bench(lambda: F.gelu(F.linear(x, w, bias)))
    fl = 2.0 * M * N * K
    return [Row(SUITE, f"linear+bias+gelu bf16 {M}x{N}x{K}", "TFLOP/s", tflops(fl, t_ts),
                {"torch eager matmul+bias+gelu": tflops(fl, t_eager), "F.linear+gelu": tflops(fl, t_lin)})]


def _fp8_row(dev, quick):
    from ...kernels.matmul import quantize_fp8, scaled_matmul

    rows = []
    n = 4096 if quick else 8192
    a = torch.randn(n, n, device=dev)
    w = torch.randn(n, n, device=dev)
    qa, sa = quantize_fp8(a)
    qw, sw = quantize_fp8(w)
    b = qw.t()
    fl = 2.0 * n ** 3
    t_ts = try_bench(lambda: scaled_matmul(qa, b, sa, sw))
    t_cb = try_bench(lambda: torch._scaled_mm(qa, b, scale_a=sa, scale_b=sw, out_dtype=torch.bfloat16))
    rows.append(Row(SUITE, f"fp8 e4m3 {n}^3 per-tensor", "TFLOP/s", tflops(fl, t_ts), {"torch._scaled_mm": tflops(fl, t_cb)}))
    qa, sa = quantize_fp8(a, axis=1)
    qw, sw = quantize_fp8(w, axis=1)
    b, sb = qw.t(), sw.t()
    t_ts = try_bench(lambda: scaled_matmul(qa, b, sa, sb))
    t_cb = try_bench(lambda: torch._scaled_mm(qa, b, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16))
    rows.append(Row(SUITE, f"fp8 e4m3 {n}^3 row/col scales", "TFLOP/s", tflops(fl, t_ts), {"torch._scaled_mm": tflops(fl, t_cb)}))
    return rows


def _wo_rows(dev, quick):
    from ... import quant
    from ...kernels.matmul import matmul, wo_matmul

    rows = []
    sizes = [4096] if quick else [4096, 8192]
    for n in sizes:
        w = torch.randn(n, n, device=dev) / math.sqrt(n)
        wb = w.to(torch.bfloat16)
        for M in (1, 16):
            x = torch.randn(M, n, device=dev, dtype=torch.bfloat16)
            t_cb = try_bench(lambda: torch.matmul(x, wb))
            t_tsb = try_bench(lambda: matmul(x, wb))
            for fmt in ("fp4_e2m1", "fp6_e2m3", "fp6_e3m2"):
                if quick and fmt == "fp6_e3m2":
                    continue
                qw = quant.quantize(w, fmt, 32)
                t = try_bench(lambda: wo_matmul(x, qw))
                nbytes = qw.nbytes() + x.numel() * 2 + M * n * 2
                us = lambda ms: None if ms is None else ms * 1e3  # noqa: E731
                rows.append(Row(SUITE, f"weight-only {fmt} M={M} N=K={n}", "us", us(t),
                                {"cuBLAS bf16": us(t_cb), "tessera bf16": us(t_tsb)},
                                f"{tbps(nbytes, t) or 0:.2f} TB/s of packed weight", higher_is_better=False))
                print("  ", rows[-1].workload, rows[-1].tessera, rows[-1].peers, flush=True)
    return rows


def run(args, rows: list = None) -> list:
    """Run the suite on the current CUDA device; an empty list without one.

    ``rows``, when given, receives each row as soon as it is measured (for partial reports)."""
    out = rows if rows is not None else []
    if not torch.cuda.is_available():
        print("matmul suite: no CUDA device, nothing to run")
        return []
    dev = "cuda"
    quick = bool(getattr(args, "quick", False))
    torch.manual_seed(0)
    square = [("square", 4096, 4096, 4096, False), ("square", 8192, 8192, 8192, False)]
    layer = [("layer qkv", 8192, 12288, 4096, True), ("layer out", 8192, 4096, 4096, True),
             ("layer mlp-up", 8192, 16384, 4096, True), ("layer mlp-down", 8192, 4096, 16384, True)]
    decode = [("decode", m, n, n, True) for n in (4096, 8192) for m in (1, 16, 64, 128)]
    if quick:
        square, layer, decode = square[:1], layer[:1], decode[:2]
    gemm = _gemm_rows(square + layer + decode, dev, quick, out)
    for part in (_fused_row, _fp8_row, _wo_rows):
        try:
            out.extend(part(dev, quick))
        except Exception as exc:  # one part failing must not hide the others
            print(f"  {part.__name__} failed: {type(exc).__name__}: {exc}")
    g = geomean([r.ratio("cuBLAS") for r in gemm if r.ratio("cuBLAS")])
    own = geomean([float(r.notes.split("own/cuBLAS ")[1].rstrip("x")) for r in gemm if "own/cuBLAS " in r.notes])
    n_cublas = sum("dispatch=cublas" in r.notes for r in gemm)
    out.append(Row(SUITE, f"geomean vs cuBLAS over {len(gemm)} bf16 shapes ({n_cublas} dispatched to cuBLAS)",
                   "x", g, {"cuBLAS": 1.0}, f"own kernel alone: {own or 0:.2f}x"))
    return out
