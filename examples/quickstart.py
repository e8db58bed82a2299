"""The seed's Example 1: an optimized transformer layer, compiled with ts.jit.

Full size (B=4, S=2048, D=4096) on a GPU; small sizes on a CPU-only machine.
Run: python examples/quickstart.py
"""
import tessera as ts
import numpy as np


@ts.function
def transformer_layer(
    x: ts.Tensor["B", "S", "D", ts.bf16],  # Input: batch, sequence, dim
    w_qkv: ts.Tensor["D", "3*D", ts.bf16], # QKV projection weights
    w_out: ts.Tensor["D", "D", ts.bf16],   # Output projection
    w_mlp: ts.Tensor["D", "4*D", ts.bf16], # MLP weights
) -> ts.Tensor["B", "S", "D", ts.bf16]:
    """Complete transformer layer with Flash Attention."""

    # Multi-head attention with automatic optimization
    qkv = ts.nn.linear(x, w_qkv)
    q, k, v = ts.split(qkv, dim=-1, sections=3)

    # Reshape for multi-head attention
    B, S, D = x.shape
    H = 16  # num_heads
    q = q.reshape(B, S, H, D // H).transpose(1, 2)  # [B, H, S, D/H]
    k = k.reshape(B, S, H, D // H).transpose(1, 2)
    v = v.reshape(B, S, H, D // H).transpose(1, 2)

    # Flash Attention (automatically optimized)
    attn_out = ts.nn.flash_attention(q, k, v, causal=True)
    attn_out = attn_out.transpose(1, 2).reshape(B, S, D)

    # Output projection
    attn_out = ts.nn.linear(attn_out, w_out)

    # Residual connection
    x = x + attn_out

    # Layer norm (numerically stable)
    x = ts.nn.layer_norm(x)

    # MLP with GELU
    mlp_out = ts.nn.gelu(ts.nn.linear(x, w_mlp))
    mlp_out = ts.nn.linear(mlp_out, w_mlp.transpose())

    # Final residual
    return x + mlp_out


def main():
    on_gpu = ts.device().type == "cuda"
    # Usage - works immediately on any GPU (and, at small sizes, on a CPU)
    B, S, D = (4, 2048, 4096) if on_gpu else (2, 128, 256)
    x = ts.randn(B, S, D, dtype=ts.bf16)
    w_qkv = ts.randn(D, 3*D, dtype=ts.bf16)
    w_out = ts.randn(D, D, dtype=ts.bf16)
    w_mlp = ts.randn(D, 4*D, dtype=ts.bf16)

    # Compile and run (automatic optimization)
    compiled_layer = ts.jit(transformer_layer)
    output = compiled_layer(x, w_qkv, w_out, w_mlp)

    print(f"Input shape: {x.shape}")
    print(f"Output shape: {output.shape}")
    print(f"Memory usage: {ts.memory.get_memory_usage():.2f} GB")
    finite = bool(np.isfinite(output.to(ts.f32).numpy()).all())
    print(f"Device: {ts.device()}, output finite: {finite}")


if __name__ == "__main__":
    main()
