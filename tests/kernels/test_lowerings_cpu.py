"""The adapters in tessera.kernels.lowerings, run on the CPU through Triton's interpreter: each
registered lowering must compute what its primitive's reference computes (same signature, same
outputs). On a GPU machine the registry sweep's GPU test covers the same ground."""
import os

import pytest
import torch

from tessera.core.primitive import registry

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                reason="needs Triton's interpreter (CPU-only machines)")


def R(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


VARLEN_ATTRS = {"causal": True, "scale": None, "max_seqlen_q": 9, "max_seqlen_k": 12}


SAMPLES = {
    "layer_norm": (lambda: (R(5, 37), R(37), R(37)), {"eps": 1e-5}),
    "layer_norm_bwd": (lambda: _ln_bwd_args(), {}),
    "rms_norm": (lambda: (R(5, 37), R(37)), {"eps": 1e-6}),
    "softmax": (lambda: (R(4, 300),), {"axis": 1, "log": False}),
    "softmax_bwd": (lambda: (R(4, 30), torch.softmax(R(4, 30), -1)), {"axis": -1, "log": False}),
    "activation": (lambda: (R(3, 50),), {"kind": "gelu_tanh"}),
    "activation_bwd": (lambda: (R(3, 50), R(3, 50)), {"kind": "silu"}),
    "dropout": (lambda: (R(3, 77),), {"p": 0.3, "seed": 5}),
    "swiglu": (lambda: (R(3, 50), R(3, 50)), {}),
    "swiglu_bwd": (lambda: (R(3, 50), R(3, 50), R(3, 50)), {}),
    "rotary": (lambda: (R(2, 3, 9, 16), R(9, 8), R(9, 8)), {}),
    "add_layer_norm": (lambda: (R(5, 37), R(5, 37), R(37), R(37)), {"eps": 1e-5}),
    "add_rms_norm": (lambda: (R(5, 37), R(5, 37), R(37), None), {"eps": 1e-6}),
    "take_grad": (lambda: (R(2, 3, 6), torch.randint(0, 9, (2, 3))), {"axis": 0, "size": 9}),
    "cross_entropy": (lambda: (R(6, 101), torch.randint(0, 101, (6,))),
                      {"ignore_index": -100, "label_smoothing": 0.1, "z_loss": 0.0, "reduction": "mean",
                       "compute_grad": True}),
    "cross_entropy_bwd": (lambda: (torch.tensor(2.0), R(6, 101)), {"reduction": "mean"}),
    "flash_attention": (lambda: (R(1, 2, 17, 32), R(1, 1, 20, 32), R(1, 1, 20, 32), None),
                        {"causal": True, "scale": None, "dropout_p": 0.0, "seed": 0}),
    "flash_attention_bwd": (lambda: _attn_bwd_args(), {"causal": True, "scale": 0.3, "dropout_p": 0.0, "seed": 0}),
    "flash_attention_varlen": (lambda: _fwd_of(_varlen_args()), VARLEN_ATTRS),
    "flash_attention_varlen_bwd": (lambda: _varlen_args(), VARLEN_ATTRS),
    "matmul": (lambda: (R(2, 17, 33), R(33, 19)), {"accum": None}),
    "scaled_linear": (lambda: _fp8_args(), {"out_dtype": __import__("tessera").f32}),
    "fp8_training_linear": (lambda: (R(3, 17, 32), R(32, 24), R(24)), {"out_dtype": __import__("tessera").f32}),
    "weight_only_linear": (lambda: _wo_args(), {"fmt": "fp4_e2m1", "group_size": 32, "k": 100, "n": 24}),
    "linear": (lambda: (R(3, 17, 33), R(33, 19), R(19)), {"activation": "gelu", "accum": None}),
}


def _wo_args():
    from tessera.quant import quantize

    qw = quantize(R(100, 24), "fp4_e2m1", group_size=32)
    return R(5, 100), qw.data, qw.scales, R(24)


def _fp8_args():
    x, w = R(3, 17, 32).to(torch.float8_e4m3fn), R(32, 24).to(torch.float8_e4m3fn)
    return x, w, torch.rand(3, 17, 1) + 0.5, torch.rand(1, 24) + 0.5, R(24)


def _attn_bwd_args():
    q, k, v = R(2, 3, 19, 32), R(2, 1, 23, 32), R(2, 1, 23, 32)
    pad = (torch.arange(23)[None, :] < torch.tensor([23, 9])[:, None]).view(2, 1, 1, 23)
    o, lse = registry["flash_attention"].reference(q, k, v, pad, causal=True, scale=0.3, dropout_p=0.0, seed=0)
    return R(2, 3, 19, 32), q, k, v, o, lse, pad


def _fwd_of(bwd_args):
    """The forward's inputs (q, k, v, cu_q, cu_k) among the backward's (do, q, k, v, o, lse, cu_q, cu_k)."""
    return bwd_args[1:4] + bwd_args[6:8]


def _varlen_args():
    """(do, q, k, v, o, lse, cu_q, cu_k): three sequences of 5 / 1 / 9 queries and 12 / 3 / 9 keys, GQA 4/2."""
    cu_q, cu_k = torch.tensor([0, 5, 6, 15], dtype=torch.int32), torch.tensor([0, 12, 15, 24], dtype=torch.int32)
    q, k, v = R(15, 4, 32), R(24, 2, 32), R(24, 2, 32)
    o, lse = registry["flash_attention_varlen"].reference(q, k, v, cu_q, cu_k, **VARLEN_ATTRS)
    return R(15, 4, 32), q, k, v, o, lse, cu_q, cu_k


def _ln_bwd_args():
    x, w, b = R(5, 37), R(37), R(37)
    _, mean, rstd = registry["layer_norm"].reference(x, w, b, eps=1e-5)
    return R(5, 37), x, w, b, mean, rstd


def _flat(out):
    return list(out) if isinstance(out, tuple) else [out]


@pytest.fixture(scope="module", autouse=True)
def lowerings():
    import tessera.kernels.lowerings as low

    assert low.register_all() == []
    return low


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_lowering_matches_reference_on_cpu(name):
    prim = registry[name]
    assert "cuda" in prim.lowerings, f"{name}: no lowering registered"
    torch.manual_seed(len(name))
    make, attrs = SAMPLES[name]
    args = make()
    got = _flat(prim.lowerings["cuda"].fn(*[a.clone() if isinstance(a, torch.Tensor) else a for a in args], **attrs))
    ref = _flat(prim.reference(*args, **attrs))
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        if r is None:
            continue
        assert g is not None and tuple(g.shape) == tuple(r.shape), name
        err = float((g.double() - r.double()).norm() / r.double().norm().clamp(min=1e-12))
        assert err < 1e-4, (name, err)
