"""The lecture's worked example: e = (a+b)(b+1) at a = 2, b = 1, with c = a+b and d = b+1.

Forward: c = 3, d = 2, e = 6. Local gradients: ∂e/∂c = d = 2, ∂e/∂d = c = 3, ∂c/∂a = ∂c/∂b =
∂d/∂b = 1. Backward: ∂e/∂a = 1·2 = 2 and, summing over b's two paths, ∂e/∂b = 1·2 + 1·3 = 5.

The same numbers come out of the vectorised engine (Tensors) and of scalar units (Scalars),
and the graph is drawn: docs/img/lecture_example.svg and .png when Graphviz's ``dot`` is
installed, the DOT text (docs/img/lecture_example.dot) always.

    python examples/worked_example.py [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import graphgrad as gg


def with_tensors() -> tuple[float, float, float]:
    """e, ∂e/∂a, ∂e/∂b with the vectorised engine (0-d float64 tensors)."""
    a = gg.tensor(np.float64(2.0), requires_grad=True, name="a")
    b = gg.tensor(np.float64(1.0), requires_grad=True, name="b")
    e = (a + b) * (b + 1)
    e.backward()
    return float(e.data), float(a.grad), float(b.grad)


def with_scalars() -> tuple[gg.Scalar, gg.Scalar, gg.Scalar]:
    """The same with scalar units; the intermediate nodes are named as in the lecture."""
    a, b = gg.Scalar(2.0, name="a"), gg.Scalar(1.0, name="b")
    c = a + b
    c.name = "c"
    d = b + 1
    d.name = "d"
    e = c * d
    e.name = "e"
    e.backward()
    return e, a, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(__file__).resolve().parent.parent / "docs" / "img"
    parser.add_argument("--out", type=Path, default=default, help="where to write the picture")
    args = parser.parse_args()

    e, da, db = with_tensors()
    print(f"Tensor: e = {e:g}, de/da = {da:g}, de/db = {db:g}")
    se, sa, sb = with_scalars()
    print(f"Scalar: e = {se.data:g}, de/da = {sa.grad:g}, de/db = {sb.grad:g}")
    assert (e, da, db) == (se.data, sa.grad, sb.grad) == (6.0, 2.0, 5.0)

    graph = gg.viz.trace(se)
    print()
    print(graph.to_text())
    print()
    print(graph.explain())

    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / "lecture_example"
    graph.save(f"{stem}.dot")
    written = [f"{stem}.dot"]
    if gg.viz.dot_available():
        graph.save(f"{stem}.svg")
        graph.save(f"{stem}.png")
        written += [f"{stem}.svg", f"{stem}.png"]
    else:
        print("(Graphviz's dot is not installed: wrote the DOT text only)")
    print()
    print("wrote " + ", ".join(written))


if __name__ == "__main__":
    main()
