"""Stochastic gradient descent with momentum and weight decay (PyTorch's formulation)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .. import _fused
from ..tensor import Tensor
from .optimizer import Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    """θ ← θ − lr · v, with, per step and parameter (g = ∇L(θ)):

    =================  ====================================================
    weight decay       g ← g + weight_decay · θ
    momentum μ > 0     v ← g at the first step, then v ← μ · v + g
    nesterov           the step uses g + μ · v instead of v
    momentum 0         v = g (plain SGD)
    =================  ====================================================

    Updates the parameters' arrays in place; gradients of ``None`` are skipped.

    Args:
        params: the parameters (e.g. ``model.parameters()``).
        lr: the learning rate.
        momentum: μ in [0, 1).
        weight_decay: the L2 coefficient added to the gradient.
        nesterov: Nesterov momentum (needs momentum > 0).
    """

    hyper_names = ("lr", "momentum", "weight_decay", "nesterov")
    state_names = ("momentum_buffer",)

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(params, lr)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"SGD: weight_decay must be >= 0, got {weight_decay}")
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov needs momentum > 0")
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.nesterov = bool(nesterov)

    def step(self) -> None:
        lr, mu, wd, nesterov = self.lr, self.momentum, self.weight_decay, self.nesterov
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            if not p.data.flags.writeable:
                raise self._read_only(i)
            v = None
            first = False
            if mu:
                st = self.state.setdefault(i, {})
                v = st.get("momentum_buffer")
                if v is None:
                    v = st["momentum_buffer"] = np.empty_like(p.data)
                    first = True
            _fused.sgd(p.data, g, v, self._scratch_for(i, p), lr, mu, wd, nesterov, first)
