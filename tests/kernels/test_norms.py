"""layer_norm / rms_norm / add+norm kernels against float64 references (CPU: Triton interpreter)."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from tessera.errors import TesseraDeviceError, TesseraDTypeError, TesseraShapeError, TesseraValueError  # noqa: E402
from tessera.kernels import norms  # noqa: E402
from tessera.kernels._membound import max_fused_cols  # noqa: E402
from tessera.kernels.norms.reference import add_layer_norm_ref, add_rms_norm_ref, layer_norm_ref, rms_norm_ref  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
gpu = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
SHAPES = [(1, 17), (3, 1000), (37, 5000), (3, 1)]
TOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 1e-2}


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def make(m, n, dtype, affine=True, device=DEV):
    g = torch.Generator().manual_seed(m * 1000 + n)
    x = (torch.randn(m, n, generator=g) * 2 + 0.5).to(dtype).to(device)
    w = (torch.randn(n, generator=g).to(dtype).to(device)) if affine else None
    b = (torch.randn(n, generator=g).to(dtype).to(device)) if affine else None
    dy = torch.randn(m, n, generator=g).to(dtype).to(device)
    return x, w, b, dy


def _grads(fn, tensors, dy):
    leaves = [t.detach().double().requires_grad_() if t is not None else None for t in tensors]
    out = fn(*leaves)
    out.backward(dy.double())
    return out, [t.grad if t is not None else None for t in leaves]


def test_multi_block_rows_are_exercised():
    assert 5000 > max_fused_cols() or torch.cuda.is_available()


@pytest.mark.parametrize("m,n", SHAPES)
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_fwd_bwd(m, n, affine):
    x, w, b, dy = make(m, n, torch.float32, affine)
    y, mean, rstd = norms.layer_norm_fwd(x, w, b)
    ref, grads = _grads(lambda x_, w_, b_: layer_norm_ref(x_, w_, b_), [x, w, b], dy)
    assert mean.dtype == rstd.dtype == torch.float32 and mean.shape == (m,)
    assert rel(y, ref) < TOL[torch.float32]
    assert rel(mean, x.double().mean(-1)) < 1e-5
    dx, dw, db = norms.layer_norm_bwd(dy, x, w, b, mean, rstd)
    if n > 1:  # a row of one element has dx == 0 exactly
        assert rel(dx, grads[0]) < 1e-4
    if affine:
        assert rel(dw, grads[1]) < 1e-4 and rel(db, grads[2]) < 1e-5
    else:
        assert dw is None and db is None


@pytest.mark.parametrize("is_rms", [True, False])
@pytest.mark.parametrize("rows,per_sm", [(1, 1), (2, 2)])
def test_backward_with_prefetched_rows(is_rms, rows, per_sm):
    """The fused backward that loads the next block of rows before reducing the current one."""
    from tessera.kernels._membound import RowPlan
    from tessera.kernels.norms import launch

    x, w, b, dy = make(13, 300, torch.float32)  # 13 rows over a few programs: the last block is partial
    if is_rms:
        _, rstd = norms.rms_norm_fwd(x, w)
        mean, b = None, None
        _, grads = _grads(lambda x_, w_: rms_norm_ref(x_, w_), [x, w], dy)
    else:
        _, mean, rstd = norms.layer_norm_fwd(x, w, b)
        _, grads = _grads(lambda x_, w_, b_: layer_norm_ref(x_, w_, b_), [x, w, b], dy)
    plan = RowPlan(512, rows, 4, True)
    dx, dw, db = launch.norm_bwd("t", dy, x, w, b, mean, rstd, is_rms, plan, per_sm, prefetch=True)
    assert rel(dx, grads[0]) < 1e-4 and rel(dw, grads[1]) < 1e-4
    if not is_rms:
        assert rel(db, grads[2]) < 1e-5


@pytest.mark.parametrize("m,n", SHAPES)
def test_rms_norm_fwd_bwd(m, n):
    x, w, _, dy = make(m, n, torch.float32)
    y, rstd = norms.rms_norm_fwd(x, w)
    ref, grads = _grads(lambda x_, w_: rms_norm_ref(x_, w_), [x, w], dy)
    assert rel(y, ref) < TOL[torch.float32]
    dx, dw = norms.rms_norm_bwd(dy, x, w, rstd)
    if n > 1:  # n == 1 cancels catastrophically: dx ~ eps / x**2
        assert rel(dx, grads[0]) < 1e-4
    assert rel(dw, grads[1]) < 1e-4
    y2, rstd2 = norms.rms_norm_fwd(x)
    assert rel(y2, rms_norm_ref(x.double())) < TOL[torch.float32]
    dx2, dw2 = norms.rms_norm_bwd(dy, x, None, rstd2)
    assert dw2 is None


@pytest.mark.parametrize("m,n", [(3, 1000), (37, 5000)])
def test_add_norms(m, n):
    x, w, b, _ = make(m, n, torch.float32)
    r = torch.randn(m, n).to(DEV)
    y, s, mean, rstd = norms.add_layer_norm_fwd(x, r, w, b)
    ref, sref = add_layer_norm_ref(x.double(), r.double(), w.double(), b.double())
    assert rel(y, ref) < TOL[torch.float32] and rel(s, sref) < 1e-6
    y, s, rstd = norms.add_rms_norm_fwd(x, r, w)
    ref, sref = add_rms_norm_ref(x.double(), r.double(), w.double())
    assert rel(y, ref) < TOL[torch.float32] and rel(s, sref) < 1e-6


def test_leading_dims_and_fp16():
    x = torch.randn(2, 3, 17, 1000).to(torch.float16).to(DEV)
    w = torch.randn(1000).to(torch.float16).to(DEV)
    y, mean, rstd = norms.layer_norm_fwd(x, w, None)
    assert y.shape == x.shape and y.dtype == torch.float16 and mean.shape == (102,)
    assert rel(y, layer_norm_ref(x.double(), w.double())) < TOL[torch.float16]


def test_bad_input_raises_typed_errors():
    x = torch.randn(4, 8).to(DEV)
    with pytest.raises(TesseraShapeError, match="weight"):
        norms.layer_norm_fwd(x, torch.ones(7).to(DEV))
    with pytest.raises(TesseraDTypeError, match="x"):
        norms.rms_norm_fwd(x.long())
    with pytest.raises(TesseraShapeError, match="residual"):
        norms.add_rms_norm_fwd(x, torch.randn(4, 9).to(DEV))
    with pytest.raises(TesseraValueError, match="eps"):
        norms.rms_norm_fwd(x, eps=-1.0)
    with pytest.raises(TesseraShapeError, match="rstd"):
        norms.rms_norm_bwd(x, x, None, torch.ones(3).to(DEV))
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        with pytest.raises(TesseraDeviceError):
            norms.rms_norm_fwd(x)


def test_supports():
    x = torch.randn(4, 8).to(DEV)
    assert norms.supports("layer_norm_fwd", x, None)
    assert not norms.supports("no_such_op", x)
    assert not norms.supports("rms_norm_fwd", x.long())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,n", [(37, 1000), (1024, 4096), (7, 8192), (3, 131072), (4097, 257)])
@pytest.mark.parametrize("kind", ["ln", "rms"])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_norms(dtype, m, n, kind):
    x, w, b, dy = make(m, n, dtype, device="cuda")
    if kind == "ln":
        y, mean, rstd = norms.layer_norm_fwd(x, w, b)
        ref, grads = _grads(lambda x_, w_, b_: layer_norm_ref(x_, w_, b_), [x, w, b], dy)
        outs = norms.layer_norm_bwd(dy, x, w, b, mean, rstd)
    else:
        y, rstd = norms.rms_norm_fwd(x, w)
        ref, grads = _grads(lambda x_, w_: rms_norm_ref(x_, w_), [x, w], dy)
        outs = norms.rms_norm_bwd(dy, x, w, rstd)
    assert rel(y, ref) < TOL[dtype]
    for got, want in zip(outs, grads):
        assert rel(got, want) < TOL[dtype]
    r = torch.randn_like(x)
    y2, s2, _ = norms.add_rms_norm_fwd(x, r, w)
    assert rel(y2, rms_norm_ref(s2.double(), w.double())) < TOL[dtype]


@pytest.mark.parametrize("m,n", [(3, 1000), (5, 5000)])
@pytest.mark.parametrize("kind", ["ln", "rms"])
def test_add_norm_bwd_matches_autograd(m, n, kind):
    x, w, b, dy = make(m, n, torch.float32)
    r, ds = torch.randn(m, n).to(DEV), torch.randn(m, n).to(DEV)
    leaves = [t.double().requires_grad_() for t in (x, r, w, b)]
    if kind == "ln":
        yr, sr = add_layer_norm_ref(*leaves)
        y, s, mean, rstd = norms.add_layer_norm_fwd(x, r, w, b)
        dx, dw, db = norms.add_layer_norm_bwd(dy, ds, s, w, b, mean, rstd)
    else:
        yr, sr = add_rms_norm_ref(*leaves[:3])
        y, s, rstd = norms.add_rms_norm_fwd(x, r, w)
        (dx, dw), db = norms.add_rms_norm_bwd(dy, ds, s, w, rstd), None
    torch.autograd.backward([yr, sr], [dy.double(), ds.double()])
    assert rel(dx, leaves[0].grad) < 1e-4 and rel(dx, leaves[1].grad) < 1e-4
    assert rel(dw, leaves[2].grad) < 1e-4
    if db is not None:
        assert rel(db, leaves[3].grad) < 1e-5
