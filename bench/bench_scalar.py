"""Scalar units against micrograd, side by side, on micrograd's own demo workload.

The workload (micrograd's ``demo.ipynb``): an MLP 2 -> 16 -> 16 -> 1 (ReLU hidden units) on
100 two-moons points (noise 0.1), the SVM max-margin loss ``relu(1 - y_i * score_i)`` averaged,
plus L2 regularisation ``1e-4 * sum(p * p)``, accuracy, backward, and an SGD step with
``lr = 1 - 0.9 k / 100``. Each iteration is timed; the medians are compared.

Four configurations, each training its own model from the same weights (``random.seed(1337)``,
drawn in micrograd's order) and building the same graph (one node per multiplication, addition
and ReLU), so their losses agree iteration by iteration (the script prints the largest
difference as a check that the same work is timed; graphgrad's two implementations agree
exactly):

* graphgrad's Scalar, compiled core (``graphgrad._scalar_core``, built by ``pip install``);
* graphgrad's Scalar, pure Python (``graphgrad._scalar_py``, the reference);
* micrograd as is (Python's cyclic garbage collector on): its closures (``out._backward``
  refers to ``out``) make every node part of a reference cycle, so most of its time goes to
  the collector;
* micrograd with ``gc.disable()``.

graphgrad's nodes hold no cycles and are timed with the collector on, as a user runs them. The
configurations take turns, one iteration each (micrograd with the collector on every fourth
turn: ~1 s an iteration), so a machine whose speed drifts slows them alike. Between turns, not
timed, no configuration leaves garbage to the next one's collector: after a turn with the
collector on, ``gc.collect()``; after micrograd's turn with it off, ``gc.freeze()``, which
keeps that garbage (its memory is not reused, as in a run with the collector off) out of
every later collection.

Then a chain of 1,000,000 scalar nodes, forward and backward, on both implementations:
graphgrad visits the graph without recursion; micrograd's recursive topological sort stops at
Python's recursion limit.

Usage::

    python bench/bench_scalar.py            # 20 timed iterations each (5 for micrograd with
                                            # gc on) after a warm-up; a 1,000,000-node chain
    python bench/bench_scalar.py --quick    # 8 (2) iterations, a 100,000-node chain: CI
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from graphgrad import _scalar_py, scalar

try:
    from micrograd.engine import Value
    from micrograd.nn import MLP as MicroMLP
except ImportError:  # pragma: no cover - depends on the environment
    Value = None
    MicroMLP = None


def compiled_scalar() -> Any:
    """The compiled core's Scalar class, or None where it is not built."""
    try:
        from graphgrad import _scalar_core
    except ImportError:
        return None
    return _scalar_core.Scalar


# ------------------------------------------------------------------------------- the data


