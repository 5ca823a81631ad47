"""Derivatives as sums over paths, against backpropagation, with the work each one does.

The lecture gives two ways to get ∂e/∂x in a graph:

* **path sums**: multiply the local gradients along every path from x to e and add the
  products up. Correct, but the number of paths grows exponentially with depth: in a layered
  graph of width w and depth d there are w^d paths from an input to the output.
* **backpropagation** (reverse mode): visit the nodes from e backwards; each edge n -> c is
  touched once, multiplying its local gradient ∂n/∂c by ∂e/∂n. The work grows with the number of
  edges, about w²·d in the same layered graph.

:func:`path_grad` and :func:`backprop_grad` compute the same numbers both ways and count their
work. Both walk the graph iteratively. Path enumeration first counts the paths (a linear-time
dynamic programme) and refuses, with :class:`PathLimitError`, when there are more than
``limit`` of them instead of running for hours.

Only the edges that lie on a path from one of the inputs to the output count: a backward pass
needs nothing else (edges into constants, or into parts of the graph the inputs do not reach,
carry no gradient towards the inputs).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._graph import collect
from .errors import GraphgradError
from .scalar import Scalar, local_grads

__all__ = [
    "Backprop",
    "LayeredWorkError",
    "PathLimitError",
    "PathSums",
    "backprop_grad",
    "count_paths",
    "layered",
    "layered_table",
    "layered_work",
    "path_grad",
]

#: Default most paths :func:`path_grad` enumerates.
DEFAULT_LIMIT = 1_000_000

#: The most graph edges :func:`layered_table` builds in all (its depths together) by default:
#: building, backpropagating and counting paths costs ~15 µs an edge in pure Python, so this
#: keeps a table to a few seconds (width 64 and depths 1..200 would be 328 million edges).
MAX_LAYERED_EDGES = 300_000


class LayeredWorkError(GraphgradError, ValueError):
    """A :func:`layered_table` would build more graph edges than its bound allows."""

    def __init__(self, width: int, depth: int, needed: int, bound: int) -> None:
        fits = max_layered_depth(width, bound)
        hint = f"at width {width} use a depth of at most {fits}" if fits else "use a smaller width"
        super().__init__(
            f"width {width} and depths 1..{depth} would build {needed:,} graph edges, more "
            f"than the bound of {bound:,} that keeps this to a few seconds; {hint}"
        )
        self.needed = needed
        self.bound = bound


class PathLimitError(GraphgradError, RuntimeError):
    """Path enumeration would need more paths than the limit allows."""

    def __init__(self, needed: int, limit: int) -> None:
        super().__init__(
            f"path enumeration needs {needed:,} paths, more than the limit of {limit:,}; raise "
            f"the limit (path_grad(..., limit=N), or --limit N on the command line) or use "
            f"backpropagation, which touches each edge once"
        )
        self.needed = needed
        self.limit = limit


@dataclass
class PathSums:
    """The result of :func:`path_grad`.

    Attributes:
        grads: ∂output/∂input for each input, in the order given.
        paths: the number of paths enumerated (all inputs together).
        paths_per_input: that number for each input.
        multiplications: products of local gradients formed (a path of L edges needs L - 1).
        additions: products added to a running sum.
        edges: edges on some input-to-output path (for comparison with backprop).
    """

    grads: list[float]
    paths: int
    paths_per_input: list[int]
    multiplications: int
    additions: int
    edges: int


@dataclass
class Backprop:
    """The result of :func:`backprop_grad`.

    Attributes:
        grads: ∂output/∂input for each input, in the order given.
        edges: edges touched (each once).
        multiplications: local gradient times upstream gradient, one per edge.
        additions: sums over fan-out (a node with k consumers needs k - 1).
        nodes: nodes visited.
    """

    grads: list[float]
    edges: int
    multiplications: int
    additions: int
    nodes: int


@dataclass
class _Relevant:
    """The part of the graph between the inputs and the output, with local gradients."""

    order: list[Scalar]  # creation order
    edges: dict[int, list[tuple[Scalar, float]]]  # id(node) -> [(input, ∂node/∂input)]
    targets: dict[int, int]  # id(input) -> position in the inputs list
    n_edges: int = 0
    counts: dict[int, int] = field(default_factory=dict)  # id -> paths from it to the output


def _check(output: Any, inputs: Sequence[Any]) -> list[Scalar]:
    if not isinstance(output, Scalar):
        raise TypeError(
            f"expected a Scalar output, got {type(output).__name__}; for a tensor graph, "
            f"expand it into scalar units first: gg.units(output)"
        )
    xs = list(inputs)
    for x in xs:
        if not isinstance(x, Scalar):
            raise TypeError(f"inputs must be Scalars, got {type(x).__name__}")
    if len({id(x) for x in xs}) != len(xs):
        raise ValueError("the same input is given twice")
    return xs


def _relevant(output: Scalar, inputs: list[Scalar]) -> _Relevant:
    """Nodes that lie on a path from an input to ``output``, the edges between them, and the
    number of paths from each of them to the output."""
    order = collect(output)  # creation order; iterative
    targets = {id(x): k for k, x in enumerate(inputs)}
    reaches: set[int] = set()  # nodes from which some input can be reached
    for n in order:  # inputs before consumers: one forward sweep
        if id(n) in targets or any(id(x) in reaches for x in n._inputs):
            reaches.add(id(n))
    rel = _Relevant(order=[n for n in order if id(n) in reaches], edges={}, targets=targets)
    for n in rel.order:
        if n._op is None:
            continue
        pairs = [
            (x, lg) for x, lg in zip(n._inputs, local_grads(n), strict=True) if id(x) in reaches
        ]
        rel.edges[id(n)] = pairs
        rel.n_edges += len(pairs)
    counts = {id(output): 1} if id(output) in reaches else {}
    for n in reversed(rel.order):  # consumers before inputs
        c = counts.get(id(n), 0)
        if c:
            for x, _ in rel.edges.get(id(n), []):
                counts[id(x)] = counts.get(id(x), 0) + c
    rel.counts = counts
    return rel


def count_paths(output: Scalar, inputs: Sequence[Scalar]) -> list[int]:
    """The number of paths from each input to ``output`` (without enumerating them)."""
    xs = _check(output, inputs)
    rel = _relevant(output, xs)
    return [rel.counts.get(id(x), 0) for x in xs]


def path_grad(output: Scalar, inputs: Sequence[Scalar], limit: int = DEFAULT_LIMIT) -> PathSums:
    """∂output/∂input for each input by enumerating every path and summing the products.

    Each path's local gradients are multiplied from scratch (a path of L edges costs L - 1
    multiplications), as in the lecture's definition; nothing is shared between paths.

    Raises:
        PathLimitError: there are more than ``limit`` paths; it says how many.
    """
    xs = _check(output, inputs)
    rel = _relevant(output, xs)
    per_input = [rel.counts.get(id(x), 0) for x in xs]
    total = sum(per_input)
    if total > limit:
        raise PathLimitError(total, limit)
    grads = [0.0] * len(xs)
    seen_input = [False] * len(xs)
    mults = adds = 0
    # Depth-first over paths, iteratively: frames of (node, index of its next input edge).
    local_path: list[float] = []  # local gradients along the current path
    frames: list[tuple[Scalar, int]] = [(output, 0)] if rel.counts.get(id(output)) else []
    enter = True
    while frames:
        node, k = frames[-1]
        if enter:
            t = rel.targets.get(id(node))
            if t is not None:  # a complete path from input t to the output
                prod = 1.0
                if local_path:
                    prod = local_path[0]
                    for lg in local_path[1:]:
                        prod *= lg
                        mults += 1
                if seen_input[t]:
                    grads[t] += prod
                    adds += 1
                else:
                    grads[t] = prod
                    seen_input[t] = True
            enter = False
        edges = rel.edges.get(id(node), [])
        if k < len(edges):
            frames[-1] = (node, k + 1)
            child, lg = edges[k]
            local_path.append(lg)
            frames.append((child, 0))
            enter = True
        else:
            frames.pop()
            if local_path and frames:
                local_path.pop()
    return PathSums(
        grads=grads,
        paths=total,
        paths_per_input=per_input,
        multiplications=mults,
        additions=adds,
        edges=rel.n_edges,
    )


def backprop_grad(output: Scalar, inputs: Sequence[Scalar]) -> Backprop:
    """∂output/∂input for each input by reverse mode, counting edges, products and sums.

    The same algorithm as ``output.backward()`` (reverse creation order, each edge once),
    written out with counters and restricted to the edges on input-to-output paths.
    """
    xs = _check(output, inputs)
    rel = _relevant(output, xs)
    upstream: dict[int, float] = {id(output): 1.0} if rel.counts.get(id(output)) else {}
    edges = mults = adds = nodes = 0
    for n in reversed(rel.order):
        u = upstream.get(id(n))
        if u is None:
            continue
        nodes += 1
        for x, lg in rel.edges.get(id(n), []):
            m = lg * u
            edges += 1
            mults += 1
            k = id(x)
            if k in upstream:
                upstream[k] += m
                adds += 1
            else:
                upstream[k] = m
    return Backprop(
        grads=[upstream.get(id(x), 0.0) for x in xs],
        edges=edges,
        multiplications=mults,
        additions=adds,
        nodes=nodes,
    )


# --------------------------------------------------------------------- layered graphs


def layered(width: int, depth: int, seed: int = 0) -> tuple[Scalar, list[Scalar]]:
    """A dense layered graph: ``width`` inputs, ``depth`` layers of ``width`` units, one output.

    Unit j of layer k is ``tanh(sum_i c_ij * h_i)`` over all units h_i of layer k-1 (the
    weights c_ij are constants drawn from ``seed``); the output is the sum of the last layer.
    From each input there are ``width ** depth`` paths to the output; the edges grow as
    ``width² · depth``.

    Returns:
        ``(output, inputs)``.
    """
    if width < 1 or depth < 1:
        raise ValueError(f"layered: width and depth must be >= 1, got {width} and {depth}")
    rng = random.Random(seed)
    inputs = [Scalar(rng.uniform(-1, 1), name=f"x{i + 1}") for i in range(width)]
    h: list[Scalar] = inputs
    for k in range(1, depth + 1):
        nxt = []
        for j in range(width):
            terms = [Scalar(rng.uniform(-1, 1), requires_grad=False) * hi for hi in h]
            s = terms[0]
            for t in terms[1:]:
                s = s + t
            u = s.tanh()
            u.name = f"h{k}_{j + 1}"
            nxt.append(u)
        h = nxt
    out = h[0]
    for t in h[1:]:
        out = out + t
    out.name = "out"
    return out, inputs


@dataclass
class LayeredRow:
    """One row of :func:`layered_table`: the work of both algorithms at one depth."""

    depth: int
    paths: int
    path_multiplications: int | None  # None: refused (over the limit)
    backprop_edges: int
    backprop_multiplications: int
    max_abs_diff: float | None  # between the two algorithms' gradients


def layered_work(width: int, max_depth: int) -> int:
    """Graph edges that :func:`layered_table` builds for depths 1..``max_depth``.

    Each layer of :func:`layered` has ``width`` units of ``width`` products (two edges each:
    weight and unit below) summed by ``width - 1`` additions (two edges each) into a tanh
    (one edge): ``width * (4 * width - 1)`` edges; depth d has d layers plus the output sum.
    Counted by formula, before anything is built.
    """
    per_layer = width * (4 * width - 1)
    layers = max_depth * (max_depth + 1) // 2
    return per_layer * layers + 2 * (width - 1) * max_depth


def max_layered_depth(width: int, bound: int = MAX_LAYERED_EDGES) -> int:
    """The largest depth D for which :func:`layered_work` (width, D) is within ``bound``."""
    d = 0
    while layered_work(width, d + 1) <= bound:
        d += 1
    return d


def layered_table(
    width: int,
    max_depth: int,
    limit: int = DEFAULT_LIMIT,
    max_edges: int = MAX_LAYERED_EDGES,
) -> list[LayeredRow]:
    """Both algorithms on :func:`layered` graphs of depths 1..``max_depth``.

    Raises:
        LayeredWorkError: the graphs would have more than ``max_edges`` edges in all
            (:func:`layered_work`); counted before anything is built.
    """
    needed = layered_work(width, max_depth)
    if needed > max_edges:
        raise LayeredWorkError(width, max_depth, needed, max_edges)
    rows = []
    for d in range(1, max_depth + 1):
        out, xs = layered(width, d)
        bp = backprop_grad(out, xs)
        try:
            ps: PathSums | None = path_grad(out, xs, limit=limit)
        except PathLimitError:
            ps = None
        paths = ps.paths if ps is not None else sum(count_paths(out, xs))
        diff = (
            max(abs(a - b) for a, b in zip(ps.grads, bp.grads, strict=True))
            if ps is not None
            else None
        )
        rows.append(
            LayeredRow(
                depth=d,
                paths=paths,
                path_multiplications=ps.multiplications if ps is not None else None,
                backprop_edges=bp.edges,
                backprop_multiplications=bp.multiplications,
                max_abs_diff=diff,
            )
        )
    return rows
