"""GPU check + benchmark of the tile language's kernels, all in one run (see benchmarks/results/tile.md).

1. correctness on fresh random inputs of awkward sizes (bf16/fp16, vs float64 references);
2. timings (triton.testing.do_bench medians) of every variant and every peer, same run;
3. a table last.  Usage: ``PYTHONPATH=. python benchmarks/scripts/tile_bench.py [--quick] [--out DIR]``.
"""
import argparse
import math
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "tile"))

from tessera.bench.common import format_table, write_json  # noqa: E402
from tessera.bench.suites import tile as suite  # noqa: E402


def rel(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def check(name, err, tol, log):
    ok = err <= tol
    log(f"  check {name}: rel err {err:.2e} (tol {tol:g}) {'OK' if ok else 'FAIL'}")
    return ok


def correctness(log):
    ok = True
    dev = "cuda"
    attn = suite.load_example("custom_flash_attention")
    for dt, tol, (b, h, s, d) in [(torch.bfloat16, 1e-2, (2, 3, 1000, 128)), (torch.float16, 5e-3, (1, 4, 777, 64)),
                                  (torch.bfloat16, 1e-2, (3, 2, 4096, 128))]:
        q, k, v = (torch.randn(b, h, s, d, device=dev, dtype=dt) for _ in range(3))
        ref = torch.softmax((q.double() @ k.double().transpose(-1, -2)) / math.sqrt(d), -1) @ v.double()
        ok &= check(f"attention {dt} {b}x{h}x{s}x{d}", rel(attn.attention(q, k, v), ref), tol, log)
    import seed_example

    q, k, v = (torch.randn(4, 1000, 64, device=dev, dtype=torch.bfloat16) for _ in range(3))
    o = torch.empty_like(q)
    seed_example.seed_corrected_attention(q, k, v, o, 0.125)
    ref = torch.softmax((q.double() @ k.double().transpose(1, 2)) * 0.125, -1) @ v.double()
    ok &= check("seed Example 3 corrected, bf16 4x1000x64", rel(o, ref), 1e-2, log)
    ln = suite.load_example("tile_layer_norm")
    for dt, tol in [(torch.bfloat16, 1e-2), (torch.float16, 5e-3)]:
        x, w, bb = (torch.randn(*sh, device=dev, dtype=dt) for sh in ((1000, 3000), (3000,), (3000,)))
        ref = torch.nn.functional.layer_norm(x.double(), (3000,), w.double(), bb.double())
        ok &= check(f"layer_norm {dt} 1000x3000", rel(ln.layer_norm(x, w, bb), ref), tol, log)
    gg = suite.load_example("tile_gemm_gelu")
    a, bm, bias = (torch.randn(*sh, device=dev, dtype=torch.bfloat16) for sh in ((1000, 520), (520, 777), (777,)))
    ref = torch.nn.functional.gelu(a.double() @ bm.double() + bias.double())
    ok &= check("gemm+bias+gelu bf16 1000x777x520", rel(gg.gemm_bias_gelu(a, bm, bias), ref), 1e-2, log)
    g = suite.gemm_kernel()
    a, bm = torch.randn(1000, 1000, device=dev, dtype=torch.bfloat16), torch.randn(1000, 1000, device=dev,
                                                                                      dtype=torch.bfloat16)
    c = torch.empty(1000, 1000, device=dev, dtype=torch.bfloat16)
    g(a, bm, c)
    ok &= check("plain gemm bf16 1000^3", rel(c, a.double() @ bm.double()), 1e-2, log)
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    logf = open(os.path.join(args.out, "tile_bench.log"), "w")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    log(f"device {torch.cuda.get_device_name()} torch {torch.__version__}")
    t0 = time.time()
    ok = correctness(log)
    log(f"correctness {'OK' if ok else 'FAILED'} ({time.time() - t0:.0f}s)")
    rows = []
    t0 = time.time()
    rows += suite.attention_rows(args.quick, [{"BLOCK_N": 64, "num_warps": 4, "num_stages": 2},
                                              {"BLOCK_N": 128, "num_warps": 8, "num_stages": 2}], log)
    log(f"  attention done ({time.time() - t0:.0f}s)")
    rows += suite.gemm_rows(args.quick, [{"BLOCK_N": 128, "num_stages": 4, "num_warps": 4}], log)
    tuned = [("attention", suite.load_example("custom_flash_attention").fused_attention_kernel),
             ("gemm", suite.gemm_kernel()), ("gemm+gelu", suite.load_example("tile_gemm_gelu").gemm_bias_gelu_kernel)]
    for name, kern in tuned:
        for key, timings in kern.tune_log.items():
            log(f"   {name} autotune at {key[:90]}")
            for ms, cfg in timings:
                log(f"     {cfg}: {ms:.3f} ms")
    log(f"  gemm done ({time.time() - t0:.0f}s)")
    rows += suite.layer_norm_rows(args.quick, [{"num_warps": 4}, {"num_warps": 16}], log)
    log(f"  layer norm done ({time.time() - t0:.0f}s)")
    table = format_table(rows)
    for r in rows:
        log(f"  note {r.workload}: {r.notes}")
    log(table)
    write_json(rows, os.path.join(args.out, "tile_bench.json"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
