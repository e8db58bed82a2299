"""Symbolic dimensions: integer polynomials over named sizes, and their grammar.

A :class:`Dim` is an expression such as ``3*D``, ``B*H`` or ``D//16`` kept in a
canonical form (a sum of integer-weighted products), so that two dims written
differently but equal as polynomials compare equal (``D*3 == 3*D``). Annotation
strings are parsed by a small grammar — names, integers, ``+ - * // %`` and
parentheses — never by ``eval``.

Example:
    >>> from tessera.types.dims import parse_dim
    >>> d = parse_dim("3*D")
    >>> d.evaluate({"D": 4096}), str(parse_dim("D*3 + D") // 4)
    (12288, 'D')
"""
from __future__ import annotations

import re
from typing import Dict, Iterable, Mapping, Tuple, Union

from ..errors import TesseraAnnotationError, TesseraShapeError

IntLike = Union[int, "Dim"]


class _Atom:
    """A factor that is not a plain integer: a name, or a floor-division/modulo."""

    __slots__ = ("key",)

    def __lt__(self, other: "_Atom") -> bool:
        return self.key < other.key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Atom) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)


class _Sym(_Atom):
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name
        self.key = name

    def evaluate(self, env: Mapping[str, int]) -> int:
        try:
            return env[self.name]
        except KeyError:
            raise TesseraShapeError(f"dimension {self.name!r} is not bound") from None

    def symbols(self):
        return {self.name}

    def __str__(self) -> str:
        return self.name


class _Div(_Atom):
    __slots__ = ("num", "den", "op")

    def __init__(self, num: "Dim", den: "Dim", op: str):
        self.num, self.den, self.op = num, den, op
        self.key = f"~({num}){op}({den})"

    def evaluate(self, env: Mapping[str, int]) -> int:
        n, d = self.num.evaluate(env), self.den.evaluate(env)
        if d == 0:
            raise TesseraShapeError(f"division by zero evaluating {self}")
        return n // d if self.op == "//" else n % d

    def symbols(self):
        return self.num.free_symbols() | self.den.free_symbols()

    def __str__(self) -> str:
        return f"{self.num._str(paren=True)}{self.op}{self.den._str(paren=True)}"


Monomial = Tuple[_Atom, ...]


def _divide_exactly(num: "Dim", term) -> "Dim":
    """num / term when every term of num is a multiple of the monomial ``term``, else None."""
    mono_d, c_d = term
    out = {}
    for mono, c in num.terms:
        rest = list(mono)
        for atom in mono_d:
            if atom not in rest:
                return None
            rest.remove(atom)
        if c % c_d:
            return None
        out[tuple(rest)] = c // c_d
    return Dim(out)


