"""Compile errors that point at the user's line with a caret, and say what to change.

Example:
    >>> from tessera.tile.errors import format_caret
    >>> print(format_caret("k.py", 3, "x = ts.tile.exp(y)", 4, 15))
      File "k.py", line 3
        x = ts.tile.exp(y)
            ^^^^^^^^^^^
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import List, Optional

from ..errors import TesseraCompileError


def format_caret(filename: str, lineno: int, line: str, col: int, end_col: Optional[int] = None) -> str:
    """The ``File ..., line N`` header, the line itself and a caret run under columns [col, end_col)."""
    stripped = line.rstrip()
    indent = len(stripped) - len(stripped.lstrip())
    width = max(1, (end_col if end_col and end_col > col else len(stripped)) - col)
    return (f'  File "{filename}", line {lineno}\n'
            f"    {stripped.lstrip()}\n"
            f"    {' ' * max(0, col - indent)}{'^' * width}")


@dataclass
class SourceInfo:
    """Where a kernel's source lives: its file, its first line and its (dedented) lines."""

    filename: str
    first_line: int  # line number in the file of the source's first line
    lines: List[str]  # the dedented source lines
    dedent: int  # columns removed by dedenting
    kernel_name: str

    def error(self, node: Optional[ast.AST], message: str, fix: Optional[str] = None) -> TesseraCompileError:
        """A :class:`TesseraCompileError` for ``node``: the message, the user's line with a caret, the fix."""
        text = f"in kernel '{self.kernel_name}': {message}"
        if node is not None and getattr(node, "lineno", None) is not None:
            i = node.lineno - 1
            line = self.lines[i] if 0 <= i < len(self.lines) else ""
            end = node.end_col_offset if getattr(node, "end_lineno", node.lineno) == node.lineno else None
            text += "\n" + format_caret(self.filename, self.first_line + i, " " * self.dedent + line,
                                        node.col_offset + self.dedent, None if end is None else end + self.dedent)
        if fix:
            text += f"\n  fix: {fix}"
        err = TesseraCompileError(text)
        err.lineno = None if node is None else self.first_line + node.lineno - 1
        return err

    def line_of(self, node: ast.AST) -> int:
        """The file line number of ``node``."""
        return self.first_line + node.lineno - 1
