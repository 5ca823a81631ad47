"""Free granularity: expand a vectorised (Tensor) graph into its graph of scalar units.

The lecture: "granularity can be chosen freely". A linear unit can be one node
``g(x) = w · x + b``, or the sum ``h_1(x_1) + ... + h_D(x_D) + b`` of the units
``h_d(x_d) = w_d x_d``. :func:`units` takes the output of a Tensor computation (traced before
``backward()``, or after ``backward(retain_graph=True)``) and rebuilds the same computation one
number at a time, as a :class:`~graphgrad.scalar.Scalar` graph:

* elementwise ops (every op of the registry that acts on single numbers) become one unit per
  element (broadcasting repeats the same input unit);
* ``linear`` / ``matmul`` become the products ``h_d = w_d · x_d``, summed left to right, ``+ b``;
* ``matmul`` batches over leading axes (each batch entry its own products and sums);
* ``sum`` / ``mean`` become chains of additions (``mean`` then times ``1/n``); ``max`` / ``min``
  become chains of pairwise ``maximum`` / ``minimum`` units;
* ``softmax`` becomes ``exp``, a sum and divisions; ``log_softmax`` and ``cross_entropy`` add
  ``log``: exactly the lecture's decomposition. The row maximum is subtracted first, as the fused
  ops do, as a constant (softmax does not change when all inputs shift by the same number, so
  the gradients are the same);
* shape ops (reshape, transpose, broadcast, indexing, concatenation) make no units: they only
  rearrange which unit sits where.

Both graphs give the same values and gradients (to rounding, in float64), except at ties of
``max``/``min`` over an axis: the fused op shares the gradient equally among the tied entries
(``max([1, 1, 1])``: 1/3 each), the units' chain of binary ``maximum`` splits it half and half
at each unit (0.25, 0.25, 0.5).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np

from ._graph import collect
from .ops import REGISTRY, Op
from .scalar import Scalar, apply_op
from .tensor import Tensor

__all__ = ["EXPANSIONS", "SUPPORTED_OPS", "Units", "units"]

Obj = np.ndarray  # an object array of Scalars


def _obj(x: Any) -> Obj:
    """``x`` (a Scalar or an object array) as an object array (0-d for a single Scalar)."""
    if isinstance(x, np.ndarray):
        return x
    out = np.empty((), dtype=object)
    out[()] = x
    return out


def _const(v: float) -> Scalar:
    return Scalar(float(v), requires_grad=False)


def _chain_sum(items: list[Scalar]) -> Scalar:
    """``items[0] + items[1] + ...``, left to right (the constant 0 for no items)."""
    if not items:
        return _const(0.0)
    s = items[0]
    for x in items[1:]:
        s = s + x
    return s


def _fold(
    a: Obj, axis: tuple[int, ...] | None, keepdims: bool, pick: Callable[[Any, Any], Any]
) -> Obj:
    """Reduce over axes as a left-to-right chain of pairwise units:
    ``pick(pick(x_1, x_2), x_3)...`` (``+`` for sum, ``maximum``/``minimum`` for max/min)."""
    axes = tuple(range(a.ndim)) if axis is None else tuple(axis)
    kept = [i for i in range(a.ndim) if i not in axes]
    moved = np.transpose(a, kept + list(axes))
    out_shape = tuple(a.shape[i] for i in kept)
    flat = moved.reshape((*out_shape, -1))
    out = np.empty(out_shape, dtype=object)
    for idx in np.ndindex(*out_shape):
        items = list(flat[idx])
        if not items:
            out[idx] = _const(0.0)
            continue
        m = items[0]
        for x in items[1:]:
            m = pick(m, x)
        out[idx] = m
    if keepdims:
        out = out.reshape(tuple(1 if i in axes else n for i, n in enumerate(a.shape)))
    return out


def _sum(a: Obj, axis: tuple[int, ...] | None, keepdims: bool = False) -> Obj:
    return _fold(a, axis, keepdims, operator.add)


def _count(shape: tuple[int, ...], axis: tuple[int, ...] | None) -> int:
    axes = range(len(shape)) if axis is None else axis
    n = 1
    for i in axes:
        n *= shape[i]
    return n


# ----------------------------------------------------------------------------- expanders


def _elementwise(fn: Callable[..., Any], *arrays: Obj) -> Obj:
    return _obj(np.frompyfunc(fn, len(arrays), 1)(*arrays))


def _registry_unit(op: Op, params: dict[str, Any]) -> Callable[..., Scalar]:
    """A unit of ``op`` on one or two Scalars, with the node's parameters."""

    def make(*xs: Scalar) -> Scalar:
        return apply_op(op, *xs, **params)

    return make


