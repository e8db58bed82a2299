"""tessera.optim against torch.optim: exact on CPU (torch path), close through the fused kernel (interpreter/GPU)."""
import math
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import tessera.optim as optim  # noqa: E402
from tessera.errors import TesseraShapeError, TesseraTypeError, TesseraValueError  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
SHAPES = [(3, 5), (17,), (1,), (2, 3, 4)]


def make_params(dtype, device="cpu", shapes=SHAPES, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).to(device) for s in shapes]


def grads_for(step, params, seed=100):
    g = torch.Generator().manual_seed(seed + step)
    return [torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype).to(p.device) for p in params]


def as_tree(leaves):
    return {"embed": leaves[0], "layers": [leaves[1], {"w": leaves[2]}], "head": (leaves[3],)}


def run_torch(cls, params, steps, lrs=None, **kw):
    ps = [p.clone().requires_grad_() for p in params]
    opt = cls(ps, **kw)
    for s in range(steps):
        if lrs is not None:
            for group in opt.param_groups:
                group["lr"] = lrs[s]
        for p, g in zip(ps, grads_for(s, params)):
            p.grad = g
        opt.step()
    return [p.detach() for p in ps]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["AdamW", "Adam"])
def test_adam_family_exact_vs_torch(dtype, name):
    params = make_params(dtype)
    hyper = dict(lr=3e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)
    ref = run_torch(getattr(torch.optim, name), params, 5, foreach=False, **hyper)
    # object form over a nested tree
    mine = as_tree([p.clone() for p in params])
    opt = getattr(optim, name)(mine, fused=False, **hyper)
    for s in range(5):
        opt.step(as_tree(grads_for(s, params)))
    leaves = [mine["embed"], mine["layers"][0], mine["layers"][1]["w"], mine["head"][0]]
    for a, b in zip(leaves, ref):
        assert torch.equal(a, b)
    # functional form
    init, update = (optim.adamw_init, optim.adamw_update) if name == "AdamW" else (optim.adam_init, optim.adam_update)
    ps = [p.clone() for p in params]
    state = init(ps)
    for s in range(5):
        ps, state = update(ps, grads_for(s, params), state, fused=False, **hyper)
    assert state.step == 5
    for a, b in zip(ps, ref):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hyper", [dict(lr=0.1), dict(lr=0.05, momentum=0.9, weight_decay=0.01),
                                   dict(lr=0.05, momentum=0.9, nesterov=True),
                                   dict(lr=0.05, momentum=0.5, dampening=0.3, weight_decay=0.1)])
def test_sgd_exact_vs_torch(dtype, hyper):
    params = make_params(dtype)
    ref = run_torch(torch.optim.SGD, params, 4, foreach=False, **hyper)
    mine = [p.clone() for p in params]
    opt = optim.SGD(mine, fused=False, **hyper)
    for s in range(4):
        opt.step(grads_for(s, params))
    for a, b in zip(mine, ref):
        assert torch.equal(a, b)


def test_functional_update_leaves_inputs_untouched():
    params = make_params(torch.float32)
    before = [p.clone() for p in params]
    state = optim.adamw_init(params)
    new, state2 = optim.adamw_update(params, grads_for(0, params), state, lr=0.1, fused=False)
    assert all(torch.equal(a, b) for a, b in zip(params, before))
    assert state.step == 0 and state2.step == 1 and float(state.exp_avg[0].abs().sum()) == 0
    assert not torch.equal(new[0], params[0])


def test_none_grads_are_skipped():
    params = make_params(torch.float32)
    before = [p.clone() for p in params]
    grads = grads_for(0, params)
    grads[1] = None
    optim.AdamW(params, lr=0.1, fused=False).step(grads)
    assert torch.equal(params[1], before[1]) and not torch.equal(params[0], before[0])


SIZES = [(1,), (17,), (4097,), (3, 1000), (5000,)]  # partial blocks, a full block plus one, several blocks


