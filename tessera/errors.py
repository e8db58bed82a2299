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
    """Base class of every error Tessera raises on purpose.

    Each subclass also derives from the matching builtin (``ValueError``, ``TypeError``, ``RuntimeError``, ...),
    so ``except ts.TesseraError`` catches any of them and existing ``except ValueError`` code keeps working.

    Example:
        >>> import tessera as ts
        >>> try:
        ...     ts.randint(5, 5, (2,))
        ... except ts.TesseraError as e:
        ...     print(type(e).__name__, isinstance(e, ValueError), "-", e)
        TesseraValueError True - ts.randint: high (5) must be greater than low (5)
    """


class TesseraShapeError(TesseraError, ValueError):
    """A tensor's shape does not fit an annotation or an op's shape rule.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     ts.ones(2, 3) @ ts.ones(4, 5)
        Traceback (most recent call last):
        tessera.errors.TesseraShapeError: matmul: inner dimensions differ: ...
    """


class TesseraDTypeError(TesseraError, TypeError):
    """A tensor's dtype does not fit an annotation or an op's dtype rule.

    Example:
        >>> import tessera as ts
        >>> ts.bf16 @ ts.f32
        Traceback (most recent call last):
        tessera.errors.TesseraDTypeError: bf16 @ f32: the right side of '@' on a dtype must be a precision policy, ...
    """


class TesseraTypeError(TesseraError, TypeError):
    """A value of the wrong kind: a non-tensor where a tensor is needed, an unknown keyword.

    Example:
        >>> import tessera as ts
        >>> ts.nn.relu([1.0, -1.0])
        Traceback (most recent call last):
        tessera.errors.TesseraTypeError: ts.nn.relu: x must be a ts.Tensor, got list
    """


class TesseraValueError(TesseraError, ValueError):
    """An argument's value is out of its allowed range.

    Example:
        >>> import tessera as ts
        >>> ts.optim.CosineWarmup(warmup=10, total=5, peak_lr=1.0)
        Traceback (most recent call last):
        tessera.errors.TesseraValueError: total must be an int >= warmup (10), got 5
    """


class TesseraAnnotationError(TesseraError, ValueError):
    """An annotation (``ts.Tensor[...]``, ``ts.Tile[...]``) is malformed.

    Example:
        >>> import tessera as ts
        >>> ts.Tensor["B", ts.f32, "D"]
        Traceback (most recent call last):
        tessera.errors.TesseraAnnotationError: ts.Tensor[...]: the dtype f32 must be the last item
    """


class TesseraTraceError(TesseraError, RuntimeError):
    """Tracing under ``ts.jit`` hit something that needs a concrete value.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     ts.jit(lambda x: x.item())(ts.ones(2))
        Traceback (most recent call last):
        tessera.errors.TesseraTraceError: .item() needs the value of a traced tensor, ...
    """


class TesseraAutodiffError(TesseraError, RuntimeError):
    """A gradient was asked for that cannot be computed.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     ts.grad(lambda x: x * 2)(ts.ones(2))
        Traceback (most recent call last):
        tessera.errors.TesseraAutodiffError: ts.grad: the loss must be a scalar, but it has shape (2,); ...
    """


class TesseraDeviceError(TesseraError, RuntimeError):
    """A device was asked for that is absent, or tensors sit on different devices.

    Example:
        >>> import tessera as ts
        >>> ts.device("tpu")
        Traceback (most recent call last):
        tessera.errors.TesseraDeviceError: unknown device 'tpu'; use 'cpu' or 'cuda' (or 'cuda:1')
    """


class TesseraCompileError(TesseraError, SyntaxError):
    """A kernel or graph could not be compiled; the message points at the user's line.

    Example:
        >>> import tessera as ts
        >>> ts.tile.exp(1.0)
        Traceback (most recent call last):
        tessera.errors.TesseraCompileError: ts.tile.exp() was called outside a kernel: ...
    """


class TesseraCacheError(TesseraError, RuntimeError):
    """A file in a Tessera cache failed verification.

    Example:
        >>> import tessera as ts
        >>> issubclass(ts.TesseraCacheError, RuntimeError)
        True
    """
