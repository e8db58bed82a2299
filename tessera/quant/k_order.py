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
# K offset, within its block, of code j of pack p is p + CODE_K[j] (j = 2a + c: 16c + 8a)
CODE_K = (0, 16, 8, 24)
# position s = 4p + j -> K offset within the block; and its inverse
STORED_K = tuple(s // 4 + CODE_K[s % 4] for s in range(BLOCK))
_FROM_STORED = tuple(STORED_K.index(k) for k in range(BLOCK))


def _check(codes: torch.Tensor, what: str) -> int:
    n = codes.shape[-1]
    if n % BLOCK:
        raise TesseraShapeError(f"{what}: the last axis has length {n}, not a multiple of {BLOCK}; pad K to whole "
                                f"blocks of {BLOCK}")
    return n


def _permute_blocks(codes: torch.Tensor, order: tuple, what: str) -> torch.Tensor:
    n = _check(codes, what)
    blocks = codes.reshape(*codes.shape[:-1], n // BLOCK, BLOCK)
    return blocks[..., torch.tensor(order, device=codes.device)].reshape(codes.shape)


def to_stored(codes: torch.Tensor) -> torch.Tensor:
    """Codes in K order ``[..., n]`` (n a multiple of 32) -> the same codes in stored order."""
    return _permute_blocks(codes, STORED_K, "k_order.to_stored")


def from_stored(codes: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_stored`."""
    return _permute_blocks(codes, _FROM_STORED, "k_order.from_stored")
