"""The optimiser updates on any array API namespace: in-place ``xp`` expressions.

These are the portable twins of :func:`graphgrad._fused.sgd` and :func:`graphgrad._fused.adam`
(which serve NumPy arrays, with the compiled kernels where they are built). They perform the
same floating-point operations in the same order as the NumPy reference path of ``_fused``,
so on ``array-api-strict`` (which computes with NumPy underneath) they give the same bits;
``tests/test_devices.py`` checks that. They run wherever the namespace supports the standard's
in-place operators (``array-api-strict``; CuPy, where :mod:`graphgrad.optim.cupy_updates`
fuses each update into one kernel launch instead).

Every function updates its first arguments in place; ``w``, ``g`` and the state arrays have
one shape and one floating dtype and live on one device.
"""

from __future__ import annotations

from typing import Any

__all__ = ["adam", "sgd"]


def sgd(
    w: Any, g: Any, v: Any | None, lr: float, mu: float, wd: float, nesterov: bool, first: bool
) -> None:
    """One SGD step on ``w`` in place (PyTorch's formulation); ``v`` is the momentum buffer
    (written, not read, when ``first``; ``None`` when ``mu`` is 0).

    g' = g + wd w;  v = g' at the first step, then v = mu v + g';
    w -= lr (g' + mu v) with nesterov, else w -= lr v  (v = g' when mu = 0).
    """
    if wd:
        g = g + wd * w
    if mu and v is not None:
        if first:
            v[...] = g
        else:
            v *= mu
            v += g
        g = g + mu * v if nesterov else v
    w -= g * lr


def adam(
    w: Any,
    g: Any,
    m: Any,
    v: Any,
    xp: Any,
    lr: float,
    b1: float,
    b2: float,
    eps: float,
    wd: float,
    bc1: float,
    bc2_sqrt: float,
) -> None:
    """One Adam step on ``w``, ``m``, ``v`` in place, with ``bc1 = 1 - b1^t`` and
    ``bc2_sqrt = sqrt(1 - b2^t)`` (t counts from 1):

    g' = g + wd w;  m = b1 m + (1-b1) g';  v = b2 v + (1-b2) g'²;
    w -= (m / (sqrt(v) / bc2_sqrt + eps)) · lr / bc1.
    """
    if wd:
        g = g + wd * w
    m *= b1
    m += g * (1.0 - b1)
    v *= b2
    sq = g * g
    sq *= 1.0 - b2
    v += sq
    den = xp.sqrt(v)
    den /= bc2_sqrt
    den += eps
    step = m / den
    step *= lr / bc1
    w -= step
