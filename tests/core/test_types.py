"""dtypes, promotion, precision policies, and the symbolic-dimension grammar."""
import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import tessera as ts
from tessera.types.dims import Dim, ShapeEnv, parse_dim


def test_all_dtypes_convert_both_ways():
    for d in ts.ALL_DTYPES:
        if d.torch_dtype is not None:
            assert ts.dtypes.from_torch(d.torch_dtype) is d
        assert ts.dtypes.from_numpy(d.numpy_dtype) is d
    assert ts.dtypes.from_numpy(ml_dtypes.float4_e2m1fn) is ts.fp4_e2m1


@pytest.mark.parametrize("a, b, out", [
    (ts.bf16, ts.f16, ts.f32), (ts.int32, ts.bf16, ts.bf16), (ts.fp8_e4m3, ts.fp8_e5m2, ts.f16),
    (ts.uint8, ts.int8, ts.int16), (ts.bool_, ts.int32, ts.int32), (ts.f32, ts.f64, ts.f64),
    (ts.fp4_e2m1, ts.bf16, ts.bf16), (ts.int64, ts.int8, ts.int64)])
def test_promotion(a, b, out):
    assert ts.promote_types(a, b) == out and ts.promote_types(b, a) == out


def test_precision_policy():
    p = ts.bf16 @ ts.accum(ts.f32)
    assert p.storage is ts.bf16 and p.accum is ts.f32 and p != ts.bf16
    assert repr(p) == "bf16 @ accum(f32)"
    spec = ts.Tensor["B", "D", ts.fp8_e4m3 @ ts.accum(ts.f32)]
    assert spec.dtype.accum is ts.f32
    with pytest.raises(ts.TesseraDTypeError):
        ts.bf16 @ ts.f32
    with pytest.raises(ts.TesseraDTypeError):
        ts.accum(ts.int32)


def test_policy_annotation_accepts_storage_dtype(cpu):
    @ts.function
    def f(x: ts.Tensor["B", "D", ts.bf16 @ ts.accum(ts.f32)], w: ts.Tensor["D", "K", ts.bf16]):
        return ts.nn.linear(x, w)

    assert f(ts.ones(2, 4, dtype=ts.bf16), ts.ones(4, 3, dtype=ts.bf16)).tolist() == [[4.0] * 3] * 2


def test_fp8_weight_with_bf16_activations(cpu):
    @ts.function
    def model(x: ts.Tensor["B", "S", "D", ts.bf16 @ ts.accum(ts.f32)],
              w: ts.Tensor["D", "K", ts.fp8_e4m3 @ ts.accum(ts.f32)]) -> ts.Tensor["B", "S", "K", ts.bf16]:
        return ts.nn.linear(x, w)

    w = ts.tensor(np.full((4, 3), 0.5, np.float32)).to(ts.fp8_e4m3)
    out = model(ts.ones(1, 2, 4, dtype=ts.bf16), w)
    assert out.dtype == ts.bf16 and out.tolist() == [[[2.0] * 3] * 2]


def test_dims_canonical_form():
    assert parse_dim("3*D") == parse_dim("D*3") == parse_dim("D+D+D")
    assert parse_dim("B*H") == parse_dim("H*B")
    assert str(parse_dim("(S+1)*2 - 2")) == "2*S"
    assert parse_dim("3*D") // 3 == Dim.sym("D")
    assert parse_dim("D//H").evaluate({"D": 4096, "H": 16}) == 256
    assert parse_dim("S%4").evaluate({"S": 10}) == 2
    assert parse_dim(12).is_constant and parse_dim("-3+4").constant_value == 1


@given(st.integers(1, 50), st.integers(1, 50), st.integers(1, 9))
def test_dims_evaluate_like_python(a, b, c):
    expr = parse_dim("(A + 2*B) * C // 3 - A % C")
    assert expr.evaluate({"A": a, "B": b, "C": c}) == (a + 2 * b) * c // 3 - a % c


def test_guards_record_and_check():
    env = ShapeEnv({"S": 64, "D": 32})
    with env:
        assert Dim.sym("S") > Dim.sym("D")
        assert int(Dim.sym("D") // 2) == 16
    assert env.check({"S": 100, "D": 32}) and not env.check({"S": 10, "D": 32}) and not env.check({"S": 100, "D": 30})


def test_annotation_spec_repr_and_ellipsis(cpu):
    spec = ts.Tensor[..., "D", ts.f32]
    assert spec.has_ellipsis and spec.dims == ("...", "D")

    @ts.function
    def f(x: ts.Tensor[..., "D", ts.f32], w: ts.Tensor["D", "K", ts.f32]) -> ts.Tensor[..., "K", ts.f32]:
        return x @ w

    assert f(ts.ones(2, 3, 4), ts.ones(4, 5)).shape == (2, 3, 5)
    with pytest.raises(ts.TesseraShapeError):
        f(ts.ones(2, 3, 4), ts.ones(3, 5))
