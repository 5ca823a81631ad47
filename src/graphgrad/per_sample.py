"""Per-sample gradients: the S individual ∇H(o^s, f(x^s; θ)) of a mini-batch in one pass.

The loss of a mini-batch is the mean of the samples' losses, L(θ) = (1/S) Σ_s H_s(θ), so its
gradient is the mean of S per-sample gradients ∇H_s. Backpropagation computes that mean
directly; the individual ∇H_s are hidden inside it. For a linear layer z = x W^T + b they are
easy to recover: one backward pass gives every sample's output gradient g_s = ∂H_s/∂z_s
(row s of S · ∂L/∂z, since only H_s depends on z_s), and then

    ∂H_s/∂W = g_s x_s^T   (an outer product, (out, in))       ∂H_s/∂b = g_s   ((out,))

for all s at once, without a loop over samples. Summing them over s gives back the batched
gradient S · ∂L/∂W: the batched backward pass is the same computation with the sum taken
inside the matrix product.

:func:`per_sample_grads` does this for any model whose parameters all belong to
:class:`~graphgrad.nn.Linear` layers (``Linear``, activations, ``Sequential``, ``MLP`` and
modules composed of them) and which treats the samples of a batch independently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._backend import is_numpy, namespace_of
from ._engine import run_backward
from ._state import enable_grad
from .nn.layers import Linear
from .nn.module import Module
from .tensor import Tensor, as_tensor, linear

__all__ = ["per_sample_grads"]


class _Tap:
    """Records the inputs and outputs of one Linear layer's calls during a forward pass."""

    def __init__(self, layer: Linear) -> None:
        self.layer = layer
        self.inputs: list[np.ndarray] = []
        self.outputs: list[Tensor] = []

    def forward(self, x: Any) -> Tensor:
        t = as_tensor(x)
        layer = self.layer
        # Constant copies of W and b: the pass must not form ∂L/∂W (a GEMM per layer that
        # this function replaces by its per-sample terms).
        w = Tensor(layer.weight.data)
        b = Tensor(layer.bias.data) if layer.bias is not None else None
        z = linear(t, w, b)
        if not z.requires_grad:  # the first layer: x and W are constants here
            z = z + Tensor(_zeros(z.data, ()), requires_grad=True)
        self.inputs.append(t.data)
        self.outputs.append(z)
        return z


def per_sample_grads(
    model: Module,
    loss_fn: Callable[[Tensor, Any], Tensor],
    x: Any,
    y: Any,
    *,
    reduction: str = "mean",
) -> dict[str, Any]:
    """The gradient of each sample's loss H_s with respect to every parameter, in one pass.

    Args:
        model: maps x (S, ..., D) to outputs (S, ...); its parameters must all be weights and
            biases of :class:`~graphgrad.nn.Linear` layers, and sample s's output must depend
            on x[s] alone (true of Linear, activations, Sequential, MLP).
        loss_fn: ``loss_fn(model(x), y)`` -> a 0-d Tensor: the mean (or, with
            ``reduction="sum"``, the sum) over the S samples of the per-sample losses H_s,
            e.g. :func:`~graphgrad.cross_entropy` or :func:`~graphgrad.mse_loss`.
        x: (S, ..., D) inputs.
        y: targets, whatever ``loss_fn`` takes (for S samples).
        reduction: how ``loss_fn`` combines the samples: ``"mean"`` or ``"sum"``.

    Returns:
        Parameter name (as in ``model.named_parameters()``) -> array of shape
        (S, *param.shape): entry s is ∇H_s. Their mean over axis 0 is the gradient of the mean
        loss that ``loss.backward()`` gives. The arrays are on the model's device (NumPy
        arrays on the cpu device; on another device, x and y must be there too, as for
        ``model(x)``). The parameters' ``.grad`` are left untouched.

    Raises:
        ValueError: a parameter outside a Linear layer (named); a Linear weight or bias used
            outside its layer's own call (tied weights, a penalty on it in the loss: named),
            whose per-sample gradients this pass cannot recover; an unknown ``reduction``;
            an empty batch.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"per_sample_grads: reduction must be 'mean' or 'sum', got {reduction!r}")
    layers = [m for _, m in model.named_modules() if isinstance(m, Linear)]
    owned = {id(p) for m in layers for p in (m.weight, m.bias) if p is not None}
    outside = [n for n, p in model.named_parameters() if id(p) not in owned]
    if outside:
        raise ValueError(
            f"per_sample_grads: parameter(s) {', '.join(outside)} of {type(model).__name__} do "
            "not belong to a Linear layer; only models whose parameters are Linear weights and "
            "biases are supported"
        )
    if np.shape(x.data if isinstance(x, Tensor) else x)[:1] == (0,):
        raise ValueError("per_sample_grads: the batch is empty (S = 0)")
    taps = [_Tap(m) for m in layers]
    for tap in taps:  # an instance attribute shadows the class's forward for this pass
        object.__setattr__(tap.layer, "forward", tap.forward)
    try:
        with enable_grad():
            out = model(x)
            loss = loss_fn(out, y)
    finally:
        for tap in taps:
            object.__delattr__(tap.layer, "forward")
    if not isinstance(loss, Tensor) or loss.data.size != 1:
        raise ValueError(
            f"per_sample_grads: loss_fn must return a single number, got "
            f"{getattr(loss, 'shape', type(loss).__name__)}"
        )
    s = _num_samples(taps)
    zs = [z for tap in taps for z in tap.outputs]
    grads_z: list[Any] = [None] * len(zs)
    if zs and loss.requires_grad:
        # Seed S for a mean: row s of ∂(S·L)/∂z is then ∂H_s/∂z_s itself.
        xp = namespace_of(loss.data)
        seed = xp.full_like(loss.data, s if reduction == "mean" else 1)
        # The taps computed with constant copies of W and b, so the real parameters get a
        # gradient only where the model or the loss uses them outside their layer's call: a
        # part of ∂H_s/∂W that the per-sample terms below do not hold.
        real = [p for _, p in model.named_parameters() if p.requires_grad]
        grads = run_backward(loss, seed, wrt=[*zs, *real]) or [None] * (len(zs) + len(real))
        grads_z = grads[: len(zs)]
        used = {id(p) for p, g in zip(real, grads[len(zs) :], strict=True) if g is not None}
        if used:
            names = [n for n, p in model.named_parameters() if id(p) in used]
            what = (
                f"parameter {names[0]} of {type(model).__name__} is used outside its Linear "
                "layer's call"
                if len(names) == 1
                else f"parameters {', '.join(names)} of {type(model).__name__} are used "
                "outside their Linear layers' calls"
            )
            raise ValueError(
                f"per_sample_grads: {what} (a tied weight, a penalty on the weight in the "
                "loss ...); per_sample_grads recovers per-sample gradients only from the "
                "layers' own calls and would miss that part: compute them with one backward "
                "pass per sample instead"
            )
    by_param: dict[int, Any] = {}
    k = 0
    for tap in taps:
        layer = tap.layer
        gw: Any = None
        gb: Any = None
        for xin in tap.inputs:
            g = grads_z[k]
            k += 1
            if g is None:  # this call's output does not reach the loss
                continue
            w_s, b_s = _per_sample_terms(g, xin, layer, s)
            if is_numpy(namespace_of(w_s)):
                gw = w_s if gw is None else np.add(gw, w_s, out=gw)
                gb = b_s if gb is None else np.add(gb, b_s, out=gb)
            else:
                gw = w_s if gw is None else gw + w_s
                gb = b_s if gb is None else gb + b_s
        if gw is None or gb is None:
            gw = _zeros(layer.weight.data, (s, *layer.weight.shape))
            gb = _zeros(layer.weight.data, (s, layer.out_features))
        by_param[id(layer.weight)] = gw
        if layer.bias is not None:
            by_param[id(layer.bias)] = gb
    return {name: by_param[id(p)] for name, p in model.named_parameters()}


def _zeros(like: Any, shape: tuple[int, ...]) -> Any:
    """Zeros of ``shape``, of ``like``'s dtype, namespace and device."""
    if type(like) is np.ndarray:
        return np.zeros(shape, dtype=like.dtype)
    xp = namespace_of(like)
    return xp.zeros(shape, dtype=like.dtype, device=like.device)


