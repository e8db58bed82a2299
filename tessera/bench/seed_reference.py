"""The seed's transformer layer in plain torch: the reference its tests and benchmarks compare with."""
from __future__ import annotations

import torch.nn.functional as F


def torch_transformer_layer(x, w_qkv, w_out, w_mlp, num_heads: int = 16):
    """Example 1's layer (weights ``[in, out]``, causal attention, layer norm, GELU MLP) on torch tensors.

    Example:
        >>> import torch
        >>> D = 32
        >>> out = torch_transformer_layer(torch.randn(1, 4, D), torch.randn(D, 3 * D), torch.randn(D, D),
        ...                               torch.randn(D, 4 * D), num_heads=4)
        >>> out.shape
        torch.Size([1, 4, 32])
    """
    B, S, D = x.shape
    H = num_heads
    q, k, v = (x @ w_qkv).split(D, dim=-1)
    q, k, v = (t.reshape(B, S, H, D // H).transpose(1, 2) for t in (q, k, v))
    a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, S, D)
    x = F.layer_norm(x + a @ w_out, (D,))
    return x + F.gelu(x @ w_mlp) @ w_mlp.T
