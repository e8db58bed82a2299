"""tessera.quant: encode/decode and pack/unpack are exact against ml_dtypes; quantize/dequantize."""
import ml_dtypes
import numpy as np
import pytest
import torch

import tessera.quant as q
from tessera.errors import TesseraShapeError, TesseraValueError
from tessera.quant.formats import positive_values
from tessera.quant.weights import packed_codes

FORMATS = ["fp6_e2m3", "fp6_e3m2", "fp4_e2m1"]


def _ml(fmt):
    return getattr(ml_dtypes, q.get_format(fmt).ml_dtypes_name)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_code_decodes_like_ml_dtypes(fmt):
    f = q.get_format(fmt)
    codes = torch.arange(1 << f.bits, dtype=torch.uint8)
    ref = codes.numpy().view(_ml(fmt)).astype(np.float32)
    assert np.array_equal(q.decode(codes, fmt).numpy(), ref)


@pytest.mark.parametrize("fmt", FORMATS)
def test_encode_rounds_like_ml_dtypes(fmt):
    g = torch.Generator().manual_seed(1)
    pos = torch.tensor(positive_values(q.get_format(fmt)))
    mids = (pos[1:] + pos[:-1]) / 2  # exact ties: round half to even
    x = torch.cat([torch.randn(20000, generator=g) * 4, torch.rand(2000, generator=g) * 0.1,
                   mids, -mids, pos, -pos, torch.tensor([1e6, -1e6, 0.0, -0.0])])
    ref = x.numpy().astype(_ml(fmt)).view(np.uint8)
    assert np.array_equal(q.encode(x, fmt).numpy(), ref)


def test_encode_rejects_nan():
    with pytest.raises(TesseraValueError, match="NaN"):
        q.encode(torch.tensor([1.0, float("nan")]), "fp4_e2m1")


@pytest.mark.parametrize("fmt", FORMATS)
def test_pack_unpack_round_trip(fmt):
    f = q.get_format(fmt)
    g = torch.Generator().manual_seed(2)
    codes = torch.randint(0, 1 << f.bits, (7, 24), generator=g, dtype=torch.uint8)
    packed = q.pack(codes, fmt)
    assert packed.shape == (7, 24 * f.bits // 8)
    assert torch.equal(q.unpack(packed, fmt), codes)


def test_pack_layout_is_documented():
    assert q.pack(torch.tensor([3, 12], dtype=torch.uint8), "fp4_e2m1").tolist() == [3 | 12 << 4]
    word = 1 | 2 << 6 | 3 << 12 | 63 << 18
    assert q.pack(torch.tensor([1, 2, 3, 63], dtype=torch.uint8), "fp6_e2m3").tolist() == [
        word & 255, word >> 8 & 255, word >> 16]


def test_pack_rejects_ragged_length():
    with pytest.raises(TesseraShapeError, match="multiple of 4"):
        q.pack(torch.zeros(6, dtype=torch.uint8), "fp6_e3m2")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("K,N,gs", [(64, 8, 32), (100, 17, 32), (33, 5, 16)])
def test_quantize_dequantize(fmt, K, N, gs):
    g = torch.Generator().manual_seed(K * N)
    w = torch.randn(K, N, generator=g)
    qw = q.quantize(w, fmt, group_size=gs)
    f = q.get_format(fmt)
    kp = -(-K // gs) * gs
    assert qw.data.shape == (N, kp * f.bits // 8) and qw.scales.shape == (N, kp // gs)
    dq = q.dequantize(qw)
    assert dq.shape == (K, N)
    # exactness: dequantized values are decoded codes times the stored scales, as ml_dtypes decodes them
    codes = q.unpack(packed_codes(qw), fmt).reshape(N, -1, gs)
    vals = torch.from_numpy(codes.numpy().view(_ml(fmt)).astype(np.float32))
    exact = (vals * qw.scales.float()[..., None]).reshape(N, -1)[:, :K].t()
    assert torch.equal(dq, exact)
    # and the rounding error is what the format allows (relative step ~2^-mbits, worse for fp4)
    err = ((dq - w).norm() / w.norm()).item()
    assert err < {"fp6_e2m3": 0.06, "fp6_e3m2": 0.1, "fp4_e2m1": 0.2}[fmt]


def test_quantize_bad_group_size():
    with pytest.raises(TesseraValueError, match="group_size"):
        q.quantize(torch.randn(64, 4), "fp4_e2m1", group_size=12)


def test_unknown_format():
    with pytest.raises(TesseraValueError, match="fp4_e2m1"):
        q.quantize(torch.randn(64, 4), "int3")
