"""Attention kernels on a CUDA GPU (bf16/fp16), forward and backward against the float64
reference (backward through torch autograd on the reference)."""
import pytest
import torch

from tessera.kernels.attention import (attention_reference, flash_attention_bwd, flash_attention_fwd,
                                       flash_attention_varlen_bwd, flash_attention_varlen_fwd, supports)
from tessera.ops.attention_reference import varlen_reference

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TOL = {torch.bfloat16: 1e-2, torch.float16: 5e-3}


def rel(got, want):
    assert not torch.isnan(got).any(), "NaN in the kernel's output"
    want = want.double()
    if want.norm() < 1e-9:  # e.g. softmax over a single key: the exact gradient is 0
        return got.double().abs().max().item()
    return ((got.double() - want).norm() / want.norm()).item()


def run_case(B, H, Hkv, Sq, Sk, D, dtype=torch.bfloat16, causal=False, mask=None, dropout_p=0.0, layout="bhsd",
             scale=None):
    g = torch.Generator(device="cuda").manual_seed(Sq * 7 + Sk * 3 + D + H)

    def make(h, s):
        if layout == "bshd":
            return torch.randn(B, s, h, D, device="cuda", generator=g, dtype=dtype).transpose(1, 2)
        return torch.randn(B, h, s, D, device="cuda", generator=g, dtype=dtype)

    q, k, v = make(H, Sq), make(Hkv, Sk), make(Hkv, Sk)
    assert supports(q, k, v, mask, dropout_p)
    o, lse = flash_attention_fwd(q, k, v, mask, causal=causal, scale=scale, dropout_p=dropout_p, seed=77)
    do = torch.randn(o.shape, device="cuda", generator=g, dtype=dtype)
    dq, dk, dv = flash_attention_bwd(do, q, k, v, o, lse, mask, causal=causal, scale=scale, dropout_p=dropout_p,
                                     seed=77)
    qd, kd, vd = (x.double().requires_grad_() for x in (q, k, v))
    ref_mask = None if mask is None else (mask if mask.dtype == torch.bool else mask.double())
    ro, rl = attention_reference(qd, kd, vd, ref_mask, causal=causal, scale=scale, dropout_p=dropout_p, seed=77)
    ro.backward(do.double())
    tol = TOL[dtype]
    assert rel(o, ro.detach()) <= tol
    empty = torch.isinf(rl)
    assert torch.equal(torch.isinf(lse), empty)
    if (~empty).any():
        assert (lse[~empty].double() - rl[~empty]).abs().max() <= 2e-2
    assert rel(dq, qd.grad) <= tol and rel(dk, kd.grad) <= tol and rel(dv, vd.grad) <= tol
    return o, lse, dq


