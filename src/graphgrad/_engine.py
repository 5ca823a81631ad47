"""Reverse mode: one iterative backward pass over the recorded graph.

Nodes are popped from a heap keyed by their creation number, largest first. Every node is
created after its inputs, so this visits the graph in reverse topological order without a
recursive sort, and a node is processed only once all of its consumers have been (they are
newer). Pending gradients live in a dict local to the pass and are popped as they are used,
so memory falls as backward proceeds; intermediate nodes never get a public ``.grad``.

The namespace the rules compute with is chosen per node from its data: :mod:`graphgrad.ops._xp`
for NumPy arrays (with the ``fast=`` in-place variants, which are for NumPy only), else the
portable twin of the array's namespace (``_xp.xp_for``: CuPy, array_api_strict); with
``create_graph=True`` the recording namespace of the Tensor front end, on every device.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from heapq import heappop, heappush
from typing import Any

import numpy as np

from ._backend import dtype_kind, namespace_of, to_numpy
from ._graph import RELEASED, Node
from ._state import ANOMALY, enable_grad
from .errors import AnomalyError, BackwardError, ShapeError
from .ops import _xp

#: Gradient sinks: id(leaf) -> an object whose ``take(leaf, op, i, g, args, params) -> bool`` may
#: consume the gradient for that leaf inside the consumer's VJP (``Op.vjp_into``), so that it
#: is never materialised (``SGD(fused_backward=True)`` adds the weight gradient GEMM straight
#: into its momentum buffer; ``graphgrad.distributed.GradientReducer.backward`` writes it into
#: its Allreduce buffer, for that pass only). Empty unless such a user exists; plain backward only.
GRAD_SINKS: dict[int, Any] = {}


def run_backward(
    root: Node,
    seed: Any,
    *,
    retain_graph: bool = False,
    create_graph: bool = False,
    wrt: Sequence[Node] | None = None,
    seed_owned: bool = False,
) -> list[Any] | None:
    """Propagate ``seed`` (dL/d root) to every node ``root`` depends on.

    Without ``wrt`` the gradients are accumulated into the ``.grad`` of leaf tensors (and of
    nodes that called ``retain_grad()``); with ``wrt`` nothing is accumulated and the gradient
    of each node in ``wrt`` is returned (``None`` where it does not influence ``root``).

    ``create_graph=True`` runs the rules on Tensors, so the gradients are themselves graph nodes
    and can be differentiated again.
    """
    if create_graph:
        if _GRAPH_XP is None:
            raise BackwardError("create_graph=True: no recording namespace has been set")
        with enable_grad():
            return _run(root, seed, _GRAPH_XP, retain_graph, True, wrt, False)
    return _run(root, seed, _xp, retain_graph, False, wrt, seed_owned)


#: The namespace rules compute with when ``create_graph=True``: the Tensor front end's, which
#: records what it computes. The front end sets it on import (the engine imports no front end).
_GRAPH_XP: Any = None


def set_graph_namespace(xp: Any) -> None:
    """Make ``xp`` the namespace of recorded (``create_graph=True``) backward passes."""
    global _GRAPH_XP
    _GRAPH_XP = xp


def _run(
    root: Any,
    seed: Any,
    xp: Any,
    retain_graph: bool,
    graph_mode: bool,
    wrt: Sequence[Any] | None,
    seed_owned: bool,
) -> list[Any] | None:
    pending: dict[int, Any] = {id(root): seed}
    owned: set[int] = {id(root)} if seed_owned else set()
    heap: list[tuple[int, Any]] = [(-root._seq, root)]
    targets: dict[int, int] = {}
    results: list[Any] = []
    stop = -1
    if wrt is not None:
        targets = {id(t): k for k, t in enumerate(wrt)}
        results = [None] * len(wrt)
        stop = min(t._seq for t in wrt)
    anomaly = ANOMALY.get()
    sinks = GRAD_SINKS if (wrt is None and not graph_mode) else None
    xp_for = _xp.xp_for
    numpy_xp = xp
    while heap:
        neg_seq, node = heappop(heap)
        if -neg_seq < stop:
            break  # older than every target: it cannot lead to one
        key = id(node)
        g = pending.pop(key)
        if wrt is not None:
            k = targets.get(key)
            if k is not None:
                results[k] = g
        op = node._op
        if op is None:  # a leaf
            if wrt is None:
                fresh = graph_mode or key in owned or _sole(g)  # not inside the call below:
                _accumulate(node, g, fresh, graph_mode)  # (it would hold one more reference)
            continue
        if node._retain and wrt is None:
            _accumulate(node, g, graph_mode or key in owned, graph_mode)
        inputs = node._inputs
        if inputs is RELEASED:
            raise BackwardError(
                f"backward through op '{op.name}' a second time: its graph was freed by the "
                f"first backward(); pass retain_graph=True to the first call to keep it"
            )
        if graph_mode:
            ans, args = node, inputs
            fast = ()
        else:
            ans, args = node.data, [t.data for t in inputs]
            if type(ans) is np.ndarray:
                xp, fast = numpy_xp, op.fast  # in-place variants: for NumPy arrays only
            else:
                xp, fast = xp_for(ans), ()
        params = node._params
        for i, inp in enumerate(inputs):
            if not inp.requires_grad:
                continue
            if sinks and id(inp) in sinks and sinks[id(inp)].take(inp, op, i, g, args, params):
                continue  # added straight into an optimiser's buffer
            if anomaly:
                with np.errstate(all="ignore"):
                    gi = _vjp(op, fast, i, xp, g, ans, args, params)
            else:  # _vjp() written out: a call per edge is a measurable part of a tiny op
                rule = fast[i] if fast else None
                if rule is None:
                    gi = None
                else:  # (an empty **params costs a dict per edge)
                    gi = rule(g, ans, *args, **params) if params else rule(g, ans, *args)
                if gi is None:
                    gi = op.vjp(i, xp, g, ans, args, params)
            shape = inp.data.shape
            if gi.shape != shape:
                sum_to = xp.sum_to if graph_mode else xp_for(gi).sum_to  # gi's own device
                gi = sum_to(gi, shape) if len(gi.shape) >= len(shape) else gi
                if gi.shape != shape:
                    raise ShapeError(
                        f"backward of op '{op.name}': the gradient for its argument "
                        f"{_arg_name(op, i)} has shape {tuple(gi.shape)}, but the argument has "
                        f"shape {shape}"
                    )
            if anomaly:
                _check_backward(node, op, i, gi)
            k2 = id(inp)
            prev = pending.get(k2)
            if prev is None:
                pending[k2] = gi
                if not graph_mode and not op.aliases and _fresh(gi, g, ans, args):
                    owned.add(k2)
                heappush(heap, (-inp._seq, inp))
            elif (
                not graph_mode
                and k2 in owned
                and type(prev) is np.ndarray
                and (prev.dtype == gi.dtype or prev.dtype == np.result_type(prev, gi))
            ):
                np.add(prev, gi, out=prev)  # we allocated prev: accumulate in place
            else:
                pending[k2] = prev + gi
                if not graph_mode and _owns_memory(pending[k2]):
                    owned.add(k2)
        gi = prev = None  # no stale references: _sole() counts them
        if not retain_graph:
            node._inputs = RELEASED
    return results if wrt is not None else None


def _vjp(op: Any, fast: Any, i: int, xp: Any, g: Any, ans: Any, args: Any, params: Any) -> Any:
    """Argument ``i``'s gradient: the op's in-place variant where it has one and takes these
    arrays (it returns ``None`` where it does not), else its rule."""
    if fast:
        rule = fast[i]
        if rule is not None:
            gi = rule(g, ans, *args, **params)
            if gi is not None:
                return gi
    return op.vjp(i, xp, g, ans, args, params)


def _owns_memory(a: Any) -> bool:
    """True for an array that is not a view of another: a NumPy or CuPy array whose ``base``
    is None (other namespaces cannot tell, so their arrays are taken as views)."""
    return getattr(a, "base", 1) is None


def _fresh(gi: Any, g: Any, ans: Any, args: Any) -> bool:
    """True if a rule allocated ``gi`` (so the engine may keep it without a copy): an array
    owning its memory that is not the upstream gradient, the node's value or an input."""
    if gi is g or gi is ans:
        return False
    if type(gi) is np.ndarray:
        base = gi.base
        if base is not None and not (
            # a view of a buffer nothing else refers to (a padded weight gradient,
            # _memory.empty_grad): the rule's own memory, as good as an array owning it,
            # where the view covers most of it (a small slice would keep a large buffer alive)
            type(base) is np.ndarray
            and base.base is None
            and 2 * gi.nbytes > base.nbytes
            and _refcount is not None
            and _refcount(base) <= 3  # gi.base, this variable, getrefcount's argument
        ):
            return False
    elif getattr(gi, "base", 1) is not None:  # CuPy has base; other namespaces: a view
        return False
    for a in args:  # noqa: SIM110 - a plain loop: all() over a generator costs 4x, per node
        if gi is a:
            return False
    return True


