"""The concrete tensor: creation, operators, indexing, reductions, interop — checked against torch/numpy."""
import numpy as np
import pytest
import torch

import tessera as ts


def test_creation_defaults(cpu):
    assert ts.randint(0, 50000, (2, 7)).dtype == ts.int32
    assert ts.randn(2, 3).dtype == ts.f32 and ts.randn(2, 3, dtype=ts.bf16).dtype == ts.bf16
    assert ts.zeros(2, 3).tolist() == [[0.0] * 3] * 2 and ts.ones((2,)).tolist() == [1.0, 1.0]
    assert ts.full((2,), 3).dtype == ts.int64 and ts.arange(5).tolist() == [0, 1, 2, 3, 4]
    assert ts.empty(3, 4).shape == (3, 4)
    x = ts.randn(4, 5, dtype=ts.f16)
    assert ts.ones_like(x).dtype == ts.f16 and ts.zeros_like(x).shape == (4, 5)
    ts.manual_seed(3)
    a = ts.randn(5)
    ts.manual_seed(3)
    assert ts.randn(5).tolist() == a.tolist()


def test_default_device_and_context():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert ts.device().type == expected
    with ts.device("cpu"):
        assert ts.zeros(2).device == ts.device("cpu")
    assert ts.ones(1).to("cpu").device.type == "cpu"


@pytest.mark.parametrize("shape_a, shape_b", [((3, 1, 5), (4, 1)), ((7,), (2, 7)), ((1,), (3, 3))])
def test_broadcast_arithmetic_matches_torch(cpu, shape_a, shape_b):
    a, b = torch.randn(shape_a), torch.randn(shape_b)
    A, B = ts.from_dlpack(a), ts.from_dlpack(b)
    for got, ref in [(A + B, a + b), (A - B, a - b), (A * B, a * b), (A / (B.abs() + 1), a / (b.abs() + 1)),
                     (2.0 - A, 2.0 - a), (A ** 2, a ** 2), (ts.maximum(A, B), torch.maximum(a, b)),
                     (A < B, a < b), (ts.where(A > 0, A, B), torch.where(a > 0, a, b))]:
        assert torch.equal(got.torch(), ref)


def test_matmul_variants(cpu):
    a, b = torch.randn(5, 2, 3), torch.randn(3, 4)
    assert torch.allclose((ts.from_dlpack(a) @ ts.from_dlpack(b)).torch(), a @ b)
    v = torch.randn(3)
    assert torch.allclose(ts.matmul(ts.from_dlpack(a), ts.from_dlpack(v)).torch(), a @ v)
    assert torch.allclose(ts.matmul(ts.from_dlpack(v), ts.from_dlpack(b)).torch(), v @ b)


def test_layout_methods(cpu):
    t = torch.randn(2, 3, 4)
    x = ts.from_dlpack(t)
    assert torch.equal(x.reshape(6, -1).torch(), t.reshape(6, -1))
    assert torch.equal(x.transpose(0, 2).torch(), t.transpose(0, 2))
    assert torch.equal(x.transpose().torch(), t.permute(2, 1, 0))
    assert torch.equal(x.permute(1, 0, 2).contiguous().torch(), t.permute(1, 0, 2))
    assert torch.equal(x[0].T.torch(), t[0].T)
    q, k, v = ts.split(ts.from_dlpack(torch.arange(12.).reshape(2, 6)), dim=-1, sections=3)
    assert q.tolist() == [[0.0, 1.0], [6.0, 7.0]] and v.tolist() == [[4.0, 5.0], [10.0, 11.0]]
    parts = ts.split(x, dim=1, sections=[1, 2])
    assert [p.shape for p in parts] == [(2, 1, 4), (2, 2, 4)]
    assert ts.stack([x, x], dim=1).shape == (2, 2, 3, 4)
    assert torch.equal(ts.cat([x, x], dim=-1).torch(), torch.cat([t, t], -1))


@pytest.mark.parametrize("index", [(0, slice(None, 3)), (Ellipsis, 1), (slice(1, None), None, slice(None, None, 2)),
                                   (-1, -2), (slice(-3, -1),)])
def test_indexing_matches_torch(cpu, index):
    t = torch.randn(4, 5, 6)
    assert torch.equal(ts.from_dlpack(t)[index].torch(), t[index])