@pytest.mark.parametrize("name", ["AdamW", "Adam"])
def test_fused_kernel_matches_torch(name):
    params = make_params(torch.float32, shapes=SIZES, seed=1)
    hyper = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.05)
    ref = run_torch(getattr(torch.optim, name), params, 3, foreach=False, **hyper)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    mine = [p.clone().to(dev) for p in params]
    opt = getattr(optim, name)(mine, fused=True, **hyper)
    for s in range(3):
        opt.step([g.to(dev) for g in grads_for(s, params)])
    for a, b in zip(mine, ref):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hyper", [dict(lr=0.05, momentum=0.9, weight_decay=0.01), dict(lr=0.05, momentum=0.9,
                                                                                       nesterov=True), dict(lr=0.1),
                                   dict(lr=0.05, momentum=0.8, dampening=0.3)])
def test_fused_sgd_matches_torch(hyper):
    params = make_params(torch.float32, shapes=SIZES, seed=2)
    ref = run_torch(torch.optim.SGD, params, 3, foreach=False, **hyper)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    mine = [p.clone().to(dev) for p in params]
    opt = optim.SGD(mine, fused=True, **hyper)
    for s in range(3):
        opt.step([g.to(dev) for g in grads_for(s, params)])
    for a, b in zip(mine, ref):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-5, atol=1e-6)


# optimizer: (hyper-parameters, the state that must stay fp32, parameter seed)
MASTER_CASES = {"AdamW": (dict(lr=1e-2, weight_decay=0.1), "exp_avg", 3),
                "SGD": (dict(lr=0.05, momentum=0.9, weight_decay=0.01), "momentum_buffer", 4)}


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("name", sorted(MASTER_CASES))
def test_master_weights_follow_fp32_torch(name, fused):
    low = torch.float16  # the interpreter mishandles bf16; the GPU test covers it
    hyper, state, seed = MASTER_CASES[name]
    params32 = make_params(torch.float32, shapes=SIZES, seed=seed)
    ref = run_torch(getattr(torch.optim, name), params32, 3, foreach=False, **hyper)
    mine = [p.to(low) for p in params32]
    opt = getattr(optim, name)(mine, master_weights=True, fused=fused, **hyper)
    opt.state.master = [p.clone() for p in params32]  # start the masters from the exact fp32 values
    for s in range(3):
        opt.step([g.to(low) for g in grads_for(s, params32)])
    assert getattr(opt.state, state)[0].dtype == torch.float32
    for m, p, r in zip(opt.state.master, mine, ref):
        assert p.dtype == low
        # grads were rounded to fp16, so the fp32 reference differs by about that rounding
        torch.testing.assert_close(m, r, rtol=2e-3, atol=2e-4)
        assert torch.equal(p, m.to(low))


@pytest.mark.parametrize("name", ["AdamW", "SGD"])
def test_fused_step_is_one_launch_per_dtype_group(name, monkeypatch):
    from tessera.kernels.optim import _kernels

    kernel = _kernels.adam_mt_kernel if name == "AdamW" else _kernels.sgd_mt_kernel
    launches = []

    class Spy:
        def __getitem__(self, grid):
            return lambda *a, **k: (launches.append(k["P_TY"]), kernel[grid](*a, **k))[1]

    monkeypatch.setattr(_kernels, kernel.__name__, Spy())
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    params = make_params(torch.float32, dev, SIZES, 5) + make_params(torch.float16, dev, SIZES[:2], 6)
    hyper = dict(lr=0.01) if name == "AdamW" else dict(lr=0.01, momentum=0.9)
    getattr(optim, name)(params, fused=True, **hyper).step(grads_for(0, params))
    assert len(launches) == 2 and len(set(map(str, launches))) == 2  # seven tensors, two dtypes


