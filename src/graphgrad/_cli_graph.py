"""Subcommands ``graph`` (draw or explain an expression's graph) and ``paths`` (path sums
against backpropagation)."""

from __future__ import annotations

import argparse
import math
import os
import sys
import textwrap
import time
from typing import Any

_GRAPH_EXAMPLES = """\
examples:
  graphgrad graph "(a+b)*(b+1)" --at a=2,b=1
  graphgrad graph "(a+b)*(b+1)" --at a=2,b=1 --explain
  graphgrad graph "(a+b)*(b+1)" --at a=2,b=1 --format svg -o lecture.svg
  graphgrad graph "tanh(w*x + c)" --at w=0.5,x=2,c=-1 --format json
  graphgrad graph --model softmax-classifier --at x1=0.5,x2=-1,y=1 --format svg -o clf.svg
"""

_GRAPH_NOTES = """\
Intermediate results are named with unused letters in the order they are computed.
--model softmax-classifier draws the lecture's linear classifier (D = 2, T = 2) with softmax
and cross-entropy attached, as units, each shared subexpression once; its names are
x1 x2 (data), w11 w12 w21 w22 b1 b2 (parameters) and y (the true class, 1 or 2)."""


def _graph_epilog() -> str:
    """The examples, and the functions of the expression language (from the registry)."""
    from .expr import FUNCTIONS, signature

    calls = " ".join(signature(name) for name in FUNCTIONS)
    functions = textwrap.fill(
        f"expressions: numbers, names, + - * / **, unary -, and the functions {calls}.",
        width=94,
        break_on_hyphens=False,
    )
    return f"{_GRAPH_EXAMPLES}\n{functions}\n{_GRAPH_NOTES}"


_PATHS_EPILOG = """\
examples:
  graphgrad paths "(a+b)*(b+1)" --at a=2,b=1
  graphgrad paths --layered 3 6
  graphgrad paths --model softmax-classifier
  graphgrad paths --layered 4 12 --limit 10000000"""


