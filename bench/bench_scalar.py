"""Scalar units against micrograd, side by side, on micrograd's own demo workload.

The workload (micrograd's ``demo.ipynb``): an MLP 2 -> 16 -> 16 -> 1 (ReLU hidden units) on
100 two-moons points (noise 0.1), the SVM max-margin loss ``relu(1 - y_i * score_i)`` averaged,
plus L2 regularisation ``1e-4 * sum(p * p)``, accuracy, backward, and an SGD step with
``lr = 1 - 0.9 k / 100``. Each iteration is timed; the medians are compared.

Both models start from the same weights (``random.seed(1337)``, drawn in micrograd's order) and
build the same graph (one node per multiplication, addition and ReLU), so their losses agree
iteration by iteration; the script prints the largest difference as a check that the same work
is timed.

micrograd is timed twice: as is (Python's cyclic garbage collector on) and with ``gc.disable()``.
Its closures (``out._backward`` refers to ``out``) make every node part of a reference cycle,
so most of its time goes to the collector. graphgrad's nodes hold no cycles and are timed with
the collector on, as a user runs them (and, for information, off).

Then a chain of 1,000,000 scalar nodes, forward and backward: graphgrad visits the graph
without recursion; micrograd's recursive topological sort stops at Python's recursion limit.

Usage::

    python bench/bench_scalar.py            # 20 timed iterations (5 for micrograd with gc
                                            # on) after a warm-up; a 1,000,000-node chain
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

from graphgrad.scalar import Scalar

try:
    from micrograd.engine import Value
    from micrograd.nn import MLP as MicroMLP
except ImportError:  # pragma: no cover - depends on the environment
    Value = None
    MicroMLP = None


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
    """micrograd's Neuron on Scalars: weights drawn uniform(-1, 1) in the same order."""

    def __init__(self, nin: int, nonlin: bool = True) -> None:
        self.w = [Scalar(random.uniform(-1, 1)) for _ in range(nin)]
        self.b = Scalar(0.0)
        self.nonlin = nonlin

    def __call__(self, x: Sequence[Any]) -> Scalar:
        act = sum((wi * xi for wi, xi in zip(self.w, x, strict=True)), self.b)
        return act.relu() if self.nonlin else act

    def parameters(self) -> list[Scalar]:
        return [*self.w, self.b]


class MLP:
    """micrograd's MLP(nin, nouts): ReLU on every layer but the last."""

    def __init__(self, nin: int, nouts: list[int]) -> None:
        sizes = [nin, *nouts]
        self.layers = [
            [Neuron(sizes[i], nonlin=i != len(nouts) - 1) for _ in range(sizes[i + 1])]
            for i in range(len(nouts))
        ]

    def __call__(self, x: Sequence[Any]) -> Any:
        for layer in self.layers:
            out = [n(x) for n in layer]
            x = out
        return x[0] if len(x) == 1 else x

    def parameters(self) -> list[Scalar]:
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


def run(
    label: str,
    build: Callable[[], tuple[Any, Callable[[float], Any]]],
    iters: int,
    gc_on: bool,
    xs: list[list[float]],
    ys: list[int],
) -> tuple[float, list[float], list[float]]:
    """Train from a fresh model for ``iters`` timed iterations after one untimed warm-up
    iteration; median seconds per iteration, all times, and the losses (warm-up's first)."""
    random.seed(1337)
    model, node = build()
    step = make_step(model, node, xs, ys)
    times, losses = [], []
    gc.collect()
    was = gc.isenabled()
    if not gc_on:
        gc.disable()
    try:
        for k in range(iters + 1):
            t0 = time.perf_counter()
            loss, _ = step(k)
            if k:  # iteration 0 warms up (both libraries' first iteration is atypical)
                times.append(time.perf_counter() - t0)
            losses.append(loss)
    finally:
        if was:
            gc.enable()
    del model, step
    gc.collect()
    med = statistics.median(times)
    print(
        f"  {label:<28} {med * 1e3:9.1f} ms/iter   (min {min(times) * 1e3:.1f}, "
        f"max {max(times) * 1e3:.1f}; final loss {losses[-1]:.6f})",
        flush=True,
    )
    return med, times, losses


def graphgrad_build() -> tuple[Any, Callable[[float], Any]]:
    return MLP(2, [16, 16, 1]), Scalar


def micrograd_build() -> tuple[Any, Callable[[float], Any]]:
    return MicroMLP(2, [16, 16, 1]), Value


# ---------------------------------------------------------------------------- the chain


def chain_graphgrad(n: int) -> tuple[float, float, float]:
    """y = x * c * c * ... (n multiplications: n nodes); forward and backward seconds."""
    x = Scalar(0.5, name="x")
    c = Scalar(1.0000001, name="c", requires_grad=False)
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
    return t1 - t0, t2 - t1, x.grad


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
        f"two-moons points, {iters} iterations each (median per iteration)"
    )
    gg_on, _, gg_loss = run("graphgrad Scalar, gc on", graphgrad_build, iters, True, xs, ys)
    gg_off, _, _ = run("graphgrad Scalar, gc off", graphgrad_build, iters, False, xs, ys)
    if MicroMLP is None:
        print("  micrograd is not installed (pip install micrograd): no comparison")
    else:
        mg_iters = max(2, iters // 4) if iters >= 2 else 1  # micrograd with gc: ~1.5 s each
        mg_on, _, mg_loss = run("micrograd, gc on", micrograd_build, mg_iters, True, xs, ys)
        mg_off, _, _ = run("micrograd, gc off", micrograd_build, iters, False, xs, ys)
        diff = max(abs(a - b) for a, b in zip(gg_loss, mg_loss, strict=False))
        print(
            f"  same losses: largest |graphgrad - micrograd| over {len(mg_loss)} iterations "
            f"= {diff:.3g}"
        )
        print("ratios (micrograd time / graphgrad time, per iteration):")
        print(f"  graphgrad gc on  vs micrograd gc on : {mg_on / gg_on:6.1f}x")
        print(f"  graphgrad gc on  vs micrograd gc off: {mg_off / gg_on:6.1f}x")
        print(f"  graphgrad gc off vs micrograd gc off: {mg_off / gg_off:6.1f}x")

    fwd, bwd, g = chain_graphgrad(chain_n)
    print(
        f"chain of {chain_n:,} scalar nodes: graphgrad forward {fwd:.2f} s, backward "
        f"{bwd:.2f} s (dy/dx = {g:.9f})"
    )
    if Value is not None:
        for depth in (500, 2000):
            print(f"  micrograd, chain of {depth:,}: {chain_micrograd(depth)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