_refcount = getattr(sys, "getrefcount", None)


def _sole(g: Any) -> bool:
    """True if ``g`` owns its memory and nothing but the pass refers to it (in CPython: the
    caller's variable, this argument and getrefcount's own), so a leaf can keep it as its
    ``.grad`` without a copy: no other gradient, tensor or view can see it. A gradient that
    add/sub handed to two inputs is shared until the other input has used it."""
    return (
        _refcount is not None
        and type(g) is np.ndarray
        and g.base is None
        and g.flags.writeable
        and _refcount(g) <= 3
    )


def _accumulate(node: Node, g: Any, fresh: bool, graph_mode: bool = False) -> None:
    """Add ``g`` to ``node.grad``; ``g`` is copied first unless the engine allocated it."""
    if graph_mode:  # a Tensor (create_graph=True)
        node.grad = g if node.grad is None else node.grad + g
    elif isinstance(g, np.ndarray | np.generic):
        dtype = node.data.dtype
        if g.dtype != dtype:
            g = g.astype(dtype)
            fresh = True
        if node.grad is None:
            node.grad = g if (fresh and type(g) is np.ndarray) else np.array(g, dtype=dtype)
        else:
            node.grad = node.grad + g
    else:  # an array of another namespace (CuPy, array_api_strict)
        xp = namespace_of(g)
        dtype = node.data.dtype
        if g.dtype != dtype:
            g = xp.astype(g, dtype)
            fresh = True
        if node.grad is None:
            node.grad = g if fresh else xp.asarray(g, copy=True)
        else:
            node.grad = node.grad + g


