"""Small synthetic data sets: 2-D classification and 1-D regression.

Every function takes the number of points ``n`` and ``rng``, either a
``numpy.random.Generator`` or an int seed (the same seed gives the same data on every
machine). ``rng=None`` draws fresh entropy, so the data differ on each call.

Classifiers return ``(X, y)``: X float64 (n, 2), y int64 (n,), classes as equal in size as
``n`` allows (sizes differ by at most one), rows shuffled unless ``shuffle=False`` (then
class 0's points come first, then class 1's, ...). Regressions return ``(x, y)``, both
float64 (n, 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._state import as_generator

__all__ = ["blobs", "circles", "regression_1d", "sine_1d", "spiral", "two_moons", "xor"]

RngLike = np.random.Generator | int | None
Classification = tuple[NDArray[np.float64], NDArray[np.int64]]
Regression = tuple[NDArray[np.float64], NDArray[np.float64]]


def _check_n(fn: str, n: int, minimum: int = 1) -> None:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < minimum:
        raise ValueError(f"{fn}: n must be an integer >= {minimum}, got {n!r}")


def _check_nonneg(fn: str, name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{fn}: {name} must be a finite number >= 0, got {value!r}")


def _class_sizes(n: int, k: int) -> list[int]:
    """Split n into k sizes differing by at most one, the larger ones first."""
    return [n // k + (1 if j < n % k else 0) for j in range(k)]


def _finish(
    parts: list[NDArray[np.float64]], noise: float, gen: np.random.Generator, shuffle: bool
) -> Classification:
    """Stack per-class points, add Gaussian noise of std ``noise``, label, shuffle."""
    x = np.concatenate(parts).astype(np.float64, copy=False)
    y = np.concatenate([np.full(len(p), j, dtype=np.int64) for j, p in enumerate(parts)])
    if noise > 0:
        x = x + gen.normal(0.0, noise, size=x.shape)
    if shuffle:
        order = gen.permutation(len(y))
        x, y = x[order], y[order]
    return np.ascontiguousarray(x), y


def two_moons(
    n: int = 200, noise: float = 0.1, rng: RngLike = None, *, shuffle: bool = True
) -> Classification:
    """Two interleaved half circles.

    Class 0: the upper half of the unit circle, ``(cos t, sin t)`` for t in [0, pi]; class 1:
    the lower half of the unit circle centred at (1, 0.5), ``(1 - cos t, 0.5 - sin t)``;
    t evenly spaced. Then Gaussian noise of std ``noise`` on each coordinate.

    Returns:
        X float64 (n, 2), y int64 (n,) in {0, 1}.
    """
    _check_n("two_moons", n, 2)
    _check_nonneg("two_moons", "noise", noise)
    gen = as_generator(rng, "two_moons")
    n0, n1 = _class_sizes(n, 2)
    t0 = np.linspace(0.0, np.pi, n0)
    t1 = np.linspace(0.0, np.pi, n1)
    upper = np.stack([np.cos(t0), np.sin(t0)], axis=1)
    lower = np.stack([1.0 - np.cos(t1), 0.5 - np.sin(t1)], axis=1)
    return _finish([upper, lower], noise, gen, shuffle)


def circles(
    n: int = 200,
    noise: float = 0.05,
    factor: float = 0.5,
    rng: RngLike = None,
    *,
    shuffle: bool = True,
) -> Classification:
    """Two concentric circles: class 0 of radius 1, class 1 of radius ``factor``.

    Angles evenly spaced in [0, 2 pi); then Gaussian noise of std ``noise`` per coordinate.
    Without noise the classes are separated by the circle of radius (1 + factor) / 2.

    Returns:
        X float64 (n, 2), y int64 (n,) in {0, 1}.
    """
    _check_n("circles", n, 2)
    _check_nonneg("circles", "noise", noise)
    if not 0 < factor < 1:
        raise ValueError(
            f"circles: factor (inner radius / outer radius) must be in (0, 1), got {factor!r}"
        )
    gen = as_generator(rng, "circles")
    parts = []
    for size, radius in zip(_class_sizes(n, 2), (1.0, factor), strict=True):
        a = np.linspace(0.0, 2 * np.pi, size, endpoint=False)
        parts.append(radius * np.stack([np.cos(a), np.sin(a)], axis=1))
    return _finish(parts, noise, gen, shuffle)


def xor(
    n: int = 200, noise: float = 0.1, rng: RngLike = None, *, shuffle: bool = True
) -> Classification:
    """The XOR problem: points uniform in the square [-1, 1]^2, labelled by quadrant.

    Class 0: first and third quadrants (x0 * x1 > 0); class 1: second and fourth
    (x0 * x1 < 0). Gaussian noise of std ``noise`` is added after labelling, so with noise
    some points cross into the other class's quadrants.

    Returns:
        X float64 (n, 2), y int64 (n,) in {0, 1}.
    """
    _check_n("xor", n, 2)
    _check_nonneg("xor", "noise", noise)
    gen = as_generator(rng, "xor")
    parts = []
    for label, size in enumerate(_class_sizes(n, 2)):
        mag = gen.uniform(0.0, 1.0, size=(size, 2))
        s0 = gen.choice(np.array([-1.0, 1.0]), size=size)
        s1 = s0 if label == 0 else -s0
        parts.append(mag * np.stack([s0, s1], axis=1))
    return _finish(parts, noise, gen, shuffle)


def blobs(
    n: int = 200,
    centers: int | ArrayLike = 3,
    std: float = 0.5,
    rng: RngLike = None,
    *,
    shuffle: bool = True,
) -> Classification:
    """Isotropic Gaussian blobs, one class per centre.

    Args:
        centers: an int k for k centres evenly spaced on the circle of radius 3 (the first
            at (3, 0)), or a (k, 2) array of centres.
        std: standard deviation of every blob, per coordinate.

    Returns:
        X float64 (n, 2), y int64 (n,) in 0..k-1 (label j around centre j).
    """
    _check_nonneg("blobs", "std", std)
    if isinstance(centers, int | np.integer) and not isinstance(centers, bool):
        if centers < 1:
            raise ValueError(f"blobs: centers must be >= 1, got {centers}")
        angles = 2 * np.pi * np.arange(int(centers)) / int(centers)
        mu = 3.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    else:
        mu = np.asarray(centers, dtype=np.float64)
        if mu.ndim != 2 or mu.shape[1] != 2 or len(mu) < 1:
            raise ValueError(
                f"blobs: centers must be an int or a (k, 2) array, got shape {mu.shape}"
            )
        if not np.isfinite(mu).all():
            raise ValueError("blobs: centers must be finite (they hold NaN or inf)")
    k = len(mu)
    _check_n("blobs", n, k)
    gen = as_generator(rng, "blobs")
    parts = [np.broadcast_to(mu[j], (size, 2)) for j, size in enumerate(_class_sizes(n, k))]
    return _finish(parts, std, gen, shuffle)


def spiral(
    n: int = 300,
    classes: int = 3,
    noise: float = 0.2,
    rng: RngLike = None,
    *,
    turns: float = 0.75,
    shuffle: bool = True,
) -> Classification:
    """Interleaved spiral arms, one per class (the CS231n spiral, rotationally symmetric).

    Arm j has points at radius r evenly spaced in (0, 1] and angle
    ``2 pi j / classes + 2 pi turns r`` plus Gaussian noise of std ``noise`` (radians):
    point ``r (cos angle, sin angle)``. So the noise is along the arm's circle, and every
    point stays within the unit disc.

    Returns:
        X float64 (n, 2), y int64 (n,) in 0..classes-1.
    """
    if isinstance(classes, bool) or not isinstance(classes, int | np.integer) or classes < 2:
        raise ValueError(f"spiral: classes must be an integer >= 2, got {classes!r}")
    _check_n("spiral", n, int(classes))
    _check_nonneg("spiral", "noise", noise)
    if isinstance(turns, bool) or not isinstance(turns, int | float | np.integer | np.floating):
        raise TypeError(f"spiral: turns must be a number, got {type(turns).__name__} {turns!r}")
    if not math.isfinite(turns):
        raise ValueError(f"spiral: turns must be finite, got {turns!r}")
    gen = as_generator(rng, "spiral")
    parts = []
    for j, size in enumerate(_class_sizes(n, int(classes))):
        r = np.arange(1, size + 1) / size
        angle = 2 * np.pi * j / classes + 2 * np.pi * turns * r
        if noise > 0:
            angle = angle + gen.normal(0.0, noise, size=size)
        parts.append(r[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1))
    return _finish(parts, 0.0, gen, shuffle)


def regression_1d(
    fn: Callable[[NDArray[np.float64]], ArrayLike],
    n: int = 100,
    lo: float = -1.0,
    hi: float = 1.0,
    noise: float = 0.1,
    rng: RngLike = None,
) -> Regression:
    """Noisy samples of a function of one variable.

    x is uniform in [lo, hi) (in random order: sort with ``np.argsort`` to plot a curve);
    ``y = fn(x) + noise * N(0, 1)``.

    Args:
        fn: a vectorised function, called once with x of shape (n,); must return n values
            (shape (n,) or (n, 1)).

    Returns:
        x float64 (n, 1), y float64 (n, 1).
    """
    _check_n("regression_1d", n)
    _check_nonneg("regression_1d", "noise", noise)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"regression_1d: need finite lo < hi, got lo={lo!r}, hi={hi!r}")
    gen = as_generator(rng, "regression_1d")
    x = gen.uniform(lo, hi, size=n)
    fx = np.asarray(fn(x), dtype=np.float64)
    if fx.shape not in ((n,), (n, 1)):
        name = getattr(fn, "__name__", repr(fn))
        raise ValueError(
            f"regression_1d: fn {name} returned shape {fx.shape} for x of shape ({n},); "
            f"expected ({n},) or ({n}, 1)"
        )
    y = fx.reshape(n)
    if noise > 0:
        y = y + gen.normal(0.0, noise, size=n)
    return x.reshape(n, 1), y.reshape(n, 1)


def sine_1d(n: int = 100, rng: RngLike = None, noise: float = 0.1) -> Regression:
    """``y = sin(x) + noise * N(0, 1)`` with x uniform in [-pi, pi).

    Returns:
        x float64 (n, 1), y float64 (n, 1).
    """
    return regression_1d(np.sin, n, -np.pi, np.pi, noise, rng)
