"""ts.nn against torch.nn.functional on random inputs of awkward sizes."""

import pytest
import torch
import torch.nn.functional as F

import tessera as ts
from tessera.runtime.philox import dropout_keep_mask

W = ts.from_dlpack


def test_norms_activations_softmax(cpu):
    x, w, b = torch.randn(3, 5, 37), torch.randn(37), torch.randn(37)
    assert torch.allclose(ts.nn.layer_norm(W(x), W(w), W(b)).torch(), F.layer_norm(x, (37,), w, b), atol=1e-5)
    assert torch.allclose(ts.nn.layer_norm(W(x)).torch(), F.layer_norm(x, (37,)), atol=1e-5)
    rms = x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-6) * w
    assert torch.allclose(ts.nn.rms_norm(W(x), W(w)).torch(), rms, atol=1e-5)
    assert torch.allclose(ts.nn.gelu(W(x)).torch(), F.gelu(x), atol=1e-6)
    assert torch.allclose(ts.nn.gelu(W(x), approximate="tanh").torch(), F.gelu(x, approximate="tanh"), atol=1e-6)
    assert torch.allclose(ts.nn.silu(W(x)).torch(), F.silu(x), atol=1e-6)
    assert torch.equal(ts.nn.relu(W(x)).torch(), F.relu(x))
    assert torch.allclose(ts.nn.softmax(W(x), dim=1).torch(), torch.softmax(x, 1), atol=1e-6)
    assert torch.allclose(ts.nn.log_softmax(W(x)).torch(), torch.log_softmax(x, -1), atol=1e-5)


def test_linear_with_bias_and_activation(cpu):
    x, w, b = torch.randn(4, 3, 10), torch.randn(10, 6), torch.randn(6)
    got = ts.nn.linear(W(x), W(w), W(b), activation="silu").torch()
    assert torch.allclose(got, F.silu(x @ w + b), atol=1e-5)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy(cpu, reduction):
    logits = torch.randn(2, 7, 33)
    t = torch.randint(0, 33, (2, 7))
    t[0, :3] = -100
    got = ts.nn.cross_entropy(W(logits), W(t), reduction=reduction, label_smoothing=0.1).torch()
    ref = F.cross_entropy(logits.reshape(-1, 33), t.reshape(-1), reduction=reduction, label_smoothing=0.1)
    assert torch.allclose(got.reshape(-1), ref.reshape(-1), atol=1e-5)


def test_embedding_and_dropout(cpu):
    table, ids = torch.randn(11, 4), torch.randint(0, 11, (3, 5))
    assert torch.equal(ts.nn.embedding(W(ids), W(table)).torch(), F.embedding(ids, table))
    x = torch.randn(8, 33)
    y = ts.nn.dropout(W(x), 0.25, seed=5).torch()
    keep = dropout_keep_mask(5, x.shape, 0.25)
    assert torch.allclose(y, torch.where(keep, x / 0.75, 0.0))
    assert 0.6 < keep.float().mean() < 0.9
    with pytest.raises(ts.TesseraValueError):
        ts.nn.dropout(W(x), 1.0, seed=0)


@pytest.mark.parametrize("Sq, Sk, causal", [(1, 1, False), (17, 17, True), (5, 23, True), (23, 5, True), (9, 9, False)])
def test_attention_against_sdpa(cpu, Sq, Sk, causal):
    q, k, v = torch.randn(2, 6, Sq, 16), torch.randn(2, 3, Sk, 16), torch.randn(2, 3, Sk, 16)
    got = ts.nn.flash_attention(W(q), W(k), W(v), causal=causal).torch()
    kk, vv = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    mask = torch.ones(Sq, Sk, dtype=torch.bool).tril(Sk - Sq) if causal else None
    ref = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask)
    ref = torch.where(mask.any(-1)[:, None], ref, 0.0) if causal else ref
    assert torch.allclose(got, ref, atol=1e-5)


def test_attention_fully_masked_rows_are_zero(cpu):
    q = torch.randn(1, 2, 4, 8)
    mask = torch.tensor([True, True, False, False])[None, None, :, None].expand(1, 1, 4, 4)
    out = ts.nn.flash_attention(W(q), W(q), W(q), mask=W(mask.contiguous())).torch()
    assert torch.isfinite(out).all() and torch.equal(out[:, :, 2:], torch.zeros_like(out[:, :, 2:]))


def test_attention_bad_heads(cpu):
    with pytest.raises(ts.TesseraShapeError) as e:
        ts.nn.flash_attention(ts.ones(1, 5, 4, 8), ts.ones(1, 2, 4, 8), ts.ones(1, 2, 4, 8))
    assert "multiple of the key/value heads" in str(e.value)


def test_transformer_stack_runs_under_jit(cpu):
    D = 32
    ws = [{"w_qkv": ts.randn(D, 3 * D) * 0.1, "w_out": ts.randn(D, D) * 0.1, "w_mlp": ts.randn(D, 4 * D) * 0.1}
          for _ in range(2)]
    x = ts.randn(2, 9, D)
    eager = ts.nn.transformer_stack(x, ws, num_layers=2, num_heads=4)
    jitted = ts.jit(lambda x, ws: ts.nn.transformer_stack(x, ws, num_layers=2, num_heads=4))(x, ws)
    assert torch.allclose(eager.torch(), jitted.torch(), atol=1e-5)