def test_tessera_tensors_update_in_place():
    ts_tensor = pytest.importorskip("tessera.core.tensor")
    from tessera.interop import from_torch, to_torch

    params = make_params(torch.float32)
    ref = run_torch(torch.optim.AdamW, params, 2, foreach=False, lr=0.1)
    wrapped = [from_torch(p.clone()) for p in params]
    opt = optim.AdamW(wrapped, lr=0.1, fused=False)
    for s in range(2):
        opt.step([from_torch(g) for g in grads_for(s, params)])
    for w, r in zip(wrapped, ref):
        assert isinstance(w, ts_tensor.Tensor) and torch.equal(to_torch(w), r)
    new, _ = optim.sgd_update(wrapped, grads_for(0, params), optim.sgd_init(wrapped), lr=0.1, fused=False)
    assert isinstance(new[0], ts_tensor.Tensor)


def test_schedules():
    assert optim.cosine_warmup(0, warmup=10, total=110, peak_lr=1.0) == 0.0
    assert optim.cosine_warmup(5, warmup=10, total=110, peak_lr=1.0) == 0.5
    assert optim.cosine_warmup(10, warmup=10, total=110, peak_lr=1.0, min_lr=0.1) == 1.0
    assert math.isclose(optim.cosine_warmup(60, warmup=10, total=110, peak_lr=1.0, min_lr=0.1), 0.55)
    assert optim.cosine_warmup(500, warmup=10, total=110, peak_lr=1.0, min_lr=0.1) == 0.1
    assert optim.linear_warmup(3, warmup=4, peak_lr=2.0) == 1.5
    assert optim.linear_warmup(1000, warmup=4, peak_lr=2.0) == 2.0
    assert math.isclose(optim.linear_warmup(54, warmup=4, total=104, peak_lr=2.0, min_lr=1.0), 1.5)
    s = optim.CosineWarmup(warmup=2, total=6, peak_lr=0.1, min_lr=0.01)
    assert [s(i) for i in range(7)] == [optim.cosine_warmup(i, warmup=2, total=6, peak_lr=0.1, min_lr=0.01)
                                        for i in range(7)]
    with pytest.raises(TesseraValueError):
        optim.cosine_warmup(1, warmup=10, total=5, peak_lr=1.0)
    with pytest.raises(TesseraValueError):
        optim.LinearWarmup(warmup=1, peak_lr=1.0, min_lr=2.0)
    with pytest.raises(TesseraValueError):
        optim.cosine_warmup(-1, warmup=1, total=5, peak_lr=1.0)


def test_schedule_as_lr_matches_torch_with_same_rates():
    params = make_params(torch.float32)
    sched = optim.CosineWarmup(warmup=2, total=5, peak_lr=0.1, min_lr=0.01)
    ref = run_torch(torch.optim.AdamW, params, 5, lrs=[sched(i) for i in range(5)], foreach=False, lr=1.0)
    mine = [p.clone() for p in params]
    opt = optim.AdamW(mine, lr=sched, fused=False)
    for s in range(5):
        assert opt.current_lr() == sched(s)
        opt.step(grads_for(s, params))
    for a, b in zip(mine, ref):
        assert torch.equal(a, b)


def test_clip_grad_norm_matches_torch():
    grads = grads_for(0, make_params(torch.float32))
    mine = {"a": [g.clone() for g in grads[:2]], "b": [g.clone() for g in grads[2:]]}
    ref = [g.clone() for g in grads]
    ps = [torch.zeros_like(g, requires_grad=True) for g in ref]
    for p, g in zip(ps, ref):
        p.grad = g
    total_ref = torch.nn.utils.clip_grad_norm_(ps, 0.5)
    total = optim.clip_grad_norm(mine, 0.5)
    torch.testing.assert_close(total, total_ref)
    for a, p in zip(mine["a"] + mine["b"], ps):
        torch.testing.assert_close(a, p.grad)
    small = [torch.full((3,), 0.01)]
    optim.clip_grad_norm(small, 10.0)
    assert torch.equal(small[0], torch.full((3,), 0.01))  # under the bound: untouched
    with pytest.raises(TesseraValueError):
        optim.clip_grad_norm(small, 0.0)
    with pytest.raises(TesseraValueError):
        optim.clip_grad_norm(small, float("inf"))


