"""The namespaces VJP rules compute with during an ordinary backward pass.

The module's functions are the NumPy namespace (the fast path: BLAS through ``_blas``, a GEMV
for bias gradients, ``np.add.at``). :class:`ArrayXP` is its portable twin, the same names
written in the Python array API standard for any other array namespace (CuPy,
``array_api_strict``); :func:`xp_for` picks one from an array's type, NumPy first.

Each function here also has a twin of the same name in :class:`graphgrad.tensor.TensorXP` that
does the same on Tensors and records the graph (used when ``create_graph=True``).
"""

from __future__ import annotations

import builtins
import sys
from typing import Any

import numpy as np

from .. import _backend, _blas, _fused

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


def _gemv(dtype: Any) -> tuple[int | None, bool]:
    """The address of the ``cblas_?gemv`` NumPy's own ``ones @ x`` calls for ``dtype`` (and
    whether it takes 64-bit sizes), or None where that BLAS is not found
    (:func:`graphgrad._blas.numpy_cblas`, which finds it once)."""
    found = _blas.numpy_cblas()
    return found.get("gemv", {}).get(dtype), bool(found.get("ilp64"))


def sum_rows(x: Array) -> Array:
    """Sum over every axis but the last: ``(..., n) -> (n,)`` (a bias gradient). A 2-D float
    array is summed as ``ones @ x``, a GEMV that is 2-5x faster than ``x.sum(axis=0)``: for a
    row-major one the GEMV NumPy itself would call, called directly (the same numbers bit for
    bit, without NumPy's matmul dispatch: a measurable part of a small layer's backward)."""
    if x.ndim != 2 or x.dtype.kind != "f" or x.dtype.itemsize < 4:
        return np.sum(x, axis=tuple(range(x.ndim - 1))) if x.ndim > 1 else x
    key = (x.shape[0], x.dtype)
    ones = _ONES.get(key)
    if ones is None:
        if len(_ONES) > 64:
            _ONES.clear()
        ones = _ONES[key] = np.ones(x.shape[0], x.dtype)
    kernels = _fused.KERNELS  # (None where they are not built, or switched off)
    # (one column: NumPy's matmul makes a dot product there, not a GEMV, other bits)
    if kernels is not None and x.flags.c_contiguous and x.shape[0] and x.shape[1] > 1:
        fn, ilp64 = _gemv(x.dtype)
        if fn is not None:
            out = np.empty(x.shape[1], x.dtype)
            kernels.sum_rows(fn, x, ones, out, ilp64)
            return out
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


def log_softmax(x: Array, axis: int = -1) -> Array:
    z = x - np.max(x, axis=axis, keepdims=True)
    z -= np.log(np.sum(np.exp(z), axis=axis, keepdims=True))
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


def to_device(x: Array, device: Any) -> Any:
    """``x`` moved to ``device`` (a :class:`graphgrad._backend.Device`)."""
    return _backend.to_device(x, device)


_ADOPTED: dict[str, Any] = {}


def adopt(ops: Any) -> None:
    """Offer each op's forward under its name (``cos``, ``softplus``, ...), unless a function
    of that name is written above; :class:`ArrayXP` offers the same names."""
    module = globals()
    for op in ops:
        module.setdefault(op.name, op.forward)
        _ADOPTED.setdefault(op.name, op.forward)


# ------------------------------------------------------------------- the portable twin


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for k in shape:
        n *= int(k)
    return n


