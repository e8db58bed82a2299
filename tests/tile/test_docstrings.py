"""Every docstring example of tessera.tile runs (on the CPU interpreter) and prints what it says."""
import doctest
import importlib
import pkgutil

import pytest

import tessera.tile

MODULES = ["tessera.tile"] + sorted(m.name for m in pkgutil.iter_modules(tessera.tile.__path__, "tessera.tile."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
