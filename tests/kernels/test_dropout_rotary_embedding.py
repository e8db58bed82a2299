"""Dropout (Philox mask), rotary embedding and embedding backward (CPU: Triton interpreter)."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from tessera.errors import TesseraDTypeError, TesseraShapeError, TesseraTypeError, TesseraValueError  # noqa: E402
from tessera.kernels.dropout import dropout_bwd, dropout_fwd  # noqa: E402
from tessera.kernels.embedding import embedding_bwd  # noqa: E402
from tessera.kernels.membound_reference import dropout_ref, embedding_bwd_ref, rotary_ref  # noqa: E402
from tessera.kernels.rotary import rope_frequencies, rotary_bwd, rotary_fwd  # noqa: E402
from tessera.runtime.philox import dropout_keep_mask  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


# ---- dropout

@pytest.mark.parametrize("shape,p", [((1,), 0.5), ((37, 1000), 0.1), ((3, 17), 0.0), ((5000,), 0.9)])
def test_dropout_mask_matches_philox(shape, p):
    x = (torch.randn(*shape) + 3).to(DEV)  # nonzero everywhere: zeros in y are exactly the dropped ones
    y = dropout_fwd(x, p, 1234)
    keep = dropout_keep_mask(1234, shape, p, device=DEV)
    assert torch.equal(y != 0, keep)
    assert torch.allclose(y, dropout_ref(x, p, 1234), rtol=1e-6, atol=0)
    dy = torch.randn(*shape).to(DEV)
    dx = dropout_bwd(dy, p, 1234)
    assert torch.equal(dx != 0, keep & (dy != 0))
    assert torch.allclose(dx, dropout_ref(dy, p, 1234), rtol=1e-6, atol=0)


def test_dropout_reproducible_seeds_and_fp16():
    x = torch.randn(37, 1000).to(torch.float16).to(DEV)
    a, b = dropout_fwd(x, 0.3, 7), dropout_fwd(x, 0.3, 7)
    c = dropout_fwd(x, 0.3, 8)
    assert torch.equal(a, b) and not torch.equal(a != 0, c != 0)
    big = 2**40 + 3  # a seed using both key words
    assert torch.equal(dropout_fwd(x, 0.3, big) != 0, dropout_keep_mask(big, x.shape, 0.3, device=DEV) | (x == 0))
    keep_rate = (a != 0).float().mean().item()
    assert abs(keep_rate - 0.7) < 0.02


def test_dropout_bad_input():
    x = torch.randn(4).to(DEV)
    for p in (1.0, -0.1, True):
        with pytest.raises(TesseraValueError, match="p"):
            dropout_fwd(x, p, 0)
    with pytest.raises(TesseraTypeError, match="seed"):
        dropout_fwd(x, 0.1, 1.5)


# ---- rotary

ROT_CASES = [((2, 3, 5, 16), -2, 8), ((2, 5, 3, 16), 1, 8), ((1, 2, 7, 18), -2, 5), ((3, 17, 6), 0, 3),
             ((1, 1, 37, 128), 2, 64)]


@pytest.mark.parametrize("shape,seq_dim,r", ROT_CASES)
@pytest.mark.parametrize("interleaved", [False, True])
def test_rotary_fwd_bwd(shape, seq_dim, r, interleaved):
    x, dy = torch.randn(*shape).to(DEV), torch.randn(*shape).to(DEV)
    cos, sin = rope_frequencies(40, 2 * r, device=DEV)
    y = rotary_fwd(x, cos, sin, interleaved, seq_dim=seq_dim)
    xd = x.double().requires_grad_()
    ref = rotary_ref(xd, cos.double(), sin.double(), interleaved, seq_dim)
    ref.backward(dy.double())
    assert rel(y, ref) < 1e-6
    assert rel(rotary_bwd(dy, cos, sin, interleaved, seq_dim=seq_dim), xd.grad) < 1e-6


def test_rotary_fp16_and_bad_input():
    x = torch.randn(2, 4, 33, 64).to(torch.float16).to(DEV)
    cos, sin = rope_frequencies(33, 64, device=DEV)
    assert rel(rotary_fwd(x, cos, sin), rotary_ref(x.double(), cos.double(), sin.double())) < 5e-3
    with pytest.raises(TesseraShapeError, match="cos"):
        rotary_fwd(x, cos[:10], sin[:10])
    with pytest.raises(TesseraShapeError, match="cos"):
        rotary_fwd(x, torch.ones(33, 40).to(DEV), torch.ones(33, 40).to(DEV))
    with pytest.raises(TesseraValueError, match="seq_dim"):
        rotary_fwd(x, cos, sin, seq_dim=-1)
    c, s = rope_frequencies(3, 8)
    assert torch.allclose(c ** 2 + s ** 2, torch.ones(3, 4))


# ---- embedding backward

@pytest.mark.parametrize("ids_shape,d,v", [((3, 37), 17, 60), ((1,), 1, 1), ((1000,), 130, 5)])
def test_embedding_bwd(ids_shape, d, v):
    g = torch.Generator().manual_seed(d + v)
    ids = torch.randint(0, v, ids_shape, generator=g).to(DEV)
    dy = torch.randn(*ids_shape, d, generator=g).to(DEV)
    out = embedding_bwd(dy, ids, v)
    assert out.shape == (v, d) and out.dtype == dy.dtype
    assert rel(out, embedding_bwd_ref(dy.double(), ids, v)) < 1e-6
    ids32 = ids.int()
    again = embedding_bwd(dy, ids32, v)
    assert torch.equal(out, again)  # deterministic, bit for bit, and int32 ids agree


def test_embedding_untouched_rows_are_zero_and_bad_input():
    ids = torch.tensor([4, 4, 1]).to(DEV)
    out = embedding_bwd(torch.ones(3, 8).to(DEV), ids, 6)
    assert out[[0, 2, 3, 5]].abs().max() == 0 and out[4].eq(2).all()
    with pytest.raises(TesseraValueError, match="ids"):
        embedding_bwd(torch.ones(3, 8).to(DEV), ids, 4)
    with pytest.raises(TesseraDTypeError, match="ids"):
        embedding_bwd(torch.ones(3, 8).to(DEV), ids.float(), 6)
    with pytest.raises(TesseraShapeError, match="dy"):
        embedding_bwd(torch.ones(2, 8).to(DEV), ids, 6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_all(dtype):
    x = torch.rand(4097, 1000, device="cuda", dtype=dtype) + 1  # no zeros: y == 0 exactly where dropped
    y = dropout_fwd(x, 0.2, 99)
    assert torch.equal(y != 0, dropout_keep_mask(99, x.shape, 0.2, device="cuda"))
    q = torch.randn(2, 8, 1000, 128, device="cuda", dtype=dtype)
    cos, sin = rope_frequencies(1000, 128, device="cuda")
    for inter in (False, True):
        assert rel(rotary_fwd(q, cos, sin, inter), rotary_ref(q.double(), cos.double(), sin.double(), inter)) < 1e-2
    ids = torch.randint(0, 32000, (8, 1000), device="cuda")
    dy = torch.randn(8, 1000, 512, device="cuda", dtype=dtype)
    out = embedding_bwd(dy, ids, 32000)
    assert rel(out, embedding_bwd_ref(dy.double(), ids, 32000)) < 1e-2
    assert torch.equal(out, embedding_bwd(dy, ids, 32000))


def test_dropout_64bit_counter_path_agrees():
    """The kernel's path for tensors past 2**31 elements (64-bit counters) gives the same mask."""
    from tessera.kernels import dropout as dmod

    x = (torch.randn(3000) + 5).to(DEV)
    y = torch.empty_like(x)
    dmod._dropout_kernel[(3,)](x, y, x.numel(), 0.25, 1 / 0.75, 77, BLOCK=1024, BIG=True)
    assert torch.equal(y != 0, dropout_keep_mask(77, x.shape, 0.25, device=DEV))
