"""Activation functions a(·) as modules: ``Identity, Sigmoid, Tanh, ReLU, LeakyReLU, ELU``.

Each calls the engine's op of the same name (``gg.relu`` ...), where its local derivative and
the convention at its kink are declared. :func:`get_activation` builds one from a name, as used
by :class:`~graphgrad.nn.MLP` and the config files.
"""

from __future__ import annotations

from typing import Any

from .._quote import excerpt
from ..tensor import Tensor, as_tensor, elu, leaky_relu, relu, sigmoid, tanh
from .module import Module

__all__ = [
    "ACTIVATIONS",
    "ELU",
    "Activation",
    "Identity",
    "LeakyReLU",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "get_activation",
]


class Activation(Module):
    """Base of the activation modules. ``name`` and ``param`` give the init gain."""

    name: str = "identity"

    @property
    def param(self) -> float | None:
        """The activation's parameter (leaky slope, ELU alpha), or None."""
        return None


class Identity(Activation):
    """a(v) = v."""

    name = "identity"

    def forward(self, x: Any) -> Tensor:
        return as_tensor(x)


class Sigmoid(Activation):
    """a(v) = 1 / (1 + e^-v)."""

    name = "sigmoid"

    def forward(self, x: Any) -> Tensor:
        return sigmoid(x)


class Tanh(Activation):
    """a(v) = tanh(v)."""

    name = "tanh"

    def forward(self, x: Any) -> Tensor:
        return tanh(x)


class ReLU(Activation):
    """a(v) = max(0, v); subgradient 0 at v = 0."""

    name = "relu"

    def forward(self, x: Any) -> Tensor:
        return relu(x)


class LeakyReLU(Activation):
    """a(v) = v if v > 0 else slope · v."""

    name = "leaky_relu"

    def __init__(self, slope: float = 0.01) -> None:
        super().__init__()
        self.slope = float(slope)

    @property
    def param(self) -> float | None:
        return self.slope

    def forward(self, x: Any) -> Tensor:
        return leaky_relu(x, self.slope)

    def extra_repr(self) -> str:
        return f"slope={self.slope}"


class ELU(Activation):
    """a(v) = v if v > 0 else alpha · (e^v − 1)."""

    name = "elu"

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = float(alpha)

    @property
    def param(self) -> float | None:
        return self.alpha

    def forward(self, x: Any) -> Tensor:
        return elu(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


#: name -> class, for :func:`get_activation`.
ACTIVATIONS: dict[str, type[Activation]] = {
    "identity": Identity,
    "linear": Identity,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "elu": ELU,
}


def get_activation(spec: str | Activation) -> Activation:
    """An activation module from a name: ``"relu"``, ``"tanh"``, ``"sigmoid"``, ``"identity"``,
    ``"leaky_relu"`` or ``"elu"``, optionally with its parameter after a colon
    (``"leaky_relu:0.1"``, ``"elu:0.5"``). A module is returned as is.

    Raises:
        ValueError: an unknown name or a malformed parameter.
    """
    if isinstance(spec, Activation):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"activation must be a name or an Activation, got {type(spec).__name__}")
    name, _, arg = spec.strip().lower().partition(":")
    cls = ACTIVATIONS.get(name)
    if cls is None:
        raise ValueError(
            f"unknown activation {excerpt(spec)}; expected one of {', '.join(sorted(ACTIVATIONS))}"
        )
    if not arg:
        return cls()
    if cls not in (LeakyReLU, ELU):
        raise ValueError(f"activation {excerpt(name)} takes no parameter, got {excerpt(spec)}")
    try:
        value = float(arg)
    except ValueError:
        raise ValueError(
            f"activation {excerpt(spec)}: the parameter after ':' must be a number"
        ) from None
    return cls(value)
