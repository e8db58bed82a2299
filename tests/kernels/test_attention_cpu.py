"""Attention kernels through the Triton interpreter (CPU, fp32/fp16, small awkward sizes),
forward and backward against the float64 reference (autograd for the backward)."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from tessera.errors import TesseraDTypeError, TesseraShapeError, TesseraValueError  # noqa: E402
from tessera.kernels.attention import (  # noqa: E402
    attention_reference, flash_attention_bwd, flash_attention_fp8_fwd, flash_attention_fwd, flash_attention_varlen_bwd,
    flash_attention_varlen_fwd, supports)
from tessera.kernels.attention import forward as _forward  # noqa: E402
from tessera.kernels.attention.launch import Problem, run_backward, run_forward  # noqa: E402
from tessera.ops.attention_reference import varlen_reference  # noqa: E402
from tessera.kernels.matmul import quantize_fp8  # noqa: E402
from tessera.runtime.philox import dropout_keep_mask  # noqa: E402

INTERPRETED = type(_forward._fwd_kernel).__name__ == "InterpretedFunction"
needs_interp = pytest.mark.skipif(torch.cuda.is_available() or not INTERPRETED,
                                  reason="CPU interpreter tests (TRITON_INTERPRET=1 before Triton kernels load)")

TOL = {torch.float32: 1e-5, torch.float16: 5e-3}


def rel(a, b):
    a, b = a.double(), b.double()
    assert not torch.isnan(a).any(), "NaN in the kernel's output"
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _mask_for_ref(mask):
    return None if mask is None else (mask if mask.dtype == torch.bool else mask.double())


def check(B, H, Hkv, Sq, Sk, D, causal=False, mask=None, dtype=torch.float32, dropout_p=0.0, seed=3,
          layout="bhsd", scale=None, grad=True):
    g = torch.Generator().manual_seed(hash((B, H, Hkv, Sq, Sk, D, causal, layout)) % 2**31)

    def make(h, s):
        if layout == "bshd":  # a transposed view: non-contiguous strides
            return torch.randn(B, s, h, D, generator=g).to(dtype).transpose(1, 2)
        return torch.randn(B, h, s, D, generator=g).to(dtype)

    q, k, v = make(H, Sq), make(Hkv, Sk), make(Hkv, Sk)
    o, lse = flash_attention_fwd(q, k, v, mask, causal=causal, scale=scale, dropout_p=dropout_p, seed=seed)
    qd, kd, vd = (x.double().requires_grad_() for x in (q, k, v))
    ro, rl = attention_reference(qd, kd, vd, _mask_for_ref(mask), causal=causal, scale=scale,
                                 dropout_p=dropout_p, seed=seed)
    tol = TOL[dtype]
    assert o.shape == q.shape and o.dtype == q.dtype and lse.dtype == torch.float32
    assert rel(o, ro.detach()) <= tol
    empty = torch.isinf(rl)
    assert torch.equal(torch.isinf(lse), empty) and (lse[empty] < 0).all()
    if (~empty).any():
        assert (lse[~empty].double() - rl[~empty]).abs().max().item() <= 1e-4 * (10 if dtype == torch.float16 else 1)
    assert (o[empty.unsqueeze(-1).expand_as(o)] == 0).all()
    if not grad:
        return
    do = torch.randn(o.shape, generator=g).to(dtype)
    ro.backward(do.double())
    dq, dk, dv = flash_attention_bwd(do, q, k, v, o, lse, mask, causal=causal, scale=scale,
                                     dropout_p=dropout_p, seed=seed)
    assert dk.shape == k.shape and dv.shape == v.shape
    for got, want in ((dq, qd.grad), (dk, kd.grad), (dv, vd.grad)):
        if want.norm() < 1e-12:  # e.g. softmax over one key: the exact gradient is 0
            assert got.abs().max() <= tol
        else:
            assert rel(got, want) <= tol * 2


@needs_interp
@pytest.mark.parametrize("Sq,Sk", [(1, 1), (17, 17), (17, 100), (100, 17), (1, 33)])
@pytest.mark.parametrize("causal", [False, True])
def test_shapes_and_causal(Sq, Sk, causal):
    check(1, 3, 3, Sq, Sk, 32, causal=causal)


@needs_interp
@pytest.mark.parametrize("D", [32, 64])
def test_head_dims_odd_batch_heads(D):
    check(3, 1, 1, 20, 23, D, causal=True)


@needs_interp
def test_head_dim_96_padded():
    check(1, 2, 1, 19, 21, 96, causal=True)


@needs_interp
@pytest.mark.parametrize("H,Hkv", [(4, 2), (3, 1)])
def test_gqa_mqa(H, Hkv):
    check(1, H, Hkv, 21, 29, 32, causal=True)


@needs_interp
def test_transposed_views_and_scale():
    check(2, 2, 1, 18, 25, 32, causal=False, layout="bshd", scale=0.3)


@needs_interp
def test_fp16():
    check(1, 2, 1, 33, 40, 32, causal=True, dtype=torch.float16)


@needs_interp
def test_key_padding_bool_mask():
    B, Sk = 2, 30
    lengths = torch.tensor([30, 11])
    mask = (torch.arange(Sk)[None, :] < lengths[:, None]).view(B, 1, 1, Sk)
    check(B, 2, 2, 17, Sk, 32, causal=False, mask=mask)


@needs_interp
def test_additive_mask_with_causal():
    g = torch.Generator().manual_seed(1)
    check(1, 2, 1, 17, 26, 32, causal=True, mask=torch.randn(1, 2, 17, 26, generator=g))


@needs_interp
def test_fully_masked_rows_are_zero_with_zero_grads():
    mask = torch.ones(2, 1, 17, 20, dtype=torch.bool)
    mask[0, :, 5] = False
    mask[1, :, 16] = False
    check(2, 2, 1, 17, 20, 32, mask=mask)
    # Causal with more queries than keys: the first Sq - Sk rows see nothing.
    check(1, 2, 1, 30, 7, 32, causal=True)
    # An additive mask of -inf empties a row as well.
    add = torch.zeros(1, 1, 5, 9)
    add[..., 2, :] = float("-inf")
    check(1, 1, 1, 5, 9, 32, mask=add)


@needs_interp
@pytest.mark.parametrize("causal", [False, True])
def test_dropout_matches_reference_mask(causal):
    check(1, 3, 1, 17, 23, 32, causal=causal, dropout_p=0.25, seed=12345)


@needs_interp
def test_dropout_keep_mask_is_the_philox_reference():
    # With v = identity rows and no softmax spread (one key per query), o reveals the mask.
    B, H, S = 1, 2, 16
    q = torch.zeros(B, H, S, 16)
    k = torch.zeros(B, H, S, 16)
    v = torch.eye(16).expand(B, H, S, 16).contiguous()
    p = 0.4
    o, lse = flash_attention_fwd(q, k, v, dropout_p=p, seed=99)
    keep = dropout_keep_mask(99, (B, H, S, S), p)
    expected = keep.double() / S / (1 - p)  # uniform attention of 1/S, kept entries rescaled
    assert torch.allclose(o.double(), expected, atol=1e-6)


@needs_interp
@pytest.mark.parametrize("mode", [1, 2])  # device-side / host-side tensor descriptors
def test_tma_paths_in_interpreter(mode):
    B, H, Hkv, Sq, Sk, D = 2, 2, 1, 23, 19, 32
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(B, h, s, D, generator=g) for h, s in ((H, Sq), (Hkv, Sk), (Hkv, Sk)))
    prob = Problem(B, H, Hkv, Sq, Sk, D, True, D ** -0.5)
    o, lse = run_forward(q, k, v, None, prob, use_tma=mode)
    qd, kd, vd = (x.double().requires_grad_() for x in (q, k, v))
    ro, _ = attention_reference(qd, kd, vd, causal=True)
    do = torch.randn(o.shape, generator=g)
    ro.backward(do.double())
    assert rel(o, ro.detach()) <= 1e-5
    dq, dk, dv = run_backward(do, q, k, v, o, lse, None, prob, use_tma=mode)
    assert rel(dq, qd.grad) <= 2e-5 and rel(dk, kd.grad) <= 2e-5 and rel(dv, vd.grad) <= 2e-5


@needs_interp
def test_mismatched_block_shapes():
    B, H, Sq, Sk, D = 1, 2, 45, 70, 32
    g = torch.Generator().manual_seed(8)
    q, k, v = (torch.randn(B, H, s, D, generator=g) for s in (Sq, Sk, Sk))
    prob = Problem(B, H, H, Sq, Sk, D, True, D ** -0.5)
    cfg = {"BLOCK_M": 32, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1}
    cfg2 = {"BLOCK_M": 16, "BLOCK_N": 32, "num_warps": 4, "num_stages": 1}
    o, lse = run_forward(q, k, v, None, prob, config=cfg)
    qd, kd, vd = (x.double().requires_grad_() for x in (q, k, v))
    ro, _ = attention_reference(qd, kd, vd, causal=True)
    do = torch.randn(o.shape, generator=g)
    ro.backward(do.double())
    assert rel(o, ro.detach()) <= 1e-5
    dq, dk, dv = run_backward(do, q, k, v, o, lse, None, prob, configs=(cfg, cfg2))
    assert rel(dq, qd.grad) <= 2e-5 and rel(dk, kd.grad) <= 2e-5 and rel(dv, vd.grad) <= 2e-5


def _fp8_inputs(B, H, Hkv, Sq, Sk, D, seed):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, h, s, D, generator=g) * f for h, s, f in ((H, Sq, 2.0), (Hkv, Sk, 1.0), (Hkv, Sk, 3.0)))
    return [quantize_fp8(x) for x in (q, k, v)]


@needs_interp
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("Sq,Sk", [(37, 50), (50, 37)])
def test_fp8_forward_matches_the_dequantised_reference(causal, Sq, Sk):
    (q8, sq), (k8, sk), (v8, sv) = _fp8_inputs(2, 4, 2, Sq, Sk, 64, Sq + Sk)
    o, lse = flash_attention_fp8_fwd(q8, k8, v8, sq, sk, sv, causal=causal)
    ro, rl = attention_reference(*(x.double() * s.double() for x, s in ((q8, sq), (k8, sk), (v8, sv))), causal=causal)
    assert o.dtype == torch.bfloat16 and o.shape == q8.shape
    # e4m3 probabilities carry 3 mantissa bits: ~3.6% rms rounding, as in any fp8 attention
    assert rel(o, ro) <= 6e-2
    empty = torch.isinf(rl)
    assert torch.equal(torch.isinf(lse), empty)
    assert (lse[~empty].double() - rl[~empty]).abs().max() <= 1e-4  # the scores are exact fp32 sums
    assert (o[empty.unsqueeze(-1).expand_as(o)] == 0).all()
    assert empty.any() == (causal and Sq > Sk)


@needs_interp
def test_fp8_forward_reads_a_sequence_contiguous_v_in_place():
    (q8, sq), (k8, sk), (v8, sv) = _fp8_inputs(1, 2, 2, 19, 33, 64, 5)
    vt = v8.transpose(2, 3).contiguous().transpose(2, 3)  # the layout the kernel reads
    assert torch.equal(flash_attention_fp8_fwd(q8, k8, v8, sq, sk, sv)[0],
                       flash_attention_fp8_fwd(q8, k8, vt, float(sq), float(sk), float(sv))[0])


def test_fp8_forward_rejects_bad_inputs():
    dev = "cuda" if torch.cuda.is_available() else "cpu"  # the scales are checked after the device
    (q8, sq), (k8, sk), (v8, sv) = ((x.to(dev), s) for x, s in _fp8_inputs(1, 2, 2, 8, 8, 64, 6))
    with pytest.raises(TesseraDTypeError, match="float8_e4m3fn.*quantize_fp8"):
        flash_attention_fp8_fwd(q8.float(), k8.float(), v8.float(), sq, sk, sv)
    with pytest.raises(TesseraShapeError, match="D=32"):
        flash_attention_fp8_fwd(q8[..., :32], k8[..., :32], v8[..., :32], sq, sk, sv)
    with pytest.raises(TesseraValueError, match="k_scale.*NaN or inf"):
        flash_attention_fp8_fwd(q8, k8, v8, sq, torch.tensor(float("nan")), sv)
    with pytest.raises(TesseraShapeError, match="v_scale has shape \\(2,\\)"):
        flash_attention_fp8_fwd(q8, k8, v8, sq, sk, torch.ones(2))


@needs_interp
@pytest.mark.parametrize("causal", [False, True])
def test_varlen(causal):
    g = torch.Generator().manual_seed(11)
    lq, lk = [5, 1, 17, 30], [9, 4, 17, 12]
    cu_q = torch.tensor([0] + list(torch.tensor(lq).cumsum(0)), dtype=torch.int32)
    cu_k = torch.tensor([0] + list(torch.tensor(lk).cumsum(0)), dtype=torch.int32)
    H, Hkv, D = 4, 2, 32
    q = torch.randn(sum(lq), H, D, generator=g)
    k = torch.randn(sum(lk), Hkv, D, generator=g)
    v = torch.randn(sum(lk), Hkv, D, generator=g)
    o, lse = flash_attention_varlen_fwd(q, k, v, cu_q, cu_k, max(lq), max(lk), causal=causal)
    qd, kd, vd = (x.double().requires_grad_() for x in (q, k, v))
    ro, rl = varlen_reference(qd, kd, vd, cu_q, cu_k, causal=causal)
    assert lse.shape == (H, sum(lq))
    assert rel(o, ro.detach()) <= 1e-5
    empty = torch.isinf(rl)
    assert torch.equal(torch.isinf(lse), empty)
    assert (lse[~empty].double() - rl[~empty]).abs().max() <= 1e-4
    do = torch.randn(o.shape, generator=g)
    ro.backward(do.double())
    dq, dk, dv = flash_attention_varlen_bwd(do, q, k, v, o, lse, cu_q, cu_k, max(lq), max(lk), causal=causal)
    assert rel(dq, qd.grad) <= 2e-5 and rel(dk, kd.grad) <= 2e-5 and rel(dv, vd.grad) <= 2e-5


def test_reference_fully_masked_rows_have_no_nan_gradient():
    q, k, v = (torch.randn(1, 1, 4, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    mask[..., 1, :] = False
    o, lse = attention_reference(q, k, v, mask)
    o.sum().backward()
    assert torch.isinf(lse[0, 0, 1]) and (o[0, 0, 1] == 0).all()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
    assert (q.grad[0, 0, 1] == 0).all()


def test_bad_inputs_raise_typed_errors():
    q = torch.zeros(1, 4, 3, 32)
    with pytest.raises(TesseraShapeError, match="multiple"):
        flash_attention_fwd(q, torch.zeros(1, 3, 5, 32), torch.zeros(1, 3, 5, 32))
    with pytest.raises(TesseraShapeError, match="4-D"):
        flash_attention_fwd(q[0], q[0], q[0])
    with pytest.raises(TesseraShapeError, match="mask"):
        flash_attention_fwd(q, q, q, torch.ones(2, 1, 1, 3, dtype=torch.bool))
    with pytest.raises(TesseraDTypeError, match="mask"):
        flash_attention_fwd(q, q, q, torch.ones(1, 1, 1, 3, dtype=torch.int64))
    with pytest.raises(TesseraDTypeError):
        flash_attention_fwd(q, q.half(), q)
    with pytest.raises(TesseraValueError, match="dropout_p"):
        flash_attention_fwd(q, q, q, dropout_p=1.0)
    with pytest.raises(TesseraDTypeError, match="int32"):
        flash_attention_varlen_fwd(q[0], q[0], q[0], torch.tensor([0, 4]), torch.tensor([0, 4]), 4, 4)


def test_supports():
    q = torch.zeros(1, 2, 5, 64)
    assert supports(q, q, q) == INTERPRETED
    assert not supports(q.bfloat16(), q.bfloat16(), q.bfloat16())  # the interpreter mishandles bf16
    assert not supports(torch.zeros(1, 2, 5, 48), torch.zeros(1, 2, 5, 48), torch.zeros(1, 2, 5, 48))
    assert not supports(q.double(), q.double(), q.double())
    assert not supports(q, q, q, dropout_p=2.0)


@pytest.mark.skipif(INTERPRETED or torch.cuda.is_available(), reason="only where the kernels cannot run")
def test_cpu_tensors_without_interpreter_raise_device_error():
    from tessera.errors import TesseraDeviceError

    q = torch.zeros(1, 2, 5, 64)
    with pytest.raises(TesseraDeviceError, match="attention_reference"):
        flash_attention_fwd(q, q, q)


def test_varlen_offsets_errors_name_the_problem():
    from tessera.errors import TesseraDTypeError, TesseraShapeError
    from tessera.kernels.attention.checks import check_varlen

    q = torch.randn(7, 2, 8)
    with pytest.raises(TesseraShapeError, match=r"`cu_seqlens_q` must be 1-D \(batch \+ 1 offsets\), got shape \(1, 3\)"):
        check_varlen(q, q, q, torch.tensor([[0, 3, 7]], dtype=torch.int32), torch.tensor([0, 3, 7], dtype=torch.int32))
    with pytest.raises(TesseraDTypeError, match=r"`cu_seqlens_k` must be int32, got torch.int64; use cu_seqlens_k.to"):
        check_varlen(q, q, q, torch.tensor([0, 3, 7], dtype=torch.int32), torch.tensor([0, 3, 7]))