def counting(fn, name, calls):
    """``fn``, appending ``name`` to ``calls`` on each call."""
    def wrapper(*args, **kwargs):
        calls.append(name)
        return fn(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("D", [32, 64, 96, 128, 256])
@pytest.mark.parametrize("S", [1, 17, 1000])
def test_head_dims_and_lengths(D, S):
    run_case(2, 3, 3, S, S, D, causal=(S != 1))


@pytest.mark.parametrize("D", [64, 128])
def test_long_causal_gqa(D):
    run_case(1, 4, 2, 4097, 4097, D, causal=True)


@pytest.mark.parametrize("causal", [False, True])
def test_fp16_unequal_lengths(causal):
    run_case(1, 2, 1, 1000, 1537, 128, dtype=torch.float16, causal=causal)
    run_case(1, 2, 1, 1537, 1000, 64, dtype=torch.float16, causal=causal)


def test_transposed_bshd_views():
    run_case(2, 4, 2, 1000, 1000, 128, causal=True, layout="bshd")


def test_key_padding_and_fully_masked_rows():
    B, Sk = 2, 1000
    lengths = torch.tensor([1000, 333], device="cuda")
    pad = (torch.arange(Sk, device="cuda")[None, :] < lengths[:, None]).view(B, 1, 1, Sk)
    run_case(B, 2, 2, 17, Sk, 128, mask=pad)
    rows = torch.ones(B, 1, 100, 100, dtype=torch.bool, device="cuda")
    rows[:, :, 7] = False
    run_case(B, 2, 1, 100, 100, 64, mask=rows, causal=True)


@pytest.mark.parametrize("B,H,Hkv,S,D,causal", [(1, 7, 1, 1000, 64, True), (3, 5, 5, 777, 128, False)])
def test_prime_and_odd_batch_times_heads(B, H, Hkv, S, D, causal):
    run_case(B, H, Hkv, S, S, D, causal=causal)


def test_long_non_causal_key_padding():
    B, S = 2, 4097
    lengths = torch.tensor([4097, 1001], device="cuda")
    pad = (torch.arange(S, device="cuda")[None, :] < lengths[:, None]).view(B, 1, 1, S)
    run_case(B, 2, 1, S, S, 128, mask=pad)


@pytest.mark.parametrize("D,Sk", [(64, 1000), (128, 4097)])
def test_single_query_causal_sees_every_key(D, Sk):
    """Causal masks are bottom-right aligned: one query against Sk keys sees all of them."""
    run_case(2, 4, 2, 1, Sk, D, causal=True)


@pytest.mark.parametrize("D", [32, 96, 256])
def test_fp16_head_dims(D):
    run_case(2, 3, 1, 777, 1000, D, dtype=torch.float16, causal=True)


@pytest.mark.parametrize("causal", [False, True])
def test_explicit_scale_on_the_warp_specialised_kernels(causal, monkeypatch):
    from tessera.kernels.attention import hopper_ws, hopper_ws_bwd

    if torch.cuda.get_device_capability() != (9, 0) or not (hopper_ws.available() and hopper_ws_bwd.available()):
        pytest.skip("the warp-specialised kernels are built for Hopper (sm_90) with Gluon")
    launched = []
    monkeypatch.setattr(hopper_ws, "run_forward_ws", counting(hopper_ws.run_forward_ws, "fwd", launched))
    monkeypatch.setattr(hopper_ws_bwd, "run_dkdv_ws", counting(hopper_ws_bwd.run_dkdv_ws, "dkdv", launched))
    run_case(1, 4, 2, 2500, 2500, 128, causal=causal, scale=0.3)
    assert launched == ["fwd", "dkdv"]


@pytest.mark.parametrize("case", ["bool mask", "causal Sq > Sk"])
def test_fully_masked_rows_are_exactly_zero(case):
    """Rows that see no key: o and dq exactly 0, lse -inf (the rest checked against float64 by run_case).
    On sm_90 the causal case runs the warp-specialised kernels, the masked one the portable kernels."""
    if case == "bool mask":
        B, H, Sq = 2, 3, 333
        mask = torch.ones(B, 1, Sq, 1000, dtype=torch.bool, device="cuda")
        mask[0, :, 5] = False
        mask[1, :, 100:133] = False
        o, lse, dq = run_case(B, H, 1, Sq, 1000, 64, mask=mask)
        empty = ~mask.any(-1).expand(B, H, Sq)
    else:
        o, lse, dq = run_case(1, 4, 2, 1300, 1000, 128, causal=True)
        empty = torch.zeros(1, 4, 1300, dtype=torch.bool, device="cuda")
        empty[..., :300] = True
    assert int(empty.sum()) == (3 * (1 + 33) if case == "bool mask" else 4 * 300)
    assert torch.isneginf(lse[empty]).all()
    assert torch.count_nonzero(o[empty]) == 0 and torch.count_nonzero(dq[empty]) == 0


@pytest.mark.parametrize("D", [64, 128])
def test_ts_grad_through_nn_flash_attention(D, monkeypatch):
    """ts.grad of a loss over ts.nn.flash_attention runs the forward and backward lowerings once
    each and matches float64 autograd of the reference (causal, GQA, S = 1000, bf16)."""
    import tessera as ts
    from tessera.core.primitive import registry

    calls = []
    for name in ("flash_attention", "flash_attention_bwd"):
        low = registry[name].lowerings["cuda"]
        monkeypatch.setitem(registry[name].lowerings, "cuda", low._replace(fn=counting(low.fn, name, calls)))
    g = torch.Generator(device="cuda").manual_seed(D)
    q = torch.randn(2, 6, 1000, D, device="cuda", generator=g, dtype=torch.bfloat16)
    k, v = (torch.randn(2, 2, 1000, D, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(2))
    w = torch.randn(q.shape, device="cuda", generator=g, dtype=torch.bfloat16)

    def loss(q, k, v):
        return (ts.nn.flash_attention(q, k, v, causal=True) * ts.from_dlpack(w)).sum()

    grads = ts.grad(loss, argnums=(0, 1, 2))(*map(ts.from_dlpack, (q, k, v)))
    assert calls == ["flash_attention", "flash_attention_bwd"]
    qd, kd, vd = (x.double().requires_grad_() for x in (q, k, v))
    ro, _ = attention_reference(qd, kd, vd, causal=True)
    ro.backward(w.double())
    for got, want in zip(grads, (qd.grad, kd.grad, vd.grad)):
        assert got.dtype == ts.bf16 and tuple(got.shape) == tuple(want.shape)
        assert rel(got.torch(), want) <= 1e-2


def test_float32_falls_back_to_the_reference_with_one_warning(monkeypatch):
    import warnings

    import tessera as ts
    from tessera.core.primitive import registry

    prim = registry["flash_attention"]
    monkeypatch.setattr(prim, "_warned", set())
    g = torch.Generator(device="cuda").manual_seed(5)
    q = torch.randn(1, 3, 37, 64, device="cuda", generator=g)
    k, v = (torch.randn(1, 1, 50, 64, device="cuda", generator=g) for _ in range(2))
    attrs = dict(causal=True, scale=None, dropout_p=0.0, seed=0)
    assert not prim.lowerings["cuda"].supports(q, k, v, None, **attrs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outs = [ts.nn.flash_attention(*map(ts.from_dlpack, (q, k, v)), causal=True).torch() for _ in range(2)]
    fallbacks = [str(w.message) for w in caught if "falls back" in str(w.message)]
    assert len(fallbacks) == 1 and "flash_attention on cuda" in fallbacks[0]
    want, _ = prim.reference(q, k, v, None, **attrs)
    assert all(o.dtype == torch.float32 and torch.equal(o, want) for o in outs)
    ro, _ = attention_reference(q.double(), k.double(), v.double(), causal=True)
    assert rel(outs[0], ro) <= 1e-5


def test_additive_mask_causal():
    g = torch.Generator(device="cuda").manual_seed(3)
    run_case(1, 2, 2, 1000, 1000, 64, causal=True, mask=torch.randn(1, 2, 1000, 1000, device="cuda", generator=g))


@pytest.mark.parametrize("D", [64, 128])
def test_dropout(D):
    run_case(1, 2, 1, 1000, 1000, D, causal=True, dropout_p=0.2)


def test_varlen_gpu():
    lq, lk = [1, 17, 1000, 4097, 300], [5, 17, 1200, 4097, 100]
    cq = torch.tensor([0] + torch.tensor(lq).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    ck = torch.tensor([0] + torch.tensor(lk).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    H, Hkv, D = 4, 2, 128
    q = torch.randn(sum(lq), H, D, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(sum(lk), Hkv, D, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    o, lse = flash_attention_varlen_fwd(q, k, v, cq, ck, max(lq), max(lk), causal=True)
    do = torch.randn_like(o)
    dq, dk, dv = flash_attention_varlen_bwd(do, q, k, v, o, lse, cq, ck, max(lq), max(lk), causal=True)
    qd, kd, vd = (x.double().requires_grad_() for x in (q, k, v))
    ro, rl = varlen_reference(qd, kd, vd, cq.cpu(), ck.cpu(), causal=True)
    ro.backward(do.double())
    assert rel(o, ro.detach()) <= 1e-2 and torch.equal(torch.isinf(lse), torch.isinf(rl))
    assert rel(dq, qd.grad) <= 1e-2 and rel(dk, kd.grad) <= 1e-2 and rel(dv, vd.grad) <= 1e-2


@pytest.mark.parametrize("D", [64, 128, 256])
@pytest.mark.parametrize("S,causal", [(1024, False), (1000, True), (4097, True)])
def test_fp8_forward(D, S, causal):
    """e4m3 inputs (host descriptors when S % 16 == 0, pointer loads otherwise) against float64 on the
    dequantised inputs; GQA with 2 query heads per kv head."""
    from tessera.kernels.attention import flash_attention_fp8_fwd
    from tessera.kernels.matmul import quantize_fp8

    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("the fp8 attention kernel is built for Hopper (sm_90)")
    g = torch.Generator(device="cuda").manual_seed(D + S)
    (q8, sq), (k8, sk), (v8, sv) = (quantize_fp8(torch.randn(1, h, S, D, device="cuda", generator=g) * f)
                                    for h, f in ((4, 2.0), (2, 1.0), (2, 3.0)))
    o, lse = flash_attention_fp8_fwd(q8, k8, v8, sq, sk, sv, causal=causal)
    ro, rl = attention_reference(*(x.double() * s.double() for x, s in ((q8, sq), (k8, sk), (v8, sv))), causal=causal)
    assert o.dtype == torch.bfloat16
    assert rel(o, ro) <= 6e-2  # e4m3 probabilities: ~3.6% rms rounding
    # Hopper's fp8 MMA keeps fewer accumulator bits than an fp32 sum (scores off by ~1e-3 of their size)
    assert (lse.double() - rl).abs().max() <= 2e-2


@pytest.mark.parametrize("D", [64, 128, 256])
@pytest.mark.parametrize("causal", [False, True])
def test_warp_specialised_forward_matches_portable(D, causal):
    """Dense bf16 inputs on sm_90 take the warp-specialised kernel; the portable one (pinned by a
    config) computes the same attention, ragged block edges and Sq != Sk included."""
    from tessera.kernels.attention import hopper_ws
    from tessera.kernels.attention.configs import fwd_config
    from tessera.kernels.attention.launch import Problem, default_scale, run_forward

    g = torch.Generator(device="cuda").manual_seed(D * 3 + causal)
    q = torch.randn(2, 4, 777, D, device="cuda", generator=g, dtype=torch.bfloat16)
    k, v = (torch.randn(2, 2, 2333, D, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(2))
    if torch.cuda.get_device_capability() != (9, 0) or not hopper_ws.available():
        pytest.skip("the warp-specialised kernel is built for Hopper (sm_90) with Gluon")
    assert hopper_ws.supported(q, k, v, torch.empty_like(q))
    prob = Problem(2, 4, 2, 777, 2333, D, causal, default_scale(D, None))
    o, lse = run_forward(q, k, v, None, prob)
    po, plse = run_forward(q, k, v, None, prob, config=fwd_config(D, causal))
    ro, rl = attention_reference(q.double(), k.double(), v.double(), causal=causal)
    assert rel(o, ro) <= 1e-2 and rel(po, ro) <= 1e-2
    assert (lse.double() - rl).abs().max() <= 1e-3 and (plse - lse).abs().max() <= 1e-3


@pytest.mark.parametrize("D,Sk", [(128, 1301), (64, 1000)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("fuse_dq", [False, True])
def test_warp_specialised_backward_matches_reference(causal, D, Sk, fuse_dq, monkeypatch):
    """bf16 on sm_90: the warp-specialised dK/dV and dQ kernels (GQA groups summed in registers,
    ragged last blocks, Sq != Sk), or the dK/dV kernel computing dQ too (TMA reduce-adds),
    against float64 autograd and the portable kernels."""
    from tessera.kernels.attention import hopper_ws_bwd

    monkeypatch.setitem(hopper_ws_bwd.CONFIGS, D, dict(hopper_ws_bwd.CONFIGS[D], FUSE_DQ=fuse_dq))
    assert hopper_ws_bwd.fuses_dq(D) == fuse_dq
    if fuse_dq:  # no dQ kernel may run
        monkeypatch.setattr(hopper_ws_bwd, "run_dq_ws", lambda *a, **k: pytest.fail("the dQ kernel ran"))
    from tessera.kernels.attention.configs import bwd_configs
    from tessera.kernels.attention.launch import Problem, default_scale, run_backward, run_forward

    g = torch.Generator(device="cuda").manual_seed(11 + causal + D)
    q = torch.randn(2, 4, 777, D, device="cuda", generator=g, dtype=torch.bfloat16)
    k, v = (torch.randn(2, 2, Sk, D, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(2))
    do = torch.randn_like(q)
    if torch.cuda.get_device_capability() != (9, 0) or not hopper_ws_bwd.available():
        pytest.skip("the warp-specialised kernel is built for Hopper (sm_90) with Gluon")
    assert hopper_ws_bwd.supported(q, k, v, do, torch.empty_like(k), torch.empty_like(v))
    assert hopper_ws_bwd.supported_dq(q, k, v, do, torch.empty_like(q))
    one_key = k[:, :, :1]  # every length down to one key
    assert hopper_ws_bwd.supported(q, one_key, one_key, do, one_key, one_key)
    prob = Problem(2, 4, 2, 777, Sk, D, causal, default_scale(D, None))
    o, lse = run_forward(q, k, v, None, prob)
    dq, dk, dv = run_backward(do, q, k, v, o, lse, None, prob)
    pdq, pdk, pdv = run_backward(do, q, k, v, o, lse, None, prob, configs=bwd_configs(D, causal))
    qd, kd, vd = (x.double().requires_grad_() for x in (q, k, v))
    ro, _ = attention_reference(qd, kd, vd, causal=causal)
    ro.backward(do.double())
    assert rel(dk, kd.grad) <= 1e-2 and rel(dv, vd.grad) <= 1e-2 and rel(dq, qd.grad) <= 1e-2
    assert rel(dk, pdk.double()) <= 1e-2 and rel(dv, pdv.double()) <= 1e-2 and rel(dq, pdq.double()) <= 1e-2
