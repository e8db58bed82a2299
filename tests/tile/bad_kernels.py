"""Kernels that must be rejected at compile time, each with its error's line marked ``# <-``."""
import torch

import tessera as ts
import tessera.tile as tile
from tessera.tile import Tile

CAPTURED = torch.ones(16)


@tile.kernel
def non_pow2_alloc(X: Tile["N"]):
    acc = tile.alloc_register(100, dtype=ts.f32)  # <-


@tile.kernel
def non_pow2_slice(X: Tile["N"], Y: Tile["N"]):
    for i in tile.range(X.shape[0], step=96):
        tile.store(Y[i:i + 96], tile.load(X[i:i + 96]))  # <-


@tile.kernel
def while_loop(X: Tile["N"]):
    i = 0
    while i < 4:  # <-
        i = i + 1


@tile.kernel
def recursive(X: Tile["N"]):
    recursive(X)  # <-


@tile.kernel
def closure_over_tensor(X: Tile["N"], Y: Tile["N"]):
    for i in tile.range(X.shape[0], step=16):
        tile.store(Y[i:i + 16], tile.load(X[i:i + 16]) + CAPTURED)  # <-


def helper(x):
    return x


@tile.kernel
def calls_python_helper(X: Tile["N"], Y: Tile["N"]):
    for i in tile.range(X.shape[0], step=16):
        tile.store(Y[i:i + 16], helper(tile.load(X[i:i + 16])))  # <-


@tile.kernel
def uses_lambda(X: Tile["N"]):
    f = lambda v: v  # <-  # noqa: E731


@tile.kernel
def matmul_dtype_mismatch(A: Tile["M", "K", ts.f16], B: Tile["K", "N", ts.bf16], C: Tile["M", "N"]):
    for m in tile.range(A.shape[0], step=16):
        a = tile.load(A[m:m + 16, :])
        b = tile.load(B[:, 0:16])
        tile.store(C[m:m + 16, 0:16], tile.matmul(a, b))  # <-


@tile.kernel(outputs=("Y",))
def store_to_input(X: Tile["N"], Y: Tile["N"]):
    for i in tile.range(X.shape[0], step=16):
        tile.store(X[i:i + 16], tile.load(Y[i:i + 16]))  # <-


@tile.kernel
def store_to_readonly(X: Tile["N"].readonly, Y: Tile["N"]):
    for i in tile.range(X.shape[0], step=16):
        tile.store(X[i:i + 16], 1.0)  # <-


@tile.kernel
def branch_on_data(X: Tile["N"], Y: Tile["N"]):
    for i in tile.range(X.shape[0], step=16):
        x = tile.load(X[i:i + 16])
        if tile.sum(x, 0) > 0.0:  # <-
            tile.store(Y[i:i + 16], x)


@tile.kernel
def ambiguous_broadcast(X: Tile["M", "N"], Y: Tile["M", "N"]):
    for m in tile.range(X.shape[0], step=16):
        x = tile.load(X[m:m + 16, 0:16])
        row = tile.sum(x, 1)
        tile.store(Y[m:m + 16, 0:16], x / row)  # <-


@tile.kernel
def buffer_shape_mismatch(Q: Tile["B", "S", "D"]):
    buf = tile.alloc_shared(16, 64, dtype=Q.dtype)
    for q in tile.range(Q.shape[1], step=16):
        tile.load_async(buf, Q[q:q + 16])  # <-


@tile.kernel
def carried_type_changes(X: Tile["N"], Y: Tile["N"]):
    acc = tile.zeros(16, dtype=ts.f32)
    for i in tile.range(X.shape[0], step=16, parallel=False):  # <-
        acc = tile.zeros(32, dtype=ts.f32) + tile.sum(acc, 0)
    tile.store(Y[0:16], acc)
