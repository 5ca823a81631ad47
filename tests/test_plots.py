"""Every ``plot_*`` function returns its matplotlib Figure (what a notebook shows) and writes a
PNG only when given a path."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.figure import Figure

from graphgrad import plots


def _args() -> dict[str, tuple[Any, ...]]:
    rng = np.random.default_rng(0)
    history = [
        {"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 0.5 + 0.1 * e, "eval_loss": 1.1 / e,
         "eval_accuracy": 0.5 + 0.09 * e, "eval_split": "val"}
        for e in (1, 2, 3)
    ]  # fmt: skip
    run = {"label": "He", "sigma": 0.5, "activation_std": [1.0, 0.9], "gradient_std": [0.1, 0.2]}
    x = np.linspace(-1, 1, 20)
    fit = {"hidden": 2, "x_grid": x, "target": x**2, "fit": np.abs(x), "x_train": x,
           "y_train": x**2, "kinks": np.array([0.0]), "num_kinks": 1}  # fmt: skip
    return {
        "plot_history": (history,),
        "plot_confusion_matrix": (np.array([[3, 1], [0, 4]]), ["a", "b"]),
        "plot_first_layer": (rng.standard_normal((4, 36)),),  # 6 x 6 images
        "plot_init_study": (
            {"runs": [run], "depth": 2, "width": 8, "activation": "relu", "samples": 10},
        ),
        "plot_universal_approximation": ([fit],),
        "plot_eps_sweep": (
            {
                "eps": [1e-3, 1e-6],
                "errors": {"float64/central": [1e-6, 1e-9], "float32/forward": [1e-2, 1e-1]},
            },
        ),
    }


def test_every_plot_function_is_covered() -> None:
    assert set(plots.__all__) == set(_args())
    for name in plots.__all__:
        sig = inspect.signature(getattr(plots, name))
        assert sig.parameters["path"].default is None, name


@pytest.mark.parametrize("name", sorted(_args()))
def test_plot_returns_the_figure_and_writes_only_with_a_path(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    fn = getattr(plots, name)
    args = _args()[name]
    fig = fn(*args, image_shape=(6, 6)) if name == "plot_first_layer" else fn(*args)
    assert isinstance(fig, Figure) and fig.axes
    assert list(tmp_path.iterdir()) == []  # nothing written
    out = tmp_path / "fig.png"
    kwargs = {"image_shape": (6, 6)} if name == "plot_first_layer" else {}
    assert isinstance(fn(*args, path=out, **kwargs), Figure)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
