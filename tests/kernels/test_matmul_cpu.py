"""GEMM kernels through Triton's CPU interpreter (fp32/fp16): indexing of awkward shapes, every
layout read in place, batch broadcasting, every epilogue, output casts, fp16 accumulation, split-K,
fp8 and weight-only paths, and bad-input errors."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import tessera.quant as q  # noqa: E402
from tessera.errors import TesseraDTypeError, TesseraShapeError, TesseraValueError  # noqa: E402
from tessera.kernels.matmul import api, checks  # noqa: E402
from tessera.kernels.matmul import matmul, quantize_fp8, scaled_matmul, supports, wo_matmul  # noqa: E402
from tessera.kernels.matmul.configs import Config  # noqa: E402
from tessera.kernels.matmul.launch import interpreting  # noqa: E402

pytestmark = pytest.mark.skipif(torch.cuda.is_available() or not interpreting(),
                                reason="CPU interpreter tests (TRITON_INTERPRET=1 before Triton kernels load)")

TMA = Config("tma", 32, 32, 16, 4, 1, 4)
TMA_SUB = Config("tma", 32, 32, 16, 4, 1, 4, subtile=True)
PTR = Config("ptr", 16, 32, 16, 4, 1, 4)
SPLIT = Config("ptr", 16, 16, 16, 4, 1, 4, split_k=3)
SKINNY = Config("skinny", 16, 32, 16, 1, 2, 4, split_k=3, swap=True)
SKINNY_NOSWAP = Config("skinny", 16, 32, 16, 1, 2, 4, split_k=1)


def rel(out, ref):
    return ((out.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def rnd(*shape, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype)


def operand(rows, cols, transposed, rng, dtype=torch.float32):
    """A [rows, cols] operand: row-major, or the transpose of a row-major [cols, rows] tensor."""
    if transposed:
        return torch.randn(cols, rows, generator=rng).to(dtype).t()
    return torch.randn(rows, cols, generator=rng).to(dtype)


@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (17, 100, 129), (129, 17, 100), (100, 129, 17)])
def test_awkward_shapes_default_dispatch(M, N, K):
    a, b = rnd(M, K, seed=M), rnd(K, N, seed=N)
    out = matmul(a, b)
    assert out.shape == (M, N) and torch.isfinite(out).all()
    assert rel(out, a.double() @ b.double()) < 1e-5


@pytest.mark.parametrize("cfg", [TMA, TMA_SUB, PTR, SPLIT, SKINNY, SKINNY_NOSWAP],
                         ids=["tma", "tma_subtile", "ptr", "splitk", "skinny", "skinny_noswap"])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["a_b", "at_b", "a_bt", "at_bt"])
def test_every_kernel_and_layout(cfg, ta, tb):
    M, N, K = 72, 40, 52  # TMA needs 16-byte strides: 72*4, 40*4 and 52*4 bytes
    a = rnd(K, M, seed=1).t() if ta else rnd(M, K, seed=1)
    b = rnd(N, K, seed=2).t() if tb else rnd(K, N, seed=2)
    assert rel(matmul(a, b, _config=cfg), a.double() @ b.double()) < 1e-5


@pytest.mark.parametrize("act", ["gelu", "gelu_tanh", "silu", "relu"])
@pytest.mark.parametrize("cfg", [TMA, SPLIT, SKINNY], ids=["tma", "splitk", "skinny"])
def test_epilogues(act, cfg):
    M, N, K = 36, 44, 48
    a, b, bias, res = rnd(M, K, seed=3), rnd(K, N, seed=4), rnd(N, seed=5), rnd(1, N, seed=6)
    out, pre = matmul(a, b, bias=bias, activation=act, residual=res, return_preact=True, _config=cfg)
    ref_pre = a.double() @ b.double() + bias.double()
    f = {"gelu": torch.nn.functional.gelu, "silu": torch.nn.functional.silu, "relu": torch.relu,
         "gelu_tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh")}[act]
    assert rel(pre, ref_pre) < 1e-5
    assert rel(out, f(ref_pre) + res.double()) < 1e-5


def test_batched_broadcast_and_folded_batch():
    a, b = rnd(3, 1, 20, 24, seed=7), rnd(2, 24, 18, seed=8)
    assert matmul(a, b).shape == (3, 2, 20, 18)
    assert rel(matmul(a, b), a.double() @ b.double()) < 1e-5
    a, b, r = rnd(2, 3, 20, 24, seed=9), rnd(24, 18, seed=10), rnd(20, 18, seed=11)  # folded into M
    assert rel(matmul(a, b, residual=r), a.double() @ b.double() + r.double()) < 1e-5
    a = rnd(2, 20, 24, seed=12).transpose(1, 2).transpose(1, 2)[:, ::2]  # strided rows, not foldable
    assert rel(matmul(a, b), a.double() @ b.double()) < 1e-5


def test_more_than_three_batch_dims():
    a, b = rnd(2, 1, 2, 2, 5, 8, seed=13), rnd(2, 1, 2, 8, 3, seed=14)
    assert rel(matmul(a, b), a.double() @ b.double()) < 1e-5


def test_fp16_and_fp16_accumulate():
    a, b = rnd(33, 64, seed=15, dtype=torch.float16), rnd(64, 40, seed=16, dtype=torch.float16)
    ref = a.double() @ b.double()
    assert matmul(a, b).dtype == torch.float16
    assert rel(matmul(a, b), ref) < 5e-3
    assert rel(matmul(a, b, acc_dtype=torch.float16), ref) < 5e-3
    wide = matmul(a, b, out_dtype=torch.float32)
    assert wide.dtype == torch.float32 and rel(wide, ref) < 1e-5  # fp32 accumulator stored unrounded


@pytest.mark.parametrize("cfg", [None, TMA, PTR, SPLIT, SKINNY], ids=["default", "tma", "ptr", "splitk", "skinny"])
@pytest.mark.parametrize("dtype,out_dtype,tol", [
    (torch.float16, torch.float32, 1e-5),  # an fp16 store would be ~3e-4 off
    (torch.float32, torch.float16, 2e-3),
    (torch.float32, torch.bfloat16, 1e-2),
    (torch.float16, torch.bfloat16, 1e-2)])
def test_output_cast_matches_float64(cfg, dtype, out_dtype, tol, rng):
    M, N, K = 37, 40, 72
    a, b, bias = operand(M, K, False, rng, dtype), operand(K, N, True, rng, dtype), torch.randn(N, generator=rng)
    ref = a.double() @ b.double()
    out = matmul(a, b, out_dtype=out_dtype, _config=cfg)
    assert out.dtype == out_dtype and out.shape == (M, N) and rel(out, ref) < tol
    out = matmul(a, b, bias=bias, activation="silu", out_dtype=out_dtype, _config=cfg)
    assert out.dtype == out_dtype and rel(out, torch.nn.functional.silu(ref + bias.double())) < tol


@pytest.mark.parametrize("M,N,K,ta,tb", [(72, 40, 200, False, False), (72, 40, 200, True, False),
                                         (72, 40, 200, False, True), (72, 40, 200, True, True),
                                         (77, 45, 136, False, True)])
@pytest.mark.parametrize("acc", [torch.float32, torch.float16])
def test_fp16_tma_kernel(M, N, K, ta, tb, acc, launches, rng):
    """fp16 operands in every layout on the TMA kernel: ragged tiles in M, N and K (K=200 ends in a
    partial 16-deep block), a 45-wide output stored without TMA, fp32 or fp16 accumulation."""
    a, b = operand(M, K, ta, rng, torch.float16), operand(K, N, tb, rng, torch.float16)
    out = matmul(a, b, acc_dtype=acc, _config=TMA)
    assert [(k, kw["acc_f16"]) for k, _, _, kw in launches] == [("tma", acc == torch.float16)]
    assert out.dtype == torch.float16 and rel(out, a.double() @ b.double()) < (2e-3 if acc == torch.float32 else 5e-3)


def test_fp16_accumulation_on_tma_kernel_loses_precision_over_long_k(launches, rng):
    """fp16 accumulation rounds every partial sum: over K=4104 it must be clearly worse than fp32
    accumulation against float64, and still bounded."""
    M, N, K = 72, 40, 4104
    a, b = operand(M, K, False, rng, torch.float16), operand(K, N, True, rng, torch.float16)
    ref = a.double() @ b.double()
    cfg = Config("tma", 32, 32, 64, 4, 1, 4)
    e32 = rel(matmul(a, b, _config=cfg), ref)
    e16 = rel(matmul(a, b, acc_dtype=torch.float16, _config=cfg), ref)
    assert [(k, kw["acc_f16"]) for k, _, _, kw in launches] == [("tma", False), ("tma", True)]
    assert e32 < 5e-4 and 3 * e32 < e16 < 1e-2, (e32, e16)


@pytest.mark.parametrize("M,N,K,ta,tb", [(5, 45, 200, False, True), (13, 72, 136, False, False),
                                         (24, 40, 200, True, True), (24, 72, 136, True, False)])
@pytest.mark.parametrize("cfg", [SKINNY, SKINNY_NOSWAP], ids=["swap_splitk", "noswap"])
def test_fp16_skinny_kernel(M, N, K, ta, tb, cfg, launches, rng):
    """fp16 decode shapes on the skinny kernel (split-K or not, either MMA orientation), plain and
    with an epilogue; fp16 accumulation, which it does not do, goes to the pointer kernel."""
    a, b = operand(M, K, ta, rng, torch.float16), operand(K, N, tb, rng, torch.float16)
    bias = torch.randn(N, generator=rng)
    ref = a.double() @ b.double()
    out = matmul(a, b, _config=cfg)
    assert out.dtype == torch.float16 and rel(out, ref) < 2e-3
    out = matmul(a, b, bias=bias, activation="gelu", _config=cfg)
    assert rel(out, torch.nn.functional.gelu(ref + bias.double())) < 2e-3
    assert [k for k, *_ in launches] == ["skinny", "skinny"]
    launches.clear()
    out = matmul(a, b, acc_dtype=torch.float16, _config=cfg)  # fp32-only kernel: the pointer kernel serves it
    assert [(k, kw["acc_f16"]) for k, _, _, kw in launches] == [("ptr", True)] and rel(out, ref) < 5e-3


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["a_b", "at_b", "a_bt", "at_bt"])
@pytest.mark.parametrize("cfg", [None, TMA, PTR, SKINNY], ids=["default", "tma", "ptr", "skinny"])
def test_operands_are_read_in_place(ta, tb, cfg, launches, rng):
    """Transposed operands reach the kernel as the caller's memory (same address and strides):
    nothing is copied to make them contiguous."""
    M, N, K = 72, 40, 52
    a, b = operand(M, K, ta, rng), operand(K, N, tb, rng)
    out = matmul(a, b, _config=cfg)
    assert rel(out, a.double() @ b.double()) < 1e-5
    ((kernel, a_k, b_k, _),) = launches
    assert kernel == (cfg.kernel if cfg is not None else "tma")
    assert (a_k.data_ptr(), a_k.stride(), b_k.data_ptr(), b_k.stride()) == \
        (a.data_ptr(), a.stride(), b.data_ptr(), b.stride())


def test_strided_and_batched_operands_are_read_in_place(launches, rng):
    """Operands TMA cannot describe (a column step of 2, a batched b) go to the pointer kernel,
    which reads them through their strides, uncopied."""
    base = torch.randn(30, 2 * 24, generator=rng)
    a, b = base[:, ::2], torch.randn(24, 18, generator=rng)
    assert rel(matmul(a, b), a.double() @ b.double()) < 1e-5
    ((kernel, a_k, b_k, _),) = launches
    assert kernel == "ptr" and a_k.data_ptr() == a.data_ptr() and a_k.stride() == a.stride()
    launches.clear()
    a, b = torch.randn(3, 20, 24, generator=rng), torch.randn(3, 18, 24, generator=rng).transpose(1, 2)
    assert rel(matmul(a, b), a.double() @ b.double()) < 1e-5
    ((kernel, a_k, b_k, _),) = launches
    assert kernel == "ptr" and (a_k.data_ptr(), b_k.data_ptr()) == (a.data_ptr(), b.data_ptr())
    assert a_k.stride() == a.stride() and b_k.stride() == b.stride()


def test_bad_inputs_raise_typed_errors():
    a, b = torch.randn(4, 5), torch.randn(6, 3)
    with pytest.raises(TesseraShapeError, match="inner dims"):
        matmul(a, b)
    with pytest.raises(TesseraDTypeError, match="scaled_matmul"):
        matmul(a.to(torch.float8_e4m3fn), torch.randn(5, 3).to(torch.float8_e4m3fn))
    with pytest.raises(TesseraDTypeError, match="equal"):
        matmul(a, torch.randn(5, 3, dtype=torch.float16))
    with pytest.raises(TesseraDTypeError, match="acc_dtype"):
        matmul(a, torch.randn(5, 3), acc_dtype=torch.float16)
    with pytest.raises(TesseraDTypeError, match="acc_dtype=torch.float16 needs float16 operands.*bfloat16"):
        matmul(torch.randn(4, 5).to(torch.bfloat16), torch.randn(5, 3).to(torch.bfloat16), acc_dtype=torch.float16)
    with pytest.raises(TesseraShapeError, match="bias"):
        matmul(a, torch.randn(5, 3), bias=torch.randn(4))
    with pytest.raises(TesseraShapeError, match="residual"):
        matmul(a, torch.randn(5, 3), residual=torch.randn(2, 3))
    with pytest.raises(TesseraValueError, match="activation"):
        matmul(a, torch.randn(5, 3), activation="tanh")
    assert not supports(a, b) and supports(a, torch.randn(5, 3))


def test_scaled_matmul_fp8_matches_ml_dtypes_reference():
    import ml_dtypes
    import numpy as np

    x, w = rnd(40, 64, seed=17), rnd(24, 64, seed=18)
    qa, sa = quantize_fp8(x, axis=1)
    qw, sw = quantize_fp8(w, torch.float8_e5m2, axis=1)
    # the fp8 values are x/scale rounded as ml_dtypes rounds them
    ref_a = (x.double() / sa.double()).numpy().astype(ml_dtypes.float8_e4m3fn).astype(np.float64)
    assert np.array_equal(qa.double().numpy(), np.clip(ref_a, -448, 448))
    ref = (torch.from_numpy(ref_a) * sa.double()) @ (qw.double() * sw.double()).t()
    for cfg in (None, PTR):
        out = scaled_matmul(qa, qw.t(), sa, sw.t(), out_dtype=torch.float32, _config=cfg)
        assert rel(out, ref) < 1e-5
    out = scaled_matmul(qa, qw.t(), sa.amax(), sw.amax(), out_dtype=torch.float32)  # per-tensor scales
    assert rel(out, (qa.double() @ qw.double().t()) * sa.amax().double() * sw.amax().double()) < 1e-5


def test_quantize_fp8_delayed_scaling_and_saturation():
    x = torch.tensor([[1.0, -1000.0, 3.0]])
    q8, s = quantize_fp8(x, amax=torch.tensor(448.0))  # delayed: amax from history, x saturates
    assert s.item() == 1.0 and q8.float().tolist() == [[1.0, -448.0, 3.0]]
    with pytest.raises(TesseraValueError, match="amax"):
        quantize_fp8(x, amax=float("inf"))


def test_scaled_matmul_bad_scales():
    qa = torch.randn(8, 16).to(torch.float8_e4m3fn)
    qb = torch.randn(16, 4).to(torch.float8_e4m3fn)
    one = torch.tensor(1.0)
    with pytest.raises(TesseraShapeError, match="scale_a"):
        scaled_matmul(qa, qb, torch.ones(4, 1), one)
    with pytest.raises(TesseraShapeError, match="scale_b"):
        scaled_matmul(qa, qb, one, torch.ones(4, 1))
    with pytest.raises(TesseraValueError, match="finite"):
        scaled_matmul(qa, qb, torch.tensor(float("nan")), one)
    with pytest.raises(TesseraDTypeError, match="fp8"):
        scaled_matmul(qa.float(), qb, one, one)


def _bad(shape, index, value):
    s = torch.rand(shape) + 0.5
    s.view(-1)[index] = value
    return s


@pytest.mark.parametrize("value,msg", [(0.0, "not positive"), (-0.0, "not positive"), (-0.25, "not positive"),
                                       (float("inf"), "NaN or inf"), (float("nan"), "NaN or inf")])
def test_scaled_matmul_rejects_non_positive_and_non_finite_scales(value, msg):
    """Like the ScaledLinear reference: scales are positive dequantisation multipliers. The error
    names the operand, the entry and the fix; nothing is launched."""
    M, N, K = 8, 24, 16
    qa, sa = quantize_fp8(torch.randn(M, K), axis=1)
    qw, sw = quantize_fp8(torch.randn(N, K), axis=1)
    b, sb = qw.t(), sw.t()
    for scale_a, scale_b, name, idx in ((_bad((M, 1), 5, value), sb, "scale_a", 5),
                                        (sa, _bad((1, N), 17, value), "scale_b", 17),
                                        (_bad((), 0, value), sb, "scale_a", 0),
                                        (sa, _bad((1, 1), 0, value), "scale_b", 0)):
        with pytest.raises(TesseraValueError, match=f"scaled_matmul: {name}.*{msg}.*quantize_fp8") as err:
            scaled_matmul(qa, b, scale_a, scale_b)
        assert f"{name}[{idx}]" in str(err.value)
    good = scaled_matmul(qa, b, sa, sb, out_dtype=torch.float32)
    assert rel(good, (qa.double() * sa.double()) @ (b.double() * sb.double())) < 1e-5


def test_scale_values_are_read_on_the_gpu_only_in_checked_mode(monkeypatch):
    """Reading a device scale's values synchronises the device: without TESSERA_CHECKS=1 only CPU
    scales are read; with it every scale is, and a tensor already found valid is not read again."""
    reads = []
    real = checks._known_valid
    monkeypatch.setattr(checks, "_known_valid", lambda s: (reads.append(s.device.type), real(s))[1])
    on_device = torch.empty(4, 1, device="meta")
    on_cpu = torch.rand(4, 1) + 0.5
    monkeypatch.delenv("TESSERA_CHECKS", raising=False)
    assert checks.check_scale("scale_a", on_device, 4, 6, "row") == 2 and reads == []
    monkeypatch.setenv("TESSERA_CHECKS", "0")
    assert checks.check_scale("scale_a", on_device, 4, 6, "row") == 2 and reads == []
    assert checks.check_scale("scale_a", on_cpu, 4, 6, "row") == 2 and reads == ["cpu"]
    monkeypatch.setattr(checks, "_known_valid", lambda s: reads.append(s.device.type) or True)
    monkeypatch.setenv("TESSERA_CHECKS", "1")
    assert checks.check_scale("scale_b", on_device[:1].t(), 4, 1, "col") == 1 and reads == ["cpu", "meta"]
    monkeypatch.setattr(checks, "_known_valid", real)
    checks.check_scale("scale_a", on_cpu, 4, 6, "row")
    on_cpu.data[2, 0] = -1.0  # written behind the version counter: the earlier verdict stands, no re-read
    checks.check_scale("scale_a", on_cpu, 4, 6, "row")
    on_cpu[2, 0] = -1.0  # a new version is read again
    with pytest.raises(TesseraValueError, match="scale_a\\[2\\] = -1.0 is not positive"):
        checks.check_scale("scale_a", on_cpu, 4, 6, "row")


@pytest.mark.parametrize("fmt", ["fp4_e2m1", "fp6_e2m3", "fp6_e3m2"])
def test_weight_only_matmul(fmt):
    w, bias = rnd(100, 40, seed=19), rnd(40, seed=20)
    qw = q.quantize(w, fmt, group_size=32)
    wd = q.dequantize(qw).double()
    tma = Config("wo", 16, 16, 64, 1, 2, 4, 3, tma_loads=True)
    for M, cfg in ((1, None), (1, Config("wo", 1, 16, 64, 1, 1, 4, 2)), (5, Config("wo", 16, 16, 64, 1, 1, 4, 2)),
                   (3, tma), (1, Config("wo", 1, 16, 64, 1, 2, 4, 2, tma_loads=True))):
        x = rnd(M, 100, seed=M)
        assert rel(wo_matmul(x, qw, bias=bias, _config=cfg), x.double() @ wd + bias.double()) < 1e-5
    with pytest.raises(TesseraShapeError, match="K=100"):
        wo_matmul(torch.randn(2, 64), qw)
    spread = torch.zeros(qw.data.shape[0], 2 * qw.data.shape[1], dtype=torch.uint8)[:, ::2]
    spread.copy_(qw.data)  # same codes, but not whole rows: the kernel would read other bytes
    with pytest.raises(TesseraValueError, match="qw.data must hold whole rows.*contiguous"):
        wo_matmul(x, q.QuantizedWeight(spread, qw.scales, qw.fmt, qw.group_size, qw.shape))
    with pytest.raises(TesseraShapeError, match=r"qw.data has shape \(40, \d+\).*stored as \[40, \d+\] bytes"):
        wo_matmul(x, q.QuantizedWeight(qw.data[:, 1:], qw.scales, qw.fmt, qw.group_size, qw.shape))
    with pytest.raises(TesseraShapeError, match="whole blocks of 32"):  # scales of 16-input groups, K 112
        wo_matmul(x, q.QuantizedWeight(qw.data, qw.scales.repeat(1, 2)[:, :7], qw.fmt, 16, qw.shape))


@pytest.mark.parametrize("fmt,group_size", [("fp4_e2m1", 32), ("fp4_e2m1", 8), ("fp6_e2m3", 16), ("fp6_e3m2", 64)])
def test_weight_only_matmul_swapped(fmt, group_size):
    """The swapped product (decoded weight as the left operand, x's columns read permuted to meet
    it) against float64, at awkward K and N, with split-K and several tiles."""
    w, bias = rnd(200, 72, seed=21), rnd(72, seed=22)
    qw = q.quantize(w, fmt, group_size=group_size)
    wd = q.dequantize(qw).double()
    for M, cfg in ((1, Config("wo", 16, 32, 64, 1, 1, 4, 2, swap=True)),
                   (7, Config("wo", 8, 16, 128, 1, 2, 4, 1, tma_loads=True, swap=True)),
                   (19, Config("wo", 16, 64, 64, 1, 2, 4, 3, swap=True)),
                   (40, Config("wo", 64, 16, 64, 1, 2, 4, 2, tma_loads=True, swap=True))):
        x = rnd(M, 200, seed=M + 40)
        assert rel(wo_matmul(x, qw, bias=bias, _config=cfg), x.double() @ wd + bias.double()) < 1e-5


def test_repeated_calls_reuse_the_plan_with_new_tensors():
    from tessera.kernels.matmul import api

    api._PLANS.clear()
    for seed in range(3):  # same signature, new values: the stored plan must read the new tensors
        a, w, bias = rnd(5, 64, seed=seed), rnd(48, 64, seed=seed + 10), rnd(48, seed=seed + 20)
        out = matmul(a, w.t(), bias=bias, activation="relu")
        assert rel(out, torch.relu(a.double() @ w.double().t() + bias.double())) < 1e-5
    assert len(api._PLANS) == 1
    b = rnd(64, 48, seed=5)  # another layout of b: a new plan
    assert rel(matmul(rnd(5, 64, seed=6), b), rnd(5, 64, seed=6).double() @ b.double()) < 1e-5
    assert len(api._PLANS) == 2
    with pytest.raises(TesseraShapeError):  # a bad call never reaches a plan
        matmul(rnd(5, 63, seed=1), w.t())


def test_weight_only_repeated_calls_reuse_the_plan():
    from tessera.kernels.matmul import wo

    wo._PLANS.clear()
    qw = q.quantize(rnd(96, 40, seed=30), "fp4_e2m1", group_size=32)
    wd = q.dequantize(qw).double()
    for seed in range(3):
        x, bias = rnd(2, 3, 96, seed=seed), rnd(40, seed=seed + 7)[::1]
        out = wo_matmul(x, qw, bias=bias)
        assert out.shape == (2, 3, 40) and rel(out, x.double() @ wd + bias.double()) < 1e-5
    assert len(wo._PLANS) == 1
    strided_bias = rnd(80, seed=9)[::2]  # a non-contiguous bias is read correctly too
    assert rel(wo_matmul(x, qw, bias=strided_bias), x.double() @ wd + strided_bias.double()) < 1e-5
