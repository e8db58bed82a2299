"""One sweep over every registered primitive: shape rule vs reference, VJP vs finite differences."""
import math

import pytest
import torch

import tessera as ts
from tessera.core.dispatch import aval_of, bind
from tessera.core.primitive import registry
from tessera.types.dims import Dim


def T(*shape, dtype=torch.float64, positive=False, gen=None):
    t = torch.randn(*shape, dtype=dtype, generator=gen)
    if positive:
        t = t.abs() + 0.5
    return ts.from_dlpack(t)


def I(high, *shape):
    return ts.from_dlpack(torch.randint(0, high, shape))


def B(*shape):
    return ts.from_dlpack(torch.rand(*shape) > 0.3)


# name -> (args factory, attrs); awkward sizes on purpose
SAMPLES = {
    "neg": (lambda: (T(3, 5),), {}),
    "exp": (lambda: (T(3, 5),), {}),
    "log": (lambda: (T(3, 5, positive=True),), {}),
    "sqrt": (lambda: (T(4, positive=True),), {}),
    "rsqrt": (lambda: (T(4, positive=True),), {}),
    "tanh": (lambda: (T(2, 3),), {}),
    "erf": (lambda: (T(2, 3),), {}),
    "sin": (lambda: (T(7),), {}),
    "cos": (lambda: (T(7),), {}),
    "sigmoid": (lambda: (T(7),), {}),
    "abs": (lambda: (T(7),), {}),
    "sign": (lambda: (T(7),), {}),
    "logical_not": (lambda: (B(3),), {}),
    "add": (lambda: (T(3, 1, 5), T(4, 1)), {}),
    "sub": (lambda: (T(3, 5), T(5)), {}),
    "mul": (lambda: (T(2, 3), 1.5), {}),
    "div": (lambda: (T(3, 5), T(3, 1, positive=True)), {}),
    "pow": (lambda: (T(3, 4, positive=True), T(4)), {}),
    "maximum": (lambda: (T(3, 4), T(4)), {}),
    "minimum": (lambda: (T(3, 4), T(3, 1)), {}),
    "equal": (lambda: (T(3), T(3)), {}),
    "not_equal": (lambda: (T(3), T(3)), {}),
    "less": (lambda: (T(3), T(3)), {}),
    "less_equal": (lambda: (T(3), 0.0), {}),
    "greater": (lambda: (T(3), T(1)), {}),
    "greater_equal": (lambda: (T(3), T(3)), {}),
    "logical_and": (lambda: (B(3), B(3)), {}),
    "logical_or": (lambda: (B(3), B(2, 3)), {}),
    "where": (lambda: (B(3, 4), T(3, 4), T(4)), {}),
    "cast": (lambda: (T(3, 2),), {"dtype": ts.f64, "source": ts.f64}),
    "sum": (lambda: (T(3, 4, 5),), {"axes": (0, 2), "keepdim": False}),
    "max": (lambda: (T(3, 4, 5),), {"axes": (1,), "keepdim": True}),
    "min": (lambda: (T(3, 4),), {"axes": (0, 1), "keepdim": False}),
    "argmax": (lambda: (T(3, 4),), {"axes": (1,), "keepdim": False}),
    "argmin": (lambda: (T(3, 4),), {"axes": (0,), "keepdim": True}),
    "reshape": (lambda: (T(3, 4),), {"shape": (2, 6)}),
    "permute": (lambda: (T(2, 3, 4),), {"perm": (2, 0, 1)}),
    "contiguous": (lambda: (T(2, 3),), {}),
    "broadcast_to": (lambda: (T(3, 1),), {"shape": (2, 3, 5)}),
    "slice": (lambda: (T(7, 6),), {"starts": (1, 0), "stops": (6, 5), "steps": (2, 1)}),
    "slice_grad": (lambda: (T(3, 5),), {"shape": (7, 6), "starts": (1, 0), "stops": (6, 5), "steps": (2, 1)}),
    "take": (lambda: (T(5, 3), I(5, 2, 4)), {"axis": 0}),
    "basic_index": (lambda: (T(4, 5, 6),), {"index": (1, slice(None, None, 2), None, Ellipsis)}),
    "basic_index_grad": (lambda: (T(3, 1, 6),), {"shape": (4, 5, 6), "index": (1, slice(None, None, 2), None, Ellipsis)}),
    "take_grad": (lambda: (T(2, 4, 3), I(5, 2, 4)), {"axis": 0, "size": 5}),
    "concatenate": (lambda: (T(2, 3), T(4, 3)), {"axis": 0}),
    "matmul": (lambda: (T(2, 3, 4), T(4, 5)), {"accum": None}),
    "linear": (lambda: (T(2, 3, 4), T(4, 5), T(5)), {"activation": "gelu_tanh", "accum": None}),
    "full": (lambda: (), {"shape": (2, 3), "value": 1.5, "dtype": ts.f64, "device": "cpu"}),
    "dim_value": (lambda: (), {"dim": 7, "dtype": ts.f64, "device": "cpu"}),
    "arange": (lambda: (), {"start": 2, "stop": 11, "step": 3, "dtype": ts.int64, "device": "cpu"}),
    "to_device": (lambda: (T(3),), {"device": "cpu"}),
    "layer_norm": (lambda: (T(3, 7), T(7), T(7)), {"eps": 1e-5}),
    "layer_norm_bwd": (lambda: (T(3, 7), T(3, 7), T(7), T(7), T(3), T(3, positive=True)), {}),
    "rms_norm": (lambda: (T(3, 7), T(7)), {"eps": 1e-6}),
    "rms_norm_bwd": (lambda: (T(3, 7), T(3, 7), T(7), T(3, positive=True)), {}),
    "softmax": (lambda: (T(3, 7),), {"axis": 1, "log": False}),
    "softmax_bwd": (lambda: (T(3, 7), T(3, 7)), {"axis": 1, "log": True}),
    "activation": (lambda: (T(3, 7),), {"kind": "gelu"}),
    "activation_bwd": (lambda: (T(3, 7), T(3, 7)), {"kind": "silu"}),
    "dropout": (lambda: (T(5, 9),), {"p": 0.3, "seed": 11}),
    "cross_entropy": (lambda: (T(2, 3, 11), I(11, 2, 3)),
                      {"ignore_index": -100, "label_smoothing": 0.1, "z_loss": 0.01, "reduction": "mean",
                       "compute_grad": True}),
    "cross_entropy_bwd": (lambda: (T(4), T(4, 6)), {"reduction": "none"}),
    "quantize_fp8": (lambda: (T(3, 7), None), {"dtype": ts.fp8_e4m3, "axis": -1}),
    "scaled_linear": (lambda: _fp8_args(), {"out_dtype": ts.bf16}),
    "fp8_training_linear": (lambda: (T(2, 5, 16), T(16, 9), T(9)), {"out_dtype": ts.f32}),
    "weight_only_linear": (lambda: _wo_args(), {"fmt": "fp6_e2m3", "group_size": 32, "k": 40, "n": 6}),
    "swiglu": (lambda: (T(3, 7), T(3, 7)), {}),
    "swiglu_bwd": (lambda: (T(3, 7), T(3, 7), T(3, 7)), {}),
    "rotary": (lambda: (T(2, 5, 10), T(5, 3), T(5, 3)), {}),
    "add_layer_norm": (lambda: (T(3, 7), T(3, 7), T(7), T(7)), {"eps": 1e-5}),
    "add_rms_norm": (lambda: (T(3, 7), T(3, 7), T(7), None), {"eps": 1e-6}),
    "linear_cross_entropy": (lambda: (T(7, 5), T(5, 9), T(9), I(9, 7)),
                             {"ignore_index": -100, "label_smoothing": 0.1, "reduction": "mean", "chunk": 3}),
    "flash_attention": (lambda: (T(1, 4, 5, 8), T(1, 2, 7, 8), T(1, 2, 7, 8), B(1, 1, 5, 7)),
                        {"causal": True, "scale": None, "dropout_p": 0.0, "seed": 0}),
    "flash_attention_bwd": (lambda: _attn_bwd_args(), {"causal": False, "scale": 0.3, "dropout_p": 0.0, "seed": 0}),
    "flash_attention_varlen": (lambda: (T(5, 2, 8), T(7, 1, 8), T(7, 1, 8), I32([0, 2, 5]), I32([0, 4, 7])),
                               {"causal": True, "scale": None, "max_seqlen_q": 3, "max_seqlen_k": 4}),
    "flash_attention_varlen_bwd": (lambda: _varlen_bwd_args(), {"causal": True, "scale": None, "max_seqlen_q": 3,
                                                                "max_seqlen_k": 4}),
}


