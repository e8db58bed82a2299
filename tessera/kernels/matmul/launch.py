"""Launchers: bind a 2-D or batched problem and a :class:`Config` to a kernel."""
from __future__ import annotations

from functools import lru_cache

import torch
import triton

from ..triton_launch import ensure_allocator, launch, stream_buffer
from .configs import Config
from .kernel_ptr import ptr_matmul_kernel
from .kernel_skinny import skinny_matmul_kernel
from .kernel_tma import tma_matmul_kernel


def interpreting() -> bool:
    """True when the kernels were built for Triton's CPU interpreter (``TRITON_INTERPRET=1``)."""
    return type(ptr_matmul_kernel).__name__ == "InterpretedFunction"


@lru_cache(maxsize=None)
def num_sms(device_index: int) -> int:
    if device_index < 0:
        return 4
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def major(t: torch.Tensor):
    """("row" | "col", leading stride) of a 2-D operand that TMA can read in place, else None.

    ``t`` is [rows, cols]; "row" means cols are contiguous. A dim of size 1 imposes no stride."""
    rows, cols = t.shape
    es = t.element_size()
    if t.data_ptr() % 16:
        return None

    def padded(n):
        return -(-n * es // 16) * 16 // es

    if t.stride(1) == 1 or cols == 1:
        ld = t.stride(0) if rows > 1 else padded(cols)
        if ld >= cols and (ld * es) % 16 == 0:
            return "row", ld
    if t.stride(0) == 1 or rows == 1:
        ld = t.stride(1) if cols > 1 else padded(rows)
        if ld >= rows and (ld * es) % 16 == 0:
            return "col", ld
    return None


def tile_counters(device: torch.device, n: int) -> torch.Tensor:
    """Zeroed int32 counters for split-K tickets on the current stream; the kernel leaves them at
    zero after each use."""
    return stream_buffer("splitk-tickets", n, torch.int32, device, zeroed=True)


def splitk_workspace(device: torch.device, n: int) -> torch.Tensor:
    """fp32 room for ``n`` split-K partial sums on the current stream."""
    return stream_buffer("splitk-partials", n, torch.float32, device)


def launch_tma(a2, b2, out, cfg: Config, la, lb, *, sa=None, sb=None, scale_a=0, scale_b=0, bias=None, act=0,
               res=None, pre=None, acc_f16=False):
    """out[M, N] (contiguous) = epilogue(a2 @ b2) with the persistent TMA kernel; returns the
    launch's :class:`~tessera.kernels.triton_launch.Relaunch` (None under the interpreter)."""
    ensure_allocator()
    M, K = a2.shape
    N = b2.shape[1]
    dev = -1 if interpreting() else out.device.index if out.device.index is not None else torch.cuda.current_device()
    sms = num_sms(dev)
    tiles = triton.cdiv(M, cfg.BM) * triton.cdiv(N, cfg.BN)
    # With fewer tiles than SMs each program owns one tile, so the stride NUM_SMS stays the
    # SM count (one compiled kernel for all sizes).
    grid = (max(1, min(sms, tiles)),)
    dummy = out
    return launch(
        tma_matmul_kernel, grid, a2, b2, out, sa if sa is not None else dummy, sb if sb is not None else dummy,
        bias if bias is not None else dummy, res if res is not None else dummy, pre if pre is not None else dummy,
        M, N, K, la[1], lb[1], res.stride(0) if res is not None else 0, res.stride(1) if res is not None else 0,
        A_KMAJOR=la[0] == "row", B_KMAJOR=lb[0] == "col",
        BM=cfg.BM, BN=cfg.BN, BK=cfg.BK, GROUP_M=cfg.GROUP_M, NUM_SMS=sms, SUBTILE=cfg.subtile,
        FLATTEN=cfg.flatten, WARP_SPEC=cfg.warp_spec, TMA_STORE=(N * out.element_size()) % 16 == 0 and out.data_ptr() % 16 == 0,
        ACC_F16=acc_f16, SCALE_A=scale_a, SCALE_B=scale_b, HAS_BIAS=bias is not None, ACT=act,
        HAS_RES=res is not None, STORE_PRE=pre is not None,
        num_warps=cfg.warps, num_stages=cfg.stages)


def launch_skinny(a2, b2, out, cfg: Config, la, lb, *, sa=None, sb=None, scale_a=0, scale_b=0, bias=None, act=0,
                  res=None, pre=None):
    """out[M, N] (contiguous) = epilogue(a2 @ b2) with the split-K skinny kernel (few rows of a2);
    returns the launch's Relaunch, as :func:`launch_tma`."""
    ensure_allocator()
    M, K = a2.shape
    N = b2.shape[1]
    tiles = triton.cdiv(M, cfg.BM) * triton.cdiv(N, cfg.BN)
    split = max(1, min(cfg.split_k, triton.cdiv(K, cfg.BK)))
    ws = cnt = out
    if split > 1:
        ws = splitk_workspace(out.device, tiles * split * cfg.BM * cfg.BN)
        cnt = tile_counters(out.device, tiles)
    dummy = out
    return launch(
        skinny_matmul_kernel, (tiles * split,), a2, b2, out, sa if sa is not None else dummy, sb if sb is not None else dummy,
        bias if bias is not None else dummy, res if res is not None else dummy, pre if pre is not None else dummy,
        ws, cnt, M, N, K, la[1], lb[1], res.stride(0) if res is not None else 0, res.stride(1) if res is not None else 0,
        A_KMAJOR=la[0] == "row", B_KMAJOR=lb[0] == "col", BM=cfg.BM, BN=cfg.BN, BK=cfg.BK, SPLIT_K=split,
        STAGES=cfg.stages, SWAP=cfg.swap, SCALE_A=scale_a, SCALE_B=scale_b, HAS_BIAS=bias is not None,
        ACT=act, HAS_RES=res is not None, STORE_PRE=pre is not None, num_warps=cfg.warps)


def _pad3(shape, strides):
    shape, strides = list(shape), list(strides)
    while len(shape) < 3:
        shape.insert(0, 1)
        strides.insert(0, 0)
    return shape, strides


def launch_ptr(a, b, out, cfg: Config, *, sa=None, sb=None, scale_a=0, scale_b=0, bias=None, act=0, res=None,
               pre=None, acc_f16=False):
    """out[batch..., M, N] (contiguous) = epilogue(a @ b); a, b, res already expanded to <= 3 batch
    dims. Returns the launch's Relaunch, as :func:`launch_tma`."""
    M, K = a.shape[-2:]
    N = b.shape[-1]
    batch = out.shape[:-2]
    nb = 1
    for s in batch:
        nb *= s
    bshape, sa_ = _pad3(batch, a.stride()[:-2])
    _, sb_ = _pad3(batch, b.stride()[:-2])
    if res is not None:
        _, sr_ = _pad3(batch, res.stride()[:-2])
        srm, srn = res.stride()[-2:]
    else:
        sr_, srm, srn = [0, 0, 0], 0, 0
    split = cfg.split_k if nb == 1 else 1
    tiles = triton.cdiv(M, cfg.BM) * triton.cdiv(N, cfg.BN)
    ws = cnt = out
    if split > 1:
        ws = splitk_workspace(out.device, tiles * split * cfg.BM * cfg.BN)
        cnt = tile_counters(out.device, tiles)
    dummy = out
    return launch(
        ptr_matmul_kernel, (tiles * split, nb), a, b, out, sa if sa is not None else dummy, sb if sb is not None else dummy,
        bias if bias is not None else dummy, res if res is not None else dummy, pre if pre is not None else dummy,
        ws, cnt, M, N, K, bshape[1], bshape[2],
        *sa_, a.stride(-2), a.stride(-1), *sb_, b.stride(-2), b.stride(-1), *sr_, srm, srn,
        BM=cfg.BM, BN=cfg.BN, BK=cfg.BK, GROUP_M=cfg.GROUP_M, SPLIT_K=split, ACC_F16=acc_f16,
        IEEE=a.dtype == torch.float32, SCALE_A=scale_a, SCALE_B=scale_b, HAS_BIAS=bias is not None, ACT=act,
        HAS_RES=res is not None, STORE_PRE=pre is not None,
        num_warps=cfg.warps, num_stages=cfg.stages)
