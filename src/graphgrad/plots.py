"""Figures for training runs and the lecture's experiments.

Every ``plot_*`` function returns the matplotlib ``Figure`` (a notebook shows it when it is
the cell's value) and writes it as a PNG only when given a ``path`` (atomically).

matplotlib is optional (``pip install 'graphgrad[train]'``) and imported only here, inside the
functions. Figures are drawn on the Agg canvas directly (no pyplot, no global backend change).
Every function takes plain data (lists and arrays), not models.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._atomic import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "plot_confusion_matrix",
    "plot_eps_sweep",
    "plot_first_layer",
    "plot_history",
    "plot_init_study",
    "plot_universal_approximation",
]


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - only without the extra
        raise ImportError("plots need matplotlib: pip install 'graphgrad[train]'") from None
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _finish(fig: Figure, path: str | os.PathLike[str] | None) -> Figure:
    """Write ``fig`` as a PNG to ``path`` (atomically) when one is given; return it."""
    if path is not None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
        atomic_write_bytes(path, buf.getvalue())
    return fig


def plot_history(
    history: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str] | None = None,
    title: str = "",
) -> Figure:
    """Loss and accuracy per epoch, training and evaluation split, side by side.

    Args:
        history: one dict per epoch with ``epoch``, ``train_loss``, ``train_accuracy`` and,
            if evaluated, ``eval_loss``, ``eval_accuracy`` (and ``eval_split``).
        path: the PNG to write; none is written without one.
    """
    fig = _figure(10, 4)
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    split = next((h.get("eval_split") for h in history if h.get("eval_split")), "eval")
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy (%)")):
        scale = 100.0 if key == "accuracy" else 1.0
        ax.plot(epochs, [h[f"train_{key}"] * scale for h in history], "o-", label="train")
        ev = [
            (h["epoch"], h[f"eval_{key}"] * scale)
            for h in history
            if h.get(f"eval_{key}") is not None
        ]
        if ev:
            ax.plot(*zip(*ev, strict=True), "s-", label=str(split))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def plot_confusion_matrix(
    matrix: np.ndarray,
    classes: Sequence[str],
    path: str | os.PathLike[str] | None = None,
    title: str = "",
) -> Figure:
    """A T x T confusion matrix (rows: true class, columns: predicted), counts in the cells."""
    cm = np.asarray(matrix)
    t = cm.shape[0]
    fig = _figure(1.0 + 0.6 * t, 0.6 + 0.55 * t)
    ax = fig.subplots()
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(t):
        for j in range(t):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                    color="white" if frac[i, j] > 0.5 else "black")  # fmt: skip
    ax.set_xticks(range(t), list(classes), rotation=45, ha="right")
    ax.set_yticks(range(t), list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, label="fraction of the true class")
    if title:
        ax.set_title(title)
    return _finish(fig, path)


def plot_first_layer(
    weight: np.ndarray,
    path: str | os.PathLike[str] | None = None,
    image_shape: tuple[int, ...] = (28, 28),
    max_units: int = 64,
    title: str = "",
    labels: Sequence[str] | None = None,
) -> Figure:
    """The first layer's weight rows w_h (one per unit) shown as images.

    Args:
        weight: (H, D) with D = prod(image_shape); for colour images (3, 32, 32) in CHW order.
        image_shape: (height, width) or (channels, height, width).
        max_units: show at most this many units (the first ones).
        labels: a title per unit (e.g. the class names of a linear classifier's templates).
    """
    w = np.asarray(weight, dtype=np.float64)[:max_units]
    n = len(w)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig = _figure(1.2 * cols, 1.2 * rows + (0.4 if title else 0))
    axes = np.atleast_1d(fig.subplots(rows, cols)).reshape(-1)
    for k, ax in enumerate(axes):
        ax.set_axis_off()
        if k >= n:
            continue
        if labels is not None and k < len(labels):
            ax.set_title(labels[k], fontsize=8)
        if len(image_shape) == 3:  # colour: rescale each unit to [0, 1], HWC for imshow
            img = w[k].reshape(image_shape).transpose(1, 2, 0)
            lo, hi = img.min(), img.max()
            ax.imshow((img - lo) / (hi - lo + 1e-12))
        else:
            lim = float(np.abs(w[k]).max()) or 1.0
            ax.imshow(w[k].reshape(image_shape), cmap="RdBu_r", vmin=-lim, vmax=lim)
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def plot_init_study(
    result: Mapping[str, Any],
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Standard deviation of activations (left) and of gradients (right) per layer, log scale,
    one line per σ setting. ``result`` is what :func:`graphgrad.experiments.init_study` returns."""
    fig = _figure(11, 4.2)
    ax_a, ax_g = fig.subplots(1, 2)
    for run in result["runs"]:
        layers = np.arange(1, len(run["activation_std"]) + 1)
        label = f"{run['label']} (σ = {run['sigma']:.3g})"
        ax_a.semilogy(layers, run["activation_std"], label=label)
        ax_g.semilogy(layers, run["gradient_std"], label=label)
    ax_a.set_title("forward: std of the activations o_l")
    ax_g.set_title("backward: std of dL/do_l")
    for ax in (ax_a, ax_g):
        ax.set_xlabel("layer l")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(
        f"{result['depth']} layers of {result['width']} {result['activation']} units, "
        f"S = {result['samples']} samples"
    )
    return _finish(fig, path)


def plot_universal_approximation(
    fits: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """One panel per H: the target, the training points, the net's fit and its kinks.

    Each entry has ``hidden``, ``x_grid``, ``target``, ``fit``, ``x_train``, ``y_train``,
    ``kinks`` (x positions) and ``num_kinks``.
    """
    n = len(fits)
    fig = _figure(3.6 * n, 3.4)
    axes = np.atleast_1d(fig.subplots(1, n))
    for ax, f in zip(axes, fits, strict=True):
        ax.plot(f["x_train"], f["y_train"], ".", color="0.7", ms=3, label="samples")
        ax.plot(f["x_grid"], f["target"], "--", color="0.3", lw=1, label="target")
        ax.plot(f["x_grid"], f["fit"], color="C3", lw=1.5, label="ReLU net")
        kx = np.asarray(f["kinks"])
        if kx.size:
            ky = np.interp(kx, f["x_grid"], f["fit"])
            ax.plot(kx, ky, "o", color="C0", ms=4, label="kinks")
        ax.set_title(f"H = {f['hidden']}: {f['num_kinks']} kinks (≤ H)")
        ax.set_xlabel("x")
    axes[0].legend(fontsize=7)
    return _finish(fig, path)


def plot_eps_sweep(
    result: Mapping[str, Any],
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Error of forward and central differences vs ε, in float32 and float64, log-log.

    ``result`` is what :func:`graphgrad.experiments.eps_sweep` returns: ``eps`` and, per
    ``"<dtype>/<method>"``, the relative error at each ε.
    """
    fig = _figure(6.5, 4.5)
    ax = fig.subplots()
    eps = np.asarray(result["eps"])
    styles = {"forward": "o-", "central": "s-"}
    colors = {"float32": "C0", "float64": "C3"}
    for key, errs in result["errors"].items():
        dtype, method = key.split("/")
        ax.loglog(eps, errs, styles[method], color=colors[dtype], label=f"{method}, {dtype}",
                  alpha=0.9 if method == "central" else 0.6)  # fmt: skip
    ax.set_xlabel("ε")
    ax.set_ylabel("relative error vs the analytic gradient")
    ax.set_title("finite differences: round-off (small ε) vs truncation (large ε)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return _finish(fig, path)
