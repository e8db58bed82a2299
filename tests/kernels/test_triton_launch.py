"""The host side shared by the kernels: per-stream buffers and relaunches that swap tensors."""
import torch

from tessera.kernels import triton_launch
from tessera.kernels.triton_launch import Relaunch, stream_buffer


class _Compiled:
    """Stands in for a compiled kernel: records each launch's grid, arguments and stream."""

    def __init__(self):
        self.launches = []

    def __getitem__(self, grid):
        return lambda *args, stream=None: self.launches.append((grid, args, stream))


def _context(monkeypatch, dev=0, stream=7, capturing=False):
    monkeypatch.setattr(triton_launch, "_launch_context", lambda: (dev, stream, capturing))


def test_relaunch_puts_new_tensors_in_every_slot_of_their_role(monkeypatch):
    _context(monkeypatch)
    a, out, cnt = torch.zeros(2), torch.zeros(3), torch.zeros(1)
    compiled = _Compiled()
    r = Relaunch(compiled, (5, 2), [a, out, 16, out, cnt, True], device=0, stream=7).with_roles(a=a, out=out)
    a2, out2 = torch.ones(2), torch.ones(3)
    assert r.launch(a=a2, out=out2)
    ((grid, args, stream),) = compiled.launches
    assert grid == (5, 2, 1) and stream == 7
    assert args[0] is a2 and args[1] is out2 and args[3] is out2  # out doubles as the unused pointers
    assert args[2] == 16 and args[4] is cnt and args[5] is True  # the rest stays as first launched


def test_relaunch_declines_another_stream_device_or_a_graph_capture(monkeypatch):
    a = torch.zeros(2)
    compiled = _Compiled()
    r = Relaunch(compiled, (1,), [a], device=0, stream=7).with_roles(a=a)
    for ctx in ((0, 8, False), (1, 7, False), (0, 7, True)):
        _context(monkeypatch, *ctx)
        assert r.launch(a=torch.ones(2)) is False
    assert compiled.launches == []


def test_roles_that_cannot_be_told_apart_give_no_relaunch():
    a, b = torch.zeros(2), torch.zeros(2)
    assert Relaunch(None, (1,), [a, a]).with_roles(a=a, b=a) is None      # x @ x: one tensor, two roles
    assert Relaunch(None, (1,), [a]).with_roles(a=a, b=b) is None         # b was copied before launching
    assert Relaunch(None, (1,), [a, b]).with_roles(a=a, b=b, bias=None) is not None


def test_stream_buffers_off_the_gpu_are_fresh_and_zeroed_on_request():
    z = stream_buffer("t", 10, torch.int32, "cpu", zeroed=True)
    assert z.shape == (10,) and z.dtype == torch.int32 and not z.any()
    z.fill_(3)
    assert not stream_buffer("t", 10, torch.int32, "cpu", zeroed=True).any()
