"""Scalar units: values, gradients, the shared op registry, mixing with numbers, errors."""

from __future__ import annotations

import gc
import math

import numpy as np
import pytest

import graphgrad as gg
from graphgrad.errors import BackwardError
from graphgrad.ops import elementwise as E
from graphgrad.scalar import (
    FLOAT_FORWARD,
    Scalar,
    apply_op,
    local_grads,
    registry_rules,
    scalar_backward,
    topological,
)
from graphgrad.tensor import OP_FUNCTIONS
from op_specs import op_params, scalar_inputs


def lecture() -> tuple[Scalar, Scalar, Scalar, Scalar, Scalar]:
    a, b = Scalar(2.0, name="a"), Scalar(1.0, name="b")
    c = a + b
    d = b + 1
    e = c * d
    return a, b, c, d, e


def test_lecture_example_values_and_gradients() -> None:
    a, b, c, d, e = lecture()
    assert (c.data, d.data, e.data) == (3.0, 2.0, 6.0)
    e.backward()
    assert (a.grad, b.grad) == (2.0, 5.0)
    assert (c.grad, d.grad, e.grad) == (2.0, 3.0, 1.0)  # every node keeps its gradient
    assert type(a.grad) is float and type(e.data) is float


def test_ops_come_from_the_registry() -> None:
    a, _, c, _, e = lecture()
    assert c._op is gg.REGISTRY["add"] and e._op is gg.REGISTRY["mul"]
    assert (e.op, a.op) == ("mul", None)
    assert all(op is gg.REGISTRY[op.name] for op in FLOAT_FORWARD)


def test_numbers_mix_in_on_either_side() -> None:
    y, s = 1.0, Scalar(0.25)
    out = 1 + (-y) * s
    assert out.data == 0.75
    cases = [
        (s + 2, 2.25),
        (2 + s, 2.25),
        (s - 2, -1.75),
        (2 - s, 1.75),
        (s * 4, 1.0),
        (4 * s, 1.0),
        (s / 2, 0.125),
        (2 / s, 8.0),
        (s**2, 0.0625),
        (2**s, 2**0.25),
        (-s, -0.25),
        (+s, 0.25),
        (np.float64(2.0) * s, 0.5),
        (s * np.int64(3), 0.75),
    ]
    for node, want in cases:
        assert isinstance(node, Scalar)
        assert node.data == pytest.approx(want, rel=1e-15)


def test_module_functions_accept_scalars() -> None:
    s = Scalar(0.3)
    for fn in (gg.exp, gg.log, gg.tanh, gg.sigmoid, gg.relu, gg.leaky_relu, gg.elu):
        out = fn(s)
        assert isinstance(out, Scalar) and out.op == fn.__name__
    assert isinstance(gg.maximum(s, 0.1), Scalar)
    assert gg.maximum(0.5, s).data == 0.5
    assert gg.leaky_relu(Scalar(-2.0), 0.1).data == pytest.approx(-0.2)
    assert gg.elu(Scalar(-1.0), 2.0).data == pytest.approx(2 * math.expm1(-1.0))
    # Tensors still get Tensors
    assert isinstance(gg.relu(gg.tensor([1.0, -1.0])), gg.Tensor)


# Inputs for each op, kept off kinks except where a kink is tested on purpose below.
OP_INPUTS: dict[gg.ops.Op, list[tuple[float, ...]]] = {
    E.add: [(0.3, -1.2)],
    E.sub: [(0.3, -1.2)],
    E.mul: [(0.3, -1.2)],
    E.div: [(0.3, -1.2), (-2.0, 0.5)],
    E.pow: [(1.7, 2.3), (-1.5, 3.0), (0.4, -0.5)],
    E.neg: [(0.3,)],
    E.exp: [(0.7,), (-3.0,)],
    E.log: [(0.7,), (4.0,)],
    E.tanh: [(0.7,), (-2.0,)],
    E.sigmoid: [(0.7,), (-30.0,)],
    E.relu: [(0.7,), (-0.7,)],
    E.leaky_relu: [(0.7,), (-0.7,)],
    E.elu: [(0.7,), (-0.7,)],
    E.maximum: [(0.3, -1.2), (-1.2, 0.3)],
    E.minimum: [(0.3, -1.2), (-1.2, 0.3)],
    E.sqrt: [(2.0,)],
    E.abs: [(-2.0,), (3.0,)],
}


