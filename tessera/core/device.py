"""Devices: CUDA when present, else CPU; ``ts.device("cpu")`` chooses one for a block.

Example:
    >>> import tessera as ts
    >>> with ts.device("cpu"):
    ...     print(ts.zeros(2).device)
    cpu
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from ..errors import TesseraDeviceError

_STACK: list = []


class Device:
    """A device (``cpu`` or ``cuda[:i]``); a context manager that makes it the default.

    Example:
        >>> import tessera as ts
        >>> with ts.Device("cpu") as dev:
        ...     x = ts.zeros(2)
        >>> dev.type, x.device == dev, dev == "cpu"
        ('cpu', True, True)
    """

    __slots__ = ("torch",)

    def __init__(self, spec: Union[str, "Device", torch.device]):
        if isinstance(spec, Device):
            spec = spec.torch
        try:
            dev = torch.device(spec)
        except (RuntimeError, TypeError):
            raise TesseraDeviceError(f"unknown device {spec!r}; use 'cpu' or 'cuda' (or 'cuda:1')") from None
        if dev.type not in ("cpu", "cuda"):
            raise TesseraDeviceError(f"device type {dev.type!r} is not supported; use 'cpu' or 'cuda'")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise TesseraDeviceError("device 'cuda' was asked for, but no CUDA GPU is available; use ts.device('cpu')")
        self.torch = dev

    @property
    def type(self) -> str:
        return self.torch.type

    def __enter__(self) -> "Device":
        _STACK.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _STACK.pop()

    def __eq__(self, other) -> bool:
        try:
            return Device(other).torch == self.torch if not isinstance(other, Device) else other.torch == self.torch
        except TesseraDeviceError:
            return False

    def __hash__(self) -> int:
        return hash(self.torch)

    def __repr__(self) -> str:
        return str(self.torch)

    __str__ = __repr__


def device(spec: Optional[Union[str, Device, torch.device]] = None) -> Device:
    """A device by name (``"cpu"``, ``"cuda"``, ``"cuda:1"``); with no name, the current default.

    Example:
        >>> import tessera as ts
        >>> ts.device("cpu").type
        'cpu'
    """
    return default_device() if spec is None else Device(spec)


_DEFAULT: list = []


def default_device() -> Device:
    """The innermost ``with ts.device(...)``, else CUDA when available, else CPU."""
    if _STACK:
        return _STACK[-1]
    if not _DEFAULT:
        _DEFAULT.append(Device("cuda" if torch.cuda.is_available() else "cpu"))
    return _DEFAULT[0]


def torch_device(spec=None) -> torch.device:
    """The torch device for ``spec`` (or the default device)."""
    return default_device().torch if spec is None else Device(spec).torch
