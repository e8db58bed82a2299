"""Benchmark suite ``tile``: kernels written in the tile language (``@ts.kernel``) against their peers.

Rows (bf16, one H100-class GPU): the seed's Example 3 attention (examples/custom_flash_attention.py)
at d128 S4096 against SDPA's FlashAttention-2 backend and Tessera's hand-written attention; a plain
GEMM written in the language at 8192^3 and the GEMM+bias+GELU example against cuBLAS (+ torch
epilogue); the layer-norm example at 32768x4096 against torch. ``python -m tessera.bench tile``.
"""
from __future__ import annotations

import importlib.util
import math
import os
from typing import Dict, List, Optional

from ... import dtypes, tile
from ...tile import Tile, constexpr
from ..common import Row, try_bench, tbps, tflops

SUITE = "tile"
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


_EXAMPLES: dict = {}


def load_example(name: str):
    """Import ``examples/<name>.py`` of the repository as a module (once)."""
    if name in _EXAMPLES:
        return _EXAMPLES[name]
    path = os.path.join(_ROOT, "examples", name + ".py")
    spec = importlib.util.spec_from_file_location(f"tessera_example_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    _EXAMPLES[name] = mod
    return mod


_GEMM = []


def gemm_kernel():
    """A plain GEMM in the tile language (the language's GEMM row): C = A @ B, fp32 accumulation."""
    if _GEMM:
        return _GEMM[0]
    @tile.kernel(autotune={"BLOCK_N": [128, 256], "num_stages": [3, 4]}, num_warps=8)
    def plain_gemm(A: Tile["M", "K"], B: Tile["K", "N"], C: Tile["M", "N"], BLOCK_M: constexpr = 128,
                   BLOCK_N: constexpr = 256, BLOCK_K: constexpr = 64):
        for m in tile.range(A.shape[0], step=BLOCK_M):
            for n in tile.range(B.shape[1], step=BLOCK_N):
                acc = tile.zeros(BLOCK_M, BLOCK_N, dtype=dtypes.f32)
                for k in tile.range(A.shape[1], step=BLOCK_K):
                    a = tile.load(A[m:m + BLOCK_M, k:k + BLOCK_K])
                    b = tile.load(B[k:k + BLOCK_K, n:n + BLOCK_N])
                    acc = tile.matmul(a, b, acc=acc)
                tile.store(C[m:m + BLOCK_M, n:n + BLOCK_N], acc)

    _GEMM.append(plain_gemm)
    return plain_gemm


def attention_rows(quick: bool, variants: Optional[List[dict]] = None, log=print) -> List[Row]:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    ex = load_example("custom_flash_attention")
    k = ex.fused_attention_kernel
    rows = []
    B, H, S, D = (2, 16, 4096, 128) if quick else (8, 16, 4096, 128)
    q, kk, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    q3, k3, v3 = (t.reshape(B * H, S, D) for t in (q, kk, v))
    o = torch.empty_like(q3)
    scale = 1 / math.sqrt(D)
    fl = 4.0 * B * H * S * S * D
    ts_ms = try_bench(lambda: k(q3, k3, v3, o, scale))  # autotuned on the first call
    peers: Dict[str, Optional[float]] = {}

    def fa2():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, kk, v)
    peers["SDPA-FA2"] = tflops(fl, try_bench(fa2))
    try:
        from ...kernels.attention import flash_attention_fwd

        peers["ts.attention"] = tflops(fl, try_bench(lambda: flash_attention_fwd(q, kk, v)))
    except ImportError:
        peers["ts.attention"] = None
    tuned = k._tuned.get(k._tune_key(k._bind((q3, k3, v3, o, scale), {})), {})
    rows.append(Row(SUITE, f"attention fwd d{D} S{S} B{B}H{H} (seed Ex.3)", "TFLOP/s", tflops(fl, ts_ms), peers,
                    f"autotuned {tuned}"))
    for cfg in variants or []:
        ms = try_bench(lambda: k(q3, k3, v3, o, scale, **cfg))
        log(f"   attention variant {cfg}: {tflops(fl, ms) or 0:.1f} TFLOP/s")
    return rows


def gemm_rows(quick: bool, variants: Optional[List[dict]] = None, log=print) -> List[Row]:
    import torch
    import torch.nn.functional as F

    rows = []
    n = 4096 if quick else 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    c = torch.empty(n, n, device="cuda", dtype=torch.bfloat16)
    bias = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    fl = 2.0 * n ** 3
    g = gemm_kernel()
    t = try_bench(lambda: g(a, b, c))
    cb = try_bench(lambda: torch.matmul(a, b))
    tuned = g._tuned.get(g._tune_key(g._bind((a, b, c), {})), {})
    rows.append(Row(SUITE, f"GEMM bf16 {n}^3", "TFLOP/s", tflops(fl, t), {"cuBLAS": tflops(fl, cb)},
                    f"autotuned {tuned}"))
    for cfg in variants or []:
        ms = try_bench(lambda: g(a, b, c, **cfg))
        log(f"   gemm variant {cfg}: {tflops(fl, ms) or 0:.1f} TFLOP/s")
    ex = load_example("tile_gemm_gelu").gemm_bias_gelu_kernel
    t = try_bench(lambda: ex(a, b, bias, c))
    ref = try_bench(lambda: F.gelu(torch.addmm(bias, a, b)))
    rows.append(Row(SUITE, f"GEMM+bias+GELU bf16 {n}^3", "TFLOP/s", tflops(fl, t), {"cuBLAS+torch": tflops(fl, ref)}))
    return rows


def layer_norm_rows(quick: bool, variants: Optional[List[dict]] = None, log=print) -> List[Row]:
    import torch
    import torch.nn.functional as F

    M, N = (8192, 4096) if quick else (32768, 4096)
    x = torch.randn(M, N, device="cuda", dtype=torch.bfloat16)
    w, b = torch.randn(N, device="cuda", dtype=torch.bfloat16), torch.randn(N, device="cuda", dtype=torch.bfloat16)
    y = torch.empty_like(x)
    k = load_example("tile_layer_norm").layer_norm_kernel
    nbytes = 2 * M * N * 2
    t = try_bench(lambda: k(x, w, b, y, 1e-5))
    ref = try_bench(lambda: F.layer_norm(x, (N,), w, b, 1e-5))
    rows = [Row(SUITE, f"layer_norm fwd bf16 {M}x{N}", "TB/s", tbps(nbytes, t), {"torch": tbps(nbytes, ref)})]
    for cfg in variants or []:
        ms = try_bench(lambda: k(x, w, b, y, 1e-5, **cfg))
        log(f"   layer_norm variant {cfg}: {tbps(nbytes, ms) or 0:.2f} TB/s")
    return rows


def run(args) -> List[Row]:
    import torch

    if not torch.cuda.is_available():
        print("  (tile suite needs a CUDA GPU; skipped)")
        return []
    quick = bool(getattr(args, "quick", False))
    return attention_rows(quick) + gemm_rows(quick) + layer_norm_rows(quick)
