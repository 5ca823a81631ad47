"""A safe parser for arithmetic expressions such as ``"(a+b)*(b+1)"``, evaluated into Scalars.

Nothing is ever passed to ``eval`` or ``exec``. The text is checked in two steps:

1. its tokens (Python's own tokenizer) must alternate operands and operators, so a mistake is
   reported with its column and what was expected there ("expected an operator (+ - * / **) or
   ')', got '.'");
2. the tree from ``ast.parse(text, mode="eval")`` may only contain numbers, names, the binary
   operators ``+ - * / **``, unary ``-``/``+`` and calls of the functions in :data:`FUNCTIONS`.

Evaluation walks that tree iteratively (no recursion), making one :class:`Scalar` per
operation; the intermediate nodes are named with unused letters in creation order, so
``(a+b)*(b+1)`` gives the lecture's ``c = a+b``, ``d = b+1``, ``e = c*d``.

Every number must be a finite float, as ``exp(1000)`` is refused by the op itself: a literal
such as ``1e400``, a name that reads as a number (``inf``, ``nan``: the labels would be
ambiguous) and an operation whose result overflows (``1e200 * 1e200``) are errors naming the
column; :func:`check_finite` checks a graph's local derivatives and gradients the same way.
"""

from __future__ import annotations

import ast
import io
import math
import sys
import tokenize
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._graph import collect
from ._quote import excerpt
from .errors import GraphgradError
from .ops import REGISTRY
from .scalar import Scalar, apply_op, local_grads

__all__ = [
    "FUNCTIONS",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "ExprError",
    "Parsed",
    "check_finite",
    "evaluate",
    "parse",
    "parse_values",
    "signature",
]

#: The functions an expression may call: name -> (fewest, most) arguments. Every elementwise
#: op of the registry that is called by name (not an operator); its inputs come first, then
#: its optional parameters (leaky_relu's slope, elu's alpha, ...), which must be numbers.
FUNCTIONS: dict[str, tuple[int, int]] = {
    op.name: (len(op.arg_names), len(op.arg_names) + len(op.params))
    for op in REGISTRY.values()
    if op.elementwise and not op.symbol
}


def signature(name: str) -> str:
    """How the function ``name`` is called: ``exp(x)``, ``leaky_relu(x[, slope])``,
    ``maximum(x1, x2)`` (from the op's record: its inputs, then its optional parameters)."""
    op = REGISTRY[name]
    args = ", ".join(op.arg_names)
    if op.params:
        args += "".join(f"[, {p}" for p, _ in op.params) + "]" * len(op.params)
    return f"{name}({args})"


_BINARY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
_OPERATORS = ("+", "-", "*", "/", "**")
_OPERAND = "a number, a name, '(' or a function call"
_OPERATOR = "an operator (+ - * / **)"


class ExprError(GraphgradError, ValueError):
    """A bad expression or bad ``name=value`` list; ``column`` is 1-based (or ``None``)."""

    def __init__(self, message: str, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.column = column

    def __str__(self) -> str:
        where = f"at column {self.column}: " if self.column is not None else ""
        return where + self.message


# ------------------------------------------------------------------------------- tokens


def _tokens(text: str) -> list[tokenize.TokenInfo]:
    """Python's tokens of ``text`` (up to the point where the tokenizer gives up)."""
    out = []
    gen = tokenize.generate_tokens(io.StringIO(text).readline)
    while True:
        try:
            tok = next(gen)
        except StopIteration:
            break
        except tokenize.TokenError as e:
            if "EOF in multi-line" in str(e.args[0]):
                break  # an unclosed '(' (or a stray ')'): the checker names it
            raise ExprError(f"cannot read the expression ({e.args[0]})") from None
        except (SyntaxError, IndentationError) as e:
            raise ExprError(f"cannot read the expression ({e.msg})", e.offset) from None
        if tok.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER):
            continue
        if tok.type == tokenize.ERRORTOKEN and not tok.string.strip():
            continue  # the tokenizer reports the blank before a bad character too
        if tok.type in (tokenize.INDENT, tokenize.DEDENT, tokenize.COMMENT):
            raise ExprError(f"unexpected {tokenize.tok_name[tok.type].lower()}", tok.start[1] + 1)
        out.append(tok)
    return out


