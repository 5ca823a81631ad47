"""Numerical vs analytic gradients of a real MLP: agreement, cost, and the choice of ε.

The lecture's two finite differences for ∂L/∂θ_p:

    forward:  (L(θ + ε·1_p) − L(θ)) / ε                 dim(θ) + 1 evaluations of L
    central:  (L(θ + ε·1_p) − L(θ − ε·1_p)) / (2ε)      2·dim(θ) evaluations of L

against backpropagation, which gets all dim(θ) partial derivatives from one forward and one
backward pass. :func:`numerical_vs_analytic` counts the evaluations and times all three on
an MLP and a batch of images; :func:`eps_sweep` measures the error of both differences for
ε = 1e-1 ... 1e-12 in float32 and float64: large ε, truncation error (O(ε) forward, O(ε²)
central); small ε, round-off error (≈ machine-ε · |L| / ε).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._state import no_grad
from ..gradcheck import numerical_grad
from ..nn.layers import MLP
from ..tensor import Tensor, cross_entropy

#: ε = 1e-1, 1e-2, ..., 1e-12.
EPS_VALUES = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10, 1e-11, 1e-12)

__all__ = ["EPS_VALUES", "default_batch", "eps_sweep", "numerical_vs_analytic", "sweep_table"]


def default_batch(samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """``samples`` Fashion-MNIST test images (float64 (S, 784) in [0, 1]) and labels, or
    random inputs of the same shape when the files are not installed; plus a description."""
    from ..data import DatasetNotFoundError, FashionMNIST

    gen = np.random.default_rng(seed)
    try:
        ds = FashionMNIST(train=False)
        idx = gen.choice(len(ds), samples, replace=False)
        x = ds.images[idx].reshape(samples, -1).astype(np.float64) / 255.0
        return x, ds.labels[idx], f"{samples} Fashion-MNIST test images"
    except DatasetNotFoundError:
        x = gen.uniform(0.0, 1.0, (samples, 784))
        return x, gen.integers(0, 10, samples), f"{samples} random 784-pixel inputs"


def _model(hidden: Sequence[int], seed: int, dtype: Any) -> MLP:
    return MLP(784, list(hidden), 10, "relu", rng=np.random.default_rng(seed), dtype=dtype)


def numerical_vs_analytic(
    hidden: Sequence[int] = (32,),
    samples: int = 32,
    eps: float = 1e-6,
    seed: int = 0,
) -> dict[str, Any]:
    """Backprop vs forward and central differences on a float64 MLP 784-hidden-10.

    Returns:
        ``architecture, parameters`` (dim θ), ``data``, per method (``analytic``,
        ``forward``, ``central``): ``evaluations`` of L (counted), ``seconds``, and for the
        numerical ones ``max_abs_error`` and ``rel_error`` (‖num − analytic‖ / ‖analytic‖).
    """
    x, y, desc = default_batch(samples, seed)
    model = _model(hidden, seed, np.float64)
    params = model.parameters()
    dim = model.num_parameters()

    t0 = time.perf_counter()
    model.zero_grad()
    cross_entropy(model(x), y).backward()
    t_analytic = time.perf_counter() - t0
    analytic = np.concatenate([p.grad.reshape(-1) for p in params])

    calls = {"n": 0}
    originals = [p.data for p in params]

    def loss(*ts: Tensor) -> Tensor:
        calls["n"] += 1
        for p, t in zip(params, ts, strict=True):
            p.data = t.data
        return cross_entropy(model(x), y)

    out: dict[str, Any] = {
        "architecture": "-".join(map(str, model.sizes)) + " relu, float64",
        "parameters": dim,
        "data": desc,
        "eps": eps,
        "analytic": {"evaluations": 1, "backward_passes": 1, "seconds": t_analytic},
    }
    try:
        for method in ("forward", "central"):
            calls["n"] = 0
            t0 = time.perf_counter()
            grads = numerical_grad(loss, [o.copy() for o in originals], eps=eps, method=method)
            seconds = time.perf_counter() - t0
            num = np.concatenate([g.reshape(-1) for g in grads])
            out[method] = {
                "evaluations": calls["n"],
                "expected_evaluations": dim + 1 if method == "forward" else 2 * dim,
                "seconds": seconds,
                "max_abs_error": float(np.max(np.abs(num - analytic))),
                "rel_error": float(np.linalg.norm(num - analytic) / np.linalg.norm(analytic)),
            }
    finally:
        for p, o in zip(params, originals, strict=True):
            p.data = o
    return out


def eps_sweep(
    eps_values: Sequence[float] = EPS_VALUES,
    hidden: Sequence[int] = (32,),
    samples: int = 32,
    coordinates: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Relative error of forward and central differences against backprop, for each ε,
    with parameters and arithmetic in float32 and in float64.

    The same network (weights drawn in float64, rounded to float32 for the float32 runs) and
    the same ``coordinates`` randomly chosen parameters θ_p are used throughout; the
    reference is the float64 analytic gradient at those coordinates.

    Returns:
        ``eps`` (the list), ``errors``: ``{"float32/forward": [...], ...}`` (‖num − ref‖ /
        ‖ref‖ over the sampled coordinates, one value per ε), ``best`` (per key, the ε with
        the smallest error and that error), ``parameters``, ``coordinates``, ``data``.
    """
    x64, y, desc = default_batch(samples, seed)
    ref_model = _model(hidden, seed, np.float64)
    ref_model.zero_grad()
    cross_entropy(ref_model(x64), y).backward()
    params64 = ref_model.parameters()
    sizes = [p.data.size for p in params64]
    offsets = np.cumsum([0, *sizes])
    gen = np.random.default_rng([seed, 7])
    picks = np.sort(gen.choice(offsets[-1], size=min(coordinates, offsets[-1]), replace=False))
    where: list[tuple[int, int]] = []  # (parameter index, flat index inside it)
    for k in picks:
        i = int(np.searchsorted(offsets, k, side="right") - 1)
        where.append((i, int(k) - int(offsets[i])))
    ref = np.array([params64[i].grad.reshape(-1)[j] for i, j in where])

    errors: dict[str, list[float]] = {}
    for dtype in (np.float32, np.float64):
        model = _model(hidden, seed, np.float64)
        for p, q in zip(model.parameters(), params64, strict=True):
            p.data = q.data.astype(dtype)
        x = x64.astype(dtype)
        params = model.parameters()

        def L(model: MLP = model, x: np.ndarray = x) -> float:
            with no_grad():
                return float(cross_entropy(model(x), y).data)

        base = L()
        name = np.dtype(dtype).name
        for method in ("forward", "central"):
            errs = []
            for eps in eps_values:
                num = np.empty(len(where))
                for n, (i, j) in enumerate(where):
                    flat = params[i].data.reshape(-1)
                    old = flat[j]
                    flat[j] = old + dtype(eps)
                    plus = L()
                    if method == "central":
                        flat[j] = old - dtype(eps)
                        num[n] = (plus - L()) / (2 * eps)
                    else:
                        num[n] = (plus - base) / eps
                    flat[j] = old
                errs.append(float(np.linalg.norm(num - ref) / np.linalg.norm(ref)))
            errors[f"{name}/{method}"] = errs
    best = {
        k: {"eps": float(eps_values[int(np.argmin(v))]), "error": float(np.min(v))}
        for k, v in errors.items()
    }
    return {
        "eps": [float(e) for e in eps_values],
        "errors": errors,
        "best": best,
        "parameters": int(offsets[-1]),
        "coordinates": len(where),
        "data": desc,
        "architecture": "-".join(map(str, ref_model.sizes)) + " relu",
    }


def sweep_table(result: dict[str, Any]) -> str:
    """Markdown: one row per ε, one column per dtype/method."""
    keys = list(result["errors"])
    lines = ["| ε | " + " | ".join(keys) + " |", "|---:|" + "---:|" * len(keys)]
    for n, eps in enumerate(result["eps"]):
        cells = " | ".join(f"{result['errors'][k][n]:.2e}" for k in keys)
        lines.append(f"| {eps:.0e} | {cells} |")
    return "\n".join(lines)
