"""tessera.quant: encode/decode and pack/unpack are exact against ml_dtypes; quantize/dequantize."""
import ml_dtypes
import numpy as np
import pytest
import torch

import tessera.quant as q
from tessera.errors import TesseraShapeError, TesseraValueError
from tessera.quant.formats import positive_values
from tessera.quant.fp4_words import MAG_BIT, SIGN_BIT, codes_from_words, words_from_codes
from tessera.quant.k_order import STORED_K, from_stored, to_stored
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


def test_stored_k_order():
    """Code j = 2a + c of pack p = 2q + b sits at K = 16c + 8a + 2q + b of its block of 32; the
    order is a permutation, inverted exactly, and rejects a K that is not whole blocks."""
    assert sorted(STORED_K) == list(range(32))
    for p in range(8):
        for j in range(4):
            assert STORED_K[4 * p + j] == 16 * (j & 1) + 8 * (j >> 1) + p
    codes = torch.randint(0, 64, (3, 5, 96), dtype=torch.uint8)
    stored = to_stored(codes)
    assert torch.equal(stored[..., 32 + 4 * 3 + 2], codes[..., 32 + 8 + 3])  # block 1, pack 3, code 2
    assert torch.equal(from_stored(stored), codes)
    with pytest.raises(TesseraShapeError, match="multiple of 32"):
        to_stored(torch.zeros(2, 48, dtype=torch.uint8))


def test_fp4_words_round_trip_and_layout():
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 16, (5, 3, 44), generator=g, dtype=torch.uint8)
    words = words_from_codes(codes)
    assert words.shape == (5, 3, 22) and torch.equal(codes_from_words(words), codes)
    one = torch.zeros(1, 4, dtype=torch.uint8)
    for j in range(4):  # code j's magnitude bits at MAG_BIT[j], its sign at SIGN_BIT[j]
        one.zero_()
        one[0, j] = 0b1101
        w = words_from_codes(one)[0]
        assert int(w[0]) | int(w[1]) << 8 == (0b101 << MAG_BIT[j]) | (1 << SIGN_BIT[j])
    assert sorted(b for j in range(4) for b in (MAG_BIT[j], MAG_BIT[j] + 1, MAG_BIT[j] + 2, SIGN_BIT[j])) == \
        list(range(16))
    with pytest.raises(TesseraShapeError, match="multiple of 4"):
        words_from_codes(torch.zeros(6, dtype=torch.uint8))


def test_fp4_word_decode_moves_give_every_code_in_both_halves():
    """The kernel's shift-and-mask moves (the inline PTX's recipe), run on the host: every code at
    every position of both words of a register becomes the bf16 of its value times 2**-126."""
    from tessera.kernels.matmul.kernel_wo import _fp4_moves

    values = q.decode(torch.arange(16, dtype=torch.uint8), "fp4_e2m1").double()
    for j in range(4):
        for lo in range(16):
            hi = 15 - lo
            pair = torch.tensor([[lo if i == j else 0 for i in range(4)] + [hi if i == j else 0 for i in range(4)]],
                                dtype=torch.uint8)
            w = words_from_codes(pair)[0].tolist()
            reg = w[0] | w[1] << 8 | w[2] << 16 | w[3] << 24
            out = 0
            for shift, mask in _fp4_moves(j):
                out |= ((reg << shift if shift >= 0 else reg >> -shift) & 0xFFFFFFFF) & mask
            halves = torch.tensor([out & 0xFFFF, out >> 16], dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
            assert torch.equal(halves.double() * 2.0 ** 126, values[[lo, hi]]), (j, lo)


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
    kp = -(-K // max(gs, 32)) * max(gs, 32)  # whole groups and whole blocks of the stored K order
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
