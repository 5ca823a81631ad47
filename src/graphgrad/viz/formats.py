"""Render a traced :class:`~graphgrad.viz.trace.Graph` as text, DOT, SVG, PNG, HTML or JSON.

Everything here reads the graph's plain ``nodes``/``edges`` data. DOT is produced as plain text
(nothing needs to be installed); SVG and PNG run Graphviz's ``dot`` program on that text.

Drawing conventions (as in the lecture's figure of ``e = (a+b)(b+1)``): inputs at the bottom,
the output at the top, data flowing upwards along the edges. A node shows its label, its op,
its forward value and its gradient; an edge shows its local gradient ∂node/∂input.
"""

from __future__ import annotations

import html
import os
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

from .._atomic import atomic_write_bytes, atomic_write_text
from .data import GraphData as Graph
from .data import fmt

__all__ = [
    "FORMATS",
    "DotNotFoundError",
    "display_bundle",
    "dot_available",
    "run_dot",
    "save",
    "to_dot",
    "to_dot_many",
    "to_html",
    "to_png",
    "to_svg",
    "to_text",
]

#: The formats :func:`save` and the command line know.
FORMATS = ("text", "dot", "svg", "png", "json")

_FILL = {"input": "#dbe9f6", "const": "#eeeeee", "op": "#ffffff"}


class DotNotFoundError(RuntimeError):
    """Graphviz's ``dot`` program is needed (for SVG/PNG) but is not installed."""


def _num(v: float | None) -> str:
    return "-" if v is None else fmt(v)


def _value_text(n: dict[str, Any]) -> str:
    if n.get("value") is not None:
        return fmt(n["value"])
    return str(n.get("value_summary") or "-")


def _grad_text(n: dict[str, Any]) -> str:
    if n.get("grad") is not None:
        return fmt(n["grad"])
    return str(n.get("grad_summary") or "-")


def _definition(n: dict[str, Any]) -> str:
    if n["kind"] == "op":
        return f"{n['label']} = {n['expr']}"
    return n["label"]


def _deriv(graph: Graph, e: dict[str, Any]) -> str:
    """``∂c/∂a`` for an edge a -> c."""
    return f"∂{graph.nodes[e['target']]['label']}/∂{graph.nodes[e['source']]['label']}"


# ----------------------------------------------------------------------------------- text


def to_text(graph: Graph) -> str:
    """Two aligned tables: the nodes (op, definition, value, gradient), then the edges."""
    root = graph.nodes[graph.root]["label"]
    rows = [["node", "op", "definition", "value", f"grad ∂{root}/∂node"]]
    for n in graph.nodes:
        rows.append(
            [
                n["label"],
                n["op"] or n["kind"],
                _definition(n) if n["kind"] == "op" else "",
                _value_text(n),
                _grad_text(n) if n["kind"] != "const" else "",
            ]
        )
    lines = _table(rows)
    if graph.edges:
        erows = [["edge", "local gradient", "", "value"]]
        for e in graph.edges:
            src, dst = graph.nodes[e["source"]], graph.nodes[e["target"]]
            erows.append(
                [
                    f"{src['label']} -> {dst['label']}",
                    _deriv(graph, e),
                    "= " + e["local_grad_expr"],
                    _num(e["local_grad"]),
                ]
            )
        lines += ["", *_table(erows)]
    return "\n".join(lines)


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for k, r in enumerate(rows):
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


# ------------------------------------------------------------------------------------ DOT


