"""Toy data sets: shapes, balance, determinism, and one geometric property each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from graphgrad.data import blobs, circles, regression_1d, sine_1d, spiral, two_moons, xor

CLASSIFIERS: list[tuple[Callable[..., Any], dict[str, Any], int]] = [
    (two_moons, {}, 2),
    (circles, {}, 2),
    (xor, {}, 2),
    (blobs, {"centers": 4}, 4),
    (spiral, {"classes": 3}, 3),
]


@pytest.mark.parametrize(("fn", "kwargs", "k"), CLASSIFIERS)
@pytest.mark.parametrize("n", [101, 300])
def test_shapes_dtypes_balance(
    fn: Callable[..., Any], kwargs: dict[str, Any], k: int, n: int
) -> None:
    x, y = fn(n, rng=0, **kwargs)
    assert x.shape == (n, 2) and x.dtype == np.float64
    assert y.shape == (n,) and y.dtype == np.int64
    counts = np.bincount(y, minlength=k)
    assert len(counts) == k and counts.sum() == n and counts.max() - counts.min() <= 1
    assert np.isfinite(x).all()


@pytest.mark.parametrize(("fn", "kwargs", "k"), CLASSIFIERS)
def test_deterministic_for_seed_and_generator(
    fn: Callable[..., Any], kwargs: dict[str, Any], k: int
) -> None:
    x1, y1 = fn(64, rng=7, **kwargs)
    x2, y2 = fn(64, rng=np.random.default_rng(7), **kwargs)
    x3, _ = fn(64, rng=8, **kwargs)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)


@pytest.mark.parametrize(("fn", "kwargs", "k"), CLASSIFIERS)
def test_shuffle_false_orders_by_class(
    fn: Callable[..., Any], kwargs: dict[str, Any], k: int
) -> None:
    _, y = fn(30, rng=0, shuffle=False, **kwargs)
    assert (np.diff(y) >= 0).all()
    _, ys = fn(30, rng=0, **kwargs)
    assert not (np.diff(ys) >= 0).all()


def test_two_moons_on_their_circles() -> None:
    x, y = two_moons(200, noise=0.0, rng=0)
    r0 = np.hypot(x[y == 0, 0], x[y == 0, 1])
    r1 = np.hypot(x[y == 1, 0] - 1.0, x[y == 1, 1] - 0.5)
    np.testing.assert_allclose(r0, 1.0)
    np.testing.assert_allclose(r1, 1.0)
    assert (x[y == 0, 1] >= -1e-12).all() and (x[y == 1, 1] <= 0.5 + 1e-12).all()


def test_circles_radii_separate() -> None:
    x, y = circles(400, noise=0.05, factor=0.4, rng=1)
    r = np.hypot(x[:, 0], x[:, 1])
    threshold = (1 + 0.4) / 2
    assert r[y == 0].min() > threshold > r[y == 1].max()
    x0, y0 = circles(100, noise=0.0, factor=0.3, rng=0)
    r0 = np.hypot(x0[:, 0], x0[:, 1])
    np.testing.assert_allclose(r0[y0 == 0], 1.0)
    np.testing.assert_allclose(r0[y0 == 1], 0.3)


def test_xor_quadrants() -> None:
    x, y = xor(500, noise=0.0, rng=2)
    assert np.abs(x).max() <= 1.0
    np.testing.assert_array_equal(y, (x[:, 0] * x[:, 1] < 0).astype(np.int64))
    quadrants = set(zip(np.sign(x[:, 0]).tolist(), np.sign(x[:, 1]).tolist(), strict=True))
    assert quadrants == {(1.0, 1.0), (-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0)}


def test_blobs_means_near_centres() -> None:
    centres = np.array([[0.0, 0.0], [5.0, 5.0], [-5.0, 3.0]])
    x, y = blobs(3000, centers=centres, std=0.3, rng=3)
    for j, c in enumerate(centres):
        np.testing.assert_allclose(x[y == j].mean(axis=0), c, atol=0.05)
        np.testing.assert_allclose(x[y == j].std(axis=0), 0.3, atol=0.05)
    xk, _ = blobs(10, centers=5, std=0.0, rng=0, shuffle=False)
    np.testing.assert_allclose(np.hypot(xk[:, 0], xk[:, 1]), 3.0)


def test_spiral_arms_are_rotations() -> None:
    k, turns = 4, 0.75
    x, y = spiral(400, classes=k, noise=0.0, rng=0, turns=turns)
    r = np.hypot(x[:, 0], x[:, 1])
    assert r.max() <= 1.0 + 1e-12 and r.min() > 0
    angle = np.arctan2(x[:, 1], x[:, 0])
    expected = 2 * np.pi * y / k + 2 * np.pi * turns * r
    diff = np.angle(np.exp(1j * (angle - expected)))  # wrap to (-pi, pi]
    np.testing.assert_allclose(diff, 0.0, atol=1e-9)


def test_sine_and_regression_1d() -> None:
    x, y = sine_1d(200, rng=0, noise=0.0)
    assert x.shape == y.shape == (200, 1) and x.dtype == y.dtype == np.float64
    assert x.min() >= -np.pi and x.max() < np.pi
    np.testing.assert_allclose(y, np.sin(x))
    xn, yn = sine_1d(5000, rng=0, noise=0.1)
    assert abs(np.std(yn - np.sin(xn)) - 0.1) < 0.01
    a, b = sine_1d(10, rng=4), sine_1d(10, rng=4)
    np.testing.assert_array_equal(a[1], b[1])
    xq, yq = regression_1d(lambda t: t**2, 50, lo=2.0, hi=3.0, noise=0.0, rng=1)
    assert xq.min() >= 2.0 and xq.max() < 3.0
    np.testing.assert_allclose(yq, xq**2)
    _, y_col = regression_1d(lambda t: t[:, None], 7, rng=0)
    assert y_col.shape == (7, 1)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: two_moons(1, rng=0), "n must be an integer >= 2"),
        (lambda: two_moons(10, noise=-1.0, rng=0), "noise"),
        (lambda: circles(10, factor=1.5, rng=0), "factor"),
        (lambda: spiral(10, classes=1, rng=0), "classes"),
        (lambda: blobs(2, centers=3, rng=0), "n must be an integer >= 3"),
        (lambda: blobs(10, centers=np.zeros((3, 3)), rng=0), r"\(k, 2\)"),
        (lambda: regression_1d(lambda t: t[:3], 10, rng=0), "returned shape"),
        (lambda: regression_1d(np.sin, 10, lo=1.0, hi=0.0, rng=0), "lo < hi"),
        (lambda: xor(10, rng="seed"), "rng must be"),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments(call: Callable[[], object], match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        call()