@pytest.mark.parametrize("op", list(FLOAT_FORWARD), ids=lambda op: op.name)
def test_forward_and_backward_agree_with_the_registry(op: gg.ops.Op) -> None:
    # the cases above, or inputs drawn from the op's gradient-check spec (a new op needs none)
    params = op_params(op.name)
    for args in OP_INPUTS.get(op) or scalar_inputs(op.name):
        xs = [Scalar(v) for v in args]
        out = apply_op(op, *xs, **params)
        want = op.forward(*[np.float64(v) for v in args], **params)
        assert out.data == pytest.approx(float(want), rel=1e-15, abs=1e-300)
        out.backward(0.5)  # the engine's fast path (or generic path) with upstream 0.5
        by_rule = registry_rules(out, 0.5)  # the registry's own VJP rules on floats
        for x, g in zip(xs, by_rule, strict=True):
            assert x.grad == pytest.approx(g, rel=1e-14, abs=1e-300)
        # the edge labels of pictures: the same numbers with upstream gradient 1
        assert local_grads(out) == pytest.approx(registry_rules(out, 1.0), rel=1e-15)
        # and the Tensor engine on 0-d float64 tensors
        ts = [gg.tensor(np.float64(v), requires_grad=True) for v in args]
        t_out = OP_FUNCTIONS[op.name](*ts, **params)
        t_out.backward(np.float64(0.5))
        for x, t in zip(xs, ts, strict=True):
            assert x.grad == pytest.approx(float(t.grad), rel=1e-14, abs=1e-300)


@pytest.mark.parametrize(
    ("build", "want"),
    [
        (lambda x: x.relu(), (0.0,)),  # relu at its kink: gradient 0
        (lambda x: x.leaky_relu(0.1), (0.1,)),  # leaky_relu at 0: the slope
        (lambda x: x.elu(2.0), (2.0,)),  # elu at 0: alpha
    ],
)
def test_kinks_follow_the_registry_conventions(build, want) -> None:  # type: ignore[no-untyped-def]
    x = Scalar(0.0)
    out = build(x)
    out.backward()
    assert (x.grad,) == want == local_grads(out)


def test_maximum_tie_splits_the_gradient() -> None:
    x, y = Scalar(1.0), Scalar(1.0)
    x.maximum(y).backward()
    assert (x.grad, y.grad) == (0.5, 0.5)


def test_same_numbers_as_tensors_on_a_composite_expression() -> None:
    def f(a, b):  # type: ignore[no-untyped-def]
        c = gg.tanh(a * b + gg.exp(a) / (1 + gg.sigmoid(b)))
        d = gg.maximum(c, 0.1) * gg.relu(b - 0.5) + gg.elu(a - 3.0) - gg.log(1 + b * b)
        return d**2 + gg.leaky_relu(c - 1.0, 0.2) * a

    sa, sb = Scalar(0.7), Scalar(1.3)
    out = f(sa, sb)
    out.backward()
    ta = gg.tensor(np.float64(0.7), requires_grad=True)
    tb = gg.tensor(np.float64(1.3), requires_grad=True)
    tout = f(ta, tb)
    tout.backward()
    assert out.data == pytest.approx(float(tout.data), rel=1e-14)
    assert sa.grad == pytest.approx(float(ta.grad), rel=1e-13)
    assert sb.grad == pytest.approx(float(tb.grad), rel=1e-13)


def test_leaves_accumulate_intermediates_reset() -> None:
    a, b, c, d, e = lecture()
    e.backward(retain_graph=True)
    e.backward()
    assert (a.grad, b.grad) == (4.0, 10.0)
    assert (c.grad, d.grad) == (2.0, 3.0)
    a.zero_grad()
    assert a.grad == 0.0


def test_backward_from_a_leaf_and_with_a_seed() -> None:
    x = Scalar(3.0)
    x.backward(2.0)
    assert x.grad == 2.0
    y = Scalar(3.0)
    (y * y).backward(0.5)
    assert y.grad == 3.0  # 0.5 * 2y
    with pytest.raises(TypeError, match="backward grad"):
        (y * y).backward("1")  # type: ignore[arg-type]


def test_backward_across_a_gap_in_creation_numbers() -> None:
    x = Scalar(2.0)
    h = x * 3
    junk = [Scalar(1.0) * 2 for _ in range(5000)]  # numbers taken by nodes of no interest
    y = h * h + x
    y.backward()
    assert x.grad == 2 * 6.0 * 3 + 1
    assert h.grad == 12.0 and junk[0].grad == 0.0


