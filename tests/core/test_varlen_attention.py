"""ts.nn.flash_attention_varlen: packed sequences against dense attention run on each sequence alone,
values and gradients, through the reference and through the kernels."""
import os

import pytest
import torch

import tessera as ts
from tessera.core.primitive import registry

T = ts.from_dlpack
LENGTHS_Q, LENGTHS_K = [5, 1, 17], [12, 3, 17]


def packed(lengths, heads, D, device, dtype):
    return torch.randn(sum(lengths), heads, D, device=device).to(dtype)


def offsets(lengths, device):
    return torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), dtype=torch.int32, device=device)


def dense_per_sequence(q, k, v, causal):
    """o and the gradients of sum(o * g) by float64 autograd of ts.nn.flash_attention, one sequence at a time."""
    cq, ck = offsets(LENGTHS_Q, "cpu").tolist(), offsets(LENGTHS_K, "cpu").tolist()
    leaves = [t.detach().double().cpu().requires_grad_() for t in (q, k, v)]
    outs = []
    for b in range(len(LENGTHS_Q)):
        qb, kb, vb = (t[lo:hi].transpose(0, 1)[None] for t, lo, hi in
                      ((leaves[0], cq[b], cq[b + 1]), (leaves[1], ck[b], ck[b + 1]), (leaves[2], ck[b], ck[b + 1])))
        outs.append(registry["flash_attention"].reference(qb, kb, vb, None, causal=causal, scale=None, dropout_p=0.0,
                                                          seed=0)[0][0].transpose(0, 1))
    return torch.cat(outs), leaves


def check(device, dtype, tol, causal=True):
    torch.manual_seed(3)
    q, k, v = packed(LENGTHS_Q, 4, 32, device, dtype), packed(LENGTHS_K, 2, 32, device, dtype), \
        packed(LENGTHS_K, 2, 32, device, dtype)
    g = torch.randn(q.shape, device=device)
    cu_q, cu_k = T(offsets(LENGTHS_Q, device)), T(offsets(LENGTHS_K, device))

    def loss(q, k, v):
        o = ts.nn.flash_attention_varlen(q, k, v, cu_q, cu_k, causal=causal)
        return (o.to(ts.f32) * T(g)).sum(), o

    grads, o = ts.grad(loss, argnums=(0, 1, 2), has_aux=True)(T(q), T(k), T(v))
    want, leaves = dense_per_sequence(q, k, v, causal)
    (want * g.double().cpu()).sum().backward()
    for got, ref in zip([o] + list(grads), [want] + [t.grad for t in leaves]):
        err = float((got.torch().double().cpu() - ref.detach()).norm() / ref.detach().norm())
        assert err < tol, err


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_matches_dense_attention_per_sequence(cpu, causal):
    check("cpu", torch.float32, 1e-5, causal)


def test_varlen_bad_input(cpu):
    q, cu = ts.randn(7, 2, 8), ts.tensor([0, 3, 7], dtype=ts.int32)
    with pytest.raises(ts.TesseraShapeError, match="q must be 3-D"):
        ts.nn.flash_attention_varlen(ts.randn(1, 7, 2, 8), q, q, cu)
    with pytest.raises(ts.TesseraDTypeError, match="cu_seqlens_q must be a 1-D integer tensor"):
        ts.nn.flash_attention_varlen(q, q, q, ts.tensor([0.0, 7.0]))
    with pytest.raises(ts.TesseraShapeError, match="cu_seqlens_q has 3 entries but cu_seqlens_k 2"):
        ts.nn.flash_attention_varlen(q, q, q, cu, ts.tensor([0, 7], dtype=ts.int32))
    with pytest.raises(ts.TesseraShapeError, match="multiple of k's"):
        ts.nn.flash_attention_varlen(q, ts.randn(7, 3, 8), ts.randn(7, 3, 8), cu)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="runs the kernels in the interpreter")
def test_varlen_through_the_kernels(cpu, monkeypatch):
    import tessera.kernels.lowerings as low

    assert low.register_all() == []
    calls = []
    for name in ("flash_attention_varlen", "flash_attention_varlen_bwd"):
        prim, fn = registry[name], registry[name].lowerings["cuda"].fn
        monkeypatch.setitem(prim.lowerings, "cpu", prim.lowerings["cuda"]._replace(
            fn=lambda *a, _fn=fn, _n=name, **k: (calls.append(_n), _fn(*a, **k))[1]))
    check("cpu", torch.float32, 1e-4)
    assert calls == ["flash_attention_varlen", "flash_attention_varlen_bwd"]


@pytest.mark.gpu
def test_varlen_on_gpu_bf16():
    check("cuda", torch.bfloat16, 2e-2)
