"""Weight initialisation: plain functions of a shape and a ``numpy.random.Generator``.

A layer computes o = a(W x + b) with W of shape (out, in), so each unit sums ``fan_in = in``
products w·x. If the inputs have second moment q and the weights are drawn from N(0, σ),
the pre-activation has variance fan_in · σ² · q. Keeping that variance the same from layer to
layer (neither vanishing nor exploding, lecture: "preserve signal strength") gives

    σ = gain / sqrt(fan_in)

where the gain undoes what the activation a(·) does to the second moment:

=============  ====================  =========================================================
activation     gain                  why
=============  ====================  =========================================================
identity       1                     LeCun: a linear unit keeps the variance
sigmoid        1                     LeCun (σ'(0) = 1/4 would suggest 4; 1 is the usual choice)
tanh           1                     LeCun: tanh is the identity near 0 (PyTorch uses 5/3)
relu           sqrt(2)               He: ReLU zeroes half of its input, E[relu(z)²] = Var z / 2
leaky_relu(s)  sqrt(2 / (1 + s²))    He, for the leaky half
elu            sqrt(2)               treated as ReLU-like (He)
softplus       sqrt(2)               treated as ReLU-like (He)
=============  ====================  =========================================================

Each gain is declared on the activation's op in the registry (``Op.gain``), so a new
activation brings its gain with it.

Xavier/Glorot averages the forward and backward conditions: σ = gain · sqrt(2 / (fan_in + fan_out)).

A weight of more than two dimensions, (out, in, *kernel), has fan_in = in · prod(kernel) and
fan_out = out · prod(kernel), as in PyTorch. Each function takes a shape (not a Tensor to fill)
and ``rng``, a ``numpy.random.Generator`` or an int seed.

Biases start at 0 (``zeros``). Every function returns a new array, float32 unless ``dtype``
says otherwise; sampling is done directly in that dtype so the result depends only on the
generator's state. With ``device=`` (``"cuda"``, ``"array-api-strict"`` ...) the array is drawn
on the host and copied there: the same generator state gives the same numbers on every device.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from .. import _backend
from .._state import as_generator
from ..ops import REGISTRY

Device = _backend.Device

__all__ = [
    "SCHEMES",
    "fans",
    "gain",
    "he_normal",
    "init_std",
    "lecun_normal",
    "normal",
    "xavier_normal",
    "zeros",
]

#: The names accepted by :func:`init_std`: ``auto`` picks He or LeCun from the activation.
SCHEMES = ("auto", "he", "lecun", "xavier")


RngLike = np.random.Generator | int | None


def _check_shape(fn: str, shape: Any) -> tuple[int, ...]:
    """``shape`` as a tuple of non-negative ints, or a TypeError naming ``fn``: the
    initialisers take a shape and return a new array (they do not fill a Tensor in place)."""
    if hasattr(shape, "shape") and not isinstance(shape, tuple | list):
        raise TypeError(
            f"{fn}: expected a shape (a tuple of ints), got a {type(shape).__name__}; "
            f"{fn} returns a new array instead of filling one in place (PyTorch's habit): "
            f"write w.data[...] = {fn}(w.shape, rng)"
        )
    if isinstance(shape, int | np.integer) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        dims = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise TypeError(f"{fn}: expected a shape (a tuple of ints), got {shape!r}") from None
    if any(d < 0 for d in dims):
        raise ValueError(f"{fn}: negative dimension in shape {dims}")
    return dims


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of shape (out, in, *kernel), as PyTorch computes them:
    fan_in = in · prod(kernel), fan_out = out · prod(kernel) (a convolution's (64, 32, 3, 3)
    gives (288, 576)); a 1-D shape (n,) has fan_in = fan_out = n.

    Raises:
        ValueError: a scalar shape, or a shape with a zero dimension (no fan-in to scale by).
        TypeError: not a shape (e.g. a Tensor: pass ``w.shape``).
    """
    dims = _check_shape("fans", shape)
    if len(dims) == 0:
        raise ValueError("fans: a scalar has no fan-in")
    if 0 in dims:
        raise ValueError(f"fans: shape {dims} has a zero dimension, so fan_in/fan_out is 0")
    if len(dims) == 1:
        return dims[0], dims[0]
    receptive = math.prod(dims[2:])
    return dims[1] * receptive, dims[0] * receptive


def gain(activation: str, param: float | None = None) -> float:
    """The gain of ``activation`` (see the module's table), as declared on the registry's op of
    that name (``Op.gain``); ``param`` is its parameter (leaky_relu's slope).

    Raises:
        ValueError: an unknown activation name.
    """
    name = activation.lower()
    if name in ("identity", "linear", "none"):
        return 1.0
    op = REGISTRY.get(name)
    if op is None or op.gain is None:
        known = ["identity", *(n for n, o in REGISTRY.items() if o.gain is not None)]
        raise ValueError(
            f"gain: unknown activation {activation!r}; expected one of {', '.join(known)}"
        )
    return op.gain(param)


