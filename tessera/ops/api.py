"""Every op function in one namespace (what ``ts.*`` and tensor methods call)."""
from __future__ import annotations

from ..core.device import Device
from ..core.dispatch import bind
from ..core.primitive import Aval, Primitive
from .creation import (arange, dim_value, empty, empty_like, full, full_like, manual_seed, ones, ones_like, rand,
                       randint, randn, tensor, zeros, zeros_like)
from .elementwise import (abs, add, cast, cos, div, equal, erf, exp, greater, greater_equal, less, less_equal, log,
                          logical_and, logical_not, logical_or, maximum, minimum, mul, neg, not_equal, pow, rsqrt,
                          sigmoid, sign, sin, sqrt, sub, tanh, where)
from .linalg import matmul
from .reduction import argmax, argmin, max, mean, min, sum, var
from .shape import (broadcast_to, cat, contiguous, expand_dims, flatten, getitem, permute, reshape, split, squeeze,
                    stack, take, transpose)


class ToDevice(Primitive):
    """Copy to another device (identity on values; the cotangent moves back)."""

    name = "to_device"
    attrs = (("device", "cpu"),)

    def shape(self, x, *, device):
        return Aval(x.shape, x.dtype)

    def reference(self, x, *, device):
        return x.to(device)

    def vjp(self, cts, ins, outs, *, device):
        return (to_device(cts[0], ins[0].device),)


TO_DEVICE = ToDevice()


def to_device(x, device):
    """Move ``x`` to ``device`` (no copy when it is already there)."""
    device = Device(device)
    if x.device == device:
        return x
    return bind(TO_DEVICE, x, device=str(device.torch))


__all__ = [n for n in dir() if not n.startswith("_")]
