import os

import pytest
import torch

if not torch.cuda.is_available():
    # kernels run on the CPU through Triton's interpreter; it must be chosen before triton is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

# a kernel that fails must fail its test, not fall back to the reference
os.environ.setdefault("TESSERA_STRICT_KERNELS", "1")

import tessera as ts  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def cpu():
    """Run the test body with the CPU as the default device."""
    with ts.device("cpu") as d:
        yield d


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