def init_std(
    shape: tuple[int, ...],
    activation: str = "relu",
    scheme: str = "auto",
    param: float | None = None,
) -> float:
    """The σ of N(0, σ) for a weight of ``shape`` (out, in) feeding ``activation``.

    Args:
        shape: the weight's shape, (out, in).
        activation: the activation that follows the layer (its gain is used).
        scheme: ``"auto"`` (gain(activation) / sqrt(fan_in): He for ReLU-like activations,
            LeCun for identity/sigmoid/tanh), ``"he"`` (sqrt(2 / fan_in) whatever the
            activation), ``"lecun"`` (1 / sqrt(fan_in)) or ``"xavier"``
            (gain · sqrt(2 / (fan_in + fan_out))).
        param: leaky_relu's slope.
    """
    fan_in, fan_out = fans(shape)
    if scheme == "auto":
        return gain(activation, param) / math.sqrt(fan_in)
    if scheme == "he":
        return math.sqrt(2.0 / fan_in)
    if scheme == "lecun":
        return 1.0 / math.sqrt(fan_in)
    if scheme == "xavier":
        return gain(activation, param) * math.sqrt(2.0 / (fan_in + fan_out))
    raise ValueError(f"init_std: unknown scheme {scheme!r}; expected one of {SCHEMES}")


def zeros(
    shape: tuple[int, ...],
    rng: np.random.Generator | None = None,
    dtype: DTypeLike = np.float32,
    *,
    device: str | Device | None = None,
) -> Any:
    """All zeros (``rng`` is accepted for a uniform signature and not used), on ``device``."""
    dev = _backend.parse_device(device)
    if dev.is_cpu:
        return np.zeros(shape, dtype=dtype)
    return _backend.to_device(np.zeros(shape, dtype=dtype), dev)


def normal(
    shape: tuple[int, ...],
    rng: RngLike,
    std: float = 1.0,
    dtype: DTypeLike = np.float32,
    *,
    device: str | Device | None = None,
) -> Any:
    """Samples of N(0, std) of the given shape, drawn in ``dtype`` on the host, on ``device``.
    ``rng`` is a Generator or an int seed."""
    shape = _check_shape("normal", shape)
    if not (
        isinstance(std, (int, float, np.integer, np.floating)) and math.isfinite(std) and std >= 0
    ):
        raise ValueError(f"normal: std must be a finite number >= 0, got {std!r}")
    gen = as_generator(rng, "normal")
    dev = _backend.parse_device(device)
    dt: Any = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"normal: dtype must be float32 or float64, got {dt}")
    out = gen.standard_normal(shape, dtype=dt)
    out *= dt.type(std)
    return out if dev.is_cpu else _backend.to_device(out, dev)


def he_normal(
    shape: tuple[int, ...],
    rng: RngLike,
    slope: float = 0.0,
    dtype: DTypeLike = np.float32,
    *,
    device: str | Device | None = None,
) -> Any:
    """He (Kaiming) normal: σ = sqrt(2 / ((1 + slope²) · fan_in)); for ReLU (slope 0) and
    leaky ReLU."""
    shape, rng = _check_shape("he_normal", shape), as_generator(rng, "he_normal")
    fan_in, _ = fans(shape)
    return normal(
        shape, rng, math.sqrt(2.0 / ((1.0 + slope * slope) * fan_in)), dtype, device=device
    )


def lecun_normal(
    shape: tuple[int, ...],
    rng: RngLike,
    dtype: DTypeLike = np.float32,
    *,
    device: str | Device | None = None,
) -> Any:
    """LeCun normal: σ = 1 / sqrt(fan_in); for identity, tanh and sigmoid."""
    shape, rng = _check_shape("lecun_normal", shape), as_generator(rng, "lecun_normal")
    fan_in, _ = fans(shape)
    return normal(shape, rng, 1.0 / math.sqrt(fan_in), dtype, device=device)


def xavier_normal(
    shape: tuple[int, ...],
    rng: RngLike,
    gain: float = 1.0,
    dtype: DTypeLike = np.float32,
    *,
    device: str | Device | None = None,
) -> Any:
    """Xavier (Glorot) normal: σ = gain · sqrt(2 / (fan_in + fan_out))."""
    shape, rng = _check_shape("xavier_normal", shape), as_generator(rng, "xavier_normal")
    fan_in, fan_out = fans(shape)
    return normal(shape, rng, gain * math.sqrt(2.0 / (fan_in + fan_out)), dtype, device=device)
