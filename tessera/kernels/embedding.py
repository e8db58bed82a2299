"""Embedding backward: a deterministic scatter-add of row gradients into the table.

The ids are sorted (stable) once; each table row's program then sums its own segment of
``dy`` rows in sorted order, so every table row is written once, by one program, in a fixed
order: the result is bit-identical from run to run, with no float atomics.

Example:
    >>> import torch
    >>> from tessera.kernels.embedding import embedding_bwd
    >>> ids = torch.tensor([[1, 3, 1]], device="cuda")                       # doctest: +SKIP
    >>> dtable = embedding_bwd(torch.ones(1, 3, 8, device="cuda"), ids, 5)  # doctest: +SKIP
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..errors import TesseraDTypeError, TesseraShapeError, TesseraValueError
from ._membound import FLOAT_DTYPES, check_tensor, interpreting

CHUNK = 8


@triton.jit
def _segment_sum_kernel(DY, PERM, STARTS, COUNTS, OUT, D, CHUNK: tl.constexpr, BLOCK_D: tl.constexpr):
    v = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    start = tl.load(STARTS + v)
    count = tl.load(COUNTS + v)
    acc = tl.zeros([CHUNK, BLOCK_D], dtype=tl.float32)
    for j in range(0, count, CHUNK):
        k = j + tl.arange(0, CHUNK)
        km = k < count
        src = tl.load(PERM + start + k, mask=km, other=0).to(tl.int64)
        acc += tl.load(DY + src[:, None] * D + cols[None, :], mask=km[:, None] & cmask[None, :],
                       other=0.0).to(tl.float32)
    tl.store(OUT + v * D + cols, tl.sum(acc, axis=0).to(OUT.dtype.element_ty), mask=cmask)


def embedding_bwd(dy, ids, num_embeddings):
    """Gradient of an embedding lookup ``table[ids]``: ``dtable[v] = sum of dy[i] over ids[i] == v``,
    shaped ``[num_embeddings, D]`` in ``dy``'s dtype, summed in fp32, deterministic.

    Example:
        >>> dtable = embedding_bwd(dy, ids, 32000)   # dy: [B, S, D], ids: [B, S]   # doctest: +SKIP
    """
    op = "embedding_bwd"
    check_tensor(dy, "dy", op)
    check_tensor(ids, "ids", op, float_only=False)
    if ids.dtype not in (torch.int32, torch.int64):
        raise TesseraDTypeError(f"{op}: 'ids' has dtype {ids.dtype}; use int32 or int64 (ids.long())")
    if dy.shape[:-1] != ids.shape or dy.dim() < 1:
        raise TesseraShapeError(f"{op}: 'dy' has shape {tuple(dy.shape)}; it must be ids.shape + (D,) = "
                                f"{tuple(ids.shape)} + (D,)")
    if isinstance(num_embeddings, bool) or not isinstance(num_embeddings, int) or num_embeddings < 0:
        raise TesseraValueError(f"{op}: num_embeddings must be an int >= 0, got {num_embeddings!r}")
    d = dy.shape[-1]
    flat = ids.reshape(-1)
    if flat.numel():
        lo, hi = (int(v) for v in torch.aminmax(flat))  # one host sync for both bounds
        if lo < 0 or hi >= num_embeddings:
            raise TesseraValueError(f"{op}: ids must lie in [0, {num_embeddings}), got values in [{lo}, {hi}]")
    out = torch.empty((num_embeddings, d), dtype=dy.dtype, device=dy.device)
    if num_embeddings == 0 or d == 0:
        return out
    dy2 = dy.reshape(-1, d).contiguous()
    _, perm = torch.sort(flat, stable=True)
    counts = torch.bincount(flat, minlength=num_embeddings)
    starts = torch.cumsum(counts, 0) - counts
    block_d = min(1024, triton.next_power_of_2(d))
    grid = (num_embeddings, triton.cdiv(d, block_d))
    _segment_sum_kernel[grid](dy2, perm, starts, counts, out, d, CHUNK=CHUNK, BLOCK_D=block_d, num_warps=4)
    return out


OPS = ("embedding_bwd",)


def supports(name, *tensors) -> bool:
    """True when op ``name`` has a kernel here for these tensors (float ``dy``, int ``ids``).

    Example:
        >>> supports("embedding_bwd", dy, ids)   # doctest: +SKIP
        True
    """
    return name in OPS and all(
        (t.dtype in FLOAT_DTYPES or t.dtype in (torch.int32, torch.int64)) and (t.is_cuda or interpreting())
        for t in tensors if isinstance(t, torch.Tensor))