class Dim:
    """An immutable integer polynomial over symbolic sizes (see module docstring)."""

    __slots__ = ("terms", "_hash")

    def __init__(self, terms: Dict[Monomial, int]):
        self.terms: Tuple[Tuple[Monomial, int], ...] = tuple(
            sorted(((m, c) for m, c in terms.items() if c != 0), key=lambda mc: (not mc[0], [a.key for a in mc[0]]))
        )
        self._hash = hash(self.terms)

    # construction -----------------------------------------------------
    @staticmethod
    def const(value: int) -> "Dim":
        return Dim({(): int(value)})

    @staticmethod
    def sym(name: str) -> "Dim":
        return Dim({(_Sym(name),): 1})

    @staticmethod
    def of(value: IntLike) -> "Dim":
        if isinstance(value, Dim):
            return value
        if hasattr(value, "as_dim"):
            return value.as_dim()
        if isinstance(value, int) and not isinstance(value, bool):
            return Dim.const(value)
        raise TesseraShapeError(f"{value!r} is not a dimension (an int or a symbolic size)")

    # inspection -------------------------------------------------------
    @property
    def is_constant(self) -> bool:
        return all(m == () for m, _ in self.terms)

    @property
    def constant_value(self) -> int:
        if not self.is_constant:
            raise TesseraShapeError(f"dimension {self} is symbolic, not a constant")
        return self.terms[0][1] if self.terms else 0

    @property
    def symbol_name(self):
        """The name if this dim is a single bare symbol, else None."""
        if len(self.terms) == 1 and self.terms[0][1] == 1 and len(self.terms[0][0]) == 1:
            atom = self.terms[0][0][0]
            if isinstance(atom, _Sym):
                return atom.name
        return None

    def free_symbols(self) -> set:
        out = set()
        for mono, _ in self.terms:
            for atom in mono:
                out |= atom.symbols()
        return out

    def evaluate(self, env: Mapping[str, int]) -> int:
        total = 0
        for mono, coef in self.terms:
            v = coef
            for atom in mono:
                v *= atom.evaluate(env)
            total += v
        return total

    def substitute(self, env: Mapping[str, "Dim"]) -> "Dim":
        """Replace symbols by dims (used to rename a function's dims at a call site)."""
        out = Dim.const(0)
        for mono, coef in self.terms:
            v = Dim.const(coef)
            for atom in mono:
                if isinstance(atom, _Sym):
                    v = v * env.get(atom.name, Dim.sym(atom.name))
                else:
                    num, den = atom.num.substitute(env), atom.den.substitute(env)
                    v = v * (num // den if atom.op == "//" else num % den)
            out = out + v
        return out

    # arithmetic -------------------------------------------------------
    def __add__(self, other: IntLike) -> "Dim":
        other = Dim.of(other)
        terms = dict(self.terms)
        for m, c in other.terms:
            terms[m] = terms.get(m, 0) + c
        return Dim(terms)

    __radd__ = __add__

    def __neg__(self) -> "Dim":
        return Dim({m: -c for m, c in self.terms})

    def __sub__(self, other: IntLike) -> "Dim":
        return self + (-Dim.of(other))

    def __rsub__(self, other: IntLike) -> "Dim":
        return Dim.of(other) - self

    def __mul__(self, other: IntLike) -> "Dim":
        other = Dim.of(other)
        terms: Dict[Monomial, int] = {}
        for m1, c1 in self.terms:
            for m2, c2 in other.terms:
                m = tuple(sorted(m1 + m2))
                terms[m] = terms.get(m, 0) + c1 * c2
        return Dim(terms)

    __rmul__ = __mul__

    def _divide(self, other: IntLike, op: str) -> "Dim":
        den = Dim.of(other)
        if den.is_constant:
            d = den.constant_value
            if d == 0:
                raise TesseraShapeError(f"division of dimension {self} by zero")
            if self.is_constant:
                n = self.constant_value
                return Dim.const(n // d if op == "//" else n % d)
            if d == 1:
                return self if op == "//" else Dim.const(0)
            if all(c % d == 0 for _, c in self.terms):
                return Dim({m: c // d for m, c in self.terms}) if op == "//" else Dim.const(0)
        elif den.terms == self.terms:
            return Dim.const(1 if op == "//" else 0)
        elif len(den.terms) == 1:
            exact = _divide_exactly(self, den.terms[0])
            if exact is not None:
                return exact if op == "//" else Dim.const(0)
        return Dim({(_Div(self, den, op),): 1})

    def __floordiv__(self, other: IntLike) -> "Dim":
        return self._divide(other, "//")

    def __rfloordiv__(self, other: IntLike) -> "Dim":
        return Dim.of(other)._divide(self, "//")

    def __mod__(self, other: IntLike) -> "Dim":
        return self._divide(other, "%")

    def __rmod__(self, other: IntLike) -> "Dim":
        return Dim.of(other)._divide(self, "%")

    # comparison: structural (as polynomials) ---------------------------
    def __eq__(self, other: object) -> bool:
        if isinstance(other, int) and not isinstance(other, bool):
            other = Dim.const(other)
        return isinstance(other, Dim) and other.terms == self.terms

    def __hash__(self) -> int:
        return self._hash

    # printing ---------------------------------------------------------
    def _str(self, paren: bool = False) -> str:
        if not self.terms:
            return "0"
        parts = []
        for mono, coef in self.terms:
            body = "*".join(str(a) for a in mono)
            if not body:
                text = str(abs(coef))
            elif abs(coef) == 1:
                text = body
            else:
                text = f"{abs(coef)}*{body}"
            parts.append(("-" if coef < 0 else "+", text))
        s = ("-" if parts[0][0] == "-" else "") + parts[0][1]
        for sign, text in parts[1:]:
            s += f" {sign} {text}"
        if paren and (len(parts) > 1 or any(len(m) > 1 or (m and c != 1) for m, c in self.terms)):
            return f"({s})"
        return s

    def __str__(self) -> str:
        return self._str()

    def __repr__(self) -> str:
        return f"Dim({self._str()!r})"


# --------------------------------------------------------------------------- grammar
_TOKEN = re.compile(r"\s*(?:(?P<int>\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>//|[-+*%()]))")


def _tokenize(text: str):
    pos, out = 0, []
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            bad = len(text) - len(text[pos:].lstrip())
            _syntax_error(text, bad, f"unexpected character {text[bad]!r}")
        kind = m.lastgroup
        out.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    out.append(("end", "", len(text)))
    return out


def _syntax_error(text: str, pos: int, why: str):
    raise TesseraAnnotationError(
        f"cannot parse dimension {text!r}: {why}\n    {text}\n    {' ' * pos}^\n"
        "A dimension is a name, an integer, or an expression over them with + - * // % "
        "and parentheses, e.g. \"3*D\", \"B*H\", \"D//H\", \"S+1\"."
    )


class _Parser:
    def __init__(self, text: str):
        self.text, self.tokens, self.i = text, _tokenize(text), 0

    def peek(self):
        return self.tokens[self.i]

    def take(self):
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def parse(self) -> Dim:
        if self.peek()[0] == "end":
            _syntax_error(self.text, 0, "it is empty")
        d = self.expr()
        kind, value, pos = self.peek()
        if kind != "end":
            _syntax_error(self.text, pos, f"unexpected {value!r}")
        return d

    def expr(self) -> Dim:
        d = self.term()
        while self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            rhs = self.term()
            d = d + rhs if op == "+" else d - rhs
        return d

    def term(self) -> Dim:
        d = self.unary()
        while self.peek()[1] in ("*", "//", "%"):
            op = self.take()[1]
            rhs = self.unary()
            d = d * rhs if op == "*" else (d // rhs if op == "//" else d % rhs)
        return d

    def unary(self) -> Dim:
        if self.peek()[1] == "-":
            self.take()
            return -self.unary()
        return self.atom()

    def atom(self) -> Dim:
        kind, value, pos = self.take()
        if kind == "int":
            return Dim.const(int(value))
        if kind == "name":
            return Dim.sym(value)
        if value == "(":
            d = self.expr()
            kind2, value2, pos2 = self.take()
            if value2 != ")":
                _syntax_error(self.text, pos2, "expected ')'")
            return d
        _syntax_error(self.text, pos, "expected a name, an integer or '('" if kind != "end" else "it ends too early")


def parse_dim(text: Union[str, int]) -> Dim:
    """Parse one annotation dimension (``"B"``, ``"3*D"``, ``"D//H"``, ``4096``).

    Example:
        >>> from tessera.types.dims import parse_dim
        >>> parse_dim("(S + 1) * 2")
        Dim('2*S + 2')
    """
    if isinstance(text, bool):
        raise TesseraAnnotationError(f"{text!r} is not a dimension")
    if isinstance(text, int):
        if text < 0:
            raise TesseraAnnotationError(f"dimension {text} is negative; sizes are >= 0")
        return Dim.const(text)
    if isinstance(text, Dim):
        return text
    if not isinstance(text, str):
        raise TesseraAnnotationError(
            f"{text!r} is not a dimension: use a name (\"B\"), an integer, or an expression such as \"3*D\""
        )
    return _Parser(text).parse()


def format_dims(dims: Iterable[Dim]) -> str:
    """Print dims as a tuple of strings/ints, the way a user writes an annotation."""
    items = [str(d.constant_value) if d.is_constant else repr(str(d)) for d in dims]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


# --------------------------------------------------------------------------- tracing env
class ShapeEnv:
    """Concrete sizes ("hints") for the symbols of one trace, and the guards taken on them.

    While a ``ts.jit`` trace runs, comparisons between symbolic dims that are not equal as
    polynomials are decided on the hints and recorded as guards; a later call whose sizes
    break a guard is traced again.

    Example:
        >>> from tessera.types.dims import Dim, ShapeEnv
        >>> env = ShapeEnv({"D": 64})
        >>> with env:
        ...     (Dim.sym("D") // 16) * 16 == Dim.sym("D")
        True
        >>> env.check({"D": 72}), env.check({"D": 128})
        (False, True)
    """

    def __init__(self, hints: Mapping[str, int]):
        self.hints = dict(hints)
        self.guards = []  # (op, lhs, rhs, expected)
        self.aliases: Dict[str, "Dim"] = {}  # symbol -> the symbol a guard proved it equal to

    def __enter__(self):
        _ENV_STACK.append(self)
        return self

    def __exit__(self, *exc):
        _ENV_STACK.pop()

    def decide(self, op: str, lhs: "Dim", rhs: "Dim") -> bool:
        a, b = lhs.evaluate(self.hints), rhs.evaluate(self.hints)
        result = _COMPARE[op](a, b)
        self.guards.append((op, lhs, rhs, result))
        if op == "==" and result:
            self._unify(lhs, rhs)
        return result

    def _unify(self, lhs: "Dim", rhs: "Dim") -> None:
        """Two bare symbols proved equal (and guarded): later shapes use one name for both."""
        a, b = self.canonical(lhs).symbol_name, self.canonical(rhs).symbol_name
        if a is not None and b is not None and a != b:
            keep, drop = sorted((a, b))
            self.aliases[drop] = Dim.sym(keep)

    def canonical(self, d: "Dim") -> "Dim":
        """``d`` with every aliased symbol replaced by its representative."""
        while self.aliases and d.free_symbols() & self.aliases.keys():
            d = d.substitute(self.aliases)
        return d

    def check(self, sizes: Mapping[str, int]) -> bool:
        """Whether every guard holds for these sizes."""
        try:
            return all(_COMPARE[op](l.evaluate(sizes), r.evaluate(sizes)) == want for op, l, r, want in self.guards)
        except TesseraShapeError:
            return False


_ENV_STACK: list = []
_COMPARE = {
    "==": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


def has_symbolic(x) -> bool:
    """Whether ``x`` (a dim, or tuples/lists/dicts of them) holds a dim that is not a constant.

    Example:
        >>> from tessera.types.dims import Dim, has_symbolic
        >>> has_symbolic({"shape": (2, Dim.sym("S"))}), has_symbolic((2, Dim.const(3)))
        (True, False)
    """
    if isinstance(x, Dim):
        return not x.is_constant
    if isinstance(x, (tuple, list)):
        return any(has_symbolic(v) for v in x)
    if isinstance(x, dict):
        return any(has_symbolic(v) for v in x.values())
    return False


def active_env():
    """The ShapeEnv of the trace in progress, or None outside ``ts.jit`` tracing."""
    return _ENV_STACK[-1] if _ENV_STACK else None


def _coerce(other):
    if isinstance(other, Dim):
        return other
    if isinstance(other, int) and not isinstance(other, bool):
        return Dim.const(other)
    return None


def _dim_eq(self: Dim, other) -> bool:
    other = _coerce(other)
    if other is None:
        return NotImplemented
    if other.terms == self.terms:
        return True
    env = active_env()
    if env is None or not (self.free_symbols() | other.free_symbols()) <= env.hints.keys():
        return False
    return env.decide("==", self, other)


def _dim_cmp(op: str, swap: bool):
    def method(self: Dim, other):
        other = _coerce(other)
        if other is None:
            return NotImplemented
        lhs, rhs = (other, self) if swap else (self, other)
        if lhs.is_constant and rhs.is_constant:
            return _COMPARE[op](lhs.constant_value, rhs.constant_value)
        env = active_env()
        if env is None:
            raise TesseraShapeError(f"cannot compare symbolic dimensions {lhs} {op} {rhs} outside a trace")
        return env.decide(op, lhs, rhs)

    return method


def _dim_int(self: Dim) -> int:
    if self.is_constant:
        return self.constant_value
    env = active_env()
    if env is None:
        raise TesseraShapeError(f"dimension {self} is symbolic; it has no integer value here")
    value = self.evaluate(env.hints)
    env.guards.append(("==", self, Dim.const(value), True))
    return value


Dim.__eq__ = _dim_eq
Dim.__ne__ = lambda self, other: (lambda r: r if r is NotImplemented else not r)(_dim_eq(self, other))
Dim.__lt__ = _dim_cmp("<", False)
Dim.__le__ = _dim_cmp("<=", False)
Dim.__gt__ = _dim_cmp("<", True)
Dim.__ge__ = _dim_cmp("<=", True)
Dim.__int__ = _dim_int
Dim.__index__ = _dim_int
Dim.__bool__ = lambda self: _dim_int(self) != 0
Dim.__hash__ = lambda self: self._hash
