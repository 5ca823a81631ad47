"""The optimiser updates on CuPy arrays: one ``cupy.ElementwiseKernel`` launch per parameter.

The portable twins in :mod:`graphgrad.optim.xp_updates` take four (SGD with momentum) to eleven
(Adam) passes over memory, each a kernel launch; these do each update in one. Imported only when
a parameter lives on a CUDA device (this module imports CuPy). ``bench/gpu_check.py`` compares
them with the portable path on a GPU (the CPU test suite cannot run them).

Scalars are passed in the parameters' dtype, computed in double precision on the host first
(``1 - b1``, ``lr / bc1``), as the NumPy path rounds them.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import cupy  # noqa: F401  (only ever imported on a machine with CuPy)

__all__ = ["adam", "sgd"]


@cache
def _kernels() -> dict[str, Any]:
    import cupy as cp

    return {
        "sgd": cp.ElementwiseKernel(
            "T g, T lr, T wd",
            "T w",
            "w -= (g + wd * w) * lr;",
            "graphgrad_sgd",
        ),
        "sgd_momentum": cp.ElementwiseKernel(
            "T g, T lr, T mu, T wd, bool nesterov, bool first",
            "T w, T v",
            """
            T gg = g + wd * w;
            T vv = first ? gg : v * mu + gg;
            v = vv;
            w -= (nesterov ? gg + vv * mu : vv) * lr;
            """,
            "graphgrad_sgd_momentum",
        ),
        "adam": cp.ElementwiseKernel(
            "T g, T lr_bc1, T b1, T one_m_b1, T b2, T one_m_b2, T eps, T wd, T bc2_sqrt",
            "T w, T m, T v",
            """
            T gg = g + wd * w;
            T mm = m * b1 + gg * one_m_b1;
            T vv = v * b2 + (gg * gg) * one_m_b2;
            m = mm;
            v = vv;
            w -= (mm / (sqrt(vv) / bc2_sqrt + eps)) * lr_bc1;
            """,
            "graphgrad_adam",
        ),
    }


def sgd(
    w: Any, g: Any, v: Any | None, lr: float, mu: float, wd: float, nesterov: bool, first: bool
) -> None:
    """One SGD step on ``w`` (and ``v``) in place, as :func:`graphgrad.optim.xp_updates.sgd`."""
    t = w.dtype.type
    k = _kernels()
    if mu and v is not None:
        k["sgd_momentum"](g, t(lr), t(mu), t(wd), bool(nesterov), bool(first), w, v)
    else:
        k["sgd"](g, t(lr), t(wd), w)


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
    """One Adam step on ``w``, ``m``, ``v`` in place, as
    :func:`graphgrad.optim.xp_updates.adam` (``xp`` is accepted for the same signature)."""
    t = w.dtype.type
    _kernels()["adam"](
        g, t(lr / bc1), t(b1), t(1.0 - b1), t(b2), t(1.0 - b2), t(eps), t(wd), t(bc2_sqrt), w, m, v
    )
