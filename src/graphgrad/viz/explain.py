"""Backpropagation told step by step, from a traced graph's plain data.

The lecture's algorithm: start at the output e with ∂e/∂e = 1 and visit the nodes in reverse
topological order. At each node n, for every input x compute the local gradient ∂n/∂x and the
product m = ∂n/∂x · ∂e/∂n; the gradient ∂e/∂x is the sum of the products x receives from all of
its consumers (its fan-out). E.g. for e = (a+b)(b+1), c = a+b, d = b+1 at a=2, b=1:
∂e/∂b = 1·2 + 1·3 = 5.
"""

from __future__ import annotations

from typing import Any

from .data import GraphData as Graph
from .data import fmt

__all__ = ["explain"]


def _n(v: float | None, fallback: str = "?") -> str:
    return fallback if v is None else fmt(v)


def explain(graph: Graph) -> str:
    """The backward pass of ``graph`` in words and numbers, node by node, newest first.

    Works on any traced graph; numbers are shown where the trace has them (Scalars, and
    one-element Tensors), formulas otherwise.
    """
    nodes = graph.nodes
    root = nodes[graph.root]
    e = root["label"]
    consumers: dict[int, list[dict[str, Any]]] = {}
    inputs: dict[int, list[dict[str, Any]]] = {}
    for edge in graph.edges:
        consumers.setdefault(edge["source"], []).append(edge)
        inputs.setdefault(edge["target"], []).append(edge)
    upstream: dict[int, float | None] = {graph.root: 1.0}

    lines = [
        f"Backpropagation through {e} = {root['expr'] or e}, in reverse topological order.",
        f"At each node n: its gradient ∂{e}/∂n (the sum over its consumers p of "
        f"∂p/∂n · ∂{e}/∂p), then for each input x the local gradient ∂n/∂x and the product "
        f"∂n/∂x · ∂{e}/∂n that x receives.",
        "",
    ]
    for node in reversed(nodes):
        i = node["id"]
        if node["kind"] == "const" or (i != graph.root and i not in consumers):
            continue
        head = node["label"] if node["kind"] != "op" else f"{node['label']} = {node['expr']}"
        lines.append(f"{head}  [{node['op'] or node['kind']}]")
        if i == graph.root:
            lines.append(f"  ∂{e}/∂{e} = 1 (start)")
            g: float | None = 1.0
        else:
            terms, g = [], 0.0
            for edge in consumers.get(i, []):
                local, up = edge["local_grad"], upstream.get(edge["target"])
                terms.append(f"{_n(local, edge['local_grad_expr'])}·{_n(up)}")
                g = None if (g is None or local is None or up is None) else g + local * up
            users = ", ".join(nodes[ed["target"]]["label"] for ed in consumers.get(i, []))
            fan = f"  (sum over its {len(terms)} consumers: {users})" if len(terms) > 1 else ""
            total = _n(g, "?") if g is not None else _n(node.get("grad"))
            lines.append(f"  ∂{e}/∂{node['label']} = {' + '.join(terms)} = {total}{fan}")
            upstream[i] = g if g is not None else node.get("grad")
        up = upstream.get(i)
        for edge in inputs.get(i, []):
            child = nodes[edge["source"]]
            if child["kind"] == "const":
                continue
            local = edge["local_grad"]
            prod = None if (local is None or up is None) else local * up
            formula = edge["local_grad_expr"]
            shown = _n(local, "(a Jacobian)")
            if formula != shown:
                shown = f"{formula} = {shown}"
            lines.append(
                f"  -> {child['label']}: local ∂{node['label']}/∂{child['label']} = {shown}; "
                f"product {_n(local, 'J')}·{_n(up)} = {_n(prod, '(a vector)')}"
            )
    return "\n".join(lines)
