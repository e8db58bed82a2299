"""A GEMM with a bias + GELU epilogue in Tessera's tile language.

The two outer loops are parallel (one program per output tile, in grouped order so
neighbouring programs share tiles of A in L2); the K loop is sequential and
pipelined; the accumulator is fp32 on tensor cores; the epilogue runs on the
accumulator before the single store.

Run: ``python examples/tile_gemm_gelu.py``.
"""
import torch

import tessera as ts
import tessera.tile  # noqa: F401  (ts.tile: the kernel language)


@ts.kernel(autotune={"BLOCK_N": [128, 256], "num_stages": [3, 4]}, num_warps=8)
def gemm_bias_gelu_kernel(
    A: ts.Tile["M", "K"],
    B: ts.Tile["K", "N"],
    bias: ts.Tile["N"],
    C: ts.Tile["M", "N"],
    BLOCK_M: ts.tile.constexpr = 128,
    BLOCK_N: ts.tile.constexpr = 256,
    BLOCK_K: ts.tile.constexpr = 64,
):
    """C = gelu(A @ B + bias), fp32 accumulation, rounded to C's dtype on store."""
    for m in ts.tile.range(A.shape[0], step=BLOCK_M):  # parallel
        for n in ts.tile.range(B.shape[1], step=BLOCK_N):  # parallel (the sole statement of the loop above)
            acc = ts.tile.zeros(BLOCK_M, BLOCK_N, dtype=ts.f32)
            for k in ts.tile.range(A.shape[1], step=BLOCK_K):  # sequential, pipelined
                a = ts.tile.load(A[m:m + BLOCK_M, k:k + BLOCK_K])
                b = ts.tile.load(B[k:k + BLOCK_K, n:n + BLOCK_N])
                acc = ts.tile.matmul(a, b, acc=acc)
            bias_tile = ts.tile.cast(ts.tile.load(bias[n:n + BLOCK_N]), ts.f32)
            ts.tile.store(C[m:m + BLOCK_M, n:n + BLOCK_N], ts.tile.gelu(acc + bias_tile[None, :]))


def gemm_bias_gelu(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``gelu(a @ b + bias)`` with the kernel above (small tiles on the CPU interpreter).

    Example:
        >>> a, b, bias = torch.randn(20, 24), torch.randn(24, 36), torch.randn(36)
        >>> ref = torch.nn.functional.gelu(a @ b + bias)
        >>> bool(((gemm_bias_gelu(a, b, bias) - ref).norm() / ref.norm()) < 1e-5)
        True
    """
    c = torch.empty(a.shape[0], b.shape[1], dtype=a.dtype, device=a.device)
    kw = {} if a.is_cuda else {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}
    gemm_bias_gelu_kernel(a, b, bias, c, **kw)
    return c


if __name__ == "__main__":
    a, b, bias = torch.randn(100, 72), torch.randn(72, 90), torch.randn(90)
    ref = torch.nn.functional.gelu(a.double() @ b.double() + bias.double())
    out = gemm_bias_gelu(a, b, bias)
    print("relative error vs float64 reference:", ((out.double() - ref).norm() / ref.norm()).item())