def moons(n: int, noise: float, seed: int) -> tuple[list[list[float]], list[int]]:
    """Two moons as Python lists; labels in {-1, +1} as in micrograd's demo."""
    try:
        from graphgrad.data import two_moons

        x, y = two_moons(n, noise=noise, rng=seed)
    except ImportError:  # pragma: no cover - graphgrad.data not present
        rng = np.random.default_rng(seed)
        t = np.linspace(0.0, np.pi, n // 2)
        upper = np.stack([np.cos(t), np.sin(t)], 1)
        t = np.linspace(0.0, np.pi, n - n // 2)
        lower = np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1)
        x = np.concatenate([upper, lower]) + rng.normal(0.0, noise, (n, 2))
        y = np.array([0] * (n // 2) + [1] * (n - n // 2))
    return x.tolist(), (2 * y - 1).tolist()


# ------------------------------------------------------- the same MLP, on graphgrad Scalars


class Neuron:
    """micrograd's Neuron on Scalars of class ``node``: weights uniform(-1, 1) in its order."""

    def __init__(self, node: Callable[[float], Any], nin: int, nonlin: bool = True) -> None:
        self.w = [node(random.uniform(-1, 1)) for _ in range(nin)]
        self.b = node(0.0)
        self.nonlin = nonlin

    def __call__(self, x: Sequence[Any]) -> Any:
        act = sum((wi * xi for wi, xi in zip(self.w, x, strict=True)), self.b)
        return act.relu() if self.nonlin else act

    def parameters(self) -> list[Any]:
        return [*self.w, self.b]


class MLP:
    """micrograd's MLP(nin, nouts): ReLU on every layer but the last."""

    def __init__(self, node: Callable[[float], Any], nin: int, nouts: list[int]) -> None:
        sizes = [nin, *nouts]
        self.layers = [
            [Neuron(node, sizes[i], nonlin=i != len(nouts) - 1) for _ in range(sizes[i + 1])]
            for i in range(len(nouts))
        ]

    def __call__(self, x: Sequence[Any]) -> Any:
        for layer in self.layers:
            out = [n(x) for n in layer]
            x = out
        return x[0] if len(x) == 1 else x

    def parameters(self) -> list[Any]:
        return [p for layer in self.layers for n in layer for p in n.parameters()]


# --------------------------------------------------------------------------- one iteration


def make_step(
    model: Any, node: Callable[[float], Any], xs: list[list[float]], ys: list[int]
) -> Callable[[int], tuple[float, float]]:
    """micrograd's demo loop body for ``model`` whose nodes are made by ``node``."""
    params = model.parameters()

    def step(k: int) -> tuple[float, float]:
        inputs = [[node(v) for v in row] for row in xs]
        scores = list(map(model, inputs))
        losses = [(1 + -yi * si).relu() for yi, si in zip(ys, scores, strict=True)]
        data_loss = sum(losses) * (1.0 / len(losses))
        reg_loss = 1e-4 * sum(p * p for p in params)
        total = data_loss + reg_loss
        acc = sum((yi > 0) == (si.data > 0) for yi, si in zip(ys, scores, strict=True)) / len(ys)
        for p in params:
            p.grad = 0.0
        total.backward()
        lr = 1.0 - 0.9 * k / 100
        for p in params:
            p.data -= lr * p.grad
        return float(total.data), float(acc)

    return step


class Config:
    """One configuration: a model of its own, its step, its collector setting, its results."""

    def __init__(
        self,
        label: str,
        node: Any,
        build: Callable[[Any], Any],
        gc_on: bool,
        xs: list[list[float]],
        ys: list[int],
        every: int = 1,
    ) -> None:
        random.seed(1337)  # the same weights for every configuration
        self.label, self.gc_on, self.every = label, gc_on, every
        self.step = make_step(build(node), node, xs, ys)
        self.times: list[float] = []
        self.losses: list[float] = []

    def run(self, k: int) -> None:
        """Iteration ``k`` (the first, k = 0, is a warm-up: both libraries' first iteration is
        atypical), timed with the collector as configured. Then, not timed: with the collector
        on, a collection; with it off, the garbage stays (memory grows, as in a run with the
        collector off) but is frozen out of the other configurations' collections."""
        was = gc.isenabled()
        if not self.gc_on:
            gc.disable()
        try:
            t0 = time.perf_counter()
            loss, _ = self.step(k)
            t = time.perf_counter() - t0
        finally:
            if was:
                gc.enable()
        if self.gc_on:
            gc.collect()
        else:
            gc.freeze()
        if k:
            self.times.append(t)
        self.losses.append(loss)

    def report(self) -> float:
        med = statistics.median(self.times)
        print(
            f"  {self.label:<30} {med * 1e3:9.1f} ms/iter   (min {min(self.times) * 1e3:.1f}, "
            f"max {max(self.times) * 1e3:.1f}, {len(self.times)} iterations; final loss "
            f"{self.losses[-1]:.6f})",
            flush=True,
        )
        return med


def graphgrad_mlp(node: Any) -> MLP:
    return MLP(node, 2, [16, 16, 1])


def micrograd_mlp(node: Any) -> Any:
    return MicroMLP(2, [16, 16, 1])


def interleaved(configs: list[Config], iters: int) -> None:
    """A warm-up round, then ``iters`` rounds; in each round every configuration runs its next
    iteration (one with ``every = 4`` only in every fourth round)."""
    runs = [0] * len(configs)
    try:
        for r in range(iters + 1):
            for i, c in enumerate(configs):
                if r % c.every == 0:
                    c.run(runs[i])
                    runs[i] += 1
    finally:
        gc.unfreeze()
        gc.collect()


# ---------------------------------------------------------------------------- the chain


def chain_graphgrad(node: Any, n: int) -> tuple[float, float, float, float]:
    """y = x * c * c * ... (n multiplications: n nodes); forward, backward and freeing
    seconds, and dy/dx."""
    x = node(0.5, name="x")
    c = node(1.0000001, name="c", requires_grad=False)
    gc.collect()
    t0 = time.perf_counter()
    y = x
    for _ in range(n):
        y = y * c
    t1 = time.perf_counter()
    y.backward()
    t2 = time.perf_counter()
    expect = c.data**n
    if abs(x.grad - expect) > 1e-9 * abs(expect):
        raise SystemExit(f"chain: dy/dx = {x.grad!r}, expected {expect!r}")
    del y
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, x.grad


def chain_micrograd(n: int) -> str:
    """micrograd on the same chain: the recursion in its topological sort gives out."""
    x = Value(0.5)
    y = x
    for _ in range(n):
        y = y * 1.0000001
    try:
        y.backward()
    except RecursionError:
        return f"RecursionError (recursion limit {sys.getrecursionlimit()})"
    return f"ok, dy/dx = {x.grad:.9f}"


# ------------------------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="few iterations, a short chain (CI)")
    p.add_argument(
        "--iters", type=int, default=None, help="timed iterations per configuration (>= 1)"
    )
    p.add_argument("--chain", type=int, default=None, help="length of the scalar chain")
    p.add_argument("--seed", type=int, default=0, help="seed of the two-moons data")
    args = p.parse_args(argv)
    iters = args.iters or (8 if args.quick else 20)
    if iters < 1:
        p.error("--iters must be >= 1")
    chain_n = args.chain or (100_000 if args.quick else 1_000_000)
    xs, ys = moons(100, 0.1, args.seed)

    print(
        f"Python {sys.version.split()[0]}; micrograd's demo: MLP 2-16-16-1 on {len(xs)} "
        f"two-moons points; configurations take turns, one iteration each (median per "
        f"iteration)\ngraphgrad.scalar runs: {scalar.IMPLEMENTATION}"
    )
    core = compiled_scalar()
    gg_configs = []
    if core is not None:
        gg_configs.append(Config("graphgrad compiled, gc on", core, graphgrad_mlp, True, xs, ys))
    else:
        print("  graphgrad compiled: not built (pip install -e .): pure Python only")
    pure = Config("graphgrad pure Python, gc on", _scalar_py.Scalar, graphgrad_mlp, True, xs, ys)
    gg_configs.append(pure)
    mg_configs = []
    if MicroMLP is not None:
        mg_every = 4 if iters >= 4 else 1  # micrograd with gc: ~1.5 s an iteration
        mg_on = Config("micrograd, gc on", Value, micrograd_mlp, True, xs, ys, every=mg_every)
        mg_off = Config("micrograd, gc off", Value, micrograd_mlp, False, xs, ys)
        mg_configs = [mg_on, mg_off]
    configs = gg_configs + mg_configs
    interleaved(configs, iters)
    med = {c.label: c.report() for c in configs}

    if core is not None:
        same = gg_configs[0].losses == pure.losses
        print(f"  graphgrad compiled and pure Python losses identical: {same}")
        if not same:
            raise SystemExit("the compiled core and pure Python disagree")
    if not mg_configs:
        print("  micrograd is not installed (pip install micrograd): no comparison")
    else:
        mg_on, mg_off = mg_configs
        diff = max(abs(a - b) for a, b in zip(pure.losses, mg_off.losses, strict=True))
        print(
            f"  same losses: largest |graphgrad - micrograd| over {len(mg_off.losses)} iterations "
            f"= {diff:.3g}"
        )
        print("ratios (time of the slower / time of graphgrad, per iteration):")
        for c in gg_configs:
            name = c.label.split(",")[0]
            print(f"  {name:<22} vs micrograd gc on : {med[mg_on.label] / med[c.label]:6.1f}x")
            print(f"  {name:<22} vs micrograd gc off: {med[mg_off.label] / med[c.label]:6.1f}x")
    if core is not None:
        print(
            f"  graphgrad compiled     vs pure Python      : "
            f"{med[pure.label] / med[gg_configs[0].label]:6.1f}x"
        )

    for label, node in ([("compiled", core)] if core is not None else []) + [
        ("pure Python", _scalar_py.Scalar)
    ]:
        fwd, bwd, free, g = chain_graphgrad(node, chain_n)
        print(
            f"chain of {chain_n:,} scalar nodes: graphgrad {label} forward {fwd:.2f} s, "
            f"backward {bwd:.2f} s, freed in {free:.2f} s (dy/dx = {g:.9f})"
        )
    if Value is not None:
        for depth in (500, 2000):
            print(f"  micrograd, chain of {depth:,}: {chain_micrograd(depth)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
