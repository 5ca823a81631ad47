"""Engine behaviour: the worked example, fan-out, deep graphs, higher order, modes, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import graphgrad as gg
from graphgrad.ops._registry import Op
from graphgrad.tensor import _apply


def test_lecture_worked_example() -> None:
    a = gg.tensor(2.0, requires_grad=True)
    b = gg.tensor(1.0, requires_grad=True)
    c = a + b
    d = b + 1
    e = c * d
    e.backward()
    assert e.item() == 6.0 and c.item() == 3.0 and d.item() == 2.0
    assert a.grad == 2.0 and b.grad == 5.0


def test_fan_out_sums_gradients() -> None:
    x = gg.tensor([1.0, -2.0, 3.0], requires_grad=True, dtype=np.float64)
    (x * x + x).sum().backward()
    np.testing.assert_array_equal(x.grad, 2 * x.data + 1)


def test_million_node_chain() -> None:
    x = gg.tensor(0.5, requires_grad=True)
    y = x
    for _ in range(1_000_000):
        y = y + 1.0
    y.backward()
    assert x.grad == 1.0


def test_million_node_chain_freed_without_backward() -> None:
    x = gg.tensor(0.5, requires_grad=True)
    y = x
    for _ in range(1_000_000):
        y = y * 1.0
    del y  # deallocating a deep chain must not overflow the C stack


def test_second_order() -> None:
    def f(x: gg.Tensor) -> gg.Tensor:
        return x**3

    assert gg.grad(gg.grad(f))(2.0).item() == pytest.approx(12.0)
    assert gg.grad(gg.grad(gg.grad(f)))(2.0).item() == pytest.approx(6.0)
    x = gg.tensor(2.0, requires_grad=True, dtype=np.float64)
    (x**3).backward(create_graph=True)
    gx = x.grad
    assert isinstance(gx, gg.Tensor) and gx.item() == pytest.approx(12.0)
    x.grad = None
    gx.backward()
    assert x.grad.item() == pytest.approx(12.0)


def test_hessian_vector_product() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 3))
    h = a + a.T  # f(x) = x^T A x / 2 with symmetric part: Hessian = (A + A^T) / 2 * 2 / 2

    def f(x: gg.Tensor) -> gg.Tensor:
        return (x * (gg.Tensor(a) @ x)).sum() * 0.5

    x0 = rng.standard_normal(3)
    v = rng.standard_normal(3)
    _, back = gg.vjp(gg.grad(f), gg.Tensor(x0))
    (hv,) = back(gg.Tensor(v))
    np.testing.assert_allclose(hv.data, 0.5 * h @ v, rtol=1e-12)


def test_value_and_grad_argnums() -> None:
    def f(x: gg.Tensor, y: gg.Tensor) -> gg.Tensor:
        return (x * y).sum()

    v, (gx, gy) = gg.value_and_grad(f, argnums=(0, 1))(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    assert v.item() == 11.0
    np.testing.assert_array_equal(gx.data, [3.0, 4.0])
    np.testing.assert_array_equal(gy.data, [1.0, 2.0])


def test_no_grad_records_nothing() -> None:
    x = gg.tensor([1.0], requires_grad=True)
    with gg.no_grad():
        y = x * 2
    assert not y.requires_grad and y.is_leaf

    @gg.no_grad()
    def g(t: gg.Tensor) -> gg.Tensor:
        return t + 1

    assert not g(x).requires_grad and gg.is_grad_enabled()


def test_retain_graph_semantics() -> None:
    x = gg.tensor(3.0, requires_grad=True)
    y = x * x
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad == 12.0  # accumulated twice
    with pytest.raises(gg.BackwardError, match=r"second time.*retain_graph"):
        y.backward()


def test_getitem_repeats_sum() -> None:
    x = gg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    x[[0, 0, 1]].sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 1.0, 0.0])


def test_comparisons_are_boolean_constants() -> None:
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    m = x > 1.5
    assert m.dtype == np.bool_ and not m.requires_grad


def test_dtypes() -> None:
    assert gg.tensor(1.0).dtype == np.float32
    x = gg.tensor([1.0], requires_grad=True)
    assert (x * 0.5 + 2).dtype == np.float32  # Python scalars do not upcast
    y = gg.Tensor(np.array([1.0]), requires_grad=True)
    assert (y * 2).dtype == np.float64


def test_kink_conventions() -> None:
    x = gg.tensor([0.0, 0.0, 0.0], requires_grad=True)
    (gg.relu(x) + gg.abs(x)).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 0.0])
    a = gg.tensor(1.0, requires_grad=True)
    b = gg.tensor(1.0, requires_grad=True)
    gg.maximum(a, b).backward()
    assert a.grad == 0.5 and b.grad == 0.5
    m = gg.tensor([2.0, 2.0, 1.0], requires_grad=True)
    m.max().backward()
    np.testing.assert_array_equal(m.grad, [0.5, 0.5, 0.0])


# ------------------------------------------------------------------------------ errors


def test_broadcast_error_names_op_and_shapes() -> None:
    with pytest.raises(gg.ShapeError, match=r"add: cannot broadcast shapes \(2, 3\) and \(4,\)"):
        gg.tensor(np.ones((2, 3))) + gg.tensor(np.ones(4))


def test_matmul_error_names_shapes() -> None:
    with pytest.raises(gg.ShapeError, match=r"matmul: shapes \(2, 3\) and \(4, 5\)"):
        gg.tensor(np.ones((2, 3))) @ gg.tensor(np.ones((4, 5)))


def test_backward_non_scalar_needs_grad() -> None:
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(gg.BackwardError, match=r"non-scalar tensor of shape \(2,\)"):
        (x * 2).backward()


def test_backward_without_requires_grad() -> None:
    with pytest.raises(gg.BackwardError, match="does not require gradients"):
        gg.tensor(1.0).backward()


def test_missing_rule_names_op_and_argument() -> None:
    op = Op("half_rule", np.multiply, (None, None), ("x", "y"), "x*y", ("-", "-"))
    x = gg.tensor(2.0, requires_grad=True)
    out = _apply(op, (x, gg.tensor(3.0)))
    with pytest.raises(gg.NonDifferentiableError, match=r"'half_rule'.*'x'"):
        out.backward()


def test_anomaly_forward_names_op_and_line() -> None:
    x = gg.tensor([-1.0, 2.0], requires_grad=True)
    with gg.detect_anomaly(), pytest.raises(gg.AnomalyError) as info:
        gg.log(x)
    msg = str(info.value)
    assert "'log'" in msg and "-1" in msg and "test_engine.py" in msg


def test_anomaly_backward() -> None:
    x = gg.tensor([0.0, 1.0], requires_grad=True)
    with gg.detect_anomaly():
        y = gg.sqrt(x).sum()
        with pytest.raises(gg.AnomalyError, match="backward of op 'sqrt'"):
            y.backward()


# --------------------------------------------------------------------------- gradcheck


def test_numerical_grad_methods_and_costs() -> None:
    calls = 0

    def f(x: gg.Tensor) -> gg.Tensor:
        nonlocal calls
        calls += 1
        return (x**3).sum()

    x = np.array([1.0, 2.0, 3.0])
    central = gg.numerical_grad(f, x, eps=1e-5)
    assert calls == 2 * x.size
    calls = 0
    forward = gg.numerical_grad(f, x, eps=1e-7, method="forward")
    assert calls == x.size + 1
    np.testing.assert_allclose(central, 3 * x**2, rtol=1e-8)
    np.testing.assert_allclose(forward, 3 * x**2, rtol=1e-5)
    assert np.max(np.abs(central - 3 * x**2)) < np.max(np.abs(forward - 3 * x**2))


def test_gradcheck_catches_a_wrong_rule() -> None:
    def wrong(xp, g, ans, x):  # d/dx x^2 is 2x, not x
        return g * x

    op = Op("bad_square", np.square, (wrong,), ("x",), "x^2", ("x",))
    res = gg.gradcheck(lambda t: _apply(op, (t,)), np.array([1.0, 2.0]), raise_exception=False)
    assert not res.passed and res.max_abs_error[0] == pytest.approx(2.0, rel=1e-6)
    with pytest.raises(gg.GradcheckError):
        gg.gradcheck(lambda t: _apply(op, (t,)), np.array([1.0, 2.0]))


def test_gradcheck_catches_non_reentrant_rule() -> None:
    state = {"n": 0}

    def drifting(xp, g, ans, x):
        state["n"] += 1
        return g * 2 * x * (1 + 1e-3 * state["n"])

    op = Op("drift", np.square, (drifting,), ("x",), "x^2", ("2x",))
    res = gg.gradcheck(lambda t: _apply(op, (t,)), np.array([1.0]), raise_exception=False)
    assert not res.reentrant and not res.passed


def test_gradcheck_warns_on_float32() -> None:
    with pytest.warns(gg.GradcheckWarning, match="float32"):
        gg.gradcheck(gg.tanh, np.array([0.3], dtype=np.float32), atol=1e-2, rtol=1e-2)


# -------------------------------------------------------------------------- properties


BINARY = [gg.add, gg.sub, gg.mul, gg.div, gg.maximum]


@settings(max_examples=40, deadline=None)
@given(
    shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3),
    which=st.integers(0, len(BINARY) - 1),
    seed=st.integers(0, 2**31),
)
def test_broadcasting_gradients_property(shapes, which: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    xs = [rng.uniform(0.5, 2.0, s) * rng.choice([-1, 1], s) for s in shapes.input_shapes]
    if which == 4 and np.min(np.abs(np.subtract(*np.broadcast_arrays(*xs)))) < 0.1:
        return
    out = BINARY[which](*[gg.Tensor(x) for x in xs])
    assert out.shape == shapes.result_shape
    gg.gradcheck(BINARY[which], xs, atol=1e-6, rtol=1e-5)


def test_no_warnings_for_plain_use() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = gg.tensor(np.linspace(-3, 3, 7), requires_grad=True)
        gg.cross_entropy(gg.stack([x, -x]), np.array([0, 1])).backward()
        assert x.grad.shape == (7,)


def test_ops_table_matches_registry() -> None:
    table = gg.ops_table()
    for name in gg.REGISTRY:
        assert name in table
    assert "x1: 1/x2, x2: -x1/x2^2" in table  # the lecture's row for division


def test_tensor_and_scalar_do_not_mix() -> None:
    with pytest.raises(TypeError, match="Scalar cannot be mixed"):
        gg.tensor([1.0]) + gg.Scalar(2.0)


def test_gradient_that_is_an_input_array_is_never_aliased_or_written() -> None:
    # d/dx sum(x * w) is w itself: the mul rule hands w's array back without a pass over it.
    # The engine must copy it into x.grad and never add into it in place.
    w0 = np.array([1.0, 2.0, 3.0])
    x = gg.Tensor([4.0, 5.0, 6.0], requires_grad=True)
    w = gg.Tensor(w0.copy(), requires_grad=True)
    ((x * w).sum() + (x * x).sum()).backward()  # x gets w, then 2x accumulated on top
    np.testing.assert_array_equal(w.data, w0)
    np.testing.assert_array_equal(x.grad, w0 + 2 * x.data)
    assert not np.shares_memory(x.grad, w.data)
    x.grad = None
    (x * w).sum().backward()
    assert not np.shares_memory(x.grad, w.data)
    x.grad *= 0  # a user's in-place edit of a gradient leaves the parameters alone
    np.testing.assert_array_equal(w.data, w0)


def test_leaves_never_share_a_gradient_array() -> None:
    # add hands the same upstream array to both of its inputs; at most one leaf may keep it.
    a = gg.Tensor([0.1, 0.2], requires_grad=True)
    b = gg.Tensor([0.3, 0.4], requires_grad=True)
    gg.tanh(a + b).sum().backward()
    assert a.grad is not None and b.grad is not None
    assert not np.shares_memory(a.grad, b.grad)
    expected = 1 - np.tanh(a.data + b.data) ** 2
    b.grad *= 10  # a user's in-place edit of one gradient leaves the other alone
    np.testing.assert_allclose(a.grad, expected)
    # The lecture's chain: b's gradient is tanh's output gradient, shared with the x*w node.
    x = gg.Tensor([1.0, -2.0], requires_grad=True)
    w = gg.Tensor([0.5, 0.25], requires_grad=True)
    bb = gg.Tensor([0.0, 1.0], requires_grad=True)
    (gg.tanh(x * w + bb) * x).sum().backward()
    grads = [x.grad, w.grad, bb.grad]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not np.shares_memory(grads[i], grads[j])


def test_the_engine_keeps_a_view_only_of_a_buffer_nothing_else_refers_to() -> None:
    # a rule's result that is a view (a padded weight gradient, a transpose) becomes .grad
    # without a copy only where nothing else refers to its buffer and the view covers most
    # of it; a slice of a larger temporary, or a view of an array others hold, is copied
    from graphgrad import _engine, _memory

    g, ans, args = np.ones(3), np.ones(3), [np.ones(3)]
    fresh = _engine._fresh  # (called outside `assert`: pytest's rewriting holds its operands)
    padded = fresh(_memory.empty_grad((4, 1024), np.float32), g, ans, args)
    transposed = fresh(np.ones((3, 5)).T, g, ans, args)
    small_slice = fresh(np.ones((100, 5))[:3], g, ans, args)  # 3 of 100 rows
    held = np.ones((3, 5))
    of_held = fresh(held.T, g, ans, args)  # `held` refers to the buffer too
    an_input, upstream = fresh(args[0], g, ans, args), fresh(g, g, ans, args)
    assert padded and transposed
    assert not small_slice and not of_held and not an_input and not upstream
