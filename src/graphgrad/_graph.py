"""The node interface every graph walk reads, and the walk itself.

A Tensor and a Scalar are both nodes of a computational graph. The engine, tracing, scalar
units and path sums read a node only through the fields of :class:`Node`, which both satisfy
(a test checks it for Tensors and for both Scalar implementations).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from .errors import BackwardError
from .ops import Op
from .scalar import Scalar

__all__ = ["RELEASED", "Node", "collect"]


@runtime_checkable
class Node(Protocol):
    """What the engine, tracing, units and paths read of a graph node.

    Attributes:
        data: its value (a NumPy array for a Tensor, a float for a Scalar).
        grad: dL/d(node) after a backward pass (``None`` or 0.0 before).
        requires_grad: whether gradients flow to it.
        name: a label for pictures and errors, or ``None``.
        _op: the registry op that made it; ``None`` for a leaf.
        _inputs: the nodes it was computed from, in argument order (:data:`RELEASED` once a
            backward pass has freed a Tensor's graph).
        _params: the op's static parameters (``{"slope": 0.1}``).
        _seq: its creation number: every node is newer than its inputs.
    """

    data: Any
    grad: Any
    requires_grad: bool

    @property
    def name(self) -> str | None: ...

    @property
    def _op(self) -> Op | None: ...

    @property
    def _inputs(self) -> Sequence[Node]: ...

    @property
    def _params(self) -> Mapping[str, Any]: ...

    @property
    def _seq(self) -> int: ...


class _Released(tuple):  # type: ignore[type-arg,unused-ignore]
    """Marks a node whose graph was freed by an earlier ``backward()``."""

    __slots__ = ()


#: A Tensor's ``_inputs`` once backward has freed its graph.
RELEASED = _Released()


def collect(root: Node) -> list[Any]:
    """Every node ``root`` depends on (itself included), in creation order. Iterative."""
    if type(root) is Scalar:
        return _collect_scalars(root)
    seen = {id(root)}
    order = [root]
    stack = [root]
    while stack:
        n = stack.pop()
        inputs = n._inputs
        if inputs is RELEASED:
            op = n._op
            raise BackwardError(
                f"cannot trace through op '{op.name if op else '?'}': its graph was freed by "
                f"backward(); trace during backward with g = loss.backward(trace=True) (values "
                f"and gradients), trace before it, or call backward(retain_graph=True)"
            )
        for x in inputs:
            if id(x) not in seen:
                seen.add(id(x))
                order.append(x)
                stack.append(x)
    order.sort(key=_seq)
    return order


def _collect_scalars(root: Scalar) -> list[Scalar]:
    """:func:`collect` for Scalar graphs: reads the two input slots, marks nodes as seen."""
    token = object()
    root._m = token
    order = [root]
    stack = [root]
    while stack:
        n = stack.pop()
        for x in (n._a, n._b):
            if x is not None and x._m is not token:
                x._m = token
                order.append(x)
                stack.append(x)
    order.sort(key=_seq)
    return order


def _seq(n: Any) -> int:
    return int(n._seq)
