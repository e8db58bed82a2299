"""The seed's Example 1, verbatim, at small sizes: eager and jit against a torch reference."""
import importlib.util
import math
import os

import pytest
import torch

import tessera as ts
from tessera.bench.seed_reference import torch_transformer_layer

_spec = importlib.util.spec_from_file_location(
    "quickstart", os.path.join(os.path.dirname(__file__), "..", "..", "examples", "quickstart.py"))
quickstart = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quickstart)
transformer_layer = quickstart.transformer_layer


torch_layer = torch_transformer_layer


def _inputs(B, S, D, dtype=ts.bf16):
    scale = 1 / math.sqrt(D)
    x = ts.randn(B, S, D, dtype=dtype)
    w_qkv = (ts.randn(D, 3 * D) * scale).to(dtype)
    w_out = (ts.randn(D, D) * scale).to(dtype)
    w_mlp = (ts.randn(D, 4 * D) * scale).to(dtype)
    return x, w_qkv, w_out, w_mlp


def _rel(a, b):
    a, b = a.torch().double(), b.double()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_example1_matches_torch(cpu, mode):
    ts.manual_seed(0)
    args = _inputs(2, 37, 64)
    fn = ts.jit(transformer_layer) if mode == "jit" else transformer_layer
    out = fn(*args)
    assert out.shape == (2, 37, 64) and out.dtype == ts.bf16
    ref = torch_layer(*[a.torch().double() for a in args])
    assert _rel(out, ref) < 2e-2


def test_example1_jit_equals_eager_in_f32(cpu):
    ts.manual_seed(1)
    args = _inputs(1, 16, 32, dtype=ts.f32)

    @ts.function
    def layer32(x: ts.Tensor["B", "S", "D", ts.f32], w_qkv: ts.Tensor["D", "3*D", ts.f32],
                w_out: ts.Tensor["D", "D", ts.f32], w_mlp: ts.Tensor["D", "4*D", ts.f32]):
        return transformer_layer.fn(x, w_qkv, w_out, w_mlp)

    eager = layer32(*args)
    compiled = ts.jit(layer32)(*args)
    assert torch.allclose(eager.torch(), compiled.torch(), rtol=1e-5, atol=1e-5)
    ref = torch_layer(*[a.torch().double() for a in args])
    assert _rel(compiled, ref) < 1e-5


def test_example1_is_traced_once_for_four_sizes(cpu):
    compiled = ts.jit(transformer_layer)
    for B, S in [(1, 8), (2, 16), (3, 33), (1, 50)]:
        args = _inputs(B, S, 32)
        out = compiled(*args)
        ref = torch_layer(*[a.torch().double() for a in args])
        assert out.shape == (B, S, 32)
        assert _rel(out, ref) < 2e-2
    assert compiled.trace_count == 1


def test_example1_wrong_weight_shape_message(cpu):
    x, w_qkv, w_out, w_mlp = _inputs(1, 8, 32)
    bad = ts.randn(32, 95, dtype=ts.bf16)
    with pytest.raises(ts.TesseraShapeError) as e:
        ts.jit(transformer_layer)(x, bad, w_out, w_mlp)
    assert str(e.value) == ("transformer_layer: argument w_qkv has shape (32, 95), but its annotation "
                            "('D', '3*D') with D=32 (bound by x) requires (32, 96)")


def test_ir_is_printable_and_simplified(cpu):
    text = ts.jit(transformer_layer).lower(*_inputs(1, 8, 32)).as_text()
    assert text.startswith("graph transformer_layer(")
    assert "flash_attention" in text and "layer_norm" in text and "linear" in text
    assert "B" in text and "S" in text  # symbolic sizes from the annotations
    assert "contiguous" not in text


def test_executor_frees_intermediates_after_last_use(cpu):
    from tessera.compiler.executor import Executable

    def chain(x):
        for _ in range(6):
            x = ts.exp(x) * 0.5
        return x

    lowered = ts.jit(chain).lower(ts.ones(4))
    exe = lowered.compile()
    freed = {i for r in exe.releases for i in r}
    produced = {o for _, _, outs, _, _ in exe.steps for o in outs}
    final = {i for is_slot, i in exe.outputs if is_slot}
    assert produced - final == freed  # every intermediate is released, the output is kept
    assert ts.jit(chain)(ts.ones(4)).tolist() == chain(ts.ones(4)).tolist()
    assert isinstance(exe, Executable)