class ArrayXP:
    """This module's functions for any array API namespace ``xp`` (one instance per
    namespace, from :func:`generic`): standard names only, so CuPy and ``array_api_strict``
    run the rules that NumPy runs through the module above. Elementwise ops are offered by
    name as the module offers them (their forwards pick the namespace of their inputs)."""

    def __init__(self, xp: Any) -> None:
        self.xp = xp
        self.name = getattr(xp, "__name__", type(xp).__name__)
        self._is_cupy = self.name.split(".")[-1] == "cupy"

    def __repr__(self) -> str:
        return f"ArrayXP({self.name})"

    def __getattr__(self, name: str) -> Any:
        forward = _ADOPTED.get(name)
        if forward is None:
            raise AttributeError(f"ArrayXP({self.name}) has no function {name!r}")
        return forward

    def raw(self, x: Any) -> Any:
        return x

    def const(self, a: Any) -> Any:
        return a

    def sum_to(self, x: Any, shape: tuple[int, ...]) -> Any:
        if tuple(x.shape) == tuple(shape):
            return x
        lead = x.ndim - len(shape)
        axes = tuple(range(lead)) + tuple(
            i + lead for i, n in enumerate(shape) if n == 1 and x.shape[i + lead] != 1
        )
        y = self.xp.sum(x, axis=axes, keepdims=True) if axes else x
        return self.xp.reshape(y, tuple(shape)) if lead else y

    def broadcast_to(self, x: Any, shape: tuple[int, ...]) -> Any:
        return self.xp.broadcast_to(x, tuple(shape))

    def reshape(self, x: Any, shape: tuple[int, ...]) -> Any:
        return self.xp.reshape(x, tuple(shape))

    def transpose(self, x: Any, axes: tuple[int, ...] | None) -> Any:
        perm = tuple(range(x.ndim - 1, -1, -1)) if axes is None else tuple(axes)
        return self.xp.permute_dims(x, perm)

    def swap_last(self, x: Any) -> Any:
        return self.xp.matrix_transpose(x)

    def matmul(self, a: Any, b: Any) -> Any:
        return self.xp.matmul(a, b)

    def sum_rows(self, x: Any) -> Any:
        return self.xp.sum(x, axis=tuple(range(x.ndim - 1))) if x.ndim > 1 else x

    def sum(self, x: Any, axis: Any = None, keepdims: bool = False) -> Any:
        return self.xp.sum(x, axis=axis, keepdims=keepdims)

    def exp(self, x: Any) -> Any:
        return self.xp.exp(x)

    def log(self, x: Any) -> Any:
        return self.xp.log(x)

    def where(self, c: Any, a: Any, b: Any) -> Any:
        return where_any(self.xp, c, a, b)

    def softmax(self, x: Any, axis: int = -1) -> Any:
        xp = self.xp
        z = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
        return z / xp.sum(z, axis=axis, keepdims=True)

    def log_softmax(self, x: Any, axis: int = -1) -> Any:
        xp = self.xp
        z = x - xp.max(x, axis=axis, keepdims=True)
        return z - xp.log(xp.sum(xp.exp(z), axis=axis, keepdims=True))

    def getitem(self, x: Any, index: Any) -> Any:
        return portable_getitem(self.xp, x, index)

    def index_add(self, g: Any, index: Any, shape: tuple[int, ...]) -> Any:
        """A zero array of ``shape`` with ``g`` added at ``index`` (repeated indices sum).

        The standard has no scatter-add (and ``array_api_strict`` no fancy ``__setitem__``):
        the flat positions ``index`` picks are read from ``arange(n)``, and each output
        element sums the ``g`` entries whose position is its own (a ``where`` over an
        (entries, n) comparison: exact, NaN-safe, O(entries x n) memory). CuPy uses
        ``cupyx.scatter_add`` instead (one atomic pass).
        """
        xp, shape = self.xp, tuple(shape)
        if self._is_cupy:
            import cupyx  # lazily: only with CuPy installed

            out = xp.zeros(shape, dtype=g.dtype)
            cupyx.scatter_add(out, index, g)
            return out
        n = _prod(shape)
        dev = g.device
        picked = portable_getitem(xp, xp.reshape(xp.arange(n, device=dev), shape), index)
        pos = xp.reshape(picked, (-1,))
        flat = xp.reshape(xp.broadcast_to(g, pos.shape if g.ndim == 0 else g.shape), (-1,))
        hit = pos[:, None] == xp.arange(n, device=dev)[None, :]
        zero = xp.zeros((), dtype=g.dtype, device=dev)
        out = xp.sum(xp.where(hit, flat[:, None], zero), axis=0, dtype=g.dtype)
        return xp.reshape(out, shape)

    def to_device(self, x: Any, device: Any) -> Any:
        return _backend.to_device(x, device)


def _kind(i: Any) -> str:
    """``"b"``/``"i"`` for a boolean/integer index array, ``""`` for anything else."""
    if hasattr(i, "dtype") and hasattr(i, "ndim") and not isinstance(i, np.generic):
        k = _backend.dtype_kind(i.dtype)
        return "b" if k == "b" else ("i" if k in "iu" else "")
    return ""