def _q(s: str) -> str:
    """A DOT double-quoted string (``\\n`` inside ``s`` stays a line break)."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _node_label(n: dict[str, Any], root: str) -> str:
    if n["kind"] == "const":
        return n["label"]
    lines = [_definition(n) if n["kind"] == "op" else n["label"]]
    if n["kind"] == "op":
        lines.append(f"[{n['op']}]")
    if n.get("shape"):
        lines.append("shape " + "x".join(str(s) for s in n["shape"]))
    lines.append("value " + _value_text(n))
    lines.append(f"∂{root}/∂{n['label']} = " + _grad_text(n))
    return "\n".join(lines)


_HEADER = [
    '  rankdir=BT; fontname="Helvetica";',
    '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
    '  edge [fontname="Helvetica", fontsize=10, color="#555555"];',
]


def to_dot(graph: Graph, title: str | None = None) -> str:
    """The graph in Graphviz's DOT language: inputs at the bottom, the output at the top.

    Nodes: label (and definition), op, value, gradient. Edges: the local gradient
    ∂target/∂source, as a number when known, else as the op table's formula.
    """
    lines = ["digraph graphgrad {", *_HEADER]
    if title:
        lines.append(f"  labelloc=t; label={_q(title)};")
    lines += _dot_body(graph, prefix="n", indent="  ")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_dot_many(graphs: Sequence[tuple[str, Graph]], title: str | None = None) -> str:
    """Several graphs side by side in one DOT picture, each in a box with its title."""
    lines = ["digraph graphgrad {", *_HEADER]
    if title:
        lines.append(f"  labelloc=t; label={_q(title)};")
    for k, (name, graph) in enumerate(graphs):
        lines.append(f"  subgraph cluster_{k} {{")
        lines.append(f'    label={_q(name)}; style="rounded"; color="#999999";')
        lines += _dot_body(graph, prefix=f"g{k}_n", indent="    ")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_body(graph: Graph, prefix: str, indent: str) -> list[str]:
    lines = []
    root = graph.nodes[graph.root]["label"]
    for n in graph.nodes:
        attrs = [f"label={_q(_node_label(n, root))}", f'fillcolor="{_FILL[n["kind"]]}"']
        if n["kind"] == "const":
            attrs.append("shape=ellipse")
        if n["id"] == graph.root:
            attrs.append("penwidth=2")
        lines.append(f"{indent}{prefix}{n['id']} [{', '.join(attrs)}];")
    for e in graph.edges:
        if graph.nodes[e["source"]]["kind"] == "const":  # no gradient flows to a constant
            lines.append(f"{indent}{prefix}{e['source']} -> {prefix}{e['target']} [style=dashed];")
            continue
        value = e["local_grad"]
        text = f"{_deriv(graph, e)} = " + (
            fmt(value) if value is not None else e["local_grad_expr"]
        )
        lines.append(f"{indent}{prefix}{e['source']} -> {prefix}{e['target']} [label={_q(text)}];")
    return lines


# --------------------------------------------------------------------------- SVG and PNG


def dot_available() -> bool:
    """Whether Graphviz's ``dot`` program is on the PATH."""
    return shutil.which("dot") is not None


def run_dot(dot_text: str, fmt: str, timeout: float = 60.0, dpi: int | None = None) -> bytes:
    """Run Graphviz's ``dot -T<fmt>`` on ``dot_text`` and return its output."""
    exe = shutil.which("dot")
    if exe is None:
        raise DotNotFoundError(
            f"drawing {fmt.upper()} needs Graphviz's `dot` program, which is not on the PATH; "
            f"install Graphviz (e.g. `apt install graphviz`, `brew install graphviz`, "
            f"`conda install graphviz`) or ask for the DOT text instead (format 'dot')"
        )
    try:
        res = subprocess.run(
            [exe, f"-T{fmt}", *([f"-Gdpi={dpi}"] if dpi else [])],
            input=dot_text.encode("utf-8"),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"Graphviz's dot did not finish within {timeout:g} s") from None
    if res.returncode != 0:
        msg = res.stderr.decode("utf-8", "replace").strip()
        raise RuntimeError(f"Graphviz's dot failed (exit code {res.returncode}): {msg}")
    return res.stdout


def to_svg(graph: Graph) -> str:
    """SVG text, drawn by Graphviz's ``dot``."""
    return run_dot(to_dot(graph), "svg").decode("utf-8")


def to_png(graph: Graph) -> bytes:
    """PNG bytes, drawn by Graphviz's ``dot``."""
    return run_dot(to_dot(graph), "png", dpi=144)


# ----------------------------------------------------------------------------------- HTML


#: Notebook display limits: a graph with more nodes is not drawn inline (Graphviz takes
#: seconds to minutes on thousands of nodes, and the SVG grows by about 1.5 kB a node), nor is
#: an SVG larger than ``DISPLAY_MAX_SVG_BYTES`` embedded; a placeholder says how to draw it.
DISPLAY_MAX_NODES = 200
DISPLAY_MAX_SVG_BYTES = 400_000
DISPLAY_DOT_TIMEOUT = 20.0


