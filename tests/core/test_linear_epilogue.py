"""ts.nn.linear's fused epilogue: activation(x @ w + bias) + residual, stored as out_dtype —
values and gradients against float64, through the reference and through the GEMM kernels."""
import os

import pytest
import torch
import torch.nn.functional as F

import tessera as ts
from tessera.core.primitive import registry

LINEAR = registry["linear"]
T = ts.from_dlpack


def expected(x, w, b, r, act):
    """The same computation in float64 with torch autograd: (output, dx, dw, db, dr) for sum(out * g)."""
    xs = [t.detach().double().requires_grad_() for t in (x, w, b, r)]
    y = xs[0] @ xs[1] + xs[2]
    y = {"gelu": F.gelu, "silu": F.silu, None: lambda t: t}[act](y) + xs[3]
    return y, xs


def rel(got, want):
    return float((got.double().cpu() - want.detach().cpu()).norm() / want.detach().cpu().norm())


@pytest.mark.parametrize("act", [None, "gelu", "silu"])
@pytest.mark.parametrize("rshape", [(3, 7, 9), (9,)])
def test_linear_with_residual_and_cast(cpu, act, rshape):
    torch.manual_seed(0)
    x, w, b, r = torch.randn(3, 7, 16), torch.randn(16, 9), torch.randn(9), torch.randn(*rshape)
    g = torch.randn(3, 7, 9)
    y_ref, leaves = expected(x, w, b, r, act)
    (y_ref * g.double()).sum().backward()

    def loss(x, w, b, r):
        y = ts.nn.linear(x, w, b, activation=act, residual=r, out_dtype=ts.f64)
        return (y * T(g.double())).sum(), y

    (grads, y) = ts.grad(loss, argnums=(0, 1, 2, 3), has_aux=True)(T(x), T(w), T(b), T(r))
    assert y.dtype == ts.f64 and y.shape == (3, 7, 9)
    assert rel(y.torch(), y_ref) < 1e-6
    for got, leaf, like in zip(grads, leaves, (x, w, b, r)):
        assert got.dtype.torch_dtype == like.dtype and tuple(got.shape) == tuple(like.shape)
        assert rel(got.torch(), leaf.grad) < 1e-5


def test_linear_epilogue_bad_input(cpu):
    x, w = ts.randn(4, 8), ts.randn(8, 5)
    with pytest.raises(ts.TesseraShapeError, match=r"linear: residual has shape \(4, 6\) but the output is \(4, 5\)"):
        ts.nn.linear(x, w, residual=ts.randn(4, 6))
    with pytest.raises(ts.TesseraDTypeError, match="linear: out_dtype must be f32, f16 or bf16, got int32"):
        ts.nn.linear(x, w, out_dtype=ts.int32)
    with pytest.raises(ts.TesseraTypeError, match="residual"):
        ts.nn.linear(x, w, residual=torch.randn(4, 5))


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="runs the GEMM kernel in the interpreter")
def test_linear_epilogue_runs_in_the_kernel(cpu, monkeypatch):
    import tessera.kernels.lowerings as low
    import tessera.kernels.matmul as km

    assert low.register_all() == []
    monkeypatch.setattr(low, "_MIN_KERNEL_DIM", 1)
    monkeypatch.setitem(LINEAR.lowerings, "cpu", LINEAR.lowerings["cuda"])
    calls = []
    real = km.matmul
    monkeypatch.setattr(km, "matmul", lambda *a, **k: (calls.append(k), real(*a, **k))[1])
    torch.manual_seed(1)
    x, w, b, r = (torch.randn(37, 40).half(), torch.randn(40, 24).half(), torch.randn(24).half(),
                  torch.randn(37, 24).half())
    y = ts.nn.linear(T(x), T(w), T(b), activation="gelu", residual=T(r), out_dtype=ts.f32)
    y_ref, _ = expected(x, w, b, r, "gelu")
    assert len(calls) == 1 and calls[0]["residual"] is not None and calls[0]["out_dtype"] == torch.float32
    assert y.dtype == ts.f32 and rel(y.torch(), y_ref) < 2e-3


@pytest.mark.gpu
def test_linear_epilogue_on_gpu(monkeypatch):
    import tessera.kernels.matmul as km

    calls = []
    real = km.matmul
    monkeypatch.setattr(km, "matmul", lambda *a, **k: (calls.append(k), real(*a, **k))[1])
    torch.manual_seed(2)
    x = torch.randn(3, 300, 640, device="cuda").bfloat16()
    w = (torch.randn(640, 520, device="cuda") / 25).bfloat16()
    b, r = torch.randn(520, device="cuda").bfloat16(), torch.randn(3, 300, 520, device="cuda").bfloat16()
    g = torch.randn(3, 300, 520, device="cuda")
    y_ref, leaves = expected(x, w, b, r, "silu")
    (y_ref * g.double()).sum().backward()

    def loss(x, w, b, r):
        y = ts.nn.linear(x, w, b, activation="silu", residual=r, out_dtype=ts.f32)
        return (y * T(g)).sum(), y

    grads, y = ts.grad(loss, argnums=(0, 1, 2, 3), has_aux=True)(T(x), T(w), T(b), T(r))
    assert calls and calls[0]["residual"] is not None and calls[0]["out_dtype"] == torch.float32
    assert y.dtype == ts.f32 and rel(y.torch(), y_ref) < 1e-2
    for got, leaf in zip(grads, leaves):
        assert rel(got.torch(), leaf.grad) < 2e-2


def test_linear_epilogue_under_jit_with_symbolic_sizes(cpu):
    @ts.jit
    def f(x: ts.Tensor["B", "S", "D", ts.f32], w: ts.Tensor["D", "E", ts.f32], r: ts.Tensor["B", "S", "E", ts.f32]):
        return ts.nn.linear(x, w, activation="gelu", residual=r, out_dtype=ts.f64)

    w = ts.randn(4, 5)
    for B, S in ((2, 3), (3, 7)):  # one trace serves both sizes
        x, r = ts.randn(B, S, 4), ts.randn(B, S, 5)
        y = f(x, w, r)
        want, _ = expected(x.torch(), w.torch(), torch.zeros(5), r.torch(), "gelu")
        assert y.dtype == ts.f64 and y.shape == (B, S, 5) and rel(y.torch(), want) < 1e-6