def test_tensor_index_gathers(cpu):
    t = torch.randn(5, 3)
    idx = torch.tensor([[4, 0], [1, 1]])
    assert torch.equal(ts.from_dlpack(t)[ts.from_dlpack(idx)].torch(), t[idx])
    assert torch.equal(ts.from_dlpack(t)[:, ts.from_dlpack(torch.tensor([2, 0]))].torch(), t[:, [2, 0]])


def test_reductions(cpu):
    t = torch.randn(3, 4, 5)
    x = ts.from_dlpack(t)
    assert torch.allclose(x.sum().torch(), t.sum())
    assert torch.allclose(x.mean(dim=(0, 2)).torch(), t.mean(dim=(0, 2)))
    assert torch.equal(x.max(dim=1).torch(), t.amax(dim=1))
    assert torch.equal(x.min(dim=-1, keepdim=True).torch(), t.amin(dim=-1, keepdim=True))
    assert torch.equal(x.argmax(dim=2).torch(), t.argmax(dim=2))
    assert int(x.argmax()) == int(t.argmax())


def test_unary_math(cpu):
    t = torch.rand(10) + 0.1
    x = ts.from_dlpack(t)
    for f, g in [(ts.exp, torch.exp), (ts.log, torch.log), (ts.sqrt, torch.sqrt), (ts.rsqrt, torch.rsqrt),
                 (ts.tanh, torch.tanh), (ts.erf, torch.erf), (ts.abs, torch.abs)]:
        assert torch.allclose(f(x).torch(), g(t))
    assert torch.equal(ts.minimum(x, 0.5).torch(), torch.clamp(t, max=0.5))


def test_dtype_conversion_and_promotion(cpu):
    x = ts.tensor([1.5, -2.25])
    assert x.to(ts.bf16).dtype == ts.bf16 and (x.to(ts.bf16) + x.to(ts.f16)).dtype == ts.f32
    assert (ts.tensor([1, 2], dtype=ts.int32) * 2.5).dtype == ts.f32
    assert (x.to(ts.bf16) * 2.0).dtype == ts.bf16


def test_interop(cpu):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    x = ts.from_dlpack(a)
    a[0, 0] = 42.0
    assert x[0, 0].item() == 42.0  # zero-copy
    t = torch.from_dlpack(x)
    assert t.data_ptr() == x.torch().data_ptr()
    assert np.array_equal(x.numpy(), a)
    assert f"{x.sum():.2f}" == f"{a.sum():.2f}"
    assert repr(ts.tensor([1.0])).startswith("ts.Tensor([1.], dtype=f32, device=cpu")
    assert x.to(ts.bf16).numpy().dtype.name == "bfloat16"


def test_narrow_float_roundtrip_matches_ml_dtypes(cpu):
    import ml_dtypes

    values = np.linspace(-8, 8, 101).astype(np.float32)
    for fmt, np_type in [(ts.fp4_e2m1, ml_dtypes.float4_e2m1fn), (ts.fp6_e2m3, ml_dtypes.float6_e2m3fn),
                         (ts.fp6_e3m2, ml_dtypes.float6_e3m2fn), (ts.fp8_e4m3, ml_dtypes.float8_e4m3fn),
                         (ts.fp8_e5m2, ml_dtypes.float8_e5m2)]:
        q = ts.tensor(values).to(fmt)
        assert q.dtype == fmt
        expected = values.astype(np_type).astype(np.float32)
        assert np.array_equal(q.to(ts.f32).numpy(), expected), fmt
        assert np.array_equal(q.numpy().astype(np.float32), expected)


def test_memory_counters(cpu):
    ts.memory.reset_peak()
    before = ts.memory.get_memory_usage()
    big = ts.zeros(1024, 1024)
    assert ts.memory.get_memory_usage() - before >= 4 * 1024 * 1024 / 1e9 - 1e-9
    del big
    assert ts.memory.max_memory_usage() >= before + 4 * 1024 * 1024 / 1e9 - 1e-9


def test_dlpack_with_jax():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    a = jnp.arange(6, dtype=jnp.float32).reshape(2, 3)
    x = ts.from_dlpack(a)
    assert x.shape == (2, 3) and x.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    back = jnp.from_dlpack(ts.ones(3, device=x.device) * 2.0)
    assert back.tolist() == [2.0, 2.0, 2.0]
