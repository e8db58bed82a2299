r"""Name analysis of loop bodies: which names a statement binds, which a body reads before binding.

Example:
    >>> import ast
    >>> from tessera.tile.analysis import exposed_reads
    >>> body = ast.parse("y = x + 1\nx = y").body
    >>> [n for n, _ in exposed_reads(body, set())]
    ['x']
"""
from __future__ import annotations

import ast
from typing import List, Optional, Tuple

from . import ops as _ops

_MUTATING = {"fill": 0, "load_async": 0, "update_accumulator": 0}
_READS_FIRST = {"update_accumulator"}


def op_name(call: ast.Call) -> Optional[str]:
    f = call.func
    if isinstance(f, ast.Attribute) and f.attr in _ops.OP_DOCS:
        return f.attr
    if isinstance(f, ast.Name) and f.id in _ops.OP_DOCS:
        return f.id
    return None


def stmt_writes(stmt: ast.stmt) -> List[str]:
    """Names a statement (re)binds, mutating ops included, in order."""
    out = []
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.append(node.id)
        elif isinstance(node, ast.Call):
            name = op_name(node)
            if name in _MUTATING and node.args and isinstance(node.args[0], ast.Name):
                out.append(node.args[0].id)
    return out


def exposed_reads(body: List[ast.stmt], defined: set) -> List[Tuple[str, ast.AST]]:
    """Names read in ``body`` before the body itself writes them (in execution order)."""
    found = []
    defined = set(defined)
    for stmt in body:
        if isinstance(stmt, (ast.For, ast.If)):
            head = stmt.iter if isinstance(stmt, ast.For) else stmt.test
            found += [(n.id, n) for n in ast.walk(head) if isinstance(n, ast.Name) and n.id not in defined]
            inner = set(defined) | ({stmt.target.id} if isinstance(stmt, ast.For) and
                                    isinstance(stmt.target, ast.Name) else set())
            found += exposed_reads(stmt.body, inner)
            found += exposed_reads(getattr(stmt, "orelse", []), inner)
            for s in stmt.body:
                defined.update(stmt_writes(s))
            continue
        reads = []
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                reads.append(node)
            if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
                reads.append(node.target)
        # ops that overwrite their first argument do not read its value
        skip = set()
        for node in ast.walk(stmt):
            if isinstance(node, ast.Call):
                name = op_name(node)
                if name in _MUTATING and name not in _READS_FIRST and node.args and isinstance(node.args[0], ast.Name):
                    skip.add(id(node.args[0]))
        found += [(n.id, n) for n in reads if n.id not in defined and id(n) not in skip]
        defined.update(stmt_writes(stmt))
    return found
