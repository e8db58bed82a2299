"""A fused layer norm in Tessera's tile language: one program per row, one pass over memory.

Rows whose length is not a power of two are padded to the next one; the padding is
masked, so the mean and variance see only the real columns.

Run: ``python examples/tile_layer_norm.py``.
"""
import torch

import tessera as ts
import tessera.tile  # noqa: F401  (ts.tile: the kernel language)


@ts.kernel
def layer_norm_kernel(
    X: ts.Tile["M", "N"],
    W: ts.Tile["N"],
    B: ts.Tile["N"],
    Y: ts.Tile["M", "N"],
    eps: float,
):
    """Y[r] = (X[r] - mean) / sqrt(var + eps) * W + B for every row r, statistics in fp32."""
    N = X.shape[1]
    for row in ts.tile.range(X.shape[0]):  # parallel: one program per row
        x = ts.tile.cast(ts.tile.load(X[row, :]), ts.f32)
        mean = ts.tile.sum(x, 0) / N
        xc = x - mean
        var = ts.tile.sum(xc * xc, 0) / N
        rstd = ts.tile.rsqrt(var + eps)
        w = ts.tile.cast(ts.tile.load(W[:]), ts.f32)
        b = ts.tile.cast(ts.tile.load(B[:]), ts.f32)
        ts.tile.store(Y[row, :], xc * rstd * w + b)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Layer norm over the last dim of ``x`` with the kernel above.

    Example:
        >>> x = torch.randn(3, 10)
        >>> y = layer_norm(x, torch.ones(10), torch.zeros(10))
        >>> torch.allclose(y, torch.nn.functional.layer_norm(x, (10,)), atol=1e-5)
        True
    """
    x2 = x.reshape(-1, x.shape[-1])
    y = torch.empty_like(x2)
    layer_norm_kernel(x2, weight, bias, y, eps)
    return y.reshape(x.shape)


if __name__ == "__main__":
    x, w, b = torch.randn(37, 100), torch.randn(100), torch.randn(100)
    ref = torch.nn.functional.layer_norm(x.double(), (100,), w.double(), b.double())
    out = layer_norm(x, w, b)
    print("relative error vs float64 reference:", ((out.double() - ref).norm() / ref.norm()).item())