def _softmax_rows(x: Obj, axis: int, log: bool) -> Obj:
    """Softmax (or log-softmax) along ``axis`` as units: exp, a sum, division (or log)."""
    moved = np.moveaxis(x, axis, -1)
    out = np.empty(moved.shape, dtype=object)
    for idx in np.ndindex(*moved.shape[:-1]):
        row = list(moved[idx])
        shift = max(u.data for u in row)  # a constant: softmax is shift-invariant
        shifted = [u - shift for u in row]
        if log:
            log_z = _chain_sum([s.exp() for s in shifted]).log()
            out[idx] = _row([s - log_z for s in shifted])
        else:
            exps = [s.exp() for s in shifted]
            z = _chain_sum(exps)
            out[idx] = _row([e / z for e in exps])
    return np.moveaxis(out, -1, axis)


def _row(items: list[Scalar]) -> Obj:
    out = np.empty(len(items), dtype=object)
    for i, u in enumerate(items):
        out[i] = u
    return out


def _values(a: Obj) -> np.ndarray:
    """The forward values of an object array of units, as float64."""
    return np.vectorize(_data, otypes=[np.float64])(a).reshape(a.shape)


def _consts(values: np.ndarray) -> Obj:
    """Constant units for an array of numbers."""
    out = np.empty(values.shape, dtype=object)
    for idx in np.ndindex(*values.shape):
        out[idx] = _const(float(values[idx]))
    return out


def _cross_entropy(logits: Obj, labels: Tensor, label_units: Obj) -> Obj:
    """L = (1/S) sum_s H_s with H_s = -ln p_y (one-hot) or -sum_t o_t ln p_t (probabilities),
    p = exp(x - m) / sum exp(x - m). Probability targets o that need gradients enter as their
    units (dH/do_t = -ln p_t, also where o_t = 0); constant ones as numbers."""
    lab = np.asarray(labels.data)
    s_count, t_count = logits.shape
    terms = []
    for s in range(s_count):
        row = list(logits[s])
        shift = max(u.data for u in row)
        exps = [(u - shift).exp() for u in row]
        z = _chain_sum(exps)
        if lab.dtype.kind in "iu":
            terms.append(-(exps[int(lab[s])] / z).log())
        else:
            parts = []
            for t in range(t_count):
                o = label_units[s, t]
                if o.requires_grad:
                    parts.append(o * (exps[t] / z).log())
                elif lab[s, t]:
                    parts.append(float(lab[s, t]) * (exps[t] / z).log())
            terms.append(-_chain_sum(parts))
    return _obj(_chain_sum(terms) * (1.0 / s_count))


def _matmul2(x: Obj, y: Obj) -> Obj:
    """(m, n) @ (n, p): o_ij = x_i1 y_1j + ... + x_in y_nj, summed left to right."""
    out = np.empty((x.shape[0], y.shape[1]), dtype=object)
    for i in range(x.shape[0]):
        for j in range(y.shape[1]):
            out[i, j] = _chain_sum([x[i, k] * y[k, j] for k in range(x.shape[1])])
    return out


def _matmul(x: Obj, y: Obj) -> Obj:
    """NumPy's matmul on units: 1-D operands get a unit axis that is dropped afterwards, and
    leading (batch) axes broadcast, each batch entry being a 2-D product of its own units."""
    x2 = x.reshape(1, -1) if x.ndim == 1 else x
    y2 = y.reshape(-1, 1) if y.ndim == 1 else y
    batch = np.broadcast_shapes(x2.shape[:-2], y2.shape[:-2])
    xb = np.broadcast_to(x2, (*batch, *x2.shape[-2:]))
    yb = np.broadcast_to(y2, (*batch, *y2.shape[-2:]))
    out = np.empty((*batch, x2.shape[-2], y2.shape[-1]), dtype=object)
    for idx in np.ndindex(*batch):
        out[idx] = _matmul2(xb[idx], yb[idx])
    if x.ndim == 1:
        out = out[..., 0, :]
    if y.ndim == 1:
        out = out[..., 0]
    return _obj(out[()] if out.ndim == 0 else out)


