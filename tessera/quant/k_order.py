"""The order in which packed weights store K: blocks of 32 inputs, permuted within each block.

A pack holds four codes (an fp4 word, or one byte of each fp6 byte plane). Pack ``p = 2q + b``
of a block (q = 0..3, b = 0..1) holds, as its code ``j = 2a + c`` (a, c = 0..1), the input at
``K = 16c + 8a + 2q + b`` of that block. This is where a Hopper tensor-core operand held in
registers wants the values: the lane that loads pack ``p`` of a row is the lane that multiplies
its codes, codes j of packs b = 0 and b = 1 form one of that lane's bf16 pairs, and the
activations stay in their natural order (see ``kernels/matmul/kernel_wo.py``). Weights are
padded along K to whole blocks.

Example:
    >>> import torch
    >>> from tessera.quant.k_order import from_stored, to_stored
    >>> c = torch.arange(64, dtype=torch.uint8).reshape(1, 64)
    >>> to_stored(c)[0, :8].tolist()   # pack 0: K = 0, 16, 8, 24; pack 1: K = 1, 17, 9, 25
    [0, 16, 8, 24, 1, 17, 9, 25]
    >>> bool((from_stored(to_stored(c)) == c).all())
    True
"""
from __future__ import annotations

import torch

from ..errors import TesseraShapeError

BLOCK = 32


def stored_k() -> list:
    """``stored_k()[s]``: the K offset (within its block) of the code stored at position s = 4p + j."""
    out = []
    for s in range(BLOCK):
        j, p = s % 4, s // 4
        a, c, b, q = j >> 1, j & 1, p & 1, p >> 1
        out.append(16 * c + 8 * a + 2 * q + b)
    return out


def _check(codes: torch.Tensor, what: str) -> int:
    n = codes.shape[-1]
    if n % BLOCK:
        raise TesseraShapeError(f"{what}: the last axis has length {n}, not a multiple of {BLOCK}; pad K to whole "
                                f"blocks of {BLOCK}")
    return n


def to_stored(codes: torch.Tensor) -> torch.Tensor:
    """Codes in K order ``[..., n]`` (n a multiple of 32) -> the same codes in stored order."""
    n = _check(codes, "k_order.to_stored")
    idx = torch.tensor(stored_k(), device=codes.device)
    blocks = codes.reshape(*codes.shape[:-1], n // BLOCK, BLOCK)
    return blocks[..., idx].reshape(codes.shape)


def from_stored(codes: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_stored`."""
    n = _check(codes, "k_order.from_stored")
    inv = torch.empty(BLOCK, dtype=torch.long)
    inv[torch.tensor(stored_k())] = torch.arange(BLOCK)
    blocks = codes.reshape(*codes.shape[:-1], n // BLOCK, BLOCK)
    return blocks[..., inv.to(codes.device)].reshape(codes.shape)
