"""Typed errors raised by Tessera.

Every error says what was wrong, with the user's own names, and how to fix it.

Example:
    >>> import tessera as ts
    >>> try:
    ...     ts.ones(2, 3) @ ts.ones(4, 5)
    ... except ts.TesseraShapeError as e:
    ...     print(type(e).__name__)
    TesseraShapeError
"""


class TesseraError(Exception):
    """Base class of every error Tessera raises on purpose."""


class TesseraShapeError(TesseraError, ValueError):
    """A tensor's shape does not fit an annotation or an op's shape rule."""


class TesseraDTypeError(TesseraError, TypeError):
    """A tensor's dtype does not fit an annotation or an op's dtype rule."""


class TesseraTypeError(TesseraError, TypeError):
    """A value of the wrong kind: a non-tensor where a tensor is needed, an unknown keyword."""


class TesseraValueError(TesseraError, ValueError):
    """An argument's value is out of its allowed range."""


class TesseraAnnotationError(TesseraError, ValueError):
    """An annotation (``ts.Tensor[...]``, ``ts.Tile[...]``) is malformed."""


class TesseraTraceError(TesseraError, RuntimeError):
    """Tracing under ``ts.jit`` hit something that needs a concrete value."""


class TesseraAutodiffError(TesseraError, RuntimeError):
    """A gradient was asked for that cannot be computed."""


class TesseraDeviceError(TesseraError, RuntimeError):
    """A device was asked for that is absent, or tensors sit on different devices."""


class TesseraCompileError(TesseraError, SyntaxError):
    """A kernel or graph could not be compiled; the message points at the user's line."""


class TesseraCacheError(TesseraError, RuntimeError):
    """A file in a Tessera cache failed verification."""
