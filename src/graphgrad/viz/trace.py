"""Walk a graph once into plain data: ``{nodes, edges}`` lists of dicts.

Every picture (text, DOT, SVG, PNG, JSON) and the ``--explain`` walk-through render this data,
never the live graph. The walk is iterative (a million-node graph is fine) and the nodes come
in creation order, which is a topological order, so the output is deterministic.

Node fields:
    ``id`` (0, 1, ... in creation order), ``name`` (the user's label or ``None``), ``label``
    (the name, or the value of a constant, or ``n<id>``), ``kind`` (``"input"``: a leaf that
    gets a gradient; ``"const"``: a leaf that does not; ``"op"``), ``op`` (the op's name, or
    ``None`` for leaves), ``expr`` (the op's formula with its inputs' labels, e.g. ``"a + b"``),
    ``value`` and ``grad`` (floats for Scalars and one-element Tensors; ``None`` when unknown),
    ``shape``, and for Tensors ``dtype``, ``value_summary`` and ``grad_summary``.

Edge fields:
    ``source`` (the input's id), ``target`` (the consuming node's id), ``arg`` (argument
    position), ``arg_name`` (from the op table), ``local_grad`` (∂target/∂source as a float) and
    ``local_grad_expr`` (the op table's derivative for that argument, inputs substituted).

Local gradients of Tensor edges: when both ends hold one element the rule is run with upstream
gradient 1 and the number is given; otherwise ``local_grad`` is ``None`` (it is a Jacobian,
never formed by the engine) and only ``local_grad_expr`` describes it.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import numpy as np

from .._graph import collect
from ..errors import BackwardError
from ..ops import _xp
from ..scalar import Scalar, local_grads, registry_rules
from ..tensor import Tensor, set_backward_tracer
from . import formats
from .data import GraphData, fmt
from .explain import explain

__all__ = ["Graph", "trace", "trace_backward"]


class Graph(GraphData):
    """A traced graph: plain ``nodes`` and ``edges`` (lists of dicts), and how to draw it.

    ``root`` is the id of the traced output; ``kind`` is ``"scalar"`` or ``"tensor"``.
    """

    # ------------------------------------------------------------------------ renders
    def to_text(self) -> str:
        """A table of nodes (op, definition, value, gradient) and one of edges."""
        return formats.to_text(self)

    def to_dot(self, title: str | None = None) -> str:
        """Graphviz DOT text (needs nothing installed)."""
        return formats.to_dot(self, title=title)

    def to_svg(self) -> str:
        """SVG through Graphviz's ``dot`` (raises a clear error if it is not installed)."""
        return formats.to_svg(self)

    def to_png(self) -> bytes:
        """PNG bytes through Graphviz's ``dot``."""
        return formats.to_png(self)

    def explain(self) -> str:
        """Backprop step by step, node by node in reverse topological order."""
        return explain(self)

    def save(self, path: str, fmt: str | None = None) -> None:
        """Write the graph to ``path`` as text, dot, svg, png or json (from the suffix)."""
        formats.save(self, path, fmt)

    # ---------------------------------------------------------------------- notebooks
    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """The notebook picture: one run of ``dot``, capped in nodes and bytes (see
        :func:`graphgrad.viz.formats.display_bundle`). It is the only ``_repr_*_`` method, so
        IPython does not draw the graph a second time for another format."""
        return formats.display_bundle(self)


