"""A lowering that raises falls back to the reference with one warning, unless strict."""
import warnings

import pytest
import torch

import tessera as ts
from tessera.core.primitive import Lowering, registry


@pytest.fixture
def failing_cpu_kernel(monkeypatch):
    prim = registry["exp"]
    calls = []

    def kernel(x):
        calls.append(x.shape)
        raise RuntimeError("out of resources: shared memory, required: 300000\nsecond line")

    monkeypatch.setitem(prim.lowerings, "cpu", Lowering(kernel, None, "test kernel"))
    monkeypatch.setattr(prim, "_warned", set())
    return calls


def test_failing_kernel_falls_back_with_one_warning(cpu, failing_cpu_kernel, monkeypatch):
    monkeypatch.setenv("TESSERA_STRICT_KERNELS", "0")
    x = ts.randn(3, 4)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        y1, y2 = ts.exp(x), ts.exp(x)
    assert len(failing_cpu_kernel) == 2  # the kernel was tried both times
    assert torch.equal(y1.torch(), torch.exp(x.torch())) and torch.equal(y2.torch(), y1.torch())
    messages = [str(w.message) for w in seen if "failed on these inputs" in str(w.message)]
    assert len(messages) == 1
    assert "exp's cpu kernel (test kernel)" in messages[0] and "RuntimeError: out of resources" in messages[0]
    assert "second line" not in messages[0]


def test_strict_mode_raises_the_kernel_failure(cpu, failing_cpu_kernel, monkeypatch):
    monkeypatch.setenv("TESSERA_STRICT_KERNELS", "1")
    with pytest.raises(ts.TesseraError, match="exp failed: out of resources"):
        ts.exp(ts.randn(3, 4))
