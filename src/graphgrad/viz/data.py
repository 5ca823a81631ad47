"""A traced graph as plain data (``nodes``, ``edges``), and the number format every picture uses.

The renderers (:mod:`.formats`, :mod:`.explain`) read this data; :mod:`.trace` makes it from a
live graph and gives it its drawing methods. Imports flow one way: data <- renderers <- trace.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GraphData", "finite", "fmt"]


@dataclass
class GraphData:
    """A traced graph: plain ``nodes`` and ``edges`` (lists of dicts; see :mod:`.trace`).

    ``root`` is the id of the traced output; ``kind`` is ``"scalar"`` or ``"tensor"``.
    """

    nodes: list[dict[str, Any]]
    edges: list[dict[str, Any]]
    root: int
    kind: str = "scalar"
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The plain data: ``{"kind", "root", "nodes", "edges"}`` (and ``meta`` if any)."""
        out: dict[str, Any] = {"kind": self.kind, "root": self.root}
        if self.meta:
            out["meta"] = self.meta
        out["nodes"] = self.nodes
        out["edges"] = self.edges
        return out

    def to_json(self, indent: int | None = 2) -> str:
        """The plain data as JSON (non-finite numbers become ``null``)."""
        return json.dumps(finite(self.to_dict()), indent=indent, ensure_ascii=False)

    def node(self, label: str) -> dict[str, Any]:
        """The node with this label (name), e.g. ``g.node("c")["grad"]``."""
        for n in self.nodes:
            if n["label"] == label:
                return n
        raise KeyError(f"no node labelled {label!r}; labels: {[n['label'] for n in self.nodes]}")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.kind}, {len(self.nodes)} nodes, {len(self.edges)} edges)"
        )


def finite(obj: Any) -> Any:
    """A copy of ``obj`` in which NaN and infinities are ``None`` (JSON has no such numbers)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return obj


def fmt(v: float) -> str:
    """A short form of a number: ``6``, ``0.5``, ``1e-07``, ``-inf``."""
    return f"{v:.6g}"
