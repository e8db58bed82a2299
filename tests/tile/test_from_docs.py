"""Tile-language kernels written from docs/tile.md alone (CPU / Triton interpreter)."""
import math

import pytest
import torch

import tessera as ts


def _rel_err(out, ref):
    out = out.double()
    return ((out - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


# ---------------------------------------------------------------- 1. row softmax
@ts.kernel
def softmax_rows(X: ts.Tile["M", "N"], Y: ts.Tile["M", "N"]):
    for r in ts.tile.range(X.shape[0]):
        x = ts.tile.cast(ts.tile.load(X[r, :]), ts.f32)
        e = ts.tile.exp(x - ts.tile.max(x, 0))
        ts.tile.store(Y[r, :], e / ts.tile.sum(e, 0))


@pytest.mark.parametrize("M,N", [(13, 37), (5, 100), (1, 1), (7, 129)])
def test_softmax_rows(M, N):
    torch.manual_seed(0)
    x = torch.randn(M, N, dtype=torch.float32) * 3
    y = torch.empty_like(x)
    softmax_rows(x, y)
    ref = torch.softmax(x.double(), dim=-1)
    assert _rel_err(y, ref) <= 1e-4


# ---------------------------------------------------------------- 2. reductions
# (a) sum of squares of each row, rows longer than one tile: a sequential loop
#     over column tiles carries `acc`.
@ts.kernel
def row_sumsq(X: ts.Tile["M", "N"], Out: ts.Tile["M"], BLOCK_N: ts.tile.constexpr = 64):
    for r in ts.tile.range(X.shape[0]):
        acc = ts.tile.zeros(BLOCK_N, dtype=ts.f32)
        for c in ts.tile.range(0, X.shape[1], step=BLOCK_N):
            x = ts.tile.cast(ts.tile.load(X[r, c:c + BLOCK_N]), ts.f32)
            acc = acc + x * x
        ts.tile.store(Out[r], ts.tile.sum(acc, 0))


@pytest.mark.parametrize("M,N", [(11, 300), (3, 64), (6, 5)])
def test_row_sumsq(M, N):
    torch.manual_seed(1)
    x = torch.randn(M, N, dtype=torch.float32)
    out = torch.empty(M, dtype=torch.float32)
    row_sumsq(x, out)
    ref = (x.double() ** 2).sum(-1)
    assert _rel_err(out, ref) <= 1e-4


# (b) column sum: one program per column tile, sequential loop over row tiles.
@ts.kernel(batch=False)
def col_sum(X: ts.Tile["M", "N"], Out: ts.Tile["N"],
            BLOCK_M: ts.tile.constexpr = 16, BLOCK_N: ts.tile.constexpr = 32):
    for c in ts.tile.range(0, X.shape[1], step=BLOCK_N):
        acc = ts.tile.zeros(BLOCK_N, dtype=ts.f32)
        for r in ts.tile.range(0, X.shape[0], step=BLOCK_M):
            x = ts.tile.load(X[r:r + BLOCK_M, c:c + BLOCK_N])
            acc = acc + ts.tile.sum(x, 0)
        ts.tile.store(Out[c:c + BLOCK_N], acc)


@pytest.mark.parametrize("M,N", [(37, 45), (16, 32), (70, 3)])
def test_col_sum(M, N):
    torch.manual_seed(2)
    x = torch.randn(M, N, dtype=torch.float32)
    out = torch.empty(N, dtype=torch.float32)
    col_sum(x, out)
    ref = x.double().sum(0)
    assert _rel_err(out, ref) <= 1e-4


# ---------------------------------------------------------------- 3. attention variant
# Causal attention with a per-head ALiBi bias: s_ij = scale * q_i.k_j + slope_h * (j - i),
# j <= i.  Explicit (bh, q-tile) parallel nest so the head index is available.
@ts.kernel(outputs=("O",))
def alibi_causal_attention(
    Q: ts.Tile["BH", "S", "D"],
    K: ts.Tile["BH", "S", "D"],
    V: ts.Tile["BH", "S", "D"],
    Slopes: ts.Tile["BH"],
    O: ts.Tile["BH", "S", "D"],
    scale: float,
    BLOCK_M: ts.tile.constexpr = 16,
    BLOCK_N: ts.tile.constexpr = 16,
):
    for bh in ts.tile.range(Q.shape[0]):
        for q0 in ts.tile.range(0, Q.shape[1], step=BLOCK_M):
            slope = ts.tile.load(Slopes[bh])
            q = ts.tile.load(Q[bh, q0:q0 + BLOCK_M, :])
            m = ts.tile.full((BLOCK_M,), -float("inf"), dtype=ts.f32)
            l = ts.tile.zeros(BLOCK_M, dtype=ts.f32)
            acc = ts.tile.zeros(BLOCK_M, q.shape[1], dtype=ts.f32)
            rows = q0 + ts.tile.arange(BLOCK_M)
            for k0 in ts.tile.range(0, q0 + BLOCK_M, step=BLOCK_N):
                k = ts.tile.load(K[bh, k0:k0 + BLOCK_N, :])
                v = ts.tile.load(V[bh, k0:k0 + BLOCK_N, :])
                cols = k0 + ts.tile.arange(BLOCK_N)
                s = ts.tile.matmul(q, k.T) * scale
                s = s + slope * (cols[None, :] - rows[:, None])
                s = ts.tile.where(cols[None, :] <= rows[:, None], s, -float("inf"))
                m_new, l_new, p = ts.tile.online_softmax(s, m, l)
                ts.tile.update_accumulator(acc, ts.tile.matmul(p, v), m, m_new, l, l_new)
                m = m_new
                l = l_new
            ts.tile.store(O[bh, q0:q0 + BLOCK_M, :], acc / l[:, None])


def _alibi_ref(q, k, v, slopes, scale):
    q, k, v, slopes = (t.double() for t in (q, k, v, slopes))
    S = q.shape[1]
    i = torch.arange(S, dtype=torch.float64)
    rel = i[None, :] - i[:, None]                       # j - i
    s = torch.einsum("bid,bjd->bij", q, k) * scale + slopes[:, None, None] * rel
    s = s.masked_fill(rel[None] > 0, float("-inf"))
    return torch.softmax(s, -1) @ v


@pytest.mark.parametrize("BH,S,D", [(3, 37, 24), (2, 16, 16), (1, 50, 20)])
def test_alibi_causal_attention(BH, S, D):
    torch.manual_seed(3)
    q = torch.randn(BH, S, D, dtype=torch.float32)
    k = torch.randn(BH, S, D, dtype=torch.float32)
    v = torch.randn(BH, S, D, dtype=torch.float32)
    slopes = torch.tensor([2.0 ** -(8 * (h + 1) / BH) for h in range(BH)], dtype=torch.float32)
    o = torch.empty_like(q)
    scale = 1.0 / math.sqrt(D)
    alibi_causal_attention(q, k, v, slopes, o, scale)
    ref = _alibi_ref(q, k, v, slopes, scale)
    assert _rel_err(o, ref) <= 1e-4


# ---------------------------------------------------------------- 4. user mistakes
def test_non_power_of_two_tile_is_compile_error():
    @ts.kernel
    def bad_tile(X: ts.Tile["M", "N"], Out: ts.Tile["N"]):
        for c in ts.tile.range(0, X.shape[1], step=100):
            x = ts.tile.load(X[0:100, c:c + 100])
            ts.tile.store(Out[c:c + 100], ts.tile.sum(x, 0))

    x = torch.randn(8, 200)
    out = torch.empty(200)
    with pytest.raises(ts.TesseraCompileError) as ei:
        bad_tile(x, out)
    msg = str(ei.value)
    assert "bad_tile" in msg and "power" in msg and "fix" in msg


def test_tile_op_outside_kernel_is_error():
    with pytest.raises(ts.TesseraCompileError) as ei:
        ts.tile.exp(torch.randn(4))
    assert "kernel" in str(ei.value)


# ---------------------------------------------------------------- 3b. seed-style variant
# Sliding-window causal attention written the seed's way (implicit batch dim, alloc_shared /
# load_async / alloc_register / fill). Masking with -inf: rows of a KV tile that are fully masked
# before any valid key was seen must stay 0 (docs/tile.md, online_softmax), not NaN.
@ts.kernel
def sliding_window_attention(
    Q: ts.Tile["B*H", "S", "D"], K: ts.Tile["B*H", "S", "D"], V: ts.Tile["B*H", "S", "D"],
    O: ts.Tile["B*H", "S", "D"], scale: float, window: int,
    BLOCK_M: ts.tile.constexpr = 16, BLOCK_N: ts.tile.constexpr = 16,
):
    D = Q.shape[2]
    for q0 in ts.tile.range(Q.shape[1], step=BLOCK_M):
        sq = ts.tile.alloc_shared(BLOCK_M, D, dtype=Q.dtype)
        ts.tile.load_async(sq, Q[q0:q0 + BLOCK_M])
        m = ts.tile.alloc_register(BLOCK_M, dtype=ts.f32)
        l = ts.tile.alloc_register(BLOCK_M, dtype=ts.f32)
        acc = ts.tile.alloc_register(BLOCK_M, D, dtype=ts.f32)
        ts.tile.fill(m, -float("inf"))
        rows = q0 + ts.tile.arange(BLOCK_M)
        for k0 in ts.tile.range(K.shape[1], step=BLOCK_N):
            sk = ts.tile.alloc_shared(BLOCK_N, D, dtype=K.dtype)
            sv = ts.tile.alloc_shared(BLOCK_N, D, dtype=V.dtype)
            ts.tile.load_async(sk, K[k0:k0 + BLOCK_N])
            ts.tile.load_async(sv, V[k0:k0 + BLOCK_N])
            cols = k0 + ts.tile.arange(BLOCK_N)
            s = ts.tile.matmul(sq, sk.T) * scale
            d = rows[:, None] - cols[None, :]
            s = ts.tile.where((d >= 0) & (d < window), s, float("-inf"))  # rows empty so far stay 0, not NaN
            m_new, l_new, p = ts.tile.online_softmax(s, m, l)
            ts.tile.update_accumulator(acc, ts.tile.matmul(p, sv), m, m_new, l, l_new)
            m = m_new
            l = l_new
        ts.tile.store(O[q0:q0 + BLOCK_M], acc / l[:, None])


@pytest.mark.parametrize("BH,S,D,W", [(3, 45, 32, 7), (2, 64, 16, 64), (1, 33, 64, 1)])
def test_sliding_window_attention(BH, S, D, W):
    torch.manual_seed(4)
    q, k, v = (torch.randn(BH, S, D, dtype=torch.float32) for _ in range(3))
    o = torch.empty_like(q)
    scale = 1.0 / math.sqrt(D)
    sliding_window_attention(q, k, v, o, scale, W)
    qd, kd, vd = q.double(), k.double(), v.double()
    i = torch.arange(S)
    dd = i[:, None] - i[None, :]
    s = torch.einsum("bid,bjd->bij", qd, kd) * scale
    s = s.masked_fill(~((dd >= 0) & (dd < W)), float("-inf"))
    ref = torch.softmax(s, -1) @ vd
    assert _rel_err(o, ref) <= 1e-4
