"""Host side of the attention kernels: strides, grids, the TMA decision and the launches.

Dense and packed (varlen) inputs share these launchers: a dense ``[B, H, S, D]`` tensor is
described by its four strides, a packed ``[total, H, D]`` one by (0, head, token, dim)
strides plus the cumulative sequence offsets.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import triton

from . import backward as _bwd
from . import forward as _fwd
from . import hopper_ws, hopper_ws_bwd
from ..triton_launch import ensure_allocator
from .configs import bwd_configs, fwd_config, interpreted, pad_head_dim
from .tiles import LOG2E_HOST as LOG2E

@dataclass
class Problem:
    """Shapes and options of one attention call, dense or packed."""

    B: int
    H: int
    Hkv: int
    Sq: int  # dense: the length; varlen: the longest sequence
    Sk: int
    D: int
    causal: bool
    scale: float
    dropout_p: float = 0.0
    seed: int = 0
    varlen: bool = False
    cu_q: Optional[torch.Tensor] = None
    cu_k: Optional[torch.Tensor] = None


def strides4(x: torch.Tensor, varlen: bool):
    """(batch, head, token, dim) strides of a dense [B, H, S, D] or packed [T, H, D] tensor."""
    if varlen:
        return (0, x.stride(1), x.stride(0), x.stride(2))
    return tuple(x.stride())


def lse_strides(lse: torch.Tensor, varlen: bool):
    """(batch, head) strides of lse: dense [B, H, Sq] or packed [H, total_q]; tokens are unit-stride."""
    return (0, lse.stride(0)) if varlen else (lse.stride(0), lse.stride(1))


def mask_args(mask, prob: Problem, like: torch.Tensor):
    """(tensor, kind, strides): kind 0 none, 1 bool, 2 additive; broadcast dims get stride 0."""
    if mask is None:
        return like, 0, (0, 0, 0, 0)
    m = mask
    while m.dim() < 4:
        m = m.unsqueeze(0)
    kind = 2
    if m.dtype == torch.bool:
        m, kind = m.view(torch.uint8), 1
    m = m.expand(prob.B, prob.H, prob.Sq, prob.Sk)
    return m, kind, tuple(m.stride())


def tma_usable(*pairs) -> bool:
    """Tensor descriptors need sm_90+, unit-stride rows, 16-byte aligned bases and row strides."""
    if interpreted():
        return False
    first = pairs[0][0]
    if not first.is_cuda or torch.cuda.get_device_capability(first.device)[0] < 9:
        return False
    for t, st in pairs:
        es = t.element_size()
        if st[3] != 1 or st[2] <= 0 or t.data_ptr() % 16:
            return False
        if any((s * es) % 16 for s in st[:3]):
            return False
    return True


def tma_mode(prob: Problem, use_tma, *pairs) -> int:
    """0: pointer loads; 1: device-side descriptors; 2: host-side 4-D descriptors (dense, D a power of 2).

    ``use_tma`` None chooses the fastest mode the inputs allow; True means 1 or 2, False 0."""
    if any(t.numel() == 0 for t, _ in pairs):
        return 0
    if use_tma is None or use_tma is True:
        if not tma_usable(*pairs) and use_tma is None:
            return 0
        host_ok = not prob.varlen and pad_head_dim(prob.D) == prob.D
        return 2 if host_ok else 1
    return int(use_tma)


def host_desc(t: torch.Tensor, rows: int, mode: int, cols: int):
    """A host descriptor over a 4-D tensor ([B, H, S, D], or [B, H, D, S] for fp8's V) with
    [1, 1, rows, cols] blocks when mode is 2, else the tensor itself."""
    if mode != 2:
        return t
    from triton.tools.tensor_descriptor import TensorDescriptor

    return TensorDescriptor(t, list(t.shape), list(t.stride()), [1, 1, rows, cols])


def launch_options(cfg: dict) -> dict:
    """Triton launch options of a block config; ``maxnreg`` caps registers so more programs share an SM."""
    opts = {"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]}
    if cfg.get("maxnreg") and not interpreted():
        opts["maxnreg"] = cfg["maxnreg"]
    return opts


def _cu(prob: Problem, like):
    if prob.varlen:
        return prob.cu_q, prob.cu_k
    dummy = torch.zeros(1, dtype=torch.int32, device=like.device)
    return dummy, dummy


def run_forward(q, k, v, mask, prob: Problem, config=None, use_tma=None, descale=None):
    """Launch the forward kernel; returns (o, lse).

    Dense bf16/fp16 inputs without a mask or dropout run the warp-specialised Hopper kernel
    (``hopper_ws``) on sm_90 unless a ``config`` or ``use_tma`` pins the portable one.

    ``descale`` (float32 [3] on q's device: the dequantisation multipliers of q, k, v) selects
    the fp8 path: dense e4m3 inputs, bf16 output, V read sequence-contiguous (copied into that
    layout on each call unless it already is)."""
    fp8 = descale is not None
    o = torch.empty_like(q, dtype=torch.bfloat16) if fp8 else torch.empty_like(q)
    vt = None
    if fp8:
        if v.stride(2) != 1:
            v = v.transpose(2, 3).contiguous().transpose(2, 3)
        vt = v.transpose(2, 3)
    if prob.varlen:
        lse = torch.empty(prob.H, q.shape[0], dtype=torch.float32, device=q.device)
    else:
        lse = torch.empty(prob.B, prob.H, prob.Sq, dtype=torch.float32, device=q.device)
    if o.numel() == 0 or prob.Sq == 0:
        return o, lse.fill_(float("-inf"))
    m, kind, sm = mask_args(mask, prob, q)
    if (not fp8 and config is None and use_tma is None and not kind and not prob.varlen and prob.dropout_p == 0
            and hopper_ws.supported(q, k, v, o)):
        return hopper_ws.run_forward_ws(q, k, v, o, lse, prob.H, prob.Hkv, prob.Sq, prob.Sk, prob.scale, prob.causal)
    sq, sk, sv, so = (strides4(t, prob.varlen) for t in (q, k, v, o))
    v_pair = (v, sv) if vt is None else (vt, tuple(vt.stride()))
    mode = tma_mode(prob, use_tma, (q, sq), (k, sk), v_pair, (o, so))
    if mode == 1 and not interpreted():
        ensure_allocator()
    cfg = dict(config or fwd_config(prob.D, prob.causal, fp8=fp8))
    if kind or prob.dropout_p > 0:  # the mask tiles' pipeline buffers must fit in shared memory too
        cfg["num_stages"] = min(cfg["num_stages"], 2)
    cu_q, cu_k = _cu(prob, q)
    grid = (triton.cdiv(prob.Sq, cfg["BLOCK_M"]), prob.B * prob.H)
    D_PAD, BM, BN = pad_head_dim(prob.D), cfg["BLOCK_M"], cfg["BLOCK_N"]
    v_arg = host_desc(v, BN, mode, D_PAD) if vt is None else host_desc(vt, D_PAD, mode, BN)
    _fwd._fwd_kernel[grid](
        host_desc(q, BM, mode, D_PAD), host_desc(k, BN, mode, D_PAD), v_arg,
        host_desc(o, BM, mode, D_PAD), lse, m, cu_q, cu_k, descale if fp8 else lse,
        *sq, *sk, *sv, *so, *lse_strides(lse, prob.varlen), *sm,
        prob.H, prob.H // prob.Hkv, prob.Sq, prob.Sk, prob.scale * LOG2E, float(prob.dropout_p), int(prob.seed),
        HEAD_DIM=prob.D, D_PAD=pad_head_dim(prob.D), BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
        CAUSAL=prob.causal, MASK_KIND=kind, DROPOUT=prob.dropout_p > 0, VARLEN=prob.varlen, USE_TMA=mode,
        FP8=fp8, **launch_options(cfg))
    return o, lse


def run_backward(do, q, k, v, o, lse, mask, prob: Problem, configs=None, use_tma=None):
    """Launch delta, dK/dV and dQ kernels; returns (dq, dk, dv).

    Dense bf16/fp16 inputs without a mask or dropout run the warp-specialised dK/dV and dQ
    kernels (``hopper_ws_bwd``, at the head dims and lengths they serve) on sm_90 unless
    ``configs`` or ``use_tma`` pin the portable ones; where the dK/dV kernel computes dQ too
    (``hopper_ws_bwd.fuses_dq``), no dQ kernel runs."""
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if q.numel() == 0 or k.numel() == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    if lse.stride(-1) != 1:
        lse = lse.contiguous()
    delta = torch.empty_like(lse)
    sq, sk, sv, so, sdo, sdq, sdk, sdv = (strides4(t, prob.varlen) for t in (q, k, v, o, do, dq, dk, dv))
    mode = tma_mode(prob, use_tma, (q, sq), (k, sk), (v, sv), (do, sdo))
    if mode == 1 and not interpreted():
        ensure_allocator()
    cfg_kv, cfg_q = (dict(c) for c in (configs or bwd_configs(prob.D, prob.causal)))
    m, kind, sm = mask_args(mask, prob, q)
    if kind or prob.dropout_p > 0:
        for c in (cfg_kv, cfg_q):
            c["num_stages"] = min(c["num_stages"], 2)
    cu_q, cu_k = _cu(prob, q)
    sl = lse_strides(lse, prob.varlen)
    D_PAD = pad_head_dim(prob.D)
    common = dict(HEAD_DIM=prob.D, D_PAD=D_PAD, CAUSAL=prob.causal, MASK_KIND=kind,
                  DROPOUT=prob.dropout_p > 0, VARLEN=prob.varlen, USE_TMA=mode)
    qk_scale = prob.scale * LOG2E
    bm_delta = 64 if D_PAD <= 128 else 32
    _bwd._delta_kernel[(triton.cdiv(prob.Sq, bm_delta), prob.B * prob.H)](
        o, do, delta, cu_q, *so, *sdo, *sl, prob.H, prob.Sq,
        HEAD_DIM=prob.D, D_PAD=D_PAD, BLOCK_M=bm_delta, VARLEN=prob.varlen, num_warps=4)
    group = prob.H // prob.Hkv
    plain = configs is None and use_tma is None and not kind and not prob.varlen and prob.dropout_p == 0
    ws_args = (lse, delta, prob.H, prob.Hkv, prob.Sq, prob.Sk, prob.scale, prob.causal)
    dq_done = False
    if plain and hopper_ws_bwd.supported(q, k, v, do, dk, dv):
        dq_done = hopper_ws_bwd.run_dkdv_ws(q, k, v, do, dk, dv, *ws_args, dq=dq)[2] is not None
    else:
        _bwd._dkdv_kernel[(triton.cdiv(prob.Sk, cfg_kv["BLOCK_N"]), prob.B * prob.Hkv)](
            host_desc(q, cfg_kv["BLOCK_M"], mode, D_PAD), k, v, host_desc(do, cfg_kv["BLOCK_M"], mode, D_PAD), lse,
            delta, m, dk, dv, cu_q, cu_k, *sq, *sk, *sv, *sdo, *sdk, *sdv, *sl, *sm,
            prob.H, prob.Hkv, group, prob.Sq, prob.Sk, qk_scale, prob.scale, float(prob.dropout_p), int(prob.seed),
            BLOCK_M=cfg_kv["BLOCK_M"], BLOCK_N=cfg_kv["BLOCK_N"], **launch_options(cfg_kv), **common)
    if dq_done:  # the dK/dV kernel has computed dQ
        return dq, dk, dv
    if plain and hopper_ws_bwd.supported_dq(q, k, v, do, dq):
        hopper_ws_bwd.run_dq_ws(q, k, v, do, dq, *ws_args)
    else:
        _bwd._dq_kernel[(triton.cdiv(prob.Sq, cfg_q["BLOCK_M"]), prob.B * prob.H)](
            q, host_desc(k, cfg_q["BLOCK_N"], mode, D_PAD), host_desc(v, cfg_q["BLOCK_N"], mode, D_PAD), do, lse,
            delta, m, dq, cu_q, cu_k, *sq, *sk, *sv, *sdo, *sdq, *sl, *sm,
            prob.H, group, prob.Sq, prob.Sk, qk_scale, prob.scale, float(prob.dropout_p), int(prob.seed),
            BLOCK_M=cfg_q["BLOCK_M"], BLOCK_N=cfg_q["BLOCK_N"], **launch_options(cfg_q), **common)
    return dq, dk, dv


def default_scale(D: int, scale) -> float:
    return 1.0 / math.sqrt(D) if scale is None else float(scale)
