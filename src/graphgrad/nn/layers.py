"""Layers: ``Linear``, ``Flatten``, ``Sequential`` and the ``MLP`` built from them.

A linear layer of T units computes o_t = w_t · x + b_t for every sample at once:
x (S, in) -> x W^T + b (S, out), W of shape (out, in) as in PyTorch, through the engine's
fused ``linear`` op (one GEMM and an in-place bias add).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from .. import _backend, _memory
from .._state import check_int, default_generator
from ..errors import ShapeError
from ..tensor import Tensor, as_tensor, linear, reshape
from . import init as I
from .activations import Activation, get_activation
from .module import Module

__all__ = ["MLP", "Flatten", "Linear", "Sequential"]


class Linear(Module):
    """o = x W^T + b: x (..., in_features) -> (..., out_features).

    Args:
        in_features: the input size (fan-in).
        out_features: the number of units T (or H for a hidden layer).
        bias: learn the bias b (initialised to 0).
        rng: the generator the weights are drawn from; if None, the global generator
            (``gg.manual_seed(n)`` makes it reproducible).
        std: σ of the N(0, σ) weights; by default chosen by ``init`` and ``activation``.
        init: ``"auto"``, ``"he"``, ``"lecun"`` or ``"xavier"`` (see :mod:`graphgrad.nn.init`).
        activation: the activation that follows this layer (its gain sets σ with ``"auto"``).
        dtype: float32 (default) or float64.
        device: where the parameters live (``"cpu"``, ``"cuda"``, ``"array-api-strict"``
            ...; default cpu). The weights are drawn on the host from ``rng`` and copied
            there, so a seed gives the same weights on every device.

    Attributes:
        weight: (out_features, in_features).
        bias: (out_features,) or None.
    """

    weight: Tensor
    bias: Tensor | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        rng: np.random.Generator | None = None,
        std: float | None = None,
        init: str = "auto",
        activation: str | Activation = "identity",
        dtype: DTypeLike = np.float32,
        device: str | _backend.Device | None = None,
    ) -> None:
        super().__init__()
        dev = _backend.parse_device(device)
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            check_int("Linear", name, v, 1)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        gen = rng if rng is not None else default_generator()
        shape = (self.out_features, self.in_features)
        if std is None:
            act = get_activation(activation)
            std = I.init_std(shape, act.name, init, act.param)
        self.weight = _parameter(I.normal(shape, gen, std, dtype, device=dev))
        self.bias = (
            _parameter(I.zeros((self.out_features,), dtype=dtype, device=dev)) if bias else None
        )

    def forward(self, x: Any) -> Tensor:
        return linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


def _parameter(arr: Any) -> Tensor:
    """A Tensor with requires_grad holding ``arr`` (an array of any namespace, kept where it
    is). A NumPy array is copied to start on a cache line where it does not
    (:func:`graphgrad._memory.aligned`): the update kernels stream through it fastest there."""
    if type(arr) is np.ndarray:
        arr = _memory.aligned(arr)
    return Tensor(arr, requires_grad=True)


class Flatten(Module):
    """(S, d1, d2, ...) -> (S, d1·d2·...): images to vectors (no parameters)."""

    def forward(self, x: Any) -> Tensor:
        t = as_tensor(x)
        if t.ndim < 2:  # (a (784,) image would become 784 samples of one pixel)
            raise ShapeError(
                f"Flatten: input of shape {t.shape} has no sample axis; it takes (S, d1, ...) "
                f"(one sample: x[None], or x.reshape(1, -1))"
            )
        return reshape(t, (t.shape[0], -1)) if t.ndim != 2 else t


class Sequential(Module):
    """Modules applied one after the other; they are named ``"0"``, ``"1"``, ... so the
    parameter names (``"0.weight"``) match PyTorch's ``nn.Sequential``."""

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> Sequential:
        """Add ``module`` at the end; returns self."""
        self.add_module(str(len(self._modules)), module)
        return self

    def forward(self, x: Any) -> Any:
        for m in self._modules.values():
            x = m(x)
        return x

    def __getitem__(self, i: int) -> Module:
        mods = list(self._modules.values())
        return mods[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())


class MLP(Sequential):
    """A multi-layer perceptron: Linear, activation, Linear, activation, ..., Linear.

    ``MLP(784, [256, 256], 10)`` is the Sequential
    ``0: Linear(784, 256), 1: ReLU, 2: Linear(256, 256), 3: ReLU, 4: Linear(256, 10)``,
    so its parameters are ``0.weight, 0.bias, 2.weight, ...`` exactly as for the same
    ``torch.nn.Sequential``. ``hidden=[]`` gives a linear classifier ``0: Linear(in, out)``.
    Input (S, in_features), output (S, out_features) (logits, no final activation).

    Args:
        in_features: D, the input size.
        hidden: the hidden layer sizes H_1, H_2, ...
        out_features: T, the number of outputs.
        activation: name of the hidden activation (see :func:`get_activation`) or a module.
        init: ``"auto"`` (hidden layers: σ = gain(activation)/sqrt(fan_in), i.e. He for ReLU;
            the output layer, followed by no activation: LeCun), ``"he"``, ``"lecun"``,
            ``"xavier"``, or ``"normal"`` (every weight N(0, ``std``)).
        std: σ for ``init="normal"``.
        bias: give every Linear a bias.
        rng: the generator all weights are drawn from, layer by layer; if None, the global
            generator (``gg.manual_seed(n)`` makes it reproducible).
        dtype: float32 (default) or float64.
        device: where the parameters live (default cpu); the same seed gives the same weights
            on every device.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        activation: str | Activation = "relu",
        *,
        init: str = "auto",
        std: float | None = None,
        bias: bool = True,
        rng: np.random.Generator | None = None,
        dtype: DTypeLike = np.float32,
        device: str | _backend.Device | None = None,
    ) -> None:
        super().__init__()
        dev = _backend.parse_device(device)
        if init == "normal" and std is None:
            raise ValueError("MLP: init='normal' needs std")
        if init not in (*I.SCHEMES, "normal"):
            raise ValueError(
                f"MLP: unknown init {init!r}; expected one of {(*I.SCHEMES, 'normal')}"
            )
        gen = rng if rng is not None else default_generator()
        act = get_activation(activation)
        sizes = [int(in_features), *(int(h) for h in hidden), int(out_features)]
        self.sizes = tuple(sizes)
        self.activation_name = act.name if act.param is None else f"{act.name}:{act.param}"
        for k in range(len(sizes) - 1):
            last = k == len(sizes) - 2
            layer_std = std if init == "normal" else None
            self.append(
                Linear(
                    sizes[k],
                    sizes[k + 1],
                    bias,
                    rng=gen,
                    std=layer_std,
                    init="auto" if init == "normal" else init,
                    activation="identity" if last else act,
                    dtype=dtype,
                    device=dev,
                )
            )
            if not last:
                self.append(get_activation(activation) if isinstance(activation, str) else act)

    def linear_layers(self) -> list[Linear]:
        """The Linear layers, input first."""
        return [m for m in self if isinstance(m, Linear)]
