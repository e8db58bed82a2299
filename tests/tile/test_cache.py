"""Compiled-kernel cache: entries on disk under a versioned key, written atomically, corrupt ones recompiled."""
import glob
import os

import pytest
import torch

import importlib

from tessera.tile import frontend
from tessera.tile.kernel import Kernel

kernel_mod = importlib.import_module("tessera.tile.kernel")

import kernels_for_tests as kt


def _fresh(k):
    return Kernel(k.fn)


def _count_lowerings(monkeypatch):
    calls = []
    real = frontend.Frontend.run

    def counting(self):
        calls.append(1)
        return real(self)

    monkeypatch.setattr(frontend.Frontend, "run", counting)
    return calls


def test_second_process_reuses_the_disk_entry(monkeypatch):
    x = torch.randn(4, 30)
    calls = _count_lowerings(monkeypatch)
    _fresh(kt.row_softmax)(x, torch.empty_like(x))
    assert len(calls) == 1
    y = torch.empty_like(x)
    _fresh(kt.row_softmax)(x, y)  # a new Kernel object: as in a new process
    assert len(calls) == 1
    assert torch.allclose(y, torch.softmax(x, -1), atol=1e-6)
    root = os.environ["TESSERA_CACHE_DIR"]
    assert glob.glob(os.path.join(root, "tile", "*", "*.json"))
    assert glob.glob(os.path.join(root, "tile_src", "k_*.py"))
    assert not glob.glob(os.path.join(root, "tile", "*", "*.tmp"))


def test_same_kernel_object_caches_in_memory_per_specialization(monkeypatch):
    k = _fresh(kt.row_softmax)
    calls = _count_lowerings(monkeypatch)
    x = torch.randn(3, 40)
    k(x, torch.empty_like(x))
    k(torch.randn(5, 40), torch.empty(5, 40))  # rows are not specialised on
    assert len(calls) == 1
    k(torch.randn(5, 70), torch.empty(5, 70))  # the row width is (it sets the tile)
    assert len(calls) == 2


def test_corrupt_entries_are_recompiled(monkeypatch):
    x = torch.randn(4, 30)
    _fresh(kt.row_softmax)(x, torch.empty_like(x))
    root = os.environ["TESSERA_CACHE_DIR"]
    for path in glob.glob(os.path.join(root, "tile", "*", "*.json")):
        with open(path, "r+") as f:
            f.seek(10)
            f.write("garbage")
    for path in glob.glob(os.path.join(root, "tile_src", "k_*.py")):
        with open(path, "a") as f:
            f.write("\nraise RuntimeError('tampered')\n")
    calls = _count_lowerings(monkeypatch)
    y = torch.empty_like(x)
    _fresh(kt.row_softmax)(x, y)
    assert len(calls) == 1  # recompiled, not trusted
    assert torch.allclose(y, torch.softmax(x, -1), atol=1e-6)


def test_key_is_versioned_by_the_compiler(monkeypatch):
    a = _fresh(kt.row_softmax)
    monkeypatch.setattr(kernel_mod, "_COMPILER_HASH", "another-compiler")
    b = _fresh(kt.row_softmax)
    assert a._hash != b._hash
    x = torch.randn(2, 8)
    a(x, torch.empty_like(x))
    calls = _count_lowerings(monkeypatch)
    b(x, torch.empty_like(x))
    assert len(calls) == 1
