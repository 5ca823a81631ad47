"""Regression tests for defects found while reviewing the lecture material."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import graphgrad as gg
from graphgrad import _scalar_py
from graphgrad.cli import main
from graphgrad.expr import ExprError, parse
from graphgrad.gradcheck import gradcheck, numerical_grad
from graphgrad.viz import trace

BUILT = importlib.util.find_spec("graphgrad._scalar_core") is not None


def implementations() -> list:  # type: ignore[type-arg]
    mods = [_scalar_py]
    if BUILT:
        mods.append(importlib.import_module("graphgrad._scalar_core"))
    return mods


# ------------------------------------------------------- division's gradient (no y * y)


@pytest.mark.parametrize(
    ("x", "y", "dy"),
    [(1e-200, 1e-200, -1e200), (1e160, 1e160, -1e-160), (3.0, 1e155, -3e-310)],
)
def test_division_gradient_does_not_overflow_y_squared(x: float, y: float, dy: float) -> None:
    want = -((1.0 * (x / y)) / y)
    assert want == pytest.approx(dy, rel=1e-12)
    xt = gg.Tensor(np.array([x]), requires_grad=True)
    yt = gg.Tensor(np.array([y]), requires_grad=True)
    (xt / yt).sum().backward()
    assert yt.grad[0] == want
    assert xt.grad[0] == 1.0 / y
    results = []
    for mod in implementations():
        a, b = mod.Scalar(x), mod.Scalar(y)
        (a / b).backward()
        assert b.grad == want
        results.append(
            (a.grad, b.grad, mod.local_grads(a / b) if hasattr(mod, "local_grads") else None)
        )
    assert len({r[:2] for r in results}) == 1  # compiled and pure Python: bit-identical


def test_division_second_order_gradient_does_not_overflow() -> None:
    x = gg.Tensor(np.array(1e300))

    def dy(y: gg.Tensor) -> gg.Tensor:  # d/dy (x / y) = -x / y^2, through the rule's own ops
        return gg.grad(lambda t: x / t)(y)

    y = gg.Tensor(np.array(1e160))
    assert float(dy(y).data) == pytest.approx(-1e-20, rel=1e-12)
    assert float(gg.grad(dy)(y).data) == pytest.approx(2e-180, rel=1e-12)  # 2x / y^3


def test_sigmoid_by_division_at_400_has_no_spurious_gradient(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["graph", "exp(x)/(exp(x)+1)", "--at", "x=400"]) == 0
    out = capsys.readouterr().out
    x_row = next(line for line in out.splitlines() if line.startswith("x "))
    assert float(x_row.split()[-1]) == pytest.approx(0.0, abs=1e-170)  # true 1.9e-174
    assert "-a/c^2" in out  # the edge still shows the formula
    assert main(["graph", "x/y", "--at", "x=1e-200,y=1e-200"]) == 0
    assert "-1e+200" in capsys.readouterr().out


def test_division_gradcheck_broadcasting() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 1, 4))
    b = rng.uniform(0.5, 2.0, size=(2, 1)) * rng.choice([-1, 1], size=(2, 1))
    assert gradcheck(lambda s, t: s / t, [a, b]).passed


# ------------------------------------------------------- gradcheck on Fortran-ordered input


def test_numerical_grad_of_a_transposed_input() -> None:
    a = np.arange(6.0).reshape(2, 3).T
    g = numerical_grad(lambda t: (t * t).sum(), a)
    np.testing.assert_allclose(g, 2 * a, atol=1e-6)
    f = np.asfortranarray(np.arange(6.0).reshape(2, 3) + 1.0)
    np.testing.assert_allclose(numerical_grad(lambda t: (t * t * t).sum(), f), 3 * f * f, 1e-6)


def test_gradcheck_of_a_transposed_input_compares_real_numbers() -> None:
    a = np.arange(1.0, 7.0).reshape(2, 3).T
    res = gradcheck(lambda t: t * t, a)
    assert res.passed
    bad = gradcheck(
        lambda t: gg.Tensor(t.data * t.data, requires_grad=False) + t, a, raise_exception=False
    )
    assert not bad.passed  # its numerical Jacobian is not the identity


# ------------------------------------------------------------- units: soft labels' gradient


def test_units_cross_entropy_soft_labels_gradient() -> None:
    rng = np.random.default_rng(1)
    x = gg.Tensor(rng.normal(size=(3, 4)), requires_grad=True, name="x")
    raw = rng.uniform(size=(3, 4))
    raw[0, 1] = 0.0  # a zero target still has the gradient -ln p / S
    p = gg.Tensor(raw / raw.sum(axis=1, keepdims=True), requires_grad=True, name="p")
    loss = gg.cross_entropy(x, p)
    u = gg.units(loss)
    loss.backward()
    u.backward()
    assert u.scalar.data == pytest.approx(float(loss.data), rel=1e-12)
    np.testing.assert_allclose(u.grad(x), x.grad, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(u.grad(p), p.grad, rtol=1e-10, atol=1e-14)
    assert np.all(u.grad(p) != 0)


# ------------------------------------------------------------ trace: the gradient of the root


def test_trace_shows_gradients_of_its_root_not_stored_grads() -> None:
    a, b = gg.Scalar(2.0, name="a"), gg.Scalar(1.0, name="b")
    c = a + b
    c.name = "c"
    d = b + 1.0
    d.name = "d"
    e = c * d
    e.name = "e"
    e.backward(retain_graph=True)
    e.backward()  # a second backward: the stored .grad sums over both
    g = trace(c)  # after e's backward: c's trace shows dc/dnode, not de/dnode
    grads = {n["label"]: n["grad"] for n in g.nodes}
    assert grads == {"a": 1.0, "b": 1.0, "c": 1.0}
    assert a.grad == 2 * 2.0  # stored: de/da summed over two passes
    text = g.to_text()
    assert "grad ∂c/∂node" in text
    ge = trace(e)
    assert {n["label"]: n["grad"] for n in ge.nodes if n["kind"] != "const"} == {
        "a": 2.0,
        "b": 5.0,
        "c": 2.0,
        "d": 3.0,
        "e": 1.0,
    }
    assert "∂e/∂b = 1·2 + 1·3 = 5" in ge.explain()


def test_trace_matches_a_fresh_backward_bit_for_bit() -> None:
    rng = np.random.default_rng(2)
    for _ in range(20):  # the active implementation (the file also runs on pure Python)
        xs = [gg.Scalar(float(v), name=f"x{i}") for i, v in enumerate(rng.normal(size=4))]
        out = ((xs[0] * xs[1]).tanh() / (xs[2].exp() + 1.0) - xs[3].sigmoid() * xs[0]) ** 2.0
        out = out.log() + xs[1] / xs[2] ** 2.0
        out.backward()
        shown = {d["label"]: d["grad"] for d in trace(out).nodes}
        assert [shown[f"x{i}"] for i in range(4)] == [x.grad for x in xs]


# ----------------------------------------------------------- CLI: an EXPR starting with '-'


@pytest.mark.parametrize("cmd", ["graph", "paths"])
def test_cli_expression_starting_with_minus_gets_a_hint(
    cmd: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main([cmd, "-x*y", "--at", "x=1,y=2"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "starts with '-'" in err and " -- " in err
    assert main([cmd, "--at", "x=1,y=2", "--", "-x*y"]) == 0


def test_cli_paths_without_arguments_lists_every_form(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["paths"]) != 0
    err = capsys.readouterr().err
    assert "EXPR" in err and "--model" in err and "--layered" in err


# --------------------------------------------------------- expr: what the parser limit is


def test_long_flat_sum_is_refused_for_its_operator_count() -> None:
    with pytest.raises(ExprError) as e:
        parse("+".join(["x"] * 3000))
    msg = str(e.value)
    assert "more than about 3,000 operators in one chain" in msg


# ------------------------------------------- setting .data: both implementations the same


@pytest.mark.parametrize("value", [7, True, np.int64(3), np.float32(1.5), "7", None, 1 + 0j])
def test_setting_data_behaves_as_the_compiled_core(value: object) -> None:
    outcomes = []
    for mod in implementations():
        x, y = mod.Scalar(2.0), mod.Scalar(3.0)
        try:
            x.data = value
        except TypeError as e:
            outcomes.append(("TypeError", str(e)))
            continue
        z = x * y
        outcomes.append((type(x.data).__name__, x.data, z.data))
    if BUILT:
        assert outcomes[0] == outcomes[1]
    if isinstance(value, str | type(None) | complex):
        assert outcomes[0][0] == "TypeError"
    else:
        assert outcomes[0] == ("float", float(value), float(value) * 3.0)  # type: ignore[arg-type]


# ------------------------------------------------------- pickle / deepcopy of graph nodes


def test_pickling_a_graph_node_is_a_clear_error_and_leaves_round_trip() -> None:
    import copy
    import pickle

    for mod in implementations():
        x = mod.Scalar(2.0, name="x")
        x.grad = 0.5
        back = pickle.loads(pickle.dumps(x))
        assert (back.data, back.grad, back.name, back.requires_grad, back.op) == (
            2.0,
            0.5,
            "x",
            True,
            None,
        )
        assert copy.deepcopy(x).data == 2.0
        y = x * 2.0
        for f in (pickle.dumps, copy.deepcopy):
            with pytest.raises(TypeError, match="cannot pickle or deep-copy a Scalar made by"):
                f(y)
        deep = x
        for _ in range(600):  # no RecursionError either
            deep = deep + 1.0
        with pytest.raises(TypeError, match="save the values"):
            copy.deepcopy(deep)
        c = copy.copy(y)  # copy.copy still makes a new node of the same op
        assert c is not y and c.op == "mul" and c.data == 4.0
