"""Group-scaled weight quantization: packed codes plus one scale per group of ``group_size`` inputs.

A weight ``w`` of shape ``[K, N]`` (the right operand of ``x @ w``) is cut along K into groups;
each group of each output column gets the scale ``amax / max_value`` (stored as bfloat16), and
its values are rounded to the format's codes. Storage is column-major in K so the kernel reads
each output column's codes contiguously: ``data`` is uint8 ``[N, K_padded * bits / 8]``,
``scales`` is bfloat16 ``[N, K_padded / group_size]``, K padded to whole groups and whole blocks of
32. Within each block of 32 the codes are stored in the order of :mod:`~tessera.quant.k_order`.
For fp6, each row holds the packed 3-byte units split into three byte planes (all first bytes,
then all second, then all third), so that the kernel's loads are contiguous; fp4 rows hold 16-bit
words of four codes with their bits placed for the kernel's decode
(:mod:`~tessera.quant.fp4_words`). :func:`packed_codes` gives the codes in K order in the
canonical :func:`~tessera.quant.packing.pack` layout of either.

Example:
    >>> import torch
    >>> from tessera.quant import quantize, dequantize
    >>> w = torch.randn(64, 8)
    >>> qw = quantize(w, "fp6_e2m3", group_size=32)
    >>> qw.data.shape, qw.scales.shape
    (torch.Size([8, 48]), torch.Size([8, 2]))
    >>> bool(((dequantize(qw) - w).norm() / w.norm()) < 0.05)
    True
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import TesseraShapeError, TesseraTypeError, TesseraValueError
from .formats import Format, decode, encode, get_format
from .fp4_words import codes_from_words, words_from_codes
from .k_order import BLOCK, from_stored, to_stored
from .packing import pack, unpack


@dataclass
class QuantizedWeight:
    """Packed codes (``data``), per-group scales, and the logical shape ``[K, N]``."""

    data: torch.Tensor
    scales: torch.Tensor
    fmt: Format
    group_size: int
    shape: tuple  # (K, N)

    @property
    def k_padded(self) -> int:
        return self.scales.shape[1] * self.group_size

    def to(self, device) -> "QuantizedWeight":
        return QuantizedWeight(self.data.to(device), self.scales.to(device), self.fmt, self.group_size, self.shape)

    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size() + self.scales.numel() * self.scales.element_size()


def quantize(w: torch.Tensor, fmt, group_size: int = 32) -> QuantizedWeight:
    """Quantize a ``[K, N]`` weight to ``fmt`` ("fp6_e2m3", "fp6_e3m2", "fp4_e2m1") with group scales."""
    f = get_format(fmt)
    if not isinstance(w, torch.Tensor):
        raise TesseraTypeError(f"quantize: w must be a torch.Tensor, got {type(w).__name__}")
    if w.dim() != 2:
        raise TesseraShapeError(f"quantize: w must be 2-D [K, N] (in_features, out_features), got shape {tuple(w.shape)}")
    if not isinstance(group_size, int) or group_size < 8 or group_size > 1024 or group_size & (group_size - 1):
        raise TesseraValueError(f"quantize: group_size={group_size!r} must be a power of two from 8 to 1024, e.g. 32")
    if not w.is_floating_point() or not torch.isfinite(w).all():
        raise TesseraValueError("quantize: w must be a floating-point tensor of finite values")
    K, N = w.shape
    unit = max(group_size, BLOCK)  # whole groups and whole blocks of the stored K order
    kp = -(-K // unit) * unit
    wt = torch.zeros(N, kp, dtype=torch.float32, device=w.device)
    wt[:, :K] = w.t().float()
    groups = wt.reshape(N, kp // group_size, group_size)
    amax = groups.abs().amax(dim=-1)
    scales = (amax / f.max_value).to(torch.bfloat16)
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))
    codes = to_stored(encode(groups / scales.float()[..., None], f).reshape(N, kp))
    if f.bits == 4:
        data = words_from_codes(codes)
    else:
        data = pack(codes, f).reshape(N, kp // 4, 3).transpose(1, 2).reshape(N, kp // 4 * 3).contiguous()
    return QuantizedWeight(data, scales, f, group_size, (K, N))


def packed_codes(qw: QuantizedWeight) -> torch.Tensor:
    """The codes of ``qw`` in K order, in the canonical :func:`~tessera.quant.packing.pack` layout,
    [N, K_padded*bits/8]."""
    if qw.fmt.bits == 4:
        stored = codes_from_words(qw.data)
    else:
        N = qw.data.shape[0]
        stored = unpack(qw.data.reshape(N, 3, -1).transpose(1, 2).reshape(N, -1), qw.fmt)
    return pack(from_stored(stored), qw.fmt)


def dequantize(qw: QuantizedWeight, dtype=torch.float32) -> torch.Tensor:
    """The ``[K, N]`` weight that ``qw`` stands for (exactly codes times scales, then cast)."""
    K, N = qw.shape
    vals = decode(unpack(packed_codes(qw), qw.fmt), qw.fmt).reshape(N, -1, qw.group_size)
    w = (vals * qw.scales.float()[..., None]).reshape(N, -1)[:, :K]
    return w.t().to(dtype)
