"""Packed low-precision weight formats (fp6 e2m3/e3m2, fp4 e2m1) with group scales.

Example:
    >>> import torch, tessera.quant as q
    >>> w = torch.randn(128, 16)
    >>> qw = q.quantize(w, "fp4_e2m1", group_size=32)
    >>> q.dequantize(qw).shape
    torch.Size([128, 16])
"""
from .formats import FORMATS, Format, decode, encode, get_format
from .packing import pack, unpack
from .weights import QuantizedWeight, dequantize, quantize

__all__ = ["FORMATS", "Format", "get_format", "encode", "decode", "pack", "unpack",
           "QuantizedWeight", "quantize", "dequantize"]