def portable_getitem(xp: Any, x: Any, index: Any) -> Any:
    """``x[index]`` with NumPy's meaning (CuPy: as it is), spelled as the standard allows:
    a boolean mask as the sole index; one integer array as ``take`` along axis 0 (negative
    entries counted from the end, as NumPy does); integer arrays with integers over every
    axis as they are; anything else through :func:`portable_index`."""
    if getattr(xp, "__name__", "").split(".")[-1] == "cupy":
        return x[index]  # CuPy indexes as NumPy does (one gather kernel)
    items = index if isinstance(index, tuple) else (index,)
    kinds = [_kind(i) for i in items]
    if len(items) == 1 and kinds[0] == "b":
        return x[items[0]]
    if "i" in kinds:
        if len(items) == 1:
            idx = items[0]
            n = x.shape[0]
            idx = xp.where(idx < 0, idx + n, idx)
            flat = xp.take(x, xp.reshape(idx, (-1,)), axis=0)
            return xp.reshape(flat, tuple(idx.shape) + tuple(x.shape[1:]))
        return x[tuple(items)]  # integer arrays and integers over every axis (else: its error)
    return x[portable_index(index, tuple(x.shape))]


def portable_index(index: Any, shape: tuple[int, ...]) -> Any:
    """NumPy's reading of ``index`` spelled as the standard requires: a trailing ``...`` where
    the index names fewer axes than the array has, and slices clamped to their axis (NumPy
    allows ``x[5:]`` on 3 elements; the standard leaves out-of-range starts unspecified)."""
    items = list(index) if isinstance(index, tuple) else [index]
    if not any(i is Ellipsis for i in items):
        items.append(Ellipsis)

    def used(i: Any) -> int:  # how many axes an index item consumes
        if i is None or i is Ellipsis:
            return 0
        if hasattr(i, "dtype") and hasattr(i, "ndim") and _backend.dtype_kind(i.dtype) == "b":
            return int(i.ndim)
        return 1

    out, axis = [], 0
    for k, i in enumerate(items):
        if i is Ellipsis:
            axis = len(shape) - builtins.sum(used(j) for j in items[k + 1 :])
        elif isinstance(i, slice) and axis < len(shape):
            n = shape[axis]
            start, stop, step = i.indices(n)
            if n == 0 or (step > 0 and start >= stop) or (step < 0 and start <= stop):
                i = slice(0, 0, 1)  # an empty selection
            else:
                i = slice(start, None if stop < 0 else stop, step)
        axis += used(i)
        out.append(i)
    return tuple(out)


def where_any(xp: Any, c: Any, a: Any, b: Any) -> Any:
    """``xp.where(c, a, b)`` where ``a`` or ``b`` may be a Python number (both numbers: the
    first becomes a 0-d array of the other's dtype if it has one, else of float64)."""
    if isinstance(a, int | float) and isinstance(b, int | float):
        a = xp.asarray(float(a), device=c.device)
    return xp.where(c, a, b)


_GENERIC: dict[int, ArrayXP] = {}


def generic(xp: Any) -> ArrayXP:
    """The :class:`ArrayXP` of namespace ``xp`` (made once per namespace)."""
    twin = _GENERIC.get(id(xp))
    if twin is None:
        twin = _GENERIC[id(xp)] = ArrayXP(xp)
    return twin


def xp_for(array: Any) -> Any:
    """The VJP namespace for arrays like ``array``: this module for NumPy, else the portable
    twin of ``array``'s namespace."""
    if type(array) is np.ndarray:
        return _module
    ns = _backend.namespace_of(array)
    return _module if _backend.is_numpy(ns) else generic(ns)


def sum_to_any(x: Any, shape: tuple[int, ...]) -> Any:
    """:func:`sum_to` for an array of any namespace."""
    return sum_to(x, shape) if type(x) is np.ndarray else xp_for(x).sum_to(x, shape)


def index_add_any(g: Any, index: Any, shape: tuple[int, ...]) -> Any:
    """:func:`index_add` for an array of any namespace."""
    if type(g) is np.ndarray or isinstance(g, np.generic):
        return index_add(np.asarray(g), index, shape)
    return xp_for(g).index_add(g, index, shape)


_module = sys.modules[__name__]
