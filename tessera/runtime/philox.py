"""Counter-based random numbers (Philox-4x32-10) in plain torch, bit-exact with Triton.

``uniform(seed, offsets)`` equals ``tl.rand(seed, offsets)`` inside a Triton kernel,
element for element, on any device. Dropout uses it so that the same seed gives the
same mask on the CPU, on the GPU, and again in the backward pass, without storing it.

Example:
    >>> import torch
    >>> from tessera.runtime.philox import uniform
    >>> u = uniform(1234, torch.arange(4))
    >>> bool(((u >= 0) & (u < 1)).all())
    True
"""
from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57


def _mulhilo(a: int, b: torch.Tensor):
    """(hi, lo) 32-bit halves of a*b for a constant a < 2**32 and int64 b < 2**32, without overflow."""
    b_hi, b_lo = b >> 16, b & 0xFFFF
    p_hi, p_lo = a * b_hi, a * b_lo  # each < 2**48
    hi = (p_hi + (p_lo >> 16)) >> 16
    lo = (((p_hi & 0xFFFF) << 16) + p_lo) & _M32
    return hi & _M32, lo


def randint(seed: int, offsets: torch.Tensor, n_rounds: int = 10) -> torch.Tensor:
    """The first 32-bit Philox output for each offset, as int64 in [0, 2**32)."""
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    k0, k1 = seed & _M32, (seed >> 32) & _M32
    off = offsets.to(torch.int64)
    c0 = off & _M32
    c1 = (off >> 32) & _M32
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    for _ in range(n_rounds):
        hi_b, lo_b = _mulhilo(_ROUND_B, c2)
        hi_a, lo_a = _mulhilo(_ROUND_A, c0)
        c0, c2 = hi_b ^ c1 ^ k0, hi_a ^ c3 ^ k1
        c1, c3 = lo_b, lo_a
        k0, k1 = (k0 + _KEY_A) & _M32, (k1 + _KEY_B) & _M32
    return c0


def uniform(seed: int, offsets: torch.Tensor) -> torch.Tensor:
    """Uniform float32 in [0, 1) for each offset, equal to Triton's ``tl.rand(seed, offsets)``.

    Example:
        >>> import torch
        >>> from tessera.runtime.philox import uniform
        >>> torch.equal(uniform(7, torch.arange(8)), uniform(7, torch.arange(8)))
        True
    """
    x = randint(seed, offsets)
    x = torch.where(x >= 2**31, x - 2**32, x)  # reinterpret as int32
    x = torch.where(x < 0, -x - 1, x)  # ~x for negatives
    return x.to(torch.float32) * torch.tensor(4.6566127342e-10, dtype=torch.float32, device=x.device)


def dropout_keep_mask(seed: int, shape, p: float, device=None) -> torch.Tensor:
    """The dropout keep-mask for a contiguous tensor of ``shape``: element i is kept when
    ``uniform(seed, i) >= p`` (i the row-major flat index).

    Example:
        >>> from tessera.runtime.philox import dropout_keep_mask
        >>> dropout_keep_mask(0, (2, 3), 0.0).all().item()
        True
    """
    n = 1
    for s in shape:
        n *= int(s)
    offsets = torch.arange(n, device=device, dtype=torch.int64)
    return (uniform(seed, offsets) >= p).reshape(tuple(int(s) for s in shape))
