"""ts.nn.embedding: an id outside [0, V) is a typed value error naming the argument, the id and the range."""
import pytest
import torch

import tessera as ts

W = ts.from_dlpack


@pytest.mark.parametrize("bad, where", [(7, "ids[1, 2]"), (-1, "ids[1, 2]")])
def test_out_of_range_id_raises_value_error(cpu, bad, where):
    table = ts.randn(7, 4)
    ids = torch.zeros(2, 3, dtype=torch.int64)
    ids[1, 2] = bad
    with pytest.raises(ts.TesseraValueError) as e:
        ts.nn.embedding(W(ids), table)
    msg = str(e.value)
    assert msg.startswith(f"ts.nn.embedding: {where} = {bad} is outside [0, 7)")
    assert "(7, 4)" in msg


def test_valid_ids_and_gradient(cpu):
    table = W(torch.randn(7, 4, dtype=torch.float64))
    ids = W(torch.tensor([[6, 0, 6]]))
    assert torch.equal(ts.nn.embedding(ids, table).torch(), table.torch()[torch.tensor([[6, 0, 6]])])
    g = ts.grad(lambda t: ts.nn.embedding(ids, t).sum())(table)
    assert g.torch()[:, 0].tolist() == [1.0, 0, 0, 0, 0, 0, 2.0]


def test_traced_ids_are_not_read(cpu):
    table = ts.randn(7, 4)
    out = ts.jit(lambda i, t: ts.nn.embedding(i, t))(W(torch.tensor([1, 2])), table)
    assert out.shape == (2, 4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_checked_mode_rejects_bad_ids(monkeypatch):
    monkeypatch.setenv("TESSERA_CHECKS", "1")
    table = W(torch.randn(7, 4, device="cuda"))
    with pytest.raises(ts.TesseraValueError, match=r"ids\[1\] = 9 is outside \[0, 7\)"):
        ts.nn.embedding(W(torch.tensor([0, 9], device="cuda")), table)
