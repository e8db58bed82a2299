"""Core overheads: eager dispatch per op on small tensors vs torch eager, and trace+compile time of
the seed's transformer layer. Runs on the CPU or the GPU (whichever is the default device)."""
from __future__ import annotations

import time
import timeit

import torch

import tessera as ts

from ..common import Row


def _per_call_us(fn, n=2000, repeat=7) -> float:
    fn()
    return min(timeit.repeat(fn, number=n, repeat=repeat)) / n * 1e6


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run(args):
    rows = []
    x, y = ts.randn(16, 16), ts.randn(16, 16)
    tx, ty = x.torch(), y.torch()
    ops = [
        ("add", lambda: x + y, lambda: tx + ty),
        ("mul scalar", lambda: x * 2.0, lambda: tx * 2.0),
        ("exp", lambda: ts.exp(x), lambda: torch.exp(tx)),
        ("matmul", lambda: x @ y, lambda: tx @ ty),
        ("reshape", lambda: x.reshape(256), lambda: tx.reshape(256)),
        ("transpose", lambda: x.T, lambda: tx.T),
        ("sum", lambda: x.sum(), lambda: tx.sum()),
        ("slice", lambda: x[1:5, :3], lambda: tx[1:5, :3]),
    ]
    for name, f_ts, f_torch in ops:
        a, b = _per_call_us(f_ts), _per_call_us(f_torch)
        rows.append(Row("core", f"eager {name} 16x16 per call", "us", a, {"torch eager": b},
                        notes=f"Tessera overhead {a - b:.2f} us", higher_is_better=False))

    sizes = (4, 2048, 4096) if torch.cuda.is_available() else (2, 128, 256)
    first = trace_and_compile_ms(*sizes)
    again = min(trace_and_compile_ms(*sizes) for _ in range(3))
    rows.append(Row("core", f"trace+compile seed layer B{sizes[0]} S{sizes[1]} D{sizes[2]} (ms)", "ms", again, {},
                    notes=f"first (cold) {first:.1f} ms", higher_is_better=False))
    return rows


def _seed_layer():
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(ts.__file__), "..", "examples", "quickstart.py")
    spec = importlib.util.spec_from_file_location("quickstart", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.transformer_layer


def trace_and_compile_ms(B=4, S=2048, D=4096) -> float:
    """Milliseconds to trace, simplify and build the executable of the seed's layer (no execution)."""
    layer = _seed_layer()
    args = [ts.empty(B, S, D, dtype=ts.bf16), ts.empty(D, 3 * D, dtype=ts.bf16), ts.empty(D, D, dtype=ts.bf16),
            ts.empty(D, 4 * D, dtype=ts.bf16)]
    t0 = time.perf_counter()
    ts.jit(layer).lower(*args).compile()
    return (time.perf_counter() - t0) * 1e3
