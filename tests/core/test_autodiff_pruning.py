"""The backward pass computes only what reaches the tensors ts.grad was asked about."""
import torch

import tessera as ts
from tessera.core.autodiff import needs_cotangent
from tessera.core.primitive import registry


def test_vjps_see_which_inputs_lead_to_wrt(cpu, monkeypatch):
    prim = registry["mul"]
    seen = []
    real = prim.vjp

    def spy(cts, ins, outs, **attrs):
        seen.append(tuple(needs_cotangent(i) for i in range(len(ins))))
        return real(cts, ins, outs, **attrs)

    monkeypatch.setattr(prim, "vjp", spy)
    a, b = ts.randn(3), ts.randn(3)
    ga = ts.grad(lambda a: (a * b).sum())(a)
    assert seen == [(True, False)]
    assert torch.allclose(ga.torch(), b.torch())
    assert needs_cotangent(0)  # outside a backward pass


def test_nodes_off_the_path_to_wrt_are_skipped(cpu, monkeypatch):
    calls = []
    real = registry["exp"].vjp
    monkeypatch.setattr(registry["exp"], "vjp", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    w, c = ts.randn(4), ts.randn(4)

    def loss(w):
        return (w * ts.exp(c)).sum()  # exp(c) does not depend on w

    g = ts.grad(loss)(w)
    assert calls == [] and torch.allclose(g.torch(), torch.exp(c.torch()))


def test_rotary_skips_table_gradients_unless_asked(cpu, monkeypatch):
    import tessera.ops.nn_ops as nn_ops

    tables = []
    real = nn_ops._rotary_table_grads
    monkeypatch.setattr(nn_ops, "_rotary_table_grads", lambda *a: (tables.append(1), real(*a))[1])
    x = ts.randn(2, 5, 8)
    cos, sin = ts.nn.rope_frequencies(5, 8)
    dx = ts.grad(lambda x: ts.nn.rotary_embedding(x, cos, sin).sum())(x)
    assert tables == []
    dx2, dcos = ts.grad(lambda x, cos: ts.nn.rotary_embedding(x, cos, sin).sum(), argnums=(0, 1))(x, cos)
    assert tables == [1] and torch.equal(dx.torch(), dx2.torch()) and dcos.shape == cos.shape


def test_linear_backward_skips_the_gemms_nobody_asked_for(cpu, monkeypatch):
    import tessera.ops.linalg as linalg

    products = []
    real = linalg.matmul
    monkeypatch.setattr(linalg, "matmul", lambda a, b: (products.append((tuple(a.shape), tuple(b.shape))), real(a, b))[1])
    x, w, b = ts.randn(6, 4), ts.randn(4, 3), ts.randn(3)
    dw = ts.grad(lambda w: ts.nn.linear(x, w, b).sum())(w)  # x is data, b is frozen
    assert products == [((4, 6), (6, 3))]  # dW only: no dX
    assert torch.allclose(dw.torch(), x.torch().T @ torch.ones(6, 3))
    products.clear()
    dx, dw2 = ts.grad(lambda x, w: (ts.nn.linear(x, w) ** 2).sum(), argnums=(0, 1))(x, w)
    assert len(products) == 2 and dx.shape == (6, 4) and dw2.shape == (4, 3)
