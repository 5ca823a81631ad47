"""Adam (Kingma & Ba, 2015), in PyTorch's formulation, with optional L2 weight decay."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from .. import _backend, _fused
from ..tensor import Tensor
from .optimizer import Optimizer, on_device_of, state_like, updates_for

__all__ = ["Adam"]


class Adam(Optimizer):
    """Per step t and parameter θ (g = ∇L(θ), m and v start at 0):

        g ← g + weight_decay · θ                      (if weight_decay)
        m ← β1 · m + (1 − β1) · g                     first moment
        v ← β2 · v + (1 − β2) · g²                    second moment
        θ ← θ − (lr / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)

    which is the bias-corrected update m̂ / (sqrt(v̂) + eps) written as PyTorch computes it.
    Parameters are updated in place; gradients of ``None`` are skipped. On NumPy arrays one
    compiled kernel call updates every parameter (each as its own pass; subnormal numbers
    flushed to zero, as :class:`SGD`'s kernel does); on CuPy one
    ``ElementwiseKernel`` launch; on another array API namespace in-place ``xp`` expressions
    (see :class:`SGD`).

    Args:
        params: the parameters.
        lr: the learning rate (1e-3 is the usual start).
        betas: (β1, β2).
        eps: added to sqrt(v̂) for stability.
        weight_decay: the L2 coefficient added to the gradient.
    """

    hyper_names = ("lr", "betas", "eps", "weight_decay")
    state_names = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        b1, b2 = (float(b) for b in betas)
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"Adam: betas must be in [0, 1), got {betas}")
        if not eps > 0:
            raise ValueError(f"Adam: eps must be > 0, got {eps}")
        if weight_decay < 0:
            raise ValueError(f"Adam: weight_decay must be >= 0, got {weight_decay}")
        self.betas = (b1, b2)
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)

    def step(self) -> None:
        lr, (b1, b2), eps, wd = self.lr, self.betas, self.eps, self.weight_decay
        many = getattr(_fused.KERNELS, "adam_many", None)
        at: list[int] = []
        ws: list[np.ndarray] = []
        gs: list[np.ndarray] = []
        ms: list[np.ndarray] = []
        vs: list[np.ndarray] = []
        steps: list[int] = []
        try:
            for i, p in enumerate(self.params):
                g = p.grad
                if g is None:
                    continue
                if type(g) is not np.ndarray or g.shape != p.data.shape:
                    g = self._grad_array(i, p)  # a Tensor's values, or a shape error
                w = p.data
                numpy = type(w) is np.ndarray
                if numpy and not w.flags.writeable:
                    raise self._read_only(i)
                st = self.state.get(i)
                if st is None:
                    st = self.state[i] = {
                        "step": 0,
                        "exp_avg": state_like(w),
                        "exp_avg_sq": state_like(w),
                    }
                elif not numpy or type(st["exp_avg"]) is not np.ndarray:
                    st["exp_avg"] = on_device_of(st["exp_avg"], w)
                    st["exp_avg_sq"] = on_device_of(st["exp_avg_sq"], w)
                st["step"] += 1
                m, v = st["exp_avg"], st["exp_avg_sq"]
                if numpy and type(g) is np.ndarray:
                    if many is not None:  # in one kernel call after the loop (the same bits)
                        at.append(i)
                        ws.append(w)
                        gs.append(g)
                        ms.append(m)
                        vs.append(v)
                        steps.append(st["step"])
                        continue
                    _fused.adam(
                        w, g, m, v, self._scratch_for(i, p), lr, b1, b2, eps, wd, st["step"]
                    )
                    continue
                t = st["step"]
                xp = _backend.namespace_of(w)
                bc1, bc2_sqrt = 1.0 - b1**t, math.sqrt(1.0 - b2**t)
                updates_for(xp).adam(w, g, m, v, xp, lr, b1, b2, eps, wd, bc1, bc2_sqrt)
        finally:  # (also when a parameter raises: those before it are updated, as alone)
            if at:
                assert many is not None
                for k in many(ws, gs, ms, vs, steps, lr, b1, b2, eps, wd):  # what it left alone
                    scratch = self._scratch_for(at[k], self.params[at[k]])
                    _fused.adam(ws[k], gs[k], ms[k], vs[k], scratch, lr, b1, b2, eps, wd, steps[k])
