"""``matmul`` and ``supports``: the bf16/fp16 GEMM entry points (fp32 through the interpreter).

Plan of a call: check the arguments; fold broadcast batch dims of ``a`` into M when ``b`` has
none of its own (the linear-layer case), so one 2-D persistent TMA GEMM covers it; otherwise run
the batched pointer kernel. The config is the heuristic default, or the tuned one (cached on
disk) with ``TESSERA_AUTOTUNE=1``; a tuned choice may be cuBLAS where it measured faster.
"""
from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import torch

from ...errors import TesseraDeviceError
from . import gluon_ws
from .autotune import autotune_enabled, choose
from .checks import check_matmul_args
from .configs import Config, Problem, candidates, default_config
from .epilogue import ACTIVATIONS, torch_epilogue
from .launch import interpreting, launch_ptr, launch_skinny, launch_tma, major, num_sms
from .plans import PlanCache


@lru_cache(maxsize=None)
def _capability(index: int) -> tuple:
    return torch.cuda.get_device_capability(index)


def _dev_index(t: torch.Tensor) -> int:
    return t.device.index if t.device.index is not None else torch.cuda.current_device()


def _device_ok(t: torch.Tensor) -> bool:
    if interpreting():
        return t.device.type == "cpu"
    return t.is_cuda and _capability(_dev_index(t))[0] >= 8


def supports(a, b, **kw) -> bool:
    """True when :func:`matmul` runs these arguments with Tessera's kernels; False means use torch.

    Example:
        >>> import torch
        >>> from tessera.kernels.matmul import supports
        >>> supports(torch.ones(4, 4, dtype=torch.int32), torch.ones(4, 4, dtype=torch.int32))
        False
    """
    try:
        check_matmul_args(a, b, kw.get("bias"), kw.get("activation"), kw.get("residual"), kw.get("out_dtype"),
                          kw.get("acc_dtype", torch.float32))
    except Exception:
        return False
    if not _device_ok(a):
        return False
    if a.is_cuda and a.dtype == torch.float32:
        return False  # fp32 stays with cuBLAS on the GPU (the kernels would use tf32 or slow ieee dots)
    return True


def _fold(a, b, out_shape, M, K, N):
    """2-D views (a2 [B*M, K], b2 [K, N]) when b's batch dims are all broadcast, else None."""
    batch = out_shape[:-2]
    b_exp = b.expand(*batch, K, N)
    if any(b_exp.stride(i) != 0 and batch[i] != 1 for i in range(len(batch))):
        return None
    b2 = b_exp[(0,) * len(batch)] if batch else b
    try:
        a2 = a.expand(*batch, M, K).view(-1, K) if batch else a
    except RuntimeError:
        return None
    return a2, b2


def _problem_key(a2, b2, out_dtype, bias, act, res, pre, acc_f16, la, lb, batch, p: Problem) -> dict:
    arch = "interp" if p.interpret else "sm%d%d" % _capability(_dev_index(a2))
    return {"op": "matmul", "arch": arch, "sms": p.num_sms, "dtype": str(a2.dtype), "out": str(out_dtype),
            "layout": [la[0] if la else "strided", lb[0] if lb else "strided"], "tma": p.tma_ok, "batched": batch > 1,
            "bucket": list(p.bucket()), "epilogue": [bias is not None, act, res is not None, pre], "acc16": acc_f16,
            "gluon": p.gluon_ok}


def _cublas(a, b, bias, activation, residual, out_dtype, return_preact):
    acc = torch.matmul(a, b)
    if bias is None and activation is None and residual is None and not return_preact:
        return acc.to(out_dtype)
    return torch_epilogue(acc, bias, activation, residual, out_dtype, return_preact)


# Plans of repeated 2-D calls (see plans.py).
_PLANS = PlanCache()


def _sig_of(t):
    return None if t is None else (t.shape, t.stride(), t.dtype, t.data_ptr() % 16)


def _signature(a, b, bias, activation, residual, out_dtype, acc_dtype, return_preact) -> tuple:
    return (_sig_of(a), _sig_of(b), a.device, _sig_of(bias) if isinstance(bias, torch.Tensor) else bias, activation,
            _sig_of(residual), out_dtype, acc_dtype, return_preact, autotune_enabled(), gluon_ws.enabled())


