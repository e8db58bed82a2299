"""Fixtures shared by the kernel tests."""
import pytest

from tessera.kernels.matmul import api, gluon_ws


@pytest.fixture
def launches(monkeypatch):
    """Each kernel launch of matmul as (kernel, a, b, keyword arguments), the operands as received."""
    calls = []
    for name in ("launch_tma", "launch_ptr", "launch_skinny"):
        def spy(a, b, *args, _real=getattr(api, name), _name=name[len("launch_"):], **kw):
            calls.append((_name, a, b, kw))
            return _real(a, b, *args, **kw)
        monkeypatch.setattr(api, name, spy)
    real_gluon = gluon_ws.launch
    monkeypatch.setattr(gluon_ws, "launch", lambda a, b, *r, **kw: (calls.append(("gluon", a, b, kw)),
                                                                    real_gluon(a, b, *r, **kw))[1])
    return calls