def trace(root: Any, names: dict[str, Any] | None = None) -> Graph:
    """Trace the graph that computed ``root`` (a Scalar or a Tensor) into a :class:`Graph`.

    Args:
        root: the output node.
        names: optional extra labels ``{label: node}`` for nodes that have no ``name``.

    For Tensors, trace before ``backward()`` or with ``backward(retain_graph=True)``;
    intermediate tensors show a gradient only if they called ``retain_grad()``. To record
    every node's gradient, trace during backward: ``g = loss.backward(trace=True)`` (or
    :func:`trace_backward`).
    """
    if isinstance(root, Scalar):
        kind = "scalar"
    elif isinstance(root, Tensor):
        kind = "tensor"
    else:
        raise TypeError(f"trace: expected a Scalar or a Tensor, got {type(root).__name__}")
    extra = {id(v): k for k, v in (names or {}).items()}
    order = collect(root)
    if kind == "scalar":
        return _trace_scalars(order, root, extra)
    index = {id(n): i for i, n in enumerate(order)}
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    labels: list[str] = []
    for i, n in enumerate(order):  # inputs come before their consumers: labels are known
        d = _node_data(i, n, n.name or extra.get(id(n)), kind)
        nodes.append(d)
        labels.append(d["label"])
        op = n._op
        if op is None:
            continue
        arg_names, expr_tpl, deriv_tpls = _op_info(op)
        srcs = [index[id(x)] for x in n._inputs]
        arg_labels = [labels[j] for j in srcs]
        d["expr"] = _fill(expr_tpl, arg_labels)
        local = _local_grads(n, kind)
        for k, j in enumerate(srcs):
            edges.append(_edge(j, i, k, arg_names, deriv_tpls, local[k], arg_labels))
    return Graph(nodes=nodes, edges=edges, root=index[id(root)], kind=kind)


def trace_backward(
    root: Any,
    grad: Any = None,
    *,
    retain_graph: bool = False,
    create_graph: bool = False,
    names: dict[str, Any] | None = None,
) -> Graph:
    """Run ``root.backward()`` and return the traced graph with every node's gradient.

    ``loss.backward(trace=True)`` calls this. The graph is walked before backward frees it
    (no ``retain_graph=True`` needed); during backward the engine keeps dL/d(node) for every
    node, as ``retain_grad()`` does, and the trace records those gradients (``grad`` and
    ``grad_summary`` of each node: this pass's gradient, also for leaves that had one). After
    the pass, intermediate nodes have no ``.grad`` again, leaves have accumulated as usual.
    The :class:`Graph` draws like any other (``to_text``, ``to_svg``, ``explain``, notebooks).

    Args:
        root: the Tensor (or Scalar) to backpropagate from.
        grad, retain_graph, create_graph: as for ``Tensor.backward``.
        names: extra labels ``{label: node}``, as for :func:`trace`.
    """
    if isinstance(root, Scalar):  # scalar graphs keep every node's gradient anyway
        root.backward() if grad is None else root.backward(grad)
        return trace(root, names)
    if not isinstance(root, Tensor):
        raise TypeError(f"trace_backward: expected a Tensor or a Scalar, got {type(root).__name__}")
    graph = trace(root, names)  # structure and values, before backward frees the graph
    order = collect(root)  # the same nodes, in the same (creation) order as graph.nodes
    saved = [(n._retain, n.grad) for n in order]
    grads: list[Any] = [None] * len(order)
    try:
        for n in order:
            n._retain = True
            n.grad = None
        root.backward(grad, retain_graph=retain_graph, create_graph=create_graph)
        grads = [n.grad for n in order]
    finally:
        for n, (retain, prev), g in zip(order, saved, grads, strict=True):
            n._retain = retain
            if n._op is None or retain:  # leaves and retain_grad() nodes accumulate
                n.grad = prev if g is None else (g if prev is None else prev + g)
            else:  # intermediate nodes: no public gradient, as without tracing
                n.grad = prev
    for d, g in zip(graph.nodes, grads, strict=True):
        if g is None:
            continue
        garr = np.asarray(g.data if isinstance(g, Tensor) else g)
        d["grad"] = _one(garr)
        d["grad_summary"] = summarize(garr)
    graph.meta["traced_during"] = "backward"
    return graph


