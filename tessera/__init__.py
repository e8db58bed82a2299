"""Tessera: typed tensors with symbolic shapes, eager and compiled functions, autodiff, Triton kernels."""
from . import dtypes
from .errors import *  # noqa: F401,F403
__version__ = "0.1.0"
