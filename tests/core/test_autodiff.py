"""ts.grad in-function (the seed's form) and as a transform, eager and under jit, against torch autograd."""
import pytest
import torch
import torch.nn.functional as F

import tessera as ts


def _model_torch(w1, w2, x, t):
    h = F.gelu(x @ w1)
    h = F.layer_norm(h, (h.shape[-1],))
    logits = h @ w2
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), t.reshape(-1).long())


def _model_ts(w1, w2, x, t):
    h = ts.nn.gelu(ts.nn.linear(x, w1))
    h = ts.nn.layer_norm(h)
    return ts.nn.cross_entropy(ts.nn.linear(h, w2), t)


def _data():
    torch.manual_seed(0)
    w1 = ts.from_dlpack(torch.randn(6, 10, dtype=torch.float64) * 0.5)
    w2 = ts.from_dlpack(torch.randn(10, 7, dtype=torch.float64) * 0.5)
    x = ts.from_dlpack(torch.randn(3, 5, 6, dtype=torch.float64))
    t = ts.from_dlpack(torch.randint(0, 7, (3, 5)))
    return w1, w2, x, t


def _torch_grads(w1, w2, x, t):
    a = w1.torch().clone().requires_grad_()
    b = w2.torch().clone().requires_grad_()
    loss = _model_torch(a, b, x.torch(), t.torch())
    return list(torch.autograd.grad(loss, (a, b))), float(loss.detach())


def test_grad_inside_function_seed_form(cpu):
    @ts.function
    def training_step(w1, w2, x, t) -> ts.Dict[str, ts.Tensor]:
        loss = _model_ts(w1, w2, x, t)
        grads = ts.grad(loss, {"w1": w1, "w2": w2})
        return {"loss": loss, "gradients": grads}

    data = _data()
    out = training_step(*data)
    ref, ref_loss = _torch_grads(*data)
    assert abs(float(out["loss"]) - ref_loss) < 1e-10
    assert torch.allclose(out["gradients"]["w1"].torch(), ref[0], rtol=1e-8, atol=1e-10)
    assert torch.allclose(out["gradients"]["w2"].torch(), ref[1], rtol=1e-8, atol=1e-10)
    assert out["loss"]._producer is None  # the tape is released after the call


@pytest.mark.parametrize("compiled", [False, True])
def test_grad_transform_and_under_jit(cpu, compiled):
    data = _data()
    g = ts.grad(_model_ts, argnums=(0, 1))
    if compiled:
        g = ts.jit(g)
    got = g(*data)
    ref, _ = _torch_grads(*data)
    for a, b in zip(got, ref):
        assert torch.allclose(a.torch(), b, rtol=1e-8, atol=1e-10)


def test_value_and_grad_under_jit_traces_once(cpu):
    f = ts.jit(ts.value_and_grad(lambda w, x: ((x @ w) ** 2).mean()))
    for n in (3, 4, 9):
        w = ts.randn(4, 2, dtype=ts.f64)
        x = ts.randn(n, 4, dtype=ts.f64)
        v, g = f(w, x)
        tw = w.torch().clone().requires_grad_()
        loss = ((x.torch() @ tw) ** 2).mean()
        (ref,) = torch.autograd.grad(loss, tw)
        assert abs(float(v) - float(loss)) < 1e-12
        assert torch.allclose(g.torch(), ref)
    assert f.trace_count == 1


def test_attention_gradients_match_torch(cpu):
    torch.manual_seed(1)
    q = torch.randn(2, 4, 9, 8, dtype=torch.float64)
    k = torch.randn(2, 2, 11, 8, dtype=torch.float64)
    v = torch.randn(2, 2, 11, 8, dtype=torch.float64)
    mask = torch.rand(2, 1, 1, 11) > 0.2

    def loss_ts(q, k, v):
        return (ts.nn.flash_attention(q, k, v, causal=True, mask=ts.from_dlpack(mask)) ** 2).sum()

    got = ts.grad(loss_ts, argnums=(0, 1, 2))(*map(ts.from_dlpack, (q, k, v)))
    qs, ks, vs = (t.clone().requires_grad_() for t in (q, k, v))
    allowed = torch.ones(9, 11, dtype=torch.bool).tril(2) & mask
    o = F.scaled_dot_product_attention(qs, ks.repeat_interleave(2, 1), vs.repeat_interleave(2, 1), attn_mask=allowed)
    o = torch.nan_to_num(o)
    ref = torch.autograd.grad((o ** 2).sum(), (qs, ks, vs))
    for a, b in zip(got, ref):
        assert torch.allclose(a.torch(), b, rtol=1e-7, atol=1e-9)


def test_second_derivative(cpu):
    x = ts.tensor([0.3, -1.2, 2.0], dtype=ts.f64)
    d2 = ts.grad(lambda x: ts.grad(lambda y: (ts.tanh(y) ** 3).sum())(x).sum())(x)
    xt = x.torch().clone().requires_grad_()
    (g,) = torch.autograd.grad((torch.tanh(xt) ** 3).sum(), xt, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), xt)
    assert torch.allclose(d2.torch(), h)


def test_unused_wrt_gets_zeros_and_ints_are_rejected(cpu):
    @ts.function
    def f(a, b):
        loss = (a * 3.0).sum()
        return ts.grad(loss, [a, b])

    ga, gb = f(ts.ones(2), ts.ones(3))
    assert ga.tolist() == [3.0, 3.0] and gb.tolist() == [0.0, 0.0, 0.0]

    @ts.function
    def g(a, i):
        return ts.grad((a * 2.0).sum(), i)

    with pytest.raises(ts.TesseraAutodiffError):
        g(ts.ones(2), ts.tensor([1, 2]))


def test_grad_without_tape_explains(cpu):
    loss = (ts.ones(2) * 2.0).sum()
    with pytest.raises(ts.TesseraAutodiffError) as e:
        ts.grad(loss, ts.ones(2))
    assert "@ts.function" in str(e.value)


def test_grad_with_nested_params(cpu):
    params = {"layer": [ts.ones(2, 3, dtype=ts.f64), ts.ones(3, dtype=ts.f64)]}
    g = ts.grad(lambda p, x: ((x @ p["layer"][0] + p["layer"][1]) ** 2).sum())(params, ts.ones(4, 2, dtype=ts.f64))
    assert g["layer"][0].tolist() == [[24.0] * 3] * 2 and g["layer"][1].tolist() == [24.0] * 3


def test_cross_entropy_backward_is_taken_once(cpu):
    @ts.function
    def twice(w, x, t):
        loss = ts.nn.cross_entropy(ts.nn.linear(x, w), t)
        ts.grad(loss, w)
        return ts.grad(loss, w)

    with pytest.raises(ts.TesseraAutodiffError) as e:
        twice(ts.randn(3, 5), ts.randn(4, 3), ts.randint(0, 5, (4,), dtype=ts.int64))
    assert "take one ts.grad per loss" in str(e.value)