def test_backward_of_a_constant_is_an_error() -> None:
    with pytest.raises(BackwardError, match="constant Scalar"):
        Scalar(1.0, requires_grad=False).backward()
    with gg.no_grad():
        out = Scalar(1.0) * 2
    with pytest.raises(BackwardError, match="no_grad"):
        out.backward()


def test_constants_get_no_gradient_requirement() -> None:
    s = Scalar(2.0)
    out = s * 3
    k = out._b
    assert k is not None and not k.requires_grad and k.is_leaf
    assert Scalar(1.0, requires_grad=False).requires_grad is False


def test_no_grad_records_nothing() -> None:
    s = Scalar(2.0)
    with gg.no_grad():
        out = (s * s + 1).exp().relu()
    assert out.is_leaf and not out.requires_grad
    assert out.data == pytest.approx(math.exp(5.0))


def test_topological_order_is_reverse_creation_order() -> None:
    a, _, c, d, e = lecture()
    order = topological(e)
    assert order == [e, d, c]
    assert [n._seq for n in order] == sorted((n._seq for n in order), reverse=True)
    assert topological(a) == []


@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [
        (lambda: Scalar(1.0) + "x", TypeError, "unsupported operand for '\\+'"),
        (lambda: "x" * Scalar(1.0), TypeError, "unsupported operand"),
        (lambda: Scalar(1.0) * gg.tensor([1.0]), TypeError, "Scalars and Tensors do not mix"),
        (lambda: Scalar("1"), TypeError, "expected a real number"),
        (lambda: Scalar(True), TypeError, "expected a real number"),
        (lambda: Scalar(-1.0).log(), ValueError, "log: ln\\(-1\\) is undefined"),
        (lambda: Scalar(0.0).log(), ValueError, "x must be > 0"),
        (lambda: Scalar(1.0) / 0, ZeroDivisionError, "div: division by zero"),
        (lambda: Scalar(-8.0) ** (1 / 3), ValueError, "not real"),
        (lambda: Scalar(0.0) ** -1, ZeroDivisionError, "pow"),
        (lambda: Scalar(1000.0).exp(), OverflowError, "exp: exp\\(1000\\) overflows"),
        (lambda: Scalar(1.0).leaky_relu("a"), TypeError, "slope"),  # type: ignore[arg-type]
        (lambda: apply_op(gg.REGISTRY["softmax"], Scalar(1.0)), NotImplementedError, "softmax"),
        (lambda: scalar_backward(gg.tensor(1.0)), TypeError, "expected a Scalar"),  # type: ignore[arg-type]
    ],
)
def test_clear_errors(make, exc, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(exc, match=match):
        make()


def test_power_rule_at_zero_is_inf_like_numpy() -> None:
    x = Scalar(0.0)
    (x**0.5).backward()
    assert x.grad == math.inf


def test_graph_holds_no_reference_cycles() -> None:
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        gc.collect()
        a, b, c, d, e = lecture()
        out = (e.tanh() * a + b.exp()).relu()
        out.backward()
        del a, b, c, d, e, out
        assert gc.collect() == 0  # everything was freed by reference counting alone
    finally:
        if was:
            gc.enable()


def test_repr() -> None:
    a, _, _, _, e = lecture()
    assert repr(a) == "Scalar(2, grad=0, name='a')"
    assert repr(e) == "Scalar(6, grad=0, op=mul)"
    assert "requires_grad=False" in repr(Scalar(1.0, requires_grad=False))
    assert float(e) == 6.0 and e.item() == 6.0 and e.shape == ()


def test_million_node_chain_without_recursion() -> None:
    x = Scalar(0.5, name="x")
    c = Scalar(1.0000001, requires_grad=False)
    y = x
    for _ in range(1_000_000):
        y = y * c
    y.backward()
    assert x.grad == pytest.approx(1.0000001**1_000_000, rel=1e-9)
    del y  # freeing a million-deep chain must not overflow the C stack either


def test_scalars_helper_names_leaves() -> None:
    from graphgrad.scalar import scalars

    w = scalars([0.5, -1.0], name="w")
    assert [u.name for u in w] == ["w[0]", "w[1]"] and [u.data for u in w] == [0.5, -1.0]
    assert scalars([1])[0].name is None
