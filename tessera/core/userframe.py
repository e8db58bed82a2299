"""Finding the user's line: the innermost stack frame outside the Tessera package."""
from __future__ import annotations

import linecache
import os
import sys

_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def user_frame():
    """(filename, lineno, function name, source line) of the innermost non-Tessera frame, or None."""
    f = sys._getframe(1)
    while f is not None:
        fn = os.path.abspath(f.f_code.co_filename)
        if not fn.startswith(_PKG_DIR + os.sep) and "importlib" not in fn:
            return fn, f.f_lineno, f.f_code.co_name, linecache.getline(fn, f.f_lineno).rstrip()
        f = f.f_back
    return None


def user_location() -> str:
    """`` (at file.py:12 in fn: <source>)``, or an empty string when there is no user frame."""
    where = user_frame()
    if where is None:
        return ""
    fn, line, func, src = where
    return f"\n  at {os.path.basename(fn)}:{line} in {func}: {src.strip()}"
