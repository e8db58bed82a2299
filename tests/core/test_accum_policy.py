"""The fp16-accumulate precision policy from ``ts`` dtypes to Tessera's GEMM: parsed, carried to the
lowering as ``acc_dtype``, rejected before any launch where the kernels cannot honour it (bf16
operands), and visible in the numbers (fp16 partial sums lose precision over a long K)."""
import os

import pytest
import torch

import tessera as ts
import tessera.kernels.matmul as km
from tessera.core.primitive import registry
from tessera.errors import TesseraDTypeError
from tessera.kernels.matmul import api, gluon_ws

F16_ACC = ts.f16 @ ts.accum(ts.f16)
F16_F32 = ts.f16 @ ts.accum(ts.f32)
BF16_F16 = ts.bf16 @ ts.accum(ts.f16)
MATMUL, LINEAR = registry["matmul"], registry["linear"]

needs_interp = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                  reason="runs the kernels through Triton's interpreter (CPU-only machines)")


def rel(out, ref):
    return ((out.double() - ref).norm() / ref.norm()).item()


def T(t):
    return ts.from_dlpack(t)


@pytest.fixture(scope="module")
def lowerings():
    import tessera.kernels.lowerings as low

    assert low.register_all() == []
    return low


@pytest.fixture
def gemm_calls(monkeypatch):
    """Each call of the GEMM entry point the lowerings use, as its keyword arguments."""
    calls = []
    real = km.matmul
    monkeypatch.setattr(km, "matmul", lambda *a, **kw: (calls.append(kw), real(*a, **kw))[1])
    return calls


@pytest.fixture
def launches(monkeypatch):
    """Each kernel launch of the GEMM entry point, as (kernel, acc_f16 or None)."""
    calls = []
    for name in ("launch_tma", "launch_ptr", "launch_skinny"):
        def spy(*a, _real=getattr(api, name), _name=name[len("launch_"):], **kw):
            calls.append((_name, kw.get("acc_f16")))
            return _real(*a, **kw)
        monkeypatch.setattr(api, name, spy)
    real_gluon = gluon_ws.launch
    monkeypatch.setattr(gluon_ws, "launch", lambda *a, **kw: (calls.append(("gluon", None)), real_gluon(*a, **kw))[1])
    return calls


@pytest.fixture
def kernels_on_cpu(monkeypatch, lowerings):
    """ts ops on CPU tensors dispatch through the CUDA lowerings (the kernels run in the
    interpreter), at any size."""
    monkeypatch.setattr(lowerings, "_MIN_KERNEL_DIM", 1)
    for prim in (MATMUL, LINEAR):
        monkeypatch.setitem(prim.lowerings, "cpu", prim.lowerings["cuda"])


def test_policy_is_parsed():
    for policy, storage, acc in ((F16_ACC, ts.f16, ts.f16), (F16_F32, ts.f16, ts.f32), (BF16_F16, ts.bf16, ts.f16)):
        assert policy.storage is storage and policy.accum is acc and policy != storage
        assert policy.torch_dtype == storage.torch_dtype  # storage unchanged
    assert repr(F16_ACC) == "f16 @ accum(f16)" and F16_ACC == ts.f16 @ ts.accum(ts.f16) and F16_ACC != F16_F32
    assert ts.Tensor["M", "K", F16_ACC].dtype.accum is ts.f16
    with pytest.raises(TesseraDTypeError, match="precision policy"):
        ts.f16 @ ts.f16
    with pytest.raises(TesseraDTypeError, match="float dtype"):
        ts.accum(ts.int16)


def test_policy_reaches_the_primitive(cpu, monkeypatch, rng):
    """The policy a tensor carries (from either operand) is the ``accum`` attribute the matmul and
    linear primitives receive; without one it is None."""
    seen = []
    for prim in (MATMUL, LINEAR):
        def spy(*a, _prim=prim, _real=prim.reference, **attrs):
            seen.append((_prim.name, attrs["accum"]))
            return _real(*a, **attrs)
        monkeypatch.setattr(prim, "reference", spy)
    x = T(torch.randn(37, 72, generator=rng).half())
    w = T(torch.randn(72, 45, generator=rng).half())
    bias = T(torch.randn(45, generator=rng).half())
    ref = x.torch().double() @ w.torch().double()
    cases = [(lambda: x.to(F16_ACC) @ w, ts.f16), (lambda: x @ w.to(F16_ACC), ts.f16),
             (lambda: x.to(F16_ACC) @ w.to(F16_ACC), ts.f16), (lambda: x.to(F16_F32) @ w, ts.f32),
             (lambda: x @ w, None)]
    for run, accum in cases:
        seen.clear()
        out = run()
        assert seen == [("matmul", accum)] and rel(out.torch(), ref) < 5e-3
    seen.clear()
    out = ts.matmul(x.to(F16_ACC), w[:, 3])  # a vector operand takes the general path
    assert seen == [("matmul", ts.f16)] and rel(out.torch(), ref[:, 3]) < 5e-3
    seen.clear()
    out = ts.nn.linear(x.to(F16_ACC), w, bias)
    assert seen == [("linear", ts.f16)] and rel(out.torch(), ref + bias.torch().double()) < 5e-3


