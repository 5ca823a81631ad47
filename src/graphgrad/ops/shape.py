"""Shape ops: they move numbers around without changing them, so their rules move ``g`` back.

``to_device`` belongs here too: it moves numbers to another device (its rule moves ``g`` back).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _backend
from .._backend import namespace_of
from . import _xp
from ._registry import Op, defop, register

_ND = np.ndarray  # the NumPy fast path of every forward: ``type(x) is _ND``


def _reshape_vjp(xp: Any, g: Any, ans: Any, x: Any, shape: Any = None) -> Any:
    return xp.reshape(g, xp.raw(x).shape)


@defop(
    "reshape",
    ("x",),
    "x viewed with a new shape",
    ("1",),
    _reshape_vjp,
    aliases=True,
    category="shape",
)
def reshape(x: Any, shape: Any = None) -> Any:
    if type(x) is _ND:
        return np.reshape(x, shape)
    return namespace_of(x).reshape(x, tuple(shape))


def _transpose_vjp(xp: Any, g: Any, ans: Any, x: Any, axes: Any = None) -> Any:
    inverse = None if axes is None else tuple(sorted(range(len(axes)), key=list(axes).__getitem__))
    return xp.transpose(g, inverse)


@defop(
    "transpose",
    ("x",),
    "x with its axes permuted",
    ("1",),
    _transpose_vjp,
    aliases=True,
    category="shape",
)
def transpose(x: Any, axes: Any = None) -> Any:
    if type(x) is _ND:
        return np.transpose(x, axes)
    perm = tuple(range(x.ndim - 1, -1, -1)) if axes is None else tuple(axes)
    return namespace_of(x).permute_dims(x, perm)


def _broadcast_vjp(xp: Any, g: Any, ans: Any, x: Any, shape: Any = None) -> Any:
    return xp.sum_to(g, xp.raw(x).shape)


@defop(
    "broadcast_to",
    ("x",),
    "x repeated along new or size-1 axes",
    ("1 (summed back)",),
    _broadcast_vjp,
    aliases=True,
    category="shape",
)
def broadcast_to(x: Any, shape: Any = None) -> Any:
    xp = np if type(x) is _ND else namespace_of(x)
    return xp.broadcast_to(x, tuple(shape))


def _sum_to_vjp(xp: Any, g: Any, ans: Any, x: Any, shape: Any = None) -> Any:
    return xp.broadcast_to(g, xp.raw(x).shape)


@defop(
    "sum_to",
    ("x",),
    "x summed over broadcast axes to `shape`",
    ("1 (broadcast)",),
    _sum_to_vjp,
    aliases=True,
    category="shape",
    note="the transpose of broadcast_to; used by higher-order gradients",
)
def sum_to(x: Any, shape: Any = None) -> Any:
    return _xp.sum_to_any(x, shape)


def _getitem_vjp(xp: Any, g: Any, ans: Any, x: Any, index: Any = None) -> Any:
    # Gradients are scattered back; repeated integer indices sum (np.add.at).
    return xp.index_add(g, index, xp.raw(x).shape)


@defop(
    "getitem",
    ("x",),
    "x[index]",
    ("1 at the picked positions (summed over repeats)",),
    _getitem_vjp,
    category="shape",
)
def getitem(x: Any, index: Any = None) -> Any:
    if type(x) is np.ndarray:
        return x[index]
    return _xp.portable_getitem(namespace_of(x), x, index)


def _index_add_vjp(xp: Any, g: Any, ans: Any, x: Any, index: Any = None, shape: Any = None) -> Any:
    return xp.getitem(g, index)


@defop(
    "index_add",
    ("x",),
    "zeros(shape) with x added at index",
    ("1 at index",),
    _index_add_vjp,
    category="shape",
    note="the transpose of getitem; used by higher-order gradients",
)
def index_add(x: Any, index: Any = None, shape: Any = None) -> Any:
    return _xp.index_add_any(x, index, shape)


def _concat_vjp(xp: Any, i: int, g: Any, ans: Any, *xs: Any, axis: int = 0) -> Any:
    sizes = [xp.raw(x).shape[axis] for x in xs]
    start = int(sum(sizes[:i]))
    index = (slice(None),) * axis + (slice(start, start + sizes[i]),)
    return xp.getitem(g, index)


def _concatenate(*xs: Any, axis: int = 0) -> Any:
    if type(xs[0]) is np.ndarray:
        return np.concatenate(xs, axis=axis)
    return namespace_of(*xs).concat(list(xs), axis=axis)


concatenate = register(
    Op(
        name="concatenate",
        forward=_concatenate,
        vjps=(),
        arg_names=("*xs",),
        formula="[x1, x2, ...] joined along axis",
        derivatives=("1 on its own slice",),
        aliases=True,
        vjp_any=_concat_vjp,
        category="shape",
    )
)


def _stack_vjp(xp: Any, i: int, g: Any, ans: Any, *xs: Any, axis: int = 0) -> Any:
    return xp.getitem(g, (slice(None),) * axis + (i,))


def _stack(*xs: Any, axis: int = 0) -> Any:
    xp = np if type(xs[0]) is _ND else namespace_of(*xs)
    return xp.stack(list(xs), axis=axis)


stack = register(
    Op(
        name="stack",
        forward=_stack,
        vjps=(),
        arg_names=("*xs",),
        formula="[x1, x2, ...] along a new axis",
        derivatives=("1 on its own slice",),
        aliases=True,
        vjp_any=_stack_vjp,
        category="shape",
    )
)


def _to_device_vjp(xp: Any, g: Any, ans: Any, x: Any, device: Any = None) -> Any:
    return xp.to_device(g, _backend.device_of(xp.raw(x)))


@defop(
    "to_device",
    ("x",),
    "x copied to another device",
    ("1 (the gradient is copied back)",),
    _to_device_vjp,
    aliases=True,
    category="shape",
    note="the only op whose input and output live on different devices (Tensor.to)",
)
def to_device(x: Any, device: Any = None) -> Any:
    return _backend.to_device(x, device)
