"""fp8 training through ts.nn.fp8_linear: e4m3 operands per tensor, the gradient in e5m2, against
float64 products of operands rounded independently with ml_dtypes."""
import ml_dtypes
import numpy as np
import pytest
import torch

import tessera as ts

E4M3, E5M2 = (ml_dtypes.float8_e4m3fn, 448.0), (ml_dtypes.float8_e5m2, 57344.0)


def dequantised(t: torch.Tensor, fmt) -> np.ndarray:
    """``t`` rounded to the fp8 format with one fp32 scale (amax / largest finite), in float64."""
    kind, fmax = fmt
    x = t.detach().float().cpu().numpy()
    scale = np.float32(np.abs(x).max()) / np.float32(fmax)
    codes = np.clip(x / scale, -fmax, fmax).astype(kind)
    return codes.astype(np.float64) * np.float64(scale)


def expected(x, w, g, bias):
    """y, dx, dw, db of ``sum(fp8_linear(x, w, bias) * g)`` by the fp8 training recipe."""
    k, n = w.shape
    qx, qw = dequantised(x.reshape(-1, k), E4M3), dequantised(w, E4M3)
    dy = g.reshape(-1, n)
    qdy = dequantised(dy, E5M2)
    y = (qx @ qw + (0 if bias is None else bias.double().cpu().numpy())).reshape(*x.shape[:-1], n)
    return y, (qdy @ qw.T).reshape(x.shape), qx.T @ qdy, dy.double().sum(0).cpu().numpy()


def run(x, w, bias, g, out_dtype):
    """Tessera's output and its gradients with respect to x, w (and bias)."""
    wrap = ts.from_dlpack
    args = [wrap(x), wrap(w)] + ([] if bias is None else [wrap(bias)])

    def loss(*a):
        y = ts.nn.fp8_linear(a[0], a[1], a[2] if len(a) > 2 else None, out_dtype=out_dtype)
        return (y.to(ts.f32) * wrap(g)).sum()

    y = ts.nn.fp8_linear(*args[:2], args[2] if bias is not None else None, out_dtype=out_dtype)
    grads = ts.grad(loss, argnums=tuple(range(len(args))))(*args)
    return [y.torch()] + [t.torch() for t in grads]


def rel(got, want) -> float:
    want = torch.as_tensor(want, dtype=torch.float64)
    return float((got.double().cpu() - want).norm() / want.norm())


@pytest.mark.parametrize("bias", [False, True])
def test_fp8_training_linear_matches_the_recipe(cpu, bias):
    torch.manual_seed(0)
    x, w = torch.randn(2, 7, 48), torch.randn(48, 20) * 0.1
    b = torch.randn(20) if bias else None
    g = torch.randn(2, 7, 20).bfloat16().float()  # the output's cotangent arrives in bf16
    y, dx, dw, *db = run(x, w, b, g, ts.f32)
    want = expected(x, w, g, b)
    assert y.dtype == torch.float32 and dx.shape == x.shape and dw.shape == w.shape
    for got, ref in zip([y, dx, dw] + db, want):
        assert rel(got, ref) < 1e-5
    # coarse but not wrong: within fp8's precision of the full-precision gradients
    exact_dw = x.double().reshape(-1, 48).T @ g.double().reshape(-1, 20)
    assert 1e-4 < rel(dw, exact_dw) < 0.1


def test_fp8_training_linear_bad_input(cpu):
    qw, sw = ts.quantize_fp8(ts.randn(8, 4), axis=0)
    with pytest.raises(ts.TesseraValueError, match="pass its w_scale"):
        ts.nn.fp8_linear(ts.randn(2, 8), qw)
    with pytest.raises(ts.TesseraDTypeError, match="scales were passed"):
        ts.nn.fp8_linear(ts.randn(2, 8), ts.randn(8, 4), x_scale=sw)
    with pytest.raises(ts.TesseraShapeError, match="x's last dim must equal w's first"):
        ts.nn.fp8_linear(ts.randn(2, 9), ts.randn(8, 4))
    with pytest.raises(ts.TesseraShapeError, match=r"it must be \(4,\)"):
        ts.nn.fp8_linear(ts.randn(2, 8), ts.randn(8, 4), ts.randn(5))
    with pytest.raises(ts.TesseraDTypeError, match="training on fp8 takes wider float x"):
        ts.nn.fp8_linear(qw.to(ts.f32).to(ts.fp8_e4m3)[:2], ts.randn(8, 4))


@pytest.mark.gpu
def test_fp8_training_linear_on_fp8_tensor_cores():
    torch.manual_seed(1)
    x = torch.randn(272, 528, device="cuda").bfloat16()
    w = (torch.randn(528, 400, device="cuda") * 0.05).bfloat16()
    b = torch.randn(400, device="cuda").bfloat16()
    g = torch.randn(272, 400, device="cuda").bfloat16().float()
    y, dx, dw, db = run(x, w, b, g, ts.bf16)
    want = expected(x, w, g, b)
    assert y.dtype == dx.dtype == dw.dtype == torch.bfloat16
    for got, ref in zip([y, dx, dw, db], want):
        assert rel(got, ref) < 1e-2


def test_nn_linear_on_fp8_operands(cpu, monkeypatch):
    from tessera.core.primitive import registry

    scaled = []
    prim = registry["scaled_linear"]
    real = prim.reference
    monkeypatch.setattr(prim, "reference", lambda *a, **k: (scaled.append(1), real(*a, **k))[1])
    torch.manual_seed(2)
    x, w, b = torch.randn(5, 32), torch.randn(32, 12), torch.randn(12)
    qx, sx = ts.quantize_fp8(ts.from_dlpack(x), axis=-1)
    qw, sw = ts.quantize_fp8(ts.from_dlpack(w), axis=0)
    # fp8 x and w: the scaled fp8 product, bias fused, bf16 out
    y = ts.nn.linear(qx, qw, ts.from_dlpack(b), x_scale=sx, w_scale=sw)
    want = (qx.to(ts.f32).torch().double() * sx.torch().double()) @ (qw.to(ts.f32).torch().double() *
                                                                      sw.torch().double()) + b.double()
    assert scaled == [1] and y.dtype == ts.bf16 and rel(y.torch(), want) < 1e-2
    # a wider x keeps its precision: the weight is widened (times its scale), no fp8 product
    y2 = ts.nn.linear(ts.from_dlpack(x), qw, w_scale=sw, activation="relu")
    want2 = torch.relu(x.double() @ (qw.to(ts.f32).torch().double() * sw.torch().double()))
    assert scaled == [1] and y2.dtype == ts.f32 and rel(y2.torch(), want2) < 1e-6
    with pytest.raises(ts.TesseraDTypeError, match="x_scale/w_scale belong to fp8 operands"):
        ts.nn.linear(ts.from_dlpack(x), ts.from_dlpack(w), w_scale=sw)
    y3 = ts.nn.linear(qx, qw, ts.from_dlpack(b), x_scale=sx, w_scale=sw, activation="gelu", residual=y)
    assert scaled == [1, 1] and rel(y3.torch(), torch.nn.functional.gelu(want) + y.torch().double()) < 1e-2
