"""The packed low-precision weight formats: fp6 (e2m3, e3m2) and fp4 (e2m1), OCP MX style.

Each format is a sign bit, ``ebits`` exponent bits with bias ``2**(ebits-1) - 1``, ``mbits``
mantissa bits, subnormals, no infinities and no NaN; values beyond the largest finite value
saturate. Codes hold the bit pattern in the low ``bits`` bits of an integer.

Example:
    >>> from tessera.quant.formats import get_format
    >>> f = get_format("fp4_e2m1")
    >>> f.bits, f.max_value
    (4, 6.0)
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from ..errors import TesseraValueError


@dataclass(frozen=True)
class Format:
    """One code format; ``ml_dtypes_name`` is its exact host twin in ``ml_dtypes``."""

    name: str
    bits: int
    ebits: int
    mbits: int
    ml_dtypes_name: str

    @property
    def bias(self) -> int:
        return (1 << (self.ebits - 1)) - 1

    @property
    def codes_per_pack(self) -> int:
        """Codes in one packed unit: 2 fp4 codes per byte, 4 fp6 codes per 3 bytes."""
        return 2 if self.bits == 4 else 4

    @property
    def bytes_per_pack(self) -> int:
        return 1 if self.bits == 4 else 3

    @property
    def max_value(self) -> float:
        return float(positive_values(self)[-1])


FORMATS = {
    "fp6_e2m3": Format("fp6_e2m3", 6, 2, 3, "float6_e2m3fn"),
    "fp6_e3m2": Format("fp6_e3m2", 6, 3, 2, "float6_e3m2fn"),
    "fp4_e2m1": Format("fp4_e2m1", 4, 2, 1, "float4_e2m1fn"),
}


def get_format(fmt) -> Format:
    """The :class:`Format` named ``fmt`` (a name or a Format)."""
    if isinstance(fmt, Format):
        return fmt
    try:
        return FORMATS[fmt]
    except (KeyError, TypeError):
        raise TesseraValueError(
            f"fmt={fmt!r} is not a known weight format; use one of {sorted(FORMATS)}") from None


def decode_magnitude(code: int, f: Format) -> float:
    """The magnitude of a code's value (its sign bit ignored)."""
    e = (code >> f.mbits) & ((1 << f.ebits) - 1)
    m = code & ((1 << f.mbits) - 1)
    if e == 0:
        return m * 2.0 ** (1 - f.bias - f.mbits)
    return ((1 << f.mbits) + m) * 2.0 ** (e - f.bias - f.mbits)


@lru_cache(maxsize=None)
def positive_values(f: Format) -> tuple:
    """Non-negative values in code order (code i has value ``positive_values[i]``)."""
    return tuple(decode_magnitude(c, f) for c in range(1 << (f.bits - 1)))


def value_table(f: Format, device="cpu") -> torch.Tensor:
    """float32 tensor of length ``2**bits``: the value of every code."""
    pos = torch.tensor(positive_values(f), dtype=torch.float32)
    return torch.cat([pos, -pos]).to(device)


def encode(x: torch.Tensor, fmt) -> torch.Tensor:
    """Round float values to the nearest code (ties to even), saturating; returns uint8 codes.

    Example:
        >>> import torch
        >>> encode(torch.tensor([0.25, 0.75, -7.0]), "fp4_e2m1").tolist()
        [0, 2, 15]
    """
    f = get_format(fmt)
    xf = x.float()
    if not torch.isfinite(xf).all():
        raise TesseraValueError(f"encode to {f.name}: the input holds NaN or inf; quantize finite values only")
    pos = torch.tensor(positive_values(f), dtype=torch.float32, device=xf.device)
    mids = (pos[1:] + pos[:-1]) * 0.5
    mag = xf.abs()
    idx = torch.bucketize(mag, mids, right=False)  # mids[i-1] < mag <= mids[i]  ->  i
    tie = (idx < mids.numel()) & (mag == mids[idx.clamp_max(mids.numel() - 1)])
    idx = torch.where(tie & (idx % 2 == 1), idx + 1, idx)  # a tie goes to the even code
    sign = (torch.signbit(xf)).to(torch.int64) << (f.bits - 1)
    return (idx | sign).to(torch.uint8)


def decode(codes: torch.Tensor, fmt) -> torch.Tensor:
    """float32 values of uint8 codes.

    Example:
        >>> import torch
        >>> decode(torch.tensor([0, 2, 15], dtype=torch.uint8), "fp4_e2m1").tolist()
        [0.0, 1.0, -6.0]
    """
    f = get_format(fmt)
    return value_table(f, codes.device)[codes.long() & ((1 << f.bits) - 1)]
