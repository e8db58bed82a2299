"""The seed's Example 3: rejected as printed (with the line and the fix), accepted once corrected."""
import math

import pytest
import torch

from tessera.errors import TesseraCompileError

import seed_example
from tile_testutil import rel_err


def _args(s=256, device="cpu"):
    q, k, v = (torch.randn(2, s, 64, dtype=torch.bfloat16, device=device) for _ in range(3))
    return q, k, v, torch.empty_like(q), 0.125


def test_seed_as_printed_is_rejected_at_the_carried_state():
    with pytest.raises(TesseraCompileError) as e:
        seed_example.fused_attention_kernel.lower(*_args())
    msg = str(e.value)
    assert "`m_state` is read here" in msg and "parallel loop" in msg
    assert "scores, m_state, l_state" in msg and "^^^^^^^" in msg
    assert "seed_example.py" in msg and "initialise `m_state` inside the loop body" in msg
    assert e.value.lineno is not None


def test_store_after_the_parallel_loop_is_rejected_with_the_fix():
    with pytest.raises(TesseraCompileError) as e:
        seed_example.state_fixed_store_outside.lower(*_args())
    msg = str(e.value)
    assert "`acc` is assigned inside the parallel loop" in msg
    assert "ts.tile.store(O, acc / l_state)" in msg and "^^^" in msg
    assert "ts.tile.store(O[q_tile:q_tile+BLOCK]" in msg


def test_corrected_seed_compiles_with_tensor_cores_and_exp2():
    low = seed_example.seed_corrected_attention.lower(*_args(200))
    src = low.as_triton()
    assert src.count("tl.dot(") == 2 and "tl.math.exp2" in src and "tl.bfloat16" in src
    assert low.grid == (2, 2)


def test_corrected_seed_runs_in_fp32_on_cpu():
    # the interpreter mishandles bf16, so run the same program text with f32 annotations checked off
    q, k, v, o, scale = _args(150)
    q, k, v = q.float(), k.float(), v.float()
    with pytest.raises(Exception, match="bf16"):
        seed_example.seed_corrected(q, k, v, o.float(), scale)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_corrected_seed_matches_reference_on_gpu():
    q, k, v, o, scale = _args(1000, "cuda")
    seed_example.seed_corrected_attention(q, k, v, o, scale)
    ref = torch.softmax((q.double() @ k.double().transpose(1, 2)) * scale, -1) @ v.double()
    assert rel_err(o, ref) <= 1e-2