def _show(tok: tokenize.TokenInfo) -> str:
    return excerpt(tok.string) if tok.string else tokenize.tok_name[tok.type]


def _check_tokens(text: str) -> None:
    """Raise :class:`ExprError` at the first token that cannot follow the ones before it."""
    toks = _tokens(text)
    if not toks:
        raise ExprError(f"the expression is empty; expected {_OPERAND}", 1)
    expect_operand = True
    opened: list[tuple[str, int, str]] = []  # ("group" | "call", column, function name)
    for k, tok in enumerate(toks):
        col = tok.start[1] + 1
        s = tok.string
        nxt = toks[k + 1].string if k + 1 < len(toks) else ""
        if expect_operand:
            if tok.type == tokenize.NUMBER:
                expect_operand = False
            elif tok.type == tokenize.NAME and s in FUNCTIONS:
                if nxt != "(":
                    raise ExprError(f"'{s}' is a function: call it as {s}(...)", col)
            elif tok.type == tokenize.NAME and s.isidentifier() and not _is_keyword(s):
                if nxt == "(":
                    known = ", ".join(FUNCTIONS)
                    raise ExprError(f"unknown function {excerpt(s)}; expected one of {known}", col)
                expect_operand = False
            elif s == "(":
                prev = toks[k - 1].string if k > 0 else ""
                opened.append(("call" if prev in FUNCTIONS else "group", col, prev))
            elif s in ("-", "+"):
                pass  # unary sign
            elif s == ")" and opened and opened[-1][0] == "call" and toks[k - 1].string == "(":
                fn = opened[-1][2]
                raise ExprError(f"{fn}() needs an argument; expected {_OPERAND}", col)
            else:
                raise ExprError(f"expected {_OPERAND}, got {_show(tok)}", col)
        else:
            if tok.type == tokenize.OP and s in _OPERATORS:
                expect_operand = True
            elif s == ")":
                if not opened:
                    raise ExprError(f"unmatched ')'; expected {_OPERATOR}", col)
                opened.pop()
            elif s == ",":
                if not opened or opened[-1][0] != "call":
                    close = " or ')'" if opened else ""
                    raise ExprError(
                        f"',' outside a function call; expected {_OPERATOR}{close}", col
                    )
                expect_operand = True
            else:
                close = " or ')'" if opened else ""
                if opened and opened[-1][0] == "call":
                    close = ", ',' or ')'"
                raise ExprError(f"expected {_OPERATOR}{close}, got {_show(tok)}", col)
    end = len(text.rstrip()) + 1
    if expect_operand:
        raise ExprError(f"the expression ends too early; expected {_OPERAND}", end)
    if opened:
        kind, col, fn = opened[-1]
        what = f"the call of {fn}" if kind == "call" else "'('"
        raise ExprError(f"{what} at column {col} is never closed; expected ')'", end)


def _is_keyword(s: str) -> bool:
    import keyword

    return keyword.iskeyword(s)


# ---------------------------------------------------------------------------------- tree


@dataclass(frozen=True)
class Parsed:
    """A checked expression: its text, its tree and its variable names (in order of first use)."""

    text: str
    tree: ast.Expression
    names: tuple[str, ...]


MAX_LENGTH = 10_000
"""The longest expression accepted, in characters (checked before any parsing)."""
MAX_DEPTH = 100
"""The deepest nesting accepted: open parentheses, or signs in a row (checked before parsing)."""


def _check_size(text: str) -> None:
    """Refuse a text too long or too deeply nested, in one linear scan before any parsing.

    Python's tokenizer and parser are not bounded in time and memory on millions of
    parentheses; this keeps ``parse`` cheap on any input.
    """
    if len(text) > MAX_LENGTH:
        raise ExprError(
            f"the expression is {len(text):,} characters long, more than the limit of "
            f"{MAX_LENGTH:,}"
        )
    depth = signs = 0
    for col, ch in enumerate(text, start=1):
        if ch == "(":
            depth += 1
            if depth > MAX_DEPTH:
                raise ExprError(f"parentheses nested more than {MAX_DEPTH} deep", column=col)
        elif ch == ")":
            depth -= 1
        if ch in "+-":
            signs += 1
            if signs > MAX_DEPTH:
                raise ExprError(f"more than {MAX_DEPTH} signs in a row", column=col)
        elif not ch.isspace():
            signs = 0


