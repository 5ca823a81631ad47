"""Ops fused for numerical stability: softmax, log-softmax, softmax cross-entropy.

All subtract the row maximum before ``exp``, so no logit is too large (a plain composition of
``exp`` / ``sum`` / ``log`` overflows for logits around 90 in float32).

Forwards compute with the namespace of their inputs. Cross-entropy's compiled passes
(``_fused.xent_forward``, the ``fast=`` VJP) are selected for NumPy arrays only; the portable
twin beside each (the standard's ``take_along_axis`` and a one-hot comparison) serves the others.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _fused
from .._backend import dtype_kind, namespace_of
from .._state import GRAD_ENABLED
from ._registry import defop

_ND = np.ndarray  # the NumPy fast path of every forward: ``type(x) is _ND``


def _axes(axis: int | tuple[int, ...]) -> tuple[int, ...]:
    return axis if isinstance(axis, tuple) else (axis,)


def _softmax_vjp(xp: Any, g: Any, ans: Any, x: Any, axis: int | tuple[int, ...] = -1) -> Any:
    return ans * (g - xp.sum(g * ans, axis=_axes(axis), keepdims=True))


@defop(
    "softmax",
    ("x",),
    "exp(x_i) / sum_j exp(x_j)",
    ("s_i (delta_ij - s_j)",),
    _softmax_vjp,
    category="fused",
    note="fused for stability",
)
def softmax(x: Any, axis: int | tuple[int, ...] = -1) -> Any:
    """Normalised over ``axis``: one axis, or several together (a tuple)."""
    xp = np if type(x) is _ND else namespace_of(x)
    if x.size == 0:  # nothing to normalise (np.max refuses an empty axis)
        return xp.zeros_like(x)
    z = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    z /= xp.sum(z, axis=axis, keepdims=True)
    return z


def _log_softmax_vjp(xp: Any, g: Any, ans: Any, x: Any, axis: int | tuple[int, ...] = -1) -> Any:
    return g - xp.exp(ans) * xp.sum(g, axis=_axes(axis), keepdims=True)


@defop(
    "log_softmax",
    ("x",),
    "x_i - ln sum_j exp(x_j)",
    ("delta_ij - softmax(x)_j",),
    _log_softmax_vjp,
    category="fused",
    note="fused for stability",
)
def log_softmax(x: Any, axis: int | tuple[int, ...] = -1) -> Any:
    """Normalised over ``axis``: one axis, or several together (a tuple)."""
    xp = np if type(x) is _ND else namespace_of(x)
    if x.size == 0:
        return xp.zeros_like(x)
    z = x - xp.max(x, axis=axis, keepdims=True)
    z -= xp.log(xp.sum(xp.exp(z), axis=axis, keepdims=True))
    return z


def _targets(labels: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """Integer labels (S,) as one-hot rows (S, T); probability rows (S, T) as they are."""
    if type(labels) is np.ndarray:
        if labels.dtype.kind in "iu":
            t = np.zeros(shape, dtype=dtype)
            t[np.arange(shape[0]), labels] = 1
            return t
        return labels.astype(dtype, copy=False)
    xp = namespace_of(labels)  # the portable twin: no fancy __setitem__ in the standard
    if dtype_kind(labels.dtype) in "iu":
        classes = xp.arange(shape[1], dtype=labels.dtype, device=labels.device)
        return xp.astype(labels[:, None] == classes[None, :], dtype)
    return xp.astype(labels, dtype, copy=False)


def _ce_vjp(xp: Any, g: Any, ans: Any, x: Any, labels: Any) -> Any:
    xr = xp.raw(x)
    ns = namespace_of(xr)
    if xr.shape[0] == 0:  # no samples: the gradient is empty, as the logits are
        return xp.const(ns.zeros_like(xr))
    lr = xp.raw(labels)
    if lr is not labels and dtype_kind(lr.dtype) == "f":
        # a recorded pass (create_graph=True) with target probabilities: they are a node of
        # it, so that d/dt of this gradient is there too
        total_t = xp.sum(labels, axis=(1,), keepdims=True)
        return (xp.softmax(x, -1) * total_t - labels) * (g * (1.0 / xr.shape[0]))
    t = _targets(lr, xr.shape, xr.dtype)
    total = ns.sum(t, axis=1, keepdims=True)  # 1 per row for labels and proper distributions
    return (xp.softmax(x, -1) * xp.const(total) - xp.const(t)) * (g * (1.0 / xr.shape[0]))


def _ce_dtargets(xp: Any, g: Any, ans: Any, x: Any, labels: Any) -> Any:
    # target probabilities t (integer labels never require a gradient):
    # d/dt of -(1/S) sum_s t_s . ln softmax(x_s) is -(1/S) ln softmax(x)
    xr = xp.raw(x)
    if xr.shape[0] == 0:
        return xp.const(namespace_of(xr).zeros_like(xr))
    return xp.log_softmax(x, -1) * (g * (-1.0 / xr.shape[0]))


def _ce_fast(g: Any, ans: Any, x: Any, labels: Any) -> Any:
    # fast= variants run on NumPy arrays only (the engine's rule)
    if labels.dtype.kind in "iu" and np.ndim(g) == 0 and x.shape[0]:
        # one compiled pass, or none: the gradient the forward computed beside the loss
        return _fused.xent_backward(x, labels, float(g) / x.shape[0], ans)
    return None  # (also where the kernel is not built): the rule


@defop(
    "cross_entropy",
    ("logits", "labels"),
    "-(1/S) sum_s ln softmax(x^s)[y^s]",
    ("(softmax(x) - onehot(y)) / S", "-(1/S) ln softmax(x)"),
    _ce_vjp,
    _ce_dtargets,
    kinks="integer labels are data (no gradient); target probabilities get -(1/S) ln softmax(x)",
    category="fused",
    note="log-softmax fused with the loss for stability; mean over the S samples",
    fast=(_ce_fast, None),
)
def cross_entropy(x: Any, labels: Any) -> Any:
    if type(x) is not np.ndarray:
        return _cross_entropy_any(x, labels)
    if x.shape[0] == 0:  # the mean over no samples: NaN (0/0), as in PyTorch, no warning
        return np.array(np.nan, dtype=x.dtype)
    if labels.dtype.kind in "iu" and x.shape[0]:
        # one compiled pass, or None: NumPy below; where a backward pass may follow, the
        # same pass computes the gradient too, kept for it
        loss = _fused.xent_forward(x, labels, keep=GRAD_ENABLED.get())
        if loss is not None:
            return loss
    z = x - np.max(x, axis=1, keepdims=True)
    z -= np.log(np.sum(np.exp(z), axis=1, keepdims=True))
    if labels.dtype.kind in "iu":
        picked = z[np.arange(x.shape[0]), labels]
        return -np.mean(picked)
    return -np.mean(np.sum(labels * z, axis=1))


def _cross_entropy_any(x: Any, labels: Any) -> Any:
    """The portable twin of the forward (any array API namespace)."""
    xp = namespace_of(x, labels)
    if x.shape[0] == 0:
        return xp.asarray(float("nan"), dtype=x.dtype, device=x.device)
    z = x - xp.max(x, axis=1, keepdims=True)
    z = z - xp.log(xp.sum(xp.exp(z), axis=1, keepdims=True))
    if dtype_kind(labels.dtype) in "iu":
        picked = xp.take_along_axis(z, xp.astype(labels, xp.int64)[:, None], axis=1)
        return -xp.mean(picked)
    return -xp.mean(xp.sum(labels * z, axis=1))
