"""Stochastic gradient descent with momentum and weight decay (PyTorch's formulation)."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .. import _backend, _engine, _fused
from ..tensor import Tensor
from .optimizer import Optimizer, on_device_of, state_like, updates_for

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
        fused_backward: add each weight gradient straight into its momentum buffer during
            ``backward()`` (PyTorch's "optimizer in backward"): for the weight of ``linear``
            with a bias (``nn.Linear(..., bias=True)``, the default) the gradient GEMM
            computes ``v = μ v + Gᵀ x`` itself (β = μ), so the gradient array is never
            written and read back, and ``step()`` only does ``θ -= lr v``; a layer without
            a bias too. Those weights' ``.grad`` stays ``None``; other parameters (biases,
            weights used elsewhere) take the ordinary path. Needs momentum > 0, no weight
            decay, no Nesterov. ``zero_grad()`` cannot undo a gradient already added:
            call ``backward()`` once per ``step()``, or several times to accumulate.
            NumPy (the ``cpu`` device) only: parameters on another device are refused here,
            and if the model is moved to another device later, its updates take the
            ordinary path (the same numbers, without the fusion).

    On NumPy arrays one compiled kernel call updates every parameter past its first step,
    each as its own pass (``sgd_many`` in ``graphgrad._kernels``; it flushes subnormal
    numbers, below 1.2e-38 in float32, to zero, where the NumPy twin, which runs without
    the compiled kernels, keeps them); on
    CuPy one ``ElementwiseKernel`` launch (:mod:`graphgrad.optim.cupy_updates`); on any other
    array API namespace in-place ``xp`` expressions (:mod:`graphgrad.optim.xp_updates`).
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
        fused_backward: bool = False,
    ) -> None:
        super().__init__(params, lr)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"SGD: weight_decay must be >= 0, got {weight_decay}")
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov needs momentum > 0")
        if fused_backward and (momentum == 0 or weight_decay or nesterov):
            raise ValueError(
                "SGD: fused_backward needs momentum > 0, weight_decay 0 and nesterov False"
            )
        if fused_backward:
            for i, p in enumerate(self.params):
                if type(p.data) is not np.ndarray:
                    raise ValueError(
                        f"SGD: fused_backward runs on the cpu device (NumPy) only; parameter "
                        f"#{i} is on {_backend.device_of(p.data)}: use fused_backward=False there"
                    )
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.nesterov = bool(nesterov)
        self.fused_backward = bool(fused_backward)
        self._taken: set[int] = set()  # parameters whose gradient went into their buffer
        if fused_backward:
            keys = [id(p) for p in self.params]
            for k in keys:
                other = _engine.GRAD_SINKS.get(k)
                if other is not None and other.alive():
                    raise ValueError("SGD: a parameter already has a fused_backward optimiser")
            me = weakref.ref(self)
            for i, p in enumerate(self.params):
                _engine.GRAD_SINKS[id(p)] = _MomentumSink(me, i, p)
            weakref.finalize(self, _drop_sinks, keys)

    def _take(self, i: int, p: Tensor, rule: Callable[..., bool], g: Any, args: Any) -> bool:
        """Add parameter ``i``'s gradient into its momentum buffer with ``rule`` (an op's
        ``vjp_into``): v = μ v + ∇ at the first contribution after a step, v += ∇ after."""
        st = self.state.setdefault(i, {})
        v = st.get("momentum_buffer")
        if v is None:
            v = st["momentum_buffer"] = state_like(p.data)
            beta = 0.0  # the first step: v = ∇, as in the unfused update
        else:
            beta = 1.0 if i in self._taken else self.momentum
        if not rule(g, args, v, beta):
            return False
        self._taken.add(i)
        return True

    def step(self) -> None:
        lr, mu, wd, nesterov = self.lr, self.momentum, self.weight_decay, self.nesterov
        taken, state = self._taken, self.state
        # every NumPy parameter past its first step in one kernel call after the loop (the
        # same kernel, the same bits); the others, and any it declines, one by one
        many = getattr(_fused.KERNELS, "sgd_many", None)
        at: list[int] = []
        ws: list[Any] = []
        gs: list[Any] = []
        vs: list[Any] = []
        try:
            for i, p in enumerate(self.params):
                g = p.grad
                if type(g) is not np.ndarray and g is not None:
                    g = self._grad_array(i, p)  # a Tensor's values (or a shape error)
                if i in taken:  # backward already did v = μ v + ∇ (fused_backward)
                    if not p.data.flags.writeable:
                        raise self._read_only(i)
                    v = state[i]["momentum_buffer"]
                    if g is not None:
                        if g.shape != v.shape:
                            self._grad_array(i, p)  # (raises: a gradient of another shape)
                        v += g  # a part of the gradient that took the ordinary path
                    scratch = self._scratch_for(i, p)
                    _fused.sgd(p.data, v, None, scratch, lr, 0.0, 0.0, False, False)
                    continue
                if g is None:
                    continue
                w = p.data
                if many is not None:
                    if mu:
                        st = state.get(i)
                        v = None if st is None else st.get("momentum_buffer")
                    else:
                        v = w  # (not read when mu == 0)
                    if type(v) is np.ndarray:  # (None: the first step; or another device)
                        at.append(i)
                        ws.append(w)
                        gs.append(g)
                        vs.append(v)
                        continue
                self._update(i, p, g)
        finally:  # (also when a parameter raises: those before it are updated, as alone)
            if at:
                assert many is not None
                for k in many(ws, gs, vs, lr, mu, wd, nesterov):
                    self._update(at[k], self.params[at[k]], gs[k])
        taken.clear()

    def _update(self, i: int, p: Tensor, g: Any) -> None:
        """Parameter ``i``'s update from its gradient ``g``, one call (creating its momentum
        buffer at the first step)."""
        lr, mu, wd, nesterov = self.lr, self.momentum, self.weight_decay, self.nesterov
        w = p.data
        if tuple(g.shape) != tuple(w.shape):  # (sgd_many declines it: it lands here)
            self._grad_array(i, p)  # raises, naming both shapes
        numpy = type(w) is np.ndarray
        if numpy and not w.flags.writeable:
            raise self._read_only(i)
        v = None
        first = False
        if mu:
            st = self.state.setdefault(i, {})
            v = st.get("momentum_buffer")
            if v is None:
                v = st["momentum_buffer"] = state_like(w, zero=False)
                first = True
            elif not numpy or type(v) is not np.ndarray:
                v = st["momentum_buffer"] = on_device_of(v, w)
        if numpy and type(g) is np.ndarray:
            _fused.sgd(w, g, v, self._scratch_for(i, p), lr, mu, wd, nesterov, first)
        else:
            updates_for(_backend.namespace_of(w)).sgd(w, g, v, lr, mu, wd, nesterov, first)


class _MomentumSink:
    """The engine's gradient sink for one parameter of an ``SGD(fused_backward=True)``."""

    __slots__ = ("_i", "_opt", "_param")

    def __init__(self, opt: weakref.ref[SGD], i: int, p: Tensor) -> None:
        self._opt, self._i, self._param = opt, i, p  # dropped with the optimiser

    def alive(self) -> bool:
        return self._opt() is not None

    def take(self, inp: Any, op: Any, i: int, g: Any, args: Any, params: Any) -> bool:
        rules = op.vjp_into
        rule = rules.get(i) if rules else None
        opt, p = self._opt(), self._param
        if rule is None or opt is None or p is not inp or params:
            return False
        if type(p.data) is not np.ndarray or type(g) is not np.ndarray:
            return False  # moved off the CPU: the ordinary path (same numbers, not fused)
        return opt._take(self._i, p, rule, g, args)


def _drop_sinks(keys: list[int]) -> None:
    for k in keys:
        sink = _engine.GRAD_SINKS.get(k)
        if sink is not None and not sink.alive():
            del _engine.GRAD_SINKS[k]
