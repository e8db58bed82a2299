"""``ts.nn``: the model library (fast kernels are registered lowerings of these ops' primitives).

Example:
    >>> import tessera as ts
    >>> with ts.device("cpu"):
    ...     y = ts.nn.gelu(ts.nn.linear(ts.ones(2, 4), ts.ones(4, 3)))
    >>> y.shape
    (2, 3)
"""
from .functional import (add_layer_norm, add_rms_norm, cross_entropy, dropout, embedding, flash_attention,
                         flash_attention_varlen, gelu, layer_norm, linear, linear_cross_entropy, log_softmax, matmul, relu, rms_norm, rope_frequencies,
                         rotary_embedding, silu, softmax, swiglu)
from .transformer import transformer_layer, transformer_stack
from ..ops.fp8_ops import fp8_linear, quantized_linear

__all__ = ["fp8_linear", "quantized_linear", "add_layer_norm", "add_rms_norm", "linear_cross_entropy", "rope_frequencies", "rotary_embedding", "swiglu",
           "cross_entropy", "dropout", "embedding", "flash_attention",
           "flash_attention_varlen", "gelu", "layer_norm", "linear", "log_softmax",
           "matmul", "relu", "rms_norm", "silu", "softmax", "transformer_layer", "transformer_stack"]
