"""``ts.memory``: how much tensor memory is in use on the current device.

On CUDA these read the caching allocator's counters; on the CPU they count the bytes
of live Tessera tensors' storage.

Example:
    >>> import tessera as ts
    >>> with ts.device("cpu"):
    ...     ts.memory.reset_peak()
    ...     x = ts.zeros(1024, 1024)
    ...     ts.memory.get_memory_usage() >= 4 * 1024 * 1024 / 1e9
    True
"""
from __future__ import annotations

import gc

import torch

from .core.device import default_device

_cpu_peak = [0]


def _cpu_bytes() -> int:
    from .core.tensor import Tensor

    seen, total = set(), 0
    for obj in gc.get_objects():
        if type(obj) is Tensor and obj._data is not None:
            st = obj._data.untyped_storage()
            key = st.data_ptr()
            if key not in seen:
                seen.add(key)
                total += st.nbytes()
    _cpu_peak[0] = max(_cpu_peak[0], total)
    return total


def get_memory_usage() -> float:
    """GB of tensor memory allocated now on the current device."""
    dev = default_device()
    if dev.type == "cuda":
        return torch.cuda.memory_allocated(dev.torch) / 1e9
    return _cpu_bytes() / 1e9


def max_memory_usage() -> float:
    """Peak GB allocated since the last :func:`reset_peak` (on the CPU, the peak seen by these calls)."""
    dev = default_device()
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev.torch) / 1e9
    _cpu_bytes()
    return _cpu_peak[0] / 1e9


def reset_peak() -> None:
    """Start a new peak measurement."""
    dev = default_device()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev.torch)
    _cpu_peak[0] = 0