def _arg_name(op: Any, i: int) -> str:
    names = op.arg_names
    return f"'{names[i]}'" if i < len(names) and not names[i].startswith("*") else f"#{i}"


def _ranges(arrays: Any) -> str:
    parts = []
    for a in arrays:
        a = to_numpy(a)
        if a.size and a.dtype.kind in "fiub":
            parts.append(f"shape {a.shape} in [{np.min(a):.4g}, {np.max(a):.4g}]")
        else:
            parts.append(f"shape {a.shape}")
    return "; ".join(parts)


def check_forward(node: Any) -> None:
    """Anomaly mode: raise if the op that made ``node`` produced NaN or Inf."""
    out = node.data
    if dtype_kind(out.dtype) not in "fc":
        return
    out = to_numpy(out)  # a debugging mode: a copy to the host is acceptable
    if not np.all(np.isfinite(out)):
        raise AnomalyError(
            f"op '{node._op.name}' produced {_bad(out)} in its forward pass\n"
            f"  inputs: {_ranges([t.data for t in node._inputs])}\n"
            f"  created at: {node._site or '<unknown>'}"
        )


def _check_backward(node: Any, op: Any, i: int, gi: Any) -> None:
    arr = to_numpy(gi.data if hasattr(gi, "_op") else gi)
    if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
        raise AnomalyError(
            f"the backward of op '{op.name}' produced {_bad(arr)} in the gradient for its "
            f"argument {_arg_name(op, i)}\n"
            f"  inputs: {_ranges([t.data for t in node._inputs])}\n"
            f"  created at: {node._site or '<unknown>'}"
        )


def _bad(a: Any) -> str:
    n_nan = int(np.isnan(a).sum())
    n_inf = int(np.isinf(a).sum())
    return f"{n_nan} NaN and {n_inf} Inf value(s) (of {a.size})"


_PKG_DIR = __file__.rsplit("/", 1)[0]


def user_site() -> str:
    """``file:line in function`` of the innermost caller outside the graphgrad package."""
    f = sys._getframe(1)
    while f is not None and f.f_code.co_filename.startswith(_PKG_DIR):
        f = f.f_back  # type: ignore[assignment]
    if f is None:
        return "<unknown>"
    return f"{f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}"


class detect_anomaly:
    """``with gg.detect_anomaly():`` the first op producing NaN/Inf raises :class:`AnomalyError`.

    The error names the op, the ranges of its inputs and the line of user code that created
    the op. It costs a finiteness check per op and a stack walk per node: use it to debug.
    """

    def __init__(self) -> None:
        self._prev: list[bool] = []

    def __enter__(self) -> None:
        self._prev.append(ANOMALY.get())
        ANOMALY.set(True)  # in the calling thread only

    def __exit__(self, *exc: object) -> None:
        ANOMALY.set(self._prev.pop())
