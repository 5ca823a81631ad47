"""Pictures of computational graphs: trace a graph once into plain data, then render it.

``g = gg.viz.trace(e)`` gives a :class:`Graph` (``g.nodes``, ``g.edges``: lists of dicts);
``g.to_text()``, ``g.to_dot()``, ``g.to_svg()``, ``g.to_png()``, ``g.to_json()`` and
``g.explain()`` render that data; in a notebook ``g`` draws itself (up to
``formats.DISPLAY_MAX_NODES`` nodes). ``g = loss.backward(trace=True)`` (or
:func:`trace_backward`) traces a Tensor graph during backward, with every node's gradient.
"""

from .explain import explain
from .formats import (
    FORMATS,
    DotNotFoundError,
    dot_available,
    render,
    save,
    to_dot,
    to_dot_many,
    to_html,
    to_png,
    to_svg,
    to_text,
)
from .trace import Graph, summarize, trace, trace_backward

__all__ = [
    "FORMATS",
    "DotNotFoundError",
    "Graph",
    "dot_available",
    "explain",
    "render",
    "save",
    "summarize",
    "to_dot",
    "to_dot_many",
    "to_html",
    "to_png",
    "to_svg",
    "to_text",
    "trace",
    "trace_backward",
]
