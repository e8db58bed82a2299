"""Cheaper host side for repeated Triton launches: one scratch allocator, and launches that skip
Triton's per-call argument binding.

A decode-sized GEMM runs for ~20 µs on the GPU, about what Triton's launch path costs on the host
(binding and specialising ~40 arguments, the cache key, a scratch allocation). An entry point
that has already checked a call signature (shapes, strides, dtypes, 16-byte alignment) knows the
kernel will specialise exactly as on the first call, so it can keep that call's compiled kernel
and arguments and launch again with only the tensors swapped (:class:`Relaunch`).

Example:
    >>> relaunch = launch(my_kernel, (4,), x, y, BLOCK=128)          # doctest: +SKIP
    >>> relaunch = relaunch.with_roles(x=x, y=y)                     # doctest: +SKIP
    >>> relaunch.launch(x=x2, y=y2)     # same grid and ints, new tensors  # doctest: +SKIP
    True
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import triton

_ALLOCATOR_SET = False
_BUFFERS: dict = {}


def stream_buffer(name: str, numel: int, dtype: torch.dtype, device, zeroed: bool = False,
                  stream=None) -> torch.Tensor:
    """A buffer of at least ``numel`` elements of ``dtype`` kept for (name, device, stream): split-K
    partial sums, ticket counters, Triton's scratch (the kernels read only its address).
    ``stream`` defaults to the device's current stream.

    Kernels on one stream run in order, so the buffer is free again when the next launch on that
    stream starts; streams never share one. While a CUDA graph is being captured, and off the GPU,
    each call gets new memory of exactly ``numel`` (on the GPU from the graph's pool, since a replay
    may run beside eager launches). A ``zeroed`` buffer starts at zero, and its users leave it at
    zero.

    Example:
        >>> ws = stream_buffer("splitk", 1 << 20, torch.float32, "cuda")   # doctest: +SKIP
    """
    alloc = torch.zeros if zeroed else torch.empty
    device = torch.device(device)
    if device.type != "cuda" or torch.cuda.is_current_stream_capturing():
        return alloc(numel, dtype=dtype, device=device)
    index = device.index if device.index is not None else torch._C._cuda_getDevice()
    if stream is None:
        stream = torch._C._cuda_getCurrentRawStream(index)
    key = (name, dtype, index, stream)
    buf = _BUFFERS.get(key)
    if buf is None or buf.numel() < numel:
        buf = _BUFFERS[key] = alloc(max(numel, 2 * buf.numel() if buf is not None else 4096), dtype=dtype,
                                    device=device)
    return buf


def _scratch(size: int, alignment: int, stream) -> torch.Tensor:
    """Triton's scratch memory (device-side tensor descriptors), asked for on every launch."""
    return stream_buffer("triton-scratch", size, torch.int8, "cuda", stream=stream)


def ensure_allocator() -> None:
    """Install the scratch allocator that device-side tensor descriptors need (once).

    Example:
        >>> ensure_allocator()
    """
    global _ALLOCATOR_SET
    if not _ALLOCATOR_SET:
        if os.environ.get("TRITON_INTERPRET") == "1":
            triton.set_allocator(lambda size, alignment, stream: torch.empty(size, dtype=torch.int8))
        else:
            triton.set_allocator(_scratch)
        _ALLOCATOR_SET = True


def relaunch_enabled() -> bool:
    """False when ``TESSERA_FAST_LAUNCH=0``: every launch then goes through Triton's own path."""
    return os.environ.get("TESSERA_FAST_LAUNCH", "1") != "0"


def _launch_context() -> tuple:
    """(current device index, its current stream, whether a CUDA graph is being captured)."""
    dev = torch._C._cuda_getDevice()  # torch.cuda.current_device() without its lazy-init check
    # the raw handle, as Triton's launchers take it (triton's driver.active.get_current_stream)
    return dev, torch._C._cuda_getCurrentRawStream(dev), torch.cuda.is_current_stream_capturing()


class Relaunch:
    """A compiled kernel with the full argument list of one launch, to be launched again with
    some tensors replaced. Only valid for arguments that specialise as the first launch's did: the
    caller's signature key guarantees that (same ints, dtypes and 16-byte alignment)."""

    def __init__(self, compiled, grid: tuple, args: list, device=None, stream=None):
        self._compiled = compiled
        self._grid = tuple(grid) + (1,) * (3 - len(grid))
        self._args = args
        self._slots: tuple = ()
        self._device, self._stream = device, stream
        self._runner = None

    def with_roles(self, **tensors) -> Optional["Relaunch"]:
        """Name the tensors that change between launches (None values are ignored). None (no
        relaunch) when two names are the same tensor, whose slots could not be told apart, or when
        a named tensor is not among the arguments (the launch used a copy of it).

        Example:
            >>> x = torch.zeros(2)
            >>> Relaunch(None, (1,), [x, 3]).with_roles(x=x, out=None) is not None
            True
            >>> Relaunch(None, (1,), [x, 3]).with_roles(x=x.clone()) is None
            True
        """
        given = {name: t for name, t in tensors.items() if t is not None}
        if len({id(t) for t in given.values()}) != len(given):
            return None
        by_id = {id(t): name for name, t in given.items()}
        self._slots = tuple((i, by_id[id(a)]) for i, a in enumerate(self._args) if id(a) in by_id)
        if {name for _, name in self._slots} != set(given):
            return None
        return self

    def launch(self, **tensors) -> bool:
        """Launch with these tensors in their roles' slots; False (nothing launched) when the
        current stream is not the first launch's or a CUDA graph is being captured, so the caller
        takes the full path."""
        dev, stream, capturing = _launch_context()
        if stream != self._stream or dev != self._device or capturing:
            return False
        args = list(self._args)
        for i, name in self._slots:
            args[i] = tensors[name]
        if self._runner is None:
            self._runner = self._compiled[self._grid]
        self._runner(*args, stream=stream)
        return True


def launch(kernel, grid: tuple, *args, **kwargs) -> Optional[Relaunch]:
    """``kernel[grid](*args, **kwargs)``, returning a :class:`Relaunch` of it (None under the
    interpreter, or with ``TESSERA_FAST_LAUNCH=0``).

    Example:
        >>> relaunch = launch(my_kernel, (4,), x, BLOCK=128)   # doctest: +SKIP
    """
    compiled = kernel[grid](*args, **kwargs)
    if compiled is None or not hasattr(compiled, "packed_metadata") or not relaunch_enabled():
        return None
    full = list(args)
    for p in kernel.params[len(args):]:
        if p.name in kwargs:
            full.append(kwargs[p.name])
        elif p.has_default:
            full.append(p.default)
        else:
            return None
    dev, stream, _ = _launch_context()
    return Relaunch(compiled, grid, full, dev, stream)
