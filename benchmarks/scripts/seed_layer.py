"""The seed's transformer layer (B4 S2048 D4096 H16) on the GPU: Tessera jit/eager vs torch eager and
torch.compile, forward and forward+backward; checks Tessera's output against torch first.

Run on a GPU machine: PYTHONPATH=. python benchmarks/scripts/seed_layer.py
"""
import importlib.util
import math
import os
import sys

import torch

import tessera as ts
from tessera.bench.seed_reference import torch_transformer_layer
from tessera.bench.common import Row, format_table, try_bench

spec = importlib.util.spec_from_file_location("quickstart", os.path.join(os.path.dirname(__file__), "..", "..",
                                                                        "examples", "quickstart.py"))
qs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(qs)


torch_layer = torch_transformer_layer


def main():
    B, S, D = (int(v) for v in (sys.argv[1:4] if len(sys.argv) > 3 else (4, 2048, 4096)))
    torch.manual_seed(0)
    sc = 1 / math.sqrt(D)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    tx = torch.randn(B, S, D, device=dev, dtype=torch.bfloat16)
    tw = [(torch.randn(D, m * D, device=dev) * sc).to(torch.bfloat16) for m in (3, 1, 4)]
    args = [ts.from_dlpack(t) for t in [tx] + tw]
    jitted = ts.jit(qs.transformer_layer)
    out = jitted(*args).torch()
    ref = torch_layer(tx.double(), *[w.double() for w in tw])
    err = float((out.double() - ref).norm() / ref.norm())
    print(f"rel. error vs float64 torch: {err:.2e}")
    flops = 2 * B * S * D * (3 * D + D + 8 * D) + 4 * B * S * S * D / 2
    peers = [("tessera jit", lambda: jitted(*args)), ("tessera eager", lambda: qs.transformer_layer(*args)),
             ("torch eager", lambda: torch_layer(tx, *tw))]
    if dev == "cuda":
        compiled = torch.compile(torch_layer)
        peers.append(("torch.compile", lambda: compiled(tx, *tw)))
    rows = []
    for name, fn in peers:
        ms = try_bench(fn)
        rows.append((name, ms))
        print(f"{name}: {ms} ms, {flops / ms / 1e9 if ms else 0:.0f} TFLOP/s", flush=True)
    t = dict(rows)
    print(format_table([Row("seed_layer", f"fwd B{B} S{S} D{D}", "ms", t["tessera jit"],
                            {k: v for k, v in t.items() if k != "tessera jit"}, higher_is_better=False)]))


if __name__ == "__main__":
    main()
