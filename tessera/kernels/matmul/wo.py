"""``wo_matmul``: activations times a weight-only quantized (fp6 / fp4) weight, dequantised in-kernel."""
from __future__ import annotations

import torch
import triton

from ...errors import TesseraDeviceError, TesseraDTypeError, TesseraShapeError, TesseraTypeError, TesseraValueError
from ...quant.weights import QuantizedWeight
from .autotune import autotune_enabled, choose
from .plans import PlanCache
from .configs import Config, split_k_for
from .kernel_wo import wo_matmul_kernel
from ..triton_launch import ensure_allocator, launch
from .launch import interpreting, num_sms, splitk_workspace, tile_counters


def _default(M, N, KP, bits, sms, interp) -> Config:
    if interp:
        return Config("wo", 16, 16, 64 if bits == 6 else 32, 1, 1, 4, 2 if KP >= 128 else 1)
    # H100 sweeps (benchmarks/results/matmul.md): TMA loads and this split were the fastest
    # weight-only config at M=1 at 4096^2 and 8192^2; 3 stages for the packed decodes (fp4: of 48
    # configs over BN, BK, warps, stages, split; fp6: 48.3 vs 52.1 us with 4 at 8192^2).
    BM = 16 if M <= 16 else 32 if M <= 32 else 64
    BN, BK = 64, 128
    # split doubled while tiles x split < 2 x SMs (so it may end near 4 programs per SM)
    split = split_k_for(-(-M // BM) * -(-N // BN), KP, BK, 4 * sms - 1, 2)
    return Config("wo", BM, BN, BK, 1, 3, 4, split, tma_loads=True)


def _candidates(M, N, KP, bits, sms):
    d = _default(M, N, KP, bits, sms, False)
    out = [d]
    if M == 1:  # one row: also the multiply-and-reduce path without tensor cores (BM=1)
        out += [Config("wo", 1, BN, 128, 1, 3, 4, d.split_k) for BN in (32, 64)]
    for BN in (64, 128):
        for BK in ((128, 256) if bits == 4 else (64, 128)):
            for split in sorted({max(1, d.split_k // 2), d.split_k, d.split_k * 2}):
                if KP // split >= BK:
                    out.append(Config("wo", d.BM, BN, BK, 1, 3, 4, split))
                    out.append(Config("wo", d.BM, BN, BK, 1, 4, 4, split, tma_loads=True))
    return list(dict.fromkeys(out))


def _kernel_constants(cfg: Config, fmt, group_size: int, bf16_x: bool, use_tma: bool, has_bias: bool) -> dict:
    """The kernel's compile-time arguments for ``cfg`` (and ``num_warps``)."""
    return dict(BITS=fmt.bits, EBITS=fmt.ebits, MBITS=fmt.mbits, GS=group_size, BM=cfg.BM, BN=cfg.BN,
                # a K block holds whole groups and whole blocks of the stored order
                BK=max(cfg.BK, group_size, 32), SPLIT_K=cfg.split_k, HAS_BIAS=has_bias, USE_TMA=use_tma,
                STAGES=cfg.stages,
                # inline assembly: its tensor-core dot needs 16 rows, and each pack's codes in at most
                # two groups (groups of 16 or more)
                PACKED=cfg.packed and bf16_x and cfg.BM >= 16 and group_size >= 16,
                SWAP=cfg.swap and cfg.BM > 1, num_warps=cfg.warps)


def _launch_wo(cfg: Config, x2, qw, out, bias):
    """The kernel launch for ``x2 [M, K] @ dequantize(qw)`` into ``out [M, N]`` with ``cfg``; the
    returned function launches and returns the launch's Relaunch (None under the interpreter)."""
    M, K = x2.shape
    N = qw.shape[1]
    data, scales = qw.data, qw.scales
    bias = bias.contiguous() if bias is not None else None
    tiles = triton.cdiv(M, cfg.BM) * triton.cdiv(N, cfg.BN)
    use_tma = cfg.tma_loads and data.stride(0) % 16 == 0 and data.data_ptr() % 16 == 0  # TMA: 16-byte pitch
    consts = _kernel_constants(cfg, qw.fmt, qw.group_size, x2.dtype == torch.bfloat16 and not interpreting(),
                               use_tma, bias is not None)
    if use_tma:
        ensure_allocator()
    ws = cnt = out
    if cfg.split_k > 1:
        ws = splitk_workspace(x2.device, tiles * cfg.split_k * cfg.BM * cfg.BN)
        cnt = tile_counters(x2.device, tiles)

    def go():
        return launch(
            wo_matmul_kernel, (tiles * cfg.split_k,), x2, data, scales, bias if bias is not None else out, out, ws, cnt,
            M, N, K, qw.k_padded, data.stride(0), scales.stride(0), x2.stride(0), x2.stride(1), **consts)
    return go


# Plans of repeated calls, keyed by what the checks and the config choice read (as for matmul).
_PLANS = PlanCache()


def _signature(x, qw, bias, out_dtype) -> tuple:
    return (x.shape, x.stride(), x.dtype, x.device, x.data_ptr() % 16, qw.shape, qw.fmt.name, qw.group_size,
            qw.data.shape, qw.data.stride(), qw.data.device, qw.data.data_ptr() % 16, qw.scales.shape,
            qw.scales.stride(), qw.scales.dtype, qw.scales.data_ptr() % 16,
            None if bias is None else (bias.shape, bias.stride(), bias.dtype, bias.device, bias.data_ptr() % 16),
            out_dtype,
            autotune_enabled())


def wo_matmul(x, qw, *, bias=None, out_dtype=None, _config: Config = None, _launcher: bool = False):
    """``x @ dequantize(qw) + bias`` with the weight read packed (fp6: 6 bits, fp4: 4 bits per value).

    x [..., K] bfloat16/float16 (float32 under the interpreter); ``qw`` from ``tessera.quant.quantize``
    of a [K, N] weight. Fastest for decode shapes (M <= 16 rows), which only stream the weight.

    Example:
        >>> import torch, tessera.quant as q
        >>> from tessera.kernels.matmul import wo_matmul
        >>> qw = q.quantize(torch.randn(4096, 4096), "fp4_e2m1").to("cuda")                   # doctest: +SKIP
        >>> y = wo_matmul(torch.randn(1, 4096, device="cuda", dtype=torch.bfloat16), qw)      # doctest: +SKIP
    """
    sig = None
    if _config is None and not _launcher and isinstance(qw, QuantizedWeight) and isinstance(x, torch.Tensor) \
            and (bias is None or isinstance(bias, torch.Tensor)):
        sig = _signature(x, qw, bias, out_dtype)
        plan = _PLANS.get(sig)
        if plan is not None:
            return plan(x, qw, bias)
    if not isinstance(qw, QuantizedWeight):
        raise TesseraTypeError(f"wo_matmul: qw must be a tessera.quant.QuantizedWeight, got {type(qw).__name__}; "
                               f"make one with tessera.quant.quantize(w, 'fp4_e2m1')")
    if not isinstance(x, torch.Tensor):
        raise TesseraTypeError(f"wo_matmul: x must be a torch.Tensor, got {type(x).__name__}")
    K, N = qw.shape
    if x.dim() < 1 or x.shape[-1] != K:
        raise TesseraShapeError(f"wo_matmul: x has shape {tuple(x.shape)} but the weight expects K={K} inputs "
                                f"(x's last dim); the weight is [K, N]=[{K}, {N}]")
    allowed = (torch.bfloat16, torch.float16) + ((torch.float32,) if interpreting() else ())
    if x.dtype not in allowed:
        raise TesseraDTypeError(f"wo_matmul: x must be one of {allowed}, got {x.dtype}; cast it with x.to(torch.bfloat16)")
    interp = interpreting()
    if (interp and x.device.type != "cpu") or (not interp and not x.is_cuda):
        raise TesseraDeviceError(f"wo_matmul: no Tessera kernel for tensors on {x.device}; dequantize and use torch")
    if qw.data.device != x.device:
        raise TesseraDeviceError(f"wo_matmul: qw is on {qw.data.device}, x on {x.device}; move it with qw.to(x.device)")
    row_bytes = qw.k_padded * qw.fmt.bits // 8
    if qw.k_padded % 32 or qw.k_padded < K:
        raise TesseraShapeError(f"wo_matmul: qw's scales cover K_padded={qw.k_padded} inputs, which must reach K={K} "
                                f"in whole blocks of 32 (the stored K order); make it with tessera.quant.quantize")
    if qw.data.dim() != 2 or tuple(qw.data.shape) != (N, row_bytes):
        raise TesseraShapeError(f"wo_matmul: qw.data has shape {tuple(qw.data.shape)}, but a [K, N]=[{K}, {N}] "
                                f"{qw.fmt.name} weight in groups of {qw.group_size} is stored as [{N}, {row_bytes}] "
                                f"bytes; make it with tessera.quant.quantize")
    if qw.data.stride(-1) != 1 or (qw.fmt.bits == 4 and (qw.data.stride(0) % 2 or qw.data.data_ptr() % 2)):
        raise TesseraValueError(f"wo_matmul: qw.data must hold whole rows of packed codes, as quantize makes it "
                                f"(got strides {qw.data.stride()}); pass qw.data.contiguous()")
    if bias is not None and (not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (N,)):
        raise TesseraShapeError(f"wo_matmul: bias must be a tensor of shape [N]=[{N}]")
    out_dtype = out_dtype or x.dtype
    lead = x.shape[:-1]
    x2 = x.reshape(-1, K)
    M = x2.shape[0]
    out = torch.empty(M, N, dtype=out_dtype, device=x.device)
    if M == 0:
        return out.reshape(*lead, N)
    f = qw.fmt
    KP = qw.k_padded
    sms = num_sms(-1 if interp else (x.device.index if x.device.index is not None else torch.cuda.current_device()))

    bias_c = bias.contiguous() if bias is not None else None

    def run(cfg: Config):
        return _launch_wo(cfg, x2, qw, out, bias_c)

    if _config is not None:
        cfg = _config
    else:
        default = _default(M, N, KP, f.bits, sms, interp)
        bm = 1 if M == 1 else default.BM  # one row tunes apart: it may take the BM=1 path
        def key():
            return {"op": "wo_matmul",
                    "arch": "interp" if interp else "sm%d%d" % torch.cuda.get_device_capability(x.device),
                    "sms": sms, "fmt": f.name, "gs": qw.group_size, "x": str(x.dtype), "out": str(out_dtype),
                    "m": bm, "n": N, "k": KP, "bias": bias is not None, "decode": 5}
        memo = ("wo", f.name, qw.group_size, bm, N, KP, x.dtype, out_dtype, bias is not None, str(x.device))
        cfg = choose(key, memo, default, lambda: _candidates(M, N, KP, f.bits, sms), run,
                     f"wo_matmul {f.name} M={M} N={N} K={K}")
    go = run(cfg)
    if _launcher:  # benchmarks: the bare kernel launch, without this function's checks
        return go
    relaunch = go()
    if sig is not None:
        if relaunch is not None:
            relaunch = relaunch.with_roles(x=x2, data=qw.data, scales=qw.scales, out=out, bias=bias_c)
        _remember(sig, cfg, (M, N), out_dtype, lead, relaunch)
    return out.reshape(*lead, N)


def _remember(sig, cfg, out_shape, out_dtype, lead, relaunch):
    """Store the plan of this signature; ``relaunch`` as for ``matmul``'s plans."""
    def plan(x, qw, bias):
        out = torch.empty(out_shape, dtype=out_dtype, device=x.device)
        x2 = x.reshape(-1, qw.shape[0])
        bias_c = bias.contiguous() if bias is not None else None
        if relaunch is None or not relaunch.launch(x=x2, data=qw.data, scales=qw.scales, out=out, bias=bias_c):
            _launch_wo(cfg, x2, qw, out, bias_c)()
        return out.reshape(*lead, out_shape[1])

    _PLANS.put(sig, plan)


def compile_sm90(fmt: str = "fp4_e2m1", group_size: int = 32, config: Config = None):
    """Compile the weight-only kernel for sm_90 without a GPU, as a launch with bf16 activations and
    aligned rows would (the result's ``asm`` holds PTX and cubin); ``config`` defaults to the
    swapped product over 64 x 256 tiles.

    Example:
        >>> k = compile_sm90("fp4_e2m1", 16)          # doctest: +SKIP
        >>> "wgmma.mma_async" in k.asm["ptx"]         # doctest: +SKIP
        True
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from ...quant import get_format

    cfg = config or Config("wo", 16, 64, 256, 1, 3, 4, 2, tma_loads=True, swap=True)
    kernel = wo_matmul_kernel
    ptrs = dict(x_ptr="*bf16", q_ptr="*u8", s_ptr="*bf16", bias_ptr="*bf16", out_ptr="*bf16", ws_ptr="*fp32",
                cnt_ptr="*i32")
    consts = _kernel_constants(cfg, get_format(fmt), group_size, True, cfg.tma_loads, False)
    num_warps = consts.pop("num_warps")
    consts["sxk"] = 1  # unit-stride activations, specialised at launch as Triton does
    aligned = {"ldq", "lds", "sxm", "KP", "K"}
    sig, attrs = {}, {}
    for i, name in enumerate(kernel.arg_names):
        sig[name] = "constexpr" if name in consts else ptrs.get(name, "i32")
        if name in ptrs or name in aligned:
            attrs[(i,)] = [["tt.divisibility", 16]]
    return triton.compile(ASTSource(kernel, sig, consts, attrs), target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": num_warps})
