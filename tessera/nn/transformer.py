"""The seed's transformer layer as a library function, and a stack of them.

``weights`` is a dict: ``w_qkv`` ``[D, 3D]``, ``w_out`` ``[D, D]``, ``w_mlp`` ``[D, 4D]`` and
optionally ``w_mlp_out`` ``[4D, D]`` (default: ``w_mlp.transpose()``, as the seed writes),
``ln_weight``/``ln_bias`` ``[D]``.

Example:
    >>> import tessera as ts
    >>> with ts.device("cpu"):
    ...     D = 32
    ...     w = {"w_qkv": ts.randn(D, 3 * D) * 0.1, "w_out": ts.randn(D, D) * 0.1, "w_mlp": ts.randn(D, 4 * D) * 0.1}
    ...     ts.nn.transformer_stack(ts.randn(2, 8, D), [w, w], num_layers=2, num_heads=4).shape
    (2, 8, 32)
"""
from __future__ import annotations

from typing import Mapping, Sequence, Union

from ..errors import TesseraShapeError, TesseraTypeError, TesseraValueError
from ..ops import api
from . import functional as F

_REQUIRED = ("w_qkv", "w_out", "w_mlp")


def transformer_layer(x, weights: Mapping[str, object], num_heads: int = 16, causal: bool = True):
    """One pre-residual transformer layer: attention, projection, residual, layer norm, GELU MLP, residual.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     ts.manual_seed(0)
        ...     w = {"w_qkv": ts.randn(16, 48) * 0.1, "w_out": ts.randn(16, 16) * 0.1, "w_mlp": ts.randn(16, 64) * 0.1}
        ...     ts.nn.transformer_layer(ts.randn(2, 8, 16), w, num_heads=2).shape
        (2, 8, 16)
    """
    if not isinstance(weights, Mapping):
        raise TesseraTypeError(f"ts.nn.transformer_layer: weights must be a dict with keys {_REQUIRED}, "
                               f"got {type(weights).__name__}")
    missing = [k for k in _REQUIRED if k not in weights]
    if missing:
        raise TesseraValueError(f"ts.nn.transformer_layer: weights lack {missing}; expected keys {_REQUIRED}")
    if x.ndim != 3:
        raise TesseraShapeError(f"ts.nn.transformer_layer: x must be [B, S, D], got shape {tuple(x.shape)}")
    B, S, D = x.shape
    if not (D % num_heads == 0):
        raise TesseraShapeError(f"ts.nn.transformer_layer: D={D} is not divisible by num_heads={num_heads}")
    H = num_heads
    qkv = F.linear(x, weights["w_qkv"])
    q, k, v = api.split(qkv, dim=-1, sections=3)
    q = q.reshape(B, S, H, D // H).transpose(1, 2)
    k = k.reshape(B, S, H, D // H).transpose(1, 2)
    v = v.reshape(B, S, H, D // H).transpose(1, 2)
    attn = F.flash_attention(q, k, v, causal=causal).transpose(1, 2).reshape(B, S, D)
    x = x + F.linear(attn, weights["w_out"])
    x = F.layer_norm(x, weights.get("ln_weight"), weights.get("ln_bias"))
    hidden = F.gelu(F.linear(x, weights["w_mlp"]))
    w_down = weights.get("w_mlp_out")
    return x + F.linear(hidden, w_down if w_down is not None else weights["w_mlp"].transpose())


def transformer_stack(x, weights: Union[Sequence[Mapping[str, object]], Mapping[str, object]], num_layers: int = None,
                      num_heads: int = 16, causal: bool = True):
    """``num_layers`` transformer layers; ``weights`` is a list of per-layer dicts, or one dict of
    tensors stacked along a leading layer dim.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     ts.manual_seed(0)
        ...     stacked = {"w_qkv": ts.zeros(3, 8, 24), "w_out": ts.zeros(3, 8, 8), "w_mlp": ts.zeros(3, 8, 32)}
        ...     ts.nn.transformer_stack(ts.randn(1, 4, 8), stacked, num_heads=2).shape  # 3 layers
        (1, 4, 8)
    """
    if isinstance(weights, Mapping):
        n = weights["w_qkv"].shape[0]
        layers = [{k: w[i] for k, w in weights.items()} for i in range(n)]
    else:
        layers = list(weights)
    if num_layers is None:
        num_layers = len(layers)
    if len(layers) != num_layers:
        raise TesseraValueError(f"ts.nn.transformer_stack: num_layers={num_layers} but {len(layers)} layers of weights were given")
    for w in layers:
        x = transformer_layer(x, w, num_heads=num_heads, causal=causal)
    return x