def _wo_args():
    from tessera.quant import quantize

    qw = quantize(torch.randn(40, 6), "fp6_e2m3", group_size=32)
    return T(3, 40), ts.from_dlpack(qw.data), ts.from_dlpack(qw.scales), T(6)


def _fp8_args():
    x, sx = ts.quantize_fp8(T(2, 5, 16), axis=-1)
    w, sw = ts.quantize_fp8(T(16, 9), axis=0)
    return x, w, sx, sw, T(9, dtype=torch.float32)


def _attn_bwd_args():
    q, k, v = T(1, 2, 4, 8), T(1, 1, 6, 8), T(1, 1, 6, 8)
    o, lse = registry["flash_attention"].reference(q.torch(), k.torch(), v.torch(), None, causal=False, scale=0.3,
                                                   dropout_p=0.0, seed=0)
    return T(1, 2, 4, 8), q, k, v, ts.from_dlpack(o), ts.from_dlpack(lse), None


def I32(values, device="cpu"):
    return ts.from_dlpack(torch.tensor(values, dtype=torch.int32, device=device))


def _varlen_bwd_args():
    q, k, v, cu_q, cu_k = T(5, 2, 8), T(7, 1, 8), T(7, 1, 8), I32([0, 2, 5]), I32([0, 4, 7])
    o, lse = registry["flash_attention_varlen"].reference(q.torch(), k.torch(), v.torch(), cu_q.torch(), cu_k.torch(),
                                                          causal=True, scale=None, max_seqlen_q=3, max_seqlen_k=4)
    return T(5, 2, 8), q, k, v, ts.from_dlpack(o), ts.from_dlpack(lse), cu_q, cu_k


