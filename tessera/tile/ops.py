"""The ``ts.tile.*`` operations as Python stubs.

They only have meaning inside an ``@ts.kernel`` function, where the compiler reads
them from the source; called anywhere else they raise a
:class:`~tessera.errors.TesseraCompileError` pointing at the calling line.
docs/tile.md gives the semantics of each one.

Example:
    >>> import tessera.tile as tile
    >>> try:
    ...     tile.exp(1.0)
    ... except Exception as e:
    ...     print(type(e).__name__)
    TesseraCompileError
"""
from __future__ import annotations

import sys

from ..errors import TesseraCompileError
from .errors import format_caret

#: every op name the compiler understands, with its one-line meaning
OP_DOCS = {
    "context": "the kernel's tile context (program ids, grid size); optional",
    "program_id": "program_id(axis): this program's index on a grid axis (kernels without parallel loops)",
    "num_programs": "num_programs(axis): the grid's size on an axis",
    "range": "range(stop) / range(start, stop, step=, num_stages=, parallel=): a tiled loop",
    "alloc_shared": "alloc_shared(*shape, dtype=): a tile buffer meant for shared memory (an SSA value)",
    "alloc_register": "alloc_register(*shape, dtype=): a tile buffer meant for registers (an SSA value)",
    "zeros": "zeros(*shape, dtype=f32): a tile of zeros",
    "full": "full(shape, value, dtype=f32): a tile filled with value",
    "arange": "arange(n): the int32 tile 0..n-1 (n a power of two)",
    "fill": "fill(buf, value): rebinds buf to a tile of value",
    "load": "load(X[...], mask=None, other=0): read a tile of a Tile parameter",
    "load_async": "load_async(buf, X[...]): read a tile into buf (rebinds buf)",
    "store": "store(X[...], value, mask=None): write a tile (rounded to X's dtype)",
    "atomic_add": "atomic_add(X[...], value, mask=None): add a tile into X atomically",
    "barrier": "barrier(): an ordering point; Triton orders shared memory itself, so it emits nothing",
    "matmul": "matmul(a, b, acc=None): a @ b on tensor cores, fp32 accumulation",
    "online_softmax": "online_softmax(s, m, l) -> (m_new, l_new, p): one step of the streaming softmax",
    "update_accumulator": "update_accumulator(acc, pv, m_old, m_new, l_old, l_new): rescale acc, add pv",
    "exp": "elementwise e**x", "exp2": "elementwise 2**x", "log": "natural log", "log2": "log base 2",
    "sqrt": "square root", "rsqrt": "1/sqrt(x)", "abs": "absolute value", "erf": "error function",
    "sigmoid": "1/(1+exp(-x))", "tanh": "hyperbolic tangent", "gelu": "gelu(x, approximate='none'|'tanh')",
    "maximum": "elementwise max of two tiles", "minimum": "elementwise min of two tiles",
    "where": "where(cond, a, b)", "cast": "cast(x, dtype)",
    "sum": "sum(x, axis)", "max": "max(x, axis)", "min": "min(x, axis)",
    "cdiv": "cdiv(a, b): ceil(a / b) on ints",
}


def _outside(name: str):
    frame = sys._getframe(2)
    info = frame.f_code.co_filename, frame.f_lineno
    line = ""
    col, end = 0, None
    try:
        import linecache
        import traceback

        line = linecache.getline(info[0], info[1])
        fs = traceback.extract_stack(frame, limit=1)[-1]
        col, end = fs.colno or 0, fs.end_colno
    except Exception:  # the caret is a courtesy; the message is the point
        pass
    where = "\n" + format_caret(info[0], info[1], line, col, end) if line else ""
    return TesseraCompileError(
        f"ts.tile.{name}() was called outside a kernel: ts.tile ops only have meaning inside a function "
        f"decorated with @ts.kernel{where}\n  fix: move this call into an @ts.kernel function, or use the "
        f"tensor-level op (ts.{name} / torch) here")


def _stub(name: str):
    def op(*args, **kwargs):
        raise _outside(name)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = (f"ts.tile.{name}: {OP_DOCS[name]}.\n\nOnly valid inside an @ts.kernel function.\n\n"
                  f"Example:\n    >>> import tessera.tile as tile\n    >>> tile.{name}.__name__\n    '{name}'\n")
    return op


for _name in OP_DOCS:
    globals()[_name] = _stub(_name)

__all__ = list(OP_DOCS)
