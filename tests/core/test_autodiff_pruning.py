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