def _per_sample_terms(g: Any, xin: Any, layer: Linear, s: int) -> tuple[Any, Any]:
    """One call of ``layer``: its output gradient ``g`` ((S, ..., out), row s = ∂H_s/∂z_s)
    and input ``xin`` ((S, ..., in)) -> (∂H_s/∂W (S, out, in), ∂H_s/∂b (S, out)), summed over
    the positions inside each sample; in ``g``'s namespace, of the weight's dtype."""
    dtype = layer.weight.data.dtype
    if type(g) is np.ndarray:
        g = np.asarray(g, dtype=dtype).reshape(s, -1, layer.out_features)
        xs = np.asarray(xin, dtype=dtype).reshape(s, -1, layer.in_features)
        if g.shape[1] == 1:  # (S, D) inputs: one outer product g_s x_s^T per sample
            w_s = g[:, 0, :, None] * xs[:, 0, None, :]
        else:  # (S, ..., D): summed over the positions inside each sample
            w_s = np.matmul(g.transpose(0, 2, 1), xs)
        return w_s, g.sum(axis=1)
    xp = namespace_of(g)  # another array namespace (array-api-strict, CuPy ...)
    g = xp.reshape(xp.astype(g, dtype, copy=False), (s, -1, layer.out_features))
    xs = xp.reshape(xp.astype(xin, dtype, copy=False), (s, -1, layer.in_features))
    if g.shape[1] == 1:
        w_s = xp.expand_dims(g[:, 0, :], axis=2) * xp.expand_dims(xs[:, 0, :], axis=1)
    else:
        w_s = xp.matmul(xp.permute_dims(g, (0, 2, 1)), xs)
    return w_s, xp.sum(g, axis=1)


def _num_samples(taps: list[_Tap]) -> int:
    """S, the batch size every Linear layer saw (checked to agree)."""
    inputs = [xin for tap in taps for xin in tap.inputs]
    if not inputs:
        raise ValueError("per_sample_grads: the model called none of its Linear layers")
    first = inputs[0]
    if first.ndim < 2:
        raise ValueError(
            f"per_sample_grads: inputs must be batched, (S, ..., D); a Linear layer got shape "
            f"{first.shape}"
        )
    s = int(first.shape[0])
    if s == 0:
        raise ValueError("per_sample_grads: the batch is empty (S = 0)")
    for xin in inputs:
        if xin.ndim < 2 or xin.shape[0] != s:
            raise ValueError(
                f"per_sample_grads: the Linear layers see inputs of shapes {first.shape} and "
                f"{xin.shape}; the model must keep the sample axis first"
            )
    return s