def test_every_primitive_has_a_sample():
    missing = sorted(set(registry) - set(SAMPLES))
    assert not missing, f"add samples for {missing}"


def _flat(out):
    from tessera.core.primitive import Aval

    return list(out) if isinstance(out, tuple) and not isinstance(out, Aval) else [out]


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_shape_rule_matches_reference(name):
    prim = registry[name]
    make, attrs = SAMPLES[name]
    args = make()
    avals = [aval_of(a) for a in args]
    expected = _flat(prim.shape(*avals, **attrs))
    got = _flat(prim.reference(*[a.torch() if isinstance(a, ts.Tensor) else a for a in args], **attrs))
    assert len(expected) == len(got)
    for e, g in zip(expected, got):
        if g is None:
            continue
        assert tuple(int(d) for d in e.shape) == tuple(g.shape), name
        assert e.dtype.torch_dtype == g.dtype, (name, e.dtype, g.dtype)


def _differentiable_outputs(prim, out):
    outs = _flat(out)
    return [i for i, o in enumerate(outs) if o is not None and i not in prim.nondiff_outputs and o.dtype.is_floating]


# piecewise constant (quantised operands): its straight-through gradient is checked in test_fp8_training.py
NOT_SMOOTH = {"fp8_training_linear"}


@pytest.mark.parametrize("name", sorted(n for n in SAMPLES if registry[n].differentiable and n not in NOT_SMOOTH))
def test_vjp_matches_finite_differences(name):
    prim = registry[name]
    make, attrs = SAMPLES[name]
    torch.manual_seed(hash(name) % 1000)
    args = make()
    out = bind(prim, *args, **attrs)
    idx = _differentiable_outputs(prim, out)
    if not idx:
        pytest.skip("no float outputs")
    outs = _flat(out)
    cts = [ts.from_dlpack(torch.randn(o.shape, dtype=torch.float64)) if i in idx else None
           for i, o in enumerate(outs)]
    in_cts = prim.vjp(cts, args, outs, **attrs)

    def objective(xs):
        o = _flat(prim.reference(*xs, **attrs))
        return sum(float((o[i].double() * cts[i].torch()).sum()) for i in idx)

    base = [a.torch().clone() if isinstance(a, ts.Tensor) else a for a in args]
    eps = 1e-6
    checked = 0
    for k, a in enumerate(args):
        if not (isinstance(a, ts.Tensor) and a.dtype.is_floating) or in_cts[k] is None:
            continue
        if name == "layer_norm_bwd" and k >= 4 or name == "rms_norm_bwd" and k == 3 \
                or name == "flash_attention_bwd" and k in (4, 5):
            continue  # saved statistics: not independent inputs
        flat = base[k].reshape(-1)
        fd = torch.zeros_like(flat)
        for j in range(flat.numel()):
            plus = [b.clone() if isinstance(b, torch.Tensor) else b for b in base]
            minus = [b.clone() if isinstance(b, torch.Tensor) else b for b in base]
            plus[k].reshape(-1)[j] += eps
            minus[k].reshape(-1)[j] -= eps
            fd[j] = (objective(plus) - objective(minus)) / (2 * eps)
        got = in_cts[k].torch().reshape(-1).double()
        assert torch.allclose(got, fd, rtol=1e-4, atol=1e-6), (name, k, (got - fd).abs().max())
        checked += 1
    assert checked, f"{name}: no input was checked"


