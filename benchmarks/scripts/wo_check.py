"""Weight-only GEMM at decode shapes, each way of calling it: the entry point (plans and
relaunches), the bare kernel launch, and the entry with relaunching off; with the error of each
against float64 and cuBLAS bf16 in the same run. Shapes run in the order given, so an order
effect shows.

    PYTHONPATH=. python benchmarks/scripts/wo_check.py [--n 8192,4096] [--ms 1,2,16] [--fmts fp4_e2m1] [--profile]

``--profile`` prints, per row, the GPU kernels and host calls of 20 entry-point calls.
"""
from __future__ import annotations

import argparse
import math

import torch
from matmul_sweep import launch_path  # the script beside this one

import tessera.quant as quant
from tessera.bench.common import bench_ms
from tessera.kernels.matmul import matmul, wo_matmul


def bench_us(fn):
    return 1e3 * bench_ms(fn, warmup=10, rep=60)


def profile(fn, label):
    from torch.profiler import ProfilerActivity, profile as torch_profile

    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(20):
            fn()
        torch.cuda.synchronize()
    print(f"--- profile of 20 calls: {label}")
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=8), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", default="8192,4096")
    ap.add_argument("--ms", default="1,2,16")
    ap.add_argument("--fmts", default="fp4_e2m1")
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    print(torch.cuda.get_device_name(), flush=True)
    rows = []
    for n in (int(v) for v in a.n.split(",")):
        w = torch.randn(n, n, device="cuda") / math.sqrt(n)
        wb = w.to(torch.bfloat16)
        for fmt in a.fmts.split(","):
            qw = quant.quantize(w, fmt, 32)
            ref_w = quant.dequantize(qw).double()
            for M in (int(v) for v in a.ms.split(",")):
                x = torch.randn(M, n, device="cuda", dtype=torch.bfloat16)
                ref = x.double() @ ref_w
                err = lambda out: ((out.double() - ref).norm() / ref.norm()).item()  # noqa: E731
                e_entry = err(wo_matmul(x, qw))
                t_entry = bench_us(lambda: wo_matmul(x, qw))
                e_again = err(wo_matmul(x, qw))  # a relaunch after do_bench's calls
                go = wo_matmul(x, qw, _launcher=True)
                t_bare = bench_us(go)
                with launch_path(fast=False):  # plans made afresh, through Triton's launch path
                    t_slow = bench_us(lambda: wo_matmul(x, qw))
                t_cb = bench_us(lambda: torch.matmul(x, wb))
                t_own = bench_us(lambda: matmul(x, wb))
                if a.profile:
                    profile(lambda: wo_matmul(x, qw), f"{fmt} M={M} N=K={n}")
                rows.append((f"{fmt} M={M} N=K={n}", t_entry, t_bare, t_slow, t_cb, t_own, e_entry, e_again))
                print(rows[-1], flush=True)
    print(f"\n{'workload':24s} {'entry':>7s} {'bare':>7s} {'no-relaunch':>11s} {'cuBLAS':>7s} {'own bf16':>8s}  errors")
    for r in rows:
        print(f"{r[0]:24s} {r[1]:7.1f} {r[2]:7.1f} {r[3]:11.1f} {r[4]:7.1f} {r[5]:8.1f}  {r[6]:.1e} {r[7]:.1e}")


if __name__ == "__main__":
    main()