def _remember(sig, cfg, out, la, lb, act, acc_f16, interp, cublas, relaunch):
    """Store a plan that launches this call's kernel and config for new tensors of the same signature.

    ``relaunch`` (the first launch, its tensors named) skips Triton's argument binding; without
    it, or on another stream, the plan goes through the launchers."""
    shape, dtype = tuple(out.shape), out.dtype

    def plan(a_, b_, bias_, residual_):
        if cfg.kernel == "cublas":
            return cublas(a_, b_, bias_, residual_)
        out_ = torch.empty(shape, dtype=dtype, device=a_.device)
        bias_c = bias_.contiguous() if bias_ is not None else None
        res_ = residual_.expand(shape) if residual_ is not None else None
        if relaunch is None or not relaunch.launch(a=a_, b=b_, out=out_, bias=bias_c, res=res_):
            _launch_2d(cfg, a_, b_, out_, la, lb, bias_c, act, res_, None, acc_f16, interp)()
        return out_

    _PLANS.put(sig, plan)


def _launch_2d(cfg, a2, b2, out2, la, lb, bias_c, act, res2, pre2, acc_f16, interp):
    """The launch of a folded (2-D) problem with ``cfg``; cuBLAS is handled by the caller."""
    tma_ok = la is not None and lb is not None
    # TMA cannot read these strides in place; the skinny kernel accumulates in fp32 only
    if (cfg.kernel == "tma" and not tma_ok) or (cfg.kernel == "skinny" and (not tma_ok or acc_f16)):
        cfg = Config("ptr", 128, 128, 64, 8, 3, 8) if not interp else Config("ptr", 16, 32, 16, 4, 1, 4)
    if cfg.kernel == "gluon":  # chosen only where Problem.gluon_ok held
        return lambda: gluon_ws.launch(a2, b2, out2, bias_c, act, res2, pre2, **gluon_ws.overrides_of(cfg))
    if cfg.kernel == "tma":
        return lambda: launch_tma(a2, b2, out2, cfg, la, lb, bias=bias_c, act=act, res=res2, pre=pre2,
                                  acc_f16=acc_f16)
    if cfg.kernel == "skinny":
        return lambda: launch_skinny(a2, b2, out2, cfg, la, lb, bias=bias_c, act=act, res=res2, pre=pre2)
    return lambda: launch_ptr(a2, b2, out2, cfg, bias=bias_c, act=act, res=res2, pre=pre2, acc_f16=acc_f16)


