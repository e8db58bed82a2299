"""flash_attention's mask must be bool (keep/drop) or float (additive): an integer mask is rejected,
since reading an HF-style 0/1 attention_mask as additive would give wrong results silently."""
import pytest
import torch

import tessera as ts

W = ts.from_dlpack


def qkv():
    g = torch.Generator().manual_seed(0)
    return [W(torch.randn(1, 2, 5, 8, generator=g)) for _ in range(3)]


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int8, torch.uint8])
def test_integer_mask_raises_dtype_error_naming_the_fix(cpu, dtype):
    q, k, v = qkv()
    mask = W(torch.ones(1, 1, 5, 5, dtype=dtype))
    with pytest.raises(ts.TesseraDTypeError) as e:
        ts.nn.flash_attention(q, k, v, mask=mask)
    msg = str(e.value)
    assert msg.startswith("flash_attention: mask is ") and "mask.to(ts.bool_)" in msg
    assert ts.dtypes.as_dtype(torch.bool) is ts.bool_  # the name the message tells the user to write


def test_integer_mask_is_rejected_under_jit(cpu):
    q, k, v = qkv()
    mask = W(torch.ones(1, 1, 5, 5, dtype=torch.int64))
    with pytest.raises(ts.TesseraDTypeError, match="mask.to\\(ts.bool_\\)"):
        ts.jit(lambda q, k, v, m: ts.nn.flash_attention(q, k, v, mask=m))(q, k, v, mask)


def test_bool_and_float_masks_still_work(cpu):
    q, k, v = qkv()
    keep = torch.ones(1, 1, 5, 5, dtype=torch.bool)
    keep[..., 3:] = False
    as_bool = ts.nn.flash_attention(q, k, v, mask=W(keep)).torch()
    additive = torch.zeros(1, 1, 5, 5).masked_fill(~keep, float("-inf"))
    as_float = ts.nn.flash_attention(q, k, v, mask=W(additive)).torch()
    converted = ts.nn.flash_attention(q, k, v, mask=W(keep.long()).to(ts.bool_)).torch()
    assert torch.allclose(as_bool, as_float, atol=1e-6)
    assert torch.equal(as_bool, converted)
    unmasked = ts.nn.flash_attention(q, k, v).torch()
    assert not torch.allclose(as_bool, unmasked, atol=1e-3)
