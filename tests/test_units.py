"""Free granularity: a Tensor graph and its scalar-unit expansion give the same numbers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import graphgrad as gg
from graphgrad.errors import BackwardError


def leaf(rng: np.random.Generator, shape: tuple[int, ...], name: str) -> gg.Tensor:
    return gg.tensor(rng.normal(size=shape), requires_grad=True, name=name)


def check(loss: gg.Tensor, params: list[gg.Tensor], tol: float = 1e-12) -> gg.Units:
    u = gg.units(loss)
    assert u.scalar.data == pytest.approx(float(loss.data), rel=tol, abs=tol)
    loss.backward()
    u.backward()
    for p in params:
        assert p.grad is not None
        np.testing.assert_allclose(u.grad(p), p.grad, rtol=tol, atol=tol)
    return u


def test_mlp_with_softmax_cross_entropy_agrees_to_1e12(rng: np.random.Generator) -> None:
    x = gg.tensor(rng.normal(size=(6, 3)), name="x")  # data: constants
    y = np.array([0, 2, 1, 1, 0, 2])
    w1, b1 = leaf(rng, (5, 3), "W1"), leaf(rng, (5,), "b1")
    w2, b2 = leaf(rng, (3, 5), "W2"), leaf(rng, (3,), "b2")
    h = gg.relu(gg.linear(x, w1, b1) + 0.05)
    loss = gg.cross_entropy(gg.linear(h, w2, b2), y)
    u = check(loss, [w1, b1, w2, b2])
    # per sample s and output t: 3 products h_d = w_d x_d, 2 additions, + b
    assert u[w1].shape == (5, 3) and u[w1][1, 2].name == "W1[1,2]"
    assert u.values(h).shape == (6, 5)


def test_mlp_from_nn_modules(rng: np.random.Generator) -> None:
    model = gg.nn.MLP(4, [6], 3, activation="tanh", rng=np.random.default_rng(0))
    params = list(model.parameters())
    for p in params:
        p.data = p.data.astype(np.float64)
    x = gg.tensor(rng.normal(size=(5, 4)))
    loss = gg.cross_entropy(model(x), np.array([0, 1, 2, 1, 0]))
    check(loss, params)


def test_linear_unit_counts_follow_the_lecture(rng: np.random.Generator) -> None:
    # g(x) = h_1(x_1) + ... + h_D(x_D) + b with h_d = w_d x_d: D products, D - 1 sums, + b
    s, d, t = 2, 4, 3
    x = gg.tensor(rng.normal(size=(s, d)))
    w, b = leaf(rng, (t, d), "w"), leaf(rng, (t,), "b")
    out = gg.linear(x, w, b)
    u = gg.units(out)
    assert u.count() == s * t * (d + (d - 1) + 1)
    o = u.output[1, 2]
    assert o.op == "add" and o._b is u[b][2]


def test_linear_without_bias_expands_to_products_and_sums_only(rng: np.random.Generator) -> None:
    # the linear op with two inputs (a Linear(bias=False)): D products and D - 1 sums a unit,
    # no "+ b", and the same gradients as the Tensor graph, batched inputs included
    s, d, t = 2, 4, 3
    x = leaf(rng, (5, s, d), "x")
    w = leaf(rng, (t, d), "w")
    out = gg.linear(x, w)
    assert out._op is gg.REGISTRY["linear"] and len(out._inputs) == 2
    u = gg.units(out)
    assert u.count() == 5 * s * t * (d + (d - 1))
    check((out * gg.tensor(rng.normal(size=out.shape))).sum(), [x, w])


OPS: list[tuple[str, Callable[[Any, Any], Any]]] = [
    ("softmax", lambda a, b: (gg.softmax(a, axis=1) * b).sum()),
    ("softmax axis 0", lambda a, b: (gg.softmax(a, axis=0) * b).sum()),
    ("log_softmax", lambda a, b: (gg.log_softmax(a) * b).mean()),
    ("logsumexp", lambda a, b: gg.logsumexp(a, axis=1).sum() + gg.logsumexp(b)),
    ("matmul", lambda a, b: (a @ b.T).sum() + (a[0] @ b[1]) + (a @ b[0]).sum()),
    ("broadcast", lambda a, b: (a * b[0] + b[:, :1] - 2.0 / (3.0 + b * b)).mean(axis=0).sum()),
    ("unary", lambda a, b: (gg.exp(a * 0.3) + gg.tanh(b) + gg.sigmoid(a)).sum()),
    ("activations", lambda a, b: (gg.elu(a, 0.7) + gg.leaky_relu(b, 0.2) + gg.relu(a)).sum()),
    ("select", lambda a, b: (gg.maximum(a, b) + gg.minimum(a, 0.1) + gg.where(a > b, a, b)).sum()),
    ("pow sqrt abs", lambda a, b: (abs(a) ** 1.5 + gg.sqrt(b * b + 1) + a**2).sum()),
    ("shape", lambda a, b: (a.T.reshape(-1)[::2] * gg.concatenate([b[0], b[1]])[:3]).sum()),
    ("stack", lambda a, b: (gg.stack([a[0], b[0]]) ** 2).sum(axis=1).sum()),
    ("log neg", lambda a, b: (-gg.log(1.0 + a * a) + b).sum(axis=(0, 1))),
    ("max min", lambda a, b: a.max(axis=1).sum() + b.min() + a.min(axis=0, keepdims=True).sum()),
    ("max all", lambda a, b: (a * b).max() - gg.max(a, axis=(0, 1))),
    (
        "batched matmul",
        lambda a, b: (
            (gg.stack([a, b, a * b]) @ gg.stack([b.T, a.T]).reshape(2, 1, 3, 2)).sum()
            + (gg.stack([a, b]) @ b[0]).sum()
            + (b[1] @ gg.stack([a.T, b.T])).sum()
        ),
    ),
]


@pytest.mark.parametrize(("name", "f"), OPS, ids=[n for n, _ in OPS])
def test_ops_expand_to_the_same_numbers(name: str, f: Callable[..., Any]) -> None:
    rng = np.random.default_rng(7)
    a, b = leaf(rng, (2, 3), "a"), leaf(rng, (2, 3), "b")
    check(f(a, b), [a, b])


def test_probability_targets(rng: np.random.Generator) -> None:
    logits = leaf(rng, (3, 4), "z")
    p = rng.random((3, 4))
    p[1, 2] = 0.0
    p /= p.sum(axis=1, keepdims=True)
    check(gg.cross_entropy(logits, p), [logits])


def test_errors(rng: np.random.Generator) -> None:
    a = leaf(rng, (2, 2), "a")
    with pytest.raises(NotImplementedError, match="op 'index_add' has no scalar-unit expansion"):
        gg.units(gg.index_add(a, np.array([0, 1]), (3, 2)))
    with pytest.raises(TypeError, match="expected a Tensor"):
        gg.units(gg.Scalar(1.0))  # type: ignore[arg-type]
    loss = (a * a).sum()
    loss.backward()
    with pytest.raises(BackwardError, match="freed by backward"):
        gg.units(loss)
    u = gg.units(a * 2)
    with pytest.raises(ValueError, match="not one element"):
        u.backward()
    with pytest.raises(KeyError, match="not part"):
        u[gg.tensor(1.0)]
