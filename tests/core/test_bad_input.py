"""Bad input gets a typed error naming the function, the argument and the dim, with the fix."""
import pytest

import tessera as ts


@ts.function
def layer(x: ts.Tensor["B", "S", "D", ts.f32], w: ts.Tensor["D", "3*D", ts.f32]) -> ts.Tensor["B", "S", "3*D", ts.f32]:
    return ts.nn.linear(x, w)


def test_expression_dim_mismatch(cpu):
    with pytest.raises(ts.TesseraShapeError) as e:
        layer(ts.ones(2, 5, 4), ts.ones(4, 11))
    assert str(e.value) == ("layer: argument w has shape (4, 11), but its annotation ('D', '3*D') with D=4 "
                            "(bound by x) requires (4, 12)")


def test_symbol_bound_to_two_values(cpu):
    with pytest.raises(ts.TesseraShapeError) as e:
        layer(ts.ones(2, 5, 4), ts.ones(6, 18))
    assert str(e.value) == ("layer: argument w has shape (6, 18), but its annotation ('D', '3*D') with D=4 "
                            "(bound by x) requires (4, 12)")


def test_wrong_rank(cpu):
    with pytest.raises(ts.TesseraShapeError) as e:
        layer(ts.ones(5, 4), ts.ones(4, 12))
    assert str(e.value) == "layer: argument x has shape (5, 4) (rank 2), but its annotation ('B', 'S', 'D') requires rank 3"


def test_dtype_mismatch_names_the_fix(cpu):
    with pytest.raises(ts.TesseraDTypeError) as e:
        layer(ts.ones(2, 5, 4, dtype=ts.bf16), ts.ones(4, 12))
    assert str(e.value) == "layer: argument x has dtype bf16, but its annotation requires f32; convert it with x.to(ts.f32)"


def test_non_tensor_argument(cpu):
    import numpy as np

    with pytest.raises(ts.TesseraTypeError) as e:
        layer(np.ones((2, 5, 4), np.float32), ts.ones(4, 12))
    assert str(e.value).startswith("layer: argument x is annotated Tensor['B', 'S', 'D', f32] but is a ndarray; "
                                   "pass a ts.Tensor")


def test_unknown_keyword_argument(cpu):
    with pytest.raises(ts.TesseraTypeError) as e:
        layer(ts.ones(2, 5, 4), ts.ones(4, 12), bias=None)
    assert "layer: got an unexpected keyword argument 'bias'; its parameters are (x, w)" == str(e.value)


def test_inner_dimension_mismatch_in_an_op(cpu):
    with pytest.raises(ts.TesseraShapeError) as e:
        ts.ones(2, 3) @ ts.ones(4, 5)
    msg = str(e.value)
    assert msg.startswith("matmul: inner dimensions differ: a has shape (2, 3) and b has shape (4, 5)")
    assert "test_bad_input.py" in msg  # points at the user's line


def test_linear_explains_weight_layout(cpu):
    with pytest.raises(ts.TesseraShapeError) as e:
        ts.nn.linear(ts.ones(2, 8), ts.ones(3, 8))
    assert "w is laid out [in, out]" in str(e.value) and "pass w.T" in str(e.value)


def test_return_value_is_checked(cpu):
    @ts.function
    def bad(x: ts.Tensor["N", ts.f32]) -> ts.Tensor["N", ts.f32]:
        return ts.cat([x, x])

    with pytest.raises(ts.TesseraShapeError) as e:
        bad(ts.ones(3))
    assert str(e.value) == "bad: the return value has shape (6,), but its annotation ('N',) with N=3 (bound by the arguments) requires (3,)"


@pytest.mark.parametrize("text", ["3*", "D +", "__import__('os')", "D; x", "2**D", "D/2", ""])
def test_annotation_outside_the_grammar_is_rejected_when_made(text):
    with pytest.raises(ts.TesseraAnnotationError) as e:
        ts.Tensor["B", text]
    assert "cannot parse dimension" in str(e.value) and "^" in str(e.value)


def test_dtype_mismatch_between_operands(cpu):
    with pytest.raises(ts.TesseraDTypeError) as e:
        ts.ones(2, 3, dtype=ts.bf16) @ ts.ones(3, 2)
    assert str(e.value).startswith("matmul: a is bf16 but b is f32; convert one so both match, e.g. b.to(ts.bf16)")


def test_broadcast_failure_names_dims(cpu):
    with pytest.raises(ts.TesseraShapeError) as e:
        ts.ones(2, 3) + ts.ones(4)
    assert str(e.value).startswith("add: shapes cannot be broadcast together at dim -1 (3 vs 4): lhs has shape (2, 3), "
                                   "rhs has shape (4,)")


