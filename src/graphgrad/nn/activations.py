"""Activation functions a(·) as modules: ``Identity, Sigmoid, Tanh, ReLU, LeakyReLU, ELU``, and
one for every op of the registry's ``activation`` category (``softplus`` ...).

Each calls the registry's op of the same name (``gg.relu`` ...), where its local derivative,
the convention at its kink and its init gain are declared. :func:`get_activation` builds one
from a name, as used by :class:`~graphgrad.nn.MLP` and the config files.
"""

from __future__ import annotations

import math
from typing import Any

from .._quote import excerpt
from ..ops import REGISTRY
from ..tensor import OP_FUNCTIONS, Tensor, as_tensor
from .module import Module

__all__ = [
    "ACTIVATIONS",
    "ELU",
    "PARAM_RANGE",
    "Activation",
    "Identity",
    "LeakyReLU",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "get_activation",
    "param_problem",
]


class Activation(Module):
    """Base of the activation modules. ``name`` and ``param`` give the init gain.

    A subclass for a registry op sets ``name`` to the op's name and inherits ``forward``; an
    op with a parameter (leaky_relu's slope) takes it as the constructor's one argument.
    """

    name: str = "identity"

    def __init__(self, param: float | None = None) -> None:
        super().__init__()
        params = REGISTRY[self.name].params if self.name in REGISTRY else ()
        if param is not None and not params:
            raise TypeError(f"activation {self.name!r} takes no parameter, got {param!r}")
        self._param = float(param) if param is not None else (params[0][1] if params else None)

    @property
    def param(self) -> float | None:
        """The activation's parameter (leaky slope, ELU alpha), or None."""
        return self._param

    def forward(self, x: Any) -> Tensor:
        fn = OP_FUNCTIONS[self.name]
        result: Tensor = fn(x) if self._param is None else fn(x, self._param)
        return result

    def extra_repr(self) -> str:
        params = REGISTRY[self.name].params if self.name in REGISTRY else ()
        return f"{params[0][0]}={self._param}" if params else ""


class Identity(Activation):
    """a(v) = v."""

    name = "identity"

    def forward(self, x: Any) -> Tensor:
        return as_tensor(x)


class Sigmoid(Activation):
    """a(v) = 1 / (1 + e^-v)."""

    name = "sigmoid"


class Tanh(Activation):
    """a(v) = tanh(v)."""

    name = "tanh"


class ReLU(Activation):
    """a(v) = max(0, v); subgradient 0 at v = 0."""

    name = "relu"


class LeakyReLU(Activation):
    """a(v) = v if v > 0 else slope · v."""

    name = "leaky_relu"

    def __init__(self, slope: float = 0.01) -> None:
        super().__init__(slope)

    @property
    def slope(self) -> float:
        return float(self._param or 0.0)


class ELU(Activation):
    """a(v) = v if v > 0 else alpha · (e^v − 1)."""

    name = "elu"

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__(alpha)

    @property
    def alpha(self) -> float:
        return float(self._param or 0.0)


def _activation_class(name: str) -> type[Activation]:
    """The module class of registry activation ``name`` that has no class written above."""
    title = "".join(part.capitalize() for part in name.split("_"))
    doc = f"a(v) = {REGISTRY[name].formula.replace('x', 'v')} (the registry's op {name!r})."
    return type(title, (Activation,), {"name": name, "__doc__": doc, "__module__": __name__})


_NAMED: dict[str, type[Activation]] = {
    c.name: c for c in (Identity, Sigmoid, Tanh, ReLU, LeakyReLU, ELU)
}

#: name -> class, for :func:`get_activation`: identity, and every op of the registry's
#: ``activation`` category.
ACTIVATIONS: dict[str, type[Activation]] = {
    "identity": Identity,
    "linear": Identity,
    **{
        op.name: _NAMED.get(op.name) or _activation_class(op.name)
        for op in REGISTRY.values()
        if op.category == "activation"
    },
}


def get_activation(spec: str | Activation) -> Activation:
    """An activation module from a name: ``"relu"``, ``"tanh"``, ``"sigmoid"``, ``"identity"``,
    ``"leaky_relu"``, ``"elu"``, ``"softplus"`` (any key of :data:`ACTIVATIONS`), optionally
    with its parameter after a colon (``"leaky_relu:0.1"``, ``"elu:0.5"``). A module is
    returned as is.

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
    if not (name in REGISTRY and REGISTRY[name].params):
        raise ValueError(f"activation {excerpt(name)} takes no parameter, got {excerpt(spec)}")
    try:
        value = float(arg)
    except ValueError:
        raise ValueError(
            f"activation {excerpt(spec)}: the parameter after ':' must be a number"
        ) from None
    return cls(value)


#: The values an activation's parameter (leaky_relu's slope, elu's alpha) may take in a
#: training run's config and in the experiments: finite, in [0, 1e3].
PARAM_RANGE = (0.0, 1e3)


def param_problem(act: Activation) -> str | None:
    """Why the parameter of ``act`` is not a finite number in :data:`PARAM_RANGE`
    (``"parameter must be a finite number in [0, 1e3], got nan"``), or ``None`` when it is
    (or ``act`` takes none). :func:`get_activation` accepts any float (``leaky_relu:nan``);
    this is the check a command applies before running with it."""
    param = act.param
    lo, hi = PARAM_RANGE
    if param is None or (math.isfinite(param) and lo <= param <= hi):
        return None
    return f"parameter must be a finite number in [{_short(lo)}, {_short(hi)}], got {param}"


def _short(v: float) -> str:
    """``0``, ``0.5``, ``1e3`` (as the config's rule is written)."""
    text = f"{v:g}"
    return f"{v:.0e}".replace("e+0", "e").replace("e+", "e") if len(text) > 3 else text
