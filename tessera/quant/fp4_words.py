"""How fp4 weights are stored: four e2m1 codes per 16-bit word, bits placed for a cheap decode.

Word ``w`` of a row holds the codes at stored positions ``4w + j`` (j = 0..3; the stored K order
is :mod:`~tessera.quant.k_order`'s), little-endian in two bytes. Code j keeps its three magnitude bits (exponent and mantissa) at ``MAG_BIT[j]`` upward and
its sign at ``SIGN_BIT[j]``. A bf16 wants them at bits 6..8 and 15 (the code's value times
2**-126, see ``kernels/matmul/kernel_wo.py``), so a code whose sign sits 9 bits above its
magnitude becomes a bf16 with one shift and one mask, and a pair of words in one 32-bit register
decodes as a bf16 pair. Sixteen bits leave room for three such codes; the fourth takes two shifts.

Example:
    >>> import torch
    >>> from tessera.quant.fp4_words import codes_from_words, words_from_codes
    >>> c = torch.tensor([[1, 2, 11, 15]], dtype=torch.uint8)
    >>> words_from_codes(c).shape
    torch.Size([1, 2])
    >>> bool((codes_from_words(words_from_codes(c)) == c).all())
    True
"""
from __future__ import annotations

import torch

from ..errors import TesseraShapeError

MAG_BIT = (6, 0, 3, 11)
SIGN_BIT = (15, 9, 14, 10)


def words_from_codes(codes: torch.Tensor) -> torch.Tensor:
    """uint8 e2m1 codes ``[..., n]`` (n a multiple of 4) -> uint8 ``[..., n / 2]`` of stored words."""
    n = codes.shape[-1]
    if n % 4:
        raise TesseraShapeError(f"fp4 words: the last axis of codes has length {n}, not a multiple of 4; pad it")
    c = (codes.to(torch.int32) & 15).reshape(*codes.shape[:-1], n // 4, 4)
    word = torch.zeros(c.shape[:-1], dtype=torch.int32, device=codes.device)
    for j in range(4):
        word |= ((c[..., j] & 7) << MAG_BIT[j]) | ((c[..., j] >> 3) << SIGN_BIT[j])
    out = torch.stack([word & 255, word >> 8], dim=-1)
    return out.reshape(*codes.shape[:-1], n // 2).to(torch.uint8)


def codes_from_words(data: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`words_from_codes`: uint8 stored words ``[..., 2m]`` -> uint8 codes ``[..., 4m]``."""
    n = data.shape[-1]
    if n % 2:
        raise TesseraShapeError(f"fp4 words: the last axis has length {n} bytes, not a whole number of 16-bit words")
    b = data.to(torch.int32).reshape(*data.shape[:-1], n // 2, 2)
    word = b[..., 0] | (b[..., 1] << 8)
    out = torch.stack([((word >> MAG_BIT[j]) & 7) | (((word >> SIGN_BIT[j]) & 1) << 3) for j in range(4)], dim=-1)
    return out.reshape(*data.shape[:-1], n * 2).to(torch.uint8)
