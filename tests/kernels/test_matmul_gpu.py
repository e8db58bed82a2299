"""GEMM kernels on the GPU: bf16/fp16/fp8/weight-only against float64 references on fresh inputs."""
from dataclasses import replace

import pytest
import torch

import tessera.quant as q
from tessera.errors import TesseraValueError
from tessera.kernels.matmul import matmul, quantize_fp8, scaled_matmul, wo_matmul
from tessera.kernels.matmul.configs import GLUON_DEFAULT, Config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
TOL = {torch.bfloat16: 1e-2, torch.float16: 5e-3}


def rel(out, ref):
    return ((out.double() - ref).norm() / ref.norm()).item()


def rnd(*shape, dtype=torch.bfloat16):
    return torch.randn(*shape, device="cuda").to(dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("M,N,K", [(1, 4096, 4096), (17, 1000, 129), (1000, 777, 4096), (2048, 2056, 1024)])
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_matmul_vs_float64(dtype, M, N, K, ta, tb):
    a = rnd(K, M, dtype=dtype).t() if ta else rnd(M, K, dtype=dtype)
    b = rnd(N, K, dtype=dtype).t() if tb else rnd(K, N, dtype=dtype)
    out = matmul(a, b)
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert rel(out, a.double() @ b.double()) < TOL[dtype]


def test_fused_linear_bias_gelu_residual_preact():
    x, w, bias, res = rnd(1000, 512), rnd(1536, 512), rnd(1536), rnd(1000, 1536)
    out, pre = matmul(x, w.t(), bias=bias, activation="gelu", residual=res, return_preact=True)
    ref_pre = x.double() @ w.double().t() + bias.double()
    assert rel(pre, ref_pre) < 1e-2
    assert rel(out, torch.nn.functional.gelu(ref_pre) + res.double()) < 1e-2


def test_batched_and_fp16_accumulate():
    a, b = rnd(3, 1, 100, 64), rnd(2, 64, 72)
    assert rel(matmul(a, b), a.double() @ b.double()) < 1e-2
    a, b = rnd(512, 256, dtype=torch.float16), rnd(256, 384, dtype=torch.float16)
    assert rel(matmul(a, b, acc_dtype=torch.float16), a.double() @ b.double()) < 5e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("M,N,K", [(1000, 776, 4096), (2048, 2056, 1032), (776, 4104, 1000)])
@pytest.mark.parametrize("tb", [False, True])
def test_transposed_a_is_read_in_place_by_the_tma_kernel(dtype, M, N, K, tb, launches):
    """A transposed A (and either B) reaches the TMA kernel as the caller's memory, read M-major
    through its descriptor: same address, same strides, no copy."""
    a = rnd(K, M, dtype=dtype).t()
    b = rnd(N, K, dtype=dtype).t() if tb else rnd(K, N, dtype=dtype)
    out = matmul(a, b)
    assert out.dtype == dtype and rel(out, a.double() @ b.double()) < TOL[dtype]
    ((kernel, a_k, b_k, _),) = launches
    assert kernel == "tma"
    assert (a_k.data_ptr(), a_k.stride(), b_k.data_ptr(), b_k.stride()) == \
        (a.data_ptr(), a.stride(), b.data_ptr(), b.stride())


@pytest.mark.parametrize("M,N,K", [(1, 64, 128), (1000, 1032, 2048)])
@pytest.mark.parametrize("rowwise", [False, True])
def test_scaled_matmul_fp8(M, N, K, rowwise):
    x, w = rnd(M, K, dtype=torch.float32), rnd(N, K, dtype=torch.float32)
    qa, sa = quantize_fp8(x, axis=1 if rowwise else None)
    qw, sw = quantize_fp8(w, axis=1 if rowwise else None)
    sb = sw.t() if rowwise else sw
    out = scaled_matmul(qa, qw.t(), sa, sb)
    ref = (qa.double() * sa.double()) @ (qw.double() * sw.double()).t()
    assert out.dtype == torch.bfloat16 and rel(out, ref) < 1e-2


def _fp8_operands(M, N, K):
    (qa, sa), (qw, sw) = quantize_fp8(rnd(M, K, dtype=torch.float32), axis=1), \
        quantize_fp8(rnd(N, K, dtype=torch.float32), axis=1)
    return qa, qw.t(), sa, sw.t()


@pytest.mark.parametrize("value,msg", [(0.0, "not positive"), (-0.5, "not positive"),
                                       (float("nan"), "NaN or inf"), (float("inf"), "NaN or inf")])
def test_scaled_matmul_checked_mode_rejects_bad_gpu_scales(monkeypatch, value, msg):
    monkeypatch.setenv("TESSERA_CHECKS", "1")
    M, N, K = 1000, 1032, 512
    qa, b, sa, sb = _fp8_operands(M, N, K)
    bad_a, bad_b = sa.clone(), sb.clone()
    bad_a[123, 0] = value
    bad_b[0, 1000] = value
    with pytest.raises(TesseraValueError, match=f"scale_a.*{msg}") as err:
        scaled_matmul(qa, b, bad_a, sb)
    assert "scale_a[123]" in str(err.value)
    with pytest.raises(TesseraValueError, match=f"scale_b.*{msg}") as err:
        scaled_matmul(qa, b, sa, bad_b)
    assert "scale_b[1000]" in str(err.value)
    with pytest.raises(TesseraValueError, match=f"scale_a.*{msg}"):
        scaled_matmul(qa, b, torch.tensor(value, device="cuda"), sb)
    ref = (qa.double() * sa.double()) @ (b.double() * sb.double())
    assert rel(scaled_matmul(qa, b, sa, sb), ref) < 1e-2


def test_scaled_matmul_unchecked_mode_never_synchronises(monkeypatch):
    """By default GPU scales are not read (that would synchronise the device on every call with
    fresh scales): a call with new scales runs under CUDA's sync-debug mode "error", and a NaN
    scale shows in the output rather than as a silently wrong number."""
    monkeypatch.delenv("TESSERA_CHECKS", raising=False)
    M, N, K = 1000, 1032, 512
    qa, b, sa, sb = _fp8_operands(M, N, K)
    ref = (qa.double() * sa.double()) @ (b.double() * sb.double())
    scaled_matmul(qa, b, sa.clone(), sb.clone())  # compiled and memoised before the sync check
    fresh_a, fresh_b, nan_a = sa.clone(), sb.clone(), sa.clone()
    nan_a[7, 0] = float("nan")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = scaled_matmul(qa, b, fresh_a, fresh_b)
        bad = scaled_matmul(qa, b, nan_a, fresh_b)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert rel(out, ref) < 1e-2
    assert torch.isnan(bad[7]).all() and torch.isfinite(bad[:7]).all() and torch.isfinite(bad[8:]).all()


@pytest.mark.parametrize("fmt", ["fp4_e2m1", "fp6_e2m3", "fp6_e3m2"])
@pytest.mark.parametrize("M", [1, 5, 16])
@pytest.mark.parametrize("group_size", [32, 16, 128])
def test_weight_only(fmt, M, group_size):
    w = torch.randn(4096, 1000, device="cuda")
    qw = q.quantize(w, fmt, group_size=group_size)
    x = rnd(M, 4096)
    assert rel(wo_matmul(x, qw), x.double() @ q.dequantize(qw).double()) < 1e-2


@pytest.mark.parametrize("M,N,K", [(1, 4096, 4096), (16, 1000, 4104), (77, 2056, 1024), (128, 8192, 1000)])
@pytest.mark.parametrize("swap,split", [(True, 1), (True, 4), (False, 3)])
@pytest.mark.parametrize("kmajor", [True, False])
def test_skinny_kernel(M, N, K, swap, split, kmajor):
    a = rnd(M, K)
    b = rnd(N, K).t() if kmajor else rnd(K, N)
    bias = rnd(N)
    BM = max(16, min(128, 1 << (M - 1).bit_length()))
    cfg = Config("skinny", BM, 64, 128, 1, 4, 4, split, swap=swap)
    out = matmul(a, b, bias=bias, activation="silu", _config=cfg)
    ref = torch.nn.functional.silu(a.double() @ b.double() + bias.double())
    assert rel(out, ref) < 1e-2
    out2 = matmul(a, b, bias=bias, activation="silu", _config=cfg)  # split-K counters were reset
    assert torch.equal(out, out2)


@pytest.mark.parametrize("M,N,K", [(77, 2056, 1000), (128, 4096, 4104)])
@pytest.mark.parametrize("BN,BK,stages,warps", [(128, 128, 3, 8), (256, 64, 3, 8), (128, 128, 3, 4)])
@pytest.mark.parametrize("split", [1, 4])
def test_skinny_wide_tiles(M, N, K, BN, BK, stages, warps, split):
    """The wide tiles offered at 64+ rows: two warpgroups, split-K, ragged N and K."""
    a, b = rnd(M, K), rnd(N, K).t()
    cfg = Config("skinny", 128, BN, BK, 1, stages, warps, split, swap=True)
    out = matmul(a, b, activation="gelu", _config=cfg)
    assert rel(out, torch.nn.functional.gelu(a.double() @ b.double())) < 1e-2


@pytest.mark.parametrize("fmt", ["fp4_e2m1", "fp6_e2m3"])
@pytest.mark.parametrize("BM,swap", [(1, False), (16, False), (16, True)])
def test_weight_only_tma_loads(fmt, BM, swap):
    w = torch.randn(4096, 1000, device="cuda")
    qw = q.quantize(w, fmt, group_size=32)
    M = 1 if BM == 1 else 13
    x = rnd(M, 4096)
    cfg = Config("wo", BM, 64, 256, 1, 4, 4, 4, tma_loads=True, swap=swap)
    assert rel(wo_matmul(x, qw, _config=cfg), x.double() @ q.dequantize(qw).double()) < 1e-2


@pytest.mark.parametrize("fmt", ["fp4_e2m1", "fp6_e2m3", "fp6_e3m2"])
@pytest.mark.parametrize("cfg", [None, Config("wo", 16, 64, 128, 1, 4, 4, 2, tma_loads=True),
                                 Config("wo", 32, 128, 256, 1, 3, 4, 1),
                                 Config("wo", 16, 64, 128, 1, 4, 4, 1, tma_loads=True, packed=False),
                                 Config("wo", 16, 64, 128, 1, 3, 4, 2, tma_loads=True, swap=True),
                                 Config("wo", 16, 128, 256, 1, 3, 4, 1, swap=True)])
@pytest.mark.parametrize("G", [32, 16])
def test_weight_only_decodes_every_code_exactly(fmt, cfg, G):
    """One-hot rows of x pick single weights: every code, at scales from 2**-40 to 2**40, must come
    back as exactly code * scale rounded to bf16 (subnormal-exponent codes included). Groups of 16
    put a pack's even and odd codes under different scales."""
    from tessera.quant.formats import get_format, positive_values

    K, N = 256, 200
    pos = torch.tensor(positive_values(get_format(fmt)), device="cuda")
    vals = torch.cat([pos, -pos])
    idx = torch.randint(0, len(vals), (N, K // G, G), device="cuda")
    idx[..., 0] = len(pos) - 1  # each group holds its largest code, so quantize recovers the scale
    codes = vals[idx]
    scale = torch.exp2(torch.randint(-40, 41, (N, K // G), device="cuda").float())
    scale = (scale * (1 + torch.rand(N, K // G, device="cuda"))).to(torch.bfloat16).float()
    w = (codes * scale[..., None]).reshape(N, K).t().contiguous()
    qw = q.quantize(w, fmt, group_size=G)
    assert torch.equal(q.dequantize(qw), w)  # the weight is exactly representable
    assert len(torch.unique(codes.abs())) == len(pos)  # every magnitude occurs
    x = torch.eye(K, device="cuda", dtype=torch.bfloat16)
    out = wo_matmul(x, qw, _config=cfg)
    assert torch.equal(out, w.to(torch.bfloat16))


def test_repeated_calls_with_changing_alignment():
    """Plans and the launch fast path must not reuse a kernel specialised for aligned pointers."""
    K, N = 1000, 264
    w = rnd(N, K)
    buf = rnd(4 * K + 16)
    for off in (0, 1, 0, 3, 8, 1):
        a = buf[off:off + 3 * K].view(3, K)
        assert rel(matmul(a, w.t()), a.double() @ w.double().t()) < 1e-2
    qw = q.quantize(torch.randn(K, N, device="cuda"), "fp4_e2m1")
    for off in (0, 1, 0, 5):
        x = buf[off:off + K].view(1, K)
        assert rel(wo_matmul(x, qw), x.double() @ q.dequantize(qw).double()) < 1e-2



def _gluon_or_skip():
    from tessera.kernels.matmul import gluon_ws

    if torch.cuda.get_device_capability() != (9, 0) or not gluon_ws.available():
        pytest.skip("the Gluon GEMM is built for Hopper (sm_90)")
    return gluon_ws


@pytest.fixture
def gluon_calls(monkeypatch):
    """A list that records each launch of the Gluon kernel (on by default)."""
    gluon_ws = _gluon_or_skip()
    monkeypatch.delenv("TESSERA_GLUON_GEMM", raising=False)
    calls = []
    real = gluon_ws.launch
    monkeypatch.setattr(gluon_ws, "launch", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    return calls

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("M,N,K", [(1000, 776, 1000), (4096, 4096, 4096), (130, 264, 72), (8192, 264, 4104)])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("over", [{}, {"STAGES": 4, "SPLIT_N": 2}])
def test_gluon_warp_specialised_gemm_vs_float64(dtype, M, N, K, tb, over):
    """Ragged tiles in every dim, more tiles than SMs (persistent loop) and fewer, both B layouts,
    the output stored whole or in halves."""
    gluon_ws = _gluon_or_skip()
    a = rnd(M, K, dtype=dtype)
    b = rnd(N, K, dtype=dtype).t() if tb else rnd(K, N, dtype=dtype)
    assert gluon_ws.supported(a, b)
    out = gluon_ws.matmul_ws(a, b, **over)
    assert out.dtype == dtype and out.shape == (M, N) and torch.isfinite(out).all()
    assert rel(out, a.double() @ b.double()) < TOL[dtype]
    # a second call reuses the buffers of a finished store: the result must not change
    assert torch.equal(gluon_ws.matmul_ws(a, b, **over), out)


@pytest.mark.parametrize("bias,activation,residual,preact", [
    (True, "gelu", False, False), (True, "gelu_tanh", True, True), (False, "silu", False, True),
    (True, None, True, False), (False, "relu", True, False)])
@pytest.mark.parametrize("tb", [False, True])
def test_gluon_gemm_epilogue_vs_float64(bias, activation, residual, preact, tb):
    """The Gluon GEMM with the Triton kernels' epilogue (bias, activation, residual, pre-activation)
    against torch_epilogue of the float64 product, ragged tiles."""
    from tessera.kernels.matmul.epilogue import torch_epilogue

    gluon_ws = _gluon_or_skip()
    M, N, K = 1000, 776, 1032
    a, bias_t = rnd(M, K), (rnd(N) if bias else None)
    b = rnd(N, K).t() if tb else rnd(K, N)
    res = rnd(M, N) if residual else None
    got = gluon_ws.matmul_ws(a, b, bias=bias_t, activation=activation, residual=res, return_preact=preact)
    ref = torch_epilogue(a.double() @ b.double(), None if bias_t is None else bias_t.double(), activation,
                         None if res is None else res.double(), torch.float64, preact)
    for g, r in zip(got if preact else (got, ), ref if preact else (ref, )):
        assert g.shape == (M, N) and torch.isfinite(g).all()
        assert rel(g, r) < TOL[torch.bfloat16]


@pytest.mark.parametrize("tb", [False, True])
def test_matmul_entry_point_routes_plain_gemms_to_gluon(gluon_calls, monkeypatch, tb):
    """The entry point sends large plain Hopper GEMMs to the Gluon kernel (a repeated call through
    the remembered plan), keeps fused epilogues on the Triton kernel unless a config names the
    Gluon one, and leaves it alone under TESSERA_GLUON_GEMM=0; every result matches float64."""
    calls = gluon_calls
    M, N, K = 2048, 4104, 1032
    a, bias = rnd(M, K), rnd(N)
    b = rnd(N, K).t() if tb else rnd(K, N)
    plain = a.double() @ b.double()
    fused = torch.nn.functional.gelu(plain + bias.double())
    for _ in range(2):
        assert rel(matmul(a, b), plain) < TOL[torch.bfloat16]
    assert len(calls) == 2
    assert rel(matmul(a, b, bias=bias, activation="gelu"), fused) < TOL[torch.bfloat16] and len(calls) == 2
    out = matmul(a, b, bias=bias, activation="gelu", _config=GLUON_DEFAULT)
    assert rel(out, fused) < TOL[torch.bfloat16] and len(calls) == 3
    monkeypatch.setenv("TESSERA_GLUON_GEMM", "0")
    assert rel(matmul(a, b), plain) < TOL[torch.bfloat16] and len(calls) == 3


@pytest.mark.parametrize("M,N,K", [(1000, 776, 1024), (4096, 4096, 4096)])
@pytest.mark.parametrize("per_row", [False, True])
def test_gluon_fp8_gemm_vs_float64(M, N, K, per_row):
    """fp8 e4m3 operands (W stored K-major), per-tensor or per-row/column scales and a bias,
    against float64 of the dequantized operands."""
    gluon_ws = _gluon_or_skip()
    x, w = torch.randn(M, K, device="cuda"), torch.randn(N, K, device="cuda")
    (qa, sa), (qw, sw) = (quantize_fp8(x, axis=1), quantize_fp8(w, axis=1)) if per_row else \
        (quantize_fp8(x), quantize_fp8(w))
    sb = sw.t() if per_row else sw
    bias = rnd(N)
    assert gluon_ws.supported(qa, qw.t())
    out = gluon_ws.scaled_matmul_ws(qa, qw.t(), sa, sb, bias=bias)
    ref = (qa.double() * sa.double().reshape(-1, 1)) @ (qw.double() * sw.double().reshape(-1, 1)).t() + bias.double()
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert rel(out, ref) < 1e-2


def test_scaled_matmul_through_gluon_config(gluon_calls):
    """scaled_matmul runs a large fp8 GEMM on the Gluon kernel by default, and on the Triton kernel
    when its config names that; with a fused bias the Triton kernel is the default and the Gluon
    kernel runs when its config (the tuner's candidate) names it; every result matches float64."""
    calls = gluon_calls
    x, w = torch.randn(2048, 1040, device="cuda"), torch.randn(4104, 1040, device="cuda")
    (qa, sa), (qw, sw) = quantize_fp8(x, axis=1), quantize_fp8(w, axis=1)
    bias = rnd(4104)
    ref = (qa.double() * sa.double()) @ (qw.double() * sw.double()).t()
    assert rel(scaled_matmul(qa, qw.t(), sa, sw.t()), ref) < 1e-2 and len(calls) == 1
    tma = Config("tma", 128, 256, 128, 8, 3, 8, subtile=True, flatten=True)
    assert rel(scaled_matmul(qa, qw.t(), sa, sw.t(), _config=tma), ref) < 1e-2 and len(calls) == 1
    assert rel(scaled_matmul(qa, qw.t(), sa, sw.t(), bias=bias), ref + bias.double()) < 1e-2 and len(calls) == 1
    out = scaled_matmul(qa, qw.t(), sa, sw.t(), bias=bias, _config=replace(GLUON_DEFAULT, BK=128))
    assert len(calls) == 2 and rel(out, ref + bias.double()) < 1e-2


def test_gluon_gemm_empty_dims():
    """K = 0 gives the epilogue of a zero product; an empty output launches nothing."""
    gluon_ws = _gluon_or_skip()
    bias = rnd(264)
    out = gluon_ws.matmul_ws(rnd(130, 0), rnd(0, 264), bias=bias, activation="relu")
    assert torch.equal(out, torch.relu(bias.float()).to(out.dtype).expand(130, 264))
    assert gluon_ws.matmul_ws(rnd(0, 64), rnd(64, 264)).shape == (0, 264)


@pytest.mark.parametrize("M,N,K,tb,epilogue", [(1, 4096, 4096, True, "none"), (16, 1000, 4104, True, "bias"),
                                                (3, 520, 264, False, "residual"), (128, 2048, 512, True, "gelu")])
def test_repeated_calls_relaunch_with_the_new_tensors(M, N, K, tb, epilogue, launches):
    """After the first call of a signature, calls skip the launchers (the stored plan relaunches
    the compiled kernel) and still read their own operands and write a new output each time."""
    from tessera.kernels.matmul import api

    api._PLANS.clear()
    outs = []
    for i in range(4):
        a = rnd(M, K)
        b = rnd(N, K).t() if tb else rnd(K, N)
        kw = {"bias": rnd(N)} if epilogue == "bias" else {"residual": rnd(M, N)} if epilogue == "residual" else \
            {"bias": rnd(N), "activation": "gelu"} if epilogue == "gelu" else {}
        out = matmul(a, b, **kw)
        ref = a.double() @ b.double()
        if "bias" in kw:
            ref = ref + kw["bias"].double()
        if epilogue == "gelu":
            ref = torch.nn.functional.gelu(ref)
        if "residual" in kw:
            ref = ref + kw["residual"].double()
        assert rel(out, ref) < 1e-2, i
        outs.append(out)
    assert len(launches) == 1  # the first call only
    assert len({o.data_ptr() for o in outs}) == len(outs)  # each call its own output


def test_weight_only_repeated_calls_relaunch_with_the_new_tensors():
    from tessera.kernels.matmul import wo

    wo._PLANS.clear()
    for i in range(3):
        x, bias = rnd(2, 512), rnd(384)
        qw = q.quantize(torch.randn(512, 384, device="cuda"), "fp4_e2m1", 32)
        ref = x.double() @ q.dequantize(qw).double() + bias.double()
        assert rel(wo_matmul(x, qw, bias=bias), ref) < 1e-2, i
    assert len(wo._PLANS) == 1


def test_relaunch_is_declined_on_another_stream_and_inside_a_cuda_graph(launches):
    """A plan made on one stream launches through the launchers on another (split-K buffers are
    per stream) and while a graph is captured (the replay gets the graph's own buffers)."""
    from tessera.kernels.matmul import api

    api._PLANS.clear()
    a, w = rnd(4, 2048), rnd(1024, 2048)
    matmul(a, w.t())
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        a2 = rnd(4, 2048)
        out = matmul(a2, w.t())
    torch.cuda.current_stream().wait_stream(side)
    assert rel(out, a2.double() @ w.double().t()) < 1e-2
    assert len(launches) == 2
    x = rnd(4, 2048)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = matmul(x, w.t())
    for _ in range(2):
        x.copy_(rnd(4, 2048))
        graph.replay()
        torch.cuda.synchronize()
        assert rel(y, x.double() @ w.double().t()) < 1e-2
    assert len(launches) == 3