def _trace_scalars(order: list[Scalar], root: Scalar, extra: dict[int, str]) -> Graph:
    """:func:`trace` for Scalar graphs (a million nodes take seconds, not minutes).

    A Scalar's ``.grad`` starts at 0.0 and ``backward()`` sets the output's to 1 (its seed):
    while the output's is still 0 no pass has run from it, so every gradient is unknown and
    drawn as "-" (``None``), as for a Tensor graph before ``backward()``.
    """
    ran = root.grad != 0.0
    nodes: list[dict[str, Any]] = []
    for i, n in enumerate(order):
        n._m = i  # the walk's mark slot now holds the node's id in the trace
    grads = _root_grads(order) if ran else [None] * len(order)
    edges: list[dict[str, Any]] = []
    labels: list[str] = []
    for i, n in enumerate(order):
        name = n.name or (extra.get(id(n)) if extra else None)
        op = n._op
        if op is None:
            const = not n.requires_grad
            label = name or (fmt(n.data) if const else f"n{i}")
            nodes.append(
                {
                    "id": i, "name": name, "label": label, "kind": "const" if const else "input",
                    "op": None, "expr": None, "value": n.data,
                    "grad": None if const else grads[i], "shape": (),
                }
            )  # fmt: skip
            labels.append(label)
            continue
        label = name or f"n{i}"
        a, b = n._a, n._b
        srcs: list[Any] = [a._m] if b is None else [a._m, b._m]  # type: ignore[union-attr]
        arg_labels = [labels[j] for j in srcs]
        arg_names, expr_tpl, deriv_tpls = _op_info(op)
        nodes.append(
            {
                "id": i, "name": name, "label": label, "kind": "op", "op": op.name,
                "expr": _fill(expr_tpl, arg_labels), "value": n.data,
                "grad": grads[i], "shape": (),
            }
        )  # fmt: skip
        labels.append(label)
        local = local_grads(n)
        for k, j in enumerate(srcs):
            edges.append(_edge(j, i, k, arg_names, deriv_tpls, local[k], arg_labels))
    return Graph(nodes=nodes, edges=edges, root=len(order) - 1, kind="scalar")


def _root_grads(order: list[Scalar]) -> list[float | None]:
    """∂root/∂node for every node of ``order`` (creation order, the root last; ``_m`` holds
    each node's index), by one backward pass of the registry's VJP rules, as ``backward()``
    runs it from the root alone: not the stored ``.grad``, which sums over every backward
    call and over every root a node was reached from (the header says ∂root/∂node)."""
    grads = [0.0] * len(order)
    grads[-1] = 1.0
    try:
        for i in range(len(order) - 1, -1, -1):
            n = order[i]
            if n._op is None:
                continue
            for x, d in zip(n._inputs, registry_rules(n, grads[i]), strict=True):
                j: int = x._m  # type: ignore[assignment]
                grads[j] += d
    except BackwardError:  # an op with no derivative: backward() raises too
        return [None] * len(order)
    return list(grads)


Template = tuple[tuple[str, ...], tuple[int, ...]]


@functools.lru_cache(maxsize=256)
def _op_info(op: Any) -> tuple[tuple[str, ...], Template, tuple[Template, ...]]:
    """An op's argument names and its formula and derivatives as fill-in templates (padded
    to 8 arguments for variadic ops)."""
    n = max(len(op.arg_names), len(op.derivatives), 8)
    names = tuple(op.arg_names[k] if k < len(op.arg_names) else f"#{k}" for k in range(n))
    derivs = tuple(op.derivatives[k] if k < len(op.derivatives) else "?" for k in range(n))
    args = tuple(op.arg_names)
    return names, _template(op.formula, args), tuple(_template(d, args) for d in derivs)


def _edge(
    j: int,
    i: int,
    k: int,
    arg_names: tuple[str, ...],
    deriv_tpls: tuple[Template, ...],
    local: float | None,
    arg_labels: list[str],
) -> dict[str, Any]:
    return {
        "source": j,
        "target": i,
        "arg": k,
        "arg_name": arg_names[k] if k < len(arg_names) else f"#{k}",
        "local_grad": local,
        "local_grad_expr": _fill(deriv_tpls[k], arg_labels) if k < len(deriv_tpls) else "?",
    }


