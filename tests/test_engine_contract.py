"""One reverse-mode contract for Tensors and both Scalar implementations.

Leaves accumulate over passes; a backward pass releases the graph it ran through unless
``retain_graph=True``, and a second pass through a released op node raises
:class:`BackwardError` with the same message; a leaf's own backward just accumulates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import graphgrad as gg
from graphgrad._graph import Node
from graphgrad.errors import BackwardError
from twins import scalar_implementations

KINDS: dict[str, Callable[[float], Any]] = {
    "tensor": lambda v: gg.Tensor(np.float64(v), requires_grad=True),
    **{f"scalar-{k}": m.Scalar for k, m in scalar_implementations().items()},
}


def _grad(x: Any) -> float:
    return float(x.grad)


def lecture(make: Callable[[float], Any]) -> tuple[Any, Any, Any]:
    a, b = make(2.0), make(1.0)
    e = (a + b) * (b + 1)
    return a, b, e


@pytest.mark.parametrize("make", KINDS.values(), ids=list(KINDS))
def test_backward_twice_raises_and_names_the_op(make: Callable[[float], Any]) -> None:
    a, b, e = lecture(make)
    e.backward()
    assert (_grad(a), _grad(b)) == (2.0, 5.0)
    with pytest.raises(BackwardError, match=r"backward through op 'mul' a second time.*retain"):
        e.backward()
    assert (_grad(a), _grad(b)) == (2.0, 5.0)  # nothing was added by the failed pass


@pytest.mark.parametrize("make", KINDS.values(), ids=list(KINDS))
def test_retain_graph_lets_leaves_accumulate(make: Callable[[float], Any]) -> None:
    a, b, e = lecture(make)
    e.backward(retain_graph=True)
    e.backward(retain_graph=True)
    assert (_grad(a), _grad(b)) == (4.0, 10.0)
    e.backward()  # the third pass releases the graph
    assert (_grad(a), _grad(b)) == (6.0, 15.0)
    with pytest.raises(BackwardError, match="second time"):
        e.backward()


@pytest.mark.parametrize("make", KINDS.values(), ids=list(KINDS))
def test_a_shared_subgraph_is_released_for_every_output(make: Callable[[float], Any]) -> None:
    a, b, _ = lecture(make)
    c = a * b
    y1, y2 = c + 1, c + 2
    y1.backward()
    with pytest.raises(BackwardError, match="op 'mul'"):
        y2.backward()  # reaches c, released by the first pass


@pytest.mark.parametrize("make", KINDS.values(), ids=list(KINDS))
def test_backward_of_a_leaf_accumulates(make: Callable[[float], Any]) -> None:
    x = make(3.0)
    x.backward()
    x.backward()
    assert _grad(x) == 2.0


@pytest.mark.parametrize("make", KINDS.values(), ids=list(KINDS))
def test_every_node_satisfies_the_node_protocol(make: Callable[[float], Any]) -> None:
    a, b, e = lecture(make)
    for n in (a, b, e):
        assert isinstance(n, Node)
    assert e._op is gg.REGISTRY["mul"] and len(e._inputs) == 2
    assert all(x._seq < e._seq for x in e._inputs)  # inputs are older: the engine's order
    assert dict(e._params) == {}
