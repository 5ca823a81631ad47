"""The safe expression parser: what it accepts, how it names nodes, and its error messages."""

from __future__ import annotations

import math

import pytest

from graphgrad.expr import FUNCTIONS, ExprError, check_finite, evaluate, parse, parse_values


def test_lecture_example_names_intermediates_like_the_lecture() -> None:
    e, leaves = evaluate("(a+b)*(b+1)", {"a": 2.0, "b": 1.0})
    c, d = e._a, e._b
    assert c is not None and d is not None
    assert (c.name, d.name, e.name) == ("c", "d", "e")
    assert (c.data, d.data, e.data) == (3.0, 2.0, 6.0)
    assert c._a is leaves["a"] and c._b is leaves["b"]
    e.backward()
    assert (leaves["a"].grad, leaves["b"].grad) == (2.0, 5.0)


@pytest.mark.parametrize(
    ("text", "values", "want"),
    [
        ("a + b * c", {"a": 1, "b": 2, "c": 3}, 7.0),
        ("-a ** 2", {"a": 3}, -9.0),  # ** binds tighter than unary minus, as in Python
        ("2 ** -1", {}, 0.5),
        ("a / 4 - 1e-1", {"a": 2}, 0.4),
        ("exp(log(x))", {"x": 1.5}, 1.5),
        ("tanh(x) + sigmoid(x)", {"x": 0.0}, 0.5),
        ("relu(x) + relu(-x)", {"x": -2}, 2.0),
        ("leaky_relu(x, 0.5) + leaky_relu(x)", {"x": -2}, -1.02),
        ("elu(x, 2) + elu(x)", {"x": -1}, 3 * math.expm1(-1)),
        ("maximum(x, y) * maximum(1, y)", {"x": 2, "y": -1}, 2.0),
        ("+x", {"x": 4}, 4.0),
        ("3", {}, 3.0),
    ],
)
def test_evaluates(text: str, values: dict[str, float], want: float) -> None:
    out, _ = evaluate(text, values)
    assert out.data == pytest.approx(want)


def test_names_skip_used_letters() -> None:
    out, _ = evaluate("x*c + exp(c)", {"x": 1.0, "c": 2.0})
    names = []
    stack = [out]
    while stack:
        n = stack.pop()
        if n._op is not None:
            names.append(str(n.name))
            stack += list(n._inputs)
    assert sorted(names) == ["a", "b", "d"]  # 'c' and the function names are taken
    many = " + ".join(["x"] * 30)
    out, _ = evaluate(many, {"x": 1.0})
    assert out.name == "v4"  # 29 additions: 25 letters (not x), then v1, ..., v4


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("(a+b", 5, "'(' at column 1 is never closed; expected ')'"),
        ("a + * b", 5, "expected a number, a name, '(' or a function call, got '*'"),
        ("a.b", 2, "expected an operator (+ - * / **), got '.'"),
        ("a[0]", 2, "got '['"),
        ("a < b", 3, "got '<'"),
        ("a // b", 3, "got '//'"),
        ("a b", 3, "expected an operator (+ - * / **), got 'b'"),
        ("a +", 4, "the expression ends too early"),
        (")", 1, "got ')'"),
        ("a)", 2, "unmatched ')'"),
        ("", 1, "the expression is empty"),
        ("foo(a)", 1, "unknown function 'foo'; expected one of exp, log"),
        ("__import__('os')", 1, "unknown function '__import__'"),
        ("exp a", 1, "'exp' is a function: call it as exp(...)"),
        ("exp", 1, "'exp' is a function"),
        ("exp()", 5, "exp() needs an argument"),
        ("exp(a", 6, "the call of exp at column 4 is never closed"),
        ("maximum(a)", 1, "maximum() takes 2 positional argument(s)"),
        ("exp(a, b)", 1, "exp() takes 1 positional argument(s)"),
        ("leaky_relu(a, b)", 1, "must be a number"),
        ("a, b", 2, "',' outside a function call"),
        ("'text'", 1, "got \"'text'\""),
        ("lambda: 1", 1, "got 'lambda'"),
        ("a if a else a", 3, "got 'if'"),
        ("1j", 1, "only real numbers"),
        ("a $ b", 3, "got '$'"),
        ("a # comment", 3, "unexpected comment"),
    ],
)
def test_errors_name_the_column_and_what_was_expected(text: str, column: int, message: str) -> None:
    with pytest.raises(ExprError) as info:
        evaluate(text, {"a": 1.0, "b": 2.0})
    assert info.value.column == column
    assert message in str(info.value)
    assert str(info.value).startswith(f"at column {column}: ")
    assert "\n" not in str(info.value)


def test_unknown_name_lists_the_given_names() -> None:
    with pytest.raises(ExprError, match=r"at column 7: unknown name 'z'; names given values: a, b"):
        evaluate("a*b + z", {"b": 1.0, "a": 2.0})
    with pytest.raises(ExprError, match="names given values: none"):
        evaluate("z", {})


def test_evaluation_errors_are_expr_errors() -> None:
    with pytest.raises(ExprError, match="cannot evaluate: log"):
        evaluate("log(a - 1)", {"a": 1.0})
    with pytest.raises(ExprError, match="division by zero"):
        evaluate("1 / (a - 1)", {"a": 1.0})