def parse(text: str) -> Parsed:
    """Check ``text`` and return its tree; raises :class:`ExprError` naming the column.

    At most :data:`MAX_LENGTH` characters and :data:`MAX_DEPTH` levels of nesting (checked
    first, so hostile input costs one linear scan).
    """
    if not isinstance(text, str):
        raise TypeError(f"parse: expected a string, got {type(text).__name__}")
    _check_size(text)
    if "\n" in text.strip() or "\r" in text:
        raise ExprError("the expression must be on one line")
    text = text.strip()
    _check_tokens(text)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise ExprError(e.msg, e.offset) from None
    except (RecursionError, MemoryError):
        raise ExprError(
            "the expression is too deeply nested for Python's parser: more than about "
            f"{3 * sys.getrecursionlimit():,} operators in one chain (x+x+...+x nests one "
            "level per operator) or levels of nesting; split it into shorter parts"
        ) from None
    names: list[str] = []
    stack: list[ast.AST] = [tree.body]
    while stack:
        node = stack.pop()
        col = getattr(node, "col_offset", None)
        col = col + 1 if col is not None else None
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BINARY:
                raise ExprError(f"operator not allowed; expected {_OPERATOR}", col)
            stack += [node.right, node.left]
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, ast.USub | ast.UAdd):
                raise ExprError("only unary '-' and '+' are allowed", col)
            stack.append(node.operand)
        elif isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool) or not isinstance(v, int | float):
                shown = excerpt(repr(v), quote=False)
                raise ExprError(f"only real numbers are allowed, got {shown}", col)
            if not _fits_a_float(v):
                shown = excerpt(ast.get_source_segment(text, node) or repr(v), quote=False)
                raise ExprError(
                    f"the number {shown} overflows a float (the largest is about 1.8e308)", col
                )
        elif isinstance(node, ast.Name):
            if node.id in FUNCTIONS:
                raise ExprError(f"'{node.id}' is a function: call it as {node.id}(...)", col)
            if _reads_as_number(node.id):
                raise ExprError(f"{_NUMBER_NAME.format(excerpt(node.id))}", col)
            if node.id not in names:
                names.append(node.id)
        elif isinstance(node, ast.Call):
            fn = node.func.id if isinstance(node.func, ast.Name) else None
            if fn not in FUNCTIONS:
                raise ExprError(f"unknown function; expected one of {', '.join(FUNCTIONS)}", col)
            lo, hi = FUNCTIONS[fn]
            if node.keywords or not lo <= len(node.args) <= hi:
                want = str(lo) if lo == hi else f"{lo} or {hi}"
                raise ExprError(f"{fn}() takes {want} positional argument(s)", col)
            for k, arg in enumerate(node.args[lo:], start=lo):
                if _number(arg) is None:
                    raise ExprError(
                        f"argument {k + 1} of {fn}() (its parameter "
                        f"{REGISTRY[fn].params[k - lo][0]}) must be a number",
                        col,
                    )
            stack += list(reversed(node.args))
        else:
            raise ExprError(
                f"{type(node).__name__} is not allowed; expected numbers, names, "
                f"{' '.join(_OPERATORS)} and the functions {', '.join(FUNCTIONS)}",
                col,
            )
    return Parsed(text=text, tree=tree, names=tuple(names))


_NUMBER_NAME = "{} cannot be a variable name: it reads as a number (inf, nan); use another name"


def _reads_as_number(name: str) -> bool:
    """Whether Python reads ``name`` as a float (``inf``, ``nan``, ``Infinity``, ...): such a
    name would make the graph's labels ambiguous (a node ``inf`` holding 2)."""
    try:
        float(name)
    except ValueError:
        return False
    return True


def _fits_a_float(v: int | float) -> bool:
    """Whether the literal ``v`` is a finite float (``1e400`` is inf, ``10**400`` overflows)."""
    try:
        return math.isfinite(float(v))
    except OverflowError:
        return False


