"""Universal approximation in 1-D: a 1-hidden-layer ReLU net is piecewise linear, ≤ H kinks.

With D = 1 input and H hidden ReLU units the net is

    f(x) = Σ_h v_h · max(0, w_h x + b_h) + c,

a sum of H hinges. Unit h changes the slope by v_h·|w_h| at x_h = −b_h / w_h and nowhere
else, so f is piecewise linear with at most H kinks (fewer when kinks fall outside the
domain, coincide, or a unit is dead). We fit such nets to samples of a smooth target, count
the kinks from the weights, and check the count against the slope changes of f on a grid.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..nn.layers import MLP, Linear
from ..optim import Adam
from ..tensor import mse_loss

__all__ = ["count_kinks_on_grid", "kinks", "table", "target", "universal_approximation"]


def target(x: np.ndarray) -> np.ndarray:
    """The default target: sin(2x) + 0.3 x on [−π, π]."""
    return np.sin(2.0 * x) + 0.3 * x


def kinks(model: MLP, lo: float, hi: float, tol: float = 1e-6) -> np.ndarray:
    """x positions in (lo, hi) where the 1-hidden-layer ReLU net ``model`` changes slope.

    Unit h contributes a kink at −b_h/w_h when w_h ≠ 0 and its slope change v_h·|w_h| is not
    negligible (> ``tol`` times the largest); units with the same position count once.
    """
    first, second = model.linear_layers()
    assert isinstance(first, Linear) and isinstance(second, Linear)
    w = first.weight.data[:, 0].astype(np.float64)
    b = (first.bias.data if first.bias is not None else np.zeros_like(w)).astype(np.float64)
    v = second.weight.data[0].astype(np.float64)
    change = np.abs(v * w)
    live = (w != 0) & (change > tol * max(float(change.max(initial=0.0)), 1e-300))
    xs = -b[live] / w[live]
    xs = np.sort(xs[(xs > lo) & (xs < hi)])
    if xs.size:
        keep = np.concatenate([[True], np.diff(xs) > 1e-9 * (hi - lo)])
        xs = xs[keep]
    return xs


def count_kinks_on_grid(x: np.ndarray, y: np.ndarray, rel_tol: float = 1e-6) -> int:
    """Slope changes of the piecewise-linear samples y(x) on a fine grid.

    A kink inside a grid cell changes the slope of that cell against both neighbours (two
    adjacent second differences); one on a grid point changes it once: runs of consecutive
    slope changes count as one kink.
    """
    slopes = np.diff(y) / np.diff(x)
    jumps = np.abs(np.diff(slopes)) > rel_tol * max(float(np.abs(slopes).max()), 1e-300)
    starts = jumps & ~np.concatenate([[False], jumps[:-1]])
    return int(starts.sum())


def universal_approximation(
    hidden: Sequence[int] = (2, 4, 8, 32),
    fn: Callable[[np.ndarray], np.ndarray] = target,
    samples: int = 200,
    lo: float = -np.pi,
    hi: float = np.pi,
    steps: int = 4000,
    lr: float = 0.01,
    rng: np.random.Generator | None = None,
) -> list[dict[str, Any]]:
    """Fit a 1-H-1 ReLU net for each H to ``samples`` points of ``fn`` (full-batch Adam,
    mean squared error, float64) and count its kinks.

    Returns:
        One dict per H: ``hidden, num_kinks, kinks, grid_kinks`` (the count from the grid),
        ``rmse`` (on the grid), ``seconds``, and for plotting ``x_grid, target, fit,
        x_train, y_train``.
    """
    from ..data import regression_1d

    gen = rng if rng is not None else np.random.default_rng(0)
    x, y = regression_1d(fn, samples, lo, hi, noise=0.0, rng=gen)
    grid = np.linspace(lo, hi, 20001)
    results = []
    for h in hidden:
        model = MLP(1, [h], 1, "relu", rng=gen, dtype=np.float64)
        first = model.linear_layers()[0]
        assert first.bias is not None
        first.bias.data[:] = -first.weight.data[:, 0] * np.linspace(lo, hi, h + 2)[1:-1]
        opt = Adam(model.parameters(), lr=lr)
        t0 = time.perf_counter()
        for _ in range(steps):
            opt.zero_grad()
            mse_loss(model(x), y).backward()
            opt.step()
        seconds = time.perf_counter() - t0
        fit = model(grid[:, None]).data[:, 0]
        ks = kinks(model, lo, hi)
        results.append(
            {
                "hidden": h,
                "num_kinks": int(ks.size),
                "kinks": ks.tolist(),
                "grid_kinks": count_kinks_on_grid(grid, fit),
                "rmse": float(np.sqrt(np.mean((fit - fn(grid)) ** 2))),
                "seconds": seconds,
                "x_grid": grid,
                "target": fn(grid),
                "fit": fit,
                "x_train": x[:, 0],
                "y_train": y[:, 0],
            }
        )
    return results


def table(results: Sequence[dict[str, Any]]) -> str:
    """A markdown table: H, kinks from the weights, kinks seen on the grid, RMSE."""
    lines = [
        "| H | kinks (from the weights) | slope changes on a 20,001-point grid | RMSE |",
        "|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['hidden']} | {r['num_kinks']} | {r['grid_kinks']} | {r['rmse']:.4f} |"
        for r in results
    ]
    return "\n".join(lines)