def matmul(a, b, *, bias=None, activation=None, residual=None, out_dtype=None, acc_dtype=torch.float32,
           return_preact=False, _config: Config = None, _launcher: bool = False):
    """``act(a @ b + bias) + residual`` in one kernel; ``(out, preact)`` with ``return_preact``.

    a [..., M, K] and b [..., K, N] broadcast their batch dims and may have any strides.

    Example:
        >>> import torch
        >>> from tessera.kernels.matmul import matmul
        >>> x = torch.randn(8192, 4096, device="cuda", dtype=torch.bfloat16)     # doctest: +SKIP
        >>> w = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)     # doctest: +SKIP
        >>> y = matmul(x, w, bias=torch.zeros(4096, device="cuda"), activation="gelu")  # doctest: +SKIP
    """
    sig = None
    if _config is None and not _launcher and isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) \
            and a.dim() == 2 and b.dim() == 2 and (residual is None or isinstance(residual, torch.Tensor)):
        sig = _signature(a, b, bias, activation, residual, out_dtype, acc_dtype, return_preact)
        plan = _PLANS.get(sig)
        if plan is not None:
            return plan(a, b, bias, residual)
    M, N, K, out_shape = check_matmul_args(a, b, bias, activation, residual, out_dtype, acc_dtype)
    out_dtype = out_dtype or a.dtype
    if not _device_ok(a):
        raise TesseraDeviceError(
            f"matmul: tensors on {a.device} have no Tessera kernel here; call tessera.kernels.matmul.supports() "
            f"first and fall back to torch, or set TRITON_INTERPRET=1 for the CPU interpreter")
    act = ACTIVATIONS[activation]
    acc_f16 = acc_dtype == torch.float16
    out = torch.empty(out_shape, dtype=out_dtype, device=a.device)
    pre = torch.empty(out_shape, dtype=out_dtype, device=a.device) if return_preact else None
    if out.numel() == 0 or K == 0:
        res = torch_epilogue(torch.zeros(out_shape, dtype=torch.float32, device=a.device), bias, activation,
                             residual, out_dtype, return_preact)
        return res
    interp = interpreting()
    sms = num_sms(-1 if interp else _dev_index(a))
    bias_c = bias.contiguous() if bias is not None else None

    folded = _fold(a, b, out_shape, M, K, N)
    if folded is not None:
        a2, b2 = folded
        la, lb = major(a2), major(b2)
        res2 = None
        if residual is not None:
            r = residual.expand(out_shape)
            try:
                res2 = r.view(-1, N)
            except RuntimeError:
                res2 = r.reshape(-1, N)
        gluon_ok = not interp and not acc_f16 and out_dtype == a.dtype and gluon_ws.enabled() \
            and gluon_ws.supported(a2, b2)
        epilogue = bias is not None or act != 0 or residual is not None or return_preact
        p = Problem(a2.shape[0], N, K, 1, a.element_size(), la is not None and lb is not None, interp, sms,
                    gluon_ok=gluon_ok, epilogue=epilogue)
        out2, pre2 = out.view(-1, N), pre.view(-1, N) if pre is not None else None

        def run(cfg: Config):
            if cfg.kernel == "cublas":
                return lambda: _cublas(a, b, bias, activation, residual, out_dtype, return_preact)
            return _launch_2d(cfg, a2, b2, out2, la, lb, bias_c, act, res2, pre2, acc_f16, interp)
    else:
        batch = out_shape[:-2]
        a_e = a.expand(*batch, M, K)
        b_e = b.expand(*batch, K, N)
        r_e = residual.expand(out_shape) if residual is not None else None
        if len(batch) > 3:  # fold leading batch dims by looping over them
            lead = batch[:-3]
        nb = out.numel() // (M * N)
        la = lb = None
        p = Problem(M, N, K, nb, a.element_size(), False, interp, sms)

        def run(cfg: Config):
            if cfg.kernel == "cublas":
                return lambda: _cublas(a, b, bias, activation, residual, out_dtype, return_preact)
            cfg = cfg if cfg.kernel == "ptr" else default_config(p)
            if len(batch) <= 3:
                return lambda: launch_ptr(a_e, b_e, out, cfg, bias=bias_c, act=act, res=r_e, pre=pre, acc_f16=acc_f16)

            def loop():
                for idx in torch.cartesian_prod(*[torch.arange(s) for s in lead]).reshape(-1, len(lead)).tolist():
                    ix = tuple(idx)
                    launch_ptr(a.expand(*batch, M, K)[ix], b.expand(*batch, K, N)[ix], out[ix], cfg, bias=bias_c,
                               act=act, res=r_e[ix] if r_e is not None else None,
                               pre=pre[ix] if pre is not None else None, acc_f16=acc_f16)
            return loop

    if _config is not None:
        cfg = _config
    else:
        def key():
            return _problem_key(a, b, out_dtype, bias, act, residual, return_preact, acc_f16, la, lb, p.batch, p)
        memo = (p.bucket(), p.tma_ok, p.batch > 1, a.dtype, out_dtype, la and la[0], lb and lb[0],
                bias is not None, act, residual is not None, return_preact, acc_f16, str(a.device), p.gluon_ok)
        cfg = choose(key, memo, default_config(p), lambda: candidates(p) + [Config("cublas")], run,
                     f"matmul M={p.M} N={N} K={K} batch={p.batch} {a.dtype}")
        if cfg.kernel == "gluon" and not p.gluon_ok:  # remembered before TESSERA_GLUON_GEMM=0 was set
            cfg = default_config(replace(p, gluon_ok=False))
    go = run(cfg)
    if _launcher:  # benchmarks: the bare kernel launch, without this function's checks
        return go
    result = go()
    if sig is not None and folded is not None and not return_preact:
        relaunch = result.with_roles(a=a2, b=b2, out=out2, bias=bias_c, res=res2) \
            if cfg.kernel != "cublas" and result is not None else None
        _remember(sig, cfg, out, la, lb, act, acc_f16, interp,
                  lambda a_, b_, bias_, res_: _cublas(a_, b_, bias_, activation, res_, out_dtype, False), relaunch)
    if cfg.kernel == "cublas":
        return result
    return (out, pre) if return_preact else out