def _number(node: ast.AST) -> float | None:
    """The value of a number literal, or of ``-number``; ``None`` for anything else."""
    sign = 1.0
    while isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        sign = -sign if isinstance(node.op, ast.USub) else sign
        node = node.operand
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        if isinstance(node.value, bool):
            return None
        return sign * float(node.value)
    return None


# ---------------------------------------------------------------------------- evaluation


def evaluate(
    expr: str | Parsed, values: Mapping[str, float], *, name_nodes: bool = True
) -> tuple[Scalar, dict[str, Scalar]]:
    """Build the Scalar graph of ``expr`` with its names bound to ``values``.

    Returns:
        ``(output, leaves)``: the output node and ``{name: leaf Scalar}``.

    Raises:
        ExprError: a bad expression, or a name without a value (the message lists the names
            that were given values).
    """
    parsed = expr if isinstance(expr, Parsed) else parse(expr)
    missing = [n for n in parsed.names if n not in values]
    if missing:
        col = _column_of(parsed, missing[0])
        given = ", ".join(sorted(values)) if values else "none"
        raise ExprError(f"unknown name {excerpt(missing[0])}; names given values: {given}", col)
    leaves = {n: Scalar(values[n], name=n) for n in parsed.names}
    results: list[Scalar | float] = []
    stack: list[tuple[ast.AST, bool]] = [(parsed.tree.body, False)]
    while stack:
        node, done = stack.pop()
        num = _number(node)
        if num is not None:
            results.append(num)
            continue
        if isinstance(node, ast.Name):
            results.append(leaves[node.id])
            continue
        if not done:
            stack.append((node, True))
            if isinstance(node, ast.BinOp):
                stack += [(node.right, False), (node.left, False)]
            elif isinstance(node, ast.UnaryOp):
                stack.append((node.operand, False))
            elif isinstance(node, ast.Call):
                stack += [(a, False) for a in reversed(node.args)]
            continue
        col = node.col_offset + 1  # type: ignore[attr-defined]
        try:
            result = _apply(node, results)
        except (ValueError, ZeroDivisionError, OverflowError) as e:
            raise ExprError(f"cannot evaluate: {e}", col) from None
        if isinstance(result, Scalar) and not math.isfinite(result.data):
            raise ExprError(f"cannot evaluate: {_not_finite(result)}", col)
        results.append(result)
    out = results.pop()
    root = out if isinstance(out, Scalar) else Scalar(out, requires_grad=False)
    if name_nodes:
        _name_nodes(root, taken=set(parsed.names) | set(FUNCTIONS))
    return root, leaves


def _apply(node: ast.AST, results: list[Any]) -> Any:
    if isinstance(node, ast.BinOp):
        right = results.pop()
        left = results.pop()
        left, right = _as_node(left), _as_node(right)
        op = type(node.op)
        if op is ast.Add:
            return left + right
        if op is ast.Sub:
            return left - right
        if op is ast.Mult:
            return left * right
        if op is ast.Div:
            return left / right
        return left**right
    if isinstance(node, ast.UnaryOp):
        x = results.pop()
        return -_as_node(x) if isinstance(node.op, ast.USub) else x
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    fn = REGISTRY[node.func.id]
    args = [results.pop() for _ in node.args][::-1]
    n = len(fn.arg_names)
    params = {name: float(v) for (name, _), v in zip(fn.params, args[n:], strict=False)}
    return apply_op(fn, *[_as_node(a) for a in args[:n]], **params)