def register(sub: Any) -> None:
    """Add ``graph`` and ``paths`` to the ``graphgrad`` command."""
    from .viz.formats import FORMATS

    g = sub.add_parser(
        "graph",
        help="evaluate an expression, backpropagate, and print or draw its annotated graph",
        description=_wrap(
            "Parse EXPR safely (numbers, names, + - * / **, unary minus and a few "
            "functions; nothing is eval'ed), evaluate it at the given values, run backward, and "
            "print or draw the graph: each node with its op, value and gradient, each edge with "
            "its local gradient."
        ),
        epilog=_graph_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_inputs(g)
    g.add_argument(
        "--format",
        choices=list(FORMATS),
        default=None,
        help="output format (default: text, or from the suffix of -o FILE); svg and png need "
        "Graphviz's dot program",
    )
    g.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    g.add_argument(
        "--explain",
        action="store_true",
        help="print backprop step by step: upstream gradients, local derivatives, products and "
        "sums over fan-out, node by node in reverse topological order (text: with -o, a .txt "
        "file)",
    )
    g.set_defaults(handler=_graph)
    _hint_dashed_expr(g, "graph")

    p = sub.add_parser(
        "paths",
        help="derivatives by summing over paths vs by backpropagation: results and work",
        description=_wrap(
            "Compute the gradient of EXPR twice: by enumerating every path from each "
            "input to the output and summing the products of local gradients, and by "
            "backpropagation. Print both results and how many paths, edges, multiplications and "
            "additions each used. With --layered W D, do it on dense layered graphs of width W for "
            "depths 1..D: paths grow as W^depth, backprop's edges as W^2*depth."
        ),
        epilog=_PATHS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_inputs(p)
    p.add_argument(
        "--layered",
        nargs=2,
        type=int,
        metavar=("WIDTH", "DEPTH"),
        help="build layered graphs of this width for depths 1..DEPTH",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="most paths to enumerate before refusing (default 1,000,000)",
    )
    p.set_defaults(handler=_paths)
    _hint_dashed_expr(p, "paths")


def _hint_dashed_expr(parser: Any, cmd: str) -> None:
    """Make an EXPR that starts with '-' ("-x*y"), which argparse reads as an unknown option,
    an error that says how to pass it, instead of a bare "unrecognized arguments: -x*y"."""
    parse_known = parser.parse_known_args

    def parse_known_args(args: Any = None, namespace: Any = None) -> Any:
        ns, extras = parse_known(args, namespace)
        dashed = [a for a in extras if a.startswith("-") and not a.startswith("--") and a != "-"]
        if dashed and getattr(ns, "expr", None) is None:
            parser.error(
                f"unrecognized arguments: {' '.join(extras)}; an EXPR that starts with '-' is "
                f"read as an option: give the options first and -- before it (graphgrad {cmd} "
                f'--at x=1 -- "{dashed[0]}"), or write it in parentheses ("({dashed[0]})")'
            )
        return ns, extras

    parser.parse_known_args = parse_known_args


def _add_inputs(parser: Any) -> None:
    """EXPR, or --model NAME, and the values of the names (--at): ``graph`` and ``paths``."""
    from .lecture.classifier import MODELS

    parser.add_argument(
        "expr", metavar="EXPR", nargs="?", help='the expression, e.g. "(a+b)*(b+1)"'
    )
    parser.add_argument(
        "--at",
        action="append",
        default=[],
        metavar="NAME=VALUE[,...]",
        help="values of the names, e.g. a=2,b=1 (may be repeated)",
    )
    parser.add_argument(
        "--model",
        choices=list(MODELS),
        default=None,
        help="instead of EXPR, a model graph built from units (values from --at; the "
        "model's parameters are the inputs)",
    )


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=78)


def _error(cmd: str, msg: str) -> int:
    print(f"graphgrad {cmd}: error: {msg}", file=sys.stderr)
    return 2


def _build(cmd: str, expr: str | None, at: list[str], model: str | None = None) -> Any:
    """Parse and evaluate EXPR (or build --model); returns (root, leaves) or an exit code
    after printing the error."""
    from .expr import ExprError, check_finite, evaluate, parse, parse_values

    try:
        values = parse_values(at)
    except ExprError as e:
        return _error(cmd, f"--at: {e}")
    if model is not None:
        from .lecture.classifier import build_model

        if expr is not None:
            return _error(cmd, "give either EXPR or --model, not both")
        try:
            built = build_model(model, values)
            check_finite(built[0], grads=False)
        except (ValueError, ArithmeticError) as e:
            return _error(cmd, f"--model {model}: {e}")
        return built
    if expr is None:
        return _error(cmd, "give an expression EXPR (or --model NAME)")
    try:
        parsed = parse(expr)
        if not parsed.names:
            raise ExprError(
                "the expression has no variables, so there is nothing to differentiate; "
                'use a name and give its value, e.g. "5*x" --at x=1'
            )
        built = evaluate(parsed, values)
        check_finite(built[0], grads=False)
    except ExprError as e:
        return _error(cmd, f"in {_where(expr, e)} {e}")
    return built


def _where(expr: str, e: Any) -> str:
    """``'a*b' at column 3:`` reads on into the message; without a column, ``'a*b':``."""
    from ._quote import excerpt

    return excerpt(expr.strip(), e.column) + ("" if e.column is not None else ":")


def _check_gradients(cmd: str, expr: str | None, model: str | None, root: Any) -> int | None:
    """After ``root.backward()``: an exit code after printing the error when a gradient is not
    finite (``None`` when all are)."""
    from .expr import ExprError, check_finite

    try:
        check_finite(root)
    except ExprError as e:
        where = f"--model {model}:" if expr is None else f"in {_where(expr, e)}"
        return _error(cmd, f"{where} {e}")
    return None


def _graph(args: argparse.Namespace) -> int:
    from ._quote import excerpt
    from .viz import DotNotFoundError, render, trace
    from .viz.formats import format_of

    if args.output and os.path.isdir(args.output):
        print(
            f"graphgrad graph: error: cannot write {excerpt(args.output)}: it is a directory; "
            f"give a file name for -o, e.g. {excerpt(os.path.join(args.output, 'graph.svg'))}",
            file=sys.stderr,
        )
        return 1
    fmt = args.format
    if fmt is None and args.output:
        fmt = format_of(args.output)
        if fmt is None and not args.explain:
            return _error(
                "graph", f"cannot tell the format from {excerpt(args.output)}; use --format"
            )
    if args.explain and fmt not in (None, "text"):
        if args.format:
            why = f"not {fmt}: drop --format {fmt} (or --explain)"
        else:
            why = f"but -o {excerpt(args.output)} asks for {fmt}: give a .txt file"
            why += " (or drop --explain)"
        return _error("graph", f"--explain writes text, {why}")
    built = _build("graph", args.expr, args.at, args.model)
    if isinstance(built, int):
        return built
    root, _ = built
    root.backward()
    refused = _check_gradients("graph", args.expr, args.model, root)
    if refused is not None:
        return refused
    graph = trace(root)
    if args.explain:
        text = graph.explain() + "\n"
        return _write(text, args.output)
    fmt = fmt or "text"
    if fmt == "png" and not args.output and sys.stdout.isatty():
        # checked before drawing: binary data would garble the terminal
        return _error("graph", "PNG is binary: give -o FILE (or redirect stdout to a file)")
    try:
        data = render(graph, fmt)
    except DotNotFoundError as e:
        print(f"graphgrad graph: error: {e}", file=sys.stderr)
        return 1
    if isinstance(data, bytes) and not args.output:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    return _write(data, args.output)


def _write(data: str | bytes, path: str | None) -> int:
    from ._quote import excerpt
    from .cli import one_line
    from .viz.formats import write

    if path is None:
        assert isinstance(data, str)
        sys.stdout.write(data)
        return 0
    try:
        write(data, path)
    except OSError as e:
        why = e.strerror or one_line(e)
        print(f"graphgrad graph: error: cannot write {excerpt(path)}: {why}", file=sys.stderr)
        return 1
    print(f"wrote {path}", file=sys.stderr)
    return 0


def _paths(args: argparse.Namespace) -> int:
    from .paths import DEFAULT_LIMIT

    limit = args.limit if args.limit is not None else DEFAULT_LIMIT
    if limit < 0:
        return _error("paths", "--limit must be >= 0")
    if args.layered is not None:
        if args.expr is not None or args.model is not None:
            return _error("paths", "give either EXPR or --layered WIDTH DEPTH, not both")
        return _paths_layered(args.layered[0], args.layered[1], limit)
    if args.expr is None and args.model is None:
        return _error(
            "paths",
            "give an expression (EXPR --at ...), --model NAME (--at ...) or --layered WIDTH DEPTH",
        )
    return _paths_expr(args.expr, args.at, limit, args.model)


def _paths_expr(expr: str | None, at: list[str], limit: int, model: str | None = None) -> int:
    from ._quote import excerpt
    from .paths import PathLimitError, backprop_grad, path_grad
    from .viz.data import fmt

    built = _build("paths", expr, at, model)
    if isinstance(built, int):
        return built
    root, leaves = built
    names = list(leaves)
    xs = [leaves[n] for n in names]
    out = root.name or "e"
    t0 = time.perf_counter()
    bp = backprop_grad(root, xs)
    t_bp = time.perf_counter() - t0
    refused_paths = None
    try:
        t0 = time.perf_counter()
        ps = path_grad(root, xs, limit=limit)
        t_ps = time.perf_counter() - t0
    except PathLimitError as e:
        refused_paths = f"path sums: refused: {e}"
        ps = None
    checks = [("backprop", bp.grads)] + ([("path sums", ps.grads)] if ps else [])
    for how, grads in checks:
        for n, g in zip(names, grads, strict=True):
            if not math.isfinite(g):  # the same refusal as graph's: no inf or nan shown
                where = f"--model {model}:" if expr is None else f"in {excerpt(expr.strip())}:"
                return _error(
                    "paths",
                    f"{where} cannot differentiate: the gradient ∂{out}/∂{n} by {how} is "
                    f"{fmt(g)}: {'not a number (nan)' if math.isnan(g) else 'overflows a float'}",
                )
    if expr is None:
        from .lecture.classifier import DESCRIPTIONS

        shown = DESCRIPTIONS.get(str(model), str(model))
    else:
        shown = expr.strip()
    print(f"{out} = {shown} = {fmt(root.data)}")
    print()
    if refused_paths is not None:
        print(refused_paths)
    rows = [["", "path sums", "backprop"]]
    for k, n in enumerate(names):
        rows.append([f"∂{out}/∂{n}", fmt(ps.grads[k]) if ps else "-", fmt(bp.grads[k])])
    if ps is not None:
        per = ", ".join(f"{n}: {c:,}" for n, c in zip(names, ps.paths_per_input, strict=True))
        rows.append(["paths", f"{ps.paths:,} ({per})", "-"])
    rows.append(["edges touched", "-", f"{bp.edges:,}"])
    rows.append(
        ["multiplications", f"{ps.multiplications:,}" if ps else "-", f"{bp.multiplications:,}"]
    )
    rows.append(["additions", f"{ps.additions:,}" if ps else "-", f"{bp.additions:,}"])
    rows.append(["time", f"{t_ps * 1e3:.2f} ms" if ps else "-", f"{t_bp * 1e3:.2f} ms"])
    print(_table(rows))
    return 0


def _paths_layered(width: int, depth: int, limit: int) -> int:
    from .paths import LayeredWorkError, layered_table

    if not (1 <= width <= 64 and 1 <= depth <= 200):
        return _error("paths", "--layered needs 1 <= WIDTH <= 64 and 1 <= DEPTH <= 200")
    try:
        table = layered_table(width, depth, limit=limit)  # counts the work before building
    except LayeredWorkError as e:
        return _error("paths", str(e))
    print(
        f"dense layered graphs of width {width}: unit = tanh(sum of weight * unit below); "
        f"paths from all {width} inputs to the output, path enumeration limit {limit:,}"
    )
    print()
    rows = [
        [
            "depth d",
            f"paths per input ({width}^d)",
            "paths",
            "path-sum mults",
            "backprop edges",
            "backprop mults",
            f"{width}²·d",
            "max |diff|",
        ]
    ]
    for r in table:
        rows.append(
            [
                str(r.depth),
                f"{r.paths // width:,}",
                f"{r.paths:,}",
                f"{r.path_multiplications:,}"
                if r.path_multiplications is not None
                else "refused (> limit)",
                f"{r.backprop_edges:,}",
                f"{r.backprop_multiplications:,}",
                f"{width * width * r.depth:,}",
                f"{r.max_abs_diff:.1e}" if r.max_abs_diff is not None else "-",
            ]
        )
    print(_table(rows))
    return 0


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, r in enumerate(rows):
        lines.append(
            "  ".join(
                c.rjust(w) if k and i else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()
        )
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