@pytest.mark.parametrize("kw", [dict(lr=float("nan")), dict(lr=-1.0), dict(lr=float("inf")), dict(betas=(-0.1, 0.9)),
                                dict(betas=(0.9, 1.0)), dict(betas=(0.9,)), dict(eps=-1e-8),
                                dict(weight_decay=float("inf")), dict(lr="fast")])
def test_bad_hyperparameters_raise(kw):
    with pytest.raises(TesseraValueError):
        optim.AdamW([torch.ones(2)], **{"lr": 1e-3, **kw})


def test_bad_inputs_raise():
    with pytest.raises(TesseraValueError):
        optim.SGD([torch.ones(2)], lr=0.1, nesterov=True)
    with pytest.raises(TesseraValueError):
        optim.SGD([torch.ones(2)], lr=0.1, momentum=-0.9)
    params = {"w": torch.ones(2)}
    opt = optim.AdamW(params, lr=0.1, fused=False)
    with pytest.raises(TesseraShapeError):
        opt.step([torch.ones(2)])  # structure differs
    with pytest.raises(TesseraShapeError):
        opt.step({"w": torch.ones(3)})
    with pytest.raises(TesseraTypeError):
        optim.adamw_init({"w": "not a tensor"})
    with pytest.raises(TesseraTypeError):
        optim.adamw_update(params, params, optim.sgd_init(params), lr=0.1)
    bad = optim.AdamW([torch.ones(2)], lr=lambda step: float("nan"), fused=False)
    with pytest.raises(TesseraValueError, match="schedule"):
        bad.step([torch.ones(2)])


@pytest.mark.gpu
@needs_cuda
def test_gpu_bf16_master_weights_vs_fp32_torch():
    params32 = make_params(torch.float32, "cuda", shapes=[(4096, 33), (1,), (70001,), (8, 8)], seed=5)
    ref = run_torch(torch.optim.AdamW, params32, 4, lr=1e-2, weight_decay=0.1)
    bf = [p.to(torch.bfloat16) for p in params32]
    opt = optim.AdamW(bf, lr=1e-2, weight_decay=0.1, master_weights=True)
    opt.state.master = [p.clone() for p in params32]
    for s in range(4):
        opt.step([g.to(torch.bfloat16) for g in grads_for(s, params32)])
    for p, m, r in zip(bf, opt.state.master, ref):
        assert ((m - r).norm() / r.norm()).item() < 1e-2
        assert torch.equal(p, m.to(torch.bfloat16))


@pytest.mark.gpu
@needs_cuda
def test_gpu_fused_matches_torch_fused_fp32():
    params = make_params(torch.float32, "cuda", shapes=[(1000, 77), (5,), (4096,)], seed=6)
    ref = run_torch(torch.optim.AdamW, params, 3, fused=True, lr=1e-3, weight_decay=0.01)
    mine = [p.clone() for p in params]
    opt = optim.AdamW(mine, lr=1e-3, weight_decay=0.01)
    for s in range(3):
        opt.step(grads_for(s, params))
    for a, b in zip(mine, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fused_kernel_several_blocks_per_program():
    from tessera.kernels.optim import fused_available, multi_tensor_adam

    params = make_params(torch.float32, shapes=[(1,), (200,), (64,), (3, 70)], seed=8)
    if not fused_available(params[0]):
        pytest.skip("needs CUDA or the Triton interpreter")
    grads = grads_for(0, params)
    ref = [p.clone() for p in params]
    opt = optim.AdamW(ref, lr=0.1, weight_decay=0.1, fused=False)
    opt.step(grads)
    mine = [p.clone() for p in params]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    multi_tensor_adam(mine, grads, m, v, None, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1, step=1,
                      adamw=True, block=16, num_warps=1, iters=3)
    for a, b in zip(mine, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(m, opt.state.exp_avg):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
