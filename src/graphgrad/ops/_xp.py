"""The NumPy namespace VJP rules compute with during an ordinary backward pass.

Each function here has a twin of the same name in :class:`graphgrad.tensor.TensorXP` that does
the same on Tensors and records the graph (used when ``create_graph=True``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _blas

Array = np.ndarray


def raw(x: Any) -> Any:
    """The NumPy array behind ``x`` (identity here)."""
    return x


def const(a: Any) -> Any:
    """Wrap a NumPy array as a constant (identity here; a no-grad Tensor in the tensor twin)."""
    return a


def sum_to(x: Array, shape: tuple[int, ...]) -> Array:
    """Sum ``x`` over broadcast axes so that it has ``shape`` (undoes NumPy broadcasting)."""
    if x.shape == shape:
        return x
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        i + lead for i, n in enumerate(shape) if n == 1 and x.shape[i + lead] != 1
    )
    y = x.sum(axis=axes, keepdims=True)
    return y.reshape(shape) if lead else y


def broadcast_to(x: Array, shape: tuple[int, ...]) -> Array:
    return np.broadcast_to(x, shape)


def reshape(x: Array, shape: tuple[int, ...]) -> Array:
    return np.reshape(x, shape)


def transpose(x: Array, axes: tuple[int, ...] | None) -> Array:
    return np.transpose(x, axes)


def swap_last(x: Array) -> Array:
    """Swap the last two axes (the matrix transpose of a batch of matrices)."""
    return np.swapaxes(x, -1, -2)


def matmul(a: Array, b: Array) -> Array:
    return _blas.matmul(a, b)  # np.matmul, or MKL for 2-D floats if selected


_ONES: dict[tuple[int, Any], Array] = {}


def sum_rows(x: Array) -> Array:
    """Sum over every axis but the last: ``(..., n) -> (n,)`` (a bias gradient). A 2-D float
    array is summed as ``ones @ x``, a GEMV that is 2-5x faster than ``x.sum(axis=0)``."""
    if x.ndim != 2 or x.dtype.kind != "f" or x.dtype.itemsize < 4:
        return np.sum(x, axis=tuple(range(x.ndim - 1))) if x.ndim > 1 else x
    key = (x.shape[0], x.dtype)
    ones = _ONES.get(key)
    if ones is None:
        if len(_ONES) > 64:
            _ONES.clear()
        ones = _ONES[key] = np.ones(x.shape[0], x.dtype)
    return ones @ x


def sum(x: Array, axis: Any = None, keepdims: bool = False) -> Array:
    return np.sum(x, axis=axis, keepdims=keepdims)


def exp(x: Array) -> Array:
    return np.exp(x)


def log(x: Array) -> Array:
    return np.log(x)


def where(c: Array, a: Any, b: Any) -> Array:
    return np.where(c, a, b)


def softmax(x: Array, axis: int = -1) -> Array:
    z = np.exp(x - np.max(x, axis=axis, keepdims=True))
    z /= np.sum(z, axis=axis, keepdims=True)
    return z


def getitem(x: Array, index: Any) -> Array:
    return x[index]


def index_add(g: Array, index: Any, shape: tuple[int, ...]) -> Array:
    """A zero array of ``shape`` with ``g`` added at ``index`` (repeated indices sum)."""
    out = np.zeros(shape, dtype=g.dtype)
    if may_repeat(index):
        np.add.at(out, index, g)  # unbuffered: repeated positions accumulate
    else:
        out[index] = g
    return out


def may_repeat(index: Any) -> bool:
    """True if ``index`` holds an integer array, so a position may be picked more than once."""
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, np.ndarray) and i.dtype.kind in "iu" for i in items)


def adopt(ops: Any) -> None:
    """Offer each op's NumPy forward under its name (``cos``, ``softplus``, ...), unless a
    function of that name is written above."""
    module = globals()
    for op in ops:
        module.setdefault(op.name, op.forward)