def test_branch_on_traced_value_points_at_user_line(cpu):
    def f(x):
        if x.sum() > 0:
            return x
        return -x

    with pytest.raises(ts.TesseraTraceError) as e:
        ts.jit(f)(ts.ones(3))
    msg = str(e.value)
    assert "if x.sum() > 0:" in msg and "ts.where" in msg and "test_bad_input.py" in msg


def test_storage_only_format_needs_conversion(cpu):
    w = ts.tensor([0.5, 1.0, 3.0]).to(ts.fp4_e2m1)
    with pytest.raises(ts.TesseraDTypeError) as e:
        w + 1.0
    assert "fp4_e2m1, a storage-only format; convert it first, e.g. x.to(ts.bf16)" in str(e.value)


def test_bad_cross_entropy_target(cpu):
    with pytest.raises(ts.TesseraValueError) as e:
        ts.nn.cross_entropy(ts.zeros(2, 5), ts.tensor([1, 7]))
    assert "target 7 is outside [0, 5)" in str(e.value)


def test_grad_of_non_scalar(cpu):
    with pytest.raises(ts.TesseraAutodiffError) as e:
        ts.grad(lambda x: x * 2)(ts.ones(3))
    assert "the loss must be a scalar, but it has shape (3,)" in str(e.value)


def _int_ones(*shape):
    import torch

    return ts.interop.from_torch(torch.ones(*shape, dtype=torch.int64))


EAGER_BAD_CALLS = {
    "cross_entropy reduction": (lambda x: ts.nn.cross_entropy(x, _int_ones(4), reduction="avg"),
                                ts.TesseraValueError, "reduction must be 'mean', 'sum' or 'none', got 'avg'"),
    "cross_entropy float targets": (lambda x: ts.nn.cross_entropy(x, ts.ones(4)),
                                    ts.TesseraDTypeError, "targets must be integer class ids, got f32"),
    "cross_entropy z_loss": (lambda x: ts.nn.cross_entropy(x, _int_ones(4), z_loss=float("nan")),
                             ts.TesseraValueError, "z_loss must be a finite weight >= 0, got nan"),
    "layer_norm of integers": (lambda x: ts.nn.layer_norm(_int_ones(4, 10)),
                               ts.TesseraDTypeError, "layer_norm: x must be a float tensor, got int64"),
    "softmax of integers": (lambda x: ts.nn.softmax(_int_ones(4, 10)),
                            ts.TesseraDTypeError, "softmax: x must be a float tensor, got int64"),
    "swiglu mixed dtypes": (lambda x: ts.nn.swiglu(x, x.to(ts.bf16)),
                            ts.TesseraDTypeError, "swiglu: gate is f32 but up is bf16; convert with up.to(ts.f32)"),
    "add_rms_norm mixed dtypes": (lambda x: ts.nn.add_rms_norm(x, x.to(ts.f16)), ts.TesseraDTypeError,
                                  "add_rms_norm: x is f32 but residual is f16; convert with residual.to(ts.f32)"),
}


@pytest.mark.parametrize("case", list(EAGER_BAD_CALLS))
def test_eager_calls_are_checked_before_they_run(cpu, case):
    # outside ts.jit the reference would compute something for these; the shape rule runs first
    call, error, message = EAGER_BAD_CALLS[case]
    for _ in range(2):  # the second call too: only accepted signatures are remembered
        with pytest.raises(error) as e:
            call(ts.randn(4, 10))
        assert message in str(e.value) and "test_bad_input.py" in str(e.value)


def test_eager_check_remembers_accepted_signatures(cpu):
    from tessera.core.primitive import registry

    prim = registry["softmax"]
    prim.accepted.clear()
    x = ts.randn(3, 5)
    ts.nn.softmax(x)
    ts.nn.softmax(ts.randn(3, 5))
    assert len(prim.accepted) == 1
    ts.nn.softmax(ts.randn(3, 6))
    assert len(prim.accepted) == 2


def test_eager_check_remembers_indexing_with_slices(cpu):
    from tessera.core.primitive import registry

    prim = registry["basic_index"]
    prim.accepted.clear()
    x = ts.randn(6, 5)
    assert x[1:4, :3].shape == (3, 3) and ts.randn(6, 5)[1:4, :3].shape == (3, 3)
    assert len(prim.accepted) == 1  # slices are part of the remembered signature
    assert x[1:5, :3].shape == (4, 3) and len(prim.accepted) == 2
