"""CUDA lowerings of linear cross-entropy, the add+norm backward and the rotary backward.

On the CPU the adapters run through Triton's interpreter against float64 references; the autodiff
paths run on the references and must give the gradients the two-pass math gave. On a GPU, ``ts.grad``
through ``ts.nn`` must reach the kernels and match float64 torch autograd.
"""
import os

import pytest
import torch

import tessera as ts
from tessera.core.dispatch import bind
from tessera.core.primitive import registry
from tessera.kernels.cross_entropy import cross_entropy_reference

interp = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                            reason="needs Triton's interpreter (CPU-only machines)")
W = ts.from_dlpack


def rel(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


@pytest.fixture(scope="module")
def lowerings():
    import tessera.kernels.lowerings as low

    assert low.register_all() == []
    return low


def lowering(name):
    low = registry[name].lowerings.get("cuda")
    assert low is not None, f"{name}: no CUDA lowering registered"
    return low


def spy_on(monkeypatch, name):
    """Replace the CUDA lowering of ``name`` by a wrapper that records the attrs and arity of each call."""
    low = lowering(name)
    calls = []

    def spy(*args, **attrs):
        calls.append((len(args), args[-1] is not None, attrs))
        return low.fn(*args, **attrs)

    monkeypatch.setitem(registry[name].lowerings, "cuda", low._replace(fn=spy))
    return calls


# ------------------------------------------------------------------ linear cross-entropy
def lce_inputs(N=37, D=48, V=1000, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, D, generator=g).to(device=device, dtype=dtype)
    w = (torch.randn(D, V, generator=g) / D ** 0.5).to(device=device, dtype=dtype)
    b = (torch.randn(V, generator=g) * 0.1).to(device=device, dtype=dtype)
    t = torch.randint(0, V, (N,), generator=g)
    t[::5] = -100
    return h, w, b, t.to(device)


@interp
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunk", [16, 4096])
def test_linear_cross_entropy_adapter_matches_float64_reference(lowerings, reduction, chunk):
    h, w, b, t = lce_inputs()
    attrs = dict(ignore_index=-100, label_smoothing=0.1, reduction=reduction, chunk=chunk, z_loss=1e-3)
    got = lowering("linear_cross_entropy").fn(h, w, b, t, **attrs)
    ref = registry["linear_cross_entropy"].reference(h.double(), w.double(), b.double(), t, **attrs)
    assert got[0].dtype == torch.float32 and got[1].dtype == got[2].dtype == got[3].dtype == torch.float32
    for name, g, r in zip(("loss", "dh", "dw", "db"), got, ref):
        assert tuple(g.shape) == tuple(r.shape), name
        assert rel(g, r) < 1e-5, (name, rel(g, r))


@interp
def test_linear_cross_entropy_adapter_without_bias_and_all_ignored(lowerings):
    h, w, _, t = lce_inputs(N=9, D=8, V=77)
    attrs = dict(ignore_index=-100, label_smoothing=0.0, reduction="mean", chunk=4, z_loss=0.0)
    loss, dh, dw, db = lowering("linear_cross_entropy").fn(h, w, None, torch.full_like(t, -100), **attrs)
    assert db is None
    assert float(loss) == 0.0 and not dh.any() and not dw.any()
    got = lowering("linear_cross_entropy").fn(h, w, None, t, **attrs)
    ref = registry["linear_cross_entropy"].reference(h.double(), w.double(), None, t, **attrs)
    assert all(rel(g, r) < 1e-5 for g, r in zip(got[:3], ref[:3]))


def test_linear_cross_entropy_supports_rejects_what_the_kernel_cannot_run(lowerings):
    h, w, b, t = lce_inputs(N=4, D=8, V=16)
    supports = lowering("linear_cross_entropy").supports
    attrs = dict(ignore_index=-100, label_smoothing=0.0, reduction="mean", chunk=4, z_loss=0.0)
    assert not supports(h, w, b, t, **attrs)  # CPU tensors
    assert not supports(h.double(), w.double(), None, t, **attrs)


def test_linear_cross_entropy_z_loss_through_ts_nn(cpu):
    h, w, b, t = lce_inputs(N=13, D=6, V=29, dtype=torch.float64)
    opts = dict(label_smoothing=0.05, z_loss=1e-2)
    f = lambda h, w, b: ts.nn.linear_cross_entropy(h, w, W(t), bias=b, chunk_size=4, **opts)  # noqa: E731
    loss, grads = ts.value_and_grad(f, argnums=(0, 1, 2))(W(h), W(w), W(b))
    hs, ws, bs = (x.clone().requires_grad_() for x in (h, w, b))
    ref = cross_entropy_reference(hs @ ws + bs, t, **opts)
    ref_grads = torch.autograd.grad(ref, (hs, ws, bs))
    assert abs(float(loss) - float(ref.detach())) < 1e-10
    without = ts.nn.linear_cross_entropy(W(h), W(w), W(t), bias=W(b), chunk_size=4, label_smoothing=0.05)
    assert float(loss) > float(without)  # z_loss adds a positive term
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g.torch(), r, atol=1e-10)


