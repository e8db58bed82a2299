"""Flash attention for Tessera: Triton forward and backward kernels (dense, GQA/MQA, masks,
causal, dropout, variable length); ``attention_reference`` (from ``tessera.ops.attention_reference``)
is the plain-torch definition they are tested against.

Example (on a CUDA machine):
    >>> import torch
    >>> from tessera.kernels.attention import flash_attention_fwd, attention_reference
    >>> q = torch.randn(2, 8, 333, 128, device="cuda", dtype=torch.bfloat16)  # doctest: +SKIP
    >>> o, lse = flash_attention_fwd(q, q, q, causal=True)  # doctest: +SKIP
    >>> ref, _ = attention_reference(q, q, q, causal=True)  # doctest: +SKIP
"""
from ...ops.attention_reference import attention_reference
from .api import flash_attention_bwd, flash_attention_fwd
from .checks import supports
from .fp8 import flash_attention_fp8_fwd
from .varlen import flash_attention_varlen_bwd, flash_attention_varlen_fwd

__all__ = ["flash_attention_fwd", "flash_attention_bwd", "flash_attention_fp8_fwd", "flash_attention_varlen_fwd",
           "flash_attention_varlen_bwd", "supports", "attention_reference"]
