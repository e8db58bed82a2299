"""Kernels used by the tests, written from docs/tile.md (kernels need their source in a file)."""
import tessera as ts
import tessera.tile as tile
from tessera.tile import Tile, constexpr


@tile.kernel
def row_softmax(X: Tile["M", "N"], Y: Tile["M", "N"]):
    """Softmax of each row; the padded tail of a row is ignored by max and sum."""
    for r in tile.range(X.shape[0]):
        x = tile.cast(tile.load(X[r, :]), ts.f32)
        e = tile.exp(x - tile.max(x, 0))
        tile.store(Y[r, :], e / tile.sum(e, 0))


@tile.kernel
def column_sums(X: Tile["M", "N"], OUT: Tile["N"], BLOCK_M: constexpr = 16, BLOCK_N: constexpr = 16):
    """OUT[n] = sum over rows of X[:, n], with a sequential loop over row tiles."""
    for n in tile.range(X.shape[1], step=BLOCK_N):
        acc = tile.zeros(BLOCK_N, dtype=ts.f32)
        for m in tile.range(X.shape[0], step=BLOCK_M):
            acc = acc + tile.sum(tile.load(X[m:m + BLOCK_M, n:n + BLOCK_N]), 0)
        tile.store(OUT[n:n + BLOCK_N], acc)


@tile.kernel
def row_max_atomic_total(X: Tile["M", "N"], ROWMAX: Tile["M"], TOTAL: Tile["1"]):
    """Each row's max, and the sum of everything accumulated with atomic_add."""
    for r in tile.range(X.shape[0]):
        x = tile.load(X[r, :], other=-float("inf"))
        tile.store(ROWMAX[r:r + 1], tile.max(x, 0))
        tile.atomic_add(TOTAL[0:1], tile.sum(tile.where(x > -float("inf"), x, 0.0), 0))


@tile.kernel
def explicit_grid(X: Tile["N"], Y: Tile["N"], BLOCK: constexpr = 16):
    """A kernel that reads program ids itself and is launched with grid=."""
    pid = tile.program_id(0)
    offs = pid * BLOCK + tile.arange(BLOCK)
    x = tile.load(X[pid * BLOCK:pid * BLOCK + BLOCK], mask=offs < X.shape[0])
    y = tile.where(x > 0.0, tile.sqrt(tile.abs(x)), tile.exp2(x))
    tile.store(Y[pid * BLOCK:pid * BLOCK + BLOCK], tile.maximum(y, tile.log(tile.abs(x) + 1.0)))


@tile.kernel(autotune={"BLOCK": [16, 32]})
def tuned_copy(X: Tile["N"], Y: Tile["N"], BLOCK: constexpr = 16):
    for i in tile.range(X.shape[0], step=BLOCK):
        tile.store(Y[i:i + BLOCK], tile.load(X[i:i + BLOCK]))


@tile.kernel
def seq_only(X: Tile["N"], Y: Tile["N"]):
    """A top-level loop made sequential with parallel=False: one program adds everything up."""
    total = tile.zeros(16, dtype=ts.f32)
    for i in tile.range(X.shape[0], step=16, parallel=False, num_stages=2):
        total = total + tile.load(X[i:i + 16])
    tile.store(Y[0:16], total)


@tile.kernel
def mixed_dtypes(X: Tile["N", ts.f16], W: Tile["N", ts.f32], Y: Tile["N", ts.f32], Z: Tile["N", ts.f16]):
    """A Python number takes the tile's dtype (f16 stays f16); f16 with f32 promotes to f32."""
    for i in tile.range(X.shape[0], step=16):
        x = tile.load(X[i:i + 16])
        tile.store(Z[i:i + 16], x * 2.0)
        tile.store(Y[i:i + 16], x + tile.load(W[i:i + 16]))


@tile.kernel
def add_3d(X: Tile["A", "B", "C"], Y: Tile["A", "B", "C"], n_rows: int, TWICE: constexpr = False):
    """Three nested parallel loops, an int parameter as a bound, a constexpr branch, an unrolled range."""
    for a in tile.range(X.shape[0]):
        for b in tile.range(0, n_rows, step=2):
            for c in tile.range(X.shape[2], step=8):
                x = tile.load(X[a, b:b + 2, c:c + 8])
                for _ in range(2):
                    x = x + 1.0
                if TWICE:
                    x = x * 2.0
                tile.store(Y[a, b:b + 2, c:c + 8], x)
