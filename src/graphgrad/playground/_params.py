"""The playground's parameters: defaults, ranges, and one validator that names the field at fault.

Every message from the page that changes the run passes through :func:`validate_params`; the
same function checks a shared URL's state. It needs only the standard library, so it is tested
without the server stack.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "ACTIVATIONS",
    "CLASSIFICATION",
    "DATASETS",
    "FEATURES",
    "INITS",
    "OPTIMIZERS",
    "REGRESSION",
    "REGULARIZERS",
    "ParamError",
    "Params",
    "validate_params",
]

#: 2-D classification sets (softmax cross-entropy) and 1-D regressions (mean squared error).
CLASSIFICATION = ("circles", "xor", "blobs", "spiral", "moons")
REGRESSION = ("sine", "step", "abs")
DATASETS = CLASSIFICATION + REGRESSION
#: Input features as in TensorFlow Playground (1-D regression uses x1 only, plus sin x1, x1²).
FEATURES = ("x1", "x2", "x1^2", "x2^2", "x1x2", "sin_x1", "sin_x2")
ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu")
INITS = ("he", "xavier", "normal")
OPTIMIZERS = ("sgd", "momentum", "adam")
REGULARIZERS = ("none", "l1", "l2")

MAX_LAYERS = 6
MAX_NEURONS = 8
MAX_POINTS = 2000


class ParamError(ValueError):
    """A parameter is unknown, of the wrong type or out of range; ``field`` names it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass
class Params:
    """One playground run: data spec and seed, features, network, hyper-parameters."""

    dataset: str = "circles"
    classes: int = 2  # blobs and spiral: 2..5; circles, xor, moons: always 2
    noise: float = 0.1
    n_points: int = 300
    train_ratio: float = 0.5
    seed: int = 1
    features: list[str] = field(default_factory=lambda: ["x1", "x2"])
    layers: list[int] = field(default_factory=lambda: [4, 2])
    activation: str = "tanh"
    init: str = "xavier"
    init_std: float = 0.5
    lr: float = 0.03
    batch_size: int = 10
    optimizer: str = "sgd"
    reg: str = "none"
    reg_rate: float = 0.0
    steps_per_update: int = 1
    grid: int = 100

    def to_dict(self) -> dict[str, Any]:
        """The parameters as plain JSON-able data."""
        return asdict(self)

    @property
    def is_regression(self) -> bool:
        return self.dataset in REGRESSION

    @property
    def n_classes(self) -> int:
        """The number of outputs' classes (1 output for regression)."""
        if self.is_regression:
            return 1
        return self.classes if self.dataset in ("blobs", "spiral") else 2


def _int(name: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ParamError(name, f"expected an integer in [{lo}, {hi}], got {v!r}")
    if not lo <= v <= hi:
        raise ParamError(name, f"must be in [{lo}, {hi}], got {v}")
    return v


def _float(name: str, v: Any, lo: float, hi: float, lo_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ParamError(name, f"expected a number, got {v!r}")
    if isinstance(v, float) and not math.isfinite(v):
        raise ParamError(name, f"must be a finite number, got {v!r}")
    # compared before float(): an int of 309+ digits (JSON reads 10**400 as one) is out of
    # range, not an OverflowError
    if (v <= lo if lo_open else v < lo) or v > hi:
        span = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
        raise ParamError(name, f"must be in {span}, got {show_number(v)}")
    return float(v)


def show_number(v: int | float) -> str:
    """``v`` for a message: ``%g``, and an integer too large for a float by its size."""
    if isinstance(v, int) and abs(v) >= 10**16:
        digits = int(abs(v).bit_length() * math.log10(2)) + 1
        return f"{'a negative' if v < 0 else 'an'} integer of about {digits} digits"
    return f"{v:g}"


def _choice(name: str, v: Any, options: tuple[str, ...]) -> str:
    if not isinstance(v, str) or v not in options:
        raise ParamError(name, f"expected one of {', '.join(options)}; got {v!r}")
    return v


def _features(v: Any) -> list[str]:
    if not isinstance(v, list) or not v:
        raise ParamError("features", f"expected a non-empty list of {', '.join(FEATURES)}")
    for f in v:
        _choice("features", f, FEATURES)
    if len(set(v)) != len(v):
        raise ParamError("features", f"repeated feature in {v}")
    return [f for f in FEATURES if f in v]  # canonical order


def _layers(v: Any) -> list[int]:
    if not isinstance(v, list) or len(v) > MAX_LAYERS:
        raise ParamError("layers", f"expected a list of 0 to {MAX_LAYERS} layer sizes, got {v!r}")
    return [_int("layers", h, 1, MAX_NEURONS) for h in v]


_CHECKS: dict[str, Any] = {
    "dataset": lambda v: _choice("dataset", v, DATASETS),
    "classes": lambda v: _int("classes", v, 2, 5),
    "noise": lambda v: _float("noise", v, 0.0, 1.0),
    "n_points": lambda v: _int("n_points", v, 10, MAX_POINTS),
    "train_ratio": lambda v: _float("train_ratio", v, 0.1, 0.9),
    "seed": lambda v: _int("seed", v, 0, 2**31 - 1),
    "features": _features,
    "layers": _layers,
    "activation": lambda v: _choice("activation", v, ACTIVATIONS),
    "init": lambda v: _choice("init", v, INITS),
    "init_std": lambda v: _float("init_std", v, 0.0, 10.0, lo_open=True),
    "lr": lambda v: _float("lr", v, 0.0, 10.0, lo_open=True),
    "batch_size": lambda v: _int("batch_size", v, 1, MAX_POINTS),
    "optimizer": lambda v: _choice("optimizer", v, OPTIMIZERS),
    "reg": lambda v: _choice("reg", v, REGULARIZERS),
    "reg_rate": lambda v: _float("reg_rate", v, 0.0, 1.0),
    "steps_per_update": lambda v: _int("steps_per_update", v, 1, 100),
    "grid": lambda v: _int("grid", v, 10, 200),
}


def validate_params(update: Any, base: Params | None = None) -> Params:
    """``base`` (default: the defaults) with the fields of ``update`` checked and applied.

    Raises:
        ParamError: ``update`` is not an object, has an unknown field, or a value of the wrong
            type or out of range; the error's ``field`` names it. ``base`` is not changed.
    """
    if not isinstance(update, dict):
        raise ParamError("params", f"expected an object of parameters, got {type(update).__name__}")
    unknown = sorted(set(update) - set(_CHECKS))
    if unknown:
        raise ParamError(unknown[0], f"unknown parameter; known: {', '.join(_CHECKS)}")
    base = base or Params()
    values = base.to_dict()
    for name, v in update.items():
        values[name] = _CHECKS[name](v)
    p = Params(**values)
    if p.dataset in REGRESSION:
        p.features = [f for f in p.features if f in ("x1", "x1^2", "sin_x1")] or ["x1"]
    elif base.dataset in REGRESSION and "features" not in update:
        p.features = Params().features  # back to 2-D: x2 again (a 1-D set had dropped it)
    return p