VARLEN_GPU_ATTRS = {"causal": True, "scale": None, "max_seqlen_q": 1000, "max_seqlen_k": 1200}


GPU_SAMPLES = {  # larger, awkward sizes where a kernel has a lowering; (factory, attrs)
    # the GEMM kernel is routed to at sizes >= 512 (cuBLAS below); awkward sizes above that
    "matmul": (lambda: (G(3, 577, 640), G(640, 515)), {"accum": None}),
    "linear": (lambda: (G(5, 133, 544), G(544, 600), G(600)), {"activation": "gelu", "accum": None}),
    "layer_norm": (lambda: (G(37, 1000), G(1000), G(1000)), {"eps": 1e-5}),
    "rms_norm": (lambda: (G(37, 5000), G(5000)), {"eps": 1e-6}),
    "softmax": (lambda: (G(13, 3001),), {"axis": 1, "log": False}),
    "activation": (lambda: (G(7, 1000),), {"kind": "gelu_tanh"}),
    "dropout": (lambda: (G(7, 1000),), {"p": 0.2, "seed": 3}),
    "swiglu": (lambda: (G(7, 1000), G(7, 1000)), {}),
    "swiglu_bwd": (lambda: (G(7, 1000), G(7, 1000), G(7, 1000)), {}),
    "rotary": (lambda: (G(2, 3, 37, 64), G(37, 32, dtype=torch.float32), G(37, 32, dtype=torch.float32)), {}),
    "weight_only_linear": (lambda: _wo_gpu_args(), {"fmt": "fp4_e2m1", "group_size": 32, "k": 1000, "n": 520}),
    "scaled_linear": (lambda: (G(3, 177, 256).to(ts.fp8_e4m3), G(256, 320).to(ts.fp8_e4m3),
                               ts.from_dlpack(torch.rand(3, 177, 1, device="cuda") + 0.5),
                               ts.from_dlpack(torch.rand(1, 320, device="cuda") + 0.5), None), {"out_dtype": ts.bf16}),
    "fp8_training_linear": (lambda: (G(3, 177, 256), G(256, 320), G(320)), {"out_dtype": ts.bf16}),
    "add_layer_norm": (lambda: (G(37, 1000), G(37, 1000), G(1000), G(1000)), {"eps": 1e-5}),
    "add_rms_norm": (lambda: (G(37, 1000), G(37, 1000), G(1000), None), {"eps": 1e-6}),
    "flash_attention": (lambda: (G(2, 4, 97, 64), G(2, 2, 130, 64), G(2, 2, 130, 64), None),
                        {"causal": True, "scale": None, "dropout_p": 0.0, "seed": 0}),
    "flash_attention_bwd": (lambda: _attn_bwd_gpu_args(), {"causal": True, "scale": None, "dropout_p": 0.0, "seed": 0}),
    "flash_attention_varlen": (lambda: _fwd_of(_varlen_gpu_args()), VARLEN_GPU_ATTRS),
    "flash_attention_varlen_bwd": (lambda: _varlen_gpu_args(), VARLEN_GPU_ATTRS),
    "cross_entropy": (lambda: (G(33, 5000), ts.from_dlpack(torch.randint(0, 5000, (33,), device="cuda"))),
                      {"ignore_index": -100, "label_smoothing": 0.0, "z_loss": 0.0, "reduction": "mean",
                       "compute_grad": True}),
}


