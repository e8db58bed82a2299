"""Epilogue pieces shared by the GEMM kernels: operand scales, bias, activation, residual.

The order is fixed: ``acc * scale_a * scale_b + bias`` is the pre-activation; the output is
``act(pre) + residual``. The torch twin :func:`torch_epilogue` is the reference and the cuBLAS path.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

ACTIVATIONS = {None: 0, "gelu": 1, "gelu_tanh": 2, "silu": 3, "relu": 4}


@triton.jit
def activation(x, ACT: tl.constexpr):
    if ACT == 1:
        x = 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
    elif ACT == 2:
        # 0.5 * (1 + tanh(y)) == sigmoid(2y)
        y = 0.7978845608028654 * (x + 0.044715 * x * x * x)
        x = x / (1.0 + tl.exp(-2.0 * y))
    elif ACT == 3:
        x = x / (1.0 + tl.exp(-x))
    elif ACT == 4:
        x = tl.maximum(x, 0.0)
    return x


@triton.jit
def apply_epilogue(acc, offs_m, offs_n, M, N, sa_ptr, sb_ptr, bias_ptr, res_ptr, pre_ptr,
                   stride_rm, stride_rn, stride_pm,
                   SCALE_A: tl.constexpr, SCALE_B: tl.constexpr, HAS_BIAS: tl.constexpr,
                   ACT: tl.constexpr, HAS_RES: tl.constexpr, STORE_PRE: tl.constexpr):
    """fp32 accumulator tile -> fp32 output tile. SCALE_*: 0 none, 1 scalar, 2 per row / column."""
    mask_m = offs_m < M
    mask_n = offs_n < N
    if SCALE_A == 1:
        acc = acc * tl.load(sa_ptr).to(tl.float32)
    elif SCALE_A == 2:
        acc = acc * tl.load(sa_ptr + offs_m, mask=mask_m, other=0.0).to(tl.float32)[:, None]
    if SCALE_B == 1:
        acc = acc * tl.load(sb_ptr).to(tl.float32)
    elif SCALE_B == 2:
        acc = acc * tl.load(sb_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    if HAS_BIAS:
        acc = acc + tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    mask = mask_m[:, None] & mask_n[None, :]
    if STORE_PRE:
        tl.store(pre_ptr + offs_m[:, None] * stride_pm + offs_n[None, :],
                 acc.to(pre_ptr.dtype.element_ty), mask=mask)
    acc = activation(acc, ACT)
    if HAS_RES:
        r = tl.load(res_ptr + offs_m[:, None] * stride_rm + offs_n[None, :] * stride_rn, mask=mask, other=0.0)
        acc = acc + r.to(tl.float32)
    return acc


def torch_activation(x: torch.Tensor, activation):
    if activation is None:
        return x
    if activation == "gelu":
        return torch.nn.functional.gelu(x)
    if activation == "gelu_tanh":
        return torch.nn.functional.gelu(x, approximate="tanh")
    if activation == "silu":
        return torch.nn.functional.silu(x)
    return torch.relu(x)


def torch_epilogue(acc: torch.Tensor, bias, activation, residual, out_dtype, return_preact):
    """The same epilogue in torch (used by the cuBLAS path and as the tests' reference)."""
    pre = acc if bias is None else acc + bias
    out = torch_activation(pre, activation)
    if residual is not None:
        out = out + residual
    out = out.to(out_dtype)
    return (out, pre.to(out_dtype)) if return_preact else out
