"""Neural network building blocks: modules, layers, activations, initialisation.

``gg.nn.MLP(784, [256, 256], 10)`` is a callable model whose parameters are named as in
PyTorch (``0.weight`` ...); ``gg.nn.init`` holds the initialisers; ``gg.nn.functional``
the activations, losses and metrics as functions.
"""

from . import functional, init
from .activations import (
    ACTIVATIONS,
    ELU,
    Activation,
    Identity,
    LeakyReLU,
    ReLU,
    Sigmoid,
    Tanh,
    get_activation,
)
from .functional import accuracy, confusion_matrix
from .layers import MLP, Flatten, Linear, Sequential
from .module import Module, StateDictError

__all__ = [
    "ACTIVATIONS",
    "ELU",
    "MLP",
    "Activation",
    "Flatten",
    "Identity",
    "LeakyReLU",
    "Linear",
    "Module",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "StateDictError",
    "Tanh",
    "accuracy",
    "confusion_matrix",
    "functional",
    "get_activation",
    "init",
]