def _node_data(i: int, n: Any, name: str | None, kind: str) -> dict[str, Any]:
    leaf = n._op is None
    node_kind = "op" if not leaf else ("input" if n.requires_grad else "const")
    extra: dict[str, Any] = {}
    if kind == "scalar":
        value: float | None = n.data
        grad = n.grad if node_kind != "const" else None
        shape: tuple[int, ...] = ()  # tuples, not lists: a dict of atoms is not GC-tracked
    else:
        value = _one(n.data)
        g = n.grad
        garr = np.asarray(g.data if isinstance(g, Tensor) else g) if g is not None else None
        grad = _one(garr) if garr is not None else None
        shape = tuple(n.data.shape)
        extra = {
            "dtype": str(n.data.dtype),
            "value_summary": summarize(n.data),
            "grad_summary": summarize(garr) if garr is not None else None,
        }
    if name:
        label = name
    elif node_kind == "const" and value is not None:
        label = fmt(value)
    else:
        label = f"n{i}"
    return {
        "id": i,
        "name": name,
        "label": label,
        "kind": node_kind,
        "op": None if leaf else n._op.name,
        "expr": None,
        "value": value,
        "grad": grad,
        "shape": shape,
        **extra,
    }


def _local_grads(n: Any, kind: str) -> list[float | None]:
    if kind == "scalar":
        return list(local_grads(n))
    inputs = n._inputs
    if n.data.size != 1 or any(x.data.size != 1 for x in inputs):
        return [None] * len(inputs)
    op = n._op
    args = tuple(x.data for x in inputs)
    out: list[float | None] = []
    for k in range(len(inputs)):
        if not op.differentiable_in(k):
            out.append(None)
            continue
        with np.errstate(all="ignore"):
            g = op.vjp(k, _xp, np.ones_like(n.data), n.data, args, n._params)
        out.append(float(np.sum(g)))
    return out


def _one(a: np.ndarray) -> float | None:
    return float(a.reshape(-1)[0]) if a.size == 1 and a.dtype.kind in "fiub" else None


def _substitute(formula: str, arg_names: tuple[str, ...], labels: list[str]) -> str:
    """``"x1 + x2"`` with ``x1, x2 -> a, b`` gives ``"a + b"`` (whole words only)."""
    return _fill(_template(formula, tuple(arg_names)), labels)


def _fill(tpl: Template, labels: list[str]) -> str:
    parts, slots = tpl
    if not slots:
        return parts[0]
    out = [parts[0]]
    for k, slot in enumerate(slots):
        out.append(labels[slot] if slot < len(labels) else "?")
        out.append(parts[k + 1])
    return "".join(out)


def _template(formula: str, arg_names: tuple[str, ...]) -> Template:
    """Split ``formula`` around its argument names: the text pieces and which argument goes
    between them. A name may carry an index suffix: ``"x_i"`` gives ``"a_i"``."""
    if not arg_names:
        return (formula,), ()
    alts = "|".join(re.escape(a) for a in sorted(arg_names, key=len, reverse=True))
    pattern = re.compile(r"(?<![A-Za-z0-9_])(" + alts + r")(?![A-Za-z0-9])")
    parts, slots, pos = [], [], 0
    for m in pattern.finditer(formula):
        parts.append(formula[pos : m.start()])
        slots.append(arg_names.index(m.group(1)))
        pos = m.end()
    parts.append(formula[pos:])
    return tuple(parts), tuple(slots)


def summarize(a: np.ndarray) -> str:
    """A one-line summary of an array: shape, and its value or mean/min/max."""
    shape = "x".join(str(s) for s in a.shape) or "scalar"
    if a.size == 0:
        return f"{shape} (empty)"
    if a.dtype.kind not in "fiub":
        return f"{shape} {a.dtype}"
    if a.size == 1:
        return f"{shape}: {fmt(float(a.reshape(-1)[0]))}"
    with np.errstate(all="ignore"):
        mean, lo, hi = float(np.mean(a)), float(np.min(a)), float(np.max(a))
    return f"{shape}: mean {fmt(mean)}, in [{fmt(lo)}, {fmt(hi)}]"


set_backward_tracer(trace_backward)