@pytest.mark.parametrize("bad, error, text", [
    (dict(z_loss=-1.0), ts.TesseraValueError, "z_loss"),
    (dict(label_smoothing=1.5), ts.TesseraValueError, "label_smoothing"),
    (dict(bias=W(torch.zeros(28))), ts.TesseraShapeError, "bias"),
    (dict(targets=W(torch.zeros(13))), ts.TesseraDTypeError, "targets.to"),
])
def test_linear_cross_entropy_bad_options_raise_typed_errors(cpu, bad, error, text):
    h, w, _, t = lce_inputs(N=13, D=6, V=29)
    targets = bad.pop("targets", W(t))
    with pytest.raises(error, match=text) as e:
        ts.nn.linear_cross_entropy(W(h), W(w), targets, **bad)
    assert "linear_cross_entropy" in str(e.value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_grad_through_linear_cross_entropy_bf16(monkeypatch):
    calls = spy_on(monkeypatch, "linear_cross_entropy")
    h, w, b, t = lce_inputs(N=300, D=64, V=5003, dtype=torch.bfloat16, device="cuda", seed=3)
    opts = dict(label_smoothing=0.1, z_loss=1e-4)
    f = lambda h, w, b: ts.nn.linear_cross_entropy(h, w, W(t), bias=b, chunk_size=128, **opts)  # noqa: E731
    loss, (dh, dw, db) = ts.value_and_grad(f, argnums=(0, 1, 2))(W(h), W(w), W(b))
    assert len(calls) == 1 and calls[0][2]["z_loss"] == 1e-4 and calls[0][2]["chunk"] == 128
    assert dh.dtype == dw.dtype == db.dtype == ts.bf16
    hs, ws, bs = (x.double().requires_grad_() for x in (h, w, b))
    ref = cross_entropy_reference(hs @ ws + bs, t, **opts)
    ref_grads = torch.autograd.grad(ref, (hs, ws, bs))
    assert abs(float(loss) - float(ref.detach())) / abs(float(ref.detach())) < 1e-2
    for g, r in zip((dh, dw, db), ref_grads):
        assert rel(g.torch(), r) < 1e-2


# ------------------------------------------------------------------ add + norm backward
def norm_bwd_args(kind, m, n, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(m, n, generator=g) * 2 + 0.5).double()
    wt, bs = torch.randn(n, generator=g).double(), torch.randn(n, generator=g).double()
    dy, ds = torch.randn(m, n, generator=g).double(), torch.randn(m, n, generator=g).double()
    if kind == "layer_norm":
        _, mean, rstd = registry["layer_norm"].reference(s, wt, bs, eps=1e-5)
        return dy, s, wt, bs, mean, rstd, ds
    _, rstd = registry["rms_norm"].reference(s, wt, eps=1e-6)
    return dy, s, wt, rstd, ds


@interp
@pytest.mark.parametrize("kind", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize("m,n", [(5, 37), (3, 5000)])
def test_norm_bwd_adapter_with_residual_cotangent(lowerings, kind, m, n):
    args64 = norm_bwd_args(kind, m, n)
    args32 = [a.float() for a in args64]
    name = kind + "_bwd"
    got = lowering(name).fn(*args32)
    ref = registry[name].reference(*args64)
    without = registry[name].reference(*args64[:-1])
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.dtype == torch.float32 and rel(g, r) < 1e-4, (name, rel(g, r))
    assert torch.allclose(ref[0] - without[0], args64[-1], atol=1e-12)  # ds is added into dx


def two_pass_grads(kind, x, r, w, b, gy, gs):
    """Gradients of sum(y * gy) + sum(s * gs) with s = x + r and y = norm(s), by the unfused ops."""
    def f(x, r, w, b):
        s = x + r
        y = ts.nn.layer_norm(s, w, b) if kind == "layer_norm" else ts.nn.rms_norm(s, w)
        return (y * gy).sum() + (s * gs).sum()

    return ts.grad(f, argnums=(0, 1, 2, 3))(x, r, w, b)


def fused_grads(kind, x, r, w, b, gy, gs):
    def f(x, r, w, b):
        y, s = ts.nn.add_layer_norm(x, r, w, b) if kind == "layer_norm" else ts.nn.add_rms_norm(x, r, w)
        return (y * gy).sum() + (s * gs).sum()

    return ts.grad(f, argnums=(0, 1, 2, 3))(x, r, w, b)


@pytest.mark.parametrize("kind", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize("dtype", [ts.f32, ts.bf16])
def test_add_norm_grads_equal_the_two_pass_math(cpu, kind, dtype):
    x, r, gy, gs = (ts.randn(3, 5, 37).to(dtype) for _ in range(4))
    w, b = ts.randn(37).to(dtype), ts.randn(37).to(dtype)
    fused, plain = fused_grads(kind, x, r, w, b, gy, gs), two_pass_grads(kind, x, r, w, b, gy, gs)
    for i, (a, p) in enumerate(zip(fused, plain)):
        if kind == "rms_norm" and i == 3:
            assert not p.torch().any()  # rms_norm has no bias
            continue
        assert torch.equal(a.torch(), p.torch()), (kind, i)


@pytest.mark.parametrize("kind", ["layer_norm", "rms_norm"])
def test_add_norm_grad_when_only_one_output_is_used(cpu, kind):
    x, r, gy = (ts.randn(4, 33, dtype=ts.f64) for _ in range(3))
    w = ts.randn(33, dtype=ts.f64)
    fn = ts.nn.add_layer_norm if kind == "layer_norm" else ts.nn.add_rms_norm
    norm = ts.nn.layer_norm if kind == "layer_norm" else ts.nn.rms_norm
    only_y = ts.grad(lambda x, w: (fn(x, r, w)[0] * gy).sum(), argnums=(0, 1))(x, w)  # s is freed before backward
    ref = ts.grad(lambda x, w: (norm(x + r, w) * gy).sum(), argnums=(0, 1))(x, w)
    for a, p in zip(only_y, ref):
        assert torch.allclose(a.torch(), p.torch(), atol=1e-12)
    only_s = ts.grad(lambda x: (fn(x, r, w)[1] * gy).sum())(x)
    assert torch.equal(only_s.torch(), gy.torch())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize("m,n", [(37, 1000), (4, 8192)])
def test_gpu_grad_through_add_norm_uses_fused_backward(monkeypatch, kind, m, n):
    calls = spy_on(monkeypatch, kind + "_bwd")
    g = torch.Generator(device="cuda").manual_seed(m + n)
    x, r, gy, gs = (torch.randn(m, n, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(4))
    w, b = (torch.randn(n, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(2))
    got = fused_grads(kind, W(x), W(r), W(w), W(b), W(gy), W(gs))
    assert calls and calls[-1][1], "the norm backward was not called with the residual cotangent"
    leaves = [t.double().requires_grad_() for t in (x, r, w, b)]
    s = leaves[0] + leaves[1]
    if kind == "layer_norm":
        y = torch.nn.functional.layer_norm(s, (n,), leaves[2], leaves[3], eps=1e-5)
    else:
        y = s * torch.rsqrt((s * s).mean(-1, keepdim=True) + 1e-6) * leaves[2]
    refs = torch.autograd.grad((y * gy.double()).sum() + (s * gs.double()).sum(), leaves, allow_unused=True)
    for i, (a, ref) in enumerate(zip(got, refs)):
        if ref is None:
            assert not a.torch().any()
            continue
        assert a.dtype == ts.bf16 and rel(a.torch(), ref) < 1e-2, (kind, i, rel(a.torch(), ref))


# ------------------------------------------------------------------ rotary
@interp
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("inverse", [False, True])
def test_rotary_adapter_reads_fp32_tables(lowerings, dtype, inverse):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 9, 20, generator=g).to(dtype)
    ang = torch.rand(9, 7, generator=g, dtype=torch.float64) * 6
    cos, sin = ang.cos(), ang.sin()
    got = lowering("rotary").fn(x, cos.float(), sin.float(), inverse=inverse)
    ref = registry["rotary"].reference(x.double(), cos, sin, inverse=inverse)
    assert got.dtype == dtype and rel(got, ref) < (1e-6 if dtype == torch.float32 else 1e-3)
    assert torch.equal(got[..., 14:], x[..., 14:])  # dims past 2R pass through


def test_rotary_inverse_undoes_the_rotation_and_its_vjp_matches_autograd(cpu):
    x = torch.randn(2, 5, 10, dtype=torch.float64)
    ang = torch.rand(5, 3, dtype=torch.float64) * 6
    cos, sin = ang.cos(), ang.sin()
    y = bind(registry["rotary"], W(x), W(cos), W(sin), inverse=False)
    back = bind(registry["rotary"], y, W(cos), W(sin), inverse=True)
    assert torch.allclose(back.torch(), x, atol=1e-12)
    ct = torch.randn(2, 5, 10, dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (x, cos, sin)]
    out = registry["rotary"].reference(*leaves, inverse=True)
    refs = torch.autograd.grad(out, leaves, ct)
    got = registry["rotary"].vjp([W(ct)], [W(x), W(cos), W(sin)], [None], inverse=True)
    for a, r in zip(got, refs):
        assert torch.allclose(a.torch(), r, atol=1e-12)


def test_rotary_embedding_keeps_fp32_tables(cpu, monkeypatch):
    prim = registry["rotary"]
    seen = []
    reference = prim.reference

    def spy(x, cos, sin, **attrs):
        seen.append((x.dtype, cos.dtype, sin.dtype))
        return reference(x, cos, sin, **attrs)

    monkeypatch.setattr(prim, "reference", spy)
    cos, sin = ts.nn.rope_frequencies(6, 16)
    x = ts.randn(2, 6, 16).to(ts.bf16)
    _, dcos = ts.grad(lambda x, c: (ts.nn.rotary_embedding(x, c, sin).to(ts.f32) ** 2).sum(), argnums=(0, 1))(x, cos)
    assert seen[0] == (torch.bfloat16, torch.float32, torch.float32)
    assert dcos.dtype == ts.f32 and dcos.shape == (6, 8)
    assert (torch.bfloat16, torch.float32, torch.float32) in seen[1:]  # the backward rotation too


def test_rotary_rejects_integer_tables(cpu):
    x = ts.randn(2, 4, 8)
    with pytest.raises(ts.TesseraDTypeError, match="rotary_embedding: cos must be a float tensor"):
        ts.nn.rotary_embedding(x, ts.ones(4, 4, dtype=ts.int32), ts.ones(4, 4))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_grad_through_rotary_uses_the_backward_kernel(monkeypatch):
    calls = spy_on(monkeypatch, "rotary")
    g = torch.Generator(device="cuda").manual_seed(5)
    x = torch.randn(2, 4, 37, 64, device="cuda", generator=g, dtype=torch.bfloat16)
    ct = torch.randn(2, 4, 37, 64, device="cuda", generator=g, dtype=torch.bfloat16)
    cos, sin = ts.nn.rope_frequencies(37, 64, device="cuda")
    dx = ts.grad(lambda x: (ts.nn.rotary_embedding(x, cos, sin) * W(ct)).sum())(W(x))
    assert [c[2]["inverse"] for c in calls] == [False, True]
    xs = x.double().requires_grad_()
    c, s = cos.torch().double(), sin.torch().double()
    out = torch.cat([xs[..., :32] * c - xs[..., 32:] * s, xs[..., 32:] * c + xs[..., :32] * s], -1)
    (ref,) = torch.autograd.grad(out, xs, ct.double())
    assert dx.dtype == ts.bf16 and rel(dx.torch(), ref) < 1e-2
