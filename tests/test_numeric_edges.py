"""Edge points where a rule once gave a silently wrong gradient, each against the value
PyTorch gives (written out, so that the test needs no PyTorch), and the errors that replaced
silent casts, broadcasts and crashes around the optimisers and ``gg.grad``."""

from __future__ import annotations

import re

import numpy as np
import pytest

import graphgrad as gg
from graphgrad import _scalar_py
from graphgrad.train import Trainer


def test_x_to_the_zero_has_derivative_zero_at_zero() -> None:
    x = gg.tensor(np.array([0.0, 2.0]), requires_grad=True)
    (gg.reshape(x, (2, 1)) ** np.arange(4.0)).sum().backward()  # 1 + x + x^2 + x^3
    np.testing.assert_array_equal(x.grad, [1.0, 17.0])  # torch: [1., 17.]
    x.grad = None
    (x**0.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0])


@pytest.mark.parametrize("impl", ["core", "pure"])
def test_a_scalar_to_the_zero_has_derivative_zero_at_zero(impl: str) -> None:
    Scalar = gg.Scalar if impl == "core" else _scalar_py.Scalar
    x = Scalar(0.0)
    (x**0.0).backward()
    assert x.grad == 0.0 and not np.isnan(x.grad)


@pytest.mark.parametrize("inf", [np.inf, -np.inf])
@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_tied_infinities_split_the_gradient(op: str, inf: float) -> None:
    x = gg.tensor(np.array([inf, 1.0]), requires_grad=True)
    y = gg.tensor(np.array([inf, 1.0]), requires_grad=True)
    getattr(gg, op)(x, y).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.5, 0.5])  # torch: [0.5, 0.5] each
    np.testing.assert_array_equal(y.grad, [0.5, 0.5])
    a, b = gg.Scalar(inf), gg.Scalar(inf)
    a.maximum(b).backward()
    assert (a.grad, b.grad) == (0.5, 0.5)


