"""Matrix products: ``matmul`` (NumPy semantics: 1-D, 2-D and batched) and fused ``linear``."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _blas, _fused, _memory
from .._backend import namespace_of
from . import _xp
from ._registry import defop


def _matmul_dx(xp: Any, g: Any, ans: Any, x: Any, y: Any) -> Any:
    xn, yn, gs = xp.raw(x).ndim, xp.raw(y).ndim, xp.raw(g).shape
    if yn == 1:
        if xn == 1:  # dot product: g is a scalar
            return g * y
        return xp.reshape(g, (*gs, 1)) * y  # x (..., m, n), y (n,), g (..., m)
    if xn == 1:  # x (n,), y (..., n, m), g (..., m): batch axes are summed by the engine
        gx = xp.matmul(y, xp.reshape(g, (*gs, 1)))
        return xp.reshape(gx, xp.raw(gx).shape[:-1])
    return xp.matmul(g, xp.swap_last(y))


def _matmul_dy(xp: Any, g: Any, ans: Any, x: Any, y: Any) -> Any:
    xs, yn, gs = xp.raw(x).shape, xp.raw(y).ndim, xp.raw(g).shape
    if len(xs) == 1:
        if yn == 1:
            return g * x
        return xp.reshape(x, (xs[0], 1)) * xp.reshape(g, (*gs[:-1], 1, gs[-1]))
    if yn == 1:  # x (..., m, n), g (..., m): sum over m here, over batch axes in the engine
        return xp.sum(x * xp.reshape(g, (*gs, 1)), axis=(len(xs) - 2,))
    return xp.matmul(xp.swap_last(x), g)


@defop(
    "matmul",
    ("X", "Y"),
    "X @ Y",
    ("G @ Y^T", "X^T @ G"),
    _matmul_dx,
    _matmul_dy,
    category="linear algebra",
    note="batched over leading axes; 1-D operands follow NumPy's rules",
)
def matmul(x: Any, y: Any) -> Any:
    if type(x) is np.ndarray:
        return _blas.matmul(x, y)  # np.matmul, or MKL for 2-D floats if selected
    return namespace_of(x, y).matmul(x, y)


def _flat2(a: Any, xp: Any) -> Any:
    shape = xp.raw(a).shape
    return xp.reshape(a, (-1, shape[-1])) if len(shape) != 2 else a


def _linear_dx(xp: Any, g: Any, ans: Any, x: Any, w: Any, b: Any = None) -> Any:
    return xp.matmul(g, w)


def _linear_dx_fast(g: Any, ans: Any, x: Any, w: Any, b: Any = None) -> Any:
    # The rule's G @ W for 2-D NumPy arrays, without the rule's calls (this runs for every
    # eager linear layer but the first). In the "columns" layout (_blas.layout()) the input
    # gradient comes back in the input's layout: for a column-major x (an earlier layer's
    # output), G @ W as (W.T @ G.T).T, so that the ReLU VJP before it gets its two arrays in
    # one layout.
    if type(g) is not np.ndarray or g.ndim != 2 or type(w) is not np.ndarray:
        return None
    if _blas.COLUMNS[0] and x.flags.f_contiguous and not x.flags.c_contiguous:
        return _blas.matmul(w.T, g.T).T
    return _blas.matmul(g, w)


def _linear_dw(xp: Any, g: Any, ans: Any, x: Any, w: Any, b: Any = None) -> Any:
    if type(w) is np.ndarray and w.flags.f_contiguous and not w.flags.c_contiguous:
        # W stored column-major (physically (in, out)): its gradient in the same layout,
        # (x^T @ G)^T, so that the optimiser's kernels get W, its gradient and its state alike
        return xp.matmul(xp.swap_last(_flat2(x, xp)), _flat2(g, xp)).T
    return xp.matmul(xp.swap_last(_flat2(g, xp)), _flat2(x, xp))


def _linear_dw_fast(g: Any, ans: Any, x: Any, w: Any, b: Any = None) -> Any:
    # The rule's Gᵀ @ x for 2-D NumPy arrays and a row-major W, without the rule's calls
    # (this runs for every eager linear layer); a weight gradient whose rows are a multiple
    # of 4096 bytes long (a 3072-input layer's): the same BLAS call into an array with its
    # rows further apart (_memory.empty_grad), which OpenBLAS writes faster. None: the rule
    # (a column-major W, other ranks, other namespaces).
    if (
        type(g) is not np.ndarray
        or type(x) is not np.ndarray
        or type(w) is not np.ndarray
        or g.ndim != 2
        or x.ndim != 2
        or not w.flags.c_contiguous
    ):
        return None
    if _memory.pads(w.shape[0], w.shape[1], w.itemsize) and g.dtype == x.dtype == w.dtype:
        return _blas.matmul(g.T, x, out=_memory.empty_grad(w.shape, w.dtype))
    return _blas.matmul(g.T, x)


def _linear_dw_into(g: Any, inputs: Any, out: Any, beta: float) -> bool:
    # out = beta * out + G^T @ x in one GEMM (2-D only): SGD(fused_backward=True)'s momentum.
    x = inputs[0]
    if type(g) is not np.ndarray or type(x) is not np.ndarray:
        return False  # NumPy only (the engine then runs the rule)
    if g.ndim != 2 or x.ndim != 2:
        return False
    if out.flags.f_contiguous and not out.flags.c_contiguous:  # out^T = beta out^T + x^T G
        return _blas.matmul_into(x.T, g, out.T, beta)
    return _blas.matmul_into(g.T, x, out, beta)


def _linear_db(xp: Any, g: Any, ans: Any, x: Any, w: Any, b: Any) -> Any:
    return xp.sum_rows(g)


def _linear_db_fast(g: Any, ans: Any, x: Any, w: Any, b: Any) -> Any:
    # the rule with NumPy's namespace, without the calls between (a GEMV for a 2-D G)
    return _xp.sum_rows(g) if type(g) is np.ndarray else None


@defop(
    "linear",
    ("x", "W", "b"),
    "x @ W^T + b",
    ("G @ W", "G^T @ x", "sum of G over samples"),
    _linear_dx,
    _linear_dw,
    _linear_db,
    category="linear algebra",
    note=(
        "fused for speed: one GEMM and an in-place bias add; W is (out, in) as in PyTorch; "
        "b is optional (a node of two inputs: x @ W^T, same products and layouts)"
    ),
    vjp_into={1: _linear_dw_into},
    fast=(_linear_dx_fast, _linear_dw_fast, _linear_db_fast),
)
def linear(x: Any, w: Any, b: Any = None) -> Any:
    if type(x) is not np.ndarray:  # the portable twin: one GEMM, then the bias
        xp = namespace_of(x, w) if b is None else namespace_of(x, w, b)
        y = xp.matmul(x, xp.matrix_transpose(w))
        return y if b is None else y + b
    # "columns" (measured faster with this BLAS, see _blas.layout()): for a batch smaller
    # than the layer's width, x @ W.T computed as (W @ x.T).T, the same numbers in a
    # column-major (S, out) array
    if _blas.COLUMNS[0] and x.ndim == 2 and x.shape[0] < w.shape[0]:
        y = _blas.matmul(w, x.T).T
    else:
        y = _blas.matmul(x, w.T)
    if b is None:
        return y
    if y.dtype == np.result_type(y, b):
        if not _fused.add_bias(y, b):  # one pass by a kernel where it takes the arrays
            y += b
        return y
    return y + b
