"""Process-wide switches: gradient recording, anomaly mode, default dtype, node numbering."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

F = TypeVar("F", bound=Callable[..., Any])


class _State:
    __slots__ = ("anomaly", "default_dtype", "grad_enabled")

    def __init__(self) -> None:
        self.grad_enabled = True
        self.anomaly = False
        self.default_dtype: np.dtype[Any] = np.dtype(np.float32)


STATE = _State()


def pure_python_requested() -> bool:
    """True when ``GRAPHGRAD_PURE_PYTHON`` is set to anything but empty or ``0``: the compiled
    parts (scalar core, fused kernels) are then not used even if they are built."""
    return os.environ.get("GRAPHGRAD_PURE_PYTHON", "").strip() not in ("", "0")


#: Every graph node takes the next number at creation. A node is always created after its
#: inputs, so creation order is a topological order: backward pops nodes from a heap keyed by
#: this number (largest first) and never needs a recursive sort.
next_seq = itertools.count().__next__


class _GradMode:
    """Context manager and decorator that sets whether ops record the graph."""

    __slots__ = ("_enabled", "_prev")

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._prev: list[bool] = []

    def __enter__(self) -> None:
        self._prev.append(STATE.grad_enabled)
        STATE.grad_enabled = self._enabled

    def __exit__(self, *exc: object) -> None:
        STATE.grad_enabled = self._prev.pop()

    def __call__(self, fn: F) -> F:
        import functools

        enabled = self._enabled

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _GradMode(enabled):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


def no_grad() -> _GradMode:
    """Record nothing inside ``with gg.no_grad():`` (or a function decorated ``@gg.no_grad()``)."""
    return _GradMode(False)


def enable_grad() -> _GradMode:
    """Record the graph again inside a ``no_grad`` block."""
    return _GradMode(True)


def is_grad_enabled() -> bool:
    """Whether ops currently record the graph."""
    return STATE.grad_enabled


def set_default_dtype(dtype: Any) -> None:
    """Set the dtype of tensors made from Python numbers and lists (float32 or float64)."""
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"set_default_dtype: expected float32 or float64, got {dt}")
    STATE.default_dtype = dt


def get_default_dtype() -> np.dtype[Any]:
    """The dtype of tensors made from Python numbers and lists (float32 unless changed)."""
    return STATE.default_dtype
