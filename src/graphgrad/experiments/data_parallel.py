"""The lecture's last claim, shown: ∇H(θ) computed in parallel for all samples s.

The gradient of the mean loss L(θ) = (1/S) Σ_s H_s(θ) can be computed four ways that must
agree to float rounding:

(a) ``sample_by_sample``: S forward and backward passes, one sample each, averaged;
(b) ``batched``: one forward and backward pass over the whole (S, D) batch (what training
    does: the sum over s happens inside the matrix products);
(c) ``per_sample_mean``: the S per-sample gradients from :func:`graphgrad.per_sample_grads`
    (one pass, outer products g_s x_s^T), then their mean;
(d) data parallel: N processes take S/N samples each and one MPI Allreduce sums their
    weighted gradients (:func:`graphgrad.distributed.data_parallel_grads`).

(a)-(c) run in one process here; ``examples/data_parallel.py`` adds (d) under ``mpiexec``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..nn.module import Module
from ..per_sample import per_sample_grads
from ..tensor import Tensor

__all__ = ["batched", "max_rel_diff", "per_sample_mean", "sample_by_sample", "timed"]

LossFn = Callable[[Tensor, Any], Tensor]
Grads = dict[str, np.ndarray]


def _grads(model: Module) -> Grads:
    out = {}
    for name, p in model.named_parameters():
        out[name] = np.zeros_like(p.data) if p.grad is None else np.array(p.grad)
    return out


def sample_by_sample(model: Module, loss_fn: LossFn, x: np.ndarray, y: Any) -> Grads:
    """(a) The mean of S gradients, each from a forward and backward pass on one sample."""
    total = {name: np.zeros_like(p.data) for name, p in model.named_parameters()}
    for s in range(len(x)):
        model.zero_grad()
        loss_fn(model(x[s : s + 1]), y[s : s + 1]).backward()
        for name, g in _grads(model).items():
            total[name] += g
    model.zero_grad()
    return {name: g / len(x) for name, g in total.items()}


def batched(model: Module, loss_fn: LossFn, x: np.ndarray, y: Any) -> Grads:
    """(b) The gradient of the mean loss from one forward and backward pass over the batch."""
    model.zero_grad()
    loss_fn(model(x), y).backward()
    out = _grads(model)
    model.zero_grad()
    return out


def per_sample_mean(model: Module, loss_fn: LossFn, x: np.ndarray, y: Any) -> Grads:
    """(c) The mean over s of the per-sample gradients ∇H_s (one vectorised pass)."""
    return {n: g.mean(axis=0) for n, g in per_sample_grads(model, loss_fn, x, y).items()}


def max_rel_diff(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    """max over parameters of ‖a − b‖_∞ / max(‖b‖_∞, tiny): 0 for equal gradients."""
    worst = 0.0
    for name, gb in b.items():
        scale = max(float(np.max(np.abs(gb))), np.finfo(np.float64).tiny)
        worst = max(worst, float(np.max(np.abs(np.asarray(a[name]) - gb))) / scale)
    return worst


def timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[Any, float]:
    """(fn's result, the fastest of ``repeat`` wall-clock times in seconds)."""
    best, result = float("inf"), None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return result, best
