"""softmax / log_softmax kernels against float64 references (CPU: Triton interpreter)."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from tessera.errors import TesseraDTypeError, TesseraShapeError  # noqa: E402
from tessera.kernels import softmax as sm  # noqa: E402
from tessera.kernels.membound_reference import log_softmax_ref, softmax_ref  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
OPS = [(sm.softmax_fwd, sm.softmax_bwd, softmax_ref), (sm.log_softmax_fwd, sm.log_softmax_bwd, log_softmax_ref)]
TOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 1e-2}


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def check(fwd, bwd, ref, m, n, dtype, device, tol, lead=()):
    g = torch.Generator().manual_seed(m * 7 + n)
    x = (torch.randn(*lead, m, n, generator=g) * 4).to(dtype).to(device)
    dy = torch.randn(*lead, m, n, generator=g).to(dtype).to(device)
    y = fwd(x)
    xd = x.double().requires_grad_()
    r = ref(xd)
    r.backward(dy.double())
    assert y.shape == x.shape and y.dtype == dtype
    assert torch.isfinite(y).all()
    if r.norm() > 0:
        assert rel(y, r) < tol
    else:
        assert y.abs().max() < 1e-6
    dx = bwd(dy, y)
    assert (dx.double() - xd.grad).norm() <= tol * xd.grad.norm() + 1e-6


@pytest.mark.parametrize("m,n", [(1, 1), (3, 17), (37, 1000), (3, 5000)])
@pytest.mark.parametrize("op", OPS, ids=["softmax", "log_softmax"])
def test_fwd_bwd_fp32(m, n, op):
    check(*op, m, n, torch.float32, DEV, 1e-5)


@pytest.mark.parametrize("op", OPS, ids=["softmax", "log_softmax"])
def test_fp16_leading_dims(op):
    check(*op, 5, 300, torch.float16, DEV, 5e-3, lead=(2,))


def test_rows_sum_to_one_and_bad_input():
    y = sm.softmax_fwd(torch.randn(3, 5000).to(DEV) * 30)
    assert torch.allclose(y.sum(-1).double(), torch.ones(3, dtype=torch.float64, device=DEV), atol=1e-5)
    with pytest.raises(TesseraDTypeError, match="x"):
        sm.softmax_fwd(torch.ones(3, 4, dtype=torch.int32).to(DEV))
    with pytest.raises(TesseraShapeError, match="dy"):
        sm.softmax_bwd(torch.ones(3, 5).to(DEV), torch.ones(3, 4).to(DEV))
    assert sm.supports("softmax_fwd", torch.ones(2, 2).to(DEV)) and not sm.supports("softmax", torch.ones(2).to(DEV))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,n", [(37, 1000), (1024, 4096), (5, 8192), (3, 131072), (2049, 33)])
@pytest.mark.parametrize("op", OPS, ids=["softmax", "log_softmax"])
def test_gpu(dtype, m, n, op):
    check(*op, m, n, dtype, "cuda", TOL[dtype])
