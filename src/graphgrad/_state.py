"""Switches: gradient recording and anomaly mode (per thread and per async task), the default
dtype (per thread); the global random generator; node numbering.

Grad mode and anomaly mode live in context variables (:mod:`contextvars`): a ``no_grad()`` block
in one thread (an evaluation thread, a server handler) or async task does not switch recording
off in another (a training thread). Both are set by ``with`` blocks, so their scope is clear.
The default dtype is per thread (``threading.local``): ``set_default_dtype`` in one thread does
not change the tensors another makes. It is a setting, not a block, and a thread-local one
persists from one notebook cell to the next, where a context variable set in a cell is lost in
some Jupyter kernels (those that run each cell in a new context). A new thread starts from the
defaults (recording on, anomaly mode off, float32), as PyTorch's thread-local grad mode does.
``STATE`` reads and writes all three through attributes, for code that wants one object to ask.

The random generator that layers draw from when given no ``rng`` is process-wide and behind a
lock: ``gg.manual_seed(n)`` makes every later draw reproducible, whichever thread draws.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

import numpy as np

F = TypeVar("F", bound=Callable[..., Any])

_FLOAT32: np.dtype[Any] = np.dtype(np.float32)

#: Whether ops record the graph (per thread / async task; ``True`` in a new thread).
GRAD_ENABLED: ContextVar[bool] = ContextVar("graphgrad_grad_enabled", default=True)
#: Whether anomaly mode checks every op for NaN/Inf (per thread / async task).
ANOMALY: ContextVar[bool] = ContextVar("graphgrad_anomaly", default=False)


class _ThreadSettings(threading.local):
    """Per-thread settings; the class attributes are each new thread's defaults."""

    default_dtype: np.dtype[Any] = _FLOAT32


#: The dtype of tensors made from Python floats: ``SETTINGS.default_dtype`` (per thread).
SETTINGS = _ThreadSettings()


class _State:
    """The three context-local switches as attributes: ``STATE.grad_enabled`` reads
    :data:`GRAD_ENABLED` in the calling thread's context, assigning to it sets it there."""

    __slots__ = ()

    @property
    def grad_enabled(self) -> bool:
        return GRAD_ENABLED.get()

    @grad_enabled.setter
    def grad_enabled(self, value: bool) -> None:
        GRAD_ENABLED.set(bool(value))

    @property
    def anomaly(self) -> bool:
        return ANOMALY.get()

    @anomaly.setter
    def anomaly(self, value: bool) -> None:
        ANOMALY.set(bool(value))

    @property
    def default_dtype(self) -> np.dtype[Any]:
        return SETTINGS.default_dtype

    @default_dtype.setter
    def default_dtype(self, value: Any) -> None:
        SETTINGS.default_dtype = np.dtype(value)


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
    """Context manager and decorator that sets whether ops record the graph (in the calling
    thread only)."""

    __slots__ = ("_enabled", "_prev")

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._prev: list[bool] = []

    def __enter__(self) -> None:
        self._prev.append(GRAD_ENABLED.get())
        GRAD_ENABLED.set(self._enabled)

    def __exit__(self, *exc: object) -> None:
        GRAD_ENABLED.set(self._prev.pop())

    def __call__(self, fn: F) -> F:
        enabled = self._enabled

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _GradMode(enabled):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


def no_grad() -> _GradMode:
    """Record nothing inside ``with gg.no_grad():`` (or a function decorated ``@gg.no_grad()``).

    Only the calling thread (or async task) stops recording; other threads are unaffected."""
    return _GradMode(False)


def enable_grad() -> _GradMode:
    """Record the graph again inside a ``no_grad`` block (in the calling thread)."""
    return _GradMode(True)


def is_grad_enabled() -> bool:
    """Whether ops currently record the graph in the calling thread."""
    return GRAD_ENABLED.get()


def set_default_dtype(dtype: Any) -> None:
    """Set the dtype of tensors made from Python numbers and lists (float32 or float64).

    The setting holds for the calling thread only; a new thread starts with float32."""
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"set_default_dtype: expected float32 or float64, got {dt}")
    SETTINGS.default_dtype = dt


def get_default_dtype() -> np.dtype[Any]:
    """The dtype of tensors made from Python numbers and lists in the calling thread (float32
    unless changed)."""
    return SETTINGS.default_dtype


# ------------------------------------------------------------------- global random generator

_RNG_LOCK = threading.Lock()
_RNG: np.random.Generator = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Seed the global generator; returns it. Layers (``nn.Linear``, ``nn.MLP``) draw their
    initial weights from it when given no ``rng``, the toy data sets (``gg.data.two_moons``,
    ...) their points, and a ``DataLoader`` given no ``seed`` its shuffling seed.

    ``gg.manual_seed(0)`` followed by the same constructions gives the same weights, run after
    run. The generator is shared by every thread and replaced atomically (under a lock); a
    NumPy ``Generator`` serialises its own draws, so concurrent draws never corrupt it, but
    which thread gets which numbers then depends on their timing: for reproducible
    multi-threaded code pass each thread its own ``rng``.

    Args:
        seed: a non-negative integer.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"manual_seed: expected a non-negative integer, got {seed!r}")
    if seed < 0:
        raise ValueError(f"manual_seed: the seed must be non-negative, got {seed}")
    global _RNG
    gen = np.random.default_rng(int(seed))
    with _RNG_LOCK:
        _RNG = gen
    return gen


def default_generator() -> np.random.Generator:
    """The global generator (seeded from the OS until :func:`manual_seed` is called)."""
    with _RNG_LOCK:
        return _RNG


def as_generator(rng: np.random.Generator | int | None, who: str = "") -> np.random.Generator:
    """A Generator from a Generator (returned as is), an int seed, or None (the global
    generator, which ``gg.manual_seed(n)`` makes reproducible). ``who`` names the caller in
    the error for anything else."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return default_generator()
    head = f"{who}: " if who else ""
    if isinstance(rng, int | np.integer) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(f"{head}an rng seed must be >= 0, got {rng}")
        return np.random.default_rng(rng)
    raise TypeError(
        f"{head}rng must be a numpy.random.Generator, an int seed or None, got "
        f"{type(rng).__name__} {rng!r}"
    )


def check_int(who: str, name: str, value: Any, lo: int) -> None:
    """Refuse a ``value`` for argument ``name`` of ``who`` that is not an int >= ``lo``: a
    float (2.5 would be truncated), a bool, or one too small."""
    if not isinstance(value, int | np.integer) or isinstance(value, bool | np.bool_):
        raise TypeError(f"{who}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < lo:
        raise ValueError(f"{who}: {name} must be >= {lo}, got {value}")
