"""Bit packing of codes along the last axis: two fp4 codes per byte, four fp6 codes in three bytes.

fp4: byte j holds code 2j in its low nibble and code 2j+1 in its high nibble.
fp6: the 24-bit little-endian word of bytes 3j..3j+2 is ``c0 | c1 << 6 | c2 << 12 | c3 << 18``
for codes 4j..4j+3.

Example:
    >>> import torch
    >>> from tessera.quant.packing import pack, unpack
    >>> c = torch.tensor([[1, 2, 3, 63]], dtype=torch.uint8)
    >>> p = pack(c, "fp6_e2m3"); p.shape
    torch.Size([1, 3])
    >>> bool((unpack(p, "fp6_e2m3") == c).all())
    True
"""
from __future__ import annotations

import torch

from ..errors import TesseraShapeError, TesseraDTypeError
from .formats import get_format


def pack(codes: torch.Tensor, fmt) -> torch.Tensor:
    """Pack uint8 codes along the last axis (its length must be a multiple of 2 for fp4, 4 for fp6)."""
    f = get_format(fmt)
    if codes.dtype != torch.uint8:
        raise TesseraDTypeError(f"pack: codes must be uint8, got {codes.dtype}; use tessera.quant.formats.encode")
    n = codes.shape[-1]
    if n % f.codes_per_pack:
        raise TesseraShapeError(
            f"pack({f.name}): the last axis of codes has length {n}, not a multiple of {f.codes_per_pack}; pad it")
    c = (codes & ((1 << f.bits) - 1)).to(torch.int32)
    if f.bits == 4:
        c = c.reshape(*codes.shape[:-1], n // 2, 2)
        return (c[..., 0] | (c[..., 1] << 4)).to(torch.uint8)
    c = c.reshape(*codes.shape[:-1], n // 4, 4)
    word = c[..., 0] | (c[..., 1] << 6) | (c[..., 2] << 12) | (c[..., 3] << 18)
    out = torch.stack([word & 255, (word >> 8) & 255, (word >> 16) & 255], dim=-1)
    return out.reshape(*codes.shape[:-1], n // 4 * 3).to(torch.uint8)


def unpack(packed: torch.Tensor, fmt) -> torch.Tensor:
    """Inverse of :func:`pack`: uint8 codes, the last axis expanded."""
    f = get_format(fmt)
    if packed.dtype != torch.uint8:
        raise TesseraDTypeError(f"unpack: packed data must be uint8, got {packed.dtype}")
    n = packed.shape[-1]
    p = packed.to(torch.int32)
    if f.bits == 4:
        out = torch.stack([p & 15, p >> 4], dim=-1)
        return out.reshape(*packed.shape[:-1], n * 2).to(torch.uint8)
    if n % 3:
        raise TesseraShapeError(f"unpack({f.name}): the last axis has length {n}, not a multiple of 3")
    p = p.reshape(*packed.shape[:-1], n // 3, 3)
    word = p[..., 0] | (p[..., 1] << 8) | (p[..., 2] << 16)
    out = torch.stack([(word >> s) & 63 for s in (0, 6, 12, 18)], dim=-1)
    return out.reshape(*packed.shape[:-1], n // 3 * 4).to(torch.uint8)