def test_target_probabilities_that_require_grad_get_it() -> None:
    logits = np.array([[0.3, -1.2, 2.0], [1.5, 0.1, -0.4]])
    raw_t = np.array([[0.2, 1.0, -0.5], [0.0, 0.7, 0.3]])
    x = gg.tensor(logits, requires_grad=True)
    t = gg.tensor(raw_t, requires_grad=True)
    probs = gg.softmax(t)
    gg.cross_entropy(x, probs).backward()
    # dL/dprobs = -(1/S) ln softmax(x), then through softmax: what torch gives
    z = logits - logits.max(axis=1, keepdims=True)
    ls = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    gp = -ls / 2
    p = probs.data
    want = p * (gp - (gp * p).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(t.grad, want, rtol=1e-12)
    assert t.grad is not None and x.grad is not None


def test_optimisers_step_after_a_create_graph_backward() -> None:
    w = gg.tensor(np.array([1.0, 2.0]), requires_grad=True)
    opt = gg.optim.SGD([w], lr=0.1, momentum=0.9)
    for _ in range(2):
        opt.zero_grad()
        (w**3).sum().backward(create_graph=True)
        assert isinstance(w.grad, gg.Tensor)
        opt.step()
    np.testing.assert_allclose(w.data, [0.283, -0.472], rtol=1e-12)  # torch's numbers
    v = gg.tensor(np.array([1.0, 2.0]), requires_grad=True)
    adam = gg.optim.Adam([v], lr=0.1)
    (v**3).sum().backward(create_graph=True)
    adam.step()
    np.testing.assert_allclose(v.data, [0.9, 1.9], rtol=1e-7)


@pytest.mark.parametrize("make", [lambda p: gg.optim.SGD(p, lr=0.1), lambda p: gg.optim.Adam(p)])
def test_a_gradient_of_another_shape_is_refused_not_broadcast(make) -> None:  # type: ignore[no-untyped-def]
    w = gg.tensor(np.array([1.0, 2.0]), requires_grad=True)
    opt = make([w])
    w.grad = np.ones(1)
    with pytest.raises(gg.ShapeError, match=r"parameter #0 has shape \(2,\) but its \.grad"):
        opt.step()
    np.testing.assert_array_equal(w.data, [1.0, 2.0])


def test_an_optimiser_refuses_a_non_leaf() -> None:
    w = gg.tensor(np.array([1.0, 2.0]), requires_grad=True)
    with pytest.raises(TypeError, match=r"parameter #0 .* result of op 'mul', not a leaf"):
        gg.optim.SGD([w * 2.0], lr=0.1)


@pytest.mark.parametrize("arg", [np.array([16777217]), 3, np.array([True])])
def test_grad_refuses_integer_inputs_instead_of_rounding_them(arg: object) -> None:
    with pytest.raises(TypeError, match=r"grad: argument 0 holds (int|bool)\w* data"):
        gg.grad(lambda t: (t * t).sum())(arg)
    with pytest.raises(TypeError, match=r"vjp: argument 0 holds"):
        gg.vjp(lambda t: t * t, arg)
    assert gg.grad(lambda t: (t * t).sum())(np.array([16777217.0])).data[0] == 33554434.0


def test_gradcheck_names_a_nan_gradient_instead_of_nondeterminism() -> None:
    x = np.array([0.0, 2.0])
    with np.errstate(divide="ignore", invalid="ignore"):  # sqrt's slope at 0
        res = gg.gradcheck(lambda t: gg.sqrt(t).sum(), x, raise_exception=False)
    text = str(res)
    assert not res.passed and res.reentrant
    assert "backward run twice" not in text
    assert "the analytic gradient is inf at element 0" in text


def test_flatten_needs_a_sample_axis() -> None:
    with pytest.raises(gg.ShapeError, match=r"Flatten: input of shape \(3,\) has no sample axis"):
        gg.nn.Flatten()(np.zeros(3))
    assert gg.nn.Flatten()(np.zeros((2, 3, 4))).shape == (2, 12)


def test_python_numbers_too_large_for_float32_are_refused_not_made_infinite() -> None:
    for data in (1e40, [1.0, -1e39]):
        with pytest.raises(OverflowError, match=r"does not fit in float32 .*dtype=np\.float64"):
            gg.tensor(data)
    assert gg.tensor(1e40, dtype=np.float64).data == 1e40
    assert np.isinf(gg.tensor(float("inf")).data)  # an infinity asked for stays one
    assert gg.tensor([1.0, 3e38]).dtype == np.float32


@pytest.mark.parametrize(
    ("kwargs", "err", "words"),
    [
        ({"batch_size": 2.5}, TypeError, "batch_size must be an int, got float 2.5"),
        ({"batch_size": True}, TypeError, "batch_size must be an int, got bool"),
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
        ({"batch_size": 4, "keep_checkpoints": 0}, ValueError, "keep_checkpoints must be >= 1"),
        ({"batch_size": 4, "data_seed": -1}, ValueError, "data_seed must be >= 0"),
        ({"batch_size": 4, "eval_batch_size": 10.0}, TypeError, "eval_batch_size must be an int"),
    ],
)
def test_trainer_refuses_integers_it_would_truncate_or_misuse(kwargs, err, words) -> None:  # type: ignore[no-untyped-def]
    m = gg.nn.MLP(2, [3], 2, rng=np.random.default_rng(0))
    with pytest.raises(err, match=rf"^Trainer: {re.escape(words)}"):
        Trainer(m, gg.optim.SGD(m.parameters(), lr=0.1), **kwargs)
    assert Trainer(m, gg.optim.SGD(m.parameters(), lr=0.1), batch_size=np.int64(4)).batch_size == 4


def test_linear_refuses_a_float_size_it_would_truncate() -> None:
    with pytest.raises(TypeError, match=r"Linear: in_features must be an int, got float 2\.5"):
        gg.nn.Linear(2.5, 3)  # type: ignore[arg-type]
    assert gg.nn.Linear(np.int64(2), 3).weight.shape == (3, 2)
