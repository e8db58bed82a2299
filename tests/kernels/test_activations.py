"""GELU / SiLU / SwiGLU kernels against float64 autograd references (CPU: Triton interpreter)."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from tessera.errors import TesseraShapeError, TesseraValueError  # noqa: E402
from tessera.kernels import activations as act  # noqa: E402
from tessera.kernels.membound_reference import gelu_ref, silu_ref, swiglu_ref  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 1e-2}
UNARY = [
    ("gelu", lambda x: act.gelu_fwd(x), lambda d, x: act.gelu_bwd(d, x), lambda x: gelu_ref(x)),
    ("gelu_tanh", lambda x: act.gelu_fwd(x, "tanh"), lambda d, x: act.gelu_bwd(d, x, "tanh"),
     lambda x: gelu_ref(x, "tanh")),
    ("silu", act.silu_fwd, act.silu_bwd, silu_ref),
]


def close(a, b, tol):
    """||a - b|| <= tol * ||b|| + 1e-6: relative, with an absolute floor for lone tail values
    (gelu(-5) ~ -3.6e-6 carries fp32's cancellation in 1 + erf)."""
    a, b = a.double(), b.double()
    return ((a - b).norm() <= tol * b.norm() + 1e-6).item()


def inputs(shape, dtype, device, k=3):
    g = torch.Generator().manual_seed(sum(shape) + k)
    return [(torch.randn(*shape, generator=g) * 3).to(dtype).to(device) for _ in range(k)]


def check_unary(fwd, bwd, ref, shape, dtype, device):
    x, dy, _ = inputs(shape, dtype, device)
    xd = x.double().requires_grad_()
    r = ref(xd)
    r.backward(dy.double())
    y = fwd(x)
    assert y.shape == x.shape and y.dtype == dtype
    assert close(y, r, TOL[dtype])
    assert close(bwd(dy, x), xd.grad, TOL[dtype] * (4 if dtype == torch.float32 else 1))


def check_swiglu(shape, dtype, device):
    gate, up, dy = inputs(shape, dtype, device)
    gd, ud = gate.double().requires_grad_(), up.double().requires_grad_()
    r = swiglu_ref(gd, ud)
    r.backward(dy.double())
    assert close(act.swiglu_fwd(gate, up), r, TOL[dtype])
    dg, du = act.swiglu_bwd(dy, gate, up)
    assert close(dg, gd.grad, TOL[dtype]) and close(du, ud.grad, TOL[dtype])


@pytest.mark.parametrize("shape", [(1,), (3, 17), (37, 1000), (5000,)])
@pytest.mark.parametrize("op", UNARY, ids=[u[0] for u in UNARY])
def test_unary_fp32(shape, op):
    check_unary(*op[1:], shape, torch.float32, DEV)


@pytest.mark.parametrize("op", UNARY, ids=[u[0] for u in UNARY])
def test_unary_fp16(op):
    check_unary(*op[1:], (3, 1000), torch.float16, DEV)


@pytest.mark.parametrize("shape,dtype", [((1,), torch.float32), ((37, 1000), torch.float32),
                                         ((3, 5000), torch.float16)])
def test_swiglu(shape, dtype):
    check_swiglu(shape, dtype, DEV)


def test_non_contiguous_and_bad_input():
    x = torch.randn(17, 40).to(DEV).t()
    assert close(act.silu_fwd(x), silu_ref(x.double()), 1e-5)
    with pytest.raises(TesseraValueError, match="approximate"):
        act.gelu_fwd(x, approximate="erf")
    with pytest.raises(TesseraShapeError, match="up"):
        act.swiglu_fwd(torch.randn(3, 4).to(DEV), torch.randn(3, 5).to(DEV))
    assert act.supports("gelu_fwd", x) and not act.supports("relu_fwd", x)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(4097, 1000), (1024, 4096), (3, 17)])
def test_gpu(dtype, shape):
    for _, fwd, bwd, ref in UNARY:
        check_unary(fwd, bwd, ref, shape, dtype, "cuda")
    check_swiglu(shape, dtype, "cuda")


def test_64bit_offset_path_agrees():
    x = torch.randn(3000).to(DEV)
    y = torch.empty_like(x)
    act._fwd_kernel[(3,)](x, y, x.numel(), KIND=act.SILU, BLOCK=1024, BIG=True)
    assert close(y, silu_ref(x.double()), 1e-5)
