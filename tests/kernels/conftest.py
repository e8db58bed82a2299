"""Fixtures shared by the kernel tests."""
import os
import subprocess
import sys

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


@pytest.fixture(scope="session")
def fresh_python():
    """``run(script, *args)``: run ``python -c script args`` in a fresh process without Triton's
    interpreter (a build for a GPU needs the real compiler) and return its stdout; the test fails
    with the script's stderr if the script does."""
    def run(script, *args):
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        r = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env,
                           timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        return r.stdout
    return run