def _linear(x: Obj, w: Obj, b: Obj | None = None) -> Obj:
    """o_t = h_1 + ... + h_D + b_t with h_d = w_td · x_d, for every sample (no b_t without
    a bias)."""
    x2 = x.reshape(-1, x.shape[-1])
    out = np.empty((x2.shape[0], w.shape[0]), dtype=object)
    for s in range(x2.shape[0]):
        for t in range(w.shape[0]):
            hs = [w[t, d] * x2[s, d] for d in range(w.shape[1])]
            total = _chain_sum(hs)
            out[s, t] = total if b is None else total + b[t]
    return out.reshape((*x.shape[:-1], w.shape[0]))


#: How a non-elementwise op becomes units: ``expand(node, input unit arrays, params)``.
Expansion = Callable[[Tensor, list[Obj], dict[str, Any]], Obj]


def _expand(node: Tensor, ins: list[Obj]) -> Obj:
    op = node._op
    assert op is not None
    if op.elementwise:  # one unit per element, the op itself
        return _elementwise(_registry_unit(op, node._params), *ins)
    expansion = EXPANSIONS.get(op.name)
    if expansion is None:
        raise NotImplementedError(
            f"units: op '{op.name}' has no scalar-unit expansion; supported: "
            f"{', '.join(SUPPORTED_OPS)}"
        )
    return expansion(node, ins, node._params)


def _sum_to(a: Obj, shape: tuple[int, ...]) -> Obj:
    lead = a.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        i + lead for i, n in enumerate(shape) if n == 1 and a.shape[i + lead] != 1
    )
    return _sum(a, axes, keepdims=True).reshape(shape)


def _fold_pick(name: str) -> Expansion:
    # Pairwise units; at ties the chain splits the gradient differently from the fused
    # reductions (which share it evenly), elsewhere both send it all to the extremum.
    pick = _registry_unit(REGISTRY[name], {})

    def expand(node: Tensor, ins: list[Obj], p: dict[str, Any]) -> Obj:
        return _fold(ins[0], p.get("axis"), p.get("keepdims", False), pick)

    return expand


def _mean(node: Tensor, ins: list[Obj], p: dict[str, Any]) -> Obj:
    total = _sum(ins[0], p.get("axis"), p.get("keepdims", False))
    scale = 1.0 / _count(ins[0].shape, p.get("axis"))
    return _elementwise(operator.mul, total, _obj(_const(scale)))


def _logsumexp(node: Tensor, ins: list[Obj], p: dict[str, Any]) -> Obj:
    # ln sum exp(x - m) + m, with the maximum m a constant (as in the fused op).
    axis = p.get("axis")
    shift = _consts(_values(ins[0]).max(axis=axis, keepdims=True))
    ex = _elementwise(operator.methodcaller("exp"), _elementwise(operator.sub, ins[0], shift))
    total = _sum(ex, axis, keepdims=True)
    out = _elementwise(operator.add, _elementwise(operator.methodcaller("log"), total), shift)
    return out.reshape(node.data.shape)


#: The ops that are not elementwise and how each becomes scalar units: op name ->
#: ``expand(node, input unit arrays, params)``. (Elementwise ops need no entry: each element
#: is one unit of the op itself.) The keys are registry names (a test checks them).
EXPANSIONS: dict[str, Expansion] = {
    "where": lambda node, ins, p: _obj(
        np.where(np.asarray(node._inputs[0].data, dtype=bool), ins[1], ins[2])
    ),
    "linear": lambda node, ins, p: _linear(*ins),
    "matmul": lambda node, ins, p: _matmul(ins[0], ins[1]),
    "sum": lambda node, ins, p: _sum(ins[0], p.get("axis"), p.get("keepdims", False)),
    "mean": _mean,
    "max": _fold_pick("maximum"),
    "min": _fold_pick("minimum"),
    "logsumexp": _logsumexp,
    "softmax": lambda node, ins, p: _softmax_rows(ins[0], p.get("axis", -1), log=False),
    "log_softmax": lambda node, ins, p: _softmax_rows(ins[0], p.get("axis", -1), log=True),
    "cross_entropy": lambda node, ins, p: _cross_entropy(ins[0], node._inputs[1], ins[1]),
    "reshape": lambda node, ins, p: ins[0].reshape(p["shape"]),
    "transpose": lambda node, ins, p: np.transpose(ins[0], p.get("axes")),
    "broadcast_to": lambda node, ins, p: np.broadcast_to(ins[0], p["shape"]),
    "sum_to": lambda node, ins, p: _sum_to(ins[0], tuple(p["shape"])),
    "getitem": lambda node, ins, p: _obj(ins[0][p["index"]]),
    "concatenate": lambda node, ins, p: np.concatenate(ins, axis=p.get("axis", 0)),
    "stack": lambda node, ins, p: np.stack(ins, axis=p.get("axis", 0)),
}

