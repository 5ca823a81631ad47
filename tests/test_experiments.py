"""The lecture's experiments, on small sizes: init study, 1-D universal approximation,
numerical vs analytic gradients and the ε sweep, the raw-pixels table, the example scripts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from graphgrad import nn
from graphgrad.experiments import init_study, verdict, write_init_study
from graphgrad.experiments.gradients import eps_sweep, numerical_vs_analytic, sweep_table
from graphgrad.experiments.raw_pixels import raw_pixels, table
from graphgrad.experiments.universal import count_kinks_on_grid, kinks, universal_approximation
from test_train import write_fake_fashion_mnist

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_init_study_shows_vanishing_preserved_exploding(activation: str) -> None:
    r = init_study(depth=20, width=64, activation=activation, samples=64,
                   rng=np.random.default_rng(0))  # fmt: skip
    small, right, large = r["runs"]
    assert [x["label"] for x in r["runs"]] == ["too small", "right", "too large"]
    a, g = small["activation_std"], small["gradient_std"]
    assert verdict(a[0], a[-1]) == "vanishing" and verdict(g[-1], g[0]) == "vanishing"
    a, g = right["activation_std"], right["gradient_std"]
    assert verdict(a[0], a[-1]) == "preserved" and verdict(g[-1], g[0]) == "preserved"
    n_layers = len(a)
    a, g = large["activation_std"], large["gradient_std"]
    assert g[0] > 10 * g[-1]  # gradients grow towards the input
    if activation == "relu":
        assert verdict(a[0], a[-1]) == "exploding" and verdict(g[-1], g[0]) == "exploding"
    else:  # tanh saturates: the forward signal stays bounded
        assert max(a) <= 1.0
    assert n_layers == 20 and right["sigma"] == pytest.approx(
        (np.sqrt(2) if activation == "relu" else 1.0) / 8
    )


def test_write_init_study(tmp_path: Path) -> None:
    r = init_study(depth=4, width=8, samples=8)
    paths = write_init_study(r, tmp_path)
    assert [p.name for p in paths] == ["init_study_relu.png", "init_study_relu.md"]
    assert "graphgrad init-study" in paths[1].read_text()


@pytest.mark.parametrize("spec", ["leaky_relu:nan", "elu:inf", "leaky_relu:-5", "elu:1e4"])
def test_init_study_refuses_an_activation_parameter_training_refuses(spec: str) -> None:
    with pytest.raises(ValueError, match=r"parameter must be a finite number in \[0, 1e3\]"):
        init_study(depth=2, width=4, activation=spec, samples=4)
    assert init_study(depth=2, width=4, activation="leaky_relu:0.2", samples=4)["runs"]


def test_kinks_of_a_hand_made_net() -> None:
    """f(x) = relu(x - 1) - 2 relu(-x - 0.5) + 0·relu(x) has kinks at 1 and -0.5 only."""
    m = nn.MLP(1, [3], 1, rng=np.random.default_rng(0), dtype=np.float64)
    first, second = m.linear_layers()
    first.weight.data[:, 0] = [1.0, -1.0, 1.0]
    assert first.bias is not None and second.bias is not None
    first.bias.data[:] = [-1.0, -0.5, 0.0]
    second.weight.data[0] = [1.0, -2.0, 0.0]
    np.testing.assert_allclose(kinks(m, -3, 3), [-0.5, 1.0])
    assert kinks(m, 0, 3).tolist() == [1.0]
    grid = np.linspace(-3, 3, 6001)
    assert count_kinks_on_grid(grid, m(grid[:, None]).data[:, 0]) == 2


def test_universal_approximation_has_at_most_h_kinks() -> None:
    res = universal_approximation(hidden=(3, 6), samples=50, steps=200,
                                  rng=np.random.default_rng(1))  # fmt: skip
    for r in res:
        assert r["num_kinks"] <= r["hidden"]
        assert r["grid_kinks"] <= r["num_kinks"]
        assert np.isfinite(r["rmse"])
        assert r["fit"].shape == r["x_grid"].shape


def test_numerical_vs_analytic_costs_and_agreement() -> None:
    r = numerical_vs_analytic(hidden=(2,), samples=4)
    dim = 784 * 2 + 2 + 2 * 10 + 10
    assert r["parameters"] == dim
    assert r["forward"]["evaluations"] == dim + 1 == r["forward"]["expected_evaluations"]
    assert r["central"]["evaluations"] == 2 * dim == r["central"]["expected_evaluations"]
    assert r["central"]["rel_error"] < 1e-6
    assert r["forward"]["rel_error"] < 1e-3
    assert r["analytic"]["evaluations"] == 1


def test_eps_sweep_truncation_and_round_off() -> None:
    eps = (1e-2, 1e-4, 1e-6, 1e-9, 1e-12)
    r = eps_sweep(eps_values=eps, hidden=(4,), samples=8, coordinates=30)
    e = r["errors"]
    assert set(e) == {"float32/forward", "float32/central", "float64/forward", "float64/central"}
    assert min(e["float64/central"]) < 1e-7  # float64 central differences are very accurate
    assert e["float64/central"][-1] > 100 * min(e["float64/central"])  # round-off at 1e-12
    assert e["float32/forward"][-1] == pytest.approx(1.0)  # θ + 1e-12 == θ in float32
    assert min(e["float32/central"]) > 1e-5  # float32 never gets close
    assert "| 1e-04 |" in sweep_table(r)


def test_raw_pixels_table(tmp_path: Path) -> None:
    root = write_fake_fashion_mnist(tmp_path / "data", n_train=100, n_test=30)
    rows = raw_pixels(
        ["fashion-mnist", "cifar10"], models={"linear": (), "tiny": (8,)}, epochs=1,
        root=str(root),
    )  # fmt: skip
    assert [r.get("model") for r in rows] == ["linear", "tiny", None]
    assert rows[0]["parameters"] == 7850 and 0 <= rows[1]["test_accuracy"] <= 1
    assert "CIFAR-10 files not found" in rows[2]["missing"]
    text = table(rows)
    assert "| cifar10 | (files not present)" in text and "| fashion-mnist | linear | 7,850" in text


def test_example_script_runs(tmp_path: Path) -> None:
    script = ROOT / "examples" / "universal_approximation.py"
    out = subprocess.run(
        [sys.executable, str(script), "--hidden", "2,3", "--steps", "20", "--out", str(tmp_path)],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    assert "| 3 |" in out.stdout
    assert (tmp_path / "universal_approximation.png").is_file()
    assert (tmp_path / "universal_approximation.md").is_file()
