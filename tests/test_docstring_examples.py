"""Every example in the core's docstrings runs and prints what it says."""
import doctest
import importlib
import pkgutil

import pytest

import tessera

# kernels and benchmark suites document GPU usage; their examples are exercised by their own tests
_SKIP = ("tessera.kernels", "tessera.bench.suites", "tessera.tile", "tessera.models")
MODULES = sorted(m.name for m in pkgutil.walk_packages(tessera.__path__, "tessera.")
                 if not m.name.startswith(_SKIP) and not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, cpu):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
