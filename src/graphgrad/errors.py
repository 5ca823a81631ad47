"""The exceptions graphgrad raises.

Every message names the op, the shapes or the argument at fault.
"""

from __future__ import annotations


class GraphgradError(Exception):
    """Base class of every graphgrad error."""


class ShapeError(GraphgradError, ValueError):
    """Shapes that cannot be combined (broadcasting, matmul, reshape, a wrong gradient shape)."""


class NonDifferentiableError(GraphgradError, TypeError):
    """A gradient was requested through an argument that has no derivative rule."""


class BackwardError(GraphgradError, RuntimeError):
    """backward() cannot run: non-scalar output without a gradient, freed graph, no grad."""


class AnomalyError(GraphgradError, FloatingPointError):
    """Raised in ``detect_anomaly()`` mode by the first op that produces NaN or Inf."""


class GradcheckError(GraphgradError, AssertionError):
    """Analytic and numerical gradients disagree (raised by ``gradcheck``)."""


class GradcheckWarning(UserWarning):
    """gradcheck was given inputs that are not float64, so its verdict is unreliable."""


class InPlaceError(GraphgradError, RuntimeError):
    """An in-place operation (``x += y``, ``x[i] = v``) on a tensor the graph depends on: a
    leaf that requires gradients while gradients are recorded (PyTorch refuses it too)."""


class DeviceUnavailableError(GraphgradError, RuntimeError):
    """A device was asked for whose library or hardware is missing (``device="cuda"`` without
    CuPy or without a GPU); the message says what is missing and how to install it."""


class DeviceMismatchError(GraphgradError, RuntimeError):
    """One op was given tensors on different devices (or a NumPy array with a GPU tensor); the
    message names the op, both devices and the shapes."""