def _not_finite(node: Scalar) -> str:
    """Why the op node ``node`` has no finite value: ``mul: 1e+200 * 1e+200 overflows a float``
    (the style of the ops' own errors, ``exp: exp(1000) overflows a float``)."""
    name = node._op.name if node._op is not None else "value"
    if math.isnan(node.data):
        return f"{name}: {_call(node)} is not a number (nan)"
    return f"{name}: {_call(node)} overflows a float ({_fmt(node.data)})"


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def check_finite(root: Scalar, *, grads: bool = True) -> None:
    """Refuse a graph that holds a number that is not finite, as :func:`evaluate` refuses
    ``exp(1000)``: every node's value, every edge's local derivative ∂node/∂input and (with
    ``grads``, after ``root.backward()``) every gradient ∂root/∂node must be finite.

    Raises:
        ExprError: naming the first such node (values and local derivatives from the inputs
            up, gradients from the output down, so the one named is where it began), its op
            and its inputs' values.
    """
    order = collect(root)
    for n in order:
        if not math.isfinite(n.data):
            raise ExprError(f"cannot evaluate {_label(n)}: {_not_finite(n)}")
        if n._op is None:
            continue
        try:
            local = local_grads(n)
        except (ArithmeticError, ValueError) as e:
            raise ExprError(f"cannot differentiate {_label(n)} = {_call(n)}: {e}") from None
        for x, lg in zip(n._inputs, local, strict=True):
            if not math.isfinite(lg):
                raise ExprError(
                    f"cannot differentiate: the local derivative ∂{_label(n)}/∂{_label(x)} of "
                    f"{_label(n)} = {_call(n)} is {_fmt(lg)} (not finite)"
                )
    if not grads:
        return
    for n in reversed(order):
        if n.requires_grad and n.grad is not None and not math.isfinite(n.grad):
            raise ExprError(
                f"cannot differentiate: the gradient ∂{_label(root)}/∂{_label(n)} is "
                f"{_fmt(n.grad)}: {_overflow(n.grad)}"
            )


def _label(n: Scalar) -> str:
    return str(n.name) if n.name else _fmt(n.data)


def _call(node: Scalar) -> str:
    """``1e+200 * 1e+200``, ``-(2)``, ``exp(1000)``: the op of ``node`` on its inputs' values."""
    op = node._op
    args = [_fmt(x.data) for x in node._inputs]
    if op is None:
        return _fmt(node.data)
    if op.symbol == "-x":
        return f"-({args[0]})"
    if op.symbol and len(args) == 2:
        return f"{args[0]} {op.symbol} {args[1]}"
    return f"{op.name}({', '.join(args)})"


def _overflow(v: float) -> str:
    return "not a number (nan)" if math.isnan(v) else "overflows a float"


def _as_node(v: Any) -> Scalar:
    return v if isinstance(v, Scalar) else Scalar(v, requires_grad=False)


def _column_of(parsed: Parsed, name: str) -> int | None:
    for node in ast.walk(parsed.tree):
        if isinstance(node, ast.Name) and node.id == name:
            return node.col_offset + 1
    return None


def _letters(taken: set[str]) -> Any:
    for c in "abcdefghijklmnopqrstuvwxyz":
        if c not in taken:
            yield c
    k = 1
    while True:
        if f"v{k}" not in taken:
            yield f"v{k}"
        k += 1


def _name_nodes(root: Scalar, taken: set[str]) -> None:
    """Name the unnamed op nodes in creation order with letters not in ``taken``."""
    fresh = _letters(taken)
    for n in collect(root):
        if n._op is not None and not n.name:
            n.name = next(fresh)


# ------------------------------------------------------------------------- name=value lists


def parse_values(spec: str | Sequence[str]) -> dict[str, float]:
    """``"a=2,b=1"`` (or a list of such strings) -> ``{"a": 2.0, "b": 1.0}``."""
    items = [spec] if isinstance(spec, str) else list(spec)
    out: dict[str, float] = {}
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, val = part.partition("=")
            # as Python's parser reads the expression's names: NFKC ("𝑥" is "x")
            name, val = unicodedata.normalize("NFKC", name.strip()), val.strip()
            if not sep or not name or not val:
                raise ExprError(
                    f"expected NAME=NUMBER pairs separated by commas, got {excerpt(part)}"
                )
            if not name.isidentifier() or _is_keyword(name) or name in FUNCTIONS:
                raise ExprError(f"{excerpt(name)} cannot be a variable name")
            if _reads_as_number(name):
                raise ExprError(_NUMBER_NAME.format(excerpt(name)))
            try:
                x = float(val)
            except ValueError:
                raise ExprError(
                    f"the value of {excerpt(name)} is not a number: {excerpt(val)}"
                ) from None
            if not math.isfinite(x):
                raise ExprError(f"the value of {excerpt(name)} must be finite, got {excerpt(val)}")
            if name in out:
                raise ExprError(f"{excerpt(name)} is given twice")
            out[name] = x
    return out
