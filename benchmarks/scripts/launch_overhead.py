"""Host time per call of the ways to launch a Triton kernel, on the GPU machine's CPU.

    PYTHONPATH=. python benchmarks/scripts/launch_overhead.py

Compares, for the fp4 weight-only kernel at a decode shape: the public entry point (plan cache
warm), its bare launch, Triton's ``JITFunction`` launch with positional arguments
(``kernel[grid](...)``: binding, specialisation key, cache lookup, then the C launcher), the
compiled kernel's own launcher (``compiled[grid](*args)``) and ``torch.matmul`` on bf16; then
profiles the entry point.
"""
from __future__ import annotations

import time

import torch
import triton

import tessera.quant as quant
from tessera.kernels.matmul import wo_matmul
from tessera.kernels.matmul import kernel_wo


def per_call_us(fn, n=500):
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    host = (time.perf_counter() - t) / n
    torch.cuda.synchronize()
    return host * 1e6


def main():
    print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, flush=True)
    n = 4096
    qw = quant.quantize(torch.randn(n, n, device="cuda") / n ** 0.5, "fp4_e2m1")
    x = torch.randn(1, n, device="cuda", dtype=torch.bfloat16)
    wb = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    go = wo_matmul(x, qw, _launcher=True)
    compiled = {}
    orig_run = kernel_wo.wo_matmul_kernel.run

    def capture(*args, grid, warmup, **kwargs):  # the launch's bound arguments, in signature order
        k = orig_run(*args, grid=grid, warmup=warmup, **kwargs)
        names = kernel_wo.wo_matmul_kernel.arg_names
        bound = dict(zip(names, args))
        bound.update({k_: v for k_, v in kwargs.items() if k_ in names})
        compiled.update(kernel=k, grid=grid, args=[bound[nm] for nm in names])
        return k

    kernel_wo.wo_matmul_kernel.run = capture
    try:
        go()
    finally:
        kernel_wo.wo_matmul_kernel.run = orig_run
    k, grid, args = compiled["kernel"], compiled["grid"], compiled["args"]
    runner = k[tuple(grid) + (1,) * (3 - len(grid))]  # the compiled launcher takes all three dims
    out_ref = wo_matmul(x, qw).clone()
    runner(*args)
    torch.cuda.synchronize()
    rows = [("torch.matmul bf16", lambda: torch.matmul(x, wb.t())),
            ("tessera wo_matmul (entry point)", lambda: wo_matmul(x, qw)),
            ("tessera bare launch", go),
            ("JITFunction launch (kernel[grid](...))", lambda: kernel_wo.wo_matmul_kernel[grid](*args)),
            ("compiled launcher (compiled[grid](*args))", lambda: runner(*args)),
            ("empty torch op (x.add_(0))", lambda: x.add_(0))]
    for name, fn in rows:
        print(f"host {name:45s} {per_call_us(fn):7.1f} us per call", flush=True)
    import cProfile
    import pstats
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(300):
        wo_matmul(x, qw)
    prof.disable()
    torch.cuda.synchronize()
    pstats.Stats(prof).sort_stats("tottime").print_stats(18)
    print("compiled-launcher output matches:", torch.equal(args[4][:1], out_ref) if args[4].shape == out_ref.shape
          else "n/a", flush=True)


if __name__ == "__main__":
    main()
