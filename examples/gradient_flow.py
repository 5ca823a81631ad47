"""The three patterns of gradient flow, at a node that receives the upstream gradient 2.

Each graph is L = 2·z with z = gate(x, y) at x = 3, y = -1, so ∂L/∂z = 2 arrives at the gate:

* add      z = x + y:       distributes it unchanged:      ∂L/∂x = 2,  ∂L/∂y = 2
* max      z = max(x, y):   routes it to the larger input:  ∂L/∂x = 2,  ∂L/∂y = 0
* multiply z = x · y:       multiplies by the other input:  ∂L/∂x = 2·y = -2,  ∂L/∂y = 2·x = 6

Prints the numbers and draws the three graphs side by side into docs/img/gradient_flow.svg
(and .png) when Graphviz's ``dot`` is installed; the DOT text is written in any case.

    python examples/gradient_flow.py [--out DIR]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import graphgrad as gg

GATES: list[tuple[str, str, Callable[[gg.Scalar, gg.Scalar], gg.Scalar]]] = [
    ("add distributes", "z = x + y", lambda x, y: x + y),
    ("max routes", "z = max(x, y)", lambda x, y: gg.maximum(x, y)),
    ("multiply switches", "z = x * y", lambda x, y: x * y),
]


def gate_graph(
    gate: Callable[[gg.Scalar, gg.Scalar], gg.Scalar],
) -> tuple[gg.viz.Graph, float, float]:
    """Build L = 2·gate(x, y) at x = 3, y = -1, backpropagate, trace."""
    x, y = gg.Scalar(3.0, name="x"), gg.Scalar(-1.0, name="y")
    z = gate(x, y)
    z.name = "z"
    loss = 2 * z
    loss.name = "L"
    loss.backward()
    return gg.viz.trace(loss), x.grad, y.grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(__file__).resolve().parent.parent / "docs" / "img"
    parser.add_argument("--out", type=Path, default=default, help="where to write the picture")
    args = parser.parse_args()

    graphs = []
    for title, formula, gate in GATES:
        graph, gx, gy = gate_graph(gate)
        print(f"{title:<18} {formula:<14}  upstream ∂L/∂z = 2  ->  ∂L/∂x = {gx:g}, ∂L/∂y = {gy:g}")
        graphs.append((f"{title}: {formula}", graph))

    dot = gg.viz.to_dot_many(graphs, title="gradient flow at x = 3, y = -1, upstream ∂L/∂z = 2")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / "gradient_flow"
    Path(f"{stem}.dot").write_text(dot, encoding="utf-8")
    written = [f"{stem}.dot"]
    if gg.viz.dot_available():
        from graphgrad.viz.formats import run_dot

        Path(f"{stem}.svg").write_bytes(run_dot(dot, "svg"))
        Path(f"{stem}.png").write_bytes(run_dot(dot, "png", dpi=144))
        written += [f"{stem}.svg", f"{stem}.png"]
    print("wrote " + ", ".join(written))


if __name__ == "__main__":
    main()
