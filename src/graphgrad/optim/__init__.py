"""Optimisers: ``SGD`` (momentum, weight decay) and ``Adam``, updating parameters in place.

``opt = gg.optim.Adam(model.parameters(), lr=1e-3)``; per batch ``opt.zero_grad()``,
``loss.backward()``, ``opt.step()``. ``state_dict()`` / ``load_state_dict()`` let training
resume exactly where it stopped.
"""

from collections.abc import Iterable

from ..tensor import Tensor
from .adam import Adam
from .optimizer import Optimizer, OptimizerStateError
from .sgd import SGD

__all__ = ["SGD", "Adam", "Optimizer", "OptimizerStateError", "make_optimizer"]


def make_optimizer(
    name: str,
    params: Iterable[Tensor],
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    nesterov: bool = False,
) -> Optimizer:
    """An optimiser by name (``"sgd"`` or ``"adam"``), as used by the config files."""
    key = name.lower()
    if key == "sgd":
        return SGD(params, lr, momentum, weight_decay, nesterov)
    if key == "adam":
        return Adam(params, lr, betas, eps, weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; expected 'sgd' or 'adam'")
