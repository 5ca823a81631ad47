"""What every topic needs: the output folder, quick or full sizes, the seed, a log, and how to
write a figure (matplotlib, Agg canvas) or a graph (Graphviz when installed, else its DOT)."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._atomic import atomic_write_bytes, atomic_write_text

__all__ = ["Context", "draw_graphs", "figure", "save"]


@dataclass
class Context:
    """Settings shared by the topics.

    Attributes:
        out: the folder the figures and pages are written into.
        quick: small sizes (CI, a first look) instead of the full ones.
        seed: the seed of every random generator.
        data_root: where image data sets are looked for ("" = the default places).
        log: where progress lines go.
    """

    out: Path
    quick: bool = False
    seed: int = 0
    data_root: str = ""
    log: Callable[[str], None] = field(default=lambda _line: None)


def figure(width: float, height: float) -> Any:
    """A matplotlib Figure on the Agg canvas (no pyplot, no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(ctx: Context, fig: Any, name: str) -> str:
    """Write ``fig`` as PNG to ``ctx.out / name`` (atomically); returns ``name``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    atomic_write_bytes(ctx.out / name, buf.getvalue())
    return name


def draw_graphs(
    ctx: Context, stem: str, graphs: list[tuple[str, Any]], title: str | None = None
) -> list[str]:
    """Draw traced graphs side by side: ``stem.svg`` through Graphviz's ``dot`` when it is
    installed; the DOT text ``stem.dot`` is written in any case. Returns the file names (the
    picture first)."""
    from ..viz import dot_available, to_dot, to_dot_many
    from ..viz.formats import run_dot

    if len(graphs) == 1:
        dot = to_dot(graphs[0][1], title=title or graphs[0][0])
    else:
        dot = to_dot_many(graphs, title=title)
    atomic_write_text(ctx.out / f"{stem}.dot", dot)
    if not dot_available():
        return [f"{stem}.dot"]
    atomic_write_bytes(ctx.out / f"{stem}.svg", run_dot(dot, "svg"))
    return [f"{stem}.svg", f"{stem}.dot"]
