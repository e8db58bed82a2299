"""The three shipped kernels (examples/) against float64 references at awkward sizes."""
import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
from tile_testutil import rel_err  # noqa: E402
from custom_flash_attention import attention, fused_attention_kernel  # noqa: E402
from tile_gemm_gelu import gemm_bias_gelu, gemm_bias_gelu_kernel  # noqa: E402
from tile_layer_norm import layer_norm  # noqa: E402



def ref_attention(q, k, v, scale):
    s = (q.double() @ k.double().transpose(-1, -2)) * scale
    return torch.softmax(s, -1) @ v.double()


@pytest.mark.parametrize("dtype,tol,s,d", [(torch.float32, 1e-5, 45, 16), (torch.float16, 5e-3, 37, 32)])
def test_attention_awkward_seq_len(dtype, tol, s, d):
    q, k, v = (torch.randn(1, 3, s, d).to(dtype) for _ in range(3))
    out = attention(q, k, v)
    assert out.dtype == dtype
    assert rel_err(out, ref_attention(q, k, v, 1 / math.sqrt(d))) <= tol


def test_attention_tiles_smaller_than_sequence_and_custom_scale():
    q, k, v = (torch.randn(2 * 2, 50, 16) for _ in range(3))
    o = torch.empty_like(q)
    fused_attention_kernel(q, k, v, o, 0.37, BLOCK_M=32, BLOCK_N=16)
    assert rel_err(o, ref_attention(q, k, v, 0.37)) <= 1e-5


@pytest.mark.parametrize("dtype,tol,m,n", [(torch.float32, 1e-5, 7, 100), (torch.float16, 5e-3, 5, 67)])
def test_layer_norm_awkward_width(dtype, tol, m, n):
    x, w, b = torch.randn(m, n).to(dtype), torch.randn(n).to(dtype), torch.randn(n).to(dtype)
    ref = torch.nn.functional.layer_norm(x.double(), (n,), w.double(), b.double(), 1e-5)
    out = layer_norm(x, w, b)
    assert out.dtype == dtype and rel_err(out, ref) <= tol


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 5e-3)])
def test_gemm_bias_gelu_awkward_sizes(dtype, tol):
    a, b, bias = torch.randn(37, 29).to(dtype), torch.randn(29, 45).to(dtype), torch.randn(45).to(dtype)
    ref = torch.nn.functional.gelu(a.double() @ b.double() + bias.double())
    out = gemm_bias_gelu(a, b, bias)
    assert out.dtype == dtype and rel_err(out, ref) <= tol


def test_gemm_grid_is_grouped_over_both_parallel_loops():
    a, b, bias, c = torch.randn(40, 16), torch.randn(16, 70), torch.randn(70), torch.empty(40, 70)
    low = gemm_bias_gelu_kernel.lower(a, b, bias, c, BLOCK_M=16, BLOCK_N=32, BLOCK_K=16)
    assert low.grid == (3 * 3, 1)
    assert "_in_group" in low.as_triton()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("s", [1000, 4096])
def test_attention_bf16_gpu(s):
    q, k, v = (torch.randn(2, 4, s, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    assert rel_err(attention(q, k, v), ref_attention(q, k, v, 1 / math.sqrt(128))) <= 1e-2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_layer_norm_and_gemm_bf16_gpu():
    x, w, b = (torch.randn(*s, device="cuda", dtype=torch.bfloat16) for s in ((300, 1000), (1000,), (1000,)))
    ref = torch.nn.functional.layer_norm(x.double(), (1000,), w.double(), b.double())
    assert rel_err(layer_norm(x, w, b), ref) <= 1e-2
    a, bb, bias = (torch.randn(*s, device="cuda", dtype=torch.bfloat16) for s in ((1000, 520), (520, 777), (777,)))
    ref = torch.nn.functional.gelu(a.double() @ bb.double() + bias.double())
    assert rel_err(gemm_bias_gelu(a, bb, bias), ref) <= 1e-2
