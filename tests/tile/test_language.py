"""The language itself: kernels written from docs/tile.md, IR printing/verification, Triton source."""
import math

import pytest
import torch

import tessera.tile as tile
from tessera.errors import TesseraCompileError, TesseraShapeError, TesseraDTypeError, TesseraValueError
from tessera.tile import ir

from tile_testutil import rel_err
from kernels_for_tests import column_sums, explicit_grid, row_max_atomic_total, row_softmax, seq_only, tuned_copy


@pytest.mark.parametrize("dtype,tol,n", [(torch.float32, 1e-6, 75), (torch.float16, 5e-3, 130)])
def test_softmax_from_docs(dtype, tol, n):
    x = torch.randn(6, n).to(dtype) * 3
    y = torch.empty_like(x)
    row_softmax(x, y)
    assert rel_err(y, torch.softmax(x.double(), -1)) <= tol


def test_reduction_from_docs_with_sequential_loop():
    x = torch.randn(45, 37)
    out = torch.empty(37)
    column_sums(x, out)
    assert rel_err(out, x.double().sum(0)) <= 1e-6


def test_max_atomic_add_where_and_other():
    x = torch.randn(9, 21)
    rowmax, total = torch.empty(9), torch.zeros(1)
    row_max_atomic_total(x, rowmax, total)
    assert torch.equal(rowmax, x.max(1).values)
    assert abs(total.item() - x.double().sum().item()) < 1e-4


def test_program_id_kernel_needs_and_uses_grid():
    x = torch.randn(40)
    y = torch.empty(40)
    with pytest.raises(TesseraValueError, match="grid="):
        explicit_grid(x, y)
    explicit_grid(x, y, grid=(3,))
    xd = x.double()
    ref = torch.maximum(torch.where(xd > 0, xd.clamp(min=0).sqrt(), torch.exp2(xd)), torch.log(xd.abs() + 1))
    assert rel_err(y, ref) <= 1e-6
    y2 = torch.empty(40)
    explicit_grid[(3,)](x, y2)
    assert torch.equal(y, y2)
    assert explicit_grid.lower(x, y).grid is None and explicit_grid.lower(x, y, grid=(3,)).grid == (3,)
    assert "tl.program_id(0)" in explicit_grid.lower(x, y).as_triton()


def test_sequential_top_level_loop_and_num_stages():
    x = torch.randn(64)
    y = torch.empty(64)
    seq_only(x, y)
    assert rel_err(y[:16], x.view(4, 16).double().sum(0)) <= 1e-6
    low = seq_only.lower(x, y)
    assert low.grid == (1, 1)
    assert "tl.range(0, X_size0, 16, num_stages=2)" in low.as_triton()


def test_autotune_space_uses_first_config_on_cpu_and_keywords_override():
    x = torch.randn(50)
    y = torch.empty(50)
    tuned_copy(x, y)
    assert torch.equal(x, y)
    assert tuned_copy.lower(x, y).grid == (4, 1)
    assert tuned_copy.lower(x, y, BLOCK=32).grid == (2, 1)


def test_tile_ir_prints_and_verifies():
    x = torch.randn(5, 10)
    low = row_softmax.lower(x, torch.empty_like(x))
    text = low.as_tile_ir()
    assert text.startswith("tile.func @row_softmax(")
    assert "parallel=True" in text and "reduce(" in text and "kind=max" in text
    ir.verify(low.ir_fn)
    # break SSA: use a value before its definition
    body = low.ir_fn.body.ops[-1].regions[0]
    body.ops.insert(0, body.ops.pop(-2))  # the store, before the values it stores
    with pytest.raises(TesseraCompileError, match="used before it is defined"):
        ir.verify(low.ir_fn)


def test_triton_source_of_attention_is_tuned():
    import sys, os
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
    from custom_flash_attention import fused_attention_kernel as k

    q = torch.randn(4, 256, 64, dtype=torch.float16)
    src = k.lower(q, q, q, torch.empty_like(q), 0.125, BLOCK_N=128, num_warps=8, num_stages=3).as_triton()
    assert "tl.math.exp2" in src and "tl.exp(" not in src
    assert "(scale * 1.4426950408889634)" in src  # the scale folded into the exponent
    assert "num_stages=3" in src and "tl.range(" in src
    assert "tl.dot(" in src and ", acc" in src  # P @ V accumulates into the rescaled fp32 accumulator
    assert "mask=" not in src  # 256 is a multiple of both tiles: no masks
    low_tail = k.lower(q[:, :200], q[:, :200], q[:, :200], torch.empty_like(q[:, :200]), 0.125)
    assert "mask=" in low_tail.as_triton() and "float('-inf')" in low_tail.as_triton()


def test_annotation_checks_at_call():
    x = torch.randn(4, 8)
    with pytest.raises(TesseraShapeError, match="N = 8"):
        row_softmax(x, torch.empty(4, 9))
    with pytest.raises(TesseraShapeError, match="2 dims"):
        row_softmax(torch.randn(8), torch.randn(8))


def test_tessera_tensor_arguments():
    core = pytest.importorskip("tessera.core.tensor")
    from tessera import interop

    x = torch.randn(3, 20)
    y = torch.empty_like(x)
    row_softmax(interop.from_torch(x), interop.from_torch(y))
    assert rel_err(y, torch.softmax(x.double(), -1)) <= 1e-6


def test_ts_jit_protocol_returns_the_launchable_kernel():
    assert row_softmax.__tessera_jit__() is row_softmax


def test_ops_outside_a_kernel_raise_with_caret():
    with pytest.raises(TesseraCompileError) as e:
        tile.exp(torch.ones(2))
    msg = str(e.value)
    assert "outside a kernel" in msg and "tile.exp(torch.ones(2))" in msg and "^^^" in msg


def test_python_numbers_are_weakly_typed_and_mixed_tiles_promote():
    from kernels_for_tests import mixed_dtypes

    x, w = torch.randn(40).half(), torch.randn(40)
    y, z = torch.empty(40), torch.empty(40).half()
    low = mixed_dtypes.lower(x, w, y, z)
    assert "binary(%" in low.as_tile_ir() and "{op=mul} : tile<16xf16>" in low.as_tile_ir()
    assert "{op=add} : tile<16xf32>" in low.as_tile_ir() and ".to(tl.float32)" in low.as_triton()
    mixed_dtypes(x, w, y, z)
    assert torch.equal(z, x * 2)
    assert rel_err(y, x.double() + w.double()) <= 1e-7


def test_three_parallel_loops_int_bound_constexpr_branch_and_unrolled_range():
    from kernels_for_tests import add_3d

    x = torch.randn(3, 5, 13)
    y = torch.zeros(3, 5, 13)
    add_3d(x, y, 3)
    # rows 0..3 are written (the tile of 2 rows at b=2 reaches row 3; tails are masked by the dim, not the loop)
    assert torch.allclose(y[:, :4], x[:, :4] + 2) and torch.equal(y[:, 4:], torch.zeros(3, 1, 13))
    low = add_3d.lower(x, y, 3)
    assert low.grid == (3 * 2 * 2, 1)
    add_3d(x, y, 5, TWICE=True)
    assert torch.allclose(y, (x + 2) * 2)
