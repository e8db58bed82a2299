"""Checked mode: ``TESSERA_CHECKS=1`` turns on the input checks that must read a tensor's values on a
device (targets in range, embedding ids, fp8 scales), each one device-to-host synchronisation.
On the CPU those checks always run.

Example:
    >>> import torch
    >>> from tessera.runtime.checks import may_read_values
    >>> may_read_values(torch.zeros(3))  # a CPU tensor: reading it costs no synchronisation
    True
"""
from __future__ import annotations

import os


def checks_enabled() -> bool:
    """Whether ``TESSERA_CHECKS`` is set to something other than empty or ``0``.

    Example:
        >>> import os
        >>> checks_enabled() == (os.environ.get("TESSERA_CHECKS", "0").strip() not in ("", "0"))
        True
    """
    return os.environ.get("TESSERA_CHECKS", "0").strip() not in ("", "0")


def may_read_values(t) -> bool:
    """Whether a check may read ``t``'s values: always on the CPU, on a device in checked mode only.

    Example:
        >>> import torch
        >>> may_read_values(torch.ones(2))
        True
    """
    return t.device.type == "cpu" or checks_enabled()