def _wo_gpu_args():
    from tessera.quant import quantize

    qw = quantize(torch.randn(1000, 520, device="cuda"), "fp4_e2m1", group_size=32)
    return G(7, 1000), ts.from_dlpack(qw.data), ts.from_dlpack(qw.scales), None


def _attn_bwd_gpu_args():
    q, k, v = G(3, 6, 97, 64), G(3, 2, 130, 64), G(3, 2, 130, 64)
    pad = (torch.arange(130, device="cuda")[None, :] < torch.tensor([130, 77, 1], device="cuda")[:, None])
    pad = ts.from_dlpack(pad.view(3, 1, 1, 130))
    o, lse = registry["flash_attention"].reference(q.torch(), k.torch(), v.torch(), pad.torch(), causal=True,
                                                   scale=None, dropout_p=0.0, seed=0)
    return G(3, 6, 97, 64), q, k, v, ts.from_dlpack(o), ts.from_dlpack(lse), pad


def _fwd_of(bwd_args):
    """The forward's inputs (q, k, v, cu_q, cu_k) among the backward's (do, q, k, v, o, lse, cu_q, cu_k)."""
    return bwd_args[1:4] + bwd_args[6:8]


def _varlen_gpu_args():
    """Sequences of 1000 / 1 / 317 queries against 1200 / 77 / 317 keys, GQA 6/2, d64."""
    cu_q, cu_k = I32([0, 1000, 1001, 1318], "cuda"), I32([0, 1200, 1277, 1594], "cuda")
    q, k, v = G(1318, 6, 64), G(1594, 2, 64), G(1594, 2, 64)
    o, lse = registry["flash_attention_varlen"].reference(q.torch(), k.torch(), v.torch(), cu_q.torch(),
                                                          cu_k.torch(), **VARLEN_GPU_ATTRS)
    return G(1318, 6, 64), q, k, v, ts.from_dlpack(o), ts.from_dlpack(lse), cu_q, cu_k


def G(*shape, dtype=torch.bfloat16):
    return ts.from_dlpack(torch.randn(*shape, device="cuda").to(dtype))


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(GPU_SAMPLES))
def test_cuda_lowering_matches_reference(name):
    prim = registry[name]
    assert "cuda" in prim.lowerings, f"{name} has no CUDA lowering registered"
    make, attrs = GPU_SAMPLES[name]
    args = [a.torch() if isinstance(a, ts.Tensor) else a for a in make()]
    low = prim.lowerings["cuda"]
    assert low.supports is None or low.supports(*args, **attrs)
    got, ref = _flat(low.fn(*args, **attrs)), _flat(prim.reference(*args, **attrs))
    for g, r in zip(got, ref):
        if g is None or r is None:
            continue
        g, r = g.double(), r.double()
        finite = torch.isfinite(r)
        assert torch.equal(finite, torch.isfinite(g)), name
        err = (g[finite] - r[finite]).norm() / r[finite].norm().clamp(min=1e-12)
        assert err < 1e-2, (name, float(err))


def test_unsupported_inputs_fall_back_to_the_reference_with_one_warning(monkeypatch):
    import warnings

    import tessera.kernels.lowerings  # noqa: F401  (registers the CUDA lowerings, on any machine)

    prim = registry["flash_attention"]
    low = prim.lowerings["cuda"]
    asked = []
    monkeypatch.setitem(prim.lowerings, "cuda", low._replace(supports=lambda *a, **k: asked.append(a) or False))
    monkeypatch.setattr(prim, "_warned", set())
    make, attrs = SAMPLES["flash_attention"]
    args = [a.torch() if isinstance(a, ts.Tensor) else a for a in make()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        impls = [prim.implementation("cuda", args, attrs) for _ in range(2)]
    assert len(asked) == 2
    assert impls == [prim.reference, prim.reference]
    assert len(caught) == 1
    assert "flash_attention on cuda falls back" in str(caught[0].message)
    assert "flash_attention_fwd" in str(caught[0].message)