#: The Tensor ops :func:`units` can expand: every elementwise op, then :data:`EXPANSIONS`.
SUPPORTED_OPS = (*(op.name for op in REGISTRY.values() if op.elementwise), *EXPANSIONS)


# ---------------------------------------------------------------------------------- API


class Units:
    """A Tensor graph rebuilt from scalar units.

    Attributes:
        output: the output's units, an object array of Scalars with the output tensor's shape.
        tensors: ``{id(tensor): (tensor, units)}`` for every tensor of the original graph.
    """

    def __init__(self, output: Obj, tensors: dict[int, tuple[Tensor, Obj]]) -> None:
        self.output = output
        self.tensors = tensors

    def __getitem__(self, t: Tensor) -> Obj:
        """The units (an object array of Scalars) standing for tensor ``t``."""
        try:
            return self.tensors[id(t)][1]
        except KeyError:
            raise KeyError("this tensor is not part of the expanded graph") from None

    @property
    def scalar(self) -> Scalar:
        """The output unit, when the output has one element."""
        if self.output.size != 1:
            raise ValueError(f"the output has shape {self.output.shape}, not one element")
        unit: Scalar = self.output.reshape(-1)[0]
        return unit

    def backward(self) -> None:
        """Backpropagate from the (one-element) output through the units."""
        self.scalar.backward()

    def values(self, t: Tensor) -> np.ndarray:
        """The forward values of ``t``'s units, a float64 array of ``t``'s shape."""
        return np.vectorize(_data, otypes=[np.float64])(self[t]).reshape(t.shape)

    def grad(self, t: Tensor) -> np.ndarray:
        """The gradients held by ``t``'s units after :meth:`backward`, float64, ``t``'s shape.

        For a leaf that appears in several places (broadcasting), a unit is shared, so its
        gradient is already the sum over those places.
        """
        return np.vectorize(_grad, otypes=[np.float64])(self[t]).reshape(t.shape)

    def count(self) -> int:
        """The number of units (op nodes) in the expanded graph."""
        seen: set[int] = set()
        for u in self.output.reshape(-1):
            for n in collect(u):
                if n._op is not None:
                    seen.add(id(n))
        return len(seen)

    def __repr__(self) -> str:
        return f"Units(output shape {self.output.shape}, {len(self.tensors)} tensors)"


def _data(u: Scalar) -> float:
    return u.data


def _grad(u: Scalar) -> float:
    return u.grad


def units(output: Tensor) -> Units:
    """Expand the Tensor graph that computed ``output`` into scalar units.

    Call it before ``output.backward()`` (or after ``backward(retain_graph=True)``): the walk
    needs the recorded graph. Leaf tensors that require gradients become Scalar leaves named
    ``name[i, j]`` (after the tensor's ``name``, else ``t<k>``); other leaves become constants.

    Returns:
        a :class:`Units`; ``u.backward()`` then ``u.grad(w)`` gives the gradient for tensor
        ``w`` computed through the units.
    """
    if not isinstance(output, Tensor):
        raise TypeError(f"units: expected a Tensor, got {type(output).__name__}")
    order = collect(output)
    table: dict[int, tuple[Tensor, Obj]] = {}
    unnamed = 0
    for t in order:
        if t._op is None:
            data = np.asarray(t.data)
            arr = np.empty(data.shape, dtype=object)
            if t.requires_grad:
                base = t.name
                if not base:
                    base = f"t{unnamed}"
                    unnamed += 1
                for idx in np.ndindex(*data.shape):
                    label = f"{base}[{','.join(map(str, idx))}]" if idx else base
                    arr[idx] = Scalar(float(data[idx]), name=label)
            else:
                for idx in np.ndindex(*data.shape):
                    arr[idx] = Scalar(float(data[idx]), requires_grad=False)
            table[id(t)] = (t, arr)
        else:
            ins = [table[id(x)][1] for x in t._inputs]
            out = _expand(t, ins)
            if out.shape != t.data.shape:
                raise AssertionError(
                    f"units: expanding op '{t._op.name}' gave shape {out.shape}, "
                    f"expected {t.data.shape}"
                )
            table[id(t)] = (t, out)
    return Units(table[id(output)][1], table)
