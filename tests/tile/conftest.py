"""Tile-language tests: CPU tensors run through Triton's interpreter (the Kernel picks it for CPU
tensors), with a private cache directory so that tests never see another run's entries."""
import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TESSERA_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tile_cache"))