def test_lowerings_pass_the_policy_as_acc_dtype(lowerings, monkeypatch, rng):
    calls = []
    monkeypatch.setattr(km, "matmul", lambda a, b, **kw: calls.append(kw) or torch.zeros(a.shape[0], b.shape[1]))
    a, b, bias = torch.randn(5, 8, generator=rng).half(), torch.randn(8, 3, generator=rng).half(), torch.randn(3)
    for accum, want in ((ts.f16, torch.float16), (ts.f32, torch.float32), (None, torch.float32)):
        calls.clear()
        MATMUL.lowerings["cuda"].fn(a, b, accum=accum)
        LINEAR.lowerings["cuda"].fn(a, b, bias, activation="gelu", accum=accum)
        assert [c["acc_dtype"] for c in calls] == [want, want]
    assert calls[1]["activation"] == "gelu" and calls[1]["bias"] is bias and calls[1]["return_preact"]


@needs_interp
def test_f16_policy_runs_the_kernel_with_f16_accumulation(cpu, kernels_on_cpu, gemm_calls, launches, rng):
    """``ts.f16 @ ts.accum(ts.f16)`` reaches the TMA kernel as fp16 accumulation: over K=4104 its
    error against float64 is clearly larger than with ``ts.accum(ts.f32)``, and bounded."""
    M, N, K = 72, 40, 4104
    x = T(torch.randn(M, K, generator=rng).half())
    w = T(torch.randn(N, K, generator=rng).half().t())
    ref = x.torch().double() @ w.torch().double()
    e16 = rel((x.to(F16_ACC) @ w).torch(), ref)
    e32 = rel((x.to(F16_F32) @ w).torch(), ref)
    assert [c["acc_dtype"] for c in gemm_calls] == [torch.float16, torch.float32]
    assert launches == [("tma", True), ("tma", False)]
    assert e32 < 5e-4 and 3 * e32 < e16 < 1e-2, (e32, e16)
    out = ts.nn.linear(x[:, :200].to(F16_ACC), w[:200])
    assert gemm_calls[-1]["acc_dtype"] == torch.float16 and launches[-1] == ("tma", True)
    assert rel(out.torch(), x.torch()[:, :200].double() @ w.torch()[:200].double()) < 5e-3


@needs_interp
def test_bf16_with_f16_accumulation_is_rejected_before_any_launch(cpu, kernels_on_cpu, launches, rng):
    """The kernels accumulate bf16 products in fp32 only: the op's rule raises a typed error naming
    the accumulation dtype and the fix, and nothing launches."""
    x = T(torch.randn(37, 72, generator=rng).to(torch.bfloat16)).to(BF16_F16)
    w = T(torch.randn(72, 45, generator=rng).to(torch.bfloat16))
    fix = r"bf16 operands cannot accumulate in f16; use ts.bf16 @ ts.accum\(ts.f32\)"
    with pytest.raises(TesseraDTypeError, match=fix):
        x @ w
    with pytest.raises(TesseraDTypeError, match=fix):
        ts.nn.linear(x, w)
    assert launches == []


def test_bf16_with_f16_accumulation_is_rejected_on_the_reference_path(cpu, rng):
    x = T(torch.randn(37, 72, generator=rng).to(torch.bfloat16)).to(BF16_F16)
    w = T(torch.randn(72, 45, generator=rng).to(torch.bfloat16))
    with pytest.raises(TesseraDTypeError, match="matmul: bf16 operands cannot accumulate in f16"):
        x @ w


def test_annotated_policy_reaches_the_matmul(cpu, monkeypatch, rng):
    seen = []
    real = MATMUL.reference
    monkeypatch.setattr(MATMUL, "reference", lambda *a, **attrs: (seen.append(attrs["accum"]), real(*a, **attrs))[1])

    @ts.function
    def f(x: ts.Tensor["M", "K", F16_ACC], w: ts.Tensor["K", "N", ts.f16]):
        return x @ w

    f(T(torch.randn(37, 72, generator=rng).half()), T(torch.randn(72, 45, generator=rng).half()))
    assert seen == [ts.f16]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_f16_policy_accumulates_in_f16_on_tessera_kernel(gemm_calls, launches):
    """On the GPU: fp16 operands with ``ts.accum(ts.f16)`` run Tessera's kernel with fp16
    accumulation. Over K=8192 the fp16 partial sums make the error against float64 several times
    that of fp32 accumulation, but it stays bounded."""
    M, N, K = 1000, 776, 8192
    x = T(torch.randn(M, K, device="cuda").half())
    w = T(torch.randn(N, K, device="cuda").half().t())
    ref = x.torch().double() @ w.torch().double()
    e16 = rel((x.to(F16_ACC) @ w).torch(), ref)
    e32 = rel((x.to(F16_F32) @ w).torch(), ref)
    assert [c["acc_dtype"] for c in gemm_calls] == [torch.float16, torch.float32]
    assert launches[0] == ("tma", True) and launches[1][0] in ("tma", "gluon") and len(launches) == 2
    assert e32 < 5e-4 and 4 * e32 < e16 < 2e-2, (e32, e16)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_bf16_with_f16_accumulation_is_rejected_before_any_launch(launches):
    x = T(torch.randn(1000, 1024, device="cuda").to(torch.bfloat16)).to(BF16_F16)
    w = T(torch.randn(1024, 776, device="cuda").to(torch.bfloat16))
    with pytest.raises(TesseraDTypeError, match="bf16 operands cannot accumulate in f16"):
        x @ w
    with pytest.raises(TesseraDTypeError, match="bf16 operands cannot accumulate in f16"):
        ts.nn.linear(x, w)
    assert launches == []
    out = x.to(ts.bf16 @ ts.accum(ts.f32)) @ w  # the policy the kernels support runs on them
    assert len(launches) == 1 and launches[0][1] in (False, None)
    assert rel(out.torch(), x.torch().double() @ w.torch().double()) < 1e-2