def test_linear_cross_entropy_matches_materialised(cpu):
    h, w, b = torch.randn(11, 6, dtype=torch.float64), torch.randn(6, 23, dtype=torch.float64), torch.randn(23, dtype=torch.float64)
    t = torch.randint(0, 23, (11,))
    t[3] = -100
    f = lambda h, w, b: ts.nn.linear_cross_entropy(h, w, W(t), bias=b, chunk_size=4, label_smoothing=0.05)  # noqa: E731
    loss = f(W(h), W(w), W(b))
    grads = ts.grad(f, argnums=(0, 1, 2))(W(h), W(w), W(b))
    hs, ws, bs = (x.clone().requires_grad_() for x in (h, w, b))
    ref = F.cross_entropy(hs @ ws + bs, t, label_smoothing=0.05)
    ref_grads = torch.autograd.grad(ref, (hs, ws, bs))
    assert abs(float(loss) - float(ref)) < 1e-10
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g.torch(), r, atol=1e-10)


def test_rotary_swiglu_add_norm(cpu):
    x = torch.randn(2, 3, 5, 8)
    cos, sin = ts.nn.rope_frequencies(5, 8)
    got = ts.nn.rotary_embedding(W(x), cos, sin).torch()
    c, s = cos.torch(), sin.torch()
    ref = torch.cat([x[..., :4] * c - x[..., 4:] * s, x[..., 4:] * c + x[..., :4] * s], -1)
    assert torch.allclose(got, ref, atol=1e-6)
    partial = ts.nn.rotary_embedding(W(x), cos[:, :2], sin[:, :2]).torch()
    assert torch.equal(partial[..., 4:], x[..., 4:])
    g, u = torch.randn(4, 7), torch.randn(4, 7)
    assert torch.allclose(ts.nn.swiglu(W(g), W(u)).torch(), F.silu(g) * u, atol=1e-6)
    y, s2 = ts.nn.add_rms_norm(W(g), W(u))
    assert torch.allclose(s2.torch(), g + u) and y.shape == (4, 7)


def test_fp8_quantize_and_linear_against_ml_dtypes(cpu):
    import ml_dtypes
    import numpy as np

    x = torch.randn(6, 32, dtype=torch.float64)
    w = torch.randn(32, 10, dtype=torch.float64)
    qx, sx = ts.quantize_fp8(W(x.float()), axis=-1)
    qw, sw = ts.quantize_fp8(W(w.float()), axis=0)
    assert qx.dtype == ts.fp8_e4m3 and sx.shape == (6, 1) and sw.shape == (1, 10)
    # the reference: round x/scale to e4m3 with ml_dtypes, then dequantise in float64
    sxr = x.abs().amax(-1, keepdim=True).float() / 448.0
    xr = (x.float() / sxr).numpy().astype(ml_dtypes.float8_e4m3fn).astype(np.float64) * sxr.double().numpy()
    assert np.allclose(qx.to(ts.f32).numpy().astype(np.float64) * sx.numpy(), xr)
    y = ts.nn.fp8_linear(W(x.float()), qw, w_scale=sw, out_dtype=ts.f32)
    ref = torch.from_numpy(xr) @ (qw.to(ts.f32).torch().double() * sw.torch().double())
    assert torch.allclose(y.torch().double(), ref, rtol=1e-5, atol=1e-5)
    exact = x @ w
    assert float((y.torch().double() - exact).norm() / exact.norm()) < 0.1  # fp8 is coarse, not wrong


def test_fp8_bad_scales(cpu):
    qw, sw = ts.quantize_fp8(ts.randn(8, 4), axis=0)
    with pytest.raises(ts.TesseraShapeError):
        ts.nn.fp8_linear(ts.randn(2, 8), qw, w_scale=ts.ones(4))
    with pytest.raises(ts.TesseraValueError):
        ts.nn.fp8_linear(ts.randn(2, 8), qw, w_scale=sw * float("inf"))
    with pytest.raises(ts.TesseraDTypeError):
        ts.nn.fp8_linear(ts.randn(2, 8), ts.randn(8, 4), w_scale=sw)


def test_quantized_linear_matches_dequantised_weight(cpu):
    from tessera.quant import dequantize, quantize

    for fmt in ("fp4_e2m1", "fp6_e2m3", "fp6_e3m2"):
        w = torch.randn(72, 12)
        qw = quantize(w, fmt, group_size=32)
        x = torch.randn(2, 5, 72)
        got = ts.nn.quantized_linear(W(x), qw).torch()
        ref = x.double() @ dequantize(qw, dtype=torch.float64)
        assert torch.allclose(got.double(), ref, atol=1e-4), fmt
    with pytest.raises(ts.TesseraShapeError):
        ts.nn.quantized_linear(ts.randn(3, 71), qw)
    with pytest.raises(ts.TesseraTypeError):
        ts.nn.quantized_linear(ts.randn(3, 72), w)