def _placeholder(graph: Graph, why: str) -> str:
    return (
        f"<pre>{html.escape(repr(graph))}: {html.escape(why)}.\n"
        f"Draw it to a file with g.save('graph.svg') (or `graphgrad graph`), read it with "
        f"g.to_text() or g.explain(), or raise the limit: "
        f"gg.viz.formats.DISPLAY_MAX_NODES = {max(len(graph.nodes), DISPLAY_MAX_NODES)}</pre>"
    )


def display_bundle(graph: Graph) -> dict[str, str]:
    """What a notebook shows for ``graph`` (IPython's ``_repr_mimebundle_``): one SVG drawn by
    a single run of ``dot`` when the graph has at most :data:`DISPLAY_MAX_NODES` nodes, the
    text tables when ``dot`` is not installed, else a short placeholder; never an error."""
    plain = repr(graph)
    n = len(graph.nodes)
    if n > DISPLAY_MAX_NODES:
        why = f"too large to draw inline (more than {DISPLAY_MAX_NODES} nodes)"
        return {"text/html": _placeholder(graph, why), "text/plain": plain}
    if not dot_available():
        return {"text/html": f"<pre>{html.escape(to_text(graph))}</pre>", "text/plain": plain}
    try:
        svg = run_dot(to_dot(graph), "svg", timeout=DISPLAY_DOT_TIMEOUT).decode("utf-8")
    except (RuntimeError, OSError) as e:
        return {"text/html": _placeholder(graph, f"not drawn: {e}"), "text/plain": plain}
    if len(svg) > DISPLAY_MAX_SVG_BYTES:
        why = f"its SVG ({len(svg) // 1000} kB) is too large to embed"
        return {"text/html": _placeholder(graph, why), "text/plain": plain}
    start = svg.find("<svg")
    return {"image/svg+xml": svg[start:] if start >= 0 else svg, "text/plain": plain}


def to_html(graph: Graph, max_svg_nodes: int | None = None) -> str:
    """For web pages: the SVG picture (as HTML) when ``dot`` is installed and the graph has at
    most ``max_svg_nodes`` nodes (default :data:`DISPLAY_MAX_NODES`), the text tables without
    ``dot``, else a placeholder saying how to draw it."""
    limit = DISPLAY_MAX_NODES if max_svg_nodes is None else max_svg_nodes
    if len(graph.nodes) > limit:
        return _placeholder(graph, f"too large to draw inline (more than {limit} nodes)")
    if not dot_available():
        return f"<pre>{html.escape(to_text(graph))}</pre>"
    svg = to_svg(graph)
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else svg


# ----------------------------------------------------------------------------------- save


def render(graph: Graph, fmt: str) -> str | bytes:
    """The graph in ``fmt`` (one of :data:`FORMATS`): ``bytes`` for PNG, ``str`` otherwise."""
    if fmt == "text":
        return to_text(graph) + "\n"
    if fmt == "dot":
        return to_dot(graph)
    if fmt == "svg":
        return to_svg(graph)
    if fmt == "png":
        return to_png(graph)
    if fmt == "json":
        return graph.to_json() + "\n"
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def format_of(path: str) -> str | None:
    """The format a file's suffix asks for (``g.svg`` -> ``svg``, ``.txt`` -> ``text``,
    ``.gv`` -> ``dot``), or ``None`` where the suffix names no format."""
    suffix = os.path.splitext(path)[1].lstrip(".").lower()
    fmt = {"txt": "text", "gv": "dot"}.get(suffix, suffix)
    return fmt if fmt in FORMATS else None


def write(data: str | bytes, path: str) -> None:
    """Write a rendered picture (text or bytes) to ``path`` atomically: a reader never sees a
    half-written file, and an old file survives a failed write."""
    if isinstance(data, bytes):
        atomic_write_bytes(path, data)
    else:
        atomic_write_text(path, data)


def save(graph: Graph, path: str, fmt: str | None = None) -> None:
    """Write ``graph`` to ``path``; the format comes from ``fmt`` or the file's suffix."""
    if fmt is None:
        fmt = format_of(path)
        if fmt is None:
            raise ValueError(
                f"cannot tell the format from {path!r}; give one of {', '.join(FORMATS)}"
            )
    write(render(graph, fmt), path)
