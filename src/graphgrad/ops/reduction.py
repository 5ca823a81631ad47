"""Reductions over axes: sum, mean, max, min, logsumexp.

``axis`` arrives normalised by the front end: ``None`` (all axes) or a sorted tuple of
non-negative ints. ``_kd`` gives the shape the output would have with ``keepdims=True``, so
each rule reshapes ``g`` to it and lets broadcasting spread it back over the reduced axes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._backend import NUMPY, namespace_of
from ._registry import defop

_ND = np.ndarray  # the NumPy fast path of every forward: ``type(x) is _ND``


def _kd(shape: tuple[int, ...], axis: tuple[int, ...] | None) -> tuple[int, ...]:
    if axis is None:
        return (1,) * len(shape)
    return tuple(1 if i in axis else n for i, n in enumerate(shape))


def _count(shape: tuple[int, ...], axis: tuple[int, ...] | None) -> int:
    if axis is None:
        return int(np.prod(shape, dtype=np.int64))
    return int(np.prod([shape[i] for i in axis], dtype=np.int64))


def _sum_vjp(xp: Any, g: Any, ans: Any, x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    shape = xp.raw(x).shape
    return xp.broadcast_to(xp.reshape(g, _kd(shape, axis)), shape)


@defop("sum", ("x",), "sum_i x_i", ("1",), _sum_vjp, aliases=True, category="reduction")
def sum(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    xp = np if type(x) is _ND else namespace_of(x)
    return xp.sum(x, axis=axis, keepdims=keepdims)


def _mean_vjp(xp: Any, g: Any, ans: Any, x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    shape = xp.raw(x).shape
    n = _count(shape, axis)
    # n == 0: x is empty, and so is its gradient (any factor gives the same empty array)
    return xp.broadcast_to(xp.reshape(g, _kd(shape, axis)), shape) * (1.0 / n if n else 0.0)


@defop("mean", ("x",), "(1/n) sum_i x_i", ("1/n",), _mean_vjp, category="reduction")
def mean(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    xp = np if type(x) is _ND else namespace_of(x)
    if _count(tuple(x.shape), axis) == 0:  # the mean of no numbers is NaN (0/0), as in
        with np.errstate(invalid="ignore", divide="ignore"):  # PyTorch, without the warning
            return xp.sum(x, axis=axis, keepdims=keepdims) / 0.0
    return xp.mean(x, axis=axis, keepdims=keepdims)


def _extreme_vjp(
    xp: Any, g: Any, ans: Any, x: Any, axis: Any = None, keepdims: bool = False
) -> Any:
    # Ties: the gradient is split evenly among all elements equal to the extreme.
    xr = xp.raw(x)
    kd = _kd(xr.shape, axis)
    ns = namespace_of(xr)
    if ns is NUMPY:
        hit = xr == np.reshape(xp.raw(ans), kd)
        w = hit / np.sum(hit, axis=axis, keepdims=True)
        return xp.reshape(g, kd) * xp.const(w.astype(xr.dtype))
    hits = ns.astype(xr == ns.reshape(xp.raw(ans), kd), xr.dtype)
    return xp.reshape(g, kd) * xp.const(hits / ns.sum(hits, axis=axis, keepdims=True))


@defop(
    "max",
    ("x",),
    "max_i x_i",
    ("1 at the argmax, else 0",),
    _extreme_vjp,
    kinks="ties: gradient split evenly among the maxima",
    category="reduction",
)
def max(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    xp = np if type(x) is _ND else namespace_of(x)
    return xp.max(x, axis=axis, keepdims=keepdims)


@defop(
    "min",
    ("x",),
    "min_i x_i",
    ("1 at the argmin, else 0",),
    _extreme_vjp,
    kinks="ties: gradient split evenly among the minima",
    category="reduction",
)
def min(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    xp = np if type(x) is _ND else namespace_of(x)
    return xp.min(x, axis=axis, keepdims=keepdims)


def _lse_vjp(xp: Any, g: Any, ans: Any, x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    kd = _kd(xp.raw(x).shape, axis)
    return xp.reshape(g, kd) * xp.exp(x - xp.reshape(ans, kd))


@defop(
    "logsumexp",
    ("x",),
    "ln sum_i exp(x_i)",
    ("softmax(x)_i",),
    _lse_vjp,
    category="reduction",
    note="fused for stability: max subtracted before exp",
)
def logsumexp(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    xp = np if type(x) is _ND else namespace_of(x)
    if x.size == 0:  # the log of an empty sum: -inf (PyTorch's value), no warning
        with np.errstate(divide="ignore"):
            out = xp.log(xp.sum(xp.exp(x), axis=axis, keepdims=True))
    else:
        m = xp.max(x, axis=axis, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)
        out = xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True)) + m
    if not keepdims:
        out = xp.squeeze(out, axis=axis) if axis is not None else xp.reshape(out, ())
    return out