def test_nothing_is_executed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "pwned"
    attempts = [
        f"__import__('os').system('touch {marker}')",
        "(lambda: 1)()",
        "[x for x in ()]",
        "a.__class__",
        "exec('1')",
    ]
    for text in attempts:
        with pytest.raises(ExprError):
            evaluate(text, {"a": 1.0})
    assert not marker.exists()


def test_multiline_and_deep_expressions() -> None:
    with pytest.raises(ExprError, match="one line"):
        parse("a\n+b")
    deep = "(" * 150 + "a" + ")" * 150
    try:
        out, _ = evaluate(deep, {"a": 2.0})
        assert out.data == 2.0
    except ExprError as e:  # Python's parser limits nesting: then a clear message
        assert "nested" in str(e)
    long = "+".join(["a"] * 900)  # a long chain: evaluated without recursion
    out, _ = evaluate(long, {"a": 1.0}, name_nodes=False)
    assert out.data == 900.0
    with pytest.raises(ExprError, match="too deeply nested for Python's parser"):
        parse("+".join(["a"] * 5000))


def test_parse_reports_names_in_order() -> None:
    assert parse("b * a + exp(b) + c").names == ("b", "a", "c")
    assert set(FUNCTIONS) >= {"exp", "log", "tanh", "sigmoid", "relu", "maximum"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("a", "expected NAME=NUMBER"),
        ("a=", "expected NAME=NUMBER"),
        ("=1", "expected NAME=NUMBER"),
        ("a=x", "not a number"),
        ("a=1,a=2", "given twice"),
        ("exp=1", "cannot be a variable name"),
        ("1a=1", "cannot be a variable name"),
        ("a=nan", "must be finite"),
        ("inf=2", "'inf' cannot be a variable name: it reads as a number"),
        ("NaN=1", "'NaN' cannot be a variable name: it reads as a number"),
    ],
)
def test_parse_values_errors(spec: str, message: str) -> None:
    with pytest.raises(ExprError, match=message):
        parse_values(spec)


def test_parse_values() -> None:
    assert parse_values("a=2, b=-1.5e-1") == {"a": 2.0, "b": -0.15}
    assert parse_values(["a=2", "b=1"]) == {"a": 2.0, "b": 1.0}
    assert parse_values([]) == {}


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("1e400 * a", 1, "the number 1e400 overflows a float"),
        ("a - 1e400", 5, "the number 1e400 overflows a float"),
        ("a * 2" + "0" * 400, 5, "overflows a float"),  # an int no float holds
        ("leaky_relu(a, 1e999)", 15, "the number 1e999 overflows a float"),
        ("inf * a", 1, "'inf' cannot be a variable name: it reads as a number"),
        ("a + nan", 5, "'nan' cannot be a variable name"),
    ],
)
def test_numbers_that_are_not_finite_are_refused_when_parsed(
    text: str, column: int, message: str
) -> None:
    with pytest.raises(ExprError) as info:
        parse(text)
    assert info.value.column == column and message in str(info.value)
    assert parse("1e308 * a + 1e-400").names == ("a",)  # finite (1e-400 underflows to 0)


@pytest.mark.parametrize(
    ("text", "values", "message"),
    [
        ("a * b", {"a": 1e200, "b": 1e200}, "at column 1: cannot evaluate: mul: 1e+200 * 1e+200"),
        ("a + b", {"a": 1e308, "b": 1e308}, "add: 1e+308 + 1e+308 overflows a float (inf)"),
        ("c - a / b", {"a": 1, "b": 1e-310, "c": 0}, "at column 5: cannot evaluate: div"),
        ("elu(a, 1e308) * 10", {"a": -1e3}, "mul: -1e+308 * 10 overflows a float (-inf)"),
    ],
)
def test_an_op_that_overflows_is_refused_where_it_happens(
    text: str, values: dict[str, float], message: str
) -> None:
    with pytest.raises(ExprError) as info:
        evaluate(text, values)
    assert message in str(info.value)


def test_check_finite_names_the_derivative_that_is_not() -> None:
    out, _ = evaluate("(a+b)*(b+1)", {"a": 2.0, "b": 1.0})
    out.backward()
    check_finite(out)  # the lecture's example: all finite
    out, _ = evaluate("log(a)", {"a": 5e-324})
    with pytest.raises(
        ExprError, match=r"local derivative ∂b/∂a of b = log\(4.94066e-324\) is inf"
    ):
        check_finite(out, grads=False)
    out, _ = evaluate("(a*1e300)*b", {"a": 1e-300, "b": 1e10})  # each value and edge finite
    check_finite(out, grads=False)
    out.backward()
    with pytest.raises(ExprError, match=r"the gradient ∂d/∂a is inf: overflows a float"):
        check_finite(out)


def test_given_names_are_read_as_python_reads_the_expression() -> None:
    # Python's parser NFKC-normalises identifiers: "𝑥" (mathematical italic) is "x"
    assert parse_values("𝑥=2") == {"x": 2.0}
    with pytest.raises(ExprError, match="given twice"):
        parse_values("x=1,𝑥=2")
